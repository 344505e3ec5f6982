//! safetensors headers (one file, or a directory of shards with `model.safetensors.index.json`)
//! and the `config.json` beside them, which says the attention shape.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::PlanError;
use crate::model::{ModelFormat, ModelInfo, sanitize_name, set_period};

/// The format's own limit on a header.
const MAX_HEADER: u64 = 100 << 20;

fn bad(path: &Path, why: impl Into<String>) -> PlanError {
    PlanError::Safetensors {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// Bytes per element of a dtype, in halves (so that 4-bit `F4` is exact).
fn half_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" | "C64" => 16,
        "F32" | "I32" | "U32" => 8,
        "F16" | "BF16" | "I16" | "U16" => 4,
        "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "I8" | "U8" | "BOOL" => 2,
        "F4" | "F6_E2M3" | "F6_E3M2" => 1,
        _ => return None,
    })
}

/// One shard's tensors: (total bytes, bytes per layer index).
struct Shard {
    bytes: u64,
    layers: Vec<(u32, u64)>,
    count: u64,
}

fn layer_of(name: &str) -> Option<u32> {
    let i = name.find("layers.")?;
    let rest = &name[i + 7..];
    rest.split('.').next()?.parse().ok()
}

fn read_shard(path: &Path) -> Result<Shard, PlanError> {
    let mut f = File::open(path).map_err(|e| PlanError::io(path, e))?;
    let len = f.metadata().map_err(|e| PlanError::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad(path, format!("only {len} bytes: too short for a header")))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Err(bad(
            path,
            format!("the header claims {n} bytes (the format allows 100 MiB)"),
        ));
    }
    if n > len - 8 {
        return Err(bad(
            path,
            format!(
                "the header claims {n} bytes but the file has {} after the length",
                len - 8
            ),
        ));
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text)
        .map_err(|e| PlanError::io(path, e))?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&text)
        .map_err(|e| bad(path, format!("the header is not a JSON object: {e}")))?;
    let data_len = len - 8 - n;
    let mut shard = Shard {
        bytes: 0,
        layers: Vec::new(),
        count: 0,
    };
    for (name, t) in &header {
        if name == "__metadata__" {
            continue;
        }
        let shown = sanitize_name(name);
        let dtype = t.get("dtype").and_then(Value::as_str).unwrap_or("");
        let hb = half_bytes(dtype).ok_or_else(|| {
            bad(
                path,
                format!(
                    "tensor {shown} has unknown dtype {:?}",
                    sanitize_name(dtype)
                ),
            )
        })?;
        let shape = t
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(path, format!("tensor {shown} has no shape")))?;
        let mut elems: u64 = 1;
        for d in shape {
            let d = d
                .as_u64()
                .ok_or_else(|| bad(path, format!("tensor {shown} has a bad dimension")))?;
            elems = elems
                .checked_mul(d)
                .ok_or_else(|| bad(path, format!("tensor {shown} is too large")))?;
        }
        let bytes = elems
            .checked_mul(hb)
            .map(|h| h.div_ceil(2))
            .ok_or_else(|| bad(path, format!("tensor {shown} is too large")))?;
        let offsets = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
        match offsets {
            Some((start, end)) if end >= start && end - start == bytes && end <= data_len => {}
            Some((start, end)) if end <= data_len && end >= start => {
                return Err(bad(
                    path,
                    format!(
                        "tensor {shown}: its shape and dtype make {bytes} bytes but its offsets \
                         span {}",
                        end - start
                    ),
                ));
            }
            Some(_) => {
                return Err(bad(
                    path,
                    format!(
                        "tensor {shown}'s data runs past the end of the file: truncated download?"
                    ),
                ));
            }
            None => return Err(bad(path, format!("tensor {shown} has no data_offsets"))),
        }
        shard.bytes = shard.bytes.saturating_add(bytes);
        shard.count += 1;
        if let Some(l) = layer_of(name) {
            shard.layers.push((l, bytes));
        }
    }
    Ok(shard)
}

