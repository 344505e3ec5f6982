//! Servers that sleep, outside the state owner: what the sampler reads of them in host RAM,
//! and what `serve --check` and the start-up log say of them (the engine's requirement, and
//! for vLLM whether its processes' environment meets it).

use std::io::Read;
use std::time::Duration;

use axum::body::Body;
use http_body_util::{BodyExt, Limited};
use memwarden_probe::HostRoot;

use crate::config::{Config, PoolKind, Sleep, SleepEngine, Upstream};
use crate::lifecycle::HttpClient;
use crate::measure::Target;

/// The most of vLLM's `/is_sleeping` answer read: `{"is_sleeping": true}` and room to spare.
const IS_SLEEPING_MAX: usize = 4096;

/// Asks a vLLM server whether it sleeps (`GET /is_sleeping`, `{"is_sleeping": bool}`), within
/// `timeout`; why not, when it does not answer so.
pub async fn is_sleeping(
    client: &HttpClient,
    up: &Upstream,
    timeout: Duration,
) -> Result<bool, String> {
    let url = up.url("/is_sleeping");
    let ask = async {
        let req = hyper::Request::get(&url)
            .header(hyper::header::HOST, up.authority())
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), IS_SLEEPING_MAX)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        parse_is_sleeping(&body)
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(r) => r.map_err(|e| format!("GET {url}: {e}")),
        Err(_) => Err(format!("GET {url} did not answer in time")),
    }
}

/// vLLM's answer to `GET /is_sleeping`.
fn parse_is_sleeping(body: &[u8]) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        is_sleeping: bool,
    }
    serde_json::from_slice::<Answer>(body)
        .map(|a| a.is_sleeping)
        .map_err(|e| format!("not vLLM's answer: {e}"))
}

/// The host-RAM side of a reading: for each consumer that can sleep, the same processes as
/// its pool's target, read as a `ram` pool's (its weights while asleep).
pub fn host_targets(cfg: &Config, targets: &[Target]) -> Vec<Option<Target>> {
    (cfg.consumers.iter().zip(targets))
        .map(|(c, t)| {
            c.sleep.as_ref().map(|_| Target {
                kind: PoolKind::Ram,
                gpu: None,
                ..t.clone()
            })
        })
        .collect()
}

/// Whether host RAM is read apart from the pools: a consumer can sleep and no `ram` pool
/// counts what it holds there.
pub fn reads_host(cfg: &Config) -> bool {
    cfg.consumers.iter().any(|c| c.sleep.is_some())
        && !cfg.pools.iter().any(|p| p.kind == PoolKind::Ram)
}

/// The most of a process's environment read: more than any real one, less than a file could be.
const ENVIRON_MAX: u64 = 1 << 20;

/// Whether an environment (`/proc/PID/environ`: NUL-separated) turns on vLLM's development
/// routes, `/sleep` and `/wake_up` among them.
pub fn dev_mode(environ: &[u8]) -> bool {
    environ
        .split(|&b| b == 0)
        .any(|kv| kv == b"VLLM_SERVER_DEV_MODE=1")
}

/// The line about a consumer's sleep, given the processes its memory is read from (none
/// when they are not found).
pub fn describe(sleep: &Sleep, root: &HostRoot, pids: &[u32]) -> Option<String> {
    let note = sleep.note()?;
    if sleep.engine != SleepEngine::Vllm {
        return Some(note.to_string());
    }
    let environs: Vec<Vec<u8>> = (pids.iter())
        .filter_map(|pid| {
            let f = std::fs::File::open(root.path(&format!("/proc/{pid}/environ"))).ok()?;
            let mut buf = Vec::new();
            f.take(ENVIRON_MAX).read_to_end(&mut buf).ok()?;
            Some(buf)
        })
        .collect();
    Some(if environs.iter().any(|e| dev_mode(e)) {
        "sleeps through vLLM's development routes: VLLM_SERVER_DEV_MODE=1 is set".to_string()
    } else if !environs.is_empty() {
        "sleeps through vLLM's development routes, but VLLM_SERVER_DEV_MODE=1 is not in its \
         environment: /sleep will answer 404 until it is restarted with it"
            .to_string()
    } else {
        note.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllms_answer_says_whether_it_sleeps() {
        assert_eq!(parse_is_sleeping(br#"{"is_sleeping": true}"#), Ok(true));
        assert_eq!(
            parse_is_sleeping(br#"{"is_sleeping":false,"x":1}"#),
            Ok(false)
        );
        assert!(parse_is_sleeping(b"ok").is_err());
        assert!(parse_is_sleeping(br#"{"sleeping": true}"#).is_err());
    }

    #[test]
    fn the_dev_mode_is_one_variable_set_to_1() {
        assert!(dev_mode(b"PATH=/bin\0VLLM_SERVER_DEV_MODE=1\0HOME=/root\0"));
        assert!(dev_mode(b"VLLM_SERVER_DEV_MODE=1"));
        assert!(!dev_mode(b"VLLM_SERVER_DEV_MODE=0\0"));
        assert!(!dev_mode(b"XVLLM_SERVER_DEV_MODE=1\0"));
        assert!(!dev_mode(b""));
    }
}
