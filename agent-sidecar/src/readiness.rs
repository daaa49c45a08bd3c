//! Polls the workload's readiness and publishes changes: they drive Status
//! frames to the controller, the `workload_up` gauge, and turns waiting for
//! a workload that is (re)starting.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    metrics::SidecarMetrics, volume::VolumeCheck, workload::Readiness, workload::Workload,
};

/// A check that takes longer counts as "not ready".
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub fn initial() -> (watch::Sender<Readiness>, watch::Receiver<Readiness>) {
    watch::channel(Readiness::not_ready("workload not checked yet"))
}

/// Poll faster while not ready (a starting workload), slower once ready.
/// A volume that is full overrides the workload's own answer: turns are
/// refused with that reason until space is freed.
pub async fn poll(
    workload: Arc<dyn Workload>,
    volume: Option<VolumeCheck>,
    tx: watch::Sender<Readiness>,
    metrics: Arc<SidecarMetrics>,
    shutdown: CancellationToken,
) {
    loop {
        let mut now = match tokio::time::timeout(CHECK_TIMEOUT, workload.check_ready()).await {
            Ok(r) => r,
            Err(_) => Readiness::not_ready(format!(
                "readiness check took longer than {CHECK_TIMEOUT:?}"
            )),
        };
        if let Some(problem) = volume.as_ref().and_then(VolumeCheck::problem) {
            now = Readiness::refusing(problem);
        }
        metrics.workload_up.set(i64::from(now.ready));
        let changed = tx.send_if_modified(|cur| {
            // Details change rarely (starting → ready, a model problem
            // found or cleared), and each one is worth a Status frame.
            if cur.ready != now.ready || cur.detail != now.detail || cur.refusing != now.refusing {
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
