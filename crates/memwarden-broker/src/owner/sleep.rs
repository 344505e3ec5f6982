//! Sleeping and waking servers that can (vLLM's sleep mode, SGLang's memory release): an
//! eviction that keeps the process, verified by measurement as an unload is, and counted in
//! host RAM while it lasts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{give_back, measure_one, release};
use super::{Found, Msg, Owner, Shared, UnloadOutcome};
use crate::admission::sleep::{Eviction, eviction, ram_victims, sleepers_to_drop};
use crate::admission::{self, Phase, Wait};
use crate::config::{ConsumerConfig, HOST_CUSHION, PoolKind, Route, SleepEngine};
use crate::lifecycle;
use crate::measure::{Sample, Target};
use crate::verify::trusted;

/// How long a sleep or wake route may take to answer: a level-1 sleep copies the weights to
/// host RAM, tens of GiB at a few GiB/s.
const SLEEP_ROUTE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a vLLM server is given to say whether it sleeps when the broker first sees it.
const IS_SLEEPING_TIMEOUT: Duration = Duration::from_secs(2);

/// A consumer's sleep, as far as the broker knows.
#[derive(Debug, Default, Clone)]
pub(super) struct SleepRt {
    /// The level of the sleep under way or held (1 or 2); 0 while awake.
    level: u8,
    /// The unload under way is a sleep.
    going: bool,
    /// The load under way is a wake.
    waking: bool,
    /// The unload under way takes a sleeper out of host RAM for good.
    dropping: bool,
    /// Its server was asked to let its host RAM go and did not: not asked again while asleep.
    undroppable: bool,
    /// Found asleep when the broker started: the level it was put to sleep at is not known,
    /// so it is counted as level 1 and its wake reads its weights again.
    recovered: bool,
    /// What its processes were measured to hold in host RAM while asleep.
    host: Option<u64>,
    pub(super) sleeps: u64,
    pub(super) wakes: u64,
    pub(super) last_wake: Option<Duration>,
}

impl SleepRt {
    /// What it holds (or is about to) in host RAM beyond what it holds awake, as counted in
    /// the `ram` pool: its measurement once asleep, its declared `sleep_ram` until then.
    fn in_host(&self, phase: Phase, ram: u64) -> u64 {
        let asleep = matches!(phase, Phase::Sleeping)
            || ((self.going || self.dropping) && phase == Phase::Unloading)
            || (self.waking && phase == Phase::Loading);
        if !asleep || self.level == 0 {
            return 0;
        }
        let declared = if self.level == 1 { ram } else { 0 };
        self.host.unwrap_or(declared)
    }

    /// Awake again (or gone): its counts kept, the rest cleared.
    pub(super) fn awake(&self) -> SleepRt {
        SleepRt {
            sleeps: self.sleeps,
            wakes: self.wakes,
            last_wake: self.last_wake,
            ..SleepRt::default()
        }
    }

    /// 1 or 2 while asleep or going to sleep.
    pub(super) fn level(&self) -> Option<u8> {
        (self.level > 0 && !self.recovered).then_some(self.level)
    }

    pub(super) fn host(&self) -> Option<u64> {
        self.host
    }
}

impl Owner {
    /// The pool that counts what sleepers hold in host RAM: the first `ram` pool.
    fn host_pool(&self) -> Option<usize> {
        self.cfg.pools.iter().position(|p| p.kind == PoolKind::Ram)
    }

    /// Counts what sleepers hold in host RAM in the `ram` pool, beside its own consumers.
    pub(super) fn count_sleepers(&mut self) {
        let Some(h) = self.host_pool() else { return };
        let asleep = (0..self.cons.len())
            .filter_map(|c| {
                let ram = self.cfg.consumers[c].sleep.as_ref()?.ram;
                Some(self.rt[c].sleep.in_host(self.cons[c].phase, ram))
            })
            .sum();
        self.pools[h].state.asleep = asleep;
    }

