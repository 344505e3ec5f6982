//! What the processes of the consumers hold on their GPUs, from one scan of the driver's
//! per-process figures (DRM fdinfo, or NVML's list), and when such a figure cannot be trusted.

use std::collections::HashMap;

use memwarden_probe::snapshot::{Gpu, ProcessGpu, Vendor};

use super::Target;
use crate::config::PoolKind;

/// The GPU memory of every process of the targets' GPUs, from one scan.
#[derive(Debug, Default)]
pub(super) struct GpuUse {
    /// pid -> its figures on each of those GPUs it uses.
    per_pid: HashMap<u32, Vec<ProcessGpu>>,
    /// Processes whose fds could not be read: fdinfo says nothing of them.
    unreadable: Vec<u32>,
    /// GPUs whose figures were all read: on another, a process that shows nothing may still
    /// hold memory.
    readable: Vec<u32>,
    /// GPUs whose per-process figures come from the driver (NVML) rather than from each
    /// process's own fdinfo.
    driver_listed: Vec<u32>,
}

impl GpuUse {
    /// From [`Probe::gpu_use_of`]'s answer for the targets' processes.
    pub(super) fn new(
        (gpus, per_pid, unreadable): (Vec<Gpu>, HashMap<u32, Vec<ProcessGpu>>, Vec<u32>),
        targets: &[Target],
    ) -> GpuUse {
        let ours: Vec<u32> = targets.iter().filter_map(|t| t.gpu).collect();
        GpuUse {
            readable: gpus
                .iter()
                .filter(|g| g.error.is_none() && ours.contains(&g.index))
                .map(|g| g.index)
                .collect(),
            driver_listed: gpus
                .iter()
                .filter(|g| g.vendor == Vendor::Nvidia)
                .map(|g| g.index)
                .collect(),
            per_pid,
            unreadable,
        }
    }

    /// What `pids` hold on the target's GPU; `None` when that GPU or one of their figures
    /// could not be read.
    pub(super) fn held(&self, pids: &[u32], t: &Target) -> Option<u64> {
        let gpu = t.gpu?;
        if !self.readable.contains(&gpu) {
            return None;
        }
        // fdinfo figures exist only for processes whose fds we may read: another user's
        // server would show nothing, and nothing would count as holding 0.
        if !self.driver_listed.contains(&gpu) && pids.iter().any(|p| self.unreadable.contains(p)) {
            return None;
        }
        pids.iter()
            .filter_map(|p| self.per_pid.get(p))
            .flatten()
            .filter(|g| g.gpu_index == gpu)
            .map(|g| match t.kind {
                PoolKind::Vram => g.vram_bytes,
                _ => g.gtt_bytes,
            })
            .sum()
    }
}
