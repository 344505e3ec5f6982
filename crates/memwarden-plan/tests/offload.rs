//! `estimate --vram` layer counts (llama.cpp's `-ngl`) against per-layer sizes worked out here
//! from the shapes: models whose layers differ (sliding-window and full attention, recurrent
//! and attention layers, small and large weights), so that the count is right only if each
//! layer is charged its own weights, its own share of the cache and its own recurrent state.

mod common;

use common::gguf_writer::{Gguf, Meta, tensor_bytes};
use memwarden_plan::estimate::{EstimateOptions, KvType, estimate_file};

const F16: u32 = 1;
const EMBD: u64 = 256;

fn base(arch: &str, layers: u32) -> Gguf {
    let key = |k: &str| format!("{arch}.{k}");
    Gguf::new()
        .kv("general.architecture", Meta::Str(arch.into()))
        .kv(&key("block_count"), Meta::U32(layers))
        .kv(&key("context_length"), Meta::U32(32768))
        .kv(&key("embedding_length"), Meta::U32(EMBD as u32))
        .kv(&key("feed_forward_length"), Meta::U32(1024))
        .kv(&key("attention.head_count"), Meta::U32(4))
        .tensor("token_embd.weight", &[EMBD, 512], F16)
        .tensor("output_norm.weight", &[EMBD], 0)
}

/// Layer `l`'s weights: attention (when it attends) and a feed-forward part whose width
/// grows with `l`, so that no two layers weigh the same.
fn layer(g: Gguf, l: u64, attends: bool) -> Gguf {
    let ff = 256 * (l + 1);
    let g = if attends {
        g.tensor(&format!("blk.{l}.attn_q.weight"), &[EMBD, EMBD], F16)
            .tensor(&format!("blk.{l}.attn_k.weight"), &[EMBD, 128], F16)
            .tensor(&format!("blk.{l}.attn_v.weight"), &[EMBD, 128], F16)
    } else {
        g.tensor(&format!("blk.{l}.ssm_in.weight"), &[EMBD, 4 * EMBD], F16)
    };
    g.tensor(&format!("blk.{l}.ffn_up.weight"), &[EMBD, ff], F16)
        .tensor(&format!("blk.{l}.ffn_down.weight"), &[ff, EMBD], F16)
}

fn layer_weights(g: &Gguf, l: u64) -> u64 {
    let prefix = format!("blk.{l}.");
    g.tensors
        .iter()
        .filter(|t| t.name.starts_with(&prefix))
        .map(tensor_bytes)
        .sum()
}

/// For every count n of layers (from the last one down), `--vram` of exactly the overhead and
/// those n layers offloads n, and one byte less offloads n − 1.
fn check(g: &Gguf, kv_and_state: &[u64], opts: &EstimateOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    g.write(&path);
    let plain = estimate_file(&path, opts).unwrap();
    assert_eq!(
        plain.kv_cache_bytes + plain.recurrent_state_bytes,
        kv_and_state.iter().sum::<u64>(),
        "the per-layer sizes worked out here disagree with the estimate's totals"
    );
    let layers = kv_and_state.len();
    let mut need = plain.overhead_bytes;
    for n in 1..=layers {
        let l = layers - n;
        let cost = layer_weights(g, l as u64) + kv_and_state[l];
        need += cost;
        let at = |vram: u64| {
            let e = estimate_file(
                &path,
                &EstimateOptions {
                    vram_bytes: Some(vram),
                    ..opts.clone()
                },
            )
            .unwrap();
            assert_eq!(e.fits, Some(false), "{vram} B holds the whole model");
            e.gpu_layers.unwrap()
        };
        assert_eq!(at(need), n as u32, "exactly {n} layers' worth ({need} B)");
        assert_eq!(at(need - 1), n as u32 - 1, "one byte short of {n} layers");
    }
}

#[test]
fn sliding_window_layers_offload_with_their_small_cache() {
    // gemma3: layers 0-4 slide over a 512-token window, layer 5 attends to all 16,384.
    let mut g = base("gemma3", 6)
        .kv("gemma3.attention.head_count_kv", Meta::U32(2))
        .kv("gemma3.attention.key_length", Meta::U32(64))
        .kv("gemma3.attention.value_length", Meta::U32(64))
        .kv("gemma3.attention.sliding_window", Meta::U32(512));
    for l in 0..6 {
        g = layer(g, l, true);
    }
    let opts = EstimateOptions {
        ctx: Some(16384),
        kv_type: KvType::F16,
        ..EstimateOptions::default()
    };
    // K and V of 2 heads x 64 in f16: 512 B a cell. The window holds 512 + one micro-batch
    // of 512 = 1,024 cells.
    let swa = 512 * 1024;
    let full = 512 * 16384;
    check(&g, &[swa, swa, swa, swa, swa, full], &opts);
}

#[test]
fn recurrent_and_attention_layers_offload_with_their_own_memory() {
    // jamba: layers 0 and 2 are Mamba (no KV heads), 1 and 3 attend; 3 slots.
    let mut g = base("jamba", 4)
        .kv("jamba.attention.head_count_kv", Meta::i32s(&[0, 2, 0, 2]))
        .kv("jamba.ssm.conv_kernel", Meta::U32(4))
        .kv("jamba.ssm.inner_size", Meta::U32(512))
        .kv("jamba.ssm.state_size", Meta::U32(16))
        .kv("jamba.ssm.time_step_rank", Meta::U32(16));
    for l in 0..4 {
        g = layer(g, l, l % 2 == 1);
    }
    let opts = EstimateOptions {
        ctx: Some(4096),
        parallel: 3,
        kv_unified: true,
        kv_type: KvType::Q8_0,
        ..EstimateOptions::default()
    };
    // K and V of 2 heads x 64 (256 / 4 heads) in q8_0: 2 x 4 x 34 B a cell, 4,096 cells.
    let attn = 2 * 4 * 34 * 4096;
    // f32 conv window (3 x 512) and state (16 x 512) per slot.
    let mamba = 4 * (3 * 512 + 16 * 512) * 3;
    check(&g, &[mamba, attn, mamba, attn], &opts);
}
