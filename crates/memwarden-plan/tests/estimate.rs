//! Estimates of generated GGUF and safetensors files with known shapes: exact weights and KV.

mod common;

use common::gguf_writer::{Gguf, Meta, llama, weights_of};
use memwarden_plan::PlanError;
use memwarden_plan::estimate::{EstimateOptions, FlashAttn, KvType, estimate_file};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn opts(ctx: u64) -> EstimateOptions {
    EstimateOptions {
        ctx: Some(ctx),
        ..EstimateOptions::default()
    }
}

#[test]
fn llama_7b_shape_kv_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama.gguf");
    let g = llama(32, 4096, 32, 32, 4096, 1);
    g.write(&path);
    let e = estimate_file(&path, &EstimateOptions::default()).unwrap();
    assert_eq!(e.architecture, "llama");
    assert_eq!(e.context, 4096, "defaults to the trained context");
    assert_eq!(e.kv_cache_bytes, 2 * GIB);
    assert_eq!(e.kv_k_bytes, GIB);
    assert_eq!(e.weights_bytes, weights_of(&g));
    assert_eq!(
        e.total_bytes,
        e.weights_bytes + e.kv_cache_bytes + e.overhead_bytes
    );
    assert!(e.estimate);

    let q8 = EstimateOptions {
        kv_type: KvType::Q8_0,
        flash_attn: FlashAttn::On,
        ..opts(4096)
    };
    assert_eq!(
        estimate_file(&path, &q8).unwrap().kv_cache_bytes,
        1088 * MIB
    );
    let q4 = EstimateOptions {
        kv_type: KvType::Q4_0,
        flash_attn: FlashAttn::On,
        ..opts(4096)
    };
    assert_eq!(estimate_file(&path, &q4).unwrap().kv_cache_bytes, 576 * MIB);
    // A quantised K alone needs no flash attention; K and V are sized by their own types.
    let k_only = EstimateOptions {
        kv_type_k: Some(KvType::Q8_0),
        ..opts(4096)
    };
    let e = estimate_file(&path, &k_only).unwrap();
    assert_eq!((e.kv_k_bytes, e.kv_v_bytes), (544 * MIB, GIB));
    assert_eq!((e.kv_type, e.kv_type_v), (KvType::Q8_0, KvType::F16));
}

#[test]
fn gguf_version_2_reads_like_version_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.gguf");
    let mut g = llama(2, 256, 4, 4, 512, 1);
    g.version = 2;
    g.write(&path);
    let e = estimate_file(&path, &opts(512)).unwrap();
    assert_eq!(e.weights_bytes, weights_of(&g));
    assert_eq!(e.kv_cache_bytes, 2 * 2 * 256 * 2 * 512);
}

#[test]
fn quantised_v_cache_needs_flash_attention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    llama(2, 256, 4, 4, 512, 1).write(&path);
    let e = estimate_file(
        &path,
        &EstimateOptions {
            kv_type: KvType::Q8_0,
            flash_attn: FlashAttn::Off,
            ..opts(512)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("flash attention"), "{e}");
    // llama.cpp's default, auto, turns it on.
    let auto = EstimateOptions {
        kv_type: KvType::Q8_0,
        ..opts(512)
    };
    assert!(estimate_file(&path, &auto).unwrap().flash_attn);
}

