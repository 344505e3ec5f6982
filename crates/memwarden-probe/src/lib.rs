//! memwarden-probe reads a machine, once, into a [`Snapshot`]: host RAM, processes, cgroups,
//! GPUs (NVML and DRM) and NUMA nodes. Every read goes through a [`HostRoot`] so that a fake
//! machine laid out as a directory tree can stand in for the real one. No policy, no history.

pub mod cgroup;
pub mod doctor;
pub mod duration;
pub mod fakeroot;
pub mod fdinfo;
pub mod framework;
pub mod gpu;
pub mod incremental;
pub mod meminfo;
pub mod names;
pub mod net;
pub mod numa;
pub mod owner;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod root;
pub mod sanitize;
pub mod scrape;
pub mod size;
pub mod snapshot;
pub mod workload;

pub use gpu::GpuSourceKind;
pub use probe::Probe;
pub use root::HostRoot;
pub use snapshot::Snapshot;

use std::path::PathBuf;

/// An error and its causes on one line, as memwarden prints errors everywhere.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Each message carries its cause, and no variant exposes it again as `source()`: the binary
/// prints the whole chain, which would say the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot use {} as the host root: {why}", root.display())]
    BadRoot { root: PathBuf, why: String },
    #[error("cannot read {file}: {cause}")]
    Read { file: String, cause: std::io::Error },
    #[error("{file} is malformed: {why}")]
    Malformed { file: String, why: String },
    #[error("{0}")]
    BadArgument(String),
}
