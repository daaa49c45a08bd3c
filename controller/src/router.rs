//! The one way into an agent, for every front door (Slack, the Gateway):
//! find the agent, wake it if it sleeps, wait for it to connect, hand the
//! turn to the mesh, and stream the reply back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clawswarm_certs::AgentId;
use clawswarm_proto::v1::Outcome;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info, info_span, warn};

use crate::{
    mesh::{LinkState, Mesh, MeshError, TurnEnd, TurnEvent, TurnSpec, TurnSpecError, TurnStream},
    runtime::{AgentMode, AgentPhase, AgentRecord, Runtime, RuntimeError},
};

#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// How long a turn waits for its agent to connect (a cold OpenClaw pod
    /// takes ~20 s after scheduling; image pulls take longer).
    pub connect_timeout: Duration,
    /// How often a waiting person hears that we are still waiting.
    pub patience_interval: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(180),
            patience_interval: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("invalid turn: {0}")]
    Invalid(#[from] TurnSpecError),
    #[error("no agent named {0}")]
    UnknownAgent(AgentId),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl RouteError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::UnknownAgent(_) => "unknown_agent",
            Self::Runtime(e) => e.metric_label(),
        }
    }
}

impl From<RouteError> for tonic::Status {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            RouteError::UnknownAgent(_) => tonic::Status::not_found(e.to_string()),
            RouteError::Runtime(r) => r.into(),
        }
    }
}

#[derive(Clone)]
pub struct Router {
    runtime: Arc<dyn Runtime>,
    mesh: Mesh,
    skills: Option<Arc<crate::skills::Skills>>,
    cfg: RouterConfig,
    tasks: TaskTracker,
}

impl Router {
    pub fn new(runtime: Arc<dyn Runtime>, mesh: Mesh, cfg: RouterConfig) -> Self {
        Self {
            runtime,
            mesh,
            skills: None,
            cfg,
            tasks: TaskTracker::new(),
        }
    }

    /// Serve the company skills library through this router's front doors.
    pub fn with_skills(mut self, skills: Arc<crate::skills::Skills>) -> Self {
        self.skills = Some(skills);
        self
    }

