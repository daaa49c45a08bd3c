//! The finalizer's work when an Agent is deleted: stop its pods, then keep
//! or delete its volume per the retention in force. Deletion never hangs
//! forever: past a deadline the finalizer finishes and says what it left.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt as _};
use tracing::{error, info, warn};

use super::conditions::event;
use super::crd::{Agent, Retention};
use super::pod::{self, LABEL_AGENT};
use super::reconcile::{Context, ReconcileError, delete_pod};
use super::{validate, volume};

/// How long after the deletion request cleanup keeps retrying before it
/// lets the Agent go (its pods are owned by it, so garbage collection still
/// removes them; the claim is left in place, the safe side for data).
pub const CLEANUP_DEADLINE: Duration = Duration::from_secs(600);

/// Where the retention in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionSource {
    Agent,
    Template,
    /// Recorded in `status.retention` while the template existed.
    Recorded,
    /// Nothing said: the default (`Retain`).
    Default,
}

pub(super) async fn cleanup(agent: &Agent, ctx: &Context) -> Result<Action, ReconcileError> {
    match steps(agent, ctx).await {
        Ok(()) => Ok(Action::await_change()),
        Err(e) if past_deadline(agent, Timestamp::now()) => {
            let msg = format!(
                "cleanup kept failing for {}s ({e}); the Agent is released anyway, its \
                 volume claim is left in place",
                CLEANUP_DEADLINE.as_secs()
            );
            error!(agent = %agent.name_any(), error = %e, "cleanup incomplete; finishing deletion");
            ctx.publish(
                agent,
                EventType::Warning,
                event::CLEANUP_INCOMPLETE,
                "Cleanup",
                msg,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => Err(e),
    }
}

/// Whether the deletion was requested longer than [`CLEANUP_DEADLINE`] ago.
pub fn past_deadline(agent: &Agent, now: Timestamp) -> bool {
    agent.metadata.deletion_timestamp.as_ref().is_some_and(|t| {
        now.duration_since(t.0)
            .try_into()
            .is_ok_and(|d: Duration| d >= CLEANUP_DEADLINE)
    })
}

/// The retention the finalizer applies: the Agent's own, else its
/// template's, else the one recorded in its status, else `Retain`.
pub fn retention(agent: &Agent, template: Option<Retention>) -> (Retention, RetentionSource) {
    if let Some(r) = agent.spec.retention {
        return (r, RetentionSource::Agent);
    }
    if let Some(r) = template {
        return (r, RetentionSource::Template);
    }
    match agent.status.as_ref().and_then(|s| s.retention) {
        Some(r) => (r, RetentionSource::Recorded),
        None => (Retention::default(), RetentionSource::Default),
    }
}

async fn steps(agent: &Agent, ctx: &Context) -> Result<(), ReconcileError> {
    let name = agent.name_any();
    let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace);
    // A name that cannot be a label value never had pods (and cannot be
    // selected by): skip rather than fail on the selector.
    if validate::is_label_value(&name) {
        let lp = ListParams::default().labels(&format!("{LABEL_AGENT}={name}"));
        let uid = agent.uid();
        for p in pods_api.list(&lp).await?.items {
            let ours = p
                .owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref());
            if ours && p.metadata.deletion_timestamp.is_none() {
                delete_pod(&pods_api, &p).await?;
                ctx.publish(
                    agent,
                    EventType::Normal,
                    event::POD_DELETED,
                    "Cleanup",
                    format!("pod {} deleted", p.name_any()),
                )
                .await;
            }
        }
    }
    let (retention, source) = retention(agent, ctx.template_retention(&agent.spec.template));
    if source == RetentionSource::Default {
        warn!(agent = %name, template = %agent.spec.template, "no retention known (template gone, none recorded); keeping the volume");
        ctx.publish(
            agent,
            EventType::Warning,
            event::RETENTION_DEFAULTED,
            "Cleanup",
            format!(
                "AgentTemplate {:?} is gone and no retention was recorded; the volume is kept (Retain)",
                agent.spec.template
            ),
        )
        .await;
    }
    let claim = pod::volume_claim_name(&name);
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ctx.namespace);
    match retention {
        Retention::Delete => match pvcs.get_opt(&claim).await? {
            None => {}
            Some(c) if volume::belongs_to(&c, agent).is_err() => {
                // Not this owner's data: deleting this Agent must not destroy it.
                ctx.publish(
                    agent,
                    EventType::Normal,
                    event::VOLUME_CLAIM_RETAINED,
                    "Cleanup",
                    format!("volume claim {claim} kept: it holds another owner's data"),
                )
                .await;
            }
            Some(_) => match pvcs.delete(&claim, &DeleteParams::default()).await {
                Ok(_) => {
                    ctx.publish(
                        agent,
                        EventType::Normal,
                        event::VOLUME_CLAIM_DELETED,
                        "Cleanup",
                        format!("volume claim {claim} deleted (retention Delete)"),
                    )
                    .await
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            },
        },
        Retention::Retain => {
            ctx.publish(
                agent,
                EventType::Normal,
                event::VOLUME_CLAIM_RETAINED,
                "Cleanup",
                format!("volume claim {claim} kept (retention Retain)"),
            )
            .await;
        }
    }
    info!(agent = %name, ?retention, ?source, "agent cleaned up");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;

    use super::*;
    use crate::runtime::kubernetes::crd::{AgentSpec, AgentStatus, Mode};

    fn agent() -> Agent {
        Agent::new(
            "alice",
            AgentSpec {
                owner: "U1".into(),
                template: "engineer".into(),
                mode: Mode::Running,
                retention: None,
            },
        )
    }

    #[test]
    fn a_deleted_templates_retention_still_applies_through_the_recorded_one() {
        let mut a = agent();
        a.status = Some(AgentStatus {
            retention: Some(Retention::Delete),
            ..Default::default()
        });
        assert_eq!(
            retention(&a, None),
            (Retention::Delete, RetentionSource::Recorded)
        );
        assert_eq!(
            retention(&a, Some(Retention::Retain)),
            (Retention::Retain, RetentionSource::Template)
        );
        a.spec.retention = Some(Retention::Delete);
        assert_eq!(
            retention(&a, Some(Retention::Retain)),
            (Retention::Delete, RetentionSource::Agent)
        );
    }

    #[test]
    fn with_nothing_known_the_volume_is_kept() {
        assert_eq!(
            retention(&agent(), None),
            (Retention::Retain, RetentionSource::Default)
        );
    }

    #[test]
    fn cleanup_gives_up_only_after_the_deadline() {
        let mut a = agent();
        let now = Timestamp::now();
        assert!(!past_deadline(&a, now), "not being deleted");
        a.metadata.deletion_timestamp = Some(Time(now - SignedDuration::from_secs(599)));
        assert!(!past_deadline(&a, now));
        a.metadata.deletion_timestamp = Some(Time(now - SignedDuration::from_secs(601)));
        assert!(past_deadline(&a, now));
    }
}
