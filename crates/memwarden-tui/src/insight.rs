//! What the interface shows about a series over time (a GPU's used VRAM, a process's or a
//! workload's memory): the figures the analysis produced, in the shape the widgets draw.
//! Keeping this apart from the analysis's own types lets the widgets stay simple and the
//! render tests build a screen without running an analysis.

use memwarden_probe::snapshot::ProcessId;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseBadge {
    Stable,
    Growing,
    Shrinking,
    Volatile,
}

impl PhaseBadge {
    /// A symbol and a word: the phase reads without colour.
    pub fn symbol(self) -> &'static str {
        match self {
            PhaseBadge::Stable => "●",
            PhaseBadge::Growing => "▲",
            PhaseBadge::Shrinking => "▼",
            PhaseBadge::Volatile => "◆",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            PhaseBadge::Stable => "stable",
            PhaseBadge::Growing => "growing",
            PhaseBadge::Shrinking => "shrinking",
            PhaseBadge::Volatile => "volatile",
        }
    }

    /// Sort order: what needs attention first.
    pub fn rank(self) -> u8 {
        match self {
            PhaseBadge::Growing => 3,
            PhaseBadge::Volatile => 2,
            PhaseBadge::Shrinking => 1,
            PhaseBadge::Stable => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Tight,
    Oom,
}

impl Verdict {
    pub fn symbol(self) -> &'static str {
        match self {
            Verdict::Ok => "✓",
            Verdict::Tight => "⚠",
            Verdict::Oom => "✗",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Tight => "TIGHT",
            Verdict::Oom => "OOM",
        }
    }
}

/// A labelled stretch of a series between two changepoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Sample indices into `SeriesView::values`, end exclusive.
    pub start: usize,
    pub end: usize,
    /// When the stretch began and ended (the snapshots' `taken_at_ms`).
    pub start_ms: u64,
    pub end_ms: u64,
    pub label: String,
    pub mean_bytes: f64,
}

/// Joins neighbours with the same label: PELT cuts a steady rise into a staircase of short
/// pieces that the labelling names `growth` one by one; a person wants one stretch.
pub fn merge_segments(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for s in segments {
        match out.last_mut() {
            Some(last) if last.label == s.label && last.end == s.start => {
                let (a, b) = ((last.end - last.start) as f64, (s.end - s.start) as f64);
                if a + b > 0.0 {
                    last.mean_bytes = (last.mean_bytes * a + s.mean_bytes * b) / (a + b);
                }
                last.end = s.end;
                last.end_ms = s.end_ms;
            }
            _ => out.push(s),
        }
    }
    out
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesView {
    /// The recent values, oldest first, in bytes (for sparklines).
    pub values: Vec<u64>,
    pub phase: Option<PhaseBadge>,
    /// How sure the phase label is, 0..=1.
    pub confidence: f64,
    /// The smoothed rate of change in bytes per second.
    pub rate_bytes_per_s: Option<f64>,
    /// When the pool runs out if the growth goes on: a range (`OOM in 2–5 min`), never one
    /// number, as the analysis words it.
    pub oom: Option<String>,
    pub verdict: Option<(Verdict, String)>,
    pub segments: Vec<Segment>,
    /// The framework the analysis recognised (vLLM, PyTorch, ...), when it did.
    pub framework: Option<String>,
}

/// Everything the analysis says about the current screen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Insights {
    pub gpus: HashMap<u32, SeriesView>,
    /// The host's used RAM.
    pub host: SeriesView,
    pub processes: HashMap<ProcessId, SeriesView>,
    pub workloads: HashMap<String, SeriesView>,
}

/// `▁▂▃▄▅▆▇█` for the last `width` values, scaled between 0 and `max` (a device's total) so
/// that a flat line near full looks full, not flat in the middle.
pub fn spark(values: &[u64], width: usize, max: Option<u64>) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    let top = max
        .filter(|&m| m > 0)
        .unwrap_or_else(|| tail.iter().copied().max().unwrap_or(0));
    tail.iter()
        .map(|&v| {
            if top == 0 {
                LEVELS[0]
            } else {
                let l = ((v.min(top) as f64 / top as f64) * 7.0).round() as usize;
                LEVELS[l.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_with_one_label_merge() {
        let seg = |start, end, label: &str, mean| Segment {
            start,
            end,
            start_ms: start as u64 * 1000,
            end_ms: end as u64 * 1000,
            label: label.into(),
            mean_bytes: mean,
        };
        let m = merge_segments(vec![
            seg(0, 2, "load", 1.0),
            seg(2, 4, "growth", 2.0),
            seg(4, 8, "growth", 5.0),
            seg(8, 9, "plateau", 6.0),
        ]);
        assert_eq!(m.len(), 3);
        assert_eq!((m[1].start, m[1].end, m[1].end_ms), (2, 8, 8000));
        assert_eq!(m[1].mean_bytes, 4.0);
    }

    #[test]
    fn sparklines() {
        assert_eq!(spark(&[0, 50, 100], 10, Some(100)), "▁▅█");
        assert_eq!(spark(&[0, 50, 100], 2, Some(100)), "▅█");
        assert_eq!(spark(&[], 5, None), "");
        assert_eq!(spark(&[0, 0], 5, None), "▁▁");
        assert_eq!(spark(&[200], 5, Some(100)), "█");
    }
}
