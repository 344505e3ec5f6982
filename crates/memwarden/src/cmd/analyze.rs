//! `memwarden analyze FILE`: what the memory did over a recording, offline.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use memwarden_analysis::phase::Phase;
use memwarden_analysis::report::{AnalyzeParams, Report, SeriesKind, SeriesReport, analyze};
use memwarden_analysis::segments::SegmentLabel;
use memwarden_analysis::{MIB, RecordingReader};
use memwarden_probe::sanitize::sanitize;
use memwarden_probe::size::format_size;
use memwarden_probe::snapshot::{Process, ProcessId, Snapshot};

use crate::cli::Global;

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A recording: JSON Lines, one snapshot per line (`memwarden record` writes them)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the whole analysis as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Changepoint penalty in MiB² (default: chosen per series from its noise, at least 256)
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub penalty: Option<f64>,
    /// Shortest segment between changepoints, in samples
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        allow_negative_numbers = true
    )]
    pub min_size: usize,
    /// Changepoints only at multiples of N samples
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub jump: usize,
    /// Write the samples as CSV instead of the report (`-`: standard output): one row per
    /// sample per GPU, host, workload and process that held GPU memory. With --json the report
    /// is printed too
    #[arg(long, value_name = "OUT")]
    pub csv: Option<PathBuf>,
}