    /// What host RAM can still take: the `ram` pool's available room; without one,
    /// `MemAvailable` less a cushion and less what sleeps under way will put there.
    fn host_room(&self) -> Option<u64> {
        if let Some(h) = self.host_pool() {
            return Some(admission::available(&self.pools[h].state, h, &self.cons));
        }
        let coming: u64 = (0..self.cons.len())
            .filter(|&c| self.rt[c].sleep.going && self.cons[c].phase == Phase::Unloading)
            .filter_map(|c| self.cfg.consumers[c].sleep.as_ref().map(|s| s.ram))
            .sum();
        self.host_available
            .map(|a| a.saturating_sub(HOST_CUSHION).saturating_sub(coming))
    }

    /// Lets an idle consumer go after its `idle_ttl`: to sleep where it can (as an eviction
    /// would choose), else unloaded.
    pub(super) fn idle_release(&mut self, c: usize) {
        if self.cfg.consumers[c].sleep.is_none() {
            return self.start_unload(c, false);
        }
        self.start_evict(c, None);
        self.rt[c].evicting = false;
    }

    /// Makes victim `v` give its room back: a sleep where host RAM can take its weights (or a
    /// deep sleep where it cannot), else an unload. For a request queued at `queued_at`, host
    /// RAM's own consumers may first be evicted to take its weights ([`Owner::ram_makes_room`]).
    pub(super) fn start_evict(&mut self, v: usize, queued_at: Option<u64>) {
        let room = self.host_room();
        if queued_at.is_some_and(|q| self.ram_makes_room(v, room, q)) {
            return;
        }
        let cfg = &self.cfg.consumers[v];
        let how = eviction(
            cfg.sleep.as_ref().map(|s| s.ram),
            room,
            cfg.sleep.as_ref().is_some_and(|s| s.deep.is_some()),
            cfg.can_unload(),
        );
        match how {
            Eviction::Unload => self.start_unload(v, true),
            Eviction::Sleep => self.start_sleep(v, 1),
            Eviction::DeepSleep => self.start_sleep(v, 2),
            Eviction::CannotNow => {
                tracing::debug!(consumer = %cfg.name, "host RAM cannot take its weights, and it has no deep sleep and no unload: left awake");
            }
        }
    }

    /// Where the `ram` pool lacks room for sleeper `v`'s weights: evicts the consumers of that
    /// pool that are worth it ([`ram_victims`]), or waits for evictions under way there. True
    /// when `v` is left awake for now, to sleep once the room is back; false when host RAM
    /// does not make room and `v` gives its own back as it can without it.
    fn ram_makes_room(&mut self, v: usize, room: Option<u64>, queued_at: u64) -> bool {
        let (Some(h), Some(ram)) = (
            self.host_pool(),
            self.cfg.consumers[v].sleep.as_ref().map(|s| s.ram),
        ) else {
            return false;
        };
        let room = room.unwrap_or(0);
        if ram <= room {
            return false;
        }
        // Memory on its way back in host RAM is counted before anything else is evicted.
        if (0..self.cons.len())
            .any(|c| self.cons[c].pool == h && self.cons[c].phase == Phase::Unloading)
        {
            return true;
        }
        self.refresh_demand(h);
        let now = self.now_ms(Instant::now());
        let wake = self.rt[v].sleep.last_wake.map(|d| d.as_millis() as u64);
        let Some(victims) = ram_victims(&self.cons, h, v, ram - room, wake, queued_at, now) else {
            return false;
        };
        for r in victims {
            tracing::info!(
                consumer = %self.cfg.consumers[r].name,
                sleeper = %self.cfg.consumers[v].name,
                "evicted from host RAM so that a server can sleep there rather than unload"
            );
            self.start_unload(r, true);
        }
        true
    }

