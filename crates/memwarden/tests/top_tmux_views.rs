//! `memwarden top` end to end on made-up machines: a host without a GPU (the columns that
//! cannot be known are gone, kernel threads hidden until `K`), a broker answering on
//! 127.0.0.1 shown in its pane, and a long list opening at its top.

mod tmux_pane;

use std::io::{Read, Write};
use std::net::TcpListener;

use memwarden_probe::fakeroot::{FakeProcess, FakeRoot};
use tmux_pane::{Pane, need_tmux};

/// A broker's `/v1/status` served on 127.0.0.1 by a thread, answering every request the same.
fn fake_broker(status: serde_json::Value) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = status.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            // Read the request head (bounded), then answer and close.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A host without a GPU: init, kthreadd and a kernel worker, and a user's program.
fn gpuless_root(dir: &std::path::Path) {
    let root = FakeRoot::new(dir);
    root.meminfo(32 << 20, 20 << 20, 0, 0).unwrap();
    root.process(&FakeProcess::new(1, "init")).unwrap();
    for (pid, ppid, comm) in [(2, 0, "kthreadd"), (60, 2, "kworker/u8:3")] {
        let mut k = FakeProcess::new(pid, comm);
        (k.ppid, k.uid, k.rss_kib, k.cmdline) = (ppid, 0, None, vec![]);
        root.process(&k).unwrap();
    }
    let mut app = FakeProcess::new(700, "postgres");
    app.cmdline = vec![
        "/usr/lib/postgresql/16/bin/postgres".into(),
        "-D".into(),
        "/var/lib/pg".into(),
    ];
    app.rss_kib = Some(300 << 10);
    root.process(&app).unwrap();
}

/// `top` on the fake machine in `dir`, without GPU source, with `extra` arguments; the pane is
/// `w`×`h`.
fn top_on(dir: &std::path::Path, extra: &[&str], w: u16, h: u16) -> Pane {
    let mut args = vec![
        "top",
        "--root",
        dir.to_str().unwrap(),
        "--gpu-source",
        "none",
    ];
    args.extend_from_slice(extra);
    Pane::start(&args, w, h)
}

/// Quits and checks the clean exit.
fn quit(p: &Pane) {
    p.keys(&["q"]);
    p.wait_for("EXIT=0", 10);
}

#[test]
fn a_host_without_a_gpu_beside_its_broker() {
    need_tmux();
    let dir = tempfile::tempdir().unwrap();
    gpuless_root(dir.path());
    let port = fake_broker(serde_json::json!({
        "pools": [{"name": "ram", "kind": "ram", "total_bytes": 16u64 << 30,
                   "promised_bytes": 6u64 << 30, "available_bytes": 9u64 << 30,
                   "queue_length": 0}],
        "consumers": [
            {"name": "llama-8b", "pool": "ram", "state": "loaded", "resident_bytes": 5u64 << 30,
             "declared_bytes": 6u64 << 30, "in_flight": 1, "queued": 0},
            {"name": "sdxl", "pool": "ram", "state": "stuck", "resident_bytes": 1u64 << 30,
             "declared_bytes": 4u64 << 30, "in_flight": 0, "queued": 2}
        ]
    }));
    let url = format!("http://127.0.0.1:{port}");
    let p = top_on(dir.path(), &["--broker", &url], 130, 40);
    let s = p.wait_for("llama-8b", 20);
    assert!(
        s.contains(&format!("Broker · {url} · 1 pool(s) · 2 consumer(s)")),
        "{s}"
    );
    assert!(s.contains("stuck") && s.contains("2 queued"), "{s}");
    assert!(s.contains("holds 5 GiB / declared 6 GiB"), "{s}");
    // No GPU: no column that could only show `-`; CPU and RSS, the sort marked on RSS.
    let s = p.wait("CPU% in the header", 10, |s| s.contains("CPU%"));
    let header = s.lines().find(|l| l.contains("PID")).unwrap();
    for gone in ["VRAM", "GPU%", "PHASE", "VERDICT"] {
        assert!(!header.contains(gone), "{gone}: {s}");
    }
    assert!(header.contains("RSS▼"), "{s}");
    assert!(s.contains("no GPU found"), "{s}");
    assert!(s.contains("postgres") && !s.contains("kworker"), "{s}");
    // K shows kernel threads, as in htop.
    p.keys(&["K"]);
    p.wait_for("kworker/u8:3", 10);
    p.keys(&["K"]);
    p.wait("kernel threads hidden again", 10, |s| {
        !s.contains("kworker/u8:3")
    });
    quit(&p);
}

#[test]
fn a_broker_named_but_not_answering_says_so() {
    need_tmux();
    let dir = tempfile::tempdir().unwrap();
    gpuless_root(dir.path());
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = top_on(
        dir.path(),
        &["--broker", &format!("http://127.0.0.1:{port}")],
        130,
        40,
    );
    let s = p.wait_for("not answering", 20);
    // The rest of the screen is there all the same.
    assert!(s.contains("postgres"), "{s}");
    quit(&p);
}

#[test]
fn a_long_list_opens_at_its_top() {
    need_tmux();
    let dir = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(dir.path());
    root.meminfo(32 << 20, 20 << 20, 0, 0).unwrap();
    for pid in 100..400 {
        let mut w = FakeProcess::new(pid, &format!("worker-{pid}"));
        w.rss_kib = Some(u64::from(pid) * 1024);
        root.process(&w).unwrap();
    }
    let p = top_on(dir.path(), &["--no-broker"], 110, 30);
    let s = p.wait_for("worker-", 20);
    // Sorted by memory, largest first: the first row is the largest, and it is selected.
    let first = s.lines().skip_while(|l| !l.contains("PID")).nth(1).unwrap();
    assert!(first.contains("worker-399"), "{s}");
    quit(&p);
}
