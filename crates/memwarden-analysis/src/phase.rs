//! What a series is doing: stable, growing, shrinking or volatile.
//!
//! A sliding window of rates (MiB/s between consecutive samples) is classified by its mean,
//! variance and the share of rates above the noise floor in each direction (the highest and
//! lowest rate left out, so that a single odd reading does not count as volatility). A new label must win
//! `hysteresis` consecutive samples before it replaces the current one, so that one odd sample
//! (an allocator's sawtooth, a cache eviction) does not make the label flicker.

use std::collections::VecDeque;

use serde::Serialize;

use crate::series::Sample;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Little variance and a mean rate below the noise floor.
    Stable,
    /// A sustained positive trend: most rates above the noise floor.
    Growing,
    /// A sustained negative trend.
    Shrinking,
    /// Large moves without a clear direction (a sawtooth, bursts).
    Volatile,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stable => "stable",
            Phase::Growing => "growing",
            Phase::Shrinking => "shrinking",
            Phase::Volatile => "volatile",
        }
    }

    /// The label to show beside `rate_mib_s`, so that the two never contradict each other: a
    /// direction is claimed only where the rate bears it out. The detector labels by a window
    /// of smoothed rates, so a stretch it calls growing can net flat or falling (the growth
    /// ended inside it), and one it calls stable can net a rise; shown beside its own rate, such
    /// a stretch takes the rate's direction: above the noise floor growing, below minus the floor
    /// shrinking, in between stable. Volatile claims no direction and stays.
    pub fn agreeing_with(self, rate_mib_s: f64, noise_floor_mib_s: f64) -> Phase {
        let floor = noise_floor_mib_s.abs();
        match self {
            Phase::Volatile => Phase::Volatile,
            _ if rate_mib_s > floor => Phase::Growing,
            _ if rate_mib_s < -floor => Phase::Shrinking,
            _ => Phase::Stable,
        }
    }

    /// A one-character badge that carries the meaning without colour.
    pub fn symbol(self) -> char {
        match self {
            Phase::Stable => '●',
            Phase::Growing => '▲',
            Phase::Shrinking => '▼',
            Phase::Volatile => '◆',
        }
    }
}

/// Tuning of the [`PhaseDetector`]; the defaults suit a 1 s sampling interval.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseConfig {
    /// How many recent rates are classified together.
    pub window: usize,
    /// Consecutive samples a new label must win before it is shown.
    pub hysteresis: usize,
    /// Rates within ± this many MiB/s count as no movement.
    pub noise_floor_mib_s: f64,
    /// Variance of the rates ((MiB/s)²) below which a series may be stable.
    pub variance_threshold: f64,
    /// Weight of the newest rate in the EMA.
    pub ema_alpha: f64,
    /// Share of rates that must point the same way for growing or shrinking.
    pub majority: f64,
    /// Samples in a phase after which the duration part of the confidence is full.
    pub confidence_samples: usize,
}

impl PhaseConfig {
    /// For host RAM: moves under 16 MiB/s, and a spread under 32 MiB/s, are the kernel's caches
    /// breathing, not a trend.
    pub fn host_ram() -> PhaseConfig {
        PhaseConfig {
            noise_floor_mib_s: 16.0,
            variance_threshold: 1024.0,
            ..PhaseConfig::default()
        }
    }
}

impl Default for PhaseConfig {
    fn default() -> Self {
        PhaseConfig {
            window: 10,
            hysteresis: 3,
            noise_floor_mib_s: 1.0,
            variance_threshold: 4.0,
            ema_alpha: 0.3,
            majority: 0.6,
            confidence_samples: 30,
        }
    }
}

/// The label of a series after a sample, with what backs it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseState {
    pub phase: Phase,
    /// Samples since the current phase began.
    pub duration_samples: u32,
    /// When the current phase began (`taken_at_ms` of its first sample).
    pub since_ms: u64,
    /// EMA of the rate in MiB/s, restarted at each phase change.
    pub rate_mib_s: f64,
    /// Slowest and fastest EMA rate seen in the current phase (MiB/s).
    pub rate_min_mib_s: f64,
    pub rate_max_mib_s: f64,
    /// How much to trust the label, in [0, 1]: grows with the phase's duration, shrinks with
    /// the rates' variance. 0 until the window holds enough rates.
    pub confidence: f64,
}

/// Classifies one series sample by sample. Feed it samples in time order.
#[derive(Debug, Clone)]
pub struct PhaseDetector {
    config: PhaseConfig,
    prev: Option<Sample>,
    rates: VecDeque<f64>,
    current: Phase,
    candidate: Phase,
    candidate_count: usize,
    duration: u32,
    since_ms: u64,
    ema: f64,
    rate_min: f64,
    rate_max: f64,
}

impl PhaseDetector {
    pub fn new(config: PhaseConfig) -> PhaseDetector {
        let window = config.window.max(3);
        PhaseDetector {
            config: PhaseConfig { window, ..config },
            prev: None,
            rates: VecDeque::with_capacity(window),
            current: Phase::Stable,
            candidate: Phase::Stable,
            candidate_count: 0,
            duration: 0,
            since_ms: 0,
            ema: 0.0,
            rate_min: 0.0,
            rate_max: 0.0,
        }
    }

    pub fn config(&self) -> &PhaseConfig {
        &self.config
    }

    /// The state after the last sample, without feeding one.
    pub fn state(&self) -> PhaseState {
        self.make_state(self.window_stats().map_or(0.0, |s| s.1))
    }

