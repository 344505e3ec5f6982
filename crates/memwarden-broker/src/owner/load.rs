//! Starting loads and unloads, verifying that an unload gave the memory back, and retrying
//! the unloads of stuck consumers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{AdminReply, AdmitError, Msg, Owner, Promise, Shared, UnloadOutcome};
use crate::admission::{self, Phase, Wait};
use crate::config::{Config, ConsumerConfig, MAX_STUCK_RETRY, PoolConfig, Unload};
use crate::lifecycle;
use crate::measure::Target;
use crate::verify::{came_back, expected_back, own_group_gone, trusted};

impl Owner {
    /// An unload asked for by an operator. A stuck consumer's unload is retried for real (its
    /// route called or its process stopped again, and verified again), and the answer waits
    /// for the verdict.
    pub(super) fn admin_unload(&mut self, name: &str, reply: AdminReply) {
        let Some(i) = self.index(name) else {
            let _ = reply.send(Err((404, format!("unknown consumer {name:?}"))));
            return;
        };
        self.close_gate(i);
        let cs = &self.cons[i];
        let holds = cs.phase == Phase::Loaded || (cs.phase == Phase::Unloaded && cs.stuck);
        let answer = if holds && cs.in_flight > 0 {
            Err((
                409,
                format!("{name:?} is running work; try again when it is idle"),
            ))
        } else if holds && !self.cfg.consumers[i].can_unload() {
            Err((
                409,
                format!("{name:?} has no unload route and no process of ours"),
            ))
        } else if cs.stuck && cs.phase == Phase::Unloaded {
            tracing::info!(consumer = %name, "retrying the unload of a stuck consumer");
            self.start_unload(i, false);
            self.retries.insert(name.to_string(), reply);
            return;
        } else if cs.phase == Phase::Loaded {
            self.start_unload(i, false);
            Ok(format!("unloading {name:?}"))
        } else {
            Ok(format!("{name:?} is {}", cs.phase.as_str()))
        };
        let _ = reply.send(answer);
    }

    pub(super) fn start_load(&mut self, c: usize) {
        if self.wakes_instead(c) {
            return self.start_wake(c);
        }
        let mut cfg = self.cfg.consumers[c].clone();
        if self.rt[c].down && cfg.start.is_none() && cfg.load.is_none() {
            // Nothing of ours brings its server up: asked once, a server that is down is a
            // 502 now rather than at its load_timeout.
            cfg.load_timeout = Duration::ZERO;
        }
        let generation = self.begin_load(c);
        let tx = self.tx.clone();
        let shared = Arc::clone(&self.shared);
        tracing::info!(consumer = %cfg.name, "loading");
        tokio::spawn(async move {
            let started = Instant::now();
            let result = load(&shared, &cfg).await.map(|()| started.elapsed());
            let _ = tx.send(Msg::LoadDone {
                consumer: cfg.name.clone(),
                generation,
                result,
            });
        });
    }

    /// Marks `c` loading (or waking) and promises its need in the ledger; returns the
    /// generation its report must carry.
    pub(super) fn begin_load(&mut self, c: usize) -> u64 {
        let (p, need) = (self.cons[c].pool, self.cfg.consumers[c].need);
        self.cons[c].phase = Phase::Loading;
        self.rt[c].generation += 1;
        self.pools[p].ledger.push(Promise {
            consumer: c,
            bytes: need,
            settled_at: None,
        });
        self.pools[p].update_promised();
        self.rt[c].generation
    }

    pub(super) fn start_unload(&mut self, c: usize, eviction: bool) {
        let cfg = Arc::clone(&self.cfg);
        let consumer = cfg.consumers[c].clone();
        let pool = cfg.pools[consumer.pool].clone();
        self.close_gate(c);
        self.cons[c].phase = Phase::Unloading;
        self.rt[c].generation += 1;
        self.rt[c].evicting = eviction;
        let generation = self.rt[c].generation;
        let before = self.cons[c].held();
        let tx = self.tx.clone();
        let shared = Arc::clone(&self.shared);
        tracing::info!(consumer = %consumer.name, eviction, "unloading");
        tokio::spawn(async move {
            let outcome = unload(&shared, &cfg, &consumer, &pool, before).await;
            let _ = tx.send(Msg::UnloadDone {
                consumer: consumer.name.clone(),
                generation,
                outcome,
            });
        });
    }

