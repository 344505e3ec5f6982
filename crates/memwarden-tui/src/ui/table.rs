//! The workload and process table: columns chosen by width, cells, selection.

use memwarden_probe::size::format_size;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, HitMap, View};
use crate::table::{Row, SortKey};

use super::*;

pub(super) struct Col {
    title: &'static str,
    width: u16,
    right: bool,
    sort: Option<SortKey>,
    /// Dropped first when the screen is narrow: higher goes first.
    drop: u8,
}

/// Which figures can be known here: a column that could only ever show `-` is left out (no
/// GPU: no VRAM, GPU %, phase or verdict; a recording without rates: no CPU %).
pub(super) struct Known {
    pub gpu: bool,
    pub cpu: bool,
    pub gpu_util: bool,
}

impl Known {
    pub(super) fn of(app: &App) -> Known {
        let gpu = app.snap.as_ref().is_some_and(|s| !s.gpus.is_empty());
        // The live view has rates from its second sample on: keep the columns meanwhile.
        let warming = app.replay.is_none() && app.samples_seen < 2;
        Known {
            gpu,
            cpu: warming || app.rows.iter().any(|r| r.cpu.is_some()),
            gpu_util: gpu && (warming || app.rows.iter().any(|r| r.gpu_util.is_some())),
        }
    }
}

/// The column the header marks for the sort: memory, which has no column of its own, is
/// marked on VRAM (or RSS where there is no GPU).
fn marks(c: &Col, app: &App, known: &Known) -> bool {
    match app.sort {
        SortKey::Memory if known.gpu => c.sort == Some(SortKey::Vram),
        SortKey::Memory => c.sort == Some(SortKey::Rss),
        k => c.sort == Some(k),
    }
}

pub(super) fn columns(app: &App, width: u16) -> Vec<Col> {
    let workloads = app.view == View::Workloads;
    let any_gtt = app.rows.iter().any(|r| r.gtt.is_some_and(|g| g > 0));
    let known = Known::of(app);
    let mut cols = vec![
        Col {
            title: if workloads { "PIDS" } else { "PID" },
            width: 7,
            right: true,
            sort: Some(SortKey::Pid),
            drop: 0,
        },
        Col {
            title: if workloads { "RUNTIME" } else { "USER" },
            width: 9,
            right: false,
            sort: None,
            drop: 5,
        },
        Col {
            title: "NAME",
            width: if app.tree { 22 } else { 16 },
            right: false,
            sort: Some(SortKey::Name),
            drop: 0,
        },
    ];
    if known.gpu_util {
        cols.push(Col {
            title: "GPU%",
            width: 5,
            right: true,
            sort: Some(SortKey::GpuUtil),
            drop: 3,
        });
    }
    if known.gpu {
        cols.push(Col {
            title: "VRAM",
            width: 9,
            right: true,
            sort: Some(SortKey::Vram),
            drop: 0,
        });
    }
    if any_gtt {
        cols.push(Col {
            title: "GTT",
            width: 9,
            right: true,
            sort: Some(SortKey::Gtt),
            drop: 3,
        });
    }
    if known.cpu {
        cols.push(Col {
            title: "CPU%",
            width: 5,
            right: true,
            sort: Some(SortKey::Cpu),
            drop: 2,
        });
    }
    cols.push(Col {
        title: if workloads { "RESIDENT" } else { "RSS" },
        width: 9,
        right: true,
        sort: Some(SortKey::Rss),
        drop: 1,
    });
    if workloads {
        cols.push(Col {
            title: "SOURCE",
            width: 8,
            right: false,
            sort: None,
            drop: 4,
        });
    }
    if known.gpu {
        cols.push(Col {
            title: "PHASE",
            width: 11,
            right: false,
            sort: Some(SortKey::Phase),
            drop: 2,
        });
        cols.push(Col {
            title: "VERDICT",
            width: 8,
            right: false,
            sort: Some(SortKey::Verdict),
            drop: 2,
        });
    }
    let fits = |cols: &[Col]| cols.iter().map(|c| c.width + 1).sum::<u16>() <= width;
    for level in (1..=5).rev() {
        if fits(&cols) {
            break;
        }
        cols.retain(|c| c.drop < level);
    }
    // In the narrowest case shrink the name to fit.
    let used: u16 = cols.iter().map(|c| c.width + 1).sum();
    if used > width
        && let Some(name) = cols.iter_mut().find(|c| c.title == "NAME")
    {
        name.width = name.width.saturating_sub(used - width).max(4);
    }
    let used: u16 = cols.iter().map(|c| c.width + 1).sum();
    if width.saturating_sub(used) >= 12 {
        cols.push(Col {
            title: "COMMAND",
            width: width - used,
            right: false,
            sort: None,
            drop: 0,
        });
    }
    cols
}

