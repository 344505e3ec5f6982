//! The machine's part of `/metrics` (and of `snapshot --format prometheus`): host memory, each
//! GPU's memory and activity, workloads that are containers, pods or services, and the
//! processes that hold GPU memory.
//!
//! The series are bounded, so that a host running many short-lived processes does not churn
//! labels: see [`series_bound`].

use memwarden_probe::Snapshot;
use memwarden_probe::snapshot::{Gpu, Process, Workload, WorkloadKind};

use super::Out;

/// Per-process series are kept for at most this many GPU-memory holders by default.
pub const DEFAULT_MAX_PROCESSES: usize = 100;

/// Host series: RAM total and available, swap total and free, pressure.
const HOST_SERIES: usize = 5;

type GpuFig = fn(&Gpu) -> Option<f64>;

/// Each GPU's gauges; a figure the device does not give is left out, not exported as 0.
const GPU_FIGS: [(&str, &str, GpuFig); 12] = [
    ("memwarden_gpu_vram_total_bytes", "GPU VRAM size", |g| {
        bytes(g.vram_total_bytes)
    }),
    ("memwarden_gpu_vram_used_bytes", "GPU VRAM in use", |g| {
        bytes(g.vram_used_bytes)
    }),
    (
        "memwarden_gpu_vram_reserved_bytes",
        "GPU VRAM kept by the driver, neither used nor free",
        |g| bytes(g.vram_reserved_bytes),
    ),
    (
        "memwarden_gpu_gtt_total_bytes",
        "GPU GTT (system RAM mapped for the GPU) size",
        |g| bytes(g.gtt_total_bytes),
    ),
    ("memwarden_gpu_gtt_used_bytes", "GPU GTT in use", |g| {
        bytes(g.gtt_used_bytes)
    }),
    (
        "memwarden_gpu_utilization_percent",
        "Share of time the GPU was busy",
        |g| g.figures.utilization_percent,
    ),
    (
        "memwarden_gpu_memory_utilization_percent",
        "Share of time the GPU's memory controller was busy",
        |g| g.figures.memory_utilization_percent,
    ),
    (
        "memwarden_gpu_temperature_celsius",
        "GPU temperature",
        |g| g.figures.temperature_celsius,
    ),
    ("memwarden_gpu_power_watts", "GPU power draw", |g| {
        g.figures.power_watts
    }),
    (
        "memwarden_gpu_power_limit_watts",
        "GPU power limit the driver enforces",
        |g| g.figures.power_limit_watts,
    ),
    ("memwarden_gpu_fan_percent", "GPU fan speed", |g| {
        g.figures.fan_percent
    }),
    (
        "memwarden_gpu_clock_graphics_mhz",
        "GPU graphics clock",
        |g| g.figures.clock_graphics_mhz.map(f64::from),
    ),
];

type WlFig = fn(&Workload) -> u64;

const WORKLOAD_FIGS: [(&str, &str, WlFig); 3] = [
    (
        "memwarden_workload_resident_bytes",
        "A workload's resident memory (max of cgroup and estimate)",
        |w| w.resident_bytes,
    ),
    (
        "memwarden_workload_gpu_vram_bytes",
        "A workload's GPU VRAM",
        |w| w.gpu_vram_bytes,
    ),
    (
        "memwarden_workload_gpu_gtt_bytes",
        "A workload's GPU GTT",
        |w| w.gpu_gtt_bytes,
    ),
];

type ProcFig = fn(&memwarden_probe::snapshot::ProcessGpu) -> Option<u64>;

const PROCESS_FIGS: [(&str, &str, ProcFig); 2] = [
    (
        "memwarden_process_gpu_vram_bytes",
        "GPU VRAM held by a process (the largest holders)",
        |g| g.vram_bytes,
    ),
    (
        "memwarden_process_gpu_gtt_bytes",
        "GPU GTT held by a process (the largest holders)",
        |g| g.gtt_bytes,
    ),
];

