//! Sleep and wake end to end: two test consumers that speak vLLM's and SGLang's sleep routes
//! share a stand-in GPU with room for one; host RAM is a `ram` pool of small capacity over
//! their real resident memory.

mod common;

use std::time::Duration;

use common::gpu::GpuMachine;
use common::*;

const MIB: u64 = 1 << 20;

/// A test's broker, its consumers and the machine they run on.
struct Rig {
    broker: memwarden_broker::Running,
    base: String,
    consumers: Vec<(String, TestConsumer)>,
    toml: String,
    machine: GpuMachine,
    _dir: tempfile::TempDir,
}

/// A consumer on the stand-in GPU: its name, mode, sleep preset and how long its load takes.
type OnGpu<'a> = (&'a str, &'a str, &'a str, u64);

/// Consumers of 60 MiB on a card of 100 MiB (a GPU pool of that capacity, so that what its
/// consumers hold is counted at once and not only once the fake driver's figures show it,
/// with `pool_extra`; `consumer_extra`
/// in each of them); a `ram` pool of capacity `host`, if given, and in it a plain consumer
/// `in_ram` (its name and size), if given.
async fn rig(
    host: Option<&str>,
    on_gpu: &[OnGpu<'_>],
    pool_extra: &str,
    consumer_extra: &str,
    in_ram: Option<(&str, &str)>,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"gpu\"\nkind = \"vram\"\ngpu = 0\n\
         capacity = \"100MiB\"\ncushion = \"4MiB\"\n{pool_extra}\n"
    );
    if let Some(cap) = host {
        toml += &format!(
            "[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"{cap}\"\ncushion = \"8MiB\"\n"
        );
    }
    let (mut consumers, mut pids) = (Vec::new(), Vec::new());
    for (name, mode, sleep, load_ms) in on_gpu {
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
        let extra = format!("sleep = \"{sleep}\"\n{consumer_extra}");
        toml += &consumer_toml(name, c.port, "60MiB", &extra)
            .replace("pool = \"ram\"", "pool = \"gpu\"");
        pids.push((c.child.id(), file));
        consumers.push((name.to_string(), c));
    }
    if let Some((name, size)) = in_ram {
        let c = TestConsumer::spawn(name, size, "normal");
        toml += &consumer_toml(name, c.port, size, "");
        pids.push((c.child.id(), dir.path().join("none")));
        consumers.push((name.to_string(), c));
    }
    // A host of 64 GiB: without a ram pool, a level-1 sleep fits beside its cushion.
    let machine = GpuMachine::new(100 * MIB, 64 << 30, &pids);
    let broker = start_on(&toml, machine.probe()).await;
    Rig {
        base: format!("http://{}", broker.addr()),
        broker,
        consumers,
        toml,
        machine,
        _dir: dir,
    }
}

impl Rig {
    /// The broker stopped and a new one started on the same file; the consumers run on.
    async fn restarted(self) -> Rig {
        self.broker.shutdown().await;
        let broker = start_on(&self.toml, self.machine.probe()).await;
        Rig {
            base: format!("http://{}", broker.addr()),
            broker,
            ..self
        }
    }

    /// A request to consumer `name`: its status and body.
    async fn work(&self, name: &str) -> (u16, String) {
        http("GET", format!("{}/c/{name}/work", self.base), "").await
    }

    fn rss(&self, name: &str) -> u64 {
        (self.consumers.iter())
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| c.rss())
    }

    async fn status(&self) -> serde_json::Value {
        status(&self.broker).await
    }

    /// Waits until `name` sleeps with its weights measured in host RAM, and checks its
    /// level (`null`: not known); the status then.
    async fn asleep(&self, name: &str, level: serde_json::Value) -> serde_json::Value {
        let st = (self.wait_for(|st| consumer(st, name)["sleep_host_bytes"].is_u64())).await;
        let c = consumer(&st, name);
        assert_eq!(
            (&c["state"], &c["sleep_level"]),
            (&"sleeping".into(), &level),
            "{st:#}"
        );
        assert!(u64_of(&c["sleep_host_bytes"]) >= 60 * MIB, "{c}");
        st
    }

    async fn wait_for(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        wait_for(&self.broker, Duration::from_secs(5), pred).await
    }
}

