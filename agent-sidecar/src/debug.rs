//! `clawswarm.v1.SidecarDebug`: talk to this pod's workload directly,
//! bypassing the controller (`kubectl port-forward` + grpcurl). Behind the
//! same mTLS as the mesh; only admin and controller identities may call it.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use clawswarm_certs::{AgentId, CredentialStore, SpiffeId, TrustDomain};
use clawswarm_proto::v1::{
    self as pb, ChatEvent, chat_event::Event, sidecar_debug_server::SidecarDebug,
};
use futures::Stream;
use rand::RngCore;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::{
    relay::{Relay, TurnState},
    workload::Readiness,
};

pub struct DebugService {
    pub agent: AgentId,
    pub trust_domain: TrustDomain,
    pub relay: Relay,
    pub readiness: watch::Receiver<Readiness>,
    pub linked: Arc<AtomicBool>,
    pub store: Arc<CredentialStore>,
}

impl DebugService {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        match clawswarm_certs::peer_spiffe_id(&certs) {
            Ok(
                SpiffeId::Admin { trust_domain, .. } | SpiffeId::Controller { trust_domain, .. },
            ) if trust_domain == self.trust_domain => Ok(()),
            Ok(other) => Err(Status::permission_denied(format!(
                "{other} may not use the debug endpoint"
            ))),
            Err(e) => Err(Status::unauthenticated(format!(
                "client certificate has no usable SPIFFE id: {e}"
            ))),
        }
    }
}

type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, Status>> + Send>>;

/// Cancels the turn if the caller goes away before the end; forgets it
/// after the end either way.
struct DebugTurn {
    relay: Relay,
    state: Arc<TurnState>,
    next: u64,
    done: bool,
}

impl Drop for DebugTurn {
    fn drop(&mut self) {
        if self.done {
            self.relay.ack(&self.state.turn_id);
        } else {
            self.relay
                .cancel(&self.state.turn_id, "debug client went away");
        }
    }
}

#[tonic::async_trait]
impl SidecarDebug for DebugService {
    type ChatStream = ChatStream;

    async fn chat(
        &self,
        request: Request<pb::DebugChatRequest>,
    ) -> Result<Response<ChatStream>, Status> {
        self.authorize(&request)?;
        let req = request.into_inner();
        if req.text.trim().is_empty() {
            return Err(Status::invalid_argument("text is empty"));
        }
        let mut raw = [0u8; 12];
        rand::rng().fill_bytes(&mut raw);
        let turn_id = format!(
            "debug-{}",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let conversation = format!(
            "debug:{}",
            if req.conversation.is_empty() {
                "default"
            } else {
                &req.conversation
            }
        );
        let turn = pb::Turn {
            turn_id: turn_id.clone(),
            conversation,
            text: req.text,
            reply_target: Vec::new(),
        };
        let state = self
            .relay
            .start(turn)
            .map_err(|end| Status::resource_exhausted(end.error))?;
        let accepted = futures::stream::once(std::future::ready(Ok(ChatEvent {
            event: Some(Event::Accepted(pb::TurnAccepted { turn_id })),
        })));
        let turn = DebugTurn {
            relay: self.relay.clone(),
            state,
            next: 0,
            done: false,
        };
        let events = futures::stream::unfold(
            (turn, Vec::<ChatEvent>::new()),
            |(mut t, mut queued)| async move {
                loop {
                    if let Some(ev) = queued.pop() {
                        return Some((Ok(ev), (t, queued)));
                    }
                    if t.done {
                        return None;
                    }
                    let mut version = t.state.subscribe();
                    version.borrow_and_update();
                    let (chunks, end) = t.state.read_from(t.next);
                    // Popped from the back: push the end first, chunks reversed.
                    if let Some(end) = end {
                        t.done = true;
                        let u = end.usage.unwrap_or_default();
                        queued.push(ChatEvent {
                            event: Some(Event::End(pb::TurnEnd {
                                outcome: end.outcome,
                                error: end.error,
                                usage: Some(u),
                                chunks: end.chunks,
                            })),
                        });
                    }
                    for (seq, delta) in chunks.into_iter().rev() {
                        t.next = t.next.max(seq + 1);
                        queued.push(ChatEvent {
                            event: Some(Event::Chunk(pb::Chunk { seq, delta })),
                        });
                    }
                    if queued.is_empty() && version.changed().await.is_err() {
                        return None;
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            accepted, events,
        ))))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::SidecarStatus>, Status> {
        self.authorize(&request)?;
        let r = self.readiness.borrow().clone();
        let creds = self.store.current();
        Ok(Response::new(pb::SidecarStatus {
            agent: self.agent.to_string(),
            workload_ready: r.ready,
            detail: r.detail,
            link_connected: self.linked.load(Ordering::Acquire),
            spiffe_id: creds.spiffe_id().to_string(),
            certificate_not_after_unix: creds.expiry_unix_seconds(),
            usage: None,
        }))
    }
}
