//! Bounded history of the machine, fed one snapshot at a time.
//!
//! One series per GPU (memory used), one for host RAM (used = total − available), one per
//! process identity `(pid, starttime)` (its GPU memory, VRAM + GTT over all devices) and one per
//! workload (resident bytes). Each carries its phase and, for pools (GPUs and RAM), the OOM
//! prediction. A series whose owner is missing from a snapshot is dropped: a pid that comes back
//! with another starttime is another process and starts from nothing.

use std::collections::{BTreeMap, HashMap};

use memwarden_probe::snapshot::{Gpu, ProcessId, Snapshot};

use crate::oom::{OomConfig, OomPrediction, OomPredictor};
use crate::phase::{Phase, PhaseConfig, PhaseDetector, PhaseState};
use crate::series::{Sample, Series};
use crate::survival::{Framework, Survival, SurvivalConfig, SurvivalInput, assess_gpu};
use crate::{MIB, mib};

/// Which series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    /// A GPU's memory in use, by index.
    Gpu(u32),
    /// Host RAM in use.
    HostRam,
    /// A process's GPU memory.
    Process(ProcessId),
    /// A workload's resident bytes, by workload id.
    Workload(String),
}

#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Samples kept per GPU and for host RAM (3600: an hour at 1 s).
    pub capacity: usize,
    /// Samples kept per process and per workload (900: a quarter of an hour at 1 s), at most
    /// `capacity`: there may be hundreds of them, and 16 bytes a sample adds up.
    pub entity_capacity: usize,
    pub phase: PhaseConfig,
    /// Phases of host RAM: the kernel's caches move it by many MiB a second without meaning
    /// anything, so its noise floor is higher ([`PhaseConfig::host_ram`]).
    pub host_phase: PhaseConfig,
    pub oom: OomConfig,
    pub survival: SurvivalConfig,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            capacity: 3600,
            entity_capacity: 900,
            phase: PhaseConfig::default(),
            host_phase: PhaseConfig::host_ram(),
            oom: OomConfig::default(),
            survival: SurvivalConfig::default(),
        }
    }
}

/// One series with its running analysis.
#[derive(Debug, Clone)]
pub struct Track {
    pub series: Series,
    detector: PhaseDetector,
    /// The phase after the last sample.
    pub phase: PhaseState,
    /// For pools (GPUs, RAM): the pool's size in MiB at the last sample.
    pub total_mib: Option<f64>,
    /// For pools: the OOM prediction after the last sample, when there is one.
    pub oom: Option<OomPrediction>,
}

impl Track {
    /// The phase to show beside the rate shown (`phase.rate_mib_s`), agreeing with it.
    pub fn shown_phase(&self) -> Phase {
        (self.phase.phase).agreeing_with(
            self.phase.rate_mib_s,
            self.detector.config().noise_floor_mib_s,
        )
    }

    fn new(cfg: &HistoryConfig) -> Track {
        Track::with_capacity(cfg, cfg.capacity)
    }

    fn for_entity(cfg: &HistoryConfig) -> Track {
        Track::with_capacity(cfg, cfg.entity_capacity.min(cfg.capacity))
    }

    fn for_host(cfg: &HistoryConfig) -> Track {
        let mut t = Track::new(cfg);
        t.detector = PhaseDetector::new(cfg.host_phase.clone());
        t.phase = t.detector.state();
        t
    }

    fn with_capacity(cfg: &HistoryConfig, capacity: usize) -> Track {
        let detector = PhaseDetector::new(cfg.phase.clone());
        Track {
            series: Series::with_capacity(capacity),
            phase: detector.state(),
            detector,
            total_mib: None,
            oom: None,
        }
    }

    fn push(&mut self, t_ms: u64, value_mib: f64) {
        let s = Sample {
            t_ms,
            mib: value_mib,
        };
        if self.series.push(s) {
            self.phase = self.detector.update(s);
        }
    }

    /// The last value in MiB.
    pub fn last_mib(&self) -> Option<f64> {
        self.series.last().map(|s| s.mib)
    }
}

