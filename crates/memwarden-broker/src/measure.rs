//! Readings through the probe: a pool's live free memory, and what each consumer's processes
//! really hold. Everything here blocks (it reads /proc and the GPU driver): call it on a
//! blocking thread.

use std::collections::HashMap;
use std::time::Instant;

use memwarden_probe::Probe;
use memwarden_probe::net::{PortIndex, listening_on, owner_of_port, pid_owns_port};
use memwarden_probe::probe::ScannedProcess;

use crate::config::{Config, ConsumerConfig, PoolConfig, PoolKind};

mod gpu_use;

use gpu_use::GpuUse;

/// How to find a consumer's processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locator {
    /// The process group of a process the broker started.
    pub pgid: Option<i32>,
    /// The port of a local upstream: its owner and that owner's descendants.
    pub port: Option<u16>,
    /// A workload named in the configuration: its processes, in place of the port's owner.
    pub workload: Option<String>,
}

impl Locator {
    pub fn is_empty(&self) -> bool {
        self.pgid.is_none() && self.port.is_none() && self.workload.is_none()
    }
}

/// What to measure for one consumer: where to look and in which pool's terms.
#[derive(Debug, Clone)]
pub struct Target {
    pub locator: Locator,
    pub kind: PoolKind,
    pub gpu: Option<u32>,
}

impl Target {
    /// Consumer `c`'s: its local upstream's port, its workload, and `pgid`, the process group
    /// of the process the broker runs for it.
    pub fn of(cfg: &Config, c: &ConsumerConfig, pgid: Option<i32>) -> Target {
        let pool = &cfg.pools[c.pool];
        Target {
            locator: Locator {
                pgid,
                // Port 0 is `${PORT}`: known only once started (see `Shared::target`).
                port: (c.upstream.as_ref())
                    .filter(|u| u.is_local() && u.port != 0)
                    .map(|u| u.port),
                workload: c.workload.clone(),
            },
            kind: pool.kind,
            gpu: pool.gpu,
        }
    }
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
    /// The sockets of many ports read at once, for the lookups of one pass over the consumers.
    index: Option<PortIndex>,
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

    /// What each target holds: `None` when its processes cannot be found (a remote upstream,
    /// a port nobody we can see owns, only a forwarder in front of the server) or have no
    /// figure (a GPU that is unreadable); `Some(0)` when they were found and hold nothing, or
    /// when the process group the broker started is gone.
    pub fn consumers(&mut self, probe: &mut Probe, targets: &[Target]) -> Vec<Option<u64>> {
        if targets.iter().all(|t| t.locator.is_empty()) {
            return vec![None; targets.len()];
        }
        // A named workload is found by its cgroup and command line; anything else from the
        // processes' stat alone, read every 500 ms while requests are served beside it.
        let scan = if targets.iter().any(|t| t.locator.workload.is_some()) {
            probe.scan_processes().0
        } else {
            probe.scan_stats()
        };
        self.consumers_in(probe, &scan, targets)
    }

    /// [`Measurer::consumers`] from a scan already made (a full one where a target names a
    /// workload).
    pub fn consumers_in(
        &mut self,
        probe: &mut Probe,
        scan: &[ScannedProcess],
        targets: &[Target],
    ) -> Vec<Option<u64>> {
        let indexed = self.index.is_none() && self.index_ports(probe, targets);
        let found: Vec<Option<Vec<u32>>> = targets
            .iter()
            .map(|t| self.pids(probe, scan, &t.locator))
            .collect();
        let gpu = if targets.iter().any(|t| t.kind != PoolKind::Ram) {
            let pids: Vec<u32> = found.iter().flatten().flatten().copied().collect();
            GpuUse::new(probe.gpu_use_of(&pids), targets)
        } else {
            GpuUse::default()
        };
        if indexed {
            self.forget_ports();
        }
        targets
            .iter()
            .zip(found)
            .map(|(t, pids)| {
                let pids = pids?;
                match t.kind {
                    PoolKind::Ram => scan
                        .iter()
                        .filter(|s| pids.contains(&s.process.pid))
                        .map(|s| s.process.rss_bytes)
                        .sum(),
                    PoolKind::Vram | PoolKind::Gtt => gpu.held(&pids, t),
                }
            })
            .collect()
    }

    /// Reads once the sockets of the targets' ports whose owner is not remembered, when more than
    /// one is asked for: the lookups that follow use it until [`Measurer::forget_ports`].
    /// Whether it did.
    pub fn index_ports(&mut self, probe: &Probe, targets: &[Target]) -> bool {
        let mut ports: Vec<u16> = (targets.iter())
            .filter_map(|t| t.locator.port)
            .filter(|p| !self.port_owner.contains_key(p))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.len() < 2 {
            return false;
        }
        self.index = Some(PortIndex::read(probe.root(), &ports));
        true
    }

    pub fn forget_ports(&mut self) {
        self.index = None;
    }

    fn listening_on(&self, probe: &Probe, port: u16) -> bool {
        match &self.index {
            Some(ix) if ix.covers(port) => !ix.listening_on(port).is_empty(),
            _ => !listening_on(probe.root(), port).is_empty(),
        }
    }

