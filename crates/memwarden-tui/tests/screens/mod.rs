//! The example recording played into an app and drawn on ratatui's test backend, shared by
//! the screen tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

use memwarden_probe::snapshot::Snapshot;
use memwarden_tui::app::{App, ReplayStatus};
use memwarden_tui::replay::Recording;
use memwarden_tui::theme::ThemeName;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

pub fn recording() -> Vec<Snapshot> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/training-beside-inference.jsonl");
    Recording::open(&path).expect("example recording").samples
}

/// An app fed the first `n` samples of the example, as a replay would.
pub fn app_after(n: usize, colour: bool) -> App {
    let samples = recording();
    let mut app = App::new(ThemeName::Dark, colour, 600);
    for s in samples.iter().take(n) {
        app.ingest(s.clone());
    }
    app.replay = Some(ReplayStatus {
        file: "training-beside-inference.jsonl".into(),
        position: n,
        len: samples.len(),
        speed: 1.0,
        paused: false,
        skipped: 0,
    });
    app.disable_kill("a recording is being played: nothing to kill");
    app
}

pub fn render(app: &App, w: u16, h: u16) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| memwarden_tui::ui::draw(f, app, Instant::now()))
        .unwrap();
    term.backend().buffer().clone()
}

pub fn text(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

pub fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}
