//! `memwarden place`: where should it run? N CPUs NUMA-local to the GPU or to free memory, the
//! memory node when that is safe to pin, as Docker/Podman flags, JSON, or written to a cgroup.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use memwarden_plan::place::{PlaceRequest, apply_affinity, apply_cgroup, choose, resolve_cgroup};
use memwarden_plan::topology::{Topology, busy_cpus, find_gpu, gpu_locality, read_topology};
use memwarden_probe::size::{format_size, parse_size};

use crate::cli::Global;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Docker,
    Podman,
    Json,
    Cgroup,
}

#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// CPUs to give the workload
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cpus: u32,
    /// Place next to this GPU (on its NUMA node)
    #[arg(long, value_name = "IDX", allow_negative_numbers = true)]
    pub gpu: Option<u32>,
    /// Memory the workload will use (checked against the node's free memory)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub mem: Option<String>,
    /// Output: text, docker or podman flags, json (a HostConfig fragment), cgroup (file=value)
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub format: Format,
    /// Write cpuset.cpus/cpuset.mems of this existing cgroup (v1 or v2): a path in the
    /// hierarchy such as /docker/ID, or a full path under /sys/fs/cgroup
    #[arg(long, value_name = "CGROUP_PATH", conflicts_with = "pid")]
    pub apply: Option<String>,
    /// Set the CPU affinity of every thread of this running process
    #[arg(long, value_name = "PID", allow_negative_numbers = true)]
    pub pid: Option<u32>,
    /// Place even when --mem is more than this host's memory (a warning instead of an error)
    #[arg(long)]
    pub force: bool,
}

pub fn run(g: &Global, args: PlaceArgs) -> Result<ExitCode> {
    let mem_bytes = args
        .mem
        .as_deref()
        .map(parse_size)
        .transpose()
        .context("--mem")?;
    let mut probe = super::probe(g)?;
    let root = probe.root().clone();
    if args.pid.is_some() && !root.is_system() {
        bail!("--pid acts on a real process of this machine; it cannot be used with --root");
    }
    let topo = read_topology(&root)?;
    if let Some(why) = mem_beyond_host(mem_bytes, &topo) {
        if !args.force {
            bail!("{why}; --force places it anyway");
        }
        eprintln!("memwarden: WARNING: {why}; placed anyway (--force)");
    }
    let gpu = match args.gpu {
        Some(idx) => {
            let gpu = find_gpu(probe.gpus(), idx)?;
            Some(gpu_locality(&root, idx, &gpu.bus_id, gpu.numa_node))
        }
        None => None,
    };
    let target = match &args.apply {
        Some(cg) => Some(resolve_cgroup(&root, cg)?.0),
        None => None,
    };
    let (avoid, holders) = busy_cpus(&root, &topo.online, target.as_deref());
    let p = choose(
        &topo,
        &PlaceRequest {
            cpus: args.cpus,
            gpu,
            mem_bytes,
            avoid,
        },
    )?;
    // Applied before anything is printed: a placement that could not be applied must not
    // reach a script's stdout as if it had been, so a failure prints its error alone.
    let applied = match &args.apply {
        Some(cg) => Some(apply_cgroup(&root, cg, &p)?),
        None => None,
    };
    let threads = match args.pid {
        Some(pid) => Some((pid, apply_affinity(pid, &p.cpus)?)),
        None => None,
    };
    let mems_flag = p
        .cpuset_mems
        .as_ref()
        .map(|m| format!(" --cpuset-mems={m}"))
        .unwrap_or_default();
    match args.format {
        Format::Text => {
            println!(
                "cpus    {}  ({} on {} core(s), node(s) {})",
                p.cpuset_cpus,
                p.cpus.len(),
                p.cores,
                p.nodes
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "mems    {}",
                p.cpuset_mems.as_deref().unwrap_or("(not pinned)")
            );
            println!("docker  --cpuset-cpus={}{mems_flag}", p.cpuset_cpus);
            for r in &p.reasons {
                println!("why     {r}");
            }
            if !holders.is_empty() {
                println!("seen    cpusets of {}", holders.join(", "));
            }
        }
        Format::Docker | Format::Podman => {
            println!("--cpuset-cpus={}{mems_flag}", p.cpuset_cpus)
        }
        Format::Json => {
            let mut v = serde_json::json!({ "CpusetCpus": p.cpuset_cpus });
            if let Some(m) = &p.cpuset_mems {
                v["CpusetMems"] = m.clone().into();
            }
            println!("{v}");
        }
        Format::Cgroup => {
            println!("cpuset.cpus={}", p.cpuset_cpus);
            if let Some(m) = &p.cpuset_mems {
                println!("cpuset.mems={m}");
            }
        }
    }
    if args.format != Format::Text {
        for r in &p.reasons {
            eprintln!("memwarden: {r}");
        }
    }
    if let Some(a) = applied {
        eprintln!(
            "memwarden: wrote cgroup v{} {}: cpuset.cpus={}{}",
            a.version,
            a.cgroup,
            a.cpus,
            a.mems
                .map(|m| format!(" cpuset.mems={m}"))
                .unwrap_or_default()
        );
        for n in &a.notes {
            eprintln!("memwarden: {n}");
        }
    }
    if let Some((pid, threads)) = threads {
        eprintln!(
            "memwarden: process {pid}: {threads} thread(s) now run on CPUs {}; its memory stays \
             where it is (use --apply on its cgroup to pin memory)",
            p.cpuset_cpus
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A memory size that no choice of nodes can hold: more than all of the host's nodes together.
fn mem_beyond_host(mem_bytes: Option<u64>, topo: &Topology) -> Option<String> {
    let mem = mem_bytes?;
    let total: u64 = topo.nodes.iter().map(|n| n.mem_total_bytes).sum();
    (mem > total).then(|| {
        format!(
            "--mem {} is more than this host's memory ({} on {} node(s))",
            format_size(mem),
            format_size(total),
            topo.nodes.len()
        )
    })
}
