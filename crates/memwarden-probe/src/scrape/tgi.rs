//! Hugging Face Text Generation Inference: its router serves Prometheus text on `/metrics`.
//! `tgi_batch_current_size` is the requests in the running batch, `tgi_queue_size` those
//! waiting. TGI gives no KV-cache figure.

use super::prometheus;
use super::{ScrapeError, ServerKind, ServerMetrics, count};

pub const PATH: &str = "/metrics";

pub fn parse(body: &str) -> Result<ServerMetrics, ScrapeError> {
    let samples = prometheus::parse(body).map_err(|e| ScrapeError::Malformed(e.to_string()))?;
    let find = |name: &str| samples.iter().find(|s| s.name == name);
    let running = find("tgi_batch_current_size");
    let waiting = find("tgi_queue_size");
    if running.is_none() && waiting.is_none() {
        return Err(ScrapeError::Malformed(
            "no tgi_ batch or queue metrics in the answer".into(),
        ));
    }
    Ok(ServerMetrics {
        kind: ServerKind::Tgi,
        kv_cache_usage_ratio: None,
        kv_cache_bytes: None,
        requests_running: running.and_then(|s| count(s.value)),
        requests_waiting: waiting.and_then(|s| count(s.value)),
        models: Vec::new(),
    })
}
