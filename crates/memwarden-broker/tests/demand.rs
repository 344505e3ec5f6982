//! Demand-aware scheduling end to end: two real consumers that cannot share the pool, and
//! agents that keep going from one to the other.

mod common;

use common::*;

/// Four agents, each sending a request to a, then to b, and so on, as soon as the last was
/// answered; a and b cannot share the pool, each runs one request at a time, and b has the
/// higher priority. A swap per request would be 40 loads. Instead each load serves a batch: a,
/// just loaded with requests still queued for it, is kept for its `min_residency` rather than
/// evicted for b's newest request, however high b's priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_alternating_models_are_served_in_batches() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "32MiB", "normal");
    let b = TestConsumer::spawn("b", "32MiB", "normal");
    let toml = pool_toml("56MiB", "max_wait = \"20s\"\nmin_residency = \"3s\"")
        + &consumer_toml("a", a.port, "32MiB", "max_concurrent = 1")
        + &consumer_toml("b", b.port, "32MiB", "max_concurrent = 1\npriority = 1");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let mut agents = Vec::new();
    for k in 0..4 {
        let base = base.clone();
        // Half begin with a, half with b: the two are always asked for at once.
        let turn = if k % 2 == 0 { ["a", "b"] } else { ["b", "a"] };
        agents.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..5 {
                for name in turn {
                    let url = format!("{base}/c/{name}/work?ms=20");
                    let (code, body) = http_with(&c, "GET", &url, "", &[]).await;
                    assert_eq!(code, 200, "{name}: {body}");
                }
            }
        }));
    }
    for a in agents {
        a.await.unwrap();
    }
    let st = status(&r).await;
    let counters = &st["counters"];
    assert_eq!(counters["served"], 40, "{counters}");
    let loads = counters["loads"].as_u64().unwrap();
    // Ten phases at best (each agent has five requests for each); a swap per request is 40.
    assert!(loads <= 16, "{loads} loads for 40 requests: {counters}");
    r.shutdown().await;
}
