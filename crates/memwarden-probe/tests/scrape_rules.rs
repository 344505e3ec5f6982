//! The scrapers' rules, each proven against real sockets: loopback only, the port owned by the
//! process asked about, one request per server per 5 s, no redirects, a 64 KiB cap, a 500 ms
//! time limit; and bad answers (malformed, HTML) skipped with a short reason.

mod scrape_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::routing::get;
use memwarden_probe::framework::Framework;
use memwarden_probe::net::pid_owns_port;
use memwarden_probe::scrape::guard::{pid_serves, pid_serves_procfs};
use memwarden_probe::scrape::http::MAX_BODY_BYTES;
use memwarden_probe::scrape::{
    MIN_INTERVAL, ScrapeConfig, ScrapeError, Scraper, ServerKind, candidate_addrs,
};
use scrape_support::{JSON, ManualClock, PROMETHEUS, me, root, serve, serve_fixed, serve_on};

const LLAMACPP: &str = include_str!("scrape_samples/llamacpp_metrics.txt");
const OLLAMA: &str = include_str!("scrape_samples/ollama_ps.json");

fn scraper() -> Scraper {
    Scraper::new(ScrapeConfig::default())
}

// Rule 1: loopback only.

#[test]
fn a_non_loopback_address_is_refused_before_connecting() {
    let t = Instant::now();
    let addr: SocketAddr = "192.0.2.1:8080".parse().unwrap();
    let e = scraper()
        .scrape(&root(), me(), ServerKind::Vllm, addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::HostNotAllowed(addr.ip()));
    // TEST-NET-1 never answers: a connection attempt would have taken the whole timeout.
    assert!(t.elapsed() < Duration::from_millis(100));
}

/// This machine's own non-loopback address, if it has one.
fn lan_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn a_listener_of_ours_on_a_lan_address_gets_no_connection_unless_allowed() {
    let ip = lan_address().expect("this machine needs a non-loopback address with a route");
    // A raw listener: an accepted connection would show even if no request were sent.
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let e = scraper()
        .scrape(&root(), me(), ServerKind::Vllm, addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::HostNotAllowed(ip));
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "a connection reached the listener"
    );
    drop(listener);

    // Listed by the operator, the same kind of address is asked.
    let server = serve_on(
        ip,
        Router::new().route(
            "/api/ps",
            get(|| async { ([(CONTENT_TYPE, JSON)], OLLAMA) }),
        ),
    );
    let mut s = Scraper::new(ScrapeConfig {
        enabled: true,
        allow_hosts: vec![ip],
    });
    let m = s
        .scrape(&root(), me(), ServerKind::Ollama, server.addr)
        .unwrap();
    assert_eq!(m.models.len(), 2);
    assert_eq!(server.hits(), 1);
}

#[test]
fn disabled_scraper_asks_nothing() {
    let server = serve_fixed("/metrics", PROMETHEUS, LLAMACPP);
    let mut s = Scraper::new(ScrapeConfig {
        enabled: false,
        ..ScrapeConfig::default()
    });
    let e = s
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::Disabled);
    assert_eq!(server.hits(), 0);
}

// Rule 2: the port must be owned by the process in question.

/// `python3 -m http.server` on a free loopback port, with the port it took.
struct PythonServer {
    child: Child,
    port: u16,
}

impl PythonServer {
    fn start() -> PythonServer {
        PythonServer::start_with(&[], "127.0.0.1")
    }

    /// Started through `prefix` (a command that execs the rest, like `unshare --net`),
    /// listening on `bind`.
    fn start_with(prefix: &[&str], bind: &str) -> PythonServer {
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend(["python3", "-u", "-m", "http.server", "0", "--bind", bind]);
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} cannot run ({e}): `bash .ci/setup` installs python3",
                    argv[0]
                )
            });
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("{} did not start: {}", argv.join(" "), err.trim());
        }
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|r| r.split_ascii_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected http.server banner {line:?}"));
        PythonServer { child, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.port)
    }

    /// Stops the server and returns what it logged (one line per request it served).
    fn stop(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        log
    }
}

