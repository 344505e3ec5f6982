//! `memwarden run --consumer C -- CMD…`: runs a command under a broker lease, so a batch job
//! or a training script takes its turn on the GPU like the servers do.

use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use memwarden_broker::client::BrokerClient;

use crate::cli::Global;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The consumer (from the broker's configuration) the command runs as
    #[arg(long, value_name = "NAME")]
    pub consumer: String,
    /// The broker's URL
    #[arg(
        long,
        default_value = "http://127.0.0.1:7077",
        env = "MEMWARDEN_BROKER",
        value_name = "URL"
    )]
    pub broker: String,
    /// The broker's bearer token
    #[arg(
        long,
        env = "MEMWARDEN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Longest the lease may be held; the broker takes it back after this
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(_g: &Global, args: RunArgs) -> Result<ExitCode> {
    let Some((prog, rest)) = args.command.split_first() else {
        bail!("no command given after --");
    };
    let client = BrokerClient::new(&args.broker, args.token.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let id = rt.block_on(client.take_lease(&args.consumer, args.ttl))?;
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
    let back = rt.block_on(client.give_back(&id));
    let status = status.with_context(|| format!("cannot run {prog:?}"))?;
    back?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(c.clamp(0, 255) as u8),
        // Killed by a signal: the shell's convention.
        None => {
            use std::os::unix::process::ExitStatusExt;
            ExitCode::from(128u8.saturating_add(status.signal().unwrap_or(0) as u8))
        }
    })
}
