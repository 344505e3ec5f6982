//! How many workers fit: a fixed part loaded once plus a per-worker part, against the free
//! memory of one pool (host RAM, a GPU's VRAM or GTT). The arithmetic is pure; the live
//! reading of a pool is apart from it.

use std::str::FromStr;

use memwarden_probe::Probe;
use memwarden_probe::cgroup::{CgroupRef, parse_proc_cgroup};
use serde::Serialize;

use crate::PlanError;

/// The fraction of free memory used when none is given: room for the OS and allocation spikes.
pub const DEFAULT_HEADROOM: f64 = 0.7;

/// The question.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitRequest {
    pub available_bytes: u64,
    pub fixed_bytes: u64,
    pub per_worker_bytes: u64,
    pub want: u32,
    /// In (0, 1].
    pub headroom: f64,
}

/// The decision, with every figure that led to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// The worker count to run: at least 1, at most `want`.
    pub threads: u32,
    pub want: u32,
    /// Cut below `want` to fit.
    pub reduced: bool,
    /// Even one worker does not fit: it will swap (or be killed).
    pub swapping: bool,
    pub available_bytes: u64,
    pub budget_bytes: u64,
    pub fixed_bytes: u64,
    pub per_worker_bytes: u64,
    pub headroom: f64,
    /// How many workers the budget holds, before the cap at `want` (0 when swapping; `None`
    /// when a worker costs nothing).
    pub safe: Option<u64>,
    /// What is missing for one worker when swapping, else 0.
    pub shortfall_bytes: u64,
}

/// The seed's arithmetic: budget = available × headroom; safe = ⌊(budget − fixed) / per_worker⌋;
/// threads = min(want, safe), at least 1. A worker that costs nothing keeps `want`, and only
/// `fixed` can overflow.
pub fn compute_fit(req: FitRequest) -> Result<Fit, PlanError> {
    if !(req.headroom > 0.0 && req.headroom <= 1.0) {
        return Err(PlanError::BadArgument(format!(
            "headroom {} is outside (0, 1]",
            req.headroom
        )));
    }
    if req.want == 0 {
        return Err(PlanError::BadArgument(
            "the wanted worker count must be at least 1".into(),
        ));
    }
    // f64 holds any byte count to within 2^-53 relative: far below a byte for real sizes, and
    // flooring keeps the budget on the safe side.
    let budget = ((req.available_bytes as f64) * req.headroom).floor() as u64;
    let budget = budget.min(req.available_bytes);
    let base = Fit {
        threads: req.want,
        want: req.want,
        reduced: false,
        swapping: false,
        available_bytes: req.available_bytes,
        budget_bytes: budget,
        fixed_bytes: req.fixed_bytes,
        per_worker_bytes: req.per_worker_bytes,
        headroom: req.headroom,
        safe: None,
        shortfall_bytes: 0,
    };
    if req.per_worker_bytes == 0 {
        let swapping = req.fixed_bytes > budget;
        return Ok(Fit {
            swapping,
            safe: swapping.then_some(0),
            shortfall_bytes: req.fixed_bytes.saturating_sub(budget),
            ..base
        });
    }
    let safe = budget.saturating_sub(req.fixed_bytes) / req.per_worker_bytes;
    if safe < 1 {
        let need = req.fixed_bytes.saturating_add(req.per_worker_bytes);
        return Ok(Fit {
            threads: 1,
            reduced: req.want > 1,
            swapping: true,
            safe: Some(0),
            shortfall_bytes: need.saturating_sub(budget),
            ..base
        });
    }
    let threads = u64::from(req.want).min(safe) as u32;
    Ok(Fit {
        threads,
        reduced: threads < req.want,
        safe: Some(safe),
        ..base
    })
}

/// Which memory the workers live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Ram,
    Vram(u32),
    Gtt(u32),
}

impl FromStr for Pool {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, gpu) = match s.split_once(':') {
            Some((k, g)) => (
                k,
                Some(g.parse::<u32>().map_err(|_| {
                    PlanError::BadArgument(format!(
                        "pool {:?}: the GPU index must be a number",
                        memwarden_probe::sanitize::sanitize(s, 40)
                    ))
                })?),
            ),
            None => (s, None),
        };
        match (kind, gpu) {
            ("ram", None) => Ok(Pool::Ram),
            ("vram", g) => Ok(Pool::Vram(g.unwrap_or(0))),
            ("gtt", g) => Ok(Pool::Gtt(g.unwrap_or(0))),
            _ => Err(PlanError::BadArgument(format!(
                "unknown pool {:?} (expected ram, vram[:GPU] or gtt[:GPU])",
                memwarden_probe::sanitize::sanitize(s, 40)
            ))),
        }
    }
}

/// A pool's live free memory, and what limited it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolReading {
    pub available_bytes: u64,
    /// Human words: where the figure came from.
    pub source: String,
}

