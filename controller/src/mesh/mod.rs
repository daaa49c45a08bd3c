//! The mesh: one `AgentLink` stream per connected agent, turns multiplexed
//! on it by id, replies routed back to whoever asked.
//!
//! State per agent lives in an [`AgentEntry`] that outlives any one stream, so
//! a reconnecting sidecar (or a replacement connection) picks up the turns in
//! flight: the controller asks it to `Resume` each from the next sequence
//! number it has not delivered. The sidecar keeps every reply until the
//! controller acknowledges it, so nothing that only lives in this process's
//! memory is needed to finish a reply.

mod forward;
mod link;
pub mod turn;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clawswarm_certs::{AgentId, TrustDomain};
use clawswarm_proto::v1::{self as pb, ControllerFrame, controller_frame::Frame};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

pub use link::AgentLinkService;

pub use turn::{TurnEnd, TurnEvent, TurnSpec, TurnSpecError, TurnStream};

use crate::metrics::{Metrics, ResultLabel};
use turn::CancelTurn;

#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Identifies this controller process in `Welcome` and logs.
    pub controller_id: String,
    pub trust_domain: TrustDomain,
    /// The namespace agents live in; an agent certificate from another
    /// namespace is refused.
    pub namespace: String,
    /// Frames queued towards one sidecar before senders wait.
    pub link_queue: usize,
    /// Events queued towards one requester before the link waits.
    pub turn_queue: usize,
    /// How long a send may wait on a full queue (a stuck requester or link)
    /// before the turn is given up.
    pub send_timeout: Duration,
    /// How long a new stream has to say Hello.
    pub hello_timeout: Duration,
    /// How long turns wait for a disconnected agent to come back.
    pub orphan_timeout: Duration,
    /// Largest frame accepted from a sidecar, in bytes.
    pub max_frame_bytes: usize,
}

impl MeshConfig {
    pub fn new(trust_domain: TrustDomain, namespace: impl Into<String>) -> Self {
        Self {
            controller_id: format!("controller-{}", uuid::Uuid::now_v7()),
            trust_domain,
            namespace: namespace.into(),
            link_queue: 1024,
            turn_queue: 256,
            send_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            orphan_timeout: Duration::from_secs(60),
            max_frame_bytes: 1024 * 1024,
        }
    }
}

/// What the controller knows of an agent's connection right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub connected: bool,
    pub workload_ready: bool,
    pub detail: String,
    /// Increments with every new stream; 0 = never connected.
    pub conn_id: u64,
    /// The workload adapter the sidecar last reported (`workload=` in
    /// Hello's capabilities); empty if it never said.
    pub workload: String,
}

/// Tokens a sidecar reported.
#[derive(Clone, Debug, PartialEq)]
pub enum UsageReport {
    /// What one finished turn used, as the workload counted it.
    Turn(pb::Usage),
    /// The sidecar's lifetime figure for one ledger: every model call,
    /// turns and background work alike (`Status.metered`).
    Metered(pb::MeteredUsage),
}

/// Streams out of the mesh, each bounded.
pub struct MeshOutputs {
    /// Agents' notices (when nobody drains it, sidecars keep their notices
    /// and resend later).
    pub notices: mpsc::Receiver<InboundNotice>,
    /// Token usage of every finished turn, and the metered figures sidecars
    /// report, for the runtime's persisted totals.
    pub usage: mpsc::Receiver<(AgentId, UsageReport)>,
    /// Turns a reconnecting sidecar holds that no requester here is waiting
    /// for (their controller died): whoever made the reply target may pick
    /// them up with `Router::resume_turn`. Unclaimed ones stay listed in
    /// [`Mesh::pending_turns`] until the sidecar's next connection.
    pub pending: mpsc::Receiver<PendingReply>,
    /// Sidecars that manage skills, as they connect, with the library
    /// skills they hold (the skills service refreshes or removes each).
    pub skill_holders: mpsc::Receiver<SkillHolder>,
}

/// A sidecar that just connected and the library skills it holds.
#[derive(Clone, Debug)]
pub struct SkillHolder {
    pub agent: AgentId,
    pub library_skills: Vec<String>,
}

/// A turn whose requester is gone, as its sidecar reported it on connect.
#[derive(Clone, Debug)]
pub struct PendingReply {
    pub agent: AgentId,
    pub turn: pb::PendingTurn,
}

