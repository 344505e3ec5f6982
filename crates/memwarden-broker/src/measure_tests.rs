//! Tests of `measure.rs`.

use super::*;
use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo};
use memwarden_probe::{GpuSourceKind, HostRoot};

/// A process listening on `port` through socket inode `inode`.
fn listener(pid: u32, comm: &str, rss_mib: u64, inode: u64) -> FakeProcess {
    let mut p = FakeProcess::new(pid, comm);
    p.rss_kib = Some(rss_mib * 1024);
    p.fd_links = vec![(3, format!("socket:[{inode}]"))];
    p
}

/// /proc/net/tcp with one listening socket per (port, inode).
fn tcp(listening: &[(u16, u64)]) -> String {
    let mut t = String::from(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
    );
    for (i, (port, inode)) in listening.iter().enumerate() {
        t.push_str(&format!(
            "   {i}: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
        ));
    }
    t
}

fn machine(dir: &std::path::Path) -> Probe {
    let root = FakeRoot::new(dir);
    root.meminfo(16 << 20, 8 << 20, 0, 0).unwrap();
    root.card(&FakeCard::apu(100 << 20, 64 << 30, 10 << 30))
        .unwrap();
    root.file(
        "/proc/net/tcp",
        tcp(&[(8000, 501), (8001, 502), (8002, 503)]),
    )
    .unwrap();
    root.process(&FakeProcess::new(1, "init")).unwrap();
    // A server that owns its port, holding 2 GiB of GTT.
    let mut server = listener(40, "server", 300, 501);
    server
        .fdinfo
        .push((7, amdgpu_fdinfo("0000:c3:00.0", 5, "0 KiB", "2 GiB")));
    root.process(&server).unwrap();
    // A server behind docker-proxy, which owns the port and holds a few MiB itself.
    root.process(&listener(50, "docker-proxy", 4, 502)).unwrap();
    // A server that let its model go: found, holding no GPU memory.
    root.process(&listener(60, "idle-server", 80, 503)).unwrap();
    Probe::new(HostRoot::new(dir).unwrap(), GpuSourceKind::Drm)
}

fn target(kind: PoolKind, pgid: Option<i32>, port: Option<u16>) -> Target {
    Target {
        locator: Locator {
            pgid,
            port,
            workload: None,
        },
        kind,
        gpu: (kind != PoolKind::Ram).then_some(0),
    }
}

#[test]
fn a_forwarder_or_a_port_nobody_owns_is_no_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = machine(dir.path());
    let got = Measurer::default().consumers(
        &mut probe,
        &[
            target(PoolKind::Ram, None, Some(8000)),
            target(PoolKind::Ram, None, Some(8001)),
            target(PoolKind::Ram, None, Some(9999)),
            target(PoolKind::Ram, Some(777), None),
        ],
    );
    // The server itself; none for the forwarder's port or a port nobody owns; and the
    // broker's own process group, gone, holds nothing.
    assert_eq!(got, vec![Some(300 << 20), None, None, Some(0)]);
}

#[test]
fn a_server_found_without_gpu_memory_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = machine(dir.path());
    let got = Measurer::default().consumers(
        &mut probe,
        &[
            target(PoolKind::Gtt, None, Some(8000)),
            target(PoolKind::Gtt, None, Some(8001)),
            target(PoolKind::Gtt, None, Some(8002)),
        ],
    );
    assert_eq!(got, vec![Some(2 << 30), None, Some(0)]);
}

#[test]
fn a_process_whose_fds_cannot_be_read_is_no_gpu_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = machine(dir.path());
    // A worker of the server under another user: its fdinfo is closed to us, so its
    // GPU memory is unknown, not nothing.
    let mut worker = FakeProcess::new(41, "worker");
    worker.ppid = 40;
    FakeRoot::new(dir.path()).process(&worker).unwrap();
    let fd = dir.path().join("proc/41/fd");
    let _ = std::fs::remove_dir_all(&fd);
    std::fs::write(&fd, "").unwrap();
    let got = Measurer::default().consumers(&mut probe, &[target(PoolKind::Gtt, None, Some(8000))]);
    assert_eq!(got, vec![None]);
}

