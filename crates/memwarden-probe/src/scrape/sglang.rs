//! SGLang: `GET /get_server_info` answers its server arguments (`model_path`,
//! `served_model_name`, `tp_size`, ...) and `internal_states`, one per data-parallel rank, each
//! with `memory_usage: {weight, kvcache, token_capacity}` in GiB as measured on one tensor-
//! parallel rank. The KV pool and the weights of the whole server are that times `tp_size`.
//! The figures are rounded to 0.01 GiB by the server: an estimate, within about 5 MiB a rank.

use serde_json::Value;

use super::{LoadedModel, ScrapeError, ServerKind, ServerMetrics};
use crate::sanitize::{NAME_MAX, sanitize};

pub const PATH: &str = "/get_server_info";

const GIB: f64 = (1u64 << 30) as f64;

pub fn parse(body: &str) -> Result<ServerMetrics, ScrapeError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| ScrapeError::Malformed(format!("not SGLang server info: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(ScrapeError::Malformed(
            "not SGLang server info: not an object".into(),
        ));
    };
    let model_path = obj.get("model_path").and_then(Value::as_str);
    let states: Vec<&Value> = match obj.get("internal_states") {
        Some(Value::Array(a)) => a.iter().collect(),
        // Older releases put one rank's figures at the top level.
        _ if obj.contains_key("memory_usage") => vec![&v],
        _ => Vec::new(),
    };
    if model_path.is_none() && states.is_empty() {
        return Err(ScrapeError::Malformed(
            "not SGLang server info: no model_path nor internal_states".into(),
        ));
    }
    let tp = match obj.get("tp_size") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=4096).contains(n))
            .ok_or_else(|| ScrapeError::Malformed(format!("tp_size {v} is not a rank count")))?,
    };
    let mut kv_gib = None::<f64>;
    let mut weight_gib = None::<f64>;
    for s in &states {
        let Some(mem) = s.get("memory_usage") else {
            continue;
        };
        if let Some(k) = gib(mem.get("kvcache")) {
            kv_gib = Some(kv_gib.unwrap_or(0.0) + k);
        }
        if let Some(w) = gib(mem.get("weight")) {
            weight_gib = Some(weight_gib.unwrap_or(0.0) + w);
        }
    }
    let bytes = |g: f64| (g * GIB * tp as f64).round() as u64;
    let name = obj
        .get("served_model_name")
        .and_then(Value::as_str)
        .or(model_path);
    let models = name
        .map(|n| LoadedModel {
            name: sanitize(n, NAME_MAX),
            size_bytes: None,
            vram_bytes: weight_gib.map(bytes),
        })
        .into_iter()
        .collect();
    Ok(ServerMetrics {
        kind: ServerKind::Sglang,
        kv_cache_usage_ratio: None,
        kv_cache_bytes: kv_gib.map(bytes),
        requests_running: None,
        requests_waiting: None,
        models,
    })
}

/// A size in GiB as the server prints it; a negative, infinite or absurd one (over 1 PiB) is
/// not a reading.
fn gib(v: Option<&Value>) -> Option<f64> {
    let g = v?.as_f64()?;
    (g.is_finite() && (0.0..1024.0 * 1024.0).contains(&g)).then_some(g)
}
