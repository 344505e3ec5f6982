//! `memwarden record`: one snapshot JSON per line, appended, flushed, never half-written.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use memwarden_probe::incremental::Sampler;
use memwarden_probe::snapshot::{Process, Snapshot, WorkloadKind};

use crate::cli::Global;

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The JSON Lines file to append to (created when missing); `-`: standard output
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Time between snapshots (`1s`, `500ms`, `2m`)
    #[arg(
        long,
        default_value = "1s",
        value_parser = crate::cli::duration_arg,
        allow_hyphen_values = true
    )]
    pub interval: Duration,
    /// Stop after this many snapshots
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "duration",
        allow_negative_numbers = true
    )]
    pub count: Option<u64>,
    /// Stop after this long (`10m`, `1h`)
    #[arg(long, value_parser = crate::cli::duration_arg, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Keep only the N largest processes of each snapshot (by GPU memory, then RSS); default
    /// all. Devices, and workloads other than single processes, are kept whole
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub processes: Option<usize>,
}

/// Keeps the `n` processes holding the most GPU memory, then the most RAM, in their order, and
/// the workloads that are more than one of the dropped processes (containers, services, pods).
pub fn keep_largest(snap: &mut Snapshot, n: usize) {
    if snap.processes.len() <= n {
        return;
    }
    let mut order: Vec<usize> = (0..snap.processes.len()).collect();
    let weight = |p: &Process| {
        (
            p.gpu_vram_bytes() + p.gpu_gtt_bytes(),
            p.rss_bytes.unwrap_or(0),
        )
    };
    order.sort_by(|&a, &b| weight(&snap.processes[b]).cmp(&weight(&snap.processes[a])));
    let mut keep = vec![false; snap.processes.len()];
    for &i in order.iter().take(n) {
        keep[i] = true;
    }
    let mut i = 0;
    snap.processes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let kept: std::collections::HashSet<u32> = snap.processes.iter().map(|p| p.pid).collect();
    snap.workloads
        .retain(|w| w.kind != WorkloadKind::Process || w.pids.iter().any(|p| kept.contains(p)));
}

/// Where the lines go: a file, standard output, or a zstd stream into a file (`.zst`), each
/// line flushed so that a recording cut off loses at most the line being written.
enum Sink {
    Plain(Box<dyn Write>),
    Zstd(zstd::stream::write::Encoder<'static, File>),
}

impl Sink {
    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(line).and_then(|()| w.flush()),
            Sink::Zstd(z) => z.write_all(line).and_then(|()| z.flush()),
        }
    }

    /// Ends the compressed frame, so the file decodes to its end.
    fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::Plain(_) => Ok(()),
            Sink::Zstd(z) => z.finish().and_then(|mut f| f.flush()),
        }
    }
}

/// zstd's default level: fast enough to keep up at any interval, and JSON Lines of snapshots
/// shrink by about ten times.
const ZSTD_LEVEL: i32 = 3;

pub fn run(g: &Global, args: RecordArgs) -> Result<ExitCode> {
    if args.interval.is_zero() {
        bail!("--interval must be more than zero");
    }
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    if args.processes == Some(0) {
        bail!("--processes must be at least 1");
    }
    // A recording runs for long: the sampler reads each process's static facts once and
    // NVML's process lists at most once a second, with the same figures as a full snapshot.
    let mut sampler = Sampler::new(super::probe(g)?);
    let to_stdout = args.out.as_os_str() == "-";
    let compressed = args.out.extension().is_some_and(|e| e == "zst");
    let mut file = if to_stdout {
        Sink::Plain(Box::new(std::io::stdout()))
    } else if compressed {
        let (file, appended) = open_for_append(&args.out, false)?;
        let mut z = zstd::stream::write::Encoder::new(file, ZSTD_LEVEL)?;
        if appended {
            // A new frame after the last run's: start it on a fresh line, as a plain file does.
            z.write_all(b"\n")?;
        }
        Sink::Zstd(z)
    } else {
        Sink::Plain(Box::new(open_for_append(&args.out, true)?.0))
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let started = Instant::now();
    let mut written = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut snap = sampler.sample()?.snapshot;
        if let Some(n) = args.processes {
            keep_largest(&mut snap, n);
        }
        let mut line = serde_json::to_string(&snap)?;
        line.push('\n');
        // One write of the whole line to a file opened for append: a signal arriving now only
        // sets the flag, so the line is never cut.
        match file.line(line.as_bytes()) {
            // A reader of standard output that stopped (`| head`) ends the recording.
            Err(e) if to_stdout && e.kind() == std::io::ErrorKind::BrokenPipe => break,
            r => r.with_context(|| format!("cannot write {}", args.out.display()))?,
        }
        written += 1;
        if args.count.is_some_and(|c| written >= c)
            || args.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        next += args.interval;
        // Sleep in short steps so Ctrl-C stops within 50 ms.
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
        if Instant::now() > next + args.interval {
            // A snapshot took longer than the interval: do not fire a burst to catch up.
            next = Instant::now();
        }
    }
    file.finish()
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "memwarden: recorded {written} snapshot(s) to {}",
        if to_stdout {
            "standard output".into()
        } else {
            args.out.display().to_string()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The recording file, opened for append, and whether it had something in it already. A
/// recording cut off by a crash or a full disk may end in a half line: with `fresh_line`, ours
/// starts on a fresh line so that only that line is lost, and readers skip it.
fn open_for_append(path: &Path, fresh_line: bool) -> Result<(File, bool)> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let appended = file.metadata()?.len() > 0;
    if appended && fresh_line {
        let mut last = [0u8];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok((file, appended))
}
