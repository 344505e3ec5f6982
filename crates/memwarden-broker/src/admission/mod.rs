//! The admission decisions: pure functions of the broker's state, with no I/O and no clock
//! (time comes in as values), so every rule can be tested on a made-up pool.

use std::time::Duration;

pub mod demand;
pub mod sim;
pub mod sleep;

pub use demand::{Demand, DemandState};

/// Where a consumer is in its life, as far as the broker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Unloaded,
    Loading,
    Loaded,
    Unloading,
    /// Its server gave its memory in the pool back but runs on, its weights in host RAM (or
    /// dropped): a wake brings it back.
    Sleeping,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Unloaded => "unloaded",
            Phase::Loading => "loading",
            Phase::Loaded => "loaded",
            Phase::Unloading => "unloading",
            Phase::Sleeping => "sleeping",
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
    /// What sleeping servers of other pools hold here (their weights in host RAM).
    pub asleep: u64,
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
    /// It holds its memory only while it has work (a job under a lease): it lets go when
    /// that work ends, whatever the broker does.
    pub ephemeral: bool,
    /// Consumers it may share the pool with (both ways already).
    pub coexist_with: Vec<usize>,
    /// What demand-aware eviction and the queue's order go by.
    pub demand: DemandState,
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
            // What its server keeps there asleep (its runtime's context), once measured.
            Phase::Sleeping => self.measured.unwrap_or(0),
            Phase::Unloaded | Phase::Loading => 0,
        }
    }

    /// Whether it may be evicted now: loaded, evictable, not stuck, and running no work.
    pub fn may_go_now(&self) -> bool {
        self.phase == Phase::Loaded && self.evictable && !self.stuck && self.in_flight == 0
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
        .sum::<u64>()
        + pool.asleep;
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

/// Victims that free at least `short_by`: the set that would cost least to bring back
/// ([`demand::cheapest`]), least recently used first. `None` when the consumers that may be
/// evicted now do not free enough.
pub fn pick_victims(
    consumers: &[ConsumerState],
    target: usize,
    short_by: u64,
) -> Option<Vec<usize>> {
    let candidates: Vec<usize> = (0..consumers.len())
        .filter(|&i| conflict(consumers, target, i) && consumers[i].may_go_now())
        .collect();
    demand::cheapest(consumers, &candidates, short_by)
}

/// How long a consumer that is still in demand must have been idle, at least, before a request
/// that queued behind its work may evict it (longer where its reload takes longer).
pub const IN_DEMAND_IDLE_MS: u64 = 1000;

/// How long any consumer is left after its last work ends before it is evicted: its clients'
/// next requests, sent as soon as their last is answered, arrive within it.
pub const SETTLE_MS: u64 = 100;

/// Of the `victims` an eviction for a request queued at `queued_at` would unload, the first
/// that is still in demand: it finished work less than [`SETTLE_MS`] before `now`, or it
/// started work after the request queued (others kept using it meanwhile) and finished its
/// last less than [`IN_DEMAND_IDLE_MS`], or its measured reload time
/// ([`DemandState::idle_limit`]), before `now`. Evicting it at the first gap between its
/// requests would have the pool swap back and forth, one load per request, while both sides
/// have clients; the request waits instead until the consumer goes idle, or until it has
/// waited long enough to have its turn whatever it needs ([`aged`]). A consumer that nobody
/// used since the request queued goes after the settling moment at most — unless it was loaded
/// less than its `min_residency` ago and still has requests queued: then they are served
/// first, so that two consumers taking turns are served in batches.
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
            || (used_since && idle.is_none_or(|i| i < c.demand.idle_limit()))
            || c.demand.resident(now)
    })
}

/// Of the `victims` an eviction for a request queued at `queued_at` would unload, the first
/// to hold back for now: one still in demand ([`in_demand`]) while the
/// request is young; once it has aged, only one loaded less than its `min_residency` ago with
/// requests still queued, so that a turn forced by age serves a batch too rather than one
/// round of requests (the residency is at most a quarter of `max_wait`: the config says so).
pub fn held_back(
    consumers: &[ConsumerState],
    victims: &[usize],
    queued_at: u64,
    now: u64,
    max_wait: Duration,
) -> Option<usize> {
    let waited = Duration::from_millis(now.saturating_sub(queued_at));
    if aged(waited, max_wait) {
        victims
            .iter()
            .copied()
            .find(|&v| consumers[v].demand.resident(now))
    } else {
        in_demand(consumers, victims, queued_at, now)
    }
}

/// Whether a request that has waited `waited` has its turn next, whatever it needs.
pub fn aged(waited: Duration, max_wait: Duration) -> bool {
    waited >= max_wait / 4
}

/// The order in which a pool's waiting requests (oldest first, each with its consumer and how
/// long it has waited) are considered. Requests for consumers of a higher `priority` go first;
/// among equals, requests whose consumer can run now (`runnable`) go ahead of those that need
/// a load or an eviction, so interleaved traffic does not thrash the pool. But once the oldest
/// has waited a quarter of `max_wait`, its turn comes next whatever its priority: only it, and
/// requests for the same consumer, are considered until it leaves the queue. Requests held up
/// by a stuck consumer (`parked`, by their place in `waiting`) do not age and come last:
/// holding the others back would not make room for them.
pub fn queue_order(
    waiting: &[(usize, Duration)],
    max_wait: Duration,
    runnable: impl Fn(usize) -> bool,
    parked: impl Fn(usize) -> bool,
    priority: impl Fn(usize) -> i32,
) -> Vec<usize> {
    let (mut live, parked): (Vec<usize>, Vec<usize>) =
        (0..waiting.len()).partition(|&i| !parked(i));
    if let Some(&head) = live.first()
        && aged(waiting[head].1, max_wait)
    {
        let head = waiting[head].0;
        return live.into_iter().filter(|&i| waiting[i].0 == head).collect();
    }
    // Stable: arrival order among equals.
    live.sort_by_cached_key(|&i| {
        let c = waiting[i].0;
        (std::cmp::Reverse(priority(c)), !runnable(c))
    });
    live.extend(parked);
    live
}

mod verdict;

pub use verdict::*;

#[cfg(test)]
mod tests;
