//! `memwarden doctor`: what memwarden can and cannot see here, and how to fix each gap. The
//! checks live in the probe crate; this module gathers the facts that need the real world
//! (NVML, the broker's answer) and formats.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use memwarden_probe::doctor::{Check, NvmlFacts, Status, broker_check, machine_checks};
use memwarden_probe::gpu::nvidia::Nvml;
use memwarden_probe::sanitize::sanitize;
use memwarden_probe::{GpuSourceKind, HostRoot};

use crate::cli::Global;

/// How long the broker has to answer.
const BROKER_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of its answer that is read: the status line is all that matters.
const ANSWER_MAX: u64 = 4096;
/// Where a packaged broker keeps its configuration.
const DEFAULT_CONFIG: &str = "/etc/memwarden/memwarden.toml";

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The broker to ask
    #[arg(
        long,
        default_value = crate::cmd::ctl::DEFAULT_BROKER,
        env = "MEMWARDEN_BROKER",
        value_name = "URL"
    )]
    pub broker: String,
    /// The broker's configuration to check (default: /etc/memwarden/memwarden.toml under the
    /// root, where present)
    #[arg(long, value_name = "FILE", env = "MEMWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the checks as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, args: DoctorArgs) -> Result<ExitCode> {
    let source: GpuSourceKind = g.gpu_source.parse()?;
    let root = HostRoot::new(&g.root)?;
    // NVML reads the real machine's driver: on a fake root only when asked for by name.
    let try_nvml =
        source == GpuSourceKind::Nvml || (source == GpuSourceKind::Auto && root.is_system());
    let nvml: NvmlFacts = if try_nvml {
        Nvml::init().map(|n| n.driver_version())
    } else {
        Err(format!("not tried (--gpu-source {})", g.gpu_source))
    };
    let mut checks = machine_checks(&root, &nvml);
    let config = args
        .config
        .clone()
        .or_else(|| Some(root.path(DEFAULT_CONFIG)).filter(|p| p.exists()));
    let answer = ask_broker(&args.broker).map(|()| config.map(|c| super::serve::check_file(g, c)));
    checks.push(broker_check(&sanitize(&args.broker, 200), answer));
    if args.json {
        println!("{}", serde_json::json!({ "checks": checks }));
    } else {
        print!("{}", render(&checks));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<7}  {:<width$}  {}\n",
            c.status.as_str(),
            c.name,
            c.detail
        ));
        if let (Some(fix), false) = (&c.fix, c.status == Status::Ok) {
            out.push_str(&format!("{:<7}  {:<width$}  fix: {fix}\n", "", ""));
        }
    }
    out
}

/// GET /healthz on the broker, bounded in time and size; Ok when it answers 200.
fn ask_broker(url: &str) -> Result<(), String> {
    let addr = broker_addr(url).map_err(|e| e.to_string())?;
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&sock, BROKER_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(BROKER_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(BROKER_TIMEOUT)))
        .and_then(|()| {
            s.write_all(
                format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
        })
        .map_err(|e| e.to_string())?;
    let mut head = String::new();
    let _ = s.take(ANSWER_MAX).read_to_string(&mut head);
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("it answered {}", sanitize(code, 10))),
        None => Err("no HTTP answer".into()),
    }
}

/// `host:port` of an `http://` URL.
fn broker_addr(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--broker {url:?}: only http:// URLs are asked");
    };
    let host = rest.split('/').next().unwrap_or_default();
    Ok(if host.contains(':') && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:80")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_name_a_host_and_port() {
        assert_eq!(
            broker_addr("http://127.0.0.1:7077").unwrap(),
            "127.0.0.1:7077"
        );
        assert_eq!(broker_addr("http://broker/x").unwrap(), "broker:80");
        assert!(broker_addr("https://broker").is_err());
    }

    #[test]
    fn a_fix_is_shown_under_its_line_only_when_not_ok() {
        let checks = vec![
            broker_check("http://x:1", Err("refused".into())),
            broker_check("http://x:1", Ok(None)),
        ];
        let text = render(&checks);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("missing  broker  no broker answers"),
            "{text}"
        );
        assert!(
            lines[1].trim_start().starts_with("fix: start one"),
            "{text}"
        );
        assert!(lines[2].starts_with("ok       broker  answers"), "{text}");
    }
}