    fn start_sleep(&mut self, c: usize, level: u8) {
        let cfg = Arc::clone(&self.cfg);
        let consumer = cfg.consumers[c].clone();
        let Some(sleep) = consumer.sleep.clone() else {
            return;
        };
        let pool = cfg.pools[consumer.pool].clone();
        self.close_gate(c);
        self.cons[c].phase = Phase::Unloading;
        self.rt[c].generation += 1;
        self.rt[c].evicting = true;
        self.rt[c].sleep.going = true;
        self.rt[c].sleep.level = level;
        self.rt[c].sleep.host = None;
        let generation = self.rt[c].generation;
        let before = self.cons[c].held();
        let tx = self.tx.clone();
        let shared = Arc::clone(&self.shared);
        tracing::info!(consumer = %consumer.name, level, "putting to sleep");
        tokio::spawn(async move {
            let route = match level {
                1 => &sleep.sleep,
                _ => sleep.deep.as_ref().unwrap_or(&sleep.sleep),
            };
            let act = call(&shared, &consumer, std::slice::from_ref(route));
            let outcome = give_back(&shared, &cfg, &consumer, &pool, before, act).await;
            // What it holds in host RAM now: its weights, at level 1.
            let host = match outcome {
                UnloadOutcome::Freed { .. } => {
                    let t = Target {
                        kind: PoolKind::Ram,
                        gpu: None,
                        ..shared.target(&cfg, &consumer)
                    };
                    measure_one(&shared, &cfg, &t).await.0
                }
                _ => None,
            };
            let _ = tx.send(Msg::SleepDone {
                consumer: consumer.name.clone(),
                generation,
                outcome,
                host,
            });
        });
        // The next decision in this round sees its weights on their way to host RAM.
        self.count_sleepers();
    }

    pub(super) fn sleep_done(
        &mut self,
        name: &str,
        generation: u64,
        outcome: UnloadOutcome,
        host: Option<u64>,
    ) {
        let Some(c) = self.index(name) else { return };
        if self.rt[c].generation != generation || self.cons[c].phase != Phase::Unloading {
            return;
        }
        if std::mem::take(&mut self.rt[c].sleep.dropping) {
            return self.dropped(c, outcome);
        }
        self.rt[c].sleep.going = false;
        match outcome {
            UnloadOutcome::Freed { remaining, took } => {
                let level = self.rt[c].sleep.level;
                tracing::info!(
                    consumer = %name,
                    level,
                    seconds = crate::human::seconds(took),
                    host_bytes = host,
                    "asleep, its pool's memory back"
                );
                self.cons[c].phase = Phase::Sleeping;
                self.cons[c].measured = remaining;
                self.cons[c].stuck = false;
                self.rt[c].loaded_at = None;
                self.rt[c].retry_at = None;
                self.rt[c].sleep.host = host;
                self.rt[c].sleep.sleeps += 1;
                self.counters.sleeps += 1;
                if self.rt[c].evicting {
                    self.counters.evictions += 1;
                } else {
                    self.counters.idle_unloads += 1;
                }
            }
            // Answered and kept (or refused): stuck, as after such an unload.
            outcome => {
                self.rt[c].sleep.level = 0;
                self.unload_done(name, generation, outcome);
            }
        }
    }

    /// Takes sleepers out of host RAM for good (unloads them) where a request in the `ram`
    /// pool waits for room that only they hold: least recently used first, one round at a
    /// time.
    pub(super) fn drop_sleepers(&mut self) {
        let Some(h) = self.host_pool() else { return };
        let busy = (0..self.cons.len()).any(|c| self.rt[c].sleep.dropping);
        let short_by = self.pools[h].queue.iter().find_map(|w| match w.last_wait {
            Some(Wait::NoRoom { short_by }) => Some(short_by),
            _ => None,
        });
        let Some(short_by) = short_by.filter(|_| !busy) else {
            return;
        };
        let sleepers: Vec<(usize, Option<u64>, u64)> = (0..self.cons.len())
            .filter(|&c| {
                let cfg = &self.cfg.consumers[c];
                self.cons[c].phase == Phase::Sleeping
                    && self.cons[c].in_flight == 0
                    && cfg.can_unload()
                    && !cfg.pinned
                    && !self.rt[c].sleep.undroppable
            })
            .filter_map(|c| {
                let ram = self.cfg.consumers[c].sleep.as_ref()?.ram;
                let holds = self.rt[c].sleep.in_host(Phase::Sleeping, ram);
                Some((c, self.cons[c].last_used, holds))
            })
            .collect();
        for c in sleepers_to_drop(&sleepers, short_by).unwrap_or_default() {
            self.start_drop(c, h);
        }
    }

