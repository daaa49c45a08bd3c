//! The Agent reconciler: per Agent a volume claim, one Pod, status with
//! conditions, Events, and a finalizer that cleans up per retention policy
//! (see `cleanup`); bad input is refused first (see `validate`).
//!
//! Reads come from informer caches (Agents, AgentTemplates, agent Pods);
//! the only live read is a labelled list before creating a pod, so a cache
//! that has not seen our last create never makes a second pod.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource as _, ResourceExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cleanup::cleanup;
use super::conditions::{event, reason};
use super::crd::{Agent, AgentTemplate, AgentTemplateSpec, Mode, Phase, Retention};
use super::pod::{self, COMPONENT_AGENT, LABEL_AGENT, LABEL_COMPONENT, PodSettings};
use super::status::{Observed, without_generated_name, write_status};
use super::validate;
use super::volume::{self, ClaimState};

pub const FINALIZER: &str = "clawswarm.dev/cleanup";
pub const FIELD_MANAGER: &str = "clawswarm-controller";
/// Requeue of a healthy agent, so drift heals without an event.
const RESYNC: Duration = Duration::from_secs(300);
/// Requeue while waiting for something (a template, a starting pod).
const WAITING: Duration = Duration::from_secs(30);
/// Requeue while the previous pod terminates (its deletion also wakes us).
const TERMINATING_POLL: Duration = Duration::from_secs(5);
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("agent has no {0}")]
    MissingField(&'static str),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl ReconcileError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::MissingField(_) => "missing_field",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// Everything reconcile touches; no globals.
pub struct Context {
    pub client: Client,
    pub namespace: String,
    pub settings: PodSettings,
    pub recorder: Recorder,
    pub agents: Store<Agent>,
    pub templates: Store<AgentTemplate>,
    pub pods: Store<Pod>,
    failures: Mutex<HashMap<String, u32>>,
    /// Per agent: pods replaced since it was last Ready, and when the last
    /// replacement was made (a pod that keeps failing is replaced with backoff).
    replacements: Mutex<HashMap<String, (u32, std::time::Instant)>>,
    metrics: super::metrics::KubernetesMetrics,
}

impl Context {
    pub fn new(
        client: Client,
        namespace: String,
        settings: PodSettings,
        recorder: Recorder,
        stores: (Store<Agent>, Store<AgentTemplate>, Store<Pod>),
        metrics: super::metrics::KubernetesMetrics,
    ) -> Self {
        let (agents, templates, pods) = stores;
        Self {
            client,
            namespace,
            settings,
            recorder,
            agents,
            templates,
            pods,
            failures: Mutex::new(HashMap::new()),
            replacements: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// How long to wait before replacing `agent`'s pod again, if at all.
    fn replacement_delay(&self, agent: &str) -> Option<Duration> {
        let map = lock(&self.replacements);
        let (n, last) = map.get(agent)?;
        let wait = backoff(*n);
        let since = last.elapsed();
        (since < wait).then(|| wait - since)
    }

    fn note_replacement(&self, agent: &str) {
        let mut map = lock(&self.replacements);
        let e = map
            .entry(agent.to_string())
            .or_insert((0, std::time::Instant::now()));
        e.0 = e.0.saturating_add(1);
        e.1 = std::time::Instant::now();
        self.metrics.pod_replacements.inc();
    }

    fn template(&self, name: &str) -> Option<Arc<AgentTemplate>> {
        self.templates
            .get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// The retention of template `name`, if it exists.
    pub(super) fn template_retention(&self, name: &str) -> Option<Retention> {
        self.template(name).map(|t| t.spec.storage.retention)
    }

    /// Name of the Agent that serves `owner` (see [`validate::primary_for_owner`]).
    fn primary_for_owner(&self, owner: &str) -> Option<String> {
        let all = self.agents.state();
        validate::primary_for_owner(all.iter().map(|a| &**a), owner).map(|a| a.name_any())
    }

    /// Cached pods of `agent` (owned by this Agent object, any state).
    fn cached_pods(&self, agent: &Agent) -> Vec<Arc<Pod>> {
        let name = agent.name_any();
        let uid = agent.uid();
        self.pods.state_filter(|p| {
            p.labels().get(LABEL_AGENT) == Some(&name)
                && p.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref())
        })
    }

    pub(super) async fn publish(
        &self,
        agent: &Agent,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &agent.object_ref(&())).await {
            warn!(agent = %agent.name_any(), error = %e, "could not publish event");
        }
    }
}

/// Run the reconciler until `shutdown`. Only the leader calls this.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let agents = Api::<Agent>::namespaced(ctx.client.clone(), &ctx.namespace);
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace);
    let templates = Api::<AgentTemplate>::namespaced(ctx.client.clone(), &ctx.namespace);
    let agent_pods =
        watcher::Config::default().labels(&format!("{LABEL_COMPONENT}={COMPONENT_AGENT}"));
    let controller = Controller::new(agents, watcher::Config::default());
    let agent_store = controller.store();
    controller
        .owns(pods, agent_pods)
        .watches(
            templates,
            watcher::Config::default(),
            move |tpl: AgentTemplate| {
                // A template change re-reconciles every agent built from it.
                let name = tpl.name_any();
                agent_store
                    .state()
                    .into_iter()
                    .filter(|a| a.spec.template == name)
                    .map(|a| ObjectRef::from_obj(&*a))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "reconcile loop error");
            }
        })
        .await;
    info!("reconciler stopped");
}

