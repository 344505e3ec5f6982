//! Scheduling a pool's queue: admitting, granting, starting the loads and evictions waiting
//! requests need, refusing what can never fit, and saying why a request waited.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{AdmitError, Owner, Reply, Waiter};
use crate::admission::{self, Decision, Phase, PoolState, Wait};

impl Owner {
    pub(super) fn acquire(&mut self, id: u64, name: &str, reply: Reply) {
        if self.stopping {
            let _ = reply.send(Err(AdmitError::ShuttingDown));
            return;
        }
        let Some(c) = self.index(name) else {
            let _ = reply.send(Err(AdmitError::Unknown {
                name: memwarden_probe::sanitize::sanitize(name, 64),
                known: self.known(),
            }));
            return;
        };
        let p = self.cons[c].pool;
        // From here the pool's decisions need every count exact: no work passes its gates.
        self.close_pool_gates(p);
        let full = self.pools[p].queue.len() >= self.cfg.pools[p].max_queue;
        let since = Instant::now();
        self.pools[p].queue.push_back(Waiter {
            id,
            consumer: c,
            since,
            reply,
            last_wait: None,
        });
        let now = self.now_ms(since);
        self.cons[c].demand.recent.add(now, 1);
        if !full {
            return;
        }
        // `max_queue` bounds the requests that wait: one that may run now is granted here,
        // full queue or not, and one that can never fit is told so.
        let last = self.pools[p].queue.len() - 1;
        match admission::decide(self.pool_view(p), &self.cons, c) {
            Decision::Run if self.has_its_turn(p, last) => {
                self.grant(p, last);
                return;
            }
            Decision::Never { .. } => {
                self.step(p, last);
                return;
            }
            _ => {}
        }
        let w = self.pools[p].queue.pop_back().expect("just queued");
        let pool = &self.cfg.pools[p];
        self.counters.rejected += 1;
        self.counters.rejected_queue_full += 1;
        let err = AdmitError::QueueFull {
            pool: pool.name.clone(),
            max: pool.max_queue,
            why: self.would_wait(p, c),
        };
        tracing::debug!(consumer = name, "refused: {err}");
        let _ = w.reply.send(Err(err));
    }

    /// Whether no request that has waited its turn holds back the waiter at `i`.
    fn has_its_turn(&self, p: usize, i: usize) -> bool {
        let now = Instant::now();
        let waiting: Vec<(usize, Duration)> = (self.pools[p].queue.iter())
            .map(|w| (w.consumer, now - w.since))
            .collect();
        let parked =
            |j: usize| matches!(self.pools[p].queue[j].last_wait, Some(Wait::Stuck { .. }));
        let priority = |c: usize| self.cfg.consumers[c].priority;
        admission::queue_order(
            &waiting,
            self.cfg.pools[p].max_wait,
            |_| true,
            parked,
            priority,
        )
        .contains(&i)
    }

    /// Fills in what demand-aware decisions read of pool `p`'s consumers: each one's measured
    /// load time, when it was loaded, its requests queued, its residency and its priority.
    pub(super) fn refresh_demand(&mut self, p: usize) {
        for c in 0..self.cons.len() {
            if self.cons[c].pool != p {
                continue;
            }
            let loaded_at = self.rt[c].loaded_at.map(|t| self.now_ms(t));
            let d = &mut self.cons[c].demand;
            d.reload_ms = self.rt[c].last_load.map(|t| t.as_millis() as u64);
            d.loaded_at = loaded_at;
            d.queued = 0;
            d.min_residency_ms = self.cfg.min_residency(c).as_millis() as u64;
            d.priority = self.cfg.consumers[c].priority;
        }
        for w in &self.pools[p].queue {
            self.cons[w.consumer].demand.queued += 1;
        }
    }

    pub(super) fn release(&mut self, id: u64) {
        if let Some(Some(c)) = self.active.remove(&id) {
            self.finished(c);
        }
    }

    pub(super) fn gate_release(&mut self, gate: u64) {
        let Some((c, left)) = self.adopted.get_mut(&gate) else {
            return;
        };
        let c = *c;
        *left -= 1;
        if *left == 0 {
            self.adopted.remove(&gate);
        }
        if let Some(c) = c {
            self.finished(c);
        }
    }

    /// A piece of work on consumer `c` ended.
    pub(super) fn finished(&mut self, c: usize) {
        let now = self.now_ms(Instant::now());
        let cs = &mut self.cons[c];
        cs.in_flight = cs.in_flight.saturating_sub(1);
        cs.last_used = Some(now);
        if cs.in_flight == 0 && self.cfg.consumers[c].is_ephemeral() {
            cs.phase = Phase::Unloaded;
        }
    }

    pub(super) fn pool_view(&self, p: usize) -> &PoolState {
        &self.pools[p].state
    }

    /// Admits what may go now in pool `p`, starts the loads and evictions the queue needs.
    pub(super) fn schedule(&mut self, p: usize) {
        self.pools[p].queue.retain(|w| !w.reply.is_closed());
        if self.pools[p].queue.is_empty() {
            return;
        }
        self.refresh_demand(p);
        let now = Instant::now();
        let waiting: Vec<(usize, Duration)> = self.pools[p]
            .queue
            .iter()
            .map(|w| (w.consumer, now - w.since))
            .collect();
        let (state, cons) = (&self.pools[p].state, &self.cons);
        let decision: HashMap<usize, Decision> = waiting
            .iter()
            .map(|&(c, _)| (c, admission::decide(state, cons, c)))
            .collect();
        let order = admission::queue_order(
            &waiting,
            self.cfg.pools[p].max_wait,
            |c| decision[&c] == Decision::Run,
            |i| matches!(decision[&waiting[i].0], Decision::Wait(Wait::Stuck { .. })),
            |c| cons[c].demand.priority,
        );
        // Ids, not positions: each step may take a request out of the queue.
        let ids: Vec<u64> = order.iter().map(|&i| self.pools[p].queue[i].id).collect();
        for id in ids {
            if let Some(i) = self.pools[p].queue.iter().position(|w| w.id == id) {
                self.step(p, i);
            }
        }
    }

