//! The probe against fake machines: exact numbers from known files.

use memwarden_probe::cgroup::{CgroupRef, CgroupVersion};
use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo, plain_fdinfo};
use memwarden_probe::snapshot::{ProcessGpu, Vendor};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const APU: &str = "0000:c3:00.0";

fn probe(root: &FakeRoot) -> Probe {
    Probe::new(HostRoot::new(root.dir()).unwrap(), GpuSourceKind::Auto)
}

fn apu_host(dir: &std::path::Path) -> FakeRoot {
    let root = FakeRoot::new(dir);
    root.meminfo(128 << 20, 96 << 20, 8 << 20, 6 << 20).unwrap();
    root.file("/proc/pressure/memory", "some avg10=2.50 avg60=1.00 avg300=0.10 total=999\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
    root.card(&FakeCard {
        card: 1,
        ..FakeCard::apu(100 * MIB, 120 * GIB, 30 * GIB)
    })
    .unwrap();
    // llama-server: client 7 open through two fds (count once), client 8 in bare bytes with
    // the current `drm-resident-*` keys, and an ordinary file.
    let mut llama = FakeProcess::new(100, "llama-server");
    llama.cmdline = vec![
        "/opt/llama/llama-server".into(),
        "-m".into(),
        "/models/q.gguf".into(),
    ];
    llama.rss_kib = Some(2 << 20);
    llama.fdinfo = vec![
        (3, plain_fdinfo()),
        (5, amdgpu_fdinfo(APU, 7, "5120 KiB", "24 MiB")),
        (6, amdgpu_fdinfo(APU, 7, "5120 KiB", "24 MiB")),
        (
            7,
            format!(
                "drm-driver:\tamdgpu\ndrm-pdev:\t{APU}\ndrm-client-id:\t8\ndrm-resident-vram:\t1048576\ndrm-resident-gtt:\t2097152\n"
            ),
        ),
    ];
    root.process(&llama).unwrap();
    // A child that inherited client 7 through fork: the same allocation, not counted again.
    let mut child = FakeProcess::new(103, "llama-child");
    child.ppid = 100;
    child.fdinfo = vec![(5, amdgpu_fdinfo(APU, 7, "5120 KiB", "24 MiB"))];
    root.process(&child).unwrap();
    // A process that vanished between the directory listing and the read: no stat file.
    root.file("/proc/101/cmdline", "gone\0").unwrap();
    // A process whose status we may not read (a directory in place of the file).
    let mut hidden = FakeProcess::new(102, "hidden");
    hidden.rss_kib = Some(4096);
    root.process(&hidden).unwrap();
    std::fs::remove_file(dir.join("proc/102/status")).unwrap();
    std::fs::create_dir(dir.join("proc/102/status")).unwrap();
    root
}

#[test]
fn amd_apu_host() {
    let tmp = tempfile::tempdir().unwrap();
    let root = apu_host(tmp.path());
    let snap = probe(&root).snapshot().unwrap();

    assert_eq!(snap.version, 1);
    assert_eq!(snap.hostname, "fakehost");
    assert_eq!(snap.host.mem_total_bytes, 128 * GIB);
    assert_eq!(snap.host.mem_available_bytes, 96 * GIB);
    assert_eq!(snap.host.swap_total_bytes, 8 * GIB);
    assert_eq!(snap.host.swap_free_bytes, 6 * GIB);
    assert_eq!(snap.host.psi_memory_some_avg10, Some(2.5));

    assert_eq!(snap.gpus.len(), 1, "the DP connector is not a GPU");
    let gpu = &snap.gpus[0];
    assert_eq!(gpu.index, 0);
    assert_eq!(gpu.vendor, Vendor::Amd);
    assert_eq!(gpu.bus_id, APU);
    assert_eq!(gpu.name, "AMD [1002:1586]");
    assert_eq!(gpu.numa_node, None);
    assert_eq!(gpu.vram_total_bytes, Some(512 * MIB));
    assert_eq!(gpu.vram_used_bytes, Some(100 * MIB));
    assert_eq!(gpu.gtt_total_bytes, Some(120 * GIB));
    assert_eq!(gpu.gtt_used_bytes, Some(30 * GIB));
    assert!(gpu.unified_memory);
    assert_eq!(gpu.error, None);

    let pids: Vec<u32> = snap.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, vec![100, 102, 103], "the vanished process is skipped");

    let llama = &snap.processes[0];
    assert_eq!(llama.name, "llama-server");
    assert_eq!(llama.starttime, 1100);
    assert_eq!(llama.uid, Some(1000));
    assert_eq!(llama.rss_bytes, Some(2 * GIB));
    assert_eq!(llama.cmdline, "/opt/llama/llama-server -m /models/q.gguf");
    assert_eq!(llama.cgroup.as_deref(), Some("/"));
    assert_eq!(
        llama.gpu,
        vec![ProcessGpu {
            gpu_index: 0,
            vram_bytes: Some(5 * MIB + MIB),
            gtt_bytes: Some(24 * MIB + 2 * MIB),
        }]
    );

    let hidden = &snap.processes[1];
    assert_eq!(hidden.uid, None, "unreadable status leaves the uid empty");
    // stat's rss (1024 pages of the fake's 4 KiB) stands in for the status we could not read.
    assert_eq!(hidden.rss_bytes, Some(1024 * 4096));
    assert!(
        snap.processes[2].gpu.is_empty(),
        "a shared client counts once"
    );
    assert!(snap.notes.is_empty(), "{:?}", snap.notes);
}

