//! What `top` shows beside memory: device figures and their history chart, CPU and GPU use per
//! process, the broker's pane, kernel threads hidden, and the screen of a machine without a
//! GPU; drawn on ratatui's test backend.

mod screens;

use std::time::Instant;

use memwarden_probe::snapshot::{HostMemory, Process, Snapshot};
use memwarden_tui::app::App;
use memwarden_tui::theme::ThemeName;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use screens::{app_after, key, recording, render, text};

fn replayed(n: usize) -> App {
    app_after(n, true)
}

fn screen(app: &App, w: u16, h: u16) -> String {
    text(&render(app, w, h))
}

fn process(pid: u32, ppid: u32, name: &str, cmdline: &str, cpu: Option<f64>) -> Process {
    Process {
        pid,
        starttime: 100 + u64::from(pid),
        ppid: Some(ppid),
        uid: Some(0),
        name: name.into(),
        cmdline: cmdline.into(),
        rss_bytes: (!cmdline.is_empty()).then_some(u64::from(pid) << 20),
        cgroup: None,
        gpu: vec![],
        framework: None,
        cpu_percent: cpu,
        gpu_utilization_percent: None,
    }
}

/// A machine without a GPU: init, a busy compiler, kthreadd and one of its workers.
fn gpuless(cpu: bool) -> Snapshot {
    let c = |v: f64| cpu.then_some(v);
    Snapshot {
        version: 1,
        taken_at_ms: 1_772_442_000_000,
        hostname: "laptop".into(),
        host: HostMemory {
            mem_total_bytes: 16 << 30,
            mem_available_bytes: 9 << 30,
            swap_total_bytes: 0,
            swap_free_bytes: 0,
            psi_memory_some_avg10: None,
        },
        gpus: vec![],
        processes: vec![
            process(1, 0, "systemd", "/sbin/init", c(0.0)),
            process(2, 0, "kthreadd", "", c(0.0)),
            process(77, 2, "kworker/0:1", "", c(3.0)),
            process(
                400,
                1,
                "rustc",
                "rustc --edition 2024 src/main.rs",
                c(187.5),
            ),
        ],
        workloads: vec![],
        numa: vec![],
        notes: vec![],
    }
}

fn live(snaps: &[Snapshot]) -> App {
    let mut app = App::new(ThemeName::Dark, true, 600);
    for s in snaps {
        app.ingest(s.clone());
    }
    app
}

fn header_line(s: &str) -> &str {
    s.lines()
        .find(|l| l.contains("PID"))
        .expect("a table header")
}

#[test]
fn gpu_cards_show_how_busy_hot_and_hungry_with_a_history_chart() {
    let s = screen(&replayed(200), 160, 50);
    assert!(s.contains("busy 78%"), "{s}");
    assert!(s.contains("mem bus 35%") && s.contains("64°C"), "{s}");
    assert!(s.contains("305/400 W") && s.contains("1410 MHz"), "{s}");
    // A passively cooled card has no fan: not a made-up 0 %.
    assert!(!s.contains("fan"), "{s}");
    assert!(
        s.contains("history") && s.contains("memory") && s.contains("busy"),
        "{s}"
    );
    let card: String = s.lines().skip(1).take(9).collect();
    assert!(
        card.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "the chart draws its lines in braille:\n{s}"
    );
    // Narrower: the chart gives way, the figures stay.
    let s = screen(&replayed(200), 100, 30);
    assert!(s.contains("busy 78%") && !s.contains("history"), "{s}");
    let s = screen(&replayed(200), 70, 24);
    assert!(s.contains("78% 64°"), "{s}");
}

