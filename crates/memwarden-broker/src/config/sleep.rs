//! The `sleep`, `deep_sleep`, `wake` and `sleep_ram` keys of a consumer: a server that can
//! give its GPU memory back without stopping (vLLM's sleep mode, SGLang's memory release) and
//! take it again in seconds.

use memwarden_probe::size::format_size;

use super::check::route;
use super::raw::{RawConsumer, RawRoute, Source, size};
use super::{ConfigError, PoolKind, Route};

/// Host RAM kept free beside the sleepers when no `ram` pool is configured: a level-1 sleep is
/// chosen only while `MemAvailable` less this still takes the server's weights.
pub const HOST_CUSHION: u64 = 1 << 30;

/// The engine whose routes a preset names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepEngine {
    /// `sleep = "vllm"`: routes that vLLM serves only with `VLLM_SERVER_DEV_MODE=1`.
    Vllm,
    /// `sleep = "sglang"`.
    Sglang,
    /// Routes written in the file.
    Routes,
}

/// How a consumer is put to sleep and woken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sleep {
    pub engine: SleepEngine,
    /// Level 1: the weights go to host RAM, the GPU memory is given back.
    pub sleep: Route,
    /// Level 2: the weights are dropped too; chosen when host RAM cannot take them.
    pub deep: Option<Route>,
    pub wake: Route,
    /// Called after waking from level 2, in order: the weights are read again.
    pub reload: Vec<Route>,
    /// What a level-1 sleeper holds in host RAM (its weights): its declared `sleep_ram`, or its
    /// whole need when none is given.
    pub ram: u64,
}

impl Sleep {
    /// What `serve --check` says of it: a requirement of the server that the broker cannot
    /// see from here.
    pub fn note(&self) -> Option<&'static str> {
        match self.engine {
            SleepEngine::Vllm => Some(
                "sleeps through vLLM's development routes: the server must run with \
                 VLLM_SERVER_DEV_MODE=1 and --enable-sleep-mode, or /sleep answers 404",
            ),
            SleepEngine::Sglang => Some(
                "sleeps through SGLang's memory release: the server must run with \
                 --enable-memory-saver (and --enable-weights-cpu-backup to keep its weights \
                 in host RAM)",
            ),
            SleepEngine::Routes => None,
        }
    }
}

fn post(path: &str, body: Option<&str>) -> Route {
    Route {
        method: "POST".into(),
        path: path.into(),
        body: body.map(str::to_string),
    }
}

