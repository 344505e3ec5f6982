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

use crate::insight::{Insights, PhaseBadge, Segment, SeriesView, Verdict, merge_segments};
use crate::table::RowKey;

pub struct Analyst {
    history: History,
    pelt: PeltParams,
    /// The last changepoint segments: for which row, at how many samples, and what they were.
    /// PELT is linear on a series with changes but quadratic on a flat one, so it runs again
    /// only when the row changes or the series has grown by `SEGMENTS_EVERY` samples.
    segments: Option<(RowKey, u64, Vec<Segment>)>,
    /// Snapshots observed since the start (or the last reset).
    observed: u64,
}

/// Samples between two changepoint runs for the selected row.
const SEGMENTS_EVERY: u64 = 10;

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
            segments: None,
            observed: 0,
        }
    }

    pub fn observe(&mut self, snap: &Snapshot) {
        self.history.observe(snap);
        self.observed += 1;
    }

    pub fn reset(&mut self) {
        self.history.clear();
        self.segments = None;
        self.observed = 0;
    }

    /// What the analysis says after the last snapshot; `focus` also gets its changepoints.
    pub fn insights(&mut self, snap: &Snapshot, focus: Option<&RowKey>) -> Insights {
        let mut out = Insights::default();
        self.insights_into(snap, focus, &mut out);
        out
    }

    /// The same, written over `out`: its maps keep their room from one sample to the next, so
    /// the view does not hold the old answer and a growing new one at once.
    pub fn insights_into(&mut self, snap: &Snapshot, focus: Option<&RowKey>, out: &mut Insights) {
        out.gpus.clear();
        out.processes.clear();
        out.workloads.clear();
        out.processes
            .reserve(self.history.processes().size_hint().0);
        for (i, track) in self.history.gpus() {
            out.gpus.insert(i, view(track, true));
        }
        out.host = view(self.history.host(), true);
        let frameworks: HashMap<ProcessId, Framework> = snap
            .processes
            .iter()
            .filter_map(|p| {
                let f = p.framework?;
                Some((p.identity(), Framework::from_name(f.as_str())))
            })
            .collect();
        for (id, pt) in self.history.processes() {
            let mut v = view(&pt.track, focus == Some(&RowKey::Process(id)));
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
            let v = view(track, focus == Some(&RowKey::Workload(id.to_string())));
            out.workloads.insert(id.to_string(), v);
        }
        if let Some(key) = focus {
            let track = match key {
                RowKey::Process(id) => self.history.process(*id).map(|p| &p.track),
                RowKey::Workload(id) => self.history.workload(id),
            };
            let segs = track
                .map(|t| segments_of(&mut self.segments, &self.pelt, key, t, self.observed))
                .unwrap_or_default();
            let slot = match key {
                RowKey::Process(id) => out.processes.get_mut(id),
                RowKey::Workload(id) => out.workloads.get_mut(id),
            };
            if let Some(v) = slot {
                v.segments = segs;
            }
        }
    }
}

/// The changepoint segments of the selected row's series, recomputed when due.
/// `now` counts the snapshots observed, so a full ring (whose length no longer changes) still
/// gets fresh segments.
fn segments_of(
    cache: &mut Option<(RowKey, u64, Vec<Segment>)>,
    params: &PeltParams,
    key: &RowKey,
    track: &Track,
    now: u64,
) -> Vec<Segment> {
    if let Some((k, at, segs)) = &*cache
        && k == key
        && now < at + SEGMENTS_EVERY
        && now >= *at
    {
        return segs.clone();
    }
    let mut segs = Vec::new();
    if track.series.len() >= 4 {
        let values = track.series.values();
        let times = track.series.times();
        if let Ok(bps) = pelt(&values, params) {
            let ctx = LabelContext {
                total_mib: track.total_mib,
            };
            segs = merge_segments(
                label_segments(&values, &times, &bps, &ctx)
                    .into_iter()
                    .map(|s| Segment {
                        start: s.start,
                        end: s.end,
                        start_ms: s.start_ms,
                        end_ms: s.end_ms,
                        label: s.label.as_str().to_string(),
                        mean_bytes: s.mean_mib * MIB,
                    })
                    .collect(),
            );
        }
    }
    *cache = Some((key.clone(), now, segs.clone()));
    segs
}

/// A series as the widgets want it; the values (for a sparkline) only for `with_values`: every
/// row has a phase, but only the pools and the selected row are drawn over time.
fn view(track: &Track, with_values: bool) -> SeriesView {
    let values: Vec<u64> = if with_values {
        track.series.iter().map(|s| to_bytes(s.mib)).collect()
    } else {
        Vec::new()
    };
    let ph = track.phase;
    // Until the window holds enough rates the label means nothing: show none.
    let known = ph.confidence > 0.0;
    SeriesView {
        values,
        phase: known.then(|| badge(track.shown_phase())),
        confidence: ph.confidence.clamp(0.0, 1.0),
        rate_bytes_per_s: known
            .then_some(ph.rate_mib_s * MIB)
            .filter(|r| r.is_finite()),
        oom: track.oom.map(|o| o.display()),
        ..SeriesView::default()
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
                vram_reserved_bytes: None,
                gtt_total_bytes: None,
                gtt_used_bytes: None,
                unified_memory: false,
                error: None,
                figures: Default::default(),
            }],
            processes: vec![Process {
                pid: 7,
                starttime: 70,
                ppid: None,
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
                cpu_percent: None,
                gpu_utilization_percent: None,
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
        assert!(ins.gpus[&0].segments.is_empty());
    }

    #[test]
    fn the_badge_agrees_with_the_rate_shown_beside_it() {
        let mut a = Analyst::new(600);
        // A ramp of 1 GiB a second, then a drop of 3 GiB: the detector's window is still mostly
        // rising (growing), but the rate shown is 0.7 × 1024 − 0.3 × 3072 = −204.8 MiB/s.
        for i in 0..30u64 {
            a.observe(&snap(i * 1000, 10 + i));
        }
        a.observe(&snap(30_000, 36));
        let g = &a.insights(&snap(30_000, 36), None).gpus[&0];
        let rate = g.rate_bytes_per_s.unwrap();
        assert!((rate / MIB + 204.8).abs() < 1e-6, "{rate}");
        assert_eq!(g.phase, Some(PhaseBadge::Shrinking));
    }

    #[test]
    fn segments_follow_a_full_ring() {
        // A ring of 20 samples, long full: a step must still show up in the segments.
        let mut a = Analyst::new(20);
        let id = ProcessId {
            pid: 7,
            starttime: 70,
        };
        let focus = RowKey::Process(id);
        let mut t = 0;
        for _ in 0..60 {
            t += 1000;
            a.observe(&snap(t, 10));
            a.insights(&snap(t, 10), Some(&focus));
        }
        let flat = a.insights(&snap(t, 10), Some(&focus)).processes[&id]
            .segments
            .len();
        for _ in 0..12 {
            t += 1000;
            a.observe(&snap(t, 40));
            a.insights(&snap(t, 40), Some(&focus));
        }
        let stepped = a.insights(&snap(t, 40), Some(&focus)).processes[&id]
            .segments
            .len();
        assert_eq!(flat, 1);
        assert!(stepped > flat, "{stepped}");
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
