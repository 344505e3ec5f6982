//! An unload is verified by measurement; a server the broker started and stopped holds
//! nothing afterwards, however far its declared size was from what it really held.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_declared_larger_than_it_held_is_unloaded_not_stuck() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Declared at 96 MiB, it holds about 24: unloaded before any measurement, the memory that
    // "came back" is far below the declaration, but nothing of it is left.
    let toml = pool_toml("512MiB", "verify_timeout = \"2s\"")
        + &format!(
            "[[consumer]]\nname = \"s\"\npool = \"ram\"\nresident = \"96MiB\"\n\
             upstream = \"http://127.0.0.1:{port}\"\nhealth = \"GET /health\"\n\
             start = [\"{BIN}\", \"--size\", \"24MiB\", \"--loaded\", \"--port\", \"{port}\", \"--name\", \"s\"]\n\
             stop_timeout = \"2s\"\n"
        );
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(
        http("POST", format!("{base}/v1/consumers/s/load"), "")
            .await
            .0,
        200
    );
    assert_eq!(
        http("POST", format!("{base}/v1/consumers/s/unload"), "")
            .await
            .0,
        202
    );
    let st = wait_for(&r, Duration::from_secs(10), |st| {
        consumer(st, "s")["state"] != "unloading"
    })
    .await;
    assert_eq!(consumer(&st, "s")["state"], "unloaded", "{st}");
    assert_eq!(st["counters"]["stuck"], 0, "{st}");
    r.shutdown().await;
}
