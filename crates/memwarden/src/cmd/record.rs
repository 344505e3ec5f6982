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
}

pub fn run(g: &Global, args: RecordArgs) -> Result<ExitCode> {
    if args.interval.is_zero() {
        bail!("--interval must be more than zero");
    }
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    // A recording runs for long: the sampler reads each process's static facts once and
    // NVML's process lists at most once a second, with the same figures as a full snapshot.
    let mut sampler = Sampler::new(super::probe(g)?);
    let to_stdout = args.out.as_os_str() == "-";
    let mut file: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout())
    } else {
        Box::new(open_for_append(&args.out)?)
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let started = Instant::now();
    let mut written = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let snap = sampler.sample()?.snapshot;
        let mut line = serde_json::to_string(&snap)?;
        line.push('\n');
        // One write of the whole line to a file opened for append: a signal arriving now only
        // sets the flag, so the line is never cut.
        match file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
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

/// The recording file, opened for append. A recording cut off by a crash or a full disk may
/// end in a half line: ours starts on a fresh line so that only that line is lost, and readers
/// skip it.
fn open_for_append(path: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if file.metadata()?.len() > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}
