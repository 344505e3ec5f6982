//! memwarden-plan answers the questions that come before a memory-hungry launch:
//! how many workers fit ([`fit`]), how much memory a model needs ([`estimate`], reading GGUF
//! and safetensors headers only) and where it should run ([`place`], NUMA placement).
//! Pure arithmetic is kept apart from the readers so that it can be tested without a machine.

pub mod compute;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod fit;
pub mod ggml;
pub mod gguf;
pub mod kv;
pub mod model;
pub mod ollama;
pub mod place;
pub mod safetensors;
pub mod topology;

pub use error::PlanError;
pub use estimate::{Estimate, EstimateOptions, FlashAttn, KvType, estimate_file};
