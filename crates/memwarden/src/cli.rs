//! The command line: global options and one subcommand per question memwarden answers.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::{cmd, help};

#[derive(Debug, Parser)]
#[command(
    name = "memwarden",
    version,
    about = "Keeps order in the memory of machines that run AI workloads: GPU memory and host RAM",
    long_about = "Keeps order in the memory of machines that run AI workloads.\n\n\
memwarden shows who holds GPU memory (VRAM, and GTT where the GPU shares system RAM) and host \
RAM, tells where it is heading, answers \"will this fit, how many, and where\" before a launch, \
and, as a daemon in front of model servers, makes room on the GPU when a job needs it.",
    after_help = "Exit codes: 0 success, 1 the answer is no (does not fit, swapping), 2 bad input.",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The global options stand under their own heading, after the command's own options.
const GLOBAL_HEADING: &str = "Global options";

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = GLOBAL_HEADING)]
pub struct Global {
    /// Read /proc, /sys and /run under this directory instead of / (a fake machine, a
    /// container's view of the host)
    #[arg(
        long,
        global = true,
        env = "MEMWARDEN_ROOT",
        default_value = "/",
        value_name = "DIR"
    )]
    pub root: PathBuf,
    /// Where GPU figures come from: auto (NVML if the NVIDIA driver loads, plus DRM devices),
    /// nvml, drm or none
    #[arg(
        long,
        global = true,
        env = "MEMWARDEN_GPU_SOURCE",
        default_value = "auto",
        value_name = "SOURCE"
    )]
    pub gpu_source: String,
    /// Do not ask inference servers (llama.cpp, vLLM, Ollama, SGLang, TGI) for their metrics;
    /// by default those listening on loopback are asked, at most once per 5 s each
    #[arg(
        long,
        global = true,
        env = "MEMWARDEN_NO_SCRAPE",
        // The environment's value: 1/0, true/false, yes/no, on/off.
        value_parser = BoolishValueParser::new()
    )]
    pub no_scrape: bool,
    /// An address besides loopback whose servers may be asked (a container's bridge address);
    /// repeat for more
    #[arg(
        long,
        global = true,
        env = "MEMWARDEN_SCRAPE_HOSTS",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub scrape_host: Vec<std::net::IpAddr>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Who holds the memory right now: host, GPUs, workloads and processes
    #[command(after_help = help::SNAPSHOT)]
    Snapshot(cmd::snapshot::SnapshotArgs),
    /// The live view: who holds GPU and host memory, where it is heading; kill; replay
    #[command(after_help = help::TOP)]
    Top(cmd::top::TopArgs),
    /// Append a snapshot per interval to a JSON Lines file, for `analyze` and `top --replay`
    #[command(after_help = help::RECORD)]
    Record(cmd::record::RecordArgs),
    /// What the memory did over a recording: phases, OOM ranges, changepoints, peaks
    #[command(after_help = help::ANALYZE)]
    Analyze(cmd::analyze::AnalyzeArgs),
    /// Will this model fit, and how? Weights, KV cache and overhead from a GGUF or safetensors
    /// header
    #[command(after_help = help::ESTIMATE)]
    Estimate(cmd::estimate::EstimateArgs),
    /// How many workers fit in free RAM, VRAM or GTT? Prints the number alone
    #[command(after_help = help::FIT)]
    Fit(cmd::fit::FitArgs),
    /// Where should it run? NUMA-local CPUs and memory node, as Docker flags or into a cgroup
    #[command(after_help = help::PLACE)]
    Place(cmd::place::PlaceArgs),
    /// Run the broker: make room on the GPU for model servers, and export /metrics
    #[command(after_help = help::SERVE)]
    Serve(cmd::serve::ServeArgs),
    /// Run a command under a broker lease (a batch job taking its turn on the GPU)
    #[command(after_help = help::RUN)]
    Run(cmd::run::RunArgs),
    /// What memwarden can and cannot see on this machine, and how to fix each gap
    #[command(after_help = help::DOCTOR)]
    Doctor(cmd::doctor::DoctorArgs),
    /// The broker's pools and consumers as tables (or --json)
    #[command(after_help = help::STATUS)]
    Status(cmd::ctl::StatusArgs),
    /// Load a consumer now (evicting what the broker must) and keep it loaded
    #[command(after_help = help::LOAD)]
    Load(cmd::ctl::ConsumerArgs),
    /// Unload a consumer now
    #[command(after_help = help::UNLOAD)]
    Unload(cmd::ctl::ConsumerArgs),
    /// What a consumer's process printed, as the broker keeps it (-f to follow)
    #[command(after_help = help::LOGS)]
    Logs(cmd::ctl::LogsArgs),
}

