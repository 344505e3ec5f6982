//! Engines that preallocate: vLLM and SGLang take a fixed fraction of the card at start and
//! carve their KV cache out of it, so what they need on the card is that fraction, whatever the
//! context, and the question turns around: how much context does the share left to the KV
//! cache hold?
//!
//! - vLLM: `--gpu-memory-utilization` (default 0.9) × the card's total memory holds the
//!   weights, the activation peak it profiles at start, the memory outside torch (CUDA context,
//!   NCCL, cuBLAS workspaces) and the KV cache, which gets what is left.
//! - SGLang: `--mem-fraction-static` × the card holds the weights and the KV pool; activations
//!   and CUDA graphs live in the rest. Its default depends on the card's size
//!   (`ServerArgs._handle_gpu_memory_settings` in `python/sglang/srt/server_args.py`):
//!   `(card − reserved) / card` with `reserved` its own estimate of activations and graphs.
//!
//! Pure arithmetic over a safetensors model's `config.json` and weight bytes; the reader is
//! [`read_model`].

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

use crate::PlanError;
use crate::model::ModelInfo;
use crate::safetensors;

/// vLLM's default `--gpu-memory-utilization`.
pub const VLLM_DEFAULT_UTILIZATION: f64 = 0.9;
/// Tokens per vLLM KV block (`--block-size`, 16 on CUDA): the cache is handed out in blocks.
pub const VLLM_BLOCK_TOKENS: u64 = 16;
/// Memory an engine process holds outside its tensors (CUDA context, NCCL and cuBLAS
/// workspaces): an estimate.
pub const NON_TORCH_BYTES: u64 = 512 << 20;
const GIB: u64 = 1 << 30;
const MIB: f64 = (1u64 << 20) as f64;

/// Who runs the model (`estimate --engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// llama.cpp (and Ollama): allocates what the context needs (see [`crate::estimate`]).
    #[default]
    LlamaCpp,
    Vllm,
    Sglang,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::LlamaCpp => "llamacpp",
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
        }
    }

    /// The engine's own flag for its fraction of the card.
    pub fn fraction_flag(self) -> &'static str {
        match self {
            Engine::Sglang => "--mem-fraction-static",
            _ => "--gpu-memory-utilization",
        }
    }

    /// Whether it takes a fixed fraction of the card at start.
    pub fn preallocates(self) -> bool {
        self != Engine::LlamaCpp
    }

    /// The fraction of the card asked for, from the engine's own flag: vLLM's
    /// `--gpu-memory-utilization` or SGLang's `--mem-fraction-static`, never the other's.
    pub fn fraction(
        self,
        gpu_memory_utilization: Option<f64>,
        mem_fraction_static: Option<f64>,
    ) -> Result<Option<f64>, PlanError> {
        let bad = |s: &str| Err(PlanError::BadArgument(s.to_string()));
        let f = match (self, gpu_memory_utilization, mem_fraction_static) {
            (Engine::Vllm, g, None) => g,
            (Engine::Sglang, None, m) => m,
            (Engine::LlamaCpp, None, None) => None,
            (Engine::Vllm, _, Some(_)) => {
                return bad(
                    "--mem-fraction-static is SGLang's: vLLM's is --gpu-memory-utilization",
                );
            }
            (Engine::Sglang, Some(_), _) => {
                return bad(
                    "--gpu-memory-utilization is vLLM's: SGLang's is --mem-fraction-static",
                );
            }
            (Engine::LlamaCpp, _, _) => {
                return bad(
                    "--gpu-memory-utilization and --mem-fraction-static need --engine vllm or sglang",
                );
            }
        };
        match f {
            Some(x) if !(x > 0.0 && x <= 1.0) => Err(PlanError::BadArgument(format!(
                "the fraction of the card must be above 0 and at most 1 (got {x})"
            ))),
            f => Ok(f),
        }
    }
}

impl FromStr for Engine {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "llamacpp" | "llama.cpp" | "llama-cpp" | "ollama" => Ok(Engine::LlamaCpp),
            "vllm" => Ok(Engine::Vllm),
            "sglang" => Ok(Engine::Sglang),
            _ => Err(PlanError::BadArgument(format!(
                "unknown engine {:?} (expected llamacpp, vllm or sglang)",
                memwarden_probe::sanitize::sanitize(s, 40)
            ))),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes per element of the KV cache for an engine's `--kv-cache-dtype`. `auto` is the model's
/// dtype, which both engines run in 16 bits (an fp32 checkpoint is served in fp16).
pub fn kv_cache_dtype_bytes(s: &str) -> Result<u64, PlanError> {
    match s.to_ascii_lowercase().as_str() {
        "auto" | "bfloat16" | "bf16" | "float16" | "fp16" | "half" => Ok(2),
        "fp8" | "fp8_e4m3" | "fp8_e5m2" => Ok(1),
        _ => Err(PlanError::BadArgument(format!(
            "unknown --kv-cache-dtype {:?} (expected auto, bfloat16, float16, fp8, fp8_e4m3 \
             or fp8_e5m2)",
            memwarden_probe::sanitize::sanitize(s, 40)
        ))),
    }
}

/// What the KV cache holds per token, from `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvShape {
    /// Elements per token over all layers (K and V, or the latent of an MLA layer).
    pub elems_per_token: u64,
    /// Multi-head latent attention: one latent of `kv_lora_rank + qk_rope_head_dim` per layer.
    pub mla: bool,
    pub sliding_layers: u32,
    pub sliding_window: Option<u64>,
}

