//! A cheaper reading for a view that samples every second: what does not change during a
//! process's life (its uid, cmdline, cgroup, framework, which of its fds are GPU clients or
//! model files) is read once per process identity `(pid, starttime)` and kept; a steady-state
//! sample reads the process's `stat` (its RSS) and nothing else, plus the fdinfo of the fds
//! already known to be GPU clients. NVML's per-process lists, slow and taken under the driver
//! lock, are read at most once per `nvml_every`; the device figures in between are cheap.
//! Workloads are built from the same scan as [`Probe::snapshot`] builds them.
//!
//! What the cache can miss: a process that changes uid or cgroup after start keeps the first
//! reading, and a process that opens a GPU device or a model file later is noticed at the
//! next fd rescan (every `fd_rescan_every` samples).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cgroup::CgroupRef;
use crate::fdinfo::{DrmClient, DrmClients, DrmEngine};
use crate::framework::{self, Framework};
use crate::probe::{Probe, ScannedProcess, attribute_drm, now_ms};
use crate::procfs::{self, FdScan};
use crate::root::ReadBuf;
use crate::scrape::ServerMetrics;
use crate::snapshot::{Gpu, NumaNode, Process, ProcessGpu, SNAPSHOT_VERSION, Snapshot};
use crate::{ProbeError, numa, process, sanitize};

/// What is kept per process identity.
#[derive(Debug, Clone)]
struct Known {
    starttime: u64,
    uid: Option<u32>,
    /// A process without VmRSS (a kernel thread) has no resident figure at all.
    has_rss: bool,
    cmdline: String,
    cgroup: Option<CgroupRef>,
    cgroup_text: Option<String>,
    /// From the command line alone; processes heavy enough get their libraries read too.
    framework: Option<Framework>,
    /// DRM fds and model files at the last scan of its fds.
    fds: FdScan,
    fds_scanned_at: u64,
    /// CPU ticks (user + system) at the last reading, and when: the next gives a rate.
    cpu: Option<(u64, Instant)>,
}

/// A DRM client across readings: the process, its device and its client id.
type ClientKey = (u32, Option<String>, u64);

/// One sample: the snapshot, and what the inference servers among the processes reported,
/// by pid.
#[derive(Debug, Clone)]
pub struct Sample {
    pub snapshot: Snapshot,
    pub servers: HashMap<u32, ServerMetrics>,
}

#[derive(Debug)]
pub struct Sampler {
    probe: Probe,
    proc_dir: String,
    buf: ReadBuf,
    known: HashMap<u32, Known>,
    samples: u64,
    nvml_every: Duration,
    nvml_at: Option<Instant>,
    nvml_procs: BTreeMap<u32, Vec<ProcessGpu>>,
    fd_rescan_every: u64,
    hostname: String,
    numa: Vec<NumaNode>,
    /// Clock ticks per second, for CPU time in /proc/PID/stat.
    ticks_per_s: u64,
    /// Each DRM client's engine counters at the last reading, and when.
    drm_engines: HashMap<ClientKey, (Vec<DrmEngine>, Instant)>,
    /// NVML's per-process utilization at its last reading.
    nvml_util: BTreeMap<u32, f64>,
}

/// CPU use between two readings, in percent of one CPU; `None` when the readings are too
/// close to say anything or the counter went back.
pub fn cpu_percent(
    prev_ticks: u64,
    ticks: u64,
    elapsed: Duration,
    ticks_per_s: u64,
) -> Option<f64> {
    let used = ticks.checked_sub(prev_ticks)?;
    let secs = elapsed.as_secs_f64();
    if secs < 0.01 || ticks_per_s == 0 {
        return None;
    }
    Some(used as f64 / ticks_per_s as f64 / secs * 100.0)
}

