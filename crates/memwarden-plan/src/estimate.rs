//! How much memory a model needs: weights from the file's header, the KV cache as llama.cpp
//! allocates it (exact to the byte), recurrent state, and a labelled estimate of compute and
//! runtime overhead. Given a VRAM size, whether it fits and how many layers could be offloaded.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use memwarden_probe::root::open_regular;
use serde::Serialize;

use crate::PlanError;
use crate::ggml::{self, TypeLayout};
use crate::gguf;
use crate::model::{ModelFormat, ModelInfo};
use crate::safetensors;

/// Tokens llama.cpp processes per micro-batch by default (`-ub`).
pub const DEFAULT_UBATCH: u64 = 512;
/// What a GPU runtime keeps for itself besides the model's buffers (context, allocator slack).
pub const RUNTIME_RESERVE_BYTES: u64 = 256 << 20;

/// The type of the K and V cache (`--kv-type`, llama.cpp's `-ctk`/`-ctv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvType(u32);

/// The cache types llama.cpp accepts.
const KV_TYPES: [&str; 9] = [
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1",
];

impl KvType {
    pub const F16: KvType = KvType(1);
    pub const Q8_0: KvType = KvType(8);
    pub const Q4_0: KvType = KvType(2);

    pub fn layout(self) -> TypeLayout {
        ggml::layout(self.0).unwrap_or(TypeLayout {
            name: "f16",
            block_elems: 1,
            block_bytes: 2,
        })
    }

    pub fn is_quantized(self) -> bool {
        self.layout().block_elems > 1
    }
}

impl Default for KvType {
    fn default() -> Self {
        KvType::F16
    }
}

impl FromStr for KvType {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KV_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(s))
            .and_then(|t| ggml::id_of(t))
            .map(KvType)
            .ok_or_else(|| {
                PlanError::BadArgument(format!(
                    "unknown KV cache type {:?} (expected one of {})",
                    memwarden_probe::sanitize::sanitize(s, 40),
                    KV_TYPES.join(", ")
                ))
            })
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.layout().name)
    }
}

impl Serialize for KvType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.layout().name)
    }
}

/// How the model will be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstimateOptions {
    /// Context in tokens, the total over all parallel slots (llama.cpp's `-c`); `None` uses the
    /// model's trained context length.
    pub ctx: Option<u64>,
    /// Parallel sequences (`-np`).
    pub parallel: u32,
    /// The type of both caches (llama.cpp's `-ctk` and `-ctv` together).
    pub kv_type: KvType,
    /// The K cache's type when it differs (`-ctk`).
    pub kv_type_k: Option<KvType>,
    /// The V cache's type when it differs (`-ctv`).
    pub kv_type_v: Option<KvType>,
    pub flash_attn: bool,
    /// Free VRAM to fit into; `None` skips the fit question.
    pub vram_bytes: Option<u64>,
    /// Tokens per micro-batch (`-ub`).
    pub ubatch: u64,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        EstimateOptions {
            ctx: None,
            parallel: 1,
            kv_type: KvType::F16,
            kv_type_k: None,
            kv_type_v: None,
            flash_attn: false,
            vram_bytes: None,
            ubatch: DEFAULT_UBATCH,
        }
    }
}

/// The answer. Weights and KV cache are exact for the file and options given; compute and
/// runtime overhead are estimates; the whole is an estimate of what a runtime will take.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub format: ModelFormat,
    pub architecture: String,
    pub layers: u32,
    /// Context in tokens as asked (or trained).
    pub context: u64,
    /// KV cells allocated: the context padded as llama.cpp pads it.
    pub kv_size: u64,
    /// KV cells of a sliding-window layer.
    pub kv_size_swa: Option<u64>,
    pub parallel: u32,
    /// The K cache's type (kept under this name, which says both when they agree).
    pub kv_type: KvType,
    pub kv_type_v: KvType,
    pub flash_attn: bool,
    /// Tokens per micro-batch the compute buffers are sized for (never more than the cells).
    pub ubatch: u64,
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub kv_k_bytes: u64,
    pub kv_v_bytes: u64,
    pub recurrent_state_bytes: u64,
    /// Compute buffers (activations, attention scores, logits): an estimate.
    pub compute_bytes: u64,
    /// Runtime reserve: an estimate.
    pub runtime_bytes: u64,
    pub overhead_bytes: u64,
    pub total_bytes: u64,
    /// True: every figure is an estimate of what a runtime allocates.
    pub estimate: bool,
    pub vram_bytes: Option<u64>,
    pub fits: Option<bool>,
    /// Repeating layers that fit in `vram_bytes` (llama.cpp `-ngl`); GGUF only.
    pub gpu_layers: Option<u32>,
    pub notes: Vec<String>,
}

