//! Proxy overhead: the same upstream (a test consumer process) called directly and through
//! the broker, 64 concurrent clients, small responses, measured side by side in one run.
//! Prints p50, p99 and throughput for both. Targets: added p50 < 200 µs, added p99 < 1 ms,
//! throughput through the broker at least 80% of direct. Also: the same 64 paced, against an
//! upstream that takes 5 ms to answer, and one client alone.
//!
//! `cargo bench -p memwarden-broker --bench proxy` (MEMWARDEN_BENCH_REQUESTS to change the
//! number of requests per round). With MEMWARDEN_BENCH_PIN=1 the proxies (broker and bare) run
//! on the last CPU and the load generator and the upstream on the others, as on a machine where
//! the proxy has cores of its own: the hop's cost, not the parties' fight for two cores.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use memwarden_broker::Config;
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

const CLIENTS: usize = 64;
/// Requests per second in all for the paced case: well below what two cores serve through
/// the broker.
const PACED: f64 = 4000.0;
/// How long the upstream takes to answer in the case that stands for a model server, in ms.
const SLOW_MS: u64 = 5;

/// The CPUs of this machine: (all but the last, the last), or None when not pinning.
fn pinning() -> Option<(Vec<usize>, usize)> {
    if std::env::var("MEMWARDEN_BENCH_PIN").ok().as_deref() != Some("1") {
        return None;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then(|| ((0..n - 1).collect(), n - 1))
}

/// Pins the calling thread (and what it starts or execs from now on) to `cpus`.
fn pin(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only
    // touch that local set and the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

struct Round {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Round {
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        l[((l.len() as f64 * p) as usize).min(l.len() - 1)]
    }
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// `clients` connections, each sending its next request as soon as the last is answered, or,
/// with `rate` (requests per second in all), on a fixed schedule. Latency counts from the
/// send: tokio's timer has millisecond grain, which would swamp the hop.
async fn round(url: &str, total: usize, clients: usize, rate: Option<f64>) -> Round {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(clients)
        .build(connector);
    let client = Arc::new(client);
    let per = total / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let client = Arc::clone(&client);
        let url: hyper::Uri = url.parse().unwrap();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut schedule = rate.map(|r| {
                // Spread over the period: 64 clients due at the same instant are a burst.
                let period = Duration::from_secs_f64(clients as f64 / r);
                let first = tokio::time::Instant::now() + period * k as u32 / clients as u32;
                let mut i = tokio::time::interval_at(first, period);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            });
            for _ in 0..per {
                if let Some(s) = schedule.as_mut() {
                    s.tick().await;
                }
                let t = Instant::now();
                let resp = client.get(url.clone()).await.expect("request");
                assert!(resp.status().is_success());
                resp.into_body().collect().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Round {
        latencies,
        wall: start.elapsed(),
    }
}

/// The least any HTTP proxy does, for comparison: the same hyper server and pooled client as
/// the broker, with no routing, admission or header rewriting. What it costs on this machine
/// bounds what the broker could reach here.
async fn bare_proxy(upstream: u16) -> std::net::SocketAddr {
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                        let client = client.clone();
                        async move {
                            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                            *req.uri_mut() =
                                format!("http://127.0.0.1:{upstream}{pq}").parse().unwrap();
                            client.request(req).await
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn merge(rs: Vec<Round>) -> Round {
    Round {
        latencies: rs.iter().flat_map(|r| r.latencies.clone()).collect(),
        wall: rs.iter().map(|r| r.wall).sum(),
    }
}

fn report(what: &str, d: Round, b: Round, p: Round) {
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    println!(
        "proxy overhead, {what}, {} requests each way",
        d.latencies.len()
    );
    println!("             p50 (µs)   p99 (µs)   throughput (req/s)");
    for (name, r) in [("direct", &d), ("bare proxy", &b), ("broker", &p)] {
        println!(
            "{name:<11} {:>9.0}  {:>9.0}   {:>10.0}",
            us(r.pct(0.5)),
            us(r.pct(0.99)),
            r.rps()
        );
    }
    for (name, r) in [("bare added", &b), ("added", &p)] {
        println!(
            "{name:<11} {:>9.0}  {:>9.0}   {:>9.0}% of direct",
            us(r.pct(0.5)) - us(d.pct(0.5)),
            us(r.pct(0.99)) - us(d.pct(0.99)),
            100.0 * r.rps() / d.rps()
        );
    }
}

/// CPU time (user + system) of a /proc stat file, in clock ticks.
fn ticks(stat: &str) -> u64 {
    std::fs::read_to_string(stat)
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Where the CPU went: the load generator's threads, the broker (the rest of this process:
/// its runtime and its sampler's blocking threads) and the upstream process.
#[derive(Clone, Copy)]
struct Cpu {
    load: u64,
    broker: u64,
    upstream: u64,
}

fn cpu(upstream: u32) -> Cpu {
    let mut load = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim() == "mw-load" {
                load += ticks(&t.path().join("stat").to_string_lossy());
            }
        }
    }
    Cpu {
        load,
        broker: ticks("/proc/self/stat").saturating_sub(load),
        upstream: ticks(&format!("/proc/{upstream}/stat")),
    }
}

/// CPU µs per request between two readings.
fn per_request(a: Cpu, b: Cpu, requests: usize) -> (f64, f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let us = |x: u64, y: u64| (y.saturating_sub(x)) as f64 / hz * 1e6 / requests as f64;
    (
        us(a.load, b.load),
        us(a.upstream, b.upstream),
        us(a.broker, b.broker),
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run briefly then.
    let benching = std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::var("MEMWARDEN_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 64_000 } else { 640 });
    let pins = pinning();
    let mut upstream = Command::new(env!("CARGO_BIN_EXE_memwarden-test-consumer"));
    upstream
        .args(["--size", "0", "--loaded", "--port", "0", "--name", "u"])
        .stdout(Stdio::piped());
    if let Some((others, _)) = pins.clone() {
        // SAFETY: the closure only calls sched_setaffinity, which is async-signal-safe.
        unsafe { upstream.pre_exec(move || pin(&others)) };
    }
    let mut upstream = upstream.spawn().expect("start the upstream");
    let upstream_pid = upstream.id();
    let mut line = String::new();
    BufReader::new(upstream.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .trim_start_matches("listening on ")
        .parse()
        .unwrap();
    // The broker on its own runtime, as `memwarden serve` runs it; the load generator on
    // another, so that each one's CPU can be told apart.
    let runtime = |name: &str, cpus: Option<Vec<usize>>| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name(name)
            .on_thread_start(move || {
                if let Some(cpus) = &cpus {
                    pin(cpus).expect("pin a thread");
                }
            })
            .enable_all()
            .build()
            .unwrap()
    };
    let broker_rt = runtime("mw-broker", pins.as_ref().map(|p| vec![p.1]));
    let load_rt = runtime("mw-load", pins.as_ref().map(|p| p.0.clone()));
    if let Some((others, last)) = &pins {
        // This thread drives the load generator's rounds.
        pin(others).expect("pin the main thread");
        println!("pinned: proxies on CPU {last}, load generator and upstream on CPUs {others:?}");
    }
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"1GiB\"\n\
         [[consumer]]\nname = \"u\"\npool = \"ram\"\nresident = \"1MiB\"\nupstream = \"http://127.0.0.1:{port}\"\n"
    );
    let cfg = Config::parse(&toml, "bench.toml", None).unwrap();
    let probe = Probe::new(HostRoot::system(), GpuSourceKind::None);
    let broker = broker_rt
        .block_on(memwarden_broker::start(cfg, probe))
        .unwrap();
    let bare = broker_rt.block_on(bare_proxy(port));
    let direct_url = format!("http://127.0.0.1:{port}/work");
    let bare_url = format!("http://{bare}/work");
    let proxy_url = format!("http://{}/c/u/work", broker.addr());
    load_rt.block_on(async {
        // Warm every path (connections, caches), then alternate rounds.
        for url in [&direct_url, &bare_url, &proxy_url] {
            round(url, CLIENTS * 10, CLIENTS, None).await;
        }
        // 64 concurrent clients as fast as they can (the target); the same 64 at a pace this
        // machine keeps up with, so that latency is the hop's and not a queue for the CPU;
        // one client alone.
        // And the 64 against an upstream that takes 5 ms to answer, as any model server takes
        // at least: the proxy's CPU then has room beside the parties', as on a machine with
        // cores to spare.
        let cases = [
            (
                format!("{CLIENTS} concurrent clients"),
                CLIENTS,
                total,
                None,
                None,
            ),
            (
                format!("{CLIENTS} concurrent clients at {PACED} req/s"),
                CLIENTS,
                (total / 8).max(CLIENTS * 4),
                Some(PACED),
                None,
            ),
            (
                format!("{CLIENTS} concurrent clients, the upstream taking {SLOW_MS} ms"),
                CLIENTS,
                (total / 8).max(CLIENTS * 4),
                None,
                Some(SLOW_MS),
            ),
            ("1 client".to_string(), 1, total / 16, None, None),
        ];
        for (what, clients, n, rate, upstream_ms) in cases {
            let query = upstream_ms.map_or_else(String::new, |ms| format!("?ms={ms}"));
            let [direct_url, bare_url, proxy_url] =
                [&direct_url, &bare_url, &proxy_url].map(|u| format!("{u}{query}"));
            let (mut direct, mut bare, mut proxy) = (Vec::new(), Vec::new(), Vec::new());
            let (mut cd, mut cb, mut cp) = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0));
            let add = |acc: &mut (f64, f64, f64), x: (f64, f64, f64)| {
                acc.0 += x.0 / 2.0;
                acc.1 += x.1 / 2.0;
                acc.2 += x.2 / 2.0;
            };
            for _ in 0..2 {
                let a = cpu(upstream_pid);
                direct.push(round(&direct_url, n / 2, clients, rate).await);
                let b = cpu(upstream_pid);
                bare.push(round(&bare_url, n / 2, clients, rate).await);
                let c = cpu(upstream_pid);
                proxy.push(round(&proxy_url, n / 2, clients, rate).await);
                let d = cpu(upstream_pid);
                add(&mut cd, per_request(a, b, n / 2));
                add(&mut cb, per_request(b, c, n / 2));
                add(&mut cp, per_request(c, d, n / 2));
            }
            report(&what, merge(direct), merge(bare), merge(proxy));
            println!("CPU per request (µs)   client  upstream  proxy");
            for (name, x) in [("direct", cd), ("bare proxy", cb), ("broker", cp)] {
                println!("{name:<20} {:>7.1}  {:>8.1}  {:>6.1}", x.0, x.1, x.2);
            }
        }
    });
    // Admission alone (acquire, then release), one task, in sequence: with the consumer
    // loaded and nothing waiting, through its open gate.
    let n = 20_000u32;
    let handle = broker.app.broker.clone();
    let took = broker_rt
        .block_on(broker_rt.spawn(async move {
            let t = Instant::now();
            for _ in 0..n {
                let permit = handle.acquire("u").await.unwrap();
                drop(permit);
            }
            t.elapsed()
        }))
        .unwrap();
    println!(
        "admission through an open gate (acquire, then release): {:.2} µs",
        took.as_secs_f64() * 1e6 / f64::from(n)
    );
    broker_rt.block_on(broker.shutdown());
    let _ = upstream.kill();
    let _ = upstream.wait();
}
