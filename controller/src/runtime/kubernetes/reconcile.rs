//! The Agent reconciler: per Agent a volume claim, one Pod, status with
//! conditions, Events, and a finalizer that cleans up per retention policy.
//!
//! Reads come from informer caches (Agents, AgentTemplates, agent Pods);
//! the only live read is a labelled list before creating a pod, so a cache
//! that has not seen our last create never makes a second pod.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource as _, ResourceExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::conditions::{event, reason};
use super::crd::{Agent, AgentTemplate, AgentTemplateSpec, Mode, Phase, Retention};
use super::pod::{self, COMPONENT_AGENT, LABEL_AGENT, LABEL_COMPONENT, PodSettings};
use super::status::{Observed, write_status};

pub const FINALIZER: &str = "clawswarm.dev/cleanup";
pub const FIELD_MANAGER: &str = "clawswarm-controller";
/// Requeue of a healthy agent, so drift heals without an event.
const RESYNC: Duration = Duration::from_secs(300);
/// Requeue while waiting for something (a template, a starting pod).
const WAITING: Duration = Duration::from_secs(30);
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
        templates: Store<AgentTemplate>,
        pods: Store<Pod>,
        metrics: super::metrics::KubernetesMetrics,
    ) -> Self {
        Self {
            client,
            namespace,
            settings,
            recorder,
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

    async fn publish(
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

async fn apply(agent: &Agent, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(tpl) = ctx.template(&agent.spec.template) else {
        let msg = format!(
            "AgentTemplate {:?} not found in namespace {}",
            agent.spec.template, ctx.namespace
        );
        let obs = Observed {
            phase: Phase::Pending,
            ready: (false, reason::TEMPLATE_NOT_FOUND, msg),
            storage: (
                false,
                reason::TEMPLATE_NOT_FOUND,
                "waiting for the template".into(),
            ),
            scheduled: (false, reason::POD_ABSENT, "waiting for the template".into()),
            pod: None,
        };
        write_status(agent, ctx, obs).await?;
        return Ok(Action::requeue(WAITING));
    };
    if let Some(idle) = &tpl.spec.idle_timeout
        && crate::config::parse_duration(idle).is_err()
    {
        let msg = format!(
            "AgentTemplate {}: idleTimeout {idle:?} is not a duration",
            tpl.name_any()
        );
        let obs = Observed {
            phase: Phase::Failed,
            ready: (false, reason::INVALID_SPEC, msg.clone()),
            storage: (false, reason::INVALID_SPEC, msg.clone()),
            scheduled: (false, reason::INVALID_SPEC, msg),
            pod: None,
        };
        write_status(agent, ctx, obs).await?;
        return Ok(Action::requeue(WAITING));
    }

    let claim = ensure_volume_claim(agent, &tpl.spec, ctx).await;
    let storage = match &claim {
        Ok(c) => (
            true,
            reason::VOLUME_CLAIMED,
            format!("PersistentVolumeClaim {c}"),
        ),
        Err(e) => (false, reason::VOLUME_CLAIM_FAILED, e.to_string()),
    };
    if let Err(e) = claim {
        let obs = Observed {
            phase: Phase::Pending,
            ready: (false, reason::VOLUME_CLAIM_FAILED, e.to_string()),
            storage,
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

    let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace);
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
        None => match live_pod(agent, &pods_api).await? {
            Some(p) => Some(p),
            None => {
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
                        let obs = Observed {
                            phase: Phase::Failed,
                            ready: (false, reason::POD_CREATE_FAILED, e.to_string()),
                            storage,
                            scheduled: (false, reason::POD_CREATE_FAILED, e.to_string()),
                            pod: None,
                        };
                        write_status(agent, ctx, obs).await?;
                        return Err(e);
                    }
                }
            }
        },
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

async fn cleanup(agent: &Agent, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = agent.name_any();
    let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace);
    let lp = ListParams::default().labels(&format!("{LABEL_AGENT}={name}"));
    for p in pods_api.list(&lp).await?.items {
        if p.metadata.deletion_timestamp.is_none() {
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
    let retention = agent
        .spec
        .retention
        .or_else(|| {
            ctx.template(&agent.spec.template)
                .map(|t| t.spec.storage.retention)
        })
        .unwrap_or_default();
    let claim = pod::volume_claim_name(&name);
    match retention {
        Retention::Delete => {
            let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ctx.namespace);
            match pvcs.delete(&claim, &DeleteParams::default()).await {
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
            }
        }
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
    info!(agent = %name, ?retention, "agent cleaned up");
    Ok(Action::await_change())
}

async fn ensure_volume_claim(
    agent: &Agent,
    tpl: &AgentTemplateSpec,
    ctx: &Context,
) -> Result<String, ReconcileError> {
    let want = pod::build_volume_claim(agent, tpl);
    let name = want
        .metadata
        .name
        .clone()
        .ok_or(ReconcileError::MissingField("claim name"))?;
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ctx.namespace);
    if api.get_opt(&name).await?.is_none() {
        match api
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &want,
            )
            .await
        {
            Ok(_) => {
                ctx.publish(
                    agent,
                    EventType::Normal,
                    event::VOLUME_CLAIM_CREATED,
                    "CreateVolumeClaim",
                    format!("created volume claim {name} ({})", tpl.storage.size),
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(name)
}

/// The live (uncached) view, consulted only when the cache shows no pod.
async fn live_pod(agent: &Agent, api: &Api<Pod>) -> Result<Option<Pod>, ReconcileError> {
    let lp = ListParams::default().labels(&format!("{LABEL_AGENT}={}", agent.name_any()));
    let uid = agent.uid();
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .find(|p| p.metadata.deletion_timestamp.is_none() && !pod_finished(p)))
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

async fn delete_pod(api: &Api<Pod>, pod: &Pod) -> Result<(), ReconcileError> {
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

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(50), BACKOFF_MAX);
    }
}