    pub(super) fn load_done(
        &mut self,
        name: &str,
        generation: u64,
        result: Result<Duration, String>,
    ) {
        let Some(c) = self.index(name) else { return };
        if self.rt[c].generation != generation || self.cons[c].phase != Phase::Loading {
            return;
        }
        let p = self.cons[c].pool;
        match result {
            Ok(took) => {
                tracing::info!(consumer = %name, seconds = crate::human::seconds(took), "loaded");
                self.cons[c].phase = Phase::Loaded;
                self.cons[c].stuck = false;
                self.rt[c].down = false;
                self.cons[c].measured = None;
                self.rt[c].loaded_at = Some(Instant::now());
                self.count_load(c, took);
                let now = Instant::now();
                for l in &mut self.pools[p].ledger {
                    if l.consumer == c && l.settled_at.is_none() {
                        l.settled_at = Some(now);
                    }
                }
                self.pools[p].update_promised();
            }
            Err(why) => {
                let why = memwarden_probe::sanitize::sanitize(&why, 300);
                tracing::warn!(consumer = %name, "load failed: {why}");
                self.cons[c].phase = Phase::Unloaded;
                self.rt[c].sleep = self.rt[c].sleep.awake();
                self.counters.load_failures += 1;
                self.pools[p].ledger.retain(|l| l.consumer != c);
                self.pools[p].update_promised();
                // A process we started for it must not linger.
                let child = self
                    .shared
                    .children
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(name));
                if let Some(mut child) = child {
                    let stop = self.cfg.consumers[c].stop.clone();
                    let grace = self.cfg.consumers[c].stop_timeout;
                    tokio::spawn(async move {
                        lifecycle::stop_process(&mut child, stop.as_deref(), grace).await;
                    });
                }
                let q = std::mem::take(&mut self.pools[p].queue);
                for w in q {
                    if w.consumer == c {
                        self.counters.rejected += 1;
                        let _ = w.reply.send(Err(AdmitError::LoadFailed {
                            consumer: name.to_string(),
                            why: why.clone(),
                        }));
                    } else {
                        self.pools[p].queue.push_back(w);
                    }
                }
            }
        }
    }

    pub(super) fn unload_done(&mut self, name: &str, generation: u64, outcome: UnloadOutcome) {
        let Some(c) = self.index(name) else { return };
        if self.rt[c].generation != generation || self.cons[c].phase != Phase::Unloading {
            return;
        }
        let eviction = self.rt[c].evicting;
        let was_stuck = self.cons[c].stuck;
        self.cons[c].phase = Phase::Unloaded;
        self.rt[c].loaded_at = None;
        if let Some(reply) = self.retries.remove(name) {
            let _ = reply.send(retry_answer(name, &outcome));
        }
        match outcome {
            UnloadOutcome::Freed { remaining, took } => {
                tracing::info!(consumer = %name, seconds = crate::human::seconds(took), "unloaded, memory back");
                self.cons[c].measured = remaining;
                self.cons[c].stuck = false;
                self.rt[c].retry_at = None;
                if eviction {
                    self.counters.evictions += 1;
                } else {
                    self.counters.idle_unloads += 1;
                }
            }
            UnloadOutcome::Stuck { held } => {
                tracing::warn!(
                    consumer = %name,
                    held_bytes = held,
                    "unload answered but the memory did not come back: marked stuck"
                );
                self.cons[c].stuck = true;
                self.cons[c].measured = Some(held);
                self.rt[c].stuck_held = held;
                self.counters.stuck += u64::from(!was_stuck);
                self.retry_later(c, was_stuck);
            }
            UnloadOutcome::Failed(why) => {
                tracing::warn!(consumer = %name, "unload failed: {why}");
                // Whatever it holds, it still holds: not trusted as a victim until it gives
                // its memory back.
                self.cons[c].stuck = true;
                self.rt[c].stuck_held = self.cons[c].measured.unwrap_or(self.cons[c].need);
                self.cons[c].measured = Some(self.rt[c].stuck_held);
                self.counters.unload_failures += 1;
                self.counters.stuck += u64::from(!was_stuck);
                self.retry_later(c, was_stuck);
            }
        }
    }

    /// Sets when a stuck consumer's unload is retried by itself: the pool's `stuck_retry`
    /// after it was found stuck, twice the last wait after each retry that failed.
    pub(super) fn retry_later(&mut self, c: usize, again: bool) {
        let first = self.cfg.pools[self.cons[c].pool].stuck_retry;
        let rt = &mut self.rt[c];
        rt.retry_every = if again {
            (rt.retry_every * 2).clamp(first, MAX_STUCK_RETRY)
        } else {
            first
        };
        rt.retry_at = Some(Instant::now() + rt.retry_every);
    }

    /// Retries the unload of stuck consumers whose time has come and whose room a request
    /// waits for: one whose processes cannot be found is never seen to give its memory back by
    /// the sampler, and a server that failed its unload may manage it later.
    pub(super) fn retry_stuck(&mut self, now: Instant) {
        for c in 0..self.cons.len() {
            let cs = &self.cons[c];
            let due = self.rt[c].retry_at.is_some_and(|t| now >= t);
            if !due || !cs.stuck || cs.phase != Phase::Unloaded || cs.in_flight > 0 {
                continue;
            }
            let name = &self.cfg.consumers[c].name;
            let waited_on = self.pools[cs.pool].queue.iter().any(|w| {
                matches!(w.last_wait, Some(Wait::Stuck { .. }))
                    && admission::conflict(&self.cons, w.consumer, c)
            });
            if !waited_on || self.retries.contains_key(name) {
                continue;
            }
            tracing::info!(consumer = %name, "a request waits for a stuck consumer's room: retrying its unload");
            self.start_unload(c, true);
        }
    }
}

