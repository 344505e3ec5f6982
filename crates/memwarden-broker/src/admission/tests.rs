use super::*;

pub(super) const MIB: u64 = 1 << 20;

pub(super) fn consumer(need_mib: u64) -> ConsumerState {
    ConsumerState {
        pool: 0,
        phase: Phase::Unloaded,
        stuck: false,
        need: need_mib * MIB,
        measured: None,
        in_flight: 0,
        max_concurrent: u32::MAX,
        last_used: None,
        last_started: None,
        evictable: true,
        ephemeral: false,
        coexist_with: Vec::new(),
        demand: DemandState::default(),
    }
}

fn loaded(need_mib: u64, last_used: u64) -> ConsumerState {
    ConsumerState {
        phase: Phase::Loaded,
        last_used: Some(last_used),
        ..consumer(need_mib)
    }
}

/// A 1 GiB pool with no cushion and a live reading that is never the limit.
fn pool() -> PoolState {
    PoolState {
        live_free: Some(1 << 40),
        live_total: Some(1 << 40),
        capacity: Some(1024 * MIB),
        cushion: 0,
        promised: 0,
        settled: 0,
        asleep: 0,
    }
}

#[test]
fn loads_when_it_fits_and_runs_when_loaded() {
    let cs = vec![consumer(300), loaded(300, 5)];
    assert_eq!(decide(&pool(), &cs, 0), Decision::Load);
    assert_eq!(decide(&pool(), &cs, 1), Decision::Run);
}

#[test]
fn evicts_least_recently_used_first() {
    // 3 × 300 MiB loaded; a 300 MiB newcomer needs one of them to go: the oldest.
    let cs = vec![
        loaded(300, 30),
        loaded(300, 10),
        loaded(300, 20),
        consumer(300),
    ];
    assert_eq!(decide(&pool(), &cs, 3), Decision::Evict(vec![1]));
    // Never used loses before anything used.
    let mut cs = cs;
    cs[2].last_used = None;
    assert_eq!(decide(&pool(), &cs, 3), Decision::Evict(vec![2]));
}

#[test]
fn prefers_the_smallest_set_that_frees_enough() {
    // Oldest is small; the newcomer needs 600 MiB more: the small one alone does not do,
    // and once the big one is taken the small one is unnecessary.
    let cs = vec![
        loaded(100, 1),
        loaded(600, 2),
        loaded(200, 3),
        consumer(700),
    ];
    // free = 1024 - 900 = 124; short by 576.
    assert_eq!(decide(&pool(), &cs, 3), Decision::Evict(vec![1]));
}

#[test]
fn coexistence_holds_both_ways() {
    let mut cs = vec![loaded(600, 1), loaded(300, 2), consumer(500)];
    // Declared on the newcomer's side only: the oldest may stay, the other goes.
    cs[2].coexist_with = vec![0];
    assert_eq!(
        decide(&pool(), &cs, 2),
        Decision::Never {
            need: 500 * MIB,
            room: 424 * MIB
        }
    );
    let mut cs = vec![loaded(300, 1), loaded(300, 2), consumer(500)];
    cs[0].coexist_with = vec![2]; // declared on the victim's side only
    assert_eq!(decide(&pool(), &cs, 2), Decision::Evict(vec![1]));
    // Coexisting consumers run work at the same time; others do not.
    let mut cs = vec![loaded(300, 1), loaded(300, 2)];
    cs[0].in_flight = 1;
    assert_eq!(
        decide(&pool(), &cs, 1),
        Decision::Wait(Wait::Busy { with: 0 })
    );
    cs[1].coexist_with = vec![0];
    assert_eq!(decide(&pool(), &cs, 1), Decision::Run);
}

#[test]
fn self_managed_and_pinned_are_never_chosen() {
    let mut cs = vec![
        loaded(400, 1),
        loaded(400, 2),
        loaded(100, 3),
        consumer(400),
    ];
    cs[0].evictable = false; // pinned
    cs[1].evictable = false; // self-managed
    // Only the 100 MiB one could go, and that is not enough, ever.
    assert!(matches!(decide(&pool(), &cs, 3), Decision::Never { .. }));
    cs[1].evictable = true;
    assert_eq!(decide(&pool(), &cs, 3), Decision::Evict(vec![1]));
}

#[test]
fn can_never_fit_fails_at_once_and_says_by_how_much() {
    let cs = vec![loaded(300, 1), consumer(2048)];
    match decide(&pool(), &cs, 1) {
        Decision::Never { need, room } => {
            assert_eq!(need, 2048 * MIB);
            assert_eq!(room, 1024 * MIB);
        }
        d => panic!("{d:?}"),
    }
    // The cushion counts too.
    let mut p = pool();
    p.cushion = 100 * MIB;
    let cs = vec![consumer(1000)];
    assert!(matches!(decide(&p, &cs, 0), Decision::Never { .. }));
}

