//! When a growing pool will run out, as a range of times.
//!
//! Only a series that has been growing for a while gets a prediction, and the answer is always a
//! range: the free memory divided by the fastest and by the slowest rate seen in the current
//! growth phase. Slow creep below the noise rate is not a prediction, and anything past the cap
//! is reported as "over 1 h" rather than a precise-looking far-off time.

use serde::Serialize;

use crate::phase::{Phase, PhaseState};

#[derive(Debug, Clone, PartialEq)]
pub struct OomConfig {
    /// Samples the growth phase must have lasted.
    pub min_sustained_samples: u32,
    /// Growth slower than this (MiB/s) is noise, not a prediction.
    pub min_rate_mib_s: f64,
    /// Beyond this, say "over" instead of a range.
    pub cap_s: f64,
}

impl Default for OomConfig {
    fn default() -> Self {
        OomConfig {
            min_sustained_samples: 10,
            min_rate_mib_s: 1.0,
            cap_s: 3600.0,
        }
    }
}

/// A predicted time to running out of memory: between `seconds_low` (at the fastest rate seen)
/// and `seconds_high` (at the slowest). `seconds_high` is `None` when the slow end is past the
/// cap ("over 1 h" when both are).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OomPrediction {
    pub seconds_low: f64,
    pub seconds_high: Option<f64>,
    /// The phase's confidence, in [0, 1].
    pub confidence: f64,
    /// Both ends are past the cap: "over 1 h".
    pub beyond_cap: bool,
}

impl OomPrediction {
    /// `OOM in 2–5 min`, `OOM in 40 s–3 min`, `OOM in 10 min–over 1 h`, `OOM in over 1 h`,
    /// `out of memory now`.
    pub fn display(&self) -> String {
        if self.beyond_cap {
            return "OOM in over 1 h".to_string();
        }
        if self.seconds_high == Some(0.0) {
            return "out of memory now".to_string();
        }
        let (lo, lo_unit) = duration_parts(self.seconds_low);
        match self.seconds_high.map(duration_parts) {
            Some((hi, hi_unit)) if hi_unit == lo_unit => {
                if hi == lo {
                    // Both ends round to the same figure: still a range, never one number.
                    format!("OOM in about {lo} {lo_unit}")
                } else {
                    format!("OOM in {lo}–{hi} {lo_unit}")
                }
            }
            Some((hi, hi_unit)) => format!("OOM in {lo} {lo_unit}–{hi} {hi_unit}"),
            None => format!("OOM in {lo} {lo_unit}–over 1 h"),
        }
    }
}

fn duration_parts(s: f64) -> (String, &'static str) {
    if !s.is_finite() || s < 0.0 {
        ("?".to_string(), "s")
    } else if s < 90.0 {
        (format!("{s:.0}"), "s")
    } else if s < 5400.0 {
        (format!("{:.0}", s / 60.0), "min")
    } else {
        (format!("{:.1}", s / 3600.0), "h")
    }
}

/// Seconds as a short human duration: `45 s`, `3 min`, `1.5 h`.
pub fn format_duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "?".to_string();
    }
    if s < 90.0 {
        format!("{:.0} s", s)
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Stateless: the phase state carries the rate range of the current phase.
#[derive(Debug, Clone, Default)]
pub struct OomPredictor {
    pub config: OomConfig,
}

impl OomPredictor {
    pub fn new(config: OomConfig) -> OomPredictor {
        OomPredictor { config }
    }

    /// The prediction for a pool with `free_mib` left whose use is in `state`; `None` when the
    /// pool is not in sustained growth, grows slower than the noise rate, or a figure is not
    /// finite.
    pub fn predict(&self, state: &PhaseState, free_mib: f64) -> Option<OomPrediction> {
        let c = &self.config;
        if state.phase != Phase::Growing || state.duration_samples < c.min_sustained_samples {
            return None;
        }
        let (rate, lo, hi) = (state.rate_mib_s, state.rate_min_mib_s, state.rate_max_mib_s);
        if !(rate.is_finite() && lo.is_finite() && hi.is_finite() && free_mib.is_finite()) {
            return None;
        }
        if rate < c.min_rate_mib_s || hi < c.min_rate_mib_s {
            return None;
        }
        let confidence = state.confidence.clamp(0.0, 1.0);
        let free = free_mib.max(0.0);
        if free == 0.0 {
            return Some(OomPrediction {
                seconds_low: 0.0,
                seconds_high: Some(0.0),
                confidence,
                beyond_cap: false,
            });
        }
        let cap = if c.cap_s.is_finite() && c.cap_s > 0.0 {
            c.cap_s
        } else {
            3600.0
        };
        let fastest = hi;
        // The slow end is bounded by the noise rate: slower than that is not a rate we trust.
        let slowest = lo.max(c.min_rate_mib_s).min(fastest);
        let low = free / fastest;
        let high = free / slowest;
        if low > cap {
            return Some(OomPrediction {
                seconds_low: cap,
                seconds_high: None,
                confidence,
                beyond_cap: true,
            });
        }
        Some(OomPrediction {
            seconds_low: low,
            seconds_high: (high <= cap).then_some(high),
            confidence,
            beyond_cap: false,
        })
    }
}