impl Sampler {
    pub fn new(probe: Probe) -> Sampler {
        let proc_dir = probe
            .root()
            .dir()
            .join("proc")
            .to_string_lossy()
            .into_owned();
        let hostname = probe.hostname();
        Sampler {
            probe,
            proc_dir,
            buf: ReadBuf::default(),
            known: HashMap::new(),
            samples: 0,
            nvml_every: Duration::from_secs(1),
            nvml_at: None,
            nvml_procs: BTreeMap::new(),
            fd_rescan_every: 10,
            hostname,
            numa: Vec::new(),
            // SAFETY: sysconf has no preconditions.
            ticks_per_s: match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
                n if n > 0 => n as u64,
                _ => 100,
            },
            drm_engines: HashMap::new(),
            nvml_util: BTreeMap::new(),
        }
    }

    /// How often NVML's process lists are read (at least the default second is advised).
    pub fn set_nvml_every(&mut self, every: Duration) {
        self.nvml_every = every;
    }

    /// Every how many samples the fds of known processes are scanned again.
    pub fn set_fd_rescan_every(&mut self, samples: u64) {
        self.fd_rescan_every = samples.max(1);
    }

    /// Whether processes are grouped into workloads (on by default).
    pub fn set_workloads(&mut self, on: bool) {
        self.probe.set_workloads(on);
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// How many process identities are cached (for tests and the memory budget).
    pub fn cached(&self) -> usize {
        self.known.len()
    }

    pub fn sample(&mut self) -> Result<Sample, ProbeError> {
        self.sample_at(Instant::now())
    }

    /// A sample, with `now` deciding whether NVML's process lists are due.
    pub fn sample_at(&mut self, now: Instant) -> Result<Sample, ProbeError> {
        let host = self.probe.host_memory()?;
        let nvml_due = self
            .nvml_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.nvml_every);
        let gpus: Vec<Gpu> = if nvml_due {
            let (gpus, per_pid) = self.probe.gpus_with_processes();
            self.nvml_procs = per_pid;
            self.nvml_util = self.probe.nvml_process_utilization().clone();
            self.nvml_at = Some(now);
            // Slow-changing facts ride on the same once-a-second beat.
            self.hostname = self.probe.hostname();
            self.numa = numa::read_nodes(self.probe.root());
            gpus
        } else {
            self.probe.gpus()
        };
        self.samples += 1;
        let (mut scanned, mut clients) = self.scan(now);
        let mut notes = self.probe.source_notes();
        let drm_util = self.drm_utilization(&mut clients, now);
        let drm = attribute_drm(&gpus, clients, &mut notes);
        for s in &mut scanned {
            let p = &mut s.process;
            if let Some(list) = self.nvml_procs.get(&p.pid) {
                p.gpu.extend(list.iter().cloned());
            }
            if let Some(list) = drm.get(&p.pid) {
                p.gpu.extend(list.iter().cloned());
            }
            p.gpu_utilization_percent = sum_some(
                self.nvml_util.get(&p.pid).copied(),
                drm_util.get(&p.pid).copied(),
            );
        }
        let (workloads, servers) = self.probe.attribute(&mut scanned, &mut notes);
        Ok(Sample {
            snapshot: Snapshot {
                version: SNAPSHOT_VERSION,
                taken_at_ms: now_ms(),
                hostname: self.hostname.clone(),
                host,
                gpus,
                processes: scanned.into_iter().map(|s| s.process).collect(),
                workloads,
                numa: self.numa.clone(),
                notes,
            },
            servers,
        })
    }

    /// Whether inference servers are asked for their figures (on by default on the real
    /// machine; each server at most as often as the scraper's rate limit allows).
    pub fn set_scrape(&mut self, on: bool) {
        self.probe.set_scrape(on);
    }

    /// Each process's GPU use from its DRM clients' engine counters since the last reading
    /// (summed over its clients, each device at most 100 %); the counters are moved out of the
    /// clients and kept for the next.
    fn drm_utilization(
        &mut self,
        clients: &mut [(u32, DrmClient)],
        now: Instant,
    ) -> HashMap<u32, f64> {
        let mut per_device: HashMap<(u32, Option<String>), f64> = HashMap::new();
        let mut next = HashMap::with_capacity(clients.len());
        for (pid, c) in clients {
            let Some(id) = c.client_id else { continue };
            if c.engines.is_empty() {
                continue;
            }
            let key = (*pid, c.pdev.clone(), id);
            if let Some((prev, at)) = self.drm_engines.get(&key) {
                let elapsed = now.saturating_duration_since(*at).as_nanos() as u64;
                if let Some(b) = crate::fdinfo::busy_percent(prev, &c.engines, elapsed) {
                    let slot = per_device.entry((*pid, c.pdev.clone())).or_insert(0.0);
                    *slot = (*slot + b).min(100.0);
                }
            }
            next.insert(key, (std::mem::take(&mut c.engines), now));
        }
        let mut out: HashMap<u32, f64> = HashMap::new();
        for ((pid, _), b) in per_device {
            *out.entry(pid).or_insert(0.0) += b;
        }
        self.drm_engines = next;
        out
    }

    fn scan(&mut self, now: Instant) -> (Vec<ScannedProcess>, Vec<(u32, DrmClient)>) {
        let pids = procfs::list_pids(&self.proc_dir);
        let page = self.probe.page_size();
        let mut out = Vec::with_capacity(pids.len());
        let mut clients = DrmClients::default();
        let mut live: HashSet<u32> = HashSet::with_capacity(pids.len());
        let mut path = String::with_capacity(self.proc_dir.len() + 32);
        for pid in pids {
            procfs::proc_path(&mut path, &self.proc_dir, pid, "stat");
            let Ok(stat) = self.buf.read(path.as_ref()) else {
                continue;
            };
            let Some(st) = process::parse_stat(stat) else {
                continue;
            };
            let name = sanitize::sanitize_bytes(st.comm, sanitize::NAME_MAX);
            let (starttime, ppid, pgrp, rss_pages) = (st.starttime, st.ppid, st.pgrp, st.rss_pages);
            let ticks = st.cpu_ticks;
            let fresh = self
                .known
                .get(&pid)
                .is_none_or(|k| k.starttime != starttime);
            if fresh {
                let k = self.read_static(pid, starttime, &mut path);
                self.known.insert(pid, k);
            } else if self.known.get(&pid).is_some_and(|k| {
                self.samples.saturating_sub(k.fds_scanned_at) >= self.fd_rescan_every
            }) {
                let fds = procfs::scan_fds(&self.proc_dir, pid, &mut path);
                if let Some(k) = self.known.get_mut(&pid) {
                    k.fds = fds;
                    k.fds_scanned_at = self.samples;
                }
            }
            let Some(k) = self.known.get_mut(&pid) else {
                continue;
            };
            let cpu = k.cpu.and_then(|(prev, at)| {
                cpu_percent(
                    prev,
                    ticks,
                    now.saturating_duration_since(at),
                    self.ticks_per_s,
                )
            });
            k.cpu = Some((ticks, now));
            let k = &*k;
            procfs::read_drm_clients(
                &mut self.buf,
                &self.proc_dir,
                pid,
                &k.fds.drm_fds,
                &mut path,
                &mut clients,
            );
            live.insert(pid);
            out.push(ScannedProcess {
                process: Process {
                    pid,
                    starttime,
                    ppid: Some(ppid),
                    uid: k.uid,
                    name,
                    cmdline: k.cmdline.clone(),
                    rss_bytes: k.has_rss.then(|| rss_pages.saturating_mul(page)),
                    cgroup: k.cgroup_text.clone(),
                    gpu: Vec::new(),
                    framework: k.framework,
                    cpu_percent: cpu,
                    gpu_utilization_percent: None,
                },
                pgrp,
                cgroup_ref: k.cgroup.clone(),
                model_files: k.fds.model_files.clone(),
                fds_readable: k.fds.readable,
            });
        }
        self.known.retain(|pid, _| live.contains(pid));
        (out, clients.list)
    }

    /// The facts read once per identity: uid (and whether it has an RSS), cmdline, cgroup,
    /// framework by name, and its fds.
    fn read_static(&mut self, pid: u32, starttime: u64, path: &mut String) -> Known {
        let facts = procfs::read_facts(&mut self.buf, &self.proc_dir, pid, path);
        let f = framework::detect(&facts.cmdline, "");
        Known {
            starttime,
            uid: facts.status.and_then(|s| s.uid),
            // An unreadable status leaves stat's counter, which every process has.
            has_rss: facts.status.is_none_or(|s| s.rss_bytes.is_some()),
            cgroup_text: facts.cgroup_text(),
            cmdline: facts.cmdline,
            cgroup: facts.cgroup,
            framework: (f != Framework::Unknown).then_some(f),
            fds: procfs::scan_fds(&self.proc_dir, pid, path),
            fds_scanned_at: self.samples,
            cpu: None,
        }
    }
}