/// The KV shape of a model read from its `config.json` (`root`, whose `text_config` wins for
/// a multimodal model, as [`safetensors::from_config`] reads it).
pub fn kv_shape(info: &ModelInfo, root: &Value) -> Result<KvShape, String> {
    let cfg = root
        .get("text_config")
        .filter(|t| t.get("num_hidden_layers").is_some())
        .unwrap_or(root);
    let num = |k: &str| cfg.get(k).and_then(Value::as_u64);
    if info.head_count_kv.contains(&0) {
        return Err(format!(
            "{} mixes attention with linear-attention or state-space layers, whose state vLLM \
             and SGLang size by rules memwarden does not model yet",
            info.architecture
        ));
    }
    let layers = u64::from(info.block_count);
    let elems = if let Some(rank) = num("kv_lora_rank") {
        let rope = num("qk_rope_head_dim")
            .ok_or("kv_lora_rank without qk_rope_head_dim: cannot size the latent cache")?;
        rank.checked_add(rope).and_then(|e| e.checked_mul(layers))
    } else {
        info.head_count_kv.iter().try_fold(0u64, |acc, &h| {
            let k = h.checked_mul(info.key_length)?;
            let v = h.checked_mul(info.value_length)?;
            acc.checked_add(k.checked_add(v)?)
        })
    }
    .ok_or("the KV shape overflows 64 bits")?;
    let sliding_layers = info.swa_layers.iter().filter(|&&s| s).count() as u32;
    Ok(KvShape {
        elems_per_token: elems,
        mla: num("kv_lora_rank").is_some(),
        sliding_layers,
        sliding_window: info.sliding_window.filter(|_| sliding_layers > 0),
    })
}

/// How the engine is run and on what card.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    pub engine: Engine,
    /// The engine's fraction flag; `None` takes its default.
    pub fraction: Option<f64>,
    /// The card's total memory: the engines take their fraction of the total, not of the free.
    pub card_bytes: u64,
    /// What is free on the card now, when known: the engine refuses to start with less free
    /// than its share.
    pub free_bytes: Option<u64>,
    /// Tokens per sequence (vLLM's `--max-model-len`, SGLang's `--context-length`); `None`
    /// takes the model's `max_position_embeddings`, as both engines do.
    pub ctx: Option<u64>,
    /// Bytes per KV element (see [`kv_cache_dtype_bytes`]).
    pub kv_dtype_bytes: u64,
}

/// The answer for a preallocating engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnginePlan {
    pub engine: Engine,
    pub architecture: String,
    pub card_bytes: u64,
    pub fraction: f64,
    /// True when the fraction is the engine's default.
    pub fraction_default: bool,
    /// What the engine takes on the card: its fraction (vLLM), or its fraction and the
    /// activations and graphs it reserves beside it (SGLang).
    pub need_bytes: u64,
    /// The fraction of the card in bytes.
    pub share_bytes: u64,
    pub weights_bytes: u64,
    /// Taken from the share before the KV cache (activations, memory outside torch): an estimate.
    pub reserve_bytes: u64,
    /// What the KV cache gets.
    pub kv_share_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub mla: bool,
    /// Tokens the KV share holds (whole blocks for vLLM).
    pub max_tokens: u64,
    /// Tokens per sequence asked for.
    pub context: u64,
    /// Sequences of `context` tokens that fit in the KV cache at once.
    pub sequences: u64,
    pub free_bytes: Option<u64>,
    /// Whether the card's free memory holds the need (when it is known).
    pub fits: Option<bool>,
    pub estimate: bool,
    pub notes: Vec<String>,
}

fn frac_of(bytes: u64, f: f64) -> u64 {
    (bytes as f64 * f).floor() as u64
}

/// SGLang's defaults for a card of `card_mib` MiB with tensor parallelism 1: (chunked prefill
/// size, CUDA-graph max batch), as `_handle_gpu_memory_settings` picks them.
fn sglang_tier(card_mib: f64) -> (f64, f64) {
    let gib = |g: f64| g * 1024.0;
    match card_mib {
        m if m < gib(20.0) => (2048.0, 8.0),
        m if m < gib(35.0) => (2048.0, 24.0),
        m if m < gib(60.0) => (4096.0, 32.0),
        m if m < gib(160.0) => (8192.0, 256.0),
        _ => (16384.0, 512.0),
    }
}

