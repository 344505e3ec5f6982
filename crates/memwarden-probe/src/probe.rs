//! The probe: one pass over the machine into a [`Snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cgroup::{CgroupMounts, CgroupRef};
use crate::fdinfo::{DrmClient, DrmClients};
use crate::framework::{self, Framework, FrameworkCache};
use crate::gpu::{GpuSourceKind, drm, nvidia};
use crate::names::NameCache;
use crate::root::{HostRoot, ReadBuf};
use crate::scrape::{ScrapeConfig, ScrapeError, Scraper, ServerMetrics};
use crate::snapshot::{Gpu, HostMemory, Process, ProcessGpu, SNAPSHOT_VERSION, Snapshot, Workload};
use crate::{ProbeError, meminfo, numa, process, procfs, sanitize, workload};

/// A process as the scan read it, with what the snapshot does not carry but later stages need.
#[derive(Debug, Clone)]
pub struct ScannedProcess {
    pub process: Process,
    pub pgrp: i32,
    pub cgroup_ref: Option<CgroupRef>,
    /// Model files the process holds open.
    pub model_files: Vec<OpenFile>,
    /// Whether its fd directory could be listed: another user's process shows no fds, and so
    /// no GPU use from fdinfo, which is not the same as holding none.
    pub fds_readable: bool,
}

pub use crate::procfs::{MODEL_EXTENSIONS, OpenFile};

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
    names: NameCache,
    frameworks: FrameworkCache,
    scraper: Scraper,
    /// Whether snapshots group processes into workloads (on by default).
    workloads: bool,
    /// NVML's per-process utilization at the last reading of the process lists, and the
    /// newest sample's timestamp per device (the next query starts there).
    nvml_util: BTreeMap<u32, f64>,
    nvml_util_seen: HashMap<u32, u64>,
}

