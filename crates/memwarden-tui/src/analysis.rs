//! The bridge to memwarden-analysis: feeds it each snapshot and turns what it says (phases,
//! OOM ranges, survival verdicts, changepoint segments) into the [`Insights`] the widgets draw.
//! Changepoints are computed only for the GPUs and the row the detail pane shows: PELT is fast,
//! but not worth running over every process every second.

use std::collections::HashMap;

use memwarden_analysis::segments::LabelContext;
use memwarden_analysis::{
    Framework, History, HistoryConfig, MIB, PeltParams, Phase, Track, label_segments, pelt,
};
use memwarden_probe::snapshot::{ProcessId, Snapshot};

use crate::insight::{Insights, PhaseBadge, Segment, SeriesView, Verdict};
use crate::table::RowKey;

pub struct Analyst {
    history: History,
    pelt: PeltParams,
}

fn badge(p: Phase) -> PhaseBadge {
    match p {
        Phase::Stable => PhaseBadge::Stable,
        Phase::Growing => PhaseBadge::Growing,
        Phase::Shrinking => PhaseBadge::Shrinking,
        Phase::Volatile => PhaseBadge::Volatile,
    }
}

fn verdict(v: memwarden_analysis::Verdict) -> Verdict {
    match v {
        memwarden_analysis::Verdict::Ok => Verdict::Ok,
        memwarden_analysis::Verdict::Tight => Verdict::Tight,
        memwarden_analysis::Verdict::Oom => Verdict::Oom,
    }
}

fn to_bytes(mib: f64) -> u64 {
    if mib.is_finite() && mib > 0.0 {
        (mib * MIB) as u64
    } else {
        0
    }
}

impl Analyst {
    pub fn new(capacity: usize) -> Analyst {
        Analyst {
            history: History::new(HistoryConfig {
                capacity: capacity.max(10),
                ..HistoryConfig::default()
            }),
            pelt: PeltParams::default(),
        }
    }

    pub fn observe(&mut self, snap: &Snapshot) {
        self.history.observe(snap);
    }

    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// What the analysis says after the last snapshot; `focus` also gets its changepoints.
    pub fn insights(&self, snap: &Snapshot, focus: Option<&RowKey>) -> Insights {
        let mut out = Insights::default();
        for (i, track) in self.history.gpus() {
            out.gpus.insert(i, self.view(track, true));
        }
        out.host = self.view(self.history.host(), true);
        let frameworks: HashMap<ProcessId, Framework> = snap
            .processes
            .iter()
            .filter_map(|p| {
                let f = p.framework?;
                Some((p.identity(), Framework::from_name(f.as_str())))
            })
            .collect();
        for (id, pt) in self.history.processes() {
            let with_segments = focus == Some(&RowKey::Process(id));
            let mut v = self.view(&pt.track, with_segments);
            v.framework = frameworks
                .get(&id)
                .map(|f| f.as_str().to_string())
                .filter(|f| f != "unknown");
            out.processes.insert(id, v);
        }
        // The worst verdict over the devices a process uses, with its reason.
        let verdicts = self
            .history
            .verdicts(|id| frameworks.get(&id).cloned().unwrap_or_default());
        for pv in verdicts {
            let v = verdict(pv.survival.verdict);
            let view = out.processes.entry(pv.id).or_default();
            if view.verdict.as_ref().is_none_or(|(old, _)| v > *old) {
                let reason = format!("on GPU {}: {}", pv.gpu_index, pv.survival.reason);
                view.verdict = Some((v, reason));
            }
        }
        for (id, track) in self.history.workloads() {
            let with_segments = focus == Some(&RowKey::Workload(id.to_string()));
            out.workloads
                .insert(id.to_string(), self.view(track, with_segments));
        }
        out
    }

