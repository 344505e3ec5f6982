//! Fake machines as sysfs trees: NUMA nodes, online and offline CPUs, SMT siblings, a GPU's PCI
//! device with its node, and cpuset cgroups.

#![allow(dead_code)]

use std::path::Path;

pub fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

pub fn list(cpus: &[u32]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A machine with `nodes` (each: its CPUs and free GiB); SMT pairs CPU `c` with `c + smt`
/// when `smt` is set; `offline` CPUs are listed in no online set.
pub struct Machine<'a> {
    pub nodes: &'a [(&'a [u32], u64)],
    pub smt: Option<u32>,
    pub offline: &'a [u32],
}

impl Machine<'_> {
    pub fn write(&self, dir: &Path) {
        let all: Vec<u32> = self
            .nodes
            .iter()
            .flat_map(|(c, _)| c.iter().copied())
            .collect();
        let online: Vec<u32> = all
            .iter()
            .copied()
            .filter(|c| !self.offline.contains(c))
            .collect();
        write(
            dir,
            "sys/devices/system/cpu/online",
            &format!("{}\n", list(&online)),
        );
        for &c in &all {
            let siblings = match self.smt {
                Some(k) => {
                    let base = c % k;
                    vec![base, base + k]
                }
                None => vec![c],
            };
            write(
                dir,
                &format!("sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"),
                &format!("{}\n", list(&siblings)),
            );
        }
        let mut total_free = 0;
        for (i, (cpus, free_gib)) in self.nodes.iter().enumerate() {
            write(
                dir,
                &format!("sys/devices/system/node/node{i}/cpulist"),
                &format!("{}\n", list(cpus)),
            );
            write(
                dir,
                &format!("sys/devices/system/node/node{i}/meminfo"),
                &format!(
                    "Node {i} MemTotal: {} kB\nNode {i} MemFree: {} kB\n",
                    64 << 20,
                    free_gib << 20
                ),
            );
            total_free += free_gib << 20;
        }
        write(
            dir,
            "proc/meminfo",
            &format!(
                "MemTotal: {} kB\nMemFree: {total_free} kB\nMemAvailable: {total_free} kB\n",
                (self.nodes.len() as u64) * (64 << 20)
            ),
        );
    }
}

pub const GPU_BUS: &str = "0000:c3:00.0";

/// An AMD GPU at `GPU_BUS` on `node` with `local` CPUs, seen through DRM as card0.
pub fn gpu(dir: &Path, node: i32, local: &[u32]) {
    let dev = format!("sys/bus/pci/devices/{GPU_BUS}");
    write(dir, &format!("{dev}/numa_node"), &format!("{node}\n"));
    write(
        dir,
        &format!("{dev}/local_cpulist"),
        &format!("{}\n", list(local)),
    );
    write(
        dir,
        &format!("{dev}/uevent"),
        &format!("PCI_SLOT_NAME={GPU_BUS}\n"),
    );
    write(dir, &format!("{dev}/vendor"), "0x1002\n");
    write(dir, &format!("{dev}/device"), "0x744c\n");
    write(
        dir,
        &format!("{dev}/mem_info_vram_total"),
        &format!("{}\n", 24u64 << 30),
    );
    write(
        dir,
        &format!("{dev}/mem_info_vram_used"),
        &format!("{}\n", 4u64 << 30),
    );
    let card = dir.join("sys/class/drm/card0");
    std::fs::create_dir_all(&card).unwrap();
    std::os::unix::fs::symlink(
        format!("../../../bus/pci/devices/{GPU_BUS}"),
        card.join("device"),
    )
    .unwrap();
}

/// A v1 cpuset hierarchy with every online CPU and node 0..nodes, an empty child `box`, and
/// optionally a running container `docker/other` pinned to `other`.
pub fn cpuset_v1(dir: &Path, cpus: &str, mems: &str, other: Option<&str>) {
    let base = "sys/fs/cgroup/cpuset";
    for f in ["cpuset.cpus", "cpuset.effective_cpus"] {
        write(dir, &format!("{base}/{f}"), &format!("{cpus}\n"));
    }
    for f in ["cpuset.mems", "cpuset.effective_mems"] {
        write(dir, &format!("{base}/{f}"), &format!("{mems}\n"));
    }
    write(dir, &format!("{base}/cgroup.procs"), "1\n");
    write(dir, &format!("{base}/box/cpuset.cpus"), "\n");
    write(dir, &format!("{base}/box/cpuset.mems"), "\n");
    write(dir, &format!("{base}/box/cgroup.procs"), "");
    if let Some(o) = other {
        write(
            dir,
            &format!("{base}/docker/cpuset.cpus"),
            &format!("{cpus}\n"),
        );
        write(dir, &format!("{base}/docker/cgroup.procs"), "");
        write(
            dir,
            &format!("{base}/docker/other/cpuset.cpus"),
            &format!("{o}\n"),
        );
        write(dir, &format!("{base}/docker/other/cgroup.procs"), "4242\n");
    }
}

/// Removes a cgroup directory a test created, however the test ends.
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
