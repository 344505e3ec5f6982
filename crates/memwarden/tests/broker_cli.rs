//! `memwarden run` and `memwarden serve` as a user runs them: the real binary against a real
//! broker on 127.0.0.1.

mod common;
#[path = "../../memwarden-plan/tests/common/gguf_writer.rs"]
mod gguf_writer;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::assert_bad_input;
use memwarden_broker::Config;
use memwarden_probe::fakeroot::{FakeCard, FakeRoot};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

const BIN: &str = env!("CARGO_BIN_EXE_memwarden");

/// One plain HTTP/1.0 request: no client library needed for small answers. The status line
/// and the body.
fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{method} {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn status(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_str(&request(addr, "GET", "/v1/status").1).unwrap()
}

fn leases(addr: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&request(addr, "GET", "/v1/leases").1).unwrap();
    v["leases"].as_array().unwrap().clone()
}

/// A broker in this process with one lease-only consumer, "job".
fn job_broker(rt: &tokio::runtime::Runtime) -> memwarden_broker::Running {
    let toml = "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"1GiB\"\n\
                [[consumer]]\nname = \"job\"\npool = \"ram\"\nresident = \"100MiB\"\n";
    let cfg = Config::parse(toml, "t.toml", None).unwrap();
    rt.block_on(memwarden_broker::start(
        cfg,
        Probe::new(HostRoot::system(), GpuSourceKind::None),
    ))
    .unwrap()
}

/// `memwarden run --consumer job` with `flags`, in a process group of its own (so that the
/// command it runs can be cleaned up even when `memwarden run` is killed outright).
fn spawn_run(addr: std::net::SocketAddr, flags: &[&str], cmd: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    Command::new(BIN)
        .args([
            "run",
            "--consumer",
            "job",
            "--broker",
            &format!("http://{addr}"),
        ])
        .args(flags)
        .arg("--")
        .args(cmd)
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn in_flight(addr: std::net::SocketAddr) -> serde_json::Value {
    status(addr)["consumers"][0]["in_flight"].clone()
}

fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `memwarden run` to hold its lease.
fn wait_taken(addr: std::net::SocketAddr) {
    wait_until(Duration::from_secs(5), "lease taken", || {
        in_flight(addr) == 1
    });
}

/// A `job` broker in this process and a `memwarden run` (`spawn_run`) holding its lease.
struct JobRun {
    rt: tokio::runtime::Runtime,
    broker: memwarden_broker::Running,
    addr: std::net::SocketAddr,
    child: std::process::Child,
}

impl JobRun {
    fn start(flags: &[&str], cmd: &[&str]) -> JobRun {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let broker = job_broker(&rt);
        let addr = broker.addr();
        let child = spawn_run(addr, flags, cmd);
        wait_taken(addr);
        JobRun {
            rt,
            broker,
            addr,
            child,
        }
    }
}

/// How `memwarden run` ended: its exit code and what it said on stderr.
fn ended(child: std::process::Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err)
}

#[test]
fn run_renews_a_short_lease_for_as_long_as_the_command_runs() {
    let JobRun {
        rt,
        broker,
        addr,
        child,
    } = JobRun::start(&["--heartbeat", "1s"], &["sh", "-c", "sleep 3; exit 4"]);
    let taken = Instant::now();
    // Twice the lease's ttl later, it is still held: renewed, not expired.
    std::thread::sleep(Duration::from_secs(2));
    let held = leases(addr);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0]["expires_in_seconds"].as_f64().unwrap() <= 1.0);
    assert_eq!(in_flight(addr), 1);
    let (code, err) = ended(child);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.is_empty(), "{err}");
    assert!(taken.elapsed() > Duration::from_millis(2500));
    assert_eq!(in_flight(addr), 0);
    assert!(leases(addr).is_empty());
    rt.block_on(broker.shutdown());
}