#[test]
fn the_ledger_stops_two_loads_fitting_in_the_same_memory() {
    let mut p = pool();
    let mut cs = vec![consumer(600), consumer(600)];
    assert_eq!(decide(&p, &cs, 0), Decision::Load);
    // The first load is promised its 600 MiB; the second no longer fits beside it, and
    // the first is loading, not evictable: the second waits.
    cs[0].phase = Phase::Loading;
    p.promised = 600 * MIB;
    assert_eq!(
        decide(&p, &cs, 1),
        Decision::Wait(Wait::NoRoom {
            short_by: 176 * MIB
        })
    );
    // A request for the loading one joins it.
    assert_eq!(decide(&p, &cs, 0), Decision::Wait(Wait::Joining));
}

#[test]
fn a_finished_load_is_counted_once_until_a_reading_shows_it() {
    let mut p = pool();
    let mut cs = vec![consumer(600), consumer(300)];
    // Loaded, measured at 500 MiB; its promise stays until a live reading shows it.
    cs[0].phase = Phase::Loaded;
    cs[0].measured = Some(500 * MIB);
    p.promised = 600 * MIB;
    p.settled = 600 * MIB;
    // Within the capacity it holds its 500 MiB, not those and its promise too.
    assert_eq!(available(&p, 0, &cs), 524 * MIB);
    assert_eq!(decide(&p, &cs, 1), Decision::Load);
    // The live reading, taken before the load, does not show it: the promise does.
    p.live_free = Some(800 * MIB);
    assert_eq!(available(&p, 0, &cs), 200 * MIB);
}

/// A consumer whose unload left its memory where it was.
#[test]
fn a_victim_still_in_demand_is_held_until_idle() {
    let mut cs = vec![loaded(600, 900), consumer(600)];
    // a started work at 950, after b's request queued at 940, and finished it at 990.
    cs[0].last_started = Some(950);
    cs[0].last_used = Some(990);
    assert_eq!(in_demand(&cs, &[0], 940, 1000), Some(0));
    assert_eq!(in_demand(&cs, &[0], 940, 1989), Some(0));
    // Idle for the whole second: it may go.
    assert_eq!(in_demand(&cs, &[0], 940, 1990), None);
    // Nobody used it since the request queued: it goes once settled.
    cs[0].last_started = Some(930);
    assert_eq!(in_demand(&cs, &[0], 940, 1089), Some(0));
    assert_eq!(in_demand(&cs, &[0], 940, 1090), None);
    // Never used at all: at once.
    cs[0].last_used = None;
    cs[0].last_started = None;
    assert_eq!(in_demand(&cs, &[0], 940, 1000), None);
    assert_eq!(in_demand(&cs, &[], 940, 1000), None);
}

fn stuck(need_mib: u64) -> ConsumerState {
    ConsumerState {
        stuck: true,
        measured: Some(need_mib * MIB),
        ..consumer(need_mib)
    }
}

#[test]
fn a_stuck_victim_is_not_trusted_and_those_that_need_its_room_wait() {
    let mut cs = vec![stuck(600), consumer(600)];
    // Its memory still counts as taken, and it is never picked again; but its memory may
    // come back, so the newcomer waits rather than being told it can never fit.
    assert_eq!(available(&pool(), 0, &cs), 424 * MIB);
    let wait = Decision::Wait(Wait::Stuck {
        short_by: 176 * MIB,
    });
    assert_eq!(decide(&pool(), &cs, 1), wait);
    cs[0].phase = Phase::Loaded;
    assert_eq!(decide(&pool(), &cs, 1), wait);
    assert_eq!(stuck_in_the_way(&cs, 1).collect::<Vec<_>>(), vec![0]);
    // More than the whole pool is still never.
    cs[1].need = 1100 * MIB;
    assert!(matches!(decide(&pool(), &cs, 1), Decision::Never { .. }));
    // A stuck consumer that may share the pool is not evicted for it, but its memory may
    // still come back: the newcomer waits for that rather than being told never.
    cs[1].need = 600 * MIB;
    cs[1].coexist_with = vec![0];
    assert!(matches!(decide(&pool(), &cs, 1), Decision::Wait(_)));
    assert_eq!(stuck_in_the_way(&cs, 1).count(), 0);
}

#[test]
fn a_stuck_consumer_serves_its_own_requests() {
    let mut cs = vec![stuck(600), loaded(300, 2)];
    cs[0].max_concurrent = 2;
    assert_eq!(decide(&pool(), &cs, 0), Decision::Run);
    cs[0].in_flight = 2;
    assert_eq!(decide(&pool(), &cs, 0), Decision::Wait(Wait::Concurrency));
    cs[0].in_flight = 0;
    cs[1].in_flight = 1;
    assert_eq!(
        decide(&pool(), &cs, 0),
        Decision::Wait(Wait::Busy { with: 1 })
    );
}

#[test]
fn busy_victims_make_it_wait_not_fail() {
    let mut cs = vec![loaded(600, 1), consumer(600)];
    cs[0].in_flight = 2;
    assert_eq!(
        decide(&pool(), &cs, 1),
        Decision::Wait(Wait::NoRoom {
            short_by: 176 * MIB
        })
    );
    // While an eviction is under way nothing more is evicted.
    cs[0].in_flight = 0;
    cs[0].phase = Phase::Unloading;
    assert_eq!(decide(&pool(), &cs, 1), Decision::Wait(Wait::Reclaiming));
}

