//! The engines' arithmetic on model shapes whose answers are worked out by hand beside them.

use super::*;
use serde_json::json;

fn model(cfg: &Value, weights: u64) -> ModelInfo {
    let mut info = safetensors::from_config(cfg).unwrap();
    info.weights_bytes = weights;
    info
}

fn llama8b() -> Value {
    json!({
        "model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "hidden_size": 4096, "intermediate_size": 14336,
        "vocab_size": 128256, "max_position_embeddings": 131072, "torch_dtype": "bfloat16"
    })
}

fn opts(engine: Engine, card: u64, ctx: u64) -> EngineOptions {
    EngineOptions {
        engine,
        fraction: None,
        card_bytes: card,
        free_bytes: None,
        ctx: Some(ctx),
        kv_dtype_bytes: 2,
    }
}

#[test]
fn vllm_on_a_24_gib_card() {
    let cfg = llama8b();
    let p = plan(
        &model(&cfg, 16 * GIB),
        &cfg,
        &opts(Engine::Vllm, 24 * GIB, 8192),
    )
    .unwrap();
    // Need: 0.9 × 25,769,803,776 = 23,192,823,398 (floored): the whole share, whatever ctx.
    assert_eq!(p.need_bytes, 23_192_823_398);
    assert_eq!(p.share_bytes, p.need_bytes);
    assert!(p.fraction_default);
    // KV per token: K and V × 32 layers × 8 heads × 128 dims × 2 bytes = 131,072.
    assert_eq!(p.kv_bytes_per_token, 131_072);
    // Reserve: a card under 70 GiB batches 2048 tokens: 2048 × (4 × 4096 + 3 × 14336) × 2
    // = 243,269,632; logits 256 × 128,256 × 4 = 131,334,144; outside torch 536,870,912.
    assert_eq!(p.reserve_bytes, 911_474_688);
    // KV share: 23,192,823,398 − 17,179,869,184 − 911,474,688 = 5,101,479,526.
    assert_eq!(p.kv_share_bytes, 5_101_479_526);
    // Blocks of 16 tokens of 2,097,152 bytes: 2432 whole ones = 38,912 tokens; a sequence
    // of 8192 tokens takes 512 blocks, so 4 at once.
    assert_eq!(p.max_tokens, 38_912);
    assert_eq!(p.sequences, 4);
    // An fp8 cache halves the bytes per token and doubles the blocks (4865 → 9 sequences).
    let fp8 = EngineOptions {
        kv_dtype_bytes: 1,
        ..opts(Engine::Vllm, 24 * GIB, 8192)
    };
    let p8 = plan(&model(&cfg, 16 * GIB), &cfg, &fp8).unwrap();
    assert_eq!(p8.kv_bytes_per_token, 65_536);
    assert_eq!(p8.max_tokens, 4865 * 16);
    assert_eq!(p8.sequences, 9);
}

#[test]
fn sglang_default_fraction_follows_the_card() {
    // 24 GiB = 24,576 MiB: reserved 512 + 2048 × 1.5 + 24 × 2 + 128 = 3760 MiB;
    // (24,576 − 3760) / 24,576 = 0.84700 → 0.847.
    assert_eq!(sglang_default_fraction(24 * GIB), 0.847);
    // 80 GiB = 81,920 MiB: 512 + 8192 × 1.5 + 256 × 2 + 128 = 13,440 MiB (over the 10 GiB
    // floor); (81,920 − 13,440) / 81,920 = 0.8359 → 0.836.
    assert_eq!(sglang_default_fraction(80 * GIB), 0.836);
    // 16 GiB: 512 + 3072 + 16 + 128 = 3728 MiB; (16,384 − 3728) / 16,384 = 0.7725 → 0.772
    // (0.77246 rounds down).
    assert_eq!(sglang_default_fraction(16 * GIB), 0.772);
}

