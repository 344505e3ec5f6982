//! Each server kind read from a real local HTTP server serving a recorded sample of that
//! server's output, with exact expected figures.

mod scrape_support;

use memwarden_probe::scrape::{
    LoadedModel, ScrapeConfig, ScrapeError, Scraper, ServerKind, ServerMetrics,
};
use scrape_support::{JSON, PROMETHEUS, me, root, serve_fixed};

const LLAMACPP: &str = include_str!("scrape_samples/llamacpp_metrics.txt");
const LLAMACPP_CURRENT: &str = include_str!("scrape_samples/llamacpp_metrics_current.txt");
const VLLM_V1: &str = include_str!("scrape_samples/vllm_v1_metrics.txt");
const VLLM_V0: &str = include_str!("scrape_samples/vllm_v0_metrics.txt");
const OLLAMA: &str = include_str!("scrape_samples/ollama_ps.json");
const SGLANG: &str = include_str!("scrape_samples/sglang_server_info.json");
const TGI: &str = include_str!("scrape_samples/tgi_metrics.txt");

fn scrape(kind: ServerKind, content_type: &'static str, body: &'static str) -> ServerMetrics {
    let server = serve_fixed(kind.path(), content_type, body);
    let mut s = Scraper::new(ScrapeConfig::default());
    let m = s.scrape(&root(), me(), kind, server.addr).unwrap();
    assert_eq!(server.hits(), 1);
    m
}

#[test]
fn llamacpp_with_kv_metrics() {
    let m = scrape(ServerKind::LlamaCpp, PROMETHEUS, LLAMACPP);
    assert_eq!(m.kind, ServerKind::LlamaCpp);
    assert_eq!(m.kv_cache_usage_ratio, Some(0.228516));
    assert_eq!(m.kv_cache_bytes, None);
    assert_eq!(m.requests_running, Some(1));
    assert_eq!(m.requests_waiting, Some(2));
    assert!(m.models.is_empty());
}

#[test]
fn llamacpp_current_build_has_no_kv_ratio() {
    let m = scrape(ServerKind::LlamaCpp, PROMETHEUS, LLAMACPP_CURRENT);
    assert_eq!(m.kv_cache_usage_ratio, None);
    assert_eq!(m.requests_running, Some(0));
    assert_eq!(m.requests_waiting, Some(0));
}

#[test]
fn vllm_v1() {
    let m = scrape(ServerKind::Vllm, PROMETHEUS, VLLM_V1);
    assert_eq!(m.kv_cache_usage_ratio, Some(0.4375));
    assert_eq!(m.requests_running, Some(3));
    assert_eq!(m.requests_waiting, Some(7));
    assert_eq!(
        m.models,
        vec![LoadedModel {
            name: "Qwen/Qwen3-8B".into(),
            size_bytes: None,
            vram_bytes: None
        }]
    );
}

#[test]
fn vllm_v0_cache_metric_name() {
    let m = scrape(ServerKind::Vllm, PROMETHEUS, VLLM_V0);
    assert_eq!(m.kv_cache_usage_ratio, Some(0.0125));
    assert_eq!(m.requests_running, Some(1));
    assert_eq!(m.requests_waiting, Some(0));
    assert_eq!(m.models[0].name, "/models/llama-2-7b");
}

#[test]
fn vllm_data_parallel_engines_add_up() {
    let body = "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 2.0\n\
                vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 5.0\n\
                vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 1.0\n\
                vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 0.0\n\
                vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n\
                vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.75\n";
    let m = scrape(ServerKind::Vllm, PROMETHEUS, body);
    assert_eq!(m.requests_running, Some(7));
    assert_eq!(m.requests_waiting, Some(1));
    assert_eq!(m.kv_cache_usage_ratio, Some(0.75));
    assert_eq!(m.models.len(), 1);
}

#[test]
fn ollama_loaded_models() {
    let m = scrape(ServerKind::Ollama, JSON, OLLAMA);
    assert_eq!(
        m.models,
        vec![
            LoadedModel {
                name: "qwen3:32b".into(),
                size_bytes: Some(24_914_378_752),
                vram_bytes: Some(21_474_836_480),
            },
            LoadedModel {
                name: "nomic-embed-text:latest".into(),
                size_bytes: Some(849_018_880),
                vram_bytes: Some(849_018_880),
            },
        ]
    );
    assert_eq!(m.requests_running, None);
}

#[test]
fn ollama_with_nothing_loaded() {
    let m = scrape(ServerKind::Ollama, JSON, "{\"models\":[]}");
    assert!(m.models.is_empty());
}

#[test]
fn sglang_kv_pool_from_server_info() {
    let m = scrape(ServerKind::Sglang, JSON, SGLANG);
    // 34.51 GiB of KV pool and 7.11 GiB of weights on each of 2 tensor-parallel ranks.
    let gib = (1u64 << 30) as f64;
    assert_eq!(m.kv_cache_bytes, Some((34.51 * gib * 2.0).round() as u64));
    assert_eq!(
        m.models,
        vec![LoadedModel {
            name: "Qwen/Qwen2.5-7B-Instruct".into(),
            size_bytes: None,
            vram_bytes: Some((7.11 * gib * 2.0).round() as u64),
        }]
    );
}

#[test]
fn names_from_servers_are_sanitised() {
    let body =
        "{\"models\":[{\"name\":\"evil\\u001b]0;pwned\\u0007\",\"size\":1,\"size_vram\":1}]}";
    let m = scrape(ServerKind::Ollama, JSON, body);
    assert_eq!(m.models[0].name, "evil ]0;pwned");
}

#[test]
fn a_prometheus_page_of_another_server_is_not_read_as_zeros() {
    let server = serve_fixed("/metrics", PROMETHEUS, VLLM_V1);
    let mut s = Scraper::new(ScrapeConfig::default());
    let e = s
        .scrape(&root(), me(), ServerKind::LlamaCpp, server.addr)
        .unwrap_err();
    assert!(
        matches!(e, ScrapeError::Malformed(ref w) if w.contains("llamacpp")),
        "{e}"
    );
}

#[test]
fn tgi_batch_and_queue() {
    let m = scrape(ServerKind::Tgi, PROMETHEUS, TGI);
    assert_eq!(m.kind, ServerKind::Tgi);
    assert_eq!(m.requests_running, Some(12));
    assert_eq!(m.requests_waiting, Some(3));
    assert_eq!(m.kv_cache_usage_ratio, None);
}
