use std::time::Duration;

use super::*;
use crate::admission::{Decision, Phase, PoolState, decide, in_demand, queue_order};

const MIB: u64 = 1 << 20;

/// Loaded, holding `mib`, last used at `used`, asked for `asked` times at `used`, reloaded in
/// `reload_ms` when measured.
fn held(mib: u64, used: u64, asked: u64, reload_ms: Option<u64>) -> ConsumerState {
    let mut recent = Demand::default();
    recent.add(used, asked);
    ConsumerState {
        pool: 0,
        phase: Phase::Loaded,
        stuck: false,
        need: mib * MIB,
        measured: None,
        in_flight: 0,
        max_concurrent: u32::MAX,
        last_used: Some(used),
        last_started: Some(used),
        evictable: true,
        ephemeral: false,
        coexist_with: Vec::new(),
        demand: DemandState {
            recent,
            reload_ms,
            ..DemandState::default()
        },
    }
}

fn newcomer(mib: u64) -> ConsumerState {
    ConsumerState {
        phase: Phase::Unloaded,
        last_used: None,
        last_started: None,
        ..held(mib, 0, 0, None)
    }
}

fn pool(cap_mib: u64) -> PoolState {
    PoolState {
        live_free: None,
        live_total: None,
        capacity: Some(cap_mib * MIB),
        ..PoolState::default()
    }
}

#[test]
fn demand_halves_every_half_life_and_adds_up() {
    let mut d = Demand::default();
    d.add(1000, 4);
    assert_eq!(d.at(1000), 4.0);
    assert_eq!(d.at(1000 + HALF_LIFE_MS), 2.0);
    assert_eq!(d.at(1000 + 2 * HALF_LIFE_MS), 1.0);
    // A reading from before its last request is taken as then.
    assert_eq!(d.at(0), 4.0);
    d.add(1000 + HALF_LIFE_MS, 1);
    assert_eq!(d.at(1000 + HALF_LIFE_MS), 3.0);
    assert_eq!(d.last(), 1000 + HALF_LIFE_MS);
}

#[test]
fn the_victim_is_the_one_cheapest_to_bring_back_not_the_least_recently_used() {
    // a was used longest ago, but is asked for 20 times lately and takes 30 s to load; b was
    // used just now, once, and loads in 2 s: b goes.
    let cs = vec![
        held(400, 100, 20, Some(30_000)),
        held(400, 200, 1, Some(2_000)),
        newcomer(400),
    ];
    assert_eq!(decide(&pool(1000), &cs, 2), Decision::Evict(vec![1]));
    // Demand counts as much as load time: a hot fast one against a lukewarm slow one.
    let cs = vec![
        held(400, 100, 2, Some(20_000)), // 40 s expected
        held(400, 200, 30, Some(1_000)), // 30 s expected
        newcomer(400),
    ];
    assert_eq!(decide(&pool(1000), &cs, 2), Decision::Evict(vec![1]));
}

#[test]
fn demand_is_compared_at_one_moment_whatever_each_was_last_asked() {
    // a: 8 requests two half-lives before b's 3, same load time: a now counts 2 against 3.
    let cs = vec![
        held(400, 1000, 8, Some(5_000)),
        held(400, 1000 + 2 * HALF_LIFE_MS, 3, Some(5_000)),
        newcomer(400),
    ];
    assert_eq!(decide(&pool(1000), &cs, 2), Decision::Evict(vec![0]));
}

#[test]
fn a_consumer_never_measured_is_taken_to_reload_in_the_default_time() {
    // Unmeasured with 1 request: 10 s. Measured at 4 s with 2: 8 s, the cheaper.
    let cs = vec![
        held(400, 100, 1, None),
        held(400, 50, 2, Some(4_000)),
        newcomer(400),
    ];
    assert_eq!(cs[0].demand.cost(100), DEFAULT_RELOAD_MS as f64 / 1000.0);
    assert_eq!(decide(&pool(1000), &cs, 2), Decision::Evict(vec![1]));
}

#[test]
fn without_demand_the_least_recently_used_goes() {
    let cs = vec![
        held(300, 30, 0, Some(9_000)),
        held(300, 10, 0, Some(1_000)),
        held(300, 20, 0, None),
        newcomer(300),
    ];
    assert_eq!(decide(&pool(1024), &cs, 3), Decision::Evict(vec![1]));
}

