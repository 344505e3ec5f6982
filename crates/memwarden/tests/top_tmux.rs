//! `memwarden top` end to end: the real binary in a tmux pane, driven by keys, read off the
//! screen. Each test uses its own tmux server (socket) and its own home directory.

mod tmux_pane;

use std::path::Path;
use std::process::Command;

use tmux_pane::{Pane, bin, example, need_tmux};

fn replay_position(screen: &str) -> usize {
    let at = screen.find("replay ").expect("replay in the header") + "replay ".len();
    screen[at..]
        .split('/')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("a position")
}

#[test]
fn replay_keys_and_a_clean_quit() {
    need_tmux();
    let ex = example();
    let p = Pane::start(
        &["top", "--replay", ex.to_str().unwrap(), "--speed", "30"],
        140,
        45,
    );
    let s = p.wait_for("GPU 0 · NVIDIA A100-SXM4-80GB", 20);
    assert!(s.contains("memwarden gpu-node-07"), "{s}");
    // It plays: the position moves on by itself.
    let first = replay_position(&s);
    let s = p.wait("the replay to advance", 20, |s| {
        replay_position(s) > first + 3
    });
    // Space pauses; → steps one sample; ← steps back.
    p.keys(&["Space"]);
    let s2 = p.wait_for("paused", 10);
    let at = replay_position(&s2);
    assert!(at >= replay_position(&s), "{s2}");
    p.keys(&["Right"]);
    p.wait(&format!("position {}", at + 1), 10, |s| {
        replay_position(s) == at + 1
    });
    p.keys(&["Left"]);
    p.wait(&format!("position {at}"), 10, |s| replay_position(s) == at);

    // Filter by typing.
    p.keys(&["/", "v", "l", "l", "m", "Enter"]);
    let s = p.wait_for("filter \"vllm\"", 10);
    assert!(s.contains("vllm.entrypoints"), "{s}");
    assert!(!s.contains("/usr/bin/dockerd"), "{s}");
    p.keys(&["Escape"]);
    p.wait_for("/usr/bin/dockerd", 10);

    // Workloads and back.
    p.keys(&["w"]);
    let s = p.wait_for("RESIDENT", 10);
    assert!(
        s.contains("vllm-llama3-8b") && s.contains("estimate"),
        "{s}"
    );
    p.keys(&["w"]);
    p.wait_for("USER", 10);

    // Help, then any key closes it.
    p.keys(&["?"]);
    p.wait_for("memwarden top · keys", 10);
    p.keys(&["x"]);
    p.wait("help to close", 10, |s| !s.contains("memwarden top · keys"));

    // Play to the end fast: the training run is flagged, as a range.
    p.keys(&["Space", "+", "+", "+", "+"]);
    let s = p.wait("the end of the recording", 30, |s| {
        s.contains("replay 300/300")
    });
    assert!(s.contains("▲ growing"), "{s}");
    assert!(
        s.contains("OOM in") || s.contains("out of memory now"),
        "{s}"
    );

    // q leaves, restoring the terminal: the view is gone from the screen.
    p.keys(&["q"]);
    let s = p.wait_for("EXIT=0", 10);
    assert!(!s.contains("memwarden gpu-node-07"), "{s}");
    assert!(!s.contains("GPU 0"), "{s}");
}

#[test]
fn a_terminal_too_small_says_so() {
    need_tmux();
    let ex = example();
    let p = Pane::start(&["top", "--replay", ex.to_str().unwrap()], 38, 9);
    p.wait_for("too small", 20);
    p.keys(&["q"]);
    p.wait_for("EXIT=0", 10);
}

#[test]
fn a_damaged_recording_plays_what_it_can() {
    need_tmux();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example()).unwrap();
    let mut lines: Vec<String> = text.lines().take(40).map(str::to_string).collect();
    lines.insert(10, "garbage".into());
    let half = lines[20][..lines[20].len() / 2].to_string();
    lines.push(half);
    let file = dir.path().join("cut.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let p = Pane::start(
        &["top", "--replay", file.to_str().unwrap(), "--speed", "100"],
        120,
        40,
    );
    let s = p.wait_for("2 bad lines skipped", 20);
    assert!(s.contains("replay"), "{s}");
    p.keys(&["q"]);
    p.wait_for("EXIT=0", 10);
}