/// Reads the free memory of a pool. RAM is `MemAvailable`, capped by the memory cgroup of the
/// calling process and every ancestor of it that has a limit (limit − usage), so a container
/// with a 4 GiB limit on a large host sees 4 GiB.
pub fn read_pool(probe: &mut Probe, pool: Pool) -> Result<PoolReading, PlanError> {
    match pool {
        Pool::Ram => {
            let host = probe
                .host_memory()
                .map_err(|e| PlanError::Topology(e.to_string()))?;
            let mut reading = PoolReading {
                available_bytes: host.mem_available_bytes,
                source: "MemAvailable".into(),
            };
            if let Some((room, path)) = own_cgroup_room(probe)
                && room < reading.available_bytes
            {
                reading = PoolReading {
                    available_bytes: room,
                    source: format!("memory cgroup {path} (limit − usage)"),
                };
            }
            Ok(reading)
        }
        Pool::Vram(idx) | Pool::Gtt(idx) => {
            let gpu = crate::topology::find_gpu(probe.gpus(), idx)?;
            let (free, what) = match pool {
                Pool::Gtt(_) => (gpu.gtt_free_bytes(), "GTT"),
                _ => (gpu.vram_free_bytes(), "VRAM"),
            };
            let free = free.ok_or_else(|| {
                PlanError::BadArgument(format!(
                    "GPU {idx} ({}) reports no free {what} figure",
                    gpu.name
                ))
            })?;
            Ok(PoolReading {
                available_bytes: free,
                source: format!("GPU {idx} ({}) free {what}", gpu.name),
            })
        }
    }
}

/// The smallest (limit − usage) over the calling process's memory cgroup and its ancestors.
fn own_cgroup_room(probe: &Probe) -> Option<(u64, String)> {
    let text = probe.root().read_to_string("/proc/self/cgroup").ok()?;
    let own = parse_proc_cgroup(&text)?;
    let mut best: Option<(u64, String)> = None;
    let mut path = own.path.trim_end_matches('/').to_string();
    loop {
        let cg = CgroupRef {
            version: own.version,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.clone()
            },
        };
        if let Some(mem) = probe.cgroups().memory(&cg)
            && let Some(limit) = mem.limit_bytes
        {
            let room = limit.saturating_sub(mem.usage_bytes.unwrap_or(0));
            if best.as_ref().is_none_or(|(b, _)| room < *b) {
                best = Some((room, cg.path.clone()));
            }
        }
        match path.rfind('/') {
            Some(i) if !path.is_empty() => path.truncate(i),
            _ => break,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(available: u64, fixed: u64, per: u64, want: u32) -> FitRequest {
        FitRequest {
            available_bytes: available,
            fixed_bytes: fixed,
            per_worker_bytes: per,
            want,
            headroom: 0.5,
        }
    }

    #[test]
    fn the_seeds_cases() {
        let f = compute_fit(req(100, 10, 10, 8)).unwrap();
        assert_eq!(
            (f.threads, f.reduced, f.swapping, f.budget_bytes),
            (4, true, false, 50)
        );
        let f = compute_fit(req(100, 10, 10, 2)).unwrap();
        assert_eq!((f.threads, f.reduced), (2, false));
        let f = compute_fit(req(100, 45, 10, 3)).unwrap();
        assert_eq!((f.threads, f.swapping, f.shortfall_bytes), (1, true, 5));
        let f = compute_fit(req(100, 10, 0, 64)).unwrap();
        assert_eq!((f.threads, f.swapping), (64, false));
        let f = compute_fit(req(100, 60, 0, 64)).unwrap();
        assert_eq!((f.threads, f.swapping, f.shortfall_bytes), (64, true, 10));
    }

    #[test]
    fn bad_requests() {
        assert!(
            compute_fit(FitRequest {
                headroom: 0.0,
                ..req(1, 0, 1, 1)
            })
            .is_err()
        );
        assert!(
            compute_fit(FitRequest {
                headroom: 1.5,
                ..req(1, 0, 1, 1)
            })
            .is_err()
        );
        assert!(
            compute_fit(FitRequest {
                headroom: f64::NAN,
                ..req(1, 0, 1, 1)
            })
            .is_err()
        );
        assert!(compute_fit(req(1, 0, 1, 0)).is_err());
    }

    #[test]
    fn pools() {
        assert_eq!("ram".parse::<Pool>().unwrap(), Pool::Ram);
        assert_eq!("vram".parse::<Pool>().unwrap(), Pool::Vram(0));
        assert_eq!("gtt:2".parse::<Pool>().unwrap(), Pool::Gtt(2));
        assert!("ram:1".parse::<Pool>().is_err());
        assert!("vram:x".parse::<Pool>().is_err());
        assert!("disk".parse::<Pool>().is_err());
    }
}
