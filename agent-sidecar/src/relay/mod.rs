//! Turns, from the controller's `Turn` frame to the workload and back.
//!
//! Each reply is written into a [`TurnState`] buffer as it streams, whatever
//! the link to the controller is doing; the link forwards from the buffer
//! (from any sequence number, for a resume) and the buffer is dropped only
//! when the controller acknowledges the turn, or after a retention period.
//! So a controller can die mid-reply and a new one still gets every chunk.
//! A sidecar that dies mid-reply loses the text, but its [`journal`] keeps
//! the turn, which the next run reports as ended in error.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clawswarm_proto::v1::{self as pb, Outcome};
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info, info_span, warn};

pub mod journal;

use crate::{
    metrics::{ResultLabel, SidecarMetrics},
    workload::{Readiness, TurnRequest, Workload, WorkloadError, WorkloadEvent},
};

/// Largest turn text accepted from the controller (matches its own limit).
pub const MAX_TURN_TEXT_BYTES: usize = 256 * 1024;
/// Replies kept for unacknowledged turns, in bytes, before the oldest
/// finished ones are dropped.
const MAX_RETAINED_BYTES: usize = 64 * 1024 * 1024;

/// Largest reply chunk, in bytes. Each chunk travels in one AgentLink
/// frame (limit 1 MiB); a workload's single event can be larger (a 4 MiB
/// SSE event), and a frame over the limit would fail to encode, reconnect
/// and be resent forever. Larger deltas become several chunks.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// `delta` in pieces of at most `max` bytes, cut at character boundaries.
fn split_delta(delta: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::with_capacity(delta.len() / max + 1);
    let mut rest = delta;
    while !rest.is_empty() {
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        // A max smaller than one character still makes progress.
        if cut == 0 {
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece.to_owned());
        rest = tail;
    }
    pieces
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub conversation_queue: usize,
    pub max_active: usize,
    pub idle_timeout: Duration,
    pub turn_timeout: Duration,
    pub ready_wait: Duration,
    pub retention: Duration,
    /// Count tokens from turn usage (off when the model proxy meters every
    /// call itself, so nothing is counted twice).
    pub count_turn_usage: bool,
    /// Where turns in flight are recorded ([`journal`]); `None` keeps them
    /// in memory only, so a restart loses track of them.
    pub journal: Option<std::path::PathBuf>,
}

/// A reply as produced so far.
#[derive(Default)]
pub struct TurnBuf {
    pub chunks: Vec<String>,
    pub end: Option<pb::ReplyEnd>,
    bytes: usize,
}

pub struct TurnState {
    pub turn_id: String,
    pub conversation: String,
    pub reply_target: Vec<u8>,
    buf: Mutex<TurnBuf>,
    /// Bumped on every change; forwarders wait on it.
    version: watch::Sender<u64>,
    cancel: CancellationToken,
    created: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for TurnState {
    // Reply text is the person's data: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnState")
            .field("turn_id", &self.turn_id)
            .field("conversation", &self.conversation)
            .finish_non_exhaustive()
    }
}

impl TurnState {
    fn new(turn_id: String, conversation: String, reply_target: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            turn_id,
            conversation,
            reply_target,
            buf: Mutex::default(),
            version: watch::Sender::new(0),
            cancel: CancellationToken::new(),
            created: Instant::now(),
        })
    }

    fn push(&self, delta: String) {
        let mut b = lock(&self.buf);
        if b.end.is_some() {
            return;
        }
        b.bytes += delta.len();
        if delta.len() <= MAX_CHUNK_BYTES {
            b.chunks.push(delta);
        } else {
            b.chunks.extend(split_delta(&delta, MAX_CHUNK_BYTES));
        }
        drop(b);
        self.version.send_modify(|v| *v += 1);
    }

    fn finish(&self, outcome: Outcome, error: String, usage: Option<pb::Usage>) -> pb::ReplyEnd {
        let mut b = lock(&self.buf);
        if let Some(end) = &b.end {
            return end.clone();
        }
        let end = pb::ReplyEnd {
            turn_id: self.turn_id.clone(),
            chunks: b.chunks.len() as u64,
            outcome: outcome as i32,
            error,
            usage,
            reply_target: self.reply_target.clone(),
        };
        b.end = Some(end.clone());
        drop(b);
        self.version.send_modify(|v| *v += 1);
        end
    }

    /// Chunks from `from` on (cloned out, so the lock is held briefly) and
    /// the end if reached.
    pub fn read_from(&self, from: u64) -> (Vec<(u64, String)>, Option<pb::ReplyEnd>) {
        let b = lock(&self.buf);
        let start = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(b.chunks.len());
        let chunks = b.chunks[start..]
            .iter()
            .enumerate()
            .map(|(i, c)| ((start + i) as u64, c.clone()))
            .collect();
        (chunks, b.end.clone())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn retained_bytes(&self) -> usize {
        lock(&self.buf).bytes
    }

    fn pending(&self) -> pb::PendingTurn {
        let b = lock(&self.buf);
        pb::PendingTurn {
            turn_id: self.turn_id.clone(),
            reply_target: self.reply_target.clone(),
            next_seq: b.chunks.len() as u64,
            ended: b.end.is_some(),
            conversation: self.conversation.clone(),
        }
    }
}

