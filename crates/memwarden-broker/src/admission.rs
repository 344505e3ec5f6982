//! The admission decisions: pure functions of the broker's state, with no I/O and no clock
//! (time comes in as values), so every rule can be tested on a made-up pool.

use std::time::Duration;

/// Where a consumer is in its life, as far as the broker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Unloaded,
    Loading,
    Loaded,
    Unloading,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Unloaded => "unloaded",
            Phase::Loading => "loading",
            Phase::Loaded => "loaded",
            Phase::Unloading => "unloading",
        }
    }
}

/// A pool's figures at the moment of the decision.
#[derive(Debug, Clone, Default)]
pub struct PoolState {
    /// The live free reading (MemAvailable, a GPU's free VRAM/GTT); `None` when unreadable.
    pub live_free: Option<u64>,
    /// The live total; `None` when unreadable.
    pub live_total: Option<u64>,
    /// With a capacity, the pool behaves as a device of that size.
    pub capacity: Option<u64>,
    pub cushion: u64,
    /// Bytes promised to loads still under way (the ledger).
    pub promised: u64,
    /// The part of `promised` whose loads have finished: kept until a live reading shows
    /// them, but already counted, within a `capacity`, as what their consumers hold.
    pub settled: u64,
}

/// What the decisions need to know of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerState {
    pub pool: usize,
    pub phase: Phase,
    /// Its unload was answered but its memory stayed: not trusted as a victim, and as good as
    /// loaded for its own requests (its server still holds its memory and answers).
    pub stuck: bool,
    /// Declared `resident` or the estimate: what a load is promised.
    pub need: u64,
    /// What its processes were last measured to hold, when they could be found.
    pub measured: Option<u64>,
    pub in_flight: u32,
    pub max_concurrent: u32,
    /// When its last work finished, in any monotonic unit (milliseconds since start).
    pub last_used: Option<u64>,
    /// When its last work was granted by the owner, in the same unit.
    pub last_started: Option<u64>,
    /// Neither `pinned` nor `self_managed`, and the broker has a way to unload it.
    pub evictable: bool,
    /// Consumers it may share the pool with (both ways already).
    pub coexist_with: Vec<usize>,
}

impl ConsumerState {
    /// What it holds in its pool now. A loaded consumer's measurement replaces its declared
    /// size once there is one, zero included: a server that let its models go by itself (an
    /// idle Ollama) holds nothing. One whose processes were not found has no measurement, and
    /// its declared size stands. A loading one is covered by the ledger instead.
    pub fn held(&self) -> u64 {
        match self.phase {
            Phase::Loaded | Phase::Unloading => self.measured.unwrap_or(self.need),
            Phase::Unloaded if self.stuck => self.measured.unwrap_or(self.need),
            Phase::Unloaded | Phase::Loading => 0,
        }
    }

    fn may_coexist(&self, other: usize) -> bool {
        self.coexist_with.contains(&other)
    }
}

/// Why a request waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// A load of this consumer is under way: the request joins it.
    Joining,
    /// The consumer is being unloaded.
    Unloading,
    /// A consumer that may not share the pool with it is running work.
    Busy { with: usize },
    /// The consumer runs as many requests as it may.
    Concurrency,
    /// Memory is on its way back from an eviction already under way.
    Reclaiming,
    /// Not enough room, and the consumers that could give it are busy.
    NoRoom { short_by: u64 },
    /// Not enough room, and consumers that may not share the pool with it are stuck: their
    /// memory may come back, by itself or when their unload is retried.
    Stuck { short_by: u64 },
    /// The consumer that would have to go is still in demand: it started work after this
    /// request queued and has not been idle for long since.
    InDemand { victim: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Loaded and free to run: go.
    Run,
    /// Unloaded and it fits: promise its need in the ledger and load it.
    Load,
    /// Unload these (least recently used first), then decide again.
    Evict(Vec<usize>),
    Wait(Wait),
    /// It can never fit, even with every consumer that may be evicted gone.
    Never {
        need: u64,
        room: u64,
    },
}

/// The pool's free memory as the broker sees it, before promises and cushion.
pub fn pool_free(pool: &PoolState, pool_index: usize, consumers: &[ConsumerState]) -> u64 {
    free_less(pool, pool_index, consumers, 0, 0)
}

/// What a new load may take now: free, less the ledger, less the cushion.
pub fn available(pool: &PoolState, pool_index: usize, consumers: &[ConsumerState]) -> u64 {
    // A finished load is counted once: in the live reading its promise stands in for it
    // until a reading shows it; within the capacity, what its consumer holds already does.
    let unsettled = pool.promised.saturating_sub(pool.settled);
    free_less(pool, pool_index, consumers, pool.promised, unsettled).saturating_sub(pool.cushion)
}