/// SGLang's reserve beside its static share, in MiB: metadata, activations of a prefill chunk
/// and CUDA-graph buffers (tensor parallelism 1, no speculative decoding), at least 10 GiB on a
/// card over 60 GiB.
fn sglang_reserved_mib(card_mib: f64) -> f64 {
    let (chunk, graphs) = sglang_tier(card_mib);
    let r = 512.0 + chunk.max(2048.0) * 1.5 + graphs * 2.0 + 1024.0 / 8.0;
    if card_mib > 60.0 * 1024.0 {
        r.max(10.0 * 1024.0)
    } else {
        r
    }
}

/// SGLang's default `--mem-fraction-static` for a card, rounded to 3 places as it does.
pub fn sglang_default_fraction(card_bytes: u64) -> f64 {
    let mib = card_bytes as f64 / MIB;
    ((mib - sglang_reserved_mib(mib)) / mib * 1000.0).round() / 1000.0
}

/// vLLM's default `max_num_seqs` for its OpenAI server: 1024 on a card of 70 GiB or more.
fn vllm_max_num_seqs(card_bytes: u64) -> u64 {
    if card_bytes >= 70 * GIB { 1024 } else { 256 }
}

/// vLLM's activation peak, estimated: the OpenAI server's default batch of
/// `max_num_batched_tokens` (8192 on a card of 70 GiB or more, else 2048) through the widest
/// layer (4 × hidden + 3 × intermediate, 16-bit), and the sampler's f32 logits for
/// `max_num_seqs` sequences (1024 or 256).
fn vllm_activation_bytes(info: &ModelInfo, card_bytes: u64) -> u64 {
    let tokens: u64 = if card_bytes >= 70 * GIB { 8192 } else { 2048 };
    let seqs = vllm_max_num_seqs(card_bytes);
    let hidden = info.embedding_length.unwrap_or(0);
    let inter = info.feed_forward_length.unwrap_or(hidden.saturating_mul(4));
    let widest = hidden
        .saturating_mul(4)
        .saturating_add(inter.saturating_mul(3));
    let act = tokens.saturating_mul(widest).saturating_mul(2);
    let logits = seqs
        .saturating_mul(info.vocab_size.unwrap_or(0))
        .saturating_mul(4);
    act.saturating_add(logits)
}

fn gib(b: u64) -> String {
    memwarden_probe::size::format_size(b)
}

