//! Placement on fixture machines: one node, two nodes, four nodes with a GPU on node 3, SMT on
//! and off, offline CPUs, other containers' cpusets; and `--apply` on v1 and v2 trees.

mod common;

use common::sysfs::{self, Machine};
use memwarden_plan::place::{PlaceRequest, Placement, apply_cgroup, choose};
use memwarden_plan::topology::{busy_cpus, gpu_locality, read_topology};
use memwarden_probe::HostRoot;

fn place(m: &Machine, req: PlaceRequest) -> Placement {
    let dir = tempfile::tempdir().unwrap();
    m.write(dir.path());
    let root = HostRoot::new(dir.path()).unwrap();
    choose(&read_topology(&root).unwrap(), &req).unwrap()
}

fn cpus(n: u32) -> PlaceRequest {
    PlaceRequest {
        cpus: n,
        ..PlaceRequest::default()
    }
}

const N0: &[u32] = &[0, 1, 2, 3, 4, 5, 6, 7];
const N1: &[u32] = &[8, 9, 10, 11, 12, 13, 14, 15];

#[test]
fn one_node_never_pins_memory() {
    let p = place(
        &Machine {
            nodes: &[(N0, 10)],
            smt: None,
            offline: &[],
        },
        cpus(4),
    );
    assert_eq!(p.cpuset_cpus, "0-3");
    assert_eq!(p.cpuset_mems, None);
    assert!(
        p.reasons.iter().any(|r| r.contains("one NUMA node")),
        "{:?}",
        p.reasons
    );
}

#[test]
fn two_nodes_pick_the_one_with_most_free_memory_and_pin_it() {
    let m = Machine {
        nodes: &[(N0, 10), (N1, 40)],
        smt: None,
        offline: &[],
    };
    let p = place(&m, cpus(4));
    assert_eq!(
        (p.cpuset_cpus.as_str(), p.cpuset_mems.as_deref()),
        ("8-11", Some("1"))
    );
    // Too many for one node: spread, and memory is left to the kernel.
    let p = place(&m, cpus(12));
    assert_eq!(p.cpus.len(), 12);
    assert_eq!(p.nodes, vec![0, 1]);
    assert_eq!(p.cpuset_mems, None);
    assert!(
        p.reasons.iter().any(|r| r.contains("spread")),
        "{:?}",
        p.reasons
    );
    // Memory asked for that the node cannot hold: not pinned.
    let p = place(
        &m,
        PlaceRequest {
            mem_bytes: Some(50 << 30),
            ..cpus(2)
        },
    );
    assert_eq!(p.cpuset_mems, None);
}

