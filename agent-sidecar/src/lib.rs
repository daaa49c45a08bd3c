//! The clawswarm agent sidecar.

pub mod metrics;
pub mod workload;
