//! Agents' notices where no Slack app delivers them (the embedded default,
//! or any controller without Slack): held per agent until someone follows
//! that agent's notices over the Gateway (`clawswarm notices NAME`), then
//! handed to every follower and acknowledged to the agent.
//!
//! Nothing is lost on the way: a notice is acknowledged only once a follower
//! has it on its stream, and one dropped from the bounded hold (or held by a
//! controller that stopped) is still in the sidecar's outbox, which sends it
//! again after its next reconnect. A resend of a notice already handed out
//! (the runtime remembers, as for Slack: `runtime::notices`) is acknowledged
//! and not shown twice.
//!
//! One task owns the hold and the followers (no locks); the Gateway asks it
//! for a follower's queue.

use std::collections::{HashMap, VecDeque};

use clawswarm_certs::AgentId;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    mesh::InboundNotice,
    notice_delivery::{self, Screened},
    router::Router,
};

/// Notices kept per agent while nobody follows it; the oldest go first
/// (and stay with the agent, which resends them).
pub const HELD_PER_AGENT: usize = 64;
/// Notices queued for one follower; a follower this far behind misses new
/// ones (they stay held for the next follower or resend).
pub const FOLLOWER_QUEUE: usize = 2 * HELD_PER_AGENT;
/// Follow requests waiting for the courier.
const REQUESTS: usize = 16;

/// The Gateway's handle on the courier task.
#[derive(Clone)]
pub struct NoticeInbox {
    requests: mpsc::Sender<Follow>,
}

struct Follow {
    agent: AgentId,
    reply: oneshot::Sender<mpsc::Receiver<InboundNotice>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the controller is shutting down")]
pub struct InboxClosed;

impl NoticeInbox {
    /// The handle and the courier task that serves it until `stop` or
    /// until the mesh closes its notice queue; the caller runs (owns) it.
    pub fn new(
        router: Router,
        notices: mpsc::Receiver<InboundNotice>,
        stop: CancellationToken,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (requests, rx) = mpsc::channel(REQUESTS);
        let courier = Courier {
            router,
            held: HashMap::new(),
            followers: HashMap::new(),
        };
        (Self { requests }, courier.run(notices, rx, stop))
    }

    /// A queue of `agent`'s notices: those held first, then each as it
    /// arrives, until the receiver is dropped.
    pub async fn follow(
        &self,
        agent: AgentId,
    ) -> Result<mpsc::Receiver<InboundNotice>, InboxClosed> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Follow { agent, reply })
            .await
            .map_err(|_| InboxClosed)?;
        rx.await.map_err(|_| InboxClosed)
    }
}

struct Courier {
    router: Router,
    held: HashMap<AgentId, VecDeque<InboundNotice>>,
    followers: HashMap<AgentId, Vec<mpsc::Sender<InboundNotice>>>,
}

impl Courier {
    async fn run(
        mut self,
        mut notices: mpsc::Receiver<InboundNotice>,
        mut requests: mpsc::Receiver<Follow>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                n = notices.recv() => match n {
                    Some(n) => self.arrived(n).await,
                    None => return,
                },
                Some(f) = requests.recv() => {
                    let rx = self.follow(f.agent).await;
                    // A caller that gave up meanwhile drops the queue.
                    let _ = f.reply.send(rx);
                }
            }
        }
    }

    async fn arrived(&mut self, n: InboundNotice) {
        if notice_delivery::screen(&self.router, &n).await != Screened::New {
            return;
        }
        if self.hand_over(&n) {
            self.delivered(&n).await;
        } else {
            self.hold(n);
        }
    }

    async fn follow(&mut self, agent: AgentId) -> mpsc::Receiver<InboundNotice> {
        let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
        self.followers.entry(agent.clone()).or_default().push(tx);
        for n in self.held.remove(&agent).unwrap_or_default() {
            if self.hand_over(&n) {
                self.delivered(&n).await;
            } else {
                self.hold(n);
            }
        }
        rx
    }

    /// Give `n` to every live follower of its agent; true if one took it.
    fn hand_over(&mut self, n: &InboundNotice) -> bool {
        let Some(followers) = self.followers.get_mut(&n.agent) else {
            return false;
        };
        followers.retain(|f| !f.is_closed());
        let mut taken = false;
        for f in followers.iter() {
            match f.try_send(n.clone()) {
                Ok(()) => taken = true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!(agent = %n.agent, notice_id = %n.notice_id, "a follower of this agent's notices is not reading; it misses this one");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if followers.is_empty() {
            self.followers.remove(&n.agent);
        }
        taken
    }

    fn hold(&mut self, n: InboundNotice) {
        let held = self.held.entry(n.agent.clone()).or_default();
        if held.iter().any(|h| h.notice_id == n.notice_id) {
            return;
        }
        if held.len() >= HELD_PER_AGENT
            && let Some(old) = held.pop_front()
        {
            warn!(agent = %old.agent, notice_id = %old.notice_id, "too many notices held for an agent nobody follows: the oldest stays with the agent, which resends it after its next reconnect");
        }
        info!(agent = %n.agent, notice_id = %n.notice_id, "notice held until someone follows this agent's notices (clawswarm notices NAME)");
        held.push_back(n);
    }

    async fn delivered(&self, n: &InboundNotice) {
        info!(agent = %n.agent, notice_id = %n.notice_id, "notice delivered to its followers");
        notice_delivery::delivered(&self.router, n).await;
    }
}