/// Loads a consumer: starts its process or calls its load route, then waits until it is
/// ready.
async fn load(shared: &Shared, c: &ConsumerConfig) -> Result<(), String> {
    let deadline = Instant::now() + c.load_timeout;
    if c.start.is_some() {
        let (cmd, c) = given_port(shared, c)?;
        let mut child = lifecycle::start_logged(&cmd, &c.name, shared.logs.ring(&c.name))?;
        let ready = lifecycle::wait_ready(&shared.client, &c, deadline, Some(&mut child)).await;
        if let Ok(mut m) = shared.children.lock() {
            m.insert(c.name.clone(), child);
        }
        return ready;
    }
    if let (Some(route), Some(up)) = (&c.load, &c.upstream) {
        lifecycle::call_route(&shared.client, up, route, c.load_timeout).await?;
    }
    lifecycle::wait_ready(&shared.client, c, deadline, None).await
}

/// A start command with its `${PORT}` chosen for this start, and the consumer with its
/// upstream on that port; the port is kept for the proxy and the measurements.
fn given_port(
    shared: &Shared,
    c: &ConsumerConfig,
) -> Result<(Vec<String>, ConsumerConfig), String> {
    let mut c = c.clone();
    let cmd = c.start.clone().unwrap_or_default();
    let Some(up) = c.upstream.as_mut().filter(|u| u.port == 0) else {
        return Ok((cmd, c));
    };
    let mut ports = shared
        .ports
        .lock()
        .map_err(|_| "the port table is poisoned")?;
    let taken: Vec<u16> = (ports.iter())
        .filter(|(n, _)| **n != c.name)
        .map(|(_, p)| *p)
        .collect();
    up.port = lifecycle::free_port(&taken)?;
    ports.insert(c.name.clone(), up.port);
    Ok((lifecycle::with_port(&cmd, up.port), c))
}

/// How long an unload route may take to answer.
const UNLOAD_ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest an unload of `name` and its verification may take: how long to wait for the
/// verdict on a retried one.
pub fn unload_bound(cfg: &Config, name: &str) -> Duration {
    let Some(c) = cfg.consumer_index(name).map(|i| &cfg.consumers[i]) else {
        return Duration::from_secs(5);
    };
    let release = if c.start.is_some() {
        // stop_process: the stop command or SIGTERM, then SIGKILL and a last wait.
        c.stop_timeout * 2 + Duration::from_secs(5)
    } else {
        UNLOAD_ROUTE_TIMEOUT
    };
    // Each reading may take a while on a busy machine: a margin for the first and the last.
    release + cfg.pools[c.pool].verify_timeout + Duration::from_secs(5)
}

