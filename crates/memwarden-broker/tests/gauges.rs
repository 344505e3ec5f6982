//! The gauges a router reads on `/metrics` (the Model Server Protocol's requests waiting and
//! running, whether a model is resident, how long it took to load) follow what the broker does.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The value of the sample `series` (name and labels exactly as exported), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

async fn metrics(base: &str) -> String {
    let (code, text) = http("GET", format!("{base}/metrics"), "").await;
    assert_eq!(code, 200, "{text}");
    text
}

/// Polls `/metrics` until `pred` holds, for at most 10 s; every exposition seen must pass
/// promtool.
async fn metrics_until(base: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(base).await;
        if pred(&text) {
            promtool(&text);
            return text;
        }
        assert!(Instant::now() < deadline, "{what} not seen in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state(consumer: &str, st: &str) -> String {
    format!("memwarden_consumer_state{{consumer=\"{consumer}\",pool=\"ram\",state=\"{st}\"}}")
}

fn per_consumer(name: &str, consumer: &str) -> String {
    format!("{name}{{consumer=\"{consumer}\",pool=\"ram\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_running_and_residency_follow_the_broker() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let toml = pool_toml("64MiB", "") + &consumer_toml("a", a.port, "8MiB", "max_concurrent = 1");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let waiting = per_consumer("memwarden_consumer_requests_waiting", "a");
    let running = per_consumer("memwarden_consumer_requests_running", "a");
    let last_load = per_consumer("memwarden_consumer_last_load_seconds", "a");

    // Not loaded: a router sees the state as a 1 on "unloaded", every other state a 0, and no
    // load time yet.
    let text = metrics(&base).await;
    promtool(&text);
    for st in ["loaded", "loading", "unloading", "stuck"] {
        assert_eq!(sample(&text, &state("a", st)), Some(0.0), "{st}: {text}");
    }
    assert_eq!(sample(&text, &state("a", "unloaded")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &waiting), Some(0.0));
    assert_eq!(sample(&text, &running), Some(0.0));
    assert_eq!(sample(&text, &last_load), None);

    // Two requests of 2 s on a consumer that runs one at a time: one runs, one waits.
    let url = format!("{base}/c/a/work?ms=2000");
    let both =
        tokio::spawn(async move { tokio::join!(http("GET", &url, ""), http("GET", &url, "")) });
    let text = metrics_until(&base, "one running and one waiting", |t| {
        sample(t, &running) == Some(1.0) && sample(t, &waiting) == Some(1.0)
    })
    .await;
    assert_eq!(sample(&text, &state("a", "loaded")), Some(1.0), "{text}");
    let load = sample(&text, &last_load).expect("a load time once loaded");
    assert!((0.0..10.0).contains(&load), "{load}");
    let (x, y) = both.await.unwrap();
    assert_eq!((x.0, y.0), (200, 200));
    metrics_until(&base, "nothing waiting or running", |t| {
        sample(t, &running) == Some(0.0) && sample(t, &waiting) == Some(0.0)
    })
    .await;

    // Unloaded by an operator: no longer resident.
    let (code, body) = http("POST", format!("{base}/v1/consumers/a/unload"), "").await;
    assert_eq!(code, 202, "{body}");
    metrics_until(&base, "unloaded", |t| {
        sample(t, &state("a", "unloaded")) == Some(1.0)
            && sample(t, &state("a", "loaded")) == Some(0.0)
    })
    .await;
    r.shutdown().await;
}