#[test]
fn cpu_and_gpu_columns_sort_and_the_memory_sort_is_marked() {
    let mut app = replayed(200);
    let s = screen(&app, 160, 50);
    let h = header_line(&s);
    assert!(h.contains("GPU%") && h.contains("CPU%"), "{s}");
    // The default sort (memory) has no column of its own: VRAM carries the marker.
    assert!(h.contains("VRAM▼"), "{s}");
    let row = s.lines().find(|l| l.contains("  3300 ")).unwrap();
    assert!(row.contains("50.2") && row.contains("98.7"), "{row}");
    // The data workers use CPU but no GPU: `-` there, a figure for CPU.
    let row = s.lines().find(|l| l.contains("  3312 ")).unwrap();
    assert!(row.contains("64.5"), "{row}");
    app.set_sort(memwarden_tui::table::SortKey::Cpu);
    let s = screen(&app, 160, 50);
    assert!(header_line(&s).contains("CPU%▼"), "{s}");
    let first = s.lines().skip_while(|l| !l.contains("PID")).nth(1).unwrap();
    assert!(first.contains("  3300 "), "{s}");
    app.on_key(key(KeyCode::Char('r')), Instant::now());
    let s = screen(&app, 160, 50);
    assert!(header_line(&s).contains("CPU%▲"), "{s}");
}

#[test]
fn a_recording_without_rates_shows_no_rate_columns() {
    let mut old = recording();
    for s in &mut old {
        for p in &mut s.processes {
            (p.cpu_percent, p.gpu_utilization_percent) = (None, None);
        }
    }
    let mut app = App::new(ThemeName::Dark, true, 600);
    for s in old.iter().take(50) {
        app.ingest(s.clone());
    }
    app.replay = replayed(1).replay;
    let s = screen(&app, 160, 50);
    let h = header_line(&s);
    assert!(!h.contains("CPU%") && !h.contains("GPU%"), "{s}");
    assert!(h.contains("VRAM"), "{s}");
}

#[test]
fn a_machine_without_a_gpu_shows_no_column_of_dashes() {
    // The first live sample has no rates yet, the second has them.
    let app = live(&[gpuless(false), gpuless(true)]);
    let s = screen(&app, 120, 30);
    let h = header_line(&s);
    for gone in ["VRAM", "GPU%", "PHASE", "VERDICT"] {
        assert!(!h.contains(gone), "{gone}:\n{s}");
    }
    assert!(h.contains("CPU%") && h.contains("RSS▼"), "{s}");
    assert!(s.contains("no GPU found"), "{s}");
    assert!(s.contains("RAM"), "{s}");
    let row = s.lines().find(|l| l.contains("   400 ")).unwrap();
    assert!(row.contains("188") && !row.contains(" - "), "{row}");
    // Sorted by CPU: the compiler first.
    let mut app = app;
    app.set_sort(memwarden_tui::table::SortKey::Cpu);
    assert_eq!(app.rows[0].pid, 400);
}

#[test]
fn kernel_threads_are_hidden_until_capital_k() {
    let mut app = live(&[gpuless(true)]);
    assert!(app.rows.iter().all(|r| r.pid != 2 && r.pid != 77));
    let s = screen(&app, 120, 30);
    assert!(!s.contains("kworker") && !s.contains("kthreadd"), "{s}");
    app.on_key(
        KeyEvent::new(KeyCode::Char('K'), KeyModifiers::SHIFT),
        Instant::now(),
    );
    let s = screen(&app, 120, 30);
    assert!(s.contains("kworker/0:1") && s.contains("[kthreadd]"), "{s}");
    assert!(s.contains("kernel threads shown"), "{s}");
    app.on_key(key(KeyCode::Char('?')), Instant::now());
    let s = screen(&app, 120, 40);
    assert!(s.contains("kernel threads"), "the help lists K:\n{s}");
}

#[test]
fn the_first_frame_starts_at_the_top_of_the_list() {
    let mut snap = gpuless(true);
    snap.processes = (10..400)
        .map(|pid| process(pid, 1, "worker", "worker --serve", Some(f64::from(pid % 7))))
        .collect();
    let app = live(&[snap]);
    assert_eq!(app.selected, 0);
    let s = screen(&app, 120, 30);
    // Sorted by memory (RSS here), largest first: pid 399 heads the list, on screen.
    let first = s.lines().skip_while(|l| !l.contains("PID")).nth(1).unwrap();
    assert!(first.contains("   399 "), "{s}");
}