pub async fn reconcile(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = agent
        .namespace()
        .ok_or(ReconcileError::MissingField("namespace"))?;
    let api = Api::<Agent>::namespaced(ctx.client.clone(), &ns);
    let key = agent.name_any();
    let started = std::time::Instant::now();
    let result = finalizer(&api, FINALIZER, agent, |ev| async {
        match ev {
            Finalizer::Apply(a) => apply(&a, &ctx).await,
            Finalizer::Cleanup(a) => cleanup(&a, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(e.to_string()));
    ctx.metrics
        .reconcile_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        lock(&ctx.failures).remove(&key);
    }
    result
}

pub fn error_policy(agent: Arc<Agent>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    let key = agent.name_any();
    let n = {
        let mut f = lock(&ctx.failures);
        let n = f.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ReasonLabel {
            reason: err.metric_label(),
        })
        .inc();
    warn!(agent = %key, error = %err, label = err.metric_label(), attempt = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// 2 s, 4 s, 8 s ... capped at 5 min.
fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A problem that stops this Agent from getting a pod: every condition
/// False with `reason`, an Event and a log line when it first appears.
async fn refuse(
    agent: &Agent,
    ctx: &Context,
    phase: Phase,
    (reason, scheduled): (&'static str, &'static str),
    event_reason: &str,
    message: String,
) -> Result<(), ReconcileError> {
    let obs = Observed {
        phase,
        ready: (false, reason, message.clone()),
        storage: (false, reason, message.clone()),
        scheduled: (false, scheduled, message.clone()),
        pod: None,
    };
    if write_status(agent, ctx, obs).await? {
        warn!(agent = %agent.name_any(), reason, message = %message, "agent refused");
        ctx.publish(agent, EventType::Warning, event_reason, "Validate", message)
            .await;
    }
    Ok(())
}

async fn apply(agent: &Agent, ctx: &Context) -> Result<Action, ReconcileError> {
    // Its name is its identity and labels its pods: nothing is built for an
    // Agent whose name is not an agent id (the CRD refuses new ones).
    if let Err(e) = validate::agent(agent) {
        let r = (reason::INVALID_SPEC, reason::INVALID_SPEC);
        refuse(
            agent,
            ctx,
            Phase::Failed,
            r,
            event::INVALID_SPEC,
            e.to_string(),
        )
        .await?;
        return Ok(Action::await_change());
    }
    // One agent per person: the oldest serves, a later one gets no pod.
    if let Some(primary) = ctx.primary_for_owner(&agent.spec.owner)
        && primary != agent.name_any()
    {
        let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace);
        for p in ctx.cached_pods(agent) {
            delete_pod(&pods_api, &p).await?;
        }
        let msg = format!(
            "owner {:?} already has Agent {primary}, which serves them; this Agent gets no pod \
             until that one is deleted",
            agent.spec.owner
        );
        let r = (reason::DUPLICATE_OWNER, reason::DUPLICATE_OWNER);
        refuse(agent, ctx, Phase::Failed, r, event::DUPLICATE_OWNER, msg).await?;
        return Ok(Action::requeue(WAITING));
    }
    // Read the template from the API server, not the shared cache: the reconciler's own template
    // watch can wake us before that cache has the change, and a rollout decided on the old version
    // would not be retried until the next resync.
    let templates_api = Api::<AgentTemplate>::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(tpl) = templates_api.get_opt(&agent.spec.template).await? else {
        let msg = format!(
            "AgentTemplate {:?} not found in namespace {}",
            agent.spec.template, ctx.namespace
        );
        let r = (reason::TEMPLATE_NOT_FOUND, reason::POD_ABSENT);
        refuse(
            agent,
            ctx,
            Phase::Pending,
            r,
            event::TEMPLATE_NOT_FOUND,
            msg,
        )
        .await?;
        return Ok(Action::requeue(WAITING));
    };
    if let Err(e) = validate::template(&tpl.spec) {
        let msg = format!("AgentTemplate {}: {e}", tpl.name_any());
        let r = (reason::INVALID_SPEC, reason::INVALID_SPEC);
        refuse(agent, ctx, Phase::Failed, r, event::INVALID_SPEC, msg).await?;
        return Ok(Action::requeue(WAITING));
    }

    let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace);
    let storage = match volume::ensure(agent, &tpl.spec, ctx).await {
        Ok(ClaimState::Ready(c)) => (
            true,
            reason::VOLUME_CLAIMED,
            format!("PersistentVolumeClaim {c}"),
        ),
        Ok(ClaimState::Foreign(why)) => {
            // Another person's data: never mounted, not even by a pod made
            // before ownership was recorded.
            for p in ctx.cached_pods(agent) {
                delete_pod(&pods_api, &p).await?;
            }
            let r = (reason::VOLUME_OWNER_MISMATCH, reason::POD_ABSENT);
            refuse(
                agent,
                ctx,
                Phase::Failed,
                r,
                event::VOLUME_OWNER_MISMATCH,
                why,
            )
            .await?;
            return Ok(Action::requeue(WAITING));
        }
        Err(e) => {
            let obs = Observed {
                phase: Phase::Pending,
                ready: (false, reason::VOLUME_CLAIM_FAILED, e.to_string()),
                storage: (false, reason::VOLUME_CLAIM_FAILED, e.to_string()),
                scheduled: (
                    false,
                    reason::POD_ABSENT,
                    "waiting for the volume claim".into(),
                ),
                pod: None,
            };
            write_status(agent, ctx, obs).await?;
            return Err(e);
        }
    };

    let cached = ctx.cached_pods(agent);
    let (alive, finished): (Vec<_>, Vec<_>) = cached
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .partition(|p| !pod_finished(p));

    if agent.spec.mode == Mode::Suspended {
        for p in alive.iter().chain(&finished) {
            delete_pod(&pods_api, p).await?;
            ctx.publish(
                agent,
                EventType::Normal,
                event::SUSPENDED,
                "Suspend",
                format!("pod {} stopped; volume kept", p.name_any()),
            )
            .await;
        }
        let obs = Observed {
            phase: Phase::Suspended,
            ready: (
                false,
                reason::SUSPENDED,
                "suspended: pod stopped, volume kept".into(),
            ),
            storage,
            scheduled: (false, reason::POD_ABSENT, "suspended".into()),
            pod: None,
        };
        write_status(agent, ctx, obs).await?;
        return Ok(Action::requeue(RESYNC));
    }

    // A pod that ended (Failed, Succeeded) is replaced, never restarted in place.
    let recreating = !finished.is_empty();
    for p in &finished {
        delete_pod(&pods_api, p).await?;
        let why = p
            .status
            .as_ref()
            .and_then(|s| s.reason.clone())
            .unwrap_or_else(|| "ended".into());
        ctx.publish(
            agent,
            EventType::Warning,
            event::POD_RECREATED,
            "RecreatePod",
            format!("pod {} {why}; replacing it", p.name_any()),
        )
        .await;
    }
    let mut alive: Vec<Arc<Pod>> = alive;
    alive.sort_by_key(|p| p.creation_timestamp());
    for extra in alive.iter().skip(1) {
        delete_pod(&pods_api, extra).await?;
    }
    // A pod built from an older template or setting is replaced (rollout).
    let want_hash = pod::spec_hash(&pod::build_pod(agent, &tpl.spec, &ctx.settings));
    if let Some(outdated) = alive
        .first()
        .filter(|p| pod::pod_spec_hash(p) != Some(want_hash.as_str()))
    {
        delete_pod(&pods_api, outdated).await?;
        ctx.metrics.pod_replacements.inc();
        ctx.publish(
            agent,
            EventType::Normal,
            event::POD_OUTDATED,
            "RecreatePod",
            format!(
                "pod {} was built from an older template; replacing it",
                outdated.name_any()
            ),
        )
        .await;
        alive.clear();
    }
    let current = match alive.first() {
        Some(p) => Some((**p).clone()),
        None => {
            let live = live_pods(agent, &pods_api).await?;
            let claim = pod::volume_claim_name(&agent.name_any());
            if let Some(p) = owned_running(agent, &live) {
                Some(p.clone())
            } else if let Some(old) = terminating_on_claim(&live, &claim) {
                // The volume is read-write-once: a second pod must not start
                // on it while the last one is still stopping.
                let msg = format!(
                    "waiting for the previous pod {old} to stop before starting a new one \
                     (the volume is read-write-once)"
                );
                let obs = Observed {
                    phase: Phase::Starting,
                    ready: (false, reason::POD_TERMINATING, msg.clone()),
                    storage,
                    scheduled: (false, reason::POD_TERMINATING, msg),
                    pod: None,
                };
                write_status(agent, ctx, obs).await?;
                return Ok(Action::requeue(TERMINATING_POLL));
            } else {
                let had_pod = agent.status.as_ref().is_some_and(|s| s.pod.is_some());
                let name = agent.name_any();
                if (had_pod || recreating)
                    && let Some(delay) = ctx.replacement_delay(&name)
                {
                    let msg = format!(
                        "pod keeps ending; replacing it in {}s",
                        delay.as_secs().max(1)
                    );
                    let obs = Observed {
                        phase: Phase::Starting,
                        ready: (false, reason::POD_RECREATING, msg),
                        storage,
                        scheduled: (
                            false,
                            reason::POD_ABSENT,
                            "waiting to replace the pod".into(),
                        ),
                        pod: None,
                    };
                    write_status(agent, ctx, obs).await?;
                    return Ok(Action::requeue(delay));
                }
                if had_pod || recreating {
                    ctx.note_replacement(&name);
                }
                match create_pod(agent, &tpl.spec, ctx, &pods_api).await {
                    Ok(p) => {
                        let (r, action) = if had_pod || recreating {
                            (event::POD_RECREATED, "RecreatePod")
                        } else {
                            (event::POD_CREATED, "CreatePod")
                        };
                        ctx.publish(
                            agent,
                            EventType::Normal,
                            r,
                            action,
                            format!("created pod {}", p.name_any()),
                        )
                        .await;
                        Some(p)
                    }
                    Err(e) => {
                        // Stable for a stable failure, so retries do not
                        // rewrite status and wake themselves past the backoff.
                        let msg = without_generated_name(&e.to_string(), &format!("{name}-"));
                        let obs = Observed {
                            phase: Phase::Failed,
                            ready: (false, reason::POD_CREATE_FAILED, msg.clone()),
                            storage,
                            scheduled: (false, reason::POD_CREATE_FAILED, msg.clone()),
                            pod: None,
                        };
                        if write_status(agent, ctx, obs).await? {
                            warn!(agent = %name, message = %msg, "pod create refused");
                            ctx.publish(
                                agent,
                                EventType::Warning,
                                event::POD_CREATE_FAILED,
                                "CreatePod",
                                msg,
                            )
                            .await;
                        }
                        return Err(e);
                    }
                }
            }
        }
    };
    let pod_name = current.as_ref().map(|p| p.name_any());
    let ready = current.as_ref().is_some_and(pod_ready);
    if ready {
        lock(&ctx.replacements).remove(&agent.name_any());
    }
    let obs = if ready {
        Observed {
            phase: Phase::Running,
            ready: (
                true,
                reason::AGENT_READY,
                "pod Ready: sidecar certified and linked".into(),
            ),
            storage,
            scheduled: (
                true,
                reason::POD_CREATED,
                format!("pod {}", pod_name.clone().unwrap_or_default()),
            ),
            pod: pod_name,
        }
    } else {
        let r = if recreating
            || agent
                .status
                .as_ref()
                .and_then(|s| s.pod.as_ref())
                .is_some_and(|p| Some(p) != pod_name.as_ref())
        {
            reason::POD_RECREATING
        } else {
            reason::POD_STARTING
        };
        Observed {
            phase: Phase::Starting,
            ready: (
                false,
                r,
                format!("pod {} starting", pod_name.clone().unwrap_or_default()),
            ),
            storage,
            scheduled: (
                true,
                reason::POD_CREATED,
                format!("pod {}", pod_name.clone().unwrap_or_default()),
            ),
            pod: pod_name,
        }
    };
    write_status(agent, ctx, obs).await?;
    Ok(Action::requeue(if ready { RESYNC } else { WAITING }))
}

/// The live (uncached) view of the pods labelled for `agent`, any owner and
/// state, consulted only when the cache shows no running pod.
async fn live_pods(agent: &Agent, api: &Api<Pod>) -> Result<Vec<Pod>, ReconcileError> {
    let lp = ListParams::default().labels(&format!("{LABEL_AGENT}={}", agent.name_any()));
    Ok(api.list(&lp).await?.items)
}

/// This Agent's pod that is neither ending nor ended, if any.
fn owned_running<'a>(agent: &Agent, pods: &'a [Pod]) -> Option<&'a Pod> {
    let uid = agent.uid();
    pods.iter().find(|p| {
        p.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == uid.as_ref())
            && p.metadata.deletion_timestamp.is_none()
            && !pod_finished(p)
    })
}