/// What an operator who retried a stuck consumer's unload is told.
fn retry_answer(name: &str, outcome: &UnloadOutcome) -> Result<String, (u16, String)> {
    match outcome {
        UnloadOutcome::Freed { .. } => Ok(format!("{name:?} gave its memory back")),
        UnloadOutcome::Stuck { held } => Err((
            409,
            format!(
                "{name:?} still holds {} after its unload: it stays stuck",
                memwarden_probe::size::format_size(*held)
            ),
        )),
        UnloadOutcome::Failed(why) => Err((
            502,
            format!("unloading {name:?} failed, and it stays stuck: {why}"),
        )),
    }
}

/// Unloads a consumer and verifies that the memory came back: polls every 100 ms until it
/// has (see [`came_back`]) or the pool's verify timeout passes.
async fn unload(
    shared: &Arc<Shared>,
    cfg: &Config,
    c: &ConsumerConfig,
    pool: &PoolConfig,
    before: u64,
) -> UnloadOutcome {
    give_back(shared, cfg, c, pool, before, release(shared, c)).await
}

/// Runs `act` (an unload, a sleep) and verifies that the consumer's memory in `pool` came
/// back, as [`unload`] says: its own pool's, or host RAM's for a sleeper dropped from there.
pub(super) async fn give_back(
    shared: &Arc<Shared>,
    cfg: &Config,
    c: &ConsumerConfig,
    pool: &PoolConfig,
    before: u64,
    act: impl std::future::Future<Output = Result<(), String>>,
) -> UnloadOutcome {
    let started = Instant::now();
    let target = Target {
        kind: pool.kind,
        gpu: pool.gpu,
        ..shared.target(cfg, c)
    };
    // What its processes hold now, and the pool's free reading, to compare against.
    let (held0, free0) = measure_one(shared, cfg, &target).await;
    let held0 = held0.and_then(|h| trusted(h, pool.kind, c.may_hold_nothing()));
    if let Err(why) = act.await {
        return UnloadOutcome::Failed(why);
    }
    let expected = expected_back(before, c.need);
    let deadline = started + pool.verify_timeout;
    loop {
        let (held, free) = measure_one(shared, cfg, &target).await;
        if came_back(expected, c.need, (held0, held), (free0, free))
            || own_group_gone(c.start.is_some(), held)
        {
            return UnloadOutcome::Freed {
                remaining: held,
                took: started.elapsed(),
            };
        }
        if Instant::now() >= deadline {
            return UnloadOutcome::Stuck {
                held: held.unwrap_or(before),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks a consumer to let its memory go: stops the process the broker started for it, or
/// calls its unload route.
pub(super) async fn release(shared: &Shared, c: &ConsumerConfig) -> Result<(), String> {
    if c.start.is_some() {
        let child = shared
            .children
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&c.name));
        if let Some(mut child) = child {
            let port = shared.upstream(c).map_or(0, |u| u.port);
            let stop = c.stop.as_deref().map(|s| lifecycle::with_port(s, port));
            lifecycle::stop_process(&mut child, stop.as_deref(), c.stop_timeout).await;
        }
        // Its port may go to anyone now: nothing there is this consumer's to measure.
        if let Ok(mut ports) = shared.ports.lock() {
            ports.remove(&c.name);
        }
        return Ok(());
    }
    match (&c.unload, &c.upstream) {
        (Some(Unload::Route(route)), Some(up)) => {
            lifecycle::call_route(&shared.client, up, route, UNLOAD_ROUTE_TIMEOUT).await?;
        }
        (Some(Unload::Ollama), Some(up)) => {
            lifecycle::unload_ollama(&shared.client, up, UNLOAD_ROUTE_TIMEOUT).await?;
        }
        _ => {}
    }
    Ok(())
}

/// One consumer's holding and its pool's live free reading.
pub(super) async fn measure_one(
    shared: &Arc<Shared>,
    cfg: &Config,
    t: &Target,
) -> (Option<u64>, Option<u64>) {
    let shared = Arc::clone(shared);
    let t = t.clone();
    let pool = cfg
        .pools
        .iter()
        .find(|p| p.kind == t.kind && p.gpu == t.gpu)
        .cloned();
    tokio::task::spawn_blocking(move || {
        let (Ok(mut probe), Ok(mut m)) = (shared.probe.lock(), shared.measurer.lock()) else {
            return (None, None);
        };
        let held = m.consumers(&mut probe, std::slice::from_ref(&t))[0];
        let free = pool.and_then(|p| m.pools(&mut probe, std::slice::from_ref(&p))[0].free);
        (held, free)
    })
    .await
    .unwrap_or((None, None))
}
