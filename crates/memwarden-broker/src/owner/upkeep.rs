//! Keeping the state true between requests: readings, upstream health, idle ttls, queue
//! bounds and processes that exited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{AdmitError, Found, Msg, Owner, Promise};
use crate::admission::Phase;
use crate::config::ConsumerConfig;
use crate::lifecycle;
use crate::measure::Sample;
use crate::verify::trusted;

/// How often a server the broker does not load is asked, while idle, whether it is up.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// A consumer with a server and nothing the broker loads it by is up whenever its server is
/// (it cold-starts on its first request, as Ollama does).
pub(super) fn up_when_its_server_is(c: &ConsumerConfig) -> bool {
    c.upstream.is_some() && c.start.is_none() && c.load.is_none()
}

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
        self.check_up(c, Duration::from_secs(2), |consumer, alive| {
            Msg::HealthChecked { consumer, alive }
        });
    }

    /// Asks consumer `c`'s server whether it is up (its health route, or its port), for at
    /// most `within` (one try when zero), and reports the answer as `msg` says.
    pub(super) fn check_up(
        &self,
        c: usize,
        within: Duration,
        msg: impl FnOnce(String, bool) -> Msg + Send + 'static,
    ) {
        let mut cfg = self.cfg.consumers[c].clone();
        // An upstream of `${PORT}` is asked on the port of its current start.
        cfg.upstream = self.shared.upstream(&cfg).or(cfg.upstream);
        let tx = self.tx.clone();
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let deadline = Instant::now() + within;
            let alive = lifecycle::wait_ready(&shared.client, &cfg, deadline, None)
                .await
                .is_ok();
            let _ = tx.send(msg(cfg.name, alive));
        });
    }

    /// What the server of a consumer the broker does not load is found to be, at start or
    /// when a reload adds it, and whether a vLLM server was left asleep (by an earlier
    /// broker): until the answer comes, it is as loading (its declared size promised), so
    /// nothing is granted into memory it may hold, and nothing is refused because of it
    /// either.
    pub(super) fn probe(&mut self, c: usize) {
        let asks = self.asks_if_asleep(c);
        if !up_when_its_server_is(&self.cfg.consumers[c]) && !asks {
            return;
        }
        let p = self.cons[c].pool;
        self.cons[c].phase = Phase::Loading;
        self.rt[c].generation += 1;
        self.rt[c].checked_at = Some(Instant::now());
        self.pools[p].ledger.push(Promise {
            consumer: c,
            bytes: self.cons[c].need,
            settled_at: None,
        });
        self.pools[p].update_promised();
        let generation = self.rt[c].generation;
        if asks {
            return self.ask_if_asleep(c, generation);
        }
        self.check_up(c, Duration::ZERO, move |consumer, alive| Msg::Probed {
            consumer,
            generation,
            found: if alive { Found::Up } else { Found::Down },
        });
    }

    pub(super) fn probed(&mut self, name: &str, generation: u64, found: Found) {
        let Some(c) = self.index(name) else { return };
        if self.rt[c].generation != generation || self.cons[c].phase != Phase::Loading {
            return;
        }
        let p = self.cons[c].pool;
        let now = Instant::now();
        let up_when = up_when_its_server_is(&self.cfg.consumers[c]);
        match found {
            Found::Asleep { host } => {
                self.pools[p].ledger.retain(|l| l.consumer != c);
                self.found_asleep(c, host);
            }
            // Counted at its declared size until its processes are measured.
            Found::Up if up_when => {
                self.cons[c].phase = Phase::Loaded;
                self.rt[c].loaded_at = Some(now);
                for l in &mut self.pools[p].ledger {
                    if l.consumer == c && l.settled_at.is_none() {
                        l.settled_at = Some(now);
                    }
                }
            }
            Found::Down if up_when => {
                tracing::warn!(consumer = %name, "its server does not answer: counted as holding nothing until it does");
                self.cons[c].phase = Phase::Unloaded;
                self.rt[c].down = true;
                self.pools[p].ledger.retain(|l| l.consumer != c);
            }
            // One the broker loads, not asleep: it starts unloaded, as any it loads.
            Found::Up | Found::Down => {
                self.cons[c].phase = Phase::Unloaded;
                self.pools[p].ledger.retain(|l| l.consumer != c);
            }
        }
        self.pools[p].update_promised();
    }

    pub(super) fn health_checked(&mut self, name: &str, alive: bool) {
        let Some(i) = self.index(name) else { return };
        let cs = &self.cons[i];
        if alive && cs.phase == Phase::Unloaded && !cs.stuck && self.rt[i].down {
            tracing::info!(consumer = %name, "its server answers again: counted as loaded");
            self.cons[i].phase = Phase::Loaded;
            self.cons[i].measured = None;
            self.rt[i].down = false;
            self.rt[i].loaded_at = Some(Instant::now());
        } else if !alive && cs.phase == Phase::Loaded {
            self.close_gate(i);
            tracing::warn!(consumer = %name, "upstream is gone: counted as unloaded");
            self.cons[i].phase = Phase::Unloaded;
            self.cons[i].measured = None;
            self.rt[i].down = true;
            if let Ok(mut m) = self.shared.children.lock() {
                m.remove(name);
            }
        }
    }

    /// Asks the servers the broker does not load, while they are idle, whether they are
    /// still up (or up again): one that went away holds nothing, one that came up holds what
    /// it is measured to hold.
    fn recheck_idle(&mut self, now: Instant) {
        for c in 0..self.cons.len() {
            let cs = &self.cons[c];
            let idle = match cs.phase {
                Phase::Loaded => !cs.stuck,
                Phase::Unloaded => self.rt[c].down && !cs.stuck,
                _ => false,
            };
            let due = (self.rt[c].checked_at).is_none_or(|t| now - t >= RECHECK_EVERY);
            if !idle || !due || !up_when_its_server_is(&self.cfg.consumers[c]) {
                continue;
            }
            if self.in_flight(c).0 > 0 || self.pools[cs.pool].queue.iter().any(|w| w.consumer == c)
            {
                continue;
            }
            self.rt[c].checked_at = Some(now);
            self.check_up(c, Duration::ZERO, |consumer, alive| Msg::HealthChecked {
                consumer,
                alive,
            });
        }
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
                    let err = AdmitError::Timeout {
                        consumer: self.cfg.consumers[w.consumer].name.clone(),
                        waited: now - w.since,
                        reason,
                    };
                    tracing::warn!("refused: {err}");
                    let _ = w.reply.send(Err(err));
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
        self.recheck_idle(now);
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
