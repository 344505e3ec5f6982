//! Ollama: `GET /api/ps` lists the loaded models, each with `size` (its whole footprint:
//! weights, KV cache and compute graph) and `size_vram` (the part on the GPU; `size_vram <
//! size` means layers were left on the CPU).

use serde::Deserialize;

use super::{LoadedModel, ScrapeError, ServerKind, ServerMetrics};
use crate::sanitize::{NAME_MAX, sanitize};

pub const PATH: &str = "/api/ps";

#[derive(Deserialize)]
struct Ps {
    models: Vec<PsModel>,
}

#[derive(Deserialize)]
struct PsModel {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    size_vram: Option<u64>,
}

pub fn parse(body: &str) -> Result<ServerMetrics, ScrapeError> {
    let ps: Ps = serde_json::from_str(body)
        .map_err(|e| ScrapeError::Malformed(format!("not an /api/ps answer: {e}")))?;
    let models = ps
        .models
        .into_iter()
        .map(|m| LoadedModel {
            name: sanitize(
                m.name.as_deref().or(m.model.as_deref()).unwrap_or("?"),
                NAME_MAX,
            ),
            size_bytes: m.size,
            vram_bytes: m.size_vram,
        })
        .collect();
    Ok(ServerMetrics {
        kind: ServerKind::Ollama,
        kv_cache_usage_ratio: None,
        kv_cache_bytes: None,
        requests_running: None,
        requests_waiting: None,
        models,
    })
}