    /// The processes that hold a consumer's memory: the workload it names, or else its process
    /// group and the port's owner with its descendants, less the processes that only stand in
    /// front of a server. `Some(empty)` when the process group the broker started is gone;
    /// `None` when nothing was found.
    fn pids(
        &mut self,
        probe: &mut Probe,
        scan: &[ScannedProcess],
        loc: &Locator,
    ) -> Option<Vec<u32>> {
        if let Some(w) = &loc.workload {
            let pids = probe.workload_pids(scan, w);
            let gone = loc.pgid.is_some_and(|g| !scan.iter().any(|s| s.pgrp == g));
            return (!pids.is_empty() || gone).then_some(pids);
        }
        let mut seen: Vec<u32> = Vec::new();
        if let Some(pgid) = loc.pgid {
            seen.extend(
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
                if seen.contains(&p) {
                    continue;
                }
                seen.push(p);
                frontier.extend(
                    scan.iter()
                        .filter(|s| s.process.ppid == Some(p))
                        .map(|s| s.process.pid),
                );
            }
        }
        let pids: Vec<u32> = scan
            .iter()
            .filter(|s| seen.contains(&s.process.pid) && !fronts(&s.process.name))
            .map(|s| s.process.pid)
            .collect();
        (!pids.is_empty() || (loc.pgid.is_some() && seen.is_empty())).then_some(pids)
    }

    /// The processes of `scan` a consumer's memory is read from, by pid and name, or why there
    /// are none: what `serve --check` tells, so that a consumer measured by the wrong process,
    /// or not at all, is seen before the broker runs.
    pub fn found(
        &mut self,
        probe: &mut Probe,
        scan: &[ScannedProcess],
        loc: &Locator,
    ) -> Result<Vec<(u32, String)>, String> {
        let named = |pids: &[u32]| -> Vec<(u32, String)> {
            (scan.iter())
                .filter(|s| pids.contains(&s.process.pid))
                .map(|s| (s.process.pid, s.process.name.clone()))
                .collect()
        };
        match self.pids(probe, scan, loc) {
            Some(pids) if !pids.is_empty() => return Ok(named(&pids)),
            _ => {}
        }
        if let Some(w) = &loc.workload {
            return Err(format!("no process of workload {w:?} runs now"));
        }
        let Some(port) = loc.port else {
            return Err(if loc.pgid.is_some() {
                "the processes it was started as are gone".into()
            } else {
                "its upstream is not on this machine".into()
            });
        };
        if !self.listening_on(probe, port) {
            return Err(format!(
                "nothing listens on port {port} here (a port a container runtime publishes \
                 through the firewall shows no listener: name the container's `workload`)"
            ));
        }
        match self.owner(probe, scan, port) {
            Some(pid) => {
                let name = named(&[pid]).pop().map_or_else(String::new, |(_, n)| n);
                Err(format!(
                    "port {port} is held by {name} (pid {pid}), which only forwards to the \
                     server: name the server's `workload`"
                ))
            }
            None => Err(format!(
                "the process listening on port {port} cannot be read (another user's?): run \
                 as that user or root, or name its `workload`"
            )),
        }
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
        let pid = match &self.index {
            Some(ix) if ix.covers(port) => ix.owner_of_port(port)?,
            _ => owner_of_port(root, port)?,
        };
        let start = scan
            .iter()
            .find(|s| s.process.pid == pid)?
            .process
            .starttime;
        self.port_owner.insert(port, (pid, start, Instant::now()));
        Some(pid)
    }
}

/// Processes that stand in front of a model server without holding its memory: the port
/// forwarders of container runtimes and of user-mode networking, and the container clients a
/// `start` command may run. Measured, they would put a few MiB in place of the server's size.
const FRONTS: [&str; 10] = [
    "docker-proxy",
    "rootlessport",
    "rootlessport-child",
    "slirp4netns",
    "pasta",
    "conmon",
    "gvproxy",
    "docker",
    "podman",
    "nerdctl",
];

/// The kernel keeps the first 15 bytes of a command's name (`rootlessport-ch`).
const COMM_LEN: usize = 15;

/// Whether a process by this name (its comm) only stands in front of a server.
pub fn fronts(comm: &str) -> bool {
    FRONTS
        .iter()
        .any(|f| comm == *f || (f.len() > COMM_LEN && comm == &f[..COMM_LEN]))
}

/// One reading of pools and consumers, stamped with when it began (a reading that began
/// after a load finished sees that load's memory).
#[derive(Debug, Clone)]
pub struct Sample {
    pub began: Instant,
    pub pools: Vec<PoolReading>,
    /// Per consumer, in config order; empty when consumers were not measured this time.
    pub consumers: Vec<Option<u64>>,
    /// What the processes of each consumer that can sleep hold in host RAM (`None` for the
    /// others), in config order; empty when consumers were not measured this time.
    pub host: Vec<Option<u64>>,
    /// The machine's `MemAvailable`, read only when a consumer can sleep and no `ram` pool is
    /// configured (then it is what host RAM can take).
    pub host_available: Option<u64>,
}

#[cfg(test)]
#[path = "measure_tests.rs"]
mod tests;
