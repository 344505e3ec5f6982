//! `priority` alone, end to end: of two requests queued behind a busy consumer, the one for
//! the consumer of the higher priority is admitted first, though it arrived last.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_higher_priority_goes_first_out_of_a_queue() {
    let _one = one_at_a_time().await;
    let busy = TestConsumer::spawn("busy", "32MiB", "normal");
    let low = TestConsumer::spawn("low", "32MiB", "normal");
    let high = TestConsumer::spawn("high", "32MiB", "normal");
    // Room for one of them; no request waits long enough to have its turn by age.
    let toml = pool_toml("56MiB", "max_wait = \"60s\"")
        + &consumer_toml("busy", busy.port, "32MiB", "")
        + &consumer_toml("low", low.port, "32MiB", "")
        + &consumer_toml("high", high.port, "32MiB", "priority = 5");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let work = |name: &str, ms: u64| {
        let url = format!("{base}/c/{name}/work?ms={ms}");
        tokio::spawn(async move {
            let answer = http("GET", url, "").await;
            (answer, Instant::now())
        })
    };
    // The pool is full, and its holder busy for a while.
    let busy_req = work("busy", 1500);
    wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "busy")["in_flight"] == 1
    })
    .await;
    // low queues first, high after it.
    let low_req = work("low", 10);
    wait_for(&r, Duration::from_secs(5), |st| {
        st["pools"][0]["queue_length"] == 1
    })
    .await;
    let high_req = work("high", 10);
    wait_for(&r, Duration::from_secs(5), |st| {
        st["pools"][0]["queue_length"] == 2
    })
    .await;
    assert_eq!(busy_req.await.unwrap().0.0, 200);
    let (low_answer, low_at) = low_req.await.unwrap();
    let (high_answer, high_at) = high_req.await.unwrap();
    assert_eq!(low_answer, (200, "low ok loaded=true\n".into()));
    assert_eq!(high_answer, (200, "high ok loaded=true\n".into()));
    assert!(high_at < low_at, "high was answered after low");
    let st = status(&r).await;
    // Each was loaded once: high, then low in its place.
    let loads: Vec<_> = ["busy", "low", "high"]
        .iter()
        .map(|n| consumer(&st, n)["loads"].clone())
        .collect();
    assert_eq!(loads, [1, 1, 1], "{st:#}");
    assert_eq!(consumer(&st, "low")["state"], "loaded");
    r.shutdown().await;
}