/// Estimates the memory the model at `path` needs: a GGUF file, a safetensors file, or a
/// directory of safetensors shards (with `config.json`). Reads headers only.
pub fn estimate_file(path: &Path, opts: &EstimateOptions) -> Result<Estimate, PlanError> {
    let info = read_model(path)?;
    estimate(&info, opts).map_err(|why| PlanError::Model {
        path: path.display().to_string(),
        why,
    })
}

/// Reads a model's shape from its file or directory, telling the format by its content.
pub fn read_model(path: &Path) -> Result<ModelInfo, PlanError> {
    let meta = std::fs::metadata(path).map_err(|e| PlanError::io(path, e))?;
    if meta.is_dir() {
        return safetensors::read_model(path);
    }
    let mut magic = [0u8; 4];
    // Only a regular file is opened: a FIFO in its place would hang the open (and a reload
    // of the broker with it).
    let mut f = open_regular(path).map_err(|e| PlanError::io(path, e))?;
    let n = f.read(&mut magic).map_err(|e| PlanError::io(path, e))?;
    if n == 4 && &magic == b"GGUF" {
        let header = gguf::read_split(path)?;
        return ModelInfo::from_gguf(&header).map_err(|why| PlanError::Gguf {
            path: path.display().to_string(),
            why,
        });
    }
    let is_st = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_st {
        return safetensors::read_model(path);
    }
    let is_index = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".safetensors.index.json"));
    if is_index {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        return safetensors::read_model(dir.unwrap_or(Path::new(".")));
    }
    Err(PlanError::Model {
        path: path.display().to_string(),
        why: "neither a GGUF file nor a .safetensors file or directory".into(),
    })
}

fn pad(n: u64, to: u64) -> Option<u64> {
    n.checked_next_multiple_of(to)
}

fn too_large() -> String {
    "the figures overflow 64 bits (is the context length sane?)".into()
}

