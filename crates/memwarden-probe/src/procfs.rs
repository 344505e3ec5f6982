//! The files of /proc/PID that a full snapshot and the steady-state sampler both read: a
//! process's lasting facts (status, cmdline, cgroup), one walk over its fd links, and the
//! fdinfo of its DRM fds.

use crate::cgroup::{CgroupRef, parse_proc_cgroup};
use crate::fdinfo::DrmClients;
use crate::process::{self, Status};
use crate::root::ReadBuf;
use crate::sanitize;

/// File name endings of model weights and checkpoints.
pub const MODEL_EXTENSIONS: &[&str] = &[
    "gguf",
    "ggml",
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "onnx",
    "h5",
    "pb",
    "tflite",
    "engine",
    "plan",
    "nemo",
    "msgpack",
];

/// A model file a process holds open, as its fd link names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFile {
    pub fd: u32,
    /// The path the link names (sanitised; inside the process's mount namespace).
    pub path: String,
    /// The file was deleted while open (`… (deleted)`).
    pub deleted: bool,
}

impl OpenFile {
    /// An fd link's target, when it names a model file (a deleted one too, marked so).
    pub fn model(fd: &std::ffi::OsStr, target: &[u8]) -> Option<OpenFile> {
        let (name, deleted) = match target.strip_suffix(b" (deleted)") {
            Some(t) => (t, true),
            None => (target, false),
        };
        // `socket:[N]`, `pipe:[N]`, `anon_inode:…` are no files. (A real link is absolute; a
        // fixture's is relative, to stay inside the fake root.)
        if name.contains(&b':') && !name.starts_with(b"/") {
            return None;
        }
        let ext = &name[name.iter().rposition(|&b| b == b'.')? + 1..];
        let ext = std::str::from_utf8(ext).ok()?;
        if !MODEL_EXTENSIONS.iter().any(|m| m.eq_ignore_ascii_case(ext)) {
            return None;
        }
        Some(OpenFile {
            fd: fd.to_str()?.parse().ok()?,
            path: sanitize::sanitize_bytes(name, sanitize::CMDLINE_MAX),
            deleted,
        })
    }
}

/// `proc_dir/PID/file` into one reused path buffer.
pub(crate) fn proc_path(path: &mut String, proc_dir: &str, pid: u32, file: &str) {
    use std::fmt::Write;
    path.clear();
    path.push_str(proc_dir);
    let _ = write!(path, "/{pid}/{file}");
}

/// What does not change during a process's life. A file that cannot be read leaves its part
/// empty.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub status: Option<Status>,
    pub cmdline: String,
    pub cgroup: Option<CgroupRef>,
}

impl Facts {
    /// The cgroup path as the snapshot shows it.
    pub fn cgroup_text(&self) -> Option<String> {
        self.cgroup
            .as_ref()
            .map(|c| sanitize::sanitize(&c.path, sanitize::CMDLINE_MAX))
    }
}

/// Reads status, cmdline and cgroup, each with one read into `buf`.
pub(crate) fn read_facts(buf: &mut ReadBuf, proc_dir: &str, pid: u32, path: &mut String) -> Facts {
    proc_path(path, proc_dir, pid, "status");
    let status = buf.read(path.as_ref()).ok().map(process::parse_status);
    proc_path(path, proc_dir, pid, "cmdline");
    let cmdline = buf
        .read(path.as_ref())
        .map(process::parse_cmdline)
        .unwrap_or_default();
    proc_path(path, proc_dir, pid, "cgroup");
    let cgroup = buf
        .read(path.as_ref())
        .ok()
        .and_then(|b| parse_proc_cgroup(std::str::from_utf8(b).ok()?));
    Facts {
        status,
        cmdline,
        cgroup,
    }
}

/// One walk over a process's fd links.
#[derive(Debug, Clone, Default)]
pub(crate) struct FdScan {
    /// Fds naming a DRM device, whose fdinfo carries GPU use; sorted.
    pub drm_fds: Vec<u32>,
    /// Open model files, by fd.
    pub model_files: Vec<OpenFile>,
    /// Whether the fd directory could be listed: another user's process shows no fds at all,
    /// and then no GPU use either, which is not the same as holding none.
    pub readable: bool,
}

/// The numbered entries of the proc directory (its processes), in order.
pub(crate) fn list_pids(proc_dir: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = match std::fs::read_dir(proc_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    pids.sort_unstable();
    pids
}

/// Reads every fd link once: a link names its file, so no fd's fdinfo is opened just to learn
/// that it is not a DRM client, and model files come from the same walk.
pub(crate) fn scan_fds(proc_dir: &str, pid: u32, path: &mut String) -> FdScan {
    let mut scan = FdScan::default();
    proc_path(path, proc_dir, pid, "fd");
    let Ok(entries) = std::fs::read_dir(&*path) else {
        return scan;
    };
    scan.readable = true;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.as_os_str().as_encoded_bytes();
        if target.starts_with(b"/dev/dri/") {
            if let Some(fd) = name.to_str().and_then(|s| s.parse().ok()) {
                scan.drm_fds.push(fd);
            }
        } else if let Some(file) = OpenFile::model(&name, target) {
            scan.model_files.push(file);
        }
    }
    scan.drm_fds.sort_unstable();
    scan.model_files.sort_by_key(|f| f.fd);
    scan
}

/// Reads the fdinfo of DRM fds into `clients`.
pub(crate) fn read_drm_clients(
    buf: &mut ReadBuf,
    proc_dir: &str,
    pid: u32,
    fds: &[u32],
    path: &mut String,
    clients: &mut DrmClients,
) {
    use std::fmt::Write;
    for fd in fds {
        proc_path(path, proc_dir, pid, "fdinfo");
        let _ = write!(path, "/{fd}");
        if let Ok(b) = buf.read(path.as_ref()) {
            clients.add_fdinfo(pid, b);
        }
    }
}
