//! `memwarden doctor`'s checks on made-up machines: each gap is found and comes with its fix.

use memwarden_probe::HostRoot;
use memwarden_probe::doctor::{Check, Status, broker_check, machine_checks};
use memwarden_probe::fakeroot::{FakeProcess, FakeRoot};

fn check(checks: &[Check], name: &str) -> Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
        .clone()
}

/// A host as an unprivileged user sees it: uid 1000 without capabilities, a process of root,
/// an AMD card, cgroup v2 with memory, PSI.
fn host(dir: &std::path::Path) -> FakeRoot {
    let r = FakeRoot::new(dir);
    r.meminfo(16 << 20, 8 << 20, 0, 0).unwrap();
    r.file(
        "/proc/self/status",
        "Name:\tmemwarden\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n",
    )
    .unwrap();
    r.process(&FakeProcess::new(1, "systemd")).unwrap();
    let mut rootproc = FakeProcess::new(40, "llama-server");
    rootproc.uid = 0;
    r.process(&rootproc).unwrap();
    r.file("/sys/class/drm/card0/device/vendor", "0x1002\n")
        .unwrap();
    r.file("/sys/bus/pci/devices/0000:c3:00.0/vendor", "0x1002\n")
        .unwrap();
    r.cgroup_v2("/", 1 << 30, None, 0, 0).unwrap();
    r.file(
        "/proc/pressure/memory",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    )
    .unwrap();
    r
}

fn checks(dir: &std::path::Path, nvml: Result<Option<String>, String>) -> Vec<Check> {
    machine_checks(&HostRoot::new(dir).unwrap(), &nvml)
}

#[test]
fn other_users_fdinfo_needs_root_or_cap_sys_ptrace() {
    let dir = tempfile::tempdir().unwrap();
    let r = host(dir.path());
    let drm = check(&checks(dir.path(), Err("no driver".into())), "drm");
    assert_eq!(drm.status, Status::Limited, "{drm:?}");
    assert!(
        drm.detail.contains("1 process(es) of other users"),
        "{drm:?}"
    );
    assert!(drm.fix.unwrap().contains("cap_sys_ptrace"));
    // With CAP_SYS_PTRACE (bit 19) every fdinfo is readable.
    r.file(
        "/proc/self/status",
        "Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000080000\n",
    )
    .unwrap();
    let drm = check(&checks(dir.path(), Err("no driver".into())), "drm");
    assert_eq!(drm.status, Status::Ok, "{drm:?}");
}

#[test]
fn a_host_without_psi_or_memory_controller_says_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let r = host(dir.path());
    let c = checks(dir.path(), Err("x".into()));
    assert_eq!(check(&c, "psi").status, Status::Ok);
    assert_eq!(check(&c, "cgroup").status, Status::Ok);
    assert_eq!(
        check(&c, "cgroup").detail,
        "cgroup v2, memory accounting on"
    );
    std::fs::remove_file(dir.path().join("proc/pressure/memory")).unwrap();
    r.file("/sys/fs/cgroup/cgroup.controllers", "cpu pids\n")
        .unwrap();
    let c = checks(dir.path(), Err("x".into()));
    let psi = check(&c, "psi");
    assert_eq!(psi.status, Status::Missing);
    assert!(psi.fix.unwrap().contains("psi=1"));
    assert_eq!(check(&c, "cgroup").status, Status::Limited);
}

#[test]
fn a_container_without_the_host_pid_namespace_is_limited() {
    let dir = tempfile::tempdir().unwrap();
    let r = host(dir.path());
    let c = checks(dir.path(), Err("x".into()));
    assert_eq!(check(&c, "pid namespace").status, Status::Ok);
    r.file("/.dockerenv", "").unwrap();
    r.file("/proc/1/comm", "python3\n").unwrap();
    let pid = check(&checks(dir.path(), Err("x".into())), "pid namespace");
    assert_eq!(pid.status, Status::Limited, "{pid:?}");
    assert!(pid.fix.unwrap().contains("--pid=host"));
    // With --pid=host, pid 1 is the host's init.
    r.file("/proc/1/comm", "systemd\n").unwrap();
    let pid = check(&checks(dir.path(), Err("x".into())), "pid namespace");
    assert_eq!(pid.status, Status::Ok, "{pid:?}");
}

#[test]
fn nvml_is_needed_only_where_an_nvidia_gpu_is() {
    let dir = tempfile::tempdir().unwrap();
    let r = host(dir.path());
    let nvml = check(
        &checks(dir.path(), Err("libnvidia-ml.so.1 not found".into())),
        "nvml",
    );
    assert_eq!(nvml.status, Status::Ok, "{nvml:?}");
    r.file("/sys/bus/pci/devices/0000:01:00.0/vendor", "0x10de\n")
        .unwrap();
    let nvml = check(
        &checks(dir.path(), Err("libnvidia-ml.so.1 not found".into())),
        "nvml",
    );
    assert_eq!(nvml.status, Status::Missing, "{nvml:?}");
    assert!(nvml.detail.contains("libnvidia-ml.so.1 not found"));
    r.file("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "")
        .unwrap();
    let nvml = check(&checks(dir.path(), Ok(Some("550.54".into()))), "nvml");
    assert_eq!(nvml.status, Status::Ok);
    assert!(
        nvml.detail
            .contains("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
            && nvml.detail.contains("550.54"),
        "{nvml:?}"
    );
}

#[test]
fn runtime_state_only_root_can_read_is_limited() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    host(dir.path());
    let c = check(&checks(dir.path(), Err("x".into())), "runtimes");
    assert_eq!(c.status, Status::Ok, "{c:?}");
    let docker = dir.path().join("var/lib/docker/containers");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pods = dir.path().join("var/log/pods");
    std::fs::create_dir_all(&pods).unwrap();
    std::fs::set_permissions(&pods, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = check(&checks(dir.path(), Err("x".into())), "runtimes");
    assert_eq!(c.status, Status::Limited, "{c:?}");
    assert!(
        c.detail.contains("docker (/var/lib/docker/containers)"),
        "{c:?}"
    );
    assert!(c.detail.contains("readable: kubelet"), "{c:?}");
}

#[test]
fn the_broker_line_says_whether_it_answers_and_its_config_checks() {
    let url = "http://127.0.0.1:7077";
    assert_eq!(broker_check(url, Ok(None)).status, Status::Ok);
    let bad = broker_check(url, Ok(Some(Err("pool gpu0: no GPU 0".into()))));
    assert_eq!(bad.status, Status::Limited);
    let none = broker_check(url, Err("connection refused".into()));
    assert_eq!(none.status, Status::Missing);
    assert!(none.fix.unwrap().contains("memwarden serve"));
}
