//! How a victim gives its room back when its server can sleep: a pure choice between a sleep
//! that keeps the weights in host RAM, one that drops them, and an unload; and whether host
//! RAM's own consumers make room for a sleeper first.

use super::demand::{DEFAULT_RELOAD_MS, cheapest};
use super::{ConsumerState, in_demand};

/// Until a wake of a server was measured, it is taken to cost this fraction of its load (a
/// level-1 wake copies the weights back from host RAM; a load starts the server and reads them
/// from disk): a tenth.
pub const WAKE_SHARE_OF_LOAD: u64 = 10;

/// How an evicted consumer gives its pool's memory back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its unload route, or its process stopped.
    Unload,
    /// Level 1: the weights go to host RAM; the wake takes seconds.
    Sleep,
    /// Level 2: the weights are dropped; the wake reads them again, still without a restart.
    DeepSleep,
    /// Nothing it can do now gives the room back without overfilling host RAM.
    CannotNow,
}

/// What a victim that can sleep (or not: `sleep_ram` is `None`) should do. `host_room` is what
/// host RAM can still take: the `ram` pool's available room, or `MemAvailable` less a cushion
/// and less what sleeps under way will take; `None` when it cannot be read, and then nothing
/// is put in host RAM on hope. A level-1 sleep is chosen only when its weights fit there;
/// else a level-2 sleep where the server has one (it still wakes faster than it loads); else
/// an unload.
pub fn eviction(
    sleep_ram: Option<u64>,
    host_room: Option<u64>,
    has_deep: bool,
    can_unload: bool,
) -> Eviction {
    let Some(ram) = sleep_ram else {
        return Eviction::Unload;
    };
    if host_room.is_some_and(|room| ram <= room) {
        Eviction::Sleep
    } else if has_deep {
        Eviction::DeepSleep
    } else if can_unload {
        Eviction::Unload
    } else {
        Eviction::CannotNow
    }
}

/// The sleepers to drop from host RAM (fully unloaded) so that `short_by` more bytes fit
/// there: least recently used first, each with what it holds there, until enough is freed.
/// `None` when all of them would not free enough.
pub fn sleepers_to_drop(
    sleepers: &[(usize, Option<u64>, u64)],
    short_by: u64,
) -> Option<Vec<usize>> {
    let mut order: Vec<&(usize, Option<u64>, u64)> = sleepers.iter().collect();
    order.sort_by_key(|&&(i, last_used, _)| (last_used, i));
    let mut freed = 0u64;
    let mut chosen = Vec::new();
    for &(i, _, holds) in order {
        if freed >= short_by {
            break;
        }
        freed += holds;
        chosen.push(i);
    }
    (freed >= short_by && !chosen.is_empty()).then_some(chosen)
}

