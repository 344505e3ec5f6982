//! Pure decisions on measurements: whether an unload gave the memory back, and whether a
//! consumer's measured figure can be believed.

use crate::config::PoolKind;

/// What an unload must give back: what the broker counted the consumer as holding, or its
/// declared size if that is less (a process also holds memory of its own, a runtime and a
/// GPU context, that no unload gives back).
pub fn expected_back(counted: u64, declared: u64) -> u64 {
    counted.min(declared)
}

/// Whether 90% of `expected` came back, given (before, now) readings of the consumer's own
/// processes and of the pool's free memory. Processes that held 90% of the consumer's
/// `declared` size before the unload are the holders, and what they still hold decides: the
/// pool's reading is shared with everything else on the machine (a `ram` pool's moves by as
/// much whenever any program starts or ends). Processes that held less may not be the ones
/// that held the memory (a forwarder that owns the port, a server in a container): then
/// either will do, and with no processes found, the pool's reading alone decides. A consumer
/// counted, or found just before the unload, at under a tenth of its declared size had let its
/// model go already (Ollama after its keep_alive, a server someone else told to unload):
/// nothing but its runtime's own is left to give back, and it is back unless its processes now
/// hold more than that tenth. `processes` are believed figures (see [`trusted`]).
pub fn came_back(
    expected: u64,
    declared: u64,
    processes: (Option<u64>, Option<u64>),
    pool_free: (Option<u64>, Option<u64>),
) -> bool {
    let ninety = |part: u64, of: u64| u128::from(part) * 10 >= u128::from(of) * 9;
    let by_processes =
        matches!(processes, (Some(h0), Some(h)) if ninety(h0.saturating_sub(h), expected));
    let holders = matches!(processes, (Some(h0), Some(_)) if ninety(h0, declared));
    let by_pool =
        matches!(pool_free, (Some(f0), Some(f)) if ninety(f.saturating_sub(f0), expected));
    let tenth = |part: u64| u128::from(part) * 10 < u128::from(declared);
    let had_let_go =
        (tenth(expected) || processes.0.is_some_and(tenth)) && processes.1.is_none_or(tenth);
    by_processes || had_let_go || (!holders && by_pool)
}

/// Whether the process group the broker started for a consumer is gone after its stop: then
/// nothing of it can hold memory, whatever the pool's reading says and however far the
/// consumer's declared size was from what it really held. `held_now` is what its group holds
/// (`Some(0)` once no process of it is left).
pub fn own_group_gone(started_by_broker: bool, held_now: Option<u64>) -> bool {
    started_by_broker && held_now == Some(0)
}

/// A loaded consumer's measurement, if it can be believed. A model server that is up holds GPU
/// memory (its CUDA context at the least), so a GPU figure of nothing says that the processes
/// found are not the ones holding it (a forwarder not known by name); only a server that
/// manages its own memory, or Ollama (an idle Ollama that let its models go), may truly hold
/// none ([`ConsumerConfig::may_hold_nothing`]). A wrong zero would let the broker fill memory
/// that is taken; the declared size errs the safe way.
pub fn trusted(measured: u64, pool: PoolKind, may_hold_nothing: bool) -> Option<u64> {
    (measured > 0 || pool == PoolKind::Ram || may_hold_nothing).then_some(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_group_that_holds_nothing_gave_everything_back() {
        assert!(own_group_gone(true, Some(0)));
        // Still a process of it left, or nothing measured: the usual checks decide.
        assert!(!own_group_gone(true, Some(1)));
        assert!(!own_group_gone(true, None));
        // An unload route leaves the server running: its figure of 0 may be the wrong
        // processes' (see `trusted`).
        assert!(!own_group_gone(false, Some(0)));
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn an_unload_is_verified_by_its_processes_or_by_the_pool() {
        let want = 1000 * MIB;
        let back = |p, f| came_back(want, want, p, f);
        // Its processes let go of 90%: back, whatever the pool says.
        assert!(back((Some(1100 * MIB), Some(200 * MIB)), (None, None)));
        // The processes found are a forwarder's that hold nothing of it; the pool's free
        // reading rose by 90%: back.
        assert!(back(
            (Some(5 * MIB), Some(5 * MIB)),
            (Some(100 * MIB), Some(1000 * MIB))
        ));
        // No processes found: the pool alone decides.
        assert!(back((None, None), (Some(100 * MIB), Some(1000 * MIB))));
        assert!(!back((None, None), (Some(100 * MIB), Some(899 * MIB))));
        // Neither moved: not back.
        assert!(!back(
            (Some(1000 * MIB), Some(990 * MIB)),
            (Some(100 * MIB), Some(200 * MIB))
        ));
        assert!(!back((None, None), (None, None)));
        // Its processes held it and still do: the pool's reading rose for some other
        // reason (another program ended), and it is not back.
        assert!(!back(
            (Some(1000 * MIB), Some(1000 * MIB)),
            (Some(100 * MIB), Some(1100 * MIB))
        ));
        // Processes holding well under its declared size may not be its holders: the pool
        // may still say it came back.
        assert!(came_back(
            want,
            4000 * MIB,
            (Some(1000 * MIB), Some(1000 * MIB)),
            (Some(100 * MIB), Some(1100 * MIB))
        ));
    }

    #[test]
    fn a_consumer_that_had_let_its_model_go_has_nothing_to_give_back() {
        let declared = 1000 * MIB;
        let idle = (Some(40 * MIB), Some(40 * MIB));
        let pool = (Some(100 * MIB), Some(100 * MIB));
        // Counted at its runtime's 40 MiB: back at once, the pool unmoved.
        assert!(came_back(40 * MIB, declared, idle, pool));
        assert!(came_back(40 * MIB, declared, (Some(40 * MIB), None), pool));
        // Unless its processes took up more than a tenth meanwhile (it was loading again).
        assert!(!came_back(
            40 * MIB,
            declared,
            (Some(40 * MIB), Some(300 * MIB)),
            pool
        ));
        // Counted at its model's size, but found holding only its runtime just before the
        // unload (it let the model go since the last reading): back.
        assert!(came_back(declared, declared, idle, pool));
        // Counted at a tenth or more, and holding it, it must give that back.
        assert!(!came_back(
            100 * MIB,
            declared,
            (Some(100 * MIB), Some(100 * MIB)),
            pool
        ));
    }

    #[test]
    fn an_unload_must_give_back_what_was_counted_not_a_forwarders_figure() {
        // Counted at its declared size (its processes were not found): all of it.
        assert_eq!(expected_back(6 * MIB, 6 * MIB), 6 * MIB);
        // Measured above its declaration: the declared part, not the runtime's own.
        assert_eq!(expected_back(7 * MIB, 6 * MIB), 6 * MIB);
        // Measured below: what it held.
        assert_eq!(expected_back(4 * MIB, 6 * MIB), 4 * MIB);
    }

    #[test]
    fn a_gpu_figure_of_nothing_is_believed_only_of_a_self_managed_server() {
        assert_eq!(trusted(0, PoolKind::Vram, false), None);
        assert_eq!(trusted(0, PoolKind::Gtt, false), None);
        assert_eq!(trusted(0, PoolKind::Vram, true), Some(0));
        assert_eq!(trusted(0, PoolKind::Ram, false), Some(0));
        assert_eq!(trusted(5, PoolKind::Vram, false), Some(5));
    }
}
