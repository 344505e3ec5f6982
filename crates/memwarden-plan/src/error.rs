//! The one error type of the planning library; each variant names the file or value at fault.

use std::path::Path;

/// Each message carries its cause, and no variant exposes it again as `source()`: the binary
/// prints the whole chain, which would say the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
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
    pub(crate) fn io(path: &Path, cause: std::io::Error) -> PlanError {
        PlanError::Io {
            path: path.display().to_string(),
            cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memwarden_probe::error_chain as chain;

    #[test]
    fn an_io_error_says_its_cause_once() {
        let e = PlanError::io(Path::new("/m.gguf"), std::io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "cannot read /m.gguf: disk on fire");
    }
}
