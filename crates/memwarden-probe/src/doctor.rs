//! `memwarden doctor`: what memwarden can and cannot see on this machine, and how to fix each
//! gap. Every check reads through the host root, so each verdict is tested on a made-up machine;
//! what needs the real world (NVML, a broker's answer) is handed in as facts.

use serde::Serialize;

use crate::root::HostRoot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Limited,
    Missing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Limited => "limited",
            Status::Missing => "missing",
        }
    }
}

/// One line of the report: what was checked, what was found, and the fix when not ok.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// What NVML said when it was loaded: the driver's version, or why it did not load.
pub type NvmlFacts = Result<Option<String>, String>;

/// PCI vendor id of NVIDIA.
const NVIDIA: &str = "0x10de";
/// CAP_SYS_PTRACE's bit in the capability sets of /proc/PID/status.
const CAP_SYS_PTRACE: u32 = 19;
/// Where libnvidia-ml is installed by the usual packages.
const NVML_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
];
/// At most this many processes are looked at to find one of another user.
const PROCESS_SCAN_MAX: usize = 4096;

/// The checks that only read the machine (everything but the broker's answer).
pub fn machine_checks(root: &HostRoot, nvml: &NvmlFacts) -> Vec<Check> {
    let me = own_identity(root);
    vec![
        nvml_check(root, nvml),
        drm_check(root, &me),
        cgroup_check(root),
        psi_check(root),
        runtimes_check(root, &me),
        pid_namespace_check(root),
    ]
}

fn nvml_check(root: &HostRoot, nvml: &NvmlFacts) -> Check {
    let library = NVML_DIRS
        .iter()
        .map(|d| format!("{d}/libnvidia-ml.so.1"))
        .find(|p| root.path(p).exists());
    let nvidia_devices = pci_vendors(root).iter().filter(|v| *v == NVIDIA).count();
    match nvml {
        Ok(driver) => Check::new(
            "nvml",
            Status::Ok,
            format!(
                "loaded ({}), driver {}",
                library.as_deref().unwrap_or("libnvidia-ml.so.1"),
                driver.as_deref().unwrap_or("of unknown version")
            ),
        ),
        Err(_) if nvidia_devices == 0 => Check::new(
            "nvml",
            Status::Ok,
            "not needed: no NVIDIA GPU on the PCI bus",
        ),
        Err(e) => Check::new(
            "nvml",
            Status::Missing,
            format!("{nvidia_devices} NVIDIA GPU(s), but NVML does not load: {e}"),
        )
        .fix(
            "install the NVIDIA driver (it brings libnvidia-ml.so.1); in a container, run it \
             with the NVIDIA Container Toolkit (docker run --gpus all)",
        ),
    }
}

/// The vendor ids of the PCI devices (bounded: a bus has at most a few hundred).
fn pci_vendors(root: &HostRoot) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.path("/sys/bus/pci/devices")) else {
        return Vec::new();
    };
    dir.flatten()
        .take(1024)
        .filter_map(|e| std::fs::read_to_string(e.path().join("vendor")).ok())
        .map(|v| v.trim().to_string())
        .collect()
}

/// Who memwarden runs as: its uid and whether it may read other users' fdinfo.
struct Identity {
    uid: Option<u32>,
    may_ptrace: bool,
}

fn own_identity(root: &HostRoot) -> Identity {
    let status = root.read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let uid = field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok());
    let cap = field("CapEff:")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(0);
    Identity {
        uid,
        may_ptrace: uid == Some(0) || cap & (1 << CAP_SYS_PTRACE) != 0,
    }
}

/// The uid of a process, from its status file.
fn uid_of(root: &HostRoot, pid: &str) -> Option<u32> {
    let status = root.read_to_string(&format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn drm_check(root: &HostRoot, me: &Identity) -> Check {
    let cards: Vec<String> = std::fs::read_dir(root.path("/sys/class/drm"))
        .into_iter()
        .flatten()
        .flatten()
        .take(256)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("card") && !n.contains('-'))
        .collect();
    if cards.is_empty() {
        return Check::new(
            "drm",
            Status::Ok,
            "no DRM device (no AMD or Intel GPU here)",
        );
    }
    let devices = format!("{} DRM device(s)", cards.len());
    if me.may_ptrace {
        return Check::new(
            "drm",
            Status::Ok,
            format!("{devices}; every process's fdinfo is readable"),
        );
    }
    let others = std::fs::read_dir(root.path("/proc"))
        .into_iter()
        .flatten()
        .flatten()
        .take(PROCESS_SCAN_MAX)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| uid_of(root, pid).is_some_and(|u| Some(u) != me.uid))
        .count();
    if others == 0 {
        return Check::new(
            "drm",
            Status::Ok,
            format!("{devices}; fdinfo of this user's processes is readable"),
        );
    }
    Check::new(
        "drm",
        Status::Limited,
        format!(
            "{devices}; the GPU memory of {others} process(es) of other users is not visible \
             (their fdinfo needs root or CAP_SYS_PTRACE)"
        ),
    )
    .fix("run as root, or: sudo setcap cap_sys_ptrace+ep \"$(command -v memwarden)\"")
}