#[test]
fn pid_owns_port_sees_a_real_listener() {
    let py = PythonServer::start();
    let child = py.child.id();
    assert!(pid_owns_port(&root(), child, py.port));
    assert!(!pid_owns_port(&root(), me(), py.port));
    // The scrapers' stricter check, by netlink and from /proc alone, agrees.
    for check in [pid_serves, pid_serves_procfs] {
        assert!(check(&root(), child, py.addr()));
        assert!(!check(&root(), me(), py.addr()));
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), py.port);
        assert!(!check(&root(), child, v6));
    }
    py.stop();

    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ours.local_addr().unwrap().port();
    assert!(pid_owns_port(&root(), me(), port));
    drop(ours);
    assert!(!pid_owns_port(&root(), me(), port));
}

#[test]
fn a_port_held_by_another_process_is_not_asked() {
    let py = PythonServer::start();
    let addr = py.addr();
    let mut s = scraper();
    let e = s
        .scrape(&root(), me(), ServerKind::Ollama, addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::NotOwner { pid: me(), addr });

    // Asked about the process that does hold it, the request goes out (and http.server,
    // which is no Ollama, answers 404).
    let e = s
        .scrape(&root(), py.child.id(), ServerKind::Ollama, addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::Status(404));
    let log = py.stop();
    assert_eq!(log.matches("GET /api/ps").count(), 1, "server log: {log}");
}

#[test]
#[ignore = "needs root (unshare --net); there: \
            cargo test -p memwarden-probe --test scrape_rules -- --ignored (scripts/test runs it)"]
fn a_listener_in_another_network_namespace_is_not_ours_to_reach() {
    // Its own namespace has its own loopback: `127.0.0.1:port` from here reaches whatever
    // listens in ours, here a listener of this test on the very same port.
    let py = PythonServer::start_with(&["unshare", "--net"], "0.0.0.0");
    let child = py.child.id();
    assert!(
        pid_owns_port(&root(), child, py.port),
        "it does hold the port, in its namespace"
    );
    assert!(!pid_serves(&root(), child, py.addr()));
    assert!(!pid_serves_procfs(&root(), child, py.addr()));
    let impostor = TcpListener::bind(("127.0.0.1", py.port))
        .unwrap_or_else(|e| panic!("port {} is taken here ({e})", py.port));
    impostor.set_nonblocking(true).unwrap();
    let addr = py.addr();
    let e = scraper()
        .scrape(&root(), child, ServerKind::Ollama, addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::NotOwner { pid: child, addr });
    assert_eq!(
        impostor.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    let log = py.stop();
    assert!(!log.contains("GET"), "{log}");
}

#[test]
fn our_listener_on_another_address_does_not_vouch_for_this_one() {
    let server = serve_fixed("/metrics", PROMETHEUS, LLAMACPP);
    // We listen on 127.0.0.1 only: [::1] on the same port is somebody else's business.
    let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), server.addr.port());
    let e = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, v6)
        .unwrap_err();
    assert_eq!(
        e,
        ScrapeError::NotOwner {
            pid: me(),
            addr: v6
        }
    );
    assert_eq!(server.hits(), 0);
}

#[test]
fn candidate_addresses_of_a_real_process() {
    let server = serve_fixed("/metrics", PROMETHEUS, LLAMACPP);
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let cmdline = format!("llama-server -m x.gguf --port {}", server.addr.port());
    let addrs = candidate_addrs(&root(), me(), &cmdline, Framework::LlamaCpp);
    assert_eq!(addrs.first(), Some(&server.addr), "{addrs:?}");
    assert!(addrs.contains(&other.local_addr().unwrap()));
    // The first candidate is the one a scrape succeeds on.
    let m = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, addrs[0])
        .unwrap();
    assert_eq!(m.requests_waiting, Some(2));
}

// Rule 3: at most one request per server per 5 s.

#[test]
fn one_request_per_server_per_interval() {
    let server = serve_fixed("/metrics", PROMETHEUS, LLAMACPP);
    let clock = ManualClock::new();
    let mut s = Scraper::with_clock(ScrapeConfig::default(), Box::new(clock.clone()));
    let first = s
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap();
    assert_eq!(server.hits(), 1);

    // Within the interval the last answer comes back without asking.
    clock.advance(MIN_INTERVAL - Duration::from_millis(1));
    let again = s
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(server.hits(), 1);

    // Another process claiming the same server does not get a request out of it either.
    let e = s
        .scrape(&root(), me() + 1, ServerKind::LlamaCpp, server.addr)
        .unwrap_err();
    assert!(matches!(
        e,
        ScrapeError::NotOwner { .. } | ScrapeError::RateLimited
    ));
    assert_eq!(server.hits(), 1);

    clock.advance(Duration::from_millis(1));
    s.scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap();
    assert_eq!(server.hits(), 2);
}

