//! The KV cache and recurrent state exactly as llama.cpp allocates them (the llama.cpp vendored
//! by llama-cpp-python 0.3.36, libllama 0.5.0): how the context becomes cells and streams, how
//! sliding-window layers are sized, and what each layer stores per cell.

use crate::estimate::KvType;
use crate::model::ModelInfo;

/// llama.cpp pads the context, each slot's share of it and the sliding-window cache to this.
pub const CELL_PAD: u64 = 256;
/// The most parallel sequences llama.cpp accepts (`LLAMA_MAX_SEQ`).
pub const MAX_SEQ: u32 = 256;

/// GGUF architectures whose memory llama.cpp allocates by the rules below: a plain or
/// sliding-window KV cache, multi-head latent attention, recurrent state, or attention and
/// recurrent layers side by side. Any other architecture is refused rather than guessed.
pub const MODELLED: [&str; 19] = [
    "llama",
    "qwen2",
    "qwen2moe",
    "qwen3",
    "qwen3moe",
    "phi3",
    "gemma",
    "gemma2",
    "gemma3",
    "gpt-oss",
    "deepseek2",
    "mamba",
    "mamba2",
    "rwkv6",
    "rwkv7",
    "granitehybrid",
    "qwen3next",
    "jamba",
    "lfm2",
];

fn too_large() -> String {
    "the figures overflow 64 bits (is the context length sane?)".into()
}

fn pad(n: u64, to: u64) -> Result<u64, String> {
    n.checked_next_multiple_of(to).ok_or_else(too_large)
}

/// How llama.cpp lays the context out: `streams` caches (one with a unified cache, one per
/// slot without) of `cells` each, and the micro-batch its compute graph is reserved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Parallel sequences (`-np`).
    pub sequences: u64,
    pub streams: u64,
    /// Cells of each stream in a full-attention layer.
    pub cells: u64,
    /// Cells of each stream in a sliding-window layer, when the model has any.
    pub swa_cells: Option<u64>,
    /// Tokens per logical batch (`-b`, never more than the context).
    pub n_batch: u64,
    /// Tokens per micro-batch (`-ub`), as the compute graph is reserved for.
    pub n_ubatch: u64,
}

impl Geometry {
    /// Every stream's full-attention cells: the context llama.cpp ends up with (`n_ctx`).
    pub fn n_ctx(&self) -> u64 {
        self.cells * self.streams
    }
}

/// The layout for `context` tokens over `parallel` slots (`-c`, `-np`, `-kvu`, `-b`, `-ub`).
pub fn geometry(
    context: u64,
    parallel: u32,
    unified: bool,
    batch: u64,
    ubatch: u64,
    window: Option<u64>,
) -> Result<Geometry, String> {
    if parallel > MAX_SEQ {
        return Err(format!(
            "llama.cpp runs at most {MAX_SEQ} parallel sequences, not {parallel}"
        ));
    }
    let np = u64::from(parallel.max(1));
    // Causal models: a batch never exceeds the context asked for (before padding).
    let n_batch = batch.min(context);
    let n_ubatch = ubatch.min(n_batch);
    let n_ctx = pad(context, CELL_PAD)?;
    // np <= 256 <= n_ctx, so each slot's share is at least one cell before padding.
    let (streams, cells) = if unified {
        (1, n_ctx)
    } else {
        (np, pad(n_ctx / np, CELL_PAD)?)
    };
    // The window of every sequence the stream holds, plus one micro-batch.
    let swa_cells = match window {
        Some(w) => {
            let seqs = if unified { np } else { 1 };
            let want = w
                .checked_mul(seqs)
                .and_then(|c| c.checked_add(n_ubatch))
                .ok_or_else(too_large)?;
            Some(pad(want.min(cells), CELL_PAD)?)
        }
        None => None,
    };
    Ok(Geometry {
        sequences: np,
        streams,
        cells,
        swa_cells,
        n_batch,
        n_ubatch,
    })
}

/// What the cache holds: K and V bytes over all layers, and per layer (for offloading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvBytes {
    pub k: u64,
    pub v: u64,
    pub per_layer: Vec<u64>,
}

/// Refuses what llama.cpp refuses about the cache types, in its words.
pub fn check_types(
    info: &ModelInfo,
    type_k: KvType,
    type_v: KvType,
    flash_attn: bool,
) -> Result<(), String> {
    let (kl, vl) = (type_k.layout(), type_v.layout());
    if info.mla && type_k != type_v {
        return Err(format!(
            "{} (multi-head latent attention) needs one type for K and V, not K {} and V {}",
            info.architecture, kl.name, vl.name
        ));
    }
    if type_v.is_quantized() && !flash_attn {
        return Err(format!(
            "a quantised V cache ({}) needs flash attention: use --flash-attn on or auto, or \
             keep V in f16",
            vl.name
        ));
    }
    if flash_attn {
        for (what, t, len) in [("K", kl, info.key_length), ("V", vl, info.value_length)] {
            if t.block_elems > 1 && len % t.block_elems != 0 {
                return Err(format!(
                    "a {what} cache in {} stores blocks of {} and the head size {len} is not \
                     a multiple of it: llama.cpp refuses it",
                    t.name, t.block_elems
                ));
            }
        }
    }
    Ok(())
}