#[test]
fn live_view_shows_this_machine_and_reloads_its_config_on_sighup() {
    need_tmux();
    let home = tempfile::tempdir().unwrap();
    let cfg_dir = home.path().join("config/memwarden");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(cfg_dir.join("config.toml"), "interval = 1.0\n").unwrap();
    let p = Pane::start_in(
        home,
        &["top", "--gpu-source", "none", "--no-kill"],
        120,
        40,
        &[],
    );
    let s = p.wait_for("live every 1s", 20);
    assert!(s.contains("PID") && s.contains("RAM"), "{s}");
    assert!(!s.contains("k kill"), "--no-kill removes the key: {s}");
    // Its own process is in the table.
    let me = p.memwarden_pid();
    p.keys(&["/"]);
    for c in me.to_string().chars() {
        p.keys(&[&c.to_string()]);
    }
    p.keys(&["Enter"]);
    // Its row: the command column may be cut short where the binary's path is long.
    p.wait("its own row", 10, |s| {
        s.lines()
            .any(|l| l.trim_start().starts_with(&format!("{me} ")) && l.contains("memwarden"))
    });

    std::fs::write(cfg_dir.join("config.toml"), "interval = 2.0\n").unwrap();
    let st = Command::new("kill")
        .args(["-HUP", &me.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    p.wait_for("live every 2s", 10);

    // A bad file on reload is said, and the view goes on with what it had.
    std::fs::write(cfg_dir.join("config.toml"), "intervall = 3\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &me.to_string()])
        .status()
        .unwrap();
    let s = p.wait_for("intervall", 10);
    assert!(s.contains("live every 2s"), "{s}");
    let _ = p.home();
    // SIGTERM ends it as q does: the terminal is restored and the exit is clean.
    Command::new("kill")
        .args(["-TERM", &me.to_string()])
        .status()
        .unwrap();
    let s = p.wait_for("EXIT=0", 10);
    assert!(!s.contains("live every"), "{s}");
}

#[test]
fn no_color_means_no_colour_on_the_real_screen() {
    need_tmux();
    let ex = example();
    let capture = |env: &[&str]| {
        let p = Pane::start_in(
            tempfile::tempdir().unwrap(),
            &["top", "--replay", ex.to_str().unwrap(), "--paused"],
            120,
            40,
            env,
        );
        p.wait_for("GPU 0", 20);
        let o = Command::new("tmux")
            .args(["-L", &p.socket, "capture-pane", "-p", "-e"])
            .output()
            .unwrap();
        p.keys(&["q"]);
        p.wait_for("EXIT=0", 10);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // A foreground or background colour: ESC [ 3x / 4x / 9x / 38; / 48; ...
    let coloured = |s: &str| {
        s.split('\x1b').any(|seq| {
            let Some(params) = seq.strip_prefix('[') else {
                return false;
            };
            let params = params.split('m').next().unwrap_or("");
            params.split(';').any(|p| {
                matches!(p.len(), 2 | 3)
                    && (p.starts_with('3') || p.starts_with('4') || p.starts_with('9'))
                    && p != "39"
                    && p != "49"
            })
        })
    };
    let plain = capture(&["NO_COLOR=1"]);
    assert!(!coloured(&plain), "{plain:?}");
    assert!(
        plain.contains("▲ growing") || plain.contains("GPU 0"),
        "{plain}"
    );
    let colour = capture(&[]);
    assert!(
        coloured(&colour),
        "the default theme should colour something"
    );
}

/// A made-up machine through `--root`: an APU whose model lives in GTT, read live through the
/// DRM path, with kill off (the pids are not this machine's).
#[test]
fn live_view_of_a_fake_machine_with_an_apu() {
    use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo};
    need_tmux();
    let dir = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(dir.path());
    root.meminfo(128 << 20, 90 << 20, 0, 0).unwrap();
    root.card(&FakeCard::apu(300 << 20, 110 << 30, 24 << 30))
        .unwrap();
    let mut server = FakeProcess::new(4242, "llama-server");
    server.cmdline = vec![
        "/opt/llama/llama-server".into(),
        "-m".into(),
        "/models/qwen3-32b-q4_k_m.gguf".into(),
    ];
    server.fdinfo = vec![(7, amdgpu_fdinfo("0000:c3:00.0", 3, "256 MiB", "22 GiB"))];
    root.process(&FakeProcess::new(1, "init")).unwrap();
    root.process(&server).unwrap();
    let p = Pane::start(
        &[
            "top",
            "--root",
            dir.path().to_str().unwrap(),
            "--gpu-source",
            "drm",
        ],
        140,
        45,
    );
    let s = p.wait_for("llama-server", 20);
    assert!(s.contains("GPU 0"), "{s}");
    assert!(s.contains("GTT"), "{s}");
    assert!(s.contains("22 GiB"), "{s}");
    assert!(!s.contains("k kill"), "kill is off under --root: {s}");
    p.keys(&["k"]);
    p.wait_for("kill works on / only", 10);
    p.keys(&["q"]);
    p.wait_for("EXIT=0", 10);
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "\n{\"version\": 9}\nnot json\n").unwrap();
    let run = |args: &[&str], env: &[(&str, &Path)]| {
        let mut c = Command::new(bin());
        c.args(args).env("HOME", dir.path());
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["top", "--replay", bad.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("line 2") && err.contains("version 9"), "{err}");

    let (code, err) = run(&["top", "--replay", "/nonexistent/rec.jsonl"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/rec.jsonl"), "{err}");

    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "theme = \"dark\"\nrefresh = 2\n").unwrap();
    let (code, err) = run(
        &["top", "--config", cfg.to_str().unwrap(), "--replay", "x"],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("config.toml") && err.contains("line 2") && err.contains("refresh"),
        "{err}"
    );

    let (code, err) = run(&["top", "--theme", "pink"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("pink"), "{err}");

    // Not a terminal: said plainly instead of a garbled screen.
    let ex = example();
    let (code, err) = run(&["top", "--replay", ex.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs a terminal"), "{err}");
}
