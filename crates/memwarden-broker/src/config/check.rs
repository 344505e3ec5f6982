//! The config's checks: each part of the file as written is checked and turned into the
//! schema, with a message that names the file, line and column of what is wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use memwarden_probe::size::format_size;
use toml::Spanned;

use super::raw::{RawConfig, RawConsumer, RawPool, RawRoute, Source, duration, size};
use super::validate;
use super::{
    Config, ConfigError, ConsumerConfig, DEFAULT_CUSHION, EstimateRequest, Estimator, NeedSource,
    PoolConfig, PoolKind, Route, ServerConfig, Unload,
};

impl Config {
    pub(super) fn parse_in(
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
        let server = server(&src, &raw, base)?;
        let warnings = validate::warnings(&src, &raw, server.listen, server.token.is_some());
        let mut pools = Vec::new();
        let mut pool_index = HashMap::new();
        for p in raw.pool {
            let name = p.name.get_ref().clone();
            check_name(&src, &p.name, "pool")?;
            if pool_index
                .insert(name.clone(), (pools.len(), p.kind))
                .is_some()
            {
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
            consumers.push(consumer(
                &src,
                c,
                &pools,
                &pool_index,
                &names,
                base,
                estimator,
            )?);
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
            warnings,
        })
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

fn server(src: &Source<'_>, all: &RawConfig, base: &Path) -> Result<ServerConfig, ConfigError> {
    let raw = &all.server;
    let listen = match &raw.listen {
        Some(l) => l.get_ref().parse().map_err(|_| {
            src.err(
                l,
                format!("listen {:?} is not an address:port", l.get_ref()),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 7077)),
    };
    let token = match (&raw.token, &raw.token_file) {
        (Some(_), Some(f)) => {
            return Err(src.err(f, "give token or token_file, not both"));
        }
        (Some(t), None) => Some((t.get_ref().clone(), t.span().start)),
        (None, Some(f)) => Some((
            read_token_file(&base.join(f.get_ref())).map_err(|e| src.err(f, e))?,
            f.span().start,
        )),
        (None, None) => None,
    };
    if let Some((t, at)) = &token {
        if t.is_empty() {
            return Err(src.at(*at, "the token is empty"));
        }
        validate::token(src, t, *at)?;
    }
    let token = token.map(|(t, _)| t);
    let limits = validate::limits(src, all)?;
    let shutdown_grace = match &raw.shutdown_grace {
        Some(d) => duration(src, d)?,
        None => Duration::from_secs(30),
    };
    Ok(ServerConfig {
        listen,
        token,
        shutdown_grace,
        max_connections: limits.max_connections,
        header_timeout: limits.header_timeout,
        allow_empty: raw.allow_empty,
        listen_given: raw.listen.is_some(),
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
    let text = memwarden_probe::root::read_to_string_bounded(path, 64 << 10)
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
    let min_residency = super::demand::pool_min_residency(src, &name, &p.min_residency, max_wait)?;
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
        min_residency,
    })
}

pub(super) fn route(src: &Source<'_>, r: &Spanned<RawRoute>) -> Result<Route, ConfigError> {
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
    validate::request_text(src, &path, r.span().start, "route path")?;
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

fn consumer(
    src: &Source<'_>,
    c: RawConsumer,
    pool_cfgs: &[PoolConfig],
    pools: &HashMap<String, (usize, PoolKind)>,
    names: &HashMap<String, usize>,
    base: &Path,
    estimator: Option<Estimator<'_>>,
) -> Result<ConsumerConfig, ConfigError> {
    let name = c.name.get_ref().clone();
    let (pool, pool_kind) = *pools.get(c.pool.get_ref()).ok_or_else(|| {
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
            let request = EstimateRequest {
                model: &model,
                ctx: est.ctx,
                engine: est.engine.as_deref(),
                gpu_memory_utilization: est.gpu_memory_utilization,
                mem_fraction_static: est.mem_fraction_static,
                pool: &pool_cfgs[pool],
            };
            let bytes = estimate(&request).map_err(|why| {
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
                    engine: est.engine.clone(),
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
    let started = super::start::started(src, &c, &need_source)?;
    let upstream = started.upstream;
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
    let sleep = super::sleep::sleep(src, &c, &name, need, upstream.is_some(), pool_kind)?;
    let (min_residency, priority) =
        super::demand::consumer_fields(src, &name, &c.min_residency, &c.priority)?;
    Ok(ConsumerConfig {
        name,
        pool,
        need,
        need_source,
        upstream,
        load,
        unload,
        health,
        start: started.start,
        stop: started.stop,
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
        sleep,
        min_residency,
        priority,
    })
}
