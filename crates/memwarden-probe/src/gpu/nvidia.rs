//! NVIDIA GPUs through NVML, loaded at run time so one binary runs with and without the driver.
//!
//! The logic sits behind [`NvidiaDevice`] so that it is tested with a fake device on machines
//! without a GPU; [`Nvml`] is the real one.

use std::collections::BTreeMap;

use crate::snapshot::{DeviceFigures, Gpu, Vendor};

/// What memwarden asks of one NVIDIA device. Errors are short strings for the snapshot's
/// `error` field: a device that answers some calls and not others is still shown.
pub trait NvidiaDevice {
    fn name(&self) -> Result<String, String>;
    fn bus_id(&self) -> Result<String, String>;
    fn memory(&self) -> Result<VramInfo, String>;
    /// (pid, used bytes when the driver knows them).
    fn compute_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String>;
    fn graphics_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String>;
    /// Utilization, temperature, power, fan and clock: each figure the device withholds is
    /// `None` (many cards have no fan, some no power sensor), never an error for the card.
    fn figures(&self) -> DeviceFigures;
    /// The driver's per-process utilization samples taken after `since_us` (its CPU clock,
    /// microseconds; 0 for all it keeps). The driver samples only processes that kept the
    /// device busy, so an empty list (NVML's "not found") is a reading: all idle. An error is
    /// no reading (a card too old to sample per process).
    fn process_utilization(&self, since_us: u64) -> Result<Vec<UtilSample>, String>;
}

/// One per-process utilization sample of the driver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UtilSample {
    pub pid: u32,
    /// When the driver took it (microseconds, its CPU clock).
    pub timestamp_us: u64,
    /// SM (compute and 3D) utilization, percent.
    pub sm_percent: u32,
}

/// Each process's latest sample, in percent, and the newest timestamp seen (the next query
/// starts from there).
pub fn latest_utilization(samples: &[UtilSample]) -> (BTreeMap<u32, f64>, Option<u64>) {
    let mut latest: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
    for s in samples {
        let slot = latest
            .entry(s.pid)
            .or_insert((s.timestamp_us, s.sm_percent));
        if s.timestamp_us >= slot.0 {
            *slot = (s.timestamp_us, s.sm_percent);
        }
    }
    let newest = samples.iter().map(|s| s.timestamp_us).max();
    let out = latest
        .into_iter()
        .map(|(pid, (_, pct))| (pid, f64::from(pct.min(100))))
        .collect();
    (out, newest)
}

/// A device's memory as NVML gives it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VramInfo {
    pub total: u64,
    pub used: u64,
    pub free: u64,
}

impl VramInfo {
    /// What is neither used nor free: the driver's and firmware's own (NVML's "reserved").
    /// Taken as the remainder rather than from NVML's `reserved` field, because drivers differ
    /// on whether `used` already counts it; the remainder keeps free exactly NVML's free and
    /// the three parts adding up to the total either way.
    pub fn reserved(&self) -> u64 {
        self.total
            .saturating_sub(self.used)
            .saturating_sub(self.free)
    }
}

/// Per-process VRAM on one device. A process in both the compute and the graphics list holds
/// one allocation seen twice, so the lists merge by max, never by sum. A pid whose figure the
/// driver withholds still appears, with `None`.
pub fn merge_process_lists(
    compute: &[(u32, Option<u64>)],
    graphics: &[(u32, Option<u64>)],
) -> BTreeMap<u32, Option<u64>> {
    let mut merged: BTreeMap<u32, Option<u64>> = BTreeMap::new();
    for &(pid, bytes) in compute.iter().chain(graphics) {
        let slot = merged.entry(pid).or_insert(None);
        *slot = match (*slot, bytes) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    merged
}

/// One device's reading: its card, and its processes when they were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReading {
    pub gpu: Gpu,
    pub processes: BTreeMap<u32, Option<u64>>,
    /// Per-process utilization (percent) from the driver's samples since `util_since_us`.
    pub utilization: BTreeMap<u32, f64>,
    /// The newest sample's timestamp: where the next query starts.
    pub util_seen_us: Option<u64>,
}

