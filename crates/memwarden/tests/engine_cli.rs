//! `memwarden estimate --engine vllm|sglang` as a user runs it, on a safetensors model
//! directory written here: real files, real exit codes.

mod common;
#[path = "../../memwarden-plan/tests/common/mod.rs"]
mod plan_common;

use std::path::Path;
use std::process::Output;

use common::{assert_bad_input, stderr, stdout};
use plan_common::{sysfs, write_safetensors};

fn memwarden(args: &[&str]) -> Output {
    common::memwarden_with(args, &[("MEMWARDEN_GPU_SOURCE", "none")])
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// A small llama: 2 layers of 2 KV heads of 16, hidden 64, intermediate 128, vocabulary 1000;
/// weights 1000 × 64 × 2 + 2 × 32 × 64 × 2 = 136,192 bytes.
fn model(dir: &Path) -> String {
    let config = serde_json::json!({
        "model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "hidden_size": 64,
        "intermediate_size": 128, "vocab_size": 1000, "max_position_embeddings": 4096,
        "torch_dtype": "bfloat16"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[
            ("model.embed_tokens.weight", "BF16", &[1000, 64]),
            ("model.layers.0.self_attn.k_proj.weight", "BF16", &[32, 64]),
            ("model.layers.1.self_attn.k_proj.weight", "BF16", &[32, 64]),
        ],
    );
    dir.to_str().unwrap().to_string()
}

#[test]
fn vllm_and_sglang_on_a_card_given_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let v = json(&memwarden(&[
        "estimate", &m, "--engine", "vllm", "--vram", "1GiB", "--ctx", "4096", "--json",
    ]));
    // 0.9 × 1 GiB = 966,367,641: the need whatever the context.
    assert_eq!(v["need_bytes"], 966_367_641u64);
    assert_eq!(v["weights_bytes"], 136_192);
    // K and V × 2 layers × 2 heads × 16 × 2 bytes.
    assert_eq!(v["kv_bytes_per_token"], 256);
    // Reserve 2048 × (4 × 64 + 3 × 128) × 2 + 256 × 1000 × 4 + 512 MiB = 540,516,352; KV share
    // 966,367,641 − 136,192 − 540,516,352 = 425,715,097 = 103,934 blocks of 16 × 256 bytes:
    // 1,662,944 tokens, 405 sequences of 4096 (256 blocks each).
    assert_eq!(v["kv_share_bytes"], 425_715_097u64);
    assert_eq!(v["max_tokens"], 1_662_944u64);
    assert_eq!(v["sequences"], 405);
    assert_eq!(v["engine"], "vllm");

    let o = memwarden(&["estimate", &m, "--engine", "vllm", "--vram", "1GiB"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("need on card"), "{text}");
    assert!(
        text.contains("--gpu-memory-utilization 0.9 (default)"),
        "{text}"
    );
    assert!(
        text.contains("1662944 tokens: 405 sequence(s) of 4096"),
        "{text}"
    );

    // SGLang at half of 4 GiB: KV 2 GiB − 136,192 − 512 MiB = 1,610,476,544 = 6,290,924 tokens
    // of 256 bytes, 1535 sequences of the trained 4096. Beside the share it reserves 3728 MiB
    // on a card this small, so it needs the whole card.
    let v = json(&memwarden(&[
        "estimate",
        &m,
        "--engine",
        "sglang",
        "--mem-fraction-static",
        "0.5",
        "--vram",
        "4GiB",
        "--json",
    ]));
    assert_eq!(v["max_tokens"], 6_290_924u64);
    assert_eq!(v["sequences"], 1535);
    assert_eq!(v["need_bytes"], 4u64 << 30);
    // Its default on a 4 GiB card is (4096 − 3728) / 4096 = 0.09, too little for anything but
    // the weights; on 2 GiB it is below 0. Each is said, with what to do.
    assert_bad_input(
        &memwarden(&["estimate", &m, "--engine", "sglang", "--vram", "4GiB"]),
        "nothing is left for the KV cache: sglang's share (369 MiB = 0.09 of 4 GiB)",
    );
    assert_bad_input(
        &memwarden(&["estimate", &m, "--engine", "sglang", "--vram", "2GiB"]),
        "give the fraction",
    );
}

#[test]
fn the_card_defaults_to_the_gpu_seen_and_fits_reads_its_free_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // One DRM GPU with 24 GiB, 4 GiB of it used.
    sysfs::gpu(&root, 0, &[0, 1]);
    let mdir = dir.path().join("model");
    std::fs::create_dir(&mdir).unwrap();
    let m = model(&mdir);
    let run = |extra: &[&str]| {
        let mut args = vec!["estimate", &m, "--engine", "vllm"];
        args.extend_from_slice(extra);
        common::on_drm_machine(&root, &args)
    };
    // 0.9 of 24 GiB is more than the 20 GiB free: vLLM would not start.
    let o = run(&["--fits"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("fits             no: GPU 0"),
        "{}",
        stdout(&o)
    );
    let o = run(&["--gpu-memory-utilization", "0.5", "--fits", "--json"]);
    let v = json(&o);
    assert_eq!(v["card_bytes"], 24u64 << 30);
    assert_eq!(v["need_bytes"], 12u64 << 30);
    assert_eq!(v["free_bytes"], 20u64 << 30);
    assert_eq!(v["fits"], true);
}

#[test]
fn engine_bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let bad = |args: &[&str], needle: &str| {
        let mut all = vec!["estimate", m.as_str()];
        all.extend_from_slice(args);
        assert_bad_input(&memwarden(&all), needle);
    };
    bad(&["--engine", "tgi"], "unknown engine");
    bad(
        &["--engine", "vllm"],
        "no GPU is seen here: give the card's size with --vram",
    );
    bad(
        &[
            "--engine",
            "sglang",
            "--vram",
            "24GiB",
            "--gpu-memory-utilization",
            "0.5",
        ],
        "--mem-fraction-static",
    );
    bad(
        &["--gpu-memory-utilization", "0.5"],
        "need --engine vllm or sglang",
    );
    bad(
        &[
            "--engine",
            "vllm",
            "--vram",
            "24GiB",
            "--gpu-memory-utilization",
            "1.5",
        ],
        "at most 1",
    );
    bad(
        &["--engine", "vllm", "--vram", "24GiB", "--kv-type", "q8_0"],
        "--kv-type is llama.cpp's",
    );
    bad(
        &[
            "--engine",
            "vllm",
            "--vram",
            "24GiB",
            "--kv-cache-dtype",
            "q8_0",
        ],
        "unknown --kv-cache-dtype",
    );
    bad(&["--kv-cache-dtype", "fp8"], "llama.cpp's is --kv-type");
    // 0.0001 of 1 GiB is 107,374 bytes, less than the 136,192 of weights.
    bad(
        &[
            "--engine",
            "vllm",
            "--vram",
            "1GiB",
            "--gpu-memory-utilization",
            "0.0001",
        ],
        "exceed vllm's share",
    );
    // The cache holds 1,662,944 tokens (above): a longer sequence does not start.
    bad(
        &["--engine", "vllm", "--vram", "1GiB", "--ctx", "2000000"],
        "at most 1662944",
    );
    let gguf = dir.path().join("m.gguf");
    std::fs::write(&gguf, b"GGUF").unwrap();
    assert_bad_input(
        &memwarden(&[
            "estimate",
            gguf.to_str().unwrap(),
            "--engine",
            "vllm",
            "--vram",
            "24GiB",
        ]),
        "GGUF files are for llama.cpp",
    );
}

/// A broker consumer declared with `estimate = { …, engine = "vllm" }` needs the engine's share
/// of its pool's card: the pool's capacity, or its GPU's total memory.
#[test]
fn a_broker_consumer_run_by_vllm_needs_its_share_of_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    sysfs::gpu(&root, 0, &[0, 1]);
    let mdir = dir.path().join("model");
    std::fs::create_dir(&mdir).unwrap();
    model(&mdir);
    let consumer = |name: &str, port: u16, est: &str| {
        format!(
            "[[consumer]]\nname = \"{name}\"\npool = \"{name}\"\nupstream = \
             \"http://127.0.0.1:{port}\"\nunload = \"POST /unload\"\nestimate = {{ model = \
             \"model\", ctx = 4096{est} }}\n"
        )
    };
    let config = format!(
        "[[pool]]\nname = \"half\"\nkind = \"ram\"\ncapacity = \"24GiB\"\n\
         [[pool]]\nname = \"card\"\nkind = \"vram\"\ngpu = 0\n{}{}",
        consumer(
            "half",
            9,
            ", engine = \"vllm\", gpu_memory_utilization = 0.5"
        ),
        consumer("card", 10, ", engine = \"vllm\""),
    );
    let file = dir.path().join("broker.toml");
    std::fs::write(&file, &config).unwrap();
    let check = |file: &Path| common::serve_check(&root, file);
    let o = check(&file);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    // Half of the 24 GiB capacity; 0.9 of the GPU's 24 GiB (21.6 GiB).
    assert!(out.contains("half: its declared 12 GiB"), "{out}");
    assert!(out.contains("card: its declared 21.6 GiB"), "{out}");
    // A preallocating engine in a RAM pool of no fixed size has no card to take a share of.
    let ram = dir.path().join("ram.toml");
    std::fs::write(
        &ram,
        format!(
            "[[pool]]\nname = \"r\"\nkind = \"ram\"\n{}",
            consumer("r", 9, ", engine = \"sglang\"")
        ),
    )
    .unwrap();
    assert_bad_input(
        &check(&ram),
        "its pool \"r\" is a ram pool without a capacity",
    );
}
