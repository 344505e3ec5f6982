//! The screen at every layout size, in colour and without, drawn on ratatui's test backend
//! from the example recording (a training run growing toward OOM beside an inference server).

mod screens;

use std::time::Instant;

use memwarden_tui::app::App;
use memwarden_tui::theme::ThemeName;
use ratatui::crossterm::event::{KeyCode, KeyModifiers};
use ratatui::style::Color;
use screens::{app_after, key, recording, render, text};

#[test]
fn full_layout_shows_cards_maps_table_and_prediction() {
    let app = app_after(300, true);
    let s = text(&render(&app, 160, 48));
    assert!(s.contains("GPU 0 · NVIDIA A100-SXM4-80GB"), "{s}");
    assert!(s.contains("Host memory"), "{s}");
    assert!(s.contains("Memory map · by workload"), "{s}");
    assert!(s.contains("train-lora.service"), "{s}");
    assert!(s.contains("vllm-llama3-8b"), "{s}");
    assert!(s.contains("(estimate)") && s.contains("(cgroup)"), "{s}");
    // The training run grows toward the end of the card: a range, flagged, never one number.
    assert!(s.contains("▲ growing"), "{s}");
    assert!(
        s.contains("!! OOM in") || s.contains("out of memory now"),
        "{s}"
    );
    assert!(s.contains("✗ OOM") || s.contains("⚠ TIGHT"), "{s}");
    assert!(s.contains("replay 300/300 ×1 ■ end"), "{s}");
}

#[test]
fn the_drivers_reserve_is_drawn_apart_from_used_and_free() {
    let mut samples = recording();
    let mut app = App::new(ThemeName::Dark, false, 600);
    let mut last = samples.pop().unwrap();
    last.gpus[0].vram_used_bytes = Some(70 << 30);
    last.gpus[0].vram_reserved_bytes = Some(2 << 30);
    app.ingest(last);
    let s = text(&render(&app, 160, 48));
    assert!(
        s.contains("70 GiB / 80 GiB used · 2 GiB reserved · 8 GiB free"),
        "{s}"
    );
    assert!(s.contains('▒'), "{s}");
    assert!(s.contains("driver reserved"), "{s}");
}

#[test]
fn every_size_down_to_40_by_10_draws_without_panic_and_keeps_the_essentials() {
    let app = app_after(200, true);
    for (w, h) in [
        (200, 60),
        (160, 48),
        (120, 40),
        (100, 30),
        (80, 24),
        (60, 16),
        (50, 12),
        (40, 10),
    ] {
        let s = text(&render(&app, w, h));
        assert!(s.contains("memwarden"), "{w}x{h}\n{s}");
        assert!(s.contains("GPU"), "{w}x{h}\n{s}");
        assert!(s.contains("RAM"), "{w}x{h}\n{s}");
        assert!(s.contains("PID"), "{w}x{h}\n{s}");
        // The biggest holder is on screen at every size.
        assert!(s.contains("python"), "{w}x{h}\n{s}");
        assert!(s.contains("q quit") || w < 60, "{w}x{h}\n{s}");
    }
}

#[test]
fn too_small_says_so_in_one_line() {
    let app = app_after(10, true);
    for (w, h) in [(39, 10), (40, 9), (20, 5)] {
        let s = text(&render(&app, w, h));
        assert!(s.contains("too small"), "{w}x{h}\n{s}");
        assert!(!s.contains("PID"), "{w}x{h}\n{s}");
    }
}

#[test]
fn no_color_has_no_colour_but_every_fact_in_text() {
    let app = app_after(300, false);
    let buf = render(&app, 160, 48);
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            let c = &buf[(x, y)];
            assert_eq!(c.fg, Color::Reset, "colour at {x},{y}: {:?}", c.symbol());
            assert_eq!(c.bg, Color::Reset, "colour at {x},{y}: {:?}", c.symbol());
        }
    }
    let s = text(&buf);
    // Phase and verdict carry a symbol and a word; the map's segments a glyph each.
    assert!(s.contains("▲ growing"), "{s}");
    assert!(s.contains("✗ OOM") || s.contains("⚠ TIGHT"), "{s}");
    assert!(
        s.contains("█ train-lora.service") && s.contains("▓ vllm-llama3-8b"),
        "{s}"
    );
    let coloured = render(&app_after(300, true), 160, 48);
    let any_colour = (0..coloured.area.height)
        .any(|y| (0..coloured.area.width).any(|x| coloured[(x, y)].fg != Color::Reset));
    assert!(any_colour, "the dark theme should colour something");
}

