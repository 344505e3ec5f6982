//! Running the broker: the state owner, the sampler, the clock, the lease reaper and the HTTP
//! server, started together and stopped in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memwarden_probe::scrape::ScrapeConfig;
use memwarden_probe::size::format_size;
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber;

use crate::api::{self, App};
use crate::config::{Config, ConsumerConfig, PoolKind};
use crate::conns;
use crate::handle::Broker;
use crate::lifecycle;
use crate::measure::{Measurer, PoolReading, Sample, Target};
use crate::owner::{Msg, Owner, Shared};

/// How often pools are read, and how many pool readings go by between measurements of the
/// consumers' processes (which scan every process).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const MEASURE_EVERY_N: u64 = 5;

/// Each message carries its cause, and no variant exposes it again as `source()` (a field
/// named `source` would): the binary prints the whole chain, which would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

/// A broker that runs: its address, its shared state, and the means to stop it.
pub struct Running {
    pub app: Arc<App>,
    server: Server,
    /// Servers on addresses left at a reload, finishing the requests they had.
    retired: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
}

/// The HTTP server on one listener; dropping `stop` (or sending on it) ends it gracefully.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Checks a configuration against the machine that `probe` reads: every GPU pool's device
/// exists (or the pool has a `capacity`) and every cushion is smaller than its pool. `start`
/// and a reload make the same check; `memwarden serve --check` makes it alone, and shows with
/// the answer a line per consumer: which processes its memory is read from now and what they
/// hold, or why none are found and its declared size stands.
pub fn check_config(cfg: &Config, probe: &mut Probe) -> Result<Vec<String>, DaemonError> {
    let mut m = Measurer::default();
    let readings = m.pools(probe, &cfg.pools);
    check_readings(cfg, &readings)?;
    Ok(describe_consumers(cfg, probe, &mut m, |c| {
        Target::of(cfg, c, None)
    }))
}

/// A line per consumer: the processes its memory is read from now and what they hold, or why
/// none are found and its declared size stands.
fn describe_consumers(
    cfg: &Config,
    probe: &mut Probe,
    m: &mut Measurer,
    target: impl Fn(&ConsumerConfig) -> Target,
) -> Vec<String> {
    let targets: Vec<Target> = cfg.consumers.iter().map(target).collect();
    let scan = probe.scan_processes().0;
    // One read of every port's sockets serves both passes below.
    m.index_ports(probe, &targets);
    let held = m.consumers_in(probe, &scan, &targets);
    let lines = (cfg.consumers.iter().zip(&targets).zip(held))
        .map(|((c, t), held)| {
            let declared = format_size(c.need);
            let found = m.found(probe, &scan, &t.locator);
            let sleep = c.sleep.as_ref().and_then(|s| {
                let pids: Vec<u32> = found.iter().flatten().map(|(pid, _)| *pid).collect();
                crate::sleep::describe(s, probe.root(), &pids)
            });
            let line = match found {
                Ok(procs) => {
                    let mut who: Vec<String> = (procs.iter().take(3))
                        .map(|(pid, n)| format!("{n} ({pid})"))
                        .collect();
                    if procs.len() > 3 {
                        who.push(format!("{} more", procs.len() - 3));
                    }
                    let who = who.join(", ");
                    match held {
                        Some(b) => format!("{}: reads {who}: holds {}", c.name, format_size(b)),
                        None => format!(
                            "{}: reads {who}, whose GPU figures cannot be read now: its declared \
                             {declared} stands",
                            c.name
                        ),
                    }
                }
                Err(_) if c.is_ephemeral() => format!(
                    "{}: holds memory only while a lease or request runs, counted at its \
                     declared {declared}",
                    c.name
                ),
                Err(_) if c.start.is_some() => format!(
                    "{}: not running: started on its first load and read by its process group; \
                     until then its declared {declared} stands",
                    c.name
                ),
                Err(why) => format!("{}: its declared {declared} stands: {why}", c.name),
            };
            match sleep {
                Some(s) => format!("{line}; {s}"),
                None => line,
            }
        })
        .collect();
    m.forget_ports();
    lines
}

/// [`check_config`] with the running broker's probe, which the sampler shares; the lines on
/// consumers go to the log, where a server measured through the wrong process is seen.
fn check_against_machine(cfg: &Config, shared: &Shared) -> Result<(), DaemonError> {
    let mut probe = shared.probe.lock().expect("probe lock");
    let mut m = shared.measurer.lock().expect("measurer lock");
    let readings = m.pools(&mut probe, &cfg.pools);
    check_readings(cfg, &readings)?;
    for line in describe_consumers(cfg, &mut probe, &mut m, |c| shared.target(cfg, c)) {
        tracing::info!("consumer {line}");
    }
    Ok(())
}

