//! One card per GPU: memory bars, phases, verdicts.

use memwarden_probe::snapshot::Snapshot;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::App;
use crate::insight::{SeriesView, spark};

use super::*;

/// The GPU cards; `extra` rows per card go to the history chart (full layout).
pub(super) fn draw_gpus(
    f: &mut Frame,
    app: &App,
    snap: &Snapshot,
    area: Rect,
    layout: Layout3,
    extra: u16,
) {
    let t = &app.theme;
    if snap.gpus.is_empty() {
        // A reading notes why a GPU source is missing ("NVML unavailable: …"); recordings
        // from before that may carry a whole "no GPU found" line.
        let note = snap
            .notes
            .iter()
            .find_map(|n| {
                if n.contains("GPU") {
                    Some(n.clone())
                } else if n.starts_with("NVML") {
                    Some(format!("no GPU found ({n})"))
                } else {
                    None
                }
            })
            .unwrap_or_else(|| "no GPU found: host memory only".into());
        f.render_widget(
            Paragraph::new(Line::styled(format!(" {note}"), t.dim)),
            area,
        );
        return;
    }
    let mut y = area.y;
    let empty = SeriesView::default();
    let bottom = area.y + area.height;
    for (n, gpu) in snap.gpus.iter().enumerate() {
        let h = gpu_lines(gpu, layout, extra);
        let left = snap.gpus.len() - n;
        // Keep the last line to say how many did not fit, rather than drop them silently.
        if y + h > bottom || (left > 1 && y + h + 1 > bottom) {
            if y < bottom {
                f.render_widget(
                    Paragraph::new(Line::styled(
                        format!(" +{left} more GPU(s): a taller terminal shows them"),
                        t.warn,
                    )),
                    Rect::new(area.x, y, area.width, 1),
                );
            }
            break;
        }
        let rect = Rect::new(area.x, y, area.width, h);
        y += h;
        let view = app.insights.gpus.get(&gpu.index).unwrap_or(&empty);
        let (u, kept, tot, label) = if gpu.unified_memory || gpu.vram_total_bytes.is_none() {
            (gpu.gtt_used_bytes, 0, gpu.gtt_total_bytes, "GTT")
        } else {
            (
                gpu.vram_used_bytes,
                gpu.vram_reserved_bytes.unwrap_or(0),
                gpu.vram_total_bytes,
                "VRAM",
            )
        };
        match layout {
            Layout3::Mini => {
                let mut spans = vec![Span::styled(format!("GPU{} ", gpu.index), t.title)];
                let busy = gpu.figures.utilization_percent.map(|b| format!(" {b:.0}%"));
                let busy_w = busy.as_ref().map_or(0, |b| b.chars().count() as u16);
                let line = region_line(
                    t,
                    label,
                    u,
                    kept,
                    tot,
                    rect.width.saturating_sub(5 + busy_w),
                    false,
                );
                spans.extend(line.spans.into_iter().skip(1));
                if let Some(b) = busy {
                    spans.push(Span::styled(b, t.base));
                }
                if let Some(oom) = &view.oom {
                    spans.push(Span::styled(format!(" !! {oom}"), t.bad));
                } else if let Some(p) = view.phase {
                    spans.push(Span::styled(format!(" {}", p.symbol()), phase_style(t, p)));
                }
                f.render_widget(Paragraph::new(Line::from(spans)), rect);
            }
            Layout3::Compact => {
                let mut first = vec![Span::styled(
                    format!("GPU {} {} ", gpu.index, clip(&gpu.name, 24)),
                    t.title,
                )];
                let mut figures = figure_spans(t, &gpu.figures, false);
                if !figures.is_empty() {
                    figures.insert(0, Span::styled(" · ", t.dim));
                }
                let fig_w: u16 = figures
                    .iter()
                    .map(|s| s.content.chars().count() as u16)
                    .sum();
                first.extend(
                    region_line(
                        t,
                        label,
                        u,
                        kept,
                        tot,
                        rect.width.saturating_sub(30 + fig_w),
                        false,
                    )
                    .spans,
                );
                first.extend(figures);
                let tail = phase_spans(t, view);
                let tail_w: usize = tail.iter().map(|s| s.content.chars().count()).sum();
                // The prediction matters more than the length of the sparkline.
                let spark_w = (rect.width as usize)
                    .saturating_sub(tail_w + 3)
                    .clamp(8, (rect.width as usize / 2).max(8));
                let mut second = vec![
                    Span::styled("  ", t.base),
                    Span::styled(spark(&view.values, spark_w, tot), t.title),
                    Span::styled(" ", t.base),
                ];
                second.extend(tail);
                if let Some(e) = &gpu.error {
                    second.push(Span::styled(format!(" ! {e}"), t.bad));
                }
                f.render_widget(
                    Paragraph::new(vec![Line::from(first), Line::from(second)]),
                    rect,
                );
            }
            Layout3::Full => {
                let mut title = format!(" GPU {} · {} ", gpu.index, gpu.name);
                if !gpu.bus_id.is_empty() {
                    title.push_str(&format!("· {} ", gpu.bus_id));
                }
                if let Some(n) = gpu.numa_node {
                    title.push_str(&format!("· NUMA {n} "));
                }
                if gpu.unified_memory {
                    title.push_str("· unified memory ");
                }
                let block = Block::bordered()
                    .title(Span::styled(title, t.title))
                    .border_style(t.border);
                let card = block.inner(rect);
                // The history chart takes the right of a wide card.
                let chart_w = if card.width + 2 >= CHART_MIN_CARD_WIDTH {
                    card.width * 2 / 5
                } else {
                    0
                };
                let inner = Rect::new(card.x, card.y, card.width - chart_w, card.height);
                let mut lines = vec![region_line(
                    t,
                    "VRAM",
                    gpu.vram_used_bytes,
                    gpu.vram_reserved_bytes.unwrap_or(0),
                    gpu.vram_total_bytes,
                    inner.width,
                    true,
                )];
                if show_gtt(gpu) {
                    lines.push(region_line(
                        t,
                        "GTT",
                        gpu.gtt_used_bytes,
                        0,
                        gpu.gtt_total_bytes,
                        inner.width,
                        true,
                    ));
                }
                if let Some(l) = activity_line(t, gpu, inner.width) {
                    lines.push(l);
                }
                let spark_w = (inner.width as usize / 2).max(8);
                let mut hist = vec![
                    Span::styled(format!("{:<6}", "trend"), t.title),
                    Span::styled(spark(&view.values, spark_w, tot), t.title),
                    Span::styled(" ", t.base),
                ];
                hist.extend(phase_spans(t, view));
                lines.push(Line::from(hist));
                if let Some(e) = &gpu.error {
                    lines.push(Line::styled(format!("! {e}"), t.bad));
                }
                f.render_widget(block, rect);
                f.render_widget(Paragraph::new(lines), inner);
                if chart_w > 0 {
                    let chart = Rect::new(inner.x + inner.width, card.y, chart_w, card.height);
                    draw_history(f, app, gpu, view, chart);
                }
            }
        }
    }
}
