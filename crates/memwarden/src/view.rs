//! Plain-text views for the terminal (the table forms of `snapshot` and friends).

use std::fmt::Write;

use memwarden_probe::size::format_size;
use memwarden_probe::snapshot::{Gpu, Process, Snapshot};

const BAR_WIDTH: usize = 24;

/// A bar of `width` cells, `used` of `total` filled; text only, so it survives NO_COLOR.
pub fn bar(used: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((used as f64 / total as f64) * width as f64).round() as usize
    }
    .min(width);
    format!("[{}{}]", "█".repeat(filled), "░".repeat(width - filled))
}

fn pct(used: u64, total: u64) -> String {
    if total == 0 {
        "  -".into()
    } else {
        format!("{:3.0}%", used as f64 * 100.0 / total as f64)
    }
}

fn opt_size(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), format_size)
}

pub fn render_snapshot(snap: &Snapshot, top: usize) -> String {
    let mut out = String::new();
    let h = &snap.host;
    let used = h.mem_total_bytes.saturating_sub(h.mem_available_bytes);
    let _ = write!(
        out,
        "{host}  RAM {bar} {pct} {used} / {total} used, {avail} available",
        host = if snap.hostname.is_empty() {
            "host"
        } else {
            &snap.hostname
        },
        bar = bar(used, h.mem_total_bytes, BAR_WIDTH),
        pct = pct(used, h.mem_total_bytes),
        used = format_size(used),
        total = format_size(h.mem_total_bytes),
        avail = format_size(h.mem_available_bytes),
    );
    if h.swap_total_bytes > 0 {
        let _ = write!(
            out,
            "  swap {} / {}",
            format_size(h.swap_total_bytes.saturating_sub(h.swap_free_bytes)),
            format_size(h.swap_total_bytes)
        );
    }
    if let Some(p) = h.psi_memory_some_avg10 {
        let _ = write!(out, "  pressure {p:.2}%");
    }
    out.push('\n');
    for gpu in &snap.gpus {
        out.push_str(&gpu_line(gpu));
    }
    if !snap.workloads.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<28} {:<9} {:>10} {:<8} {:>10} {:>10}  TOP PROCESS",
            "WORKLOAD", "KIND", "RESIDENT", "FROM", "GPU VRAM", "GPU GTT"
        );
        let shown = if top == 0 {
            snap.workloads.len()
        } else {
            top.min(snap.workloads.len())
        };
        for w in &snap.workloads[..shown] {
            let lead = snap
                .processes
                .iter()
                .filter(|p| w.pids.contains(&p.pid))
                .max_by_key(|p| {
                    (
                        p.gpu_vram_bytes() + p.gpu_gtt_bytes(),
                        p.rss_bytes.unwrap_or(0),
                    )
                })
                .map(|p| format!("{} {}", p.pid, p.name))
                .unwrap_or_default();
            let more = if w.pids.len() > 1 {
                format!(" (+{})", w.pids.len() - 1)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{:<28} {:<9} {:>10} {:<8} {:>10} {:>10}  {lead}{more}",
                clip(&w.name, 28),
                w.kind.as_str(),
                format_size(w.resident_bytes),
                w.resident_source.as_str(),
                format_size(w.gpu_vram_bytes),
                format_size(w.gpu_gtt_bytes),
            );
        }
        if shown < snap.workloads.len() {
            let _ = writeln!(out, "… {} more workloads", snap.workloads.len() - shown);
        }
    }
    out.push('\n');
    // Kernel threads (no command line, no memory of their own) would only fill the table.
    let mut procs: Vec<&Process> = snap
        .processes
        .iter()
        .filter(|p| !(p.cmdline.is_empty() && p.rss_bytes.is_none() && p.gpu.is_empty()))
        .collect();
    procs.sort_by_key(|p| {
        std::cmp::Reverse((
            p.gpu_vram_bytes() + p.gpu_gtt_bytes(),
            p.rss_bytes.unwrap_or(0),
        ))
    });
    let shown = if top == 0 {
        procs.len()
    } else {
        top.min(procs.len())
    };
    let _ = writeln!(
        out,
        "{:>8} {:>6} {:>10} {:>10} {:>10}  {:<16} COMMAND",
        "PID", "UID", "GPU VRAM", "GPU GTT", "RSS", "NAME"
    );
    for p in &procs[..shown] {
        let gpu = |v: u64, any: bool| if any { format_size(v) } else { "-".into() };
        let _ = writeln!(
            out,
            "{:>8} {:>6} {:>10} {:>10} {:>10}  {:<16} {}",
            p.pid,
            p.uid.map_or_else(|| "?".into(), |u| u.to_string()),
            gpu(
                p.gpu_vram_bytes(),
                p.gpu.iter().any(|g| g.vram_bytes.is_some())
            ),
            gpu(
                p.gpu_gtt_bytes(),
                p.gpu.iter().any(|g| g.gtt_bytes.is_some())
            ),
            opt_size(p.rss_bytes),
            clip(&p.name, 16),
            clip(&p.cmdline, 80)
        );
    }
    if shown < procs.len() {
        let _ = writeln!(
            out,
            "… {} more processes (--top 0 lists all)",
            procs.len() - shown
        );
    }
    for note in &snap.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn gpu_line(gpu: &Gpu) -> String {
    let mut line = format!("GPU {} {} [{}]", gpu.index, clip(&gpu.name, 32), gpu.bus_id);
    let region = |line: &mut String, label: &str, used: Option<u64>, total: Option<u64>| {
        if let (Some(u), Some(t)) = (used, total) {
            let _ = write!(
                line,
                "  {label} {} {} {} / {}",
                bar(u, t, BAR_WIDTH),
                pct(u, t),
                format_size(u),
                format_size(t)
            );
        }
    };
    region(&mut line, "VRAM", gpu.vram_used_bytes, gpu.vram_total_bytes);
    if let Some(r) = gpu.vram_reserved_bytes.filter(|&r| r > 0) {
        let _ = write!(line, " (+{} reserved)", format_size(r));
    }
    region(&mut line, "GTT", gpu.gtt_used_bytes, gpu.gtt_total_bytes);
    if gpu.unified_memory {
        line.push_str("  (unified memory: works from system RAM)");
    }
    if let Some(e) = &gpu.error {
        let _ = write!(line, "  ! {e}");
    }
    line.push('\n');
    line
}

/// Cuts text to `max` characters with a trailing `…`.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars() {
        assert_eq!(bar(5, 10, 4), "[██░░]");
        assert_eq!(bar(5, 0, 2), "[░░]");
        assert_eq!(bar(20, 10, 2), "[██]");
    }

    #[test]
    fn the_drivers_reserve_is_said_beside_vram() {
        let mut g = Gpu {
            index: 0,
            vendor: memwarden_probe::snapshot::Vendor::Nvidia,
            name: "H100".into(),
            bus_id: "0000:01:00.0".into(),
            numa_node: None,
            vram_total_bytes: Some(80 << 30),
            vram_used_bytes: Some(8 << 30),
            vram_reserved_bytes: Some(512 << 20),
            gtt_total_bytes: None,
            gtt_used_bytes: None,
            unified_memory: false,
            error: None,
            figures: Default::default(),
        };
        assert!(gpu_line(&g).contains("8 GiB / 80 GiB (+512 MiB reserved)"));
        g.vram_reserved_bytes = Some(0);
        assert!(!gpu_line(&g).contains("reserved"));
    }

    #[test]
    fn clipping() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