pub fn run(_g: &Global, args: AnalyzeArgs) -> Result<ExitCode> {
    if let Some(p) = args.penalty
        && !(p.is_finite() && p >= 0.0)
    {
        bail!("--penalty must be a number at least 0, not {p}");
    }
    if args.min_size == 0 {
        bail!("--min-size must be at least 1");
    }
    if args.jump == 0 {
        bail!("--jump must be at least 1");
    }
    let to_stdout = args.csv.as_deref() == Some(Path::new("-"));
    if to_stdout && args.json {
        bail!("--csv - and --json would both write to standard output: give --csv a file");
    }
    let snapshots = read_recording(&args.file)?;
    if let Some(out) = &args.csv {
        let written = if to_stdout {
            write_csv(std::io::stdout().lock(), &snapshots)
        } else {
            File::create(out)
                .map_err(anyhow::Error::from)
                .and_then(|f| write_csv(f, &snapshots))
        };
        match written {
            Err(e) if to_stdout && is_broken_pipe(&e) => return Ok(ExitCode::SUCCESS),
            r => r.with_context(|| format!("cannot write {}", out.display()))?,
        }
        // The CSV was what was asked for; the report only when asked for as well.
        if !args.json {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let params = AnalyzeParams {
        penalty: args.penalty,
        min_size: args.min_size,
        jump: args.jump,
        ..AnalyzeParams::default()
    };
    let report = analyze(&snapshots, &params);
    let text = if args.json {
        let mut t = serde_json::to_string(&report)?;
        t.push('\n');
        t
    } else {
        render(&report, &args.file)
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// A reader that stopped early (`| head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Reads the usable snapshots; bad lines are counted on stderr, and a file with none usable is
/// an error naming the first bad line.
fn read_recording(path: &Path) -> Result<Vec<Snapshot>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rec = RecordingReader::new();
    rec.read_from(BufReader::new(file))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let lines = rec.lines();
    let rec = rec.finish();
    let shown = sanitize(&path.display().to_string(), 200);
    if rec.snapshots.is_empty() {
        match rec.skipped.first() {
            Some(first) => bail!(
                "{shown}: no usable snapshot in {lines} line(s); line {}: {}",
                first.line,
                first.reason
            ),
            None => bail!("{shown}: the recording is empty"),
        }
    }
    if let Some(first) = rec.skipped.first() {
        eprintln!(
            "memwarden: skipped {} of {lines} line(s) in {shown} (first, line {}: {})",
            rec.skipped_count, first.line, first.reason
        );
    }
    Ok(rec.snapshots)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `taken_at_ms,kind,key,name,used_bytes,total_bytes`: GPUs (memory used of total), host RAM,
/// workloads (resident bytes) and processes (their VRAM + GTT), a row per sample each.
///
/// A process's figure is its GPU memory, as in the analysis's process series: the processes
/// that never held any are left out (a machine runs hundreds, and their rows would all be 0),
/// but one that did has a row in every sample it is in, 0 before it loads and after it frees.
fn write_csv(out: impl Write, snapshots: &[Snapshot]) -> Result<()> {
    let gpu_holders: HashSet<ProcessId> = snapshots
        .iter()
        .flat_map(|s| &s.processes)
        .filter(|p| gpu_bytes(p) > 0)
        .map(|p| p.identity())
        .collect();
    let mut w = BufWriter::new(out);
    writeln!(w, "taken_at_ms,kind,key,name,used_bytes,total_bytes")?;
    for s in snapshots {
        let t = s.taken_at_ms;
        for g in &s.gpus {
            if let Some((used, total)) = memwarden_analysis::history::gpu_pool_bytes(g) {
                let total = total.map_or(String::new(), |v| v.to_string());
                let name = csv_field(&sanitize(&g.name, 120));
                writeln!(w, "{t},gpu,gpu:{},{name},{used},{total}", g.index)?;
            }
        }
        let h = &s.host;
        if h.mem_total_bytes > 0 {
            let used = h.mem_total_bytes.saturating_sub(h.mem_available_bytes);
            let name = csv_field(&sanitize(&s.hostname, 120));
            writeln!(w, "{t},host,host:ram,{name},{used},{}", h.mem_total_bytes)?;
        }
        for wl in &s.workloads {
            let key = csv_field(&format!("workload:{}", sanitize(&wl.id, 120)));
            let name = csv_field(&sanitize(&wl.name, 120));
            writeln!(w, "{t},workload,{key},{name},{},", wl.resident_bytes)?;
        }
        for p in &s.processes {
            if !gpu_holders.contains(&p.identity()) {
                continue;
            }
            let bytes = gpu_bytes(p);
            let name = csv_field(&sanitize(&p.name, 120));
            writeln!(
                w,
                "{t},process,process:{}:{},{name},{bytes},",
                p.pid, p.starttime
            )?;
        }
    }
    w.flush()?;
    Ok(())
}

fn gpu_bytes(p: &Process) -> u64 {
    p.gpu_vram_bytes().saturating_add(p.gpu_gtt_bytes())
}

fn size(mib: f64) -> String {
    if !mib.is_finite() || mib <= 0.0 {
        return "0 B".into();
    }
    format_size((mib * MIB).round() as u64)
}

/// A time relative to the recording's start: `+4:05`, `+1:02:03`.
fn rel(ms: u64, start: u64) -> String {
    let s = ms.saturating_sub(start) / 1000;
    if s >= 3600 {
        format!("+{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("+{}:{:02}", s / 60, s % 60)
    }
}

/// Workloads and processes the text view lists, by peak; the rest are counted.
const SHOWN_PER_KIND: usize = 10;
/// Past this many phase spans a series shows the time in each phase instead.
const PHASE_SPANS_SHOWN: usize = 8;
/// The text view lists the last few growth phases' OOM predictions.
const OOM_EVENTS_SHOWN: usize = 3;

fn render(report: &Report, file: &Path) -> String {
    let mut out = String::new();
    let start = report.first_ms.unwrap_or(0);
    let end = report.last_ms.unwrap_or(start);
    let _ = writeln!(
        out,
        "{}: {} snapshot(s) over {}",
        sanitize(&file.display().to_string(), 200),
        report.snapshots,
        rel(end, start).trim_start_matches('+')
    );
    for kind in [
        SeriesKind::Gpu,
        SeriesKind::Host,
        SeriesKind::Workload,
        SeriesKind::Process,
    ] {
        let mut of_kind: Vec<&SeriesReport> =
            report.series.iter().filter(|s| s.kind == kind).collect();
        if matches!(kind, SeriesKind::Workload | SeriesKind::Process) {
            of_kind.sort_by(|a, b| b.peak_mib.total_cmp(&a.peak_mib));
        }
        let hidden = of_kind.len().saturating_sub(SHOWN_PER_KIND);
        let limit = match kind {
            SeriesKind::Gpu | SeriesKind::Host => usize::MAX,
            _ => SHOWN_PER_KIND,
        };
        for s in of_kind.iter().take(limit) {
            render_series(&mut out, s, start);
        }
        if limit != usize::MAX && hidden > 0 {
            let what = if kind == SeriesKind::Workload {
                "workload(s)"
            } else {
                "process(es) with GPU memory"
            };
            let _ = writeln!(out, "\n{hidden} more {what} with lower peaks: see --json");
        }
    }
    out
}

fn render_series(out: &mut String, s: &SeriesReport, start: u64) {
    let total = s
        .total_mib
        .map_or(String::new(), |t| format!(" of {}", size(t)));
    let _ = writeln!(
        out,
        "\n{} [{}]  {} samples  peak {}{} at {}  last {}",
        s.name,
        s.key,
        s.samples,
        size(s.peak_mib),
        total,
        rel(s.peak_at_ms, start),
        size(s.last_mib)
    );
    if s.phases.len() > PHASE_SPANS_SHOWN {
        // A noisy series changes label often: the share of time in each phase reads better.
        let mut by_phase: Vec<(Phase, u64, usize)> = Vec::new();
        for p in &s.phases {
            let d = p.end_ms.saturating_sub(p.start_ms);
            match by_phase.iter_mut().find(|e| e.0 == p.phase) {
                Some(e) => {
                    e.1 += d;
                    e.2 += 1;
                }
                None => by_phase.push((p.phase, d, 1)),
            }
        }
        by_phase.sort_by_key(|e| std::cmp::Reverse(e.1));
        let parts: Vec<String> = by_phase
            .iter()
            .map(|(p, d, k)| {
                format!(
                    "{} {} {} in {k} span(s)",
                    p.symbol(),
                    p.as_str(),
                    rel(*d, 0).trim_start_matches('+')
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  phases    {} changes: {} (every span in --json)",
            s.phases.len() - 1,
            parts.join(" · ")
        );
    } else if !s.phases.is_empty() {
        let spans: Vec<String> = s
            .phases
            .iter()
            .map(|p| {
                // The label agrees with the rate by construction (`Phase::agreeing_with`); a
                // rate is shown where the label claims a direction.
                let rate = if matches!(p.phase, Phase::Growing | Phase::Shrinking) {
                    format!(" {:+.1} MiB/s", p.rate_mib_s)
                } else {
                    String::new()
                };
                format!(
                    "{} {} {}–{}{}",
                    p.phase.symbol(),
                    p.phase.as_str(),
                    rel(p.start_ms, start),
                    rel(p.end_ms, start),
                    rate
                )
            })
            .collect();
        let _ = writeln!(out, "  phases    {}", spans.join(" · "));
    }
    let shown_ooms = s.oom_predictions.len().min(OOM_EVENTS_SHOWN);
    if s.oom_predictions.len() > shown_ooms {
        let _ = writeln!(
            out,
            "  OOM       {} growth phases had a prediction; the last {}:",
            s.oom_predictions.len(),
            shown_ooms
        );
    }
    for e in &s.oom_predictions[s.oom_predictions.len() - shown_ooms..] {
        let _ = writeln!(
            out,
            "  OOM       at {} predicted {} (confidence {:.2}); last at {}: {}",
            rel(e.first_at_ms, start),
            e.first_display,
            e.first.confidence,
            rel(e.last_at_ms, start),
            e.last_display
        );
    }
    if let Some(err) = &s.changepoint_error {
        let _ = writeln!(out, "  changes   none: {err}");
        return;
    }
    // Consecutive pieces with one label read as one stretch (a staircase of growth).
    let mut stretches: Vec<Stretch> = Vec::new();
    for seg in &s.segments {
        match stretches.last_mut() {
            Some(last) if last.label == seg.label => {
                last.to = seg.end_ms;
                last.mean_after = seg.mean_mib;
                last.min = last.min.min(seg.min_mib);
                last.max = last.max.max(seg.max_mib);
                last.pieces += 1;
            }
            _ => stretches.push(Stretch {
                label: seg.label,
                from: seg.start_ms,
                to: seg.end_ms,
                mean_before: seg.mean_mib - seg.step_mib,
                mean_after: seg.mean_mib,
                min: seg.min_mib,
                max: seg.max_mib,
                pieces: 1,
            }),
        }
    }
    let _ = writeln!(
        out,
        "  changes   {} changepoint(s), penalty {:.0} MiB²",
        s.changepoints.len().saturating_sub(1),
        s.penalty
    );
    for st in stretches {
        let pieces = if st.pieces > 1 {
            format!(" ({} pieces)", st.pieces)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {}–{}  {:<16} {}{}",
            rel(st.from, start),
            rel(st.to, start),
            st.label.as_str(),
            st.figures(),
            pieces
        );
    }
}

/// Consecutive pieces of a series with one label.
struct Stretch {
    label: SegmentLabel,
    from: u64,
    to: u64,
    /// The mean of the piece before the stretch (its own, for the first piece).
    mean_before: f64,
    mean_after: f64,
    min: f64,
    max: f64,
    pieces: usize,
}

impl Stretch {
    /// Where the stretch lay (its lowest and highest sample), and the step of its mean where
    /// there was one: a short or noisy piece is not summed up by its mean alone.
    fn figures(&self) -> String {
        let range = format!("{} … {}", size(self.min), size(self.max));
        if size(self.mean_before) == size(self.mean_after) {
            format!("{range}, mean {}", size(self.mean_after))
        } else {
            format!(
                "{range}, mean {} → {}",
                size(self.mean_before),
                size(self.mean_after)
            )
        }
    }
}
