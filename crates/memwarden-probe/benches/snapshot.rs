//! The snapshot of a fake machine with 2,000 processes, each with 4 fdinfo files (one a DRM
//! client), against the floor of reading the same files naively (procfloor) and against a
//! psutil-based reader, measured side by side in one run.
//!
//! `PROCFLOOR=/path/to/procfloor` (built with `cc -O2 -o procfloor procfloor.c`) adds the floor;
//! a `python3` with psutil adds the Python reader. Without them only the snapshot is timed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use memwarden_probe::fakeroot::{FakeRoot, populate_bench_root};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

const PROCESSES: u32 = 2_000;
const FDS: u32 = 4;
const ROUNDS: usize = 7;
const PASSES: u32 = 10;

fn bench_root() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temporary directory");
    populate_bench_root(&FakeRoot::new(tmp.path()), PROCESSES, FDS).expect("fake root");
    tmp
}

/// Runs a tool that prints "... X.XX ms per pass" and returns X.
fn external_ms(cmd: &mut Command) -> Option<f64> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let before = text.split(" ms per pass").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

fn probe(root: &Path, workloads: bool) -> Probe {
    let mut p = Probe::new(HostRoot::new(root).expect("root"), GpuSourceKind::Drm);
    p.set_workloads(workloads);
    p
}

fn ours_ms(probe: &mut Probe) -> f64 {
    let t0 = Instant::now();
    for _ in 0..PASSES {
        std::hint::black_box(probe.snapshot().expect("snapshot"));
    }
    t0.elapsed().as_secs_f64() * 1e3 / f64::from(PASSES)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaves the three readers round by round, so that the machine's noise falls on all.
fn side_by_side(root: &Path) {
    let floor = std::env::var_os("PROCFLOOR");
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/psutil_reader.py");
    let mut bare = probe(root, false);
    let mut full = probe(root, true);
    let (mut f, mut b, mut o, mut p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        if let Some(floor) = &floor {
            f.extend(external_ms(
                Command::new(floor).arg(root).arg(PASSES.to_string()),
            ));
        }
        b.push(ours_ms(&mut bare));
        o.push(ours_ms(&mut full));
        p.extend(external_ms(
            Command::new("python3")
                .arg(&python)
                .arg(root)
                .arg(PASSES.to_string()),
        ));
    }
    let (bare, full) = (median(b), median(o));
    println!(
        "\nside by side, median of {ROUNDS} rounds of {PASSES} passes, {PROCESSES} processes x {FDS} fdinfo:"
    );
    println!("  memwarden snapshot   {bare:8.2} ms   (processes, GPUs, host; no workloads)");
    println!(
        "  with workloads       {full:8.2} ms   grouping and attribution add {:.0}%",
        (full / bare - 1.0) * 100.0
    );
    if !f.is_empty() {
        let floor = median(f);
        println!(
            "  procfloor (C)        {floor:8.2} ms   snapshot / procfloor = {:.2}x, with workloads {:.2}x",
            bare / floor,
            full / floor
        );
    } else {
        println!("  procfloor            not run (set PROCFLOOR to the built procfloor binary)");
    }
    if !p.is_empty() {
        let py = median(p);
        println!(
            "  psutil (Python)      {py:8.2} ms   psutil / snapshot = {:.1}x, / with workloads {:.1}x",
            py / bare,
            py / full
        );
    } else {
        println!("  psutil               not run (python3 with psutil not found)");
    }
}

fn bench(c: &mut Criterion) {
    let tmp = bench_root();
    side_by_side(tmp.path());
    let mut probe = probe(tmp.path(), true);
    let mut group = c.benchmark_group("probe");
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(30);
    group.bench_function("snapshot_2000_processes", |b| {
        b.iter(|| probe.snapshot().expect("snapshot"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