#[test]
fn a_failing_server_is_not_hammered() {
    let server = serve(Router::new().route(
        "/metrics",
        get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    ));
    let clock = ManualClock::new();
    let mut s = Scraper::with_clock(ScrapeConfig::default(), Box::new(clock.clone()));
    for _ in 0..3 {
        let e = s
            .scrape(&root(), me(), ServerKind::Vllm, server.addr)
            .unwrap_err();
        assert_eq!(e, ScrapeError::Status(500));
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(server.hits(), 1);
}

// Rule 4: no redirects.

#[test]
fn a_redirect_is_not_followed() {
    let server = serve(
        Router::new()
            .route(
                "/metrics",
                get(|| async { (StatusCode::FOUND, [(LOCATION, "/elsewhere")], "") }),
            )
            .route(
                "/elsewhere",
                get(|| async { ([(CONTENT_TYPE, PROMETHEUS)], LLAMACPP) }),
            ),
    );
    let e = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::Redirect(302));
    // Only the first request arrived: /elsewhere was never asked for.
    assert_eq!(server.hits(), 1);
}

// Rule 5: a body over 64 KiB is cut off and discarded; and the 500 ms limit.

/// Valid llama.cpp metrics padded with comment lines to `len` bytes.
fn padded_metrics(len: usize) -> String {
    let mut body = String::from(LLAMACPP);
    while body.len() < len {
        body.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    body.truncate(len - 1);
    body.push('\n');
    body
}

#[test]
fn an_oversize_answer_is_discarded() {
    let big: &'static str = padded_metrics(MAX_BODY_BYTES + 1).leak();
    let server = serve_fixed("/metrics", PROMETHEUS, big);
    let e = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::TooLarge);

    let fits: &'static str = padded_metrics(MAX_BODY_BYTES - 1024).leak();
    let server = serve_fixed("/metrics", PROMETHEUS, fits);
    let m = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap();
    assert_eq!(m.requests_running, Some(1));
}

/// A hand-written HTTP/1.1 server on 127.0.0.1 (in this process) that answers one connection
/// with `response` and then holds it open for `hold`.
fn raw_server(response: Vec<u8>, hold: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut req = [0u8; 4096];
            let _ = conn.read(&mut req);
            let _ = conn.write_all(&response);
            std::thread::sleep(hold);
        }
    });
    addr
}

#[test]
fn an_oversize_chunked_answer_is_cut_off() {
    // No Content-Length: the cap must hold while reading, not only by the announced size.
    let mut resp =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let chunk = padded_metrics(16 * 1024);
    for _ in 0..8 {
        resp.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        resp.extend_from_slice(chunk.as_bytes());
        resp.extend_from_slice(b"\r\n");
    }
    resp.extend_from_slice(b"0\r\n\r\n");
    let addr = raw_server(resp, Duration::from_millis(100));
    let e = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::TooLarge);
}

#[test]
fn a_server_that_never_answers_times_out() {
    let server = serve(Router::new().route(
        "/metrics",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            LLAMACPP
        }),
    ));
    let t = Instant::now();
    let e = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::Timeout);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[test]
fn a_server_that_stalls_mid_body_times_out() {
    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\nllamacpp:requests_processing 1\n".to_vec();
    let addr = raw_server(resp, Duration::from_secs(3));
    let t = Instant::now();
    let e = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::Timeout);
    assert!(t.elapsed() < Duration::from_millis(1500));
}

// Bad answers are skipped with a short reason.

#[test]
fn an_html_answer_is_skipped() {
    let page = "<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>";
    let server = serve_fixed("/metrics", "text/html", page);
    let e = scraper()
        .scrape(&root(), me(), ServerKind::Vllm, server.addr)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "malformed answer: the server answered an HTML page"
    );

    // Even when it claims to be plain text.
    let server = serve_fixed("/metrics", PROMETHEUS, page);
    let e = scraper()
        .scrape(&root(), me(), ServerKind::Vllm, server.addr)
        .unwrap_err();
    assert!(matches!(e, ScrapeError::Malformed(_)), "{e}");
}

