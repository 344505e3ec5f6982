//! What one refresh of `memwarden top` costs, piece by piece, measured side by side:
//! - reading a machine of 500 processes: the steady-state sampler (cached static facts, one
//!   file per unchanged process) against a full snapshot, on the same fake machine;
//! - one sample into the analysis and the table (500 processes);
//! - drawing a full 160×48 frame from the example recording.
//!
//! The CPU time of the whole program against htop on a real machine is measured by
//! `top_vs_htop.sh` beside this file.

use std::path::PathBuf;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use memwarden_probe::fakeroot::{FakeRoot, populate_bench_root};
use memwarden_probe::incremental::Sampler;
use memwarden_probe::snapshot::Snapshot;
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};
use memwarden_tui::app::App;
use memwarden_tui::replay::Recording;
use memwarden_tui::theme::ThemeName;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const PROCESSES: u32 = 500;

fn example() -> Vec<Snapshot> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/training-beside-inference.jsonl");
    Recording::open(&path).expect("example recording").samples
}

fn reading(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    populate_bench_root(&FakeRoot::new(tmp.path()), PROCESSES, 4).expect("fake root");
    let root = HostRoot::new(tmp.path()).expect("root");
    let mut g = c.benchmark_group("read 500 processes");
    let mut full = Probe::new(root.clone(), GpuSourceKind::Drm);
    g.bench_function("full snapshot", |b| {
        b.iter(|| full.snapshot().expect("snapshot"))
    });
    let mut sampler = Sampler::new(Probe::new(root, GpuSourceKind::Drm));
    sampler.sample().expect("first sample");
    g.bench_function("steady-state sample", |b| {
        b.iter(|| sampler.sample().expect("sample"))
    });
    g.finish();
}

/// The example's last snapshot grown to 500 processes (copies of its own with new pids).
fn big_snapshot(samples: &[Snapshot]) -> Snapshot {
    let mut s = samples.last().expect("samples").clone();
    let base = s.processes.clone();
    let mut pid = 10_000;
    while s.processes.len() < PROCESSES as usize {
        for p in &base {
            let mut q = p.clone();
            q.pid = pid;
            q.starttime += u64::from(pid);
            pid += 1;
            s.processes.push(q);
        }
    }
    s
}

fn analysis_and_table(c: &mut Criterion) {
    let samples = example();
    let big = big_snapshot(&samples);
    let mut app = App::new(ThemeName::Dark, true, 600);
    let mut t = big.taken_at_ms;
    c.bench_function("ingest one sample of 500 processes", |b| {
        b.iter(|| {
            let mut s = big.clone();
            t += 1000;
            s.taken_at_ms = t;
            app.ingest(s);
        })
    });
}

fn drawing(c: &mut Criterion) {
    let samples = example();
    let mut app = App::new(ThemeName::Dark, true, 600);
    for s in &samples {
        app.ingest(s.clone());
    }
    let mut term = Terminal::new(TestBackend::new(160, 48)).expect("terminal");
    c.bench_function("draw a 160x48 frame", |b| {
        b.iter(|| {
            term.draw(|f| memwarden_tui::ui::draw(f, &app, Instant::now()))
                .expect("draw");
        })
    });
}

criterion_group!(benches, reading, analysis_and_table, drawing);
criterion_main!(benches);
