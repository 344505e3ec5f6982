//! The broker's configuration: a TOML file read strictly (unknown keys are errors that name the
//! file, line and column), checked as a whole, and turned into indices the state owner can use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memwarden_probe::size::{format_size, parse_size};
use serde::Deserialize;
use toml::Spanned;

/// What a pool keeps free when its `cushion` is not given.
pub const DEFAULT_CUSHION: u64 = 256 << 20;

/// The configuration used when none is given: a pure exporter (no pools, no consumers).
pub const DEFAULT_CONFIG: &str = "[server]\nlisten = \"127.0.0.1:7077\"\n";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Turns a model file and a context length into bytes: the memory estimate behind
/// `estimate = { model, ctx }`. Supplied by the caller so the broker does not depend on how
/// models are read.
pub type Estimator<'a> = &'a dyn Fn(&Path, u64) -> Result<u64, String>;

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
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// How long in-flight requests may take to finish once a stop is asked for.
    pub shutdown_grace: Duration,
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

/// Where a consumer answers: `http://host:port` with an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeedSource {
    Resident,
    Estimate { model: PathBuf, ctx: u64 },
}

impl ConsumerConfig {
    /// The broker can take this consumer's memory back: by a route or by stopping its process.
    pub fn can_unload(&self) -> bool {
        self.unload.is_some() || self.start.is_some()
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

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    pool: Vec<RawPool>,
    #[serde(default)]
    consumer: Vec<RawConsumer>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    token: Option<String>,
    token_file: Option<Spanned<PathBuf>>,
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    kind: PoolKind,
    gpu: Option<u32>,
    cushion: Option<Spanned<RawSize>>,
    capacity: Option<Spanned<RawSize>>,
    max_queue: Option<usize>,
    max_wait: Option<Spanned<String>>,
    verify_timeout: Option<Spanned<String>>,
    stuck_retry: Option<Spanned<String>>,
}

/// A size as written: a whole number of bytes or a string such as `"24GiB"`.
enum RawSize {
    Bytes(u64),
    Text(String),
}

const SIZE_EXPECTED: &str = "a whole number of bytes or a string such as \"24GiB\"";

// By hand rather than `#[serde(untagged)]`, whose only message for a negative or fractional
// number is "data did not match any variant of untagged enum RawSize".
impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawSize, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSize;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom(format!("a size is {SIZE_EXPECTED} (got {v})")))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawSize, E> {
                // Debug keeps the point: `2.0` is shown as written, not as `2`.
                Err(E::custom(format!("a size is {SIZE_EXPECTED} (got {v:?})")))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    /// `"POST /unload"`
    Line(String),
    Table(RawRouteTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteTable {
    #[serde(default)]
    method: Option<String>,
    path: String,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEstimate {
    model: PathBuf,
    ctx: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    name: Spanned<String>,
    pool: Spanned<String>,
    resident: Option<Spanned<RawSize>>,
    estimate: Option<Spanned<RawEstimate>>,
    upstream: Option<Spanned<String>>,
    load: Option<Spanned<RawRoute>>,
    unload: Option<Spanned<RawRoute>>,
    health: Option<Spanned<RawRoute>>,
    start: Option<Spanned<Vec<String>>>,
    stop: Option<Spanned<Vec<String>>>,
    workload: Option<Spanned<String>>,
    #[serde(default)]
    coexist_with: Vec<Spanned<String>>,
    #[serde(default)]
    models: Vec<Spanned<String>>,
    #[serde(default)]
    self_managed: bool,
    #[serde(default)]
    pinned: bool,
    idle_ttl: Option<Spanned<String>>,
    max_concurrent: Option<Spanned<u32>>,
    load_timeout: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<String>>,
}

/// Positions in the text, for messages that say where the problem is.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, offset: usize, msg: impl std::fmt::Display) -> ConfigError {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError(format!("{}:{line}:{col}: {msg}", self.file))
    }

    fn err<T>(&self, s: &Spanned<T>, msg: impl std::fmt::Display) -> ConfigError {
        self.at(s.span().start, msg)
    }
}

impl Config {
    /// The embedded default: an exporter on 127.0.0.1:7077.
    pub fn default_exporter() -> Config {
        Config::parse(DEFAULT_CONFIG, "(default)", None).expect("the default config is valid")
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path, estimator: Option<Estimator<'_>>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
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

    fn parse_in(
        text: &str,
        file: &str,
        base: &Path,
        estimator: Option<Estimator<'_>>,
    ) -> Result<Config, ConfigError> {
        let src = Source { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(span) => src.at(span.start, msg),
                None => ConfigError(format!("{file}: {msg}")),
            }
        })?;
        let server = server(&src, raw.server, base)?;
        let mut pools = Vec::new();
        let mut pool_index = HashMap::new();
        for p in raw.pool {
            let name = p.name.get_ref().clone();
            check_name(&src, &p.name, "pool")?;
            if pool_index.insert(name.clone(), pools.len()).is_some() {
                return Err(src.err(&p.name, format!("pool {name:?} is defined twice")));
            }
            pools.push(pool(&src, p)?);
        }
        let mut consumers = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for c in &raw.consumer {
            check_name(&src, &c.name, "consumer")?;
            if names
                .insert(c.name.get_ref().clone(), names.len())
                .is_some()
            {
                return Err(src.err(
                    &c.name,
                    format!("consumer {:?} is defined twice", c.name.get_ref()),
                ));
            }
        }
        // A model name routes to one consumer: none claims another's name or model.
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        for c in &raw.consumer {
            let owner = c.name.get_ref().as_str();
            for m in &c.models {
                let model = m.get_ref().as_str();
                let taken = if model != owner && names.contains_key(model) {
                    Some("the name of another consumer".to_string())
                } else {
                    (claimed.insert(model, owner))
                        .filter(|o| *o != owner)
                        .map(|o| format!("a model of consumer {o:?}"))
                };
                if let Some(taken) = taken {
                    return Err(src.err(
                        m,
                        format!(
                            "consumer {owner:?}: model {:?} is already {taken}",
                            memwarden_probe::sanitize::sanitize(model, 80)
                        ),
                    ));
                }
            }
        }
        for c in raw.consumer {
            consumers.push(consumer(&src, c, &pool_index, &names, base, estimator)?);
        }
        // Coexistence is symmetric: saying it on either side is enough.
        for i in 0..consumers.len() {
            for j in consumers[i].coexist_with.clone() {
                if !consumers[j].coexist_with.contains(&i) {
                    consumers[j].coexist_with.push(i);
                }
            }
        }
        Ok(Config {
            server,
            pools,
            consumers,
        })
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

fn check_name(src: &Source<'_>, name: &Spanned<String>, what: &str) -> Result<(), ConfigError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(src.err(
            name,
            format!(
                "{what} name {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                memwarden_probe::sanitize::sanitize(n, 80)
            ),
        ))
    }
}

