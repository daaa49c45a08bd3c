//! Which front doors this replica opens, and when. Nothing serves before the
//! runtime knows this replica's [`Role`] (caches synced, leadership decided);
//! the Slack front door runs only on the leader (started on gaining the
//! Lease, stopped on losing it); `/readyz` and
//! `clawswarm_slack_front_door{state}` say where this replica stands.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, error, info, info_span, warn};

use crate::{runtime::Role, slack::SlackError, slack::metrics::SlackMetrics};

/// First wait before a failed Slack front door is started again.
const RESTART_MIN: Duration = Duration::from_secs(1);
/// Longest wait between restarts of a failing Slack front door.
const RESTART_MAX: Duration = Duration::from_secs(60);
/// How long a stopping Slack front door may take (it lets replies finish).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where this replica's Slack front door stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlackState {
    /// Slack is not configured.
    Off,
    /// Not the leader (a standby, or leadership not known yet): no connection.
    Standby,
    /// The leader is connecting (`auth.test`, `apps.connections.open`).
    Connecting,
    /// Connected (Socket Mode) or answering the Events API.
    Serving,
    /// It stopped with an error; started again after a backoff.
    Failed,
}

impl SlackState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Standby => "standby",
            Self::Connecting => "connecting",
            Self::Serving => "serving",
            Self::Failed => "failed",
        }
    }
}

/// Called by a running Slack front door with `true` once it serves.
pub type OnServing = Arc<dyn Fn(bool) + Send + Sync>;

/// This replica's role and its Slack front door's state, for `/readyz` and
/// the metrics; cheap to share.
pub struct FrontDoor {
    role: watch::Receiver<Role>,
    slack: Mutex<SlackState>,
    /// Why the front door last failed, shown by `/readyz` while it waits to
    /// start again (an operator should not need the logs to see "cannot
    /// reach slack" versus "slack rejected the bot token").
    last_failure: Mutex<Option<String>>,
    metrics: SlackMetrics,
}

impl FrontDoor {
    /// `role` is the runtime's ([`crate::runtime::Runtime::role`]).
    pub fn new(
        role: watch::Receiver<Role>,
        slack_enabled: bool,
        metrics: SlackMetrics,
    ) -> Arc<Self> {
        let state = if slack_enabled {
            SlackState::Standby
        } else {
            SlackState::Off
        };
        metrics.set_front_door(state.as_str());
        Arc::new(Self {
            role,
            slack: Mutex::new(state),
            last_failure: Mutex::new(None),
            metrics,
        })
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    pub fn slack(&self) -> SlackState {
        *self.slack.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_failure(&self, why: Option<String>) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    fn set_slack(&self, state: SlackState) {
        let mut s = self.slack.lock().unwrap_or_else(|p| p.into_inner());
        if *s != SlackState::Off {
            *s = state;
            self.metrics.set_front_door(state.as_str());
        }
    }

    /// Ready once the role is known (a standby is Ready too, so rollouts
    /// proceed), with a detail line per concern for `/readyz`.
    pub fn readiness(&self) -> (bool, String) {
        let role = self.role();
        let slack = self.slack();
        let slack_detail = match slack {
            SlackState::Off => "off (not configured)".to_owned(),
            SlackState::Standby if role == Role::Starting => {
                "standby (no connection until leadership is known)".to_owned()
            }
            SlackState::Standby => "standby (no connection; the leader holds it)".to_owned(),
            SlackState::Connecting => match self.last_failure() {
                Some(why) => format!("connecting again (last attempt: {why})"),
                None => "connecting".to_owned(),
            },
            SlackState::Serving => "serving".to_owned(),
            SlackState::Failed => match self.last_failure() {
                Some(why) => format!("failed: {why} (retrying with backoff)"),
                None => "failed (retrying with backoff)".to_owned(),
            },
        };
        let role_detail = match role {
            Role::Starting => "starting (caches syncing or leadership unknown)",
            Role::Leader => "leader",
            Role::Standby => "standby",
        };
        (
            role != Role::Starting,
            format!("role: {role_detail}\nslack: {slack_detail}\n"),
        )
    }

    pub fn slack_metrics(&self) -> &SlackMetrics {
        &self.metrics
    }

    /// Wait until the role is known (`true`) or `stop` fires (`false`).
    pub async fn serving_allowed(&self, stop: &CancellationToken) -> bool {
        let mut rx = self.role.clone();
        tokio::select! {
            _ = stop.cancelled() => false,
            () = role_until(&mut rx, |r| r != Role::Starting) => true,
        }
    }

    /// Wait until the role is known, at most `timeout`; `None` past it.
    pub async fn wait_known(&self, timeout: Duration) -> Option<Role> {
        let mut rx = self.role.clone();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|r| *r != Role::Starting).await.map(|r| *r)
        })
        .await;
        match waited {
            Ok(Ok(r)) => Some(r),
            // The runtime dropped its sender: its last word is final.
            Ok(Err(_)) => Some(*self.role.borrow()).filter(|r| *r != Role::Starting),
            Err(_) => None,
        }
    }
}