    /// Feeds one sample and returns the state after it. A sample that is not later than the
    /// previous one, or not finite, leaves the state as it was.
    pub fn update(&mut self, sample: Sample) -> PhaseState {
        if !sample.mib.is_finite() {
            return self.state();
        }
        let Some(prev) = self.prev else {
            self.prev = Some(sample);
            self.since_ms = sample.t_ms;
            return self.state();
        };
        if sample.t_ms <= prev.t_ms {
            return self.state();
        }
        self.prev = Some(sample);
        let dt = (sample.t_ms - prev.t_ms) as f64 / 1000.0;
        let rate = (sample.mib - prev.mib) / dt;
        if !rate.is_finite() {
            return self.state();
        }
        if self.rates.len() == self.config.window {
            self.rates.pop_front();
        }
        self.rates.push_back(rate);
        let Some((mean, variance, up, down)) = self.window_stats_full() else {
            return self.state();
        };
        let floor = self.config.noise_floor_mib_s;
        let detected = if variance < self.config.variance_threshold && mean.abs() < floor {
            Phase::Stable
        } else if mean > floor && up > self.config.majority {
            Phase::Growing
        } else if mean < -floor && down > self.config.majority {
            Phase::Shrinking
        } else {
            Phase::Volatile
        };
        if detected == self.candidate {
            self.candidate_count += 1;
        } else {
            self.candidate = detected;
            self.candidate_count = 1;
        }
        if self.candidate_count >= self.config.hysteresis.max(1) && self.current != self.candidate {
            self.current = self.candidate;
            self.duration = 0;
            self.since_ms = prev.t_ms;
            // Seeded with the window's median, not its mean: the burst that ended the last
            // phase (weights arriving at GB/s) is still in the window and would otherwise set
            // the new phase's fastest rate.
            self.ema = self.window_median();
            self.rate_min = f64::INFINITY;
            self.rate_max = f64::NEG_INFINITY;
        }
        self.duration = self.duration.saturating_add(1);
        let a = self.config.ema_alpha.clamp(0.0, 1.0);
        self.ema = a * rate + (1.0 - a) * self.ema;
        if !self.ema.is_finite() {
            self.ema = mean;
        }
        self.rate_min = self.rate_min.min(self.ema);
        self.rate_max = self.rate_max.max(self.ema);
        self.make_state(variance)
    }

    fn window_median(&self) -> f64 {
        let mut r: Vec<f64> = self.rates.iter().copied().collect();
        r.sort_by(|a, b| a.total_cmp(b));
        match r.len() {
            0 => 0.0,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }

    fn window_stats(&self) -> Option<(f64, f64)> {
        self.window_stats_full().map(|(m, v, _, _)| (m, v))
    }

    /// Mean, variance, share above +floor and share below −floor of the window, once it holds
    /// at least three rates. From six rates on, the highest and the lowest are left out: one odd
    /// reading makes a +x/−x pair of rates that would otherwise keep the window volatile for as
    /// long as it holds them.
    fn window_stats_full(&self) -> Option<(f64, f64, f64, f64)> {
        let n = self.rates.len();
        if n < 3 {
            return None;
        }
        let mut kept: Vec<f64> = self.rates.iter().copied().collect();
        if n >= 6 {
            kept.sort_by(|a, b| a.total_cmp(b));
            kept.pop();
            kept.remove(0);
        }
        let nf = kept.len() as f64;
        let mean = kept.iter().sum::<f64>() / nf;
        let variance = kept.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / nf;
        let floor = self.config.noise_floor_mib_s;
        let up = kept.iter().filter(|&&r| r > floor).count() as f64 / nf;
        let down = kept.iter().filter(|&&r| r < -floor).count() as f64 / nf;
        Some((mean, variance, up, down))
    }

    fn make_state(&self, variance: f64) -> PhaseState {
        let ready = self.rates.len() >= 3 && self.duration > 0;
        let confidence = if ready {
            let full = self.config.confidence_samples.max(1) as f64;
            let c = (self.duration as f64 / full).min(1.0) / (1.0 + variance.max(0.0) / 100.0);
            if c.is_finite() {
                c.clamp(0.0, 1.0)
            } else {
                0.0
            }
        } else {
            0.0
        };
        let (lo, hi) = if self.rate_min <= self.rate_max {
            (self.rate_min, self.rate_max)
        } else {
            (self.ema, self.ema)
        };
        PhaseState {
            phase: self.current,
            duration_samples: self.duration,
            since_ms: self.since_ms,
            rate_mib_s: self.ema,
            rate_min_mib_s: lo,
            rate_max_mib_s: hi,
            confidence,
        }
    }
}

impl Default for PhaseDetector {
    fn default() -> Self {
        PhaseDetector::new(PhaseConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_takes_the_direction_of_its_rate() {
        let floor = 1.0;
        assert_eq!(Phase::Growing.agreeing_with(64.0, floor), Phase::Growing);
        // Growing at a flat or falling rate: the growth ended inside the stretch.
        assert_eq!(Phase::Growing.agreeing_with(0.0, floor), Phase::Stable);
        assert_eq!(Phase::Growing.agreeing_with(-6.0, floor), Phase::Shrinking);
        assert_eq!(Phase::Shrinking.agreeing_with(0.5, floor), Phase::Stable);
        // Stable beside +68 MiB/s is growing.
        assert_eq!(Phase::Stable.agreeing_with(68.0, floor), Phase::Growing);
        assert_eq!(Phase::Stable.agreeing_with(-1.0, floor), Phase::Stable);
        assert_eq!(Phase::Volatile.agreeing_with(-68.0, floor), Phase::Volatile);
        assert_eq!(Phase::Growing.agreeing_with(f64::NAN, floor), Phase::Stable);
    }
}