/// A proactive message from an agent, to be delivered to its owner and then
/// acknowledged with [`Mesh::ack_notice`].
#[derive(Clone, Debug)]
pub struct InboundNotice {
    pub agent: AgentId,
    pub notice_id: String,
    pub conversation: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("agent {0} is not connected")]
    NotConnected(AgentId),
    #[error("turn {0} is already in flight")]
    DuplicateTurn(String),
    #[error("agent {0}'s link is not accepting frames (queue full for {1:?})")]
    LinkBusy(AgentId, Duration),
    #[error("invalid turn: {0}")]
    InvalidTurn(#[from] TurnSpecError),
    #[error("agent {0} did not answer the skills request within {1:?}")]
    SkillTimeout(AgentId, Duration),
    #[error("agent {0} has {1} skills requests in flight already; try again")]
    SkillsBusy(AgentId, usize),
    #[error("controller is shutting down")]
    ShuttingDown,
}

impl MeshError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotConnected(_) => "not_connected",
            Self::DuplicateTurn(_) => "duplicate_turn",
            Self::LinkBusy(..) => "link_busy",
            Self::InvalidTurn(_) => "invalid_turn",
            Self::SkillTimeout(..) => "skill_timeout",
            Self::SkillsBusy(..) => "skills_busy",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl From<MeshError> for tonic::Status {
    fn from(e: MeshError) -> Self {
        let msg = e.to_string();
        match e {
            MeshError::NotConnected(_)
            | MeshError::LinkBusy(..)
            | MeshError::ShuttingDown
            | MeshError::SkillsBusy(..) => tonic::Status::unavailable(msg),
            MeshError::SkillTimeout(..) => tonic::Status::deadline_exceeded(msg),
            MeshError::DuplicateTurn(_) => tonic::Status::already_exists(msg),
            MeshError::InvalidTurn(_) => tonic::Status::invalid_argument(msg),
        }
    }
}

type LinkTx = mpsc::Sender<Result<ControllerFrame, tonic::Status>>;

#[derive(Clone)]
struct LinkHandle {
    conn_id: u64,
    tx: LinkTx,
    /// Fired when this stream is replaced or the controller stops.
    cancel: CancellationToken,
}

/// Where one turn's events go.
struct TurnSink {
    /// The requester, behind a queue of this turn's own (see [`forward`]).
    fwd: forward::Forward,
    /// The next chunk the requester has not seen; replays below it are
    /// dropped as duplicates.
    next_seq: u64,
    started: Instant,
    first_chunk_seen: bool,
}

struct AgentEntry {
    id: AgentId,
    label: String,
    link: Mutex<Option<LinkHandle>>,
    turns: Mutex<HashMap<String, TurnSink>>,
    /// Turns the sidecar reported holding when it connected that nobody here
    /// is waiting for (the controller that asked for them died).
    pending: Mutex<HashMap<String, pb::PendingTurn>>,
    /// Skills requests waiting for the sidecar's reply, by request id;
    /// dropped (so the requester hears "not connected") when the stream ends.
    skill_requests: Mutex<HashMap<String, oneshot::Sender<pb::SkillReply>>>,
    state: watch::Sender<LinkState>,
}

/// Skills requests one agent may have outstanding.
const MAX_SKILL_REQUESTS: usize = 8;

