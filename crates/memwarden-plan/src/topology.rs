//! The machine's CPU and memory layout from sysfs: NUMA nodes with their CPUs and free memory,
//! online CPUs, SMT siblings, a GPU's locality, and the CPUs other containers' cpusets hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memwarden_probe::HostRoot;
use memwarden_probe::numa::{parse_cpulist, read_nodes};
use memwarden_probe::snapshot::Gpu;
use serde::Serialize;

use crate::PlanError;

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: u32,
    /// Its online CPUs.
    pub cpus: Vec<u32>,
    pub mem_total_bytes: u64,
    pub mem_free_bytes: u64,
}

/// The layout placement works from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub nodes: Vec<Node>,
    pub online: Vec<u32>,
    /// Each online CPU's core: the lowest CPU number among its SMT siblings.
    pub core_of: BTreeMap<u32, u32>,
    /// True when the host reports no NUMA nodes and one was assumed.
    pub assumed_single_node: bool,
}

impl Topology {
    pub fn node_of(&self, cpu: u32) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.cpus.contains(&cpu))
            .map(|n| n.id)
    }

    /// Does any core have more than one online thread?
    pub fn smt(&self) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        self.core_of.values().any(|c| !seen.insert(*c))
    }
}

fn read_small(path: &Path) -> std::io::Result<String> {
    memwarden_probe::root::read_to_string_bounded(path, memwarden_probe::root::SMALL_FILE_BYTES)
}

fn read_list(path: &Path) -> Option<Vec<u32>> {
    parse_cpulist(&read_small(path).ok()?)
}

/// Reads the topology under `root`.
pub fn read_topology(root: &HostRoot) -> Result<Topology, PlanError> {
    let cpu_dir = root.path("/sys/devices/system/cpu");
    let online = match read_small(&cpu_dir.join("online")) {
        Ok(t) => parse_cpulist(&t).ok_or_else(|| {
            PlanError::Topology(format!(
                "{} is malformed: {:?}",
                cpu_dir.join("online").display(),
                memwarden_probe::sanitize::sanitize(t.trim(), 60)
            ))
        })?,
        Err(e) => {
            return Err(PlanError::Topology(format!(
                "cannot read the online CPUs from {}: {e}",
                cpu_dir.join("online").display()
            )));
        }
    };
    if online.is_empty() {
        return Err(PlanError::Topology("no online CPUs".into()));
    }
    let mut core_of = BTreeMap::new();
    for &cpu in &online {
        let topo = cpu_dir.join(format!("cpu{cpu}/topology"));
        let siblings = read_list(&topo.join("thread_siblings_list"))
            .or_else(|| read_list(&topo.join("core_cpus_list")))
            .unwrap_or_default();
        // An offline sibling does not count; a CPU always belongs to its own core.
        let core = siblings
            .iter()
            .copied()
            .filter(|s| online.contains(s))
            .chain([cpu])
            .min()
            .unwrap_or(cpu);
        core_of.insert(cpu, core);
    }
    let mut nodes: Vec<Node> = read_nodes(root)
        .into_iter()
        .map(|n| Node {
            id: n.node,
            cpus: parse_cpulist(&n.cpus)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| online.contains(c))
                .collect(),
            mem_total_bytes: n.mem_total_bytes,
            mem_free_bytes: n.mem_free_bytes,
        })
        .collect();
    let assumed_single_node = nodes.is_empty();
    if assumed_single_node {
        let (total, free) = root
            .read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| memwarden_probe::meminfo::parse_meminfo(&t).ok())
            .map(|h| (h.mem_total_bytes, h.mem_available_bytes))
            .unwrap_or((0, 0));
        nodes.push(Node {
            id: 0,
            cpus: online.clone(),
            mem_total_bytes: total,
            mem_free_bytes: free,
        });
    }
    Ok(Topology {
        nodes,
        online,
        core_of,
        assumed_single_node,
    })
}

/// The GPU with index `idx` among `gpus`, or an error that lists the ones there are.
pub fn find_gpu(gpus: Vec<Gpu>, idx: u32) -> Result<Gpu, PlanError> {
    let known: Vec<String> = gpus.iter().map(|g| g.index.to_string()).collect();
    gpus.into_iter().find(|g| g.index == idx).ok_or_else(|| {
        PlanError::BadArgument(if known.is_empty() {
            format!("no GPU with index {idx}: this machine shows no GPU")
        } else {
            format!("no GPU with index {idx} (GPUs here: {})", known.join(", "))
        })
    })
}

/// Where a GPU sits: its NUMA node (None when the firmware names none) and the CPUs local to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuLocality {
    pub index: u32,
    pub node: Option<u32>,
    pub local_cpus: Option<Vec<u32>>,
}

/// The locality of the PCI device `bus_id` under `root`.
pub fn gpu_locality(root: &HostRoot, index: u32, bus_id: &str, node: Option<u32>) -> GpuLocality {
    let dev = root.path(&format!("/sys/bus/pci/devices/{bus_id}"));
    let node = node.or_else(|| memwarden_probe::gpu::drm::numa_node_of(&dev));
    let local_cpus = read_list(&dev.join("local_cpulist")).filter(|l| !l.is_empty());
    GpuLocality {
        index,
        node,
        local_cpus,
    }
}

/// The cpuset hierarchies mounted under `root`: (directory, is v1).
pub fn cpuset_mounts(root: &HostRoot) -> Vec<(PathBuf, bool)> {
    let base = root.path("/sys/fs/cgroup");
    let mut out = Vec::new();
    let v1 = base.join("cpuset");
    if v1.join("cpuset.cpus").exists() {
        out.push((v1, true));
    }
    if base.join("cgroup.controllers").exists() {
        out.push((base.clone(), false));
    } else if base.join("unified/cgroup.controllers").exists() {
        out.push((base.join("unified"), false));
    }
    out
}

/// CPUs held by other cgroups' cpusets: cgroups with processes whose `cpuset.cpus` is narrower
/// than every online CPU. `exclude` (the cgroup being placed, and its ancestors) is left out.
/// Returns the CPUs and the cgroups that hold them.
pub fn busy_cpus(
    root: &HostRoot,
    online: &[u32],
    exclude: Option<&Path>,
) -> (Vec<u32>, Vec<String>) {
    let mut cpus = std::collections::BTreeSet::new();
    let mut holders = Vec::new();
    for (base, _) in cpuset_mounts(root) {
        let mut stack = vec![(base.clone(), 0u32)];
        let mut visited = 0;
        while let Some((dir, depth)) = stack.pop() {
            visited += 1;
            if visited > 20_000 {
                break;
            }
            if dir != base && exclude.is_none_or(|x| !x.starts_with(&dir)) {
                let has_procs = memwarden_probe::root::read_to_string_bounded(
                    &dir.join("cgroup.procs"),
                    memwarden_probe::root::MAX_FILE_BYTES,
                )
                .is_ok_and(|t| !t.trim().is_empty());
                let set = read_list(&dir.join("cpuset.cpus")).unwrap_or_default();
                let narrower = !set.is_empty() && online.iter().any(|c| !set.contains(c));
                if has_procs && narrower {
                    cpus.extend(set);
                    let rel = dir.strip_prefix(&base).unwrap_or(&dir);
                    holders.push(memwarden_probe::sanitize::sanitize(
                        &format!("/{}", rel.display()),
                        80,
                    ));
                }
            }
            if depth >= 8 {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                // Symlinks are not followed: a cgroup tree has none, a hostile one might.
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    holders.sort();
    (cpus.into_iter().collect(), holders)
}