/// The estimate for a model already read.
pub fn estimate(info: &ModelInfo, opts: &EstimateOptions) -> Result<Estimate, String> {
    if opts.ubatch == 0 {
        return Err("the micro-batch must be at least 1 token".into());
    }
    if opts.parallel == 0 {
        return Err("--parallel must be at least 1".into());
    }
    let type_k = opts.kv_type_k.unwrap_or(opts.kv_type);
    let type_v = opts.kv_type_v.unwrap_or(opts.kv_type);
    let (kl, vl) = (type_k.layout(), type_v.layout());
    if type_v.is_quantized() && !opts.flash_attn {
        return Err(format!(
            "a quantised V cache ({}) needs flash attention: add --flash-attn, or keep V in f16",
            vl.name
        ));
    }
    let context = match opts.ctx.or(info.context_length) {
        Some(0) => return Err("the context must be at least 1 token".into()),
        Some(c) => c,
        None => return Err("the model does not say its context length: pass --ctx".into()),
    };
    if context < opts.parallel as u64 {
        return Err(format!(
            "a context of {context} tokens cannot be shared by {} slots",
            opts.parallel
        ));
    }
    let mut notes = info.notes.clone();
    if let Some(trained) = info.context_length.filter(|&t| context > t) {
        notes.push(format!(
            "the context ({context}) is beyond the trained context length ({trained}): quality \
             may suffer unless the runtime scales RoPE"
        ));
    }
    let padding = if opts.flash_attn { 256 } else { 32 };
    let kv_size = pad(context, padding).ok_or_else(too_large)?;
    let swa_size = match info.sliding_window {
        Some(w) if info.swa_layers.iter().any(|&s| s) => {
            let cells = w
                .checked_mul(opts.parallel as u64)
                .and_then(|c| c.checked_add(opts.ubatch))
                .and_then(|c| pad(c, padding))
                .ok_or_else(too_large)?;
            Some(cells.min(kv_size))
        }
        _ => None,
    };
    let mut layer_kv = vec![0u64; info.block_count as usize];
    let (mut k_total, mut v_total) = (0u64, 0u64);
    for (l, &n_kv) in info.head_count_kv.iter().enumerate() {
        if n_kv == 0 {
            continue;
        }
        let cells = match (swa_size, info.swa_layers.get(l)) {
            (Some(s), Some(true)) => s,
            _ => kv_size,
        };
        let row = |len: u64, layout: TypeLayout| {
            len.checked_mul(n_kv)
                .and_then(|e| layout.row_bytes(e))
                .and_then(|r| r.checked_mul(cells))
        };
        let k = row(info.key_length, kl).ok_or_else(too_large)?;
        let v = row(info.value_length, vl).ok_or_else(too_large)?;
        k_total = k_total.checked_add(k).ok_or_else(too_large)?;
        v_total = v_total.checked_add(v).ok_or_else(too_large)?;
        if let Some(slot) = layer_kv.get_mut(l) {
            *slot = k + v;
        }
    }
    let kv_cache_bytes = k_total.checked_add(v_total).ok_or_else(too_large)?;
    let mut recurrent = 0u64;
    if let Some(r) = info.recurrent {
        // Per sequence, f32 (llama.cpp's r and s tensors).
        let per_layer = r
            .r_elems
            .saturating_add(r.s_elems)
            .saturating_mul(4)
            .saturating_mul(opts.parallel as u64);
        for (l, &n_kv) in info.head_count_kv.iter().enumerate() {
            if n_kv == 0 {
                recurrent = recurrent.saturating_add(per_layer);
                if let Some(slot) = layer_kv.get_mut(l) {
                    *slot += per_layer;
                }
            }
        }
    }
    let compute = compute_bytes(info, opts, kv_size);
    if info.vocab_size.is_none() || info.embedding_length.is_none() {
        notes.push(
            "the vocabulary or embedding size is unknown: the compute estimate is low".into(),
        );
    }
    let runtime = RUNTIME_RESERVE_BYTES;
    let overhead = compute.saturating_add(runtime);
    let total = info
        .weights_bytes
        .saturating_add(kv_cache_bytes)
        .saturating_add(recurrent)
        .saturating_add(overhead);
    let fits = opts.vram_bytes.map(|v| total <= v);
    let gpu_layers = match (opts.vram_bytes, info.format) {
        (Some(vram), ModelFormat::Gguf) if !info.layer_weights.is_empty() => {
            if total <= vram {
                Some(info.block_count)
            } else {
                // llama.cpp offloads the last N repeating layers; each brings its weights and its
                // share of the cache. Compute buffers and the runtime come first.
                let mut budget = vram.saturating_sub(overhead);
                let mut n = 0;
                for l in (0..info.block_count as usize).rev() {
                    let weights = info.layer_weights.get(l).copied().unwrap_or(0);
                    let cost = weights.saturating_add(layer_kv.get(l).copied().unwrap_or(0));
                    if cost > budget {
                        break;
                    }
                    budget -= cost;
                    n += 1;
                }
                Some(n)
            }
        }
        _ => None,
    };
    Ok(Estimate {
        format: info.format,
        architecture: info.architecture.clone(),
        layers: info.block_count,
        context,
        kv_size,
        kv_size_swa: swa_size,
        parallel: opts.parallel,
        kv_type: type_k,
        kv_type_v: type_v,
        flash_attn: opts.flash_attn,
        ubatch: opts.ubatch.min(kv_size),
        weights_bytes: info.weights_bytes,
        kv_cache_bytes,
        kv_k_bytes: k_total,
        kv_v_bytes: v_total,
        recurrent_state_bytes: recurrent,
        compute_bytes: compute,
        runtime_bytes: runtime,
        overhead_bytes: overhead,
        total_bytes: total,
        estimate: true,
        vram_bytes: opts.vram_bytes,
        fits,
        gpu_layers,
        notes,
    })
}

/// The compute buffers of one micro-batch, f32 throughout: the logits (vocabulary × batch),
/// the widest activations (embedding and feed-forward), and without flash attention the
/// attention scores (cells × batch × heads), which is what grows with the context.
fn compute_bytes(info: &ModelInfo, opts: &EstimateOptions, kv_size: u64) -> u64 {
    let ub = opts.ubatch.min(kv_size);
    let vocab = info.vocab_size.unwrap_or(0);
    let embd = info.embedding_length.unwrap_or(0);
    let ff = info.feed_forward_length.unwrap_or(embd.saturating_mul(4));
    let heads = info.head_count.iter().copied().max().unwrap_or(0);
    let logits = vocab.saturating_mul(ub).saturating_mul(4);
    let activations = ub
        .saturating_mul(embd.saturating_mul(4).saturating_add(ff.saturating_mul(3)))
        .saturating_mul(4);
    let scores = if opts.flash_attn {
        0
    } else {
        kv_size
            .saturating_mul(ub)
            .saturating_mul(heads)
            .saturating_mul(4)
    };
    logits.saturating_add(activations).saturating_add(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_types() {
        assert_eq!("q8_0".parse::<KvType>().unwrap(), KvType::Q8_0);
        assert_eq!("F16".parse::<KvType>().unwrap(), KvType::F16);
        assert!("q4_K".parse::<KvType>().is_err());
        assert!(KvType::Q4_0.is_quantized());
        assert!(!KvType::F16.is_quantized());
    }

    #[test]
    fn padding() {
        assert_eq!(pad(4000, 32), Some(4000));
        assert_eq!(pad(4001, 256), Some(4096));
        assert_eq!(pad(u64::MAX, 256), None);
    }
}
