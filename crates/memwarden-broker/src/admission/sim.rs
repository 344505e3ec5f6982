//! A replay of synthetic traffic through the admission decisions on a made-up clock: how many
//! swaps a policy makes, how long requests wait and how long the pool sits loading, with no
//! server, no GPU and no I/O. The owner's round (decide, order the queue, hold victims still
//! in demand, evict, load, grant) is followed step for step, with loads and unloads taking the
//! times a trace gives. The `demand` benchmark reports it; tests hold the policy to it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::{
    ConsumerState, Decision, DemandState, Phase, PoolState, Wait, decide, held_back, queue_order,
};

pub mod traces;

/// How often the owner decides again while requests wait and nothing else happens.
const TICK_MS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// First come, first served, and the least recently used makes room: a plain model swapper.
    Lru,
    /// Recency only: runnable requests first, a victim still in use held, least recently used
    /// victims (the broker before demand-aware eviction).
    Recency,
    /// Demand-aware eviction, `min_residency` and `priority`, on top of recency's queue order.
    Demand,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Lru => "LRU, first come first served",
            Policy::Recency => "recency (runnable first, in-use held)",
            Policy::Demand => "demand-aware",
        }
    }
}

/// A consumer of the trace.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: &'static str,
    pub need: u64,
    pub load_ms: u64,
    pub unload_ms: u64,
    pub max_concurrent: u32,
    pub priority: i32,
    pub min_residency_ms: u64,
    pub coexist_with: Vec<usize>,
    /// A batch job under a lease: holds its memory only while it runs.
    pub ephemeral: bool,
}

/// One request of a client: sent `after_ms` after the client's previous one was answered (or
/// after the client starts), running `work_ms` once granted.
#[derive(Debug, Clone)]
pub struct Step {
    pub model: usize,
    pub after_ms: u64,
    pub work_ms: u64,
}

/// A client sends its steps one after the other: an agent, a user, a batch job.
#[derive(Debug, Clone)]
pub struct Client {
    pub start_ms: u64,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Trace {
    pub name: &'static str,
    pub capacity: u64,
    pub max_wait_ms: u64,
    pub models: Vec<Model>,
    pub clients: Vec<Client>,
}

/// What a replay came to.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub requests: u64,
    /// Consumers unloaded to make room for another.
    pub swaps: u64,
    pub loads: u64,
    /// Requests that waited `max_wait` and were answered 503.
    pub timeouts: u64,
    /// Requests answered 507.
    pub refused: u64,
    /// Time spent in loads, all added up.
    pub loading_ms: u64,
    /// How long each request waited for its grant (or its 503), in order.
    pub waits_ms: Vec<u64>,
    /// When the last request was answered.
    pub end_ms: u64,
}

impl Outcome {
    /// The `q` quantile of the waits (nearest rank), 0 when nothing waited.
    pub fn wait_ms(&self, q: f64) -> u64 {
        if self.waits_ms.is_empty() {
            return 0;
        }
        let rank = (q * self.waits_ms.len() as f64).ceil() as usize;
        self.waits_ms[rank.clamp(1, self.waits_ms.len()) - 1]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Send { client: usize },
    Done { client: usize, model: usize },
    Loaded(usize),
    Unloaded(usize),
    Tick,
}

struct Waiting {
    id: u64,
    client: usize,
    consumer: usize,
    since: u64,
}

struct Sim<'a> {
    trace: &'a Trace,
    policy: Policy,
    pool: PoolState,
    cons: Vec<ConsumerState>,
    queue: Vec<Waiting>,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    /// Each client's step under way.
    next: Vec<usize>,
    tick_pending: bool,
    out: Outcome,
}

/// Replays `trace` under `policy` until every client is done.
pub fn replay(trace: &Trace, policy: Policy) -> Outcome {
    let mut sim = Sim::new(trace, policy);
    for (k, c) in trace.clients.iter().enumerate() {
        if let Some(s) = c.steps.first() {
            sim.at(c.start_ms + s.after_ms, Ev::Send { client: k });
        }
    }
    while let Some(Reverse((t, _, ev))) = sim.events.pop() {
        sim.apply(t, ev);
        // Whatever happens at the same moment is handled before deciding once, as the owner
        // handles the messages that arrived together.
        while let Some(Reverse((u, _, ev))) = sim.events.peek().copied()
            && u == t
        {
            sim.events.pop();
            sim.apply(t, ev);
        }
        sim.schedule(t);
        if !sim.queue.is_empty() && !sim.tick_pending {
            sim.tick_pending = true;
            sim.at(t + TICK_MS, Ev::Tick);
        }
    }
    sim.out.waits_ms.sort_unstable();
    sim.out
}

