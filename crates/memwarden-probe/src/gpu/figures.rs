//! A DRM device's activity figures from sysfs: amdgpu's busy percentages, and the device's
//! hwmon (temperature, power, fan, clock) that amdgpu, i915 and xe all expose.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::snapshot::DeviceFigures;

/// hwmon numbers its sensors from 1; a GPU has a handful (edge, junction, memory).
const MAX_SENSORS: u32 = 8;

/// A sysfs attribute is one short number: more than this is not one.
const ATTR_MAX: u64 = 64;

/// One number from a sysfs attribute; `None` when absent, unreadable or not a number.
fn attr(dir: &Path, name: &str) -> Option<i64> {
    let mut text = String::new();
    std::fs::File::open(dir.join(name))
        .ok()?
        .take(ATTR_MAX)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

fn percent(dir: &Path, name: &str) -> Option<f64> {
    attr(dir, name)
        .filter(|v| (0..=100).contains(v))
        .map(|v| v as f64)
}

/// The device's first hwmon directory (`device/hwmon/hwmonN`), in name order.
fn hwmon_dir(dev: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dev.join("hwmon"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("hwmon"))
        .map(|e| e.path())
        .take(MAX_SENSORS as usize)
        .collect();
    dirs.sort();
    dirs.into_iter().next()
}

/// The lowest-numbered `tempN_input` (amdgpu's edge sensor, i915's package), in °C.
fn temperature(hwmon: &Path) -> Option<f64> {
    (1..=MAX_SENSORS)
        .find_map(|n| attr(hwmon, &format!("temp{n}_input")))
        .map(|milli| milli as f64 / 1000.0)
}

fn microwatts(hwmon: &Path, names: &[&str]) -> Option<f64> {
    names
        .iter()
        .find_map(|n| attr(hwmon, n))
        .filter(|&v| v >= 0)
        .map(|micro| micro as f64 / 1e6)
}

/// `pwm1` is the fan's duty in 0–255; without it, the speed against its maximum.
fn fan(hwmon: &Path) -> Option<f64> {
    if let Some(pwm) = attr(hwmon, "pwm1").filter(|v| (0..=255).contains(v)) {
        return Some((pwm as f64 * 100.0 / 255.0).round());
    }
    let rpm = attr(hwmon, "fan1_input")?;
    let max = attr(hwmon, "fan1_max").filter(|&m| m > 0)?;
    Some((rpm as f64 * 100.0 / max as f64).clamp(0.0, 100.0).round())
}

/// The graphics clock: amdgpu's hwmon `freq1_input` (Hz); i915's `gt_act_freq_mhz` on the card.
fn clock_mhz(card: &Path, hwmon: Option<&Path>) -> Option<u32> {
    if let Some(hz) = hwmon.and_then(|h| attr(h, "freq1_input")) {
        return u32::try_from(hz / 1_000_000).ok();
    }
    ["gt_act_freq_mhz", "gt/gt0/rps_act_freq_mhz"]
        .iter()
        .find_map(|n| attr(card, n))
        .and_then(|mhz| u32::try_from(mhz).ok())
}

/// Everything the device's sysfs says; what it lacks stays `None`. `dev` is
/// `/sys/class/drm/cardN/device`, `card` is `/sys/class/drm/cardN`.
pub fn read(dev: &Path, card: &Path) -> DeviceFigures {
    let hwmon = hwmon_dir(dev);
    let h = hwmon.as_deref();
    DeviceFigures {
        utilization_percent: percent(dev, "gpu_busy_percent"),
        memory_utilization_percent: percent(dev, "mem_busy_percent"),
        temperature_celsius: h.and_then(temperature),
        power_watts: h.and_then(|h| microwatts(h, &["power1_average", "power1_input"])),
        power_limit_watts: h.and_then(|h| microwatts(h, &["power1_cap", "power1_max"])),
        fan_percent: h.and_then(fan),
        clock_graphics_mhz: clock_mhz(card, h),
    }
}
