//! The HTTP API end to end: leases, admin actions, metrics, auth, streaming, bad input,
//! consumers the broker starts itself, idle unloads and reload.

mod common;

use std::time::{Duration, Instant};

use common::*;
use memwarden_broker::Config;
use memwarden_broker::client::BrokerClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_hold_a_consumer_and_end_when_given_back_or_expired() {
    let a = TestConsumer::spawn("a", "16MiB", "normal");
    let b = TestConsumer::spawn("b", "16MiB", "normal");
    let toml = pool_toml("256MiB", "max_wait = \"1s\"")
        + &consumer_toml("a", a.port, "16MiB", "")
        + &consumer_toml("b", b.port, "16MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let client = BrokerClient::new(&base, None).unwrap();
    let id = client
        .take_lease("a", Duration::from_secs(60))
        .await
        .unwrap();
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["state"], "loaded");
    assert_eq!(consumer(&st, "a")["in_flight"], 1);
    // While a's lease runs, b (which may not run beside a) waits its max_wait, then 503.
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\\\"a\\\" was running work"), "{body}");
    client.give_back(&id).await.unwrap();
    assert_eq!(http("GET", format!("{base}/c/b/work"), "").await.0, 200);
    // Giving back twice is harmless; an unknown id is a clear 404.
    client.give_back(&id).await.unwrap();
    let (code, body) = http("DELETE", format!("{base}/v1/leases/nope"), "").await;
    assert_eq!(code, 404, "{body}");

    // A lease ends by itself at its ttl.
    let (code, body) = http(
        "POST",
        format!("{base}/v1/leases"),
        r#"{"consumer":"a","ttl":"300ms"}"#,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    wait_for(&r, Duration::from_secs(3), |st| {
        consumer(st, "a")["in_flight"] == 0
    })
    .await;

    // Malformed lease bodies.
    for bad in [
        "not json",
        r#"{"consumer":"a"}"#,
        r#"{"consumer":"a","ttl":"soon"}"#,
        r#"{"consumer":"a","ttl":0}"#,
        r#"{"consumer":"a","ttl":5,"extra":1}"#,
    ] {
        let (code, body) = http("POST", format!("{base}/v1/leases"), bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    let (code, body) = http(
        "POST",
        format!("{base}/v1/leases"),
        r#"{"consumer":"zz","ttl":5}"#,
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("a, b"), "{body}");
    r.shutdown().await;
}

/// The leases the broker holds, from `GET /v1/leases`.
async fn leases(base: &str) -> Vec<serde_json::Value> {
    let (code, body) = http("GET", format!("{base}/v1/leases"), "").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["leases"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_leases_outlive_their_ttl_and_hold_the_consumer() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let toml = pool_toml("256MiB", "") + &consumer_toml("a", a.port, "8MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let client = BrokerClient::new(&base, None).unwrap();
    let id = client
        .take_lease("a", Duration::from_secs(1))
        .await
        .unwrap();
    // Renewed (with its own ttl) every 300 ms for 2 s: twice its ttl, and still held.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let granted = client.renew_lease(&id, None).await.unwrap();
        assert_eq!(granted, Duration::from_secs(1));
    }
    let held = leases(&base).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["id"], id.as_str());
    assert_eq!(held[0]["consumer"], "a");
    assert_eq!(consumer(&status(&r).await, "a")["in_flight"], 1);
    // A renewal may ask for another ttl, as a number or as a duration.
    let (code, body) = http(
        "POST",
        format!("{base}/v1/leases/{id}/renew"),
        r#"{"ttl":"10m"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["consumer"], "a");
    assert_eq!(v["ttl_seconds"], 600.0);
    let left = leases(&base).await[0]["expires_in_seconds"]
        .as_f64()
        .unwrap();
    assert!(left > 590.0, "{left}");
    // Without renewals it ends at its ttl.
    assert_eq!(
        client
            .renew_lease(&id, Some(Duration::from_millis(300)))
            .await
            .unwrap(),
        Duration::from_millis(300)
    );
    wait_for(&r, Duration::from_secs(3), |st| {
        consumer(st, "a")["in_flight"] == 0
    })
    .await;
    assert!(matches!(
        client.renew_lease(&id, None).await,
        Err(memwarden_broker::client::RenewError::Gone(_))
    ));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_an_unknown_lease_or_with_a_bad_body_is_refused() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let toml = pool_toml("256MiB", "") + &consumer_toml("a", a.port, "8MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let (code, body) = http("POST", format!("{base}/v1/leases/nope/renew"), "").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no lease \\\"nope\\\""), "{body}");
    // An id with control characters is not echoed raw.
    let (code, body) = http("POST", format!("{base}/v1/leases/a%1B%5B2J/renew"), "").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no lease \\\"a [2J\\\""), "{body}");

    let client = BrokerClient::new(&base, None).unwrap();
    let id = client
        .take_lease("a", Duration::from_secs(60))
        .await
        .unwrap();
    let url = format!("{base}/v1/leases/{id}/renew");
    for (bad, says) in [
        ("not json", "a renewal body"),
        (r#"{"ttl":"soon"}"#, "bad ttl"),
        (r#"{"ttl":0}"#, "at most a week"),
        (r#"{"ttl":"8d"}"#, "at most a week"),
        (r#"{"ttl":-1}"#, "a renewal body"),
        (r#"{"ttl":0.5}"#, "a renewal body"),
        (r#"{"ttl":5,"extra":1}"#, "extra"),
        ("null", "a renewal body"),
    ] {
        let (code, body) = http("POST", &url, bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains(says), "{bad}: {body}");
    }
    // A bad renewal leaves the lease as it was; an empty one (or `{}`) keeps its ttl.
    for ok in ["", "{}", r#"{"ttl":null}"#] {
        let (code, body) = http("POST", &url, ok).await;
        assert_eq!(code, 200, "{ok:?}: {body}");
        assert!(body.contains("\"ttl_seconds\":60.0"), "{ok:?}: {body}");
    }
    client.give_back(&id).await.unwrap();
    let (code, body) = http("POST", &url, "").await;
    assert_eq!(code, 404, "{body}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_answers_and_the_daemon_keeps_running() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    // b's upstream is a port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let toml = pool_toml("256MiB", "")
        + &consumer_toml("a", a.port, "8MiB", "coexist_with = [\"b\"]")
        + &format!(
            "[[consumer]]\nname = \"b\"\npool = \"ram\"\nresident = \"8MiB\"\nupstream = \"http://127.0.0.1:{dead_port}\"\n"
        );
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let (code, body) = http("GET", format!("{base}/c/nobody/x"), "").await;
    assert_eq!(code, 404);
    assert!(
        body.contains("unknown consumer \\\"nobody\\\" (consumers: a, b)"),
        "{body}"
    );
    let (code, body) = http("GET", format!("{base}/c/b/x"), "").await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains(&dead_port.to_string()), "{body}");
    let (code, _) = http("GET", format!("{base}/nothing/here"), "").await;
    assert_eq!(code, 404);
    let (code, body) = http("POST", format!("{base}/v1/consumers/nobody/unload"), "").await;
    assert_eq!(code, 404, "{body}");
    // Still serving.
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    assert_eq!(http("GET", format!("{base}/healthz"), "").await.0, 200);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_streams_both_ways() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let toml = pool_toml("256MiB", "") + &consumer_toml("a", a.port, "8MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    // Server-sent events arrive as they are sent, and the consumer is in use meanwhile.
    let (code, body) = http("GET", format!("{base}/c/a/stream?n=5"), "").await;
    assert_eq!(code, 200);
    assert_eq!(body.matches("data: a ").count(), 5, "{body}");
    let (code, body) = http("GET", format!("{base}/c/a/forwarded-for"), "").await;
    assert_eq!((code, body.as_str()), (200, "127.0.0.1"));
    // The path goes upstream as the client wrote it, escapes and all.
    let (code, body) = http("GET", format!("{base}/c/a/path/a%20b%2Fc?x=1&y=%20"), "").await;
    assert_eq!((code, body.as_str()), (200, "/path/a%20b%2Fc?x=1&y=%20"));
    let (code, body) = http("GET", format!("{base}/c/a?q=1"), "").await;
    assert_eq!((code, body.as_str()), (200, "/?q=1"));
    // Dot segments resolve inside the consumer's path space, and never climb out of it.
    let (code, body) = http("GET", format!("{base}/c/a/x/../path/./b"), "").await;
    assert_eq!((code, body.as_str()), (200, "/path/b"));
    for escape in [
        "/c/a/x/../../admin",
        "/c/a/%2e%2e/admin",
        "/c/a/..%2F..%2Fadmin",
    ] {
        let (code, body) = http("GET", format!("{base}{escape}"), "").await;
        assert_eq!(code, 400, "{escape}: {body}");
    }
    let big = "x".repeat(3 << 20);
    let (code, body) = http("POST", format!("{base}/c/a/echo"), &big).await;
    assert_eq!(code, 200);
    assert_eq!(body.len(), big.len());
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["in_flight"], 0);
    assert_eq!(st["counters"]["served"], 6);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_answer_gets_a_504_and_gives_its_turn_back() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let toml = pool_toml("256MiB", "")
        + &consumer_toml("a", a.port, "8MiB", "response_timeout = \"300ms\"");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let t = std::time::Instant::now();
    let (code, body) = http("GET", format!("{base}/c/a/work?ms=5000"), "").await;
    assert_eq!(code, 504, "{body}");
    assert!(
        body.contains("did not start answering within 300ms (its response_timeout)"),
        "{body}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(3));
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["in_flight"], 0, "{st:#}");
    // Only the start of an answer is bounded: a stream runs past the timeout.
    let (code, body) = http("GET", format!("{base}/c/a/stream?n=50"), "").await;
    assert_eq!(code, 200);
    assert_eq!(body.matches("data: a ").count(), 50);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_requests_go_to_the_consumer_their_model_names() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let b = TestConsumer::spawn("b", "8MiB", "normal");
    let toml = pool_toml("256MiB", "")
        + &consumer_toml(
            "a",
            a.port,
            "8MiB",
            "coexist_with = [\"b\"]\nmodels = [\"llama3:8b\", \"llama3\"]",
        )
        + &consumer_toml("b", b.port, "8MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let chat = r#"{"model": "llama3:8b", "messages": [{"role": "user", "content": "hi"}]}"#;
    let (code, body) = http("POST", format!("{base}/v1/chat/completions"), chat).await;
    assert_eq!(
        (code, body),
        (200, format!("a /v1/chat/completions {chat}"))
    );
    // By the consumer's own name too, with the query kept.
    let (code, body) = http(
        "POST",
        format!("{base}/v1/embeddings?x=1"),
        r#"{"model":"b"}"#,
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (200, r#"b /v1/embeddings?x=1 {"model":"b"}"#)
    );
    let (code, body) = http(
        "POST",
        format!("{base}/v1/completions"),
        r#"{"model":"qwen"}"#,
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains("no consumer serves model \\\"qwen\\\" (models: llama3:8b, llama3, b)"),
        "{body}"
    );
    for bad in ["", "not json", r#"{"messages": []}"#, r#"{"model": 7}"#] {
        let (code, body) = http("POST", format!("{base}/v1/chat/completions"), bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("routed by the \\\"model\\\""), "{body}");
    }
    let (code, body) = http("GET", format!("{base}/v1/models"), "").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = (v["data"].as_array().unwrap().iter())
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["llama3:8b", "llama3", "b"]);
    // The broker's own routes under /v1 stay its own.
    assert_eq!(http("POST", format!("{base}/v1/status"), "{}").await.0, 405);
    let st = status(&r).await;
    assert_eq!(st["counters"]["served"], 2);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_healthz() {
    let toml = "[server]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n";
    let r = start(toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/v1/status"), "").await.0, 401);
    // Refused before the consumer is looked up: a 404 would list the consumers.
    assert_eq!(http("GET", format!("{base}/c/nobody/x"), "").await.0, 401);
    let chat = r#"{"model": "nobody"}"#;
    assert_eq!(
        http("POST", format!("{base}/v1/chat/completions"), chat)
            .await
            .0,
        401
    );
    assert_eq!(http("GET", format!("{base}/v1/models"), "").await.0, 401);
    assert_eq!(http("GET", format!("{base}/metrics"), "").await.0, 401);
    assert_eq!(http("GET", format!("{base}/healthz"), "").await.0, 200);
    let c = client();
    let (code, _) = http_with(
        &c,
        "GET",
        &format!("{base}/v1/status"),
        "",
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(code, 401);
    let (code, _) = http_with(
        &c,
        "GET",
        &format!("{base}/v1/status"),
        "",
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(code, 200);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let toml = pool_toml("256MiB", "") + &consumer_toml("a", a.port, "8MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    let (code, text) = http("GET", format!("{base}/metrics"), "").await;
    assert_eq!(code, 200);
    for name in [
        "memwarden_broker_evictions_total 0",
        "memwarden_broker_loads_total 1",
        "memwarden_broker_requests_served_total 1",
        "memwarden_pool_total_bytes{pool=\"ram\",kind=\"ram\"} 268435456",
        "memwarden_consumer_state{consumer=\"a\",pool=\"ram\",state=\"loaded\"} 1",
        "memwarden_host_memory_total_bytes ",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    r.shutdown().await;
    promtool(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_the_broker_starts_is_stopped_to_make_room() {
    // Ports for processes the broker starts must be known ahead: take free ones.
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let mut toml = pool_toml("112MiB", "");
    for (name, port) in ["p", "q"].iter().zip(&ports) {
        toml += &format!(
            "[[consumer]]\nname = \"{name}\"\npool = \"ram\"\nresident = \"64MiB\"\n\
             upstream = \"http://127.0.0.1:{port}\"\nhealth = \"GET /health\"\n\
             start = [\"{BIN}\", \"--size\", \"64MiB\", \"--loaded\", \"--port\", \"{port}\", \"--name\", \"{name}\"]\n\
             stop_timeout = \"2s\"\n"
        );
    }
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let (code, body) = http("GET", format!("{base}/c/p/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "p ok loaded=true\n"));
    let (code, body) = http("GET", format!("{base}/c/q/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "q ok loaded=true\n"));
    let st = status(&r).await;
    assert_eq!(consumer(&st, "p")["state"], "unloaded");
    assert_eq!(st["counters"]["evictions"], 1);
    // p's process is gone: its port is free again.
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports[0])).is_err());
    r.shutdown().await;
    // Stopping the broker stops the processes it started.
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports[1])).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumers_unload_and_admin_actions_work() {
    let a = TestConsumer::spawn("a", "32MiB", "normal");
    let b = TestConsumer::spawn("b", "32MiB", "normal");
    let toml = pool_toml("256MiB", "")
        + &consumer_toml("a", a.port, "32MiB", "idle_ttl = \"500ms\"")
        + &consumer_toml("b", b.port, "32MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    let t = Instant::now();
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["state"] == "unloaded"
    })
    .await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(st["counters"]["idle_unloads"], 1);
    assert!(a.rss() < 28 << 20);
    // Admin load and unload.
    let (code, body) = http("POST", format!("{base}/v1/consumers/b/load"), "").await;
    assert_eq!(code, 200, "{body}");
    assert!(b.rss() > 30 << 20);
    let (code, body) = http("POST", format!("{base}/v1/consumers/b/unload"), "").await;
    assert_eq!(code, 202, "{body}");
    wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "b")["state"] == "unloaded"
    })
    .await;
    r.shutdown().await;
}

/// Once a consumer is loaded and nothing waits, its requests pass the owner's gate (the fast
/// path); that work must hold it as firmly as work the owner granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_on_the_fast_path_holds_its_consumer() {
    let a = TestConsumer::spawn("a", "32MiB", "normal");
    let b = TestConsumer::spawn("b", "32MiB", "normal");
    // Room for one: b needs a evicted.
    let toml = pool_toml("48MiB", "")
        + &consumer_toml("a", a.port, "32MiB", "idle_ttl = \"300ms\"")
        + &consumer_toml("b", b.port, "32MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    let long = tokio::spawn(http("GET", format!("{base}/c/a/work?ms=1500"), ""));
    // Past a's idle ttl while its request runs: counted in flight, and not unloaded.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["in_flight"], 1);
    assert_eq!(consumer(&st, "a")["state"], "loaded");
    // b waits for a's request to end before a is evicted.
    let t = Instant::now();
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!(code, 200, "{body}");
    assert!(long.is_finished(), "b ran before a's request ended");
    assert_eq!(long.await.unwrap().0, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    let st = status(&r).await;
    assert_eq!(st["counters"]["served"], 3);
    assert_eq!(st["counters"]["evictions"], 1);
    assert_eq!(st["counters"]["idle_unloads"], 0);
    assert_eq!(consumer(&st, "a")["in_flight"], 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_state_and_refuses_a_bad_config() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let toml = pool_toml("256MiB", "") + &consumer_toml("a", a.port, "8MiB", "");
    let mut r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    // A bad file never gets as far as the broker.
    assert!(
        Config::parse(
            &(toml.clone() + "[[pool]]\nname = \"ram\"\nkind = \"ram\"\n"),
            "t",
            None
        )
        .is_err()
    );
    // A good one with a second consumer: a keeps its state, the new one is reachable.
    let b = TestConsumer::spawn("b", "8MiB", "normal");
    let new = toml + &consumer_toml("b", b.port, "8MiB", "coexist_with = [\"a\"]");
    r.reload(Config::parse(&new, "t", None).unwrap())
        .await
        .unwrap();
    let st = status(&r).await;
    assert_eq!(consumer(&st, "a")["state"], "loaded");
    assert_eq!(http("GET", format!("{base}/c/b/work"), "").await.0, 200);
    // A reload whose pool cannot exist on this machine is refused; the old one stays.
    let bad =
        "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"g\"\nkind = \"vram\"\ngpu = 99\n";
    assert!(
        r.reload(Config::parse(bad, "t", None).unwrap())
            .await
            .is_err()
    );
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    r.shutdown().await;
}

/// A consumer with a server and no load route or start command, as Ollama is configured.
fn upstream_only_toml(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[consumer]]\nname = \"{name}\"\npool = \"ram\"\nresident = \"8MiB\"\n\
         upstream = \"http://127.0.0.1:{port}\"\nhealth = \"GET /health\"\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_added_by_a_reload_start_as_they_would_at_startup() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let up = TestConsumer::spawn("up", "8MiB", "normal");
    let sm = TestConsumer::spawn("sm", "8MiB", "normal");
    let first = pool_toml("256MiB", "") + &consumer_toml("a", a.port, "8MiB", "");
    let second = first.clone()
        + &upstream_only_toml("up", up.port, "")
        + &upstream_only_toml("sm", sm.port, "self_managed = true");
    let mut reloaded = start(&first).await;
    reloaded
        .reload(Config::parse(&second, "t", None).unwrap())
        .await
        .unwrap();
    let fresh = start(&second).await;
    // Each is asked whether its server is up when added: that answer takes a moment.
    let up = |st: &serde_json::Value| {
        ["up", "sm"]
            .iter()
            .all(|n| consumer(st, n)["state"] == "loaded")
    };
    wait_for(&reloaded, Duration::from_secs(5), up).await;
    let (after_reload, at_start) = (status(&reloaded).await, status(&fresh).await);
    for name in ["up", "sm", "a"] {
        let (r, f) = (consumer(&after_reload, name), consumer(&at_start, name));
        assert_eq!(r["state"], f["state"], "{name}: {r} against {f}");
        assert_eq!(
            r["resident_bytes"].as_u64() > Some(0),
            f["resident_bytes"].as_u64() > Some(0),
            "{name}: {r} against {f}"
        );
    }
    // Up whenever its server is, and counted as holding its memory from the start.
    assert_eq!(consumer(&after_reload, "up")["state"], "loaded");
    assert_eq!(consumer(&after_reload, "sm")["state"], "loaded");
    assert!(consumer(&after_reload, "sm")["resident_bytes"].as_u64() > Some(0));
    reloaded.shutdown().await;
    fresh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_the_listen_address_or_refuses_one_it_cannot_bind() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let body = consumer_toml("a", a.port, "8MiB", "");
    let mut r = start(&(pool_toml("256MiB", "") + &body)).await;
    let old = r.addr();
    assert_eq!(
        http("GET", format!("http://{old}/c/a/work"), "").await.0,
        200
    );

    let port = free_port();
    let moved =
        pool_toml("256MiB", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}")) + &body;
    r.reload(Config::parse(&moved, "t", None).unwrap())
        .await
        .unwrap();
    assert_eq!(r.addr().port(), port);
    let (code, text) = http("GET", format!("http://{}/healthz", r.addr()), "").await;
    assert_eq!((code, text.as_str()), (200, "ok\n"));
    // State survives the move; the old address is given up as soon as its server task
    // sees the stop.
    assert_eq!(consumer(&status(&r).await, "a")["state"], "loaded");
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::net::TcpStream::connect(old).is_ok() {
        assert!(Instant::now() < deadline, "{old} still answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An address that is taken: the whole configuration is refused and nothing moves.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let refused = pool_toml("64MiB", "").replace("127.0.0.1:0", &taken.to_string()) + &body;
    let e = r
        .reload(Config::parse(&refused, "t", None).unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("cannot listen on {taken}: ")), "{e}");
    assert_eq!(r.addr().port(), port);
    assert_eq!(
        http("GET", format!("http://{}/healthz", r.addr()), "")
            .await
            .0,
        200
    );
    let st = status(&r).await;
    assert_eq!(st["pools"][0]["total_bytes"], 256u64 << 20, "{st}");
    assert_eq!(r.app.config().server.listen.port(), port);
    drop(held);
    r.shutdown().await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_on_the_old_address_finishes_after_a_move() {
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let body = consumer_toml("a", a.port, "8MiB", "");
    let mut r = start(&(pool_toml("256MiB", "") + &body)).await;
    let old = r.addr();
    // A request that takes a second, still running when the broker moves.
    let slow = tokio::spawn(http("GET", format!("http://{old}/c/a/work?ms=1000"), ""));
    wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["in_flight"] == 1
    })
    .await;
    let port = free_port();
    let moved =
        pool_toml("256MiB", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}")) + &body;
    r.reload(Config::parse(&moved, "t", None).unwrap())
        .await
        .unwrap();
    let (code, text) = slow.await.unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(text.starts_with("a ok"), "{text}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_upgrades_pass_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = TestConsumer::spawn("a", "8MiB", "normal");
    let toml = pool_toml("256MiB", "") + &consumer_toml("a", a.port, "8MiB", "");
    let r = start(&toml).await;
    let mut s = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    s.write_all(
        b"GET /c/a/upgrade HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    // The consumer is in use while the upgraded connection lives.
    assert_eq!(consumer(&status(&r).await, "a")["in_flight"], 1);
    s.write_all(b"hello through the broker").await.unwrap();
    let mut back = [0u8; 24];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"hello through the broker");
    drop(s);
    wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["in_flight"] == 0
    })
    .await;
    r.shutdown().await;
}