struct Conversation {
    /// Held by the turn being answered; the next waits for it.
    turn_lock: Arc<tokio::sync::Mutex<()>>,
    waiting: usize,
}

struct Inner {
    cfg: RelayConfig,
    workload: Arc<dyn Workload>,
    metrics: Arc<SidecarMetrics>,
    readiness: watch::Receiver<Readiness>,
    turns: Mutex<HashMap<String, Arc<TurnState>>>,
    conversations: Mutex<HashMap<String, Conversation>>,
    active: Arc<Semaphore>,
    tasks: TaskTracker,
    journal: Arc<journal::TurnJournal>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl Relay {
    pub fn new(
        cfg: RelayConfig,
        workload: Arc<dyn Workload>,
        readiness: watch::Receiver<Readiness>,
        metrics: Arc<SidecarMetrics>,
    ) -> Self {
        let active = Arc::new(Semaphore::new(cfg.max_active.max(1)));
        let (journal, survivors) = journal::TurnJournal::open(cfg.journal.clone());
        // Turns a previous run was answering: their text is gone, so they
        // are held as ended in error until a controller takes them (it
        // closes their messages with a note) or the retention lapses.
        let mut turns = HashMap::new();
        for t in survivors {
            warn!(turn_id = %t.turn_id, "a turn was in flight when the sidecar stopped; reporting it as ended");
            let state = TurnState::new(t.turn_id.clone(), t.conversation, t.reply_target);
            state.finish(Outcome::Error, journal::RESTARTED.into(), None);
            turns.insert(t.turn_id, state);
        }
        Self {
            inner: Arc::new(Inner {
                cfg,
                workload,
                metrics,
                readiness,
                turns: Mutex::new(turns),
                conversations: Mutex::default(),
                active,
                tasks: TaskTracker::new(),
                journal,
            }),
        }
    }

    /// Accept a turn and start answering it. A repeated turn id returns the
    /// turn already known (the controller re-sent it after a reconnect).
    pub fn start(&self, t: pb::Turn) -> Result<Arc<TurnState>, Box<pb::ReplyEnd>> {
        let reject = |msg: String| {
            Box::new(pb::ReplyEnd {
                turn_id: t.turn_id.clone(),
                outcome: Outcome::Rejected as i32,
                error: msg,
                reply_target: t.reply_target.clone(),
                ..Default::default()
            })
        };
        if t.turn_id.is_empty() || t.turn_id.len() > 128 {
            return Err(reject("turn_id must be 1..=128 bytes".into()));
        }
        if t.conversation.is_empty() || t.conversation.len() > 256 {
            return Err(reject("conversation must be 1..=256 bytes".into()));
        }
        if t.text.len() > MAX_TURN_TEXT_BYTES {
            return Err(reject(format!(
                "text is {} bytes; the limit is {MAX_TURN_TEXT_BYTES}",
                t.text.len()
            )));
        }
        if let Some(existing) = lock(&self.inner.turns).get(&t.turn_id) {
            return Ok(existing.clone());
        }
        let turn_lock = {
            let mut convs = lock(&self.inner.conversations);
            let c = convs
                .entry(t.conversation.clone())
                .or_insert_with(|| Conversation {
                    turn_lock: Arc::default(),
                    waiting: 0,
                });
            if c.waiting >= self.inner.cfg.conversation_queue {
                return Err(reject(format!(
                    "conversation already has {} turns waiting; try again when the agent has answered",
                    c.waiting
                )));
            }
            c.waiting += 1;
            c.turn_lock.clone()
        };
        let state = TurnState::new(
            t.turn_id.clone(),
            t.conversation.clone(),
            t.reply_target.clone(),
        );
        lock(&self.inner.turns).insert(t.turn_id.clone(), state.clone());
        self.inner
            .journal
            .record(&t.turn_id, &t.conversation, &t.reply_target);
        let req = TurnRequest {
            turn_id: t.turn_id,
            conversation: t.conversation,
            text: t.text,
        };
        let inner = self.inner.clone();
        let span = info_span!("turn", turn_id = %req.turn_id);
        let s = state.clone();
        self.inner
            .tasks
            .spawn(async move { run_turn(inner, s, req, turn_lock).await }.instrument(span));
        Ok(state)
    }

    pub fn get(&self, turn_id: &str) -> Option<Arc<TurnState>> {
        lock(&self.inner.turns).get(turn_id).cloned()
    }

    /// Stop a turn; its buffer goes once it has ended (a cancel is also an
    /// acknowledgement: nobody will resume it).
    pub fn cancel(&self, turn_id: &str, reason: &str) {
        let state = lock(&self.inner.turns).remove(turn_id);
        self.inner.journal.forget(turn_id);
        if let Some(s) = state {
            info!(turn_id, reason, "turn cancelled by the controller");
            s.cancel.cancel();
        }
    }

    /// The controller has the whole reply.
    pub fn ack(&self, turn_id: &str) {
        if lock(&self.inner.turns).remove(turn_id).is_some() {
            debug!(turn_id, "turn acknowledged");
        }
        self.inner.journal.forget(turn_id);
    }

    /// Turns still held, for Hello.
    pub fn pending(&self) -> Vec<pb::PendingTurn> {
        lock(&self.inner.turns)
            .values()
            .map(|t| t.pending())
            .collect()
    }

    /// Drop finished replies nobody acknowledged within the retention
    /// period, and the oldest finished ones past the memory cap.
    pub fn collect_garbage(&self) {
        let retention = self.inner.cfg.retention;
        let mut turns = lock(&self.inner.turns);
        let mut finished: Vec<(Instant, String, usize)> = Vec::new();
        let mut dropped = Vec::new();
        let mut total = 0;
        turns.retain(|id, t| {
            let ended = lock(&t.buf).end.is_some();
            if ended && t.created.elapsed() > retention {
                warn!(turn_id = %id, "dropping a reply no controller acknowledged");
                dropped.push(id.clone());
                return false;
            }
            let bytes = t.retained_bytes();
            total += bytes;
            if ended {
                finished.push((t.created, id.clone(), bytes));
            }
            true
        });
        finished.sort();
        for (_, id, bytes) in finished {
            if total <= MAX_RETAINED_BYTES {
                break;
            }
            warn!(turn_id = %id, "dropping an unacknowledged reply: retained replies exceed the memory cap");
            turns.remove(&id);
            dropped.push(id);
            total -= bytes;
        }
        drop(turns);
        for id in dropped {
            self.inner.journal.forget(&id);
        }
    }

    pub fn turns_held(&self) -> usize {
        lock(&self.inner.turns).len()
    }

    /// Cancel everything and wait for the turn tasks.
    pub async fn shutdown(&self) {
        for t in lock(&self.inner.turns).values() {
            t.cancel.cancel();
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

async fn run_turn(
    inner: Arc<Inner>,
    state: Arc<TurnState>,
    req: TurnRequest,
    turn_lock: Arc<tokio::sync::Mutex<()>>,
) {
    let started = Instant::now();
    let queued = tokio::select! {
        _ = state.cancel.cancelled() => None,
        guard = turn_lock.lock_owned() => Some(guard),
    };
    {
        let mut convs = lock(&inner.conversations);
        if let Some(c) = convs.get_mut(&req.conversation) {
            c.waiting = c.waiting.saturating_sub(1);
            if c.waiting == 0 && queued.is_none() && Arc::strong_count(&c.turn_lock) <= 2 {
                convs.remove(&req.conversation);
            }
        }
    }
    let Some(_conversation_guard) = queued else {
        return finish(
            &inner,
            &state,
            Outcome::Cancelled,
            "cancelled while queued".into(),
            None,
            started,
        );
    };
    let _permit = tokio::select! {
        _ = state.cancel.cancelled() => return finish(&inner, &state, Outcome::Cancelled, "cancelled while queued".into(), None, started),
        p = inner.active.clone().acquire_owned() => match p {
            Ok(p) => p,
            Err(_) => return finish(&inner, &state, Outcome::Rejected, "sidecar is shutting down".into(), None, started),
        },
    };

    let refused = |inner: &Inner| {
        let r = inner.readiness.borrow();
        r.refusing.then(|| r.detail.clone())
    };
    if let Some(why) = refused(&inner) {
        return finish(&inner, &state, Outcome::Error, why, None, started);
    }
    if inner.workload.is_configured() && !inner.readiness.borrow().ready {
        let mut rx = inner.readiness.clone();
        let wait =
            tokio::time::timeout(inner.cfg.ready_wait, rx.wait_for(|r| r.ready || r.refusing));
        tokio::select! {
            _ = state.cancel.cancelled() => return finish(&inner, &state, Outcome::Cancelled, "cancelled while the workload was starting".into(), None, started),
            r = wait => if r.is_err() || matches!(r, Ok(Err(_))) {
                let detail = inner.readiness.borrow().detail.clone();
                let msg = format!("the agent's workload did not become ready within {:?}: {detail}", inner.cfg.ready_wait);
                return finish(&inner, &state, Outcome::Timeout, msg, None, started);
            }
        }
        if let Some(why) = refused(&inner) {
            return finish(&inner, &state, Outcome::Error, why, None, started);
        }
    }

    let deadline = tokio::time::Instant::now() + inner.cfg.turn_timeout;
    let mut produced = false;
    for attempt in 1..=2 {
        let mut reply = inner.workload.start_turn(req.clone());
        loop {
            let next = tokio::select! {
                _ = state.cancel.cancelled() => {
                    // Dropping the stream closes the request upstream.
                    drop(reply);
                    return finish(&inner, &state, Outcome::Cancelled, "cancelled".into(), None, started);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let msg = format!("the agent took longer than {:?} to answer", inner.cfg.turn_timeout);
                    return finish(&inner, &state, Outcome::Timeout, msg, None, started);
                }
                n = tokio::time::timeout(inner.cfg.idle_timeout, reply.next()) => n,
            };
            match next {
                Err(_) => {
                    let msg = format!(
                        "the agent's workload sent nothing for {:?}",
                        inner.cfg.idle_timeout
                    );
                    return finish(&inner, &state, Outcome::Timeout, msg, None, started);
                }
                Ok(Some(Ok(WorkloadEvent::Delta(d)))) => {
                    if !produced {
                        inner
                            .metrics
                            .turn_first_token_seconds
                            .observe(started.elapsed().as_secs_f64());
                        produced = true;
                    }
                    state.push(d);
                }
                Ok(Some(Ok(WorkloadEvent::Done(u)))) => {
                    if inner.cfg.count_turn_usage {
                        inner.metrics.add_usage(&u);
                    }
                    let usage = pb::Usage {
                        input_tokens: u.input_tokens,
                        output_tokens: u.output_tokens,
                        cache_read_tokens: u.cache_read_tokens,
                        cache_write_tokens: u.cache_write_tokens,
                    };
                    return finish(
                        &inner,
                        &state,
                        Outcome::Ok,
                        String::new(),
                        Some(usage),
                        started,
                    );
                }
                Ok(Some(Err(e))) if attempt == 1 && !produced && e.is_retryable() => {
                    warn!(error = %e, kind = e.metric_label(), "workload failed before any content; retrying once");
                    break;
                }
                Ok(Some(Err(e))) => {
                    let outcome = if matches!(e, WorkloadError::Timeout(_)) {
                        Outcome::Timeout
                    } else {
                        Outcome::Error
                    };
                    return finish(&inner, &state, outcome, e.to_string(), None, started);
                }
                Ok(None) => {
                    let msg = "the workload's reply ended without completing".to_owned();
                    return finish(&inner, &state, Outcome::Error, msg, None, started);
                }
            }
        }
    }
    finish(
        &inner,
        &state,
        Outcome::Error,
        "the workload failed twice before answering".into(),
        None,
        started,
    );
}

fn finish(
    inner: &Inner,
    state: &TurnState,
    outcome: Outcome,
    error: String,
    usage: Option<pb::Usage>,
    started: Instant,
) {
    let end = state.finish(outcome, error, usage);
    let result = match end.outcome() {
        Outcome::Ok => "ok",
        Outcome::Cancelled => "cancelled",
        Outcome::Timeout => "timeout",
        Outcome::Rejected => "rejected",
        Outcome::NotFound => "not_found",
        Outcome::Error | Outcome::Unspecified => "error",
    };
    inner
        .metrics
        .turns
        .get_or_create(&ResultLabel { result })
        .inc();
    inner
        .metrics
        .turn_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    if result == "ok" {
        debug!(chunks = end.chunks, "turn finished");
    } else {
        info!(outcome = result, error = %end.error, "turn did not finish normally");
    }
}

#[cfg(test)]
mod tests;
