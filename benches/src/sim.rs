//! A simulated sidecar: a real mTLS `AgentLink.Connect` stream speaking the
//! sidecar's protocol (Hello with held turns, replies kept until acked,
//! Resume replays, jittered reconnects with the sidecar's own `Backoff`),
//! with an instant in-process "workload" instead of a model.
//!
//! A turn's text steers the reply: `c=N` chunks (default 1), `d=MS` pause
//! before each chunk (default 0: the whole reply is sent at once).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clawswarm_certs::ChannelOptions;
use clawswarm_proto::v1::{
    self as pb, ControllerFrame, SidecarFrame, agent_link_client::AgentLinkClient,
    controller_frame::Frame as In, sidecar_frame::Frame as Out,
};
use clawswarm_sidecar::backoff::Backoff;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const OUTBOUND_QUEUE: usize = 1024;
/// As the real sidecar: a session this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Counters shared by every simulated sidecar in this process.
#[derive(Default)]
pub struct SimStats {
    /// Sidecars holding a welcomed stream right now.
    pub connected: AtomicUsize,
    /// Welcomes received in total (first connections and reconnections).
    pub welcomes: AtomicU64,
    pub connect_failures: AtomicU64,
    pub turns: AtomicU64,
}

struct Held {
    conversation: String,
    reply_target: Vec<u8>,
    chunks: Vec<String>,
    ended: bool,
}

#[derive(Default)]
struct State {
    held: HashMap<String, Held>,
    /// The live stream's sender, if any.
    tx: Option<mpsc::Sender<SidecarFrame>>,
}

fn chunk_frame(turn_id: &str, seq: u64, delta: &str) -> SidecarFrame {
    SidecarFrame {
        frame: Some(Out::Chunk(pb::ReplyChunk {
            turn_id: turn_id.to_owned(),
            seq,
            delta: delta.to_owned(),
        })),
    }
}

fn end_frame(turn_id: &str, h: &Held) -> SidecarFrame {
    SidecarFrame {
        frame: Some(Out::End(pb::ReplyEnd {
            turn_id: turn_id.to_owned(),
            chunks: h.chunks.len() as u64,
            outcome: pb::Outcome::Ok as i32,
            error: String::new(),
            usage: Some(pb::Usage {
                input_tokens: 1,
                output_tokens: h.chunks.len() as u64,
                ..Default::default()
            }),
            reply_target: h.reply_target.clone(),
        })),
    }
}

/// Parse `c=N d=MS` out of a turn's text.
fn directives(text: &str) -> (u32, u64) {
    let (mut chunks, mut delay) = (1, 0);
    for word in text.split_whitespace() {
        if let Some(v) = word.strip_prefix("c=") {
            chunks = v.parse::<u32>().unwrap_or(1).clamp(1, 10_000);
        } else if let Some(v) = word.strip_prefix("d=") {
            delay = v.parse::<u64>().unwrap_or(0).min(60_000);
        }
    }
    (chunks, delay)
}

pub struct SimSidecar {
    pub name: String,
    pub url: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub stats: Arc<SimStats>,
}

