//! The compute buffer as llama.cpp reserves it: one buffer, sized by ggml's graph allocator for
//! the worst-case graph of one micro-batch, in which each tensor's memory is reused once its
//! last reader has run. Its size is therefore the largest set of tensors alive at one time, not
//! a sum: the attention of one layer, its feed-forward part, or the logits at the end.

use crate::estimate::KvType;
use crate::kv::Geometry;
use crate::model::ModelInfo;

/// The compute buffer's bytes for the geometry and attention kind given (an estimate: the
/// allocator's placement adds some fragmentation, see docs/PLAN.md for how far it is).
pub fn compute_bytes(info: &ModelInfo, g: &Geometry, type_k: KvType, flash_attn: bool) -> u64 {
    // The graph is reserved for one micro-batch, and never more tokens than cells.
    let t = g.n_ubatch.min(g.n_ctx());
    let embd = info.embedding_length.unwrap_or(0);
    let vocab = info.vocab_size.unwrap_or(0);
    let heads = info.head_count.iter().copied().max().unwrap_or(0);
    let heads_kv = info.head_count_kv.iter().copied().max().unwrap_or(0);
    let q_width = heads.saturating_mul(info.key_length);
    let kv_width = heads_kv.saturating_mul(info.key_length.max(info.value_length));
    let f32s = |n: u64| n.saturating_mul(t).saturating_mul(4);

    // The attention masks are graph inputs that every layer reads, so they stay alive until
    // the last layer: f16 for flash attention, f32 otherwise; one row per token over each
    // stream's cells (a sliding-window layer has its own, over its own cells).
    let attends = heads_kv > 0;
    let mask_elem = if flash_attn { 2 } else { 4 };
    let mask_cells = if attends {
        g.cells.saturating_add(g.swa_cells.unwrap_or(0))
    } else {
        0
    };
    let masks = mask_cells.saturating_mul(t).saturating_mul(mask_elem);

    // Attention of one layer: the residual, the normed input, Q, K and V; without flash
    // attention also the scores of every head over the stream's cells (softmax runs in place).
    let scores = if attends && !flash_attn {
        g.cells.saturating_mul(heads).saturating_mul(t).saturating_mul(4)
    } else {
        0
    };
    // Multi-head latent attention without flash attention multiplies by V transposed, a copy
    // of the compressed rows (V is a view of K there) over all cells.
    let mla_v = if info.mla && !flash_attn {
        type_k
            .layout()
            .row_bytes(info.value_length)
            .unwrap_or(0)
            .saturating_mul(g.n_ctx())
    } else {
        0
    };
    let attention = masks
        .saturating_add(scores)
        .saturating_add(mla_v)
        .saturating_add(f32s(3 * embd + 2 * q_width + 2 * kv_width));

    // Feed-forward of one layer: gate, up and their product, or for experts the routed ones
    // (each token's chosen experts) and the shared ones.
    let ff_width = match info.experts {
        Some(x) => x
            .used
            .saturating_mul(x.feed_forward_length)
            .saturating_add(x.shared_length)
            .saturating_add(x.count),
        None => info.feed_forward_length.unwrap_or(0),
    };
    let feed_forward = masks.saturating_add(f32s(4 * embd + 3 * ff_width));

    // Recurrent layers: per token the input projection, convolution, scan and gate over the
    // inner width (6.5 rows of it, as measured on llama.cpp's Mamba graph); per sequence the
    // state read in and the window before and after the convolution.
    let recurrent = match info.recurrent {
        Some(r) => f32s(r.width.saturating_mul(13) / 2).saturating_add(
            r.s_elems
                .saturating_add(r.r_elems.saturating_mul(2))
                .saturating_mul(4)
                .saturating_mul(g.sequences),
        ),
        None => 0,
    };

    // The end: the logits of every token (the reserve asks for all of them) over the
    // vocabulary, beside the last hidden states (output norm, final scaling).
    let logits = f32s(vocab.saturating_add(4 * embd));

    attention.max(feed_forward).max(recurrent).max(logits)
}
