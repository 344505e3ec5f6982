//! Hugging Face Text Generation Inference: its router serves Prometheus text on `/metrics`.
//! `tgi_batch_current_size` is the requests in the running batch, `tgi_queue_size` those
//! waiting. TGI gives no KV-cache figure.

use super::prometheus::SingleGauges;
use super::{ScrapeError, ServerKind, ServerMetrics};

pub const PATH: &str = "/metrics";

pub fn parse(body: &str) -> Result<ServerMetrics, ScrapeError> {
    SingleGauges {
        kind: ServerKind::Tgi,
        running: "tgi_batch_current_size",
        waiting: "tgi_queue_size",
        kv_usage: None,
    }
    .read(body)
}
