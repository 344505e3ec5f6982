//! Where a workload should run: N CPUs chosen NUMA-locally (on the GPU's node when a GPU is
//! named), whole cores before SMT siblings, away from other containers' cpusets; and the memory
//! node pinned only when every CPU sits on one node of a multi-node host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use memwarden_probe::HostRoot;
use memwarden_probe::numa::{format_cpulist, parse_cpulist};
use serde::Serialize;

use crate::PlanError;
use crate::topology::{GpuLocality, Topology, cpuset_mounts};

/// The question.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaceRequest {
    pub cpus: u32,
    pub gpu: Option<GpuLocality>,
    /// Memory the workload will use, to check against the node's free memory.
    pub mem_bytes: Option<u64>,
    /// CPUs to avoid (held by other containers).
    pub avoid: Vec<u32>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub cpus: Vec<u32>,
    /// `cpuset.cpus` / Docker's `--cpuset-cpus`.
    pub cpuset_cpus: String,
    /// `cpuset.mems` / `--cpuset-mems`; `None` leaves memory placement to the kernel.
    pub cpuset_mems: Option<String>,
    /// The nodes the CPUs are on.
    pub nodes: Vec<u32>,
    /// Physical cores used.
    pub cores: usize,
    /// Why the choice is what it is, in words.
    pub reasons: Vec<String>,
}