fn duration(src: &Source<'_>, d: &Spanned<String>) -> Result<Duration, ConfigError> {
    humantime::parse_duration(d.get_ref())
        .map_err(|e| src.err(d, format!("invalid duration {:?}: {e}", d.get_ref())))
}

fn size(src: &Source<'_>, s: &Spanned<RawSize>) -> Result<u64, ConfigError> {
    match s.get_ref() {
        RawSize::Bytes(b) => Ok(*b),
        RawSize::Text(t) => parse_size(t).map_err(|e| src.err(s, e)),
    }
}

fn server(src: &Source<'_>, raw: RawServer, base: &Path) -> Result<ServerConfig, ConfigError> {
    let listen = match &raw.listen {
        Some(l) => l.get_ref().parse().map_err(|_| {
            src.err(
                l,
                format!("listen {:?} is not an address:port", l.get_ref()),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 7077)),
    };
    let token = match (raw.token, &raw.token_file) {
        (Some(_), Some(f)) => {
            return Err(src.err(f, "give token or token_file, not both"));
        }
        (Some(t), None) => Some(t),
        (None, Some(f)) => {
            Some(read_token_file(&base.join(f.get_ref())).map_err(|e| src.err(f, e))?)
        }
        (None, None) => None,
    };
    if token.as_deref().is_some_and(|t| t.is_empty()) {
        return Err(ConfigError(format!("{}: the token is empty", src.file)));
    }
    let shutdown_grace = match &raw.shutdown_grace {
        Some(d) => duration(src, d)?,
        None => Duration::from_secs(30),
    };
    Ok(ServerConfig {
        listen,
        token,
        shutdown_grace,
    })
}

/// A token file must be readable by its owner only: a token others can read protects nothing.
fn read_token_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode != 0o600 && mode != 0o400 {
        return Err(format!(
            "{} has mode {mode:04o}; a token file must be 0600",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.trim().to_string())
}

fn pool(src: &Source<'_>, p: RawPool) -> Result<PoolConfig, ConfigError> {
    let name = p.name.get_ref().clone();
    match (p.kind, p.gpu) {
        (PoolKind::Ram, Some(_)) => {
            return Err(src.err(&p.name, format!("pool {name:?}: a ram pool takes no gpu")));
        }
        (PoolKind::Vram | PoolKind::Gtt, None) => {
            return Err(src.err(
                &p.name,
                format!("pool {name:?}: a {} pool needs `gpu = N`", p.kind.as_str()),
            ));
        }
        _ => {}
    }
    let cushion = match &p.cushion {
        Some(c) => size(src, c)?,
        None => DEFAULT_CUSHION,
    };
    let capacity = p.capacity.as_ref().map(|c| size(src, c)).transpose()?;
    if capacity == Some(0) {
        return Err(src.err(
            &p.name,
            format!("pool {name:?}: capacity must be more than 0"),
        ));
    }
    if let (Some(cap), Some(cap_at)) = (capacity, &p.capacity)
        && cushion >= cap
    {
        // A small capacity with the cushion left out is refused too: the pool could never
        // admit anything. The message points at what was written.
        return Err(match &p.cushion {
            Some(c) => src.err(
                c,
                format!("pool {name:?}: the cushion is not smaller than the pool's capacity"),
            ),
            None => src.err(
                cap_at,
                format!(
                    "pool {name:?}: the capacity ({}) is not larger than the default cushion ({}); \
                     set a smaller `cushion`",
                    format_size(cap),
                    format_size(DEFAULT_CUSHION)
                ),
            ),
        });
    }
    let max_queue = p.max_queue.unwrap_or(256);
    if max_queue == 0 {
        return Err(src.err(
            &p.name,
            format!("pool {name:?}: max_queue must be at least 1"),
        ));
    }
    let max_wait = match &p.max_wait {
        Some(d) => duration(src, d)?,
        None => Duration::from_secs(120),
    };
    let verify_timeout = match &p.verify_timeout {
        Some(d) => duration(src, d)?,
        None => Duration::from_secs(10),
    };
    let stuck_retry = match &p.stuck_retry {
        Some(d) => {
            let v = duration(src, d)?;
            if v < Duration::from_secs(1) {
                return Err(src.err(d, format!("pool {name:?}: stuck_retry must be at least 1s")));
            }
            v
        }
        None => Duration::from_secs(30),
    };
    Ok(PoolConfig {
        name,
        kind: p.kind,
        gpu: p.gpu,
        cushion,
        capacity,
        max_queue,
        max_wait,
        verify_timeout,
        stuck_retry,
    })
}

fn route(src: &Source<'_>, r: &Spanned<RawRoute>) -> Result<Route, ConfigError> {
    let (method, path, body) = match r.get_ref() {
        RawRoute::Line(line) => {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(m), Some(p), None) => (m.to_string(), p.to_string(), None),
                (Some(p), None, None) => ("GET".to_string(), p.to_string(), None),
                _ => return Err(src.err(r, format!("route {line:?} is not \"METHOD /path\""))),
            }
        }
        RawRoute::Table(t) => (
            t.method.clone().unwrap_or_else(|| "GET".into()),
            t.path.clone(),
            t.body.clone(),
        ),
    };
    let method = method.to_ascii_uppercase();
    if !matches!(
        method.as_str(),
        "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD"
    ) {
        return Err(src.err(r, format!("unknown HTTP method {method:?}")));
    }
    if !path.starts_with('/') {
        return Err(src.err(r, format!("route path {path:?} must start with '/'")));
    }
    Ok(Route { method, path, body })
}