    /// Unloads sleeper `c` and verifies that its host RAM, counted in pool `h`, came back.
    fn start_drop(&mut self, c: usize, h: usize) {
        let cfg = Arc::clone(&self.cfg);
        let consumer = cfg.consumers[c].clone();
        let host_pool = cfg.pools[h].clone();
        let ram = consumer.sleep.as_ref().map_or(0, |s| s.ram);
        let before = self.rt[c].sleep.in_host(Phase::Sleeping, ram);
        self.cons[c].phase = Phase::Unloading;
        self.rt[c].generation += 1;
        self.rt[c].evicting = true;
        self.rt[c].sleep.dropping = true;
        let generation = self.rt[c].generation;
        let tx = self.tx.clone();
        let shared = Arc::clone(&self.shared);
        tracing::info!(consumer = %consumer.name, "host RAM is needed: unloading a sleeper");
        tokio::spawn(async move {
            let act = release(&shared, &consumer);
            let outcome = give_back(&shared, &cfg, &consumer, &host_pool, before, act).await;
            let _ = tx.send(Msg::SleepDone {
                consumer: consumer.name.clone(),
                generation,
                outcome,
                host: None,
            });
        });
    }

    /// A sleeper's unload is done: gone from host RAM, or still asleep there if it kept it.
    fn dropped(&mut self, c: usize, outcome: UnloadOutcome) {
        let name = &self.cfg.consumers[c].name;
        match outcome {
            UnloadOutcome::Freed { .. } => {
                tracing::info!(consumer = %name, "unloaded from its sleep, host RAM back");
                self.cons[c].phase = Phase::Unloaded;
                self.cons[c].measured = None;
                self.rt[c].sleep = self.rt[c].sleep.awake();
                self.counters.evictions += 1;
            }
            UnloadOutcome::Stuck { .. } | UnloadOutcome::Failed(_) => {
                tracing::warn!(consumer = %name, "a sleeper asked to unload kept its host RAM: left asleep");
                self.cons[c].phase = Phase::Sleeping;
                self.rt[c].sleep.undroppable = true;
            }
        }
    }

    /// Whether consumer `c`'s server is asked, when first seen, whether it sleeps: a vLLM
    /// server the broker does not start (one it starts is stopped with it), whose port is
    /// known.
    pub(super) fn asks_if_asleep(&self, c: usize) -> bool {
        let cfg = &self.cfg.consumers[c];
        cfg.sleep
            .as_ref()
            .is_some_and(|s| s.engine == SleepEngine::Vllm)
            && cfg.start.is_none()
            && self.shared.upstream(cfg).is_some()
    }

