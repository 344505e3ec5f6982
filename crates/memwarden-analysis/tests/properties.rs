//! Property tests: the analysis never panics, whatever the numbers, and keeps its promises
//! (confidence in [0, 1], predictions only as ranges, changepoints in ruptures' format and
//! equal to the reference arithmetic's).

use memwarden_analysis::oom::{OomConfig, OomPredictor};
use memwarden_analysis::pelt::{PeltParams, pelt, pelt_reference};
use memwarden_analysis::phase::{PhaseConfig, PhaseDetector};
use memwarden_analysis::segments::{LabelContext, label_segments};
use memwarden_analysis::series::Sample;
use proptest::prelude::*;

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6f64..1e6,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(1e300),
        1 => Just(-0.0),
        1 => any::<f64>(),
    ]
}

/// Small integers: many exact ties, the hard case for matching ruptures.
fn tie_prone() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0u8..4, 1..80).prop_map(|v| v.into_iter().map(|x| x as f64).collect())
}

fn params() -> impl Strategy<Value = PeltParams> {
    (0.0f64..50.0, 0usize..6, 1usize..7).prop_map(|(penalty, min_size, jump)| PeltParams {
        penalty,
        min_size,
        jump,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn pelt_equals_reference_on_ties(x in tie_prone(), p in params()) {
        prop_assert_eq!(pelt(&x, &p), pelt_reference(&x, &p));
    }

    #[test]
    fn pelt_equals_reference_on_noise(
        x in prop::collection::vec(-1e4f64..1e4, 1..150),
        p in params(),
        scale in prop_oneof![Just(1.0), Just(1e-3), Just(1e5)],
    ) {
        let x: Vec<f64> = x.iter().map(|v| v * scale).collect();
        let p = PeltParams { penalty: p.penalty * scale * scale, ..p };
        prop_assert_eq!(pelt(&x, &p), pelt_reference(&x, &p));
    }

    #[test]
    fn pelt_output_is_in_ruptures_format(x in prop::collection::vec(-1e3f64..1e3, 1..200), p in params()) {
        let Ok(b) = pelt(&x, &p) else {
            prop_assert!(x.len() < p.min_size.max(1));
            return Ok(());
        };
        prop_assert_eq!(*b.last().unwrap(), x.len());
        let mut start = 0;
        for (i, &e) in b.iter().enumerate() {
            prop_assert!(e > start);
            if i + 1 < b.len() {
                prop_assert_eq!(e % p.jump, 0);
            }
            prop_assert!(e - start >= p.min_size.max(1));
            start = e;
        }
    }

    #[test]
    fn pelt_never_panics(x in prop::collection::vec(any_f64(), 0..60), pen in any_f64(),
                         min_size in 0usize..5, jump in 0usize..5) {
        let p = PeltParams { penalty: pen, min_size, jump };
        let _ = pelt(&x, &p);
        let _ = pelt_reference(&x, &p);
    }

    #[test]
    fn phases_and_predictions_stay_sane(
        values in prop::collection::vec(any_f64(), 0..300),
        steps in prop::collection::vec(0u64..5000, 0..300),
        free in any_f64(),
    ) {
        let mut d = PhaseDetector::new(PhaseConfig::default());
        let oom = OomPredictor::new(OomConfig::default());
        let mut t = 0u64;
        for (i, v) in values.iter().enumerate() {
            t += steps.get(i).copied().unwrap_or(1000);
            let st = d.update(Sample { t_ms: t, mib: *v });
            prop_assert!((0.0..=1.0).contains(&st.confidence), "confidence {}", st.confidence);
            if let Some(p) = oom.predict(&st, free) {
                prop_assert!(p.seconds_low.is_finite() && p.seconds_low >= 0.0);
                if let Some(h) = p.seconds_high {
                    prop_assert!(h >= p.seconds_low && h <= 3600.0);
                }
                prop_assert!(p.seconds_low <= 3600.0);
                prop_assert!((0.0..=1.0).contains(&p.confidence));
            }
        }
    }

    #[test]
    fn labelling_never_panics(values in prop::collection::vec(-1e9f64..1e9, 0..100),
                              cuts in prop::collection::vec(0usize..120, 0..10)) {
        let times: Vec<u64> = (0..values.len() as u64).map(|i| i * 1000).collect();
        let segs = label_segments(&values, &times, &cuts, &LabelContext { total_mib: Some(1e6) });
        let covered: usize = segs.iter().map(|s| s.end - s.start).sum();
        prop_assert!(covered <= values.len());
    }
}

mod history {
    use memwarden_analysis::history::History;
    use memwarden_analysis::survival::Framework;
    use memwarden_probe::snapshot::{
        Gpu, HostMemory, Process, ProcessGpu, SNAPSHOT_VERSION, Snapshot, Vendor,
    };
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), Just(u64::MAX), 0u64..(1 << 40)]
    }

    prop_compose! {
        fn snapshot()(t in 0u64..1_000_000, total in bytes(), used in bytes(), unified in any::<bool>(),
                      mem in bytes(), avail in bytes(),
                      procs in prop::collection::vec((1u32..50, 0u64..3, bytes(), 0u32..3), 0..8))
                      -> Snapshot {
            Snapshot {
                version: SNAPSHOT_VERSION,
                taken_at_ms: t,
                hostname: "h".into(),
                host: HostMemory {
                    mem_total_bytes: mem,
                    mem_available_bytes: avail,
                    ..HostMemory::default()
                },
                gpus: vec![Gpu {
                    index: 0,
                    vendor: Vendor::Other,
                    name: "g".into(),
                    bus_id: String::new(),
                    numa_node: None,
                    vram_total_bytes: Some(total),
                    vram_used_bytes: Some(used),
                    vram_reserved_bytes: None,
                    gtt_total_bytes: Some(total),
                    gtt_used_bytes: Some(used),
                    unified_memory: unified,
                    error: None,
                    figures: Default::default(),
                }],
                processes: procs.into_iter().map(|(pid, st, vram, gi)| Process {
                    pid,
                    starttime: st,
                    ppid: None,
                    uid: None,
                    name: "p".into(),
                    cmdline: String::new(),
                    rss_bytes: None,
                    cgroup: None,
                    gpu: vec![ProcessGpu { gpu_index: gi, vram_bytes: Some(vram), gtt_bytes: Some(vram) }],
                    framework: None,
                }).collect(),
                workloads: Vec::new(),
                numa: Vec::new(),
                notes: Vec::new(),
            }
        }
    }

    proptest! {
        #[test]
        fn history_never_panics(snaps in prop::collection::vec(snapshot(), 0..40)) {
            let mut h = History::default();
            for s in &snaps {
                h.observe(s);
                for v in h.verdicts(|_| Framework::PyTorchTraining) {
                    prop_assert!(!v.survival.reason.is_empty());
                }
                for (_, g) in h.gpus() {
                    prop_assert!((0.0..=1.0).contains(&g.phase.confidence));
                    if let Some(p) = g.oom {
                        prop_assert!(p.seconds_high.is_none_or(|hi| hi >= p.seconds_low));
                    }
                }
            }
            let report = memwarden_analysis::analyze(&snaps, &Default::default());
            prop_assert!(report.series.iter().all(|s| s.peak_mib.is_finite()));
        }

        /// The phase spans of every series cover it once, end to end, and each label agrees
        /// with the rate beside it: a span is never called growing at a flat or falling rate.
        #[test]
        fn phase_spans_tile_each_series_and_agree_with_their_rates(
            mut snaps in prop::collection::vec(snapshot(), 0..60),
            gaps in prop::collection::vec(1u64..4, 60),
        ) {
            let mut t = 0;
            for (s, gap) in snaps.iter_mut().zip(&gaps) {
                t += gap * 1000;
                s.taken_at_ms = t;
            }
            let params = memwarden_analysis::AnalyzeParams::default();
            for s in memwarden_analysis::analyze(&snaps, &params).series {
                let floor = match s.kind {
                    memwarden_analysis::SeriesKind::Host => params.host_phase.noise_floor_mib_s,
                    _ => params.phase.noise_floor_mib_s,
                };
                let covered: u32 = s.phases.iter().map(|p| p.samples).sum();
                prop_assert_eq!(covered as usize, s.samples, "{}", s.key);
                for w in s.phases.windows(2) {
                    prop_assert_eq!(w[0].end_ms, w[1].start_ms);
                    prop_assert_ne!(w[0].phase, w[1].phase);
                }
                for p in &s.phases {
                    prop_assert_eq!(p.phase, p.phase.agreeing_with(p.rate_mib_s, floor), "{:?}", p);
                }
            }
        }
    }
}

