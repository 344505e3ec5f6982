//! The broker end to end on this machine: a `ram` pool with a small capacity and real test
//! consumer processes that allocate their size on load and free it on unload.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coexisting_consumers_run_together() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "16MiB", "normal");
    let b = TestConsumer::spawn("b", "16MiB", "normal");
    let toml = pool_toml("256MiB", "")
        + &consumer_toml("a", a.port, "16MiB", "coexist_with = [\"b\"]")
        + &consumer_toml("b", b.port, "16MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    // Both loaded first, then one slow request each: together they take one slow time.
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    assert_eq!(http("GET", format!("{base}/c/b/work"), "").await.0, 200);
    let t = Instant::now();
    let (ra, rb) = tokio::join!(
        http("GET", format!("{base}/c/a/work?ms=600"), ""),
        http("GET", format!("{base}/c/b/work?ms=600"), "")
    );
    assert_eq!((ra.0, rb.0), (200, 200));
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1100),
        "ran one after the other: {took:?}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_that_may_not_coexist_never_run_at_once() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "16MiB", "normal");
    let b = TestConsumer::spawn("b", "16MiB", "normal");
    // Room for both, but no coexistence: the GPU lock, made precise.
    let toml = pool_toml("256MiB", "")
        + &consumer_toml("a", a.port, "16MiB", "")
        + &consumer_toml("b", b.port, "16MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    assert_eq!(http("GET", format!("{base}/c/b/work"), "").await.0, 200);
    let t = Instant::now();
    let (ra, rb) = tokio::join!(
        http("GET", format!("{base}/c/a/work?ms=400"), ""),
        http("GET", format!("{base}/c/b/work?ms=400"), "")
    );
    assert_eq!((ra.0, rb.0), (200, 200));
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    // Both fit, so neither was evicted.
    assert_eq!(status(&r).await["counters"]["evictions"], 0);
    r.shutdown().await;
}

