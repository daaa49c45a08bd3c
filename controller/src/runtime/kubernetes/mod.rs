//! The Kubernetes runtime: agents are `Agent` custom resources, reconciled
//! into a PVC and a Pod per agent (see `reconcile`); sidecars prove who they
//! are with projected ServiceAccount tokens (see `tokenreview`); two
//! controller replicas share the work through a Lease (see `leader`).
//!
//! Nothing lives only in memory: the person → agent mapping, mode, last
//! activity and token totals are all on the Agent objects, read through an
//! informer cache that every replica keeps warm.

mod cleanup;
pub mod conditions;
pub mod crd;
mod idle;
pub mod issuer;
pub mod label_value;
pub mod leader;
pub mod metrics;
pub mod offboarding;
pub mod pod;
pub mod reconcile;
mod settings;
mod status;
pub mod tokenreview;
pub mod validate;
mod volume;

pub use settings::{CommonSettings, KubernetesArgs, KubernetesError, build, default_client};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clawswarm_certs::AgentId;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info, info_span, warn};

use self::crd::{Agent, AgentTemplate, MeteredStatus, Mode, Phase, TokenUsage};
use self::pod::{COMPONENT_AGENT, LABEL_AGENT, LABEL_COMPONENT, PodSettings};
use self::tokenreview::TokenReviewAuthenticator;
use super::notices;
use super::usage::{self, MeteredTotals};
use super::{AgentMode, AgentPhase, AgentRecord, AgentSpec, Runtime, RuntimeError, TokenTotals};
use crate::identity::Authenticator;

/// How long `run` waits for the first list of each cache.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Last activity and token totals are written at most this often per agent.
const FLUSH_INTERVAL: Duration = Duration::from_secs(15);
/// Longest wait for each step of stopping (leading work, final flush, caches).
const STOP_STEP_TIMEOUT: Duration = Duration::from_secs(10);

type Writers = (
    reflector::store::Writer<Agent>,
    reflector::store::Writer<AgentTemplate>,
    reflector::store::Writer<Pod>,
);

/// Activity and usage not yet written to the Agent.
#[derive(Default)]
struct Pending {
    activity: Option<k8s_openapi::jiff::Timestamp>,
    usage: TokenTotals,
    /// Metered reports not written yet, oldest first (a new ledger's
    /// report must not replace the old ledger's last one before it is folded).
    metered: Vec<clawswarm_proto::v1::MeteredUsage>,
}

impl Pending {
    fn merge(&mut self, later: Pending) {
        self.activity = self.activity.max(later.activity);
        self.usage.add_totals(&later.usage);
        self.metered.extend(later.metered);
    }

    /// `known` with every pending metered report folded in.
    fn fold_metered(&self, known: Option<MeteredTotals>) -> Option<MeteredTotals> {
        self.metered
            .iter()
            .fold(known, |k, r| Some(MeteredTotals::fold(k.as_ref(), r)))
    }
}

/// The runtime; cheap handle over shared state (the leader task needs an owned one).
pub struct KubernetesRuntime(Arc<Inner>);

impl std::ops::Deref for KubernetesRuntime {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Inner {
    client: Client,
    namespace: String,
    settings: PodSettings,
    leader: leader::LeaderConfig,
    authenticator: Arc<TokenReviewAuthenticator>,
    agents: Store<Agent>,
    templates: Store<AgentTemplate>,
    pods: Store<Pod>,
    writers: Mutex<Option<Writers>>,
    leader_tx: watch::Sender<bool>,
    role_tx: watch::Sender<crate::runtime::Role>,
    recorder: Recorder,
    pending: Mutex<HashMap<AgentId, Pending>>,
    idle_check_interval: Duration,
    metrics: metrics::KubernetesMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn kube_err(e: kube::Error) -> RuntimeError {
    RuntimeError::Unavailable(e.to_string())
}

impl Inner {
    /// The API client this runtime uses (the skills library shares it).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The runtime's metrics; register them with [`metrics::KubernetesMetrics::register`].
    pub fn metrics(&self) -> &metrics::KubernetesMetrics {
        &self.metrics
    }

    /// `true` while this replica leads (reconciles and accepts AgentLink).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader_tx.subscribe()
    }