    /// A series as the widgets want it; the values (for a sparkline) and the changepoints only
    /// when `full`: every row has a phase, but only the pools and the selected row are drawn
    /// over time.
    fn view(&self, track: &Track, full: bool) -> SeriesView {
        let values: Vec<u64> = if full {
            track.series.iter().map(|s| to_bytes(s.mib)).collect()
        } else {
            Vec::new()
        };
        let segments = full;
        let ph = track.phase;
        // Until the window holds enough rates the label means nothing: show none.
        let known = ph.confidence > 0.0;
        let mut v = SeriesView {
            values,
            phase: known.then(|| badge(ph.phase)),
            confidence: ph.confidence.clamp(0.0, 1.0),
            rate_bytes_per_s: known
                .then_some(ph.rate_mib_s * MIB)
                .filter(|r| r.is_finite()),
            oom: track.oom.map(|o| o.display()),
            ..SeriesView::default()
        };
        if segments && track.series.len() >= 4 {
            let values = track.series.values();
            let times = track.series.times();
            if let Ok(bps) = pelt(&values, &self.pelt) {
                let ctx = LabelContext {
                    total_mib: track.total_mib,
                };
                v.segments = label_segments(&values, &times, &bps, &ctx)
                    .into_iter()
                    .map(|s| Segment {
                        start: s.start,
                        end: s.end,
                        label: s.label.as_str().to_string(),
                        mean_bytes: s.mean_mib * MIB,
                    })
                    .collect();
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memwarden_probe::snapshot::{Gpu, HostMemory, Process, ProcessGpu, Vendor};

    fn snap(t: u64, used_gib: u64) -> Snapshot {
        Snapshot {
            version: 1,
            taken_at_ms: t,
            hostname: "h".into(),
            host: HostMemory {
                mem_total_bytes: 64 << 30,
                mem_available_bytes: 32 << 30,
                ..Default::default()
            },
            gpus: vec![Gpu {
                index: 0,
                vendor: Vendor::Nvidia,
                name: "GPU".into(),
                bus_id: String::new(),
                numa_node: None,
                vram_total_bytes: Some(80 << 30),
                vram_used_bytes: Some(used_gib << 30),
                gtt_total_bytes: None,
                gtt_used_bytes: None,
                unified_memory: false,
                error: None,
            }],
            processes: vec![Process {
                pid: 7,
                starttime: 70,
                uid: Some(0),
                name: "train".into(),
                cmdline: "python train.py".into(),
                rss_bytes: Some(1 << 30),
                cgroup: None,
                gpu: vec![ProcessGpu {
                    gpu_index: 0,
                    vram_bytes: Some(used_gib << 30),
                    gtt_bytes: None,
                }],
                framework: None,
            }],
            workloads: vec![],
            numa: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn a_ramp_grows_predicts_a_range_and_gets_segments() {
        let mut a = Analyst::new(600);
        // 1 GiB a second from 10 GiB: clearly growing toward 80 GiB.
        for i in 0..40u64 {
            a.observe(&snap(i * 1000, 10 + i));
        }
        let id = ProcessId {
            pid: 7,
            starttime: 70,
        };
        let ins = a.insights(&snap(39_000, 49), Some(&RowKey::Process(id)));
        let g = &ins.gpus[&0];
        assert_eq!(g.phase, Some(PhaseBadge::Growing));
        assert_eq!(g.values.len(), 40);
        let oom = g.oom.as_deref().unwrap();
        assert!(oom.starts_with("OOM in"), "{oom}");
        let p = &ins.processes[&id];
        assert_eq!(p.phase, Some(PhaseBadge::Growing));
        assert!(p.verdict.is_some());
        assert!(!p.segments.is_empty());
        // Changepoints only for the focused row.
        assert!(ins.gpus[&0].segments.len() <= 40);
    }

    #[test]
    fn too_few_samples_have_no_phase() {
        let mut a = Analyst::new(600);
        a.observe(&snap(0, 10));
        let ins = a.insights(&snap(0, 10), None);
        assert_eq!(ins.gpus[&0].phase, None);
        assert!(ins.gpus[&0].oom.is_none());
    }
}