#[test]
fn a_stat_scan_and_the_gpu_use_of_chosen_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = apu_host(tmp.path());
    let mut probe = probe(&root);
    let stats = probe.scan_stats();
    let got: Vec<(u32, Option<u32>, &str, Option<u64>)> = stats
        .iter()
        .map(|s| {
            let p = &s.process;
            (p.pid, p.ppid, p.name.as_str(), p.rss_bytes)
        })
        .collect();
    // The same processes as the full scan, from stat alone: the status we may not read
    // changes nothing here.
    assert_eq!(
        got,
        vec![
            (100, Some(1), "llama-server", Some(2 * GIB)),
            (102, Some(1), "hidden", Some(4 * MIB)),
            (103, Some(100), "llama-child", Some(MIB)),
        ]
    );
    assert_eq!(stats[0].process.starttime, 1100);
    assert_eq!(stats[0].pgrp, 100);
    assert!(stats[0].process.cmdline.is_empty() && stats[0].cgroup_ref.is_none());

    // Only the chosen processes' files are read: the client llama-server shares with its child
    // is the child's when the child alone is asked about, and counted once when both are.
    let (gpus, per_pid, unreadable) = probe.gpu_use_of(&[103]);
    assert_eq!(gpus.len(), 1);
    assert!(unreadable.is_empty());
    let held = |per_pid: &std::collections::HashMap<u32, Vec<ProcessGpu>>, pid| {
        per_pid.get(&pid).map(|l| (l[0].vram_bytes, l[0].gtt_bytes))
    };
    assert_eq!(held(&per_pid, 103), Some((Some(5 * MIB), Some(24 * MIB))));
    assert_eq!(held(&per_pid, 100), None);
    let (_, per_pid, _) = probe.gpu_use_of(&[100, 103]);
    assert_eq!(held(&per_pid, 100), Some((Some(6 * MIB), Some(26 * MIB))));
    assert_eq!(held(&per_pid, 103), None);

    // A process whose fds we may not list is named: it shows no GPU use, which is not none.
    let fd = tmp.path().join("proc/102/fd");
    std::fs::remove_dir_all(&fd).unwrap();
    std::fs::write(&fd, "").unwrap();
    let (_, _, unreadable) = probe.gpu_use_of(&[100, 102]);
    assert_eq!(unreadable, vec![102]);
}

#[test]
fn drm_source_none_reads_no_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let root = apu_host(tmp.path());
    let mut p = Probe::new(HostRoot::new(root.dir()).unwrap(), GpuSourceKind::None);
    let snap = p.snapshot().unwrap();
    assert!(snap.gpus.is_empty());
    assert!(
        p.gpu_notice(&snap.gpus)
            .unwrap()
            .contains("--gpu-source none")
    );
    // Clients on a device we did not read are skipped, and the snapshot says so.
    assert!(
        snap.notes[0].contains("2 DRM client(s)"),
        "{:?}",
        snap.notes
    );
}

