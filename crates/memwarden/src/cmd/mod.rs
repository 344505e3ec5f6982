//! One module per subcommand; each turns its arguments into library calls and output.

pub mod analyze;
pub mod ctl;
pub mod doctor;
pub mod estimate;
mod estimate_engine;
pub mod fit;
pub mod place;
pub mod record;
pub mod run;
pub mod serve;
mod serve_check;
pub mod snapshot;
pub mod top;

use std::process::ExitCode;

use anyhow::{Result, bail};
use memwarden_probe::scrape::ScrapeConfig;
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

use crate::cli::{Cli, Command, Global};

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Snapshot(a) => snapshot::run(g, a),
        Command::Record(a) => record::run(g, a),
        Command::Analyze(a) => analyze::run(g, a),
        Command::Estimate(a) => estimate::run(g, a),
        Command::Fit(a) => fit::run(g, a),
        Command::Place(a) => place::run(g, a),
        Command::Serve(a) => serve::run(g, a),
        Command::Run(a) => run::run(g, a),
        Command::Top(a) => top::run(g, a),
        Command::Doctor(a) => doctor::run(g, a),
        Command::Status(a) => ctl::status(g, a),
        Command::Load(a) => ctl::load(g, a),
        Command::Unload(a) => ctl::unload(g, a),
        Command::Logs(a) => ctl::logs(g, a),
    }
}

/// The probe for the global options: the root must exist, the GPU source must be known.
pub fn probe(g: &Global) -> Result<Probe> {
    let source: GpuSourceKind = g.gpu_source.parse()?;
    let root = HostRoot::new(&g.root)?;
    let system = root.is_system();
    let mut probe = Probe::new(root, source);
    if let Some(why) = probe.source_unavailable() {
        bail!("--gpu-source {}: {why}", g.gpu_source);
    }
    probe.set_scrape_config(scrape_config(g, system));
    Ok(probe)
}

/// Inference servers are asked only on the real machine (a fake root's pids are not
/// running), unless the user said not to.
pub fn scrape_config(g: &Global, system: bool) -> ScrapeConfig {
    ScrapeConfig {
        enabled: system && !g.no_scrape,
        allow_hosts: g.scrape_host.clone(),
    }
}