#[test]
fn the_cheapest_set_may_be_two_small_ones_rather_than_one_big_one() {
    // 700 MiB short: the big hot one alone, or the two small cold ones together.
    let cs = vec![
        held(800, 10, 50, Some(20_000)),
        held(400, 20, 1, Some(3_000)),
        held(400, 30, 1, Some(3_000)),
        newcomer(900),
    ];
    // 1600 held of 1800: 200 free, 700 short.
    assert_eq!(decide(&pool(1800), &cs, 3), Decision::Evict(vec![1, 2]));
    // Unless the big one is the cold one.
    let mut cs = cs;
    cs[0].demand.recent = Demand::default();
    assert_eq!(decide(&pool(1800), &cs, 3), Decision::Evict(vec![0]));
}

#[test]
fn pinned_stays_however_cheap() {
    let mut cs = vec![
        held(400, 100, 50, Some(60_000)),
        held(400, 200, 0, Some(1_000)),
        newcomer(400),
    ];
    cs[1].evictable = false;
    assert_eq!(decide(&pool(1000), &cs, 2), Decision::Evict(vec![0]));
}

/// Small pseudo-random numbers, the same on every run.
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn the_greedy_choice_frees_enough_with_nothing_unneeded_and_exact_is_never_dearer() {
    let mut s = 7u64;
    for round in 0..300 {
        let n = 3 + (lcg(&mut s) % 14) as usize;
        let cs: Vec<ConsumerState> = (0..n)
            .map(|i| {
                held(
                    1 + lcg(&mut s) % 500,
                    i as u64 * 10,
                    lcg(&mut s) % 20,
                    Some(500 + lcg(&mut s) % 30_000),
                )
            })
            .collect();
        let all: Vec<usize> = (0..n).collect();
        let total: u64 = cs.iter().map(|c| c.held()).sum();
        let short = 1 + lcg(&mut s) % total;
        let cost = |v: &[usize]| v.iter().map(|&i| cs[i].demand.cost(0)).sum::<f64>();
        let freed = |v: &[usize]| v.iter().map(|&i| cs[i].held()).sum::<u64>();
        let cands: Vec<Cand> = all
            .iter()
            .map(|&i| Cand {
                i,
                held: cs[i].held(),
                cost: cs[i].demand.cost(0),
                last_used: cs[i].last_used,
            })
            .collect();
        let g: Vec<usize> = greedy(&cands, short).iter().map(|c| c.i).collect();
        assert!(freed(&g) >= short, "round {round}");
        let needed = g.len() == 1 || g.iter().all(|&i| freed(&g) - cs[i].held() < short);
        assert!(needed, "round {round}: {g:?}");
        if n <= EXACT_MAX {
            let e: Vec<usize> = exact(&cands, short).iter().map(|c| c.i).collect();
            assert!(freed(&e) >= short, "round {round}");
            assert!(cost(&e) <= cost(&g) + 1e-9, "round {round}: {e:?} {g:?}");
        }
        assert_eq!(cheapest(&cs, &all, total + 1), None);
    }
}

#[test]
fn a_consumer_just_loaded_with_requests_queued_is_not_evicted_for_a_newcomer() {
    let mut cs = vec![held(600, 0, 3, Some(8_000)), newcomer(600)];
    cs[0].last_used = None;
    cs[0].last_started = None;
    cs[0].demand.loaded_at = Some(10_000);
    cs[0].demand.min_residency_ms = 5_000;
    cs[0].demand.queued = 2;
    assert_eq!(in_demand(&cs, &[0], 9_000, 12_000), Some(0));
    assert_eq!(in_demand(&cs, &[0], 9_000, 14_999), Some(0));
    // Its residency is over.
    assert_eq!(in_demand(&cs, &[0], 9_000, 15_000), None);
    // Nothing of it queued: nothing to keep it for.
    cs[0].demand.queued = 0;
    assert_eq!(in_demand(&cs, &[0], 9_000, 12_000), None);
}

#[test]
fn higher_priority_goes_first_and_aging_still_wins() {
    let s = Duration::from_secs;
    let max_wait = s(120);
    // Consumer 0 is loaded and free; 1 needs an eviction and has the higher priority.
    let runnable = |c: usize| c == 0;
    let none = |_: usize| false;
    let prio = |c: usize| if c == 1 { 5 } else { 0 };
    let queue = [(0, s(10)), (1, s(9)), (0, s(5)), (1, s(1))];
    assert_eq!(
        queue_order(&queue, max_wait, runnable, none, prio),
        vec![1, 3, 0, 2]
    );
    // Equal priorities: the runnable first, as before.
    assert_eq!(
        queue_order(&queue, max_wait, runnable, none, |_| 0),
        vec![0, 2, 1, 3]
    );
    // The oldest low-priority request has waited a quarter of max_wait: its turn.
    let queue = [(0, s(30)), (1, s(9)), (0, s(5))];
    assert_eq!(
        queue_order(&queue, max_wait, runnable, none, prio),
        vec![0, 2]
    );
}