/// Long flat stretches (whole pages that do not move for minutes) are where every start ties;
/// `pelt` answers for whole blocks of them at once and must still agree with the reference.
#[test]
fn pelt_equals_reference_on_long_flat_stretches() {
    let mut r = memwarden_analysis::synth::Rng::new(11);
    for case in 0..300 {
        let n = 20 + (r.next_u64() % 400) as usize;
        let mut x = Vec::with_capacity(n);
        while x.len() < n {
            let run = 1 + (r.next_u64() % 60) as usize;
            let v = match r.next_u64() % 4 {
                0 => 0.0,
                1 => 2.0 * (r.next_u64() % 8) as f64,
                2 => 0.1 * (r.next_u64() % 5) as f64,
                _ => (r.next_u64() % 3) as f64 + r.unit(),
            };
            x.extend(std::iter::repeat_n(v, run.min(n - x.len())));
        }
        let p = PeltParams {
            penalty: [0.0, 0.5, 1.0, 4.0, 30.0][(r.next_u64() % 5) as usize],
            min_size: (r.next_u64() % 5) as usize,
            jump: 1 + (r.next_u64() % 4) as usize,
        };
        assert_eq!(
            pelt(&x, &p),
            pelt_reference(&x, &p),
            "case {case}: {p:?} {x:?}"
        );
    }
}
