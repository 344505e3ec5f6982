//! The probe: one pass over the machine into a [`Snapshot`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cgroup::{CgroupMounts, CgroupRef, parse_proc_cgroup};
use crate::fdinfo::{DrmClient, parse_drm_fdinfo};
use crate::gpu::{GpuSourceKind, drm, nvidia};
use crate::root::{HostRoot, ReadBuf};
use crate::snapshot::{Gpu, HostMemory, Process, ProcessGpu, SNAPSHOT_VERSION, Snapshot};
use crate::{ProbeError, meminfo, numa, process, sanitize};

/// A process as the scan read it, with what the snapshot does not carry but later stages need.
#[derive(Debug, Clone)]
pub struct ScannedProcess {
    pub process: Process,
    pub ppid: u32,
    pub pgrp: i32,
    pub cgroup_ref: Option<CgroupRef>,
}

/// Reads the machine. Holds what is worth keeping between readings: the NVML handle
/// (initialised once), the cgroup mounts and one read buffer.
#[derive(Debug)]
pub struct Probe {
    root: HostRoot,
    source: GpuSourceKind,
    nvml: Option<nvidia::Nvml>,
    cgroups: CgroupMounts,
    buf: ReadBuf,
    path: String,
    /// Why no GPU source is available, said once to the user in human mode.
    gpu_notice: Option<String>,
    page_size: u64,
}

