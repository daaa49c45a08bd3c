//! An agent's volume belongs to its owner: the claim records the owner in an
//! annotation, and a claim kept (retention `Retain`) for one person is never
//! mounted by an Agent of another who reuses the name.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::PostParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt as _};

use super::conditions::event;
use super::crd::{Agent, AgentTemplateSpec};
use super::pod;
use super::reconcile::{Context, FIELD_MANAGER, ReconcileError};

/// On the agent's PersistentVolumeClaim: the owner (`spec.owner`) whose data
/// it holds. An operator hands a retained volume to someone else by
/// changing it.
pub const OWNER_ANNOTATION: &str = "clawswarm.dev/owner";

/// What the reconciler may do with the agent's claim.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimState {
    /// The claim exists and holds this owner's data.
    Ready(String),
    /// The claim exists and is not this owner's (the message says why).
    Foreign(String),
}

/// The claim the reconciler creates: [`pod::build_volume_claim`] plus the owner.
pub fn desired_claim(agent: &Agent, tpl: &AgentTemplateSpec) -> PersistentVolumeClaim {
    let mut claim = pod::build_volume_claim(agent, tpl);
    claim
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(OWNER_ANNOTATION.into(), agent.spec.owner.clone());
    claim
}

/// Whether `claim` may be mounted by `agent`: its recorded owner must be the
/// agent's; a claim that records none (made by an older controller) counts
/// as the agent's only if it is not older than the Agent, i.e. was made for it.
pub fn belongs_to(claim: &PersistentVolumeClaim, agent: &Agent) -> Result<(), String> {
    let name = claim.name_any();
    match claim.annotations().get(OWNER_ANNOTATION) {
        Some(owner) if *owner == agent.spec.owner => Ok(()),
        Some(_) => Err(format!(
            "PersistentVolumeClaim {name} holds the data of another owner (kept from an \
             earlier Agent of this name); it is not mounted. Delete the claim, choose another \
             agent name, or set its {OWNER_ANNOTATION} annotation to hand it over"
        )),
        None => {
            let made = claim.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let born = agent.metadata.creation_timestamp.as_ref().map(|t| t.0);
            match (made, born) {
                (Some(made), Some(born)) if made < born => Err(format!(
                    "PersistentVolumeClaim {name} is older than this Agent and records no owner \
                     (kept from an earlier Agent of this name?); it is not mounted. Set its \
                     {OWNER_ANNOTATION} annotation to this Agent's owner to hand it over"
                )),
                _ => Ok(()),
            }
        }
    }
}

/// Create the claim if absent; report whose it is.
pub(super) async fn ensure(
    agent: &Agent,
    tpl: &AgentTemplateSpec,
    ctx: &Context,
) -> Result<ClaimState, ReconcileError> {
    let want = desired_claim(agent, tpl);
    let name = pod::volume_claim_name(&agent.name_any());
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Some(have) = api.get_opt(&name).await? {
        return Ok(match belongs_to(&have, agent) {
            Ok(()) => ClaimState::Ready(name),
            Err(why) => ClaimState::Foreign(why),
        });
    }
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, &want).await {
        Ok(_) => {
            ctx.publish(
                agent,
                EventType::Normal,
                event::VOLUME_CLAIM_CREATED,
                "CreateVolumeClaim",
                format!("created volume claim {name} ({})", tpl.storage.size),
            )
            .await;
            Ok(ClaimState::Ready(name))
        }
        // Someone made it between our read and our create: decide on theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let have = api.get(&name).await?;
            Ok(match belongs_to(&have, agent) {
                Ok(()) => ClaimState::Ready(name),
                Err(why) => ClaimState::Foreign(why),
            })
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::runtime::kubernetes::crd::{AgentSpec, Mode};

    fn agent(owner: &str, age_secs: i64) -> Agent {
        let mut a = Agent::new(
            "alice",
            AgentSpec {
                owner: owner.into(),
                template: "engineer".into(),
                mode: Mode::Running,
                retention: None,
            },
        );
        a.metadata.namespace = Some("team".into());
        a.metadata.creation_timestamp =
            Some(Time(Timestamp::now() - SignedDuration::from_secs(age_secs)));
        a
    }

    fn claim_of(a: &Agent, age_secs: i64) -> PersistentVolumeClaim {
        let mut c = desired_claim(a, &tpl());
        c.metadata.creation_timestamp =
            Some(Time(Timestamp::now() - SignedDuration::from_secs(age_secs)));
        c
    }

    fn tpl() -> AgentTemplateSpec {
        AgentTemplateSpec {
            description: None,
            workload: Default::default(),
            storage: Default::default(),
            idle_timeout: None,
            sidecar_resources: None,
            data: None,
            skills: None,
        }
    }

    #[test]
    fn claim_records_its_owner() {
        let c = desired_claim(&agent("U1", 0), &tpl());
        assert_eq!(c.annotations()[OWNER_ANNOTATION], "U1");
    }

    #[test]
    fn a_retained_claim_is_not_mounted_by_another_owner_reusing_the_name() {
        let old = agent("U1", 1000);
        let kept = claim_of(&old, 1000);
        assert!(belongs_to(&kept, &old).is_ok());
        let newcomer = agent("U2", 10);
        let why = belongs_to(&kept, &newcomer).unwrap_err();
        assert!(why.contains("another owner"), "{why}");
        // The same person coming back gets their data.
        assert!(belongs_to(&kept, &agent("U1", 10)).is_ok());
    }

    #[test]
    fn an_unannotated_claim_counts_only_for_the_agent_it_was_made_for() {
        let a = agent("U1", 100);
        let mut legacy = claim_of(&a, 99);
        legacy.metadata.annotations = None;
        assert!(belongs_to(&legacy, &a).is_ok());
        let mut older = claim_of(&a, 5000);
        older.metadata.annotations = None;
        assert!(belongs_to(&older, &a).unwrap_err().contains("older"));
    }
}
