//! Device activity figures from fake sysfs trees: each figure a device gives, and `null` for
//! each it lacks (never a made-up 0).

use memwarden_probe::fakeroot::{FakeCard, FakeRoot};
use memwarden_probe::snapshot::DeviceFigures;
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

const DEV0: &str = "/sys/class/drm/card0/device";

fn figures(root: &FakeRoot) -> Vec<DeviceFigures> {
    let mut p = Probe::new(HostRoot::new(root.dir()).unwrap(), GpuSourceKind::Drm);
    p.gpus().into_iter().map(|g| g.figures).collect()
}

fn amd_card(root: &FakeRoot) {
    root.card(&FakeCard::apu(100 << 20, 64 << 30, 1 << 30))
        .unwrap();
}

#[test]
fn an_amd_card_gives_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(dir.path());
    amd_card(&root);
    for (f, v) in [
        ("gpu_busy_percent", "73"),
        ("mem_busy_percent", "12"),
        ("hwmon/hwmon3/temp1_input", "54000"),
        ("hwmon/hwmon3/temp2_input", "61000"),
        ("hwmon/hwmon3/power1_average", "87000000"),
        ("hwmon/hwmon3/power1_input", "99000000"),
        ("hwmon/hwmon3/power1_cap", "120000000"),
        ("hwmon/hwmon3/pwm1", "51"),
        ("hwmon/hwmon3/freq1_input", "2900000000"),
    ] {
        root.file(&format!("{DEV0}/{f}"), format!("{v}\n")).unwrap();
    }
    let got = figures(&root);
    assert_eq!(
        got,
        vec![DeviceFigures {
            utilization_percent: Some(73.0),
            memory_utilization_percent: Some(12.0),
            // The lowest-numbered sensor: amdgpu's edge, as nvtop shows.
            temperature_celsius: Some(54.0),
            // power1_average wins over power1_input where both exist.
            power_watts: Some(87.0),
            power_limit_watts: Some(120.0),
            fan_percent: Some(20.0),
            clock_graphics_mhz: Some(2900),
        }]
    );
}

#[test]
fn an_amd_card_without_hwmon_or_busy_files_says_null() {
    let dir = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(dir.path());
    amd_card(&root);
    // An APU with only power1_input (no average), an RPM fan without its maximum, and a
    // busy figure outside 0–100 (a driver glitch, not a percentage).
    root.file(&format!("{DEV0}/gpu_busy_percent"), "255\n")
        .unwrap();
    root.file(&format!("{DEV0}/hwmon/hwmon0/power1_input"), "15000000\n")
        .unwrap();
    root.file(&format!("{DEV0}/hwmon/hwmon0/fan1_input"), "1800\n")
        .unwrap();
    let got = figures(&root);
    assert_eq!(
        got,
        vec![DeviceFigures {
            power_watts: Some(15.0),
            ..DeviceFigures::default()
        }]
    );
    let mut p = Probe::new(HostRoot::new(root.dir()).unwrap(), GpuSourceKind::Drm);
    let json = serde_json::to_value(&p.gpus()[0]).unwrap();
    for k in [
        "utilization_percent",
        "memory_utilization_percent",
        "temperature_celsius",
        "power_limit_watts",
        "fan_percent",
        "clock_graphics_mhz",
    ] {
        assert_eq!(json[k], serde_json::Value::Null, "{k}");
    }
    assert_eq!(json["power_watts"], 15.0);
}

#[test]
fn an_intel_card_gives_hwmon_power_limit_and_the_gt_clock() {
    let dir = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(dir.path());
    root.card(&FakeCard {
        vendor: 0x8086,
        device: 0x56a0,
        bus_id: "0000:03:00.0".into(),
        vram_total: None,
        vram_used: None,
        gtt_total: None,
        gtt_used: None,
        ..FakeCard::apu(0, 0, 0)
    })
    .unwrap();
    // i915: hwmon with a power limit and energy counter but no temperature; the actual GT
    // frequency beside the card.
    root.file(&format!("{DEV0}/hwmon/hwmon5/power1_max"), "190000000\n")
        .unwrap();
    root.file(&format!("{DEV0}/hwmon/hwmon5/energy1_input"), "123456\n")
        .unwrap();
    root.file("/sys/class/drm/card0/gt_act_freq_mhz", "1950\n")
        .unwrap();
    let got = figures(&root);
    assert_eq!(
        got,
        vec![DeviceFigures {
            power_limit_watts: Some(190.0),
            clock_graphics_mhz: Some(1950),
            ..DeviceFigures::default()
        }]
    );
}

#[test]
fn recordings_without_figures_still_read() {
    let old = r#"{"index":0,"vendor":"amd","name":"x","bus_id":"b","numa_node":null,
        "vram_total_bytes":1,"vram_used_bytes":1,"gtt_total_bytes":null,"gtt_used_bytes":null,
        "unified_memory":false,"error":null}"#;
    let g: memwarden_probe::snapshot::Gpu = serde_json::from_str(old).unwrap();
    assert_eq!(g.figures, DeviceFigures::default());
}
