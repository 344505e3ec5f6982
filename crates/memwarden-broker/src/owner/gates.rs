//! The fast path's gates: opened for consumers whose requests would be granted at once, and
//! taken back (with the work that runs through them counted) before any decision.

use std::sync::Arc;

use super::Owner;
use crate::admission::{self, Decision, Phase};
use crate::gate::{Count, Gate};

impl Owner {
    /// Consumer `c`'s work in flight and when its last work ended, its open gate's included.
    pub(super) fn in_flight(&self, c: usize) -> (u32, Option<u64>) {
        let cs = &self.cons[c];
        let seen = self.gates[c].as_ref().map(|g| g.peek()).unwrap_or_default();
        (
            cs.in_flight + seen.running,
            cs.last_used.max(seen.last_used),
        )
    }

    /// Takes back consumer `c`'s gate: what still runs through it is counted in flight here.
    pub(super) fn close_gate(&mut self, c: usize) {
        let Some(g) = self.gates[c].take() else {
            return;
        };
        let Count {
            running,
            admitted,
            last_used,
        } = g.close();
        self.counters.served += admitted;
        let now = self.now_ms(std::time::Instant::now());
        let cs = &mut self.cons[c];
        cs.demand.recent.add(now, admitted);
        cs.in_flight += running;
        cs.last_used = cs.last_used.max(last_used);
        if running > 0 {
            self.adopted.insert(g.id, (Some(c), running));
        }
    }

    pub(super) fn close_pool_gates(&mut self, p: usize) {
        for c in 0..self.cons.len() {
            if self.cons[c].pool == p {
                self.close_gate(c);
            }
        }
    }

    pub(super) fn close_all_gates(&mut self) {
        for c in 0..self.cons.len() {
            self.close_gate(c);
        }
    }

    /// Opens a gate for each consumer whose requests would be granted at once: in a pool where
    /// nothing waits, loaded and trusted, and free to run. Of consumers that may not run beside
    /// each other, one gate at most is open, the one busy or used last.
    pub(super) fn open_gates(&mut self) {
        if self.stopping {
            return;
        }
        for p in 0..self.pools.len() {
            if !self.pools[p].queue.is_empty() {
                continue;
            }
            let mut members: Vec<usize> = (0..self.cons.len())
                .filter(|&c| self.cons[c].pool == p)
                .collect();
            // Open gates first, then the busy, then the most recently used.
            members.sort_by_key(|&c| {
                let cs = &self.cons[c];
                (
                    self.gates[c].is_none(),
                    cs.in_flight == 0,
                    std::cmp::Reverse(cs.last_used),
                )
            });
            // A consumer with an open gate may run work any moment: it counts as running for
            // the decisions on the others, for as long as they are being taken.
            let mut counted = Vec::new();
            for c in members {
                let cfg = &self.cfg.consumers[c];
                let cs = &self.cons[c];
                if self.gates[c].is_none() {
                    if cs.phase != Phase::Loaded || cs.stuck || cfg.is_ephemeral() {
                        continue;
                    }
                    if admission::decide(&self.pools[p].state, &self.cons, c) != Decision::Run {
                        continue;
                    }
                    let limit = cs.max_concurrent - cs.in_flight;
                    self.next_gate += 1;
                    let gate = Arc::new(Gate::open(self.next_gate, limit, self.epoch));
                    self.shared.gates.put(&cfg.name, Arc::clone(&gate));
                    self.gates[c] = Some(gate);
                }
                if self.cons[c].in_flight == 0 {
                    self.cons[c].in_flight = 1;
                    counted.push(c);
                }
            }
            for c in counted {
                self.cons[c].in_flight = 0;
            }
        }
    }
}
