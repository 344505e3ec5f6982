//! `memwarden run --consumer C -- CMD…`: runs a command under a broker lease, so a batch job
//! or a training script takes its turn on the GPU like the servers do.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use memwarden_broker::client::{BrokerClient, RenewError};
use memwarden_probe::sanitize::sanitize;

use crate::cli::Global;
use crate::cmd::ctl::BrokerArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The consumer (from the broker's configuration) the command runs as
    #[arg(long, value_name = "NAME")]
    pub consumer: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Longest the lease may be held; the broker takes it back after this
    #[arg(
        long,
        default_value = "24h",
        value_parser = positive_duration,
        allow_hyphen_values = true
    )]
    pub ttl: Duration,
    /// The lease is taken for this long at a time and renewed every third of it, so a killed
    /// `memwarden run` gives the consumer back within this
    #[arg(
        long,
        default_value = "60s",
        value_parser = positive_duration,
        allow_hyphen_values = true
    )]
    pub heartbeat: Duration,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(_g: &Global, args: RunArgs) -> Result<ExitCode> {
    let Some((prog, rest)) = args.command.split_first() else {
        bail!("no command given after --");
    };
    let client = args.broker.client()?;
    // One worker: the lease is renewed there while this thread waits for the command.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let lease_ttl = args.ttl.min(args.heartbeat);
    let id = rt.block_on(client.take_lease(&args.consumer, lease_ttl))?;
    let keeper = rt.spawn(keep_alive(
        client.clone(),
        id.clone(),
        lease_ttl,
        Instant::now() + args.ttl,
        args.ttl,
    ));
    // From here the lease is given back whatever the command does. Ctrl-C reaches the
    // command through the terminal's process group (so SIGINT is only kept from ending us); a
    // SIGTERM sent to us is passed on to it. Either way we wait for it to end.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGINT,
        std::sync::Arc::clone(&interrupted),
    );
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _ = signal_hook::flag::register_usize(
        signal_hook::consts::SIGTERM,
        std::sync::Arc::clone(&signalled),
        signal_hook::consts::SIGTERM as usize,
    );
    let status = Command::new(prog).args(rest).spawn().and_then(|mut child| {
        let mut passed_on = false;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            let sig = signalled.load(std::sync::atomic::Ordering::Relaxed);
            if sig != 0 && !passed_on {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as i32, sig as i32) };
                passed_on = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    keeper.abort();
    let back = rt.block_on(client.give_back(&id));
    // The command's own exit status is what a job script acts on: a broker that cannot be
    // reached now takes the lease back at its ttl anyway.
    if let Err(e) = back {
        eprintln!("memwarden: warning: {e}; the broker takes the lease back within --heartbeat");
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("memwarden: cannot run {:?}: {e}", sanitize(prog, 200));
            return Ok(ExitCode::from(spawn_failure_code(e.kind())));
        }
    };
    Ok(match status.code() {
        Some(c) => ExitCode::from(c.clamp(0, 255) as u8),
        // Killed by a signal: the shell's convention.
        None => {
            use std::os::unix::process::ExitStatusExt;
            ExitCode::from(128u8.saturating_add(status.signal().unwrap_or(0) as u8))
        }
    })
}

/// The shell's codes for a command that did not start, which scripts already test for:
/// 127 not found, 126 found but not executable.
fn spawn_failure_code(kind: std::io::ErrorKind) -> u8 {
    if kind == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match crate::cli::duration_arg(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// Renews the lease every third of its ttl until `limit` (`--ttl`, reached at `deadline`), so
/// that it outlives neither the command nor `--ttl`. A failure is said once and the command
/// runs on: stopping someone's job because the broker blinked would be worse.
async fn keep_alive(
    client: BrokerClient,
    id: String,
    lease_ttl: Duration,
    deadline: Instant,
    limit: Duration,
) {
    let every = lease_ttl / 3;
    let mut warned = false;
    loop {
        tokio::time::sleep(every.min(left(deadline))).await;
        let left = left(deadline);
        if left.is_zero() {
            eprintln!(
                "memwarden: warning: --ttl ({}) has passed: the lease is no longer renewed and the broker takes it back",
                humantime::format_duration(limit)
            );
            return;
        }
        // The last renewals are cut short so the lease ends at --ttl, not after it.
        match client.renew_lease(&id, Some(lease_ttl.min(left))).await {
            Ok(_) => {}
            Err(e @ RenewError::Gone(_)) => {
                eprintln!("memwarden: warning: {e}; the command runs on without it");
                return;
            }
            Err(e) if !warned => {
                eprintln!("memwarden: warning: cannot renew the lease: {e}; the command runs on");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
