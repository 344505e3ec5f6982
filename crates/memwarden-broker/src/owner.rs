//! The state owner: one task holds all of the broker's state; request handlers, the sampler
//! and the load/unload actions talk to it by messages. It never waits on I/O itself: loads,
//! unloads and readings run as tasks of their own and report back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memwarden_probe::Probe;
use serde::Serialize;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};

use crate::admission::{self, ConsumerState, Decision, Phase, PoolState, Wait};
use crate::config::{Config, ConsumerConfig, MAX_STUCK_RETRY, PoolConfig, PoolKind, Unload};
use crate::gate::{Count, Gate, Gates};
use crate::lifecycle::{self, HttpClient};
use crate::measure::{Measurer, Sample, Target};

/// Why a request was not admitted; each maps to one HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdmitError {
    #[error("unknown consumer {name:?} (consumers: {known})")]
    Unknown { name: String, known: String },
    #[error("the queue of pool {pool:?} is full ({max} waiting)")]
    QueueFull { pool: String, max: usize },
    #[error("waited {} for {consumer:?} without a turn: {reason}", crate::human::duration(*.waited))]
    Timeout {
        consumer: String,
        waited: Duration,
        reason: String,
    },
    #[error("{0}")]
    NeverFits(String),
    #[error("loading {consumer:?} failed: {why}")]
    LoadFailed { consumer: String, why: String },
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("consumer {0:?} was removed from the configuration")]
    Gone(String),
}

impl AdmitError {
    pub fn status(&self) -> u16 {
        match self {
            AdmitError::Unknown { .. } => 404,
            AdmitError::QueueFull { .. } | AdmitError::Timeout { .. } => 503,
            AdmitError::ShuttingDown => 503,
            AdmitError::NeverFits(_) => 507,
            AdmitError::LoadFailed { .. } => 502,
            AdmitError::Gone(_) => 404,
        }
    }
}

pub type Reply = oneshot::Sender<Result<(), AdmitError>>;

/// The answer to an operator's unload: what happened, or an HTTP status and why not.
pub type AdminReply = oneshot::Sender<Result<String, (u16, String)>>;

#[derive(Debug)]
pub enum Msg {
    Acquire {
        id: u64,
        consumer: String,
        reply: Reply,
    },
    /// The requester went away (granted or not).
    Cancel {
        id: u64,
    },
    /// The work is done.
    Release {
        id: u64,
    },
    /// Work that passed a gate ended after the gate closed.
    GateRelease {
        gate: u64,
    },
    Reading(Sample),
    LoadDone {
        consumer: String,
        generation: u64,
        result: Result<Duration, String>,
    },
    UnloadDone {
        consumer: String,
        generation: u64,
        outcome: UnloadOutcome,
    },
    /// The upstream could not be reached or broke off an answer: check whether it is alive.
    UpstreamFailed {
        consumer: String,
    },
    HealthChecked {
        consumer: String,
        alive: bool,
    },
    Status(oneshot::Sender<Status>),
    Ping(oneshot::Sender<()>),
    AdminUnload {
        consumer: String,
        reply: AdminReply,
    },
    Reload {
        config: Box<Config>,
        reply: oneshot::Sender<()>,
    },
    Shutdown,
    Tick,
}

#[derive(Debug, Clone)]
pub enum UnloadOutcome {
    /// The memory came back (this much is still held).
    Freed {
        remaining: Option<u64>,
        took: Duration,
    },
    /// The unload was answered but the memory stayed.
    Stuck { held: u64 },
    /// The unload itself failed.
    Failed(String),
}

/// What the owner shares with the tasks it starts.
pub struct Shared {
    pub probe: Mutex<Probe>,
    pub measurer: Mutex<Measurer>,
    pub client: HttpClient,
    /// Processes the broker started, by consumer name.
    pub children: Mutex<HashMap<String, Child>>,
    /// The fast path's gates, which the owner opens and closes.
    pub gates: Arc<Gates>,
}

impl Shared {
    pub fn new(probe: Probe) -> Arc<Shared> {
        Arc::new(Shared {
            probe: Mutex::new(probe),
            measurer: Mutex::new(Measurer::default()),
            client: lifecycle::http_client(),
            children: Mutex::new(HashMap::new()),
            gates: Arc::default(),
        })
    }

