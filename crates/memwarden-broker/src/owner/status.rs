//! What the owner tells of its state, and how it takes a new configuration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{AdmitError, ConsumerRt, Owner, PoolRt, Promise, Waiter, consumer_state, pool_rt};
use crate::admission::{self, ConsumerState};
use crate::config::Config;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub pools: Vec<PoolStatus>,
    pub consumers: Vec<ConsumerStatus>,
    pub counters: Counters,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub kind: &'static str,
    pub gpu: Option<u32>,
    pub total_bytes: Option<u64>,
    pub free_bytes: u64,
    pub live_free_bytes: Option<u64>,
    pub promised_bytes: u64,
    pub cushion_bytes: u64,
    pub available_bytes: u64,
    pub capacity_bytes: Option<u64>,
    pub queue_length: usize,
    pub oldest_queued_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    pub name: String,
    pub pool: String,
    /// loaded, loading, unloaded, unloading, sleeping or stuck.
    pub state: &'static str,
    pub declared_bytes: u64,
    pub declared_source: &'static str,
    pub measured_bytes: Option<u64>,
    /// What the broker counts it as holding now.
    pub resident_bytes: u64,
    /// measured minus declared, when measured: how far off the declaration is.
    pub declared_error_bytes: Option<i64>,
    pub last_used_seconds_ago: Option<f64>,
    pub in_flight: u32,
    pub queued: usize,
    pub loads: u64,
    pub last_load_seconds: Option<f64>,
    pub self_managed: bool,
    pub pinned: bool,
    /// 1 (weights in host RAM) or 2 (weights dropped) while asleep or going to sleep.
    pub sleep_level: Option<u8>,
    /// What its processes hold in host RAM while asleep, as measured.
    pub sleep_host_bytes: Option<u64>,
    pub sleeps: u64,
    pub wakes: u64,
    pub last_wake_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub evictions: u64,
    pub idle_unloads: u64,
    pub loads: u64,
    pub load_failures: u64,
    pub load_seconds_total: f64,
    pub sleeps: u64,
    pub wakes: u64,
    pub wake_seconds_total: f64,
    pub unload_failures: u64,
    pub stuck: u64,
    pub served: u64,
    pub rejected: u64,
    pub rejected_queue_full: u64,
    pub rejected_timeout: u64,
    pub rejected_never_fits: u64,
    pub cancelled: u64,
    pub upstream_errors: u64,
    pub oldest_queued_seconds: f64,
}

impl Owner {
    pub(super) fn status(&self) -> Status {
        let now = Instant::now();
        let mut oldest_all = 0f64;
        let pools = self
            .cfg
            .pools
            .iter()
            .enumerate()
            .map(|(p, cfg)| {
                let st = &self.pools[p].state;
                let oldest = self.pools[p]
                    .queue
                    .iter()
                    .map(|w| (now - w.since).as_secs_f64())
                    .fold(0f64, f64::max);
                oldest_all = oldest_all.max(oldest);
                PoolStatus {
                    name: cfg.name.clone(),
                    kind: cfg.kind.as_str(),
                    gpu: cfg.gpu,
                    total_bytes: st.capacity.or(st.live_total),
                    free_bytes: admission::pool_free(st, p, &self.cons),
                    live_free_bytes: st.live_free,
                    promised_bytes: st.promised,
                    cushion_bytes: st.cushion,
                    available_bytes: admission::available(st, p, &self.cons),
                    capacity_bytes: st.capacity,
                    queue_length: self.pools[p].queue.len(),
                    oldest_queued_seconds: oldest,
                }
            })
            .collect();
        let consumers = self
            .cfg
            .consumers
            .iter()
            .enumerate()
            .map(|(c, cfg)| {
                let cs = &self.cons[c];
                let (in_flight, last_used) = self.in_flight(c);
                ConsumerStatus {
                    name: cfg.name.clone(),
                    pool: self.cfg.pools[cfg.pool].name.clone(),
                    state: if cs.stuck { "stuck" } else { cs.phase.as_str() },
                    declared_bytes: cfg.need,
                    declared_source: match cfg.need_source {
                        crate::config::NeedSource::Resident => "resident",
                        crate::config::NeedSource::Estimate { .. } => "estimate",
                    },
                    measured_bytes: cs.measured,
                    resident_bytes: cs.held(),
                    declared_error_bytes: cs.measured.map(|m| m as i64 - cfg.need as i64),
                    last_used_seconds_ago: last_used.map(|ms| {
                        now.saturating_duration_since(self.epoch + Duration::from_millis(ms))
                            .as_secs_f64()
                    }),
                    in_flight,
                    queued: self.pools[cs.pool]
                        .queue
                        .iter()
                        .filter(|w| w.consumer == c)
                        .count(),
                    loads: self.rt[c].loads,
                    last_load_seconds: self.rt[c].last_load.map(|d| d.as_secs_f64()),
                    self_managed: cfg.self_managed,
                    pinned: cfg.pinned,
                    sleep_level: self.rt[c].sleep.level(),
                    sleep_host_bytes: (cs.phase == crate::admission::Phase::Sleeping)
                        .then(|| self.rt[c].sleep.host())
                        .flatten(),
                    sleeps: self.rt[c].sleep.sleeps,
                    wakes: self.rt[c].sleep.wakes,
                    last_wake_seconds: self.rt[c].sleep.last_wake.map(|d| d.as_secs_f64()),
                }
            })
            .collect();
        let mut counters = self.counters.clone();
        counters.oldest_queued_seconds = oldest_all;
        counters.served += self
            .gates
            .iter()
            .flatten()
            .map(|g| g.peek().admitted)
            .sum::<u64>();
        Status {
            pools,
            consumers,
            counters,
        }
    }

