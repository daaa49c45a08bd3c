//! The sidecar's end of `AgentLink.Connect`: dial, say Hello (with the
//! turns still held), forward replies from the relay's buffers, and come
//! back with jittered backoff whenever the stream ends.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clawswarm_certs::{
    AgentId, ChannelOptions, CredentialStore, ServerIdentity, SpiffeId, error_chain,
};
use clawswarm_proto::v1::{
    self as pb, ControllerFrame, SidecarFrame, agent_link_client::AgentLinkClient,
    controller_frame::Frame as In, sidecar_frame::Frame as Out,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    backoff::Backoff,
    metrics::SidecarMetrics,
    model_proxy::ledger::Metered,
    notices::Outbox,
    relay::{Relay, TurnState},
    skills::Skills,
    workload::Readiness,
};

/// Frames queued towards the controller before forwarders wait.
const OUTBOUND_QUEUE: usize = 1024;
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream that lasted this long was healthy: start backoff from scratch.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

pub struct Link {
    pub controller_url: String,
    pub controller_id: SpiffeId,
    pub agent: AgentId,
    pub trust_bundle_pem: String,
    pub store: Arc<CredentialStore>,
    pub relay: Relay,
    pub outbox: Arc<Outbox>,
    pub readiness: watch::Receiver<Readiness>,
    /// The model proxy's lifetime figure, when this sidecar meters model
    /// calls itself (the OpenClaw workload); sent in every Status.
    pub metered: Option<watch::Receiver<Metered>>,
    pub metrics: Arc<SidecarMetrics>,
    pub connected: Arc<AtomicBool>,
    pub max_frame_bytes: usize,
    /// Reported in Hello so operators see what serves the agent.
    pub workload_kind: &'static str,
    /// Answers the controller's `SkillRequest`s.
    pub skills: Arc<Skills>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("controller refused the link: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("stream broke: {0}")]
    Broken(String),
    #[error("controller sent no Welcome")]
    NoWelcome,
}

enum SessionEnd {
    Shutdown,
    /// Reconnect (server closed, or asked us to drain).
    Reconnect,
}

/// Capability naming the workload adapter (`workload=openclaw`); the
/// controller shows it in agent listings.
const WORKLOAD_CAPABILITY: &str = "workload=";

fn capabilities(metered: bool, workload_kind: &str) -> Vec<String> {
    let mut caps = vec![
        "resume".to_owned(),
        "notices".to_owned(),
        "skills".to_owned(),
        format!("{WORKLOAD_CAPABILITY}{workload_kind}"),
    ];
    if metered {
        caps.push("usage.metered".to_owned());
    }
    caps
}

fn metered_usage(m: &Metered) -> pb::MeteredUsage {
    pb::MeteredUsage {
        lifetime: Some(pb::Usage {
            input_tokens: m.lifetime.input_tokens,
            output_tokens: m.lifetime.output_tokens,
            cache_read_tokens: m.lifetime.cache_read_tokens,
            cache_write_tokens: m.lifetime.cache_write_tokens,
        }),
        ledger_id: m.ledger_id.clone(),
        data: Some(pb::DataUsage {
            queries: m.data.queries,
            refused: m.data.refused,
            documents: m.data.documents,
            bytes: m.data.bytes,
        }),
    }
}

/// The next change of an optional watch; pending forever without one.
async fn changed_or_never<T>(
    rx: &mut Option<watch::Receiver<T>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

impl Link {
    /// Keep a stream to the controller until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let started = Instant::now();
            let result = self.session(&shutdown).await;
            self.connected.store(false, Ordering::Release);
            self.metrics.link_connected.set(0);
            match result {
                Ok(SessionEnd::Shutdown) => return,
                Ok(SessionEnd::Reconnect) => info!("link closed; reconnecting"),
                Err(e) => warn!(error = %e, "link down"),
            }
            if started.elapsed() > HEALTHY_SESSION {
                backoff.reset();
            }
            let wait = backoff.next_delay();
            debug!(wait = ?wait, "reconnecting after backoff");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn session(&self, shutdown: &CancellationToken) -> Result<SessionEnd, SessionError> {
        let tls = clawswarm_certs::client_config(
            Some(self.store.clone()),
            &self.trust_bundle_pem,
            ServerIdentity::Spiffe(self.controller_id.clone()),
        )
        .map_err(|e| SessionError::Connect(e.to_string()))?;
        let channel =
            clawswarm_certs::mtls_channel(&self.controller_url, tls, &ChannelOptions::default())
                .await
                .map_err(|e| SessionError::Connect(e.to_string()))?;
        let mut client = AgentLinkClient::new(channel)
            .max_decoding_message_size(self.max_frame_bytes)
            .max_encoding_message_size(self.max_frame_bytes);

        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let hello = pb::Hello {
            agent: self.agent.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: capabilities(self.metered.is_some(), self.workload_kind),
            pending: self.relay.pending(),
            library_skills: self.skills.installed(),
        };
        let _ = tx.try_send(frame(Out::Hello(hello)));
        let response =
            client
                .connect(ReceiverStream::new(rx))
                .await
                .map_err(|s| SessionError::Refused {
                    code: s.code(),
                    message: if s.message().is_empty() {
                        error_chain(&s)
                    } else {
                        s.message().to_owned()
                    },
                })?;
        let mut inbound = response.into_inner();
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await;
        let controller = match welcome {
            Ok(Ok(Some(ControllerFrame {
                frame: Some(In::Welcome(w)),
            }))) => w.controller_id,
            Ok(Err(s)) => {
                return Err(SessionError::Refused {
                    code: s.code(),
                    message: s.message().to_owned(),
                });
            }
            _ => return Err(SessionError::NoWelcome),
        };
        info!(controller = %controller, "linked to controller");
        self.connected.store(true, Ordering::Release);
        self.metrics.link_connected.set(1);

        let session = CancellationToken::new();
        let _stop_forwarders = session.clone().drop_guard();
        let tasks = TaskTracker::new();
        let mut forwarders: HashMap<String, CancellationToken> = HashMap::new();
        let mut readiness = self.readiness.clone();
        let mut metered = self.metered.clone();
        let mut notices = self.outbox.subscribe();
        let status = |r: &Readiness, m: &mut Option<watch::Receiver<Metered>>| {
            frame(Out::Status(pb::Status {
                workload_ready: r.ready,
                detail: r.detail.clone(),
                metered: m.as_mut().map(|m| metered_usage(&m.borrow_and_update())),
            }))
        };
        let first_status = status(&readiness.borrow_and_update(), &mut metered);
        send(&tx, first_status).await?;
        notices.mark_changed();

        let end = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break SessionEnd::Shutdown,
                changed = readiness.changed() => {
                    if changed.is_err() { break SessionEnd::Shutdown }
                    let f = status(&readiness.borrow_and_update(), &mut metered);
                    send(&tx, f).await?;
                }
                changed = changed_or_never(&mut metered) => {
                    if changed.is_err() { break SessionEnd::Shutdown }
                    let f = status(&readiness.borrow(), &mut metered);
                    send(&tx, f).await?;
                }
                changed = notices.changed() => {
                    if changed.is_err() { break SessionEnd::Shutdown }
                    notices.borrow_and_update();
                    // Resent on every change and reconnect until acknowledged;
                    // the controller deduplicates by notice_id.
                    for n in self.outbox.pending() {
                        send(&tx, frame(Out::Notice(n))).await?;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(ControllerFrame { frame: Some(f) })) => {
                        if let Some(end) = self.on_frame(f, &tx, &tasks, &session, &mut forwarders).await? {
                            break end;
                        }
                    }
                    Ok(Some(ControllerFrame { frame: None })) => warn!("empty frame from the controller"),
                    Ok(None) => break SessionEnd::Reconnect,
                    Err(s) => return Err(SessionError::Broken(format!("{:?}: {}", s.code(), s.message()))),
                },
            }
        };
        session.cancel();
        tasks.close();
        Ok(end)
    }