#[test]
fn measured_replaces_declared_and_live_reading_limits() {
    let mut cs = vec![loaded(600, 1), consumer(500)];
    cs[0].measured = Some(200 * MIB);
    assert_eq!(decide(&pool(), &cs, 1), Decision::Load);
    let mut p = pool();
    // Other programs hold most of the device: evicting ours (200 MiB) would not be
    // enough, so nothing is evicted and the request waits.
    p.live_free = Some(100 * MIB);
    assert_eq!(
        decide(&p, &cs, 1),
        Decision::Wait(Wait::NoRoom {
            short_by: 400 * MIB
        })
    );
    p.live_free = Some(400 * MIB);
    assert_eq!(decide(&p, &cs, 1), Decision::Evict(vec![0]));
    p.live_free = None;
    p.capacity = None;
    assert_eq!(available(&p, 0, &cs), 0);
}

#[test]
fn a_loaded_consumer_measured_at_zero_holds_nothing_and_one_not_found_its_declared_size() {
    let mut c = loaded(600, 1);
    assert_eq!(c.held(), 600 * MIB);
    c.measured = Some(0);
    assert_eq!(c.held(), 0);
    c.measured = Some(5 * MIB);
    assert_eq!(c.held(), 5 * MIB);
}

#[test]
fn an_idle_self_managed_server_leaves_room_for_the_others() {
    // deploy/memwarden.toml on a 24 GiB card, in MiB for GiB: a self-managed Ollama (6)
    // that may share the card with ComfyUI (13), and vLLM (18), which may share it with
    // neither.
    let mut p = pool();
    p.capacity = Some(24 * MIB);
    p.cushion = MIB / 2;
    let mut ollama = loaded(6, 1);
    ollama.evictable = false;
    ollama.coexist_with = vec![1];
    let mut comfy = consumer(13);
    comfy.coexist_with = vec![0];
    let mut cs = vec![ollama, comfy, consumer(18)];
    // Ollama's processes found, holding nothing: vLLM fits beside it.
    cs[0].measured = Some(0);
    assert_eq!(decide(&p, &cs, 2), Decision::Load);
    // Ollama not found: its declared 6 stand, and vLLM can never fit beside them.
    cs[0].measured = None;
    assert!(matches!(decide(&p, &cs, 2), Decision::Never { .. }));
    // Ollama holding a model: the same.
    cs[0].measured = Some(6 * MIB);
    assert!(matches!(decide(&p, &cs, 2), Decision::Never { .. }));
}

#[test]
fn concurrency_is_bounded() {
    let mut cs = vec![loaded(100, 1)];
    cs[0].max_concurrent = 2;
    cs[0].in_flight = 2;
    assert_eq!(decide(&pool(), &cs, 0), Decision::Wait(Wait::Concurrency));
}

#[test]
fn aging_after_a_quarter_of_max_wait() {
    let w = Duration::from_secs(120);
    assert!(!aged(Duration::from_secs(29), w));
    assert!(aged(Duration::from_secs(30), w));
}

#[test]
fn runnable_requests_go_first_until_the_oldest_has_aged() {
    let s = Duration::from_secs;
    let max_wait = s(120);
    // Consumer 0 is loaded and free; 1 needs an eviction.
    let runnable = |c: usize| c == 0;
    let none = |_: usize| false;
    let queue = [(1, s(10)), (0, s(9)), (1, s(5)), (0, s(1))];
    assert_eq!(
        queue_order(&queue, max_wait, runnable, none, |_| 0),
        vec![1, 3, 0, 2]
    );
    // The oldest has waited 30 s of 120: only it and its consumer's requests go.
    let queue = [(1, s(30)), (0, s(9)), (1, s(5)), (0, s(1))];
    assert_eq!(
        queue_order(&queue, max_wait, runnable, none, |_| 0),
        vec![0, 2]
    );
    assert!(queue_order(&[], max_wait, runnable, none, |_| 0).is_empty());
}

#[test]
fn requests_held_up_by_a_stuck_consumer_do_not_age() {
    let s = Duration::from_secs;
    let max_wait = s(120);
    let runnable = |c: usize| c == 0;
    // The oldest (for 1) waits on a stuck consumer: it holds nothing back, and goes last.
    let queue = [(1, s(60)), (0, s(9)), (2, s(5)), (0, s(1))];
    assert_eq!(
        queue_order(&queue, max_wait, runnable, |i| i == 0, |_| 0),
        vec![1, 3, 2, 0]
    );
    // The next oldest that has aged has its turn as usual.
    let queue = [(1, s(60)), (2, s(40)), (0, s(9))];
    assert_eq!(
        queue_order(&queue, max_wait, runnable, |i| i == 0, |_| 0),
        vec![1]
    );
}
