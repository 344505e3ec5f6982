//! `memwarden status`, `load` and `unload`: the broker from the command line, as `kubectl get`
//! shows a cluster. They speak the broker's HTTP API, so they work wherever `curl` would.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use memwarden_broker::client::BrokerClient;
use memwarden_probe::sanitize::sanitize;
use memwarden_probe::size::format_size;
use serde_json::Value;

use crate::cli::Global;

/// Where the broker listens unless told otherwise (`serve`'s default address).
pub const DEFAULT_BROKER: &str = "http://127.0.0.1:7077";

/// The broker to ask and its token, shared by every command that speaks to a broker.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The broker's URL [default: http://127.0.0.1:7077]
    #[arg(long, env = "MEMWARDEN_BROKER", value_name = "URL")]
    pub broker: Option<String>,
    /// The broker's bearer token
    #[arg(
        long,
        env = "MEMWARDEN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

impl BrokerArgs {
    /// The broker named (`--broker`, `MEMWARDEN_BROKER`), else the local default.
    pub fn url(&self) -> &str {
        self.broker.as_deref().unwrap_or(DEFAULT_BROKER)
    }

    pub fn client(&self) -> Result<BrokerClient> {
        Ok(BrokerClient::new(self.url(), self.token.clone())?)
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Print the broker's status as it answers it (JSON), for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConsumerArgs {
    /// The consumer, as the broker's configuration names it
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn status(_g: &Global, args: StatusArgs) -> Result<ExitCode> {
    let client = args.broker.client()?;
    let status = runtime()?.block_on(client.status())?;
    if args.json {
        println!("{status}");
    } else {
        print!("{}", render_status(&status));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn load(_g: &Global, args: ConsumerArgs) -> Result<ExitCode> {
    let client = args.broker.client()?;
    runtime()?.block_on(client.load(&args.name))?;
    println!("{}: loaded", sanitize(&args.name, 80));
    Ok(ExitCode::SUCCESS)
}

pub fn unload(_g: &Global, args: ConsumerArgs) -> Result<ExitCode> {
    let client = args.broker.client()?;
    let rt = runtime()?;
    let said = rt.block_on(client.unload(&args.name))?;
    // The broker answers once the unload has begun; a user (or script) asking to unload wants
    // to know that the memory came back, which the broker verifies before it says `unloaded`.
    let name = sanitize(&args.name, 80);
    let state = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + UNLOAD_WAIT;
        loop {
            let status = client.status().await?;
            let state = (status["consumers"].as_array())
                .and_then(|cs| cs.iter().find(|c| c["name"] == args.name.as_str()))
                .and_then(|c| c["state"].as_str())
                .unwrap_or("gone")
                .to_string();
            if state != "unloading" || tokio::time::Instant::now() >= deadline {
                return anyhow::Ok(state);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })?;
    match state.as_str() {
        "unloaded" => println!("{name}: unloaded"),
        "unloading" => bail!(
            "{name}: still unloading after {}s ({})",
            UNLOAD_WAIT.as_secs(),
            sanitize(&said, 200)
        ),
        other => bail!(
            "{name}: {} (the broker said: {})",
            sanitize(other, 40),
            sanitize(&said, 200)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `unload` waits for the broker to verify that the memory came back.
const UNLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The consumer, as the broker's configuration names it
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Keep printing new lines as the process prints them (Ctrl-C to stop)
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

pub fn logs(_g: &Global, args: LogsArgs) -> Result<ExitCode> {
    let client = args.broker.client()?;
    let rt = runtime()?;
    // The broker sanitised each line when it kept it; a line is still cut to what a terminal
    // line can hold, so that nothing reaches the terminal unchecked.
    let show = |l: &str| println!("{}", sanitize(l, memwarden_broker::logs::MAX_LINE));
    if args.follow {
        rt.block_on(client.follow_logs(&args.name, show, |n| {
            eprintln!("memwarden: missed {}", sanitize(n, 40))
        }))?;
    } else {
        for l in rt.block_on(client.logs(&args.name))?.lines() {
            show(l);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A table of pools, then one of consumers, from `/v1/status`. Every string in it came from
/// the broker's configuration, so it is sanitised before it reaches the terminal; a field the
/// broker does not give is shown as `-`.
pub fn render_status(status: &Value) -> String {
    let empty = Vec::new();
    let size = |v: &Value| v.as_u64().map_or("-".to_string(), format_size);
    let text = |v: &Value| v.as_str().map_or("-".to_string(), |s| sanitize(s, 40));
    let mut pools = vec![row(&[
        "POOL",
        "KIND",
        "TOTAL",
        "PROMISED",
        "CUSHION",
        "AVAILABLE",
        "QUEUE",
    ])];
    for p in status["pools"].as_array().unwrap_or(&empty) {
        pools.push(vec![
            text(&p["name"]),
            text(&p["kind"]),
            // A configured capacity is what the broker plans with; else the device's total.
            match &p["capacity_bytes"] {
                Value::Null => size(&p["total_bytes"]),
                cap => size(cap),
            },
            size(&p["promised_bytes"]),
            size(&p["cushion_bytes"]),
            size(&p["available_bytes"]),
            p["queue_length"].as_u64().unwrap_or(0).to_string(),
        ]);
    }
    let mut consumers = vec![row(&[
        "CONSUMER",
        "POOL",
        "STATE",
        "HOLDS",
        "DECLARED",
        "MEASURED",
        "IN-FLIGHT",
        "QUEUED",
        "LAST-USED",
    ])];
    for c in status["consumers"].as_array().unwrap_or(&empty) {
        let mut state = text(&c["state"]);
        if c["pinned"].as_bool() == Some(true) {
            state.push_str(",pinned");
        }
        consumers.push(vec![
            text(&c["name"]),
            text(&c["pool"]),
            state,
            size(&c["resident_bytes"]),
            size(&c["declared_bytes"]),
            size(&c["measured_bytes"]),
            c["in_flight"].as_u64().unwrap_or(0).to_string(),
            c["queued"].as_u64().unwrap_or(0).to_string(),
            c["last_used_seconds_ago"]
                .as_f64()
                .map_or("-".to_string(), ago),
        ]);
    }
    let mut out = table(&pools);
    out.push('\n');
    out.push_str(&table(&consumers));
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

/// Columns padded to their widest cell, two spaces apart, as `kubectl get` prints.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|i| {
            (rows.iter())
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = width[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Seconds ago as people say it: `12s`, `5m`, `3h`, `2d`.
fn ago(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_names_the_default_broker() {
        let cmd = <BrokerArgs as clap::Args>::augment_args(clap::Command::new("status"));
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "broker")
            .unwrap();
        let help = arg.get_help().unwrap();
        assert!(help.to_string().contains(DEFAULT_BROKER), "{help}");
    }

    #[test]
    fn status_is_two_aligned_tables_and_unknowns_are_dashes() {
        let v = serde_json::json!({
            "pools": [{"name": "gpu0", "kind": "vram", "total_bytes": 24u64 << 30,
                       "capacity_bytes": null, "promised_bytes": 0, "cushion_bytes": 512u64 << 20,
                       "available_bytes": 10u64 << 30, "queue_length": 2}],
            "consumers": [
                {"name": "llm", "pool": "gpu0", "state": "loaded", "resident_bytes": 8u64 << 30,
                 "declared_bytes": 8u64 << 30, "measured_bytes": null, "in_flight": 1,
                 "queued": 0, "last_used_seconds_ago": 75.0, "pinned": true},
                {"name": "evil\u{1b}[2J", "pool": "gpu0", "state": "unloaded",
                 "resident_bytes": 0, "declared_bytes": 1u64 << 30, "in_flight": 0,
                 "queued": 2, "last_used_seconds_ago": null}
            ]
        });
        let out = render_status(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("POOL  KIND  TOTAL"), "{out}");
        assert!(
            lines[1].contains("gpu0") && lines[1].contains("24 GiB"),
            "{out}"
        );
        assert!(lines[1].ends_with('2'), "{out}");
        assert!(lines[3].starts_with("CONSUMER"), "{out}");
        assert!(
            lines[4].contains("loaded,pinned") && lines[4].ends_with("1m"),
            "{out}"
        );
        // Columns line up: MEASURED starts where the header says.
        let col = lines[3].find("MEASURED").unwrap();
        assert_eq!(&lines[4][col..col + 1], "-", "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
    }

    #[test]
    fn ages_are_in_the_largest_whole_unit() {
        assert_eq!(ago(0.4), "0s");
        assert_eq!(ago(59.9), "59s");
        assert_eq!(ago(61.0), "1m");
        assert_eq!(ago(7300.0), "2h");
        assert_eq!(ago(200_000.0), "2d");
    }
}
