//! `memwarden snapshot`: one reading of the machine, as a table or as the JSON contract.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use memwarden_probe::Snapshot;

use crate::cli::Global;
use crate::view;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Print the snapshot as one JSON object (the documented contract) instead of a table
    #[arg(long)]
    pub json: bool,
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

pub fn run(g: &Global, args: SnapshotArgs) -> Result<ExitCode> {
    let mut probe = super::probe(g)?;
    let mut snap = probe.snapshot()?;
    if let Some(name) = &args.workload {
        narrow(&mut snap, name)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&snap)?);
    } else {
        if let Some(notice) = probe.gpu_notice(&snap.gpus) {
            eprintln!("memwarden: {notice}");
        }
        memwarden_probe::sanitize::sanitize_snapshot(&mut snap);
        print!("{}", view::render_snapshot(&snap, args.top));
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps one workload and its processes; the name must match a workload's name or id exactly,
/// or be the start of exactly one id.
fn narrow(snap: &mut Snapshot, name: &str) -> Result<()> {
    let exact = snap
        .workloads
        .iter()
        .position(|w| w.name == name || w.id == name);
    let index = match exact {
        Some(i) => i,
        None => {
            let prefixed: Vec<usize> = (0..snap.workloads.len())
                .filter(|&i| snap.workloads[i].id.starts_with(name))
                .collect();
            match prefixed[..] {
                [i] => i,
                _ => {
                    let mut names: Vec<&str> =
                        snap.workloads.iter().map(|w| w.name.as_str()).collect();
                    names.sort_unstable();
                    names.dedup();
                    names.truncate(20);
                    bail!(
                        "no workload named {name:?} (there are: {})",
                        names.join(", ")
                    );
                }
            }
        }
    };
    let w = snap.workloads.swap_remove(index);
    snap.processes.retain(|p| w.pids.contains(&p.pid));
    snap.workloads = vec![w];
    Ok(())
}
