//! `memwarden record` kept small: the N largest processes only, and zstd-compressed output
//! read back by `analyze` (and `top --replay`, through the same reader).

mod common;

use common::memwarden;
use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo};

/// A machine of a few small processes and one holding GPU memory on an APU.
fn machine(dir: &std::path::Path) {
    let root = FakeRoot::new(dir);
    root.meminfo(64 << 20, 40 << 20, 0, 0).unwrap();
    root.card(&FakeCard::apu(100 << 20, 64 << 30, 10 << 30))
        .unwrap();
    root.process(&FakeProcess::new(1, "init")).unwrap();
    for pid in 10..20 {
        let mut p = FakeProcess::new(pid, &format!("helper-{pid}"));
        p.rss_kib = Some(u64::from(pid) << 10);
        root.process(&p).unwrap();
    }
    let mut gpu = FakeProcess::new(40, "llama-server");
    gpu.fdinfo = vec![(7, amdgpu_fdinfo("0000:c3:00.0", 5, "5 MiB", "8 GiB"))];
    root.process(&gpu).unwrap();
}

fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_largest_processes_compressed_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    machine(dir.path());
    let root = dir.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("rec.jsonl.zst");
    let f = file.to_str().unwrap();
    let record = |count: &str| {
        let o = memwarden(&[
            "--root",
            root,
            "--gpu-source",
            "drm",
            "record",
            "--out",
            f,
            "--count",
            count,
            "--interval",
            "100ms",
            "--processes",
            "3",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    record("3");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(&memwarden_analysis::recording::ZSTD_MAGIC));
    let snaps = lines(&zstd::decode_all(&bytes[..]).unwrap());
    assert_eq!(snaps.len(), 3);
    for s in &snaps {
        let pids: Vec<u64> = (s["processes"].as_array().unwrap().iter())
            .map(|p| p["pid"].as_u64().unwrap())
            .collect();
        // GPU memory first, then the largest RSS.
        assert_eq!(pids.len(), 3, "{s}");
        assert!(
            pids.contains(&40) && pids.contains(&19) && pids.contains(&18),
            "{pids:?}"
        );
        // Devices stay whole; a plain process's workload goes with it.
        assert_eq!(s["gpus"].as_array().unwrap().len(), 1);
        let workloads: Vec<&str> = (s["workloads"].as_array().unwrap().iter())
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(workloads.len(), 3, "{workloads:?}");
        assert!(!workloads.contains(&"init"), "{workloads:?}");
    }
    // The CPU use needs two readings: null in the first line, a figure after.
    assert!(snaps[0]["processes"][0]["cpu_percent"].is_null());
    assert!(
        snaps[1]["processes"][0]["cpu_percent"].is_number(),
        "{}",
        snaps[1]
    );
    // A second run appends a frame; analyze reads both, transparently.
    record("2");
    let all = lines(&zstd::decode_all(&std::fs::read(&file).unwrap()[..]).unwrap());
    assert_eq!(all.len(), 5);
    let o = memwarden(&["analyze", f, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["snapshots"], 5, "{report}");
    let replay = memwarden_tui::replay::Recording::open(&file).unwrap();
    assert_eq!(replay.samples.len(), 5);
    assert_eq!(replay.skipped, 0);
}

#[test]
fn zero_processes_is_refused() {
    let o = memwarden(&["record", "--out", "/dev/null", "--processes", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--processes must be at least 1"));
}
