//! The memory map: one bar per GPU (and one for host RAM) split into who holds it, with a
//! legend saying how much and where each figure came from. Workloads when the snapshot has
//! them, otherwise the biggest processes; what no one is seen to hold is shown as such.

use memwarden_probe::snapshot::{Gpu, Snapshot, Vendor};

/// How many holders get a segment of their own; the rest are summed into "others".
pub const MAX_SEGMENTS: usize = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub name: String,
    pub bytes: u64,
    /// Where the figure comes from: `NVML`, `fdinfo`, `RSS`, `cgroup`, `estimate`.
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryMap {
    pub title: String,
    pub total: u64,
    pub used: u64,
    /// The biggest holders, largest first (then "others" when there were more).
    pub holders: Vec<Holder>,
    /// Used memory no listed holder accounts for (other users' processes, the driver, the
    /// kernel, page cache); 0 when the holders add up to more than used (shared pages).
    pub unattributed: u64,
}

impl MemoryMap {
    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.used)
    }
}

fn gpu_source(gpu: &Gpu) -> &'static str {
    if gpu.vendor == Vendor::Nvidia {
        "NVML"
    } else {
        "fdinfo"
    }
}

fn finish(title: String, total: u64, used: u64, mut holders: Vec<Holder>) -> MemoryMap {
    holders.retain(|h| h.bytes > 0);
    holders.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    if holders.len() > MAX_SEGMENTS {
        let rest: Vec<Holder> = holders.split_off(MAX_SEGMENTS - 1);
        let source = if rest.iter().all(|h| h.source == rest[0].source) {
            rest[0].source
        } else {
            "mixed"
        };
        holders.push(Holder {
            name: format!("{} others", rest.len()),
            bytes: rest.iter().map(|h| h.bytes).sum(),
            source,
        });
    }
    let attributed: u64 = holders.iter().map(|h| h.bytes).sum();
    MemoryMap {
        title,
        total,
        used,
        unattributed: used.saturating_sub(attributed),
        holders,
    }
}

/// The map of one GPU's VRAM, or of its GTT on a unified-memory part where GTT is the memory
/// that matters. `None` when the device gives no total.
pub fn gpu_map(snap: &Snapshot, gpu: &Gpu) -> Option<MemoryMap> {
    let use_gtt = gpu.unified_memory || gpu.vram_total_bytes.is_none();
    let (total, used, reserved, region) = if use_gtt {
        (gpu.gtt_total_bytes?, gpu.gtt_used_bytes?, 0, "GTT")
    } else {
        let reserved = gpu.vram_reserved_bytes.unwrap_or(0);
        (
            gpu.vram_total_bytes?,
            gpu.vram_used_bytes?,
            reserved,
            "VRAM",
        )
    };
    let per_process = |pid: u32| -> u64 {
        snap.processes
            .iter()
            .filter(|p| p.pid == pid)
            .flat_map(|p| &p.gpu)
            .filter(|g| g.gpu_index == gpu.index)
            .filter_map(|g| if use_gtt { g.gtt_bytes } else { g.vram_bytes })
            .sum()
    };
    let mut holders: Vec<Holder> = if snap.workloads.is_empty() {
        snap.processes
            .iter()
            .map(|p| Holder {
                name: p.name.clone(),
                bytes: per_process(p.pid),
                source: gpu_source(gpu),
            })
            .collect()
    } else {
        snap.workloads
            .iter()
            .map(|w| Holder {
                name: w.name.clone(),
                bytes: w.pids.iter().map(|&pid| per_process(pid)).sum(),
                source: gpu_source(gpu),
            })
            .collect()
    };
    // The driver's own share is taken, not free: a holder of its own, so free stays NVML's.
    holders.push(Holder {
        name: "driver reserved".into(),
        bytes: reserved,
        source: gpu_source(gpu),
    });
    Some(finish(
        format!("GPU {} {region}", gpu.index),
        total,
        used.saturating_add(reserved),
        holders,
    ))
}

/// The map of host RAM: used is total minus available.
pub fn ram_map(snap: &Snapshot) -> MemoryMap {
    let h = &snap.host;
    let used = h.mem_total_bytes.saturating_sub(h.mem_available_bytes);
    let holders: Vec<Holder> = if snap.workloads.is_empty() {
        snap.processes
            .iter()
            .map(|p| Holder {
                name: p.name.clone(),
                bytes: p.rss_bytes.unwrap_or(0),
                source: "RSS",
            })
            .collect()
    } else {
        snap.workloads
            .iter()
            .map(|w| Holder {
                name: w.name.clone(),
                bytes: w.resident_bytes,
                source: w.resident_source.as_str(),
            })
            .collect()
    };
    finish("RAM".into(), h.mem_total_bytes, used, holders)
}