/// The smaller of the live reading less `live_promised` and the capacity less what the pool's
/// consumers hold and `cap_promised`.
fn free_less(
    pool: &PoolState,
    pool_index: usize,
    consumers: &[ConsumerState],
    live_promised: u64,
    cap_promised: u64,
) -> u64 {
    let held: u64 = consumers
        .iter()
        .filter(|c| c.pool == pool_index)
        .map(|c| c.held())
        .sum();
    let live = pool.live_free.map(|l| l.saturating_sub(live_promised));
    let cap = pool
        .capacity
        .map(|c| c.saturating_sub(held).saturating_sub(cap_promised));
    match (live, cap) {
        (Some(l), Some(c)) => l.min(c),
        (Some(l), None) => l,
        (None, Some(c)) => c,
        // Nothing readable: nothing is promised on hope.
        (None, None) => 0,
    }
}

/// Whether `a` and `b` may not hold the pool or run work at the same time.
pub fn conflict(consumers: &[ConsumerState], a: usize, b: usize) -> bool {
    a != b
        && consumers[a].pool == consumers[b].pool
        && !consumers[a].may_coexist(b)
        && !consumers[b].may_coexist(a)
}

/// The decision for one request for consumer `target`.
pub fn decide(pool: &PoolState, consumers: &[ConsumerState], target: usize) -> Decision {
    let c = &consumers[target];
    match c.phase {
        Phase::Loading => return Decision::Wait(Wait::Joining),
        Phase::Unloading => return Decision::Wait(Wait::Unloading),
        Phase::Loaded => return run_or_wait(consumers, target),
        // Its unload left its memory, and its server, where they were.
        Phase::Unloaded if c.stuck => return run_or_wait(consumers, target),
        Phase::Unloaded => {}
    }
    let avail = available(pool, c.pool, consumers);
    if c.need <= avail {
        return Decision::Load;
    }
    let room = best_room(pool, consumers, target);
    if c.need > room {
        return Decision::Never { need: c.need, room };
    }
    // Memory already on its way back is counted before anything else is evicted.
    if consumers
        .iter()
        .any(|o| o.pool == c.pool && o.phase == Phase::Unloading)
    {
        return Decision::Wait(Wait::Reclaiming);
    }
    let short_by = c.need - avail;
    match pick_victims(consumers, target, short_by) {
        Some(v) => Decision::Evict(v),
        None if stuck_in_the_way(consumers, target).next().is_some() => {
            Decision::Wait(Wait::Stuck { short_by })
        }
        None => Decision::Wait(Wait::NoRoom { short_by }),
    }
}

/// A consumer that holds its memory: it runs the request unless it is at its bound or
/// something that may not run beside it is running.
fn run_or_wait(consumers: &[ConsumerState], target: usize) -> Decision {
    if consumers[target].in_flight >= consumers[target].max_concurrent {
        return Decision::Wait(Wait::Concurrency);
    }
    if let Some(with) = running_conflict(consumers, target) {
        return Decision::Wait(Wait::Busy { with });
    }
    Decision::Run
}

/// The stuck consumers whose memory `target` may need: in its pool, and not sharing it.
pub fn stuck_in_the_way(
    consumers: &[ConsumerState],
    target: usize,
) -> impl Iterator<Item = usize> + '_ {
    (0..consumers.len()).filter(move |&o| consumers[o].stuck && conflict(consumers, target, o))
}

/// A consumer running work now that `target` may not run beside.
fn running_conflict(consumers: &[ConsumerState], target: usize) -> Option<usize> {
    (0..consumers.len()).find(|&o| consumers[o].in_flight > 0 && conflict(consumers, target, o))
}

/// The most `target` could ever get: the pool's total less the cushion and less what stays
/// whatever we do (pinned, self-managed, coexisting and unloadable consumers). A stuck
/// consumer is not among them: its memory may still come back.
pub fn best_room(pool: &PoolState, consumers: &[ConsumerState], target: usize) -> u64 {
    let c = &consumers[target];
    let Some(total) = pool.capacity.or(pool.live_total) else {
        return 0;
    };
    let stays: u64 = consumers
        .iter()
        .enumerate()
        .filter(|&(i, o)| {
            i != target && o.pool == c.pool && (!conflict(consumers, target, i) || !o.evictable)
        })
        .map(|(_, o)| o.held())
        .sum();
    total.saturating_sub(stays).saturating_sub(pool.cushion)
}

/// Victims that free at least `short_by`: least recently used first, then the set is thinned
/// so that no victim is unloaded that the others make unnecessary. `None` when the consumers
/// that may be evicted now do not free enough.
pub fn pick_victims(
    consumers: &[ConsumerState],
    target: usize,
    short_by: u64,
) -> Option<Vec<usize>> {
    let mut candidates: Vec<usize> = (0..consumers.len())
        .filter(|&i| {
            let o = &consumers[i];
            conflict(consumers, target, i)
                && o.phase == Phase::Loaded
                && o.evictable
                && !o.stuck
                && o.in_flight == 0
        })
        .collect();
    // Never used sorts first (None < Some); ties go to the lower index, so the order is stable.
    candidates.sort_by_key(|&i| (consumers[i].last_used, i));
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    for i in candidates {
        if freed >= short_by {
            break;
        }
        freed += consumers[i].held();
        chosen.push(i);
    }
    if freed < short_by {
        return None;
    }
    // Drop the most recently used victims the rest make unnecessary.
    let mut k = chosen.len();
    while k > 0 {
        k -= 1;
        let h = consumers[chosen[k]].held();
        if freed - h >= short_by {
            freed -= h;
            chosen.remove(k);
        }
    }
    Some(chosen)
}