impl SimSidecar {
    /// Keep a stream to the controller until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let state = Arc::new(Mutex::new(State::default()));
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let started = Instant::now();
            let clean = self.session(&state, &stop).await;
            lock(&state).tx = None;
            if stop.is_cancelled() {
                return;
            }
            if !clean {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            }
            if started.elapsed() > HEALTHY_SESSION {
                backoff.reset();
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// One stream; true if it was welcomed.
    async fn session(&self, state: &Arc<Mutex<State>>, stop: &CancellationToken) -> bool {
        let opts = ChannelOptions::default();
        let channel = tokio::select! {
            _ = stop.cancelled() => return true,
            c = clawswarm_certs::mtls_channel(&self.url, self.tls.clone(), &opts) => match c {
                Ok(c) => c,
                Err(_) => return false,
            },
        };
        let mut client = AgentLinkClient::new(channel);
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let pending = lock(state)
            .held
            .iter()
            .map(|(id, h)| pb::PendingTurn {
                turn_id: id.clone(),
                reply_target: h.reply_target.clone(),
                next_seq: h.chunks.len() as u64,
                ended: h.ended,
                conversation: h.conversation.clone(),
            })
            .collect();
        let hello = SidecarFrame {
            frame: Some(Out::Hello(pb::Hello {
                agent: format!("{}/{}", crate::stack::NAMESPACE, self.name),
                version: "bench".into(),
                capabilities: vec!["resume".into()],
                pending,
                library_skills: vec![],
            })),
        };
        let _ = tx.try_send(hello);
        let mut inbound = tokio::select! {
            _ = stop.cancelled() => return true,
            r = client.connect(ReceiverStream::new(rx)) => match r {
                Ok(r) => r.into_inner(),
                Err(_) => return false,
            },
        };
        let mut welcomed = false;
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => break,
                m = inbound.message() => m,
            };
            let Ok(Some(ControllerFrame { frame: Some(frame) })) = msg else {
                break;
            };
            match frame {
                In::Welcome(_) => {
                    if !welcomed {
                        welcomed = true;
                        lock(state).tx = Some(tx.clone());
                        self.stats.connected.fetch_add(1, Ordering::Relaxed);
                        self.stats.welcomes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                In::Turn(t) => self.on_turn(state, t),
                In::Resume(r) => {
                    let st = lock(state);
                    match st.held.get(&r.turn_id) {
                        Some(h) => {
                            for (seq, d) in h.chunks.iter().enumerate().skip(r.from_seq as usize) {
                                let _ = tx.try_send(chunk_frame(&r.turn_id, seq as u64, d));
                            }
                            if h.ended {
                                let _ = tx.try_send(end_frame(&r.turn_id, h));
                            }
                        }
                        None => {
                            let _ = tx.try_send(SidecarFrame {
                                frame: Some(Out::End(pb::ReplyEnd {
                                    turn_id: r.turn_id,
                                    outcome: pb::Outcome::NotFound as i32,
                                    error: "no such turn".into(),
                                    ..Default::default()
                                })),
                            });
                        }
                    }
                }
                In::Ack(a) => {
                    if let Some(pb::ack::Subject::TurnId(id)) = a.subject {
                        lock(state).held.remove(&id);
                    }
                }
                In::Cancel(c) => {
                    lock(state).held.remove(&c.turn_id);
                }
                In::Drain(_) => break,
                // Simulated sidecars do not say "skills": never asked.
                In::SkillRequest(_) => {}
            }
        }
        if welcomed {
            self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        }
        welcomed
    }

    fn on_turn(&self, state: &Arc<Mutex<State>>, t: pb::Turn) {
        self.stats.turns.fetch_add(1, Ordering::Relaxed);
        let (chunks, delay) = directives(&t.text);
        let mut st = lock(state);
        if st.held.contains_key(&t.turn_id) {
            return;
        }
        let Some(tx) = st.tx.clone() else { return };
        let mut h = Held {
            conversation: t.conversation,
            reply_target: t.reply_target,
            chunks: Vec::with_capacity(chunks as usize),
            ended: false,
        };
        if delay == 0 {
            for seq in 0..chunks {
                h.chunks.push("x".into());
                let _ = tx.try_send(chunk_frame(&t.turn_id, seq as u64, "x"));
            }
            h.ended = true;
            let _ = tx.try_send(end_frame(&t.turn_id, &h));
            st.held.insert(t.turn_id, h);
            return;
        }
        st.held.insert(t.turn_id.clone(), h);
        drop(st);
        // A slow reply keeps going while the link is down, like a model
        // would; chunks produced meanwhile are replayed on Resume.
        let state = state.clone();
        tokio::spawn(async move {
            for seq in 0..chunks {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let mut st = lock(&state);
                let tx = st.tx.clone();
                let Some(h) = st.held.get_mut(&t.turn_id) else {
                    return; // cancelled
                };
                let delta = format!("w{seq} ");
                h.chunks.push(delta.clone());
                if let Some(tx) = &tx {
                    let _ = tx.try_send(chunk_frame(&t.turn_id, seq as u64, &delta));
                }
                if seq + 1 == chunks {
                    h.ended = true;
                    let end = end_frame(&t.turn_id, h);
                    if let Some(tx) = &tx {
                        let _ = tx.try_send(end);
                    }
                }
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn directives_parse_with_defaults_and_clamps() {
        assert_eq!(directives("hello"), (1, 0));
        assert_eq!(directives("c=10 d=5"), (10, 5));
        assert_eq!(directives("c=0 d=x"), (1, 0));
        assert_eq!(directives("c=999999"), (10_000, 0));
    }
}