/// What a preallocating engine takes on the card and what its KV share holds, for a model of
/// `info` (weights included) and `config.json` `root`.
pub fn plan(info: &ModelInfo, root: &Value, opts: &EngineOptions) -> Result<EnginePlan, String> {
    let shape = kv_shape(info, root)?;
    if opts.card_bytes == 0 {
        return Err("the card's memory size is 0".into());
    }
    if opts.kv_dtype_bytes == 0 {
        return Err("the KV cache dtype has no size".into());
    }
    let engine = opts.engine;
    let (fraction, fraction_default) = match (engine, opts.fraction) {
        (_, Some(f)) => (f, false),
        (Engine::Vllm, None) => (VLLM_DEFAULT_UTILIZATION, true),
        (Engine::Sglang, None) => (sglang_default_fraction(opts.card_bytes), true),
        (Engine::LlamaCpp, None) => return Err("llama.cpp does not preallocate".into()),
    };
    if !(fraction > 0.0 && fraction <= 1.0) {
        let why = if fraction_default {
            "its default reserve leaves nothing on a card this small"
        } else {
            "it must be above 0 and at most 1"
        };
        return Err(format!(
            "{engine}'s fraction of a card of {} is {fraction}: {why}; give the fraction",
            gib(opts.card_bytes)
        ));
    }
    let context = match opts.ctx.or(info.context_length) {
        Some(0) => return Err("the context must be at least 1 token".into()),
        Some(c) => c,
        None => return Err("config.json has no max_position_embeddings: pass --ctx".into()),
    };
    let share = frac_of(opts.card_bytes, fraction);
    let card_mib = opts.card_bytes as f64 / MIB;
    let (reserve, need) = match engine {
        Engine::Vllm => (
            vllm_activation_bytes(info, opts.card_bytes).saturating_add(NON_TORCH_BYTES),
            share,
        ),
        _ => {
            let beside = (sglang_reserved_mib(card_mib) * MIB) as u64;
            (
                NON_TORCH_BYTES,
                share.saturating_add(beside).min(opts.card_bytes),
            )
        }
    };
    let flag = engine.fraction_flag();
    if info.weights_bytes > share {
        return Err(format!(
            "the weights ({}) exceed {engine}'s share of the card ({} = {fraction} of {}): \
             raise {flag}, quantise the model or use a larger card",
            gib(info.weights_bytes),
            gib(share),
            gib(opts.card_bytes)
        ));
    }
    let kv_share = share
        .checked_sub(info.weights_bytes.saturating_add(reserve))
        .filter(|&k| k > 0)
        .ok_or_else(|| {
            format!(
                "nothing is left for the KV cache: {engine}'s share ({} = {fraction} of {}) \
                 holds the weights ({}) but not also its activations and runtime ({}, an \
                 estimate): raise {flag}",
                gib(share),
                gib(opts.card_bytes),
                gib(info.weights_bytes),
                gib(reserve)
            )
        })?;
    let per_token = shape
        .elems_per_token
        .checked_mul(opts.kv_dtype_bytes)
        .filter(|&b| b > 0)
        .ok_or("the model has no KV cache to size (no attention heads)")?;
    let (max_tokens, sequences) = match engine {
        Engine::Vllm => {
            let block = per_token.saturating_mul(VLLM_BLOCK_TOKENS);
            let blocks = kv_share / block;
            (
                blocks.saturating_mul(VLLM_BLOCK_TOKENS),
                blocks / context.div_ceil(VLLM_BLOCK_TOKENS),
            )
        }
        _ => {
            let tokens = kv_share / per_token;
            (tokens, tokens / context)
        }
    };
    if sequences == 0 {
        return Err(format!(
            "{engine}'s KV share ({}) holds {max_tokens} tokens, less than one sequence of \
             {context}: it would refuse to start; lower the context to at most {max_tokens} or \
             raise {flag}",
            gib(kv_share)
        ));
    }
    let mut notes = Vec::new();
    if let Some(w) = shape.sliding_window {
        notes.push(format!(
            "{} of {} layers attend over a sliding window of {w} tokens: counted here as full \
             layers; an engine that frees their blocks past the window (vLLM's hybrid KV \
             allocator) holds more",
            shape.sliding_layers, info.block_count
        ));
    }
    if let Some(trained) = info.context_length.filter(|&t| context > t) {
        notes.push(format!(
            "the context ({context}) is beyond max_position_embeddings ({trained}): the engine \
             refuses it unless told to allow a longer one"
        ));
    }
    let max_seqs = vllm_max_num_seqs(opts.card_bytes);
    if engine == Engine::Vllm && sequences > max_seqs {
        notes.push(format!(
            "vLLM runs at most {max_seqs} sequences at once by default (--max-num-seqs)"
        ));
    }
    if engine == Engine::Vllm {
        notes.push(
            "CUDA graphs that vLLM captures once the KV cache is allocated may come on top of \
             the share (--enforce-eager avoids them)"
                .into(),
        );
    }
    Ok(EnginePlan {
        engine,
        architecture: info.architecture.clone(),
        card_bytes: opts.card_bytes,
        fraction,
        fraction_default,
        need_bytes: need,
        share_bytes: share,
        weights_bytes: info.weights_bytes,
        reserve_bytes: reserve,
        kv_share_bytes: kv_share,
        kv_bytes_per_token: per_token,
        mla: shape.mla,
        max_tokens,
        context,
        sequences,
        free_bytes: opts.free_bytes,
        fits: opts.free_bytes.map(|f| f >= need),
        estimate: true,
        notes,
    })
}

/// The most `config.json` read: real ones are a few KiB.
const MAX_CONFIG: u64 = 16 << 20;

/// Reads a safetensors model (a directory with `config.json`, or one `.safetensors` file
/// beside it) and plans it for the engine.
pub fn plan_file(path: &Path, opts: &EngineOptions) -> Result<EnginePlan, PlanError> {
    let model_err = |why: String| PlanError::Model {
        path: path.display().to_string(),
        why,
    };
    let is_st = path.is_dir()
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if !is_st {
        return Err(model_err(format!(
            "--engine {} reads a safetensors model (a directory with config.json); GGUF \
             files are for llama.cpp",
            opts.engine
        )));
    }
    let info = safetensors::read_model(path)?;
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let cfg_path = dir.join("config.json");
    let mut text = Vec::new();
    std::fs::File::open(&cfg_path)
        .and_then(|f| f.take(MAX_CONFIG).read_to_end(&mut text))
        .map_err(|e| PlanError::io(&cfg_path, e))?;
    let root: Value = serde_json::from_slice(&text).map_err(|e| PlanError::Model {
        path: cfg_path.display().to_string(),
        why: format!("config.json is not JSON (or over 16 MiB): {e}"),
    })?;
    plan(&info, &root, opts).map_err(model_err)
}

#[cfg(test)]
mod tests;