fn check_readings(cfg: &Config, readings: &[PoolReading]) -> Result<(), DaemonError> {
    for (p, r) in cfg.pools.iter().zip(readings) {
        if p.kind != PoolKind::Ram && r.total.is_none() && p.capacity.is_none() {
            return Err(DaemonError::Config(format!(
                "pool {:?}: no {} figure for GPU {} on this machine (set `capacity` to use it anyway)",
                p.name,
                p.kind.as_str(),
                p.gpu.unwrap_or(0)
            )));
        }
        let total = p.capacity.or(r.total).unwrap_or(0);
        if p.cushion >= total && total > 0 {
            return Err(DaemonError::Config(format!(
                "pool {:?}: the cushion ({}) is not smaller than the pool ({})",
                p.name,
                memwarden_probe::size::format_size(p.cushion),
                memwarden_probe::size::format_size(total)
            )));
        }
    }
    Ok(())
}

/// Starts a broker on `cfg.server.listen` (port 0 picks a free one).
pub async fn start(cfg: Config, probe: Probe) -> Result<Running, DaemonError> {
    let shared = Shared::new(probe);
    {
        let shared = Arc::clone(&shared);
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || check_against_machine(&cfg, &shared))
            .await
            .map_err(|e| DaemonError::Runtime(e.to_string()))??;
    }
    let (listener, addr) = bind(cfg.server.listen).await?;
    let grace = cfg.server.shutdown_grace;
    let cfg = Arc::new(cfg);
    let (tx, rx) = mpsc::unbounded_channel();
    let broker = Broker::new(tx.clone(), Arc::clone(&shared.gates));
    let owner = Owner::new(Arc::clone(&cfg), tx.clone(), Arc::clone(&shared));
    let app = App::new(broker.clone(), Arc::clone(&shared), cfg);
    // The owner's log lines are the broker's events (see crate::events).
    let tee = crate::events::Tee::dispatch(Arc::clone(&shared.events));
    let mut background = vec![tokio::spawn(owner.run(rx).with_subscriber(tee))];
    background.push(tokio::spawn(sampler(Arc::clone(&app))));
    background.push(tokio::spawn({
        let broker = broker.clone();
        let app = Arc::clone(&app);
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0u64.. {
                tick.tick().await;
                broker.send(Msg::Tick);
                app.expire_leases();
                if n.is_multiple_of(10) {
                    app.tick_clock();
                }
            }
        }
    }));
    let server = serve(listener, addr, &app);
    tracing::info!(%addr, "memwarden broker listening");
    Ok(Running {
        app,
        server,
        retired: Vec::new(),
        background,
        grace,
    })
}

async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), DaemonError> {
    let err = |cause| DaemonError::Listen {
        addr: listen,
        cause,
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}

/// Serves the API on `listener` until told to stop, with the connection bounds of `conns`.
fn serve(listener: tokio::net::TcpListener, addr: SocketAddr, app: &Arc<App>) -> Server {
    let (stop, stop_rx) = oneshot::channel::<()>();
    let front = api::Front::new(Arc::clone(app));
    let server = &app.config().server;
    let limits = conns::Limits {
        max_connections: server.max_connections,
        header_timeout: server.header_timeout,
    }
    .effective();
    if limits.max_connections < server.max_connections {
        tracing::warn!(
            "max_connections lowered to {} by the limit on open files",
            limits.max_connections
        );
    }
    let task = tokio::spawn(conns::serve(listener, front, limits, stop_rx));
    Server { addr, stop, task }
}

/// Stops a server taking connections; the task returned ends once its requests in flight
/// have finished, or cuts them off after `grace`.
fn retire(server: Server, grace: Duration) -> JoinHandle<()> {
    let Server {
        addr,
        stop,
        mut task,
    } = server;
    let _ = stop.send(());
    tokio::spawn(async move {
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            tracing::warn!(%addr, "requests still running after the grace period: cut off");
            task.abort();
        }
    })
}