    /// The skills service, when a library is configured.
    pub fn skills(&self) -> Option<&Arc<crate::skills::Skills>> {
        self.skills.as_ref()
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The agent a person owns, if any.
    pub async fn agent_for_owner(&self, owner: &str) -> Result<Option<AgentRecord>, RouteError> {
        Ok(self.runtime.find_by_owner(owner).await?)
    }

    /// Start a turn. Returns at once with a stream whose first event is
    /// `Accepted`; waking and connecting are reported as `Progress`, and
    /// every failure arrives as the `End` event.
    pub async fn send_turn(
        &self,
        agent: &AgentId,
        spec: TurnSpec,
    ) -> Result<TurnStream, RouteError> {
        spec.validate()?;
        let record = self
            .runtime
            .get(agent)
            .await?
            .ok_or_else(|| RouteError::UnknownAgent(agent.clone()))?;
        let turn_id = spec
            .turn_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        Ok(self.spawn_delivery(agent, record, &turn_id, Delivery::Start(spec)))
    }

    /// Pick up a turn started earlier (perhaps through a controller that has
    /// since died) from chunk `from_seq` on.
    pub async fn resume_turn(
        &self,
        agent: &AgentId,
        turn_id: &str,
        from_seq: u64,
    ) -> Result<TurnStream, RouteError> {
        crate::mesh::turn::validate_turn_id(turn_id)?;
        let record = self
            .runtime
            .get(agent)
            .await?
            .ok_or_else(|| RouteError::UnknownAgent(agent.clone()))?;
        Ok(self.spawn_delivery(agent, record, turn_id, Delivery::Resume(from_seq)))
    }

    /// Open the requester's stream and deliver the turn in the background;
    /// any failure arrives on the stream as its `End`.
    fn spawn_delivery(
        &self,
        agent: &AgentId,
        record: AgentRecord,
        turn_id: &str,
        what: Delivery,
    ) -> TurnStream {
        let (stream, tx, dispatched, delivery) = self.open_stream(agent, turn_id);
        let router = self.clone();
        let span = info_span!("turn", agent = %agent, turn_id = %turn_id);
        let agent = agent.clone();
        let turn_id = turn_id.to_owned();
        self.tasks.spawn(
            async move {
                let work = router.deliver(&agent, &record, &turn_id, what, &tx, &dispatched);
                tokio::select! {
                    _ = delivery.cancelled() => {}
                    result = work => if let Err(end) = result {
                        warn!(error = %end.error, "turn not delivered");
                        let _ = tx.send(TurnEvent::End(end)).await;
                    }
                }
            }
            .instrument(span),
        );
        stream
    }

    fn open_stream(
        &self,
        agent: &AgentId,
        turn_id: &str,
    ) -> (
        TurnStream,
        mpsc::Sender<TurnEvent>,
        Arc<AtomicBool>,
        CancellationToken,
    ) {
        let (tx, rx) = mpsc::channel(self.mesh.config().turn_queue.max(2));
        // Room for one event is guaranteed on a fresh channel.
        let _ = tx.try_send(TurnEvent::Accepted {
            turn_id: turn_id.to_owned(),
        });
        let dispatched = Arc::new(AtomicBool::new(false));
        let delivery = CancellationToken::new();
        let stream = TurnStream {
            agent: agent.clone(),
            turn_id: turn_id.to_owned(),
            rx,
            ended: false,
            dispatched: dispatched.clone(),
            delivery: delivery.clone(),
            canceller: Arc::new(self.mesh.clone()),
        };
        (stream, tx, dispatched, delivery)
    }

    async fn deliver(
        &self,
        agent: &AgentId,
        record: &AgentRecord,
        turn_id: &str,
        what: Delivery,
        tx: &mpsc::Sender<TurnEvent>,
        dispatched: &AtomicBool,
    ) -> Result<(), TurnEnd> {
        let fail = |outcome, msg: String| TurnEnd::failed(outcome, msg);
        // A start that failed, or a crash loop: say why now rather than
        // after the readiness wait (the runtime keeps restarting it).
        if record.mode == AgentMode::Running && record.phase == AgentPhase::Failed {
            return Err(fail(
                Outcome::Error,
                format!("agent {agent} cannot start: {}", record.detail),
            ));
        }
        if record.mode == AgentMode::Suspended {
            let _ = tx
                .send(TurnEvent::Progress(format!("Waking agent {agent}…")))
                .await;
            info!("waking suspended agent for a turn");
            self.runtime
                .resume(agent)
                .await
                .map_err(|e| fail(Outcome::Error, format!("could not wake agent {agent}: {e}")))?;
        }
        if !self.mesh.state(agent).connected {
            self.wait_for_agent(agent, tx).await?;
        }
        let state = self.mesh.state(agent);
        if !state.workload_ready {
            // The sidecar holds the turn until its workload is ready; tell
            // the person what it is waiting for (a cold start, a crash).
            let record = self.runtime.get(agent).await.ok().flatten();
            let detail = record
                .as_ref()
                .map_or_else(|| state.detail.clone(), |r| shown_detail(r, &state));
            let _ = tx
                .send(TurnEvent::Progress(format!(
                    "Agent {agent} is not ready yet ({detail}); your message waits for it…"
                )))
                .await;
        }
        // Mark before sending: a requester that leaves from here on must
        // cancel the turn on the agent, not just stop this task.
        dispatched.store(true, Ordering::Release);
        let sent = match what {
            Delivery::Start(spec) => self.mesh.dispatch(agent, turn_id, &spec, tx.clone()).await,
            Delivery::Resume(from_seq) => {
                self.mesh.resume(agent, turn_id, from_seq, tx.clone()).await
            }
        };
        sent.map_err(|e| match e {
            MeshError::DuplicateTurn(_) => fail(Outcome::Rejected, e.to_string()),
            _ => fail(Outcome::Error, e.to_string()),
        })?;
        if let Err(e) = self.runtime.record_activity(agent).await {
            warn!(error = %e, "could not record agent activity");
        }
        Ok(())
    }

    async fn wait_for_agent(
        &self,
        agent: &AgentId,
        tx: &mpsc::Sender<TurnEvent>,
    ) -> Result<(), TurnEnd> {
        let _ = tx
            .send(TurnEvent::Progress(format!(
                "Agent {agent} is starting; your message will be delivered when it is ready…"
            )))
            .await;
        let deadline = tokio::time::Instant::now() + self.cfg.connect_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(TurnEnd::failed(
                    Outcome::Timeout,
                    format!(
                        "agent {agent} did not connect within {:?}",
                        self.cfg.connect_timeout
                    ),
                ));
            }
            match self
                .mesh
                .wait_connected(agent, left.min(self.cfg.patience_interval))
                .await
            {
                Ok(()) => return Ok(()),
                Err(_) if !left.is_zero() => {
                    let _ = tx
                        .send(TurnEvent::Progress(format!(
                            "Still waiting for agent {agent} to start…"
                        )))
                        .await;
                }
                Err(e) => return Err(TurnEnd::failed(Outcome::Error, e.to_string())),
            }
        }
    }

    /// Wait for in-flight deliveries after shutdown.
    pub async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Detail of a suspended agent whose processes are gone.
pub const SUSPENDED_DETAIL: &str =
    "suspended: processes stopped, data kept; the next message wakes it";

/// What an agent's detail line shows (`clawswarm agents list`, Gateway
/// `ListAgents`): the runtime's word while it knows of a problem the
/// sidecar cannot see (a process that crashed, a start that failed) and the
/// workload is not ready; else the sidecar's, which knows its workload best.
pub fn shown_detail(record: &AgentRecord, state: &LinkState) -> String {
    // The link keeps the last detail a sidecar reported; once suspended
    // that would describe processes that are gone.
    if record.mode == AgentMode::Suspended && !state.connected {
        return SUSPENDED_DETAIL.to_owned();
    }
    let runtime_knows = !record.detail.is_empty()
        && (record.phase == AgentPhase::Failed || !state.workload_ready || !state.connected);
    if runtime_knows || state.detail.is_empty() {
        record.detail.clone()
    } else {
        state.detail.clone()
    }
}

enum Delivery {
    Start(TurnSpec),
    Resume(u64),
}
