//! The soak: a broker kept under a mix of load, reloads (good and bad configs), consumers
//! that crash and lie, clients that disconnect and clients that send their headers slowly,
//! for `MEMWARDEN_SOAK_SECS` seconds (30 minutes by default). It reports the requests answered,
//! lost (no answer) and hung (none within a minute), the RSS and open files of the process at
//! start and end, and the latency of `/healthz` throughout; it fails on a lost or hung
//! request, a `/healthz` that did not answer, a reload whose verdict was not the expected one,
//! or open files that grew.
//!
//! Ignored by default (it takes as long as it is told to):
//! `MEMWARDEN_SOAK_SECS=120 cargo test -p memwarden-broker --test soak -- --ignored --nocapture`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use common::*;
use http_body_util::BodyExt;
use hyper::Request;
use memwarden_broker::Config;
use tokio::io::AsyncWriteExt;

/// How long a request may take before it counts as hung.
const HUNG: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    /// By status class: 2xx, 4xx, 5xx.
    ok: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    lost: AtomicU64,
    hung: AtomicU64,
    abandoned: AtomicU64,
    slow_clients: AtomicU64,
}

type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

fn pooled_client() -> Client {
    // Idle connections are given up before the broker's header timeout closes them, so a
    // request is never sent on a connection being closed.
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// One request read to its end, counted.
async fn counted(c: &Client, t: &Tally, req: Request<Body>) {
    let call = async {
        let resp = c.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("{status}, body cut: {e}"))?;
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(HUNG, call).await {
        Ok(Ok(status)) => {
            t.answered.fetch_add(1, Ordering::Relaxed);
            let class = match status {
                200..=299 => &t.ok,
                400..=499 => &t.client_errors,
                _ => &t.server_errors,
            };
            class.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            eprintln!("lost: {e}");
            t.lost.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            t.hung.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn rss_and_fds() -> (u64, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss_of(std::process::id()), fds)
}

/// The good configurations the soak moves between: the same consumers, the pool's size
/// changing so that evictions come and go. A consumer the broker starts crashes in the middle
/// of every `/work` (and is started again by the next request); a lying one keeps its memory
/// when told to unload.
fn good(ports: [u16; 4], capacity: &str, listen: &str) -> String {
    let [n1, n2, liar, crash] = ports;
    let mut t = format!(
        "[server]\nlisten = \"{listen}\"\nheader_timeout = \"3s\"\n[[pool]]\nname = \"ram\"\n\
         kind = \"ram\"\ncapacity = \"{capacity}\"\ncushion = \"8MiB\"\nmax_wait = \"20s\"\n"
    );
    t += &consumer_toml("n1", n1, "24MiB", "models = [\"model-one\"]");
    t += &consumer_toml("n2", n2, "24MiB", "");
    t += &consumer_toml("liar", liar, "24MiB", "");
    t += &format!(
        "[[consumer]]\nname = \"crash\"\npool = \"ram\"\nresident = \"8MiB\"\n\
         upstream = \"http://127.0.0.1:{crash}\"\nhealth = \"GET /health\"\n\
         start = [\"{BIN}\", \"--size\", \"8MiB\", \"--mode\", \"crash\", \"--loaded\", \"--port\", \"{crash}\", \"--name\", \"crash\"]\n\
         stop_timeout = \"2s\"\n"
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a soak: runs for MEMWARDEN_SOAK_SECS (30 min by default); CI runs 2 minutes"]
async fn the_broker_survives_a_soak() {
    let secs: u64 = std::env::var("MEMWARDEN_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let n1 = TestConsumer::spawn("n1", "24MiB", "normal");
    let n2 = TestConsumer::spawn("n2", "24MiB", "normal");
    let liar = TestConsumer::spawn("liar", "24MiB", "lying");
    let crash_port = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let config =
        |capacity: &str| good([n1.port, n2.port, liar.port, crash_port], capacity, &listen);
    let mut r = start(&config("88MiB")).await;
    let addr = r.addr();
    let base = format!("http://{addr}");
    let (rss0, fds0) = rss_and_fds();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();

    // Load: clients sending work to every consumer, by path and by model name.
    for i in 0..6 {
        let (t, stop, base) = (Arc::clone(&tally), Arc::clone(&stop), base.clone());
        tasks.push(tokio::spawn(async move {
            let c = pooled_client();
            let mut n = i as u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = if n.is_multiple_of(7) {
                    Request::post(format!("{base}/v1/chat/completions"))
                        .header("content-type", "application/json")
                        .body(Body::from(r#"{"model":"model-one","messages":[]}"#))
                        .unwrap()
                } else {
                    let path = match n % 7 {
                        1 => "/c/crash/work?ms=5".to_string(),
                        2 => "/c/liar/work?ms=5".to_string(),
                        3 => "/c/n2/stream?n=20".to_string(),
                        4 => "/v1/status".to_string(),
                        _ => format!("/c/n{}/work?ms={}", 1 + n % 2, n % 30),
                    };
                    Request::get(format!("{base}{path}"))
                        .body(Body::empty())
                        .unwrap()
                };
                counted(&c, &t, req).await;
            }
        }));
    }
    // Reads that take no room: status and metrics, as monitoring polls them.
    {
        let (t, stop, base) = (Arc::clone(&tally), Arc::clone(&stop), base.clone());
        tasks.push(tokio::spawn(async move {
            let c = pooled_client();
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let path = if n.is_multiple_of(2) {
                    "/v1/status"
                } else {
                    "/metrics"
                };
                let req = Request::get(format!("{base}{path}"))
                    .body(Body::empty())
                    .unwrap();
                counted(&c, &t, req).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    // Clients that give up: a request dropped after a few milliseconds, while queued, loading
    // or streaming.
    {
        let (t, stop, base) = (Arc::clone(&tally), Arc::clone(&stop), base.clone());
        tasks.push(tokio::spawn(async move {
            let c = pooled_client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let path = [
                    "/c/n1/work?ms=200",
                    "/c/n2/stream?n=1000",
                    "/c/liar/work?ms=50",
                ][(n % 3) as usize];
                let req = Request::get(format!("{base}{path}"))
                    .body(Body::empty())
                    .unwrap();
                let call = async {
                    if let Ok(resp) = c.request(req).await {
                        let _ = resp.into_body().frame().await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(5 + n % 40), call).await;
                t.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Slow clients: headers a byte at a time, never finished; the header timeout ends them.
    for _ in 0..2 {
        let (t, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut held = Vec::new();
                for _ in 0..10 {
                    if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                        held.push(s);
                    }
                }
                for b in b"GET /v1/status HTTP/1.1\r\nHost: x\r\n".iter().take(20) {
                    for s in &mut held {
                        let _ = s.write_all(&[*b]).await;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                t.slow_clients
                    .fetch_add(held.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    // /healthz throughout, its latency kept.
    let health = {
        let stop = Arc::clone(&stop);
        let url = format!("{base}/healthz");
        tokio::spawn(async move {
            let c = pooled_client();
            let (mut lat, mut failed) = (Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let req = Request::get(url.as_str()).body(Body::empty()).unwrap();
                match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await {
                    Ok(Ok(r)) if r.status() == 200 => lat.push(t.elapsed()),
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (lat, failed)
        })
    };

    // Reloads every 2 s: good ones moving the pool's size, and bad ones that must be refused
    // with the old configuration kept.
    let (mut good_reloads, mut refused) = (0u32, 0u32);
    let bad: [&str; 4] = [
        "",
        "[server]\nlisten = 7\n",
        "[[pool]]\nname = \"gpu\"\nkind = \"vram\"\ngpu = 0\n",
        "[server]\ntoken = \" \"\n",
    ];
    let mut round = 0usize;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(2)).await;
        round += 1;
        if round.is_multiple_of(2) {
            let capacity = ["64MiB", "72MiB", "88MiB"][round % 3];
            r.reload(Config::parse(&config(capacity), "good.toml", None).unwrap())
                .await
                .expect("a good configuration is taken");
            good_reloads += 1;
        } else {
            let text = bad[round % bad.len()];
            // Parsed and reloaded as the daemon does on SIGHUP: refused at either step.
            match Config::parse(text, "bad.toml", None) {
                Err(_) => refused += 1,
                Ok(cfg) => {
                    assert!(r.reload(cfg).await.is_err(), "{text:?} was taken");
                    refused += 1;
                }
            }
        }
        assert_eq!(r.addr(), addr, "the address moved");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(HUNG * 2, t)
            .await
            .expect("a client task ended")
            .unwrap();
    }
    let (mut lat, health_failed) = health.await.unwrap();
    let st = status(&r).await;
    r.shutdown().await;
    drop((n1, n2, liar));
    // Connections closed by either side leave the tables within a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, fds1) = rss_and_fds();
    lat.sort();
    let pct = |p: usize| {
        lat.get((lat.len() * p / 100).min(lat.len().saturating_sub(1)))
            .copied()
    };
    let t = &tally;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak {secs} s: {} requests answered ({} 2xx, {} 4xx, {} 5xx), {} lost, {} hung, {} \
         abandoned by their client, {} slow clients; reloads: {good_reloads} taken, {refused} \
         refused; /healthz {} answers, {health_failed} failed, p50 {:?} p99 {:?} max {:?}; RSS \
         {} -> {} MiB, open files {fds0} -> {fds1}; evictions {}, upstream errors {}",
        get(&t.answered),
        get(&t.ok),
        get(&t.client_errors),
        get(&t.server_errors),
        get(&t.lost),
        get(&t.hung),
        get(&t.abandoned),
        get(&t.slow_clients),
        lat.len(),
        pct(50).unwrap_or_default(),
        pct(99).unwrap_or_default(),
        lat.last().copied().unwrap_or_default(),
        rss0 >> 20,
        rss1 >> 20,
        st["counters"]["evictions"],
        st["counters"]["upstream_errors"],
    );
    assert_eq!(get(&t.lost), 0, "requests lost");
    assert_eq!(get(&t.hung), 0, "requests hung");
    assert_eq!(health_failed, 0, "/healthz did not answer");
    assert!(get(&t.ok) > 0 && good_reloads > 0 && refused > 0);
    assert!(fds1 <= fds0 + 16, "open files grew: {fds0} -> {fds1}");
}
