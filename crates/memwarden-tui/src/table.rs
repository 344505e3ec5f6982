//! The process/workload table's rows: built from a snapshot and the insights, filtered by the
//! typed text, sorted by any column, flat or as a process tree.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use memwarden_probe::snapshot::{ProcessId, Snapshot};
use serde::Deserialize;

use crate::insight::{Insights, PhaseBadge, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    Pid,
    Name,
    /// GPU memory (VRAM + GTT), then host RSS: who holds the most.
    Memory,
    Vram,
    Gtt,
    Rss,
    /// CPU use, percent of one CPU.
    Cpu,
    /// How busy it keeps the GPU.
    #[serde(rename = "gpu")]
    GpuUtil,
    Phase,
    Verdict,
}

impl SortKey {
    pub const ALL: [SortKey; 10] = [
        SortKey::Pid,
        SortKey::Name,
        SortKey::Memory,
        SortKey::Vram,
        SortKey::Gtt,
        SortKey::Rss,
        SortKey::Cpu,
        SortKey::GpuUtil,
        SortKey::Phase,
        SortKey::Verdict,
    ];

    pub fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Pid => "pid",
            SortKey::Name => "name",
            SortKey::Memory => "memory",
            SortKey::Vram => "vram",
            SortKey::Gtt => "gtt",
            SortKey::Rss => "rss",
            SortKey::Cpu => "cpu",
            SortKey::GpuUtil => "gpu",
            SortKey::Phase => "phase",
            SortKey::Verdict => "verdict",
        }
    }

    /// Names and numbers read best largest first; pid and name in ascending order.
    pub fn default_descending(self) -> bool {
        !matches!(self, SortKey::Pid | SortKey::Name)
    }
}

/// What a row stands for; the selection follows it across samples.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowKey {
    Process(ProcessId),
    Workload(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: RowKey,
    /// Indentation in the tree view.
    pub depth: u16,
    /// The pid, or the number of pids of a workload.
    pub pid: u32,
    pub user: String,
    pub name: String,
    /// `None`: no GPU reading for it (shown as `-`, never as 0).
    pub vram: Option<u64>,
    pub gtt: Option<u64>,
    /// Host memory: RSS of a process, resident bytes of a workload.
    pub rss: Option<u64>,
    /// CPU use in percent of one CPU; `None` until two readings (or in a recording without).
    pub cpu: Option<f64>,
    /// How busy it keeps the GPU, percent; `None` where nothing says.
    pub gpu_util: Option<f64>,
    /// For workloads: where the resident figure came from (`cgroup` or `estimate`).
    pub source: Option<&'static str>,
    pub phase: Option<PhaseBadge>,
    pub verdict: Option<Verdict>,
    pub command: String,
}

impl Row {
    fn memory(&self) -> (u64, u64) {
        (
            self.vram.unwrap_or(0) + self.gtt.unwrap_or(0),
            self.rss.unwrap_or(0),
        )
    }

