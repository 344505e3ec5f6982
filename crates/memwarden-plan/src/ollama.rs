//! Ollama model names (`llama3.1:8b`, `hf.co/org/repo:Q4_K_M`) to the GGUF blob Ollama keeps,
//! through its manifests: `manifests/HOST/NAMESPACE/MODEL/TAG` names the model layer's digest,
//! stored as `blobs/sha256-HEX`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::PlanError;

const MODEL_LAYER: &str = "application/vnd.ollama.image.model";

/// Where Ollama keeps its models: `$OLLAMA_MODELS`, the user's `~/.ollama/models`, and the
/// system service's `/usr/share/ollama/.ollama/models`.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("OLLAMA_MODELS") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".ollama/models"));
    }
    dirs.push(PathBuf::from("/usr/share/ollama/.ollama/models"));
    dirs
}

/// The manifest path parts of a name: `llama3` -> registry.ollama.ai/library/llama3/latest.
fn parts(name: &str) -> Option<(String, String, String, String)> {
    let (path, tag) = match name.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, t),
        _ => (name, "latest"),
    };
    let segs: Vec<&str> = path.split('/').collect();
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if !segs.iter().all(|s| ok(s)) || !ok(tag) {
        return None;
    }
    let (host, ns, model) = match segs.as_slice() {
        [m] => ("registry.ollama.ai", "library", *m),
        [ns, m] => ("registry.ollama.ai", *ns, *m),
        [host, ns, m] => (*host, *ns, *m),
        _ => return None,
    };
    Some((host.into(), ns.into(), model.into(), tag.into()))
}

/// The GGUF blob of Ollama model `name` under `models`, or `None` when it has no such model.
pub fn resolve(models: &Path, name: &str) -> Result<Option<PathBuf>, PlanError> {
    let Some((host, ns, model, tag)) = parts(name) else {
        return Ok(None);
    };
    let manifest = models
        .join("manifests")
        .join(host)
        .join(ns)
        .join(model)
        .join(tag);
    let Ok(text) =
        memwarden_probe::root::read_bounded(&manifest, memwarden_probe::root::MAX_FILE_BYTES)
    else {
        return Ok(None);
    };
    let bad = |why: &str| PlanError::Model {
        path: manifest.display().to_string(),
        why: why.to_string(),
    };
    let v: Value =
        serde_json::from_slice(&text).map_err(|_| bad("an Ollama manifest that is not JSON"))?;
    let digest = v
        .get("layers")
        .and_then(Value::as_array)
        .and_then(|layers| {
            layers
                .iter()
                .find(|l| l.get("mediaType").and_then(Value::as_str) == Some(MODEL_LAYER))
        })
        .and_then(|l| l.get("digest"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("an Ollama manifest without a model layer"))?;
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| bad("an Ollama manifest with a malformed digest"))?;
    let blob = models.join("blobs").join(format!("sha256-{hex}"));
    if !blob.exists() {
        return Err(PlanError::Model {
            path: blob.display().to_string(),
            why: format!("the model blob of Ollama model {name} is missing"),
        });
    }
    Ok(Some(blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = |n| parts(n).map(|(h, ns, m, t)| format!("{h}/{ns}/{m}/{t}"));
        assert_eq!(
            p("llama3").unwrap(),
            "registry.ollama.ai/library/llama3/latest"
        );
        assert_eq!(
            p("qwen3:32b").unwrap(),
            "registry.ollama.ai/library/qwen3/32b"
        );
        assert_eq!(p("me/mine:q4").unwrap(), "registry.ollama.ai/me/mine/q4");
        assert_eq!(p("hf.co/org/repo:Q4_K_M").unwrap(), "hf.co/org/repo/Q4_K_M");
        assert_eq!(p("../../etc/passwd"), None);
        assert_eq!(p("a/b/c/d"), None);
        assert_eq!(p("x:.."), None);
    }
}
