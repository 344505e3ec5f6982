//! The detail pane of the selected row.

use memwarden_probe::size::format_size;
use memwarden_probe::snapshot::Snapshot;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::app::App;
use crate::insight::{SeriesView, spark};
use crate::table::RowKey;

use super::*;

pub(super) fn draw_detail(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect, borders: Borders) {
    let t = &app.theme;
    let block = Block::new()
        .borders(borders)
        .title(Span::styled(" Detail ", t.title))
        .border_style(t.border);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(row) = app.selected_row() else {
        f.render_widget(
            Paragraph::new(Line::styled("nothing selected", t.dim)),
            inner,
        );
        return;
    };
    let kv = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:<10}"), t.title),
            Span::styled(v, t.base),
        ])
    };
    let mut lines = Vec::new();
    let empty = SeriesView::default();
    let view = match &row.key {
        RowKey::Process(id) => app.insights.processes.get(id).unwrap_or(&empty),
        RowKey::Workload(id) => app.insights.workloads.get(id).unwrap_or(&empty),
    };
    match &row.key {
        RowKey::Process(id) => {
            let p = snap.processes.iter().find(|p| p.identity() == *id);
            lines.push(kv(
                "process",
                format!("{} · pid {} · user {}", row.name, id.pid, row.user),
            ));
            if let Some(p) = p {
                lines.push(kv("command", p.cmdline.clone()));
                if let Some(cg) = &p.cgroup {
                    lines.push(kv("cgroup", cg.clone()));
                }
                if let Some(w) = snap.workloads.iter().find(|w| w.pids.contains(&p.pid)) {
                    lines.push(kv(
                        "workload",
                        format!(
                            "{} ({}{})",
                            w.name,
                            format!("{:?}", w.kind).to_lowercase(),
                            w.runtime
                                .as_ref()
                                .map(|r| format!(", {r}"))
                                .unwrap_or_default()
                        ),
                    ));
                }
                for g in &p.gpu {
                    lines.push(kv(
                        &format!("GPU {}", g.gpu_index),
                        format!(
                            "VRAM {} · GTT {}",
                            g.vram_bytes.map_or("-".into(), format_size),
                            g.gtt_bytes.map_or("-".into(), format_size)
                        ),
                    ));
                }
            }
            if app.extras.id == Some(*id) {
                for (path, size) in &app.extras.model_files {
                    lines.push(kv("model", format!("{path} ({})", format_size(*size))));
                }
                match &app.extras.server {
                    Some(Ok(m)) => {
                        let mut parts = vec![m.kind.as_str().to_string()];
                        if let Some(r) = m.kv_cache_usage_ratio {
                            parts.push(format!("KV cache {:.0}% used", r * 100.0));
                        }
                        if let Some(b) = m.kv_cache_bytes {
                            parts.push(format!("KV pool {}", format_size(b)));
                        }
                        if let Some(n) = m.requests_running {
                            parts.push(format!("{n} running"));
                        }
                        if let Some(n) = m.requests_waiting {
                            parts.push(format!("{n} waiting"));
                        }
                        lines.push(kv("server", parts.join(" · ")));
                        for model in m.models.iter().take(4) {
                            let size = match (model.vram_bytes, model.size_bytes) {
                                (Some(v), Some(t)) => {
                                    format!(" ({} in VRAM of {})", format_size(v), format_size(t))
                                }
                                (None, Some(t)) => format!(" ({})", format_size(t)),
                                _ => String::new(),
                            };
                            lines.push(kv("serves", format!("{}{size}", model.name)));
                        }
                    }
                    Some(Err(why)) => {
                        lines.push(kv("server", format!("metrics unavailable: {why}")))
                    }
                    None => {}
                }
                if !app.extras.ports.is_empty() {
                    let ports: Vec<String> =
                        app.extras.ports.iter().map(|p| p.to_string()).collect();
                    lines.push(kv("listens", ports.join(", ")));
                }
            } else if app.replay.is_some() {
                lines.push(kv("files", "open files are not in recordings".to_string()));
            }
        }
        RowKey::Workload(id) => {
            if let Some(w) = snap.workloads.iter().find(|w| &w.id == id) {
                lines.push(kv(
                    "workload",
                    format!("{} · {:?}", w.name, w.kind).to_lowercase(),
                ));
                lines.push(kv("id", w.id.clone()));
                lines.push(kv(
                    "resident",
                    format!(
                        "{} from {} (cgroup {}, estimate {})",
                        format_size(w.resident_bytes),
                        row.source.unwrap_or("-"),
                        w.cgroup_bytes.map_or("-".into(), format_size),
                        w.estimate_bytes.map_or("-".into(), format_size)
                    ),
                ));
                let pids: Vec<String> = w.pids.iter().take(12).map(|p| p.to_string()).collect();
                lines.push(kv("pids", pids.join(" ")));
            }
        }
    }
    if let Some(fw) = &view.framework {
        lines.push(kv("framework", fw.clone()));
    }
    if let Some(p) = view.phase {
        let mut spans = vec![Span::styled(format!("{:<10}", "phase"), t.title)];
        spans.extend(phase_spans(t, view));
        spans.push(Span::styled(
            format!(" · confidence {:.0}%", view.confidence * 100.0),
            t.dim,
        ));
        let _ = p;
        lines.push(Line::from(spans));
    }
    if let Some((v, why)) = &view.verdict {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<10}", "verdict"), t.title),
            Span::styled(format!("{} {}", v.symbol(), v.word()), verdict_style(t, *v)),
            Span::styled(format!(" {why}"), t.base),
        ]));
    }
    if !view.values.is_empty() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<10}", "history"), t.title),
            Span::styled(
                spark(&view.values, inner.width.saturating_sub(11) as usize, None),
                t.title,
            ),
        ]));
    }
    // The latest stretches first: what it is doing now matters most.
    for s in view.segments.iter().rev().take(8) {
        lines.push(kv(
            "segment",
            format!(
                "{}–{} {} (mean {})",
                clock(s.start_ms),
                clock(s.end_ms),
                s.label,
                format_size(s.mean_bytes.max(0.0) as u64)
            ),
        ));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}
