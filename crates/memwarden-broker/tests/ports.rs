//! Start commands given their port: `${PORT}` is a free loopback port chosen at each start, and
//! the proxy follows it; `${NAME}` is the consumer's name. No port is written in the config.

mod common;

use std::time::Duration;

use common::*;

/// A consumer the broker starts on a port of its choosing, with no upstream written.
fn on_any_port(name: &str) -> String {
    format!(
        "[[consumer]]\nname = \"{name}\"\npool = \"ram\"\nresident = \"8MiB\"\n\
         health = \"GET /health\"\nstop_timeout = \"2s\"\n\
         start = [\"{BIN}\", \"--size\", \"8MiB\", \"--loaded\", \"--port\", \"${{PORT}}\", \"--name\", \"${{NAME}}\"]\n"
    )
}

/// The port a consumer's process said it listens on, last in its log.
async fn listening_on(base: &str, name: &str) -> u16 {
    let (code, log) = http("GET", format!("{base}/v1/consumers/{name}/logs"), "").await;
    assert_eq!(code, 200, "{log}");
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("listening on "));
    line.unwrap_or_else(|| panic!("no port in {name}'s log: {log:?}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_commands_given_their_port_are_served_and_restart_on_a_new_one() {
    let toml = pool_toml("64MiB", "") + &on_any_port("a") + &on_any_port("b");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());

    for name in ["a", "b"] {
        let (code, body) = http("GET", format!("{base}/c/{name}/work"), "").await;
        assert_eq!(
            (code, body.as_str()),
            (200, &*format!("{name} ok loaded=true\n"))
        );
    }
    let (a1, b1) = (
        listening_on(&base, "a").await,
        listening_on(&base, "b").await,
    );
    assert_ne!(a1, b1);
    // Measured through the process it started, like any started consumer.
    wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["measured_bytes"].as_u64() >= Some(8 << 20)
    })
    .await;

    let (code, body) = http("POST", format!("{base}/v1/consumers/a/unload"), "").await;
    assert_eq!(code, 202, "{body}");
    wait_for(&r, Duration::from_secs(10), |st| {
        consumer(st, "a")["state"] == "unloaded"
    })
    .await;
    // Its old port is taken meanwhile: the next start must choose another, and the proxy
    // must follow it there.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", a1)).expect("a's old port is free");
    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "a ok loaded=true\n"));
    let a2 = listening_on(&base, "a").await;
    assert!(a2 != a1 && a2 != b1, "{a1} {b1} {a2}");
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    drop(squatter);
    r.shutdown().await;
}
