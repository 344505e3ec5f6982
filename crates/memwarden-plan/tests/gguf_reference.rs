//! Cross-check against the format's reference implementation: a file written by the Python
//! `gguf` package (f16, f32 and q8_0 tensors, a token list) must read with the same weight bytes
//! its own reader counts, and the KV cache of its shape.

use std::path::Path;
use std::process::Command;

use memwarden_plan::estimate::{EstimateOptions, estimate_file};

#[test]
fn a_file_written_by_the_python_gguf_package() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reference.gguf");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/write_reference.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("python3 cannot run ({e}): `bash .ci/setup` installs it"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || !err.contains("No module named 'gguf'"),
        "the Python gguf package is not installed: `bash .ci/setup` installs it"
    );
    assert!(out.status.success(), "reference writer failed: {err}");
    let python_weights: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let e = estimate_file(&file, &EstimateOptions::default()).unwrap();
    assert_eq!(e.weights_bytes, python_weights);
    assert_eq!(
        python_weights,
        64 * 256 * 2 + 2 * (256 * 256 / 32 * 34 + 128 * 256 * 4)
    );
    assert_eq!(e.architecture, "llama");
    assert_eq!(e.context, 1024);
    // 2 layers x 2 KV heads x 64 x f16 x (K + V) x 1024 cells.
    assert_eq!(e.kv_cache_bytes, 1 << 20);
}