/// Reads pools every 100 ms and consumers every 500 ms, on a blocking thread.
async fn sampler(app: Arc<App>) {
    let mut round = 0u64;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cfg = app.config();
        let targets: Vec<Target> = if round.is_multiple_of(MEASURE_EVERY_N) {
            cfg.consumers
                .iter()
                .map(|c| app.shared.target(&cfg, c))
                .collect()
        } else {
            Vec::new()
        };
        round += 1;
        let shared = Arc::clone(&app.shared);
        let pools = cfg.pools.clone();
        let host = crate::sleep::host_targets(&cfg, &targets);
        let reads_host = crate::sleep::reads_host(&cfg);
        let sample = tokio::task::spawn_blocking(move || {
            let began = Instant::now();
            let mut probe = shared.probe.lock().ok()?;
            let mut m = shared.measurer.lock().ok()?;
            let pools = m.pools(&mut probe, &pools);
            let n = targets.len();
            // One scan for both sides: the pools' and, for servers that can sleep, host RAM.
            let mut all = targets;
            all.extend(host.iter().flatten().cloned());
            let mut held = if all.is_empty() {
                Vec::new()
            } else {
                m.consumers(&mut probe, &all)
            };
            let mut rest = held.split_off(n.min(held.len())).into_iter();
            let host = if n == 0 {
                Vec::new()
            } else {
                host.iter()
                    .map(|t| t.as_ref().and_then(|_| rest.next().flatten()))
                    .collect()
            };
            let host_available = reads_host
                .then(|| probe.host_memory().ok().map(|h| h.mem_available_bytes))
                .flatten();
            Some(Sample {
                began,
                pools,
                consumers: held,
                host,
                host_available,
            })
        })
        .await;
        if let Ok(Some(s)) = sample {
            app.broker.send(Msg::Reading(s));
        }
    }
}

