//! What the analysis says about crafted series of known shape: flat, ramp, sawtooth, step;
//! OOM ranges; survival verdicts; the history's bookkeeping.

use memwarden_analysis::history::{History, HistoryConfig};
use memwarden_analysis::oom::{OomConfig, OomPredictor};
use memwarden_analysis::phase::{Phase, PhaseConfig, PhaseDetector, PhaseState};
use memwarden_analysis::recording::parse_recording;
use memwarden_analysis::segments::{LabelContext, SegmentLabel, label_segments};
use memwarden_analysis::series::Sample;
use memwarden_analysis::survival::{Framework, SurvivalConfig, SurvivalInput, Verdict, assess_gpu};
use memwarden_analysis::{PeltParams, pelt};
use memwarden_probe::snapshot::{
    Gpu, HostMemory, Process, ProcessGpu, ProcessId, SNAPSHOT_VERSION, Snapshot, Vendor,
};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The phase after each sample of `values` taken one second apart.
fn phases(values: &[f64]) -> Vec<PhaseState> {
    let mut d = PhaseDetector::new(PhaseConfig::default());
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            d.update(Sample {
                t_ms: i as u64 * 1000,
                mib: v,
            })
        })
        .collect()
}

/// Distinct consecutive phases.
fn sequence(states: &[PhaseState]) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    for s in states {
        if out.last() != Some(&s.phase) {
            out.push(s.phase);
        }
    }
    out
}

#[test]
fn flat_is_stable_with_growing_confidence() {
    let s = phases(&[4096.0; 60]);
    assert_eq!(sequence(&s), [Phase::Stable]);
    assert_eq!(
        s[1].confidence, 0.0,
        "no confidence before the window fills"
    );
    assert!(s[59].confidence > 0.9, "{}", s[59].confidence);
    assert!(s[20].confidence < s[40].confidence);
}

#[test]
fn ramp_grows_after_hysteresis_and_reports_its_rate() {
    let v: Vec<f64> = (0..60).map(|i| 1000.0 + 50.0 * i as f64).collect();
    let s = phases(&v);
    assert_eq!(sequence(&s), [Phase::Stable, Phase::Growing]);
    let first_growing = s.iter().position(|x| x.phase == Phase::Growing).unwrap();
    // Three rates fill the window's minimum, three more samples of hysteresis.
    assert_eq!(first_growing, 5);
    assert!((s[59].rate_mib_s - 50.0).abs() < 1e-9);
    let down: Vec<f64> = v.iter().rev().copied().collect();
    assert_eq!(sequence(&phases(&down)), [Phase::Stable, Phase::Shrinking]);
}

#[test]
fn sawtooth_is_volatile_and_one_spike_does_not_flicker() {
    let saw: Vec<f64> = (0..60)
        .map(|i| if i % 4 < 2 { 2000.0 } else { 2600.0 })
        .collect();
    assert_eq!(sequence(&phases(&saw)), [Phase::Stable, Phase::Volatile]);

    let mut flat = vec![3000.0; 60];
    flat[30] = 3500.0; // one odd reading
    assert_eq!(
        sequence(&phases(&flat)),
        [Phase::Stable],
        "hysteresis holds"
    );
}

#[test]
fn step_is_one_changepoint_labelled_load() {
    let v: Vec<f64> = (0..100)
        .map(|i| if i < 40 { 300.0 } else { 20_780.0 })
        .collect();
    let b = pelt(&v, &PeltParams::default()).unwrap();
    assert_eq!(b, [40, 100]);
    let t: Vec<u64> = (0..100).map(|i| i * 1000).collect();
    let segs = label_segments(&v, &t, &b, &LabelContext::default());
    let labels: Vec<SegmentLabel> = segs.iter().map(|s| s.label).collect();
    assert_eq!(labels, [SegmentLabel::Idle, SegmentLabel::Load]);
    assert_eq!(segs[1].step_mib, 20_480.0);
    // The step in phases: a short burst of growth, then stable again.
    let seq = sequence(&phases(&v));
    assert_eq!(seq.first(), Some(&Phase::Stable));
    assert_eq!(seq.last(), Some(&Phase::Stable));
}