#[test]
fn context_padding_follows_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    // 4 layers, 8 KV heads of 64 = 512 elements per token per layer, f16 = 1 KiB each for K and V.
    llama(4, 512, 8, 8, 8192, 1).write(&path);
    let per_cell = 4 * 2 * 512 * 2;
    // 4000 tokens are 4096 cells, with flash attention or without.
    for fa in [FlashAttn::On, FlashAttn::Off] {
        let e = estimate_file(
            &path,
            &EstimateOptions {
                flash_attn: fa,
                ..opts(4000)
            },
        )
        .unwrap();
        assert_eq!(e.kv_size, 4096);
        assert_eq!(e.kv_cache_bytes, 4096 * per_cell);
    }
    let slots = |ctx, parallel, kv_unified| {
        estimate_file(
            &path,
            &EstimateOptions {
                parallel,
                kv_unified,
                ..opts(ctx)
            },
        )
        .unwrap()
    };
    // Four slots of 1000 tokens: a cache of 1024 cells each, the same in all.
    let par = slots(4000, 4, false);
    assert_eq!((par.kv_streams, par.kv_size), (4, 4096));
    // Four slots of 128 tokens: each slot's cache is at least 256 cells, twice the context.
    let small = slots(512, 4, false);
    assert_eq!((small.kv_streams, small.kv_size), (4, 1024));
    assert_eq!(small.kv_cache_bytes, 1024 * per_cell);
    // A unified cache holds the context once.
    let unified = slots(512, 4, true);
    assert_eq!((unified.kv_streams, unified.kv_size), (1, 512));
    let long = estimate_file(&path, &opts(16384)).unwrap();
    assert!(
        long.notes.iter().any(|n| n.contains("beyond the trained")),
        "{:?}",
        long.notes
    );
    let e = estimate_file(
        &path,
        &EstimateOptions {
            parallel: 300,
            ..opts(4096)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("at most 256 parallel sequences"), "{e}");
}

#[test]
fn unmodelled_architectures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bert.gguf");
    Gguf::new()
        .kv("general.architecture", Meta::Str("bert".into()))
        .kv("bert.block_count", Meta::U32(2))
        .kv("bert.context_length", Meta::U32(512))
        .kv("bert.embedding_length", Meta::U32(256))
        .kv("bert.attention.head_count", Meta::U32(4))
        .tensor("token_embd.weight", &[64, 2], 0)
        .write(&path);
    let e = estimate_file(&path, &opts(512)).unwrap_err().to_string();
    assert!(e.contains("does not model") && e.contains("bert"), "{e}");
}

#[test]
fn grouped_query_attention_and_quantised_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    // q8_0 weights: 4096 x 4096 = 16 Mi elements / 32 x 34 bytes.
    let g = llama(32, 4096, 32, 8, 8192, 8);
    g.write(&path);
    let e = estimate_file(&path, &opts(8192)).unwrap();
    assert_eq!(e.kv_cache_bytes, GIB);
    assert_eq!(e.weights_bytes, weights_of(&g));
    let q = &g.tensors[2];
    assert_eq!(q.name, "blk.0.attn_q.weight");
    assert_eq!(common::gguf_writer::tensor_bytes(q), 4096 * 4096 / 32 * 34);
}

#[test]
fn per_layer_kv_heads_and_recurrent_layers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hybrid.gguf");
    Gguf::new()
        .kv("general.architecture", Meta::Str("granitehybrid".into()))
        .kv("granitehybrid.block_count", Meta::U32(4))
        .kv("granitehybrid.context_length", Meta::U32(1024))
        .kv("granitehybrid.embedding_length", Meta::U32(512))
        .kv("granitehybrid.attention.head_count", Meta::U32(8))
        .kv(
            "granitehybrid.attention.head_count_kv",
            Meta::i32s(&[0, 4, 0, 4]),
        )
        .kv("granitehybrid.ssm.conv_kernel", Meta::U32(4))
        .kv("granitehybrid.ssm.inner_size", Meta::U32(1024))
        .kv("granitehybrid.ssm.state_size", Meta::U32(128))
        .kv("granitehybrid.ssm.group_count", Meta::U32(1))
        .tensor("blk.0.ssm_in.weight", &[512, 1024], 1)
        .write(&path);
    let e = estimate_file(&path, &opts(1024)).unwrap();
    // Two attention layers, 4 heads of 64, f16, 1024 cells, K and V.
    assert_eq!(e.kv_cache_bytes, 2 * 2 * 4 * 64 * 2 * 1024);
    // Two recurrent layers, one sequence, f32: (4-1)*(1024+2*128) + 128*1024 floats.
    assert_eq!(
        e.recurrent_state_bytes,
        2 * 4 * (3 * (1024 + 256) + 128 * 1024)
    );
    let two = estimate_file(
        &path,
        &EstimateOptions {
            parallel: 2,
            ..opts(1024)
        },
    )
    .unwrap();
    assert_eq!(two.recurrent_state_bytes, 2 * e.recurrent_state_bytes);
}

