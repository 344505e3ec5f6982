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
        g.cells
            .saturating_mul(heads)
            .saturating_mul(t)
            .saturating_mul(4)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::geometry;
    use crate::model::ModelFormat;

    /// A llama of 4 layers: 128 wide, 4 heads of 32 (2 KV heads), feed-forward 256, 4096 tokens.
    fn llama() -> ModelInfo {
        ModelInfo {
            format: ModelFormat::Gguf,
            architecture: "llama".into(),
            weights_bytes: 0,
            tensor_count: 0,
            block_count: 4,
            context_length: Some(8192),
            embedding_length: Some(128),
            feed_forward_length: Some(256),
            vocab_size: Some(4096),
            head_count: vec![4; 4],
            head_count_kv: vec![2; 4],
            key_length: 32,
            value_length: 32,
            sliding_window: None,
            swa_layers: vec![false; 4],
            recurrent: None,
            layer_weights: Vec::new(),
            mla: false,
            experts: None,
            notes: Vec::new(),
        }
    }

    fn bytes(ctx: u64, fa: bool) -> u64 {
        let g = geometry(ctx, 1, false, 2048, 512, None).unwrap();
        compute_bytes(&llama(), &g, KvType::F16, fa)
    }

    #[test]
    fn short_contexts_are_set_by_the_logits() {
        // 512 tokens x (4096 + 4 x 128) f32, with flash attention or without.
        assert_eq!(bytes(4096, true), 512 * (4096 + 512) * 4);
        assert_eq!(bytes(512, false), 512 * (4096 + 512) * 4);
    }

    #[test]
    fn long_contexts_are_set_by_the_masks_or_the_scores() {
        // Flash attention: the f16 mask beside the feed-forward step.
        let ff = 512 * (4 * 128 + 3 * 256) * 4;
        assert_eq!(bytes(65536, true), 65536 * 512 * 2 + ff);
        // Without: the f32 mask and every head's scores in the attention step, not a sum with
        // the logits.
        let attn = 512 * (3 * 128 + 2 * 128 + 2 * 64) * 4;
        assert_eq!(bytes(16384, false), 16384 * 512 * (4 + 4 * 4) + attn);
    }

    #[test]
    fn separate_slots_see_only_their_own_cells() {
        let g = geometry(16384, 4, false, 2048, 512, None).unwrap();
        let u = geometry(16384, 4, true, 2048, 512, None).unwrap();
        let (sep, uni) = (
            compute_bytes(&llama(), &g, KvType::F16, false),
            compute_bytes(&llama(), &u, KvType::F16, false),
        );
        assert!(sep * 3 < uni, "{sep} vs {uni}");
    }
}