/// A process uses enough memory for its framework to matter: its libraries are worth reading.
const FRAMEWORK_RSS_FLOOR: u64 = 256 << 20;

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
        let system = root.is_system();
        Probe {
            root,
            source,
            nvml,
            cgroups,
            buf: ReadBuf::default(),
            path,
            names: NameCache::new(system),
            frameworks: FrameworkCache::new(),
            // Servers are asked only on the real machine: a fake root's pids are not running.
            scraper: Scraper::new(ScrapeConfig {
                enabled: system,
                ..ScrapeConfig::default()
            }),
            gpu_notice,
            page_size,
            workloads: true,
            nvml_util: BTreeMap::new(),
            nvml_util_seen: HashMap::new(),
        }
    }

    /// Turns workload grouping and attribution (frameworks, servers, model files) on or off.
    pub fn set_workloads(&mut self, on: bool) {
        self.workloads = on;
    }

    /// Replaces the inference-server scraping settings (on by default for loopback on the
    /// real machine).
    pub fn set_scrape_config(&mut self, config: ScrapeConfig) {
        self.scraper = Scraper::new(config);
    }

    /// Turns inference-server scraping on (loopback only) or off.
    pub fn set_scrape(&mut self, on: bool) {
        self.set_scrape_config(ScrapeConfig {
            enabled: on,
            ..ScrapeConfig::default()
        });
    }

    /// Whether container names may be asked of `docker/podman inspect` when the runtime's
    /// state files do not say (on by default on the real machine).
    pub fn set_inspect_runtimes(&mut self, inspect: bool) {
        self.names.inspect = inspect;
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
        let text = self.buf.read(&file).map_err(|cause| ProbeError::Read {
            file: file.display().to_string(),
            cause,
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

    /// NVML's per-process utilization (percent, summed over devices) as of the last reading
    /// of the process lists; empty without NVML.
    pub fn nvml_process_utilization(&self) -> &BTreeMap<u32, f64> {
        &self.nvml_util
    }

    /// Devices, and NVML's per-process VRAM and utilization when `with_processes`.
    fn read_gpus(&mut self, with_processes: bool) -> (Vec<Gpu>, BTreeMap<u32, Vec<ProcessGpu>>) {
        let mut gpus = Vec::new();
        let mut per_pid: BTreeMap<u32, Vec<ProcessGpu>> = BTreeMap::new();
        if with_processes {
            self.nvml_util.clear();
        }
        if let Some(nvml) = &self.nvml {
            let count = nvml.device_count().unwrap_or(0);
            for i in 0..count {
                let root = &self.root;
                let since = self.nvml_util_seen.get(&i).copied().unwrap_or(0);
                let reading = nvml.with_device(i, |d| {
                    nvidia::read_device(d, i, with_processes, since, |bus| {
                        drm::numa_node_of(&root.path(&format!("/sys/bus/pci/devices/{bus}")))
                    })
                });
                match reading {
                    Ok(r) => {
                        if let Some(seen) = r.util_seen_us {
                            self.nvml_util_seen.insert(i, seen);
                        }
                        for (pid, pct) in &r.utilization {
                            *self.nvml_util.entry(*pid).or_insert(0.0) += pct;
                        }
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
                        vram_reserved_bytes: None,
                        gtt_total_bytes: None,
                        gtt_used_bytes: None,
                        unified_memory: false,
                        error: Some(sanitize::sanitize(&e, 200)),
                        figures: Default::default(),
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

    /// The notes every reading starts with: why a GPU source asked for is unavailable. An
    /// empty GPU list is not noted: it is plain in the list, and human output says it with
    /// [`Probe::gpu_notice`]. Shared by [`Probe::snapshot`] and the sampler, so that `snapshot`
    /// and `record` note the same things for the same machine.
    pub(crate) fn source_notes(&self) -> Vec<String> {
        self.gpu_notice.iter().cloned().collect()
    }

    /// Why the GPU source asked for by name cannot be used (NVML that does not load), or
    /// `None`. `auto` falls back quietly and is never unusable.
    pub fn source_unavailable(&self) -> Option<&str> {
        self.gpu_notice.as_deref()
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
        let pids = procfs::list_pids(&self.path);
        let mut out = Vec::with_capacity(pids.len());
        let mut clients = DrmClients::default();
        let mut path = String::with_capacity(self.path.len() + 64);
        for pid in pids {
            let Some(mut p) = self.read_process(pid, &mut path) else {
                continue;
            };
            let facts = procfs::read_facts(&mut self.buf, &self.path, pid, &mut path);
            // Kernel threads have no VmRSS; stat's rss (the same counter) covers a status we
            // could not read.
            if let Some(s) = facts.status {
                (p.process.uid, p.process.rss_bytes) = (s.uid, s.rss_bytes);
            }
            p.process.cgroup = facts.cgroup_text();
            p.process.cmdline = facts.cmdline;
            p.cgroup_ref = facts.cgroup;
            let fds = self.read_fds(pid, &mut path, &mut clients);
            p.model_files = fds.model_files;
            p.fds_readable = fds.readable;
            out.push(p);
        }
        (out, clients.list)
    }

    /// Every process from its stat alone: pid, parent, process group, start time, name and
    /// resident size, with nothing else filled in. What finding a server's processes and
    /// weighing them needs, for a fraction of a full scan's reads (one file per process
    /// instead of four and a walk of its open files).
    pub fn scan_stats(&mut self) -> Vec<ScannedProcess> {
        let mut path = String::with_capacity(self.path.len() + 64);
        let pids = procfs::list_pids(&self.path);
        pids.into_iter()
            .filter_map(|pid| self.read_process(pid, &mut path))
            .collect()
    }

    /// A process's open files, with the DRM clients among them read into `clients`.
    fn read_fds(
        &mut self,
        pid: u32,
        path: &mut String,
        clients: &mut DrmClients,
    ) -> procfs::FdScan {
        let fds = procfs::scan_fds(&self.path, pid, path);
        procfs::read_drm_clients(&mut self.buf, &self.path, pid, &fds.drm_fds, path, clients);
        fds
    }

    /// One process from its stat; `None` when it vanished (its stat cannot be read or parsed).
    fn read_process(&mut self, pid: u32, path: &mut String) -> Option<ScannedProcess> {
        procfs::proc_path(path, &self.path, pid, "stat");
        let stat = self.buf.read(path.as_ref()).ok()?;
        let st = process::parse_stat(stat)?;
        Some(ScannedProcess {
            process: Process {
                pid,
                starttime: st.starttime,
                ppid: Some(st.ppid),
                uid: None,
                name: sanitize::sanitize_bytes(st.comm, sanitize::NAME_MAX),
                cgroup: None,
                cmdline: String::new(),
                rss_bytes: Some(st.rss_pages * self.page_size),
                gpu: Vec::new(),
                framework: None,
                cpu_percent: None,
                gpu_utilization_percent: None,
            },
            pgrp: st.pgrp,
            cgroup_ref: None,
            model_files: Vec::new(),
            fds_readable: false,
        })
    }

    /// The devices and what `pids` hold on them (the driver's figures and their own fdinfo),
    /// reading the open files of those processes alone; and which of them would not let their
    /// fds be read.
    pub fn gpu_use_of(
        &mut self,
        pids: &[u32],
    ) -> (Vec<Gpu>, HashMap<u32, Vec<ProcessGpu>>, Vec<u32>) {
        let (gpus, mut nvml_per_pid) = self.read_gpus(true);
        let mut clients = DrmClients::default();
        let mut unreadable = Vec::new();
        let mut path = String::with_capacity(self.path.len() + 64);
        for &pid in pids {
            if !self.read_fds(pid, &mut path, &mut clients).readable {
                unreadable.push(pid);
            }
        }
        let mut per_pid = attribute_drm(&gpus, clients.list, &mut Vec::new());
        for &pid in pids {
            if let Some(list) = nvml_per_pid.remove(&pid) {
                per_pid.entry(pid).or_default().extend(list);
            }
        }
        (gpus, per_pid, unreadable)
    }

    /// The devices, and every process with its GPU figures (NVML's and fdinfo's) merged in:
    /// who holds what where, without the host reading, workloads or server queries of a
    /// snapshot. What could not be placed is said in `notes`.
    pub fn processes_with_gpus(
        &mut self,
        notes: &mut Vec<String>,
    ) -> (Vec<Gpu>, Vec<ScannedProcess>) {
        let (gpus, mut nvml_per_pid) = self.read_gpus(true);
        let (mut scanned, clients) = self.scan_processes();
        let drm_per_pid = attribute_drm(&gpus, clients, notes);
        for s in &mut scanned {
            let p = &mut s.process;
            if let Some(list) = nvml_per_pid.remove(&p.pid) {
                p.gpu.extend(list);
            }
            if let Some(list) = drm_per_pid.get(&p.pid) {
                p.gpu.extend(list.iter().cloned());
            }
            // The driver samples over time itself; DRM engine counters need two readings,
            // which one snapshot does not have.
            p.gpu_utilization_percent = self.nvml_util.get(&p.pid).copied();
        }
        (gpus, scanned)
    }

    /// The whole machine.
    pub fn snapshot(&mut self) -> Result<Snapshot, ProbeError> {
        let host = self.host_memory()?;
        let mut notes = self.source_notes();
        let (gpus, mut scanned) = self.processes_with_gpus(&mut notes);
        let (workloads, _) = self.attribute(&mut scanned, &mut notes);
        Ok(Snapshot {
            version: SNAPSHOT_VERSION,
            taken_at_ms: now_ms(),
            hostname: self.hostname(),
            host,
            gpus,
            processes: scanned.into_iter().map(|s| s.process).collect(),
            workloads,
            numa: numa::read_nodes(&self.root),
            notes,
        })
    }

    /// Groups processes (their GPU figures already merged) into workloads, naming each
    /// process's framework on the way and asking inference servers for their figures, which
    /// come back by pid beside the workloads. Nothing when workloads are turned off. Shared by
    /// [`Probe::snapshot`] and the steady-state sampler, which has its own process scan.
    pub fn attribute(
        &mut self,
        scanned: &mut [ScannedProcess],
        notes: &mut Vec<String>,
    ) -> (Vec<Workload>, HashMap<u32, ServerMetrics>) {
        if !self.workloads {
            return (Vec::new(), HashMap::new());
        }
        self.detect_frameworks(scanned);
        let servers = self.scrape_servers(scanned, notes);
        let extras = workload::Extras {
            servers: servers.iter().map(|(pid, m)| (*pid, m)).collect(),
        };
        let workloads = workload::build(
            &self.root,
            &self.cgroups,
            &mut self.names,
            scanned,
            &extras,
            notes,
        );
        (workloads, servers)
    }

    /// The processes of `scan` that belong to the workload named `wanted` (its name or id as
    /// snapshots show them; for plain processes, their name).
    pub fn workload_pids(&mut self, scan: &[ScannedProcess], wanted: &str) -> Vec<u32> {
        workload::pids_of(&self.root, &mut self.names, scan, wanted)
    }

    /// Names what each process runs: from its command line for every process, and from its
    /// loaded libraries (cached per identity) for those holding GPU memory or much RAM.
    fn detect_frameworks(&mut self, scanned: &mut [ScannedProcess]) {
        for s in scanned.iter_mut() {
            let p = &mut s.process;
            let heavy = !p.gpu.is_empty() || p.rss_bytes.unwrap_or(0) >= FRAMEWORK_RSS_FLOOR;
            let f = if heavy {
                self.frameworks
                    .get_or_detect(&self.root, p.identity(), &p.cmdline)
            } else {
                framework::detect(&p.cmdline, "")
            };
            p.framework = (f != Framework::Unknown).then_some(f);
        }
        self.frameworks.retain_live(
            scanned
                .iter()
                .map(|s| s.process.identity())
                .collect::<Vec<_>>()
                .iter(),
        );
    }

    /// Asks each inference server among the processes for its metrics (rate-limited inside
    /// the scraper); what cannot be read becomes a note.
    fn scrape_servers(
        &mut self,
        scanned: &[ScannedProcess],
        notes: &mut Vec<String>,
    ) -> HashMap<u32, ServerMetrics> {
        let mut out = HashMap::new();
        if !self.scraper.config().enabled {
            return out;
        }
        for s in scanned {
            let p = &s.process;
            let Some(f) = p.framework else { continue };
            match self
                .scraper
                .scrape_process(&self.root, p.pid, &p.cmdline, f)
            {
                None | Some(Err(ScrapeError::RateLimited | ScrapeError::Disabled)) => {}
                Some(Ok(m)) => {
                    out.insert(p.pid, m);
                }
                Some(Err(e)) => notes.push(format!(
                    "{} server of pid {} skipped: {e}",
                    f.as_str(),
                    p.pid
                )),
            }
        }
        out
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
