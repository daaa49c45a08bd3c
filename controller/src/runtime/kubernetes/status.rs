//! Writing `Agent.status`: phase, conditions (with observedGeneration and
//! stable transition times), the current pod and the retention in force,
//! only when they changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt as _};

use super::conditions;
use super::crd::{Agent, AgentStatus, Phase, Retention};
use super::pod;
use super::reconcile::{Context, ReconcileError};

/// What one reconcile observed: (ok, reason, message) per condition.
/// Messages must be stable for a stable situation: never a generated name
/// or a time, or every reconcile would write status and wake itself.
pub(super) struct Observed {
    pub phase: Phase,
    pub ready: (bool, &'static str, String),
    pub storage: (bool, &'static str, String),
    pub scheduled: (bool, &'static str, String),
    pub pod: Option<String>,
}

/// Write the observed status if it differs from what the Agent shows.
/// Returns `true` when the `Ready` reason changed (callers report a new
/// problem once, as an Event and a log line, not on every retry).
pub(super) async fn write_status(
    agent: &Agent,
    ctx: &Context,
    obs: Observed,
) -> Result<bool, ReconcileError> {
    let old = agent.status.clone().unwrap_or_default();
    let reason_changed = ready_reason(&old) != Some(obs.ready.1);
    let template_retention = ctx.template_retention(&agent.spec.template);
    let Some(new) = next_status(agent, obs, template_retention) else {
        return Ok(reason_changed);
    };
    let api = Api::<Agent>::namespaced(ctx.client.clone(), &ctx.namespace);
    let patch = serde_json::json!({ "status": {
        "phase": new.phase,
        "observedGeneration": new.observed_generation,
        "conditions": new.conditions,
        "pod": new.pod,
        "volumeClaim": new.volume_claim,
        "retention": new.retention,
    }});
    api.patch_status(
        &agent.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(reason_changed)
}

fn ready_reason(s: &AgentStatus) -> Option<&str> {
    s.conditions
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .map(|c| c.reason.as_str())
}

/// The status to write, or `None` when it equals the current one. The
/// retention in force is recorded (the Agent's, else the template's, else
/// the one recorded before) so deletion honours it once the template is gone.
pub(super) fn next_status(
    agent: &Agent,
    obs: Observed,
    template_retention: Option<Retention>,
) -> Option<AgentStatus> {
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
        metered: old.metered.clone(),
        delivered_notices: old.delivered_notices.clone(),
        retention: agent
            .spec
            .retention
            .or(template_retention)
            .or(old.retention),
    };
    (new != old).then_some(new)
}

/// The API server names a pod it refused by the name it generated for it
/// (`alice-x7k2p`), new on every attempt. Put in a condition, that name
/// would change the status on every retry, and each status write wakes the
/// reconciler again, defeating its backoff: replace it with a placeholder.
pub(super) fn without_generated_name(message: &str, generate_name: &str) -> String {
    const SUFFIX: usize = 5;
    if generate_name.is_empty() {
        return message.to_string();
    }
    let name_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.';
    let b = message.as_bytes();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while let Some(found) = message[i..].find(generate_name) {
        let start = i + found;
        let suffix = start + generate_name.len();
        let end = suffix + SUFFIX;
        let standalone = (start == 0 || !name_char(b[start - 1]))
            && end <= b.len()
            && b[suffix..end]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && (end == b.len() || !name_char(b[end]));
        if standalone {
            out.push_str(&message[i..suffix]);
            out.push_str("<generated>");
            i = end;
        } else {
            out.push_str(&message[i..suffix]);
            i = suffix;
        }
    }
    out.push_str(&message[i..]);
    out
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
    use crate::runtime::kubernetes::conditions::reason;
    use crate::runtime::kubernetes::crd::{AgentSpec, Mode};

    fn agent() -> Agent {
        let mut a = Agent::new(
            "alice",
            AgentSpec {
                owner: "U1".into(),
                template: "engineer".into(),
                mode: Mode::Running,
                retention: None,
            },
        );
        a.metadata.generation = Some(1);
        a
    }

    fn create_failed(api_message: &str) -> Observed {
        let msg = without_generated_name(api_message, "alice-");
        Observed {
            phase: Phase::Failed,
            ready: (false, reason::POD_CREATE_FAILED, msg.clone()),
            storage: (
                true,
                reason::VOLUME_CLAIMED,
                "PersistentVolumeClaim alice-data".into(),
            ),
            scheduled: (false, reason::POD_CREATE_FAILED, msg),
            pod: None,
        }
    }

    #[test]
    fn a_repeated_pod_create_failure_writes_status_once() {
        // What the API server says, with a new generated name each time.
        let refusal = |name: &str| {
            format!(
                "Pod \"{name}\" is invalid: spec.containers[0].resources.requests[memory]: \
                 Invalid value: \"-1Gi\": must be greater than or equal to 0"
            )
        };
        let mut a = agent();
        let first = next_status(&a, create_failed(&refusal("alice-x7k2p")), None).unwrap();
        assert!(!first.conditions[0].message.contains("x7k2p"), "{first:?}");
        a.status = Some(first);
        assert_eq!(
            next_status(&a, create_failed(&refusal("alice-b9dfq")), None),
            None,
            "same failure, same status: no write, so the backoff holds"
        );
    }

    #[test]
    fn generated_names_are_replaced_and_nothing_else() {
        let m = without_generated_name(
            "pods \"alice-x7k2p\" is forbidden; claim alice-data, pod malice-abcde, alice-abcdef",
            "alice-",
        );
        assert_eq!(
            m,
            "pods \"alice-<generated>\" is forbidden; claim alice-data, pod malice-abcde, alice-abcdef"
        );
        assert_eq!(
            without_generated_name("alice-abcde", "alice-"),
            "alice-<generated>"
        );
        assert_eq!(without_generated_name("x", ""), "x");
    }

    #[test]
    fn retention_in_force_is_recorded_and_survives_the_template() {
        let mut a = agent();
        let obs = || create_failed("x");
        let s = next_status(&a, obs(), Some(Retention::Delete)).unwrap();
        assert_eq!(s.retention, Some(Retention::Delete));
        a.status = Some(s);
        // The template is gone: the recorded retention stays.
        assert_eq!(next_status(&a, obs(), None), None);
        // The Agent's own setting wins.
        a.spec.retention = Some(Retention::Retain);
        let s = next_status(&a, obs(), Some(Retention::Delete)).unwrap();
        assert_eq!(s.retention, Some(Retention::Retain));
    }

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