/// The sum of the figures that are known; `None` when neither is.
fn sum_some(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo, plain_fdinfo};
    use crate::gpu::GpuSourceKind;
    use crate::root::HostRoot;

    fn machine(dir: &std::path::Path) -> FakeRoot {
        let root = FakeRoot::new(dir);
        root.meminfo(16 << 20, 8 << 20, 0, 0).unwrap();
        root.card(&FakeCard::apu(100 << 20, 64 << 30, 10 << 30))
            .unwrap();
        let mut gpu = FakeProcess::new(40, "llama-server");
        gpu.fdinfo = vec![
            (3, plain_fdinfo()),
            (7, amdgpu_fdinfo("0000:c3:00.0", 5, "5 MiB", "8 GiB")),
        ];
        root.process(&FakeProcess::new(1, "init")).unwrap();
        root.process(&gpu).unwrap();
        root
    }

    #[test]
    fn same_figures_as_a_full_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        machine(dir.path());
        let host = HostRoot::new(dir.path()).unwrap();
        let mut full = Probe::new(host.clone(), GpuSourceKind::Drm);
        let want = full.snapshot().unwrap();
        let mut s = Sampler::new(Probe::new(host, GpuSourceKind::Drm));
        for _ in 0..3 {
            let mut got = s.sample().unwrap();
            // Rates need two readings, which a full snapshot never has.
            for p in &mut got.snapshot.processes {
                p.cpu_percent = None;
                p.gpu_utilization_percent = None;
            }
            assert_eq!(got.snapshot.processes, want.processes);
            assert_eq!(got.snapshot.gpus, want.gpus);
            assert_eq!(got.snapshot.workloads, want.workloads);
            assert_eq!(got.snapshot.parents().get(&40), Some(&1));
        }
        assert_eq!(s.cached(), 2);
    }

    #[test]
    fn a_reused_pid_is_read_again_and_gone_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let root = machine(dir.path());
        let host = HostRoot::new(dir.path()).unwrap();
        let mut s = Sampler::new(Probe::new(host, GpuSourceKind::Drm));
        s.sample().unwrap();
        // pid 40 exits and a different program gets the same pid.
        std::fs::remove_dir_all(dir.path().join("proc/40")).unwrap();
        let mut other = FakeProcess::new(40, "bash");
        other.starttime = 999_999;
        other.cmdline = vec!["bash".into(), "-l".into()];
        root.process(&other).unwrap();
        let got = s.sample().unwrap();
        let p = got.snapshot.processes.iter().find(|p| p.pid == 40).unwrap();
        assert_eq!(p.cmdline, "bash -l");
        assert!(p.gpu.is_empty());
        std::fs::remove_dir_all(dir.path().join("proc/40")).unwrap();
        s.sample().unwrap();
        assert_eq!(s.cached(), 1);
    }

    #[test]
    fn a_gpu_opened_later_is_found_at_the_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let root = machine(dir.path());
        let host = HostRoot::new(dir.path()).unwrap();
        let mut s = Sampler::new(Probe::new(host, GpuSourceKind::Drm));
        s.set_fd_rescan_every(2);
        s.sample().unwrap();
        let mut init = FakeProcess::new(1, "init");
        init.fdinfo = vec![(9, amdgpu_fdinfo("0000:c3:00.0", 6, "1 MiB", "1 GiB"))];
        root.process(&init).unwrap();
        let gpu_of_1 = |s: &mut Sampler| {
            let got = s.sample().unwrap();
            got.snapshot.processes[0].gpu_gtt_bytes()
        };
        assert_eq!(gpu_of_1(&mut s), 0);
        assert_eq!(gpu_of_1(&mut s), 1 << 30);
    }

    #[test]
    fn cpu_and_gpu_use_between_two_readings() {
        let dir = tempfile::tempdir().unwrap();
        let root = machine(dir.path());
        let host = HostRoot::new(dir.path()).unwrap();
        let mut s = Sampler::new(Probe::new(host, GpuSourceKind::Drm));
        let engines = |gfx_ns: u64| {
            format!(
                "drm-driver:\tamdgpu\ndrm-pdev:\t0000:c3:00.0\ndrm-client-id:\t5\n\
drm-memory-vram:\t5 MiB\ndrm-memory-gtt:\t8 GiB\ndrm-engine-gfx:\t{gfx_ns} ns\n\
drm-engine-compute:\t0 ns\n"
            )
        };
        let mut gpu = FakeProcess::new(40, "llama-server");
        gpu.fdinfo = vec![(7, engines(1_000_000_000))];
        root.process(&gpu).unwrap();
        let t0 = Instant::now();
        let first = s.sample_at(t0).unwrap().snapshot;
        // One reading: no rate of anything, in the JSON too.
        for p in &first.processes {
            assert_eq!((p.cpu_percent, p.gpu_utilization_percent), (None, None));
        }
        let json = serde_json::to_value(&first.processes[0]).unwrap();
        assert!(json["cpu_percent"].is_null() && json["gpu_utilization_percent"].is_null());
        // In the next two seconds it uses one second of CPU and keeps gfx busy half the time.
        let hz = s.ticks_per_s;
        gpu.cpu_ticks = (5 + hz / 2, 3 + hz / 2);
        gpu.fdinfo = vec![(7, engines(2_000_000_000))];
        root.process(&gpu).unwrap();
        let second = s.sample_at(t0 + Duration::from_secs(2)).unwrap().snapshot;
        let p = |pid| second.processes.iter().find(|p| p.pid == pid).unwrap();
        assert_eq!(p(40).cpu_percent, Some(50.0));
        assert_eq!(p(40).gpu_utilization_percent, Some(50.0));
        // Init did nothing: a measured 0, and no GPU client, so no GPU figure at all.
        assert_eq!(p(1).cpu_percent, Some(0.0));
        assert_eq!(p(1).gpu_utilization_percent, None);
    }

    #[test]
    fn cpu_rates() {
        let s = Duration::from_secs(1);
        assert_eq!(cpu_percent(100, 300, s, 100), Some(200.0));
        assert_eq!(cpu_percent(300, 100, s, 100), None);
        assert_eq!(cpu_percent(0, 1, Duration::ZERO, 100), None);
    }
}
