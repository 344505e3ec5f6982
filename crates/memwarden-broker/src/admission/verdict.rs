//! The verdict on one request: run it, load its consumer, evict for it, make it wait, or
//! refuse it (507) because it can never fit.
//!
//! 507 is said exactly when the need exceeds the pool (its capacity or its device) less the
//! cushion less what the holders that never make room for this request hold: consumers that
//! are `pinned`, `self_managed` or have no way to be unloaded, and those that may share the
//! pool with it (they are never evicted for it). Everything else that holds room now — work
//! in flight, a lease, a load or an unload under way, a stuck consumer whose memory may still
//! come back — makes the request wait, within `max_wait`: none of it is a reason to say never.

use super::{ConsumerState, Decision, Phase, PoolState, Wait, available, conflict, pick_victims};

/// How another consumer's memory stands in the way of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `pinned`, `self_managed`, or nothing the broker can unload it by: it stays.
    Kept,
    /// It may share the pool with the request's consumer, so it is never evicted for it.
    Coexists,
    /// A job's lease or request: its memory goes when its work ends.
    Lease,
    /// A load under way: its promise in the ledger.
    Loading,
    /// An unload under way: its memory is on its way back.
    Unloading,
    /// Its unload left its memory: it may still come back, by itself or when retried.
    Stuck,
    /// It may be evicted once its work in flight ends.
    Busy,
    /// It may be evicted now.
    Idle,
}

impl Hold {
    /// Whether what it holds stays whatever the broker does, as far as this request goes.
    pub fn is_fixed(self) -> bool {
        matches!(self, Hold::Kept | Hold::Coexists)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Kept => "never evicted",
            Hold::Coexists => "shares the pool with it",
            Hold::Lease => "leased",
            Hold::Loading => "loading",
            Hold::Unloading => "unloading",
            Hold::Stuck => "stuck",
            Hold::Busy => "busy",
            Hold::Idle => "idle",
        }
    }
}

/// One consumer that holds room a request for another needs, and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub consumer: usize,
    pub hold: Hold,
    pub bytes: u64,
}

/// How `o` holds room in the way of a request for `target` (in the same pool), or `None`
/// when it holds none.
fn hold_of(consumers: &[ConsumerState], target: usize, o: usize) -> Option<Holder> {
    let c = &consumers[o];
    let held = c.held();
    let (hold, bytes) = if c.ephemeral && (c.in_flight > 0 || c.phase == Phase::Loaded) {
        (Hold::Lease, held)
    } else if c.phase == Phase::Loading {
        (Hold::Loading, c.need)
    } else if c.phase == Phase::Unloading {
        (Hold::Unloading, held)
    } else if c.stuck {
        (Hold::Stuck, held)
    } else if !conflict(consumers, target, o) {
        (Hold::Coexists, held)
    } else if !c.evictable {
        (Hold::Kept, held)
    } else if c.in_flight > 0 {
        (Hold::Busy, held)
    } else {
        (Hold::Idle, held)
    };
    (bytes > 0).then_some(Holder {
        consumer: o,
        hold,
        bytes,
    })
}

/// Every consumer of `target`'s pool that holds room, and how: what a refusal or a wait
/// names, so that whoever reads it sees whom the room is held by.
pub fn holders(consumers: &[ConsumerState], target: usize) -> Vec<Holder> {
    let pool = consumers[target].pool;
    (0..consumers.len())
        .filter(|&o| o != target && consumers[o].pool == pool)
        .filter_map(|o| hold_of(consumers, target, o))
        .collect()
}

/// The pool's size: its capacity, or its device's (the smaller, when both are known).
pub fn pool_total(pool: &PoolState) -> Option<u64> {
    match (pool.capacity, pool.live_total) {
        (Some(c), Some(t)) => Some(c.min(t)),
        (c, t) => c.or(t),
    }
}

/// The most `target` could ever get: the pool's size less the cushion and less what the
/// holders that never make room for it hold.
pub fn best_room(pool: &PoolState, consumers: &[ConsumerState], target: usize) -> u64 {
    let Some(total) = pool_total(pool) else {
        return 0;
    };
    let fixed: u64 = (holders(consumers, target).iter())
        .filter(|h| h.hold.is_fixed())
        .map(|h| h.bytes)
        .sum();
    total.saturating_sub(fixed).saturating_sub(pool.cushion)
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
        Phase::Unloaded | Phase::Sleeping => {}
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

#[cfg(test)]
mod tests;
