//! The live source on this machine: a real sample, and the process tree built from it.

use std::time::Instant;

use memwarden_probe::incremental::Sampler;
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};
use memwarden_tui::app::App;
use memwarden_tui::table::RowKey;
use memwarden_tui::theme::ThemeName;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[test]
fn a_child_sits_under_its_parent_in_the_tree() {
    let mut child = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let me = std::process::id();
    let mut sampler = Sampler::new(Probe::new(HostRoot::system(), GpuSourceKind::None));
    let sample = sampler.sample().unwrap();
    assert_eq!(sample.snapshot.parents().get(&child.id()), Some(&me));

    let mut app = App::new(ThemeName::Dark, true, 60);
    app.ingest(sample.snapshot);
    app.on_key(
        KeyEvent::new(KeyCode::Char('t'), KeyModifiers::NONE),
        Instant::now(),
    );
    assert!(app.tree);
    let pos = |pid: u32| {
        app.rows
            .iter()
            .position(|r| matches!(r.key, RowKey::Process(id) if id.pid == pid))
            .unwrap()
    };
    let (parent, kid) = (pos(me), pos(child.id()));
    assert!(kid > parent);
    assert_eq!(app.rows[kid].depth, app.rows[parent].depth + 1);
    child.kill().unwrap();
    child.wait().unwrap();
}
