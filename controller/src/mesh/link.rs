//! `AgentLink.Connect`: one stream per sidecar, authorized by the peer
//! certificate, carrying every turn for that agent.

use std::sync::Arc;

use clawswarm_certs::{AgentId, SpiffeId};
use clawswarm_proto::{
    decode_status,
    v1::{
        self as pb, ControllerFrame, SidecarFrame, agent_link_server::AgentLink,
        controller_frame::Frame as Out, sidecar_frame::Frame as In,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    AgentEntry, LinkHandle, Mesh, TurnEnd, TurnEvent, UsageReport, lock,
    turn::{CancelTurn, validate_turn_id},
};
use crate::{metrics::ReasonLabel, runtime::Runtime};

/// Largest notice text accepted; a notice becomes one Slack DM.
const MAX_NOTICE_BYTES: usize = 64 * 1024;

pub struct AgentLinkService {
    mesh: Mesh,
    runtime: Arc<dyn Runtime>,
}

impl AgentLinkService {
    pub fn new(mesh: Mesh, runtime: Arc<dyn Runtime>) -> Self {
        Self { mesh, runtime }
    }

    /// The agent this stream may speak for, from the verified peer
    /// certificate alone.
    fn peer_agent<T>(&self, req: &Request<T>) -> Result<AgentId, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("AgentLink requires a client certificate"))?;
        let id = clawswarm_certs::peer_spiffe_id(&certs).map_err(|e| {
            Status::unauthenticated(format!("client certificate has no usable SPIFFE id: {e}"))
        })?;
        let cfg = self.mesh.config();
        match id {
            SpiffeId::Agent {
                trust_domain,
                agent,
            } if trust_domain == cfg.trust_domain && agent.namespace() == cfg.namespace => {
                Ok(agent)
            }
            other => Err(Status::permission_denied(format!(
                "{other} may not open an agent link"
            ))),
        }
    }
}

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type ConnectStream = ReceiverStream<Result<ControllerFrame, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<SidecarFrame>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let agent = self.peer_agent(&request).inspect_err(|s| {
            warn!(error = %s.message(), "agent link refused");
        })?;
        if !self.mesh.is_accepting() {
            return Err(Status::unavailable(
                "this controller is not the leader or is shutting down; retry",
            ));
        }
        match self.runtime.get(&agent).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                warn!(agent = %agent, "agent link refused: unknown agent");
                return Err(Status::permission_denied(format!(
                    "agent {agent} is not known to this controller"
                )));
            }
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "cannot look up agent {agent}: {e}"
                )));
            }
        }

        let mut inbound = request.into_inner();
        let cfg = self.mesh.config();
        let hello = match tokio::time::timeout(cfg.hello_timeout, inbound.message()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "no Hello within the hello timeout",
                ));
            }
            Ok(Err(s)) => return Err(s),
            Ok(Ok(None)) => return Err(Status::cancelled("stream closed before Hello")),
            Ok(Ok(Some(SidecarFrame {
                frame: Some(In::Hello(h)),
            }))) => h,
            Ok(Ok(Some(_))) => {
                return Err(Status::invalid_argument("the first frame must be Hello"));
            }
        };
        if hello.agent != agent.to_string() {
            warn!(agent = %agent, claimed = %hello.agent, "agent link refused: Hello names another agent");
            return Err(Status::permission_denied(format!(
                "certificate is for agent {agent}, but Hello claims {:?}",
                hello.agent
            )));
        }

        let (tx, rx) = mpsc::channel(cfg.link_queue);
        let welcome = Out::Welcome(pb::Welcome {
            agent: agent.to_string(),
            controller_id: cfg.controller_id.clone(),
            max_frame_bytes: u32::try_from(cfg.max_frame_bytes).unwrap_or(u32::MAX),
        });
        tx.try_send(Ok(ControllerFrame {
            frame: Some(welcome),
        }))
        .map_err(|_| Status::internal("link queue has no room for Welcome"))?;

        let conn_id = self
            .mesh
            .inner
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cancel = self.mesh.inner.shutdown.child_token();
        let handle = LinkHandle {
            conn_id,
            tx: tx.clone(),
            cancel: cancel.clone(),
        };
        let entry = self.mesh.entry(&agent);
        let workload = hello
            .capabilities
            .iter()
            .find_map(|c| c.strip_prefix("workload="))
            .unwrap_or_default()
            .to_owned();
        let manages_skills = hello.capabilities.iter().any(|c| c == "skills");
        let (resumes, orphans) = attach(&self.mesh, &entry, handle, hello.pending, workload);
        if manages_skills {
            let holder = super::SkillHolder {
                agent: agent.clone(),
                library_skills: hello.library_skills,
            };
            if let Err(mpsc::error::TrySendError::Full(_)) =
                self.mesh.inner.skill_holders.try_send(holder)
            {
                warn!(agent = %agent, "skills refresh queue full; its library skills are refreshed on its next connection");
            }
        }
        info!(agent = %agent, conn_id, version = %hello.version, resumed = resumes.len(), "agent connected");

        let mesh = self.mesh.clone();
        let span = info_span!("link", agent = %agent, conn_id);
        self.mesh.inner.tasks.spawn(
            async move {
                for (turn_id, from_seq) in resumes {
                    let frame = ControllerFrame {
                        frame: Some(Out::Resume(pb::Resume { turn_id, from_seq })),
                    };
                    if tx.send(Ok(frame)).await.is_err() {
                        break;
                    }
                }
                // Only a weak handle stays: the stream ends when the link
                // handle goes, as before; the reader may still say why.
                let errors = tx.downgrade();
                drop(tx);
                offer_orphans(&mesh, &entry, orphans);
                read_frames(&mesh, &entry, inbound, errors, cancel).await;
                detach(&mesh, &entry, conn_id);
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Make `handle` the agent's stream, replacing any older one cleanly, and
/// return the turns to resume on it (those still in flight here) and the
/// ones it holds that nobody here asked for.
fn attach(
    mesh: &Mesh,
    entry: &Arc<AgentEntry>,
    handle: LinkHandle,
    pending: Vec<pb::PendingTurn>,
    workload: String,
) -> (Vec<(String, u64)>, Vec<pb::PendingTurn>) {
    let conn_id = handle.conn_id;
    let old = lock(&entry.link).replace(handle);
    match old {
        Some(old) => {
            info!(agent = %entry.id, old_conn = old.conn_id, new_conn = conn_id, "newer connection replaces the old one");
            let _ = old.tx.try_send(Err(Status::aborted(
                "superseded by a newer connection from the same agent",
            )));
            old.cancel.cancel();
        }
        None => {
            mesh.inner.metrics.link_streams.inc();
        }
    }
    // An agent's token series read 0 from its first connection, not from
    // its first finished turn.
    mesh.inner
        .metrics
        .add_tokens(&entry.label, &pb::Usage::default());
    entry.state.send_modify(|s| {
        s.connected = true;
        s.conn_id = conn_id;
        s.workload = workload;
    });
    let turns = lock(&entry.turns);
    let resumes: Vec<_> = turns
        .iter()
        .map(|(id, sink)| (id.clone(), sink.next_seq))
        .collect();
    let mut held = lock(&entry.pending);
    held.clear();
    let mut orphans = Vec::new();
    for p in pending {
        if !turns.contains_key(&p.turn_id) && validate_turn_id(&p.turn_id).is_ok() {
            held.insert(p.turn_id.clone(), p.clone());
            orphans.push(p);
        }
    }
    (resumes, orphans)
}

/// Tell whoever finishes orphaned replies (the Slack front door) about them.
/// Never waits: a full queue leaves the turn in `pending_turns`, logged.
fn offer_orphans(mesh: &Mesh, entry: &AgentEntry, orphans: Vec<pb::PendingTurn>) {
    for turn in orphans {
        let turn_id = turn.turn_id.clone();
        let offer = super::PendingReply {
            agent: entry.id.clone(),
            turn,
        };
        match mesh.inner.pending.try_send(offer) {
            Ok(()) => debug!(agent = %entry.id, turn_id, "orphaned turn offered for resumption"),
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(agent = %entry.id, turn_id, "orphaned-turn queue full; the turn stays pending")
            }
            // Nobody here finishes orphaned replies (no Slack front door).
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn detach(mesh: &Mesh, entry: &Arc<AgentEntry>, conn_id: u64) {
    let mut link = lock(&entry.link);
    if link.as_ref().is_some_and(|l| l.conn_id == conn_id) {
        *link = None;
        drop(link);
        // Their answers would come on this stream, which is gone.
        lock(&entry.skill_requests).clear();
        mesh.inner.metrics.link_streams.dec();
        entry.state.send_modify(|s| {
            s.connected = false;
            s.workload_ready = false;
        });
        info!(agent = %entry.id, conn_id, "agent disconnected");
        mesh.expire_orphans(entry.clone(), conn_id);
    }
}

async fn read_frames(
    mesh: &Mesh,
    entry: &Arc<AgentEntry>,
    mut inbound: Streaming<SidecarFrame>,
    errors: mpsc::WeakSender<Result<ControllerFrame, Status>>,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            msg = inbound.message() => msg,
        };
        let frame = match msg {
            Ok(Some(SidecarFrame { frame: Some(f) })) => f,
            Ok(Some(SidecarFrame { frame: None })) => {
                reject(mesh, entry, "empty_frame", "frame carries nothing");
                continue;
            }
            Ok(None) => return,
            Err(status) => {
                // Undecodable or oversized frames end this agent's stream
                // only; the sidecar reconnects and resumes. It is told why,
                // with the status a unary call would get.
                let status = decode_status::rewrite(&status).unwrap_or(status);
                reject(mesh, entry, "stream_error", status.message());
                if let Some(tx) = errors.upgrade() {
                    let _ = tx.try_send(Err(status));
                }
                return;
            }
        };
        match frame {
            In::Hello(_) => reject(mesh, entry, "repeated_hello", "Hello after the first frame"),
            In::Status(s) => {
                debug!(agent = %entry.id, ready = s.workload_ready, "workload status");
                entry.state.send_modify(|st| {
                    st.workload_ready = s.workload_ready;
                    st.detail = s.detail;
                });
                if let Some(metered) = s.metered {
                    mesh.report_usage(entry, UsageReport::Metered(metered));
                }
            }
            In::Chunk(c) => on_chunk(mesh, entry, c).await,
            In::End(e) => on_end(mesh, entry, e).await,
            In::Notice(n) => on_notice(mesh, entry, n),
            In::SkillReply(r) => {
                let waiting = lock(&entry.skill_requests).remove(&r.request_id);
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(r);
                    }
                    // Timed out here already, or never asked.
                    None => {
                        debug!(agent = %entry.id, request_id = %r.request_id, "skills reply nobody waits for")
                    }
                }
            }
        }
    }
}