    async fn on_frame(
        &self,
        f: In,
        tx: &mpsc::Sender<SidecarFrame>,
        tasks: &TaskTracker,
        session: &CancellationToken,
        forwarders: &mut HashMap<String, CancellationToken>,
    ) -> Result<Option<SessionEnd>, SessionError> {
        match f {
            In::Turn(t) => {
                let turn_id = t.turn_id.clone();
                match self.relay.start(t) {
                    Ok(state) => self.forward(state, 0, tx, tasks, session, forwarders),
                    Err(end) => {
                        warn!(turn_id = %turn_id, error = %end.error, "turn refused");
                        send(tx, frame(Out::End(*end))).await?;
                    }
                }
            }
            In::Resume(r) => match self.relay.get(&r.turn_id) {
                Some(state) => {
                    debug!(turn_id = %r.turn_id, from_seq = r.from_seq, "resuming turn");
                    self.forward(state, r.from_seq, tx, tasks, session, forwarders);
                }
                None => {
                    let end = pb::ReplyEnd {
                        turn_id: r.turn_id.clone(),
                        outcome: pb::Outcome::NotFound as i32,
                        error: format!("turn {} is not held by agent {}", r.turn_id, self.agent),
                        ..Default::default()
                    };
                    send(tx, frame(Out::End(end))).await?;
                }
            },
            In::Cancel(c) => {
                if let Some(f) = forwarders.remove(&c.turn_id) {
                    f.cancel();
                }
                self.relay.cancel(&c.turn_id, &c.reason);
            }
            In::Ack(a) => match a.subject {
                Some(pb::ack::Subject::TurnId(id)) => {
                    forwarders.remove(&id);
                    self.relay.ack(&id);
                }
                Some(pb::ack::Subject::NoticeId(id)) => self.outbox.ack(&id),
                None => warn!("ack without subject"),
            },
            In::Drain(d) => {
                info!(reason = %d.reason, "controller is draining");
                return Ok(Some(SessionEnd::Reconnect));
            }
            In::SkillRequest(r) => {
                // Off the frame loop: a skill list waits on the workload.
                let skills = self.skills.clone();
                let tx = tx.clone();
                let stop = session.clone();
                tasks.spawn(async move {
                    let reply = tokio::select! {
                        _ = stop.cancelled() => return,
                        reply = skills.serve(r) => reply,
                    };
                    let _ = tx.send(frame(Out::SkillReply(reply))).await;
                });
            }
            In::Welcome(_) => warn!("repeated Welcome ignored"),
        }
        forwarders.retain(|_, t| !t.is_cancelled());
        Ok(None)
    }