    /// What to measure for a consumer now: the process group of the process the broker
    /// runs for it, if any.
    pub fn target(&self, cfg: &Config, c: &ConsumerConfig) -> Target {
        let pgid = self
            .children
            .lock()
            .ok()
            .and_then(|m| m.get(&c.name).and_then(|ch| ch.id()))
            .map(|p| p as i32);
        Target::of(cfg, c, pgid)
    }
}

// ---- status ----------------------------------------------------------------------------------

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
    /// loaded, loading, unloaded, unloading or stuck.
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
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub evictions: u64,
    pub idle_unloads: u64,
    pub loads: u64,
    pub load_failures: u64,
    pub load_seconds_total: f64,
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

// ---- the owner -------------------------------------------------------------------------------

struct Waiter {
    id: u64,
    consumer: usize,
    since: Instant,
    reply: Reply,
    last_wait: Option<Wait>,
}

struct Promise {
    consumer: usize,
    bytes: u64,
    /// When the load finished: the promise ends with the first reading begun after it.
    settled_at: Option<Instant>,
}

struct PoolRt {
    state: PoolState,
    queue: VecDeque<Waiter>,
    ledger: Vec<Promise>,
}

impl PoolRt {
    fn update_promised(&mut self) {
        let sum = |settled: bool| -> u64 {
            (self.ledger.iter())
                .filter(|l| !settled || l.settled_at.is_some())
                .map(|l| l.bytes)
                .sum()
        };
        self.state.promised = sum(false);
        self.state.settled = sum(true);
    }
}

#[derive(Default, Clone)]
struct ConsumerRt {
    loads: u64,
    last_load: Option<Duration>,
    loaded_at: Option<Instant>,
    /// Bumped by each load and unload started; a late report of an older one is ignored.
    generation: u64,
    /// The unload under way is an eviction (not an idle or admin unload).
    evicting: bool,
    stuck_held: u64,
    /// When a stuck consumer's unload is next retried by itself, and the wait before that.
    retry_at: Option<Instant>,
    retry_every: Duration,
}

pub struct Owner {
    cfg: Arc<Config>,
    pools: Vec<PoolRt>,
    cons: Vec<ConsumerState>,
    rt: Vec<ConsumerRt>,
    /// Granted work: request id -> consumer index (None once its consumer was removed).
    active: HashMap<u64, Option<usize>>,
    /// The open gate of each consumer, if any.
    gates: Vec<Option<Arc<Gate>>>,
    /// Closed gates that work still runs through: gate id -> (consumer index, how many).
    adopted: HashMap<u64, (Option<usize>, u32)>,
    next_gate: u64,
    /// Operators waiting for the retried unload of a stuck consumer, by its name.
    retries: HashMap<String, AdminReply>,
    counters: Counters,
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    epoch: Instant,
    stopping: bool,
}

/// A consumer the broker does not start and cannot load is up whenever its server is: it
/// starts out loaded so that its memory counts from the first decision, whether it came with
/// the first configuration or with a reload.
fn initial_phase(c: &ConsumerConfig) -> Phase {
    if c.start.is_none() && c.load.is_none() && c.upstream.is_some() {
        Phase::Loaded
    } else {
        Phase::Unloaded
    }
}

fn consumer_state(c: &ConsumerConfig) -> ConsumerState {
    ConsumerState {
        pool: c.pool,
        phase: initial_phase(c),
        stuck: false,
        need: c.need,
        measured: None,
        in_flight: 0,
        max_concurrent: c.max_concurrent,
        last_used: None,
        last_started: None,
        evictable: !c.pinned && !c.self_managed && c.can_unload(),
        coexist_with: c.coexist_with.clone(),
    }
}

fn pool_rt(p: &PoolConfig) -> PoolRt {
    PoolRt {
        state: PoolState {
            capacity: p.capacity,
            cushion: p.cushion,
            ..PoolState::default()
        },
        queue: VecDeque::new(),
        ledger: Vec::new(),
    }
}

