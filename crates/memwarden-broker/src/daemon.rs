//! Running the broker: the state owner, the sampler, the clock, the lease reaper and the HTTP
//! server, started together and stopped in order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memwarden_probe::{GpuSourceKind, HostRoot, Probe};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api::{self, App};
use crate::config::{Config, PoolKind};
use crate::handle::Broker;
use crate::lifecycle;
use crate::measure::{Sample, Target};
use crate::owner::{Msg, Owner, Shared};

/// How often pools are read, and how many pool readings go by between measurements of the
/// consumers' processes (which scan every process).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const MEASURE_EVERY_N: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

/// A broker that runs: its address, its shared state, and the means to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
}

/// Checks a configuration against the machine: every GPU pool's device exists and every
/// cushion is smaller than its pool.
fn check_against_machine(cfg: &Config, shared: &Shared) -> Result<(), DaemonError> {
    let readings = {
        let mut probe = shared.probe.lock().expect("probe lock");
        let mut m = shared.measurer.lock().expect("measurer lock");
        m.pools(&mut probe, &cfg.pools)
    };
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
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: cfg.server.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: cfg.server.listen,
            source,
        })?;
    let grace = cfg.server.shutdown_grace;
    let cfg = Arc::new(cfg);
    let (tx, rx) = mpsc::unbounded_channel();
    let broker = Broker::new(tx.clone());
    let owner = Owner::new(Arc::clone(&cfg), tx.clone(), Arc::clone(&shared));
    let app = App::new(broker.clone(), Arc::clone(&shared), cfg);
    let mut background = vec![tokio::spawn(owner.run(rx))];
    background.push(tokio::spawn(sampler(Arc::clone(&app))));
    background.push(tokio::spawn({
        let broker = broker.clone();
        let app = Arc::clone(&app);
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                broker.send(Msg::Tick);
                app.expire_leases();
            }
        }
    }));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = api::router(Arc::clone(&app));
    let server = tokio::spawn({
        let broker = broker.clone();
        async move {
            let shutdown = async move {
                let _ = stop_rx.await;
                broker.send(Msg::Shutdown);
            };
            // Streamed answers go out in several writes: Nagle's algorithm would hold them.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            {
                tracing::error!("server error: {e}");
            }
        }
    });
    tracing::info!(%addr, "memwarden broker listening");
    Ok(Running {
        addr,
        app,
        stop: Some(stop_tx),
        server,
        background,
        grace,
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
        let targets: Vec<Target> = if round % MEASURE_EVERY_N == 0 {
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
        let sample = tokio::task::spawn_blocking(move || {
            let began = Instant::now();
            let mut probe = shared.probe.lock().ok()?;
            let mut m = shared.measurer.lock().ok()?;
            let pools = m.pools(&mut probe, &pools);
            let consumers = if targets.is_empty() {
                Vec::new()
            } else {
                m.consumers(&mut probe, &targets)
            };
            Some(Sample {
                began,
                pools,
                consumers,
            })
        })
        .await;
        if let Ok(Some(s)) = sample {
            app.broker.send(Msg::Reading(s));
        }
    }
}

impl Running {
    /// Replaces the configuration; the listen address is kept (changing it needs a restart).
    pub async fn reload(&self, cfg: Config) -> Result<(), DaemonError> {
        {
            let shared = Arc::clone(&self.app.shared);
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || check_against_machine(&cfg, &shared))
                .await
                .map_err(|e| DaemonError::Runtime(e.to_string()))??;
        }
        if cfg.server.listen != self.app.config().server.listen {
            tracing::warn!("a new listen address takes effect at the next start");
        }
        let (reply, done) = oneshot::channel();
        self.app.broker.send(Msg::Reload {
            config: Box::new(cfg.clone()),
            reply,
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        *self.app.config.write().expect("config lock") = Arc::new(cfg);
        Ok(())
    }

    /// Stops taking requests, lets those in flight finish (bounded by the grace period),
    /// stops the processes the broker started, and ends.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let mut server = self.server;
        if tokio::time::timeout(self.grace, &mut server).await.is_err() {
            tracing::debug!("server did not end in grace");
            tracing::warn!("requests still running after the grace period: cut off");
            server.abort();
        }
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
        tracing::debug!("server ended");
        futures_util::future::join_all(stops).await;
        tracing::debug!("children stopped");
        for b in self.background {
            b.abort();
        }
    }
}

/// The model-file estimator, owned: see [`crate::config::Estimator`].
pub type BoxedEstimator = Box<dyn Fn(&Path, u64) -> Result<u64, String> + Send + Sync>;

/// What `memwarden serve` needs to run.
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub root: HostRoot,
    pub gpu_source: GpuSourceKind,
    pub listen: Option<SocketAddr>,
    pub estimator: Option<BoxedEstimator>,
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
        }
        Ok(cfg)
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C; SIGHUP reloads the configuration file (a bad one
/// is refused and the old one kept).
pub fn serve_blocking(opts: ServeOptions) -> Result<(), DaemonError> {
    let cfg = opts.load_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let result = rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
        let probe = Probe::new(opts.root.clone(), opts.gpu_source);
        let running = start(cfg, probe).await?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    match opts.load_config() {
                        Ok(cfg) => match running.reload(cfg).await {
                            Ok(()) => tracing::info!("configuration reloaded"),
                            Err(e) => tracing::error!("new configuration refused, the old one stays: {e}"),
                        },
                        Err(e) => tracing::error!("new configuration refused, the old one stays: {e}"),
                    }
                }
            }
        }
        tracing::info!("stopping: finishing requests in flight");
        running.shutdown().await;
        tracing::debug!("shutdown done");
        Ok::<(), DaemonError>(())
    });
    drop(rt);
    tracing::debug!("runtime dropped");
    result
}