#[test]
fn light_theme_differs_from_dark() {
    let mut app = app_after(100, true);
    let dark = render(&app, 120, 40);
    app.on_key(key(KeyCode::Char('c')), Instant::now());
    let light = render(&app, 120, 40);
    assert_eq!(text(&dark).lines().nth(5), text(&light).lines().nth(5));
    assert_ne!(dark, light);
}

#[test]
fn keys_filter_sort_toggle_workloads_detail_and_help() {
    let mut app = app_after(300, true);
    let now = Instant::now();
    // Filter by typing.
    app.on_key(key(KeyCode::Char('/')), now);
    for c in "vllm".chars() {
        app.on_key(key(KeyCode::Char(c)), now);
    }
    app.on_key(key(KeyCode::Enter), now);
    assert_eq!(app.rows.len(), 1);
    assert_eq!(app.rows[0].pid, 2100);
    let s = text(&render(&app, 120, 40));
    assert!(s.contains("filter \"vllm\""), "{s}");
    app.on_key(key(KeyCode::Esc), now);
    assert!(app.rows.len() > 1);

    // Sort by name, ascending.
    while app.sort != memwarden_tui::table::SortKey::Name {
        app.on_key(key(KeyCode::Char('s')), now);
    }
    let names: Vec<String> = app.rows.iter().map(|r| r.name.to_lowercase()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // Workloads.
    app.on_key(key(KeyCode::Char('w')), now);
    let s = text(&render(&app, 120, 40));
    assert!(
        s.contains("PIDS") && s.contains("RESIDENT") && s.contains("SOURCE"),
        "{s}"
    );
    assert!(s.contains("estimate") && s.contains("cgroup"), "{s}");
    app.on_key(key(KeyCode::Char('w')), now);

    // Detail of the training run: its command, framework, and changepoint segments.
    app.on_key(key(KeyCode::Home), now);
    while app.selected_row().is_some_and(|r| r.pid != 3300) {
        app.on_key(key(KeyCode::Down), now);
    }
    app.on_key(key(KeyCode::Enter), now);
    // The segments are computed for the focused row with the next sample.
    let last = recording().pop().unwrap();
    let mut next = last.clone();
    next.taken_at_ms += 1000;
    app.ingest(next);
    let s = text(&render(&app, 160, 60));
    assert!(s.contains("Detail"), "{s}");
    assert!(s.contains("train.py"), "{s}");
    assert!(s.contains("segment"), "{s}");
    assert!(s.contains("verdict"), "{s}");

    // Help lists the keys; any key closes it.
    app.on_key(key(KeyCode::Char('?')), now);
    let s = text(&render(&app, 120, 40));
    assert!(s.contains("memwarden top · keys"), "{s}");
    app.on_key(key(KeyCode::Char('x')), now);
    assert!(!app.help);

    // Kill is off in a replay and says why.
    app.on_key(key(KeyCode::Char('k')), now);
    assert!(app.dialog.is_none());
    assert!(
        app.status_text(now)
            .is_some_and(|m| m.contains("nothing to kill"))
    );
}

#[test]
fn without_workloads_the_map_is_by_process() {
    let mut samples = recording();
    let mut app = App::new(ThemeName::Dark, true, 600);
    for s in samples.iter_mut().take(120) {
        s.workloads.clear();
        app.ingest(s.clone());
    }
    let s = text(&render(&app, 160, 48));
    assert!(s.contains("Memory map · by process"), "{s}");
    assert!(s.contains("(RSS)"), "{s}");
    app.on_key(key(KeyCode::Char('w')), Instant::now());
    assert_eq!(app.view, memwarden_tui::app::View::Processes);
}

#[test]
fn mouse_selects_rows_and_sorts_by_the_clicked_header() {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut app = app_after(300, true);
    render(&app, 160, 48);
    let hits = app.hits.borrow().clone();
    let click = |col: u16, row: u16| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: col,
        row,
        modifiers: KeyModifiers::NONE,
    };
    // The third row of the table.
    app.on_mouse(click(hits.rows.x + 2, hits.rows.y + 2));
    assert_eq!(app.selected, 2);
    // The NAME header sorts by name; a second click reverses.
    let (x0, _, _) = *hits
        .columns
        .iter()
        .find(|(_, _, k)| *k == memwarden_tui::table::SortKey::Name)
        .unwrap();
    app.on_mouse(click(x0 + 1, hits.header.y));
    assert_eq!(app.sort, memwarden_tui::table::SortKey::Name);
    assert!(!app.descending);
    app.on_mouse(click(x0 + 1, hits.header.y));
    assert!(app.descending);
    // The wheel moves the selection.
    app.on_mouse(MouseEvent {
        kind: MouseEventKind::ScrollDown,
        ..click(0, 0)
    });
    assert!(app.selected > 0);
}