fn cgroup_check(root: &HostRoot) -> Check {
    if let Ok(controllers) = root.read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        return if controllers.split_whitespace().any(|c| c == "memory") {
            Check::new("cgroup", Status::Ok, "cgroup v2, memory accounting on")
        } else {
            Check::new(
                "cgroup",
                Status::Limited,
                "cgroup v2 without the memory controller: workloads fall back to their processes' RSS",
            )
            .fix("enable it: boot with cgroup_enable=memory, or echo +memory > /sys/fs/cgroup/cgroup.subtree_control")
        };
    }
    if root
        .path("/sys/fs/cgroup/memory/memory.usage_in_bytes")
        .exists()
    {
        return Check::new("cgroup", Status::Ok, "cgroup v1, memory accounting on");
    }
    Check::new(
        "cgroup",
        Status::Missing,
        "no memory cgroup under /sys/fs/cgroup: workloads fall back to their processes' RSS",
    )
    .fix("mount the cgroup filesystem (in a container: -v /sys/fs/cgroup:/sys/fs/cgroup:ro)")
}

fn psi_check(root: &HostRoot) -> Check {
    match root.read_to_string("/proc/pressure/memory") {
        Ok(t) if t.starts_with("some ") => {
            Check::new("psi", Status::Ok, "memory pressure (PSI) is readable")
        }
        _ => Check::new(
            "psi",
            Status::Missing,
            "no /proc/pressure/memory: memory pressure is not shown",
        )
        .fix("boot with psi=1 (a kernel of 4.20 or later built with CONFIG_PSI)"),
    }
}

/// Where each runtime keeps the state that names its containers.
const RUNTIMES: &[(&str, &str)] = &[
    ("docker", "/var/lib/docker/containers"),
    ("podman", "/var/lib/containers/storage/overlay-containers"),
    ("containerd", "/run/containerd"),
    ("cri-o", "/run/crio"),
    ("kubelet", "/var/log/pods"),
];

fn runtimes_check(root: &HostRoot, me: &Identity) -> Check {
    let mut readable = Vec::new();
    let mut closed = Vec::new();
    for (name, dir) in RUNTIMES {
        let path = root.path(dir);
        if !path.exists() {
            continue;
        }
        // Root reads through any mode; for others the directory must let them in.
        let open = std::fs::read_dir(&path).is_ok() && (me.uid == Some(0) || world_open(&path));
        if open {
            readable.push(*name);
        } else {
            closed.push(format!("{name} ({dir})"));
        }
    }
    match (readable.is_empty(), closed.is_empty()) {
        (true, true) => Check::new(
            "runtimes",
            Status::Ok,
            "no container runtime state found: containers show by their cgroup's id",
        ),
        (_, true) => Check::new(
            "runtimes",
            Status::Ok,
            format!("state readable: {}", readable.join(", ")),
        ),
        _ => Check::new(
            "runtimes",
            Status::Limited,
            format!(
                "state not readable: {}{}: containers show by id, not by name",
                closed.join(", "),
                if readable.is_empty() {
                    String::new()
                } else {
                    format!(" (readable: {})", readable.join(", "))
                }
            ),
        )
        .fix("run as root (the runtimes keep their state readable by root only)"),
    }
}

/// A directory that any user may list.
fn world_open(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005)
}

/// Inside a container, whether the host's processes are visible (its pid namespace shared).
fn pid_namespace_check(root: &HostRoot) -> Check {
    let in_container = root.path("/.dockerenv").exists()
        || root.path("/run/.containerenv").exists()
        || root.read_to_string("/proc/1/cgroup").is_ok_and(|c| {
            ["docker", "kubepods", "libpod", "containerd", "crio"]
                .iter()
                .any(|k| c.contains(k))
        });
    if !in_container {
        return Check::new(
            "pid namespace",
            Status::Ok,
            "not in a container: every process is visible",
        );
    }
    let init = root.read_to_string("/proc/1/comm").unwrap_or_default();
    let init = init.trim();
    if matches!(init, "systemd" | "init") {
        return Check::new(
            "pid namespace",
            Status::Ok,
            "in a container that shares the host's pid namespace",
        );
    }
    Check::new(
        "pid namespace",
        Status::Limited,
        format!(
            "in a container whose pid 1 is {:?}: only its own processes are visible",
            crate::sanitize::sanitize(init, 40)
        ),
    )
    .fix("run it with the host's pid namespace: docker/podman run --pid=host, or hostPID: true in Kubernetes")
}

/// The broker line, from what asking it gave: `Ok(config verdict)` when it answered.
pub fn broker_check(url: &str, answer: Result<Option<Result<String, String>>, String>) -> Check {
    match answer {
        Ok(None) => Check::new("broker", Status::Ok, format!("answers at {url}")),
        Ok(Some(Ok(cfg))) => Check::new(
            "broker",
            Status::Ok,
            format!("answers at {url}; its configuration checks: {cfg}"),
        ),
        Ok(Some(Err(e))) => Check::new(
            "broker",
            Status::Limited,
            format!("answers at {url}, but its configuration does not check: {e}"),
        )
        .fix("memwarden serve --config FILE --check names the problem; fix the file, then reload (SIGHUP)"),
        Err(e) => Check::new("broker", Status::Missing, format!("no broker answers at {url} ({e})"))
            .fix("start one: memwarden serve --config /etc/memwarden/memwarden.toml (or set MEMWARDEN_BROKER to where it listens)"),
    }
}