/// Raises the open-file limit to the hard limit: 500 clients and their proxied connections
/// all live in this one test process.
fn more_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_all_get_an_answer() {
    let _one = one_at_a_time().await;
    more_files();
    let names = ["a", "b", "c"];
    let consumers: Vec<TestConsumer> = names
        .iter()
        .map(|n| TestConsumer::spawn(n, "24MiB", "normal"))
        .collect();
    // Room for one at a time; a queue shorter than the burst, so some are refused cleanly.
    let mut toml = pool_toml("48MiB", "max_queue = 300\nmax_wait = \"20s\"");
    for (n, c) in names.iter().zip(&consumers) {
        toml += &consumer_toml(n, c.port, "24MiB", "");
    }
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let client = Arc::new(client());
    let mut tasks = Vec::new();
    for i in 0..500 {
        let url = format!("{base}/c/{}/work?ms=1", names[(i * 7 + i / 13) % 3]);
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            http_with(&client, "GET", &url, "", &[]).await
        }));
    }
    let (mut ok, mut busy) = (0u64, 0u64);
    for t in tasks {
        let (code, body) = tokio::time::timeout(Duration::from_secs(90), t)
            .await
            .expect("no request hangs")
            .unwrap();
        match code {
            200 => ok += 1,
            503 => {
                assert!(body.contains("queue") || body.contains("waited"), "{body}");
                busy += 1;
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert_eq!(ok + busy, 500);
    assert!(ok >= 200, "most requests are served: {ok}");
    let st = status(&r).await;
    let c = &st["counters"];
    eprintln!("500 requests: {ok} served, {busy} refused; counters {c}");
    assert_eq!(c["served"].as_u64().unwrap(), ok);
    assert_eq!(c["rejected"].as_u64().unwrap(), busy);
    assert_eq!(
        c["loads"].as_u64().unwrap(),
        c["evictions"].as_u64().unwrap() + 1
    );
    for p in st["pools"].as_array().unwrap() {
        assert_eq!(p["queue_length"], 0);
    }
    for n in names {
        assert_eq!(consumer(&st, n)["in_flight"], 0);
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_keeps_its_memory_after_unload_is_stuck() {
    let _one = one_at_a_time().await;
    let liar = TestConsumer::spawn("liar", "64MiB", "lying");
    let b = TestConsumer::spawn("b", "64MiB", "normal");
    let toml = pool_toml("112MiB", "verify_timeout = \"500ms\"\nmax_wait = \"2s\"")
        + &consumer_toml("liar", liar.port, "64MiB", "")
        + &consumer_toml("b", b.port, "64MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/liar/work"), "").await.0, 200);
    // b needs liar's room; liar says it unloaded but keeps the memory: it is marked stuck, and
    // b waits for the room rather than being told it can never fit.
    let t = Instant::now();
    let queued = tokio::spawn(get_retry_after(format!("{base}/c/b/work")));
    wait_for(&r, Duration::from_secs(3), |st| {
        consumer(st, "liar")["state"] == "stuck"
    })
    .await;
    // liar still holds its memory and its server answers: its own requests are served
    // meanwhile, though b has waited more than a quarter of max_wait.
    tokio::time::sleep_until((t + Duration::from_millis(600)).into()).await;
    let asked = Instant::now();
    let (code, body) = http("GET", format!("{base}/c/liar/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "liar ok loaded=false\n"));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(status(&r).await["pools"][0]["queue_length"], 1);
    // b's wait ends at max_wait, with a 503 that says who holds the room and how much.
    let (code, retry, body) = queued.await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert!(
        body.contains("stuck") && body.contains("\\\"liar\\\" holds "),
        "{body}"
    );
    assert!(body.contains("MiB"), "{body}");
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    let st = status(&r).await;
    assert_eq!(consumer(&st, "liar")["state"], "stuck");
    assert_eq!(consumer(&st, "b")["state"], "unloaded");
    assert_eq!(st["counters"]["stuck"], 1);
    assert_eq!(st["counters"]["evictions"], 0);
    assert_eq!(st["counters"]["rejected_never_fits"], 0);
    assert_eq!(st["counters"]["rejected_timeout"], 1);
    assert!(liar.rss() > 60 << 20, "the liar still holds its memory");
    // Retrying its unload is done for real, and says that the memory stayed.
    let (code, body) = http("POST", format!("{base}/v1/consumers/liar/unload"), "").await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("still holds"), "{body}");
    let st = status(&r).await;
    assert_eq!(consumer(&st, "liar")["state"], "stuck");
    assert_eq!(st["counters"]["stuck"], 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_the_unload_of_a_stuck_consumer_frees_its_room() {
    let _one = one_at_a_time().await;
    let s = TestConsumer::spawn("s", "64MiB", "stubborn");
    let b = TestConsumer::spawn("b", "64MiB", "normal");
    let toml = pool_toml("112MiB", "verify_timeout = \"500ms\"\nmax_wait = \"10s\"")
        + &consumer_toml("s", s.port, "64MiB", "")
        + &consumer_toml("b", b.port, "64MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/s/work"), "").await.0, 200);
    let t = Instant::now();
    let queued = tokio::spawn(http("GET", format!("{base}/c/b/work"), ""));
    wait_for(&r, Duration::from_secs(3), |st| {
        consumer(st, "s")["state"] == "stuck"
    })
    .await;
    assert!(s.rss() > 60 << 20, "s kept its memory: {}", s.rss());
    // The retry calls its unload route again; this time the memory comes back.
    let (code, body) = http("POST", format!("{base}/v1/consumers/s/unload"), "").await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("gave its memory back"), "{body}");
    assert!(s.rss() < 40 << 20, "s gave its memory back: {}", s.rss());
    // b, which waited for that room, loads.
    let (code, body) = queued.await.unwrap();
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let st = status(&r).await;
    assert_eq!(consumer(&st, "s")["state"], "unloaded");
    assert_eq!(st["counters"]["stuck"], 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_consumers_unload_is_retried_by_itself_while_a_request_waits() {
    let _one = one_at_a_time().await;
    let s = TestConsumer::spawn("s", "64MiB", "stubborn");
    let b = TestConsumer::spawn("b", "64MiB", "normal");
    let toml = pool_toml(
        "112MiB",
        "verify_timeout = \"500ms\"\nmax_wait = \"10s\"\nstuck_retry = \"1s\"",
    ) + &consumer_toml("s", s.port, "64MiB", "")
        + &consumer_toml("b", b.port, "64MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/s/work"), "").await.0, 200);
    let t = Instant::now();
    // b needs s's room; s keeps its memory on the first unload and is stuck; a second later
    // its unload is retried, this time it lets go, and b loads — long before max_wait.
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(s.rss() < 40 << 20, "s gave its memory back: {}", s.rss());
    let st = status(&r).await;
    assert_eq!(consumer(&st, "s")["state"], "unloaded");
    assert_eq!(st["counters"]["stuck"], 1);
    assert_eq!(st["counters"]["evictions"], 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_request_is_a_502_and_others_keep_being_served() {
    let _one = one_at_a_time().await;
    let crash = TestConsumer::spawn("crash", "8MiB", "crash");
    let ok = TestConsumer::spawn("ok", "8MiB", "normal");
    let toml = pool_toml("256MiB", "")
        + &consumer_toml("crash", crash.port, "8MiB", "coexist_with = [\"ok\"]")
        + &consumer_toml("ok", ok.port, "8MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let (code, body) = http("GET", format!("{base}/c/crash/work"), "").await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("crash"), "{body}");
    for _ in 0..3 {
        assert_eq!(http("GET", format!("{base}/c/ok/work"), "").await.0, 200);
    }
    // The broker sees the upstream is gone and stops counting it as loaded.
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "crash")["state"] == "unloaded"
    })
    .await;
    assert!(st["counters"]["upstream_errors"].as_u64().unwrap() >= 1);
    // A new request for it fails cleanly (its load route is down) and does not hang.
    let (code, body) = http("GET", format!("{base}/c/crash/work"), "").await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("loading \\\"crash\\\" failed"), "{body}");
    assert!(
        http("GET", format!("http://{}/healthz", r.addr()), "")
            .await
            .0
            == 200
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_while_queued_frees_its_place() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "16MiB", "normal");
    let b = TestConsumer::spawn("b", "16MiB", "normal");
    let toml = pool_toml("256MiB", "max_queue = 1")
        + &consumer_toml("a", a.port, "16MiB", "")
        + &consumer_toml("b", b.port, "16MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    // a runs a long request; b may not run beside it, so a request for b queues.
    let long = tokio::spawn(http("GET", format!("{base}/c/a/work?ms=3000"), ""));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = tokio::spawn(http("GET", format!("{base}/c/b/work"), ""));
    wait_for(&r, Duration::from_secs(2), |st| {
        st["pools"][0]["queue_length"] == 1
    })
    .await;
    // The queue is full (max_queue = 1): another is refused at once.
    let (code, _) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!(code, 503);
    // The queued client goes away; its place is free at once, long before a finishes.
    queued.abort();
    let st = wait_for(&r, Duration::from_secs(2), |st| {
        st["pools"][0]["queue_length"] == 0
    })
    .await;
    assert_eq!(st["counters"]["cancelled"], 1);
    let (code, _) = tokio::time::timeout(Duration::from_secs(10), long)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_can_never_fit_fails_at_once() {
    let _one = one_at_a_time().await;
    let big = TestConsumer::spawn("big", "1MiB", "normal");
    let toml = pool_toml("64MiB", "") + &consumer_toml("big", big.port, "1GiB", "");
    let r = start(&toml).await;
    let t = Instant::now();
    let (code, body) = http("GET", format!("http://{}/c/big/work", r.addr()), "").await;
    assert_eq!(code, 507, "{body}");
    assert!(body.contains("short"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(1));
    let st = status(&r).await;
    assert_eq!(st["counters"]["loads"], 0);
    assert_eq!(st["counters"]["rejected_never_fits"], 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_consumer_does_not_starve_another() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "32MiB", "normal");
    let b = TestConsumer::spawn("b", "32MiB", "normal");
    // Room for one; max_wait 4 s, so aging starts after 1 s.
    let toml = pool_toml("56MiB", "max_wait = \"4s\"")
        + &consumer_toml("a", a.port, "32MiB", "")
        + &consumer_toml("b", b.port, "32MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    // Eight clients keep a busy without a pause: a is always runnable and always in use.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut burst = Vec::new();
    // Staggered, so that some request of a is always in flight.
    for _ in 0..8 {
        let (stop, url) = (Arc::clone(&stop), format!("{base}/c/a/work?ms=100"));
        tokio::time::sleep(Duration::from_millis(12)).await;
        burst.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, _) = http_with(&c, "GET", &url, "", &[]).await;
                assert!(code == 200 || code == 503, "{code}");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    let waited = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in burst {
        t.await.unwrap();
    }
    assert_eq!(code, 200, "{body}");
    // b waited for its turn (a quarter of max_wait), not for the burst to end or max_wait.
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    r.shutdown().await;
}

/// Two clients of a that each send their next request as soon as the last is answered: a has
/// a gap now and then, when neither has a request out. A request for b must not evict a at
/// such a gap (the pool would swap at every one, a load per request, while both sides have
/// clients); it waits until a goes idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_both_sides_do_not_make_the_pool_swap_at_every_gap() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "32MiB", "normal");
    let b = TestConsumer::spawn("b", "32MiB", "normal");
    // Room for one; aging only after 5 s.
    let toml = pool_toml("56MiB", "max_wait = \"20s\"")
        + &consumer_toml("a", a.port, "32MiB", "")
        + &consumer_toml("b", b.port, "32MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    let until = Instant::now() + Duration::from_millis(1500);
    let mut clients = Vec::new();
    for _ in 0..2 {
        let url = format!("{base}/c/a/work?ms=3");
        clients.push(tokio::spawn(async move {
            let c = client();
            let mut served = 0;
            while Instant::now() < until {
                let (code, body) = http_with(&c, "GET", &url, "", &[]).await;
                assert_eq!(code, 200, "{body}");
                served += 1;
            }
            served
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    let answered = Instant::now();
    assert_eq!(code, 200, "{body}");
    let mut served = 0;
    for c in clients {
        served += c.await.unwrap();
    }
    assert!(served > 20, "a's clients were served meanwhile: {served}");
    // b ran once a's clients had stopped and a had been idle for a second.
    let st = status(&r).await;
    assert!(
        answered >= until + Duration::from_millis(900),
        "b answered {:?} before a's clients stopped + 900ms; {}",
        (until + Duration::from_millis(900)).saturating_duration_since(answered),
        st
    );
    assert_eq!(st["counters"]["loads"], 2, "{}", st["counters"]);
    assert_eq!(st["counters"]["evictions"], 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_consumer_is_trusted_again_once_its_memory_comes_back() {
    let _one = one_at_a_time().await;
    let slow = TestConsumer::spawn("slow", "64MiB", "slow");
    let b = TestConsumer::spawn("b", "64MiB", "normal");
    let toml = pool_toml("112MiB", "verify_timeout = \"500ms\"\nmax_wait = \"10s\"")
        + &consumer_toml("slow", slow.port, "64MiB", "")
        + &consumer_toml("b", b.port, "64MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/slow/work"), "").await.0, 200);
    // Its memory comes back after the verify timeout: stuck meanwhile, and b waits.
    let queued = tokio::spawn(http("GET", format!("{base}/c/b/work"), ""));
    wait_for(&r, Duration::from_secs(3), |st| {
        consumer(st, "slow")["state"] == "stuck"
    })
    .await;
    // The sampler sees the memory come back and trusts it again; b then loads.
    let (code, body) = queued.await.unwrap();
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    let st = status(&r).await;
    assert_eq!(consumer(&st, "slow")["state"], "unloaded");
    assert_eq!(st["counters"]["stuck"], 1);
    r.shutdown().await;
}
