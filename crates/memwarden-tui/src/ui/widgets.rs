//! Small pieces shared by the panels: bars, percentages, phase and verdict badges, clock.

use std::time::UNIX_EPOCH;

use memwarden_probe::size::format_size;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

use crate::insight::{PhaseBadge, SeriesView, Verdict};
use crate::theme::Theme;

pub(super) fn clock(ms: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-01-02T03:04:05Z -> 03:04:05
    s.get(11..19).unwrap_or(&s).to_string()
}

/// A bar of `width` cells as spans: filled in the level's style, the rest as free.
/// A bar of `used`, then `reserved` (held by the driver, not by any process), then free.
pub(super) fn bar<'a>(
    t: &Theme,
    used: u64,
    reserved: u64,
    total: u64,
    width: usize,
) -> Vec<Span<'a>> {
    let cells = |bytes: u64| {
        if total == 0 {
            0
        } else {
            ((bytes as f64 / total as f64 * width as f64).round() as usize).min(width)
        }
    };
    let taken = cells(used.saturating_add(reserved));
    let filled = cells(used).min(taken);
    let frac = if total == 0 {
        0.0
    } else {
        (used.saturating_add(reserved) as f64 / total as f64).min(1.0)
    };
    vec![
        Span::styled("[", t.dim),
        Span::styled("█".repeat(filled), level_style(t, frac)),
        Span::styled("▒".repeat(taken - filled), t.dim),
        Span::styled("░".repeat(width - taken), t.free),
        Span::styled("]", t.dim),
    ]
}

pub(super) fn level_style(t: &Theme, frac: f64) -> Style {
    if frac >= 0.9 {
        t.bad
    } else if frac >= 0.75 {
        t.warn
    } else {
        t.ok
    }
}

pub(super) fn pct(used: u64, total: u64) -> String {
    if total == 0 {
        "  -%".into()
    } else {
        format!("{:3.0}%", used as f64 * 100.0 / total as f64)
    }
}

/// A memory region on one line. `reserved` is the part the driver keeps (NVIDIA VRAM), 0
/// elsewhere.
pub(super) fn region_line<'a>(
    t: &Theme,
    label: &str,
    used: Option<u64>,
    reserved: u64,
    total: Option<u64>,
    width: u16,
    long: bool,
) -> Line<'a> {
    let mut spans = vec![Span::styled(format!("{label:<5}"), t.title)];
    match (used, total) {
        (Some(u), Some(tot)) => {
            let text = if long {
                let kept = if reserved > 0 {
                    format!(" · {} reserved", format_size(reserved))
                } else {
                    String::new()
                };
                format!(
                    " {} {} / {} used{kept} · {} free",
                    pct(u, tot),
                    format_size(u),
                    format_size(tot),
                    format_size(tot.saturating_sub(u).saturating_sub(reserved))
                )
            } else {
                format!(" {} {}/{}", pct(u, tot), format_size(u), format_size(tot))
            };
            let bar_w = (width as usize)
                .saturating_sub(5 + 2 + text.chars().count())
                .clamp(4, 60);
            spans.extend(bar(t, u, reserved, tot, bar_w));
            spans.push(Span::styled(text, t.base));
        }
        _ => spans.push(Span::styled(" not reported by the device", t.dim)),
    }
    Line::from(spans)
}

pub(super) fn phase_spans<'a>(t: &Theme, v: &SeriesView) -> Vec<Span<'a>> {
    let mut spans = Vec::new();
    if let Some(p) = v.phase {
        spans.push(Span::styled(
            format!("{} {}", p.symbol(), p.word()),
            phase_style(t, p),
        ));
        if let Some(r) = v.rate_bytes_per_s
            && r.abs() >= 1024.0 * 1024.0
        {
            let sign = if r >= 0.0 { "+" } else { "-" };
            spans.push(Span::styled(
                format!(" {sign}{}/s", format_size(r.abs() as u64)),
                t.dim,
            ));
        }
    }
    if let Some(oom) = &v.oom {
        spans.push(Span::styled("  ", t.base));
        spans.push(Span::styled(format!("!! {oom}"), t.bad));
    }
    spans
}

pub(super) fn phase_style(t: &Theme, p: PhaseBadge) -> Style {
    match p {
        PhaseBadge::Stable => t.ok,
        PhaseBadge::Growing => t.warn,
        PhaseBadge::Shrinking => t.base,
        PhaseBadge::Volatile => t.warn,
    }
}

pub(super) fn verdict_style(t: &Theme, v: Verdict) -> Style {
    match v {
        Verdict::Ok => t.ok,
        Verdict::Tight => t.warn,
        Verdict::Oom => t.bad,
    }
}
