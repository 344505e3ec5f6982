//! DRM client usage stats in /proc/PID/fdinfo/FD (the kernel's drm-usage-stats document).

/// One DRM client as an fdinfo file describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrmClient {
    pub driver: String,
    /// PCI address of the device, `0000:c3:00.0`.
    pub pdev: Option<String>,
    pub client_id: Option<u64>,
    /// Resident bytes in device-local memory (amdgpu `vram`, xe `vram0`, i915 `local0`).
    pub vram_bytes: Option<u64>,
    /// Resident bytes in system memory mapped for the GPU (amdgpu/xe `gtt`, i915 `system0`).
    pub gtt_bytes: Option<u64>,
    /// The busy counters of its engines (`drm-engine-*`, or xe's `drm-cycles-*`): a share of
    /// time only between two readings.
    pub engines: Vec<DrmEngine>,
}

/// One engine class's counter of a DRM client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrmEngine {
    pub name: String,
    /// Busy nanoseconds (`drm-engine-NAME`), or busy cycles (`drm-cycles-NAME`).
    pub busy: u64,
    /// For cycles, the cycles that passed (`drm-total-cycles-NAME`); `None` for nanoseconds,
    /// which are set against the wall-clock time between readings.
    pub total: Option<u64>,
    /// Engines of this class (`drm-engine-capacity-NAME`, 1 when not given).
    pub capacity: u32,
}

/// A driver prints a handful of engine classes; more is a hostile or broken file.
const MAX_ENGINES: usize = 16;

/// How busy a client kept its busiest engine between two readings `elapsed_ns` apart, in
/// percent of that engine class's capacity; `None` when no engine is in both readings or a
/// counter went backwards (the client was replaced).
pub fn busy_percent(prev: &[DrmEngine], cur: &[DrmEngine], elapsed_ns: u64) -> Option<f64> {
    let mut best: Option<f64> = None;
    for c in cur {
        let Some(p) = prev.iter().find(|p| p.name == c.name) else {
            continue;
        };
        let busy = c.busy.checked_sub(p.busy)?;
        let span = match (c.total, p.total) {
            (Some(ct), Some(pt)) => ct.checked_sub(pt)?,
            (None, None) => elapsed_ns,
            _ => continue,
        };
        if span == 0 {
            continue;
        }
        let share = busy as f64 / (span as f64 * f64::from(c.capacity.max(1))) * 100.0;
        best = Some(best.map_or(share, |b: f64| b.max(share)));
    }
    best.map(|b| b.clamp(0.0, 100.0))
}

/// Records one engine counter line into `engines`.
fn engine_line(engines: &mut Vec<DrmEngine>, key: &str, value: &str) -> bool {
    enum Field {
        Busy,
        Total,
        Capacity,
    }
    let (field, name) = if let Some(n) = key.strip_prefix("drm-engine-capacity-") {
        (Field::Capacity, n)
    } else if let Some(n) = key.strip_prefix("drm-engine-") {
        (Field::Busy, n)
    } else if let Some(n) = key.strip_prefix("drm-total-cycles-") {
        (Field::Total, n)
    } else if let Some(n) = key.strip_prefix("drm-cycles-") {
        (Field::Busy, n)
    } else {
        return false;
    };
    let Some(n) = value
        .split_ascii_whitespace()
        .next()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return true;
    };
    let i = match engines.iter().position(|e| e.name == name) {
        Some(i) => i,
        None if engines.len() < MAX_ENGINES => {
            engines.push(DrmEngine {
                name: crate::sanitize::sanitize(name, 24),
                busy: 0,
                total: None,
                capacity: 1,
            });
            engines.len() - 1
        }
        None => return true,
    };
    let e = &mut engines[i];
    match field {
        Field::Busy => e.busy = n,
        Field::Total => e.total = Some(n),
        Field::Capacity => e.capacity = u32::try_from(n).unwrap_or(u32::MAX).max(1),
    }
    true
}

