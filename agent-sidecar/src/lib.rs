//! The clawswarm agent sidecar: identity client, controller link, relay to
//! the workload, debug endpoint, metrics.

pub mod app;
pub mod backoff;
pub mod config;
pub mod data_proxy;
pub mod debug;
pub mod error_chain;
pub mod http;
pub mod identity;
pub mod install_policy;
pub mod link;
pub mod metrics;
pub mod model_proxy;
pub mod notices;
pub mod readiness;
pub mod relay;
pub mod sandbox_bridge;
pub mod secret;
pub mod skills;
pub mod token_file;
pub mod volume;
pub mod workload;
