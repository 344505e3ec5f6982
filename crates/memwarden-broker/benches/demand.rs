//! Demand-aware scheduling against plain LRU: synthetic traces replayed through the admission
//! decisions on a made-up clock (no I/O), under each policy. Prints, per trace and policy, the
//! swaps, the waits (p50, p99), the time spent loading and the requests that timed out; then
//! times one replay. Target: on the alternating trace, at most a fifth of LRU's swaps with an
//! equal or better p99 wait.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use memwarden_broker::admission::sim::{Policy, replay, traces};

fn report() {
    println!(
        "| trace | policy | requests | swaps | loads | p50 wait | p99 wait | time loading | timed out |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for trace in traces::all() {
        for policy in [Policy::Lru, Policy::Recency, Policy::Demand] {
            let o = replay(&trace, policy);
            println!(
                "| {} | {} | {} | {} | {} | {:.1} s | {:.1} s | {:.0} s | {} |",
                trace.name,
                policy.as_str(),
                o.requests,
                o.swaps,
                o.loads,
                o.wait_ms(0.5) as f64 / 1000.0,
                o.wait_ms(0.99) as f64 / 1000.0,
                o.loading_ms as f64 / 1000.0,
                o.timeouts,
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    report();
    let trace = traces::alternating();
    c.bench_function("replay the alternating trace, demand-aware", |b| {
        b.iter(|| replay(black_box(&trace), Policy::Demand))
    });
    c.bench_function("replay the alternating trace, LRU", |b| {
        b.iter(|| replay(black_box(&trace), Policy::Lru))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
