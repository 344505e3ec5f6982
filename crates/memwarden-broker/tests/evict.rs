//! Eviction end to end: a ram pool with room for one of two real consumers.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_then_b_then_a_evicts_and_reloads() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "96MiB", "normal");
    let b = TestConsumer::spawn("b", "96MiB", "normal");
    let toml = pool_toml("160MiB", "")
        + &consumer_toml("a", a.port, "96MiB", "")
        + &consumer_toml("b", b.port, "96MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());

    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "a ok loaded=true\n"));
    assert!(a.rss() > 90 << 20, "a holds its memory: {}", a.rss());

    let (code, body) = http("POST", format!("{base}/c/b/work?ms=5"), "").await;
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    // a was evicted, and its memory really came back before b was loaded.
    assert!(a.rss() < 40 << 20, "a gave its memory back: {}", a.rss());
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["state"], "unloaded");
    assert_eq!(consumer(&st, "b")["state"], "loaded");
    assert_eq!(st["counters"]["evictions"], 1);

    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "a ok loaded=true\n"));
    let st = status(&r).await;
    assert_eq!(consumer(&st, "b")["state"], "unloaded");
    assert_eq!(st["counters"]["evictions"], 2);
    assert_eq!(st["counters"]["loads"], 3);
    assert_eq!(st["counters"]["served"], 3);
    // The measurement replaces the declaration once loaded.
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["measured_bytes"].is_u64()
    })
    .await;
    assert!(consumer(&st, "a")["measured_bytes"].as_u64().unwrap() >= 96 << 20);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_is_evicted_by_unloading_each_model_it_has_loaded() {
    let _one = one_at_a_time().await;
    let o = TestConsumer::spawn("llama", "96MiB", "normal");
    let b = TestConsumer::spawn("b", "96MiB", "normal");
    let toml = pool_toml("160MiB", "")
        + &consumer_toml("o", o.port, "96MiB", "").replace("\"POST /unload\"", "\"ollama\"")
        + &consumer_toml("b", b.port, "96MiB", "");
    assert!(toml.contains("unload = \"ollama\""), "{toml}");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let (code, body) = http("GET", format!("{base}/c/o/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "llama ok loaded=true\n"));
    let (_, ps) = http("GET", format!("http://127.0.0.1:{}/api/ps", o.port), "").await;
    assert!(ps.contains("llama:latest"), "{ps}");
    // b needs o's room: /api/ps lists llama:latest, which is unloaded with keep_alive 0.
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    assert!(
        o.rss() < 40 << 20,
        "ollama gave its memory back: {}",
        o.rss()
    );
    let (_, ps) = http("GET", format!("http://127.0.0.1:{}/api/ps", o.port), "").await;
    assert_eq!(ps, r#"{"models":[]}"#);
    let st = status(&r).await;
    assert_eq!(consumer(&st, "o")["state"], "unloaded");
    assert_eq!(st["counters"]["evictions"], 1);
    assert_eq!(st["counters"]["unload_failures"], 0);
    // Ollama let its model go by itself (its keep_alive ran out): unloading it then asks
    // for nothing and succeeds.
    let (code, _) = http("GET", format!("{base}/c/o/work"), "").await;
    assert_eq!(code, 200);
    let unload = r#"{"model": "llama:latest", "keep_alive": 0}"#;
    let url = format!("http://127.0.0.1:{}/api/generate", o.port);
    assert_eq!(http("POST", url, unload).await.0, 200);
    let (code, body) = http("POST", format!("{base}/v1/consumers/o/unload"), "").await;
    assert_eq!(code, 202, "{body}");
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "o")["state"] == "unloaded"
    })
    .await;
    assert_eq!(st["counters"]["unload_failures"], 0);
    assert_eq!(st["counters"]["stuck"], 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_behind_a_forwarder_is_evicted_and_not_stuck() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "96MiB", "normal");
    let fwd = Forwarder::spawn("docker-proxy", a.port);
    assert_eq!(fwd.comm(), "docker-proxy");
    let b = TestConsumer::spawn("b", "96MiB", "normal");
    let machine = Machine::new(1 << 30, &[a.child.id(), fwd.child.id(), b.child.id()]);
    let toml = pool_toml("160MiB", "verify_timeout = \"5s\"")
        + &consumer_toml("a", fwd.port, "96MiB", "")
        + &consumer_toml("b", b.port, "96MiB", "");
    let r = start_on(&toml, machine.probe()).await;
    let base = format!("http://{}", r.addr());

    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "a ok loaded=true\n"));
    assert!(a.rss() > 90 << 20, "a holds its memory: {}", a.rss());
    // Once measured, the forwarder's few MiB do not stand in for a's size.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["resident_bytes"], 96u64 << 20, "{st:#}");

    // b needs a's room: a is evicted through the forwarder, and its memory coming back is
    // seen in the pool's free reading, though no process of a could be measured.
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    assert!(a.rss() < 40 << 20, "a gave its memory back: {}", a.rss());
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["state"], "unloaded", "{st:#}");
    assert_eq!(st["counters"]["stuck"], 0);
    assert_eq!(st["counters"]["evictions"], 1);

    // And the next request for a proceeds, evicting b in turn.
    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "a ok loaded=true\n"));
    let st = status(&r).await;
    assert_eq!(consumer(&st, "b")["state"], "unloaded", "{st:#}");
    assert_eq!(st["counters"]["evictions"], 2);
    assert_eq!(st["counters"]["stuck"], 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_workload_is_measured_behind_a_proxy_memwarden_does_not_know() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn_as("llama-server", "a", "96MiB", "normal");
    let relay = Forwarder::spawn("tcp-relay", a.port);
    let b = TestConsumer::spawn("b", "96MiB", "normal");
    let machine = Machine::new(1 << 30, &[a.child.id(), relay.child.id(), b.child.id()]);
    let toml = pool_toml("160MiB", "verify_timeout = \"5s\"")
        + &consumer_toml("a", relay.port, "64MiB", "workload = \"llama-server\"")
        + &consumer_toml("b", b.port, "96MiB", "");
    let r = start_on(&toml, machine.probe()).await;
    let base = format!("http://{}", r.addr());

    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "a ok loaded=true\n"));
    // Measured through the workload: the server's size, not the few MiB of the relay that
    // owns the port.
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["measured_bytes"].is_u64()
    })
    .await;
    let held = consumer(&st, "a")["measured_bytes"].as_u64().unwrap();
    assert!(held >= 96 << 20, "{st:#}");
    assert!(held < 160 << 20, "{st:#}");
    assert!(rss_of(relay.child.id()) < 32 << 20);

    // b needs a's room: a's eviction is verified by its own process letting go.
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    assert!(a.rss() < 40 << 20, "a gave its memory back: {}", a.rss());
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["state"], "unloaded", "{st:#}");
    assert_eq!(st["counters"]["stuck"], 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_just_loaded_is_not_counted_twice() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "64MiB", "normal");
    let b = TestConsumer::spawn("b", "64MiB", "normal");
    let toml = pool_toml("160MiB", "")
        + &consumer_toml("a", a.port, "64MiB", "")
        + &consumer_toml("b", b.port, "64MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    // b comes right after a's load, before any reading shows a: a's promise and what a holds
    // are the same memory, and both fit.
    let (code, _) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!(code, 200);
    let (code, _) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!(code, 200);
    let st = status(&r).await;
    assert_eq!(st["counters"]["evictions"], 0, "{st:#}");
    assert_eq!(consumer(&st, "a")["state"], "loaded", "{st:#}");
    assert_eq!(consumer(&st, "b")["state"], "loaded", "{st:#}");
    r.shutdown().await;
}
