//! The state owner: one task holds all of the broker's state; request handlers, the sampler
//! and the load/unload actions talk to it by messages. It never waits on I/O itself: loads,
//! unloads and readings run as tasks of their own and report back.

mod gates;
mod holders;
mod load;
mod queue;
mod sleep;
mod status;
#[cfg(test)]
mod tests;
mod upkeep;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memwarden_probe::Probe;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};

use crate::admission::{ConsumerState, Phase, PoolState, Wait};
use crate::config::{Config, ConsumerConfig, PoolConfig, Upstream};
use crate::gate::{Gate, Gates};
use crate::lifecycle::{self, HttpClient};
use crate::measure::{Measurer, Sample, Target};

pub use load::unload_bound;
pub use status::{ConsumerStatus, Counters, PoolStatus, Status};

/// Why a request was not admitted; each maps to one HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdmitError {
    #[error("unknown consumer {name:?} (consumers: {known})")]
    Unknown { name: String, known: String },
    #[error(
        "the queue of pool {pool:?} is full ({max} waiting), and this request would wait too: {why}"
    )]
    QueueFull {
        pool: String,
        max: usize,
        why: String,
    },
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
    /// A sleep was answered and verified: the pool's side as an unload's, and what its
    /// processes hold in host RAM after it.
    SleepDone {
        consumer: String,
        generation: u64,
        outcome: UnloadOutcome,
        host: Option<u64>,
    },
    /// The upstream could not be reached or broke off an answer: check whether it is alive.
    UpstreamFailed {
        consumer: String,
    },
    HealthChecked {
        consumer: String,
        alive: bool,
    },
    /// What a server was found to be when first seen.
    Probed {
        consumer: String,
        generation: u64,
        found: Found,
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

/// What a consumer's server was found to be when the broker first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// It did not answer (or, for one the broker loads, is not asleep).
    Down,
    Up,
    /// A vLLM server that says it sleeps: left so by an earlier broker. What its processes
    /// hold in host RAM, as measured then.
    Asleep {
        host: Option<u64>,
    },
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
    /// What the processes the broker started have printed, per consumer.
    pub logs: crate::logs::Logs,
    /// What the broker did, for `/v1/events`.
    pub events: Arc<crate::events::EventHub>,
    /// The port each consumer's start command was given, where its upstream is `${PORT}`.
    pub ports: Mutex<HashMap<String, u16>>,
}

impl Shared {
    pub fn new(probe: Probe) -> Arc<Shared> {
        Arc::new(Shared {
            probe: Mutex::new(probe),
            measurer: Mutex::new(Measurer::default()),
            client: lifecycle::http_client(),
            children: Mutex::new(HashMap::new()),
            gates: Arc::default(),
            logs: crate::logs::Logs::default(),
            events: Arc::default(),
            ports: Mutex::default(),
        })
    }

    /// Where consumer `c` answers now: an upstream of `${PORT}` on the port of its current
    /// start (`None` until it has one).
    pub fn upstream(&self, c: &ConsumerConfig) -> Option<Upstream> {
        let up = c.upstream.as_ref()?;
        if up.port != 0 {
            return Some(up.clone());
        }
        let port = *self.ports.lock().ok()?.get(&c.name)?;
        Some(Upstream { port, ..up.clone() })
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
        let mut t = Target::of(cfg, c, pgid);
        // An upstream of `${PORT}`: the port of its current start.
        t.locator.port = self.upstream(c).filter(Upstream::is_local).map(|u| u.port);
        t
    }
}

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
    sleep: sleep::SleepRt,
    /// Its server was found not answering: it holds nothing until it answers again.
    down: bool,
    /// When its server was last asked whether it is up, while idle.
    checked_at: Option<Instant>,
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
    /// The machine's `MemAvailable`, where no `ram` pool counts what sleepers hold.
    host_available: Option<u64>,
    counters: Counters,
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    epoch: Instant,
    stopping: bool,
}

fn consumer_state(c: &ConsumerConfig) -> ConsumerState {
    ConsumerState {
        pool: c.pool,
        // One that is up whenever its server is starts as what its server is found to be
        // ([`Owner::probe`]).
        phase: Phase::Unloaded,
        stuck: false,
        need: c.need,
        measured: None,
        in_flight: 0,
        max_concurrent: c.max_concurrent,
        last_used: None,
        last_started: None,
        evictable: !c.pinned && !c.self_managed && c.can_evict(),
        ephemeral: c.is_ephemeral(),
        coexist_with: c.coexist_with.clone(),
        demand: Default::default(),
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
            host_available: None,
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
        for c in 0..self.cons.len() {
            self.probe(c);
        }
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
            self.count_sleepers();
            for p in 0..self.pools.len() {
                self.schedule(p);
            }
            self.drop_sleepers();
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
            Msg::SleepDone {
                consumer,
                generation,
                outcome,
                host,
            } => self.sleep_done(&consumer, generation, outcome, host),
            Msg::UpstreamFailed { consumer } => self.upstream_failed(&consumer),
            Msg::HealthChecked { consumer, alive } => self.health_checked(&consumer, alive),
            Msg::Probed {
                consumer,
                generation,
                found,
            } => self.probed(&consumer, generation, found),
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

    pub fn known(&self) -> String {
        let names: Vec<&str> = self.cfg.consumers.iter().map(|c| c.name.as_str()).collect();
        if names.is_empty() {
            "none configured".into()
        } else {
            names.join(", ")
        }
    }
}
