//! The one error type of the planning library; each variant names the file or value at fault.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable GGUF file: {why}")]
    Gguf { path: String, why: String },
    #[error("{path} is not a usable safetensors model: {why}")]
    Safetensors { path: String, why: String },
    #[error("{path}: {why}")]
    Model { path: String, why: String },
    #[error("{0}")]
    BadArgument(String),
    #[error("{0}")]
    Topology(String),
    #[error("cannot apply the placement to {path}: {why}")]
    Apply { path: String, why: String },
}

impl PlanError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> PlanError {
        PlanError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