#[test]
fn malformed_metrics_are_skipped() {
    let server = serve_fixed(
        "/metrics",
        PROMETHEUS,
        "llamacpp:requests_processing 1\nllamacpp:requests_deferred{oops 2\n",
    );
    let e = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap_err();
    assert!(
        matches!(e, ScrapeError::Malformed(ref w) if w.starts_with("line 2")),
        "{e}"
    );

    let server = serve_fixed("/api/ps", JSON, "{\"models\": 5}");
    let e = scraper()
        .scrape(&root(), me(), ServerKind::Ollama, server.addr)
        .unwrap_err();
    assert!(matches!(e, ScrapeError::Malformed(_)), "{e}");

    let server = serve_fixed(
        "/get_server_info",
        JSON,
        "{\"model_path\":\"m\",\"tp_size\":1e30,\"internal_states\":[]}",
    );
    let e = scraper()
        .scrape(&root(), me(), ServerKind::Sglang, server.addr)
        .unwrap_err();
    assert!(
        matches!(e, ScrapeError::Malformed(ref w) if w.contains("tp_size")),
        "{e}"
    );

    let server = serve_fixed("/get_server_info", JSON, "[1,2,3]");
    let e = scraper()
        .scrape(&root(), me(), ServerKind::Sglang, server.addr)
        .unwrap_err();
    assert!(matches!(e, ScrapeError::Malformed(_)), "{e}");

    // A gauge with an impossible value is not a reading, not a zero.
    let server = serve_fixed(
        "/metrics",
        PROMETHEUS,
        "llamacpp:requests_processing -3\nllamacpp:requests_deferred NaN\nllamacpp:kv_cache_usage_ratio 42\n",
    );
    let m = scraper()
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap();
    assert_eq!(m.requests_running, None);
    assert_eq!(m.requests_waiting, None);
    assert_eq!(m.kv_cache_usage_ratio, None);
}

#[test]
fn a_closed_port_is_a_short_error() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    // Nobody holds it now, so it is refused as not ours before any connection.
    let e = scraper()
        .scrape(&root(), me(), ServerKind::Vllm, addr)
        .unwrap_err();
    assert_eq!(e, ScrapeError::NotOwner { pid: me(), addr });
}

#[test]
fn a_server_process_is_found_and_read_by_its_port() {
    let server = serve_fixed("/metrics", PROMETHEUS, LLAMACPP);
    let _noise = TcpListener::bind("127.0.0.1:0").unwrap();
    let cmdline = format!(
        "/opt/llama/llama-server -m q.gguf --port {}",
        server.addr.port()
    );
    let mut s = scraper();
    let m = s
        .scrape_process(&root(), me(), &cmdline, Framework::LlamaCpp)
        .unwrap()
        .unwrap();
    assert_eq!(m.requests_running, Some(1));
    assert_eq!(server.hits(), 1);

    // Not a server kind we ask, or Ollama's private runner: nothing is asked.
    assert!(
        s.scrape_process(&root(), me(), "python3 train.py", Framework::Pytorch)
            .is_none()
    );
    let runner = format!(
        "/usr/bin/ollama runner --model /m --port {}",
        server.addr.port()
    );
    assert!(
        s.scrape_process(&root(), me(), &runner, Framework::Ollama)
            .is_none()
    );
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_process_listening_nowhere_is_not_asked() {
    // vLLM's engine core, SGLang's schedulers or TGI's launcher serve no HTTP themselves.
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep runs");
    let found =
        scraper().scrape_process(&root(), sleeper.id(), "VLLM::EngineCore", Framework::Vllm);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(found, None);
}

#[test]
fn within_the_interval_the_port_that_answered_is_remembered() {
    // Two ports of this process were asked: one answered 404, the other metrics.
    let broken = serve(Router::new());
    let good = serve_fixed("/metrics", PROMETHEUS, LLAMACPP);
    let clock = ManualClock::new();
    let mut s = Scraper::with_clock(ScrapeConfig::default(), Box::new(clock.clone()));
    let kind = ServerKind::LlamaCpp;
    assert_eq!(
        s.scrape(&root(), me(), kind, broken.addr).unwrap_err(),
        ScrapeError::Status(404)
    );
    s.scrape(&root(), me(), kind, good.addr).unwrap();
    clock.advance(Duration::from_secs(1));
    for _ in 0..10 {
        let m = s
            .scrape_process(
                &root(),
                me(),
                "/opt/llama-server -m q.gguf",
                Framework::LlamaCpp,
            )
            .unwrap()
            .unwrap();
        assert_eq!(m.requests_waiting, Some(2));
    }
    assert_eq!((broken.hits(), good.hits()), (1, 1));
}
