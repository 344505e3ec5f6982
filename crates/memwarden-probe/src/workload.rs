//! Workloads: processes grouped by what runs them, and the memory each holds, attributed with
//! the max rule.
//!
//! cgroup memory can miss most of a model (GPU buffers in GTT/TTM are often not charged to the
//! memory cgroup), so a workload's resident memory is the larger of what its cgroup says and
//! an estimate from the model files its processes hold open (plus what its inference server
//! reports), and the output names which one won. A small positive cgroup reading never
//! replaces a larger estimate.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;

use crate::cgroup::{CgroupMounts, CgroupRef, CgroupVersion};
use crate::names::NameCache;
use crate::owner::{Owner, classify};
use crate::probe::ScannedProcess;
use crate::root::HostRoot;
use crate::scrape::ServerMetrics;
use crate::snapshot::{Process, ResidentSource, Workload, WorkloadKind};

/// Inputs that are not in the scan: the servers' metrics by pid.
#[derive(Debug, Default)]
pub struct Extras<'a> {
    pub servers: HashMap<u32, &'a ServerMetrics>,
}

/// A workload being gathered: its owner and own cgroup (none for a plain process), and its
/// processes.
type Group<'a> = (Option<(Owner, CgroupRef)>, Vec<&'a ScannedProcess>);

/// Groups the scanned processes. `scan` carries each process's GPU figures already merged.
pub fn build(
    root: &HostRoot,
    cgroups: &CgroupMounts,
    names: &mut NameCache,
    scan: &[ScannedProcess],
    extras: &Extras<'_>,
    notes: &mut Vec<String>,
) -> Vec<Workload> {
    let mut groups: BTreeMap<(u8, String), Group<'_>> = BTreeMap::new();
    for s in scan {
        let p = &s.process;
        // Kernel threads (no command line, no memory of their own) are nobody's workload.
        if p.cmdline.is_empty() && p.rss_bytes.is_none() && p.gpu.is_empty() {
            continue;
        }
        let owner = owner_of(s);
        let key = match &owner {
            Some((o, _)) => (0, id_of(Some(o), p)),
            None => (1, id_of(None, p)),
        };
        let entry = groups.entry(key).or_insert_with(|| {
            let own = owner.map(|(o, version)| {
                let cg = CgroupRef {
                    version,
                    path: o.cgroup_path.clone(),
                };
                (o, cg)
            });
            (own, Vec::new())
        });
        entry.1.push(s);
    }

    let mut live_names = HashSet::new();
    let mut skipped_deleted = 0usize;
    let mut skipped_vanished = 0usize;
    let mut workloads: Vec<Workload> = groups
        .into_iter()
        .map(|((_, id), (owner, procs))| {
            let (name, image) = name_of(root, names, owner.as_ref().map(|o| &o.0), procs[0]);
            let (kind, runtime, cgroup_bytes) = match &owner {
                Some((o, cg)) => {
                    if matches!(o.kind, WorkloadKind::Container | WorkloadKind::Pod) {
                        live_names.insert((o.runtime, o.id.clone()));
                    }
                    let bytes = cgroups.memory(cg).and_then(|m| m.usage_bytes);
                    (o.kind, Some(o.runtime.to_string()), bytes)
                }
                None => (WorkloadKind::Process, None, None),
            };
            let files =
                model_files_bytes(root, &procs, &mut skipped_deleted, &mut skipped_vanished);
            let servers = server_bytes(&procs, extras);
            let estimate_bytes = match (files, servers) {
                (None, None) => None,
                (f, s) => Some(f.unwrap_or(0).max(s.unwrap_or(0))),
            };
            let rss: u64 = procs.iter().filter_map(|s| s.process.rss_bytes).sum();
            let (resident_bytes, resident_source) = resident(cgroup_bytes, estimate_bytes, rss);
            let mut pids: Vec<u32> = procs.iter().map(|s| s.process.pid).collect();
            pids.sort_unstable();
            Workload {
                id,
                kind,
                runtime,
                name,
                image,
                pids,
                cgroup_bytes,
                estimate_bytes,
                resident_bytes,
                resident_source,
                gpu_vram_bytes: procs.iter().map(|s| s.process.gpu_vram_bytes()).sum(),
                gpu_gtt_bytes: procs.iter().map(|s| s.process.gpu_gtt_bytes()).sum(),
            }
        })
        .collect();
    names.retain(&live_names);
    if skipped_deleted > 0 {
        notes.push(format!(
            "{skipped_deleted} open model file(s) already deleted were left out of estimates"
        ));
    }
    if skipped_vanished > 0 {
        notes.push(format!(
            "{skipped_vanished} model file(s) closed or gone while being sized were left out of estimates"
        ));
    }
    workloads
        .sort_by_key(|w| std::cmp::Reverse((w.gpu_vram_bytes + w.gpu_gtt_bytes, w.resident_bytes)));
    workloads
}

