//! The broker's configuration: a TOML file read strictly (unknown keys are errors that name the
//! file, line and column), checked as a whole, and turned into indices the state owner can use.

mod check;
mod demand;
mod raw;
mod sleep;
mod start;
#[cfg(test)]
mod tests;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use sleep::{HOST_CUSHION, Sleep, SleepEngine};
pub use validate::{DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, reload_drops};

/// What a pool keeps free when its `cushion` is not given.
pub const DEFAULT_CUSHION: u64 = 256 << 20;

/// The largest config file read: thousands of consumers fit in a tenth of it.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// The configuration used when none is given: a pure exporter (no pools, no consumers).
pub const DEFAULT_CONFIG: &str = "[server]\nlisten = \"127.0.0.1:7077\"\n";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What `estimate = { model, ctx, engine, … }` asks: the model file, the context, and for an
/// engine that preallocates (`engine = "vllm"` or `"sglang"`) its fraction of the card and the
/// pool whose card it is.
#[derive(Debug, Clone, Copy)]
pub struct EstimateRequest<'a> {
    pub model: &'a Path,
    pub ctx: u64,
    /// `None`: llama.cpp's sizing.
    pub engine: Option<&'a str>,
    pub gpu_memory_utilization: Option<f64>,
    pub mem_fraction_static: Option<f64>,
    pub pool: &'a PoolConfig,
}

/// Turns an [`EstimateRequest`] into bytes: the memory estimate behind `estimate = { … }`.
/// Supplied by the caller so the broker does not depend on how models are read.
pub type Estimator<'a> = &'a dyn Fn(&EstimateRequest<'_>) -> Result<u64, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    Vram,
    Gtt,
    Ram,
}

impl PoolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::Vram => "vram",
            PoolKind::Gtt => "gtt",
            PoolKind::Ram => "ram",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub pools: Vec<PoolConfig>,
    pub consumers: Vec<ConsumerConfig>,
    /// What the file allows but is most likely a mistake, each a line naming where.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// How long in-flight requests may take to finish once a stop is asked for.
    pub shutdown_grace: Duration,
    // Connections and reloads: see docs/RELIABILITY.md.
    /// Connections held at once; past it the oldest is asked to close.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (and stay idle between
    /// requests).
    pub header_timeout: Duration,
    /// The file says it means to run with no consumers, no token or the default address, so a
    /// reload to it is not refused as a file emptied by mistake.
    pub allow_empty: bool,
    /// Whether the file (or `--listen`) names the address, rather than leaving the default.
    pub listen_given: bool,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub kind: PoolKind,
    pub gpu: Option<u32>,
    pub cushion: u64,
    pub capacity: Option<u64>,
    pub max_queue: usize,
    pub max_wait: Duration,
    pub verify_timeout: Duration,
    /// How long after a consumer is found stuck its unload is first retried by itself (while a
    /// request waits for its room); each retry that fails doubles it, up to `MAX_STUCK_RETRY`.
    pub stuck_retry: Duration,
    /// How long a consumer just loaded is kept for the requests it still has queued.
    pub min_residency: Duration,
}

/// The longest wait between automatic retries of a stuck consumer's unload.
pub const MAX_STUCK_RETRY: Duration = Duration::from_secs(600);

/// An HTTP call to a consumer: method, path (with query) and an optional body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub body: Option<String>,
}

/// How a consumer is asked to let its memory go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unload {
    Route(Route),
    /// `unload = "ollama"`: every model Ollama has loaded (`GET /api/ps`) is unloaded
    /// (`POST /api/generate` with `keep_alive: 0`), since Ollama has no route that unloads all.
    Ollama,
}

pub use start::PORT;

/// Where a consumer answers: `http://host:port` with an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    /// 0 for `${PORT}`: the port its start command was given, chosen at each start.
    pub port: u16,
    /// Without a trailing slash; empty for the root.
    pub base: String,
}