/// What is kept per process besides its track.
#[derive(Debug, Clone)]
pub struct ProcessTrack {
    pub track: Track,
    pub name: String,
    /// GPU memory (VRAM + GTT) per device at the last snapshot, bytes.
    pub gpu_bytes: BTreeMap<u32, u64>,
    /// Highest GPU memory per device seen for this identity, bytes.
    pub peak_bytes: BTreeMap<u32, u64>,
    /// The framework the last snapshot recorded for it (`Unknown` when none).
    pub framework: Framework,
}

/// A process's verdict on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessVerdict {
    pub id: ProcessId,
    pub gpu_index: u32,
    pub survival: Survival,
}

/// The history of one machine.
#[derive(Debug, Clone)]
pub struct History {
    config: HistoryConfig,
    gpus: BTreeMap<u32, Track>,
    gpu_figures: BTreeMap<u32, (u64, u64)>,
    host: Track,
    processes: HashMap<ProcessId, ProcessTrack>,
    workloads: BTreeMap<String, Track>,
    last_ms: Option<u64>,
}

/// A GPU's pool as series value and size, bytes: VRAM, plus GTT on a device that works out of
/// system RAM (there GTT is where the model lives). `None` when the use is unknown. What the
/// driver reserves counts as used: it is not there to run out into.
pub fn gpu_pool_bytes(g: &Gpu) -> Option<(u64, Option<u64>)> {
    let used = g
        .vram_used_bytes?
        .saturating_add(g.vram_reserved_bytes.unwrap_or(0));
    if g.unified_memory {
        let used = used.saturating_add(g.gtt_used_bytes.unwrap_or(0));
        let total = match (g.vram_total_bytes, g.gtt_total_bytes) {
            (Some(v), Some(t)) => Some(v.saturating_add(t)),
            _ => None,
        };
        Some((used, total))
    } else {
        Some((used, g.vram_total_bytes))
    }
}

