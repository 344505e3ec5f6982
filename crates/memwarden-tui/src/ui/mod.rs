//! Drawing: everything on screen comes from [`App`]. Three layouts (full, compact, mini) are
//! chosen by what fits; below 40×10 a one-line message replaces the screen.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use memwarden_probe::snapshot::{Gpu, Snapshot};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Borders, Paragraph, Wrap};

use crate::app::App;
use crate::memmap::{self};

mod activity;
mod broker;
mod detail;
mod dialogs;
mod footer;
mod gpu;
mod header;
mod host;
mod maps;
mod table;
mod widgets;

use activity::*;
use broker::*;
use detail::*;
use dialogs::*;
use footer::*;
use gpu::*;
use header::*;
use host::*;
use maps::*;
use table::*;
use widgets::*;

pub const MIN_WIDTH: u16 = 40;
pub const MIN_HEIGHT: u16 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout3 {
    Full,
    Compact,
    Mini,
}

/// Glyphs of the memory map's segments: the map reads without colour.
const SEGMENT_GLYPHS: [char; 5] = ['█', '▓', '▒', '▚', '#'];
const UNATTRIBUTED_GLYPH: char = '≡';

pub fn draw(f: &mut Frame, app: &App, now: Instant) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small ({}×{}): memwarden top needs {MIN_WIDTH}×{MIN_HEIGHT}",
            area.width, area.height
        );
        f.render_widget(
            Paragraph::new(msg)
                .style(app.theme.warn)
                .wrap(Wrap { trim: true }),
            area,
        );
        return;
    }
    let Some(snap) = &app.snap else {
        let msg = match &app.replay {
            Some(r) => format!("memwarden: loading {}…", r.file),
            None => "memwarden: reading the machine…".into(),
        };
        f.render_widget(Paragraph::new(msg).style(app.theme.base), area);
        return;
    };
    let layout = choose_layout(app, snap, area);
    let extra = chart_rows(app, snap, area, layout);
    let gpu_h = gpu_height(snap, layout, extra);
    let broker_h = broker_height(app, layout);
    let host_h = match layout {
        Layout3::Full => 4,
        _ => 1,
    };
    let maps = if app.show_map && layout != Layout3::Mini {
        map_count(snap)
    } else {
        0
    };
    let map_h = match (maps, layout) {
        (0, _) => 0,
        (n, Layout3::Full) => 2 + 2 * n as u16,
        (n, _) => 2 * n as u16,
    };
    let [header, gpus, host, map, broker, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(gpu_h),
        Constraint::Length(host_h),
        Constraint::Length(map_h),
        Constraint::Length(broker_h),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, app, snap, header);
    draw_gpus(f, app, snap, gpus, layout, extra);
    draw_host(f, app, snap, host, layout);
    if map_h > 0 {
        draw_maps(f, app, snap, map, layout);
    }
    if broker_h > 0 {
        draw_broker(f, app, broker, layout);
    }
    draw_body(f, app, snap, body, layout);
    draw_footer(f, app, footer, now);
    if app.help {
        draw_help(f, app, area);
    }
    if app.dialog.is_some() {
        draw_kill(f, app, area, now);
    }
}

/// A card's height; `extra` rows give its history chart more room (full layout only).
fn gpu_lines(gpu: &Gpu, layout: Layout3, extra: u16) -> u16 {
    match layout {
        Layout3::Mini => 1,
        Layout3::Compact => 2,
        Layout3::Full => {
            2 + u16::from(show_gtt(gpu))
                + u16::from(gpu.error.is_some())
                + u16::from(has_figures(&gpu.figures))
                + 2
                + extra
        }
    }
}

fn gpu_height(snap: &Snapshot, layout: Layout3, extra: u16) -> u16 {
    if snap.gpus.is_empty() {
        return 1;
    }
    snap.gpus.iter().map(|g| gpu_lines(g, layout, extra)).sum()
}

/// Rows the screen can spare to each GPU's history chart: up to 4 more per card, from what
/// the full layout leaves beyond a table of 10 rows.
fn chart_rows(app: &App, snap: &Snapshot, area: Rect, layout: Layout3) -> u16 {
    if layout != Layout3::Full || snap.gpus.is_empty() || area.width < CHART_MIN_CARD_WIDTH {
        return 0;
    }
    let spare = area.height.saturating_sub(full_need(app, snap, 0) + 6);
    (spare / snap.gpus.len() as u16).min(4)
}

fn map_count(snap: &Snapshot) -> usize {
    snap.gpus
        .iter()
        .filter(|g| memmap::gpu_map(snap, g).is_some())
        .count()
        + 1
}

/// The rows a layout needs, its table included.
fn layout_need(app: &App, snap: &Snapshot, l: Layout3, extra: u16) -> u16 {
    let maps = if app.show_map {
        map_count(snap) as u16
    } else {
        0
    };
    let (host, map, table) = match l {
        Layout3::Full => (4, if maps > 0 { 2 + 2 * maps } else { 0 }, 10),
        Layout3::Compact => (1, 2 * maps, 6),
        Layout3::Mini => (1, 0, 3),
    };
    1 + gpu_height(snap, l, extra) + host + map + broker_height(app, l) + table + 1
}

fn full_need(app: &App, snap: &Snapshot, extra: u16) -> u16 {
    layout_need(app, snap, Layout3::Full, extra)
}

fn choose_layout(app: &App, snap: &Snapshot, area: Rect) -> Layout3 {
    let need = |l: Layout3| layout_need(app, snap, l, 0);
    if area.width >= 100 && area.height >= need(Layout3::Full) {
        Layout3::Full
    } else if area.width >= 60 && area.height >= need(Layout3::Compact) {
        Layout3::Compact
    } else {
        Layout3::Mini
    }
}

fn show_gtt(gpu: &Gpu) -> bool {
    gpu.unified_memory || gpu.gtt_used_bytes.is_some_and(|u| u > 0)
}

fn draw_body(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect, layout: Layout3) {
    if !app.detail {
        draw_table(f, app, area);
        return;
    }
    if layout == Layout3::Mini {
        draw_detail(f, app, snap, area, Borders::TOP);
    } else if area.width >= 150 {
        let [left, right] =
            Layout::horizontal([Constraint::Min(80), Constraint::Length(area.width * 2 / 5)])
                .areas(area);
        draw_table(f, app, left);
        draw_detail(f, app, snap, right, Borders::TOP | Borders::LEFT);
    } else {
        let [top, bottom] =
            Layout::vertical([Constraint::Min(4), Constraint::Percentage(50)]).areas(area);
        draw_table(f, app, top);
        draw_detail(f, app, snap, bottom, Borders::TOP);
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// Cuts text to `max` characters with a trailing `…`.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Wall-clock milliseconds, for a status line that has no snapshot yet.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
