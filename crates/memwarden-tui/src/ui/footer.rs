//! The key hints and status line.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::App;
use crate::keys::BINDINGS;

pub(super) fn draw_footer(f: &mut Frame, app: &App, area: Rect, now: Instant) {
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
pub(super) fn shown(b: &crate::keys::Binding, app: &App) -> bool {
    (!b.replay_only || app.replay.is_some()) && (!b.kill || app.kill_enabled())
}
