//! llama.cpp's `llama-server` (started with `--metrics`): Prometheus text on `/metrics`.
//!
//! `llamacpp:requests_processing` and `llamacpp:requests_deferred` are the running and queued
//! requests. `llamacpp:kv_cache_usage_ratio` (0..1) and `llamacpp:kv_cache_tokens` were served
//! by builds up to mid-2025 and are gone from newer ones; their absence is not an error.

use super::prometheus::{self, Sample};
use super::{ScrapeError, ServerKind, ServerMetrics, count, ratio};

pub const PATH: &str = "/metrics";

pub fn parse(body: &str) -> Result<ServerMetrics, ScrapeError> {
    let samples = prometheus::parse(body).map_err(|e| ScrapeError::Malformed(e.to_string()))?;
    let find = |name: &str| -> Option<&Sample<'_>> { samples.iter().find(|s| s.name == name) };
    let running = find("llamacpp:requests_processing");
    let waiting = find("llamacpp:requests_deferred");
    if running.is_none() && waiting.is_none() {
        return Err(ScrapeError::Malformed(
            "no llamacpp: request metrics in the answer".into(),
        ));
    }
    Ok(ServerMetrics {
        kind: ServerKind::LlamaCpp,
        kv_cache_usage_ratio: find("llamacpp:kv_cache_usage_ratio").and_then(|s| ratio(s.value)),
        kv_cache_bytes: None,
        requests_running: running.and_then(|s| count(s.value)),
        requests_waiting: waiting.and_then(|s| count(s.value)),
        models: Vec::new(),
    })
}
