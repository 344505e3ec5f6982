//! Keeping the state true between requests: readings, upstream health, idle ttls, queue
//! bounds and processes that exited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{AdmitError, Msg, Owner};
use crate::admission::Phase;
use crate::lifecycle;
use crate::measure::Sample;
use crate::verify::trusted;

impl Owner {
    pub(super) fn reading(&mut self, s: Sample) {
        self.sleep_reading(&s);
        for (p, r) in s.pools.iter().enumerate() {
            if p >= self.pools.len() {
                break;
            }
            self.pools[p].state.live_free = r.free;
            self.pools[p].state.live_total = r.total;
            let before = self.pools[p].ledger.len();
            self.pools[p]
                .ledger
                .retain(|l| l.settled_at.is_none_or(|t| t >= s.began));
            if self.pools[p].ledger.len() != before {
                self.pools[p].update_promised();
            }
        }
        if s.consumers.len() == self.cons.len() {
            for (c, m) in s.consumers.into_iter().enumerate() {
                let cs = &mut self.cons[c];
                match cs.phase {
                    Phase::Loaded | Phase::Unloading => {
                        // A reading begun before the load finished may miss part of it.
                        if let Some(m) = m
                            && self.rt[c].loaded_at.is_none_or(|t| t <= s.began)
                        {
                            let cfg = &self.cfg.consumers[c];
                            cs.measured =
                                trusted(m, self.cfg.pools[cs.pool].kind, cfg.may_hold_nothing());
                        }
                    }
                    Phase::Unloaded if cs.stuck => {
                        if let Some(m) = m {
                            cs.measured = Some(m);
                            // Not while it serves work: that work may be what holds it now.
                            if m <= self.rt[c].stuck_held / 10 && cs.in_flight == 0 {
                                tracing::info!(consumer = %self.cfg.consumers[c].name, "stuck memory came back");
                                cs.stuck = false;
                                cs.measured = None;
                                self.rt[c].retry_at = None;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    pub(super) fn upstream_failed(&mut self, name: &str) {
        self.counters.upstream_errors += 1;
        let Some(c) = self.index(name) else { return };
        if self.cons[c].phase != Phase::Loaded {
            return;
        }
        let cfg = self.cfg.consumers[c].clone();
        let tx = self.tx.clone();
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(2);
            let alive = lifecycle::wait_ready(&shared.client, &cfg, deadline, None)
                .await
                .is_ok();
            let _ = tx.send(Msg::HealthChecked {
                consumer: cfg.name,
                alive,
            });
        });
    }

    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        // Queue bounds.
        for p in 0..self.pools.len() {
            let max_wait = self.cfg.pools[p].max_wait;
            let q = std::mem::take(&mut self.pools[p].queue);
            for w in q {
                if now - w.since >= max_wait {
                    self.counters.rejected += 1;
                    self.counters.rejected_timeout += 1;
                    let reason = self.wait_reason(w.consumer, w.last_wait.as_ref());
                    let _ = w.reply.send(Err(AdmitError::Timeout {
                        consumer: self.cfg.consumers[w.consumer].name.clone(),
                        waited: now - w.since,
                        reason,
                    }));
                } else {
                    self.pools[p].queue.push_back(w);
                }
            }
        }
        // Idle consumers go after their ttl.
        for c in 0..self.cons.len() {
            let cfg = &self.cfg.consumers[c];
            let Some(ttl) = cfg.idle_ttl else { continue };
            // Work passing its gate counts; the gate stays open unless the ttl is up.
            let (in_flight, last_used) = self.in_flight(c);
            let cs = &self.cons[c];
            if cs.phase != Phase::Loaded || in_flight > 0 || !cfg.can_evict() || cs.stuck {
                continue;
            }
            let queued = self.pools[cs.pool].queue.iter().any(|w| w.consumer == c);
            let since = last_used
                .map(|ms| self.epoch + Duration::from_millis(ms))
                .max(self.rt[c].loaded_at);
            if queued || since.is_none_or(|t| now - t < ttl) {
                continue;
            }
            // Work may have passed the gate since the look: it is counted once closed.
            self.close_gate(c);
            if self.cons[c].in_flight == 0 {
                tracing::info!(consumer = %self.cfg.consumers[c].name, "idle for its ttl: unloading");
                self.idle_release(c);
            }
        }
        self.retry_stuck(now);
        // A process of ours that exited holds nothing.
        let mut exited = Vec::new();
        if let Ok(mut m) = self.shared.children.lock() {
            m.retain(|name, child| {
                let done = matches!(child.try_wait(), Ok(Some(_)));
                if done {
                    exited.push(name.clone());
                }
                !done
            });
        }
        for name in exited {
            if let Some(c) = self.index(&name)
                && self.cons[c].phase == Phase::Loaded
            {
                self.close_gate(c);
                tracing::warn!(consumer = %name, "its process exited: counted as unloaded");
                self.cons[c].phase = Phase::Unloaded;
                self.cons[c].measured = None;
            }
        }
    }
}
