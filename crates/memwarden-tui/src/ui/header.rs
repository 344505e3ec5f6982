//! The title line: host, time, mode, sort.

use memwarden_probe::snapshot::Snapshot;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::App;

use super::*;

pub(super) fn draw_header(f: &mut Frame, app: &App, snap: &Snapshot, area: Rect) {
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
