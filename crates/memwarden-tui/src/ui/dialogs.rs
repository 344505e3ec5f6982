//! Overlays: help and the kill dialog.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::app::{App, KillStage};
use crate::keys::BINDINGS;

use super::*;

pub(super) fn draw_help(f: &mut Frame, app: &App, area: Rect) {
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

pub(super) fn draw_kill(f: &mut Frame, app: &App, area: Rect, now: Instant) {
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