    /// Decides for the waiter at `i` and acts; true when the waiter left the queue.
    pub(super) fn step(&mut self, p: usize, i: usize) -> bool {
        let c = self.pools[p].queue[i].consumer;
        match admission::decide(self.pool_view(p), &self.cons, c) {
            Decision::Run => {
                self.grant(p, i);
                true
            }
            Decision::Load => {
                self.start_load(c);
                false
            }
            Decision::Evict(victims) => {
                let since = self.now_ms(self.pools[p].queue[i].since);
                let now = self.now_ms(Instant::now());
                let max_wait = self.cfg.pools[p].max_wait;
                let held = admission::held_back(&self.cons, &victims, since, now, max_wait);
                if let Some(victim) = held {
                    self.pools[p].queue[i].last_wait = Some(Wait::InDemand { victim });
                    return false;
                }
                for v in victims {
                    self.start_evict(v, Some(since));
                }
                false
            }
            Decision::Never { need, room } => {
                let msg = self.never_message(c, need, room);
                let w = self.pools[p].queue.remove(i).expect("index in range");
                self.counters.rejected += 1;
                self.counters.rejected_never_fits += 1;
                tracing::warn!("{msg}");
                let _ = w.reply.send(Err(AdmitError::NeverFits(msg)));
                true
            }
            Decision::Wait(w) => {
                self.pools[p].queue[i].last_wait = Some(w);
                false
            }
        }
    }

    pub(super) fn never_message(&self, c: usize, need: u64, room: u64) -> String {
        use memwarden_probe::size::format_size;
        let cfg = &self.cfg;
        let p = cfg.consumers[c].pool;
        let size = admission::pool_total(self.pool_view(p)).map_or_else(
            || "its size unreadable".to_string(),
            |t| {
                format!(
                    "{}, cushion {}",
                    format_size(t),
                    format_size(cfg.pools[p].cushion)
                )
            },
        );
        let held = match self.holders_text(c, true) {
            Some(h) => format!("held by what never makes room for it: {h}"),
            None => "nothing else holds any of it: the pool is too small".into(),
        };
        format!(
            "{:?} needs {} but pool {:?} ({size}) can offer it at most {} even with everything \
             that can make room gone: {} short; {held}",
            cfg.consumers[c].name,
            format_size(need),
            cfg.pools[p].name,
            format_size(room),
            format_size(need - room),
        )
    }

    pub(super) fn grant(&mut self, p: usize, i: usize) {
        let w = self.pools[p].queue.remove(i).expect("index in range");
        // Counted in flight before the answer leaves, so no decision in between can evict it.
        self.cons[w.consumer].in_flight += 1;
        self.cons[w.consumer].last_started = Some(self.now_ms(Instant::now()));
        if w.reply.send(Ok(())).is_ok() {
            self.active.insert(w.id, Some(w.consumer));
            self.counters.served += 1;
        } else {
            self.cons[w.consumer].in_flight -= 1;
            self.counters.cancelled += 1;
        }
    }

    pub(super) fn wait_reason(&self, c: usize, w: Option<&Wait>) -> String {
        let name = |i: usize| self.cfg.consumers[i].name.clone();
        match w {
            None => "the queue did not reach it".into(),
            Some(Wait::Joining) => format!("{:?} was still loading", name(c)),
            Some(Wait::Unloading) => format!("{:?} was being unloaded", name(c)),
            Some(Wait::Busy { with }) => format!(
                "{:?} was running work that may not run beside it",
                name(*with)
            ),
            Some(Wait::Concurrency) => "it was at its max_concurrent".into(),
            Some(Wait::InDemand { victim }) => format!(
                "{:?}, which would have to make room, kept being used by other requests",
                name(*victim)
            ),
            Some(Wait::Reclaiming) => "memory from an eviction was still coming back".into(),
            Some(Wait::NoRoom { short_by }) => format!(
                "{} short; the room is held by {}",
                memwarden_probe::size::format_size(*short_by),
                self.holders_text(c, false)
                    .unwrap_or_else(|| "programs outside the broker".into())
            ),
            Some(Wait::Stuck { short_by }) => format!(
                "{} short, and the room is held by stuck consumers (their unload did not free \
                 it): {} (their unload is retried by itself while requests wait; to retry now, POST \
                 /v1/consumers/NAME/unload)",
                memwarden_probe::size::format_size(*short_by),
                self.stuck_holders(admission::stuck_in_the_way(&self.cons, c))
            ),
        }
    }

    /// `"a" holds 6 GiB, "b" holds 1 GiB`: stuck consumers and what each holds.
    pub(super) fn stuck_holders(&self, stuck: impl Iterator<Item = usize>) -> String {
        stuck
            .map(|o| {
                format!(
                    "{:?} holds {}",
                    self.cfg.consumers[o].name,
                    memwarden_probe::size::format_size(self.cons[o].held())
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
