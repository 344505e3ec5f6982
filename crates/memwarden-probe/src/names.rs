//! Human names of containers and pods, asked of the runtime only when it is cheap: its state
//! files first, `docker/podman inspect` (bounded by a timeout) second, and every answer cached
//! per id for the container's life, so no sample ever waits on a runtime twice.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::root::HostRoot;
use crate::sanitize::{NAME_MAX, sanitize};

/// How long `inspect` may take before the short id stands in for the name.
pub const INSPECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// A name and image; `None` where the runtime did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerName {
    pub name: Option<String>,
    pub image: Option<String>,
}

#[derive(Debug, Default)]
pub struct NameCache {
    known: HashMap<(&'static str, String), ContainerName>,
    /// Whether `docker/podman inspect` may be run (never for a fake root).
    pub inspect: bool,
}

impl NameCache {
    pub fn new(inspect: bool) -> NameCache {
        NameCache {
            known: HashMap::new(),
            inspect,
        }
    }

    /// The name of a container or pod, resolved on first sight.
    pub fn get(&mut self, root: &HostRoot, runtime: &'static str, id: &str) -> ContainerName {
        let key = (runtime, id.to_string());
        if let Some(n) = self.known.get(&key) {
            return n.clone();
        }
        let found = match runtime {
            "docker" => docker_state(root, id),
            "podman" => podman_state(root, id),
            "kubernetes" => pod_log_dir(root, id),
            _ => None,
        };
        let found = match found {
            Some(n) => n,
            None if self.inspect && matches!(runtime, "docker" | "podman") => {
                inspect(runtime, id).unwrap_or_default()
            }
            None => ContainerName::default(),
        };
        self.known.insert(key, found.clone());
        found
    }

    /// Forgets containers no longer running (their ids not in `live`).
    pub fn retain(&mut self, live: &HashSet<(&'static str, String)>) {
        self.known.retain(|k, _| live.contains(k));
    }
}

fn clean(s: &str) -> Option<String> {
    let s = sanitize(s.trim().trim_start_matches('/'), NAME_MAX);
    (!s.is_empty()).then_some(s)
}

/// Docker's `containers/<id>/config.v2.json` (`Name`, `Config.Image`).
fn docker_state(root: &HostRoot, id: &str) -> Option<ContainerName> {
    let text = root
        .read_to_string(&format!("/var/lib/docker/containers/{id}/config.v2.json"))
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(ContainerName {
        name: v["Name"].as_str().and_then(clean),
        image: v["Config"]["Image"].as_str().and_then(clean),
    })
}

/// Podman's (containers/storage) `containers.json`: `[{id, names, image}]`, rootful store.
fn podman_state(root: &HostRoot, id: &str) -> Option<ContainerName> {
    let text = root
        .read_to_string("/var/lib/containers/storage/overlay-containers/containers.json")
        .ok()?;
    let list: serde_json::Value = serde_json::from_str(&text).ok()?;
    let c = list.as_array()?.iter().find(|c| c["id"] == id)?;
    Some(ContainerName {
        name: c["names"][0].as_str().and_then(clean),
        image: c["metadata"]
            .as_str()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|m| m["image-name"].as_str().and_then(clean)),
    })
}

/// The kubelet's `/var/log/pods/<namespace>_<name>_<uid>` directories name every pod.
fn pod_log_dir(root: &HostRoot, uid: &str) -> Option<ContainerName> {
    let dir = std::fs::read_dir(root.path("/var/log/pods")).ok()?;
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| {
            let (rest, u) = n.rsplit_once('_')?;
            let (ns, name) = rest.split_once('_')?;
            (u == uid).then(|| ContainerName {
                name: clean(&format!("{ns}/{name}")),
                image: None,
            })
        })
}

/// `docker|podman inspect` with a timeout; a missing runtime or a slow one gives `None`.
fn inspect(runtime: &str, id: &str) -> Option<ContainerName> {
    let mut child = Command::new(runtime)
        .args(["inspect", "--format", "{{.Name}}\t{{.Config.Image}}", id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + INSPECT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let line = out.lines().next()?;
    let (name, image) = line.split_once('\t').unwrap_or((line, ""));
    Some(ContainerName {
        name: clean(name),
        image: clean(image),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakeroot::FakeRoot;

    #[test]
    fn from_state_files() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeRoot::new(tmp.path());
        fake.file(
            "/var/lib/docker/containers/abc123abc123/config.v2.json",
            r#"{"Name":"/hal0-slot-qwen","Config":{"Image":"ghcr.io/ggml-org/llama.cpp:server"}}"#,
        )
        .unwrap();
        fake.file(
            "/var/lib/containers/storage/overlay-containers/containers.json",
            r#"[{"id":"def456def456","names":["comfyui"],"metadata":"{\"image-name\":\"docker.io/comfy:latest\"}"}]"#,
        )
        .unwrap();
        fake.file("/var/log/pods/ml_vllm-0_0f1e2d3c-4b5a/x/0.log", "")
            .unwrap();
        let root = HostRoot::new(tmp.path()).unwrap();
        let mut cache = NameCache::new(false);
        let d = cache.get(&root, "docker", "abc123abc123");
        assert_eq!(d.name.as_deref(), Some("hal0-slot-qwen"));
        assert_eq!(
            d.image.as_deref(),
            Some("ghcr.io/ggml-org/llama.cpp:server")
        );
        let p = cache.get(&root, "podman", "def456def456");
        assert_eq!(p.name.as_deref(), Some("comfyui"));
        assert_eq!(p.image.as_deref(), Some("docker.io/comfy:latest"));
        let k = cache.get(&root, "kubernetes", "0f1e2d3c-4b5a");
        assert_eq!(k.name.as_deref(), Some("ml/vllm-0"));
        assert_eq!(
            cache.get(&root, "docker", "ffffffffffff"),
            ContainerName::default()
        );
    }

    #[test]
    fn a_missing_runtime_is_no_name() {
        assert_eq!(inspect("memwarden-no-such-runtime", "abc"), None);
    }
}