impl<'a> Sim<'a> {
    fn new(trace: &'a Trace, policy: Policy) -> Sim<'a> {
        let cons = (trace.models.iter())
            .map(|m| ConsumerState {
                pool: 0,
                phase: Phase::Unloaded,
                stuck: false,
                need: m.need,
                measured: None,
                in_flight: 0,
                max_concurrent: m.max_concurrent,
                last_used: None,
                last_started: None,
                evictable: true,
                ephemeral: m.ephemeral,
                coexist_with: m.coexist_with.clone(),
                demand: DemandState::default(),
            })
            .collect();
        Sim {
            trace,
            policy,
            pool: PoolState {
                capacity: Some(trace.capacity),
                ..PoolState::default()
            },
            cons,
            queue: Vec::new(),
            events: BinaryHeap::new(),
            seq: 0,
            next: vec![0; trace.clients.len()],
            tick_pending: false,
            out: Outcome::default(),
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq, ev)));
    }

    fn step_of(&self, client: usize) -> &'a Step {
        &self.trace.clients[client].steps[self.next[client]]
    }

    /// Client `k`'s request was answered at `t`: its next one follows.
    fn advance(&mut self, k: usize, t: u64) {
        self.out.end_ms = self.out.end_ms.max(t);
        self.next[k] += 1;
        if let Some(s) = self.trace.clients[k].steps.get(self.next[k]) {
            self.at(t + s.after_ms, Ev::Send { client: k });
        }
    }

    fn apply(&mut self, t: u64, ev: Ev) {
        match ev {
            Ev::Send { client } => {
                let c = self.step_of(client).model;
                self.seq += 1;
                self.queue.push(Waiting {
                    id: self.seq,
                    client,
                    consumer: c,
                    since: t,
                });
                self.out.requests += 1;
                if self.policy == Policy::Demand {
                    self.cons[c].demand.recent.add(t, 1);
                }
            }
            Ev::Done { client, model } => {
                let cs = &mut self.cons[model];
                cs.in_flight -= 1;
                cs.last_used = Some(t);
                if cs.in_flight == 0 && self.trace.models[model].ephemeral {
                    cs.phase = Phase::Unloaded;
                }
                self.advance(client, t);
            }
            Ev::Loaded(c) => {
                let m = &self.trace.models[c];
                self.cons[c].phase = Phase::Loaded;
                self.pool.promised -= m.need;
                self.out.loads += 1;
                self.out.loading_ms += m.load_ms;
                if self.policy == Policy::Demand {
                    self.cons[c].demand.reload_ms = Some(m.load_ms);
                    self.cons[c].demand.loaded_at = Some(t);
                }
            }
            Ev::Unloaded(c) => self.cons[c].phase = Phase::Unloaded,
            Ev::Tick => self.tick_pending = false,
        }
    }

    /// The owner's round: requests past `max_wait` leave with a 503, the others are ordered
    /// and each is decided for.
    fn schedule(&mut self, t: u64) {
        let max_wait = self.trace.max_wait_ms;
        let (expired, kept): (Vec<Waiting>, Vec<Waiting>) =
            (self.queue.drain(..)).partition(|w| t - w.since >= max_wait);
        self.queue = kept;
        for w in expired {
            self.out.timeouts += 1;
            self.out.waits_ms.push(t - w.since);
            self.advance(w.client, t);
        }
        if self.policy == Policy::Demand {
            for (c, m) in self.trace.models.iter().enumerate() {
                let d = &mut self.cons[c].demand;
                d.queued = 0;
                d.priority = m.priority;
                d.min_residency_ms = m.min_residency_ms;
            }
            for w in &self.queue {
                self.cons[w.consumer].demand.queued += 1;
            }
        }
        let waiting: Vec<(usize, Duration)> = (self.queue.iter())
            .map(|w| (w.consumer, Duration::from_millis(t - w.since)))
            .collect();
        let order = match self.policy {
            Policy::Lru => (0..waiting.len()).collect(),
            Policy::Recency | Policy::Demand => {
                let decision: Vec<Decision> = (0..self.cons.len())
                    .map(|c| decide(&self.pool, &self.cons, c))
                    .collect();
                queue_order(
                    &waiting,
                    Duration::from_millis(max_wait),
                    |c| decision[c] == Decision::Run,
                    |i| matches!(decision[waiting[i].0], Decision::Wait(Wait::Stuck { .. })),
                    |c| self.cons[c].demand.priority,
                )
            }
        };
        let ids: Vec<u64> = order.iter().map(|&i| self.queue[i].id).collect();
        for id in ids {
            if let Some(i) = self.queue.iter().position(|w| w.id == id) {
                let granted = self.step(i, t);
                // First come, first served: nobody passes a request that waits.
                if self.policy == Policy::Lru && !granted {
                    break;
                }
            }
        }
    }

    /// Decides for the request at `i` and acts; true when it was granted.
    fn step(&mut self, i: usize, t: u64) -> bool {
        let (c, since) = (self.queue[i].consumer, self.queue[i].since);
        match decide(&self.pool, &self.cons, c) {
            Decision::Run => {
                let w = self.queue.remove(i);
                self.cons[c].in_flight += 1;
                self.cons[c].last_started = Some(t);
                self.out.waits_ms.push(t - since);
                let work = self.step_of(w.client).work_ms;
                self.at(
                    t + work,
                    Ev::Done {
                        client: w.client,
                        model: c,
                    },
                );
                return true;
            }
            Decision::Load => {
                self.cons[c].phase = Phase::Loading;
                self.pool.promised += self.cons[c].need;
                self.at(t + self.trace.models[c].load_ms, Ev::Loaded(c));
            }
            Decision::Evict(victims) => {
                let max_wait = Duration::from_millis(self.trace.max_wait_ms);
                if self.policy != Policy::Lru
                    && held_back(&self.cons, &victims, since, t, max_wait).is_some()
                {
                    return false;
                }
                for v in victims {
                    self.cons[v].phase = Phase::Unloading;
                    self.out.swaps += 1;
                    self.at(t + self.trace.models[v].unload_ms, Ev::Unloaded(v));
                }
            }
            Decision::Never { .. } => {
                let w = self.queue.remove(i);
                self.out.refused += 1;
                self.advance(w.client, t);
            }
            Decision::Wait(_) => {}
        }
        false
    }
}

#[cfg(test)]
mod tests;
