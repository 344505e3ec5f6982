//! Drawing: everything on screen comes from [`App`]. Three layouts (full, compact, mini) are
//! chosen by what fits; below 40×10 a one-line message replaces the screen.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use memwarden_probe::size::format_size;
use memwarden_probe::snapshot::{Gpu, Snapshot};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::app::{App, HitMap, KillStage, View};
use crate::insight::{PhaseBadge, SeriesView, Verdict, spark};
use crate::keys::BINDINGS;
use crate::memmap::{self, MemoryMap};
use crate::table::{Row, RowKey, SortKey};
use crate::theme::Theme;

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
    let gpu_h = gpu_height(snap, layout);
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
    let [header, gpus, host, map, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(gpu_h),
        Constraint::Length(host_h),
        Constraint::Length(map_h),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, app, snap, header);
    draw_gpus(f, app, snap, gpus, layout);
    draw_host(f, app, snap, host, layout);
    if map_h > 0 {
        draw_maps(f, app, snap, map, layout);
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

fn gpu_lines(gpu: &Gpu, layout: Layout3) -> u16 {
    match layout {
        Layout3::Mini => 1,
        Layout3::Compact => 2,
        Layout3::Full => 2 + u16::from(show_gtt(gpu)) + u16::from(gpu.error.is_some()) + 2,
    }
}

fn gpu_height(snap: &Snapshot, layout: Layout3) -> u16 {
    if snap.gpus.is_empty() {
        return 1;
    }
    snap.gpus.iter().map(|g| gpu_lines(g, layout)).sum()
}

fn map_count(snap: &Snapshot) -> usize {
    snap.gpus
        .iter()
        .filter(|g| memmap::gpu_map(snap, g).is_some())
        .count()
        + 1
}

fn choose_layout(app: &App, snap: &Snapshot, area: Rect) -> Layout3 {
    let maps = if app.show_map {
        map_count(snap) as u16
    } else {
        0
    };
    let need = |l: Layout3| -> u16 {
        let (host, map, table) = match l {
            Layout3::Full => (4, if maps > 0 { 2 + 2 * maps } else { 0 }, 10),
            Layout3::Compact => (1, 2 * maps, 6),
            Layout3::Mini => (1, 0, 3),
        };
        1 + gpu_height(snap, l) + host + map + table + 1
    };
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

fn clock(ms: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-01-02T03:04:05Z -> 03:04:05
    s.get(11..19).unwrap_or(&s).to_string()
}

fn draw_header(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect) {
    let t = &app.theme;
    let mut spans = vec![
        Span::styled(" memwarden ", t.title),
        Span::styled(
            if snap.hostname.is_empty() {
                "host".to_string()
            } else {
                snap.hostname.clone()
            },
            t.base,
        ),
        Span::styled(" · ", t.dim),
        Span::styled(app.source_label(), t.base),
        Span::styled(" · ", t.dim),
        Span::styled(clock(snap.taken_at_ms), t.base),
        Span::styled(" · ", t.dim),
        Span::styled(format!("{} processes", snap.processes.len()), t.base),
    ];
    // What the reading skipped or degraded (a GPU source missing, a server not read): counted
    // here, listed in the help.
    let notes = snap
        .notes
        .iter()
        .filter(|n| !n.contains("no GPU found"))
        .count();
    if notes > 0 {
        spans.push(Span::styled(" · ", t.dim));
        spans.push(Span::styled(
            format!("{notes} note(s), ? lists them"),
            t.warn,
        ));
    }
    if let Some(r) = &app.replay
        && r.skipped > 0
    {
        spans.push(Span::styled(" · ", t.dim));
        spans.push(Span::styled(
            format!("{} bad lines skipped", r.skipped),
            t.warn,
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A bar of `width` cells as spans: filled in the level's style, the rest as free.
/// A bar of `used`, then `reserved` (held by the driver, not by any process), then free.
fn bar<'a>(t: &Theme, used: u64, reserved: u64, total: u64, width: usize) -> Vec<Span<'a>> {
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

fn level_style(t: &Theme, frac: f64) -> Style {
    if frac >= 0.9 {
        t.bad
    } else if frac >= 0.75 {
        t.warn
    } else {
        t.ok
    }
}

fn pct(used: u64, total: u64) -> String {
    if total == 0 {
        "  -%".into()
    } else {
        format!("{:3.0}%", used as f64 * 100.0 / total as f64)
    }
}

/// A memory region on one line. `reserved` is the part the driver keeps (NVIDIA VRAM), 0
/// elsewhere.
fn region_line<'a>(
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

fn phase_spans<'a>(t: &Theme, v: &SeriesView) -> Vec<Span<'a>> {
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

fn phase_style(t: &Theme, p: PhaseBadge) -> Style {
    match p {
        PhaseBadge::Stable => t.ok,
        PhaseBadge::Growing => t.warn,
        PhaseBadge::Shrinking => t.base,
        PhaseBadge::Volatile => t.warn,
    }
}

fn verdict_style(t: &Theme, v: Verdict) -> Style {
    match v {
        Verdict::Ok => t.ok,
        Verdict::Tight => t.warn,
        Verdict::Oom => t.bad,
    }
}

fn draw_gpus(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect, layout: Layout3) {
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
        let h = gpu_lines(gpu, layout);
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
                let line = region_line(t, label, u, kept, tot, rect.width.saturating_sub(5), false);
                spans.extend(line.spans.into_iter().skip(1));
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
                first.extend(
                    region_line(t, label, u, kept, tot, rect.width.saturating_sub(30), false).spans,
                );
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
                let inner = block.inner(rect);
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
            }
        }
    }
}

fn draw_host(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect, layout: Layout3) {
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

fn draw_maps(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect, layout: Layout3) {
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

struct Col {
    title: &'static str,
    width: u16,
    right: bool,
    sort: Option<SortKey>,
    /// Dropped first when the screen is narrow: higher goes first.
    drop: u8,
}

fn columns(app: &App, width: u16) -> Vec<Col> {
    let workloads = app.view == View::Workloads;
    let any_gtt = app.rows.iter().any(|r| r.gtt.is_some_and(|g| g > 0));
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
        Col {
            title: "VRAM",
            width: 9,
            right: true,
            sort: Some(SortKey::Vram),
            drop: 0,
        },
    ];
    if any_gtt {
        cols.push(Col {
            title: "GTT",
            width: 9,
            right: true,
            sort: Some(SortKey::Gtt),
            drop: 3,
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

fn cell(row: &Row, title: &str, app: &App) -> (String, Style) {
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

fn fit(s: &str, width: usize, right: bool) -> String {
    let s = clip(s, width);
    if right {
        format!("{s:>width$}")
    } else {
        format!("{s:<width$}")
    }
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

fn draw_table(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let cols = columns(app, area.width);
    let mut hits = HitMap::default();
    let mut x = area.x;
    let mut header = Vec::new();
    for c in &cols {
        let arrow = if c.sort == Some(app.sort) {
            if app.descending { "▼" } else { "▲" }
        } else {
            ""
        };
        let title = format!("{}{arrow}", c.title);
        header.push(Span::styled(
            format!("{} ", fit(&title, c.width as usize, c.right)),
            if c.sort == Some(app.sort) {
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

fn draw_detail(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect, borders: Borders) {
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

fn draw_footer(f: &mut Frame, app: &App, area: Rect, now: Instant) {
    let t = &app.theme;
    if app.filtering {
        let line = Line::from(vec![
            Span::styled(" filter: ", t.title),
            Span::styled(format!("{}▏", app.filter), t.base),
            Span::styled("  Enter keeps · Esc clears", t.dim),
        ]);
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    let mut spans = Vec::new();
    if let Some(msg) = app.status_text(now) {
        spans.push(Span::styled(format!(" {msg} "), t.warn));
        spans.push(Span::styled("│", t.dim));
    } else if !app.filter.is_empty() {
        spans.push(Span::styled(format!(" filter \"{}\" ", app.filter), t.warn));
        spans.push(Span::styled("│", t.dim));
    }
    let mut hints: Vec<&str> = BINDINGS
        .iter()
        .filter(|b| shown(b, app))
        .filter_map(|b| b.footer)
        .collect();
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let width = |h: &[&str]| h.iter().map(|l| l.chars().count() + 1).sum::<usize>();
    // On a narrow screen the hints that matter most stay: how to get help and how to leave.
    let mut drop_order = hints.clone();
    drop_order.retain(|h| !h.starts_with('?') && !h.starts_with('q'));
    while used + width(&hints) > area.width as usize {
        match drop_order.pop() {
            Some(d) => hints.retain(|h| *h != d),
            None => break,
        }
    }
    for label in hints {
        let (key, what) = label.split_once(' ').unwrap_or((label, ""));
        spans.push(Span::styled(format!(" {key}"), t.title));
        spans.push(Span::styled(format!(" {what}"), t.dim));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Whether a key binding applies here (replay keys in a replay, kill when it is on).
fn shown(b: &crate::keys::Binding, app: &App) -> bool {
    (!b.replay_only || app.replay.is_some()) && (!b.kill || app.kill_enabled())
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

fn draw_help(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let mut lines = Vec::new();
    for b in BINDINGS {
        if !shown(b, app) {
            continue;
        }
        lines.push(Line::from(vec![
            Span::styled(format!("{:<24}", b.keys), t.title),
            Span::styled(b.what, t.base),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "phase: ● stable  ▲ growing  ▼ shrinking  ◆ volatile  (- too few samples yet)",
        t.base,
    ));
    lines.push(Line::styled(
        "verdict: ✓ OK · ⚠ TIGHT (little headroom) · ✗ OOM (will not survive its expected peak)",
        t.base,
    ));
    lines.push(Line::styled(
        format!(
            "map: {UNATTRIBUTED_GLYPH} used but not attributed to a listed holder, blank = free"
        ),
        t.base,
    ));
    if let Some(why) = &app.kill_off {
        lines.push(Line::styled(format!("kill: {why}"), t.dim));
    }
    if let Some(snap) = &app.snap {
        for n in snap.notes.iter().take(6) {
            lines.push(Line::styled(format!("note: {}", clip(n, 160)), t.warn));
        }
    }
    lines.push(Line::styled("any key closes this help", t.dim));
    let rect = centered(area, 90, lines.len() as u16 + 2);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(Span::styled(" memwarden top · keys ", t.title))
                .border_style(t.border),
        ),
        rect,
    );
}

fn draw_kill(f: &mut Frame, app: &App, area: Rect, now: Instant) {
    let t = &app.theme;
    let Some(d) = &app.dialog else { return };
    let who = format!("{} (pid {})", d.name, d.target.pid);
    let mut lines = Vec::new();
    match &d.stage {
        KillStage::Confirm => {
            lines.push(Line::styled(format!("End {who}?"), t.title));
            lines.push(Line::styled(
                match d.age {
                    Some(a) => format!("running for {}", crate::kill::format_age(a)),
                    None => "running for: unknown".into(),
                },
                t.base,
            ));
            lines.push(Line::styled(clip(&d.command, 200), t.dim));
            lines.push(Line::raw(""));
            lines.push(Line::from(vec![
                Span::styled("y", t.bad),
                Span::styled(" / Enter: send SIGTERM   ", t.base),
                Span::styled("n", t.title),
                Span::styled(" / Esc: cancel", t.base),
            ]));
        }
        KillStage::Sent(at) => {
            let waited = now.saturating_duration_since(*at).as_secs();
            lines.push(Line::styled(format!("SIGTERM sent to {who}"), t.title));
            lines.push(Line::styled(
                format!("waiting for it to exit… {waited}s"),
                t.base,
            ));
            lines.push(Line::styled("Esc: stop waiting", t.dim));
        }
        KillStage::OfferKill => {
            lines.push(Line::styled(
                format!("{who} is still running 5 s after SIGTERM"),
                t.warn,
            ));
            lines.push(Line::raw(""));
            lines.push(Line::from(vec![
                Span::styled("K", t.bad),
                Span::styled(": send SIGKILL (it cannot clean up)   ", t.base),
                Span::styled("Esc", t.title),
                Span::styled(": leave it", t.base),
            ]));
        }
        KillStage::Done(msg) => {
            lines.push(Line::styled(msg.clone(), t.base));
            lines.push(Line::styled("any key closes", t.dim));
        }
    }
    let rect = centered(area, 64, lines.len() as u16 + 2);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(Span::styled(" kill ", t.bad))
                .border_style(t.bad),
        ),
        rect,
    );
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
