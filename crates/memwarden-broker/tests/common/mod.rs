//! Shared by the end-to-end tests: real consumer processes on ports the OS picks, a real
//! broker on 127.0.0.1:0, and a plain HTTP client.
#![allow(dead_code)]

pub mod gpu;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::Request;
use memwarden_broker::{Config, Running};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

pub const BIN: &str = env!("CARGO_BIN_EXE_memwarden-test-consumer");

/// A test consumer process, killed when dropped.
pub struct TestConsumer {
    pub child: Child,
    pub port: u16,
}

impl Drop for TestConsumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestConsumer {
    pub fn spawn(name: &str, size: &str, mode: &str) -> TestConsumer {
        TestConsumer::spawn_from(std::path::Path::new(BIN), name, size, mode)
    }

    /// One whose process is named `comm` (as a model server is named `llama-server`).
    pub fn spawn_as(comm: &str, name: &str, size: &str, mode: &str) -> TestConsumer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let exe = dir.path().join(comm);
        std::os::unix::fs::symlink(BIN, &exe).expect("link the test consumer");
        TestConsumer::spawn_from(&exe, name, size, mode)
    }

    /// One with further arguments (`--vram-file PATH`, `--load-ms N`).
    pub fn spawn_with(name: &str, size: &str, mode: &str, extra: &[&str]) -> TestConsumer {
        let mut args = vec![
            "--size", size, "--mode", mode, "--name", name, "--port", "0",
        ];
        args.extend_from_slice(extra);
        TestConsumer::spawn_args(std::path::Path::new(BIN), &args)
    }

    /// One on `port`, as a server that comes up where the broker was told to find it;
    /// `extra` arguments such as `--loaded` (holding its memory from the start).
    pub fn spawn_on(port: u16, name: &str, size: &str, extra: &[&str]) -> TestConsumer {
        let port = port.to_string();
        let mut args = vec!["--size", size, "--name", name, "--port", &port];
        args.extend_from_slice(extra);
        TestConsumer::spawn_args(std::path::Path::new(BIN), &args)
    }

    fn spawn_from(exe: &std::path::Path, name: &str, size: &str, mode: &str) -> TestConsumer {
        let args = [
            "--size", size, "--mode", mode, "--name", name, "--port", "0",
        ];
        TestConsumer::spawn_args(exe, &args)
    }

    fn spawn_args(exe: &std::path::Path, args: &[&str]) -> TestConsumer {
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the test consumer");
        let port = read_port(&mut child);
        TestConsumer { child, port }
    }

    /// Resident memory of the process, from /proc.
    pub fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }
}