#[test]
fn sliding_window_layers_hold_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma2.gguf");
    Gguf::new()
        .kv("general.architecture", Meta::Str("gemma2".into()))
        .kv("gemma2.block_count", Meta::U32(4))
        .kv("gemma2.context_length", Meta::U32(8192))
        .kv("gemma2.embedding_length", Meta::U32(1024))
        .kv("gemma2.attention.head_count", Meta::U32(8))
        .kv("gemma2.attention.head_count_kv", Meta::U32(4))
        .kv("gemma2.attention.key_length", Meta::U32(256))
        .kv("gemma2.attention.value_length", Meta::U32(256))
        .kv("gemma2.attention.sliding_window", Meta::U32(4096))
        .tensor("token_embd.weight", &[64, 2], 0)
        .write(&path);
    let e = estimate_file(&path, &opts(8192)).unwrap();
    // Layers 0 and 2 slide: 4096 + 512 (one micro-batch) cells; layers 1 and 3 hold 8192.
    assert_eq!(e.kv_size_swa, Some(4608));
    let per_cell = 2 * 4 * 256 * 2;
    assert_eq!(e.kv_cache_bytes, per_cell * (2 * 4608 + 2 * 8192));
    // A short context is never padded past itself.
    let short = estimate_file(&path, &opts(1024)).unwrap();
    assert_eq!(short.kv_cache_bytes, per_cell * 4 * 1024);
    // An explicit pattern wins over the architecture's default.
    let path2 = dir.path().join("pattern.gguf");
    Gguf::new()
        .kv("general.architecture", Meta::Str("gemma3".into()))
        .kv("gemma3.block_count", Meta::U32(3))
        .kv("gemma3.context_length", Meta::U32(8192))
        .kv("gemma3.embedding_length", Meta::U32(1024))
        .kv("gemma3.attention.head_count", Meta::U32(4))
        .kv("gemma3.attention.sliding_window", Meta::U32(1024))
        .kv(
            "gemma3.attention.sliding_window_pattern",
            Meta::bools(&[true, true, false]),
        )
        .tensor("token_embd.weight", &[64, 2], 0)
        .write(&path2);
    let e = estimate_file(&path2, &opts(8192)).unwrap();
    let per_cell = 2 * 1024 * 2;
    assert_eq!(e.kv_cache_bytes, per_cell * (2 * 1536 + 8192));
}

#[test]
fn offload_counts_whole_layers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let g = llama(8, 1024, 8, 8, 2048, 1);
    g.write(&path);
    let all = estimate_file(&path, &opts(2048)).unwrap();
    let huge = EstimateOptions {
        vram_bytes: Some(all.total_bytes),
        ..opts(2048)
    };
    let e = estimate_file(&path, &huge).unwrap();
    assert_eq!((e.fits, e.gpu_layers), (Some(true), Some(8)));
    let layer_weights: u64 = g
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.0."))
        .map(common::gguf_writer::tensor_bytes)
        .sum();
    let layer_kv = all.kv_cache_bytes / 8;
    let three = all.overhead_bytes + 3 * (layer_weights + layer_kv) + 1;
    let e = estimate_file(
        &path,
        &EstimateOptions {
            vram_bytes: Some(three),
            ..opts(2048)
        },
    )
    .unwrap();
    assert_eq!((e.fits, e.gpu_layers), (Some(false), Some(3)));
    let none = estimate_file(
        &path,
        &EstimateOptions {
            vram_bytes: Some(1),
            ..opts(2048)
        },
    )
    .unwrap();
    assert_eq!(none.gpu_layers, Some(0));
}

