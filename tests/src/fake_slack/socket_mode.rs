//! Socket Mode: the WebSocket server behind the URL `apps.connections.open`
//! returns. Sends `hello`, delivers envelopes round-robin over the open
//! connections (each envelope goes to one), records acks and re-delivers
//! envelopes nobody acked in time, as Slack does.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{ErrorResponse, Request, Response},
    http::StatusCode,
};

use super::{APP_ID, FakeSlack, Shared};

/// An acknowledgement as the app sent it.
#[derive(Clone, Debug)]
pub struct Ack {
    pub envelope_id: String,
    /// The whole ack frame (slash-command acks carry a `payload`).
    pub frame: Value,
}

struct Envelope {
    frame: Value,
    sent_at: Instant,
    attempts: u32,
    acked: bool,
}

#[derive(Default)]
pub(crate) struct SocketState {
    conns: HashMap<u64, mpsc::Sender<Message>>,
    next_conn: u64,
    round_robin: usize,
    envelopes: HashMap<String, Envelope>,
    acks: Vec<Ack>,
    /// Frames received that were not acks (kept for assertions).
    stray: Vec<String>,
    /// Total connections ever accepted.
    pub accepted: u64,
}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    let mut redeliver = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { conns.spawn(connection(stream, shared.clone())); }
                Err(e) => tracing::warn!(error = %e, "fake socket mode accept failed"),
            },
            _ = redeliver.tick() => redeliver_unacked(&shared),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