    fn agents_api(&self) -> Api<Agent> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn check_ns(&self, id: &AgentId) -> Result<(), RuntimeError> {
        if id.namespace() == self.namespace {
            Ok(())
        } else {
            Err(RuntimeError::Invalid(format!(
                "agents live in namespace {}, not {}",
                self.namespace,
                id.namespace()
            )))
        }
    }

    fn cached(&self, id: &AgentId) -> Option<Arc<Agent>> {
        self.agents
            .get(&ObjectRef::new(id.name()).within(id.namespace()))
    }

    fn record(&self, a: &Agent) -> Option<AgentRecord> {
        let id = AgentId::new(a.namespace()?, a.name_any()).ok()?;
        let status = a.status.clone().unwrap_or_default();
        let phase = if a.metadata.deletion_timestamp.is_some() {
            AgentPhase::Terminating
        } else {
            match status.phase {
                None | Some(Phase::Pending) => AgentPhase::Pending,
                Some(Phase::Starting) => AgentPhase::Starting,
                Some(Phase::Running) => AgentPhase::Running,
                Some(Phase::Suspended) => AgentPhase::Suspended,
                Some(Phase::Failed) => AgentPhase::Failed,
                Some(Phase::Terminating) => AgentPhase::Terminating,
            }
        };
        let detail = status
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::READY)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default();
        let mut turns: TokenTotals = status.usage.unwrap_or_default().into();
        let mut metered = status.metered.as_ref().map(MeteredTotals::from);
        if let Some(p) = lock(&self.pending).get(&id) {
            turns.add_totals(&p.usage);
            metered = p.fold_metered(metered);
        }
        let usage = usage::shown(turns, metered.as_ref());
        let data = usage::shown_data(metered.as_ref());
        Some(AgentRecord {
            id,
            owner: a.spec.owner.clone(),
            template: a.spec.template.clone(),
            mode: match a.spec.mode {
                Mode::Running => AgentMode::Running,
                Mode::Suspended => AgentMode::Suspended,
            },
            phase,
            detail,
            usage,
            data,
        })
    }

    async fn set_mode(&self, id: &AgentId, mode: Mode) -> Result<AgentRecord, RuntimeError> {
        self.check_ns(id)?;
        let patch = serde_json::json!({ "spec": { "mode": mode } });
        let a = match self
            .agents_api()
            .patch(id.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(a) => a,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Err(RuntimeError::NotFound(id.clone()));
            }
            Err(e) => return Err(kube_err(e)),
        };
        self.record(&a)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    /// Write pending activity and usage. Usage is added to the freshest
    /// totals under optimistic concurrency, so two writers never lose tokens.
    async fn flush(&self) {
        let batch: Vec<(AgentId, Pending)> = lock(&self.pending).drain().collect();
        for (id, p) in batch {
            if let Err(e) = self.flush_one(&id, &p).await {
                warn!(agent = %id, error = %e, "could not record activity/usage; will retry");
                let mut pending = lock(&self.pending);
                let slot = pending.entry(id).or_default();
                let later = std::mem::take(slot);
                *slot = p;
                slot.merge(later);
            }
        }
    }

