//! llama.cpp's `llama-server` (started with `--metrics`): Prometheus text on `/metrics`.
//!
//! `llamacpp:requests_processing` and `llamacpp:requests_deferred` are the running and queued
//! requests. `llamacpp:kv_cache_usage_ratio` (0..1) and `llamacpp:kv_cache_tokens` were served
//! by builds up to mid-2025 and are gone from newer ones; their absence is not an error.

use super::prometheus::SingleGauges;
use super::{ScrapeError, ServerKind, ServerMetrics};

pub const PATH: &str = "/metrics";

pub fn parse(body: &str) -> Result<ServerMetrics, ScrapeError> {
    SingleGauges {
        kind: ServerKind::LlamaCpp,
        running: "llamacpp:requests_processing",
        waiting: "llamacpp:requests_deferred",
        kv_usage: Some("llamacpp:kv_cache_usage_ratio"),
    }
    .read(body)
}