/// Cells of a bar of `width` per holder, then unattributed, then free, by largest remainder so
/// the cells add up to `width` exactly and a holder of any visible size gets at least one.
pub fn cells(map: &MemoryMap, width: usize) -> Vec<usize> {
    let mut parts: Vec<u64> = map.holders.iter().map(|h| h.bytes).collect();
    parts.push(map.unattributed);
    parts.push(map.free());
    let sum: u64 = parts.iter().sum();
    // Holders can add up to more than the total (RSS counts shared pages in each process):
    // scale everything to what was drawn so the bar never overflows.
    let scale = sum.max(map.total).max(1) as f64;
    let exact: Vec<f64> = parts
        .iter()
        .map(|&b| b as f64 / scale * width as f64)
        .collect();
    let mut out: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut left = width.saturating_sub(out.iter().sum());
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa)
    });
    for i in order {
        if left == 0 {
            break;
        }
        if exact[i] > 0.0 {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use memwarden_probe::snapshot::{
        HostMemory, Process, ProcessGpu, ResidentSource, Workload, WorkloadKind,
    };

    fn proc(pid: u32, name: &str, vram: u64, rss: u64) -> Process {
        Process {
            pid,
            starttime: 1,
            ppid: None,
            uid: Some(0),
            name: name.into(),
            cmdline: name.into(),
            rss_bytes: Some(rss),
            cgroup: None,
            gpu: vec![ProcessGpu {
                gpu_index: 0,
                vram_bytes: Some(vram),
                gtt_bytes: None,
            }],
            framework: None,
            cpu_percent: None,
            gpu_utilization_percent: None,
        }
    }

    fn snap() -> Snapshot {
        Snapshot {
            version: 1,
            taken_at_ms: 0,
            hostname: "h".into(),
            host: HostMemory {
                mem_total_bytes: 100 << 30,
                mem_available_bytes: 60 << 30,
                ..Default::default()
            },
            gpus: vec![Gpu {
                index: 0,
                vendor: Vendor::Nvidia,
                name: "H100".into(),
                bus_id: "0000:01:00.0".into(),
                numa_node: Some(0),
                vram_total_bytes: Some(80 << 30),
                vram_used_bytes: Some(60 << 30),
                vram_reserved_bytes: None,
                gtt_total_bytes: None,
                gtt_used_bytes: None,
                unified_memory: false,
                error: None,
                figures: Default::default(),
            }],
            processes: vec![
                proc(10, "vllm", 20 << 30, 4 << 30),
                proc(11, "train", 38 << 30, 30 << 30),
            ],
            workloads: vec![],
            numa: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn gpu_map_by_process_with_unattributed() {
        let s = snap();
        let m = gpu_map(&s, &s.gpus[0]).unwrap();
        assert_eq!(m.holders[0].name, "train");
        assert_eq!(m.holders[0].source, "NVML");
        assert_eq!(m.unattributed, 2 << 30);
        assert_eq!(m.free(), 20 << 30);
        let c = cells(&m, 40);
        assert_eq!(c.iter().sum::<usize>(), 40);
        assert_eq!(c, vec![19, 10, 1, 10]);
    }

    #[test]
    fn the_drivers_reserve_is_held_not_free() {
        let mut s = snap();
        s.gpus[0].vram_reserved_bytes = Some(1 << 30);
        let m = gpu_map(&s, &s.gpus[0]).unwrap();
        let kept = m.holders.iter().find(|h| h.name == "driver reserved");
        assert_eq!(kept.map(|h| h.bytes), Some(1 << 30));
        assert_eq!(m.free(), 19 << 30);
        assert_eq!(m.unattributed, 2 << 30);
    }

    #[test]
    fn workloads_replace_processes() {
        let mut s = snap();
        s.workloads = vec![Workload {
            id: "docker-abc".into(),
            kind: WorkloadKind::Container,
            runtime: Some("docker".into()),
            name: "inference".into(),
            image: None,
            pids: vec![10],
            cgroup_bytes: Some(1 << 30),
            estimate_bytes: Some(5 << 30),
            resident_bytes: 5 << 30,
            resident_source: ResidentSource::Estimate,
            gpu_vram_bytes: 20 << 30,
            gpu_gtt_bytes: 0,
        }];
        let m = gpu_map(&s, &s.gpus[0]).unwrap();
        assert_eq!(m.holders.len(), 1);
        assert_eq!(m.holders[0].bytes, 20 << 30);
        let r = ram_map(&s);
        assert_eq!(r.holders[0].source, "estimate");
        assert_eq!(r.unattributed, 35 << 30);
    }

    #[test]
    fn many_holders_fold_into_others_and_overflow_is_scaled() {
        let mut s = snap();
        s.processes = (0..10)
            .map(|i| proc(i, &format!("p{i}"), 1 << 30, 20 << 30))
            .collect();
        let r = ram_map(&s);
        assert_eq!(r.holders.len(), MAX_SEGMENTS);
        assert_eq!(r.holders.last().unwrap().name, "6 others");
        assert_eq!(r.unattributed, 0);
        assert_eq!(cells(&r, 30).iter().sum::<usize>(), 30);
    }
}