impl Running {
    /// The address the API answers on (it moves when a reload changes `server.listen`).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Replaces the configuration. A new listen address is bound before anything changes, so a
    /// configuration whose address cannot be had is refused whole; once bound, the old
    /// address stops taking connections and finishes the requests it has.
    pub async fn reload(&mut self, cfg: Config) -> Result<(), DaemonError> {
        if let Some(why) = crate::config::reload_drops(&self.app.config(), &cfg) {
            return Err(DaemonError::Config(why));
        }
        {
            let shared = Arc::clone(&self.app.shared);
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || check_against_machine(&cfg, &shared))
                .await
                .map_err(|e| DaemonError::Runtime(e.to_string()))??;
        }
        let moved = match self.moves_to(&cfg) {
            Some(listen) => Some(bind(listen).await?),
            None => None,
        };
        let (reply, done) = oneshot::channel();
        self.app.broker.send(Msg::Reload {
            config: Box::new(cfg.clone()),
            reply,
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        self.grace = cfg.server.shutdown_grace;
        *self.app.config.write().expect("config lock") = Arc::new(cfg);
        if let Some((listener, addr)) = moved {
            self.move_to(listener, addr);
        }
        Ok(())
    }

    /// The address to move to, if `cfg` asks for another one. Compared with both the old
    /// setting and the bound address: `127.0.0.1:0` in both means "stay", and naming the port
    /// that 0 picked must not try to bind it a second time.
    fn moves_to(&self, cfg: &Config) -> Option<SocketAddr> {
        let listen = cfg.server.listen;
        (listen != self.app.config().server.listen && listen != self.addr()).then_some(listen)
    }

    fn move_to(&mut self, listener: tokio::net::TcpListener, addr: SocketAddr) {
        let old = std::mem::replace(&mut self.server, serve(listener, addr, &self.app));
        tracing::info!(old = %old.addr, new = %addr, "memwarden broker listening on a new address");
        self.retired.retain(|r| !r.is_finished());
        self.retired.push(retire(old, self.grace));
    }

    /// Stops taking requests, lets those in flight finish (bounded by the grace period),
    /// stops the processes the broker started, and ends.
    pub async fn shutdown(mut self) {
        self.retired.push(retire(self.server, self.grace));
        self.app.end_streams();
        // Queued requests are answered at once rather than left to wait out the grace.
        self.app.broker.send(Msg::Shutdown);
        futures_util::future::join_all(self.retired).await;
        tracing::debug!("server ended");
        self.app.leases.lock().expect("lease lock").clear();
        let cfg = self.app.config();
        let children: Vec<_> = self
            .app
            .shared
            .children
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        let stops = children.into_iter().map(|(name, mut child)| {
            let c = cfg.consumers.iter().find(|c| c.name == name).cloned();
            async move {
                let (stop, grace) = c
                    .map(|c| (c.stop, c.stop_timeout))
                    .unwrap_or((None, Duration::from_secs(10)));
                lifecycle::stop_process(&mut child, stop.as_deref(), grace).await;
            }
        });
        futures_util::future::join_all(stops).await;
        tracing::debug!("children stopped");
        for b in self.background {
            b.abort();
        }
    }
}

/// The model-file estimator, owned: see [`crate::config::Estimator`].
pub type BoxedEstimator =
    Box<dyn Fn(&crate::config::EstimateRequest<'_>) -> Result<u64, String> + Send + Sync>;

/// What `memwarden serve` needs to run.
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub root: HostRoot,
    pub gpu_source: GpuSourceKind,
    pub listen: Option<SocketAddr>,
    pub estimator: Option<BoxedEstimator>,
    /// Which inference servers the probe may ask for their own figures.
    pub scrape: ScrapeConfig,
}

impl ServeOptions {
    pub fn load_config(&self) -> Result<Config, DaemonError> {
        let est = self
            .estimator
            .as_deref()
            .map(|f| f as crate::config::Estimator<'_>);
        let mut cfg = match &self.config {
            Some(path) => Config::load(path, est).map_err(|e| DaemonError::Config(e.0))?,
            None => Config::default_exporter(),
        };
        if let Some(l) = self.listen {
            cfg.server.listen = l;
            cfg.server.listen_given = true;
        }
        Ok(cfg)
    }
}

/// The longest a reload may spend reading its files (the config, token and model files): one
/// on a hung network mount must not stop the signal loop, so later signals still work.
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Reads past [`LOAD_TIMEOUT`] that have not ended yet: each holds a blocking thread, so past a
/// few a reload is refused at once rather than leaving another.
const MAX_STUCK_LOADS: usize = 4;

/// [`ServeOptions::load_config`] on a blocking thread, bounded in time.
async fn load_bounded(
    opts: &Arc<ServeOptions>,
    stuck: &Arc<std::sync::atomic::AtomicUsize>,
) -> Result<Config, DaemonError> {
    use std::sync::atomic::Ordering;
    if stuck.load(Ordering::Acquire) >= MAX_STUCK_LOADS {
        return Err(DaemonError::Config(format!(
            "{MAX_STUCK_LOADS} earlier reloads are still stuck reading their files"
        )));
    }
    let mut task = tokio::task::spawn_blocking({
        let opts = Arc::clone(opts);
        move || opts.load_config()
    });
    match tokio::time::timeout(LOAD_TIMEOUT, &mut task).await {
        Ok(done) => done.map_err(|e| DaemonError::Runtime(e.to_string()))?,
        Err(_) => {
            stuck.fetch_add(1, Ordering::AcqRel);
            let stuck = Arc::clone(stuck);
            tokio::spawn(async move {
                let _ = task.await;
                stuck.fetch_sub(1, Ordering::AcqRel);
            });
            Err(DaemonError::Config(format!(
                "reading the configuration's files took more than {}s (a model file on a hung \
                 mount?)",
                LOAD_TIMEOUT.as_secs()
            )))
        }
    }
}

fn log_warnings(cfg: &Config) {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C; SIGHUP reloads the configuration file (a bad one
/// is refused and the old one kept).
pub fn serve_blocking(opts: ServeOptions) -> Result<(), DaemonError> {
    let cfg = opts.load_config()?;
    log_warnings(&cfg);
    let opts = Arc::new(opts);
    let stuck = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let result = rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
        let mut probe = Probe::new(opts.root.clone(), opts.gpu_source);
        probe.set_scrape_config(opts.scrape.clone());
        let mut running = start(cfg, probe).await?;
        let tee = crate::events::Tee::dispatch(Arc::clone(&running.app.shared.events));
        async { loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    let reloaded = match load_bounded(&opts, &stuck).await {
                        Ok(cfg) => {
                            log_warnings(&cfg);
                            running.reload(cfg).await
                        }
                        Err(e) => Err(e),
                    };
                    match reloaded {
                        Ok(()) => tracing::info!("configuration reloaded"),
                        Err(e) => tracing::error!("new configuration refused, the old one stays: {e}"),
                    }
                }
            }
        } }
        .with_subscriber(tee)
        .await;
        tracing::info!("stopping: finishing requests in flight");
        running.shutdown().await;
        tracing::debug!("shutdown done");
        Ok::<(), DaemonError>(())
    });
    // Not a plain drop, which waits for every blocking thread: a read stuck on a hung mount
    // would hold the stop for good.
    rt.shutdown_timeout(Duration::from_secs(1));
    tracing::debug!("runtime dropped");
    result
}