impl Probe {
    pub fn new(root: HostRoot, source: GpuSourceKind) -> Probe {
        let mut gpu_notice = None;
        // NVML reads the real machine's driver, never a fake root, unless asked for outright.
        let want_nvml = match source {
            GpuSourceKind::Auto => root.is_system(),
            GpuSourceKind::Nvml => true,
            GpuSourceKind::Drm | GpuSourceKind::None => false,
        };
        let nvml = if want_nvml {
            match nvidia::Nvml::init() {
                Ok(n) => Some(n),
                Err(e) => {
                    if source == GpuSourceKind::Nvml {
                        gpu_notice = Some(format!("NVML unavailable: {e}"));
                    }
                    None
                }
            }
        } else {
            None
        };
        let cgroups = CgroupMounts::discover(&root);
        // SAFETY: sysconf has no preconditions.
        let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as u64,
            _ => 4096,
        };
        let path = root.dir().join("proc").to_string_lossy().into_owned();
        Probe {
            root,
            source,
            nvml,
            cgroups,
            buf: ReadBuf::default(),
            path,
            gpu_notice,
            page_size,
        }
    }

    pub fn root(&self) -> &HostRoot {
        &self.root
    }

    pub fn cgroups(&self) -> &CgroupMounts {
        &self.cgroups
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Host RAM, swap and memory pressure.
    pub fn host_memory(&mut self) -> Result<HostMemory, ProbeError> {
        let file = self.root.path("/proc/meminfo");
        let text = self.buf.read(&file).map_err(|source| ProbeError::Read {
            file: file.display().to_string(),
            source,
        })?;
        let text = String::from_utf8_lossy(text);
        let mut host = meminfo::parse_meminfo(&text)?;
        host.psi_memory_some_avg10 = self
            .root
            .read_to_string("/proc/pressure/memory")
            .ok()
            .and_then(|t| meminfo::parse_psi_some_avg10(&t));
        Ok(host)
    }

    /// The GPUs' device figures only (no per-process lists): cheap enough for every sample.
    pub fn gpus(&mut self) -> Vec<Gpu> {
        self.read_gpus(false).0
    }

    /// Devices and NVML's per-process VRAM by pid. The process lists are slow and take the
    /// driver lock: callers that sample often read them about once a second.
    pub fn gpus_with_processes(&mut self) -> (Vec<Gpu>, BTreeMap<u32, Vec<ProcessGpu>>) {
        self.read_gpus(true)
    }

    /// Devices, and NVML's per-process VRAM when `with_processes`.
    fn read_gpus(&mut self, with_processes: bool) -> (Vec<Gpu>, BTreeMap<u32, Vec<ProcessGpu>>) {
        let mut gpus = Vec::new();
        let mut per_pid: BTreeMap<u32, Vec<ProcessGpu>> = BTreeMap::new();
        if let Some(nvml) = &self.nvml {
            let count = nvml.device_count().unwrap_or(0);
            for i in 0..count {
                let root = &self.root;
                let reading = nvml.with_device(i, |d| {
                    nvidia::read_device(d, i, with_processes, |bus| {
                        drm::numa_node_of(&root.path(&format!("/sys/bus/pci/devices/{bus}")))
                    })
                });
                match reading {
                    Ok(r) => {
                        for (pid, bytes) in r.processes {
                            per_pid.entry(pid).or_default().push(ProcessGpu {
                                gpu_index: i,
                                vram_bytes: bytes,
                                gtt_bytes: None,
                            });
                        }
                        gpus.push(r.gpu);
                    }
                    Err(e) => gpus.push(Gpu {
                        index: i,
                        vendor: crate::snapshot::Vendor::Nvidia,
                        name: "NVIDIA GPU".into(),
                        bus_id: String::new(),
                        numa_node: None,
                        vram_total_bytes: None,
                        vram_used_bytes: None,
                        gtt_total_bytes: None,
                        gtt_used_bytes: None,
                        unified_memory: false,
                        error: Some(sanitize::sanitize(&e, 200)),
                    }),
                }
            }
        }
        if matches!(self.source, GpuSourceKind::Auto | GpuSourceKind::Drm) {
            let skip: Vec<String> = gpus.iter().map(|g| g.bus_id.clone()).collect();
            let first = gpus.len() as u32;
            gpus.extend(drm::read_devices(&self.root, first, &skip));
        }
        (gpus, per_pid)
    }

    /// A one-line notice when no GPU was found, for human output.
    pub fn gpu_notice(&self, gpus: &[Gpu]) -> Option<String> {
        if !gpus.is_empty() {
            return None;
        }
        Some(match (&self.gpu_notice, self.source) {
            (Some(n), _) => format!("no GPU found ({n})"),
            (None, GpuSourceKind::None) => "GPU reading turned off (--gpu-source none)".into(),
            _ => "no GPU found: host memory only".into(),
        })
    }

    /// Every process readable under the root, in pid order, with DRM clients from fdinfo
    /// (each `(drm-pdev, drm-client-id)` counted once, for the first process that holds it).
    pub fn scan_processes(&mut self) -> (Vec<ScannedProcess>, Vec<(u32, DrmClient)>) {
        let mut pids: Vec<u32> = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        pids.sort_unstable();
        let mut out = Vec::with_capacity(pids.len());
        let mut clients = Vec::new();
        let mut seen_clients: HashSet<(Option<String>, u64)> = HashSet::new();
        let mut path = PathBuf::with_capacity(self.path.len() + 64);
        for pid in pids {
            let Some(p) = self.read_process(pid, &mut path) else {
                continue;
            };
            self.read_drm_clients(pid, &mut path, &mut seen_clients, &mut clients);
            out.push(p);
        }
        (out, clients)
    }

    fn set_path(&self, path: &mut PathBuf, pid: u32, file: &str) {
        use std::fmt::Write;
        let mut s = std::mem::take(path)
            .into_os_string()
            .into_string()
            .unwrap_or_default();
        s.clear();
        s.push_str(&self.path);
        let _ = write!(s, "/{pid}/{file}");
        *path = PathBuf::from(s);
    }

    /// One process; `None` when it vanished (its stat cannot be read or parsed).
    fn read_process(&mut self, pid: u32, path: &mut PathBuf) -> Option<ScannedProcess> {
        self.set_path(path, pid, "stat");
        let stat = self.buf.read(path).ok()?;
        let st = process::parse_stat(stat)?;
        let name = sanitize::sanitize_bytes(st.comm, sanitize::NAME_MAX);
        let (starttime, ppid, pgrp, rss_pages) = (st.starttime, st.ppid, st.pgrp, st.rss_pages);

        self.set_path(path, pid, "status");
        let status = self.buf.read(path).ok().map(process::parse_status);
        // Kernel threads have no VmRSS; stat's rss (the same counter) covers a status we could
        // not read.
        let (uid, rss_bytes) = match status {
            Some(s) => (s.uid, s.rss_bytes),
            None => (None, Some(rss_pages * self.page_size)),
        };

        self.set_path(path, pid, "cmdline");
        let cmdline = self
            .buf
            .read(path)
            .map(process::parse_cmdline)
            .unwrap_or_default();

        self.set_path(path, pid, "cgroup");
        let cgroup_ref = self
            .buf
            .read(path)
            .ok()
            .and_then(|b| parse_proc_cgroup(std::str::from_utf8(b).ok()?));
        Some(ScannedProcess {
            process: Process {
                pid,
                starttime,
                uid,
                name,
                cmdline,
                rss_bytes,
                cgroup: cgroup_ref
                    .as_ref()
                    .map(|c| sanitize::sanitize(&c.path, sanitize::CMDLINE_MAX)),
                gpu: Vec::new(),
            },
            ppid,
            pgrp,
            cgroup_ref,
        })
    }

    fn read_drm_clients(
        &mut self,
        pid: u32,
        path: &mut PathBuf,
        seen: &mut HashSet<(Option<String>, u64)>,
        clients: &mut Vec<(u32, DrmClient)>,
    ) {
        self.set_path(path, pid, "fdinfo");
        let Ok(entries) = std::fs::read_dir(&*path) else {
            return;
        };
        let dir = path.clone();
        for entry in entries.flatten() {
            let file = dir.join(entry.file_name());
            let Ok(buf) = self.buf.read(&file) else {
                continue;
            };
            let Some(client) = parse_drm_fdinfo(buf) else {
                continue;
            };
            if let Some(id) = client.client_id
                && !seen.insert((client.pdev.clone(), id))
            {
                continue;
            }
            clients.push((pid, client));
        }
    }

    /// The whole machine.
    pub fn snapshot(&mut self) -> Result<Snapshot, ProbeError> {
        let host = self.host_memory()?;
        let (gpus, mut nvml_per_pid) = self.read_gpus(true);
        let (scanned, clients) = self.scan_processes();
        let mut notes = Vec::new();
        if let Some(n) = &self.gpu_notice {
            notes.push(n.clone());
        }
        let drm_per_pid = attribute_drm(&gpus, clients, &mut notes);
        let mut processes: Vec<Process> = scanned.into_iter().map(|s| s.process).collect();
        for p in &mut processes {
            if let Some(list) = nvml_per_pid.remove(&p.pid) {
                p.gpu.extend(list);
            }
            if let Some(list) = drm_per_pid.get(&p.pid) {
                p.gpu.extend(list.iter().cloned());
            }
        }
        Ok(Snapshot {
            version: SNAPSHOT_VERSION,
            taken_at_ms: now_ms(),
            hostname: self.hostname(),
            host,
            gpus,
            processes,
            workloads: Vec::new(),
            numa: numa::read_nodes(&self.root),
            notes,
        })
    }

    pub fn hostname(&self) -> String {
        self.root
            .read_to_string("/proc/sys/kernel/hostname")
            .map(|h| sanitize::sanitize(h.trim(), sanitize::NAME_MAX))
            .unwrap_or_default()
    }
}