    /// Asks `c`'s server `GET /is_sleeping`, within a bound; one that sleeps has its host RAM
    /// measured. Else, one that is up whenever its server is is asked whether it is up.
    pub(super) fn ask_if_asleep(&self, c: usize, generation: u64) {
        let cfg = Arc::clone(&self.cfg);
        let consumer = cfg.consumers[c].clone();
        let up_when = super::upkeep::up_when_its_server_is(&consumer);
        let tx = self.tx.clone();
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let asked = match shared.upstream(&consumer) {
                Some(up) => {
                    crate::sleep::is_sleeping(&shared.client, &up, IS_SLEEPING_TIMEOUT).await
                }
                None => Err("no upstream".into()),
            };
            let found = match asked {
                Ok(true) => {
                    let t = Target {
                        kind: PoolKind::Ram,
                        gpu: None,
                        ..shared.target(&cfg, &consumer)
                    };
                    Found::Asleep {
                        host: measure_one(&shared, &cfg, &t).await.0,
                    }
                }
                Ok(false) if up_when => Found::Up,
                Err(why) if up_when => {
                    tracing::debug!(consumer = %consumer.name, "{why}");
                    let deadline = Instant::now();
                    match lifecycle::wait_ready(&shared.client, &consumer, deadline, None).await {
                        Ok(()) => Found::Up,
                        Err(_) => Found::Down,
                    }
                }
                _ => Found::Down,
            };
            let _ = tx.send(Msg::Probed {
                consumer: consumer.name.clone(),
                generation,
                found,
            });
        });
    }

    /// `c`'s server sleeps, left so by an earlier broker: it is counted asleep, in host RAM
    /// (by `host` once measured, its `sleep_ram` until then), and a request wakes it.
    pub(super) fn found_asleep(&mut self, c: usize, host: Option<u64>) {
        tracing::info!(
            consumer = %self.cfg.consumers[c].name,
            host_bytes = host,
            "its server sleeps: counted as sleeping, and woken when asked for"
        );
        self.cons[c].phase = Phase::Sleeping;
        self.cons[c].measured = None;
        self.rt[c].sleep = SleepRt {
            level: 1,
            recovered: true,
            host,
            ..self.rt[c].sleep.awake()
        };
    }

    /// Whether bringing `c` back is a wake: it is asleep, or it can sleep and has no other
    /// way to be loaded (its server runs on, asleep or not).
    pub(super) fn wakes_instead(&self, c: usize) -> bool {
        let cfg = &self.cfg.consumers[c];
        self.cons[c].phase == Phase::Sleeping
            || (cfg.sleep.is_some() && cfg.start.is_none() && cfg.load.is_none())
    }

    pub(super) fn start_wake(&mut self, c: usize) {
        let cfg = self.cfg.consumers[c].clone();
        let Some(sleep) = cfg.sleep.clone() else {
            // A reload took its sleep away: what is left is a load.
            self.cons[c].phase = Phase::Unloaded;
            self.rt[c].sleep = self.rt[c].sleep.awake();
            return self.start_load(c);
        };
        let generation = self.begin_load(c);
        self.rt[c].sleep.waking = true;
        let tx = self.tx.clone();
        let shared = Arc::clone(&self.shared);
        let level = self.rt[c].sleep.level;
        let recovered = self.rt[c].sleep.recovered;
        tracing::info!(consumer = %cfg.name, level, "waking");
        tokio::spawn(async move {
            let started = Instant::now();
            let mut routes = vec![sleep.wake.clone()];
            // Its weights were dropped (or may have been): it reads them again.
            if level == 2 || recovered {
                routes.extend(sleep.reload.iter().cloned());
            }
            let deadline = started + cfg.load_timeout;
            let result = match call(&shared, &cfg, &routes).await {
                Ok(()) => lifecycle::wait_ready(&shared.client, &cfg, deadline, None).await,
                Err(why) => Err(why),
            };
            let _ = tx.send(Msg::LoadDone {
                consumer: cfg.name.clone(),
                generation,
                result: result.map(|()| started.elapsed()),
            });
        });
    }

    /// Counts a finished load, or wake: each has its own counters and times.
    pub(super) fn count_load(&mut self, c: usize, took: Duration) {
        let s = &mut self.rt[c].sleep;
        if s.waking {
            *s = SleepRt {
                wakes: s.wakes + 1,
                last_wake: Some(took),
                ..s.awake()
            };
            self.counters.wakes += 1;
            self.counters.wake_seconds_total += took.as_secs_f64();
        } else {
            self.rt[c].loads += 1;
            self.rt[c].last_load = Some(took);
            self.counters.loads += 1;
            self.counters.load_seconds_total += took.as_secs_f64();
        }
    }

    /// A reading's part for sleepers: what each holds in host RAM, and what it keeps in its
    /// pool (its runtime's context).
    pub(super) fn sleep_reading(&mut self, s: &Sample) {
        self.host_available = s.host_available;
        if s.host.len() != self.cons.len() || s.consumers.len() != self.cons.len() {
            return;
        }
        for c in 0..self.cons.len() {
            if self.cons[c].phase != Phase::Sleeping {
                continue;
            }
            if let Some(h) = s.host[c] {
                self.rt[c].sleep.host = Some(h);
            }
            if let Some(m) = s.consumers[c] {
                let kind = self.cfg.pools[self.cons[c].pool].kind;
                // A figure of nothing on a GPU is believed of a sleeper: it let go of it.
                self.cons[c].measured = trusted(m, kind, true);
            }
        }
    }
}

/// Calls a consumer's sleep or wake routes in order.
async fn call(shared: &Shared, c: &ConsumerConfig, routes: &[Route]) -> Result<(), String> {
    // The port of its current start, where it is given one at each (`${PORT}`).
    let Some(up) = shared.upstream(c) else {
        return Err("no upstream".into());
    };
    for r in routes {
        lifecycle::call_route(&shared.client, &up, r, SLEEP_ROUTE_TIMEOUT).await?;
    }
    Ok(())
}
