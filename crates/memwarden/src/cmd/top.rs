//! `memwarden top`: the live view, or a recording played back.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use memwarden_probe::incremental::Sampler;
use memwarden_probe::sanitize::sanitize;
use memwarden_tui::broker::BrokerSource;
use memwarden_tui::config::Config;
use memwarden_tui::replay::{Player, Recording};
use memwarden_tui::run::{Options, Overrides, Source};
use memwarden_tui::theme::{ThemeName, no_color_env};
use serde_json::Value;

use super::ctl::BrokerArgs;
use crate::cli::Global;

#[derive(Debug, Args)]
#[command(mut_arg("broker", |a| a.help(
    "A memwarden broker to show beside the machine (default: the local one, when it answers)"
)))]
pub struct TopArgs {
    /// Time between samples (`1s`, `500ms`); NVML's process lists are read at most once a
    /// second whatever the interval
    #[arg(long, value_parser = crate::cli::duration_arg, allow_hyphen_values = true)]
    pub interval: Option<Duration>,
    /// Play a recording (JSON Lines from `memwarden record`) instead of reading the machine
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Replay speed: 1 plays at the recorded pace, 10 ten times faster
    #[arg(
        long,
        default_value_t = 1.0,
        requires = "replay",
        allow_negative_numbers = true
    )]
    pub speed: f64,
    /// Start paused at the first sample (replay)
    #[arg(long, requires = "replay")]
    pub paused: bool,
    /// Colour theme: dark, light or mono
    #[arg(long, value_name = "NAME")]
    pub theme: Option<String>,
    /// No colour at all (also when NO_COLOR is set)
    #[arg(long)]
    pub no_color: bool,
    /// Remove the kill key (shared servers)
    #[arg(long)]
    pub no_kill: bool,
    /// The config file (default: $XDG_CONFIG_HOME/memwarden/config.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    // `--broker` and `--token`, as the broker commands take them; with no `--broker` the local
    // default is shown only when it answers.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Do not ask any broker
    #[arg(long, conflicts_with = "broker")]
    pub no_broker: bool,
}

/// How long the view waits for the broker's answer before calling it absent this time.
const BROKER_TIMEOUT: Duration = Duration::from_millis(800);
/// The most of a `/v1/status` answer read; a longer one is refused.
const MAX_STATUS_BYTES: u64 = 4 << 20;

/// The broker pane's source: the broker named, else the local default on this machine (not
/// under `--root`, another machine's view); none in a replay or with `--no-broker`.
///
/// It asks with one blocking request on the pane's own thread rather than through the broker
/// commands' client: that client brings up an async runtime and its HTTP stack, whose code and
/// thread cost the view about 1.6 MiB of resident memory (docs/PERFORMANCE.md, top).
fn broker_source(args: &TopArgs, this_machine: bool) -> Result<Option<BrokerSource>> {
    let explicit = args.broker.broker.is_some();
    if args.no_broker || args.replay.is_some() || (!explicit && !this_machine) {
        return Ok(None);
    }
    let url = args.broker.url().trim_end_matches('/').to_string();
    if !url.starts_with("http://") {
        bail!("broker URL {url:?} must start with http://");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        // An HTTP_PROXY in the environment must not carry the request elsewhere.
        .proxy(None)
        .timeout_global(Some(BROKER_TIMEOUT))
        .build()
        .into();
    let status_url = format!("{url}/v1/status");
    let bearer = args.broker.token.as_ref().map(|t| format!("Bearer {t}"));
    let ask = move || ask_status(&agent, &status_url, bearer.as_deref());
    Ok(Some(BrokerSource {
        url,
        explicit,
        ask: Box::new(ask),
    }))
}

/// `GET /v1/status`, bounded in time and size.
fn ask_status(agent: &ureq::Agent, url: &str, bearer: Option<&str>) -> Result<Value, String> {
    let mut req = agent.get(url);
    if let Some(b) = bearer {
        req = req.header("authorization", b);
    }
    let mut resp = req.call().map_err(|e| match e {
        ureq::Error::Timeout(_) => format!("no answer within {} ms", BROKER_TIMEOUT.as_millis()),
        e => e.to_string(),
    })?;
    let code = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_STATUS_BYTES)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if code != 200 {
        let why = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(|e| sanitize(e, 200)))
            .unwrap_or_else(|| sanitize(&body, 200));
        return Err(format!("the broker refused its status: {why} ({code})"));
    }
    serde_json::from_str(&body).map_err(|e| format!("the broker's answer is not JSON: {e}"))
}

