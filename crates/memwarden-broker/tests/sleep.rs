//! Sleep and wake end to end: two test consumers that speak vLLM's and SGLang's sleep routes
//! share a stand-in GPU with room for one; host RAM is a `ram` pool of small capacity over
//! their real resident memory.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::gpu::GpuMachine;
use common::*;

const MIB: u64 = 1 << 20;

/// A consumer on the stand-in GPU whose load takes `load_ms`, and its `--vram-file`.
fn gpu_consumer(
    dir: &tempfile::TempDir,
    name: &str,
    mode: &str,
    load_ms: u64,
) -> (TestConsumer, PathBuf) {
    let file = dir.path().join(format!("{name}.vram"));
    let c = TestConsumer::spawn_with(
        name,
        "60MiB",
        mode,
        &[
            "--vram-file",
            file.to_str().unwrap(),
            "--load-ms",
            &load_ms.to_string(),
        ],
    );
    (c, file)
}

/// A GPU pool of the card's 100 MiB and, if `host` is given, a `ram` pool of that capacity.
fn config(host: Option<&str>, consumers: &[(&str, u16, &str)], pool_extra: &str) -> String {
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"gpu\"\nkind = \"vram\"\ngpu = 0\n\
         cushion = \"4MiB\"\n{pool_extra}\n"
    );
    if let Some(cap) = host {
        t += &format!(
            "[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"{cap}\"\ncushion = \"8MiB\"\n"
        );
    }
    for (name, port, sleep) in consumers {
        t += &consumer_toml(name, *port, "60MiB", &format!("sleep = \"{sleep}\"\n"))
            .replace("pool = \"ram\"", "pool = \"gpu\"");
    }
    t
}

fn machine(consumers: &[(&TestConsumer, &PathBuf)]) -> GpuMachine {
    let pids: Vec<(u32, PathBuf)> = (consumers.iter())
        .map(|(c, f)| (c.child.id(), (*f).clone()))
        .collect();
    GpuMachine::new(100 * MIB, 64 << 30, &pids)
}

