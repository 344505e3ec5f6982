//! NUMA nodes from /sys/devices/system/node.

use crate::root::{HostRoot, SMALL_FILE_BYTES as SMALL};
use crate::snapshot::NumaNode;

/// Every `nodeN` directory, sorted by node number. A host without NUMA support in its kernel
/// has no such directory: that is an empty list.
pub fn read_nodes(root: &HostRoot) -> Vec<NumaNode> {
    let base = root.path("/sys/devices/system/node");
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut nodes: Vec<NumaNode> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let node: u32 = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
            let dir = e.path();
            let cpus = crate::root::read_to_string_bounded(&dir.join("cpulist"), SMALL)
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let meminfo = crate::root::read_to_string_bounded(&dir.join("meminfo"), SMALL)
                .unwrap_or_default();
            let (mem_total_bytes, mem_free_bytes) = parse_node_meminfo(&meminfo);
            Some(NumaNode {
                node,
                cpus,
                mem_total_bytes,
                mem_free_bytes,
            })
        })
        .collect();
    nodes.sort_by_key(|n| n.node);
    nodes
}

/// `Node 0 MemTotal:       16318424 kB` lines -> (total, free) in bytes.
pub fn parse_node_meminfo(text: &str) -> (u64, u64) {
    let mut total = 0;
    let mut free = 0;
    for line in text.lines() {
        let Some((head, rest)) = line.split_once(':') else {
            continue;
        };
        let value = crate::meminfo::kib_value(rest).unwrap_or(0);
        match head.split_whitespace().last() {
            Some("MemTotal") => total = value,
            Some("MemFree") => free = value,
            _ => {}
        }
    }
    (total, free)
}

/// Expands a kernel cpulist (`0-3,8,10-11`) into CPU numbers; `None` when malformed.
pub fn parse_cpulist(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// CPU numbers (any order) back into the kernel's cpulist form.
pub fn format_cpulist(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        out.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_round_trip() {
        assert_eq!(
            parse_cpulist("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(format_cpulist(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(parse_cpulist(""), Some(vec![]));
        assert_eq!(parse_cpulist("3-1"), None);
        assert_eq!(parse_cpulist("x"), None);
    }

    #[test]
    fn node_meminfo() {
        let t = "Node 1 MemTotal:       1024 kB\nNode 1 MemFree:         512 kB\nNode 1 MemUsed: 512 kB\n";
        assert_eq!(parse_node_meminfo(t), (1 << 20, 512 << 10));
    }
}