    /// Stream one turn's chunks (from `from_seq`) and its end to the
    /// controller, replacing any forwarder already running for it.
    fn forward(
        &self,
        state: Arc<TurnState>,
        from_seq: u64,
        tx: &mpsc::Sender<SidecarFrame>,
        tasks: &TaskTracker,
        session: &CancellationToken,
        forwarders: &mut HashMap<String, CancellationToken>,
    ) {
        let stop = session.child_token();
        if let Some(old) = forwarders.insert(state.turn_id.clone(), stop.clone()) {
            old.cancel();
        }
        let tx = tx.clone();
        let span = info_span!("forward", turn_id = %state.turn_id);
        tasks.spawn(
            async move {
                let mut version = state.subscribe();
                let mut next = from_seq;
                loop {
                    version.borrow_and_update();
                    let (chunks, end) = state.read_from(next);
                    for (seq, delta) in chunks {
                        let f = frame(Out::Chunk(pb::ReplyChunk {
                            turn_id: state.turn_id.clone(),
                            seq,
                            delta,
                        }));
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            sent = tx.send(f) => if sent.is_err() { return },
                        }
                        next = seq + 1;
                    }
                    if let Some(end) = end {
                        let _ = tx.send(frame(Out::End(end))).await;
                        stop.cancel();
                        return;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = version.changed() => if changed.is_err() { return },
                    }
                }
            }
            .instrument(span),
        );
    }
}

fn frame(f: Out) -> SidecarFrame {
    SidecarFrame { frame: Some(f) }
}

async fn send(tx: &mpsc::Sender<SidecarFrame>, f: SidecarFrame) -> Result<(), SessionError> {
    tx.send(f)
        .await
        .map_err(|_| SessionError::Broken("outbound stream closed".into()))
}