/// The consumers of the `ram` pool `host` to evict so that sleeper `x`'s weights fit in host
/// RAM, where they lack `short_by` bytes: the set demand-aware eviction would pick in that pool
/// ([`cheapest`]) among those that may be evicted now (loaded, evictable, not stuck, no work in
/// flight, not still in demand for the request queued at `queued_at`: [`in_demand`]), least
/// recently used first. Only when evicting them costs less than what `x`'s sleep saves: their
/// expected cost (each one's reload time times its recent demand) below the time a reload of
/// `x` takes beyond its wake (`wake_ms`, its last measured wake: a tenth of its load until
/// one was) times `x`'s own recent demand. `None`: host RAM does not make room, and `x` gives
/// its room back as it can without it (a deep sleep, an unload).
pub fn ram_victims(
    consumers: &[ConsumerState],
    host: usize,
    x: usize,
    short_by: u64,
    wake_ms: Option<u64>,
    queued_at: u64,
    now: u64,
) -> Option<Vec<usize>> {
    let candidates: Vec<usize> = (0..consumers.len())
        .filter(|&i| {
            i != x
                && consumers[i].pool == host
                && consumers[i].may_go_now()
                && in_demand(consumers, &[i], queued_at, now).is_none()
        })
        .collect();
    let set = cheapest(consumers, &candidates, short_by)?;
    let cost: f64 = set.iter().map(|&i| consumers[i].demand.cost(now)).sum();
    let d = &consumers[x].demand;
    let load = d.reload_ms.unwrap_or(DEFAULT_RELOAD_MS);
    let wake = wake_ms.unwrap_or(load / WAKE_SHARE_OF_LOAD);
    let saving = load.saturating_sub(wake) as f64 / 1000.0 * d.recent.at(now);
    (cost < saving).then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Phase;
    use crate::admission::tests::{MIB, consumer};

    const GIB: u64 = 1 << 30;

    #[test]
    fn sleep_is_chosen_only_when_host_ram_takes_the_weights() {
        assert_eq!(
            eviction(Some(8 * GIB), Some(9 * GIB), true, true),
            Eviction::Sleep
        );
        assert_eq!(
            eviction(Some(8 * GIB), Some(8 * GIB), false, false),
            Eviction::Sleep
        );
        // Host RAM cannot take them: the weights are dropped, the process kept.
        assert_eq!(
            eviction(Some(8 * GIB), Some(7 * GIB), true, true),
            Eviction::DeepSleep
        );
        // No level 2: an unload, if there is one.
        assert_eq!(
            eviction(Some(8 * GIB), Some(7 * GIB), false, true),
            Eviction::Unload
        );
        assert_eq!(
            eviction(Some(8 * GIB), Some(7 * GIB), false, false),
            Eviction::CannotNow
        );
        // An unreadable host is no room.
        assert_eq!(
            eviction(Some(8 * GIB), None, true, true),
            Eviction::DeepSleep
        );
        // A server that cannot sleep is unloaded.
        assert_eq!(
            eviction(None, Some(100 * GIB), true, true),
            Eviction::Unload
        );
    }

    #[test]
    fn the_least_recently_used_sleepers_leave_host_ram_first() {
        let s = [
            (0, Some(50), 4 * GIB),
            (1, Some(10), 2 * GIB),
            (2, None, GIB),
        ];
        assert_eq!(sleepers_to_drop(&s, GIB), Some(vec![2]));
        assert_eq!(sleepers_to_drop(&s, 3 * GIB), Some(vec![2, 1]));
        assert_eq!(sleepers_to_drop(&s, 7 * GIB), Some(vec![2, 1, 0]));
        assert_eq!(sleepers_to_drop(&s, 8 * GIB), None);
        assert_eq!(sleepers_to_drop(&[], 0), None);
    }

    /// A GPU consumer `x` (pool 0) that loads in `load_ms` and was asked for `asked` times at
    /// 1000, and consumers of the `ram` pool (1) of `mib` MiB, each loaded in `reload_ms`,
    /// last used at `used` and asked for `asked` times at 1000.
    fn rig(load_ms: u64, asked: u64, ram: &[(u64, u64, u64, u64)]) -> Vec<ConsumerState> {
        let mut x = consumer(600);
        x.phase = Phase::Loaded;
        x.demand.reload_ms = Some(load_ms);
        x.demand.recent.add(1000, asked);
        let mut cs = vec![x];
        for &(mib, reload_ms, used, asked) in ram {
            let mut c = consumer(mib);
            c.pool = 1;
            c.phase = Phase::Loaded;
            c.last_used = Some(used);
            c.demand.reload_ms = Some(reload_ms);
            c.demand.recent.add(1000, asked);
            cs.push(c);
        }
        cs
    }

    #[test]
    fn host_ram_makes_room_for_a_sleeper_when_its_consumers_cost_less_than_a_reload() {
        // x loads in 30 s, asked for 4 times; r1 reloads in 1 s, asked for once: 1 < 27 × 4.
        let cs = rig(30_000, 4, &[(100, 1000, 10, 1), (100, 20_000, 20, 3)]);
        let now = 5000;
        assert_eq!(
            ram_victims(&cs, 1, 0, 50 * MIB, None, now, now),
            Some(vec![1])
        );
        // Both are needed: 1 + 60 < 108.
        assert_eq!(
            ram_victims(&cs, 1, 0, 150 * MIB, None, now, now),
            Some(vec![1, 2])
        );
        // Not when all of them would not free enough.
        assert_eq!(ram_victims(&cs, 1, 0, 250 * MIB, None, now, now), None);
        // A measured wake that takes most of a load saves little: 61 s of reloads are not
        // worth 4 × 5 s.
        assert_eq!(
            ram_victims(&cs, 1, 0, 150 * MIB, Some(25_000), now, now),
            None
        );
    }

    #[test]
    fn a_ram_consumer_in_more_demand_than_the_sleeper_stays() {
        // r reloads in 20 s and is asked for 10 times: 200 > 27 × 1.
        let cs = rig(30_000, 1, &[(100, 20_000, 10, 10)]);
        assert_eq!(ram_victims(&cs, 1, 0, 50 * MIB, None, 5000, 5000), None);
        // A sleeper nobody asked for is worth no eviction at all.
        let cs = rig(30_000, 0, &[(100, 1000, 10, 0)]);
        assert_eq!(ram_victims(&cs, 1, 0, 50 * MIB, None, 5000, 5000), None);
    }

    #[test]
    fn only_what_any_eviction_in_the_ram_pool_may_take_is_taken() {
        let base = rig(30_000, 4, &[(100, 1000, 10, 1)]);
        let now = 5000;
        let mut kept = Vec::new();
        for f in [
            |c: &mut ConsumerState| c.evictable = false,
            |c: &mut ConsumerState| c.stuck = true,
            |c: &mut ConsumerState| c.in_flight = 1,
            |c: &mut ConsumerState| c.phase = Phase::Loading,
            // Used since the request queued, and idle for less than its reload time.
            |c: &mut ConsumerState| {
                c.last_started = Some(4500);
                c.last_used = Some(4800);
            },
        ] {
            let mut cs = base.clone();
            f(&mut cs[1]);
            kept.push(ram_victims(&cs, 1, 0, 50 * MIB, None, 4000, now));
        }
        assert_eq!(kept, vec![None; 5]);
        assert_eq!(
            ram_victims(&base, 1, 0, 50 * MIB, None, 4000, now),
            Some(vec![1])
        );
    }
}
