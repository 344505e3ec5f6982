//! `memwarden fit`, `estimate` and `place` as a user runs them: real files, real exit codes.

#[path = "../../memwarden-plan/tests/common/gguf_writer.rs"]
mod gguf_writer;

use std::path::Path;
use std::process::{Command, Output};

use gguf_writer::{Gguf, Meta, llama, put_str};

fn memwarden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memwarden"))
        .args(args)
        .env("MEMWARDEN_GPU_SOURCE", "none")
        .output()
        .expect("run memwarden")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 with one line that names the problem.
fn assert_bad(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn model(dir: &Path) -> String {
    let p = dir.join("llama.gguf");
    llama(32, 4096, 32, 32, 4096, 1).write(&p);
    p.to_str().unwrap().to_string()
}

#[test]
fn estimate_json_carries_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let o = memwarden(&["estimate", &m, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["context"], 4096);
    assert_eq!(v["kv_cache_bytes"], 2u64 << 30);
    for k in ["weights_bytes", "overhead_bytes", "total_bytes"] {
        assert!(v[k].as_u64().unwrap() > 0, "{k}");
    }
    assert!(v["fits"].is_null());

    let o = memwarden(&[
        "estimate",
        &m,
        "--ctx",
        "4096",
        "--kv-type",
        "q8_0",
        "--flash-attn",
        "--json",
    ]);
    assert_eq!(json(&o)["kv_cache_bytes"], 1088u64 << 20);
}

#[test]
fn estimate_text_labels_estimates_and_fits_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let o = memwarden(&["estimate", &m, "--vram", "1TiB"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.contains("KV cache") && out.contains("2 GiB"), "{out}");
    assert!(out.contains("estimate"), "{out}");
    assert!(out.contains("fits             yes"), "{out}");

    let fits = memwarden(&["estimate", &m, "--vram", "1TiB", "--fits"]);
    assert_eq!(fits.status.code(), Some(0));
    let no = memwarden(&["estimate", &m, "--vram", "4GiB", "--fits"]);
    assert_eq!(no.status.code(), Some(1));
    assert!(
        stdout(&no).contains("layers could be offloaded"),
        "{}",
        stdout(&no)
    );
    let j = memwarden(&["estimate", &m, "--vram", "4GiB", "--json"]);
    let v = json(&j);
    assert_eq!(v["fits"], false);
    assert!(v["gpu_layers"].as_u64().unwrap() < 32);
}

#[test]
fn estimate_bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    assert_bad(
        &memwarden(&["estimate", "/nonexistent/m.gguf"]),
        "does not exist",
    );
    assert_bad(
        &memwarden(&["estimate", dir.path().to_str().unwrap()]),
        "without .safetensors",
    );
    assert_bad(&memwarden(&["estimate", &m, "--vram", "12XB"]), "12XB");
    assert_bad(
        &memwarden(&["estimate", &m, "--kv-type", "q9"]),
        "unknown KV cache type",
    );
    assert_bad(
        &memwarden(&["estimate", &m, "--kv-type", "q8_0"]),
        "flash attention",
    );
    assert_bad(&memwarden(&["estimate", &m, "--fits"]), "--fits needs");
    assert_bad(
        &memwarden(&["estimate", &m, "--gpu", "7"]),
        "no GPU with index 7",
    );
    assert_bad(&memwarden(&["estimate", &m, "--ctx", "-5"]), "-5");
    assert_bad(
        &memwarden(&["estimate", &m, "--parallel", "0"]),
        "--parallel",
    );

    let liar = dir.path().join("liar.gguf");
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    b.extend(0u64.to_le_bytes());
    std::fs::write(&liar, &b).unwrap();
    let o = memwarden(&["estimate", liar.to_str().unwrap()]);
    assert_bad(&o, "claims 1099511627776 tensors");
    assert_eq!(stderr(&o).lines().count(), 1);

    let past = dir.path().join("past.gguf");
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend((1u64 << 62).to_le_bytes());
    b.extend(b"general.architecture");
    std::fs::write(&past, &b).unwrap();
    assert_bad(
        &memwarden(&["estimate", past.to_str().unwrap()]),
        "file ends at byte",
    );

    let no_ctx = dir.path().join("noctx.gguf");
    Gguf::new()
        .kv("general.architecture", Meta::Str("llama".into()))
        .kv("llama.block_count", Meta::U32(1))
        .kv("llama.embedding_length", Meta::U32(64))
        .kv("llama.attention.head_count", Meta::U32(1))
        .write(&no_ctx);
    assert_bad(&memwarden(&["estimate", no_ctx.to_str().unwrap()]), "--ctx");
    let mut v = Vec::new();
    put_str(&mut v, "x");
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, &v).unwrap();
    assert_bad(
        &memwarden(&["estimate", junk.to_str().unwrap()]),
        "neither a GGUF",
    );
}