fn nodes_text(nodes: &[u32]) -> String {
    nodes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPUs of `pool` in the order to take them: the first thread of each core (cores whose threads
/// are all free first), then the remaining threads.
fn core_order(topo: &Topology, pool: &[u32], free: &BTreeSet<u32>) -> Vec<u32> {
    let mut cores: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &c in pool {
        cores
            .entry(topo.core_of.get(&c).copied().unwrap_or(c))
            .or_default()
            .push(c);
    }
    let whole = |core: &u32| {
        topo.core_of
            .iter()
            .filter(|(_, k)| *k == core)
            .all(|(c, _)| free.contains(c))
    };
    let mut keys: Vec<u32> = cores.keys().copied().collect();
    keys.sort_by_key(|k| (!whole(k), *k));
    let mut first = Vec::new();
    let mut rest = Vec::new();
    for k in keys {
        let mut threads = cores.remove(&k).unwrap_or_default();
        threads.sort_unstable();
        let mut it = threads.into_iter();
        first.extend(it.next());
        rest.extend(it);
    }
    first.extend(rest);
    first
}

/// Chooses the CPUs and the memory node.
pub fn choose(topo: &Topology, req: &PlaceRequest) -> Result<Placement, PlanError> {
    let n = req.cpus as usize;
    if n == 0 {
        return Err(PlanError::BadArgument("--cpus must be at least 1".into()));
    }
    if n > topo.online.len() {
        return Err(PlanError::BadArgument(format!(
            "asked for {n} CPUs, but this machine has {} online ({})",
            topo.online.len(),
            format_cpulist(&topo.online)
        )));
    }
    let mut reasons = Vec::new();
    let avoid: BTreeSet<u32> = req.avoid.iter().copied().collect();
    let mut free: BTreeSet<u32> = topo
        .online
        .iter()
        .copied()
        .filter(|c| !avoid.contains(c))
        .collect();
    if free.len() < n {
        reasons.push(format!(
            "only {} CPUs are outside other containers' cpusets: sharing CPUs {} with them",
            free.len(),
            format_cpulist(&avoid.iter().copied().collect::<Vec<_>>())
        ));
        free = topo.online.iter().copied().collect();
    } else if !avoid.is_empty() {
        reasons.push(format!(
            "avoided CPUs {} (held by other containers' cpusets)",
            format_cpulist(&avoid.iter().copied().collect::<Vec<_>>())
        ));
    }
    let free_on = |node: &crate::topology::Node| -> Vec<u32> {
        node.cpus
            .iter()
            .copied()
            .filter(|c| free.contains(c))
            .collect()
    };
    // Nodes by free memory, most first; with --mem, nodes that hold it come first.
    let mut order: Vec<&crate::topology::Node> = topo.nodes.iter().collect();
    order.sort_by_key(|node| {
        let short = req.mem_bytes.is_some_and(|m| node.mem_free_bytes < m);
        (short, std::cmp::Reverse(node.mem_free_bytes), node.id)
    });
    let mut gpu_local: Option<Vec<u32>> = None;
    if let Some(gpu) = &req.gpu {
        match gpu
            .node
            .and_then(|g| topo.nodes.iter().position(|n| n.id == g))
        {
            Some(i) => {
                let node = &topo.nodes[i];
                order.retain(|n| n.id != node.id);
                order.insert(0, node);
                reasons.push(format!("GPU {} is on NUMA node {}", gpu.index, node.id));
                gpu_local = gpu.local_cpus.clone();
            }
            None if topo.nodes.len() > 1 => reasons.push(format!(
                "GPU {}'s NUMA node is unknown (the firmware names none): chose by free memory",
                gpu.index
            )),
            None => {}
        }
    }
    let mut chosen: Vec<u32> = Vec::new();
    let single = if req.gpu.as_ref().is_some_and(|g| g.node.is_some()) {
        // A named GPU's node or nothing: another node with room is still remote to the GPU.
        order.first().filter(|node| free_on(node).len() >= n)
    } else {
        order.iter().find(|node| free_on(node).len() >= n)
    };
    if let Some(node) = single {
        let mut pool = free_on(node);
        if let Some(local) = &gpu_local {
            // The GPU's local CPUs first (usually its whole node).
            pool.sort_by_key(|c| (!local.contains(c), *c));
            let local_pool: Vec<u32> = pool.iter().copied().filter(|c| local.contains(c)).collect();
            if local_pool.len() >= n {
                pool = local_pool;
            }
        }
        chosen = core_order(topo, &pool, &free).into_iter().take(n).collect();
        if req.gpu.is_none() && topo.nodes.len() > 1 {
            reasons.push(format!(
                "node {} has the most free memory among nodes with {n} free CPUs",
                node.id
            ));
        }
    } else {
        let gpu_node = req
            .gpu
            .as_ref()
            .and_then(|g| Some((g.index, order.first()?, g.node?)));
        let why = match gpu_node {
            Some((index, node, _)) => format!(
                "GPU {index}'s node {} has {} free CPUs, fewer than {n}",
                node.id,
                free_on(node).len()
            ),
            None => format!("no single node has {n} free CPUs"),
        };
        for node in &order {
            let take = n - chosen.len();
            if take == 0 {
                break;
            }
            let pool = free_on(node);
            chosen.extend(core_order(topo, &pool, &free).into_iter().take(take));
        }
        if chosen.len() < n {
            // Online CPUs that no node lists (a sysfs that disagrees with itself) still count.
            let orphans: Vec<u32> = free
                .iter()
                .copied()
                .filter(|c| topo.node_of(*c).is_none())
                .collect();
            let take = n - chosen.len();
            chosen.extend(core_order(topo, &orphans, &free).into_iter().take(take));
            reasons.push("some CPUs are on no NUMA node sysfs lists".into());
        }
        if chosen.len() < n {
            return Err(PlanError::Topology(format!(
                "found only {} usable CPUs for {n}",
                chosen.len()
            )));
        }
        let nodes: BTreeSet<u32> = chosen.iter().filter_map(|&c| topo.node_of(c)).collect();
        reasons.push(format!(
            "{why}: spread over nodes {}",
            nodes_text(&nodes.into_iter().collect::<Vec<_>>())
        ));
    }
    chosen.sort_unstable();
    let nodes: Vec<u32> = chosen
        .iter()
        .filter_map(|&c| topo.node_of(c))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cores = chosen
        .iter()
        .map(|c| topo.core_of.get(c).copied().unwrap_or(*c))
        .collect::<BTreeSet<_>>()
        .len();
    if cores < chosen.len() {
        reasons.push(format!(
            "{} CPUs on {cores} cores: SMT siblings used once whole cores ran out",
            chosen.len()
        ));
    }
    let cpuset_mems = match nodes.as_slice() {
        [one] if topo.nodes.len() > 1 => {
            let node = topo.nodes.iter().find(|x| x.id == *one);
            match (req.mem_bytes, node) {
                (Some(m), Some(node)) if node.mem_free_bytes < m => {
                    reasons.push(format!(
                        "node {one} has {} free, less than the {} asked: memory left to the \
                         kernel rather than pinned to a node that cannot hold it",
                        memwarden_probe::size::format_size(node.mem_free_bytes),
                        memwarden_probe::size::format_size(m)
                    ));
                    None
                }
                _ => {
                    reasons.push(format!(
                        "every CPU is on node {one} of {}: memory pinned to node {one}",
                        topo.nodes.len()
                    ));
                    Some(one.to_string())
                }
            }
        }
        [_] => {
            reasons.push("one NUMA node on this host: memory placement left to the kernel".into());
            None
        }
        [] => {
            reasons.push(
                "the CPUs' NUMA nodes are unknown: memory placement left to the kernel".into(),
            );
            None
        }
        many => {
            reasons.push(format!(
                "CPUs span nodes {}: memory placement left to the kernel",
                nodes_text(many)
            ));
            None
        }
    };
    Ok(Placement {
        cpuset_cpus: format_cpulist(&chosen),
        cpus: chosen,
        cpuset_mems,
        nodes,
        cores,
        reasons,
    })
}

/// What `--apply` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub cgroup: String,
    pub version: u8,
    pub cpus: String,
    pub mems: Option<String>,
    pub notes: Vec<String>,
}

fn apply_err(path: &Path, why: impl Into<String>) -> PlanError {
    PlanError::Apply {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// The directory of an existing cpuset cgroup: a path in the hierarchy (`/docker/abc`), or a
/// full path under `/sys/fs/cgroup`.
pub fn resolve_cgroup(root: &HostRoot, cgroup: &str) -> Result<(PathBuf, bool), PlanError> {
    if cgroup.split('/').any(|c| c == "..") {
        return Err(PlanError::BadArgument(format!(
            "cgroup path {:?} must not contain ..",
            memwarden_probe::sanitize::sanitize(cgroup, 80)
        )));
    }
    let mounts = cpuset_mounts(root);
    if let Some(rel) = cgroup.strip_prefix("/sys/fs/cgroup/") {
        let dir = root.path(&format!("/sys/fs/cgroup/{rel}"));
        let v1 = rel.starts_with("cpuset/") || rel == "cpuset";
        return Ok((dir, v1));
    }
    let rel = cgroup.trim_start_matches('/');
    for (base, v1) in &mounts {
        let dir = base.join(rel);
        if dir.join("cpuset.cpus").exists() {
            return Ok((dir, *v1));
        }
    }
    match mounts.first() {
        Some((base, v1)) => Ok((base.join(rel), *v1)),
        None => Err(PlanError::Apply {
            path: cgroup.to_string(),
            why: "no cpuset cgroup hierarchy is mounted".into(),
        }),
    }
}

fn read_small(path: &Path) -> std::io::Result<String> {
    memwarden_probe::root::read_to_string_bounded(path, memwarden_probe::root::SMALL_FILE_BYTES)
}

fn read_set(dir: &Path, names: &[&str]) -> Option<Vec<u32>> {
    names.iter().find_map(|n| {
        let t = read_small(&dir.join(n)).ok()?;
        parse_cpulist(&t)
    })
}

/// Writes the placement into an existing cgroup's `cpuset.cpus` and `cpuset.mems`, after
/// checking that both are within the parent's effective sets.
pub fn apply_cgroup(root: &HostRoot, cgroup: &str, p: &Placement) -> Result<Applied, PlanError> {
    let (dir, v1) = resolve_cgroup(root, cgroup)?;
    if !dir.is_dir() {
        return Err(apply_err(&dir, "no such cgroup (it must exist already)"));
    }
    if !dir.join("cpuset.cpus").exists() {
        return Err(apply_err(
            &dir,
            "it has no cpuset.cpus (is the cpuset controller enabled for it?)",
        ));
    }
    let parent = dir
        .parent()
        .ok_or_else(|| apply_err(&dir, "the root cgroup cannot be placed"))?;
    let (eff_cpus, eff_mems): (&[&str], &[&str]) = if v1 {
        (
            &["cpuset.effective_cpus", "cpuset.cpus"],
            &["cpuset.effective_mems", "cpuset.mems"],
        )
    } else {
        (&["cpuset.cpus.effective"], &["cpuset.mems.effective"])
    };
    let parent_cpus = read_set(parent, eff_cpus)
        .ok_or_else(|| apply_err(&dir, "cannot read the parent's effective CPUs"))?;
    let outside: Vec<u32> = p
        .cpus
        .iter()
        .copied()
        .filter(|c| !parent_cpus.contains(c))
        .collect();
    if !outside.is_empty() {
        return Err(apply_err(
            &dir,
            format!(
                "CPUs {} are not in the parent's effective set {}",
                format_cpulist(&outside),
                format_cpulist(&parent_cpus)
            ),
        ));
    }
    let parent_mems = read_set(parent, eff_mems);
    if let Some(m) = &p.cpuset_mems {
        let want = parse_cpulist(m).unwrap_or_default();
        if let Some(pm) = &parent_mems
            && want.iter().any(|n| !pm.contains(n))
        {
            return Err(apply_err(
                &dir,
                format!(
                    "memory node {m} is not in the parent's effective set {}",
                    format_cpulist(pm)
                ),
            ));
        }
    }
    let write = |name: &str, value: &str| {
        std::fs::write(dir.join(name), value)
            .map_err(|e| apply_err(&dir, format!("writing {name} = {value}: {e}")))
    };
    let mut notes = Vec::new();
    let mut mems = p.cpuset_mems.clone();
    // Memory not pinned means the parent's nodes, not whatever an earlier pin left behind. A v1
    // cpuset needs its nodes written out (an empty one cannot hold a task); on v2 an empty
    // cpuset.mems follows the parent.
    if mems.is_none() {
        let own = read_small(&dir.join("cpuset.mems")).unwrap_or_default();
        let own = own.trim();
        if v1 {
            if let Some(pm) = &parent_mems {
                let all = format_cpulist(pm);
                if own != all {
                    notes.push(format!(
                        "cpuset.mems set to the parent's nodes {all}, which pins nothing (was {:?})",
                        own
                    ));
                }
                mems = Some(all);
            }
        } else if !own.is_empty() {
            notes.push(format!(
                "cpuset.mems cleared (was {own:?}): memory follows the parent's nodes"
            ));
            write("cpuset.mems", "")?;
        }
    }
    if let Some(m) = &mems {
        write("cpuset.mems", m)?;
    }
    write("cpuset.cpus", &p.cpuset_cpus)?;
    Ok(Applied {
        cgroup: dir.display().to_string(),
        version: if v1 { 1 } else { 2 },
        cpus: p.cpuset_cpus.clone(),
        mems,
        notes,
    })
}

/// Sets the CPU affinity of every thread of a running process. Memory already allocated
/// stays where it is; pinning memory takes `--apply` on the process's cgroup.
pub fn apply_affinity(pid: u32, cpus: &[u32]) -> Result<usize, PlanError> {
    let task_dir = PathBuf::from(format!("/proc/{pid}/task"));
    let tasks = std::fs::read_dir(&task_dir)
        .map_err(|e| PlanError::BadArgument(format!("no process {pid}: {e}")))?;
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if (c as usize) >= libc::CPU_SETSIZE as usize {
            return Err(PlanError::BadArgument(format!(
                "CPU {c} is beyond CPU_SETSIZE"
            )));
        }
        // SAFETY: `c` was checked to be below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    let mut done = 0;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // A thread that exited meanwhile is no failure.
            if e.raw_os_error() == Some(libc::ESRCH) {
                continue;
            }
            return Err(PlanError::Apply {
                path: format!("process {pid} thread {tid}"),
                why: e.to_string(),
            });
        }
        done += 1;
    }
    if done == 0 {
        return Err(PlanError::BadArgument(format!(
            "process {pid} has no threads left"
        )));
    }
    Ok(done)
}
