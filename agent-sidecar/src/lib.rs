//! The clawswarm agent sidecar.

pub mod metrics;
pub mod model_proxy;
pub mod workload;
