//! How much memory a model needs: weights from the file's header, the KV cache as llama.cpp
//! allocates it (exact to the byte), recurrent state, and a labelled estimate of compute and
//! runtime overhead. Given a VRAM size, whether it fits and how many layers could be offloaded.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::PlanError;
use crate::ggml::{self, TypeLayout};
use crate::gguf;
use crate::model::{ModelFormat, ModelInfo};
use crate::safetensors;
use crate::{compute, kv};

/// Tokens llama.cpp processes per micro-batch by default (`-ub`).
pub const DEFAULT_UBATCH: u64 = 512;
/// Tokens llama.cpp takes per logical batch by default (`-b`).
pub const DEFAULT_BATCH: u64 = 2048;
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

/// Flash attention (llama.cpp's `-fa on|off|auto`). `auto`, llama.cpp's default, turns it on
/// where the backend runs it for the model's head sizes, which the CPU and the GPU backends
/// do for the architectures memwarden models: it is estimated as on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttn {
    On,
    Off,
    #[default]
    Auto,
}

impl FlashAttn {
    /// Whether llama.cpp runs with it.
    pub fn enabled(self) -> bool {
        self != FlashAttn::Off
    }
}

impl FromStr for FlashAttn {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "on" | "1" | "true" => Ok(FlashAttn::On),
            "off" | "0" | "false" => Ok(FlashAttn::Off),
            "auto" => Ok(FlashAttn::Auto),
            _ => Err(PlanError::BadArgument(format!(
                "unknown flash attention setting {:?} (expected on, off or auto)",
                memwarden_probe::sanitize::sanitize(s, 40)
            ))),
        }
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
    /// One cache shared by all slots (`-kvu`); without it each slot has its own.
    pub kv_unified: bool,
    /// The type of both caches (llama.cpp's `-ctk` and `-ctv` together).
    pub kv_type: KvType,
    /// The K cache's type when it differs (`-ctk`).
    pub kv_type_k: Option<KvType>,
    /// The V cache's type when it differs (`-ctv`).
    pub kv_type_v: Option<KvType>,
    pub flash_attn: FlashAttn,
    /// Free VRAM to fit into; `None` skips the fit question.
    pub vram_bytes: Option<u64>,
    /// Tokens per logical batch (`-b`).
    pub batch: u64,
    /// Tokens per micro-batch (`-ub`).
    pub ubatch: u64,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        EstimateOptions {
            ctx: None,
            parallel: 1,
            kv_unified: false,
            kv_type: KvType::F16,
            kv_type_k: None,
            kv_type_v: None,
            flash_attn: FlashAttn::Auto,
            vram_bytes: None,
            batch: DEFAULT_BATCH,
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
    /// KV cells of a full-attention layer over all streams: the context as llama.cpp pads
    /// and divides it.
    pub kv_size: u64,
    /// KV cells of a sliding-window layer over all streams.
    pub kv_size_swa: Option<u64>,
    pub parallel: u32,
    pub kv_unified: bool,
    /// Separate caches: 1 when unified, else one per slot.
    pub kv_streams: u64,
    /// The K cache's type (kept under this name, which says both when they agree).
    pub kv_type: KvType,
    pub kv_type_v: KvType,
    /// Whether flash attention runs (`auto` resolved).
    pub flash_attn: bool,
    /// Tokens per logical batch and per micro-batch, as llama.cpp clamps them.
    pub batch: u64,
    pub ubatch: u64,
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub kv_k_bytes: u64,
    pub kv_v_bytes: u64,
    pub recurrent_state_bytes: u64,
    /// The compute buffer (the worst-case graph of one micro-batch): an estimate.
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
    let mut f = std::fs::File::open(path).map_err(|e| PlanError::io(path, e))?;
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

/// The estimate for a model already read.
pub fn estimate(info: &ModelInfo, opts: &EstimateOptions) -> Result<Estimate, String> {
    if opts.ubatch == 0 || opts.batch == 0 {
        return Err("the batch and the micro-batch must be at least 1 token".into());
    }
    if opts.parallel == 0 {
        return Err("--parallel must be at least 1".into());
    }
    if info.format == ModelFormat::Gguf && !kv::MODELLED.contains(&info.architecture.as_str()) {
        return Err(format!(
            "memwarden does not model how llama.cpp allocates memory for the {} architecture \
             (modelled: {})",
            info.architecture,
            kv::MODELLED.join(", ")
        ));
    }
    let type_k = opts.kv_type_k.unwrap_or(opts.kv_type);
    let type_v = opts.kv_type_v.unwrap_or(opts.kv_type);
    let flash_attn = opts.flash_attn.enabled();
    kv::check_types(info, type_k, type_v, flash_attn)?;
    let context = match opts.ctx.or(info.context_length) {
        Some(0) => return Err("the context must be at least 1 token".into()),
        Some(c) => c,
        None => return Err("the model does not say its context length: pass --ctx".into()),
    };
    let mut notes = info.notes.clone();
    if let Some(trained) = info.context_length.filter(|&t| context > t) {
        notes.push(format!(
            "the context ({context}) is beyond the trained context length ({trained}): quality \
             may suffer unless the runtime scales RoPE"
        ));
    }
    let window = info
        .sliding_window
        .filter(|_| info.swa_layers.iter().any(|&s| s));
    let g = kv::geometry(
        context,
        opts.parallel,
        opts.kv_unified,
        opts.batch,
        opts.ubatch,
        window,
    )?;
    let mut kv = kv::kv_bytes(info, &g, type_k, type_v, flash_attn)?;
    let kv_cache_bytes =
        kv.k.checked_add(kv.v)
            .ok_or("the KV cache overflows 64 bits")?;
    let recurrent = kv::recurrent_bytes(info, opts.parallel, &mut kv.per_layer);
    let compute = compute::compute_bytes(info, &g, type_k, flash_attn);
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
        (Some(vram), ModelFormat::Gguf) if !info.layer_weights.is_empty() => Some(
            offloadable_layers(info, &kv.per_layer, vram, total, overhead),
        ),
        _ => None,
    };
    Ok(Estimate {
        format: info.format,
        architecture: info.architecture.clone(),
        layers: info.block_count,
        context,
        kv_size: g.n_ctx(),
        kv_size_swa: g.swa_cells.map(|c| c * g.streams),
        parallel: opts.parallel,
        kv_unified: opts.kv_unified,
        kv_streams: g.streams,
        kv_type: type_k,
        kv_type_v: type_v,
        flash_attn,
        batch: g.n_batch,
        ubatch: g.n_ubatch.min(g.n_ctx()),
        weights_bytes: info.weights_bytes,
        kv_cache_bytes,
        kv_k_bytes: kv.k,
        kv_v_bytes: kv.v,
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

/// How many repeating layers fit in `vram` (llama.cpp `-ngl`): all when the whole does, else
/// the last ones, each with its weights and its share of the cache, after the compute buffer
/// and the runtime.
fn offloadable_layers(
    info: &ModelInfo,
    layer_kv: &[u64],
    vram: u64,
    total: u64,
    overhead: u64,
) -> u32 {
    if total <= vram {
        return info.block_count;
    }
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
    n
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
    fn flash_attention_settings() {
        assert_eq!("auto".parse::<FlashAttn>().unwrap(), FlashAttn::Auto);
        assert_eq!("OFF".parse::<FlashAttn>().unwrap(), FlashAttn::Off);
        assert!("maybe".parse::<FlashAttn>().is_err());
        assert!(FlashAttn::Auto.enabled());
        assert!(FlashAttn::default().enabled());
    }
}
