//! DRM devices from /sys/class/drm/cardN/device (amdgpu's `mem_info_*` files, and the PCI
//! identity every driver has).

use std::path::Path;

use crate::root::HostRoot;
use crate::snapshot::{Gpu, Vendor};

/// A device whose GTT is at least this many times its VRAM works out of system RAM (an APU
/// with a small carve-out, such as Strix Halo).
const UNIFIED_RATIO: u64 = 4;

/// Every `cardN` (not its connectors, `card0-DP-1`) with a PCI device, in card order, indexed
/// from `first_index`. `skip_bus` leaves out devices already read another way (NVML).
pub fn read_devices(root: &HostRoot, first_index: u32, skip_bus: &[String]) -> Vec<Gpu> {
    let base = root.path("/sys/class/drm");
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, std::path::PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.strip_prefix("card")?.parse().ok()?;
            Some((n, e.path().join("device")))
        })
        .collect();
    cards.sort();
    let mut gpus = Vec::new();
    for (_, dev) in cards {
        let Some(bus_id) = pci_slot(&dev) else {
            continue;
        };
        if skip_bus.contains(&bus_id) || gpus.iter().any(|g: &Gpu| g.bus_id == bus_id) {
            continue;
        }
        gpus.push(read_device(&dev, first_index + gpus.len() as u32, bus_id));
    }
    gpus
}

/// The PCI address from the device's uevent (`PCI_SLOT_NAME=0000:c3:00.0`), which works for a
/// symlinked sysfs device and for a fixture's plain directory alike.
fn pci_slot(dev: &Path) -> Option<String> {
    let uevent = read_small(&dev.join("uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("PCI_SLOT_NAME="))
        .map(super::normalize_bus_id)
}

/// A sysfs attribute, type-checked and bounded.
fn read_small(path: &Path) -> std::io::Result<String> {
    crate::root::read_to_string_bounded(path, crate::root::SMALL_FILE_BYTES)
}

fn read_u64(dev: &Path, name: &str) -> Option<u64> {
    read_small(&dev.join(name)).ok()?.trim().parse().ok()
}

fn read_hex(dev: &Path, name: &str) -> Option<u32> {
    let t = read_small(&dev.join(name)).ok()?;
    u32::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok()
}

/// The NUMA node of a PCI device; sysfs writes -1 when the firmware names none.
pub fn numa_node_of(dev: &Path) -> Option<u32> {
    read_small(&dev.join("numa_node"))
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

fn read_device(dev: &Path, index: u32, bus_id: String) -> Gpu {
    let vendor_id = read_hex(dev, "vendor");
    let device_id = read_hex(dev, "device");
    let vendor = vendor_id.map_or(Vendor::Other, Vendor::from_pci_id);
    let vram_total = read_u64(dev, "mem_info_vram_total");
    let vram_used = read_u64(dev, "mem_info_vram_used");
    let gtt_total = read_u64(dev, "mem_info_gtt_total");
    let gtt_used = read_u64(dev, "mem_info_gtt_used");
    let name = read_small(&dev.join("product_name"))
        .ok()
        .map(|n| crate::sanitize::sanitize(n.trim(), crate::sanitize::NAME_MAX))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let brand = match vendor {
                Vendor::Amd => "AMD",
                Vendor::Intel => "Intel",
                Vendor::Nvidia => "NVIDIA",
                Vendor::Other => "GPU",
            };
            format!(
                "{brand} [{:04x}:{:04x}]",
                vendor_id.unwrap_or(0),
                device_id.unwrap_or(0)
            )
        });
    let error = if vram_total.is_none() && gtt_total.is_none() {
        Some(match vendor {
            Vendor::Nvidia => "no memory figures in sysfs (NVML not loaded)".to_string(),
            _ => "no memory figures in sysfs for this driver".to_string(),
        })
    } else {
        None
    };
    let unified_memory = match (vram_total, gtt_total) {
        (Some(v), Some(g)) => g >= v.saturating_mul(UNIFIED_RATIO),
        _ => false,
    };
    Gpu {
        index,
        vendor,
        name,
        bus_id,
        numa_node: numa_node_of(dev),
        vram_total_bytes: vram_total,
        vram_used_bytes: vram_used,
        vram_reserved_bytes: None,
        gtt_total_bytes: gtt_total,
        gtt_used_bytes: gtt_used,
        unified_memory,
        error,
        figures: super::figures::read(dev, dev.parent().unwrap_or(dev)),
    }
}
