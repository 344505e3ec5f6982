//! The files under deploy/ stay true to the code: the example configuration parses, and every
//! metric the Grafana dashboard queries is one the broker exports.

mod common;

use std::path::Path;

use common::*;
use memwarden_broker::Config;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_configuration_parses() {
    let cfg = Config::parse(&deploy("memwarden.toml"), "memwarden.toml", None).unwrap();
    assert_eq!(cfg.consumers.len(), 3);
    assert!(cfg.consumers[0].self_managed);
    let vllm = cfg.consumers[2]
        .sleep
        .as_ref()
        .expect("the vLLM server sleeps");
    assert_eq!(vllm.engine, memwarden_broker::config::SleepEngine::Vllm);
    // Its port is chosen at each start, and it goes first, in batches.
    let v = &cfg.consumers[2];
    assert_eq!(v.upstream.as_ref().map(|u| u.port), Some(0));
    assert!(v.start.as_ref().unwrap().iter().any(|w| w == "${PORT}"));
    assert_eq!(
        (v.priority, v.min_residency),
        (10, Some(std::time::Duration::from_secs(20)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_exported_metrics() {
    let dash: serde_json::Value = serde_json::from_str(&deploy("grafana-dashboard.json")).unwrap();
    // Every string of the dashboard, so that a query in a row, a variable or an annotation
    // counts as much as a panel's.
    let mut names = Vec::new();
    metric_names(&dash, &mut names);
    assert!(names.len() > 10);
    let a = TestConsumer::spawn("a", "1MiB", "normal");
    let toml = pool_toml("64MiB", "") + &consumer_toml("a", a.port, "1MiB", "");
    let r = start(&toml).await;
    let (code, text) = http("GET", format!("http://{}/metrics", r.addr()), "").await;
    assert_eq!(code, 200);
    promtool(&text);
    for n in names {
        assert!(
            text.contains(&format!("# TYPE {n} ")),
            "the dashboard queries {n}, which is not exported"
        );
    }
    r.shutdown().await;
}

/// The `memwarden_…` names in every string under `v`.
fn metric_names(v: &serde_json::Value, names: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("memwarden_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.push(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| metric_names(x, names)),
        serde_json::Value::Object(o) => o.values().for_each(|x| metric_names(x, names)),
        _ => {}
    }
}

/// deploy/memwarden.toml's shape, scaled from GiB to 10 MiB on a ram pool: a self-managed
/// Ollama (60) that may share the pool with ComfyUI (130), and a vLLM (180) the broker starts,
/// on 240.
fn deploy_like(ollama: u16, comfy: u16, vllm: u16) -> String {
    pool_toml("240MiB", "")
        + &format!(
            "[[consumer]]\nname = \"ollama\"\npool = \"ram\"\nresident = \"60MiB\"\n\
             upstream = \"http://127.0.0.1:{ollama}\"\nhealth = \"GET /health\"\n\
             self_managed = true\ncoexist_with = [\"comfyui\"]\n"
        )
        + &consumer_toml("comfyui", comfy, "130MiB", "")
        + &format!(
            "[[consumer]]\nname = \"vllm\"\npool = \"ram\"\nresident = \"180MiB\"\n\
             upstream = \"http://127.0.0.1:{vllm}\"\nhealth = \"GET /health\"\n\
             start = [\"{BIN}\", \"--size\", \"180MiB\", \"--loaded\", \"--port\", \"{vllm}\", \"--name\", \"vllm\"]\n\
             stop_timeout = \"2s\"\n"
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_shape_admits_vllm_beside_an_idle_ollama() {
    // An Ollama that holds no model: its process is there, its memory is not.
    let ollama = TestConsumer::spawn("ollama", "60MiB", "normal");
    let comfy = TestConsumer::spawn("comfyui", "130MiB", "normal");
    let vllm = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = start(&deploy_like(ollama.port, comfy.port, vllm)).await;
    let base = format!("http://{}", r.addr());
    let st = wait_for(&r, std::time::Duration::from_secs(5), |st| {
        consumer(st, "ollama")["measured_bytes"].is_u64()
    })
    .await;
    assert!(consumer(&st, "ollama")["resident_bytes"].as_u64().unwrap() < 30 << 20);
    let (code, body) = http("GET", format!("{base}/c/vllm/work"), "").await;
    assert_eq!((code, body.as_str()), (200, "vllm ok loaded=true\n"));
    // Ollama is still served beside it.
    let (code, _) = http("GET", format!("{base}/c/ollama/work"), "").await;
    assert_eq!(code, 200);
    r.shutdown().await;
}
