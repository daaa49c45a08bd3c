//! Notices the agent produced on its own, kept until the controller
//! acknowledges delivery — across reconnects and sidecar restarts (the
//! outbox is a file in the agent's data directory).

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use clawswarm_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    metrics::{ResultLabel, SidecarMetrics},
    workload::WorkloadNotice,
};

/// Undelivered notices kept at most; the workload waits for room beyond it.
pub const MAX_PENDING: usize = 1000;
/// Longest notice text kept (the controller refuses larger ones).
pub const MAX_TEXT_BYTES: usize = 60 * 1024;

pub struct Outbox {
    pending: Mutex<VecDeque<pb::Notice>>,
    path: Option<PathBuf>,
    version: watch::Sender<u64>,
    room: Notify,
    metrics: Arc<SidecarMetrics>,
}

impl Outbox {
    /// Load what a previous run left undelivered.
    pub fn open(path: Option<PathBuf>, metrics: Arc<SidecarMetrics>) -> Arc<Self> {
        let pending: VecDeque<pb::Notice> = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice::<Vec<StoredNotice>>(&bytes).ok())
            .map(|v| v.into_iter().map(Into::into).collect())
            .unwrap_or_default();
        if !pending.is_empty() {
            info!(
                count = pending.len(),
                "undelivered notices from a previous run"
            );
        }
        Arc::new(Self {
            pending: Mutex::new(pending),
            path,
            version: watch::Sender::new(0),
            room: Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<pb::Notice>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a notice (waits while the outbox is full). Duplicates of a
    /// notice still pending are ignored.
    pub async fn push(&self, n: WorkloadNotice) {
        let mut text = n.text;
        if text.len() > MAX_TEXT_BYTES {
            let mut cut = MAX_TEXT_BYTES - 3;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let notice = pb::Notice {
            notice_id: n.notice_id,
            conversation: n.conversation,
            text,
        };
        loop {
            let room = self.room.notified();
            {
                let mut q = self.lock();
                if q.iter().any(|p| p.notice_id == notice.notice_id) {
                    return;
                }
                if q.len() < MAX_PENDING {
                    q.push_back(notice);
                    self.persist(&q);
                    break;
                }
            }
            warn!("notice outbox full; waiting for the controller to acknowledge some");
            room.await;
        }
        self.version.send_modify(|v| *v += 1);
    }

    pub fn ack(&self, notice_id: &str) {
        let mut q = self.lock();
        let before = q.len();
        q.retain(|n| n.notice_id != notice_id);
        if q.len() != before {
            self.persist(&q);
            self.metrics
                .notices
                .get_or_create(&ResultLabel {
                    result: "delivered",
                })
                .inc();
            self.room.notify_waiters();
        }
    }

    pub fn pending(&self) -> Vec<pb::Notice> {
        self.lock().iter().cloned().collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn persist(&self, q: &VecDeque<pb::Notice>) {
        let Some(path) = &self.path else { return };
        let stored: Vec<StoredNotice> = q.iter().cloned().map(Into::into).collect();
        let result = serde_json::to_vec(&stored)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            });
        if let Err(e) = result {
            warn!(error = %e, path = %path.display(), "cannot persist the notice outbox");
        }
    }

    /// Move the workload's notices into the outbox until shutdown.
    pub async fn pump(
        self: Arc<Self>,
        mut notices: futures::stream::BoxStream<'static, WorkloadNotice>,
        shutdown: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = notices.next() => n,
            };
            let Some(n) = next else { return };
            self.metrics
                .notices
                .get_or_create(&ResultLabel { result: "received" })
                .inc();
            self.push(n).await;
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredNotice {
    notice_id: String,
    conversation: String,
    text: String,
}

impl From<StoredNotice> for pb::Notice {
    fn from(s: StoredNotice) -> Self {
        Self {
            notice_id: s.notice_id,
            conversation: s.conversation,
            text: s.text,
        }
    }
}

impl From<pb::Notice> for StoredNotice {
    fn from(n: pb::Notice) -> Self {
        Self {
            notice_id: n.notice_id,
            conversation: n.conversation,
            text: n.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(id: &str) -> WorkloadNotice {
        WorkloadNotice {
            notice_id: id.into(),
            conversation: String::new(),
            text: "anomaly found".into(),
        }
    }

    #[tokio::test]
    async fn notices_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.json");
        let outbox = Outbox::open(Some(path.clone()), SidecarMetrics::new());
        outbox.push(notice("a")).await;
        outbox.push(notice("b")).await;
        outbox.push(notice("a")).await; // duplicate
        outbox.ack("a");
        let reopened = Outbox::open(Some(path), SidecarMetrics::new());
        let ids: Vec<_> = reopened
            .pending()
            .into_iter()
            .map(|n| n.notice_id)
            .collect();
        assert_eq!(ids, ["b"]);
    }

    #[tokio::test]
    async fn oversized_notice_text_is_cut_on_a_char_boundary() {
        let outbox = Outbox::open(None, SidecarMetrics::new());
        let mut n = notice("big");
        n.text = "é".repeat(MAX_TEXT_BYTES);
        outbox.push(n).await;
        let text = &outbox.pending()[0].text;
        assert!(text.len() <= MAX_TEXT_BYTES && text.ends_with('…'));
    }
}