#[test]
fn sglang_mla_on_an_80_gib_card() {
    // DeepSeek-V2-Lite's shape: 27 layers, a latent of 512 + 64 per token and layer.
    let cfg = json!({
        "model_type": "deepseek_v2", "num_hidden_layers": 27, "num_attention_heads": 16,
        "num_key_value_heads": 16, "hidden_size": 2048, "kv_lora_rank": 512,
        "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
        "max_position_embeddings": 163840, "vocab_size": 102400
    });
    let p = plan(
        &model(&cfg, 32 * GIB),
        &cfg,
        &opts(Engine::Sglang, 80 * GIB, 32768),
    )
    .unwrap();
    assert!(p.mla);
    // 27 × 576 × 2 bytes = 31,104 per token (not heads × head size: that would be 221,184).
    assert_eq!(p.kv_bytes_per_token, 31_104);
    assert_eq!(p.fraction, 0.836);
    // Share: 0.836 × 85,899,345,920 = 71,811,853,189; KV: that − 34,359,738,368 weights −
    // 536,870,912 outside torch = 36,915,243,909 → 1,186,832 tokens, 36 sequences of 32,768.
    assert_eq!(p.share_bytes, 71_811_853_189);
    assert_eq!(p.kv_share_bytes, 36_915_243_909);
    assert_eq!(p.max_tokens, 1_186_832);
    assert_eq!(p.sequences, 36);
    // Its reserve of 13,440 MiB beside the share fills the card: it needs all of it.
    assert_eq!(p.need_bytes, 80 * GIB);
    // With a smaller fraction the need is the share and that reserve: 0.5 × 80 GiB + 13,440
    // MiB = 42,949,672,960 + 14,092,861,440 = 57,042,534,400.
    let half = EngineOptions {
        fraction: Some(0.5),
        ..opts(Engine::Sglang, 80 * GIB, 32768)
    };
    let p = plan(&model(&cfg, 32 * GIB), &cfg, &half).unwrap();
    assert_eq!(p.need_bytes, 57_042_534_400);
    assert!(!p.fraction_default);
}

#[test]
fn weights_over_the_share_are_refused() {
    let cfg = llama8b();
    // 0.9 × 16 GiB = 14.4 GiB < 15 GiB of weights.
    let e = plan(
        &model(&cfg, 15 * GIB),
        &cfg,
        &opts(Engine::Vllm, 16 * GIB, 4096),
    )
    .unwrap_err();
    assert!(
        e.contains("exceed vllm's share") && e.contains("--gpu-memory-utilization"),
        "{e}"
    );
    // 14 GiB of weights fit in 14.4 GiB but not with the 0.85 GiB reserve.
    let e = plan(
        &model(&cfg, 14 * GIB),
        &cfg,
        &opts(Engine::Vllm, 16 * GIB, 4096),
    )
    .unwrap_err();
    assert!(e.contains("nothing is left for the KV cache"), "{e}");
}

#[test]
fn a_context_longer_than_the_cache_is_refused_with_the_longest_that_fits() {
    let cfg = llama8b();
    // 38,912 tokens fit (see vllm_on_a_24_gib_card); 65,536 do not.
    let e = plan(
        &model(&cfg, 16 * GIB),
        &cfg,
        &opts(Engine::Vllm, 24 * GIB, 65536),
    )
    .unwrap_err();
    assert!(e.contains("at most 38912"), "{e}");
}

#[test]
fn sliding_and_hybrid_models() {
    let gemma = json!({
        "model_type": "gemma2", "num_hidden_layers": 26, "num_attention_heads": 8,
        "num_key_value_heads": 4, "head_dim": 256, "hidden_size": 2304,
        "sliding_window": 4096, "max_position_embeddings": 8192
    });
    let p = plan(
        &model(&gemma, GIB),
        &gemma,
        &opts(Engine::Vllm, 24 * GIB, 8192),
    )
    .unwrap();
    // Every second layer slides: 13 of 26; all counted in full: 2 × 26 × 4 × 256 × 2.
    assert_eq!(p.kv_bytes_per_token, 106_496);
    assert!(
        p.notes.iter().any(|n| n.contains("13 of 26 layers")),
        "{:?}",
        p.notes
    );
    let hybrid = json!({
        "model_type": "qwen3_next", "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 128,
        "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"]
    });
    let e = plan(
        &model(&hybrid, GIB),
        &hybrid,
        &opts(Engine::Sglang, 24 * GIB, 4096),
    )
    .unwrap_err();
    assert!(e.contains("state-space"), "{e}");
}

#[test]
fn the_fraction_flags_belong_to_their_engine() {
    assert_eq!(Engine::Vllm.fraction(Some(0.5), None).unwrap(), Some(0.5));
    assert_eq!(Engine::Sglang.fraction(None, Some(0.7)).unwrap(), Some(0.7));
    assert!(Engine::Sglang.fraction(Some(0.5), None).is_err());
    assert!(Engine::Vllm.fraction(None, Some(0.5)).is_err());
    assert!(Engine::LlamaCpp.fraction(Some(0.5), None).is_err());
    for bad in [0.0, 1.5, f64::NAN, -0.2] {
        assert!(Engine::Vllm.fraction(Some(bad), None).is_err(), "{bad}");
    }
    assert_eq!("vLLM".parse::<Engine>().unwrap(), Engine::Vllm);
    assert!("tgi".parse::<Engine>().is_err());
    assert_eq!(kv_cache_dtype_bytes("fp8_e5m2").unwrap(), 1);
    assert!(kv_cache_dtype_bytes("q8_0").is_err());
}