/// Sums DRM clients per process and device, mapping `drm-pdev` to the GPU with that bus id.
pub(crate) fn attribute_drm(
    gpus: &[Gpu],
    clients: Vec<(u32, DrmClient)>,
    notes: &mut Vec<String>,
) -> HashMap<u32, Vec<ProcessGpu>> {
    let mut per_pid: HashMap<u32, Vec<ProcessGpu>> = HashMap::new();
    let mut unknown = 0usize;
    for (pid, c) in clients {
        let gpu = match &c.pdev {
            Some(pdev) => gpus.iter().find(|g| &g.bus_id == pdev),
            // Without drm-pdev, a client can be placed only on a host with one DRM device.
            None => {
                let mut drm_gpus = gpus
                    .iter()
                    .filter(|g| g.vendor != crate::snapshot::Vendor::Nvidia);
                match (drm_gpus.next(), drm_gpus.next()) {
                    (Some(g), None) => Some(g),
                    _ => None,
                }
            }
        };
        let Some(gpu) = gpu else {
            unknown += 1;
            continue;
        };
        let list = per_pid.entry(pid).or_default();
        let slot = match list.iter_mut().position(|g| g.gpu_index == gpu.index) {
            Some(i) => &mut list[i],
            None => {
                list.push(ProcessGpu {
                    gpu_index: gpu.index,
                    vram_bytes: None,
                    gtt_bytes: None,
                });
                list.last_mut().expect("just pushed")
            }
        };
        add(&mut slot.vram_bytes, c.vram_bytes);
        add(&mut slot.gtt_bytes, c.gtt_bytes);
    }
    if unknown > 0 {
        notes.push(format!(
            "{unknown} DRM client(s) on a device not found in sysfs were skipped"
        ));
    }
    per_pid
}

fn add(slot: &mut Option<u64>, v: Option<u64>) {
    if let Some(v) = v {
        *slot = Some(slot.unwrap_or(0).saturating_add(v));
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