#[test]
fn cgroup_v1_host() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(16 << 20, 8 << 20, 0, 0).unwrap();
    root.cgroup_v1("/docker/0123abcd", 3 * GIB, Some(4 * GIB), 2 * GIB, GIB)
        .unwrap();
    let mut p = FakeProcess::new(200, "python3");
    p.cgroup = "12:pids:/docker/0123abcd\n4:memory:/docker/0123abcd\n1:name=systemd:/docker/0123abcd\n0::/\n".into();
    root.process(&p).unwrap();

    let mut probe = probe(&root);
    let snap = probe.snapshot().unwrap();
    assert_eq!(snap.host.swap_total_bytes, 0);
    assert_eq!(
        snap.host.psi_memory_some_avg10, None,
        "no PSI file is null, not an error"
    );
    assert_eq!(
        snap.processes[0].cgroup.as_deref(),
        Some("/docker/0123abcd")
    );
    let cg = CgroupRef {
        version: CgroupVersion::V1,
        path: "/docker/0123abcd".into(),
    };
    let mem = probe.cgroups().memory(&cg).unwrap();
    assert_eq!(mem.usage_bytes, Some(3 * GIB));
    assert_eq!(mem.limit_bytes, Some(4 * GIB));
    assert_eq!(mem.anon_bytes, Some(2 * GIB));
    assert_eq!(mem.file_bytes, Some(GIB));
    // No limit is written as a huge number on v1.
    root.cgroup_v1("/free", 10, None, 0, 0).unwrap();
    let free = CgroupRef {
        version: CgroupVersion::V1,
        path: "/free".into(),
    };
    assert_eq!(probe.cgroups().memory(&free).unwrap().limit_bytes, None);
    // A path that tries to leave the hierarchy is refused.
    let evil = CgroupRef {
        version: CgroupVersion::V1,
        path: "/../../../etc".into(),
    };
    assert_eq!(probe.cgroups().memory(&evil), None);
}

#[test]
fn cgroup_v2_host() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(16 << 20, 8 << 20, 0, 0).unwrap();
    let path = "/system.slice/ollama.service";
    root.cgroup_v2(path, 6 * GIB, None, 5 * GIB, GIB).unwrap();
    let mut p = FakeProcess::new(300, "ollama");
    p.cgroup = format!("0::{path}\n");
    root.process(&p).unwrap();

    let mut probe = probe(&root);
    let snap = probe.snapshot().unwrap();
    assert_eq!(snap.processes[0].cgroup.as_deref(), Some(path));
    let cg = CgroupRef {
        version: CgroupVersion::V2,
        path: path.into(),
    };
    let mem = probe.cgroups().memory(&cg).unwrap();
    assert_eq!(mem.usage_bytes, Some(6 * GIB));
    assert_eq!(mem.limit_bytes, None, "\"max\" is no limit");
    assert_eq!(mem.anon_bytes, Some(5 * GIB));
    assert_eq!(mem.file_bytes, Some(GIB));
}

#[test]
fn two_node_numa_host() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(64 << 20, 32 << 20, 0, 0).unwrap();
    root.numa_node(0, "0-7,16-23", 32 << 20, 20 << 20).unwrap();
    root.numa_node(1, "8-15,24-31", 32 << 20, 12 << 20).unwrap();
    root.file("/sys/devices/system/node/online", "0-1\n")
        .unwrap();
    root.card(&FakeCard {
        card: 0,
        bus_id: "0000:81:00.0".into(),
        vendor: 0x1002,
        device: 0x744c,
        numa_node: 1,
        vram_total: Some(24 * GIB),
        vram_used: Some(GIB),
        gtt_total: Some(32 * GIB),
        gtt_used: Some(0),
    })
    .unwrap();
    let snap = probe(&root).snapshot().unwrap();
    assert_eq!(snap.numa.len(), 2);
    assert_eq!(snap.numa[0].node, 0);
    assert_eq!(snap.numa[0].cpus, "0-7,16-23");
    assert_eq!(snap.numa[0].mem_total_bytes, 32 * GIB);
    assert_eq!(snap.numa[0].mem_free_bytes, 20 * GIB);
    assert_eq!(snap.numa[1].cpus, "8-15,24-31");
    assert_eq!(snap.numa[1].mem_free_bytes, 12 * GIB);
    assert_eq!(snap.gpus[0].numa_node, Some(1));
    assert!(
        !snap.gpus[0].unified_memory,
        "a discrete card's GTT does not dwarf its VRAM"
    );
}

#[test]
fn garbage_meminfo_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.file("/proc/meminfo", "\x00\x01garbage\n").unwrap();
    let e = probe(&root).snapshot().unwrap_err().to_string();
    assert!(
        e.contains("/proc/meminfo is malformed: no MemTotal line"),
        "{e}"
    );
}