/// Which of our two figures a driver's region name belongs to.
fn region_kind(region: &str) -> Option<bool> {
    match region {
        "vram" | "local0" => Some(true),
        r if r.starts_with("vram") => Some(true),
        "gtt" | "system0" => Some(false),
        _ => None,
    }
}

/// Parses an fdinfo file; `None` when it is not a DRM client (no `drm-driver` key).
pub fn parse_drm_fdinfo(buf: &[u8]) -> Option<DrmClient> {
    // Most fds are not DRM: skip the parse unless the key is there at all.
    if !contains(buf, b"drm-driver:") {
        return None;
    }
    let text = std::str::from_utf8(buf).ok()?;
    let mut client = DrmClient::default();
    let mut have_driver = false;
    // `drm-resident-*` is the current name and `drm-memory-*` the deprecated one of the same
    // figure; when a driver prints both, the current one wins.
    let mut legacy: [Option<u64>; 2] = [None, None];
    let mut current: [Option<u64>; 2] = [None, None];
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "drm-driver" => {
                client.driver = crate::sanitize::sanitize(value, 32);
                have_driver = true;
            }
            "drm-pdev" => client.pdev = Some(crate::sanitize::sanitize(value, 32)),
            "drm-client-id" => client.client_id = value.parse().ok(),
            _ if engine_line(&mut client.engines, key, value) => {}
            _ => {
                let (slots, region) = if let Some(r) = key.strip_prefix("drm-resident-") {
                    (&mut current, r)
                } else if let Some(r) = key.strip_prefix("drm-memory-") {
                    (&mut legacy, r)
                } else {
                    continue;
                };
                if let (Some(is_vram), Some(bytes)) = (region_kind(region), parse_amount(value)) {
                    let slot = &mut slots[usize::from(!is_vram)];
                    *slot = Some(slot.unwrap_or(0).saturating_add(bytes));
                }
            }
        }
    }
    if !have_driver {
        return None;
    }
    client.vram_bytes = current[0].or(legacy[0]);
    client.gtt_bytes = current[1].or(legacy[1]);
    Some(client)
}

/// The DRM clients of one scan. Several fds (and, after a fork, several processes) can share
/// one DRM file: each `(drm-pdev, drm-client-id)` is counted once, for the first process seen
/// to hold it (scans go in pid order, so the parent).
#[derive(Debug, Default)]
pub struct DrmClients {
    seen: std::collections::HashSet<(Option<String>, u64)>,
    pub list: Vec<(u32, DrmClient)>,
}

impl DrmClients {
    /// Adds the client an fdinfo file describes, unless it is not DRM or already counted.
    pub fn add_fdinfo(&mut self, pid: u32, buf: &[u8]) {
        let Some(client) = parse_drm_fdinfo(buf) else {
            return;
        };
        if let Some(id) = client.client_id
            && !self.seen.insert((client.pdev.clone(), id))
        {
            return;
        }
        self.list.push((pid, client));
    }
}