impl Owner {
    pub fn new(cfg: Arc<Config>, tx: mpsc::UnboundedSender<Msg>, shared: Arc<Shared>) -> Owner {
        let n = cfg.consumers.len();
        Owner {
            pools: cfg.pools.iter().map(pool_rt).collect(),
            cons: cfg.consumers.iter().map(consumer_state).collect(),
            rt: vec![ConsumerRt::default(); n],
            cfg,
            active: HashMap::new(),
            gates: vec![None; n],
            adopted: HashMap::new(),
            next_gate: 0,
            retries: HashMap::new(),
            counters: Counters::default(),
            tx,
            shared,
            epoch: Instant::now(),
            stopping: false,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// Runs until a shutdown message, then fails whatever still waits.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        while let Some(msg) = rx.recv().await {
            if matches!(msg, Msg::Shutdown) {
                self.stopping = true;
                self.close_all_gates();
                for p in 0..self.pools.len() {
                    while let Some(w) = self.pools[p].queue.pop_front() {
                        let _ = w.reply.send(Err(AdmitError::ShuttingDown));
                    }
                }
                continue;
            }
            self.handle(msg);
            // Everything else that arrived meanwhile is handled before scheduling once.
            while let Ok(m) = rx.try_recv() {
                if matches!(m, Msg::Shutdown) {
                    self.stopping = true;
                    self.close_all_gates();
                    continue;
                }
                self.handle(m);
            }
            for p in 0..self.pools.len() {
                self.schedule(p);
            }
            self.open_gates();
        }
    }