#[test]
fn staircase_then_release_is_growth_then_release() {
    // A staircase of 64 MiB steps every 10 s, then the memory is given back.
    let mut v: Vec<f64> = (0..200).map(|i| 8192.0 + 64.0 * (i / 10) as f64).collect();
    v.extend(std::iter::repeat_n(1024.0, 50));
    let t: Vec<u64> = (0..v.len() as u64).map(|i| i * 1000).collect();
    let b = pelt(&v, &PeltParams::default()).unwrap();
    let segs = label_segments(&v, &t, &b, &LabelContext::default());
    let labels: Vec<SegmentLabel> = segs.iter().map(|s| s.label).collect();
    assert!(labels.contains(&SegmentLabel::Growth), "{labels:?}");
    assert_eq!(labels.last(), Some(&SegmentLabel::Release), "{labels:?}");
}

#[test]
fn slow_even_rise_that_never_falls_back_is_leak_like() {
    let v: Vec<f64> = (0..1200).map(|i| 4096.0 + 32.0 * (i / 30) as f64).collect();
    let t: Vec<u64> = (0..v.len() as u64).map(|i| i * 1000).collect();
    let b = pelt(&v, &PeltParams::default()).unwrap();
    let segs = label_segments(&v, &t, &b, &LabelContext::default());
    assert!(
        segs.iter()
            .skip(1)
            .all(|s| s.label == SegmentLabel::LeakLikeGrowth),
        "{:?}",
        segs.iter().map(|s| s.label).collect::<Vec<_>>()
    );
}

fn growing_state(duration: u32, lo: f64, hi: f64) -> PhaseState {
    PhaseState {
        phase: Phase::Growing,
        duration_samples: duration,
        since_ms: 0,
        rate_mib_s: (lo + hi) / 2.0,
        rate_min_mib_s: lo,
        rate_max_mib_s: hi,
        confidence: 0.5,
    }
}

#[test]
fn oom_prediction_is_a_range_only_while_growing_and_sustained() {
    let p = OomPredictor::new(OomConfig::default());
    let free = 6000.0;
    let r = p.predict(&growing_state(20, 20.0, 60.0), free).unwrap();
    assert_eq!(r.seconds_low, 100.0);
    assert_eq!(r.seconds_high, Some(300.0));
    assert_eq!(r.display(), "OOM in 2–5 min");
    // Not sustained yet, not growing, or slower than the noise rate: no prediction.
    assert!(p.predict(&growing_state(5, 20.0, 60.0), free).is_none());
    let mut stable = growing_state(20, 20.0, 60.0);
    stable.phase = Phase::Stable;
    assert!(p.predict(&stable, free).is_none());
    assert!(p.predict(&growing_state(20, 0.2, 0.5), free).is_none());
    // Far away: capped, never a precise far-off time.
    let far = p.predict(&growing_state(20, 1.0, 2.0), 1e6).unwrap();
    assert!(far.beyond_cap);
    assert_eq!(far.display(), "OOM in over 1 h");
    let half = p.predict(&growing_state(20, 1.0, 10.0), 6000.0).unwrap();
    assert_eq!(half.seconds_high, None);
    assert_eq!(half.display(), "OOM in 10 min–over 1 h");
    let full = p.predict(&growing_state(20, 5.0, 10.0), 0.0).unwrap();
    assert_eq!(full.display(), "out of memory now");
}

fn input(used: u64, peak: u64, phase: Phase, framework: Framework) -> SurvivalInput {
    SurvivalInput {
        used_bytes: used,
        peak_bytes: peak,
        phase,
        framework,
        model_bytes: None,
    }
}