fn u64_of(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn f64_of(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sleeps_when_host_ram_takes_it_and_wakes_faster_than_it_loads() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, fa) = gpu_consumer(&dir, "a", "normal", 800);
    let (b, fb) = gpu_consumer(&dir, "b", "normal", 800);
    let m = machine(&[(&a, &fa), (&b, &fb)]);
    let toml = config(
        Some("200MiB"),
        &[("a", a.port, "vllm"), ("b", b.port, "sglang")],
        "",
    );
    let r = start_on(&toml, m.probe()).await;
    let base = format!("http://{}", r.addr());

    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "a ok loaded=true\n"));
    let rss_awake = a.rss();
    // b needs a's room: host RAM takes a's weights, so a sleeps rather than unloads.
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "b ok loaded=true\n"));
    assert!(
        a.rss() >= rss_awake + 55 * MIB,
        "a's weights are in host RAM: {} then {}",
        rss_awake,
        a.rss()
    );
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["sleep_host_bytes"].is_u64()
    })
    .await;
    let sa = consumer(&st, "a");
    assert_eq!(sa["state"], "sleeping");
    assert_eq!(sa["sleep_level"], 1);
    assert!(u64_of(&sa["sleep_host_bytes"]) >= 60 * MIB, "{sa}");
    // Its GPU memory came back (the context stays), and host RAM counts its weights.
    assert!(u64_of(&sa["resident_bytes"]) <= 2 * MIB, "{sa}");
    let ram = &st["pools"][1];
    assert!(
        u64_of(&ram["available_bytes"]) <= 200 * MIB - 8 * MIB - 60 * MIB,
        "{ram}"
    );
    assert_eq!(st["counters"]["sleeps"], 1);
    assert_eq!(st["counters"]["loads"], 2);

    // Back to a: b (SGLang) sleeps in turn, and a is woken, not loaded.
    let (code, body) = http("GET", format!("{base}/c/a/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "a ok loaded=true\n"));
    // b's GPU memory is back as soon as the pool shows it; its host RAM is read after.
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "b")["state"] == "sleeping"
    })
    .await;
    let sa = consumer(&st, "a");
    assert_eq!(sa["state"], "loaded");
    assert_eq!(
        (sa["loads"].clone(), sa["wakes"].clone()),
        (1.into(), 1.into())
    );
    let (wake, load) = (
        f64_of(&sa["last_wake_seconds"]),
        f64_of(&sa["last_load_seconds"]),
    );
    assert!(
        wake < load / 2.0,
        "a woke in {wake} s and loaded in {load} s"
    );
    assert!(load >= 0.8, "{load}");
    assert_eq!(st["counters"]["sleeps"], 2);
    assert_eq!(st["counters"]["wakes"], 1);
    assert_eq!(st["counters"]["loads"], 2);
    assert!(
        a.rss() < rss_awake + 20 * MIB,
        "awake, a let its host copy go: {}",
        a.rss()
    );
    let metrics = http("GET", format!("{base}/metrics"), "").await.1;
    assert!(
        metrics.contains("memwarden_broker_wakes_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "memwarden_consumer_state{consumer=\"b\",pool=\"gpu\",state=\"sleeping\"} 1\n"
        ),
        "{metrics}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_room_in_host_ram_weights_are_dropped_or_the_server_unloaded() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, fa) = gpu_consumer(&dir, "a", "normal", 0);
    let (b, fb) = gpu_consumer(&dir, "b", "normal", 0);
    let m = machine(&[(&a, &fa), (&b, &fb)]);
    // Host RAM has 42 MiB beside its cushion: not a's 60 MiB of weights.
    let toml = config(
        Some("50MiB"),
        &[("a", a.port, "vllm"), ("b", b.port, "sglang")],
        "",
    );
    let r = start_on(&toml, m.probe()).await;
    let base = format!("http://{}", r.addr());

    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    let rss_awake = a.rss();
    assert_eq!(http("GET", format!("{base}/c/b/work"), "").await.0, 200);
    // vLLM sleeps at level 2: its weights dropped, nothing put in host RAM.
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["state"] == "sleeping"
    })
    .await;
    let sa = consumer(&st, "a");
    assert_eq!(
        (sa["state"].clone(), sa["sleep_level"].clone()),
        ("sleeping".into(), 2.into())
    );
    assert!(a.rss() < rss_awake + 20 * MIB, "{}", a.rss());
    // SGLang has no level 2: it is unloaded.
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "b")["state"] == "unloaded"
    })
    .await;
    let sa = consumer(&st, "a");
    assert_eq!(
        (sa["state"].clone(), sa["wakes"].clone()),
        ("loaded".into(), 1.into())
    );
    assert_eq!(st["counters"]["sleeps"], 1);
    assert_eq!(st["counters"]["evictions"], 2);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ram_pool_host_ram_is_what_the_machine_has_free() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, fa) = gpu_consumer(&dir, "a", "normal", 0);
    let (b, fb) = gpu_consumer(&dir, "b", "normal", 0);
    let m = machine(&[(&a, &fa), (&b, &fb)]);
    // The fake host has 64 GiB: a level-1 sleep fits beside the cushion.
    let toml = config(None, &[("a", a.port, "vllm"), ("b", b.port, "vllm")], "");
    let r = start_on(&toml, m.probe()).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    assert_eq!(http("GET", format!("{base}/c/b/work"), "").await.0, 200);
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["sleep_host_bytes"].is_u64()
    })
    .await;
    let sa = consumer(&st, "a");
    assert_eq!(
        (sa["state"].clone(), sa["sleep_level"].clone()),
        ("sleeping".into(), 1.into())
    );
    assert!(u64_of(&sa["sleep_host_bytes"]) >= 60 * MIB, "{sa}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_its_sleep_and_keeps_its_memory_is_stuck() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, fa) = gpu_consumer(&dir, "a", "lying", 0);
    let (b, fb) = gpu_consumer(&dir, "b", "normal", 0);
    let m = machine(&[(&a, &fa), (&b, &fb)]);
    let toml = config(
        Some("200MiB"),
        &[("a", a.port, "vllm"), ("b", b.port, "vllm")],
        "verify_timeout = \"1s\"\nmax_wait = \"3s\"\n",
    );
    let r = start_on(&toml, m.probe()).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    // a answers its sleep with 200 and keeps its GPU memory: b cannot have the room.
    let (code, body) = http("GET", format!("{base}/c/b/work"), "").await;
    assert_eq!(code, 503, "{body} {:#}", status(&r).await);
    assert!(
        body.contains("stuck") && body.contains("\\\"a\\\" holds"),
        "{body}"
    );
    let st = status(&r).await;
    let sa = consumer(&st, "a");
    assert_eq!(sa["state"], "stuck");
    assert!(u64_of(&sa["resident_bytes"]) >= 60 * MIB, "{sa}");
    assert_eq!(st["counters"]["stuck"], 1);
    assert_eq!(st["counters"]["sleeps"], 0);
    // Counted in the GPU pool, not in host RAM: it never slept.
    assert_eq!(u64_of(&st["pools"][1]["free_bytes"]), 200 * MIB);
    // Requests for a are still served: its server holds its memory and answers.
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeper_leaves_host_ram_when_a_ram_consumer_needs_it() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, fa) = gpu_consumer(&dir, "a", "normal", 0);
    let (b, fb) = gpu_consumer(&dir, "b", "normal", 0);
    let r = TestConsumer::spawn("r", "40MiB", "normal");
    let none = dir.path().join("r.vram");
    let m = machine(&[(&a, &fa), (&b, &fb), (&r, &none)]);
    // Host RAM takes a's weights (60 MiB of 92), but then not r's 40 MiB beside them.
    let toml = config(
        Some("100MiB"),
        &[("a", a.port, "vllm"), ("b", b.port, "vllm")],
        "",
    ) + &consumer_toml("r", r.port, "40MiB", "");
    let broker = start_on(&toml, m.probe()).await;
    let base = format!("http://{}", broker.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    assert_eq!(http("GET", format!("{base}/c/b/work"), "").await.0, 200);
    wait_for(&broker, Duration::from_secs(5), |st| {
        consumer(st, "a")["state"] == "sleeping" && consumer(st, "a")["sleep_level"] == 1
    })
    .await;
    let (code, body) = http("GET", format!("{base}/c/r/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "r ok loaded=true\n"));
    let st = status(&broker).await;
    assert_eq!(consumer(&st, "a")["state"], "unloaded");
    assert_eq!(consumer(&st, "b")["state"], "loaded");
    assert!(a.rss() < 30 * MIB, "a let its host copy go: {}", a.rss());
    assert_eq!(st["counters"]["sleeps"], 1);
    assert_eq!(st["counters"]["evictions"], 2);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_that_can_sleep_sleeps_after_its_ttl() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, fa) = gpu_consumer(&dir, "a", "normal", 0);
    let m = machine(&[(&a, &fa)]);
    let toml = config(Some("200MiB"), &[("a", a.port, "vllm")], "").replace(
        "sleep = \"vllm\"\n",
        "sleep = \"vllm\"\nidle_ttl = \"300ms\"\n",
    );
    let r = start_on(&toml, m.probe()).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    let st = wait_for(&r, Duration::from_secs(5), |st| {
        consumer(st, "a")["state"] == "sleeping"
    })
    .await;
    assert_eq!(consumer(&st, "a")["sleep_level"], 1);
    assert_eq!(st["counters"]["idle_unloads"], 1);
    assert_eq!(st["counters"]["evictions"], 0);
    // The next request wakes it.
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);
    let st = status(&r).await;
    assert_eq!(
        (
            st["counters"]["wakes"].clone(),
            st["counters"]["loads"].clone()
        ),
        (1.into(), 1.into())
    );
    r.shutdown().await;
}
