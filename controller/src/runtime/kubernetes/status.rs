//! Writing `Agent.status`: phase, conditions (with observedGeneration and
//! stable transition times) and the current pod, only when they changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt as _};

use super::conditions;
use super::crd::{Agent, AgentStatus, Phase};
use super::pod;
use super::reconcile::{Context, ReconcileError};

/// What one reconcile observed: (ok, reason, message) per condition.
pub(super) struct Observed {
    pub phase: Phase,
    pub ready: (bool, &'static str, String),
    pub storage: (bool, &'static str, String),
    pub scheduled: (bool, &'static str, String),
    pub pod: Option<String>,
}

pub(super) async fn write_status(
    agent: &Agent,
    ctx: &Context,
    obs: Observed,
) -> Result<(), ReconcileError> {
    let old = agent.status.clone().unwrap_or_default();
    let generation = agent.metadata.generation;
    let mut conds = old.conditions.clone();
    set_condition(&mut conds, conditions::READY, obs.ready, generation);
    set_condition(
        &mut conds,
        conditions::STORAGE_READY,
        obs.storage,
        generation,
    );
    set_condition(
        &mut conds,
        conditions::POD_SCHEDULED,
        obs.scheduled,
        generation,
    );
    let new = AgentStatus {
        phase: Some(obs.phase),
        observed_generation: generation,
        conditions: conds,
        pod: obs.pod,
        volume_claim: Some(pod::volume_claim_name(&agent.name_any())),
        last_activity: old.last_activity.clone(),
        usage: old.usage,
    };
    if new == old {
        return Ok(());
    }
    let api = Api::<Agent>::namespaced(ctx.client.clone(), &ctx.namespace);
    let patch = serde_json::json!({ "status": {
        "phase": new.phase,
        "observedGeneration": new.observed_generation,
        "conditions": new.conditions,
        "pod": new.pod,
        "volumeClaim": new.volume_claim,
    }});
    api.patch_status(
        &agent.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Upsert a condition; its transition time moves only when its status does.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    (ok, reason, message): (bool, &str, String),
    generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conds.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn condition_transition_time_moves_only_on_status_change() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            "Ready",
            (false, "PodStarting", "x".into()),
            Some(1),
        );
        let first = conds[0].last_transition_time.clone();
        set_condition(
            &mut conds,
            "Ready",
            (false, "PodRecreating", "y".into()),
            Some(2),
        );
        assert_eq!(conds[0].last_transition_time, first);
        assert_eq!(conds[0].reason, "PodRecreating");
        assert_eq!(conds[0].observed_generation, Some(2));
        set_condition(
            &mut conds,
            "Ready",
            (true, "AgentReady", "z".into()),
            Some(2),
        );
        assert_eq!(conds[0].status, "True");
        assert_eq!(conds.len(), 1);
    }
}