/// Until `pred` holds for the role. A role whose sender is gone never
/// changes again, so this then waits forever (callers `select!` on a stop).
async fn role_until(rx: &mut watch::Receiver<Role>, pred: impl Fn(Role) -> bool) {
    if rx.wait_for(|r| pred(*r)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Hold the Slack front door open exactly while this replica leads, until
/// `shutdown`. `start(on_serving, stop)` runs one front door until `stop`
/// (it is [`crate::slack::run`] in the binary); one that fails is started
/// again after a capped backoff while this replica still leads.
pub async fn lead_slack<F, Fut>(door: Arc<FrontDoor>, mut start: F, shutdown: CancellationToken)
where
    F: FnMut(OnServing, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), SlackError>> + Send + 'static,
{
    let mut role = door.role.clone();
    let mut backoff = RESTART_MIN;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = role_until(&mut role, |r| r == Role::Leader) => {}
        }
        info!("leading: starting the slack front door");
        door.set_slack(SlackState::Connecting);
        let stop = shutdown.child_token();
        let serving_door = door.clone();
        let on_serving: OnServing = Arc::new(move |up| {
            if up {
                serving_door.set_failure(None);
            }
            serving_door.set_slack(if up {
                SlackState::Serving
            } else {
                SlackState::Standby
            });
        });
        let mut task =
            tokio::spawn(start(on_serving, stop.clone()).instrument(info_span!("slack")));
        let ended = tokio::select! {
            _ = shutdown.cancelled() => None,
            () = role_until(&mut role, |r| r != Role::Leader) => {
                info!("not leading any more: stopping the slack front door");
                None
            }
            ended = &mut task => Some(ended),
        };
        let result = match ended {
            Some(r) => r,
            None => {
                stop.cancel();
                match tokio::time::timeout(STOP_TIMEOUT, &mut task).await {
                    Ok(r) => r,
                    Err(_) => {
                        warn!("slack front door did not stop in time; aborting it");
                        task.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        // A front door that served before it failed starts over from the
        // shortest wait: this is a new outage, not the same one.
        if door.slack() == SlackState::Serving {
            backoff = RESTART_MIN;
        }
        match result {
            Ok(Ok(())) if stop.is_cancelled() => {
                door.set_slack(SlackState::Standby);
                backoff = RESTART_MIN;
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            // Said when it happens (a rejected token shows at start).
            Ok(Err(e)) => {
                error!(error = %e, reason = e.metric_label(), retry_in = ?backoff, "slack front door failed");
                door.set_failure(Some(e.to_string()));
            }
            Ok(Ok(())) => {
                warn!(retry_in = ?backoff, "slack front door stopped by itself");
                door.set_failure(Some("it stopped by itself".into()));
            }
            Err(e) => {
                error!(error = %e, retry_in = ?backoff, "slack front door panicked");
                door.set_failure(Some(format!("it panicked: {e}")));
            }
        }
        door.set_slack(SlackState::Failed);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_MAX);
        if door.role() != Role::Leader {
            door.set_slack(SlackState::Standby);
        }
    }
}

/// The Slack front door, held open while this replica leads. The Events API
/// listener (bound at start) stays up on every replica and answers 503 while
/// no front door is open here.
#[allow(clippy::too_many_arguments)]
pub fn spawn_slack(
    args: &crate::slack::SlackArgs,
    router: crate::router::Router,
    notices: tokio::sync::mpsc::Receiver<crate::mesh::InboundNotice>,
    pending: tokio::sync::mpsc::Receiver<crate::mesh::PendingReply>,
    events_listener: Option<tokio::net::TcpListener>,
    door: Arc<FrontDoor>,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let events = events_listener.map(|listener| {
        let events =
            crate::slack::transport::events_api::EventsDoor::new(door.slack_metrics().clone());
        let serve = events.clone().serve(
            listener,
            crate::slack::transport::events_api::DOOR_HOLD,
            shutdown.clone(),
        );
        tasks.spawn(
            async move {
                if let Err(e) = serve.await {
                    error!(error = %e, "slack events api listener failed");
                }
            }
            .instrument(info_span!("slack_events_door")),
        );
        events
    });
    let io = crate::slack::SlackIo::new(notices, pending);
    let slack_args = args.clone();
    let start = move |on_serving, stop| {
        let io = crate::slack::SlackIo {
            events: events.clone(),
            on_serving,
            ..io.clone()
        };
        crate::slack::run(slack_args.clone(), router.clone(), io, stop)
    };
    tokio::spawn(lead_slack(door, start, shutdown).instrument(info_span!("front_door")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
