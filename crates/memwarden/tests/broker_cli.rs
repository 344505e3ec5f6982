//! `memwarden run` and `memwarden serve` as a user runs them: the real binary against a real
//! broker on 127.0.0.1.

#[path = "../../memwarden-plan/tests/common/gguf_writer.rs"]
mod gguf_writer;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memwarden_broker::Config;
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

const BIN: &str = env!("CARGO_BIN_EXE_memwarden");

fn status(addr: std::net::SocketAddr) -> serde_json::Value {
    // A plain HTTP/1.0 GET: no client library needed for one small JSON answer.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /v1/status HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap()
}

#[test]
fn run_holds_a_lease_while_the_command_runs_and_passes_its_exit_code() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let toml = "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"1GiB\"\n\
                [[consumer]]\nname = \"job\"\npool = \"ram\"\nresident = \"100MiB\"\n";
    let cfg = Config::parse(toml, "t.toml", None).unwrap();
    let broker = rt
        .block_on(memwarden_broker::start(
            cfg,
            Probe::new(HostRoot::system(), GpuSourceKind::None),
        ))
        .unwrap();
    let url = format!("http://{}", broker.addr());
    let child = Command::new(BIN)
        .args([
            "run",
            "--consumer",
            "job",
            "--broker",
            &url,
            "--",
            "sh",
            "-c",
            "sleep 1; exit 3",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the command runs, the lease holds the consumer.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = status(broker.addr());
        if st["consumers"][0]["in_flight"] == 1 {
            assert_eq!(st["consumers"][0]["state"], "loaded");
            break;
        }
        assert!(Instant::now() < deadline, "no lease seen: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Given back when the command ended.
    let st = status(broker.addr());
    assert_eq!(st["consumers"][0]["in_flight"], 0);
    assert_eq!(st["consumers"][0]["state"], "unloaded");
    assert_eq!(st["counters"]["served"], 1);

    // An unknown consumer: one line, exit 2, and the command never runs.
    let out = Command::new(BIN)
        .args([
            "run",
            "--consumer",
            "nope",
            "--broker",
            &url,
            "--",
            "touch",
            "/nonexistent/x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("memwarden: ") && err.contains("unknown consumer"),
        "{err}"
    );
    // SIGTERM to `memwarden run` is passed on to the command, and the lease still goes back.
    let child = Command::new(BIN)
        .args([
            "run",
            "--consumer",
            "job",
            "--broker",
            &url,
            "--",
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(broker.addr())["consumers"][0]["in_flight"] != 1 {
        assert!(Instant::now() < deadline, "no lease seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(status(broker.addr())["consumers"][0]["in_flight"], 0);
    rt.block_on(broker.shutdown());
}

#[test]
fn serve_refuses_a_bad_config_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:0\"\n\n[[pool]]\nname = \"gpu0\"\nkind = \"vram\"\ngpu = 0\ncolour = \"red\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.toml:8:1") && err.contains("colour"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--check", "--config"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/memwarden.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--gpu-source",
            "none",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(status(addr)["pools"].as_array().unwrap().is_empty());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_sizes_a_consumer_from_its_model_file() {
    let dir = tempfile::tempdir().unwrap();
    gguf_writer::llama(32, 4096, 32, 32, 4096, 1).write(&dir.path().join("llama.gguf"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The model path is relative to the configuration file.
    let cfg = dir.path().join("memwarden.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"64GiB\"\n\
             [[consumer]]\nname = \"llm\"\npool = \"ram\"\nestimate = {{ model = \"llama.gguf\", ctx = 4096 }}\n"
        ),
    )
    .unwrap();
    let est = Command::new(BIN)
        .args(["estimate", "--json", "--ctx", "4096"])
        .arg(dir.path().join("llama.gguf"))
        .env("MEMWARDEN_GPU_SOURCE", "none")
        .output()
        .unwrap();
    let est: serde_json::Value = serde_json::from_slice(&est.stdout).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--gpu-source", "none", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = status(addr);
    let _ = child.kill();
    let _ = child.wait();
    let c = &st["consumers"][0];
    assert_eq!(c["declared_source"], "estimate");
    assert_eq!(c["declared_bytes"], est["total_bytes"]);
    assert!(c["declared_bytes"].as_u64().unwrap() > 2 << 30);
}