#[test]
fn four_nodes_with_a_gpu_on_node_3() {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Vec<u32>> = (0..4).map(|n| (n * 8..n * 8 + 8).collect()).collect();
    let m = Machine {
        nodes: &[
            (&nodes[0], 50),
            (&nodes[1], 40),
            (&nodes[2], 30),
            (&nodes[3], 5),
        ],
        smt: None,
        offline: &[],
    };
    m.write(dir.path());
    sysfs::gpu(dir.path(), 3, &nodes[3]);
    let root = HostRoot::new(dir.path()).unwrap();
    let topo = read_topology(&root).unwrap();
    let gpu = gpu_locality(&root, 0, sysfs::GPU_BUS, None);
    assert_eq!(gpu.node, Some(3));
    let p = choose(
        &topo,
        &PlaceRequest {
            gpu: Some(gpu.clone()),
            ..cpus(4)
        },
    )
    .unwrap();
    assert_eq!(
        (p.cpuset_cpus.as_str(), p.cpuset_mems.as_deref()),
        ("24-27", Some("3"))
    );
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("GPU 0 is on NUMA node 3"))
    );
    // Without the GPU, the node with most free memory wins.
    let p = choose(&topo, &cpus(4)).unwrap();
    assert_eq!(p.cpuset_cpus, "0-3");
    // More than node 3 holds: node 3 first, then spread.
    let p = choose(
        &topo,
        &PlaceRequest {
            gpu: Some(gpu),
            ..cpus(10)
        },
    )
    .unwrap();
    assert!((24..32).all(|c| p.cpus.contains(&c)), "{:?}", p.cpus);
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("GPU 0's node 3 has 8 free CPUs, fewer than 10")),
        "{:?}",
        p.reasons
    );
    assert_eq!(p.cpuset_mems, None);
    // The GPU's local CPUs come first when they are fewer than its node's.
    let dir2 = tempfile::tempdir().unwrap();
    m.write(dir2.path());
    sysfs::gpu(dir2.path(), 3, &[28, 29, 30, 31]);
    let root2 = HostRoot::new(dir2.path()).unwrap();
    let local = gpu_locality(&root2, 0, sysfs::GPU_BUS, None);
    let p = choose(
        &topo,
        &PlaceRequest {
            gpu: Some(local),
            ..cpus(4)
        },
    )
    .unwrap();
    assert_eq!(p.cpuset_cpus, "28-31");
    // A GPU whose firmware names no node.
    let none = gpu_locality(&root, 1, "0000:00:00.0", None);
    let p = choose(
        &topo,
        &PlaceRequest {
            gpu: Some(none),
            ..cpus(2)
        },
    )
    .unwrap();
    assert!(
        p.reasons.iter().any(|r| r.contains("unknown")),
        "{:?}",
        p.reasons
    );
}

#[test]
fn smt_whole_cores_first() {
    // Cores 0-3, each with threads c and c+4.
    let on = Machine {
        nodes: &[(N0, 10)],
        smt: Some(4),
        offline: &[],
    };
    let p = place(&on, cpus(4));
    assert_eq!((p.cpuset_cpus.as_str(), p.cores), ("0-3", 4));
    let p = place(&on, cpus(6));
    assert_eq!((p.cpuset_cpus.as_str(), p.cores), ("0-5", 4));
    assert!(
        p.reasons.iter().any(|r| r.contains("SMT")),
        "{:?}",
        p.reasons
    );
    let off = Machine {
        nodes: &[(N0, 10)],
        smt: None,
        offline: &[],
    };
    let p = place(&off, cpus(6));
    assert_eq!((p.cpuset_cpus.as_str(), p.cores), ("0-5", 6));
    // SMT disabled at run time: the siblings are offline, so each core has one thread.
    let half = Machine {
        nodes: &[(N0, 10)],
        smt: Some(4),
        offline: &[4, 5, 6, 7],
    };
    let p = place(&half, cpus(4));
    assert_eq!((p.cpuset_cpus.as_str(), p.cores), ("0-3", 4));
}

#[test]
fn offline_cpus_are_never_chosen() {
    let m = Machine {
        nodes: &[(N0, 10), (N1, 40)],
        smt: None,
        offline: &[8, 9, 10, 11, 12, 13],
    };
    let p = place(&m, cpus(4));
    assert_eq!(
        (p.cpuset_cpus.as_str(), p.cpuset_mems.as_deref()),
        ("0-3", Some("0"))
    );
    let p = place(&m, cpus(2));
    assert_eq!(p.cpuset_cpus, "14-15");
    let dir = tempfile::tempdir().unwrap();
    m.write(dir.path());
    let topo = read_topology(&HostRoot::new(dir.path()).unwrap()).unwrap();
    let e = choose(&topo, &cpus(11)).unwrap_err().to_string();
    assert!(e.contains("10 online"), "{e}");
    assert!(choose(&topo, &cpus(0)).is_err());
}

