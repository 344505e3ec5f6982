//! The broker pane: each pool's promises against its size, and each consumer's state, what it
//! holds against what it declares, and its queue — the broker's side of the GPU beside the
//! machine's.

use memwarden_probe::size::format_size;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::App;
use crate::broker::{BrokerState, BrokerView, Consumer};
use crate::theme::Theme;

use super::*;

/// Lines of pools and consumers shown at most (full layout; compact shows half).
const MAX_LINES: usize = 8;

/// The pane's height in a layout; 0 when there is no broker to show.
pub(super) fn broker_height(app: &App, layout: Layout3) -> u16 {
    let lines = match &app.broker {
        None => return 0,
        Some(BrokerState::Failed { .. }) => 1,
        Some(BrokerState::Answered(b)) => body_lines(b, layout).max(1),
    };
    match layout {
        Layout3::Mini => 0,
        Layout3::Compact => lines as u16,
        Layout3::Full => lines as u16 + 2,
    }
}

/// Pool and consumer lines that fit, plus one saying how many did not.
fn body_lines(b: &BrokerView, layout: Layout3) -> usize {
    let max = if layout == Layout3::Full {
        MAX_LINES
    } else {
        MAX_LINES / 2
    };
    let all = b.pools.len() + b.consumers.len();
    if all + b.more > max { max } else { all }
}

pub(super) fn draw_broker(f: &mut Frame, app: &App, area: Rect, layout: Layout3) {
    let t = &app.theme;
    let Some(state) = &app.broker else {
        return;
    };
    let (title, lines) = match state {
        BrokerState::Failed { url, why } => (
            format!(" Broker · {url} "),
            vec![Line::styled(format!("not answering: {why}"), t.warn)],
        ),
        BrokerState::Answered(b) => (
            format!(
                " Broker · {} · {} pool(s) · {} consumer(s) ",
                b.url,
                b.pools.len(),
                b.consumers.len()
            ),
            lines_of(t, b, layout),
        ),
    };
    if layout == Layout3::Full {
        let block = Block::bordered()
            .title(Span::styled(title, t.title))
            .border_style(t.border);
        let inner = block.inner(area);
        f.render_widget(block, area);
        f.render_widget(Paragraph::new(lines), inner);
    } else {
        f.render_widget(Paragraph::new(lines), area);
    }
}

fn lines_of<'a>(t: &Theme, b: &BrokerView, layout: Layout3) -> Vec<Line<'a>> {
    let size = |v: Option<u64>| v.map_or_else(|| "-".to_string(), format_size);
    let fit = body_lines(b, layout);
    let mut out = Vec::new();
    for p in &b.pools {
        let mut spans = vec![Span::styled(
            format!("pool {:<12} ", clip(&p.name, 12)),
            t.title,
        )];
        spans.push(Span::styled(format!("{:<5} ", clip(&p.kind, 5)), t.dim));
        if let (Some(promised), Some(total)) = (p.promised, p.total) {
            spans.extend(bar(t, promised, 0, total, 20));
        }
        spans.push(Span::styled(
            format!(
                " {} promised of {} · {} available",
                size(p.promised),
                size(p.total),
                size(p.available)
            ),
            t.base,
        ));
        if p.queue > 0 {
            spans.push(Span::styled(format!(" · {} queued", p.queue), t.warn));
        }
        out.push(Line::from(spans));
    }
    for c in &b.consumers {
        out.push(consumer_line(t, c));
    }
    if out.is_empty() {
        out.push(Line::styled("no pools or consumers configured", t.dim));
    }
    let hidden = out.len().saturating_sub(fit) + b.more;
    if hidden > 0 {
        out.truncate(fit.saturating_sub(1));
        out.push(Line::styled(
            format!("+{hidden} more: `memwarden status` lists them all"),
            t.dim,
        ));
    }
    out
}

/// A symbol and a word for each state, so the pane reads without colour.
fn state_look(t: &Theme, state: &str) -> (&'static str, Style) {
    match state {
        "loaded" => ("●", t.ok),
        "loading" => ("▲", t.warn),
        "unloading" => ("▼", t.warn),
        "stuck" => ("✗", t.bad),
        "sleeping" => ("◌", t.dim),
        "unloaded" => ("○", t.dim),
        _ => ("?", t.base),
    }
}

fn consumer_line<'a>(t: &Theme, c: &Consumer) -> Line<'a> {
    let size = |v: Option<u64>| v.map_or_else(|| "-".to_string(), format_size);
    let (symbol, style) = state_look(t, &c.state);
    let mut state = c.state.clone();
    if c.pinned {
        state.push_str(",pinned");
    }
    // Holding more than declared is what the broker's plans do not know about.
    let over = matches!((c.holds, c.declared), (Some(h), Some(d)) if h > d);
    let mut spans = vec![
        Span::styled(format!("  {symbol} "), style),
        Span::styled(format!("{:<16} ", clip(&c.name, 16)), t.base),
        Span::styled(format!("{:<15} ", clip(&state, 15)), style),
        Span::styled(format!("{:<8} ", clip(&c.pool, 8)), t.dim),
        Span::styled(
            format!("holds {} / declared {}", size(c.holds), size(c.declared)),
            if over { t.warn } else { t.base },
        ),
        Span::styled(format!(" · in flight {}", c.in_flight), t.dim),
    ];
    if c.queued > 0 {
        spans.push(Span::styled(format!(" · {} queued", c.queued), t.warn));
    }
    Line::from(spans)
}