pub(super) fn cell(row: &Row, title: &str, app: &App) -> (String, Style) {
    let t = &app.theme;
    let size = |v: Option<u64>| v.map_or_else(|| "-".to_string(), format_size);
    match title {
        "PID" | "PIDS" => (row.pid.to_string(), t.base),
        "USER" | "RUNTIME" => (row.user.clone(), t.dim),
        "NAME" => {
            // A deep tree indents by one cell a level, so the names still show.
            let depth = row.depth.min(12) as usize;
            let branch = if depth > 0 { "└" } else { "" };
            (
                format!(
                    "{}{branch}{}",
                    " ".repeat(depth.saturating_sub(1)),
                    row.name
                ),
                t.base,
            )
        }
        "VRAM" => (size(row.vram), t.base),
        "GTT" => (size(row.gtt), t.base),
        "RSS" | "RESIDENT" => (size(row.rss), t.base),
        "CPU%" => (rate(row.cpu), t.base),
        "GPU%" => (rate(row.gpu_util), t.base),
        "SOURCE" => (row.source.unwrap_or("-").to_string(), t.dim),
        "PHASE" => match row.phase {
            Some(p) => (format!("{} {}", p.symbol(), p.word()), phase_style(t, p)),
            None => ("-".into(), t.dim),
        },
        "VERDICT" => match row.verdict {
            Some(v) => (format!("{} {}", v.symbol(), v.word()), verdict_style(t, v)),
            None => ("-".into(), t.dim),
        },
        _ => (row.command.clone(), t.dim),
    }
}

/// A percentage in a 5-wide cell: one decimal below 100, none above (a process on many CPUs).
fn rate(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 99.95 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

pub(super) fn fit(s: &str, width: usize, right: bool) -> String {
    let s = clip(s, width);
    if right {
        format!("{s:>width$}")
    } else {
        format!("{s:<width$}")
    }
}

pub(super) fn draw_table(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let cols = columns(app, area.width);
    let known = Known::of(app);
    let mut hits = HitMap::default();
    let mut x = area.x;
    let mut header = Vec::new();
    for c in &cols {
        let marked = marks(c, app, &known);
        let arrow = if marked {
            if app.descending { "▼" } else { "▲" }
        } else {
            ""
        };
        let title = format!("{}{arrow}", c.title);
        header.push(Span::styled(
            format!("{} ", fit(&title, c.width as usize, c.right)),
            if marked {
                t.header.add_modifier(Modifier::REVERSED)
            } else {
                t.header
            },
        ));
        if let Some(k) = c.sort {
            hits.columns.push((x, x + c.width, k));
        }
        x += c.width + 1;
    }
    let header_rect = Rect::new(area.x, area.y, area.width, 1);
    f.render_widget(Paragraph::new(Line::from(header)), header_rect);
    let rows_rect = Rect::new(
        area.x,
        area.y + 1,
        area.width,
        area.height.saturating_sub(1),
    );
    let visible = rows_rect.height as usize;
    // Keep the selection in view, a little away from the edges when there is room.
    let offset = if app.selected < visible {
        0
    } else {
        app.selected + 1 - visible
    };
    let mut lines = Vec::new();
    for (i, row) in app.rows.iter().enumerate().skip(offset).take(visible) {
        let selected = i == app.selected;
        let mut spans = Vec::new();
        for c in &cols {
            let (text, style) = cell(row, c.title, app);
            let style = if selected {
                style.patch(t.selected)
            } else {
                style
            };
            spans.push(Span::styled(
                format!("{} ", fit(&text, c.width as usize, c.right)),
                style,
            ));
        }
        let mut line = Line::from(spans);
        if selected {
            line = line.style(t.selected);
        }
        lines.push(line);
    }
    if app.rows.is_empty() {
        let msg = if app.filter.is_empty() {
            "no rows".to_string()
        } else {
            format!("nothing matches \"{}\" (Esc clears the filter)", app.filter)
        };
        lines.push(Line::styled(msg, t.dim));
    }
    f.render_widget(Paragraph::new(lines), rows_rect);
    hits.header = header_rect;
    hits.rows = Rect::new(
        rows_rect.x,
        rows_rect.y,
        rows_rect.width,
        (app.rows.len().saturating_sub(offset)).min(visible) as u16,
    );
    hits.offset = offset;
    *app.hits.borrow_mut() = hits;
}
