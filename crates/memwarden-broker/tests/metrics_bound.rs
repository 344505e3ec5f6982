//! `/metrics`' machine part stays bounded: many processes, short-lived or holding GPU memory,
//! do not grow the series past the documented bound, and the text passes `promtool`.

mod common;

use common::promtool;
use memwarden_broker::metrics::{DEFAULT_MAX_PROCESSES, render, render_limited, series_bound};
use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe, Snapshot};

fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
}

/// A fake host with one APU and `n` processes that each hold some VRAM (pid 1000 + i holds
/// i + 1 MiB, so the largest have the highest pids).
fn gpu_host(dir: &std::path::Path, n: u32) -> Snapshot {
    let root = FakeRoot::new(dir);
    root.meminfo(64 << 20, 32 << 20, 0, 0).unwrap();
    let card = FakeCard::apu(1 << 30, 32 << 30, 1 << 30);
    root.card(&card).unwrap();
    for i in 0..n {
        let mut p = FakeProcess::new(1000 + i, "worker");
        p.fdinfo = vec![(
            5,
            amdgpu_fdinfo(
                &card.bus_id,
                u64::from(i) + 1,
                &format!("{} KiB", (i + 1) * 1024),
                "0 KiB",
            ),
        )];
        root.process(&p).unwrap();
    }
    let mut probe = Probe::new(HostRoot::new(dir).unwrap(), GpuSourceKind::Drm);
    probe.snapshot().unwrap()
}

#[test]
fn only_the_largest_gpu_holders_get_series() {
    let dir = tempfile::tempdir().unwrap();
    let snap = gpu_host(dir.path(), 300);
    assert_eq!(
        snap.processes
            .iter()
            .filter(|p| p.gpu_vram_bytes() > 0)
            .count(),
        300
    );
    let text = render(None, Some(&snap));
    let procs: Vec<&str> = series(&text)
        .into_iter()
        .filter(|l| l.starts_with("memwarden_process_gpu_vram_bytes{"))
        .collect();
    assert_eq!(procs.len(), DEFAULT_MAX_PROCESSES);
    // Largest first: pid 1299 holds 300 MiB and is kept, pid 1000 (1 MiB) is not.
    assert!(procs[0].starts_with("memwarden_process_gpu_vram_bytes{pid=\"1299\""));
    assert!(!text.contains("pid=\"1000\""));
    // Bare processes are not workload series: no `pid:` labels at all.
    assert!(!text.contains("workload=\"pid:"), "{text}");
    assert!(series(&text).len() <= series_bound(&snap, DEFAULT_MAX_PROCESSES));
    let few = render_limited(None, Some(&snap), 7);
    assert_eq!(
        series(&few)
            .iter()
            .filter(|l| l.starts_with("memwarden_process_"))
            .count(),
        7
    );
    promtool(&text);
}

#[test]
fn short_lived_processes_between_scrapes_do_not_add_series() {
    let mut probe = Probe::new(HostRoot::new("/").unwrap(), GpuSourceKind::Drm);
    let before = probe.snapshot().unwrap();
    let first = render(None, Some(&before));
    // A few hundred short-lived processes, alive while the second scrape reads the machine.
    let mut children: Vec<std::process::Child> = (0..300)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .expect("sleep")
        })
        .collect();
    let during = probe.snapshot().unwrap();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let after = probe.snapshot().unwrap();
    assert!(during.processes.len() >= before.processes.len() + 250);
    for snap in [&before, &during, &after] {
        let text = render(None, Some(snap));
        let n = series(&text).len();
        assert!(
            n <= series_bound(snap, DEFAULT_MAX_PROCESSES),
            "{n} series over the bound"
        );
        for c in &children {
            assert!(!text.contains(&format!("\"{}\"", c.id())), "a sleep's pid");
        }
    }
    // The series count follows the GPUs and named workloads, not the processes.
    let second = render(None, Some(&during));
    let named = |s: &Snapshot| {
        s.workloads
            .iter()
            .filter(|w| w.kind != memwarden_probe::snapshot::WorkloadKind::Process)
            .count() as i64
    };
    let grew = series(&second).len() as i64 - series(&first).len() as i64;
    assert!(
        grew <= 3 * (named(&during) - named(&before)).max(0) + 2 * DEFAULT_MAX_PROCESSES as i64,
        "grew by {grew}"
    );
    promtool(&second);
}
