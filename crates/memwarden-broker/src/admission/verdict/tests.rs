//! The verdict on random pools: 507 exactly when the need exceeds the pool less the cushion
//! less what never makes room, and never a 507 that some later course of events disproves.

use proptest::prelude::*;

use super::super::tests::{MIB, consumer};
use super::super::{ConsumerState, Decision, Phase, PoolState, Wait};
use super::{Hold, best_room, decide, holders};

fn capacity(mib: u64) -> PoolState {
    PoolState {
        capacity: Some(mib * MIB),
        ..PoolState::default()
    }
}

#[test]
fn a_lease_makes_others_wait_not_never_fit() {
    // A job holds 600 of 1024 MiB under a lease; a 600 MiB server must wait for it.
    let mut job = consumer(600);
    job.ephemeral = true;
    job.evictable = false;
    job.phase = Phase::Loaded;
    job.in_flight = 1;
    let cs = vec![job, consumer(600)];
    assert_eq!(
        decide(&capacity(1024), &cs, 1),
        Decision::Wait(Wait::NoRoom {
            short_by: 176 * MIB
        })
    );
    let h = holders(&cs, 1);
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].consumer, h[0].hold, h[0].bytes),
        (0, Hold::Lease, 600 * MIB)
    );
    // The lease ends: the job lets go, and the server loads.
    let mut cs = cs;
    cs[0].in_flight = 0;
    cs[0].phase = Phase::Unloaded;
    assert_eq!(decide(&capacity(1024), &cs, 1), Decision::Load);
}

#[test]
fn what_never_makes_room_is_named_and_counted() {
    // pinned 300, coexisting 200, busy 300, loading 100; a 500 MiB newcomer.
    let mut pinned = consumer(300);
    pinned.phase = Phase::Loaded;
    pinned.evictable = false;
    let mut beside = consumer(200);
    beside.phase = Phase::Loaded;
    beside.coexist_with = vec![4];
    let mut busy = consumer(300);
    busy.phase = Phase::Loaded;
    busy.in_flight = 1;
    let mut loading = consumer(100);
    loading.phase = Phase::Loading;
    let cs = vec![pinned, beside, busy, loading, consumer(500)];
    let holds: Vec<Hold> = holders(&cs, 4).iter().map(|h| h.hold).collect();
    assert_eq!(
        holds,
        vec![Hold::Kept, Hold::Coexists, Hold::Busy, Hold::Loading]
    );
    assert_eq!(best_room(&capacity(1024), &cs, 4), 524 * MIB);
    let mut p = capacity(1024);
    p.promised = 100 * MIB;
    assert!(matches!(decide(&p, &cs, 4), Decision::Wait(_)));
    // 600 MiB can never fit beside the pinned and the coexisting ones.
    let mut cs = cs;
    cs[4].need = 600 * MIB;
    assert_eq!(
        decide(&p, &cs, 4),
        Decision::Never {
            need: 600 * MIB,
            room: 524 * MIB
        }
    );
}

/// One generated consumer: its figures, and how its future may go.
#[derive(Debug, Clone)]
struct Gen {
    c: ConsumerState,
    /// Its load under way succeeds (else it fails); its stuck memory comes back.
    lucky: bool,
}

fn arb_consumer(n: usize) -> impl Strategy<Value = Gen> {
    (
        (
            0usize..4,
            any::<bool>(),
            1u64..600,
            proptest::option::of(0u64..700),
        ),
        (0u32..3, 0u8..5, 0usize..5, any::<bool>()),
        (proptest::collection::vec(0..n, 0..n), any::<bool>()),
    )
        .prop_map(
            move |((phase, stuck, need, measured), (in_flight, kind, pool, lucky), (co, mc))| {
                let mut c = consumer(need);
                c.pool = usize::from(pool == 0);
                c.coexist_with = co;
                c.max_concurrent = if mc { 1 } else { u32::MAX };
                match kind {
                    // A job run under a lease: loaded exactly while it has work.
                    0 => {
                        c.ephemeral = true;
                        c.evictable = false;
                        c.in_flight = in_flight.min(1);
                        if c.in_flight > 0 {
                            c.phase = Phase::Loaded;
                        }
                        return Gen { c, lucky };
                    }
                    // pinned, self-managed or with no way to unload it.
                    1 => c.evictable = false,
                    _ => {}
                }
                c.phase = [
                    Phase::Unloaded,
                    Phase::Loading,
                    Phase::Loaded,
                    Phase::Unloading,
                ][phase];
                c.stuck = stuck && c.phase == Phase::Unloaded && c.evictable;
                let holds = matches!(c.phase, Phase::Loaded | Phase::Unloading) || c.stuck;
                if holds {
                    c.measured = measured.map(|m| m * MIB);
                }
                if c.phase == Phase::Loaded || c.stuck {
                    c.in_flight = in_flight;
                }
                Gen { c, lucky }
            },
        )
}

