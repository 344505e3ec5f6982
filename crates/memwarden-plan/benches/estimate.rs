//! `estimate` on a GGUF with 1,000 tensors and 30 metadata keys, and the same file read by the
//! Python `gguf` package, side by side in one run (the ratio is printed at the end).

#[path = "../tests/common/gguf_writer.rs"]
mod gguf_writer;

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use gguf_writer::{Meta, llama};
use memwarden_plan::estimate::{EstimateOptions, estimate_file};

/// 111 llama layers of 9 tensors and the token embedding: 1,000 tensors; 30 keys.
fn write_model(path: &Path) {
    let mut g = llama(111, 256, 4, 4, 4096, 1);
    g.tensors.truncate(1000);
    for i in g.meta.len()..30 {
        g = g.kv(&format!("bench.extra_{i}"), Meta::U32(i as u32));
    }
    assert_eq!((g.tensors.len(), g.meta.len()), (1000, 30));
    g.write(path);
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench-1000.gguf");
    write_model(&path);
    let opts = EstimateOptions::default();

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("estimate_gguf_1000_tensors_30_keys", |b| {
        b.iter(|| estimate_file(black_box(&path), &opts).expect("estimate"))
    });
    c.final_summary();

    // The side-by-side ratio: the same file, our mean against the Python reader's mean.
    let iterations = 200u32;
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(estimate_file(&path, &opts).expect("estimate"));
    }
    let ours = start.elapsed() / iterations;
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/gguf_reader.py");
    let py = Command::new("python3")
        .arg(&helper)
        .arg(&path)
        .arg("20")
        .output();
    match py {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let secs: f64 = text
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0.0);
            let theirs = Duration::from_secs_f64(secs);
            println!(
                "side by side: memwarden estimate {:.3} ms, Python gguf GGUFReader {:.3} ms: {:.0}x",
                ours.as_secs_f64() * 1e3,
                theirs.as_secs_f64() * 1e3,
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
        Ok(o) => println!(
            "side by side skipped: the Python helper failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("side by side skipped: python3 not runnable: {e}"),
    }
}