/// Reads a device. `with_processes` is false for the cheap memory-only reading (the process
/// lists are slow and take the driver lock).
pub fn read_device(
    device: &dyn NvidiaDevice,
    index: u32,
    with_processes: bool,
    util_since_us: u64,
    numa_node: impl FnOnce(&str) -> Option<u32>,
) -> DeviceReading {
    let mut errors = Vec::new();
    let mut note = |what: &str, e: String| errors.push(format!("{what}: {e}"));
    let name = device.name().unwrap_or_else(|e| {
        note("name", e);
        "NVIDIA GPU".into()
    });
    let bus_id = device
        .bus_id()
        .map(|b| super::normalize_bus_id(&b))
        .unwrap_or_else(|e| {
            note("bus id", e);
            String::new()
        });
    let (total, used, reserved) = match device.memory() {
        Ok(m) => (Some(m.total), Some(m.used), Some(m.reserved())),
        Err(e) => {
            note("memory", e);
            (None, None, None)
        }
    };
    let mut processes = BTreeMap::new();
    let (mut utilization, mut util_seen_us) = (BTreeMap::new(), None);
    if with_processes {
        let compute = device.compute_processes().unwrap_or_else(|e| {
            note("compute processes", e);
            Vec::new()
        });
        let graphics = device.graphics_processes().unwrap_or_else(|e| {
            note("graphics processes", e);
            Vec::new()
        });
        processes = merge_process_lists(&compute, &graphics);
        // A card that cannot sample per process gives no figure, which is not an error of
        // the card. One that can leaves out the processes that were idle: 0 % for those.
        if let Ok(samples) = device.process_utilization(util_since_us) {
            (utilization, util_seen_us) = latest_utilization(&samples);
            for pid in processes.keys() {
                utilization.entry(*pid).or_insert(0.0);
            }
        }
    }
    let numa = if bus_id.is_empty() {
        None
    } else {
        numa_node(&bus_id)
    };
    DeviceReading {
        gpu: Gpu {
            index,
            vendor: Vendor::Nvidia,
            name: crate::sanitize::sanitize(&name, crate::sanitize::NAME_MAX),
            bus_id,
            numa_node: numa,
            vram_total_bytes: total,
            vram_used_bytes: used,
            vram_reserved_bytes: reserved,
            gtt_total_bytes: None,
            gtt_used_bytes: None,
            unified_memory: false,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            figures: device.figures(),
        },
        processes,
        utilization,
        util_seen_us,
    }
}

/// The real NVML, initialised once per run.
pub struct Nvml {
    /// Boxed: it holds an entry for each of the library's functions, too big to move inline.
    nvml: Box<nvml_wrapper::Nvml>,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nvml")
    }
}

impl Nvml {
    /// Loads libnvidia-ml and initialises it; the error says why not (no driver, no device).
    ///
    /// It runs on a thread of its own: nvml-wrapper builds its table of several hundred entry
    /// points on the stack, a frame of ~150 KiB whose pages the stack probes touch even when the
    /// library is missing. On the main thread those pages would stay resident for as long as
    /// the process runs (a third of `top`'s stack and heap together); a thread's stack is
    /// handed back when the thread ends.
    pub fn init() -> Result<Nvml, String> {
        std::thread::Builder::new()
            .name("memwarden-nvml".into())
            .spawn(|| {
                nvml_wrapper::Nvml::init()
                    .map(|nvml| Nvml {
                        nvml: Box::new(nvml),
                    })
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("no thread to load NVML on: {e}"))?
            .join()
            .map_err(|_| "loading NVML failed with a panic".to_string())?
    }

    /// The driver's version, as `nvidia-smi` shows it.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }

    pub fn device_count(&self) -> Result<u32, String> {
        self.nvml.device_count().map_err(|e| e.to_string())
    }

    /// Calls `f` with device `index` (NVML's device handles borrow the library handle).
    pub fn with_device<R>(
        &self,
        index: u32,
        f: impl FnOnce(&dyn NvidiaDevice) -> R,
    ) -> Result<R, String> {
        let device = self
            .nvml
            .device_by_index(index)
            .map_err(|e| e.to_string())?;
        Ok(f(&NvmlDevice(device)))
    }
}

struct NvmlDevice<'a>(nvml_wrapper::Device<'a>);

fn process_list(
    list: Vec<nvml_wrapper::struct_wrappers::device::ProcessInfo>,
) -> Vec<(u32, Option<u64>)> {
    use nvml_wrapper::enums::device::UsedGpuMemory;
    list.into_iter()
        .map(|p| {
            let bytes = match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => Some(b),
                UsedGpuMemory::Unavailable => None,
            };
            (p.pid, bytes)
        })
        .collect()
}

/// Milliwatts, as NVML gives power, in watts.
fn watts(milliwatts: u32) -> f64 {
    f64::from(milliwatts) / 1000.0
}

