//! memwarden-broker: the daemon that sits in front of model servers sharing one GPU (or one
//! machine's RAM) and makes room when a request or job needs it: admission with a ledger,
//! least-recently-used eviction that respects coexistence and verifies that memory came back,
//! a bounded queue, a streaming proxy, leases, status and Prometheus metrics.

pub mod admission;
pub mod api;
pub mod body_budget;
pub mod client;
pub mod config;
mod conns;
pub mod daemon;
pub mod events;
pub mod gate;
pub mod handle;
pub mod human;
pub mod lifecycle;
pub mod logs;
pub mod measure;
pub mod metrics;
pub mod model_field;
pub mod owner;
pub mod proxy_path;
pub mod sleep;
pub mod sse;
pub mod verify;

pub use config::Config;
pub use daemon::{Running, ServeOptions, check_config, serve_blocking, start};
