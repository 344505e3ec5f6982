//! Demand-aware eviction: of the consumers that may make room, unload the set that would cost
//! least to bring back — each one's measured load (or wake) time times how often it was asked
//! for lately — with least recently used as the tie-break. Pure, like the rest of admission:
//! time comes in as values, milliseconds on the owner's monotonic clock.

use super::ConsumerState;

/// A request counts half after this long: demand is what was asked for in the last minutes.
pub const HALF_LIFE_MS: u64 = 120_000;

/// What bringing a consumer back is taken to cost until one of its loads has been measured: a
/// typical model server's load from a warm page cache.
pub const DEFAULT_RELOAD_MS: u64 = 10_000;

/// Up to this many candidates, every set is tried; beyond it, a greedy choice by cost per byte.
const EXACT_MAX: usize = 10;

/// A count of requests that halves every [`HALF_LIFE_MS`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Demand {
    count: f64,
    at: u64,
}

impl Demand {
    /// Counts `n` requests at `now`.
    pub fn add(&mut self, now: u64, n: u64) {
        self.count = self.at(now) + n as f64;
        self.at = self.at.max(now);
    }

    /// The count as it stands at `now` (no later than its last request: as then).
    pub fn at(&self, now: u64) -> f64 {
        let dt = now.saturating_sub(self.at) as f64;
        self.count * (-dt / HALF_LIFE_MS as f64).exp2()
    }

    /// When a request was last counted.
    pub fn last(&self) -> u64 {
        self.at
    }
}

/// What the owner keeps, and fills in before each round of decisions, for demand-aware
/// eviction and for the queue's order.
#[derive(Debug, Clone, Default)]
pub struct DemandState {
    /// Requests lately.
    pub recent: Demand,
    /// How long bringing it back took when last measured: its load, or its wake where it
    /// sleeps. `None` until measured: [`DEFAULT_RELOAD_MS`].
    pub reload_ms: Option<u64>,
    /// When its current load finished.
    pub loaded_at: Option<u64>,
    /// Requests for it waiting in its pool's queue.
    pub queued: u32,
    /// How long after its load it is kept for the requests it still has queued.
    pub min_residency_ms: u64,
    /// Higher goes first in the queue.
    pub priority: i32,
}

impl DemandState {
    /// Expected seconds of reloading that evicting it brings, with its demand taken at `t`.
    pub fn cost(&self, t: u64) -> f64 {
        self.reload_ms.unwrap_or(DEFAULT_RELOAD_MS) as f64 / 1000.0 * self.recent.at(t)
    }

    /// How long a consumer others keep using must have been idle before a request that queued
    /// behind its work may evict it: as long as bringing it back takes, once that was measured
    /// (sooner, its next request would likely pay for a reload), and a second at least.
    pub fn idle_limit(&self) -> u64 {
        (self.reload_ms).map_or(super::IN_DEMAND_IDLE_MS, |r| {
            r.max(super::IN_DEMAND_IDLE_MS)
        })
    }

    /// Loaded less than its `min_residency` before `now`, and still with requests queued.
    pub fn resident(&self, now: u64) -> bool {
        self.queued > 0
            && (self.loaded_at).is_some_and(|l| now.saturating_sub(l) < self.min_residency_ms)
    }
}

/// A candidate as the choice sees it.
#[derive(Clone, Copy)]
struct Cand {
    i: usize,
    held: u64,
    cost: f64,
    last_used: Option<u64>,
}

/// What a set of victims is judged by, smallest best: its expected cost, then how recently its
/// most recently used member was used (least recently used wins ties), then its size.
#[derive(Clone, Copy, PartialEq)]
struct Key {
    cost: f64,
    newest: Option<u64>,
    len: usize,
}

impl Key {
    fn better(&self, o: &Key) -> bool {
        self.cost
            .total_cmp(&o.cost)
            .then(self.newest.cmp(&o.newest))
            .then(self.len.cmp(&o.len))
            .is_lt()
    }

    fn of(set: &[Cand]) -> Key {
        Key {
            cost: set.iter().map(|c| c.cost).sum(),
            newest: set.iter().map(|c| c.last_used).max().flatten(),
            len: set.len(),
        }
    }
}

/// Of `candidates` (consumers that may be evicted now), the set that frees at least
/// `short_by` at the least expected cost, least recently used first; `None` when all of them
/// do not free enough. Demand decays at one rate for all, so costs are compared at the latest
/// moment any candidate was asked for, and no clock is needed.
pub fn cheapest(
    consumers: &[ConsumerState],
    candidates: &[usize],
    short_by: u64,
) -> Option<Vec<usize>> {
    let t = (candidates.iter())
        .map(|&i| consumers[i].demand.recent.last())
        .max()
        .unwrap_or(0);
    // One that holds nothing frees nothing.
    let cands: Vec<Cand> = (candidates.iter())
        .map(|&i| Cand {
            i,
            held: consumers[i].held(),
            cost: consumers[i].demand.cost(t),
            last_used: consumers[i].last_used,
        })
        .filter(|c| c.held > 0)
        .collect();
    let total = cands.iter().fold(0u64, |s, c| s.saturating_add(c.held));
    if total < short_by {
        return None;
    }
    let mut set = if cands.len() <= EXACT_MAX {
        exact(&cands, short_by)
    } else {
        greedy(&cands, short_by)
    };
    set.sort_by_key(|c| (c.last_used, c.i));
    Some(set.into_iter().map(|c| c.i).collect())
}

/// Every set tried: for the few consumers a pool usually has.
fn exact(cands: &[Cand], short_by: u64) -> Vec<Cand> {
    let mut best: Option<(Key, u32)> = None;
    for mask in 1u32..(1 << cands.len()) {
        let set: Vec<Cand> = (0..cands.len())
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| cands[b])
            .collect();
        if set.iter().fold(0u64, |s, c| s.saturating_add(c.held)) < short_by {
            continue;
        }
        let key = Key::of(&set);
        if best.as_ref().is_none_or(|(b, _)| key.better(b)) {
            best = Some((key, mask));
        }
    }
    let mask = best.map_or(0, |(_, m)| m);
    (0..cands.len())
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| cands[b])
        .collect()
}

/// Cheapest per byte first (least recently used among equals), thinned of members the others
/// make unnecessary, dearest first; or the one candidate that alone frees enough, when that
/// costs less.
fn greedy(cands: &[Cand], short_by: u64) -> Vec<Cand> {
    let mut order = cands.to_vec();
    order.sort_by(|a, b| {
        (a.cost / a.held as f64)
            .total_cmp(&(b.cost / b.held as f64))
            .then(a.last_used.cmp(&b.last_used))
            .then(a.i.cmp(&b.i))
    });
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    for c in order {
        if freed >= short_by {
            break;
        }
        freed = freed.saturating_add(c.held);
        chosen.push(c);
    }
    chosen.sort_by(|a, b| {
        (b.cost.total_cmp(&a.cost))
            .then(b.last_used.cmp(&a.last_used))
            .then(b.i.cmp(&a.i))
    });
    let mut k = 0;
    while k < chosen.len() {
        if freed - chosen[k].held >= short_by {
            freed -= chosen[k].held;
            chosen.remove(k);
        } else {
            k += 1;
        }
    }
    let single = (cands.iter())
        .filter(|c| c.held >= short_by)
        .map(|c| (Key::of(std::slice::from_ref(c)), *c))
        .reduce(|a, b| if b.0.better(&a.0) { b } else { a });
    match single {
        Some((key, c)) if key.better(&Key::of(&chosen)) => vec![c],
        _ => chosen,
    }
}

#[cfg(test)]
mod tests;
