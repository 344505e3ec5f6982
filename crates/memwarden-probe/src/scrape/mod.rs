//! Metrics of local inference servers ("scrapers"): llama.cpp, vLLM and TGI (Prometheus text
//! on `/metrics`), Ollama (`/api/ps`) and SGLang (`/get_server_info`).
//!
//! A number from a server is only as good as the server: these rules keep a hostile or broken
//! one from feeding us or hurting us.
//! 1. Only loopback addresses, unless the operator lists more; refused before any connection.
//! 2. The port must be held by the process we attribute the numbers to, seen from our network
//!    namespace ([`guard::pid_serves`]).
//! 3. At most one request per server every [`MIN_INTERVAL`]; in between, the last answer is
//!    given again (so figures can be up to that old).
//! 4. No redirect is followed.
//! 5. An answer over [`http::MAX_BODY_BYTES`] is cut off and discarded; [`http::TIMEOUT`] bounds
//!    the whole request.

pub mod diag;
pub mod guard;
pub mod http;
pub mod llamacpp;
pub mod ollama;
pub mod ports;
pub mod prometheus;
pub mod sglang;
pub mod tgi;
pub mod vllm;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::framework::Framework;
use crate::root::HostRoot;

pub use ports::candidate_addrs;

/// The shortest time between two requests to one server.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    #[serde(rename = "llamacpp")]
    LlamaCpp,
    Vllm,
    Ollama,
    Sglang,
    Tgi,
}

impl ServerKind {
    /// The kind of server a framework runs, when we know how to ask it.
    pub fn for_framework(f: Framework) -> Option<ServerKind> {
        match f {
            Framework::LlamaCpp => Some(ServerKind::LlamaCpp),
            Framework::Vllm => Some(ServerKind::Vllm),
            Framework::Ollama => Some(ServerKind::Ollama),
            Framework::Sglang => Some(ServerKind::Sglang),
            Framework::Tgi => Some(ServerKind::Tgi),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            ServerKind::LlamaCpp => llamacpp::PATH,
            ServerKind::Vllm => vllm::PATH,
            ServerKind::Ollama => ollama::PATH,
            ServerKind::Sglang => sglang::PATH,
            ServerKind::Tgi => tgi::PATH,
        }
    }

    /// Reads a server's answer.
    pub fn parse(self, body: &str) -> Result<ServerMetrics, ScrapeError> {
        match self {
            ServerKind::LlamaCpp => llamacpp::parse(body),
            ServerKind::Vllm => vllm::parse(body),
            ServerKind::Ollama => ollama::parse(body),
            ServerKind::Sglang => sglang::parse(body),
            ServerKind::Tgi => tgi::parse(body),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::LlamaCpp => "llama.cpp",
            ServerKind::Vllm => "vLLM",
            ServerKind::Ollama => "Ollama",
            ServerKind::Sglang => "SGLang",
            ServerKind::Tgi => "TGI",
        }
    }
}

/// What a server says about itself. `None` means the server did not say, never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMetrics {
    pub kind: ServerKind,
    /// The fraction (0..1) of the KV cache in use.
    pub kv_cache_usage_ratio: Option<f64>,
    /// The size of the KV-cache pool, when the server reports it (SGLang).
    pub kv_cache_bytes: Option<u64>,
    pub requests_running: Option<u64>,
    pub requests_waiting: Option<u64>,
    pub models: Vec<LoadedModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedModel {
    pub name: String,
    /// The model's whole footprint as the server counts it.
    pub size_bytes: Option<u64>,
    /// The part of it in GPU memory.
    pub vram_bytes: Option<u64>,
}

/// Why a server was not read; its `Display` is a short note for the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    #[error("scraping is disabled")]
    Disabled,
    #[error("{0} is not a loopback address (list it in the allowed hosts to scrape it)")]
    HostNotAllowed(IpAddr),
    #[error("{addr} is not served by process {pid}")]
    NotOwner { pid: u32, addr: SocketAddr },
    #[error("asked less than {}s ago", MIN_INTERVAL.as_secs())]
    RateLimited,
    #[error("redirect ({0}) not followed")]
    Redirect(u16),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("answer over {} KiB, discarded", http::MAX_BODY_BYTES / 1024)]
    TooLarge,
    #[error("no answer within {} ms", http::TIMEOUT.as_millis())]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// The `[scrape]` part of a configuration. Unknown keys are refused, so that a misspelt
/// `allow_host` does not silently leave the default in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrapeConfig {
    /// Whether servers are asked at all.
    pub enabled: bool,
    /// Addresses besides loopback that may be asked (a container's bridge address, say).
    pub allow_hosts: Vec<IpAddr>,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            enabled: true,
            allow_hosts: Vec::new(),
        }
    }
}