#[test]
fn safetensors_file_and_sharded_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 8,
        "num_key_value_heads": 2, "hidden_size": 512, "max_position_embeddings": 4096,
        "intermediate_size": 1024, "vocab_size": 1000
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let one = dir.path().join("model.safetensors");
    common::write_safetensors(
        &one,
        &[
            ("model.embed_tokens.weight", "BF16", &[1000, 512]),
            (
                "model.layers.0.self_attn.q_proj.weight",
                "BF16",
                &[512, 512],
            ),
            ("model.layers.1.self_attn.q_proj.weight", "F32", &[512, 512]),
        ],
    );
    let e = estimate_file(&one, &opts(4096)).unwrap();
    assert_eq!(
        e.weights_bytes,
        1000 * 512 * 2 + 512 * 512 * 2 + 512 * 512 * 4
    );
    // 2 layers x 2 KV heads x 64 x f16 x K+V x 4096 cells.
    assert_eq!(e.kv_cache_bytes, 2 * 2 * 64 * 2 * 2 * 4096);
    assert_eq!(e.gpu_layers, None);

    let sharded = tempfile::tempdir().unwrap();
    std::fs::write(sharded.path().join("config.json"), config.to_string()).unwrap();
    common::write_safetensors(
        &sharded.path().join("model-00001-of-00002.safetensors"),
        &[("model.embed_tokens.weight", "F16", &[1000, 512])],
    );
    common::write_safetensors(
        &sharded.path().join("model-00002-of-00002.safetensors"),
        &[("model.layers.0.mlp.up_proj.weight", "F16", &[1024, 512])],
    );
    let index = serde_json::json!({"metadata": {}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.mlp.up_proj.weight": "model-00002-of-00002.safetensors"}});
    std::fs::write(
        sharded.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let e = estimate_file(sharded.path(), &opts(1024)).unwrap();
    assert_eq!(e.weights_bytes, (1000 * 512 + 1024 * 512) * 2);
    let by_index = sharded.path().join("model.safetensors.index.json");
    assert_eq!(estimate_file(&by_index, &opts(1024)).unwrap(), e);
    assert_eq!(e.context, 1024);
}

#[test]
fn safetensors_problems_are_named() {
    let empty = tempfile::tempdir().unwrap();
    let e = estimate_file(empty.path(), &opts(1024))
        .unwrap_err()
        .to_string();
    assert!(e.contains("without .safetensors files"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("model.safetensors");
    common::write_safetensors(&f, &[("w", "F16", &[4, 4])]);
    let e = estimate_file(&f, &opts(1024)).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");

    let mut lying = (u64::MAX).to_le_bytes().to_vec();
    lying.extend(b"{}");
    std::fs::write(&f, lying).unwrap();
    let e = estimate_file(&f, &opts(1024)).unwrap_err().to_string();
    assert!(e.contains("the header claims"), "{e}");

    let index = serde_json::json!({"weight_map": {"w": "../../etc/passwd"}});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let e = estimate_file(dir.path(), &opts(1024))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a plain file name"), "{e}");
}

#[test]
fn missing_file_is_an_io_error() {
    let e = estimate_file(std::path::Path::new("/nonexistent/x.gguf"), &opts(1)).unwrap_err();
    assert!(matches!(e, PlanError::Io { .. }), "{e}");
}

#[test]
fn split_gguf_counts_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let whole = llama(4, 256, 4, 4, 1024, 1);
    let mut first = llama(4, 256, 4, 4, 1024, 1).kv("split.count", Meta::U16(3));
    let mut second = Gguf::new().kv("split.count", Meta::U16(3));
    let mut third = Gguf::new().kv("split.count", Meta::U16(3));
    // Spread the tensors over the shards as gguf-split does: metadata in the first only.
    let rest = first.tensors.split_off(10);
    let (a, b) = rest.split_at(rest.len() / 2);
    second.tensors = a
        .iter()
        .map(|t| common::gguf_writer::Tensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    third.tensors = b
        .iter()
        .map(|t| common::gguf_writer::Tensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    let p1 = dir.path().join("m-00001-of-00003.gguf");
    first.write(&p1);
    second.write(&dir.path().join("m-00002-of-00003.gguf"));
    let e = estimate_file(&p1, &opts(1024)).unwrap_err().to_string();
    assert!(
        e.contains("m-00003-of-00003.gguf") && e.contains("missing"),
        "{e}"
    );
    third.write(&dir.path().join("m-00003-of-00003.gguf"));
    let e = estimate_file(&p1, &opts(1024)).unwrap();
    assert_eq!(e.weights_bytes, weights_of(&whole));
    let e = estimate_file(&dir.path().join("m-00002-of-00003.gguf"), &opts(1024))
        .unwrap_err()
        .to_string();
    assert!(e.contains("estimate the first one"), "{e}");
}

#[test]
fn a_70b_shaped_model_reads_from_its_header_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    // 80 layers, 64 heads, 8 KV heads of 128, q4_K weights: about 40 GB, a sparse file here.
    let g = llama(80, 8192, 64, 8, 8192, 12);
    g.write(&path);
    assert!(std::fs::metadata(&path).unwrap().len() > 30_000_000_000);
    let e = estimate_file(&path, &EstimateOptions::default()).unwrap();
    assert_eq!(e.weights_bytes, weights_of(&g));
    assert_eq!(e.context, 8192);
    // 80 layers x (K + V) x 8 x 128 x 2 bytes x 8192 cells = 2.5 GiB.
    assert_eq!(e.kv_cache_bytes, 5 * GIB / 2);
}

#[test]
fn full_attention_interval_marks_the_attention_layers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen3next.gguf");
    Gguf::new()
        .kv("general.architecture", Meta::Str("qwen3next".into()))
        .kv("qwen3next.block_count", Meta::U32(8))
        .kv("qwen3next.context_length", Meta::U32(4096))
        .kv("qwen3next.embedding_length", Meta::U32(1024))
        .kv("qwen3next.attention.head_count", Meta::U32(8))
        .kv("qwen3next.attention.head_count_kv", Meta::U32(2))
        .kv("qwen3next.attention.key_length", Meta::U32(256))
        .kv("qwen3next.attention.value_length", Meta::U32(256))
        .kv("qwen3next.full_attention_interval", Meta::U32(4))
        .tensor("token_embd.weight", &[64, 2], 0)
        .write(&path);
    let e = estimate_file(&path, &opts(4096)).unwrap();
    // Layers 3 and 7 attend: 2 layers x (K + V) x 2 heads x 256 x f16 x 4096 cells.
    assert_eq!(e.kv_cache_bytes, 2 * 2 * 2 * 256 * 2 * 4096);
}

#[test]
fn rwkv_layers_hold_state_not_kv() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rwkv7.gguf");
    Gguf::new()
        .kv("general.architecture", Meta::Str("rwkv7".into()))
        .kv("rwkv7.block_count", Meta::U32(3))
        .kv("rwkv7.context_length", Meta::U32(4096))
        .kv("rwkv7.embedding_length", Meta::U32(512))
        .kv("rwkv7.wkv.head_size", Meta::U32(64))
        .tensor("token_embd.weight", &[64, 2], 0)
        .write(&path);
    let e = estimate_file(&path, &opts(4096)).unwrap();
    assert_eq!(e.kv_cache_bytes, 0);
    // 3 layers x f32 x (2 x 512 token shift + 512 x 64 WKV state), one sequence.
    assert_eq!(e.recurrent_state_bytes, 3 * 4 * (2 * 512 + 512 * 64));
}
