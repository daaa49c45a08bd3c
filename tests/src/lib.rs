//! clawswarm end-to-end harness: stub model, fake Slack, real control plane, test kubelet.

pub mod control_plane;
pub mod fake_slack;
pub mod harness;
pub mod install;
pub mod kubelet;
pub mod openclaw;
pub mod prometheus;
pub mod readme;
pub mod search;
pub mod stub_model;

/// Route `tracing` output to the test's captured output (filter with
/// `CLAWSWARM_LOG`; the default hides kube's error line for every `/readyz`
/// poll while the API server starts). Safe to call from every test.
pub fn trace_init() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CLAWSWARM_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
