//! The host panel: RAM, swap, pressure.

use memwarden_probe::size::format_size;
use memwarden_probe::snapshot::Snapshot;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::App;
use crate::insight::spark;

use super::*;

pub(super) fn draw_host(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect, layout: Layout3) {
    let t = &app.theme;
    let h = &snap.host;
    let used = h.mem_total_bytes.saturating_sub(h.mem_available_bytes);
    let mut extra = Vec::new();
    if h.swap_total_bytes > 0 {
        let su = h.swap_total_bytes.saturating_sub(h.swap_free_bytes);
        extra.push(Span::styled(
            format!(
                " · swap {}/{}",
                format_size(su),
                format_size(h.swap_total_bytes)
            ),
            if su > 0 { t.warn } else { t.base },
        ));
    }
    if let Some(p) = h.psi_memory_some_avg10 {
        extra.push(Span::styled(
            format!(" · pressure {p:.1}%"),
            if p >= 10.0 {
                t.bad
            } else if p >= 1.0 {
                t.warn
            } else {
                t.base
            },
        ));
    }
    if layout != Layout3::Full {
        let mut line = region_line(
            t,
            "RAM",
            Some(used),
            0,
            Some(h.mem_total_bytes),
            area.width.saturating_sub(20),
            false,
        );
        line.spans.extend(extra);
        if let Some(oom) = &app.insights.host.oom {
            line.spans.push(Span::styled(format!(" !! {oom}"), t.bad));
        }
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    let block = Block::bordered()
        .title(Span::styled(" Host memory ", t.title))
        .border_style(t.border);
    let inner = block.inner(area);
    let mut first = region_line(
        t,
        "RAM",
        Some(used),
        0,
        Some(h.mem_total_bytes),
        inner.width.saturating_sub(40),
        true,
    );
    first.spans.extend(extra);
    let spark_w = (inner.width as usize / 2).max(8);
    let mut hist = vec![
        Span::styled(format!("{:<6}", "trend"), t.title),
        Span::styled(
            spark(&app.insights.host.values, spark_w, Some(h.mem_total_bytes)),
            t.title,
        ),
        Span::styled(" ", t.base),
    ];
    hist.extend(phase_spans(t, &app.insights.host));
    f.render_widget(block, area);
    f.render_widget(Paragraph::new(vec![first, Line::from(hist)]), inner);
}
