//! The whole analysis over a recording, offline: per series the phases over time, the OOM
//! ranges that were predicted, the changepoints with labelled segments, and the peaks.
//!
//! Series: one per GPU (memory used, VRAM + GTT on unified-memory devices), one for host RAM
//! (used = total − available), one per workload (resident bytes) and one per process identity
//! that held GPU memory at some point (its VRAM + GTT). Values are MiB (bytes / 1,048,576), so
//! the changepoint penalty means the same on any device.

use std::collections::BTreeMap;

use memwarden_probe::snapshot::{ProcessId, Snapshot};
use serde::Serialize;

use crate::history::gpu_pool_bytes;
use crate::mib;
use crate::oom::{OomConfig, OomPrediction, OomPredictor};
use crate::pelt::{PeltParams, pelt};
use crate::phase::{Phase, PhaseConfig, PhaseDetector};
use crate::segments::{LabelContext, Segment, label_segments};
use crate::series::Sample;

/// Parameters of the offline analysis.
#[derive(Debug, Clone)]
pub struct AnalyzeParams {
    /// PELT penalty in MiB²; `None` chooses one per series ([`auto_penalty`]).
    pub penalty: Option<f64>,
    pub min_size: usize,
    pub jump: usize,
    pub phase: PhaseConfig,
    /// Phases of host RAM (a higher noise floor: the kernel's caches).
    pub host_phase: PhaseConfig,
    pub oom: OomConfig,
}

impl Default for AnalyzeParams {
    fn default() -> Self {
        AnalyzeParams {
            penalty: None,
            min_size: 2,
            jump: 1,
            phase: PhaseConfig::default(),
            host_phase: PhaseConfig::host_ram(),
            oom: OomConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesKind {
    Gpu,
    Host,
    Workload,
    Process,
}

/// A stretch of time in one phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Samples after `start_ms` up to `end_ms` (the first span counts its first sample too).
    pub samples: u32,
    /// Net rate over the span, from `start_ms` to `end_ms` (MiB/s). The phase always agrees
    /// with it ([`Phase::agreeing_with`]).
    pub rate_mib_s: f64,
    /// Confidence at the end of the span.
    pub confidence: f64,
}

/// The OOM predictions made during one growth phase: the first and the last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomEvent {
    pub phase_start_ms: u64,
    pub first_at_ms: u64,
    pub first: OomPrediction,
    pub first_display: String,
    pub last_at_ms: u64,
    pub last: OomPrediction,
    pub last_display: String,
}

/// Everything about one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesReport {
    /// `gpu:0`, `host:ram`, `workload:<id>`, `process:<pid>:<starttime>`.
    pub key: String,
    pub kind: SeriesKind,
    pub name: String,
    pub samples: usize,
    pub first_ms: u64,
    pub last_ms: u64,
    pub first_mib: f64,
    pub last_mib: f64,
    pub peak_mib: f64,
    pub peak_at_ms: u64,
    /// The pool's size (GPUs, RAM) at the last sample.
    pub total_mib: Option<f64>,
    /// The penalty the changepoints were found with (MiB²).
    pub penalty: f64,
    /// ruptures' `predict` format: the end of each segment, the last being `samples`.
    pub changepoints: Vec<usize>,
    /// Why there are no changepoints, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changepoint_error: Option<String>,
    pub segments: Vec<Segment>,
    pub phases: Vec<PhaseSpan>,
    pub oom_predictions: Vec<OomEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub snapshots: usize,
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    pub series: Vec<SeriesReport>,
}

/// A series being gathered from snapshots.
#[derive(Default)]
struct Gathered {
    name: String,
    times: Vec<u64>,
    values: Vec<f64>,
    /// Pool size and free, MiB, per sample (pools only).
    free: Vec<Option<f64>>,
    total: Option<f64>,
}

impl Gathered {
    fn push(&mut self, t: u64, v: f64, free: Option<f64>) {
        // Two snapshots at one instant would make a rate out of nothing: keep the first.
        if self.times.last().is_some_and(|&last| t <= last) {
            return;
        }
        self.times.push(t);
        self.values.push(v);
        self.free.push(free);
    }
}

