//! A request is refused only for what is true: a full queue refuses only requests that would
//! wait, a server that is down holds nothing, a lease makes others wait rather than "never
//! fit", and every refusal names what holds the room.

mod common;

use std::time::{Duration, Instant};

use common::*;
use memwarden_broker::Config;
use memwarden_broker::client::BrokerClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_never_refuses_a_request_that_can_run_now() {
    let _one = one_at_a_time().await;
    let x = TestConsumer::spawn("x", "50MiB", "normal");
    let m = TestConsumer::spawn("m", "50MiB", "normal");
    let l = TestConsumer::spawn("l", "60MiB", "normal");
    // m may share the pool with both; l needs x gone.
    let toml = pool_toml("160MiB", "max_queue = 2")
        + &consumer_toml("x", x.port, "50MiB", "")
        + &consumer_toml("m", m.port, "50MiB", "coexist_with = [\"x\", \"l\"]")
        + &consumer_toml("l", l.port, "60MiB", "")
        + &consumer_toml("huge", l.port, "1GiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/x/work"), "").await.0, 200);
    assert_eq!(http("GET", format!("{base}/c/m/work"), "").await.0, 200);
    // x is busy, so the two requests for l wait for it: the queue is full.
    let long = tokio::spawn(http("GET", format!("{base}/c/x/work?ms=3000"), ""));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(http("GET", format!("{base}/c/l/work"), "")))
        .collect();
    wait_for(&r, Duration::from_secs(2), |st| {
        st["pools"][0]["queue_length"] == 2
    })
    .await;
    // m is loaded and idle: it runs at once, full queue or not.
    let t = Instant::now();
    let (code, body) = http("GET", format!("{base}/c/m/work"), "").await;
    assert_eq!(code, 200, "{body}");
    assert!(t.elapsed() < Duration::from_secs(1));
    // A third request for l would wait too: that one the full queue refuses.
    let (code, body) = http("GET", format!("{base}/c/l/work"), "").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("is full"), "{body}");
    assert!(body.contains(r#"\"x\" (busy, "#), "{body}");
    // One that can never fit is told so, full queue or not.
    let (code, body) = http("GET", format!("{base}/c/huge/work"), "").await;
    assert_eq!(code, 507, "{body}");
    assert_eq!(long.await.unwrap().0, 200);
    for w in waiting {
        let (code, body) = tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 200, "{body}");
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_never_refuses_requests_for_loaded_consumers() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "40MiB", "normal");
    let b = TestConsumer::spawn("b", "40MiB", "normal");
    let l = TestConsumer::spawn("l", "100MiB", "normal");
    // a and b share the pool; l needs both gone.
    let toml = pool_toml("160MiB", "max_queue = 4\nmax_wait = \"120s\"")
        + &consumer_toml("a", a.port, "40MiB", "coexist_with = [\"b\"]")
        + &consumer_toml("b", b.port, "40MiB", "")
        + &consumer_toml("l", l.port, "100MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    assert_eq!(http("GET", format!("{base}/c/b/work"), "").await.0, 200);
    let client = client();
    let calls: Vec<_> = (0..300)
        .map(|i| {
            let name = ["a", "b", "l"][i % 3];
            let url = format!("{base}/c/{name}/work?ms=100");
            let client = client.clone();
            tokio::spawn(async move { (name, http_with(&client, "GET", &url, "", &[]).await) })
        })
        .collect();
    let mut served_l = 0;
    for call in calls {
        let (name, (code, body)) = call.await.unwrap();
        match name {
            "l" => {
                assert!(code == 200 || code == 503, "l: {code} {body}");
                served_l += usize::from(code == 200);
            }
            _ => assert_eq!(code, 200, "{name}: {body}"),
        }
    }
    // The requests for l that found room in the queue had their turn once the flood ended.
    assert!(served_l >= 1);
    let st = status(&r).await;
    assert_eq!(st["counters"]["rejected_timeout"], 0);
    r.shutdown().await;
}

/// A server with an upstream and nothing the broker loads or unloads it by.
fn upstream_only(name: &str, port: u16, resident: &str) -> String {
    format!(
        "[[consumer]]\nname = \"{name}\"\npool = \"ram\"\nresident = \"{resident}\"\n\
         upstream = \"http://127.0.0.1:{port}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_holds_nothing_until_it_comes_up() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "80MiB", "normal");
    let port = free_port();
    let toml = pool_toml("160MiB", "")
        + &upstream_only("down", port, "100MiB")
        + &consumer_toml("a", a.port, "80MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    // Nothing listens on its port: it holds none of the pool, and a fits.
    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!(code, 200, "{body}");
    let st = status(&r).await;
    assert_eq!(consumer(&st, "down")["state"], "unloaded", "{st:#}");
    assert_eq!(consumer(&st, "down")["resident_bytes"], 0, "{st:#}");
    // Its server comes up, holding its memory: checked again while idle, it is counted by
    // what it is measured to hold.
    let up = TestConsumer::spawn_on(port, "down", "24MiB", &["--loaded"]);
    let st = wait_for(&r, Duration::from_secs(10), |st| {
        consumer(st, "down")["state"] == "loaded"
            && consumer(st, "down")["measured_bytes"].as_u64() >= Some(24 << 20)
    })
    .await;
    assert!(consumer(&st, "down")["resident_bytes"].as_u64() < Some(100 << 20));
    // It goes away again while idle: it holds nothing again.
    drop(up);
    wait_for(&r, Duration::from_secs(10), |st| {
        consumer(st, "down")["state"] == "unloaded" && consumer(st, "down")["resident_bytes"] == 0
    })
    .await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_when_a_reload_adds_it_holds_nothing() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "80MiB", "normal");
    let first = pool_toml("160MiB", "") + &consumer_toml("a", a.port, "80MiB", "");
    let mut r = start(&first).await;
    let second = first + &upstream_only("down", free_port(), "100MiB");
    r.reload(Config::parse(&second, "t", None).unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", r.addr());
    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!(code, 200, "{body}");
    let st = status(&r).await;
    assert_eq!(consumer(&st, "down")["state"], "unloaded", "{st:#}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_makes_others_wait_and_names_itself_not_never_fit() {
    let _one = one_at_a_time().await;
    let a = TestConsumer::spawn("a", "80MiB", "normal");
    let toml = pool_toml("160MiB", "max_wait = \"2s\"")
        + "[[consumer]]\nname = \"trainer\"\npool = \"ram\"\nresident = \"100MiB\"\n"
        + &consumer_toml("a", a.port, "80MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    let client = BrokerClient::new(&base, None).unwrap();
    let id = client
        .take_lease("trainer", Duration::from_secs(60))
        .await
        .unwrap();
    // a fits once the lease ends: it waits for it, and at max_wait the 503 says who held it.
    let t = Instant::now();
    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!(code, 503, "{body}");
    assert!(t.elapsed() >= Duration::from_secs(2), "{body}");
    assert!(body.contains(r#"\"trainer\" (leased, 100 MiB)"#), "{body}");
    // Given back while a waits: a is served.
    let waiting = tokio::spawn(http("GET", format!("{base}/c/a/work"), ""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.give_back(&id).await.unwrap();
    let (code, body) = waiting.await.unwrap();
    assert_eq!(code, 200, "{body}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_507_names_what_holds_the_room() {
    let _one = one_at_a_time().await;
    let p = TestConsumer::spawn("p", "100MiB", "normal");
    let a = TestConsumer::spawn("a", "80MiB", "normal");
    let toml = pool_toml("160MiB", "")
        + &consumer_toml("p", p.port, "100MiB", "pinned = true")
        + &consumer_toml("a", a.port, "80MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/p/work"), "").await.0, 200);
    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!(code, 507, "{body}");
    assert!(body.contains(r#"\"p\" (pinned, "#), "{body}");
    r.shutdown().await;
}