/// The routes of an engine's preset (its `ram` set by the caller).
fn preset(line: &str) -> Option<Sleep> {
    let (engine, sleep, deep, wake, reload) = match line.trim() {
        "vllm" => (
            SleepEngine::Vllm,
            post("/sleep?level=1", None),
            Some(post("/sleep?level=2", None)),
            post("/wake_up", None),
            vec![post(
                "/collective_rpc",
                Some(r#"{"method":"reload_weights"}"#),
            )],
        ),
        "sglang" => (
            SleepEngine::Sglang,
            post("/release_memory_occupation", Some("{}")),
            None,
            post("/resume_memory_occupation", Some("{}")),
            Vec::new(),
        ),
        _ => return None,
    };
    Some(Sleep {
        engine,
        sleep,
        deep,
        wake,
        reload,
        ram: 0,
    })
}

/// The consumer's sleep, checked: a preset or routes, on a GPU pool, with an upstream.
pub(super) fn sleep(
    src: &Source<'_>,
    c: &RawConsumer,
    name: &str,
    need: u64,
    has_upstream: bool,
    pool_kind: PoolKind,
) -> Result<Option<Sleep>, ConfigError> {
    let Some(s) = &c.sleep else {
        if let Some(k) = c.deep_sleep.as_ref().or(c.wake.as_ref()) {
            return Err(src.err(k, format!("consumer {name:?}: this key needs `sleep`")));
        }
        if let Some(r) = &c.sleep_ram {
            return Err(src.err(r, format!("consumer {name:?}: sleep_ram needs `sleep`")));
        }
        return Ok(None);
    };
    if !has_upstream {
        return Err(src.err(s, format!("consumer {name:?}: sleep needs an `upstream`")));
    }
    if pool_kind == PoolKind::Ram {
        return Err(src.err(
            s,
            format!(
                "consumer {name:?}: sleep moves a server's memory from a GPU pool to host RAM; \
                 its pool is a ram pool"
            ),
        ));
    }
    let named = match s.get_ref() {
        RawRoute::Line(l) => preset(l),
        RawRoute::Table(_) => None,
    };
    let deep = c.deep_sleep.as_ref().map(|d| route(src, d)).transpose()?;
    let mut sleep = match named {
        Some(p) => {
            if let Some(w) = &c.wake {
                return Err(src.err(
                    w,
                    format!("consumer {name:?}: the sleep preset has its own wake route"),
                ));
            }
            Sleep {
                deep: deep.or(p.deep.clone()),
                ..p
            }
        }
        None => {
            let Some(w) = &c.wake else {
                return Err(src.err(
                    s,
                    format!(
                        "consumer {name:?}: a sleep route needs a `wake` route (or use a \
                         preset: sleep = \"vllm\" or \"sglang\")"
                    ),
                ));
            };
            Sleep {
                engine: SleepEngine::Routes,
                sleep: route(src, s)?,
                deep,
                wake: route(src, w)?,
                reload: Vec::new(),
                ram: 0,
            }
        }
    };
    let ram = match &c.sleep_ram {
        Some(r) => {
            let v = size(src, r)?;
            if v > need {
                return Err(src.err(
                    r,
                    format!(
                        "consumer {name:?}: sleep_ram ({}) is more than it needs awake ({})",
                        format_size(v),
                        format_size(need)
                    ),
                ));
            }
            v
        }
        None => need,
    };
    sleep.ram = ram;
    Ok(Some(sleep))
}

#[cfg(test)]
mod tests {
    use super::super::{Config, SleepEngine};

    const BASE: &str = "[[pool]]\nname = \"gpu\"\nkind = \"vram\"\ngpu = 0\n\
        [[pool]]\nname = \"ram\"\nkind = \"ram\"\n\
        [[consumer]]\nname = \"v\"\npool = \"gpu\"\nresident = \"20GiB\"\n\
        upstream = \"http://127.0.0.1:8000\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), "t.toml", None).map_err(|e| e.0)
    }

    #[test]
    fn presets_name_the_engines_routes() {
        let cfg = parse("sleep = \"vllm\"\nsleep_ram = \"8GiB\"\n").unwrap();
        let s = cfg.consumers[0].sleep.clone().unwrap();
        assert_eq!(s.engine, SleepEngine::Vllm);
        assert_eq!(
            (s.sleep.method.as_str(), s.sleep.path.as_str()),
            ("POST", "/sleep?level=1")
        );
        assert_eq!(s.deep.as_ref().unwrap().path, "/sleep?level=2");
        assert_eq!(s.wake.path, "/wake_up");
        assert_eq!(s.reload[0].path, "/collective_rpc");
        assert_eq!(s.ram, 8 << 30);
        assert!(cfg.consumers[0].can_evict() && !cfg.consumers[0].can_unload());
        assert!(s.note().unwrap().contains("VLLM_SERVER_DEV_MODE=1"));
        let s = parse("sleep = \"sglang\"\n").unwrap().consumers[0]
            .sleep
            .clone()
            .unwrap();
        assert_eq!(s.engine, SleepEngine::Sglang);
        assert_eq!(s.sleep.path, "/release_memory_occupation");
        assert_eq!(s.wake.path, "/resume_memory_occupation");
        assert_eq!((s.deep, s.ram), (None, 20 << 30));
        // Routes of its own, with a level 2.
        let s = parse(
            "sleep = \"POST /nap\"\nwake = \"POST /up\"\ndeep_sleep = \"POST /nap?deep=1\"\n",
        )
        .unwrap()
        .consumers[0]
            .sleep
            .clone()
            .unwrap();
        assert_eq!(
            (s.engine, s.wake.path.as_str()),
            (SleepEngine::Routes, "/up")
        );
        assert_eq!(s.deep.unwrap().path, "/nap?deep=1");
    }

    #[test]
    fn a_sleep_that_cannot_work_is_refused_where_it_is_written() {
        assert_eq!(
            parse("sleep = \"POST /nap\"\n").unwrap_err(),
            "t.toml:13:9: consumer \"v\": a sleep route needs a `wake` route (or use a preset: \
             sleep = \"vllm\" or \"sglang\")"
        );
        assert_eq!(
            parse("wake = \"POST /up\"\n").unwrap_err(),
            "t.toml:13:8: consumer \"v\": this key needs `sleep`"
        );
        assert_eq!(
            parse("sleep = \"vllm\"\nwake = \"POST /up\"\n").unwrap_err(),
            "t.toml:14:8: consumer \"v\": the sleep preset has its own wake route"
        );
        assert!(
            parse("sleep = \"vllm\"\nsleep_ram = \"21GiB\"\n")
                .unwrap_err()
                .contains("sleep_ram (21 GiB) is more than it needs awake (20 GiB)")
        );
        let ram = BASE.replace("pool = \"gpu\"", "pool = \"ram\"");
        let e = Config::parse(&format!("{ram}sleep = \"vllm\"\n"), "t.toml", None).unwrap_err();
        assert!(e.0.contains("its pool is a ram pool"), "{}", e.0);
        let remote = BASE.replace("upstream = \"http://127.0.0.1:8000\"\n", "");
        let e = Config::parse(&format!("{remote}sleep = \"vllm\"\n"), "t.toml", None).unwrap_err();
        assert!(e.0.contains("sleep needs an `upstream`"), "{}", e.0);
    }
}
