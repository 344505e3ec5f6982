//! One admission decision with 50 consumers in the pool, in the costly case: the target is
//! unloaded and must evict several least-recently-used victims. Target: under 50 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use memwarden_broker::admission::{ConsumerState, Phase, PoolState, decide};

fn state() -> (PoolState, Vec<ConsumerState>) {
    const MIB: u64 = 1 << 20;
    let mut cs: Vec<ConsumerState> = (0..50u64)
        .map(|i| ConsumerState {
            pool: 0,
            phase: Phase::Loaded,
            stuck: false,
            need: (100 + (i * 37) % 400) * MIB,
            measured: Some((90 + (i * 37) % 400) * MIB),
            in_flight: u32::from(i % 7 == 0),
            max_concurrent: 4,
            last_used: Some((i * 7919) % 1000),
            last_started: None,
            evictable: i % 11 != 0,
            ephemeral: false,
            coexist_with: if i % 5 == 0 { vec![49] } else { Vec::new() },
            demand: Default::default(),
        })
        .collect();
    cs[49].phase = Phase::Unloaded;
    cs[49].measured = None;
    cs[49].need = 4096 * MIB;
    let held: u64 = cs.iter().map(|c| c.held()).sum();
    let pool = PoolState {
        live_free: Some(1 << 40),
        live_total: Some(1 << 40),
        capacity: Some(held + 1024 * MIB),
        cushion: 256 * MIB,
        promised: 0,
        settled: 0,
        asleep: 0,
    };
    (pool, cs)
}

fn bench(c: &mut Criterion) {
    let (pool, cs) = state();
    let d = decide(&pool, &cs, 49);
    assert!(
        matches!(d, memwarden_broker::admission::Decision::Evict(ref v) if v.len() > 1),
        "{d:?}"
    );
    c.bench_function("admission decision, 50 consumers, evicting", |b| {
        b.iter(|| decide(black_box(&pool), black_box(&cs), black_box(49)))
    });
    c.bench_function("admission decision, 50 consumers, loaded target", |b| {
        b.iter(|| decide(black_box(&pool), black_box(&cs), black_box(3)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