/// Resident memory of a process, from /proc; 0 once it is gone.
pub fn rss_of(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A machine whose memory only some processes use, as a GPU's memory is used by the model
/// servers alone: a root for the probe in which `/proc/meminfo` says `total` less what those
/// processes hold now, and `/proc/PID` and `/proc/net` are the real ones. The real
/// MemAvailable moves with everything else the machine runs (other builds and tests) and, in
/// some virtual machines, seconds after memory is freed; this one moves with the consumers
/// alone, within 20 ms.
pub struct Machine {
    // Stopped before the root it writes is removed.
    _updater: Updater,
    dir: tempfile::TempDir,
}

impl Machine {
    pub fn new(total: u64, pids: &[u32]) -> Machine {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let proc = dir.path().join("proc");
        std::fs::create_dir(&proc).unwrap();
        std::os::unix::fs::symlink("/proc/self/net", proc.join("net")).unwrap();
        for pid in pids {
            std::os::unix::fs::symlink(format!("/proc/{pid}"), proc.join(pid.to_string())).unwrap();
        }
        let pids = pids.to_vec();
        let _updater = Updater::spawn(move || {
            let used: u64 = pids.iter().map(|&p| rss_of(p)).sum();
            put(&proc.join("meminfo"), &meminfo(total, used));
        });
        Machine { _updater, dir }
    }

    pub fn probe(&self) -> Probe {
        Probe::new(
            HostRoot::new(self.dir.path()).expect("the root"),
            GpuSourceKind::None,
        )
    }
}

/// `/proc/meminfo` of a host of `total` bytes whose processes hold `used`.
pub fn meminfo(total: u64, used: u64) -> String {
    let avail = total.saturating_sub(used) >> 10;
    format!(
        "MemTotal:       {} kB\nMemFree:        {avail} kB\nMemAvailable:   {avail} kB\n",
        total >> 10
    )
}

/// Writes a file whole: the probe must never read half of it. A write that fails (a full
/// disk) leaves the last one, and the next round tries again.
pub fn put(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Rewrites a fake root's files now and every 20 ms after, until dropped.
pub struct Updater {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Updater {
    pub fn spawn(write: impl Fn() + Send + 'static) -> Updater {
        write();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = std::sync::Arc::clone(&stop);
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    write();
                }
            }
        });
        Updater {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Updater {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP forwarder to a consumer's port, under the name a container runtime's forwarder has
/// (`docker-proxy`): it owns the port the broker is told to use, and holds none of the
/// consumer's memory. Killed when dropped.
pub struct Forwarder {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Forwarder {
    pub fn spawn(comm: &str, to: u16) -> Forwarder {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // The kernel names a process after the file it was started as: a link gives the test
        // consumer the forwarder's name.
        let exe = dir.path().join(comm);
        std::os::unix::fs::symlink(BIN, &exe).expect("link the test consumer");
        let mut child = Command::new(&exe)
            .args(["--forward-to", &to.to_string(), "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the forwarder");
        let port = read_port(&mut child);
        Forwarder {
            child,
            port,
            _dir: dir,
        }
    }

    /// The name the kernel shows for it.
    pub fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.child.id()))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

/// The port a test consumer or forwarder says it listens on, from its first line.
fn read_port(child: &mut Child) -> u16 {
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read its port");
    line.trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
}

/// A port nothing listens on (taken from the OS and let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The consumer block of a config for a test consumer on `port` with routes.
pub fn consumer_toml(name: &str, port: u16, resident: &str, extra: &str) -> String {
    format!(
        "[[consumer]]\nname = \"{name}\"\npool = \"ram\"\nresident = \"{resident}\"\n\
         upstream = \"http://127.0.0.1:{port}\"\nload = \"POST /load\"\nunload = \"POST /unload\"\n\
         health = \"GET /health\"\n{extra}\n"
    )
}

/// A ram pool of `capacity` (a small, exact pool on a big machine).
pub fn pool_toml(capacity: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"{capacity}\"\ncushion = \"8MiB\"\n{extra}\n"
    )
}

pub async fn start(toml: &str) -> Running {
    start_on(toml, Probe::new(HostRoot::system(), GpuSourceKind::None)).await
}

/// A broker that reads the machine through `probe`.
pub async fn start_on(toml: &str, probe: Probe) -> Running {
    let cfg = Config::parse(toml, "test.toml", None).expect("config");
    let r = memwarden_broker::start(cfg, probe)
        .await
        .expect("broker starts");
    // Let the first reading arrive.
    tokio::time::sleep(Duration::from_millis(150)).await;
    r
}

pub fn client()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// One request with a bound: (status, body). A transport error is status 0.
pub async fn http(method: &str, url: impl Into<String>, body: &str) -> (u16, String) {
    http_with(&client(), method, &url.into(), body, &[]).await
}

/// One GET with a bound: (status, its Retry-After header, body).
pub async fn get_retry_after(url: impl Into<String>) -> (u16, Option<String>, String) {
    let req = Request::get(url.into()).body(Body::empty()).unwrap();
    let call = async {
        let resp = client().request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        (status, retry, String::from_utf8_lossy(&b).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("a request must not hang")
}

pub async fn http_with(
    c: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Body,
    >,
    method: &str,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body.to_string())).unwrap();
    let call = async {
        match c.request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let b = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                (status, String::from_utf8_lossy(&b).into_owned())
            }
            Err(e) => (0, e.to_string()),
        }
    };
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("a request must not hang")
}

pub async fn status(r: &Running) -> serde_json::Value {
    let (code, body) = http("GET", &format!("http://{}/v1/status", r.addr()), "").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

pub fn consumer<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    st["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// Held by each test of a file whose verdicts read how much memory comes back or when: run
/// together, one test's consumers loading and freeing tens of MiB move the machine's free
/// memory that another reads, and their CPU delays the other's timings.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Polls the status until `pred` holds, for at most `within`.
pub async fn wait_for(
    r: &Running,
    within: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let st = status(r).await;
        if pred(&st) {
            return st;
        }
        if Instant::now() >= deadline {
            panic!("condition not reached in {within:?}; status: {st:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `promtool check metrics` on `text`: the exposition must pass Prometheus' own checker.
pub fn promtool(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool cannot run ({e}): `apt-get install --no-install-recommends prometheus` \
                 (or `bash .ci/setup`) installs it"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
