//! `snapshot --format prometheus`: exactly the machine part of `serve`'s /metrics.

mod common;

use common::{memwarden, stderr, stdout};
use memwarden_probe::Snapshot;
use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo};

fn fixture(dir: &std::path::Path) {
    let root = FakeRoot::new(dir);
    root.meminfo(64 << 20, 32 << 20, 8 << 20, 8 << 20).unwrap();
    let card = FakeCard::apu(1 << 30, 32 << 30, 4 << 30);
    root.card(&card).unwrap();
    let dev = "/sys/class/drm/card0/device";
    root.file(&format!("{dev}/gpu_busy_percent"), "42\n")
        .unwrap();
    root.file(&format!("{dev}/hwmon/hwmon1/temp1_input"), "51000\n")
        .unwrap();
    let mut p = FakeProcess::new(4242, "llama-server");
    p.fdinfo = vec![(5, amdgpu_fdinfo(&card.bus_id, 3, "2048 KiB", "8192 KiB"))];
    root.process(&p).unwrap();
}

#[test]
fn prometheus_format_is_what_metrics_would_serve() {
    let tmp = tempfile::tempdir().unwrap();
    fixture(tmp.path());
    let dir = tmp.path().to_str().unwrap();
    let json = memwarden(&["--root", dir, "snapshot", "--json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let snap: Snapshot = serde_json::from_slice(&json.stdout).unwrap();
    let prom = memwarden(&["--root", dir, "snapshot", "--format", "prometheus"]);
    assert!(prom.status.success(), "{}", stderr(&prom));
    let text = stdout(&prom);
    assert_eq!(text, memwarden_broker::metrics::render(None, Some(&snap)));
    for line in [
        "memwarden_gpu_utilization_percent{gpu=\"0\"",
        "memwarden_gpu_temperature_celsius{gpu=\"0\"",
        "memwarden_process_gpu_gtt_bytes{pid=\"4242\",name=\"llama-server\",gpu=\"0\"} 8388608",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // What the device does not say is not exported as 0.
    assert!(!text.contains("memwarden_gpu_fan_percent{"), "{text}");
    // --json stays the machine format; the two cannot be asked together.
    let both = memwarden(&["--root", dir, "snapshot", "--json", "--format", "table"]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}