impl Upstream {
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The full URL of `path` (which starts with `/`) on this upstream.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{}{}", self.host, self.port, self.base, path)
    }

    /// Whether the upstream is on this machine, so that its port's owner can be measured.
    pub fn is_local(&self) -> bool {
        matches!(
            self.host.as_str(),
            "127.0.0.1" | "localhost" | "::1" | "[::1]" | "0.0.0.0"
        )
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub name: String,
    pub pool: usize,
    /// What the consumer needs in its pool: its declared `resident` or the estimate.
    pub need: u64,
    pub need_source: NeedSource,
    pub upstream: Option<Upstream>,
    pub load: Option<Route>,
    pub unload: Option<Unload>,
    pub health: Option<Route>,
    pub start: Option<Vec<String>>,
    pub stop: Option<Vec<String>>,
    /// The workload (container, pod, service or process name) whose processes hold this
    /// consumer's memory, where neither its port nor its process group leads to them.
    pub workload: Option<String>,
    pub coexist_with: Vec<usize>,
    /// The names applications ask for this consumer by in an OpenAI-style request's `model`
    /// field (its own name too, always).
    pub models: Vec<String>,
    pub self_managed: bool,
    pub pinned: bool,
    pub idle_ttl: Option<Duration>,
    pub max_concurrent: u32,
    pub load_timeout: Duration,
    /// How long its upstream may take to start answering a proxied request (status and
    /// headers; a streamed body then takes as long as it takes).
    pub response_timeout: Duration,
    pub stop_timeout: Duration,
    /// How to put its server to sleep and wake it, if it can sleep.
    pub sleep: Option<Sleep>,
    /// Its own `min_residency`, in place of its pool's.
    pub min_residency: Option<Duration>,
    /// Higher goes first in its pool's queue.
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeedSource {
    Resident,
    Estimate {
        model: PathBuf,
        ctx: u64,
        engine: Option<String>,
    },
}

impl ConsumerConfig {
    /// The broker can take this consumer's memory back: by a route or by stopping its process.
    pub fn can_unload(&self) -> bool {
        self.unload.is_some() || self.start.is_some()
    }

    /// The broker can make it give its pool's memory back: by unloading it or putting it to
    /// sleep.
    pub fn can_evict(&self) -> bool {
        self.can_unload() || self.sleep.is_some()
    }

    /// Whether its server may truly hold no GPU memory while up: one that manages its own
    /// memory, or Ollama, whose model runners are processes that end when it lets a model go.
    pub fn may_hold_nothing(&self) -> bool {
        self.self_managed || self.unload == Some(Unload::Ollama)
    }

    /// A consumer with no server and no process of ours (a batch job run under a lease) holds
    /// its memory only while it has work.
    pub fn is_ephemeral(&self) -> bool {
        self.upstream.is_none() && self.start.is_none()
    }
}

impl Config {
    /// The embedded default: an exporter on 127.0.0.1:7077.
    pub fn default_exporter() -> Config {
        Config::parse(DEFAULT_CONFIG, "(default)", None).expect("the default config is valid")
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path, estimator: Option<Estimator<'_>>) -> Result<Config, ConfigError> {
        let text = memwarden_probe::root::read_to_string_bounded(path, MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_in(&text, &path.display().to_string(), base, estimator)
    }

    /// Parses config text; `file` names it in messages. Relative paths resolve against the
    /// current directory.
    pub fn parse(
        text: &str,
        file: &str,
        estimator: Option<Estimator<'_>>,
    ) -> Result<Config, ConfigError> {
        Config::parse_in(text, file, Path::new("."), estimator)
    }

    /// How long consumer `c`, just loaded, is kept for the requests it still has queued.
    pub fn min_residency(&self, c: usize) -> Duration {
        let c = &self.consumers[c];
        c.min_residency.unwrap_or(self.pools[c.pool].min_residency)
    }

    pub fn consumer_index(&self, name: &str) -> Option<usize> {
        self.consumers.iter().position(|c| c.name == name)
    }

    /// The consumer an OpenAI-style request for `model` goes to: the one that lists it among
    /// its `models`, or the one by that name.
    pub fn consumer_for_model(&self, model: &str) -> Option<usize> {
        (self.consumers.iter())
            .position(|c| c.models.iter().any(|m| m == model))
            .or_else(|| self.consumer_index(model))
    }
}