/// The shard files of a model directory.
fn shards_of(dir: &Path) -> Result<Vec<PathBuf>, PlanError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read(&index).map_err(|e| PlanError::io(&index, e))?;
        let v: Value =
            serde_json::from_slice(&text).map_err(|e| bad(&index, format!("not JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| bad(&index, "no weight_map object"))?;
        let mut names = BTreeSet::new();
        for file in map.values() {
            let file = file
                .as_str()
                .ok_or_else(|| bad(&index, "a weight_map value is not a file name"))?;
            // Shards live beside the index; a name that climbs out is refused.
            if file.contains('/') || file.contains('\\') || file == ".." || file.is_empty() {
                return Err(bad(
                    &index,
                    format!(
                        "shard name {:?} is not a plain file name",
                        sanitize_name(file)
                    ),
                ));
            }
            names.insert(file.to_string());
        }
        return Ok(names.into_iter().map(|n| dir.join(n)).collect());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| PlanError::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(PlanError::Model {
            path: dir.display().to_string(),
            why: "a directory without .safetensors files or a model.safetensors.index.json".into(),
        });
    }
    Ok(files)
}

/// Reads a safetensors model: a `.safetensors` file or a directory of shards, with its
/// `config.json`.
pub fn read_model(path: &Path) -> Result<ModelInfo, PlanError> {
    let (dir, shards) = if path.is_dir() {
        (path.to_path_buf(), shards_of(path)?)
    } else {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (dir, vec![path.to_path_buf()])
    };
    let mut weights = 0u64;
    let mut count = 0u64;
    let mut per_layer: Vec<(u32, u64)> = Vec::new();
    for s in &shards {
        let shard = read_shard(s)?;
        weights = weights.saturating_add(shard.bytes);
        count += shard.count;
        per_layer.extend(shard.layers);
    }
    let config_path = dir.join("config.json");
    let text = std::fs::read(&config_path).map_err(|e| PlanError::Model {
        path: config_path.display().to_string(),
        why: format!("cannot read the model's config.json (needed for the attention shape): {e}"),
    })?;
    let root: Value = serde_json::from_slice(&text)
        .map_err(|e| bad(&config_path, format!("config.json is not JSON: {e}")))?;
    let mut info = from_config(&root).map_err(|why| PlanError::Model {
        path: config_path.display().to_string(),
        why,
    })?;
    info.weights_bytes = weights;
    info.tensor_count = count;
    let mut layers = vec![0u64; info.block_count as usize];
    for (l, b) in per_layer {
        if let Some(slot) = layers.get_mut(l as usize) {
            *slot += b;
        }
    }
    info.layer_weights = layers;
    Ok(info)
}

/// The attention shape from a Hugging Face `config.json` (the `text_config` of a multimodal
/// model when it has one).
pub fn from_config(root: &Value) -> Result<ModelInfo, String> {
    let cfg = root
        .get("text_config")
        .filter(|t| t.get("num_hidden_layers").is_some())
        .unwrap_or(root);
    let num = |k: &str| cfg.get(k).and_then(Value::as_u64);
    let arch = cfg
        .get("model_type")
        .or_else(|| root.get("model_type"))
        .and_then(Value::as_str)
        .or_else(|| {
            root.get("architectures")
                .and_then(|a| a.get(0))
                .and_then(Value::as_str)
        })
        .map(sanitize_name)
        .unwrap_or_else(|| "unknown".into());
    let layers = num("num_hidden_layers").ok_or("no num_hidden_layers")?;
    let layers = u32::try_from(layers)
        .ok()
        .filter(|&l| l <= 100_000)
        .ok_or("num_hidden_layers is not a layer count")?;
    let heads = num("num_attention_heads").ok_or("no num_attention_heads")?;
    let kv_heads = num("num_key_value_heads").unwrap_or(heads);
    let hidden = num("hidden_size");
    let head_dim = num("head_dim")
        .or_else(|| hidden.map(|h| h / heads.max(1)))
        .ok_or("no head_dim or hidden_size")?;
    let mut head_count_kv = vec![kv_heads; layers as usize];
    let mut swa = vec![false; layers as usize];
    let window = num("sliding_window").filter(|&w| w > 0);
    let uses_window = cfg
        .get("use_sliding_window")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut notes = Vec::new();
    if let Some(types) = cfg.get("layer_types").and_then(Value::as_array) {
        for (l, t) in types.iter().take(layers as usize).enumerate() {
            match t.as_str().unwrap_or("") {
                "sliding_attention" | "chunked_attention" => swa[l] = true,
                "full_attention" | "attention" => {}
                // Linear-attention and state-space layers keep no KV cache.
                _ => head_count_kv[l] = 0,
            }
        }
    } else if window.is_some() && uses_window {
        match arch.as_str() {
            "gemma2" => set_period(&mut swa, 2),
            "gemma3" | "gemma3_text" => set_period(&mut swa, 6),
            "cohere2" => set_period(&mut swa, 4),
            _ => swa.iter_mut().for_each(|s| *s = true),
        }
    }
    if num("kv_lora_rank").is_some() {
        notes.push(format!(
            "{arch} compresses its KV cache (multi-head latent attention): the KV figure follows \
             the attention heads and may be above what the runtime allocates"
        ));
    }
    if head_count_kv.contains(&0) {
        notes.push(
            "linear-attention or state-space layers keep a state that is not counted here".into(),
        );
    }
    if window.is_none() && swa.iter().any(|&s| s) {
        notes
            .push("layer_types names sliding layers but no sliding_window: counted in full".into());
        swa.iter_mut().for_each(|s| *s = false);
    }
    Ok(ModelInfo {
        format: ModelFormat::Safetensors,
        architecture: arch,
        weights_bytes: 0,
        tensor_count: 0,
        block_count: layers,
        context_length: num("max_position_embeddings"),
        embedding_length: hidden,
        feed_forward_length: num("intermediate_size"),
        vocab_size: num("vocab_size").or_else(|| root.get("vocab_size").and_then(Value::as_u64)),
        head_count: vec![heads; layers as usize],
        head_count_kv,
        key_length: head_dim,
        value_length: head_dim,
        sliding_window: window,
        swa_layers: swa,
        recurrent: None,
        layer_weights: Vec::new(),
        mla: false,
        experts: None,
        notes,
    })
}
