//! `memwarden serve`: the broker in front of model servers, and the node's metrics exporter.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use memwarden_broker::ServeOptions;
use memwarden_broker::config::{EstimateRequest, PoolKind};
use memwarden_broker::daemon::BoxedEstimator;
use memwarden_plan::engine::{self, Engine, EngineOptions};
use memwarden_plan::estimate::{EstimateOptions, estimate_file};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

use crate::cli::Global;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The broker's TOML configuration; without one, serve only /metrics, /v1/status and
    /// /healthz on 127.0.0.1:7077
    #[arg(long, short, value_name = "FILE", env = "MEMWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen here instead of the configuration's `listen`
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Only check the configuration (and that it suits this machine), then exit
    #[arg(long)]
    pub check: bool,
}

pub fn run(g: &Global, args: ServeArgs) -> Result<ExitCode> {
    let opts = options(g, args.config, args.listen)?;
    if args.check {
        let (summary, consumers) = check(&opts)?;
        println!("{summary}");
        for line in consumers {
            println!("  {line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    init_logging();
    memwarden_broker::serve_blocking(opts)?;
    Ok(ExitCode::SUCCESS)
}

fn options(
    g: &Global,
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
) -> Result<ServeOptions> {
    let source = g.gpu_source.parse()?;
    let root = HostRoot::new(&g.root)?;
    let scrape = super::scrape_config(g, root.is_system());
    Ok(ServeOptions {
        scrape,
        config,
        gpu_source: source,
        listen,
        estimator: Some(estimator(root.clone(), source)),
        root,
    })
}

/// The need behind `estimate = { … }`: llama.cpp's estimate for the context, or for an engine
/// that preallocates, its share of the pool's card (the pool's `capacity`, else its GPU's total
/// memory read now).
fn estimator(root: HostRoot, source: GpuSourceKind) -> BoxedEstimator {
    Box::new(move |r: &EstimateRequest<'_>| {
        let engine: Engine = r
            .engine
            .unwrap_or("llamacpp")
            .parse()
            .map_err(|e: memwarden_plan::PlanError| e.to_string())?;
        let fraction = (engine.fraction(r.gpu_memory_utilization, r.mem_fraction_static))
            .map_err(|e| e.to_string())?;
        if !engine.preallocates() {
            let opts = EstimateOptions {
                ctx: Some(r.ctx),
                ..EstimateOptions::default()
            };
            return (estimate_file(r.model, &opts))
                .map(|e| e.total_bytes)
                .map_err(|e| e.to_string());
        }
        let pool = r.pool;
        let card = match (pool.capacity, pool.kind) {
            (Some(c), _) => c,
            (None, PoolKind::Vram) => {
                let idx = pool.gpu.unwrap_or(0);
                let gpus = Probe::new(root.clone(), source).gpus();
                (gpus.iter().find(|g| g.index == idx))
                    .and_then(|g| g.vram_total_bytes)
                    .ok_or_else(|| {
                        format!(
                            "{engine} takes a fraction of GPU {idx}'s memory, whose size cannot \
                             be read: give pool {:?} a capacity",
                            pool.name
                        )
                    })?
            }
            (None, kind) => {
                return Err(format!(
                    "{engine} takes a fraction of a GPU's memory: its pool {:?} is a {} pool \
                     without a capacity",
                    pool.name,
                    kind.as_str()
                ));
            }
        };
        let opts = EngineOptions {
            engine,
            fraction,
            card_bytes: card,
            free_bytes: None,
            ctx: Some(r.ctx),
            // The need does not depend on it; a 16-bit cache is the engines' default and the
            // larger, so the check that one sequence of `ctx` fits errs on the safe side.
            kv_dtype_bytes: 2,
        };
        (engine::plan_file(r.model, &opts))
            .map(|p| p.need_bytes)
            .map_err(|e| e.to_string())
    })
}

/// `serve --check`: the configuration checked against this machine as a start would; a
/// summary line and a line per consumer.
fn check(opts: &ServeOptions) -> Result<(String, Vec<String>)> {
    let cfg = opts.load_config()?;
    let mut probe = Probe::new(opts.root.clone(), opts.gpu_source);
    let consumers = memwarden_broker::check_config(&cfg, &mut probe).with_context(|| {
        // Only a file can fail here: the embedded default has no pools.
        opts.config
            .as_deref()
            .unwrap_or(std::path::Path::new("(default)"))
            .display()
            .to_string()
    })?;
    let ram_total = probe.host_memory().ok().map(|h| h.mem_total_bytes);
    let totals = super::serve_check::pool_totals(&cfg, ram_total, &probe.gpus());
    let found = super::serve_check::problems(&cfg, &totals, |prog| {
        super::serve_check::runnable(&opts.root, prog)
    });
    if !found.is_empty() {
        bail!("{}", found.join("; "));
    }
    let summary = format!(
        "configuration ok: {} pool(s), {} consumer(s), listening on {}",
        cfg.pools.len(),
        cfg.consumers.len(),
        cfg.server.listen
    );
    Ok((summary, consumers))
}

/// The verdict on a configuration file, for `doctor`: its summary, or why it does not check.
pub fn check_file(g: &Global, config: PathBuf) -> Result<String, String> {
    options(g, Some(config), None)
        .and_then(|o| check(&o))
        .map(|(summary, _)| summary)
        .map_err(|e| format!("{e:#}").replace('\n', " "))
}

/// Logs to stderr (the journal under systemd); `RUST_LOG` picks the level, info by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
