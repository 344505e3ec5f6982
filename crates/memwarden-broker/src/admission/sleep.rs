//! How a victim gives its room back when its server can sleep: a pure choice between a sleep
//! that keeps the weights in host RAM, one that drops them, and an unload.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
