//! The file as written: the serde types a config file is read into, before its checks, and
//! the readers of its durations and sizes that name where a bad one was written.

use std::path::PathBuf;
use std::time::Duration;

use memwarden_probe::size::parse_size;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, PoolKind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) pool: Vec<RawPool>,
    #[serde(default)]
    pub(super) consumer: Vec<RawConsumer>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<PathBuf>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
    // Connections and reloads (`validate.rs`).
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) header_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_empty: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: Spanned<String>,
    pub(super) kind: PoolKind,
    pub(super) gpu: Option<u32>,
    pub(super) cushion: Option<Spanned<RawSize>>,
    pub(super) capacity: Option<Spanned<RawSize>>,
    pub(super) max_queue: Option<usize>,
    pub(super) max_wait: Option<Spanned<String>>,
    pub(super) verify_timeout: Option<Spanned<String>>,
    pub(super) stuck_retry: Option<Spanned<String>>,
    pub(super) min_residency: Option<Spanned<String>>,
}

/// A size as written: a whole number of bytes or a string such as `"24GiB"`.
pub(super) enum RawSize {
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
pub(super) enum RawRoute {
    /// `"POST /unload"`
    Line(String),
    Table(RawRouteTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteTable {
    #[serde(default)]
    pub(super) method: Option<String>,
    pub(super) path: String,
    #[serde(default)]
    pub(super) body: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEstimate {
    pub(super) model: PathBuf,
    pub(super) ctx: u64,
    pub(super) engine: Option<String>,
    pub(super) gpu_memory_utilization: Option<f64>,
    pub(super) mem_fraction_static: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsumer {
    pub(super) name: Spanned<String>,
    pub(super) pool: Spanned<String>,
    pub(super) resident: Option<Spanned<RawSize>>,
    pub(super) estimate: Option<Spanned<RawEstimate>>,
    pub(super) upstream: Option<Spanned<String>>,
    pub(super) load: Option<Spanned<RawRoute>>,
    pub(super) unload: Option<Spanned<RawRoute>>,
    pub(super) health: Option<Spanned<RawRoute>>,
    pub(super) start: Option<Spanned<Vec<String>>>,
    pub(super) stop: Option<Spanned<Vec<String>>>,
    pub(super) workload: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) coexist_with: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) models: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) self_managed: bool,
    #[serde(default)]
    pub(super) pinned: bool,
    pub(super) idle_ttl: Option<Spanned<String>>,
    pub(super) max_concurrent: Option<Spanned<u32>>,
    pub(super) load_timeout: Option<Spanned<String>>,
    pub(super) response_timeout: Option<Spanned<String>>,
    pub(super) stop_timeout: Option<Spanned<String>>,
    // Sleep and wake (see `config::sleep`).
    pub(super) sleep: Option<Spanned<RawRoute>>,
    pub(super) deep_sleep: Option<Spanned<RawRoute>>,
    pub(super) wake: Option<Spanned<RawRoute>>,
    pub(super) sleep_ram: Option<Spanned<RawSize>>,
    pub(super) min_residency: Option<Spanned<String>>,
    pub(super) priority: Option<Spanned<i64>>,
}

/// Positions in the text, for messages that say where the problem is.
pub(super) struct Source<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

impl Source<'_> {
    pub(super) fn at(&self, offset: usize, msg: impl std::fmt::Display) -> ConfigError {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError(format!("{}:{line}:{col}: {msg}", self.file))
    }

    pub(super) fn err<T>(&self, s: &Spanned<T>, msg: impl std::fmt::Display) -> ConfigError {
        self.at(s.span().start, msg)
    }
}

pub(super) fn duration(src: &Source<'_>, d: &Spanned<String>) -> Result<Duration, ConfigError> {
    memwarden_probe::duration::parse_duration(d.get_ref())
        .map_err(|e| src.err(d, format!("invalid duration {:?}: {e}", d.get_ref())))
}

pub(super) fn size(src: &Source<'_>, s: &Spanned<RawSize>) -> Result<u64, ConfigError> {
    match s.get_ref() {
        RawSize::Bytes(b) => Ok(*b),
        RawSize::Text(t) => parse_size(t).map_err(|e| src.err(s, e)),
    }
}
