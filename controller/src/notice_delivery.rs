//! The delivery bookkeeping every front door that hands out agents' notices
//! shares (Slack's DMs, the Gateway's followers): a resend of a notice
//! already delivered is acknowledged and not shown again; a delivered one is
//! recorded, then acknowledged. Any failure is logged and leaves the notice
//! with the agent, whose sidecar resends it after its next reconnect.
//!
//! The record is written before the ack: once the sidecar forgets the
//! notice, only this record (`runtime::notices`) stops a resend that was
//! already in flight from being shown twice. (A controller that dies
//! between showing a notice and recording it shows it twice.)

use tracing::{info, warn};

use crate::{mesh::InboundNotice, router::Router};

/// What [`screen`] found out about a notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screened {
    /// Not delivered before: deliver it, then call [`delivered`].
    New,
    /// Delivered before; acknowledged again here, not to be shown.
    Duplicate,
    /// The runtime could not say: not delivered now (the agent resends it).
    Unknown,
}

/// Whether `n` still needs delivering; a duplicate is acknowledged here.
pub async fn screen(router: &Router, n: &InboundNotice) -> Screened {
    match router
        .runtime()
        .notice_delivered(&n.agent, &n.notice_id)
        .await
    {
        Ok(false) => Screened::New,
        Ok(true) => {
            info!(agent = %n.agent, notice_id = %n.notice_id, "notice already delivered; acknowledged, not shown again");
            ack(router, n).await;
            Screened::Duplicate
        }
        Err(e) => {
            warn!(agent = %n.agent, notice_id = %n.notice_id, error = %e, "could not tell whether the notice was delivered; the agent will resend it");
            Screened::Unknown
        }
    }
}

/// `n` reached its people: record it, then acknowledge it to the agent.
pub async fn delivered(router: &Router, n: &InboundNotice) {
    if let Err(e) = router
        .runtime()
        .record_notice_delivered(&n.agent, &n.notice_id)
        .await
    {
        warn!(agent = %n.agent, notice_id = %n.notice_id, error = %e, "delivered notice not recorded; a resend would be shown again");
    }
    ack(router, n).await;
}

async fn ack(router: &Router, n: &InboundNotice) {
    if let Err(e) = router.mesh().ack_notice(&n.agent, &n.notice_id).await {
        warn!(agent = %n.agent, notice_id = %n.notice_id, error = %e, "notice not acknowledged; the agent will resend it");
    }
}
