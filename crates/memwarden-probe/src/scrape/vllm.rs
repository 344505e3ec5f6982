//! vLLM's OpenAI-compatible server: Prometheus text on `/metrics`.
//!
//! `vllm:num_requests_running` / `vllm:num_requests_waiting` count requests;
//! `vllm:kv_cache_usage_perc` (V1 engine) or `vllm:gpu_cache_usage_perc` (V0) is the fraction
//! of KV-cache blocks in use, 0..1 despite the name. Every series carries `model_name`; a
//! data-parallel server has one series per `engine`: requests add up, and the KV usage shown
//! is the fullest engine's, since that one runs out first.

use super::prometheus;
use super::{LoadedModel, ScrapeError, ServerKind, ServerMetrics, count, ratio};
use crate::sanitize::{NAME_MAX, sanitize};

pub const PATH: &str = "/metrics";

pub fn parse(body: &str) -> Result<ServerMetrics, ScrapeError> {
    let samples = prometheus::parse(body).map_err(|e| ScrapeError::Malformed(e.to_string()))?;
    let mut running = None::<u64>;
    let mut waiting = None::<u64>;
    let mut kv_v1 = None::<f64>;
    let mut kv_v0 = None::<f64>;
    let mut models: Vec<LoadedModel> = Vec::new();
    for s in &samples {
        let slot = match s.name {
            "vllm:num_requests_running" => &mut running,
            "vllm:num_requests_waiting" => &mut waiting,
            "vllm:kv_cache_usage_perc" => {
                kv_v1 = max_opt(kv_v1, ratio(s.value));
                continue;
            }
            "vllm:gpu_cache_usage_perc" => {
                kv_v0 = max_opt(kv_v0, ratio(s.value));
                continue;
            }
            _ => continue,
        };
        if let Some(n) = count(s.value) {
            *slot = Some(slot.unwrap_or(0) + n);
        }
        if let Some(name) = s.label("model_name") {
            let name = sanitize(name, NAME_MAX);
            if !models.iter().any(|m| m.name == name) {
                models.push(LoadedModel {
                    name,
                    size_bytes: None,
                    vram_bytes: None,
                });
            }
        }
    }
    if running.is_none() && waiting.is_none() {
        return Err(ScrapeError::Malformed(
            "no vllm: request metrics in the answer".into(),
        ));
    }
    Ok(ServerMetrics {
        kind: ServerKind::Vllm,
        kv_cache_usage_ratio: kv_v1.or(kv_v0),
        kv_cache_bytes: None,
        requests_running: running,
        requests_waiting: waiting,
        models,
    })
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
