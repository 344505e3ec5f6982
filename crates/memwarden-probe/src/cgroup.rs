//! Memory cgroups, v2 and v1 (a host may run v1 for memory with a v2 unified mount beside it).

use serde::{Deserialize, Serialize};

use crate::root::{HostRoot, SMALL_FILE_BYTES as SMALL};

/// Which hierarchy a cgroup path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A process's memory cgroup, from /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRef {
    pub version: CgroupVersion,
    pub path: String,
}

/// The memory of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMemory {
    pub usage_bytes: Option<u64>,
    /// `None` when unlimited ("max" on v2; a near-`i64::MAX` page-rounded value on v1).
    pub limit_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
}

/// Parses /proc/PID/cgroup and picks the memory controller's path: the v1 `memory` line when
/// there is one (the memory controller is bound there), else the v2 `0::` line.
pub fn parse_proc_cgroup(text: &str) -> Option<CgroupRef> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            return Some(CgroupRef {
                version: CgroupVersion::V1,
                path: path.to_string(),
            });
        }
    }
    v2.map(|path| CgroupRef {
        version: CgroupVersion::V2,
        path: path.to_string(),
    })
}

/// Where the hierarchies are mounted under the root: v2 at `/sys/fs/cgroup` or, on hybrid
/// hosts, `/sys/fs/cgroup/unified`; v1 memory at `/sys/fs/cgroup/memory`.
#[derive(Debug, Clone)]
pub struct CgroupMounts {
    v2: Option<std::path::PathBuf>,
    v1_memory: Option<std::path::PathBuf>,
}

impl CgroupMounts {
    pub fn discover(root: &HostRoot) -> CgroupMounts {
        let base = root.path("/sys/fs/cgroup");
        let v2 = if base.join("cgroup.controllers").exists() {
            Some(base.clone())
        } else {
            let unified = base.join("unified");
            unified.join("cgroup.procs").exists().then_some(unified)
        };
        let memory = base.join("memory");
        let v1_memory = memory
            .join("memory.usage_in_bytes")
            .exists()
            .then_some(memory);
        CgroupMounts { v2, v1_memory }
    }

    /// The directory of a cgroup in its hierarchy, when that hierarchy is mounted.
    pub fn dir(&self, cg: &CgroupRef) -> Option<std::path::PathBuf> {
        let base = match cg.version {
            CgroupVersion::V2 => self.v2.as_ref()?,
            CgroupVersion::V1 => self.v1_memory.as_ref()?,
        };
        // A path from /proc is untrusted: refuse `..` so it cannot leave the hierarchy.
        if cg.path.split('/').any(|c| c == "..") {
            return None;
        }
        Some(base.join(cg.path.trim_start_matches('/')))
    }

    /// Reads a cgroup's memory; fields that cannot be read stay `None`.
    pub fn memory(&self, cg: &CgroupRef) -> Option<CgroupMemory> {
        let dir = self.dir(cg)?;
        let read = |name: &str| crate::root::read_to_string_bounded(&dir.join(name), SMALL).ok();
        let (usage, limit) = match cg.version {
            CgroupVersion::V2 => ("memory.current", "memory.max"),
            CgroupVersion::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
        };
        let usage_bytes = read(usage).and_then(|t| t.trim().parse().ok());
        let limit_bytes = read(limit).and_then(|t| parse_limit(&t));
        let mut mem = CgroupMemory {
            usage_bytes,
            limit_bytes,
            ..CgroupMemory::default()
        };
        if let Some(stat) = read("memory.stat") {
            let (anon, file) = match cg.version {
                CgroupVersion::V2 => ("anon", "file"),
                CgroupVersion::V1 => ("rss", "cache"),
            };
            mem.anon_bytes = stat_value(&stat, anon);
            mem.file_bytes = stat_value(&stat, file);
        }
        (mem != CgroupMemory::default()).then_some(mem)
    }
}

/// A limit file's content: "max" (v2) or a value so large it means none (v1 writes
/// `PAGE_COUNTER_MAX` pages in bytes, 9223372036854771712 on 4 KiB pages).
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let v: u64 = t.parse().ok()?;
    (v < 1 << 62).then_some(v)
}

/// A `key value` line of memory.stat.
pub fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_memory_controller() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(hybrid),
            Some(CgroupRef {
                version: CgroupVersion::V1,
                path: "/process_api/abc".into()
            })
        );
        let v2 = "0::/system.slice/docker-1234.scope\n";
        assert_eq!(parse_proc_cgroup(v2).unwrap().version, CgroupVersion::V2);
        assert_eq!(parse_proc_cgroup("garbage"), None);
        let merged = "5:cpu,memory:/a\n";
        assert_eq!(parse_proc_cgroup(merged).unwrap().path, "/a");
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("4294967296\n"), Some(4 << 30));
        assert_eq!(parse_limit("junk"), None);
    }

    #[test]
    fn stat_keys_match_whole_words() {
        let s = "anon 100\nanon_thp 5\nfile 20\n";
        assert_eq!(stat_value(s, "anon"), Some(100));
        assert_eq!(stat_value(s, "file"), Some(20));
        assert_eq!(stat_value(s, "shmem"), None);
    }
}