/// A pool with its capacity, or its device's size, or both; the device's free reading is
/// what the consumers and `foreign` programs leave of it.
fn pool_of(cs: &[ConsumerState], mode: u8, total: u64, foreign: u64, cushion: u64) -> PoolState {
    let held: u64 = cs.iter().filter(|c| c.pool == 0).map(|c| c.held()).sum();
    let promised: u64 = (cs.iter())
        .filter(|c| c.pool == 0 && c.phase == Phase::Loading)
        .map(|c| c.need)
        .sum();
    let live = mode != 0;
    PoolState {
        live_free: live.then(|| total.saturating_sub(held + foreign)),
        live_total: live.then_some(total),
        capacity: (mode != 1).then_some(total),
        cushion,
        promised,
        settled: 0,
        asleep: 0,
    }
}

/// What the request can never do without, from the rule as it is written: the pool less the
/// cushion less what is held by consumers that are pinned, self-managed or cannot be unloaded,
/// or that may share the pool with it — leases, loads and unloads under way left out.
fn spec_never(p: &PoolState, cs: &[ConsumerState], t: usize) -> bool {
    let c = &cs[t];
    if c.phase != Phase::Unloaded || c.stuck {
        return false;
    }
    let total = match (p.capacity, p.live_total) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(0),
    };
    let fixed: u64 = (0..cs.len())
        .filter(|&o| o != t && cs[o].pool == c.pool)
        .filter(|&o| {
            let x = &cs[o];
            let passing = (x.ephemeral && (x.in_flight > 0 || x.phase == Phase::Loaded))
                || matches!(x.phase, Phase::Loading | Phase::Unloading)
                || x.stuck;
            let shares = x.coexist_with.contains(&t) || c.coexist_with.contains(&o);
            !passing && (shares || !x.evictable)
        })
        .map(|o| cs[o].held())
        .sum();
    c.need > total.saturating_sub(fixed).saturating_sub(p.cushion)
}

/// How the request for `t` ends once everything passing has passed: work and leases ended,
/// loads finished or failed, unloads done, stuck memory back for the lucky; evictions done as
/// decided. `Some(true)` granted, `Some(false)` refused as never fitting, `None` still waiting.
fn settle(
    gens: &[Gen],
    t: usize,
    mode: u8,
    total: u64,
    foreign: u64,
    cushion: u64,
) -> Option<bool> {
    let mut cs: Vec<ConsumerState> = gens.iter().map(|g| g.c.clone()).collect();
    for (c, g) in cs.iter_mut().zip(gens) {
        c.in_flight = 0;
        if c.ephemeral {
            c.phase = Phase::Unloaded;
        }
        match c.phase {
            Phase::Loading if g.lucky => c.phase = Phase::Loaded,
            Phase::Loading | Phase::Unloading => c.phase = Phase::Unloaded,
            _ => {}
        }
        if c.stuck && g.lucky {
            c.stuck = false;
        }
        if c.phase == Phase::Unloaded && !c.stuck {
            c.measured = None;
        }
    }
    for _ in 0..=cs.len() {
        let p = pool_of(&cs, mode, total, foreign, cushion);
        match decide(&p, &cs, t) {
            Decision::Run | Decision::Load => return Some(true),
            Decision::Never { .. } => return Some(false),
            Decision::Evict(victims) => {
                for v in victims {
                    cs[v].phase = Phase::Unloaded;
                    cs[v].measured = None;
                }
            }
            Decision::Wait(_) => return None,
        }
    }
    None
}

fn world() -> impl Strategy<Value = (Vec<Gen>, usize, u8, u64, u64, u64)> {
    (1usize..7).prop_flat_map(|n| {
        (
            proptest::collection::vec(arb_consumer(n), n),
            0..n,
            0u8..3,
            (200u64..2000).prop_map(|m| m * MIB),
            (0u64..300).prop_map(|m| m * MIB),
            (0u64..100).prop_map(|m| m * MIB),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_fits_exactly_when_the_rule_says_so((gens, t, mode, total, foreign, cushion) in world()) {
        let mut gens = gens;
        gens[t].c.pool = 0;
        let cs: Vec<ConsumerState> = gens.iter().map(|g| g.c.clone()).collect();
        let p = pool_of(&cs, mode, total, foreign, cushion);
        let d = decide(&p, &cs, t);
        prop_assert_eq!(matches!(d, Decision::Never { .. }), spec_never(&p, &cs, t), "{:?}", d);
        if let Decision::Never { need, room } = d {
            prop_assert!(need > room);
            // No course of events grants it later.
            prop_assert_ne!(settle(&gens, t, mode, total, foreign, cushion), Some(true));
        }
    }

    #[test]
    fn a_wait_ends_in_a_grant_or_a_true_refusal((gens, t, _mode, total, _foreign, cushion) in world()) {
        // On a pool only the broker's consumers use, once everything passing has passed, a
        // request that was not refused is granted or found to never fit: no wait is endless.
        let mut gens = gens;
        gens[t].c.pool = 0;
        for g in &mut gens {
            g.lucky = true;
        }
        prop_assert!(settle(&gens, t, 2, total, 0, cushion).is_some());
    }
}
