//! Polls the workload's readiness and publishes changes: they drive Status
//! frames to the controller, the `workload_up` gauge, and turns waiting for
//! a workload that is (re)starting.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{metrics::SidecarMetrics, workload::Readiness, workload::Workload};

/// A check that takes longer counts as "not ready".
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub fn initial() -> (watch::Sender<Readiness>, watch::Receiver<Readiness>) {
    watch::channel(Readiness::not_ready("workload not checked yet"))
}

/// Poll faster while not ready (a starting workload), slower once ready.
pub async fn poll(
    workload: Arc<dyn Workload>,
    tx: watch::Sender<Readiness>,
    metrics: Arc<SidecarMetrics>,
    shutdown: CancellationToken,
) {
    loop {
        let now = match tokio::time::timeout(CHECK_TIMEOUT, workload.check_ready()).await {
            Ok(r) => r,
            Err(_) => Readiness::not_ready(format!(
                "readiness check took longer than {CHECK_TIMEOUT:?}"
            )),
        };
        metrics.workload_up.set(i64::from(now.ready));
        // Detail changes count while ready too: a provider refusing the
        // key leaves the workload "ready" (turns must still fail fast) and
        // the detail is where an operator sees why.
        let changed = tx.send_if_modified(|cur| {
            if *cur != now {
                *cur = now.clone();
                true
            } else {
                false
            }
        });
        if changed {
            if now.ready {
                info!(detail = %now.detail, "workload ready");
            } else {
                warn!(detail = %now.detail, "workload not ready");
            }
        }
        let every = if now.ready {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
