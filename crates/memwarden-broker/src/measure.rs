//! Readings through the probe: a pool's live free memory, and what each consumer's processes
//! really hold. Everything here blocks (it reads /proc and the GPU driver): call it on a
//! blocking thread.

use std::collections::HashMap;
use std::time::Instant;

use memwarden_probe::Probe;
use memwarden_probe::net::{owner_of_port, pid_owns_port};
use memwarden_probe::probe::ScannedProcess;

use crate::config::{PoolConfig, PoolKind};

/// How to find a consumer's processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locator {
    /// The process group of a process the broker started.
    pub pgid: Option<i32>,
    /// The port of a local upstream: its owner and that owner's descendants.
    pub port: Option<u16>,
}

impl Locator {
    pub fn is_empty(&self) -> bool {
        self.pgid.is_none() && self.port.is_none()
    }
}

/// What to measure for one consumer: where to look and in which pool's terms.
#[derive(Debug, Clone)]
pub struct Target {
    pub locator: Locator,
    pub kind: PoolKind,
    pub gpu: Option<u32>,
}

/// One pool's live reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolReading {
    pub free: Option<u64>,
    pub total: Option<u64>,
}

/// Remembers which process owns which port, so that a reading does not search every process
/// each time; a remembered owner is checked before it is trusted.
#[derive(Debug, Default)]
pub struct Measurer {
    /// port -> (pid, starttime, when the ownership was last checked through the socket tables)
    port_owner: HashMap<u16, (u32, u64, Instant)>,
}

/// How long a port's owner is trusted without reading the socket tables again, as long as the
/// same process (pid and start time) lives. Those tables list every socket of the machine
/// (thousands on a busy server), so they are not read on every measurement.
const RECHECK_OWNER: std::time::Duration = std::time::Duration::from_secs(30);

impl Measurer {
    /// The live readings of `pools`.
    pub fn pools(&mut self, probe: &mut Probe, pools: &[PoolConfig]) -> Vec<PoolReading> {
        let host = if pools.iter().any(|p| p.kind == PoolKind::Ram) {
            probe.host_memory().ok()
        } else {
            None
        };
        let gpus = if pools.iter().any(|p| p.kind != PoolKind::Ram) {
            probe.gpus()
        } else {
            Vec::new()
        };
        pools
            .iter()
            .map(|p| match p.kind {
                PoolKind::Ram => PoolReading {
                    free: host.as_ref().map(|h| h.mem_available_bytes),
                    total: host.as_ref().map(|h| h.mem_total_bytes),
                },
                PoolKind::Vram | PoolKind::Gtt => {
                    let g = gpus.iter().find(|g| Some(g.index) == p.gpu);
                    match (g, p.kind) {
                        (Some(g), PoolKind::Vram) => PoolReading {
                            free: g.vram_free_bytes(),
                            total: g.vram_total_bytes,
                        },
                        (Some(g), _) => PoolReading {
                            free: g.gtt_free_bytes(),
                            total: g.gtt_total_bytes,
                        },
                        (None, _) => PoolReading::default(),
                    }
                }
            })
            .collect()
    }

    /// What each target holds: `Some(0)` when its processes are gone, `None` when there is no
    /// way to find them (a remote upstream) or no figure for them (a GPU that is unreadable).
    pub fn consumers(&mut self, probe: &mut Probe, targets: &[Target]) -> Vec<Option<u64>> {
        if targets.iter().all(|t| t.locator.is_empty()) {
            return vec![None; targets.len()];
        }
        let (scan, _) = probe.scan_processes();
        let want_gpu = targets.iter().any(|t| t.kind != PoolKind::Ram);
        let gpu_per_pid: HashMap<u32, (u64, u64, u32)> = if want_gpu {
            gpu_by_pid(probe, targets)
        } else {
            HashMap::new()
        };
        targets
            .iter()
            .map(|t| {
                if t.locator.is_empty() {
                    return None;
                }
                let pids = self.pids(probe, &scan, &t.locator);
                match t.kind {
                    PoolKind::Ram => Some(
                        scan.iter()
                            .filter(|s| pids.contains(&s.process.pid))
                            .filter_map(|s| s.process.rss_bytes)
                            .sum(),
                    ),
                    PoolKind::Vram | PoolKind::Gtt => Some(
                        pids.iter()
                            .filter_map(|pid| gpu_per_pid.get(pid))
                            .filter(|(_, _, gpu)| Some(*gpu) == t.gpu)
                            .map(|(v, g, _)| if t.kind == PoolKind::Vram { *v } else { *g })
                            .sum(),
                    ),
                }
            })
            .collect()
    }

    /// The processes of a consumer: its process group, or the port's owner and its
    /// descendants.
    fn pids(&mut self, probe: &Probe, scan: &[ScannedProcess], loc: &Locator) -> Vec<u32> {
        let mut pids: Vec<u32> = Vec::new();
        if let Some(pgid) = loc.pgid {
            pids.extend(
                scan.iter()
                    .filter(|s| s.pgrp == pgid)
                    .map(|s| s.process.pid),
            );
        }
        if let Some(port) = loc.port
            && let Some(owner) = self.owner(probe, scan, port)
        {
            let mut frontier = vec![owner];
            while let Some(p) = frontier.pop() {
                if pids.contains(&p) {
                    continue;
                }
                pids.push(p);
                frontier.extend(scan.iter().filter(|s| s.ppid == p).map(|s| s.process.pid));
            }
        }
        pids
    }

    fn owner(&mut self, probe: &Probe, scan: &[ScannedProcess], port: u16) -> Option<u32> {
        let root = probe.root();
        if let Some(&(pid, start, checked)) = self.port_owner.get(&port) {
            let same = scan
                .iter()
                .any(|s| s.process.pid == pid && s.process.starttime == start);
            if same && checked.elapsed() < RECHECK_OWNER {
                return Some(pid);
            }
            if same && pid_owns_port(root, pid, port) {
                self.port_owner.insert(port, (pid, start, Instant::now()));
                return Some(pid);
            }
            self.port_owner.remove(&port);
        }
        let pid = owner_of_port(root, port)?;
        let start = scan
            .iter()
            .find(|s| s.process.pid == pid)?
            .process
            .starttime;
        self.port_owner.insert(port, (pid, start, Instant::now()));
        Some(pid)
    }
}

/// Per pid: (VRAM, GTT, GPU index) from the probe's per-process GPU lists.
fn gpu_by_pid(probe: &mut Probe, targets: &[Target]) -> HashMap<u32, (u64, u64, u32)> {
    let Ok(snap) = probe.snapshot() else {
        return HashMap::new();
    };
    let gpus: Vec<u32> = targets.iter().filter_map(|t| t.gpu).collect();
    let mut out = HashMap::new();
    for p in snap.processes {
        for g in &p.gpu {
            if gpus.contains(&g.gpu_index) {
                let e = out.entry(p.pid).or_insert((0, 0, g.gpu_index));
                e.0 += g.vram_bytes.unwrap_or(0);
                e.1 += g.gtt_bytes.unwrap_or(0);
            }
        }
    }
    out
}

/// One reading of pools and consumers, stamped with when it began (a reading that began
/// after a load finished sees that load's memory).
#[derive(Debug, Clone)]
pub struct Sample {
    pub began: Instant,
    pub pools: Vec<PoolReading>,
    /// Per consumer, in config order; empty when consumers were not measured this time.
    pub consumers: Vec<Option<u64>>,
}