impl NvidiaDevice for NvmlDevice<'_> {
    fn process_utilization(&self, since_us: u64) -> Result<Vec<UtilSample>, String> {
        use nvml_wrapper::error::NvmlError;
        match self.0.process_utilization_stats(since_us) {
            Ok(list) => Ok(list
                .into_iter()
                .map(|s| UtilSample {
                    pid: s.pid,
                    timestamp_us: s.timestamp,
                    sm_percent: s.sm_util,
                })
                .collect()),
            // Nothing sampled since: every process idle.
            Err(NvmlError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn figures(&self) -> DeviceFigures {
        use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
        let d = &self.0;
        let rates = d.utilization_rates().ok();
        DeviceFigures {
            utilization_percent: rates.as_ref().map(|u| f64::from(u.gpu)),
            memory_utilization_percent: rates.as_ref().map(|u| f64::from(u.memory)),
            temperature_celsius: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
            power_watts: d.power_usage().ok().map(watts),
            power_limit_watts: d.enforced_power_limit().ok().map(watts),
            // Passively cooled data-centre cards answer "not supported": no fan, not 0 %.
            fan_percent: d.fan_speed(0).ok().map(f64::from),
            clock_graphics_mhz: d.clock_info(Clock::Graphics).ok(),
        }
    }

    fn name(&self) -> Result<String, String> {
        self.0.name().map_err(|e| e.to_string())
    }

    fn bus_id(&self) -> Result<String, String> {
        self.0
            .pci_info()
            .map(|p| p.bus_id)
            .map_err(|e| e.to_string())
    }

    fn memory(&self) -> Result<VramInfo, String> {
        self.0
            .memory_info()
            .map(|m| VramInfo {
                total: m.total,
                used: m.used,
                free: m.free,
            })
            .map_err(|e| e.to_string())
    }

    fn compute_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String> {
        self.0
            .running_compute_processes()
            .map(process_list)
            .map_err(|e| e.to_string())
    }

    fn graphics_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String> {
        self.0
            .running_graphics_processes()
            .map(process_list)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that answers from fixed data, standing in for a GPU this machine lacks.
    struct FakeDevice {
        memory: Result<VramInfo, String>,
        compute: Vec<(u32, Option<u64>)>,
        graphics: Vec<(u32, Option<u64>)>,
        figures: DeviceFigures,
        util: Result<Vec<UtilSample>, String>,
    }

    impl NvidiaDevice for FakeDevice {
        fn figures(&self) -> DeviceFigures {
            self.figures
        }
        fn process_utilization(&self, since_us: u64) -> Result<Vec<UtilSample>, String> {
            let all = self.util.clone()?;
            Ok(all
                .into_iter()
                .filter(|s| s.timestamp_us > since_us)
                .collect())
        }
        fn name(&self) -> Result<String, String> {
            Ok("NVIDIA GeForce RTX 4090\x1b[2J".into())
        }
        fn bus_id(&self) -> Result<String, String> {
            Ok("00000000:01:00.0".into())
        }
        fn memory(&self) -> Result<VramInfo, String> {
            self.memory.clone()
        }
        fn compute_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String> {
            Ok(self.compute.clone())
        }
        fn graphics_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String> {
            Ok(self.graphics.clone())
        }
    }

    #[test]
    fn merge_is_max_not_sum() {
        let m = merge_process_lists(
            &[(10, Some(500)), (11, Some(100)), (12, None)],
            &[(10, Some(300)), (11, Some(900)), (12, Some(7)), (13, None)],
        );
        assert_eq!(m[&10], Some(500));
        assert_eq!(m[&11], Some(900));
        assert_eq!(m[&12], Some(7));
        assert_eq!(m[&13], None);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn reads_a_fake_device() {
        let dev = FakeDevice {
            memory: Ok(VramInfo {
                total: 24 << 30,
                used: 10 << 30,
                free: 14 << 30,
            }),
            compute: vec![(42, Some(8 << 30))],
            graphics: vec![(42, Some(8 << 30)), (43, Some(1 << 30))],
            figures: DeviceFigures {
                utilization_percent: Some(87.0),
                memory_utilization_percent: Some(41.0),
                temperature_celsius: Some(66.0),
                power_watts: Some(312.5),
                power_limit_watts: Some(450.0),
                fan_percent: None,
                clock_graphics_mhz: Some(2520),
            },
            util: Ok(vec![
                UtilSample {
                    pid: 42,
                    timestamp_us: 1_000,
                    sm_percent: 10,
                },
                UtilSample {
                    pid: 42,
                    timestamp_us: 2_000,
                    sm_percent: 73,
                },
                UtilSample {
                    pid: 43,
                    timestamp_us: 1_500,
                    sm_percent: 5,
                },
            ]),
        };
        let r = read_device(&dev, 0, true, 0, |bus| (bus == "0000:01:00.0").then_some(1));
        assert_eq!(r.gpu.name, "NVIDIA GeForce RTX 4090 [2J");
        assert_eq!(r.gpu.bus_id, "0000:01:00.0");
        assert_eq!(r.gpu.numa_node, Some(1));
        assert_eq!(r.gpu.vram_total_bytes, Some(24 << 30));
        assert_eq!(r.gpu.vram_free_bytes(), Some(14 << 30));
        assert_eq!(r.gpu.vram_reserved_bytes, Some(0));
        assert_eq!(r.processes[&42], Some(8 << 30));
        assert_eq!(r.processes[&43], Some(1 << 30));
        assert_eq!(r.gpu.error, None);
        assert_eq!(r.gpu.figures.utilization_percent, Some(87.0));
        assert_eq!(r.gpu.figures.power_limit_watts, Some(450.0));
        // A card without a fan says so with null, in the JSON too.
        assert_eq!(r.gpu.figures.fan_percent, None);
        let json = serde_json::to_value(&r.gpu).unwrap();
        assert_eq!(json["fan_percent"], serde_json::Value::Null);
        assert_eq!(json["clock_graphics_mhz"], 2520);
        assert_eq!(json["temperature_celsius"], 66.0);
        // The latest sample of each process.
        assert_eq!(r.utilization.get(&42), Some(&73.0));
        assert_eq!(r.utilization.get(&43), Some(&5.0));
        assert_eq!(r.util_seen_us, Some(2_000));
        // Asked again from there: nothing sampled since, so both listed processes were idle.
        let again = read_device(&dev, 0, true, 2_000, |_| None);
        assert_eq!(again.utilization.get(&42), Some(&0.0));
        assert_eq!(again.utilization.get(&43), Some(&0.0));
        assert_eq!(again.util_seen_us, None);
        assert_eq!(again.gpu.error, None);
        let cheap = read_device(&dev, 0, false, 0, |_| None);
        assert!(cheap.processes.is_empty());
        assert!(cheap.utilization.is_empty());
    }

    #[test]
    fn memory_the_driver_keeps_is_not_counted_free() {
        // NVML v2 on a data-centre card: `used` leaves out what the driver reserves, so
        // total - used would overstate the free memory by that much.
        let dev = FakeDevice {
            memory: Ok(VramInfo {
                total: 80 << 30,
                used: 8 << 20,
                free: (80 << 30) - (8 << 20) - (512 << 20),
            }),
            compute: vec![],
            graphics: vec![],
            figures: DeviceFigures::default(),
            util: Err("Not Supported".into()),
        };
        let g = read_device(&dev, 0, false, 0, |_| None).gpu;
        assert_eq!(g.vram_reserved_bytes, Some(512 << 20));
        assert_eq!(g.vram_free_bytes(), Some((80 << 30) - (520 << 20)));
        // A driver whose `used` already counts it: nothing left over, free unchanged.
        let dev = FakeDevice {
            memory: Ok(VramInfo {
                total: 24 << 30,
                used: 1 << 30,
                free: 23 << 30,
            }),
            compute: vec![],
            graphics: vec![],
            figures: DeviceFigures::default(),
            util: Err("Not Supported".into()),
        };
        let g = read_device(&dev, 0, false, 0, |_| None).gpu;
        assert_eq!(g.vram_reserved_bytes, Some(0));
        assert_eq!(g.vram_free_bytes(), Some(23 << 30));
    }

    #[test]
    fn a_device_without_memory_info_is_still_shown() {
        let dev = FakeDevice {
            memory: Err("Not Supported".into()),
            compute: vec![],
            graphics: vec![],
            figures: DeviceFigures::default(),
            util: Err("Not Supported".into()),
        };
        let r = read_device(&dev, 3, true, 0, |_| None);
        assert_eq!(r.gpu.index, 3);
        // No per-process sampling on this card: no figure at all, never 0.
        assert!(r.utilization.is_empty());
        assert_eq!(r.gpu.vram_total_bytes, None);
        assert_eq!(r.gpu.error.as_deref(), Some("memory: Not Supported"));
    }

    #[test]
    fn real_nvml_degrades_without_a_driver() {
        // On a machine without the NVIDIA driver this must be an error string, not a crash;
        // on one with it, the device count must be readable.
        match Nvml::init() {
            Ok(nvml) => assert!(nvml.device_count().is_ok()),
            Err(e) => assert!(!e.is_empty()),
        }
    }
}