/// How long a consumer that is still in demand must have been idle before a request that
/// queued behind its work may evict it.
pub const IN_DEMAND_IDLE_MS: u64 = 1000;

/// How long any consumer is left after its last work ends before it is evicted: its clients'
/// next requests, sent as soon as their last is answered, arrive within it.
pub const SETTLE_MS: u64 = 100;

/// Of the `victims` an eviction for a request queued at `queued_at` would unload, the first
/// that is still in demand: it finished work less than [`SETTLE_MS`] before `now`, or it
/// started work after the request queued (others kept using it meanwhile) and finished its
/// last less than [`IN_DEMAND_IDLE_MS`] before `now`. Evicting it at the first gap between its
/// requests would have the pool swap back and forth, one load per request, while both sides
/// have clients; the request waits instead until the consumer goes idle, or until it has
/// waited long enough to have its turn whatever it needs ([`aged`]). A consumer that nobody
/// used since the request queued goes after the settling moment at most.
pub fn in_demand(
    consumers: &[ConsumerState],
    victims: &[usize],
    queued_at: u64,
    now: u64,
) -> Option<usize> {
    victims.iter().copied().find(|&v| {
        let c = &consumers[v];
        let idle = c.last_used.map(|u| now.saturating_sub(u));
        let used_since = c.last_started.is_some_and(|s| s >= queued_at);
        idle.is_some_and(|i| i < SETTLE_MS)
            || (used_since && idle.is_none_or(|i| i < IN_DEMAND_IDLE_MS))
    })
}

/// Whether a request that has waited `waited` has its turn next, whatever it needs.
pub fn aged(waited: Duration, max_wait: Duration) -> bool {
    waited >= max_wait / 4
}

/// The order in which a pool's waiting requests (oldest first, each with its consumer and how
/// long it has waited) are considered. Requests whose consumer can run now (`runnable`) go
/// ahead of those that need a load or an eviction, so interleaved traffic does not thrash the
/// pool; but once the oldest has waited a quarter of `max_wait`, its turn comes next: only it,
/// and requests for the same consumer, are considered until it leaves the queue. Requests held
/// up by a stuck consumer (`parked`, by their place in `waiting`) do not age and come last:
/// holding the others back would not make room for them.
pub fn queue_order(
    waiting: &[(usize, Duration)],
    max_wait: Duration,
    runnable: impl Fn(usize) -> bool,
    parked: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let (live, parked): (Vec<usize>, Vec<usize>) = (0..waiting.len()).partition(|&i| !parked(i));
    if let Some(&head) = live.first()
        && aged(waiting[head].1, max_wait)
    {
        let head = waiting[head].0;
        return live.into_iter().filter(|&i| waiting[i].0 == head).collect();
    }
    let (mut now, later): (Vec<usize>, Vec<usize>) =
        live.into_iter().partition(|&i| runnable(waiting[i].0));
    now.extend(later);
    now.extend(parked);
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn consumer(need_mib: u64) -> ConsumerState {
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
            coexist_with: Vec::new(),
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
        // A stuck consumer that may share the pool is not in the way: it stays, and only
        // room beside it counts.
        cs[1].need = 600 * MIB;
        cs[1].coexist_with = vec![0];
        assert!(matches!(decide(&pool(), &cs, 1), Decision::Never { .. }));
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
            queue_order(&queue, max_wait, runnable, none),
            vec![1, 3, 0, 2]
        );
        // The oldest has waited 30 s of 120: only it and its consumer's requests go.
        let queue = [(1, s(30)), (0, s(9)), (1, s(5)), (0, s(1))];
        assert_eq!(queue_order(&queue, max_wait, runnable, none), vec![0, 2]);
        assert!(queue_order(&[], max_wait, runnable, none).is_empty());
    }

    #[test]
    fn requests_held_up_by_a_stuck_consumer_do_not_age() {
        let s = Duration::from_secs;
        let max_wait = s(120);
        let runnable = |c: usize| c == 0;
        // The oldest (for 1) waits on a stuck consumer: it holds nothing back, and goes last.
        let queue = [(1, s(60)), (0, s(9)), (2, s(5)), (0, s(1))];
        assert_eq!(
            queue_order(&queue, max_wait, runnable, |i| i == 0),
            vec![1, 3, 2, 0]
        );
        // The next oldest that has aged has its turn as usual.
        let queue = [(1, s(60)), (2, s(40)), (0, s(9))];
        assert_eq!(queue_order(&queue, max_wait, runnable, |i| i == 0), vec![1]);
    }
}