#[test]
fn survival_verdicts_follow_the_documented_checks() {
    let cfg = SurvivalConfig::default();
    let total = 80 * GIB;
    let one = |p: SurvivalInput, free: u64| assess_gpu(&[p], total, free, &cfg).remove(0);

    // Stable with room: OK.
    let ok = one(
        input(10 * GIB, 10 * GIB, Phase::Stable, Framework::Unknown),
        40 * GIB,
    );
    assert_eq!(ok.verdict, Verdict::Ok, "{}", ok.reason);
    // Spike: it reached 12 GiB above its current use before, 8 GiB free.
    let spike = one(
        input(20 * GIB, 32 * GIB, Phase::Stable, Framework::PyTorch),
        8 * GIB,
    );
    assert_eq!(spike.verdict, Verdict::Oom);
    assert!(spike.reason.contains("past peak"), "{}", spike.reason);
    // Under 2% free: TIGHT whatever the phase; under 5% while stable: TIGHT.
    let crit = one(
        input(70 * GIB, 70 * GIB, Phase::Shrinking, Framework::Unknown),
        GIB,
    );
    assert_eq!(crit.verdict, Verdict::Tight, "{}", crit.reason);
    let low = one(
        input(70 * GIB, 70 * GIB, Phase::Stable, Framework::Unknown),
        3 * GIB,
    );
    assert_eq!(low.verdict, Verdict::Tight, "{}", low.reason);
    // Growing PyTorch training: 4x its use expected; 10 GiB × 4 needs 30 GiB more.
    let train = input(
        10 * GIB,
        10 * GIB,
        Phase::Growing,
        Framework::PyTorchTraining,
    );
    assert_eq!(one(train.clone(), 20 * GIB).verdict, Verdict::Oom);
    assert_eq!(one(train.clone(), 35 * GIB).verdict, Verdict::Tight);
    assert_eq!(one(train, 60 * GIB).verdict, Verdict::Ok);
    // Model size known: the multiplier applies to the weights.
    let mut with_model = input(
        10 * GIB,
        10 * GIB,
        Phase::Volatile,
        Framework::PyTorchInference,
    );
    with_model.model_bytes = Some(20 * GIB);
    let s = one(with_model, 10 * GIB);
    assert_eq!(s.expected_peak_bytes, 24 * GIB);
    assert_eq!(s.verdict, Verdict::Oom, "{}", s.reason);
    // vLLM runs full on purpose: exempt from the floors, its peak is its use × 1.05.
    let vllm = one(
        input(76 * GIB, 76 * GIB, Phase::Stable, Framework::Vllm),
        GIB / 2,
    );
    assert_eq!(vllm.verdict, Verdict::Ok, "{}", vllm.reason);
    assert_eq!(vllm.expected_peak_bytes, (76.0 * 1.05 * GIB as f64) as u64);
    // Still growing into its pool: 5% more than its use must fit, not 1.8× its use.
    let filling = input(40 * GIB, 40 * GIB, Phase::Growing, Framework::Sglang);
    assert_eq!(one(filling.clone(), 10 * GIB).verdict, Verdict::Ok);
    assert_eq!(one(filling, GIB).verdict, Verdict::Oom);
}

#[test]
fn collective_pressure_upgrades_every_verdict() {
    let cfg = SurvivalConfig::default();
    let total = 80 * GIB;
    // Three stable jobs, each fine alone, whose expected peaks add up to 90 GiB.
    let jobs = vec![
        input(20 * GIB, 30 * GIB, Phase::Stable, Framework::Unknown),
        input(20 * GIB, 30 * GIB, Phase::Stable, Framework::Unknown),
        input(20 * GIB, 30 * GIB, Phase::Stable, Framework::Unknown),
    ];
    let v = assess_gpu(&jobs, total, 20 * GIB, &cfg);
    assert!(v.iter().all(|s| s.verdict == Verdict::Tight), "{v:?}");
    assert!(v[0].reason.contains("together"), "{}", v[0].reason);
    let fine = assess_gpu(&jobs[..2], total, 20 * GIB, &cfg);
    assert!(fine.iter().all(|s| s.verdict == Verdict::Ok), "{fine:?}");
    assert_eq!(Verdict::Tight.upgraded(), Verdict::Oom);
    assert_eq!(Verdict::Oom.upgraded(), Verdict::Oom);
}