// tungstenite's handshake callback type fixes the (large) error response.
#[allow(clippy::result_large_err)]
async fn connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let ticket = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ticket="))
            .unwrap_or("");
        // Each URL from apps.connections.open works once, like Slack's.
        if req.uri().path() == "/link" && shared.lock().seen_tickets.remove(ticket) {
            Ok(resp)
        } else {
            let mut denied = ErrorResponse::new(Some("invalid or reused ticket".into()));
            *denied.status_mut() = StatusCode::UNAUTHORIZED;
            Err(denied)
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    let id = {
        let mut inner = shared.lock();
        let s = &mut inner.socket;
        s.next_conn += 1;
        s.accepted += 1;
        let id = s.next_conn;
        s.conns.insert(id, tx);
        id
    };
    shared.notify();
    let n = shared.lock().socket.conns.len();
    let hello = json!({
        "type": "hello", "num_connections": n,
        "debug_info": {"host": "fake-slack", "started": "now", "build_number": 1, "approximate_connection_time": 3600},
        "connection_info": {"app_id": APP_ID},
    });
    if sink.send(Message::text(hello.to_string())).await.is_err() {
        forget(&shared, id);
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(m) => {
                    let closing = matches!(m, Message::Close(_));
                    if sink.send(m).await.is_err() || closing { break; }
                }
                None => { let _ = sink.send(Message::Close(None)).await; break; }
            },
            incoming = source.next() => match incoming {
                Some(Ok(Message::Text(t))) => record_frame(&shared, t.as_str()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    forget(&shared, id);
}

fn forget(shared: &Shared, id: u64) {
    shared.lock().socket.conns.remove(&id);
    shared.notify();
}

fn record_frame(shared: &Shared, text: &str) {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let envelope_id = parsed
        .as_ref()
        .and_then(|v| v.get("envelope_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    {
        let mut inner = shared.lock();
        match (envelope_id, parsed) {
            (Some(id), Some(frame)) => {
                if let Some(env) = inner.socket.envelopes.get_mut(&id) {
                    env.acked = true;
                }
                inner.socket.acks.push(Ack {
                    envelope_id: id,
                    frame,
                });
            }
            _ => inner.socket.stray.push(text.to_owned()),
        }
    }
    shared.notify();
}

fn redeliver_unacked(shared: &Shared) {
    let (after, max) = (shared.cfg.redeliver_after, shared.cfg.max_redeliveries);
    let mut inner = shared.lock();
    let now = Instant::now();
    let mut due = Vec::new();
    for (id, env) in inner.socket.envelopes.iter_mut() {
        if !env.acked && env.attempts < max && now.duration_since(env.sent_at) >= after {
            env.attempts += 1;
            env.sent_at = now;
            env.frame["retry_attempt"] = json!(env.attempts);
            env.frame["retry_reason"] = json!("timeout");
            due.push((id.clone(), env.frame.to_string()));
        }
    }
    for (_, frame) in due {
        send_to_one(&mut inner.socket, frame);
    }
}

fn send_to_one(s: &mut SocketState, frame: String) -> bool {
    let mut ids: Vec<u64> = s.conns.keys().copied().collect();
    if ids.is_empty() {
        return false;
    }
    ids.sort_unstable();
    s.round_robin = s.round_robin.wrapping_add(1);
    let id = ids[s.round_robin % ids.len()];
    s.conns
        .get(&id)
        .is_some_and(|tx| tx.try_send(Message::text(frame)).is_ok())
}

pub(crate) fn close_all(shared: &Shared) {
    shared.lock().socket.conns.clear();
}

/// The test's handle on Socket Mode.
pub struct SocketMode<'a> {
    pub(crate) shared: &'a Arc<Shared>,
}

impl SocketMode<'_> {
    /// Open connections right now.
    pub fn connections(&self) -> usize {
        self.shared.lock().socket.conns.len()
    }

    pub fn accepted_total(&self) -> u64 {
        self.shared.lock().socket.accepted
    }

    fn deliver(
        &self,
        kind: &str,
        payload: Value,
        accepts_response_payload: bool,
        retry: Option<(u32, &str)>,
    ) -> anyhow::Result<String> {
        let envelope_id = uuid::Uuid::new_v4().to_string();
        let (attempt, reason) = retry.unwrap_or((0, ""));
        let mut frame = json!({
            "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        });
        if kind == "events_api" {
            frame["retry_attempt"] = json!(attempt);
            frame["retry_reason"] = json!(reason);
        }
        let mut inner = self.shared.lock();
        let text = frame.to_string();
        if !send_to_one(&mut inner.socket, text) {
            anyhow::bail!("fake slack: no socket mode connection to deliver to");
        }
        let env = Envelope {
            frame,
            sent_at: Instant::now(),
            attempts: attempt,
            acked: false,
        };
        inner.socket.envelopes.insert(envelope_id.clone(), env);
        Ok(envelope_id)
    }

    /// Deliver an `event_callback` (see [`super::payloads::event_callback`]).
    pub fn send_event(&self, event_callback: Value) -> anyhow::Result<String> {
        self.deliver("events_api", event_callback, false, None)
    }

    /// Deliver the same event again as Slack's retry `attempt` would.
    pub fn send_event_retry(
        &self,
        event_callback: Value,
        attempt: u32,
        reason: &str,
    ) -> anyhow::Result<String> {
        self.deliver("events_api", event_callback, false, Some((attempt, reason)))
    }

    pub fn send_command(&self, command: Value) -> anyhow::Result<String> {
        self.deliver("slash_commands", command, true, None)
    }

    pub fn send_interactive(&self, payload: Value) -> anyhow::Result<String> {
        self.deliver("interactive", payload, true, None)
    }

    /// Send any text frame, e.g. malformed JSON.
    pub fn send_raw(&self, text: &str) -> anyhow::Result<()> {
        let mut inner = self.shared.lock();
        if !send_to_one(&mut inner.socket, text.to_owned()) {
            anyhow::bail!("fake slack: no socket mode connection");
        }
        Ok(())
    }

    /// Ask every client to reconnect (Slack rotates connections this way).
    pub fn disconnect_all(&self, reason: &str) {
        let frame =
            json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}})
                .to_string();
        let inner = self.shared.lock();
        for tx in inner.socket.conns.values() {
            let _ = tx.try_send(Message::text(frame.clone()));
        }
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().socket.acks.clone()
    }

    pub fn ack_of(&self, envelope_id: &str) -> Option<Ack> {
        self.shared
            .lock()
            .socket
            .acks
            .iter()
            .find(|a| a.envelope_id == envelope_id)
            .cloned()
    }

    /// How many times the fake re-sent `envelope_id` for want of an ack.
    pub fn redeliveries(&self, envelope_id: &str) -> u32 {
        self.shared
            .lock()
            .socket
            .envelopes
            .get(envelope_id)
            .map_or(0, |e| e.attempts)
    }
}

impl FakeSlack {
    /// Wait until at least `n` Socket Mode connections are open.
    pub async fn wait_socket_connections(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for(timeout, |f| (f.socket().connections() >= n).then_some(()))
            .await
    }

    /// Wait for the ack of `envelope_id`.
    pub async fn wait_ack(&self, envelope_id: &str, timeout: Duration) -> anyhow::Result<Ack> {
        self.wait_for(timeout, |f| f.socket().ack_of(envelope_id))
            .await
    }
}