    fn matches(&self, needle: &str) -> bool {
        needle.is_empty()
            || contains_ci(&self.name, needle)
            || contains_ci(&self.command, needle)
            || self.pid.to_string() == needle
            || contains_ci(&self.user, needle)
    }
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

fn compare(a: &Row, b: &Row, key: SortKey) -> Ordering {
    let by_mem = || a.memory().cmp(&b.memory());
    match key {
        SortKey::Pid => a.pid.cmp(&b.pid),
        SortKey::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
        SortKey::Memory => by_mem(),
        SortKey::Vram => a.vram.cmp(&b.vram).then_with(by_mem),
        SortKey::Gtt => a.gtt.cmp(&b.gtt).then_with(by_mem),
        SortKey::Rss => a.rss.cmp(&b.rss),
        SortKey::Cpu => by_rate(a.cpu, b.cpu).then_with(by_mem),
        SortKey::GpuUtil => by_rate(a.gpu_util, b.gpu_util).then_with(by_mem),
        SortKey::Phase => a
            .phase
            .map(PhaseBadge::rank)
            .cmp(&b.phase.map(PhaseBadge::rank))
            .then_with(by_mem),
        SortKey::Verdict => a.verdict.cmp(&b.verdict).then_with(by_mem),
    }
    // Equal keys keep a stable order by pid so rows do not jump between samples.
    .then_with(|| b.pid.cmp(&a.pid))
}

/// Unknown below every known figure, so a descending sort puts the busiest first.
fn by_rate(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// A kernel thread: kthreadd (pid 2) and its children, which have no command line. htop
/// hides them by default, and so does `top` (`K` shows them).
pub fn is_kernel_thread(p: &memwarden_probe::snapshot::Process) -> bool {
    p.cmdline.is_empty() && (p.pid == 2 || p.ppid == Some(2))
}

fn user_name(uid: Option<u32>, names: &HashMap<u32, String>) -> String {
    match uid {
        Some(u) => names.get(&u).cloned().unwrap_or_else(|| u.to_string()),
        None => "?".into(),
    }
}

/// Rows for the process view; kernel threads only when `kernel_threads`.
pub fn process_rows(
    snap: &Snapshot,
    insights: &Insights,
    users: &HashMap<u32, String>,
    kernel_threads: bool,
) -> Vec<Row> {
    snap.processes
        .iter()
        .filter(|p| kernel_threads || !is_kernel_thread(p))
        .map(|p| {
            let view = insights.processes.get(&p.identity());
            let any = |f: fn(&memwarden_probe::snapshot::ProcessGpu) -> Option<u64>| {
                let vals: Vec<u64> = p.gpu.iter().filter_map(f).collect();
                (!vals.is_empty()).then(|| vals.iter().sum())
            };
            Row {
                key: RowKey::Process(p.identity()),
                depth: 0,
                pid: p.pid,
                user: user_name(p.uid, users),
                name: p.name.clone(),
                vram: any(|g| g.vram_bytes),
                gtt: any(|g| g.gtt_bytes),
                rss: p.rss_bytes,
                cpu: p.cpu_percent,
                gpu_util: p.gpu_utilization_percent,
                source: None,
                phase: view.and_then(|v| v.phase),
                verdict: view.and_then(|v| v.verdict.as_ref().map(|(v, _)| *v)),
                command: if p.cmdline.is_empty() {
                    format!("[{}]", p.name)
                } else {
                    p.cmdline.clone()
                },
            }
        })
        .collect()
}

pub fn workload_rows(snap: &Snapshot, insights: &Insights) -> Vec<Row> {
    let by_pid: HashMap<u32, &memwarden_probe::snapshot::Process> =
        snap.processes.iter().map(|p| (p.pid, p)).collect();
    // A workload's rate is the sum over its processes, unknown when none of them says.
    let total = |pids: &[u32], f: fn(&memwarden_probe::snapshot::Process) -> Option<f64>| {
        let known: Vec<f64> = pids.iter().filter_map(|p| f(by_pid.get(p)?)).collect();
        (!known.is_empty()).then(|| known.iter().sum())
    };
    snap.workloads
        .iter()
        .map(|w| {
            let view = insights.workloads.get(&w.id);
            let kind = format!("{:?}", w.kind).to_lowercase();
            Row {
                key: RowKey::Workload(w.id.clone()),
                depth: 0,
                pid: w.pids.len() as u32,
                user: w.runtime.clone().unwrap_or(kind.clone()),
                name: w.name.clone(),
                // Without a GPU there is no GPU figure: shown as `-`, not as 0.
                vram: (!snap.gpus.is_empty()).then_some(w.gpu_vram_bytes),
                gtt: snap
                    .gpus
                    .iter()
                    .any(|g| g.gtt_total_bytes.is_some())
                    .then_some(w.gpu_gtt_bytes),
                rss: Some(w.resident_bytes),
                cpu: total(&w.pids, |p| p.cpu_percent),
                gpu_util: total(&w.pids, |p| p.gpu_utilization_percent),
                source: Some(w.resident_source.as_str()),
                phase: view.and_then(|v| v.phase),
                verdict: view.and_then(|v| v.verdict.as_ref().map(|(v, _)| *v)),
                command: format!("{kind} {}", w.id),
            }
        })
        .collect()
}

/// Filters and sorts in place. In the tree view, children follow their parent (sorted among
/// their siblings) and a filter keeps the ancestors of every match, so a match is never shown
/// out of its place.
pub fn arrange(
    rows: Vec<Row>,
    key: SortKey,
    descending: bool,
    filter: &str,
    tree: Option<&HashMap<u32, u32>>,
) -> Vec<Row> {
    let cmp = |a: &Row, b: &Row| {
        let o = compare(a, b, key);
        if descending { o.reverse() } else { o }
    };
    let Some(parents) = tree else {
        let mut rows: Vec<Row> = rows.into_iter().filter(|r| r.matches(filter)).collect();
        rows.sort_by(cmp);
        return rows;
    };
    let present: HashSet<u32> = rows.iter().map(|r| r.pid).collect();
    let mut keep: HashSet<u32> = HashSet::new();
    for r in rows.iter().filter(|r| r.matches(filter)) {
        let mut pid = r.pid;
        // Bounded walk: a corrupt parent map cannot loop forever.
        for _ in 0..64 {
            if !keep.insert(pid) {
                break;
            }
            match parents.get(&pid) {
                Some(&pp) if present.contains(&pp) && pp != pid => pid = pp,
                _ => break,
            }
        }
    }
    let mut children: HashMap<u32, Vec<Row>> = HashMap::new();
    let mut roots = Vec::new();
    for r in rows.into_iter().filter(|r| keep.contains(&r.pid)) {
        match parents.get(&r.pid) {
            Some(&pp) if pp != r.pid && keep.contains(&pp) => {
                children.entry(pp).or_default().push(r)
            }
            _ => roots.push(r),
        }
    }
    roots.sort_by(cmp);
    for list in children.values_mut() {
        list.sort_by(cmp);
    }
    let mut out = Vec::with_capacity(keep.len());
    let mut stack: Vec<(Row, u16)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
    loop {
        while let Some((mut r, depth)) = stack.pop() {
            r.depth = depth;
            let pid = r.pid;
            out.push(r);
            if let Some(kids) = children.remove(&pid) {
                stack.extend(kids.into_iter().rev().map(|k| (k, depth.saturating_add(1))));
            }
        }
        if children.is_empty() {
            return out;
        }
        // Rows whose parents form a loop are never reached from a root: show them as roots
        // rather than lose them.
        let mut rest: Vec<Row> = children.drain().flat_map(|(_, v)| v).collect();
        rest.sort_by(cmp);
        stack.extend(rest.into_iter().rev().map(|r| (r, 0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, name: &str, vram: Option<u64>, rss: u64) -> Row {
        Row {
            key: RowKey::Process(ProcessId { pid, starttime: 1 }),
            depth: 0,
            pid,
            user: "root".into(),
            name: name.into(),
            vram,
            gtt: None,
            rss: Some(rss),
            cpu: None,
            gpu_util: None,
            source: None,
            phase: None,
            verdict: None,
            command: format!("/usr/bin/{name}"),
        }
    }

    fn pids(rows: &[Row]) -> Vec<u32> {
        rows.iter().map(|r| r.pid).collect()
    }

    #[test]
    fn sorts_and_filters() {
        let rows = vec![
            row(1, "init", None, 10),
            row(20, "python", Some(5 << 30), 100),
            row(30, "llama-server", Some(9 << 30), 50),
        ];
        let r = arrange(rows.clone(), SortKey::Memory, true, "", None);
        assert_eq!(pids(&r), [30, 20, 1]);
        let r = arrange(rows.clone(), SortKey::Rss, true, "", None);
        assert_eq!(pids(&r), [20, 30, 1]);
        let r = arrange(rows.clone(), SortKey::Name, false, "", None);
        assert_eq!(pids(&r), [1, 30, 20]);
        let r = arrange(rows.clone(), SortKey::Pid, false, "LLAMA", None);
        assert_eq!(pids(&r), [30]);
        let r = arrange(rows, SortKey::Pid, false, "20", None);
        assert_eq!(pids(&r), [20]);
    }

    #[test]
    fn busiest_first_and_unknown_last() {
        let mut rows = vec![
            row(1, "idle", None, 10),
            row(2, "busy", None, 10),
            row(3, "new", None, 10),
        ];
        (rows[0].cpu, rows[1].cpu) = (Some(0.0), Some(180.0));
        (rows[0].gpu_util, rows[2].gpu_util) = (Some(3.0), Some(90.0));
        let r = arrange(rows.clone(), SortKey::Cpu, true, "", None);
        assert_eq!(pids(&r), [2, 1, 3]);
        let r = arrange(rows, SortKey::GpuUtil, true, "", None);
        assert_eq!(pids(&r), [3, 1, 2]);
    }

    #[test]
    fn kernel_threads_are_kthreadd_and_its_children_without_a_command() {
        let p = |pid, ppid, cmdline: &str| memwarden_probe::snapshot::Process {
            pid,
            starttime: 1,
            ppid: Some(ppid),
            uid: Some(0),
            name: "x".into(),
            cmdline: cmdline.into(),
            rss_bytes: None,
            cgroup: None,
            gpu: vec![],
            framework: None,
            cpu_percent: None,
            gpu_utilization_percent: None,
        };
        assert!(is_kernel_thread(&p(2, 0, "")));
        assert!(is_kernel_thread(&p(90, 2, "")));
        assert!(!is_kernel_thread(&p(1, 0, "/sbin/init")));
        assert!(!is_kernel_thread(&p(91, 2, "odd but a user process")));
        assert!(!is_kernel_thread(&p(92, 1, "")));
    }

    #[test]
    fn tree_keeps_ancestors_of_matches() {
        let rows = vec![
            row(1, "init", None, 10),
            row(20, "bash", None, 5),
            row(21, "python", Some(1 << 30), 100),
            row(30, "sshd", None, 5),
        ];
        let parents: HashMap<u32, u32> = [(20, 1), (21, 20), (30, 1), (1, 0)].into();
        let r = arrange(rows.clone(), SortKey::Pid, false, "", Some(&parents));
        assert_eq!(pids(&r), [1, 20, 21, 30]);
        assert_eq!(r.iter().map(|r| r.depth).collect::<Vec<_>>(), [0, 1, 2, 1]);
        let r = arrange(rows, SortKey::Pid, false, "python", Some(&parents));
        assert_eq!(pids(&r), [1, 20, 21]);
    }

    #[test]
    fn tree_survives_a_parent_loop() {
        let rows = vec![row(5, "a", None, 1), row(6, "b", None, 1)];
        let parents: HashMap<u32, u32> = [(5, 6), (6, 5)].into();
        let r = arrange(rows, SortKey::Pid, false, "", Some(&parents));
        // Neither is a root: both are still shown, once each.
        assert_eq!(pids(&r), [5, 6]);
    }
}