impl History {
    pub fn new(config: HistoryConfig) -> History {
        let host = Track::for_host(&config);
        History {
            config,
            gpus: BTreeMap::new(),
            gpu_figures: BTreeMap::new(),
            host,
            processes: HashMap::new(),
            workloads: BTreeMap::new(),
            last_ms: None,
        }
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Feeds one snapshot. A snapshot older than the previous one starts the history afresh
    /// (a replay that looped, another recording); one with the same time is ignored.
    pub fn observe(&mut self, snap: &Snapshot) {
        let t = snap.taken_at_ms;
        match self.last_ms {
            Some(last) if t < last => self.clear(),
            Some(last) if t == last => return,
            _ => {}
        }
        self.last_ms = Some(t);
        let predictor = OomPredictor::new(self.config.oom.clone());

        // GPUs.
        let mut seen = Vec::new();
        for g in &snap.gpus {
            let Some((used, total)) = gpu_pool_bytes(g) else {
                continue;
            };
            seen.push(g.index);
            let tr = self
                .gpus
                .entry(g.index)
                .or_insert_with(|| Track::new(&self.config));
            tr.push(t, mib(used));
            tr.total_mib = total.map(mib);
            tr.oom =
                total.and_then(|tot| predictor.predict(&tr.phase, mib(tot.saturating_sub(used))));
            self.gpu_figures.insert(
                g.index,
                (
                    total.unwrap_or(0),
                    total.map_or(0, |t| t.saturating_sub(used)),
                ),
            );
        }
        self.gpus.retain(|k, _| seen.contains(k));
        self.gpu_figures.retain(|k, _| seen.contains(k));

        // Host RAM.
        let h = &snap.host;
        if h.mem_total_bytes > 0 {
            let used = h.mem_total_bytes.saturating_sub(h.mem_available_bytes);
            self.host.push(t, mib(used));
            self.host.total_mib = Some(mib(h.mem_total_bytes));
            self.host.oom = predictor.predict(&self.host.phase, mib(h.mem_available_bytes));
        }

        // Processes with GPU memory.
        let mut alive = std::collections::HashSet::new();
        for p in &snap.processes {
            let mut per_gpu: BTreeMap<u32, u64> = BTreeMap::new();
            for g in &p.gpu {
                let b = g
                    .vram_bytes
                    .unwrap_or(0)
                    .saturating_add(g.gtt_bytes.unwrap_or(0));
                *per_gpu.entry(g.gpu_index).or_default() += b;
            }
            let total: u64 = per_gpu.values().sum();
            let id = p.identity();
            if total == 0 && !self.processes.contains_key(&id) {
                continue;
            }
            alive.insert(id);
            let cfg = &self.config;
            let pt = self.processes.entry(id).or_insert_with(|| ProcessTrack {
                track: Track::for_entity(cfg),
                name: p.name.clone(),
                gpu_bytes: BTreeMap::new(),
                peak_bytes: BTreeMap::new(),
                framework: Framework::Unknown,
            });
            pt.track.push(t, total as f64 / MIB);
            for (&gi, &b) in &per_gpu {
                let peak = pt.peak_bytes.entry(gi).or_default();
                *peak = (*peak).max(b);
            }
            pt.gpu_bytes = per_gpu;
            pt.name.clone_from(&p.name);
            if let Some(f) = p.framework {
                pt.framework = f.into();
            }
        }
        self.processes.retain(|id, _| alive.contains(id));

        // Workloads.
        let mut seen_w = std::collections::HashSet::new();
        for w in &snap.workloads {
            seen_w.insert(w.id.as_str());
            let tr = self
                .workloads
                .entry(w.id.clone())
                .or_insert_with(|| Track::for_entity(&self.config));
            tr.push(t, mib(w.resident_bytes));
        }
        self.workloads.retain(|k, _| seen_w.contains(k.as_str()));
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = History::new(self.config.clone());
    }

    /// When the last snapshot was taken.
    pub fn last_ms(&self) -> Option<u64> {
        self.last_ms
    }

    pub fn gpu(&self, index: u32) -> Option<&Track> {
        self.gpus.get(&index)
    }

    pub fn gpus(&self) -> impl Iterator<Item = (u32, &Track)> {
        self.gpus.iter().map(|(&k, v)| (k, v))
    }

    pub fn host(&self) -> &Track {
        &self.host
    }

    pub fn process(&self, id: ProcessId) -> Option<&ProcessTrack> {
        self.processes.get(&id)
    }

    /// Processes with GPU memory, in no particular order.
    pub fn processes(&self) -> impl Iterator<Item = (ProcessId, &ProcessTrack)> {
        self.processes.iter().map(|(&k, v)| (k, v))
    }

    pub fn workload(&self, id: &str) -> Option<&Track> {
        self.workloads.get(id)
    }

    pub fn workloads(&self) -> impl Iterator<Item = (&str, &Track)> {
        self.workloads.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Any series by key.
    pub fn track(&self, key: &SeriesKey) -> Option<&Track> {
        match key {
            SeriesKey::Gpu(i) => self.gpu(*i),
            SeriesKey::HostRam => Some(&self.host),
            SeriesKey::Process(id) => self.process(*id).map(|p| &p.track),
            SeriesKey::Workload(id) => self.workload(id),
        }
    }

    /// Survival verdicts of every process on every GPU it uses, collective pressure included.
    /// `framework` may name a process's framework; where it returns `Framework::Unknown`, the
    /// framework the snapshot recorded is used.
    pub fn verdicts(&self, framework: impl Fn(ProcessId) -> Framework) -> Vec<ProcessVerdict> {
        let mut out = Vec::new();
        for (&gi, &(total, free)) in &self.gpu_figures {
            let mut ids: Vec<ProcessId> = self
                .processes
                .iter()
                .filter(|(_, p)| p.gpu_bytes.get(&gi).is_some_and(|&b| b > 0))
                .map(|(&id, _)| id)
                .collect();
            ids.sort();
            let inputs: Vec<SurvivalInput> = ids
                .iter()
                .map(|id| {
                    let p = &self.processes[id];
                    SurvivalInput {
                        used_bytes: p.gpu_bytes[&gi],
                        peak_bytes: p.peak_bytes.get(&gi).copied().unwrap_or(0),
                        phase: p.track.phase.phase,
                        framework: match framework(*id) {
                            Framework::Unknown => p.framework.clone(),
                            f => f,
                        },
                        model_bytes: None,
                    }
                })
                .collect();
            let verdicts = assess_gpu(&inputs, total, free, &self.config.survival);
            for (id, survival) in ids.into_iter().zip(verdicts) {
                out.push(ProcessVerdict {
                    id,
                    gpu_index: gi,
                    survival,
                });
            }
        }
        out
    }
}

impl Default for History {
    fn default() -> Self {
        History::new(HistoryConfig::default())
    }
}