#[test]
fn framework_names_parse_loosely() {
    assert_eq!(Framework::from_name("vLLM"), Framework::Vllm);
    assert_eq!(
        Framework::from_name("text-generation-inference"),
        Framework::Tgi
    );
    assert_eq!(Framework::from_name(" llama.cpp "), Framework::LlamaCpp);
    assert_eq!(Framework::from_name(""), Framework::Unknown);
    assert!(matches!(Framework::from_name("mlx"), Framework::Other(_)));
    assert!(Framework::from_name("jax").is_preallocating());
    assert!(!Framework::from_name("torch").is_preallocating());
    assert_eq!(
        Framework::from(memwarden_probe::framework::Framework::Sglang),
        Framework::Sglang
    );
}

fn snap(t_s: u64, procs: &[(u32, u64, u64)], gpu_used: u64) -> Snapshot {
    Snapshot {
        version: SNAPSHOT_VERSION,
        taken_at_ms: t_s * 1000,
        hostname: "h".into(),
        host: HostMemory {
            mem_total_bytes: 64 * GIB,
            mem_available_bytes: 32 * GIB,
            ..HostMemory::default()
        },
        gpus: vec![Gpu {
            index: 0,
            vendor: Vendor::Amd,
            name: "gpu".into(),
            bus_id: "0000:03:00.0".into(),
            numa_node: None,
            vram_total_bytes: Some(24 * GIB),
            vram_used_bytes: Some(gpu_used),
            vram_reserved_bytes: None,
            gtt_total_bytes: None,
            gtt_used_bytes: None,
            unified_memory: false,
            error: None,
            figures: Default::default(),
        }],
        processes: procs
            .iter()
            .map(|&(pid, starttime, vram)| Process {
                pid,
                starttime,
                ppid: None,
                uid: Some(0),
                name: format!("p{pid}"),
                cmdline: String::new(),
                rss_bytes: None,
                cgroup: None,
                gpu: vec![ProcessGpu {
                    gpu_index: 0,
                    vram_bytes: Some(vram),
                    gtt_bytes: None,
                }],
                framework: None,
                cpu_percent: None,
                gpu_utilization_percent: None,
            })
            .collect(),
        workloads: Vec::new(),
        numa: Vec::new(),
        notes: Vec::new(),
    }
}

#[test]
fn history_keys_processes_by_identity_and_prunes_the_gone() {
    let mut h = History::new(HistoryConfig {
        capacity: 6,
        entity_capacity: 5,
        ..HistoryConfig::default()
    });
    for t in 0..8 {
        h.observe(&snap(t, &[(10, 100, (t + 1) * GIB)], 4 * GIB));
    }
    let id = ProcessId {
        pid: 10,
        starttime: 100,
    };
    let p = h.process(id).unwrap();
    assert_eq!(p.track.series.len(), 5, "bounded ring");
    assert_eq!(h.gpu(0).unwrap().series.len(), 6);
    assert_eq!(p.track.series.peak(), Some(8192.0));
    assert_eq!(h.gpu(0).unwrap().total_mib, Some(24576.0));
    // The pid comes back with another starttime: another process, a fresh series.
    h.observe(&snap(8, &[(10, 999, GIB)], 4 * GIB));
    assert!(h.process(id).is_none());
    let new = h
        .process(ProcessId {
            pid: 10,
            starttime: 999,
        })
        .unwrap();
    assert_eq!(new.track.series.len(), 1);
    assert_eq!(new.peak_bytes[&0], GIB);
    // A snapshot from the past (a replay that looped) starts afresh.
    h.observe(&snap(2, &[], 4 * GIB));
    assert_eq!(h.gpu(0).unwrap().series.len(), 1);
    assert_eq!(h.processes().count(), 0);
}