    fn now_ms(&self, t: Instant) -> u64 {
        t.duration_since(self.epoch).as_millis() as u64
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.cfg.consumer_index(name)
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Acquire {
                id,
                consumer,
                reply,
            } => self.acquire(id, &consumer, reply),
            Msg::Cancel { id } => {
                let mut found = false;
                for p in &mut self.pools {
                    if let Some(pos) = p.queue.iter().position(|w| w.id == id) {
                        p.queue.remove(pos);
                        found = true;
                    }
                }
                if found {
                    self.counters.cancelled += 1;
                } else {
                    self.release(id);
                }
            }
            Msg::Release { id } => self.release(id),
            Msg::GateRelease { gate } => self.gate_release(gate),
            Msg::Reading(s) => self.reading(s),
            Msg::LoadDone {
                consumer,
                generation,
                result,
            } => self.load_done(&consumer, generation, result),
            Msg::UnloadDone {
                consumer,
                generation,
                outcome,
            } => self.unload_done(&consumer, generation, outcome),
            Msg::UpstreamFailed { consumer } => self.upstream_failed(&consumer),
            Msg::HealthChecked { consumer, alive } => {
                if let Some(i) = self.index(&consumer)
                    && !alive
                    && self.cons[i].phase == Phase::Loaded
                {
                    self.close_gate(i);
                    tracing::warn!(consumer = %consumer, "upstream is gone: counted as unloaded");
                    self.cons[i].phase = Phase::Unloaded;
                    self.cons[i].measured = None;
                    if let Ok(mut m) = self.shared.children.lock() {
                        m.remove(&consumer);
                    }
                }
            }
            Msg::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Msg::Ping(reply) => {
                let _ = reply.send(());
            }
            Msg::AdminUnload { consumer, reply } => self.admin_unload(&consumer, reply),
            Msg::Reload { config, reply } => {
                self.close_all_gates();
                self.reload(*config);
                let _ = reply.send(());
            }
            Msg::Tick => self.tick(),
            Msg::Shutdown => {
                self.stopping = true;
                self.close_all_gates();
            }
        }
    }

    /// An unload asked for by an operator. A stuck consumer's unload is retried for real (its
    /// route called or its process stopped again, and verified again), and the answer waits
    /// for the verdict.
    fn admin_unload(&mut self, name: &str, reply: AdminReply) {
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

    fn acquire(&mut self, id: u64, name: &str, reply: Reply) {
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
        let pool = &self.cfg.pools[p];
        if self.pools[p].queue.len() >= pool.max_queue {
            self.counters.rejected += 1;
            self.counters.rejected_queue_full += 1;
            let _ = reply.send(Err(AdmitError::QueueFull {
                pool: pool.name.clone(),
                max: pool.max_queue,
            }));
            return;
        }
        self.pools[p].queue.push_back(Waiter {
            id,
            consumer: c,
            since: Instant::now(),
            reply,
            last_wait: None,
        });
    }

    pub fn known(&self) -> String {
        let names: Vec<&str> = self.cfg.consumers.iter().map(|c| c.name.as_str()).collect();
        if names.is_empty() {
            "none configured".into()
        } else {
            names.join(", ")
        }
    }

    fn release(&mut self, id: u64) {
        if let Some(Some(c)) = self.active.remove(&id) {
            self.finished(c);
        }
    }

    fn gate_release(&mut self, gate: u64) {
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
    fn finished(&mut self, c: usize) {
        let now = self.now_ms(Instant::now());
        let cs = &mut self.cons[c];
        cs.in_flight = cs.in_flight.saturating_sub(1);
        cs.last_used = Some(now);
        if cs.in_flight == 0 && self.cfg.consumers[c].is_ephemeral() {
            cs.phase = Phase::Unloaded;
        }
    }

    /// Consumer `c`'s work in flight and when its last work ended, its open gate's included.
    fn in_flight(&self, c: usize) -> (u32, Option<u64>) {
        let cs = &self.cons[c];
        let seen = self.gates[c].as_ref().map(|g| g.peek()).unwrap_or_default();
        (
            cs.in_flight + seen.running,
            cs.last_used.max(seen.last_used),
        )
    }

    /// Takes back consumer `c`'s gate: what still runs through it is counted in flight here.
    fn close_gate(&mut self, c: usize) {
        let Some(g) = self.gates[c].take() else {
            return;
        };
        let Count {
            running,
            admitted,
            last_used,
        } = g.close();
        self.counters.served += admitted;
        let cs = &mut self.cons[c];
        cs.in_flight += running;
        cs.last_used = cs.last_used.max(last_used);
        if running > 0 {
            self.adopted.insert(g.id, (Some(c), running));
        }
    }

    fn close_pool_gates(&mut self, p: usize) {
        for c in 0..self.cons.len() {
            if self.cons[c].pool == p {
                self.close_gate(c);
            }
        }
    }

    fn close_all_gates(&mut self) {
        for c in 0..self.cons.len() {
            self.close_gate(c);
        }
    }

    /// Opens a gate for each consumer whose requests would be granted at once: in a pool where
    /// nothing waits, loaded and trusted, and free to run. Of consumers that may not run beside
    /// each other, one gate at most is open, the one busy or used last.
    fn open_gates(&mut self) {
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

    fn pool_view(&self, p: usize) -> &PoolState {
        &self.pools[p].state
    }

    /// Admits what may go now in pool `p`, starts the loads and evictions the queue needs.
    fn schedule(&mut self, p: usize) {
        self.pools[p].queue.retain(|w| !w.reply.is_closed());
        if self.pools[p].queue.is_empty() {
            return;
        }
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
    fn step(&mut self, p: usize, i: usize) -> bool {
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
                let now = Instant::now();
                let w = &self.pools[p].queue[i];
                let held = (!admission::aged(now - w.since, self.cfg.pools[p].max_wait))
                    .then(|| {
                        admission::in_demand(
                            &self.cons,
                            &victims,
                            self.now_ms(w.since),
                            self.now_ms(now),
                        )
                    })
                    .flatten();
                if let Some(victim) = held {
                    self.pools[p].queue[i].last_wait = Some(Wait::InDemand { victim });
                    return false;
                }
                for v in victims {
                    self.start_unload(v, true);
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

    fn never_message(&self, c: usize, need: u64, room: u64) -> String {
        use memwarden_probe::size::format_size;
        let cfg = &self.cfg;
        let pool = &cfg.pools[cfg.consumers[c].pool];
        let mut msg = format!(
            "{:?} needs {} but pool {:?} can offer at most {} even with every consumer it may evict gone: {} short",
            cfg.consumers[c].name,
            format_size(need),
            pool.name,
            format_size(room),
            format_size(need - room),
        );
        let pool = cfg.consumers[c].pool;
        let stuck = (0..self.cons.len()).filter(|&o| o != c && self.cons[o].pool == pool);
        let stuck = self.stuck_holders(stuck.filter(|&o| self.cons[o].stuck));
        if !stuck.is_empty() {
            msg.push_str(&format!(" (stuck after their unload: {stuck})"));
        }
        msg
    }

    fn grant(&mut self, p: usize, i: usize) {
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

    fn start_load(&mut self, c: usize) {
        let cfg = self.cfg.consumers[c].clone();
        let p = cfg.pool;
        self.cons[c].phase = Phase::Loading;
        self.rt[c].generation += 1;
        let generation = self.rt[c].generation;
        self.pools[p].ledger.push(Promise {
            consumer: c,
            bytes: cfg.need,
            settled_at: None,
        });
        self.pools[p].update_promised();
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

    fn start_unload(&mut self, c: usize, eviction: bool) {
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

    fn load_done(&mut self, name: &str, generation: u64, result: Result<Duration, String>) {
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
                self.cons[c].measured = None;
                self.rt[c].loads += 1;
                self.rt[c].last_load = Some(took);
                self.rt[c].loaded_at = Some(Instant::now());
                self.counters.loads += 1;
                self.counters.load_seconds_total += took.as_secs_f64();
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

    fn unload_done(&mut self, name: &str, generation: u64, outcome: UnloadOutcome) {
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
    fn retry_later(&mut self, c: usize, again: bool) {
        let first = self.cfg.pools[self.cons[c].pool].stuck_retry;
        let rt = &mut self.rt[c];
        rt.retry_every = if again {
            (rt.retry_every * 2).clamp(first, MAX_STUCK_RETRY)
        } else {
            first
        };
        rt.retry_at = Some(Instant::now() + rt.retry_every);
    }

    fn reading(&mut self, s: Sample) {
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

    fn upstream_failed(&mut self, name: &str) {
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

    fn tick(&mut self) {
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
            if cs.phase != Phase::Loaded || in_flight > 0 || !cfg.can_unload() || cs.stuck {
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
                self.start_unload(c, false);
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

    /// Retries the unload of stuck consumers whose time has come and whose room a request
    /// waits for: one whose processes cannot be found is never seen to give its memory back by
    /// the sampler, and a server that failed its unload may manage it later.
    fn retry_stuck(&mut self, now: Instant) {
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

    fn wait_reason(&self, c: usize, w: Option<&Wait>) -> String {
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
                "{} short, and the consumers that could make room were busy",
                memwarden_probe::size::format_size(*short_by)
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
    fn stuck_holders(&self, stuck: impl Iterator<Item = usize>) -> String {
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

    fn status(&self) -> Status {
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
    fn reload(&mut self, cfg: Config) {
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
        tracing::info!("configuration reloaded");
    }
}

/// Loads a consumer: starts its process or calls its load route, then waits until it is
/// ready.
async fn load(shared: &Shared, c: &ConsumerConfig) -> Result<(), String> {
    let deadline = Instant::now() + c.load_timeout;
    if let Some(cmd) = &c.start {
        let mut child = lifecycle::start_process(cmd)?;
        let ready = lifecycle::wait_ready(&shared.client, c, deadline, Some(&mut child)).await;
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
    let started = Instant::now();
    let target = shared.target(cfg, c);
    // What its processes hold now, and the pool's free reading, to compare against.
    let (held0, free0) = measure_one(shared, cfg, &target).await;
    let held0 = held0.and_then(|h| trusted(h, pool.kind, c.may_hold_nothing()));
    if let Err(why) = release(shared, c).await {
        return UnloadOutcome::Failed(why);
    }
    let expected = expected_back(before, c.need);
    let deadline = started + pool.verify_timeout;
    loop {
        let (held, free) = measure_one(shared, cfg, &target).await;
        if came_back(expected, c.need, (held0, held), (free0, free)) {
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
async fn release(shared: &Shared, c: &ConsumerConfig) -> Result<(), String> {
    if c.start.is_some() {
        let child = shared
            .children
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&c.name));
        if let Some(mut child) = child {
            lifecycle::stop_process(&mut child, c.stop.as_deref(), c.stop_timeout).await;
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

/// What an unload must give back: what the broker counted the consumer as holding, or its
/// declared size if that is less (a process also holds memory of its own, a runtime and a
/// GPU context, that no unload gives back).
fn expected_back(counted: u64, declared: u64) -> u64 {
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
fn came_back(
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

/// One consumer's holding and its pool's live free reading.
async fn measure_one(shared: &Arc<Shared>, cfg: &Config, t: &Target) -> (Option<u64>, Option<u64>) {
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

/// A loaded consumer's measurement, if it can be believed. A model server that is up holds GPU
/// memory (its CUDA context at the least), so a GPU figure of nothing says that the processes
/// found are not the ones holding it (a forwarder not known by name); only a server that
/// manages its own memory, or Ollama (an idle Ollama that let its models go), may truly hold
/// none ([`ConsumerConfig::may_hold_nothing`]). A wrong zero would let the broker fill memory
/// that is taken; the declared size errs the safe way.
fn trusted(measured: u64, pool: PoolKind, may_hold_nothing: bool) -> Option<u64> {
    (measured > 0 || pool == PoolKind::Ram || may_hold_nothing).then_some(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Two upstream-only consumers (loaded from the start) that may not run at once.
    fn two_rivals() -> (Owner, mpsc::UnboundedReceiver<Msg>) {
        let toml = "[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"1GiB\"\n\
                    [[consumer]]\nname = \"a\"\npool = \"ram\"\nresident = \"1MiB\"\nupstream = \"http://127.0.0.1:9\"\n\
                    [[consumer]]\nname = \"b\"\npool = \"ram\"\nresident = \"1MiB\"\nupstream = \"http://127.0.0.1:9\"\n";
        let cfg = Arc::new(Config::parse(toml, "t.toml", None).unwrap());
        let probe = Probe::new(
            memwarden_probe::HostRoot::system(),
            memwarden_probe::GpuSourceKind::None,
        );
        let (tx, rx) = mpsc::unbounded_channel();
        (Owner::new(cfg, tx, Shared::new(probe)), rx)
    }

    fn acquire(o: &mut Owner, id: u64, name: &str) -> oneshot::Receiver<Result<(), AdmitError>> {
        let (reply, rx) = oneshot::channel();
        o.handle(Msg::Acquire {
            id,
            consumer: name.into(),
            reply,
        });
        o.schedule(0);
        o.open_gates();
        rx
    }

    #[tokio::test]
    async fn work_through_a_gate_is_counted_before_a_rival_is_decided() {
        let (mut o, _rx) = two_rivals();
        o.open_gates();
        let gates = Arc::clone(&o.shared.gates);
        // One gate of the two rivals: the other's requests go to the owner.
        let a = gates.get("a").expect("a's gate is open");
        assert!(gates.get("b").is_none());
        assert!(a.enter());
        // A request for b closes a's gate first: the request running through it counts, so b
        // waits for it.
        let mut b = acquire(&mut o, 1, "b");
        assert!(!a.enter(), "closed");
        assert_eq!(o.cons[0].in_flight, 1);
        assert!(b.try_recv().is_err(), "b must not run beside a");
        // a's request ends: told by message, as the gate is closed, and b runs.
        assert!(!a.leave());
        o.handle(Msg::GateRelease { gate: a.id });
        o.schedule(0);
        o.open_gates();
        assert!(b.try_recv().unwrap().is_ok());
        assert_eq!(o.cons[0].in_flight, 0);
        assert!(o.cons[0].last_used.is_some());
        // b runs (granted by the owner), so a gets no gate; b's gate opens, as b is busy.
        assert!(gates.get("a").is_some_and(|g| !g.enter()));
        assert!(gates.get("b").expect("b's gate").enter());
        let st = o.status();
        assert_eq!(st.counters.served, 3);
        assert_eq!(st.consumers[1].in_flight, 2);
    }

    #[tokio::test]
    async fn no_gate_opens_while_its_pool_has_a_queue_or_the_broker_stops() {
        let (mut o, _rx) = two_rivals();
        // a runs by the owner's grant; b's request waits for it.
        let _a = acquire(&mut o, 1, "a");
        let _b = acquire(&mut o, 2, "b");
        assert_eq!(o.pools[0].queue.len(), 1);
        assert!(o.shared.gates.get("a").is_none_or(|g| !g.enter()));
        o.handle(Msg::Release { id: 1 });
        o.schedule(0);
        o.open_gates();
        assert!(o.pools[0].queue.is_empty());
        assert!(o.shared.gates.get("b").is_some_and(|g| g.enter()));
        o.handle(Msg::Shutdown);
        o.open_gates();
        assert!(o.gates.iter().all(Option::is_none));
        assert!(o.shared.gates.get("b").is_some_and(|g| !g.enter()));
    }

    #[tokio::test]
    async fn a_stuck_consumers_retries_back_off_to_a_bound() {
        let (mut o, _rx) = two_rivals();
        let first = o.cfg.pools[0].stuck_retry;
        o.retry_later(0, false);
        assert_eq!(o.rt[0].retry_every, first);
        let mut waits = Vec::new();
        for _ in 0..8 {
            o.retry_later(0, true);
            waits.push(o.rt[0].retry_every.as_secs());
        }
        assert_eq!(waits, [60, 120, 240, 480, 600, 600, 600, 600]);
        // Found stuck anew: from the start again.
        o.retry_later(0, false);
        assert_eq!(o.rt[0].retry_every, first);
        assert!(o.rt[0].retry_at.is_some());
    }

    #[test]
    fn a_timeout_says_its_wait_to_the_millisecond() {
        let e = AdmitError::Timeout {
            consumer: "b".into(),
            waited: Duration::new(8, 52_468_548),
            reason: "r".into(),
        };
        assert_eq!(e.to_string(), "waited 8s 52ms for \"b\" without a turn: r");
    }
}
