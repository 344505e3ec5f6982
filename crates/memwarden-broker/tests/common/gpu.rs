//! A stand-in GPU for servers that sleep: the machine lacks one, so the driver's side is faked
//! and everything else is real. Test consumers started with `--vram-file` write what they hold
//! on the GPU to a file; this root shows it as an AMD card's sysfs (`mem_info_vram_used`) and as
//! each process's DRM fdinfo, beside the real `/proc/PID` files (stat, status, the fds that own
//! its port) and `/proc/net`. Host RAM is the processes' real resident memory: `MemAvailable`
//! is `ram_total` less what they hold, as in [`super::Machine`].

use std::path::{Path, PathBuf};

use memwarden_probe::fakeroot::{FakeCard, FakeRoot, amdgpu_fdinfo};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

use super::{Updater, meminfo, put, rss_of};

/// The bus id of [`FakeCard::apu`], which the fdinfo's `drm-pdev` must name.
const BUS_OF_APU: &str = "0000:c3:00.0";
/// The fd number the fake render node is open on in each consumer's fake `/proc/PID/fd`.
const DRM_FD: u32 = 900;

pub struct GpuMachine {
    // Stopped before the root it writes is removed.
    _updater: Updater,
    dir: tempfile::TempDir,
}

/// What a consumer says it holds on the stand-in GPU (0 before it first says).
fn vram_of(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Mirrors the real fd links of `pid` into `fd` (a socket's link text names its inode, which
/// is how a port's owner is found), beside the fake render node.
fn mirror_fds(pid: u32, fd: &Path) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for e in entries.flatten() {
        let link = fd.join(e.file_name());
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Ok(target) = std::fs::read_link(e.path())
            && target.to_string_lossy().starts_with("socket:")
        {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
}

impl GpuMachine {
    /// A card of `vram_total` bytes and a host of `ram_total`, used by the `consumers`
    /// (each its pid and its `--vram-file`).
    pub fn new(vram_total: u64, ram_total: u64, consumers: &[(u32, PathBuf)]) -> GpuMachine {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = FakeRoot::new(dir.path());
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(&proc).unwrap();
        std::os::unix::fs::symlink("/proc/self/net", proc.join("net")).unwrap();
        for (pid, _) in consumers {
            let p = proc.join(pid.to_string());
            std::fs::create_dir_all(p.join("fd")).unwrap();
            std::fs::create_dir_all(p.join("fdinfo")).unwrap();
            for f in [
                "stat", "status", "cmdline", "comm", "cgroup", "net", "environ",
            ] {
                std::os::unix::fs::symlink(format!("/proc/{pid}/{f}"), p.join(f)).unwrap();
            }
            std::os::unix::fs::symlink("/dev/dri/renderD128", p.join(format!("fd/{DRM_FD}")))
                .unwrap();
        }
        root.card(&FakeCard {
            vram_total: Some(vram_total),
            ..FakeCard::apu(0, 1 << 30, 0)
        })
        .unwrap();
        let used_file = dir
            .path()
            .join("sys/class/drm/card0/device/mem_info_vram_used");
        let consumers = consumers.to_vec();
        let _updater = Updater::spawn(move || {
            let mut vram_used = 0;
            let mut rss = 0;
            for (pid, file) in &consumers {
                let held = vram_of(file);
                vram_used += held;
                rss += rss_of(*pid);
                let p = proc.join(pid.to_string());
                mirror_fds(*pid, &p.join("fd"));
                let kib = format!("{} KiB", held >> 10);
                let info = amdgpu_fdinfo(BUS_OF_APU, u64::from(*pid), &kib, "0 KiB");
                put(&p.join(format!("fdinfo/{DRM_FD}")), &info);
            }
            put(&used_file, &format!("{vram_used}\n"));
            put(&proc.join("meminfo"), &meminfo(ram_total, rss));
        });
        GpuMachine { _updater, dir }
    }

    pub fn probe(&self) -> Probe {
        Probe::new(
            HostRoot::new(self.dir.path()).expect("the root"),
            GpuSourceKind::Drm,
        )
    }
}
