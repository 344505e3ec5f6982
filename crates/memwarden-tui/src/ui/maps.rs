//! The memory maps: who holds which part of each device and of the host.

use memwarden_probe::size::format_size;
use memwarden_probe::snapshot::Snapshot;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::App;
use crate::memmap::{self, MemoryMap};

use super::*;

pub(super) fn draw_maps(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect, layout: Layout3) {
    let t = &app.theme;
    let mut maps: Vec<MemoryMap> = snap
        .gpus
        .iter()
        .filter_map(|g| memmap::gpu_map(snap, g))
        .collect();
    maps.push(memmap::ram_map(snap));
    let inner = if layout == Layout3::Full {
        let who = if snap.workloads.is_empty() {
            " Memory map · by process "
        } else {
            " Memory map · by workload "
        };
        let block = Block::bordered()
            .title(Span::styled(who, t.title))
            .border_style(t.border);
        let inner = block.inner(area);
        f.render_widget(block, area);
        inner
    } else {
        area
    };
    let mut lines = Vec::new();
    for m in &maps {
        let label = format!("{:<10}", clip(&m.title, 10));
        let bar_w = (inner.width as usize).saturating_sub(label.chars().count() + 2);
        let cells = memmap::cells(m, bar_w);
        let mut spans = vec![Span::styled(label, t.title), Span::styled("[", t.dim)];
        for (i, n) in cells.iter().enumerate() {
            let (glyph, style) = if i < m.holders.len() {
                (SEGMENT_GLYPHS[i % SEGMENT_GLYPHS.len()], t.segment(i))
            } else if i == m.holders.len() {
                (UNATTRIBUTED_GLYPH, t.dim)
            } else {
                (' ', t.free)
            };
            spans.push(Span::styled(glyph.to_string().repeat(*n), style));
        }
        spans.push(Span::styled("]", t.dim));
        lines.push(Line::from(spans));
        let mut legend = vec![Span::styled(" ".repeat(10), t.base)];
        for (i, h) in m.holders.iter().enumerate() {
            legend.push(Span::styled(
                format!("{} ", SEGMENT_GLYPHS[i % SEGMENT_GLYPHS.len()]),
                t.segment(i),
            ));
            legend.push(Span::styled(
                format!(
                    "{} {} ({})  ",
                    clip(&h.name, 18),
                    format_size(h.bytes),
                    h.source
                ),
                t.base,
            ));
        }
        if m.unattributed > 0 {
            legend.push(Span::styled(format!("{UNATTRIBUTED_GLYPH} "), t.dim));
            legend.push(Span::styled(
                format!("unattributed {}  ", format_size(m.unattributed)),
                t.dim,
            ));
        }
        legend.push(Span::styled(
            format!("free {}", format_size(m.free())),
            t.dim,
        ));
        lines.push(Line::from(legend));
    }
    f.render_widget(Paragraph::new(lines), inner);
}
