//! Names for the pieces between changepoints: load, warm-up, growth, plateau, release, ...
//!
//! PELT with the L2 cost cuts a series into pieces of constant mean, so a steady rise comes out
//! as a staircase of short pieces. Labelling therefore looks at each piece (its level against the
//! previous one, its slope, its noise) and then at runs of pieces: a staircase of rises is growth,
//! and a long, even one that never falls back is leak-like growth.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentLabel {
    /// Next to nothing held.
    Idle,
    /// A large step up from idle or from the start: weights arriving.
    Load,
    /// A smaller rise right after a load: caches, CUDA graphs, the first batches.
    WarmUp,
    /// Part of a rise.
    Growth,
    /// A long, even rise that never falls back: what a leak looks like.
    LeakLikeGrowth,
    /// Level.
    Plateau,
    /// Level at the top of the device.
    Saturation,
    /// Large moves up and down (an allocator's sawtooth, batches).
    Volatile,
    /// A step down: memory given back.
    Release,
}

impl SegmentLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentLabel::Idle => "idle",
            SegmentLabel::Load => "load",
            SegmentLabel::WarmUp => "warm-up",
            SegmentLabel::Growth => "growth",
            SegmentLabel::LeakLikeGrowth => "leak-like growth",
            SegmentLabel::Plateau => "plateau",
            SegmentLabel::Saturation => "saturation",
            SegmentLabel::Volatile => "volatile",
            SegmentLabel::Release => "release",
        }
    }
}

/// One piece of a series between changepoints, with its figures (MiB, MiB/s).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// First sample (index into the series).
    pub start: usize,
    /// One past the last sample (a changepoint as ruptures reports it).
    pub end: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    pub mean_mib: f64,
    pub min_mib: f64,
    pub max_mib: f64,
    /// Standard deviation inside the piece.
    pub std_mib: f64,
    /// Mean of this piece minus the mean of the previous one (0 for the first).
    pub step_mib: f64,
    /// Least-squares slope inside the piece.
    pub slope_mib_s: f64,
    pub label: SegmentLabel,
}

/// What labelling may know besides the series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LabelContext {
    /// The pool's size, for saturation.
    pub total_mib: Option<f64>,
}

/// Labels the segments that `breakpoints` (ruptures' format: ends, the last = `values.len()`)
/// cut `values` into. `times_ms` gives each sample's time; it must be as long as `values`.
/// Breakpoints out of order or out of range are ignored rather than trusted.
pub fn label_segments(
    values: &[f64],
    times_ms: &[u64],
    breakpoints: &[usize],
    ctx: &LabelContext,
) -> Vec<Segment> {
    let n = values.len().min(times_ms.len());
    if n == 0 {
        return Vec::new();
    }
    let mut segs = Vec::new();
    let mut start = 0;
    let mut prev_mean: Option<f64> = None;
    for &end in breakpoints.iter().chain(std::iter::once(&n)) {
        if end <= start || end > n {
            continue;
        }
        let seg = measure(&values[start..end], &times_ms[start..end], start, prev_mean);
        prev_mean = Some(seg.mean_mib);
        segs.push(seg);
        start = end;
    }
    let lo = values[..n].iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values[..n]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let range = (hi - lo).max(0.0);
    // A move smaller than this is a wiggle, not an event: 5% of the series' range, 2% of its
    // highest level, and at least 16 MiB.
    let small = (range * 0.05).max(hi.abs() * 0.02).max(16.0);
    // Idle is next to nothing: the bottom of a series that moves a lot, and at most a tenth of
    // its peak; or under 16 MiB.
    let idle_level = if range >= 0.25 * hi.abs() {
        (lo + (range * 0.05).max(16.0))
            .min(0.1 * hi.abs())
            .max(16.0)
    } else {
        16.0
    };
    for i in 0..segs.len() {
        let levels = Levels {
            small,
            idle: idle_level,
            lo,
            range,
            hi: hi.abs(),
        };
        segs[i].label = first_pass(&segs, i, &levels, ctx);
    }
    second_pass(&mut segs, small);
    segs
}

