//! The broker's two streams: the output of the processes it starts (kept per consumer, served
//! and followed) and its events.

mod common;

use std::time::Duration;

use common::*;
use http_body_util::BodyExt;

/// A consumer "p" whose start command prints a line to each of stdout and stderr, then runs
/// the test consumer.
fn printing_consumer(port: u16) -> String {
    pool_toml("256MiB", "")
        + &format!(
            "[[consumer]]\nname = \"p\"\npool = \"ram\"\nresident = \"8MiB\"\n\
             upstream = \"http://127.0.0.1:{port}\"\nhealth = \"GET /health\"\n\
             start = [\"sh\", \"-c\", \"echo 'hello from p'; echo 'warn: \\u001b[31mred' >&2; \
             exec {BIN} --size 8MiB --loaded --port {port} --name p\"]\nstop_timeout = \"2s\"\n"
        )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_process_output_is_kept_per_consumer_and_followed_live() {
    let toml = printing_consumer(free_port()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nshutdown_grace = \"60s\"",
    );
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());

    // A follower that connects before the process exists gets its lines as they come.
    let req = hyper::Request::get(format!("{base}/v1/consumers/p/logs?follow=1"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()[hyper::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.into_body();

    assert_eq!(http("GET", format!("{base}/c/p/work"), "").await.0, 200);
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(seen.contains("data: hello from p") && seen.contains("data: warn:")) {
            let frame = body.frame().await.expect("the stream stays open").unwrap();
            if let Ok(d) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&d));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("lines not followed: {seen:?}"));

    // The same lines as plain text, with the escape sequence made harmless.
    let (code, text) = http("GET", format!("{base}/v1/consumers/p/logs"), "").await;
    assert_eq!(code, 200);
    assert!(text.contains("hello from p\n"), "{text}");
    let warn = text.lines().find(|l| l.starts_with("warn:")).unwrap();
    assert!(
        !warn.contains('\u{1b}') && warn.ends_with("[31mred"),
        "{warn:?}"
    );

    let (code, text) = http("GET", format!("{base}/v1/consumers/nosuch/logs"), "").await;
    assert_eq!(code, 404, "{text}");
    // A follower does not hold the shutdown for its grace (a minute here): its stream ends.
    tokio::time::timeout(Duration::from_secs(20), r.shutdown())
        .await
        .expect("shutdown does not wait for a followed log");
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await
    .expect("the followed stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_need_the_token() {
    let toml = printing_consumer(free_port()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ntoken = \"t0k\"",
    );
    let r = start(&toml).await;
    let url = format!("http://{}/v1/consumers/p/logs", r.addr());
    assert_eq!(http("GET", &url, "").await.0, 401);
    let (code, _) = http_with(
        &client(),
        "GET",
        &url,
        "",
        &[("authorization", "Bearer t0k")],
    )
    .await;
    assert_eq!(code, 200);
    r.shutdown().await;
}

/// Reads server-sent events from `body` until `done` says the text so far is enough.
async fn read_until(
    body: &mut hyper::body::Incoming,
    mut done: impl FnMut(&str) -> bool,
) -> String {
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done(&seen) {
            let frame = body.frame().await.expect("the stream stays open").unwrap();
            if let Ok(d) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&d));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not seen in time: {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_and_unloads_are_events_kept_and_followed() {
    let r = start(&printing_consumer(free_port())).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/p/work"), "").await.0, 200);

    let (code, text) = http("GET", format!("{base}/v1/events"), "").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = v["events"].as_array().unwrap();
    let loaded = events
        .iter()
        .find(|e| e["message"] == "loaded")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(loaded["consumer"], "p");
    assert!(loaded["at_ms"].as_u64().unwrap() > 0);
    assert!(events.iter().any(|e| e["message"] == "loading"), "{text}");

    // A follower gets what is kept, then the unload as it happens.
    let req = hyper::Request::get(format!("{base}/v1/events?follow=1"))
        .body(axum::body::Body::empty())
        .unwrap();
    let mut body = client().request(req).await.unwrap().into_body();
    read_until(&mut body, |s| s.contains("\"loaded\"")).await;
    let (code, _) = http("POST", format!("{base}/v1/consumers/p/unload"), "").await;
    assert_eq!(code, 202);
    read_until(&mut body, |s| s.contains("unloaded, memory back")).await;
    r.shutdown().await;
}