#[test]
fn a_named_workload_is_measured_where_its_port_leads_only_to_a_forwarder() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = machine(dir.path());
    let root = FakeRoot::new(dir.path());
    // vLLM in a container behind the docker-proxy on port 8001: a server process and a
    // worker, 1 GiB of GTT between them.
    let id = "3f2a".repeat(16);
    root.file(
        &format!("/var/lib/docker/containers/{id}/config.v2.json"),
        r#"{"Name":"/vllm","Config":{"Image":"vllm/vllm-openai"}}"#,
    )
    .unwrap();
    for (pid, rss_mib, gtt) in [(70, 900, "768 MiB"), (71, 100, "256 MiB")] {
        let mut p = FakeProcess::new(pid, "python3");
        p.rss_kib = Some(rss_mib * 1024);
        p.cgroup = format!("0::/system.slice/docker-{id}.scope\n");
        p.fdinfo
            .push((9, amdgpu_fdinfo("0000:c3:00.0", pid.into(), "0 KiB", gtt)));
        root.process(&p).unwrap();
    }
    let named = |kind, workload: &str, pgid| Target {
        locator: Locator {
            pgid,
            port: Some(8001),
            workload: Some(workload.to_string()),
        },
        kind,
        gpu: (kind != PoolKind::Ram).then_some(0),
    };
    let mut m = Measurer::default();
    let got = m.consumers(
        &mut probe,
        &[
            named(PoolKind::Ram, "vllm", None),
            named(PoolKind::Gtt, "vllm", None),
            named(PoolKind::Gtt, &format!("docker:{id}"), None),
            // A plain process by its name.
            named(PoolKind::Ram, "idle-server", None),
            // A workload not running: unknown, unless the broker's own process group,
            // which would have run it, is gone.
            named(PoolKind::Ram, "comfyui", None),
            named(PoolKind::Ram, "comfyui", Some(777)),
        ],
    );
    assert_eq!(
        got,
        vec![
            Some(1000 << 20),
            Some(1 << 30),
            Some(1 << 30),
            Some(80 << 20),
            None,
            Some(0)
        ]
    );
}

#[test]
fn found_names_the_processes_or_says_why_there_are_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = machine(dir.path());
    // A socket listening on 8003 that no process we can read holds.
    let root = FakeRoot::new(dir.path());
    root.file(
        "/proc/net/tcp",
        tcp(&[(8000, 501), (8001, 502), (8002, 503), (8003, 504)]),
    )
    .unwrap();
    let mut m = Measurer::default();
    let scan = probe.scan_processes().0;
    let mut found = |pgid, port, workload: Option<&str>| {
        let loc = Locator {
            pgid,
            port,
            workload: workload.map(str::to_string),
        };
        m.found(&mut probe, &scan, &loc)
    };
    assert_eq!(
        found(None, Some(8000), None),
        Ok(vec![(40, "server".to_string())])
    );
    let why = |r: Result<Vec<(u32, String)>, String>| r.unwrap_err();
    assert!(
        why(found(None, Some(8001), None))
            .starts_with("port 8001 is held by docker-proxy (pid 50), which only forwards")
    );
    assert!(why(found(None, Some(9999), None)).starts_with("nothing listens on port 9999 here"));
    assert!(
        why(found(None, Some(8003), None))
            .starts_with("the process listening on port 8003 cannot be read")
    );
    assert_eq!(
        why(found(None, Some(8000), Some("comfyui"))),
        "no process of workload \"comfyui\" runs now"
    );
    assert_eq!(
        why(found(Some(777), None, None)),
        "the processes it was started as are gone"
    );
    assert_eq!(
        why(found(None, None, None)),
        "its upstream is not on this machine"
    );
}

#[test]
fn forwarders_are_known_by_their_truncated_names_too() {
    for comm in [
        "docker-proxy",
        "rootlessport",
        "rootlessport-ch",
        "pasta",
        "conmon",
    ] {
        assert!(fronts(comm), "{comm}");
    }
    for comm in ["python3", "ollama", "rootlessport-x", "docker-proxy2"] {
        assert!(!fronts(comm), "{comm}");
    }
}

#[test]
fn one_read_of_every_port_finds_what_a_read_per_port_finds() {
    let dir = tempfile::tempdir().unwrap();
    let probe = machine(dir.path());
    let root = FakeRoot::new(dir.path());
    root.file(
        "/proc/net/tcp",
        tcp(&[(8000, 501), (8001, 502), (8002, 503), (8003, 504)]),
    )
    .unwrap();
    // Two processes holding one socket (a server and the worker it forked): the first listed
    // is the owner, either way
    // (the listing's order is the directory's, not the pids').
    root.process(&listener(70, "worker", 10, 501)).unwrap();
    let ports = [8000, 8001, 8002, 8003, 9999];
    let ix = PortIndex::read(probe.root(), &ports);
    for port in ports {
        assert!(ix.covers(port));
        assert_eq!(
            ix.owner_of_port(port),
            owner_of_port(probe.root(), port),
            "{port}"
        );
        assert_eq!(
            ix.listening_on(port),
            listening_on(probe.root(), port),
            "{port}"
        );
    }
    assert!(matches!(ix.owner_of_port(8000), Some(40 | 70)));
    assert_eq!(
        ix.owner_of_port(8003),
        None,
        "a socket no process we can read holds"
    );
    assert!(!ix.covers(7000));
}
