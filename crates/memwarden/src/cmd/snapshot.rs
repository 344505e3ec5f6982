//! `memwarden snapshot`: one reading of the machine, as a table or as the JSON contract.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use memwarden_probe::Snapshot;
use memwarden_probe::sanitize::sanitize;
use memwarden_probe::snapshot::Workload;

use crate::cli::Global;
use crate::view;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Print the snapshot as one JSON object (the documented contract) instead of a table
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// table, json (as --json), or prometheus: exactly the machine part of `serve`'s /metrics,
    /// for node_exporter's textfile collector
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// With --format prometheus: per-process series for at most this many GPU-memory holders
    #[arg(
        long,
        value_name = "N",
        default_value_t = memwarden_broker::metrics::DEFAULT_MAX_PROCESSES,
        allow_negative_numbers = true
    )]
    pub metrics_processes: usize,
    /// How many processes the table lists (by GPU memory, then host memory); 0 lists all
    #[arg(
        long,
        default_value_t = 15,
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub top: usize,
    /// Narrow to one workload: its name (`comfyui`, `ollama.service`) or id (`docker:4f3c…`)
    #[arg(long, value_name = "NAME")]
    pub workload: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Prometheus,
}

pub fn run(g: &Global, args: SnapshotArgs) -> Result<ExitCode> {
    let format = match (args.json, args.format) {
        (true, _) => Format::Json,
        (false, f) => f.unwrap_or(Format::Table),
    };
    let mut probe = super::probe(g)?;
    let mut snap = probe.snapshot()?;
    if let Some(name) = &args.workload {
        narrow(&mut snap, name)?;
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string(&snap)?),
        Format::Prometheus => print!(
            "{}",
            memwarden_broker::metrics::render_limited(None, Some(&snap), args.metrics_processes)
        ),
        Format::Table => {
            if let Some(notice) = probe.gpu_notice(&snap.gpus) {
                eprintln!("memwarden: {notice}");
            }
            memwarden_probe::sanitize::sanitize_snapshot(&mut snap);
            print!("{}", view::render_snapshot(&snap, args.top));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps one workload and its processes.
fn narrow(snap: &mut Snapshot, name: &str) -> Result<()> {
    let index = choose_workload(&snap.workloads, name)?;
    let w = snap.workloads.swap_remove(index);
    snap.processes.retain(|p| w.pids.contains(&p.pid));
    snap.workloads = vec![w];
    Ok(())
}

/// How many matching ids an ambiguity error lists.
const SHOWN_IDS: usize = 12;

/// The workload a name means: an id, else a name that one workload alone has, else the start
/// of one id alone. Several matches are an error that lists their ids, never a silent pick.
fn choose_workload(workloads: &[Workload], name: &str) -> Result<usize> {
    if let Some(i) = workloads.iter().position(|w| w.id == name) {
        return Ok(i);
    }
    let by_name: Vec<usize> = (0..workloads.len())
        .filter(|&i| workloads[i].name == name)
        .collect();
    let by_prefix: Vec<usize> = (0..workloads.len())
        .filter(|&i| workloads[i].id.starts_with(name))
        .collect();
    let (matches, how) = if by_name.is_empty() {
        (by_prefix, "ids start with")
    } else {
        (by_name, "workloads are named")
    };
    match matches[..] {
        [i] => Ok(i),
        [] => {
            let mut names: Vec<String> = workloads.iter().map(|w| sanitize(&w.name, 60)).collect();
            names.sort_unstable();
            names.dedup();
            names.truncate(20);
            bail!(
                "no workload named {name:?} (there are: {})",
                names.join(", ")
            )
        }
        _ => {
            let ids: Vec<String> = matches
                .iter()
                .take(SHOWN_IDS)
                .map(|&i| sanitize(&workloads[i].id, 80))
                .collect();
            let more = matches.len().saturating_sub(SHOWN_IDS);
            bail!(
                "{name:?} is ambiguous: {} {how} it; give one id: {}{}",
                matches.len(),
                ids.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use memwarden_probe::snapshot::{ResidentSource, WorkloadKind};

    use super::*;

    fn wl(id: &str, name: &str) -> Workload {
        Workload {
            id: id.into(),
            kind: WorkloadKind::Process,
            runtime: None,
            name: name.into(),
            image: None,
            pids: Vec::new(),
            cgroup_bytes: None,
            estimate_bytes: None,
            resident_bytes: 0,
            resident_source: ResidentSource::Rss,
            gpu_vram_bytes: 0,
            gpu_gtt_bytes: 0,
        }
    }

    #[test]
    fn a_name_or_prefix_shared_by_several_is_ambiguous() {
        let w = [
            wl("pid:100", "bash"),
            wl("pid:101", "bash"),
            wl("podman:abcdef", "comfyui"),
            wl("pid:1", "init"),
        ];
        assert_eq!(choose_workload(&w, "comfyui").unwrap(), 2);
        assert_eq!(choose_workload(&w, "podman:abc").unwrap(), 2);
        // An exact id wins over being the start of others.
        assert_eq!(choose_workload(&w, "pid:1").unwrap(), 3);
        let e = choose_workload(&w, "bash").unwrap_err().to_string();
        assert_eq!(
            e,
            "\"bash\" is ambiguous: 2 workloads are named it; give one id: pid:100, pid:101"
        );
        let e = choose_workload(&w, "pid:10").unwrap_err().to_string();
        assert!(e.contains("2 ids start with it"), "{e}");
        let e = choose_workload(&w, "nothing").unwrap_err().to_string();
        assert!(e.starts_with("no workload named"), "{e}");
    }
}