/// Malloc settings for a view that runs for hours.
/// - One arena: glibc gives each thread that allocates an arena of its own, and the sampling
///   thread's (which builds every sample) and the drawing thread's (which frees them) would each
///   keep their high-water mark resident; shared, one pool of freed memory serves both. The
///   threads take turns, so the arena's lock is not contended.
/// - Blocks of 64 KiB and more (a sample's process and workload lists, the table's rows) in
///   their own mappings, unmapped when freed: in the heap, each sample's new lists land beside
///   the old ones and leave holes that raised top's peak by ~0.3 MiB. glibc would otherwise
///   raise this threshold by itself up to 32 MiB as such blocks are freed.
fn malloc_for_a_long_view() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

pub fn run(g: &Global, args: TopArgs) -> Result<ExitCode> {
    malloc_for_a_long_view();
    if let Some(i) = args.interval
        && !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&i)
    {
        bail!("--interval must be between 100ms and 1h");
    }
    if !(args.speed.is_finite() && args.speed > 0.0 && args.speed <= 10_000.0) {
        bail!("--speed must be a number above 0 and at most 10000");
    }
    let theme = match &args.theme {
        Some(t) => Some(ThemeName::parse(t).ok_or_else(|| {
            anyhow::anyhow!("unknown theme {t:?} (expected dark, light or mono)")
        })?),
        None => None,
    };
    let config_path = args.config.clone().or_else(Config::default_path);
    let config = match &config_path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    // Everything that can be refused is checked before the screen is taken over.
    let mut this_machine = false;
    let (source, kill, users) = match &args.replay {
        Some(file) => {
            let rec = Recording::open(file)?;
            let mut player = Player::new(rec, args.speed);
            if args.paused {
                player.step_forward();
            }
            let source = Source::Replay {
                player,
                name: file.display().to_string(),
            };
            let kill = Err("a recording is being played: nothing to kill".to_string());
            (source, kill, Default::default())
        }
        None => {
            let probe = super::probe(g)?;
            let root = probe.root().clone();
            let users = std::fs::read_to_string(root.path("/etc/passwd"))
                .map(|t| memwarden_tui::app::parse_passwd(&t))
                .unwrap_or_default();
            this_machine = root.is_system();
            let kill = if root.is_system() {
                Ok((root, memwarden_tui::kill::default_audit_path()))
            } else {
                Err("--root shows another machine's view: kill works on / only".to_string())
            };
            (Source::Live(Box::new(Sampler::new(probe))), kill, users)
        }
    };
    let broker = broker_source(&args, this_machine)?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "memwarden top needs a terminal (for a machine-readable reading use `snapshot --json`)"
        );
    }
    let colour = !(args.no_color || no_color_env() || theme == Some(ThemeName::Mono));
    memwarden_tui::run::run(Options {
        config,
        config_path,
        overrides: Overrides {
            interval: args.interval,
            theme,
            no_kill: args.no_kill,
        },
        colour,
        source,
        users,
        kill,
        broker,
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// One HTTP exchange on 127.0.0.1: the request head it got comes back through the handle.
    fn answer_once(response: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/status", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            conn.write_all(response.as_bytes()).unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (url, server)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(BROKER_TIMEOUT))
            .build()
            .into()
    }

    #[test]
    fn the_status_is_asked_with_the_token() {
        let (url, server) = answer_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"pools\": []}",
        );
        let v = ask_status(&agent(), &url, Some("Bearer s3cret")).unwrap();
        assert_eq!(v, serde_json::json!({"pools": []}));
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /v1/status "), "{head}");
        assert!(head.contains("authorization: bearer s3cret"), "{head}");
    }

    #[test]
    fn a_refusal_says_the_brokers_reason_sanitised() {
        let (url, server) = answer_once(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 32\r\nConnection: close\r\n\r\n\
{\"error\": \"bad \\u001b[2J token\"}",
        );
        let why = ask_status(&agent(), &url, None).unwrap_err();
        server.join().unwrap();
        assert!(
            why.starts_with("the broker refused its status: bad "),
            "{why}"
        );
        assert!(
            why.ends_with("(401 Unauthorized)") || why.ends_with("(401)"),
            "{why}"
        );
        assert!(!why.contains('\u{1b}'), "{why}");
    }
}