#[test]
fn other_containers_cpusets_are_avoided() {
    let dir = tempfile::tempdir().unwrap();
    Machine {
        nodes: &[(N0, 10)],
        smt: None,
        offline: &[],
    }
    .write(dir.path());
    sysfs::cpuset_v1(dir.path(), "0-7", "0", Some("0-3"));
    let root = HostRoot::new(dir.path()).unwrap();
    let topo = read_topology(&root).unwrap();
    let (busy, holders) = busy_cpus(&root, &topo.online, None);
    assert_eq!(busy, vec![0, 1, 2, 3]);
    assert_eq!(holders, vec!["/docker/other".to_string()]);
    let p = choose(
        &topo,
        &PlaceRequest {
            avoid: busy.clone(),
            ..cpus(4)
        },
    )
    .unwrap();
    assert_eq!(p.cpuset_cpus, "4-7");
    // Not enough outside them: share, and say so.
    let p = choose(
        &topo,
        &PlaceRequest {
            avoid: busy,
            ..cpus(6)
        },
    )
    .unwrap();
    assert_eq!(p.cpus.len(), 6);
    assert!(
        p.reasons.iter().any(|r| r.contains("sharing")),
        "{:?}",
        p.reasons
    );
}

#[test]
fn apply_writes_a_v1_cpuset_within_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    Machine {
        nodes: &[(N0, 10), (N1, 40)],
        smt: None,
        offline: &[],
    }
    .write(dir.path());
    sysfs::cpuset_v1(dir.path(), "0-15", "0-1", None);
    let root = HostRoot::new(dir.path()).unwrap();
    let topo = read_topology(&root).unwrap();
    let p = choose(&topo, &cpus(4)).unwrap();
    let a = apply_cgroup(&root, "/box", &p).unwrap();
    assert_eq!(a.version, 1);
    let boxdir = dir.path().join("sys/fs/cgroup/cpuset/box");
    assert_eq!(
        std::fs::read_to_string(boxdir.join("cpuset.cpus")).unwrap(),
        "8-11"
    );
    assert_eq!(
        std::fs::read_to_string(boxdir.join("cpuset.mems")).unwrap(),
        "1"
    );
    // Spread: memory not pinned, but a v1 cpuset needs nodes to hold a task.
    std::fs::write(boxdir.join("cpuset.mems"), "").unwrap();
    let p = choose(&topo, &cpus(12)).unwrap();
    let a = apply_cgroup(&root, "/box", &p).unwrap();
    assert_eq!(a.mems.as_deref(), Some("0-1"));
    assert!(!a.notes.is_empty());
    // Outside the parent's effective set.
    std::fs::write(
        dir.path()
            .join("sys/fs/cgroup/cpuset/cpuset.effective_cpus"),
        "0-7\n",
    )
    .unwrap();
    let p = choose(&topo, &cpus(4)).unwrap();
    let e = apply_cgroup(&root, "/box", &p).unwrap_err().to_string();
    assert!(e.contains("not in the parent's effective set 0-7"), "{e}");
    let e = apply_cgroup(&root, "/missing", &p).unwrap_err().to_string();
    assert!(e.contains("no such cgroup"), "{e}");
    let e = apply_cgroup(&root, "/box/../..", &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains(".."), "{e}");
}

