//! How busy, hot and power-hungry each GPU is: a line of figures on its card, and a chart of
//! its memory and utilization over the last minutes beside them (as nvtop draws).

use memwarden_probe::snapshot::{DeviceFigures, Gpu};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType};

use crate::app::App;
use crate::insight::SeriesView;
use crate::theme::Theme;

use super::*;

/// A chart is drawn beside a card at least this wide (the card keeps its bars and figures).
pub(super) const CHART_MIN_CARD_WIDTH: u16 = 110;

/// The figures a device gave, in words; empty when it gave none. `long` names each figure
/// (`mem 41%`), short is for one line of a compact layout.
pub(super) fn figure_spans<'a>(t: &Theme, f: &DeviceFigures, long: bool) -> Vec<Span<'a>> {
    let mut parts: Vec<(String, ratatui::style::Style)> = Vec::new();
    if let Some(u) = f.utilization_percent {
        let word = if long { "busy " } else { "" };
        parts.push((format!("{word}{u:.0}%"), level_style(t, u / 100.0)));
    }
    if long && let Some(m) = f.memory_utilization_percent {
        parts.push((format!("mem bus {m:.0}%"), t.base));
    }
    if let Some(c) = f.temperature_celsius {
        let style = if c >= 85.0 {
            t.bad
        } else if c >= 75.0 {
            t.warn
        } else {
            t.base
        };
        parts.push((format!("{c:.0}°C"), style));
    }
    match (f.power_watts, f.power_limit_watts) {
        (Some(w), Some(l)) if long => parts.push((format!("{w:.0}/{l:.0} W"), t.base)),
        (Some(w), _) => parts.push((format!("{w:.0} W"), t.base)),
        (None, _) => {}
    }
    if long {
        if let Some(fan) = f.fan_percent {
            parts.push((format!("fan {fan:.0}%"), t.base));
        }
        if let Some(mhz) = f.clock_graphics_mhz {
            parts.push((format!("{mhz} MHz"), t.dim));
        }
    }
    let mut spans = Vec::new();
    for (i, (text, style)) in parts.into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(if long { " · " } else { " " }, t.dim));
        }
        spans.push(Span::styled(text, style));
    }
    spans
}

/// Whether the device gave any figure for its card's line.
pub(super) fn has_figures(f: &DeviceFigures) -> bool {
    f.utilization_percent.is_some()
        || f.memory_utilization_percent.is_some()
        || f.temperature_celsius.is_some()
        || f.power_watts.is_some()
        || f.fan_percent.is_some()
        || f.clock_graphics_mhz.is_some()
}

/// The card's line of figures (`busy` first, as a bar when the device says), or `None` when
/// the device gives none of them.
pub(super) fn activity_line<'a>(t: &Theme, gpu: &Gpu, width: u16) -> Option<Line<'a>> {
    let f = &gpu.figures;
    let figures = figure_spans(t, f, true);
    if figures.is_empty() {
        return None;
    }
    let mut spans = vec![Span::styled(format!("{:<5}", "GPU"), t.title)];
    if let Some(u) = f.utilization_percent {
        let text_w: usize = figures.iter().map(|s| s.content.chars().count()).sum();
        let bar_w = (width as usize).saturating_sub(5 + 3 + text_w).clamp(4, 60);
        let used = (u.clamp(0.0, 100.0) * 10.0) as u64;
        spans.extend(bar(t, used, 0, 1000, bar_w));
        spans.push(Span::raw(" "));
    }
    spans.extend(figures);
    Some(Line::from(spans))
}

/// Memory used (share of the total) and utilization over the kept samples, newest at the
/// right, on a 0–100 % scale: the two lines nvtop draws per device. Without colour the busy
/// line is drawn in dots, so the two still read apart.
pub(super) fn draw_history(f: &mut Frame, app: &App, gpu: &Gpu, view: &SeriesView, area: Rect) {
    let t = &app.theme;
    if area.width < 12 || area.height < 3 {
        return;
    }
    // Two points per cell across (braille), so the last 2 × width samples.
    let cap = (area.width as usize).saturating_sub(1) * 2;
    let total = gpu
        .vram_total_bytes
        .filter(|_| !gpu.unified_memory)
        .or(gpu.gtt_total_bytes)
        .unwrap_or(0);
    let memory: Vec<(f64, f64)> = if total > 0 {
        tail(&view.values, cap)
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v as f64 * 100.0 / total as f64))
            .collect()
    } else {
        Vec::new()
    };
    let busy: Vec<(f64, f64)> = app
        .gpu_busy
        .get(&gpu.index)
        .map(|h| {
            let skip = h.len().saturating_sub(cap);
            // The two series cover the same samples: align the ends.
            let shift = memory.len().saturating_sub(h.len() - skip) as f64;
            h.iter()
                .skip(skip)
                .enumerate()
                .filter_map(|(i, v)| Some((i as f64 + shift, (*v)?)))
                .collect()
        })
        .unwrap_or_default();
    let points = memory.len().max(busy.len()).max(2) as f64;
    let mono = t.name == crate::theme::ThemeName::Mono;
    let (busy_marker, busy_glyph) = if mono {
        (Marker::Dot, "•")
    } else {
        (Marker::Braille, "⣿")
    };
    let mut title = vec![
        Span::styled(" history ", t.title),
        Span::styled("⣿ memory", t.ok),
    ];
    if !busy.is_empty() {
        title.push(Span::styled(format!(" {busy_glyph} busy "), t.warn));
    }
    let mut sets = vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(t.ok)
            .data(&memory),
    ];
    if !busy.is_empty() {
        sets.push(
            Dataset::default()
                .marker(busy_marker)
                .graph_type(GraphType::Line)
                .style(t.warn)
                .data(&busy),
        );
    }
    let chart = Chart::new(sets)
        .block(
            Block::default()
                .borders(Borders::LEFT)
                .border_style(t.border)
                .title(Line::from(title)),
        )
        .x_axis(Axis::default().bounds([0.0, points - 1.0]))
        .y_axis(
            Axis::default()
                .bounds([0.0, 100.0])
                .labels([Span::styled("0", t.dim), Span::styled("100%", t.dim)])
                .style(t.dim),
        )
        .hidden_legend_constraints((Constraint::Length(0), Constraint::Length(0)));
    f.render_widget(chart, area);
}

fn tail<T>(v: &[T], n: usize) -> &[T] {
    &v[v.len().saturating_sub(n)..]
}