/// The KV cache of each attention layer: K and V rows of the layer's KV heads, one per cell of
/// every stream. Without flash attention V is stored transposed, padded to the widest layer.
pub fn kv_bytes(
    info: &ModelInfo,
    g: &Geometry,
    type_k: KvType,
    type_v: KvType,
    flash_attn: bool,
) -> Result<KvBytes, String> {
    let (kl, vl) = (type_k.layout(), type_v.layout());
    let widest = info.head_count_kv.iter().copied().max().unwrap_or(0);
    let mut out = KvBytes {
        k: 0,
        v: 0,
        per_layer: vec![0; info.block_count as usize],
    };
    for (l, &n_kv) in info.head_count_kv.iter().enumerate() {
        if n_kv == 0 {
            continue;
        }
        let per_stream = match (g.swa_cells, info.swa_layers.get(l)) {
            (Some(s), Some(true)) => s,
            _ => g.cells,
        };
        let cells = per_stream.checked_mul(g.streams).ok_or_else(too_large)?;
        let rows = |width: u64, heads: u64, layout: crate::ggml::TypeLayout| {
            width
                .checked_mul(heads)
                .and_then(|e| layout.row_bytes(e))
                .and_then(|r| r.checked_mul(cells))
                .ok_or_else(too_large)
        };
        let k = rows(info.key_length, n_kv, kl)?;
        let v = if info.mla {
            // The compressed K row is V too.
            0
        } else {
            rows(
                info.value_length,
                if flash_attn { n_kv } else { widest },
                vl,
            )?
        };
        out.k = out.k.checked_add(k).ok_or_else(too_large)?;
        out.v = out.v.checked_add(v).ok_or_else(too_large)?;
        if let Some(slot) = out.per_layer.get_mut(l) {
            *slot = k + v;
        }
    }
    Ok(out)
}

/// Recurrent state: per layer without KV heads, f32 r and s rows for each sequence.
pub fn recurrent_bytes(info: &ModelInfo, parallel: u32, per_layer: &mut [u64]) -> u64 {
    let Some(r) = info.recurrent else { return 0 };
    let per_layer_bytes = r
        .r_elems
        .saturating_add(r.s_elems)
        .saturating_mul(4)
        .saturating_mul(u64::from(parallel.max(1)));
    let mut total = 0u64;
    for (l, &n_kv) in info.head_count_kv.iter().enumerate() {
        if n_kv == 0 {
            total = total.saturating_add(per_layer_bytes);
            if let Some(slot) = per_layer.get_mut(l) {
                *slot = slot.saturating_add(per_layer_bytes);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_padded_to_256_cells() {
        let g = geometry(4000, 1, false, 2048, 512, None).unwrap();
        assert_eq!((g.streams, g.cells, g.n_ctx()), (1, 4096, 4096));
    }

    #[test]
    fn separate_slots_each_get_at_least_256_cells() {
        // 512 tokens over 4 slots: 128 each, padded to 256, so 1024 cells in all.
        let g = geometry(512, 4, false, 2048, 512, None).unwrap();
        assert_eq!((g.streams, g.cells, g.n_ctx()), (4, 256, 1024));
        let u = geometry(512, 4, true, 2048, 512, None).unwrap();
        assert_eq!((u.streams, u.cells), (1, 512));
    }

    #[test]
    fn the_window_holds_each_sequence_and_one_micro_batch() {
        // Unified: 4 windows of 256 + 512 = 1536; per slot: 256 + 512 = 768 each.
        let u = geometry(16384, 4, true, 2048, 512, Some(256)).unwrap();
        assert_eq!(u.swa_cells, Some(1536));
        let s = geometry(16384, 4, false, 2048, 512, Some(256)).unwrap();
        assert_eq!(s.swa_cells, Some(768));
        // Never more than the full cache.
        let small = geometry(512, 1, false, 2048, 512, Some(4096)).unwrap();
        assert_eq!(small.swa_cells, Some(512));
    }

    #[test]
    fn batches_never_exceed_the_context() {
        let g = geometry(300, 1, false, 2048, 512, None).unwrap();
        assert_eq!((g.n_batch, g.n_ubatch, g.cells), (300, 300, 512));
    }

    #[test]
    fn too_many_slots_are_refused() {
        assert!(geometry(4096, 257, true, 2048, 512, None).is_err());
        // The most slots still get 256 cells each.
        let g = geometry(1, 256, false, 2048, 512, None).unwrap();
        assert_eq!((g.streams, g.cells), (256, 256));
    }
}
