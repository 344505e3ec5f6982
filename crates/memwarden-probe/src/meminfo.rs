//! Host memory: /proc/meminfo and /proc/pressure/memory.

use crate::ProbeError;
use crate::snapshot::HostMemory;

/// Parses /proc/meminfo. MemTotal and MemAvailable are required (a file without them is not a
/// meminfo); swap lines default to 0 as on a kernel built without swap.
pub fn parse_meminfo(text: &str) -> Result<HostMemory, ProbeError> {
    let mut total = None;
    let mut available = None;
    let mut swap_total = 0;
    let mut swap_free = 0;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "SwapTotal" | "SwapFree" => {
                let v = kib_value(rest).ok_or_else(|| bad(key, rest))?;
                if key == "SwapTotal" {
                    swap_total = v;
                } else {
                    swap_free = v;
                }
                continue;
            }
            _ => continue,
        };
        *slot = Some(kib_value(rest).ok_or_else(|| bad(key, rest))?);
    }
    let missing = |key: &str| ProbeError::Malformed {
        file: "/proc/meminfo".into(),
        why: format!("no {key} line"),
    };
    Ok(HostMemory {
        mem_total_bytes: total.ok_or_else(|| missing("MemTotal"))?,
        mem_available_bytes: available.ok_or_else(|| missing("MemAvailable"))?,
        swap_total_bytes: swap_total,
        swap_free_bytes: swap_free,
        psi_memory_some_avg10: None,
    })
}

fn bad(key: &str, rest: &str) -> ProbeError {
    ProbeError::Malformed {
        file: "/proc/meminfo".into(),
        why: format!(
            "{key} has no size in kB: {:?}",
            crate::sanitize::sanitize(rest.trim(), 40)
        ),
    }
}

/// `   16318424 kB` -> bytes. Also used for per-node meminfo lines.
pub(crate) fn kib_value(rest: &str) -> Option<u64> {
    let mut parts = rest.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` -> the `some` line's avg10.
pub fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let v: f64 = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()?;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "MemTotal:       24575788 kB\nMemFree:        23125144 kB\n\
MemAvailable:   23905096 kB\nBuffers:            4672 kB\nSwapTotal:       2097148 kB\n\
SwapFree:        1048576 kB\nHugePages_Total:       0\n";

    #[test]
    fn reads_the_figures() {
        let m = parse_meminfo(SAMPLE).unwrap();
        assert_eq!(m.mem_total_bytes, 24575788 * 1024);
        assert_eq!(m.mem_available_bytes, 23905096 * 1024);
        assert_eq!(m.swap_total_bytes, 2097148 * 1024);
        assert_eq!(m.swap_free_bytes, 1048576 * 1024);
    }

    #[test]
    fn garbage_is_an_error_naming_the_problem() {
        let e = parse_meminfo("MemTotal: lots\n").unwrap_err().to_string();
        assert!(e.contains("/proc/meminfo") && e.contains("MemTotal"), "{e}");
        let e = parse_meminfo("hello").unwrap_err().to_string();
        assert!(e.contains("no MemTotal"), "{e}");
    }

    #[test]
    fn psi() {
        let t = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_avg10(t), Some(1.5));
        assert_eq!(parse_psi_some_avg10("full avg10=2.0"), None);
        assert_eq!(parse_psi_some_avg10("some avg10=nan"), None);
    }
}