/// `123`, `4 KiB`, `5 MiB`, `6 GiB` -> bytes.
pub fn parse_amount(value: &str) -> Option<u64> {
    let mut parts = value.split_ascii_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let shift = match parts.next() {
        None => 0,
        Some("KiB") => 10,
        Some("MiB") => 20,
        Some("GiB") => 30,
        Some(_) => return None,
    };
    n.checked_mul(1 << shift)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amdgpu_legacy_keys() {
        let t = b"pos:\t0\nflags:\t02100002\nmnt_id:\t24\ndrm-driver:\tamdgpu\n\
drm-pdev:\t0000:c3:00.0\ndrm-client-id:\t17\ndrm-memory-vram:\t5120 KiB\n\
drm-memory-gtt:\t24 MiB\ndrm-memory-cpu:\t0 KiB\ndrm-engine-gfx:\t1000 ns\n";
        let c = parse_drm_fdinfo(t).unwrap();
        assert_eq!(c.driver, "amdgpu");
        assert_eq!(c.pdev.as_deref(), Some("0000:c3:00.0"));
        assert_eq!(c.client_id, Some(17));
        assert_eq!(c.vram_bytes, Some(5 << 20));
        assert_eq!(c.gtt_bytes, Some(24 << 20));
        assert_eq!(c.engines.len(), 1);
        assert_eq!(
            (c.engines[0].name.as_str(), c.engines[0].busy),
            ("gfx", 1000)
        );
    }

    fn engine(name: &str, busy: u64, total: Option<u64>, capacity: u32) -> DrmEngine {
        DrmEngine {
            name: name.into(),
            busy,
            total,
            capacity,
        }
    }

    #[test]
    fn engine_counters_of_each_driver() {
        let i915 = b"drm-driver: i915\ndrm-engine-render: 500 ns\ndrm-engine-capacity-video: 2\n\
drm-engine-video: 7 ns\n";
        let c = parse_drm_fdinfo(i915).unwrap();
        assert_eq!(
            c.engines,
            [engine("render", 500, None, 1), engine("video", 7, None, 2)]
        );
        let xe = b"drm-driver: xe\ndrm-cycles-rcs: 30\ndrm-total-cycles-rcs: 100\n";
        let c = parse_drm_fdinfo(xe).unwrap();
        assert_eq!(c.engines, [engine("rcs", 30, Some(100), 1)]);
    }

    #[test]
    fn busy_share_between_two_readings() {
        let second = 1_000_000_000;
        // gfx busy a quarter of the second, compute half: the busiest engine counts.
        let a = [engine("gfx", 0, None, 1), engine("compute", 0, None, 1)];
        let b = [
            engine("gfx", second / 4, None, 1),
            engine("compute", second / 2, None, 1),
        ];
        assert_eq!(busy_percent(&a, &b, second), Some(50.0));
        // Two video engines, one busy the whole time: half the class.
        let a = [engine("video", 0, None, 2)];
        let b = [engine("video", second, None, 2)];
        assert_eq!(busy_percent(&a, &b, second), Some(50.0));
        // Cycles against total cycles, whatever the wall clock says.
        let a = [engine("rcs", 100, Some(1000), 1)];
        let b = [engine("rcs", 400, Some(2000), 1)];
        assert_eq!(busy_percent(&a, &b, 1), Some(30.0));
        // A counter that went back is another client; nothing in common, no figure.
        assert_eq!(busy_percent(&b, &a, second), None);
        assert_eq!(busy_percent(&[], &b, second), None);
        // Never above 100 % however the clocks disagree.
        let b = [engine("gfx", 3 * second, None, 1)];
        assert_eq!(
            busy_percent(&[engine("gfx", 0, None, 1)], &b, second),
            Some(100.0)
        );
    }

    #[test]
    fn resident_wins_over_memory() {
        let t = b"drm-driver: amdgpu\ndrm-memory-vram: 1 MiB\ndrm-resident-vram: 2 MiB\n";
        assert_eq!(parse_drm_fdinfo(t).unwrap().vram_bytes, Some(2 << 20));
    }

    #[test]
    fn xe_and_i915_regions_and_bare_bytes() {
        let xe = b"drm-driver: xe\ndrm-resident-vram0: 4096\ndrm-resident-gtt: 8192\n";
        let c = parse_drm_fdinfo(xe).unwrap();
        assert_eq!((c.vram_bytes, c.gtt_bytes), (Some(4096), Some(8192)));
        let i915 = b"drm-driver: i915\ndrm-resident-local0: 1 KiB\ndrm-resident-system0: 2 KiB\n";
        let c = parse_drm_fdinfo(i915).unwrap();
        assert_eq!((c.vram_bytes, c.gtt_bytes), (Some(1024), Some(2048)));
    }

    #[test]
    fn not_drm() {
        assert_eq!(parse_drm_fdinfo(b"pos:\t0\nflags:\t02\nmnt_id:\t1\n"), None);
        assert_eq!(parse_amount("3 PiB"), None);
    }
}