#[test]
fn eight_gpus_fit_down_to_the_smallest_screen() {
    let mut samples = recording();
    let mut app = App::new(ThemeName::Dark, true, 600);
    for s in samples.iter_mut().take(30) {
        let g = s.gpus[0].clone();
        s.gpus = (0..8)
            .map(|i| {
                let mut g = g.clone();
                g.index = i;
                g.bus_id = format!("0000:{:02x}:00.0", 7 + i);
                g
            })
            .collect();
        app.ingest(s.clone());
    }
    for (w, h) in [(40, 10), (80, 24), (160, 48), (200, 70)] {
        let s = text(&render(&app, w, h));
        assert!(s.contains("GPU"), "{w}x{h}\n{s}");
        assert!(s.contains("memwarden"), "{w}x{h}\n{s}");
        // The table keeps at least its header.
        assert!(s.contains("PID"), "{w}x{h}\n{s}");
        // GPUs that do not fit are counted, not dropped silently.
        let shown = s.matches("GPU").count();
        assert!(shown >= 8 || s.contains("more GPU(s)"), "{w}x{h}\n{s}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any terminal size, any moment of the recording, any view: a screen, never a panic.
    #[test]
    fn any_size_any_moment_draws(
        w in 1u16..260,
        h in 1u16..90,
        n in 1usize..300,
        detail in proptest::bool::ANY,
        workloads in proptest::bool::ANY,
        colour in proptest::bool::ANY,
    ) {
        let mut app = app_after(n, colour);
        let now = Instant::now();
        if detail {
            app.on_key(key(KeyCode::Enter), now);
        }
        if workloads {
            app.on_key(key(KeyCode::Char('w')), now);
        }
        let s = text(&render(&app, w, h));
        if w < 40 || h < 10 {
            // The message wraps on a narrow screen: read it as one line.
            let joined = s.replace('\n', "");
            proptest::prop_assert!(joined.contains("too") || w * h < 60, "{}x{}\n{}", w, h, s);
        } else {
            proptest::prop_assert!(s.contains("memwarden"), "{}x{}\n{}", w, h, s);
        }
    }
}

#[test]
fn notes_are_counted_and_listed_in_help() {
    let mut samples = recording();
    let mut app = App::new(ThemeName::Dark, true, 600);
    let mut s = samples.remove(0);
    s.notes = vec!["vLLM server of pid 2100 at 127.0.0.1:8000 skipped: timed out".into()];
    app.ingest(s);
    let screen = text(&render(&app, 160, 48));
    assert!(screen.contains("1 note(s)"), "{screen}");
    app.on_key(key(KeyCode::Char('?')), Instant::now());
    let screen = text(&render(&app, 160, 48));
    assert!(screen.contains("note: vLLM server of pid 2100"), "{screen}");
}

/// Without GPUs the cards' place says why: a reading notes only why a GPU source is missing.
#[test]
fn no_gpu_says_why_in_the_cards_place() {
    let mut s = recording().remove(0);
    s.gpus.clear();
    for p in &mut s.processes {
        p.gpu.clear();
    }
    let mut app = App::new(ThemeName::Dark, false, 600);
    app.ingest(s.clone());
    let screen = text(&render(&app, 160, 48));
    assert!(
        screen.contains("no GPU found: host memory only"),
        "{screen}"
    );
    s.notes = vec!["NVML unavailable: libnvidia-ml.so.1 not found".into()];
    let mut app = App::new(ThemeName::Dark, false, 600);
    app.ingest(s);
    let screen = text(&render(&app, 160, 48));
    assert!(
        screen.contains("no GPU found (NVML unavailable: libnvidia-ml.so.1 not found)"),
        "{screen}"
    );
}

#[test]
fn the_replay_draws_the_process_tree_from_the_recording() {
    let mut app = app_after(300, false);
    app.on_key(key(KeyCode::Char('t')), Instant::now());
    assert!(app.tree);
    // The trainer's data workers follow it, one level down; the rest hang off init.
    let pos = |pid| app.rows.iter().position(|r| r.pid == pid).unwrap();
    let depth = |pid| app.rows[pos(pid)].depth;
    assert_eq!(
        (depth(1), depth(3300), depth(3312), depth(3313)),
        (0, 1, 2, 2)
    );
    assert!(pos(3300) < pos(3312) && pos(3312).max(pos(3313)) == pos(3300) + 2);
    assert_eq!(depth(2301), 2, "the login shell under sshd");
    let s = text(&render(&app, 160, 48));
    let workers: Vec<&str> = s.lines().filter(|l| l.contains("pt_data_worker")).collect();
    assert_eq!(workers.len(), 2, "{s}");
    assert!(
        workers.iter().all(|l| l.contains(" └pt_data_worker")),
        "{s}"
    );
}