/// A source of monotonic time, replaceable so that the rate limit can be tested without
/// waiting.
pub trait Clock: Send {
    fn now(&self) -> Instant;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[derive(Debug)]
struct LastAsk {
    pid: u32,
    at: Instant,
    outcome: Result<ServerMetrics, ScrapeError>,
}

/// Asks servers, under the rules above. Keep one for the life of the program: it holds the
/// rate limit's memory.
pub struct Scraper {
    config: ScrapeConfig,
    clock: Box<dyn Clock>,
    agent: ureq::Agent,
    last: HashMap<SocketAddr, LastAsk>,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("config", &self.config)
            .field("servers", &self.last.len())
            .finish()
    }
}

impl Scraper {
    pub fn new(config: ScrapeConfig) -> Scraper {
        Scraper::with_clock(config, Box::new(SystemClock))
    }

    pub fn with_clock(config: ScrapeConfig, clock: Box<dyn Clock>) -> Scraper {
        Scraper {
            config,
            clock,
            agent: http::agent(),
            last: HashMap::new(),
        }
    }

    pub fn config(&self) -> &ScrapeConfig {
        &self.config
    }

    /// Reads the metrics of the `kind` server that process `pid` runs at `addr`.
    ///
    /// Within [`MIN_INTERVAL`] of the last request to `addr` the answer (or the error) of that
    /// request is given again without asking; for another pid at the same address it is
    /// [`ScrapeError::RateLimited`].
    pub fn scrape(
        &mut self,
        root: &HostRoot,
        pid: u32,
        kind: ServerKind,
        addr: SocketAddr,
    ) -> Result<ServerMetrics, ScrapeError> {
        if !self.config.enabled {
            return Err(ScrapeError::Disabled);
        }
        if !guard::host_allowed(addr.ip(), &self.config.allow_hosts) {
            return Err(ScrapeError::HostNotAllowed(addr.ip()));
        }
        let now = self.clock.now();
        let recent = self
            .last
            .get(&addr)
            .filter(|l| now.saturating_duration_since(l.at) < MIN_INTERVAL);
        // The last answer was checked when it was asked for; giving it again asks nothing.
        if let Some(last) = recent
            && last.pid == pid
        {
            return last.outcome.clone();
        }
        if !guard::pid_serves(root, pid, addr) {
            return Err(ScrapeError::NotOwner { pid, addr });
        }
        if recent.is_some() {
            return Err(ScrapeError::RateLimited);
        }
        let outcome = http::get(&self.agent, addr, kind.path()).and_then(|body| kind.parse(&body));
        // Servers not asked for a while (gone, or no longer ours) are forgotten.
        self.last
            .retain(|_, l| now.saturating_duration_since(l.at) < MIN_INTERVAL * 12);
        self.last.insert(
            addr,
            LastAsk {
                pid,
                at: now,
                outcome: outcome.clone(),
            },
        );
        outcome
    }
}

/// At most this many of a process's listening ports are tried when none is the one its command
/// line or framework names: a port that is not HTTP can hold a request until the time limit.
const MAX_UNNAMED_TRIES: usize = 2;

impl Scraper {
    /// Reads the metrics of the server that process `pid` runs, found among the ports it
    /// listens on (see [`candidate_addrs`]). `None` when its framework is not a server we know
    /// how to ask, when it listens on no port (an engine or scheduler process beside the one
    /// that serves HTTP, a launcher), or when it is Ollama's model runner, whose figures come
    /// from `ollama serve`.
    pub fn scrape_process(
        &mut self,
        root: &HostRoot,
        pid: u32,
        cmdline: &str,
        framework: Framework,
    ) -> Option<Result<ServerMetrics, ScrapeError>> {
        let kind = ServerKind::for_framework(framework)?;
        if ports::is_ollama_runner(cmdline, framework) {
            return None;
        }
        // Asked within the interval: the same answer, without looking for ports again (the
        // port that answered, when one of several did).
        let now = self.clock.now();
        let recent =
            |l: &&LastAsk| l.pid == pid && now.saturating_duration_since(l.at) < MIN_INTERVAL;
        if let Some(last) = self
            .last
            .values()
            .filter(recent)
            .find(|l| l.outcome.is_ok())
            .or_else(|| self.last.values().find(recent))
        {
            return Some(last.outcome.clone());
        }
        let addrs = candidate_addrs(root, pid, cmdline, framework);
        let named = ports::preferred_port(cmdline, framework);
        let tries: Vec<SocketAddr> = match addrs.first() {
            None => return None,
            Some(a) if Some(a.port()) == named => addrs
                .iter()
                .copied()
                .take_while(|a| Some(a.port()) == named)
                .collect(),
            Some(_) => addrs.iter().copied().take(MAX_UNNAMED_TRIES).collect(),
        };
        let mut first_error = None;
        for addr in tries {
            match self.scrape(root, pid, kind, addr) {
                Ok(m) => return Some(Ok(m)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map(Err)
    }
}

/// A gauge read as a count of requests: a finite, non-negative number.
fn count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

/// A gauge read as a fraction: finite and within 0..1 (a little over 1 from float error is
/// clamped; anything further out is not a reading).
fn ratio(v: f64) -> Option<f64> {
    (v.is_finite() && (0.0..=1.0001).contains(&v)).then(|| v.min(1.0))
}