fn measure(v: &[f64], t: &[u64], start: usize, prev_mean: Option<f64>) -> Segment {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in v {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    // Least squares on seconds since the piece's first sample.
    let t0 = t[0];
    let ts: Vec<f64> = t.iter().map(|&x| (x - t0.min(x)) as f64 / 1000.0).collect();
    let tm = ts.iter().sum::<f64>() / n;
    let sxx: f64 = ts.iter().map(|x| (x - tm).powi(2)).sum();
    let sxy: f64 = ts.iter().zip(v).map(|(x, y)| (x - tm) * (y - mean)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    Segment {
        start,
        end: start + v.len(),
        start_ms: t[0],
        end_ms: *t.last().unwrap_or(&t0),
        mean_mib: mean,
        min_mib: lo,
        max_mib: hi,
        std_mib: var.max(0.0).sqrt(),
        step_mib: prev_mean.map_or(0.0, |p| mean - p),
        slope_mib_s: if slope.is_finite() { slope } else { 0.0 },
        label: SegmentLabel::Plateau,
    }
}

/// The series-wide figures that say what counts as a move, as idle, as the floor.
struct Levels {
    small: f64,
    idle: f64,
    lo: f64,
    range: f64,
    hi: f64,
}

fn first_pass(segs: &[Segment], i: usize, l: &Levels, ctx: &LabelContext) -> SegmentLabel {
    let s = &segs[i];
    let secs = (s.end_ms.saturating_sub(s.start_ms)) as f64 / 1000.0;
    let rise_inside = s.slope_mib_s * secs;

    if s.std_mib > l.small && s.std_mib > 0.15 * l.range && rise_inside.abs() < 2.0 * s.std_mib {
        return SegmentLabel::Volatile;
    }
    if i > 0 && s.step_mib <= -l.small {
        return SegmentLabel::Release;
    }
    if s.max_mib <= l.idle {
        return SegmentLabel::Idle;
    }
    if i > 0 && s.step_mib >= l.small {
        let prev = &segs[i - 1];
        // From idle, or from the series' floor (what others held before this one arrived).
        let from_floor =
            prev.max_mib <= l.idle || prev.max_mib <= l.lo + (l.range * 0.05).max(16.0);
        if (from_floor || (i == 1 && s.step_mib >= 0.25 * l.range)) && s.step_mib >= 0.1 * l.hi {
            return SegmentLabel::Load;
        }
        return SegmentLabel::Growth;
    }
    if rise_inside >= l.small {
        return SegmentLabel::Growth;
    }
    if rise_inside <= -l.small {
        return SegmentLabel::Release;
    }
    if let Some(total) = ctx.total_mib
        && total > 0.0
        && s.mean_mib >= 0.95 * total
    {
        return SegmentLabel::Saturation;
    }
    SegmentLabel::Plateau
}

fn second_pass(segs: &mut [Segment], small: f64) {
    // A staircase of small rises (or falls) that adds up to a real move is growth (or release).
    for (sign, label) in [(1.0, SegmentLabel::Growth), (-1.0, SegmentLabel::Release)] {
        let movable = |s: &Segment| {
            matches!(
                s.label,
                SegmentLabel::Plateau | SegmentLabel::Growth | SegmentLabel::Release
            ) && sign * s.step_mib > 0.0
        };
        let mut i = 1;
        while i < segs.len() {
            if !movable(&segs[i]) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j + 1 < segs.len() && movable(&segs[j + 1]) {
                j += 1;
            }
            let moved: f64 = segs[i..=j].iter().map(|s| sign * s.step_mib).sum();
            if j - i + 1 >= 3 && moved >= small {
                for s in &mut segs[i..=j] {
                    s.label = label;
                }
            }
            i = j + 1;
        }
    }
    // A rise right after a load, smaller than the load itself, is its warm-up.
    for i in 1..segs.len() {
        if segs[i - 1].label == SegmentLabel::Load
            && segs[i].label == SegmentLabel::Growth
            && segs[i].step_mib < segs[i - 1].step_mib
        {
            segs[i].label = SegmentLabel::WarmUp;
        }
    }
    // Runs of growth: long and even, never falling back afterwards → leak-like.
    let mut i = 0;
    while i < segs.len() {
        if segs[i].label != SegmentLabel::Growth {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < segs.len()
            && matches!(
                segs[j + 1].label,
                SegmentLabel::Growth | SegmentLabel::Plateau
            )
            && segs[j + 1].step_mib > -small
        {
            j += 1;
        }
        let steps: Vec<f64> = segs[i..=j]
            .iter()
            .filter(|s| s.label == SegmentLabel::Growth)
            .map(|s| s.step_mib.max(s.slope_mib_s * secs(s)))
            .collect();
        let secs_run = (segs[j].end_ms.saturating_sub(segs[i].start_ms)) as f64 / 1000.0;
        let falls_back = segs[j + 1..]
            .iter()
            .any(|s| s.label == SegmentLabel::Release);
        let even = steps.len() >= 3 && {
            let m = steps.iter().sum::<f64>() / steps.len() as f64;
            steps.iter().all(|&s| s <= 3.0 * m)
        };
        if even && !falls_back && secs_run >= 300.0 {
            for s in &mut segs[i..=j] {
                if s.label == SegmentLabel::Growth || s.label == SegmentLabel::Plateau {
                    s.label = SegmentLabel::LeakLikeGrowth;
                }
            }
        } else {
            for s in &mut segs[i..=j] {
                if s.label == SegmentLabel::Plateau && s.step_mib > 0.0 && j > i {
                    s.label = SegmentLabel::Growth;
                }
            }
        }
        i = j + 1;
    }
}

fn secs(s: &Segment) -> f64 {
    (s.end_ms.saturating_sub(s.start_ms)) as f64 / 1000.0
}