struct Inner {
    cfg: MeshConfig,
    agents: RwLock<HashMap<AgentId, Arc<AgentEntry>>>,
    metrics: Arc<Metrics>,
    notices: mpsc::Sender<InboundNotice>,
    usage: mpsc::Sender<(AgentId, UsageReport)>,
    pending: mpsc::Sender<PendingReply>,
    skill_holders: mpsc::Sender<SkillHolder>,
    next_conn: AtomicU64,
    accepting: AtomicBool,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

// Poisoning only follows a panic elsewhere; the maps stay consistent because
// no code path panics while holding them, so recover the guard.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mesh {
    /// The mesh and what flows out of it besides replies.
    pub fn new(
        cfg: MeshConfig,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> (Self, MeshOutputs) {
        let (notices, notices_rx) = mpsc::channel(1024);
        let (usage, usage_rx) = mpsc::channel(4096);
        let (pending, pending_rx) = mpsc::channel(4096);
        let (skill_holders, skill_holders_rx) = mpsc::channel(1024);
        let inner = Inner {
            cfg,
            agents: RwLock::default(),
            metrics,
            notices,
            usage,
            pending,
            skill_holders,
            next_conn: AtomicU64::new(1),
            accepting: AtomicBool::new(true),
            tasks: TaskTracker::new(),
            shutdown,
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            MeshOutputs {
                notices: notices_rx,
                usage: usage_rx,
                pending: pending_rx,
                skill_holders: skill_holders_rx,
            },
        )
    }

    pub fn config(&self) -> &MeshConfig {
        &self.inner.cfg
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    fn entry(&self, id: &AgentId) -> Arc<AgentEntry> {
        if let Some(e) = self
            .inner
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return e.clone();
        }
        let mut agents = self.inner.agents.write().unwrap_or_else(|p| p.into_inner());
        agents
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(AgentEntry {
                    id: id.clone(),
                    label: id.to_string(),
                    link: Mutex::new(None),
                    turns: Mutex::default(),
                    pending: Mutex::default(),
                    skill_requests: Mutex::default(),
                    state: watch::Sender::new(LinkState::default()),
                })
            })
            .clone()
    }

    /// Current connection state of an agent.
    pub fn state(&self, id: &AgentId) -> LinkState {
        self.entry(id).state.borrow().clone()
    }

    /// Changes to an agent's connection state.
    pub fn watch_state(&self, id: &AgentId) -> watch::Receiver<LinkState> {
        self.entry(id).state.subscribe()
    }

    /// Agents with a live stream.
    pub fn connected_agents(&self) -> Vec<AgentId> {
        let agents = self.inner.agents.read().unwrap_or_else(|p| p.into_inner());
        agents
            .values()
            .filter(|e| e.state.borrow().connected)
            .map(|e| e.id.clone())
            .collect()
    }

    /// Stop accepting new streams (standby replica, or draining before exit).
    pub fn set_accepting(&self, accepting: bool) {
        self.inner.accepting.store(accepting, Ordering::Release);
    }

    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::Acquire)
    }

    /// Turns the agent's sidecar holds that no requester here is waiting for.
    pub fn pending_turns(&self, id: &AgentId) -> Vec<pb::PendingTurn> {
        lock(&self.entry(id).pending).values().cloned().collect()
    }

    /// Wait until the agent is connected, at most `timeout`.
    pub async fn wait_connected(&self, id: &AgentId, timeout: Duration) -> Result<(), MeshError> {
        let mut rx = self.watch_state(id);
        let wait = rx.wait_for(|s| s.connected);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(MeshError::NotConnected(id.clone())),
        }
    }

    /// Number of turns in flight across all agents.
    pub fn turns_in_flight(&self) -> usize {
        let agents = self.inner.agents.read().unwrap_or_else(|p| p.into_inner());
        agents.values().map(|e| lock(&e.turns).len()).sum()
    }

    /// Send a new turn to a connected agent; its events go to `tx`.
    pub(crate) async fn dispatch(
        &self,
        id: &AgentId,
        turn_id: &str,
        spec: &TurnSpec,
        tx: mpsc::Sender<TurnEvent>,
    ) -> Result<(), MeshError> {
        let frame = Frame::Turn(pb::Turn {
            turn_id: turn_id.to_owned(),
            conversation: spec.conversation.clone(),
            text: spec.text.clone(),
            reply_target: spec.reply_target.clone(),
        });
        self.register_and_send(id, turn_id, 0, tx, frame).await
    }

    /// Ask a connected agent to replay a turn from `from_seq`.
    pub(crate) async fn resume(
        &self,
        id: &AgentId,
        turn_id: &str,
        from_seq: u64,
        tx: mpsc::Sender<TurnEvent>,
    ) -> Result<(), MeshError> {
        let frame = Frame::Resume(pb::Resume {
            turn_id: turn_id.to_owned(),
            from_seq,
        });
        self.register_and_send(id, turn_id, from_seq, tx, frame)
            .await?;
        lock(&self.entry(id).pending).remove(turn_id);
        Ok(())
    }

    async fn register_and_send(
        &self,
        id: &AgentId,
        turn_id: &str,
        next_seq: u64,
        tx: mpsc::Sender<TurnEvent>,
        frame: Frame,
    ) -> Result<(), MeshError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(MeshError::ShuttingDown);
        }
        let entry = self.entry(id);
        {
            let mut turns = lock(&entry.turns);
            if turns.contains_key(turn_id) {
                return Err(MeshError::DuplicateTurn(turn_id.to_owned()));
            }
            let (mesh, agent, tid) = (self.clone(), id.clone(), turn_id.to_owned());
            let (acker, ack_entry, ack_tid) = (self.clone(), entry.clone(), turn_id.to_owned());
            let fwd = forward::Forward::spawn(
                tx,
                self.inner.cfg.send_timeout,
                &self.inner.tasks,
                move |why| mesh.cancel_turn(&agent, &tid, why.reason()),
                // Delivered, or its requester is gone for good: either way
                // the sidecar can forget the reply.
                move || {
                    acker.try_send_frame(
                        &ack_entry,
                        Frame::Ack(pb::Ack {
                            subject: Some(pb::ack::Subject::TurnId(ack_tid)),
                        }),
                    )
                },
            );
            let sink = TurnSink {
                fwd,
                next_seq,
                started: Instant::now(),
                first_chunk_seen: false,
            };
            turns.insert(turn_id.to_owned(), sink);
        }
        if let Err(e) = self.send_frame(&entry, frame).await {
            lock(&entry.turns).remove(turn_id);
            return Err(e);
        }
        Ok(())
    }

    async fn send_frame(&self, entry: &AgentEntry, frame: Frame) -> Result<(), MeshError> {
        let tx = lock(&entry.link).as_ref().map(|l| l.tx.clone());
        let Some(tx) = tx else {
            return Err(MeshError::NotConnected(entry.id.clone()));
        };
        let frame = ControllerFrame { frame: Some(frame) };
        match tx
            .send_timeout(Ok(frame), self.inner.cfg.send_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(MeshError::LinkBusy(
                entry.id.clone(),
                self.inner.cfg.send_timeout,
            )),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                Err(MeshError::NotConnected(entry.id.clone()))
            }
        }
    }

    /// Best effort, from synchronous contexts (a requester's drop).
    fn try_send_frame(&self, entry: &Arc<AgentEntry>, frame: Frame) {
        let tx = lock(&entry.link).as_ref().map(|l| l.tx.clone());
        let Some(tx) = tx else { return };
        let frame = ControllerFrame { frame: Some(frame) };
        if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(Ok(frame)) {
            // Queue full: wait for room off the caller's thread.
            let timeout = self.inner.cfg.send_timeout;
            self.inner.tasks.spawn(async move {
                let _ = tx.send_timeout(frame, timeout).await;
            });
        }
    }

    /// Ask a connected sidecar about its agent's skills and wait for its
    /// answer (at most `timeout`).
    pub async fn skill_request(
        &self,
        id: &AgentId,
        op: pb::skill_request::Op,
        timeout: Duration,
    ) -> Result<pb::SkillReply, MeshError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(MeshError::ShuttingDown);
        }
        let entry = self.entry(id);
        let request_id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = lock(&entry.skill_requests);
            if waiting.len() >= MAX_SKILL_REQUESTS {
                return Err(MeshError::SkillsBusy(id.clone(), waiting.len()));
            }
            waiting.insert(request_id.clone(), tx);
        }
        let frame = Frame::SkillRequest(pb::SkillRequest {
            request_id: request_id.clone(),
            op: Some(op),
        });
        let forget = || {
            lock(&entry.skill_requests).remove(&request_id);
        };
        if let Err(e) = self.send_frame(&entry, frame).await {
            forget();
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(MeshError::NotConnected(id.clone())),
            Err(_) => {
                forget();
                Err(MeshError::SkillTimeout(id.clone(), timeout))
            }
        }
    }

    /// The owner has the notice; the sidecar may forget it.
    pub async fn ack_notice(&self, id: &AgentId, notice_id: &str) -> Result<(), MeshError> {
        let frame = Frame::Ack(pb::Ack {
            subject: Some(pb::ack::Subject::NoticeId(notice_id.to_owned())),
        });
        self.send_frame(&self.entry(id), frame).await
    }

    /// Every agent's entry, outside the registry's lock.
    fn entries(&self) -> Vec<Arc<AgentEntry>> {
        let agents = self.inner.agents.read().unwrap_or_else(|p| p.into_inner());
        agents.values().cloned().collect()
    }

    /// Tell every connected sidecar this controller is going away, so it
    /// reconnects (to the other replica, or to this one after a restart).
    pub async fn drain(&self, reason: &str) {
        self.set_accepting(false);
        let entries = self.entries();
        for entry in entries {
            let _ = self
                .send_frame(
                    &entry,
                    Frame::Drain(pb::Drain {
                        reason: reason.to_owned(),
                    }),
                )
                .await;
        }
    }

    /// This replica stopped leading: let go of every turn in flight without
    /// cancelling it (each requester gets [`TurnEvent::HandedOver`]), then
    /// drain the streams so the sidecars take their turns to the new leader.
    pub async fn hand_over(&self, reason: &str) {
        self.set_accepting(false);
        let entries = self.entries();
        for entry in &entries {
            // Out of the map first: a requester dropping its stream now
            // finds nothing to cancel, so no Cancel reaches the sidecar.
            let turns: Vec<_> = lock(&entry.turns).drain().collect();
            for (turn_id, sink) in turns {
                info!(agent = %entry.id, turn_id = %turn_id, "turn handed over to the next leader");
                let _ = sink.fwd.push(TurnEvent::HandedOver);
            }
        }
        self.drain(reason).await;
    }

    /// Wait for the mesh's own background tasks after shutdown fired.
    pub async fn closed(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn record_end(&self, entry: &AgentEntry, sink: &TurnSink, end: &pb::ReplyEnd) {
        let m = &self.inner.metrics;
        let result = outcome_label(end.outcome());
        m.turns.get_or_create(&ResultLabel { result }).inc();
        m.turn_duration_seconds
            .observe(sink.started.elapsed().as_secs_f64());
        if let Some(usage) = &end.usage {
            m.add_tokens(&entry.label, usage);
            self.report_usage(entry, UsageReport::Turn(*usage));
        }
    }

    fn report_usage(&self, entry: &AgentEntry, report: UsageReport) {
        if self
            .inner
            .usage
            .try_send((entry.id.clone(), report))
            .is_err()
        {
            // Metrics still have a turn's tokens; only the persisted total
            // misses them (a metered figure is sent again with the next change).
            self.inner
                .metrics
                .frames_rejected
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: "usage_backlog",
                })
                .inc();
            warn!(agent = %entry.id, "usage backlog full; persisted token totals miss this report");
        }
    }
}