/// Analyses snapshots in time order (as [`crate::recording`] returns them).
pub fn analyze(snapshots: &[Snapshot], params: &AnalyzeParams) -> Report {
    let mut series: BTreeMap<(SeriesKind, String), Gathered> = BTreeMap::new();
    let mut process_keys: BTreeMap<String, ProcessId> = BTreeMap::new();
    for s in snapshots {
        let t = s.taken_at_ms;
        for g in &s.gpus {
            let Some((used, total)) = gpu_pool_bytes(g) else {
                continue;
            };
            let e = series
                .entry((SeriesKind::Gpu, format!("gpu:{}", g.index)))
                .or_default();
            e.name = format!("GPU {} {}", g.index, clip_name(&g.name));
            e.total = total.map(mib);
            e.push(t, mib(used), total.map(|tot| mib(tot.saturating_sub(used))));
        }
        if s.host.mem_total_bytes > 0 {
            let h = &s.host;
            let e = series
                .entry((SeriesKind::Host, "host:ram".into()))
                .or_default();
            e.name = format!("RAM {}", clip_name(&s.hostname));
            e.total = Some(mib(h.mem_total_bytes));
            let used = h.mem_total_bytes.saturating_sub(h.mem_available_bytes);
            e.push(t, mib(used), Some(mib(h.mem_available_bytes)));
        }
        for w in &s.workloads {
            let e = series
                .entry((
                    SeriesKind::Workload,
                    format!("workload:{}", clip_name(&w.id)),
                ))
                .or_default();
            e.name = clip_name(&w.name);
            e.push(t, mib(w.resident_bytes), None);
        }
        for p in &s.processes {
            let bytes: u64 = p.gpu_vram_bytes().saturating_add(p.gpu_gtt_bytes());
            let key = format!("process:{}:{}", p.pid, p.starttime);
            if bytes == 0 && !series.contains_key(&(SeriesKind::Process, key.clone())) {
                continue;
            }
            process_keys.insert(key.clone(), p.identity());
            let e = series.entry((SeriesKind::Process, key)).or_default();
            e.name = clip_name(&p.name);
            e.push(t, mib(bytes), None);
        }
    }
    let predictor = OomPredictor::new(params.oom.clone());
    let mut out = Vec::new();
    for ((kind, key), g) in series {
        out.push(analyze_series(kind, key, g, params, &predictor));
    }
    // Processes in pid order rather than the text order of their keys.
    out.sort_by_key(|r| (r.kind, process_keys.get(&r.key).copied(), r.key.clone()));
    Report {
        snapshots: snapshots.len(),
        first_ms: snapshots.first().map(|s| s.taken_at_ms),
        last_ms: snapshots.last().map(|s| s.taken_at_ms),
        series: out,
    }
}