#[test]
fn apply_writes_a_v2_cpuset() {
    let dir = tempfile::tempdir().unwrap();
    Machine {
        nodes: &[(N0, 10), (N1, 40)],
        smt: None,
        offline: &[],
    }
    .write(dir.path());
    let w = |rel: &str, t: &str| sysfs::write(dir.path(), rel, t);
    w(
        "sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory pids\n",
    );
    w("sys/fs/cgroup/cpuset.cpus.effective", "0-15\n");
    w("sys/fs/cgroup/cpuset.mems.effective", "0-1\n");
    w("sys/fs/cgroup/job/cpuset.cpus", "\n");
    w("sys/fs/cgroup/job/cpuset.mems", "\n");
    // Another running container on node 1's first CPUs.
    w("sys/fs/cgroup/other/cpuset.cpus", "8-9\n");
    w("sys/fs/cgroup/other/cgroup.procs", "77\n");
    let root = HostRoot::new(dir.path()).unwrap();
    let topo = read_topology(&root).unwrap();
    let job = dir.path().join("sys/fs/cgroup/job");
    let (avoid, holders) = busy_cpus(&root, &topo.online, Some(&job));
    assert_eq!(
        (avoid.clone(), holders),
        (vec![8, 9], vec!["/other".to_string()])
    );
    let p = choose(&topo, &PlaceRequest { avoid, ..cpus(2) }).unwrap();
    let a = apply_cgroup(&root, "/sys/fs/cgroup/job", &p).unwrap();
    assert_eq!(a.version, 2);
    assert_eq!(
        std::fs::read_to_string(job.join("cpuset.cpus")).unwrap(),
        "10-11"
    );
    assert_eq!(
        std::fs::read_to_string(job.join("cpuset.mems")).unwrap(),
        "1"
    );
    // A later placement that spreads clears the earlier pin.
    let spread = choose(&topo, &cpus(12)).unwrap();
    let a = apply_cgroup(&root, "/sys/fs/cgroup/job", &spread).unwrap();
    assert_eq!(a.mems, None);
    assert_eq!(
        std::fs::read_to_string(job.join("cpuset.mems")).unwrap(),
        ""
    );
    assert!(
        a.notes.iter().any(|n| n.contains("cleared")),
        "{:?}",
        a.notes
    );
    // The cgroup being placed does not avoid its own CPUs.
    let other = dir.path().join("sys/fs/cgroup/other");
    let (avoid, _) = busy_cpus(&root, &topo.online, Some(&other));
    assert!(avoid.is_empty(), "{avoid:?}");
}

/// This machine's real v1 cpuset hierarchy: a child cgroup is created, placed and removed.
#[test]
#[ignore = "needs root on a cgroup v1 host; there: \
            cargo test -p memwarden-plan --test place -- --ignored (scripts/test runs it)"]
fn apply_on_the_real_cpuset_hierarchy() {
    let base = std::path::Path::new("/sys/fs/cgroup/cpuset");
    assert!(
        base.join("cpuset.cpus").exists(),
        "no cgroup v1 cpuset hierarchy at {}",
        base.display()
    );
    let name = format!("memwarden-place-test-{}", std::process::id());
    let cg = base.join(&name);
    if let Err(e) = std::fs::create_dir(&cg) {
        panic!("cannot create a cpuset cgroup ({e}): run as root");
    }
    let _cleanup = sysfs::RemoveOnDrop(cg.clone());
    let root = HostRoot::system();
    let topo = read_topology(&root).unwrap();
    let p = choose(&topo, &cpus(1)).unwrap();
    let a = apply_cgroup(&root, &format!("/{name}"), &p).unwrap();
    assert_eq!(a.version, 1);
    let written = std::fs::read_to_string(cg.join("cpuset.cpus")).unwrap();
    assert_eq!(written.trim(), p.cpuset_cpus);
    let mems = std::fs::read_to_string(cg.join("cpuset.mems")).unwrap();
    assert!(
        !mems.trim().is_empty(),
        "a v1 cpuset gets nodes so it can hold tasks"
    );
}

#[test]
fn cpus_no_node_lists_are_still_usable() {
    let dir = tempfile::tempdir().unwrap();
    Machine {
        nodes: &[(&[0, 1], 10), (&[2, 3], 20)],
        smt: None,
        offline: &[],
    }
    .write(dir.path());
    // CPUs 4 and 5 are online but on no node's cpulist.
    sysfs::write(dir.path(), "sys/devices/system/cpu/online", "0-5\n");
    let topo = read_topology(&HostRoot::new(dir.path()).unwrap()).unwrap();
    let p = choose(&topo, &cpus(6)).unwrap();
    assert_eq!(p.cpuset_cpus, "0-5");
    assert_eq!(p.cpuset_mems, None);
}
