//! The snapshot: one reading of the machine, in the shape of the JSON contract (DESIGN.md).
//!
//! Field names are a contract with users' scripts and with `record`/`analyze`/`top --replay`:
//! add fields, never rename them. Sizes are bytes; `None` serialises as `null` and means
//! "not known", never zero.

use serde::{Deserialize, Serialize};

/// The version written into every snapshot and recording line.
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub taken_at_ms: u64,
    pub hostname: String,
    pub host: HostMemory,
    pub gpus: Vec<Gpu>,
    pub processes: Vec<Process>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub numa: Vec<NumaNode>,
    /// Short notes on what was skipped or degraded while reading (a GPU source missing, a
    /// malformed metrics endpoint, ...). Empty when everything was read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Snapshot {
    /// Each process's parent, for a process tree; empty for a recording made before parents
    /// were written.
    pub fn parents(&self) -> std::collections::HashMap<u32, u32> {
        self.processes
            .iter()
            .filter_map(|p| Some((p.pid, p.ppid?)))
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMemory {
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    /// `some avg10=` of /proc/pressure/memory; `None` when the kernel has no PSI.
    pub psi_memory_some_avg10: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Nvidia,
    Amd,
    Intel,
    Other,
}

impl Vendor {
    /// From a PCI vendor id as sysfs prints it (`0x1002`).
    pub fn from_pci_id(id: u32) -> Vendor {
        match id {
            0x10de => Vendor::Nvidia,
            0x1002 => Vendor::Amd,
            0x8086 => Vendor::Intel,
            _ => Vendor::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Amd => "amd",
            Vendor::Intel => "intel",
            Vendor::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub vendor: Vendor,
    pub name: String,
    /// PCI address in the kernel's form, `0000:03:00.0`.
    pub bus_id: String,
    pub numa_node: Option<u32>,
    pub vram_total_bytes: Option<u64>,
    pub vram_used_bytes: Option<u64>,
    /// VRAM neither used nor free: what the driver and firmware keep (NVIDIA); `None` where
    /// the driver has no such figure. Absent from older recordings.
    #[serde(default)]
    pub vram_reserved_bytes: Option<u64>,
    pub gtt_total_bytes: Option<u64>,
    pub gtt_used_bytes: Option<u64>,
    /// The GPU works mostly out of system RAM (GTT dwarfs the VRAM carve-out, as on APUs).
    pub unified_memory: bool,
    /// Why some figure of this device could not be read; `None` when all were.
    pub error: Option<String>,
    /// How busy, hot and power-hungry the device is; each `null` where it does not say.
    /// Absent from older recordings.
    #[serde(flatten, default)]
    pub figures: DeviceFigures,
}

/// A device's activity figures. Each is `None` when the device (or its driver) does not give
/// it: never a made-up 0, which would read as "idle" or "cold".
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceFigures {
    /// Share of the last sample period the GPU's engines were busy.
    #[serde(default)]
    pub utilization_percent: Option<f64>,
    /// Share of the period the memory controller was busy.
    #[serde(default)]
    pub memory_utilization_percent: Option<f64>,
    #[serde(default)]
    pub temperature_celsius: Option<f64>,
    #[serde(default)]
    pub power_watts: Option<f64>,
    /// The power limit the driver enforces.
    #[serde(default)]
    pub power_limit_watts: Option<f64>,
    #[serde(default)]
    pub fan_percent: Option<f64>,
    #[serde(default)]
    pub clock_graphics_mhz: Option<u32>,
}

impl Gpu {
    /// Free VRAM, when total and used are known: what neither a process nor the driver holds.
    pub fn vram_free_bytes(&self) -> Option<u64> {
        Some(
            self.vram_total_bytes?
                .saturating_sub(self.vram_used_bytes?)
                .saturating_sub(self.vram_reserved_bytes.unwrap_or(0)),
        )
    }

    /// Free GTT, when both figures are known.
    pub fn gtt_free_bytes(&self) -> Option<u64> {
        Some(self.gtt_total_bytes?.saturating_sub(self.gtt_used_bytes?))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// Field 22 of /proc/PID/stat, in clock ticks since boot: with the pid, the identity.
    pub starttime: u64,
    /// The parent's pid (field 4 of /proc/PID/stat), for the process tree; absent from older
    /// recordings.
    #[serde(default)]
    pub ppid: Option<u32>,
    pub uid: Option<u32>,
    pub name: String,
    pub cmdline: String,
    pub rss_bytes: Option<u64>,
    /// The process's memory cgroup path (v2 unified path, else the v1 memory controller's).
    pub cgroup: Option<String>,
    pub gpu: Vec<ProcessGpu>,
    /// What the process runs (vLLM, PyTorch, llama.cpp, ...), where memwarden looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<crate::framework::Framework>,
    /// CPU time used between the last two readings, as a share of one CPU (200 is two cores
    /// busy, as `top` counts); `null` where only one reading exists (a single `snapshot`).
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    /// How busy the process kept the GPU: NVML's per-process SM samples, or the busiest
    /// `drm-engine-*` of its DRM clients between two readings; summed over devices. `null`
    /// where no reading says (never a made-up 0).
    #[serde(default)]
    pub gpu_utilization_percent: Option<f64>,
}

impl Process {
    pub fn identity(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            starttime: self.starttime,
        }
    }

    pub fn gpu_vram_bytes(&self) -> u64 {
        self.gpu.iter().filter_map(|g| g.vram_bytes).sum()
    }

    pub fn gpu_gtt_bytes(&self) -> u64 {
        self.gpu.iter().filter_map(|g| g.gtt_bytes).sum()
    }
}

/// A process's identity: a pid alone is reused by the kernel, the pair is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub starttime: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessGpu {
    pub gpu_index: u32,
    pub vram_bytes: Option<u64>,
    pub gtt_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Container,
    Service,
    Pod,
    Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResidentSource {
    /// The workload's own memory cgroup.
    Cgroup,
    /// Model files held open plus what its inference server reports: larger than the reading.
    Estimate,
    /// The processes' resident set, for a process with no cgroup of its own.
    Rss,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Container => "container",
            WorkloadKind::Service => "service",
            WorkloadKind::Pod => "pod",
            WorkloadKind::Process => "process",
        }
    }
}

impl ResidentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ResidentSource::Cgroup => "cgroup",
            ResidentSource::Estimate => "estimate",
            ResidentSource::Rss => "rss",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub id: String,
    pub kind: WorkloadKind,
    /// `docker`, `podman`, `containerd`, `cri-o`, `kubernetes`, `systemd`, or `null`.
    pub runtime: Option<String>,
    pub name: String,
    /// The container's image, where the runtime says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub pids: Vec<u32>,
    pub cgroup_bytes: Option<u64>,
    pub estimate_bytes: Option<u64>,
    pub resident_bytes: u64,
    pub resident_source: ResidentSource,
    pub gpu_vram_bytes: u64,
    pub gpu_gtt_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumaNode {
    pub node: u32,
    /// The kernel's cpulist form, `0-7,16-23`.
    pub cpus: String,
    pub mem_total_bytes: u64,
    pub mem_free_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ppid: &str) -> String {
        format!(
            r#"{{"version":1,"taken_at_ms":0,"hostname":"h","host":{{"mem_total_bytes":1,"mem_available_bytes":1,"swap_total_bytes":0,"swap_free_bytes":0,"psi_memory_some_avg10":null}},"gpus":[],"processes":[{{"pid":7,"starttime":1,{ppid}"uid":null,"name":"x","cmdline":"x","rss_bytes":null,"cgroup":null,"gpu":[]}}]}}"#
        )
    }

    #[test]
    fn parents_come_from_the_recording_when_it_has_them() {
        let new: Snapshot = serde_json::from_str(&line(r#""ppid":3,"#)).unwrap();
        assert_eq!(new.parents().get(&7), Some(&3));
        // A line written before ppid was in the contract still reads, with no tree.
        let old: Snapshot = serde_json::from_str(&line("")).unwrap();
        assert_eq!(old.processes[0].ppid, None);
        assert!(old.parents().is_empty());
    }
}