impl CancelTurn for Mesh {
    fn cancel_turn(&self, agent: &AgentId, turn_id: &str, reason: &str) {
        let entry = self.entry(agent);
        if lock(&entry.turns).remove(turn_id).is_none() {
            return;
        }
        info!(agent = %agent, turn_id, reason, "turn cancelled");
        self.inner
            .metrics
            .turns
            .get_or_create(&ResultLabel {
                result: "cancelled",
            })
            .inc();
        self.try_send_frame(
            &entry,
            Frame::Cancel(pb::Cancel {
                turn_id: turn_id.to_owned(),
                reason: reason.to_owned(),
            }),
        );
    }
}

pub fn outcome_label(o: pb::Outcome) -> &'static str {
    match o {
        pb::Outcome::Ok => "ok",
        pb::Outcome::Error | pb::Outcome::Unspecified => "error",
        pb::Outcome::Cancelled => "cancelled",
        pb::Outcome::Timeout => "timeout",
        pb::Outcome::Rejected => "rejected",
        pb::Outcome::NotFound => "not_found",
    }
}

impl Mesh {
    /// After a stream ends: if the agent does not come back in time, fail the
    /// turns still waiting for it.
    fn expire_orphans(&self, entry: Arc<AgentEntry>, conn_id: u64) {
        let timeout = self.inner.cfg.orphan_timeout;
        let shutdown = self.inner.shutdown.clone();
        let mesh = self.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(timeout) => {}
            }
            let still_gone = {
                let s = entry.state.borrow();
                !s.connected && s.conn_id == conn_id
            };
            if !still_gone {
                return;
            }
            let orphans: Vec<_> = lock(&entry.turns).drain().collect();
            for (turn_id, sink) in orphans {
                warn!(agent = %entry.id, turn_id = %turn_id, "agent did not reconnect; failing turn");
                let end = TurnEnd::failed(pb::Outcome::Error, format!("agent {} disconnected and did not come back within {timeout:?}", entry.id));
                mesh.inner.metrics.turns.get_or_create(&ResultLabel { result: "error" }).inc();
                let _ = sink.fwd.push(TurnEvent::End(end));
            }
        });
    }
}