fn analyze_series(
    kind: SeriesKind,
    key: String,
    g: Gathered,
    params: &AnalyzeParams,
    predictor: &OomPredictor,
) -> SeriesReport {
    let n = g.values.len();
    let (mut peak, mut peak_at) = (f64::NEG_INFINITY, 0);
    for (&v, &t) in g.values.iter().zip(&g.times) {
        if v > peak {
            peak = v;
            peak_at = t;
        }
    }
    let penalty = params.penalty.unwrap_or_else(|| auto_penalty(&g.values));
    let pp = PeltParams {
        penalty,
        min_size: params.min_size,
        jump: params.jump,
    };
    let (changepoints, changepoint_error) = match pelt(&g.values, &pp) {
        Ok(c) => (c, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let segments = if changepoints.is_empty() {
        Vec::new()
    } else {
        label_segments(
            &g.values,
            &g.times,
            &changepoints,
            &LabelContext { total_mib: g.total },
        )
    };

    let phase_config = match kind {
        SeriesKind::Host => &params.host_phase,
        _ => &params.phase,
    };
    let mut det = PhaseDetector::new(phase_config.clone());
    let mut detected: Vec<Detected> = Vec::new();
    let mut ooms: Vec<OomEvent> = Vec::new();
    for i in 0..n {
        let st = det.update(Sample {
            t_ms: g.times[i],
            mib: g.values[i],
        });
        match detected.last_mut() {
            Some(last) if last.phase == st.phase && last.since_ms == st.since_ms => {
                last.end = i;
                last.confidence = st.confidence;
            }
            _ => {
                let start = match detected.last_mut() {
                    None => 0,
                    Some(last) => {
                        last.end = phase_start(&g.times, &g.values, i, last.start, phase_config);
                        last.end
                    }
                };
                detected.push(Detected {
                    phase: st.phase,
                    since_ms: st.since_ms,
                    start,
                    end: i,
                    confidence: st.confidence,
                });
            }
        }
        if let Some(free) = g.free[i]
            && let Some(p) = predictor.predict(&st, free)
        {
            let at = g.times[i];
            match ooms.last_mut() {
                Some(e) if e.phase_start_ms == st.since_ms => {
                    e.last_at_ms = at;
                    e.last = p;
                    e.last_display = p.display();
                }
                _ => ooms.push(OomEvent {
                    phase_start_ms: st.since_ms,
                    first_at_ms: at,
                    first: p,
                    first_display: p.display(),
                    last_at_ms: at,
                    last: p,
                    last_display: p.display(),
                }),
            }
        }
    }
    SeriesReport {
        key,
        kind,
        name: g.name,
        samples: n,
        first_ms: g.times.first().copied().unwrap_or(0),
        last_ms: g.times.last().copied().unwrap_or(0),
        first_mib: g.values.first().copied().unwrap_or(0.0),
        last_mib: g.values.last().copied().unwrap_or(0.0),
        peak_mib: if peak.is_finite() { peak } else { 0.0 },
        peak_at_ms: peak_at,
        total_mib: g.total,
        penalty,
        changepoints,
        changepoint_error,
        segments,
        phases: phase_spans(
            &detected,
            &g.times,
            &g.values,
            phase_config.noise_floor_mib_s,
        ),
        oom_predictions: ooms,
    }
}

/// Where a phase that the detector announces at sample `won` began: its candidate's first
/// step came `hysteresis` samples earlier, and the run of steps like that one (up, down or
/// flat, by the noise floor) that led to it is part of it too, back to the sample after
/// `prev_start`, where the phase before began. Rates are between samples, so the answer is the
/// sample before the first step: the boundary the two phases share.
fn phase_start(
    times: &[u64],
    values: &[f64],
    won: usize,
    prev_start: usize,
    c: &PhaseConfig,
) -> usize {
    let floor = c.noise_floor_mib_s.abs();
    let class = |j: usize| {
        let dt = times[j].saturating_sub(times[j - 1]) as f64 / 1000.0;
        let r = if dt > 0.0 {
            (values[j] - values[j - 1]) / dt
        } else {
            0.0
        };
        (r > floor) as i8 - (r < -floor) as i8
    };
    let lowest = prev_start + 1;
    let first = (won + 1).saturating_sub(c.hysteresis.max(1)).max(lowest);
    let mut b = first - 1;
    while b > lowest && class(b) == class(first) {
        b -= 1;
    }
    b.max(lowest).min(won)
}

/// A phase as the detector found it: samples `start..=end` (`start` shared with the one before).
struct Detected {
    phase: Phase,
    since_ms: u64,
    start: usize,
    end: usize,
    confidence: f64,
}

/// The detected phases as spans of the series, each labelled by [`Phase::agreeing_with`] its
/// net rate, and neighbours that end up with one label joined. Spans share their boundary
/// samples, so the rate of two joined is a time-weighted mean of theirs and keeps their label.
fn phase_spans(detected: &[Detected], times: &[u64], values: &[f64], floor: f64) -> Vec<PhaseSpan> {
    let net_rate = |a: usize, b: usize| {
        let dt = times[b].saturating_sub(times[a]) as f64 / 1000.0;
        let r = if dt > 0.0 {
            (values[b] - values[a]) / dt
        } else {
            0.0
        };
        if r.is_finite() { r } else { 0.0 }
    };
    let mut spans: Vec<(PhaseSpan, usize)> = Vec::new();
    for d in detected {
        // The boundary sample belongs to the span before.
        let samples = (d.end - d.start + usize::from(d.start == 0 && spans.is_empty())) as u32;
        let rate = net_rate(d.start, d.end);
        let phase = d.phase.agreeing_with(rate, floor);
        match spans.last_mut() {
            Some((last, first)) if last.phase == phase => {
                last.end_ms = times[d.end];
                last.samples += samples;
                last.rate_mib_s = net_rate(*first, d.end);
                last.phase = phase.agreeing_with(last.rate_mib_s, floor);
                last.confidence = d.confidence;
            }
            _ => spans.push((
                PhaseSpan {
                    phase,
                    start_ms: times[d.start],
                    end_ms: times[d.end],
                    samples,
                    rate_mib_s: rate,
                    confidence: d.confidence,
                },
                d.start,
            )),
        }
    }
    spans.into_iter().map(|(s, _)| s).collect()
}

/// The default penalty for a series, MiB²: `2 σ² ln n` (a BIC-like choice) with σ, the noise,
/// estimated robustly from the first differences (MAD / √2), and at least 256 MiB² (16 MiB
/// squared) so that series with no noise at all, such as a GPU's memory in whole pages, are not
/// cut at every wiggle.
pub fn auto_penalty(values: &[f64]) -> f64 {
    const FLOOR: f64 = 256.0;
    let n = values.len();
    if n < 3 {
        return FLOOR;
    }
    let mut d: Vec<f64> = values.windows(2).map(|w| w[1] - w[0]).collect();
    let med = median(&mut d);
    let mut dev: Vec<f64> = d.iter().map(|x| (x - med).abs()).collect();
    let mad = median(&mut dev);
    let sigma = 1.4826 * mad / std::f64::consts::SQRT_2;
    let pen = 2.0 * sigma * sigma * (n as f64).ln();
    if pen.is_finite() {
        pen.max(FLOOR)
    } else {
        FLOOR
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Untrusted names (from /proc, from a recording) made safe to show and to key on.
pub(crate) fn clip_name(s: &str) -> String {
    memwarden_probe::sanitize::sanitize(s, 120)
}

/// Bytes (as f64) in binary units, as the probe's `format_size` prints them.
pub(crate) fn human_bytes(b: f64) -> String {
    if !b.is_finite() || b <= 0.0 {
        return "0 B".to_string();
    }
    memwarden_probe::size::format_size(b.min(u64::MAX as f64) as u64)
}