fn u64_of(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Asserts the broker's counters named in `want`.
fn counted(st: &serde_json::Value, want: &[(&str, u64)]) {
    let got: Vec<(&str, u64)> = (want.iter())
        .map(|&(k, _)| (k, u64_of(&st["counters"][k])))
        .collect();
    assert_eq!(got, want, "{:#}", st["counters"]);
}

fn f64_of(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sleeps_when_host_ram_takes_it_and_wakes_faster_than_it_loads() {
    let _one = one_at_a_time().await;
    let on_gpu = [("a", "normal", "vllm", 800), ("b", "normal", "sglang", 800)];
    let r = rig(Some("200MiB"), &on_gpu, "", "", None).await;
    assert_eq!(r.work("a").await, (200, "a ok loaded=true\n".into()));
    let rss_awake = r.rss("a");
    // b needs a's room: host RAM takes a's weights, so a sleeps rather than unloads.
    assert_eq!(r.work("b").await, (200, "b ok loaded=true\n".into()));
    let rss = r.rss("a");
    assert!(
        rss >= rss_awake + 55 * MIB,
        "a's weights in host RAM: {rss_awake} then {rss}"
    );
    let st = r.asleep("a", 1.into()).await;
    let sa = consumer(&st, "a");
    // Its GPU memory came back (the context stays), and host RAM counts its weights.
    assert!(u64_of(&sa["resident_bytes"]) <= 2 * MIB, "{sa}");
    let ram = &st["pools"][1];
    assert!(
        u64_of(&ram["available_bytes"]) <= (200 - 8 - 60) * MIB,
        "{ram}"
    );
    counted(&st, &[("sleeps", 1), ("loads", 2)]);

    // Back to a: b (SGLang) sleeps in turn, and a is woken, not loaded. b's GPU memory is back
    // as soon as the pool shows it; its host RAM is read after.
    assert_eq!(r.work("a").await, (200, "a ok loaded=true\n".into()));
    let st = r
        .wait_for(|st| consumer(st, "b")["state"] == "sleeping")
        .await;
    let sa = consumer(&st, "a");
    assert_eq!(sa["state"], "loaded");
    assert_eq!((&sa["loads"], &sa["wakes"]), (&1.into(), &1.into()));
    let wake = f64_of(&sa["last_wake_seconds"]);
    let load = f64_of(&sa["last_load_seconds"]);
    assert!(
        wake < load / 2.0,
        "a woke in {wake} s and loaded in {load} s"
    );
    assert!(load >= 0.8, "{load}");
    counted(&st, &[("sleeps", 2), ("wakes", 1), ("loads", 2)]);
    let rss = r.rss("a");
    assert!(
        rss < rss_awake + 20 * MIB,
        "awake, a let its host copy go: {rss}"
    );
    let metrics = http("GET", format!("{}/metrics", r.base), "").await.1;
    assert!(
        metrics.contains("memwarden_broker_wakes_total 1\n"),
        "{metrics}"
    );
    let b_asleep = "memwarden_consumer_state{consumer=\"b\",pool=\"gpu\",state=\"sleeping\"} 1\n";
    assert!(metrics.contains(b_asleep), "{metrics}");
    r.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_room_in_host_ram_weights_are_dropped_or_the_server_unloaded() {
    let _one = one_at_a_time().await;
    // Host RAM has 42 MiB beside its cushion: not a's 60 MiB of weights.
    let on_gpu = [("a", "normal", "vllm", 0), ("b", "normal", "sglang", 0)];
    let r = rig(Some("50MiB"), &on_gpu, "", "", None).await;
    assert_eq!(r.work("a").await.0, 200);
    let rss_awake = r.rss("a");
    assert_eq!(r.work("b").await.0, 200);
    // vLLM sleeps at level 2: its weights dropped, nothing put in host RAM.
    let st = r
        .wait_for(|st| consumer(st, "a")["state"] == "sleeping")
        .await;
    assert_eq!(consumer(&st, "a")["sleep_level"], 2);
    assert!(r.rss("a") < rss_awake + 20 * MIB, "{}", r.rss("a"));
    // SGLang has no level 2: it is unloaded.
    assert_eq!(r.work("a").await.0, 200);
    let st = r
        .wait_for(|st| consumer(st, "b")["state"] == "unloaded")
        .await;
    let sa = consumer(&st, "a");
    assert_eq!((&sa["state"], &sa["wakes"]), (&"loaded".into(), &1.into()));
    counted(&st, &[("sleeps", 1), ("evictions", 2)]);
    r.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ram_pool_host_ram_is_what_the_machine_has_free() {
    let _one = one_at_a_time().await;
    let on_gpu = [("a", "normal", "vllm", 0), ("b", "normal", "vllm", 0)];
    let r = rig(None, &on_gpu, "", "", None).await;
    assert_eq!(r.work("a").await.0, 200);
    assert_eq!(r.work("b").await.0, 200);
    r.asleep("a", 1.into()).await;
    r.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_its_sleep_and_keeps_its_memory_is_stuck() {
    let _one = one_at_a_time().await;
    let on_gpu = [("a", "lying", "vllm", 0), ("b", "normal", "vllm", 0)];
    let waits = "verify_timeout = \"1s\"\nmax_wait = \"3s\"\n";
    let r = rig(Some("200MiB"), &on_gpu, waits, "", None).await;
    assert_eq!(r.work("a").await.0, 200);
    // a answers its sleep with 200 and keeps its GPU memory: b cannot have the room.
    let (code, body) = r.work("b").await;
    assert_eq!(code, 503, "{body} {:#}", r.status().await);
    assert!(
        body.contains("stuck") && body.contains("\\\"a\\\" holds"),
        "{body}"
    );
    let st = r.status().await;
    let sa = consumer(&st, "a");
    assert_eq!(sa["state"], "stuck");
    assert!(u64_of(&sa["resident_bytes"]) >= 60 * MIB, "{sa}");
    counted(&st, &[("stuck", 1), ("sleeps", 0)]);
    // Counted in the GPU pool, not in host RAM: it never slept.
    assert_eq!(u64_of(&st["pools"][1]["free_bytes"]), 200 * MIB);
    // Requests for a are still served: its server holds its memory and answers.
    assert_eq!(r.work("a").await.0, 200);
    r.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeper_leaves_host_ram_when_a_ram_consumer_needs_it() {
    let _one = one_at_a_time().await;
    // Host RAM takes a's weights (60 MiB of 92), but then not r's 40 MiB beside them.
    let on_gpu = [("a", "normal", "vllm", 0), ("b", "normal", "vllm", 0)];
    let r = rig(Some("100MiB"), &on_gpu, "", "", Some(("r", "40MiB"))).await;
    assert_eq!(r.work("a").await.0, 200);
    assert_eq!(r.work("b").await.0, 200);
    r.wait_for(|st| {
        consumer(st, "a")["state"] == "sleeping" && consumer(st, "a")["sleep_level"] == 1
    })
    .await;
    assert_eq!(r.work("r").await, (200, "r ok loaded=true\n".into()));
    let st = r.status().await;
    assert_eq!(consumer(&st, "a")["state"], "unloaded");
    assert_eq!(consumer(&st, "b")["state"], "loaded");
    assert!(
        r.rss("a") < 30 * MIB,
        "a let its host copy go: {}",
        r.rss("a")
    );
    counted(&st, &[("sleeps", 1), ("evictions", 2)]);
    r.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_that_can_sleep_sleeps_after_its_ttl() {
    let _one = one_at_a_time().await;
    let on_gpu = [("a", "normal", "vllm", 0)];
    let r = rig(Some("200MiB"), &on_gpu, "", "idle_ttl = \"300ms\"\n", None).await;
    assert_eq!(r.work("a").await.0, 200);
    let st = r
        .wait_for(|st| consumer(st, "a")["state"] == "sleeping")
        .await;
    assert_eq!(consumer(&st, "a")["sleep_level"], 1);
    counted(&st, &[("idle_unloads", 1), ("evictions", 0)]);
    // The next request wakes it.
    assert_eq!(r.work("a").await.0, 200);
    let st = r.status().await;
    counted(&st, &[("wakes", 1), ("loads", 1)]);
    r.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vllm_server_left_asleep_is_found_asleep_after_a_restart_and_woken() {
    let _one = one_at_a_time().await;
    let on_gpu = [("a", "normal", "vllm", 800)];
    let r = rig(Some("200MiB"), &on_gpu, "", "idle_ttl = \"300ms\"\n", None).await;
    assert_eq!(r.work("a").await.0, 200);
    r.wait_for(|st| consumer(st, "a")["state"] == "sleeping")
        .await;
    let r = r.restarted().await;
    // The new broker asks it, and counts its weights in host RAM.
    // The level it was put to sleep at is not known to this broker.
    let st = r.asleep("a", serde_json::Value::Null).await;
    let ram = &st["pools"][1];
    assert!(
        u64_of(&ram["available_bytes"]) <= (200 - 8 - 60) * MIB,
        "{ram}"
    );
    // A request wakes it: no load.
    assert_eq!(r.work("a").await, (200, "a ok loaded=true\n".into()));
    let st = r.status().await;
    counted(&st, &[("wakes", 1), ("loads", 0)]);
    r.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ram_consumer_is_evicted_so_that_a_server_sleeps_rather_than_unloads() {
    let _one = one_at_a_time().await;
    // Host RAM has 92 MiB beside its cushion; r holds 40 of them, so a's 60 MiB of weights fit
    // only once r is gone. a takes 800 ms to load and is asked for twice; r loads at once.
    let on_gpu = [("a", "normal", "vllm", 800), ("b", "normal", "vllm", 0)];
    let r = rig(Some("100MiB"), &on_gpu, "", "", Some(("r", "40MiB"))).await;
    assert_eq!(r.work("r").await.0, 200);
    assert_eq!(r.work("a").await.0, 200);
    assert_eq!(r.work("a").await.0, 200);
    assert_eq!(r.work("b").await, (200, "b ok loaded=true\n".into()));
    let st = r.asleep("a", 1.into()).await;
    assert_eq!(consumer(&st, "r")["state"], "unloaded");
    assert!(r.rss("r") < 30 * MIB, "r let its memory go: {}", r.rss("r"));
    counted(&st, &[("sleeps", 1), ("evictions", 2)]);
    // Back to a: a wake, where without r's eviction it would have been a load.
    assert_eq!(r.work("a").await.0, 200);
    counted(&r.status().await, &[("wakes", 1), ("loads", 3)]);
    r.broker.shutdown().await;
}
