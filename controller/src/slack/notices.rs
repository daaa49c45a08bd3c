//! Proactive messages from agents (a reminder, an alert they set up) go to
//! the agent's owner as a DM — to the owner only, whatever conversation the
//! agent names — and are acknowledged to the mesh once Slack has them. A
//! notice that cannot be delivered stays unacknowledged, so the sidecar
//! keeps it and sends it again after its next reconnect. A notice already
//! delivered (the runtime remembers, across restarts and failovers: see
//! `runtime::notices`) is acknowledged again and not posted twice; that
//! bookkeeping is `notice_delivery`'s, shared with the Gateway's followers.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    Connector,
    app::SlackApp,
    split::{MAX_TEXT_MESSAGE, split_message},
};
use crate::{
    mesh::InboundNotice,
    notice_delivery::{self, Screened},
};

pub async fn deliver_notices<C: Connector>(
    app: Arc<SlackApp<C>>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<InboundNotice>>>,
) {
    // One courier at a time: a front door that stops hands the queue to the
    // next one (this replica leads again) by dropping the guard.
    let mut rx = tokio::select! {
        _ = app.shutdown.cancelled() => return,
        rx = rx.lock_owned() => rx,
    };
    // DM channel per owner; bounded by the number of agents.
    let mut dms: HashMap<String, String> = HashMap::new();
    loop {
        let notice = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            n = rx.recv() => match n { Some(n) => n, None => return },
        };
        deliver(&app, &mut dms, notice).await;
    }
}

async fn deliver<C: Connector>(
    app: &SlackApp<C>,
    dms: &mut HashMap<String, String>,
    n: InboundNotice,
) {
    let owner = match app.router.runtime().get(&n.agent).await {
        Ok(Some(a)) => a.owner,
        Ok(None) => {
            return warn!(agent = %n.agent, notice_id = %n.notice_id, "notice from an unknown agent not delivered");
        }
        Err(e) => {
            return warn!(agent = %n.agent, notice_id = %n.notice_id, error = %e, "notice owner lookup failed");
        }
    };
    match notice_delivery::screen(&app.router, &n).await {
        Screened::New => {}
        Screened::Duplicate => return app.api.metrics().event("notice", "duplicate"),
        Screened::Unknown => return,
    }
    let channel = match dms.get(&owner) {
        Some(c) => c.clone(),
        None => match app.api.open_dm(&owner).await {
            Ok(c) => {
                dms.insert(owner.clone(), c.clone());
                c
            }
            Err(e) => {
                return warn!(agent = %n.agent, owner = %owner, error = %e, "could not open a DM for a notice");
            }
        },
    };
    for part in split_message(&n.text, MAX_TEXT_MESSAGE) {
        if let Err(e) = app.api.post_message(&channel, None, &part).await {
            return warn!(agent = %n.agent, owner = %owner, error = %e, "notice not delivered; the agent will resend it");
        }
    }
    app.api.metrics().event("notice", "delivered");
    info!(agent = %n.agent, owner = %owner, notice_id = %n.notice_id, "notice delivered");
    notice_delivery::delivered(&app.router, &n).await;
}