fn upstream(src: &Source<'_>, u: &Spanned<String>) -> Result<Upstream, ConfigError> {
    let text = u.get_ref();
    let bad = |why: &str| src.err(u, format!("upstream {text:?}: {why}"));
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| bad("must start with http:// (model servers are reached on the host)"))?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Upstream {
        host: host.to_string(),
        port,
        base: base.to_string(),
    })
}

fn consumer(
    src: &Source<'_>,
    c: RawConsumer,
    pools: &HashMap<String, usize>,
    names: &HashMap<String, usize>,
    base: &Path,
    estimator: Option<Estimator<'_>>,
) -> Result<ConsumerConfig, ConfigError> {
    let name = c.name.get_ref().clone();
    let pool = *pools.get(c.pool.get_ref()).ok_or_else(|| {
        let mut known: Vec<&String> = pools.keys().collect();
        known.sort();
        src.err(
            &c.pool,
            format!(
                "consumer {name:?}: unknown pool {:?} (pools: {})",
                c.pool.get_ref(),
                if known.is_empty() {
                    "none defined".to_string()
                } else {
                    known
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        )
    })?;
    let (need, need_source) = match (&c.resident, &c.estimate) {
        (Some(r), None) => (size(src, r)?, NeedSource::Resident),
        (None, Some(e)) => {
            let est = e.get_ref();
            let model = base.join(&est.model);
            let Some(estimate) = estimator else {
                return Err(src.err(
                    e,
                    format!("consumer {name:?}: model estimates are not available in this build; give `resident` instead"),
                ));
            };
            let bytes = estimate(&model, est.ctx).map_err(|why| {
                src.err(
                    e,
                    format!(
                        "consumer {name:?}: cannot estimate {}: {why}",
                        model.display()
                    ),
                )
            })?;
            (
                bytes,
                NeedSource::Estimate {
                    model,
                    ctx: est.ctx,
                },
            )
        }
        (Some(r), Some(_)) => {
            return Err(src.err(
                r,
                format!("consumer {name:?}: give resident or estimate, not both"),
            ));
        }
        (None, None) => {
            return Err(src.err(
                &c.name,
                format!(
                    "consumer {name:?}: needs `resident = SIZE` or `estimate = {{ model, ctx }}`"
                ),
            ));
        }
    };
    let upstream = c.upstream.as_ref().map(|u| upstream(src, u)).transpose()?;
    let load = c.load.as_ref().map(|r| route(src, r)).transpose()?;
    let unload = match &c.unload {
        Some(r) if matches!(r.get_ref(), RawRoute::Line(l) if l.trim() == "ollama") => {
            Some(Unload::Ollama)
        }
        Some(r) => Some(Unload::Route(route(src, r)?)),
        None => None,
    };
    let health = c.health.as_ref().map(|r| route(src, r)).transpose()?;
    for r in [&c.load, &c.unload, &c.health].into_iter().flatten() {
        if upstream.is_none() {
            return Err(src.err(r, format!("consumer {name:?}: routes need an `upstream`")));
        }
    }
    for cmd in [&c.start, &c.stop].into_iter().flatten() {
        if cmd.get_ref().is_empty() {
            return Err(src.err(cmd, format!("consumer {name:?}: an empty command")));
        }
    }
    if let (Some(stop), None) = (&c.stop, &c.start) {
        return Err(src.err(stop, format!("consumer {name:?}: `stop` needs `start`")));
    }
    if let Some(start) = &c.start
        && (c.load.is_some() || c.unload.is_some())
    {
        return Err(src.err(
            start,
            format!("consumer {name:?}: give start/stop or load/unload routes, not both"),
        ));
    }
    if let Some(w) = &c.workload
        && w.get_ref().trim().is_empty()
    {
        return Err(src.err(w, format!("consumer {name:?}: an empty workload name")));
    }
    let mut coexist_with = Vec::new();
    for other in &c.coexist_with {
        let Some(&i) = names.get(other.get_ref()) else {
            return Err(src.err(
                other,
                format!(
                    "consumer {name:?}: coexist_with names {:?}, which is not a consumer",
                    other.get_ref()
                ),
            ));
        };
        if other.get_ref() == &name {
            return Err(src.err(
                other,
                format!("consumer {name:?} cannot coexist with itself"),
            ));
        }
        coexist_with.push(i);
    }
    for m in &c.models {
        let model = m.get_ref();
        if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
            return Err(src.err(
                m,
                format!("consumer {name:?}: a model name is 1 to 256 characters, none a control"),
            ));
        }
        if upstream.is_none() {
            return Err(src.err(
                m,
                format!("consumer {name:?}: models need an upstream to send their requests to"),
            ));
        }
    }
    let max_concurrent = match &c.max_concurrent {
        Some(m) if *m.get_ref() == 0 => {
            return Err(src.err(
                m,
                format!("consumer {name:?}: max_concurrent must be at least 1"),
            ));
        }
        Some(m) => *m.get_ref(),
        None => u32::MAX,
    };
    let dur = |d: &Option<Spanned<String>>, default: Duration| match d {
        Some(d) => duration(src, d),
        None => Ok(default),
    };
    let idle_ttl = c.idle_ttl.as_ref().map(|d| duration(src, d)).transpose()?;
    Ok(ConsumerConfig {
        name,
        pool,
        need,
        need_source,
        upstream,
        load,
        unload,
        health,
        start: c.start.map(|s| s.into_inner()),
        stop: c.stop.map(|s| s.into_inner()),
        workload: c.workload.map(|w| w.into_inner()),
        coexist_with,
        models: c.models.into_iter().map(|m| m.into_inner()).collect(),
        self_managed: c.self_managed,
        pinned: c.pinned,
        idle_ttl,
        max_concurrent,
        load_timeout: dur(&c.load_timeout, Duration::from_secs(120))?,
        response_timeout: dur(&c.response_timeout, Duration::from_secs(600))?,
        stop_timeout: dur(&c.stop_timeout, Duration::from_secs(10))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:7078"

[[pool]]
name = "gpu0"
kind = "vram"
gpu = 0
capacity = "20GiB"

[[consumer]]
name = "comfyui"
pool = "gpu0"
resident = "13GiB"
upstream = "http://127.0.0.1:8188"
unload = { method = "POST", path = "/free", body = '{"unload_models":true}' }
health = "GET /system_stats"

[[consumer]]
name = "ollama"
pool = "gpu0"
resident = "6GiB"
upstream = "http://127.0.0.1:11434"
self_managed = true
coexist_with = ["comfyui"]
"#;

    #[test]
    fn a_workload_names_something() {
        let base = "[[pool]]\nname = \"p\"\nkind = \"ram\"\n[[consumer]]\nname = \"vllm\"\npool = \"p\"\nresident = \"1GiB\"\n";
        let cfg = Config::parse(&format!("{base}workload = \"vllm\"\n"), "t.toml", None).unwrap();
        assert_eq!(cfg.consumers[0].workload.as_deref(), Some("vllm"));
        let e = Config::parse(&format!("{base}workload = \" \"\n"), "t.toml", None).unwrap_err();
        assert_eq!(
            e.0,
            "t.toml:8:12: consumer \"vllm\": an empty workload name"
        );
    }

    #[test]
    fn reads_a_good_config() {
        let c = Config::parse(GOOD, "t.toml", None).unwrap();
        assert_eq!(c.server.listen.port(), 7078);
        assert_eq!(c.pools[0].cushion, 256 << 20);
        assert_eq!(c.pools[0].capacity, Some(20 << 30));
        assert_eq!(c.consumers[0].need, 13 << 30);
        let Some(Unload::Route(unload)) = &c.consumers[0].unload else {
            panic!("an unload route")
        };
        assert_eq!(unload.method, "POST");
        assert_eq!(
            c.consumers[0].health.as_ref().unwrap().path,
            "/system_stats"
        );
        // Said on one side, coexistence holds both ways.
        assert_eq!(c.consumers[0].coexist_with, vec![1]);
        assert_eq!(c.consumers[1].coexist_with, vec![0]);
    }

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml", None).unwrap_err().0
    }

    #[test]
    fn unknown_keys_name_line_and_column() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\ncolour = 3\n");
        assert!(e.starts_with("t.toml:3:1:"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn unknown_pool_and_coexist_are_refused() {
        let e = err("[[consumer]]\nname = \"a\"\npool = \"nope\"\nresident = 1\n");
        assert!(
            e.contains("t.toml:3:8") && e.contains("unknown pool \"nope\""),
            "{e}"
        );
        let e = err(
            "[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=1\ncoexist_with=[\"ghost\"]\n",
        );
        assert!(e.contains("t.toml:8:15") && e.contains("\"ghost\""), "{e}");
    }

    #[test]
    fn a_model_name_routes_to_one_consumer() {
        let two = |a_models: &str, b_models: &str| {
            format!(
                "[[pool]]\nname=\"p\"\nkind=\"ram\"\n\
                 [[consumer]]\nname=\"a\"\npool=\"p\"\nresident=1\nupstream=\"http://127.0.0.1:1\"\nmodels={a_models}\n\
                 [[consumer]]\nname=\"b\"\npool=\"p\"\nresident=1\nupstream=\"http://127.0.0.1:2\"\nmodels={b_models}\n"
            )
        };
        let c = Config::parse(&two(r#"["llama3:8b", "a"]"#, "[]"), "t.toml", None).unwrap();
        assert_eq!(c.consumer_for_model("llama3:8b"), Some(0));
        assert_eq!(c.consumer_for_model("a"), Some(0));
        assert_eq!(c.consumer_for_model("b"), Some(1));
        assert_eq!(c.consumer_for_model("qwen"), None);
        let e = err(&two(r#"["llama3:8b"]"#, r#"["x", "llama3:8b"]"#));
        assert_eq!(
            e,
            "t.toml:15:14: consumer \"b\": model \"llama3:8b\" is already a model of consumer \"a\""
        );
        let e = err(&two(r#"["b"]"#, "[]"));
        assert!(
            e.starts_with("t.toml:9:9: consumer \"a\": model \"b\" is already the name of another"),
            "{e}"
        );
        assert!(err(&two(r#"[""]"#, "[]")).contains("a model name is 1 to 256 characters"));
        let e = err(
            "[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"job\"\npool=\"p\"\nresident=1\nmodels=[\"m\"]\n",
        );
        assert!(e.contains("models need an upstream"), "{e}");
    }

    #[test]
    fn ollama_is_unloaded_by_its_own_api() {
        let text = |unload: &str, extra: &str| {
            format!(
                "[[pool]]\nname=\"p\"\nkind=\"vram\"\ngpu=0\n[[consumer]]\nname=\"o\"\npool=\"p\"\n\
                 resident=1\nupstream=\"http://127.0.0.1:11434\"\nunload={unload}\n{extra}"
            )
        };
        let c = Config::parse(&text("\"ollama\"", ""), "t.toml", None).unwrap();
        let o = &c.consumers[0];
        assert_eq!(o.unload, Some(Unload::Ollama));
        assert!(o.can_unload() && o.may_hold_nothing() && !o.self_managed);
        let c = Config::parse(&text("\"POST /free\"", ""), "t.toml", None).unwrap();
        assert!(!c.consumers[0].may_hold_nothing());
        let c = Config::parse(&text("\"POST /free\"", "self_managed=true"), "t.toml", None);
        assert!(c.unwrap().consumers[0].may_hold_nothing());
        // Any other single word is a path, which must start with '/'.
        assert!(err(&text("\"olama\"", "")).contains("must start with '/'"));
    }

    #[test]
    fn cushion_larger_than_the_pool_is_refused() {
        let e = err("[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"1GiB\"\ncushion=\"2GiB\"\n");
        assert!(e.contains("t.toml:5:9") && e.contains("cushion"), "{e}");
    }

    #[test]
    fn the_default_cushion_must_fit_the_capacity_too() {
        let e = err("[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"100MiB\"\n");
        assert!(
            e.starts_with("t.toml:4:10: pool \"p\": the capacity (100 MiB) is not larger than the default cushion (256 MiB)"),
            "{e}"
        );
        let e = err("[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"256MiB\"\n");
        assert!(e.contains("default cushion"), "{e}");
        // A capacity of 0 keeps its own message.
        assert!(
            err("[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=0\n")
                .contains("capacity must be more than 0")
        );
        let c = Config::parse(
            "[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"257MiB\"\n",
            "t.toml",
            None,
        )
        .unwrap();
        assert_eq!(c.pools[0].cushion, DEFAULT_CUSHION);
        let c = Config::parse(
            "[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"100MiB\"\ncushion=\"10MiB\"\n",
            "t.toml",
            None,
        )
        .unwrap();
        assert_eq!(c.pools[0].cushion, 10 << 20);
    }

    #[test]
    fn a_size_that_is_not_a_whole_number_of_bytes_is_named() {
        let pool = |cushion: &str| {
            err(&format!(
                "[[pool]]\nname=\"p\"\nkind=\"ram\"\ncushion = {cushion}\n"
            ))
        };
        assert_eq!(
            pool("-5"),
            "t.toml:4:11: a size is a whole number of bytes or a string such as \"24GiB\" (got -5)"
        );
        assert_eq!(
            pool("1.5"),
            "t.toml:4:11: a size is a whole number of bytes or a string such as \"24GiB\" (got 1.5)"
        );
        assert_eq!(
            pool("2.0"),
            "t.toml:4:11: a size is a whole number of bytes or a string such as \"24GiB\" (got 2.0)"
        );
        let e = pool("true");
        assert!(
            e.starts_with("t.toml:4:11: ")
                && e.contains("expected a whole number of bytes or a string such as \"24GiB\""),
            "{e}"
        );
        // In a consumer's `resident` as in a pool's `cushion` and `capacity`.
        let e = err(
            "[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=-1\n",
        );
        assert!(
            e.starts_with("t.toml:7:10: a size is") && e.ends_with("(got -1)"),
            "{e}"
        );
        // Whole numbers and strings still read.
        let c = Config::parse(
            "[[pool]]\nname=\"p\"\nkind=\"ram\"\ncushion = 1048576\ncapacity = \"1GiB\"\n",
            "t.toml",
            None,
        )
        .unwrap();
        assert_eq!(
            (c.pools[0].cushion, c.pools[0].capacity),
            (1 << 20, Some(1 << 30))
        );
    }

    #[test]
    fn other_mistakes_are_named() {
        assert!(err("[[pool]]\nname=\"p\"\nkind=\"vram\"\n").contains("needs `gpu = N`"));
        assert!(err("[[pool]]\nname=\"p\"\nkind=\"hbm\"\n").contains("t.toml:3:6"));
        assert!(
            err("[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\n")
                .contains("needs `resident")
        );
        assert!(
            err("[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=\"12XB\"\n")
                .contains("unknown unit")
        );
        assert!(
            err("[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=1\nunload=\"POST /u\"\n")
                .contains("routes need an `upstream`")
        );
        assert!(
            err("[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=1\nupstream=\"https://x\"\n")
                .contains("http://")
        );
        assert!(err("[server]\nlisten=\"nowhere\"\n").contains("not an address:port"));
        let e = err("[[pool]]\nname=\"p\"\nkind=\"ram\"\nstuck_retry=\"100ms\"\n");
        assert!(
            e.starts_with("t.toml:4:13:") && e.contains("at least 1s"),
            "{e}"
        );
    }

    #[test]
    fn token_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!("[server]\ntoken_file = {:?}\n", f.display().to_string());
        let e = Config::parse(&text, "t.toml", None).unwrap_err().0;
        assert!(e.contains("0644") && e.contains("0600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::parse(&text, "t.toml", None).unwrap();
        assert_eq!(c.server.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn estimates_use_the_estimator() {
        let text = "[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nestimate={ model=\"m.gguf\", ctx=4096 }\n";
        assert!(err(text).contains("not available"));
        let est = |_: &Path, ctx: u64| Ok(ctx * 1000);
        let c = Config::parse(text, "t.toml", Some(&est)).unwrap();
        assert_eq!(c.consumers[0].need, 4_096_000);
    }
}