#[test]
fn the_selection_stays_on_top_until_the_user_moves_it() {
    // The first sample's largest process is the smallest in the next: a selection no one made
    // must not follow it down the list (the view opened scrolled to the bottom).
    let mut first = gpuless(true);
    first.processes = (10..200)
        .map(|pid| process(pid, 1, "worker", "worker --serve", Some(0.0)))
        .collect();
    let mut second = first.clone();
    for p in &mut second.processes {
        p.rss_bytes = Some(u64::from(300 - p.pid) << 20);
    }
    let mut app = live(&[first.clone()]);
    assert_eq!(app.rows[0].pid, 199);
    app.ingest(second.clone());
    assert_eq!((app.selected, app.rows[0].pid), (0, 10));
    let s = screen(&app, 120, 30);
    let first_row = s.lines().skip_while(|l| !l.contains("PID")).nth(1).unwrap();
    assert!(first_row.contains("    10 "), "{s}");
    // A row the user picked is followed wherever it sorts.
    app.on_key(key(KeyCode::Down), Instant::now());
    let picked = app.rows[1].pid;
    app.ingest(first);
    assert_eq!(app.rows[app.selected].pid, picked);
    // Home goes back to the top, and the selection stays there again.
    app.on_key(key(KeyCode::Home), Instant::now());
    app.ingest(second);
    assert_eq!((app.selected, app.rows[0].pid), (0, 10));
}

#[test]
fn the_broker_pane_shows_pools_and_consumers() {
    let status = serde_json::json!({
        "pools": [{"name": "gpu0", "kind": "vram", "total_bytes": 80u64 << 30,
                   "promised_bytes": 40u64 << 30, "available_bytes": 30u64 << 30,
                   "queue_length": 1}],
        "consumers": [
            {"name": "llama-8b", "pool": "gpu0", "state": "loaded", "resident_bytes": 18u64 << 30,
             "declared_bytes": 16u64 << 30, "in_flight": 2, "queued": 0, "pinned": true},
            {"name": "sdxl", "pool": "gpu0", "state": "stuck", "resident_bytes": 7u64 << 30,
             "declared_bytes": 8u64 << 30, "in_flight": 0, "queued": 1},
            {"name": "whisper", "pool": "gpu0", "state": "sleeping", "resident_bytes": 0,
             "declared_bytes": 3u64 << 30, "in_flight": 0, "queued": 0}
        ]
    });
    let mut app = replayed(200);
    app.broker = memwarden_tui::broker::state_after("http://127.0.0.1:7077", false, Ok(status));
    let s = screen(&app, 160, 60);
    assert!(
        s.contains("Broker · http://127.0.0.1:7077 · 1 pool(s) · 3 consumer(s)"),
        "{s}"
    );
    assert!(
        s.contains("pool gpu0") && s.contains("40 GiB promised of 80 GiB"),
        "{s}"
    );
    assert!(s.contains("1 queued"), "{s}");
    let line = |name: &str| s.lines().find(|l| l.contains(name)).unwrap().to_string();
    assert!(
        line("llama-8b").contains("● ") && line("llama-8b").contains("loaded,pinned"),
        "{s}"
    );
    assert!(
        line("llama-8b").contains("holds 18 GiB / declared 16 GiB"),
        "{s}"
    );
    assert!(
        line("sdxl").contains("✗ ") && line("sdxl").contains("stuck"),
        "{s}"
    );
    assert!(line("whisper").contains("sleeping"), "{s}");
    // The compact layout keeps it, without a border.
    let s = screen(&app, 90, 40);
    assert!(s.contains("llama-8b"), "{s}");
    // A broker asked for by name that does not answer says so; the default one just is not
    // there.
    app.broker = memwarden_tui::broker::state_after(
        "http://127.0.0.1:9",
        true,
        Err("connection refused".into()),
    );
    let s = screen(&app, 160, 60);
    assert!(s.contains("not answering: connection refused"), "{s}");
    app.broker = memwarden_tui::broker::state_after("u", false, Err("refused".into()));
    assert!(!screen(&app, 160, 60).contains("Broker"));
}
