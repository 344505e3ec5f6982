//! A running `memwarden serve` that a local user tries to wedge: configuration files emptied or
//! pointing at a FIFO, connections that send nothing or send their headers a byte at a time.
//! The real binary, real signals and real sockets on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_memwarden");

/// `memwarden serve` on a free port, its log in a file; killed when dropped.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Starts one on the config `body(port)`, with at most `nofile` open files if given.
    fn start(body: impl Fn(u16) -> String, nofile: Option<u64>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("memwarden.toml");
        std::fs::write(&config, body(port)).unwrap();
        let log = dir.path().join("log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--gpu-source", "none", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env_remove("MEMWARDEN_ROOT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; it only lowers the child's own limit.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let d = Daemon {
            child,
            addr,
            log,
            config,
            _dir: dir,
        };
        d.wait_for("memwarden broker listening", 0);
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` more than `seen` times.
    fn wait_for(&self, needle: &str, seen: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.log().matches(needle).count() <= seen {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the config file and sends SIGHUP; returns once the reload's verdict is logged.
    fn reload(&self, text: &str) -> String {
        std::fs::write(&self.config, text).unwrap();
        let verdicts = |log: &str| {
            log.matches("configuration reloaded").count()
                + log.matches("new configuration refused").count()
        };
        let before = verdicts(&self.log());
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log();
            if verdicts(&log) > before {
                return log
                    .lines()
                    .rev()
                    .find(|l| l.contains("configuration"))
                    .unwrap()
                    .to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no verdict on the reload:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGTERM; it must end within 10 s.
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "serve did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One HTTP/1.0 GET with a bound on the whole exchange: the status line and the body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(format!("GET {path} HTTP/1.0\r\n{auth}\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("GET {path}: no whole answer: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn consumers(addr: SocketAddr, token: Option<&str>) -> Vec<String> {
    let st: serde_json::Value = serde_json::from_str(&get(addr, "/v1/status", token).1).unwrap();
    (st["consumers"].as_array().unwrap().iter())
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn config(port: u16, server: &str, consumers: &[&str]) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n[[pool]]\nname = \"ram\"\nkind = \"ram\"\n\
         capacity = \"64GiB\"\n"
    );
    for c in consumers {
        s.push_str(&format!(
            "[[consumer]]\nname = \"{c}\"\npool = \"ram\"\nresident = \"1GiB\"\n"
        ));
    }
    s
}

#[test]
fn an_emptied_config_is_refused_on_reload_and_the_old_one_stays() {
    let d = Daemon::start(|p| config(p, "token = \"s3cret\"", &["a", "b"]), None);
    let token = Some("s3cret");
    let port = d.addr.port();
    for emptied in ["", "# truncated by a failed copy\n", "[server]\n"] {
        let verdict = d.reload(emptied);
        assert!(
            verdict.contains("new configuration refused, the old one stays: it would drop every consumer (2 now), the token, the listen address"),
            "{verdict}"
        );
        assert_eq!(consumers(d.addr, token), ["a", "b"]);
    }
    // One that keeps the address but drops the token is refused too.
    let verdict = d.reload(&config(port, "", &["a"]));
    assert!(verdict.contains("it would drop the token;"), "{verdict}");
    assert_eq!(
        get(d.addr, "/v1/status", None).0,
        "HTTP/1.0 401 Unauthorized"
    );
    // Said on purpose, it is taken.
    let verdict = d.reload(&config(port, "token = \"s3cret\"\nallow_empty = true", &[]));
    assert!(verdict.contains("configuration reloaded"), "{verdict}");
    assert!(consumers(d.addr, token).is_empty());
    d.stop();
}

fn check(f: &Path) -> std::process::Output {
    let f = f.to_str().unwrap();
    common::memwarden(&["serve", "--gpu-source", "none", "--check", "--config", f])
}

#[test]
fn check_warns_about_a_file_that_sets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.toml");
    std::fs::write(&f, "").unwrap();
    let o = check(&f);
    let err = common::stderr(&o);
    assert!(
        err.starts_with(&format!(
            "warning: {}: the file sets no listen address, token, pool or consumer",
            f.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("write `allow_empty = true` under [server]"),
        "{err}"
    );
    std::fs::write(&f, "[server]\nallow_empty = true\n").unwrap();
    let o = check(&f);
    assert!(o.status.success() && common::stderr(&o).is_empty(), "{o:?}");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_for_a_model_file_does_not_wedge_reload() {
    let d = Daemon::start(|p| config(p, "", &["a"]), None);
    let port = d.addr.port();
    let fifo = d.config.with_file_name("model.gguf");
    mkfifo(&fifo);
    let with_fifo = format!(
        "{}[[consumer]]\nname = \"b\"\npool = \"ram\"\nestimate = {{ model = \"model.gguf\", ctx = 4096 }}\n",
        config(port, "", &["a"])
    );
    let verdict = d.reload(&with_fifo);
    assert!(
        verdict.contains("new configuration refused, the old one stays")
            && verdict.contains("a FIFO, not a regular file"),
        "{verdict}"
    );
    // Later signals still work.
    let verdict = d.reload(&config(port, "", &["a", "c"]));
    assert!(verdict.contains("configuration reloaded"), "{verdict}");
    assert_eq!(consumers(d.addr, None), ["a", "c"]);
    d.stop();
}

/// Reads until the peer closes: how long that took, or None if it had not after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(t.elapsed()),
            Err(_) => return None,
        }
        if t.elapsed() > within {
            return None;
        }
    }
}

#[test]
fn idle_and_trickling_connections_are_closed_after_the_header_timeout() {
    let d = Daemon::start(|p| config(p, "header_timeout = \"1s\"", &[]), None);
    // A kept-alive connection, idle after its answer.
    let mut idle = TcpStream::connect(d.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = idle.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Headers sent a byte every 200 ms, never finished.
    let mut trickle = TcpStream::connect(d.addr).unwrap();
    let writer = {
        let mut w = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .cycle()
                .take(100)
            {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).is_some(),
        "idle connection kept"
    );
    assert!(
        closed_within(&mut trickle, Duration::from_secs(10)).is_some(),
        "trickling connection kept"
    );
    writer.join().unwrap();
    d.stop();
}

#[test]
fn healthz_answers_while_a_local_client_holds_more_connections_than_there_are_files() {
    // 256 open files at most; 600 connections that send part of their headers and then
    // nothing, held for longer than any test would wait.
    let d = Daemon::start(|p| config(p, "token = \"s3cret\"", &[]), Some(256));
    let mut held = Vec::new();
    for _ in 0..600 {
        let mut s = TcpStream::connect(d.addr).unwrap();
        let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n");
        held.push(s);
    }
    for _ in 0..5 {
        let (status, body) = get(d.addr, "/healthz", None);
        assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
    }
    assert_eq!(consumers(d.addr, Some("s3cret")), Vec::<String>::new());
    drop(held);
    d.stop();
}