/// A pod still terminating that mounts `claim` (whoever owns it: an earlier
/// Agent of the same name counts too), whose end a new pod must wait for.
pub fn terminating_on_claim(pods: &[Pod], claim: &str) -> Option<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .find(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
        })
        .map(|p| p.name_any())
}

async fn create_pod(
    agent: &Agent,
    tpl: &AgentTemplateSpec,
    ctx: &Context,
    api: &Api<Pod>,
) -> Result<Pod, ReconcileError> {
    let pod = pod::build_pod(agent, tpl, &ctx.settings);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    ensure_workload_secret(agent, ctx, &pp).await?;
    Ok(api.create(&pp, &pod).await?)
}

/// The agent's workload token Secret, made once before its first pod. Only
/// created, never read back (the controller needs no `get` on Secrets): an
/// existing one is kept, so a running workload's token stays valid.
async fn ensure_workload_secret(
    agent: &Agent,
    ctx: &Context,
    pp: &PostParams,
) -> Result<(), ReconcileError> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace);
    match api.create(pp, &pod::build_workload_secret(agent)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn delete_pod(api: &Api<Pod>, pod: &Pod) -> Result<(), ReconcileError> {
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn pod_finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    )
}

pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod_on(name: &str, claim: &str, terminating: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": {
                "containers": [{ "name": "c" }],
                "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": claim } }],
            },
        }))
        .unwrap();
        if terminating {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        p
    }

    #[test]
    fn a_new_pod_waits_for_a_terminating_one_on_the_same_claim() {
        let old = pod_on("alice-old", "alice-data", true);
        assert_eq!(
            terminating_on_claim(std::slice::from_ref(&old), "alice-data").as_deref(),
            Some("alice-old")
        );
        // Another claim, or a pod not terminating, does not block.
        assert_eq!(terminating_on_claim(&[old], "bob-data"), None);
        assert_eq!(
            terminating_on_claim(&[pod_on("alice-new", "alice-data", false)], "alice-data"),
            None
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(50), BACKOFF_MAX);
    }
}
