//! Automatic idle suspension: the leader suspends Running agents whose
//! latest sign of life is older than their template's idle timeout.

use std::time::Duration;

use clawswarm_certs::AgentId;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt as _;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use super::crd::{Agent, Mode};
use super::{Inner, conditions, lock};
use crate::config::parse_duration;

impl Inner {
    /// Suspend running agents idle longer than their template's idle timeout.
    pub(super) async fn suspend_idle(&self) {
        let now = Timestamp::now();
        for a in self.agents.state() {
            if a.spec.mode != Mode::Running || a.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(idle) = self
                .templates
                .get(&ObjectRef::new(&a.spec.template).within(&self.namespace))
                .and_then(|t| t.spec.idle_timeout.clone())
                .and_then(|s| parse_duration(&s).ok())
            else {
                continue;
            };
            let Ok(id) = AgentId::new(self.namespace.clone(), a.name_any()) else {
                continue;
            };
            let pending = lock(&self.pending).get(&id).and_then(|p| p.activity);
            let last = last_active(&a, pending);
            if is_idle(now, last, idle) {
                info!(agent = %id, idle = ?idle, "suspending idle agent");
                match self.set_mode(&id, Mode::Suspended).await {
                    Ok(_) => {
                        let ev = kube::runtime::events::Event {
                            type_: kube::runtime::events::EventType::Normal,
                            reason: conditions::event::IDLE_SUSPENDED.into(),
                            note: Some(format!("no activity for {idle:?}")),
                            action: "Suspend".into(),
                            secondary: None,
                        };
                        use kube::Resource as _;
                        if let Err(e) = self.recorder.publish(&ev, &a.object_ref(&())).await {
                            warn!(agent = %id, error = %e, "could not publish event");
                        }
                    }
                    Err(e) => warn!(agent = %id, error = %e, "could not suspend idle agent"),
                }
            }
        }
    }
}

/// The latest sign of life: recorded activity, or when the agent last
/// became Ready (a woken agent gets a full idle period), or creation.
pub(super) fn last_active(a: &Agent, pending: Option<Timestamp>) -> Option<Timestamp> {
    let status = a.status.as_ref();
    let recorded = status.and_then(|s| s.last_activity.as_ref()).map(|t| t.0);
    let ready_since = status
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == conditions::READY && c.status == "True")
        })
        .map(|c| c.last_transition_time.0);
    let created = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
    [recorded, ready_since, created, pending]
        .into_iter()
        .flatten()
        .max()
}

pub(super) fn is_idle(now: Timestamp, last: Option<Timestamp>, idle: Duration) -> bool {
    let Some(last) = last else { return false };
    let Ok(idle) = SignedDuration::try_from(idle) else {
        return false;
    };
    now.duration_since(last) > idle
}