fn bytes(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// A workload with a name that outlives its processes; a bare process is a `pid:` workload
/// whose label would be new with every process, so it is left to the per-process series.
fn exported(w: &Workload) -> bool {
    matches!(
        w.kind,
        WorkloadKind::Container | WorkloadKind::Pod | WorkloadKind::Service
    )
}

fn kind_label(k: WorkloadKind) -> &'static str {
    match k {
        WorkloadKind::Container => "container",
        WorkloadKind::Service => "service",
        WorkloadKind::Pod => "pod",
        WorkloadKind::Process => "process",
    }
}

/// The processes holding GPU memory, largest first, at most `max`.
pub(crate) fn gpu_holders(snap: &Snapshot, max: usize) -> Vec<&Process> {
    let mut holders: Vec<&Process> = snap
        .processes
        .iter()
        .filter(|p| p.gpu_vram_bytes() + p.gpu_gtt_bytes() > 0)
        .collect();
    holders.sort_by_key(|p| {
        (
            std::cmp::Reverse(p.gpu_vram_bytes() + p.gpu_gtt_bytes()),
            p.pid,
        )
    });
    holders.truncate(max);
    holders
}

/// The most series [`render`] writes for this snapshot, whatever the number of processes:
/// host (5) + GPUs × 12 gauges + 3 × container/pod/service workloads + 2 × GPUs × `max`.
pub fn series_bound(snap: &Snapshot, max_processes: usize) -> usize {
    let gpus = snap.gpus.len();
    let workloads = snap.workloads.iter().filter(|w| exported(w)).count();
    HOST_SERIES
        + gpus * GPU_FIGS.len()
        + workloads * WORKLOAD_FIGS.len()
        + PROCESS_FIGS.len() * gpus * max_processes
}

pub(super) fn render(o: &mut Out, s: &Snapshot, max_processes: usize) {
    let h = &s.host;
    let host: [(&str, &str, Option<f64>); HOST_SERIES] = [
        (
            "memwarden_host_memory_total_bytes",
            "Host RAM (MemTotal)",
            Some(h.mem_total_bytes as f64),
        ),
        (
            "memwarden_host_memory_available_bytes",
            "Host RAM available (MemAvailable)",
            Some(h.mem_available_bytes as f64),
        ),
        (
            "memwarden_host_swap_total_bytes",
            "Swap size",
            Some(h.swap_total_bytes as f64),
        ),
        (
            "memwarden_host_swap_free_bytes",
            "Free swap",
            Some(h.swap_free_bytes as f64),
        ),
        (
            "memwarden_host_memory_pressure_some_avg10",
            "Memory pressure, some avg10 (percent)",
            h.psi_memory_some_avg10,
        ),
    ];
    for (name, help, v) in host {
        if let Some(v) = v {
            o.one(name, "gauge", help, v);
        }
    }
    for (name, help, f) in GPU_FIGS {
        o.family(name, "gauge", help);
        for g in &s.gpus {
            if let Some(v) = f(g) {
                let idx = g.index.to_string();
                o.sample(
                    name,
                    &[
                        ("gpu", &idx),
                        ("name", &g.name),
                        ("vendor", g.vendor.as_str()),
                        ("bus_id", &g.bus_id),
                    ],
                    v,
                );
            }
        }
    }
    for (name, help, f) in WORKLOAD_FIGS {
        o.family(name, "gauge", help);
        for w in s.workloads.iter().filter(|w| exported(w)) {
            o.sample(
                name,
                &[
                    ("workload", &w.id),
                    ("kind", kind_label(w.kind)),
                    ("name", &w.name),
                ],
                f(w) as f64,
            );
        }
    }
    // Who holds the card, for fleets without workload attribution; only the largest holders,
    // so that a burst of short-lived GPU processes cannot grow the series without end.
    let holders = gpu_holders(s, max_processes);
    for (name, help, f) in PROCESS_FIGS {
        o.family(name, "gauge", help);
        for p in &holders {
            for g in &p.gpu {
                if let Some(v) = f(g).filter(|&v| v > 0) {
                    let (pid, gpu) = (p.pid.to_string(), g.gpu_index.to_string());
                    o.sample(
                        name,
                        &[("pid", &pid), ("name", &p.name), ("gpu", &gpu)],
                        v as f64,
                    );
                }
            }
        }
    }
}