/// What runs a process, from its cgroup path; `None` for a plain process.
fn owner_of(s: &ScannedProcess) -> Option<(Owner, CgroupVersion)> {
    let r = s.cgroup_ref.as_ref()?;
    classify(&r.path).map(|o| (o, r.version))
}

/// A workload's id: `runtime:id` for what a runtime or systemd runs, `pid:PID:START` for a
/// plain process.
fn id_of(owner: Option<&Owner>, p: &Process) -> String {
    match owner {
        Some(o) => format!("{}:{}", o.runtime, o.id),
        None => format!("pid:{}:{}", p.pid, p.starttime),
    }
}

/// A workload's name and image: a container's or pod's as its runtime says (its short id
/// where the runtime does not), a unit's name, or a plain process's name.
fn name_of(
    root: &HostRoot,
    names: &mut NameCache,
    owner: Option<&Owner>,
    first: &ScannedProcess,
) -> (String, Option<String>) {
    match owner {
        Some(o) if matches!(o.kind, WorkloadKind::Container | WorkloadKind::Pod) => {
            let n = names.get(root, o.runtime, &o.id);
            let short: String = o.id.chars().take(12).collect();
            (n.name.unwrap_or(short), n.image)
        }
        Some(o) => (o.id.clone(), None),
        None => (first.process.name.clone(), None),
    }
}

/// The processes of `scan` that belong to the workload `wanted` names: its name or its id as
/// snapshots show them (`vllm`, `ollama.service`, `docker:3f2a…`), or, for plain processes,
/// their name. Names of containers no longer in `scan` are forgotten.
pub fn pids_of(
    root: &HostRoot,
    names: &mut NameCache,
    scan: &[ScannedProcess],
    wanted: &str,
) -> Vec<u32> {
    let mut live = HashSet::new();
    let pids = scan
        .iter()
        .filter(|s| {
            let owner = owner_of(s);
            let owner = owner.as_ref().map(|o| &o.0);
            if let Some(o) =
                owner.filter(|o| matches!(o.kind, WorkloadKind::Container | WorkloadKind::Pod))
            {
                live.insert((o.runtime, o.id.clone()));
            }
            id_of(owner, &s.process) == wanted || name_of(root, names, owner, s).0 == wanted
        })
        .map(|s| s.process.pid)
        .collect();
    names.retain(&live);
    pids
}

/// The max rule. Without a cgroup of its own (a plain process), the processes' RSS is the
/// reading the estimate competes with.
pub fn resident(cgroup: Option<u64>, estimate: Option<u64>, rss: u64) -> (u64, ResidentSource) {
    let (reading, source) = match cgroup {
        Some(c) => (c, ResidentSource::Cgroup),
        None => (rss, ResidentSource::Rss),
    };
    match estimate {
        Some(e) if e > reading => (e, ResidentSource::Estimate),
        _ => (reading, source),
    }
}

/// The model files the processes hold open, each file once (by device and inode), sized by
/// `stat` through the process's own fd link: the link reaches the file even inside another
/// mount namespace, where the path it names means something else.
fn model_files_bytes(
    root: &HostRoot,
    procs: &[&ScannedProcess],
    deleted: &mut usize,
    vanished: &mut usize,
) -> Option<u64> {
    let mut seen = HashSet::new();
    let mut total = None;
    for s in procs {
        for f in &s.model_files {
            if f.deleted {
                *deleted += 1;
                continue;
            }
            let link = root.path(&format!("/proc/{}/fd/{}", s.process.pid, f.fd));
            match std::fs::metadata(&link) {
                Ok(m) if m.is_file() => {
                    if seen.insert((m.dev(), m.ino())) {
                        total = Some(total.unwrap_or(0) + m.len());
                    }
                }
                Ok(_) => {}
                Err(_) => *vanished += 1,
            }
        }
    }
    total
}

/// What the workload's inference servers say they hold: the KV-cache pool where reported, and
/// the footprint of the models an Ollama-like server has loaded.
fn server_bytes(procs: &[&ScannedProcess], extras: &Extras<'_>) -> Option<u64> {
    let mut total = None;
    for s in procs {
        if let Some(m) = extras.servers.get(&s.process.pid) {
            let models: u64 = m.models.iter().filter_map(|l| l.size_bytes).sum();
            let bytes = models + m.kv_cache_bytes.unwrap_or(0);
            if bytes > 0 {
                total = Some(total.unwrap_or(0) + bytes);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_rule() {
        let gib = 1u64 << 30;
        // The seed's bug: a small positive cgroup reading must not replace a larger estimate.
        assert_eq!(
            resident(Some(2 * gib), Some(20 * gib), 0),
            (20 * gib, ResidentSource::Estimate)
        );
        assert_eq!(
            resident(Some(30 * gib), Some(20 * gib), 0),
            (30 * gib, ResidentSource::Cgroup)
        );
        assert_eq!(resident(Some(0), None, 5), (0, ResidentSource::Cgroup));
        assert_eq!(resident(None, Some(3), 5), (5, ResidentSource::Rss));
        assert_eq!(resident(None, Some(9), 5), (9, ResidentSource::Estimate));
    }
}