    /// A new configuration: consumers and pools keep their state by name; requests for a
    /// consumer that is gone fail; work in flight for it finishes.
    pub(super) fn reload(&mut self, cfg: Config) {
        let cfg = Arc::new(cfg);
        let mut pools: Vec<PoolRt> = cfg.pools.iter().map(pool_rt).collect();
        let mut cons: Vec<ConsumerState> = cfg.consumers.iter().map(consumer_state).collect();
        let mut rt = vec![ConsumerRt::default(); cfg.consumers.len()];
        let map: Vec<Option<usize>> = self
            .cfg
            .consumers
            .iter()
            .map(|c| cfg.consumer_index(&c.name))
            .collect();
        for (old, new) in map.iter().enumerate() {
            let Some(new) = *new else { continue };
            let o = &self.cons[old];
            let n = &mut cons[new];
            n.phase = o.phase;
            n.stuck = o.stuck;
            n.measured = o.measured;
            n.in_flight = o.in_flight;
            n.last_used = o.last_used;
            n.last_started = o.last_started;
            n.demand.recent = o.demand.recent;
            rt[new] = self.rt[old].clone();
        }
        for (p, pool) in self.pools.iter_mut().enumerate() {
            for l in pool.ledger.drain(..) {
                if let Some(n) = map[l.consumer] {
                    pools[cfg.consumers[n].pool]
                        .ledger
                        .push(Promise { consumer: n, ..l });
                }
            }
            if let Some(np) = cfg
                .pools
                .iter()
                .position(|x| x.name == self.cfg.pools[p].name)
            {
                pools[np].state.live_free = pool.state.live_free;
                pools[np].state.live_total = pool.state.live_total;
            }
            for w in pool.queue.drain(..) {
                match map[w.consumer] {
                    Some(n) => pools[cfg.consumers[n].pool]
                        .queue
                        .push_back(Waiter { consumer: n, ..w }),
                    None => {
                        let _ = w.reply.send(Err(AdmitError::Gone(
                            self.cfg.consumers[w.consumer].name.clone(),
                        )));
                    }
                }
            }
        }
        for v in self.active.values_mut() {
            *v = v.and_then(|c| map[c]);
        }
        for (c, _) in self.adopted.values_mut() {
            *c = c.and_then(|c| map[c]);
        }
        self.gates = vec![None; cfg.consumers.len()];
        self.shared.gates.clear();
        for pool in pools.iter_mut() {
            pool.update_promised();
        }
        // An operator waiting on a consumer that is gone is told the broker did not answer.
        self.retries
            .retain(|name, _| cfg.consumer_index(name).is_some());
        self.cfg = cfg;
        self.pools = pools;
        self.cons = cons;
        self.rt = rt;
        for c in (0..self.cons.len()).filter(|&c| !map.contains(&Some(c))) {
            self.probe(c);
        }
        tracing::info!("configuration reloaded");
    }
}