/// Global options that a subcommand does not use, hidden from its `--help` (still accepted,
/// so that `memwarden --root DIR analyze …` is not an error).
const UNUSED_GLOBALS: &[(&str, &[&str])] = &[
    (
        "analyze",
        &["root", "gpu_source", "no_scrape", "scrape_host"],
    ),
    ("run", &["root", "gpu_source", "no_scrape", "scrape_host"]),
    ("estimate", &["no_scrape", "scrape_host"]),
    ("fit", &["no_scrape", "scrape_host"]),
    ("place", &["no_scrape", "scrape_host"]),
    ("doctor", &["no_scrape", "scrape_host"]),
    (
        "status",
        &["root", "gpu_source", "no_scrape", "scrape_host"],
    ),
    ("load", &["root", "gpu_source", "no_scrape", "scrape_host"]),
    (
        "unload",
        &["root", "gpu_source", "no_scrape", "scrape_host"],
    ),
];

/// The command line's definition, with the global options shown only where they matter.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    // A subcommand that has its own copy of a global option does not get the global one:
    // the copy is the same option, hidden.
    let globals: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    for (sub, hidden) in UNUSED_GLOBALS {
        cmd = cmd.mut_subcommand(*sub, |mut s| {
            for a in globals
                .iter()
                .filter(|a| hidden.contains(&a.get_id().as_str()))
            {
                s = s.arg(a.clone().global(false).hide(true));
            }
            s
        });
    }
    cmd
}

/// Parses this process's arguments.
pub fn parse() -> Result<Cli, clap::Error> {
    let mut cmd = command();
    let m = cmd.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches(&m).map_err(|e| e.format(&mut cmd))
}

/// The longest duration any flag takes: past it a time is no longer a plan but a typo, and far
/// past it (`300000000000y`) adding it to a clock overflows.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// A duration flag (`500ms`, `2m`, `1h`), at most [`MAX_DURATION`].
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX_DURATION {
        return Err("at most 10 years".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// Options whose values are names, paths, addresses or choices: for them a value that
    /// starts with '-' is more likely a forgotten value before the next flag.
    const NOT_NUMERIC: &[&str] = &[
        "apply",
        "broker",
        "config",
        "consumer",
        "csv",
        "engine",
        "flash-attn",
        "format",
        "kv-cache-dtype",
        "kv-type",
        "kv-type-k",
        "kv-type-v",
        "listen",
        "out",
        "pool",
        "replay",
        "theme",
        "token",
        "workload",
    ];

    /// `--want -3` must be refused as a bad value of `--want`, not as an unknown argument `-3`
    /// that leaves the user to guess which flag it was for. A new numeric option has to allow
    /// negative numbers (or hyphen values, for sizes and durations) to pass.
    #[test]
    fn every_numeric_option_names_itself_when_given_a_negative_value() {
        let cmd = Cli::command();
        let mut checked = Vec::new();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if arg.is_positional()
                    || !arg.get_action().takes_values()
                    || NOT_NUMERIC.contains(&long)
                {
                    continue;
                }
                let flag = format!("--{long}");
                checked.push(format!("{} {flag}", sub.get_name()));
                let Err(e) = Cli::try_parse_from(["memwarden", sub.get_name(), &flag, "-3"]) else {
                    continue;
                };
                let text = e.to_string();
                assert_ne!(e.kind(), ErrorKind::UnknownArgument, "{flag}: {text}");
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidValue | ErrorKind::ValueValidation
                ) {
                    assert!(text.contains(&flag), "{flag}: {text}");
                }
            }
        }
        assert!(checked.len() >= 25, "{checked:?}");
    }
}