#[test]
fn history_predicts_oom_and_gives_verdicts() {
    let mut h = History::default();
    // A process growing by 100 MiB/s on a 24 GiB card.
    for t in 0..40 {
        let used = 4 * GIB + t * 100 * MIB;
        h.observe(&snap(t, &[(10, 100, used)], used + GIB));
    }
    let g = h.gpu(0).unwrap();
    assert_eq!(g.phase.phase, Phase::Growing);
    let oom = g.oom.expect("a prediction while growing");
    assert!(oom.seconds_low <= oom.seconds_high.unwrap());
    let free_mib = 24.0 * 1024.0 - (4.0 * 1024.0 + 39.0 * 100.0 + 1024.0);
    assert!((oom.seconds_low - free_mib / 100.0).abs() < 1.0, "{oom:?}");
    let v = h.verdicts(|_| Framework::PyTorchTraining);
    assert_eq!(v.len(), 1);
    assert_eq!(
        v[0].survival.verdict,
        Verdict::Oom,
        "{}",
        v[0].survival.reason
    );
    let unknown = h.verdicts(|_| Framework::Unknown);
    assert_eq!(unknown[0].gpu_index, 0);
}

#[test]
fn recordings_skip_bad_lines_with_reasons() {
    let good = serde_json::to_string(&snap(1, &[], GIB)).unwrap();
    let older = serde_json::to_string(&snap(0, &[], GIB)).unwrap();
    let text = format!(
        "{good}\n\nnot json\n{{\"version\":3}}\n{older}\n{}",
        &good[..20]
    );
    let r = parse_recording(&text);
    assert_eq!(r.snapshots.len(), 1);
    let lines: Vec<usize> = r.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [3, 4, 5, 6]);
    assert!(r.skipped[1].reason.contains("version 3"));
    assert!(r.skipped[2].reason.contains("before the line above"));
}

#[test]
fn a_load_burst_does_not_set_the_growth_phases_fastest_rate() {
    // 20 GiB arrive in four seconds, then steady growth at 64 MiB/s toward an 80 GiB ceiling.
    let mut v: Vec<f64> = vec![512.0; 30];
    v.extend((1..=4).map(|k| 512.0 + 5120.0 * k as f64));
    let base = *v.last().unwrap();
    v.extend((1..=200).map(|k| base + 64.0 * k as f64));
    let s = phases(&v);
    let last = s.last().unwrap();
    assert_eq!(last.phase, Phase::Growing);
    assert!(
        last.rate_max_mib_s < 100.0,
        "the burst leaked into the phase: {last:?}"
    );
    let free = 81920.0 - v.last().unwrap();
    let p = OomPredictor::new(OomConfig::default())
        .predict(last, free)
        .unwrap();
    let truth = free / 64.0;
    assert!(
        p.seconds_low <= truth && truth <= p.seconds_high.unwrap(),
        "{p:?} vs {truth}"
    );
}

#[test]
fn a_unified_memory_gpu_counts_gtt_in_its_pool() {
    let mut s = snap(1, &[], GIB);
    s.gpus[0].unified_memory = true;
    s.gpus[0].vram_total_bytes = Some(2 * GIB);
    s.gpus[0].gtt_total_bytes = Some(96 * GIB);
    s.gpus[0].gtt_used_bytes = Some(40 * GIB);
    let pool = memwarden_analysis::history::gpu_pool_bytes(&s.gpus[0]);
    assert_eq!(pool, Some((41 * GIB, Some(98 * GIB))));
    let mut h = History::default();
    h.observe(&s);
    assert_eq!(h.gpu(0).unwrap().total_mib, Some(98.0 * 1024.0));
    // A device whose use is unknown has no series rather than a zero.
    s.gpus[0].vram_used_bytes = None;
    assert_eq!(
        memwarden_analysis::history::gpu_pool_bytes(&s.gpus[0]),
        None
    );
}