#[test]
fn a_killed_run_loses_its_lease_within_its_heartbeat() {
    let JobRun {
        rt,
        broker,
        addr,
        mut child,
    } = JobRun::start(&["--heartbeat", "1s"], &["sleep", "30"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        in_flight(addr),
        1,
        "the lease must be renewed while run lives"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    // No one gives the lease back: it ends at its ttl (1 s) and the reaper's next round.
    wait_until(Duration::from_secs(3), "lease expired", || {
        in_flight(addr) == 0
    });
    assert!(leases(addr).is_empty());
    // SAFETY: the command, orphaned in the group `memwarden run` led.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    rt.block_on(broker.shutdown());
}

#[test]
fn run_says_once_that_its_lease_is_lost_and_the_command_runs_on() {
    let JobRun {
        rt,
        broker,
        addr,
        child,
    } = JobRun::start(&["--heartbeat", "600ms"], &["sh", "-c", "sleep 2; exit 5"]);
    let id = leases(addr)[0]["id"].as_str().unwrap().to_string();
    let (line, _) = request(addr, "DELETE", &format!("/v1/leases/{id}"));
    assert!(line.contains(" 204 "), "{line}");
    let (code, err) = ended(child);
    assert_eq!(code, Some(5), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("memwarden: warning: ") && err.contains(&id) && err.contains("gone"),
        "{err}"
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn a_broker_gone_before_the_command_ends_leaves_the_commands_exit_code() {
    let JobRun {
        rt, broker, child, ..
    } = JobRun::start(&["--heartbeat", "600ms"], &["sh", "-c", "sleep 2; exit 6"]);
    rt.block_on(broker.shutdown());
    let (code, err) = ended(child);
    assert_eq!(code, Some(6), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("memwarden: warning: ")),
        "{err}"
    );
    assert!(err.contains("cannot renew"), "{err}");
}

#[test]
fn run_stops_renewing_when_its_ttl_has_passed() {
    let JobRun {
        rt,
        broker,
        addr,
        mut child,
    } = JobRun::start(
        &["--ttl", "1500ms", "--heartbeat", "600ms"],
        &["sleep", "4"],
    );
    // Held past its first 600 ms by renewals, taken back by the broker at --ttl while the
    // command still runs.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(in_flight(addr), 1);
    wait_until(Duration::from_secs(2), "lease ended at --ttl", || {
        in_flight(addr) == 0
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the command ended early"
    );
    let (code, err) = ended(child);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--ttl (1s 500ms) has passed"), "{err}");
    rt.block_on(broker.shutdown());
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
    // A command that does not start: the shell's codes, and the lease still goes back.
    for (prog, code) in [("/nonexistent/prog", 127), ("/dev/null", 126)] {
        let out = Command::new(BIN)
            .args(["run", "--consumer", "job", "--broker", &url, "--", prog])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{prog}: {err}");
        assert!(err.starts_with("memwarden: cannot run"), "{err}");
        assert_eq!(status(broker.addr())["consumers"][0]["in_flight"], 0);
    }
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
    // The example's pool is GPU 0's VRAM: checked on a machine that has one.
    let root = dir.path().join("root");
    gpu_machine(&root);
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/memwarden.toml");
    // The example's vLLM is started by the broker: its program must be there.
    let missing = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .args(["--gpu-source", "drm", "serve", "--check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(
        err.contains("start program \"/opt/vllm/bin/vllm\" is not found"),
        "{err}"
    );
    let vllm = root.join("opt/vllm/bin/vllm");
    std::fs::create_dir_all(vllm.parent().unwrap()).unwrap();
    std::fs::write(&vllm, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&vllm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .args(["--gpu-source", "drm", "serve", "--check", "--config"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/memwarden.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("configuration ok: 1 pool(s), 3 consumer(s)"),
        "{said}"
    );
    // A line per consumer: where its memory will be read from, or why its size is taken on
    // trust (nothing runs on the fake machine).
    assert!(
        said.contains("\n  ollama: its declared 6 GiB stands: nothing listens on port 11434 here"),
        "{said}"
    );
    assert!(
        said.contains("\n  vllm: not running: started on its first load"),
        "{said}"
    );
}

/// A fake machine with 32 GiB of RAM and one 24 GiB AMD GPU (index 0).
fn gpu_machine(dir: &std::path::Path) {
    let root = FakeRoot::new(dir);
    root.meminfo(32 << 20, 16 << 20, 0, 0).unwrap();
    root.card(&FakeCard {
        card: 0,
        bus_id: "0000:03:00.0".into(),
        vendor: 0x1002,
        device: 0x744c,
        numa_node: -1,
        vram_total: Some(24 << 30),
        vram_used: Some(1 << 30),
        gtt_total: Some(16 << 30),
        gtt_used: Some(0),
    })
    .unwrap();
}

/// `serve --check` promises that the file suits this machine: what `serve` would refuse at
/// start, it refuses too, in one line and with exit 2.
#[test]
fn serve_check_refuses_what_serve_would_refuse_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    gpu_machine(&root);
    let check = |name: &str, toml: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, format!("[server]\nlisten = \"127.0.0.1:0\"\n{toml}")).unwrap();
        common::serve_check(&root, &f)
    };
    assert_bad_input(
        &check(
            "gpu5.toml",
            "[[pool]]\nname = \"gpu5\"\nkind = \"vram\"\ngpu = 5\n",
        ),
        "gpu5.toml: pool \"gpu5\": no vram figure for GPU 5 on this machine",
    );
    assert_bad_input(
        &check(
            "cushion.toml",
            "[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncushion = \"100TiB\"\n",
        ),
        "pool \"ram\": the cushion (100 TiB) is not smaller than the pool (32 GiB)",
    );
    assert_bad_input(
        &check(
            "vram.toml",
            "[[pool]]\nname = \"gpu0\"\nkind = \"vram\"\ngpu = 0\ncushion = \"30GiB\"\n",
        ),
        "the cushion (30 GiB) is not smaller than the pool (24 GiB)",
    );
    // The cushion left out is the default 256 MiB, which a 100 MiB pool cannot hold.
    assert_bad_input(
        &check(
            "small.toml",
            "[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"100MiB\"\n",
        ),
        "small.toml:6:12: pool \"ram\": the capacity (100 MiB) is not larger than the default cushion (256 MiB)",
    );
    let ok = check(
        "ok.toml",
        "[[pool]]\nname = \"gpu0\"\nkind = \"vram\"\ngpu = 0\n[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncushion = \"1GiB\"\n",
    );
    assert_eq!(ok.status.code(), Some(0), "{}", common::stderr(&ok));
    assert_eq!(
        common::stdout(&ok),
        "configuration ok: 2 pool(s), 0 consumer(s), listening on 127.0.0.1:0\n"
    );
}

/// A cause is said once: the error's message carries it, and it is not chained again.
#[test]
fn a_port_in_use_is_one_line_with_its_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = common::memwarden(&["--gpu-source", "none", "serve", "--listen", &addr]);
    assert_bad_input(&o, &format!("cannot listen on {addr}: "));
    let err = common::stderr(&o);
    let cause = err.rsplit(": ").next().unwrap().trim();
    assert_eq!(err.matches(cause).count(), 1, "{err}");
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
        .stderr(Stdio::piped())
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
    let log = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    // The log says at start how each consumer's memory will be known.
    assert!(
        log.contains("consumer llm: holds memory only while a lease or request runs"),
        "{log}"
    );
    let c = &st["consumers"][0];
    assert_eq!(c["declared_source"], "estimate");
    assert_eq!(c["declared_bytes"], est["total_bytes"]);
    assert!(c["declared_bytes"].as_u64().unwrap() > 2 << 30);
}