    async fn flush_one(&self, id: &AgentId, p: &Pending) -> Result<(), kube::Error> {
        let api = self.agents_api();
        let Some(current) = api.get_opt(id.name()).await? else {
            return Ok(());
        };
        let status = current.status.clone().unwrap_or_default();
        let activity = match (status.last_activity.as_ref().map(|t| t.0), p.activity) {
            (Some(old), Some(new)) => Some(old.max(new)),
            (old, new) => old.or(new),
        };
        // `status.usage` shows the metered total once there is one; the turn
        // totals it held before are not needed then (metering counts turns too).
        let metered = p.fold_metered(status.metered.as_ref().map(MeteredTotals::from));
        let usage: TokenUsage = match &metered {
            Some(m) => m.total().into(),
            None => {
                let mut turns: TokenTotals = status.usage.unwrap_or_default().into();
                turns.add_totals(&p.usage);
                turns.into()
            }
        };
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": current.resource_version() },
            "status": {
                "usage": usage,
                "metered": metered.as_ref().map(MeteredStatus::from),
                "lastActivity": activity.map(Time),
            },
        });
        api.patch_status(id.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn lead(self: Arc<Self>, stop: CancellationToken) {
        let ctx = Arc::new(reconcile::Context::new(
            self.client.clone(),
            self.namespace.clone(),
            self.settings.clone(),
            self.recorder.clone(),
            (
                self.agents.clone(),
                self.templates.clone(),
                self.pods.clone(),
            ),
            self.metrics.clone(),
        ));
        let reconciler =
            tokio::spawn(reconcile::run(ctx, stop.clone()).instrument(info_span!("reconciler")));
        let mut tick = tokio::time::interval(self.idle_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.suspend_idle().await,
            }
        }
        if let Err(e) = reconciler.await {
            warn!(error = %e, "reconciler task failed");
        }
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    /// `Starting` until the caches synced and the first Lease attempt
    /// decided; then `Leader` or `Standby` as the Lease moves.
    fn role(&self) -> watch::Receiver<crate::runtime::Role> {
        self.role_tx.subscribe()
    }

    fn authenticator(&self) -> Arc<dyn Authenticator> {
        self.authenticator.clone()
    }

    async fn provision(&self, spec: AgentSpec) -> Result<AgentRecord, RuntimeError> {
        self.check_ns(&spec.id)?;
        if let Some(existing) = self.find_by_owner(&spec.owner).await? {
            return Err(RuntimeError::OwnerHasAgent {
                owner: spec.owner,
                agent: existing.id,
            });
        }
        let agent = Agent {
            metadata: ObjectMeta {
                name: Some(spec.id.name().to_string()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: crd::AgentSpec {
                owner: spec.owner,
                template: spec.template,
                mode: Mode::Running,
                retention: None,
            },
            status: None,
        };
        let pp = PostParams {
            field_manager: Some(reconcile::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self.agents_api().create(&pp, &agent).await {
            Ok(a) => self
                .record(&a)
                .ok_or_else(|| RuntimeError::Invalid("created agent has no namespace".into())),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(RuntimeError::AlreadyExists(spec.id)),
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => {
                Err(RuntimeError::Invalid(e.message))
            }
            Err(e) => Err(kube_err(e)),
        }
    }

    async fn deprovision(&self, id: &AgentId, delete_data: bool) -> Result<(), RuntimeError> {
        self.check_ns(id)?;
        let api = self.agents_api();
        if delete_data {
            let patch = serde_json::json!({ "spec": { "retention": crd::Retention::Delete } });
            match api
                .patch(id.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    return Err(RuntimeError::NotFound(id.clone()));
                }
                Err(e) => return Err(kube_err(e)),
            }
        }
        // The finalizer does the rest: pods, and the claim per retention.
        match api.delete(id.name(), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Err(RuntimeError::NotFound(id.clone())),
            Err(e) => Err(kube_err(e)),
        }
    }

    async fn suspend(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        self.set_mode(id, Mode::Suspended).await
    }

    async fn resume(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        // A woken agent starts a fresh idle period.
        self.record_activity(id).await?;
        self.set_mode(id, Mode::Running).await
    }

    async fn restart(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        self.check_ns(id)?;
        let a = self
            .cached(id)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&format!("{LABEL_AGENT}={}", id.name()));
        for p in pods.list(&lp).await.map_err(kube_err)?.items {
            match pods.delete(&p.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(kube_err(e)),
            }
        }
        self.record(&a)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    async fn skill_allowlist(
        &self,
        template: &str,
    ) -> Result<crate::skills::Allowlist, RuntimeError> {
        let tpl = self
            .templates
            .get(&ObjectRef::new(template).within(&self.namespace))
            .ok_or_else(|| {
                RuntimeError::Invalid(format!("AgentTemplate {template:?} does not exist"))
            })?;
        Ok(match &tpl.spec.skills {
            Some(s) => crate::skills::Allowlist::of(s.library.clone()),
            None => crate::skills::Allowlist::all(),
        })
    }

    async fn get(&self, id: &AgentId) -> Result<Option<AgentRecord>, RuntimeError> {
        if id.namespace() != self.namespace {
            return Ok(None);
        }
        Ok(self.cached(id).and_then(|a| self.record(&a)))
    }

    async fn list(&self) -> Result<Vec<AgentRecord>, RuntimeError> {
        let mut out: Vec<AgentRecord> = self
            .agents
            .state()
            .iter()
            .filter_map(|a| self.record(a))
            .collect();
        out.sort_by_key(|a| a.id.to_string());
        Ok(out)
    }

    async fn find_by_owner(&self, owner: &str) -> Result<Option<AgentRecord>, RuntimeError> {
        // Deterministic when two Agents share an owner: the one the
        // reconciler lets run (the other is flagged `DuplicateOwner`).
        let all = self.agents.state();
        Ok(validate::primary_for_owner(all.iter().map(|a| &**a), owner)
            .and_then(|a| self.record(a)))
    }

    async fn record_activity(&self, id: &AgentId) -> Result<(), RuntimeError> {
        self.check_ns(id)?;
        lock(&self.pending).entry(id.clone()).or_default().activity =
            Some(k8s_openapi::jiff::Timestamp::now());
        Ok(())
    }

    async fn record_usage(&self, id: &AgentId, usage: TokenTotals) -> Result<(), RuntimeError> {
        self.check_ns(id)?;
        let mut pending = lock(&self.pending);
        pending
            .entry(id.clone())
            .or_default()
            .usage
            .add_totals(&usage);
        Ok(())
    }

    async fn record_metered(
        &self,
        id: &AgentId,
        report: &clawswarm_proto::v1::MeteredUsage,
    ) -> Result<(), RuntimeError> {
        self.check_ns(id)?;
        let mut pending = lock(&self.pending);
        let queued = &mut pending.entry(id.clone()).or_default().metered;
        // One entry per ledger in a row keeps the queue as short as the
        // number of volume changes, however long the API server is away.
        match queued.last_mut() {
            Some(last) if last.ledger_id == report.ledger_id => {
                let folded = MeteredTotals::fold(Some(&MeteredTotals::from_report(last)), report);
                last.lifetime = Some(folded.lifetime.to_proto());
                last.data = Some(folded.data.to_proto());
            }
            _ => queued.push(report.clone()),
        }
        Ok(())
    }

    async fn notice_delivered(&self, id: &AgentId, notice_id: &str) -> Result<bool, RuntimeError> {
        self.check_ns(id)?;
        // From the API server, not the cache: the previous leader may have
        // written the id just before it died.
        let a = self
            .agents_api()
            .get_opt(id.name())
            .await
            .map_err(kube_err)?
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        Ok(a.status
            .is_some_and(|s| s.delivered_notices.iter().any(|d| d == notice_id)))
    }

    async fn record_notice_delivered(
        &self,
        id: &AgentId,
        notice_id: &str,
    ) -> Result<(), RuntimeError> {
        self.check_ns(id)?;
        let api = self.agents_api();
        // Optimistic concurrency: the flusher and the reconciler write
        // status too; a conflict is retried on the fresh object.
        for _ in 0..5 {
            let a = api
                .get_opt(id.name())
                .await
                .map_err(kube_err)?
                .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
            let mut delivered = a
                .status
                .as_ref()
                .map(|s| s.delivered_notices.clone())
                .unwrap_or_default();
            if !notices::remember(&mut delivered, notice_id) {
                return Ok(());
            }
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": a.resource_version() },
                "status": { "deliveredNotices": delivered },
            });
            match api
                .patch_status(id.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(kube_err(e)),
            }
        }
        Err(RuntimeError::Failed {
            agent: id.clone(),
            message: "could not record the delivered notice: the Agent kept changing".into(),
        })
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        let Some((agents_w, templates_w, pods_w)) = lock(&self.writers).take() else {
            return Err(RuntimeError::Failed {
                agent: AgentId::new(self.namespace.clone(), "controller")
                    .map_err(|e| RuntimeError::Invalid(e.to_string()))?,
                message: "the kubernetes runtime runs only once".into(),
            });
        };
        let tasks = TaskTracker::new();
        let ns = self.namespace.clone();
        let client = self.client.clone();
        tasks.spawn(
            drive(
                reflector::reflector(
                    agents_w,
                    watcher(
                        Api::<Agent>::namespaced(client.clone(), &ns),
                        watcher::Config::default(),
                    ),
                ),
                shutdown.clone(),
            )
            .instrument(info_span!("agents_cache")),
        );
        tasks.spawn(
            drive(
                reflector::reflector(
                    templates_w,
                    watcher(
                        Api::<AgentTemplate>::namespaced(client.clone(), &ns),
                        watcher::Config::default(),
                    ),
                ),
                shutdown.clone(),
            )
            .instrument(info_span!("templates_cache")),
        );
        let pod_cfg =
            watcher::Config::default().labels(&format!("{LABEL_COMPONENT}={COMPONENT_AGENT}"));
        tasks.spawn(
            drive(
                reflector::reflector(
                    pods_w,
                    watcher(Api::<Pod>::namespaced(client.clone(), &ns), pod_cfg),
                ),
                shutdown.clone(),
            )
            .instrument(info_span!("pods_cache")),
        );
        for (what, ready) in [
            (
                "agents",
                tokio::time::timeout(CACHE_SYNC_TIMEOUT, self.agents.wait_until_ready())
                    .await
                    .map(|r| r.is_ok()),
            ),
            (
                "templates",
                tokio::time::timeout(CACHE_SYNC_TIMEOUT, self.templates.wait_until_ready())
                    .await
                    .map(|r| r.is_ok()),
            ),
            (
                "pods",
                tokio::time::timeout(CACHE_SYNC_TIMEOUT, self.pods.wait_until_ready())
                    .await
                    .map(|r| r.is_ok()),
            ),
        ] {
            if ready != Ok(true) {
                // Asked to stop while starting (the caches' writers end
                // with the shutdown): a stop, not a failure.
                let stopping = shutdown.is_cancelled();
                shutdown.cancel();
                tasks.close();
                tasks.wait().await;
                if stopping {
                    info!(cache = what, "stopped before the caches synced");
                    return Ok(());
                }
                return Err(RuntimeError::Unavailable(format!(
                    "{what} cache did not sync within {CACHE_SYNC_TIMEOUT:?} (RBAC or API server?)"
                )));
            }
        }
        info!(namespace = %ns, agents = self.agents.state().len(), "kubernetes caches synced");

        let leader_stop = shutdown.child_token();
        tasks.spawn(
            leader::run(
                client.clone(),
                self.leader.clone(),
                self.leader_tx.clone(),
                self.role_tx.clone(),
                leader_stop.clone(),
            )
            .instrument(info_span!("leader")),
        );
        let mut leading = self.leader_tx.subscribe();
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lead_stop: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
        let this = self.0.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = flush.tick() => self.flush().await,
                changed = leading.changed() => {
                    if changed.is_err() { break }
                    let now_leading = *leading.borrow_and_update();
                    self.metrics.leader.set(i64::from(now_leading));
                    match (now_leading, lead_stop.take()) {
                        (true, None) => {
                            let stop = shutdown.child_token();
                            lead_stop = Some((stop.clone(), tokio::spawn(this.clone().lead(stop).instrument(info_span!("leading")))));
                        }
                        (false, Some((stop, handle))) => {
                            stop.cancel();
                            stop_within("leading work", handle).await;
                        }
                        (_, other) => lead_stop = other,
                    }
                }
            }
        }
        if let Some((stop, handle)) = lead_stop {
            stop.cancel();
            stop_within("leading work", handle).await;
        }
        if tokio::time::timeout(STOP_STEP_TIMEOUT, self.flush())
            .await
            .is_err()
        {
            warn!("final flush of activity/usage timed out; those updates are lost");
        }
        leader_stop.cancel();
        tasks.close();
        if tokio::time::timeout(STOP_STEP_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            warn!("caches or lease task did not stop in time");
        }
        info!("kubernetes runtime stopped");
        Ok(())
    }
}

/// Wait for a task to finish after its stop signal; abort it past the limit.
async fn stop_within(what: &str, mut handle: tokio::task::JoinHandle<()>) {
    match tokio::time::timeout(STOP_STEP_TIMEOUT, &mut handle).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(task = what, error = %e, "task failed"),
        Err(_) => {
            warn!(task = what, "did not stop in time; aborting it");
            handle.abort();
        }
    }
}

/// Poll a reflector stream until shutdown (the stream feeds the store).
async fn drive<S, K>(stream: S, shutdown: CancellationToken)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => match ev {
                Some(Ok(_)) => {}
                Some(Err(e)) => warn!(error = %e, "watch error; retrying with backoff"),
                None => return,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