fn reject(mesh: &Mesh, entry: &AgentEntry, reason: &'static str, detail: &str) {
    warn!(agent = %entry.id, reason, detail, "sidecar frame rejected");
    mesh.inner
        .metrics
        .frames_rejected
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

async fn on_chunk(mesh: &Mesh, entry: &Arc<AgentEntry>, c: pb::ReplyChunk) {
    enum Next {
        Deliver(super::forward::Forward, Option<std::time::Duration>),
        Replay(u64),
        Skip,
    }
    // Decide under the lock, act after it: nothing awaits while it is held.
    let next = {
        let mut turns = lock(&entry.turns);
        match turns.get_mut(&c.turn_id) {
            // A cancelled turn's last chunks, or a turn another controller
            // asked for; never forwarded anywhere.
            None => Next::Skip,
            // Replayed after a resume: already delivered.
            Some(sink) if c.seq < sink.next_seq => Next::Skip,
            Some(sink) if c.seq > sink.next_seq => Next::Replay(sink.next_seq),
            Some(sink) => {
                sink.next_seq += 1;
                let first = (!sink.first_chunk_seen).then(|| sink.started.elapsed());
                sink.first_chunk_seen = true;
                Next::Deliver(sink.fwd.clone(), first)
            }
        }
    };
    match next {
        Next::Skip => {
            debug!(agent = %entry.id, turn_id = %c.turn_id, seq = c.seq, "chunk not forwarded")
        }
        Next::Replay(from_seq) => {
            reject(
                mesh,
                entry,
                "sequence_gap",
                "chunk skips ahead; asking for a replay",
            );
            let resume = Out::Resume(pb::Resume {
                turn_id: c.turn_id,
                from_seq,
            });
            let _ = mesh.send_frame(entry, resume).await;
        }
        Next::Deliver(fwd, first) => {
            if let Some(t) = first {
                mesh.inner
                    .metrics
                    .turn_first_chunk_seconds
                    .observe(t.as_secs_f64());
            }
            // Never waits: a requester that stopped reading holds up its own
            // turn only, and past its backlog the turn is given up.
            let queued = fwd.push(TurnEvent::Chunk {
                seq: c.seq,
                delta: c.delta,
            });
            if !queued {
                mesh.cancel_turn(
                    &entry.id,
                    &c.turn_id,
                    "requester too slow: its reply backlog is full",
                );
            }
        }
    }
}

async fn on_end(mesh: &Mesh, entry: &Arc<AgentEntry>, e: pb::ReplyEnd) {
    let Some(sink) = lock(&entry.turns).remove(&e.turn_id) else {
        debug!(agent = %entry.id, turn_id = %e.turn_id, "end of a turn nobody here is waiting for");
        return;
    };
    mesh.record_end(entry, &sink, &e);
    let end = TurnEnd {
        outcome: e.outcome(),
        error: e.error.clone(),
        usage: e.usage.unwrap_or_default(),
        chunks: e.chunks,
    };
    // The end queues behind the turn's chunks; its forwarder acknowledges it
    // to the sidecar once delivered. A requester already given up is
    // acknowledged here: the sidecar may forget the reply either way.
    let queued = sink.fwd.push(TurnEvent::End(end));
    debug!(agent = %entry.id, turn_id = %e.turn_id, queued, "turn ended");
    if !queued {
        let ack = Out::Ack(pb::Ack {
            subject: Some(pb::ack::Subject::TurnId(e.turn_id)),
        });
        let _ = mesh.send_frame(entry, ack).await;
    }
}

fn on_notice(mesh: &Mesh, entry: &Arc<AgentEntry>, n: pb::Notice) {
    if n.notice_id.is_empty() || n.notice_id.len() > super::turn::MAX_TURN_ID_BYTES {
        return reject(mesh, entry, "bad_notice", "notice_id missing or too long");
    }
    if n.text.len() > MAX_NOTICE_BYTES {
        return reject(mesh, entry, "bad_notice", "notice text too large");
    }
    let notice = super::InboundNotice {
        agent: entry.id.clone(),
        notice_id: n.notice_id,
        conversation: n.conversation,
        text: n.text,
    };
    // Not acknowledged here: the sidecar keeps the notice and resends it
    // until whoever delivers it acks.
    if mesh.inner.notices.try_send(notice).is_err() {
        mesh.inner
            .metrics
            .frames_rejected
            .get_or_create(&ReasonLabel {
                reason: "notice_backlog",
            })
            .inc();
        warn!(agent = %entry.id, "notice backlog full; the sidecar will resend");
    }
}
