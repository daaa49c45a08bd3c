//! Writes one turn's reply into Slack as it streams.
//!
//! Native streaming first: `chat.startStream` → `chat.appendStream` (text
//! coalesced to ~256 characters or one second, as Slack's own SDK buffers) →
//! `chat.stopStream`. Where native streaming is off or fails, the reply falls
//! back to `chat.postMessage` then `chat.update` at most every
//! `update_interval`. While the agent works, the thread shows
//! "is thinking…" (`assistant.threads.setStatus`). Replies longer than one
//! message are split at clean places ([`super::split`]). A failed turn ends
//! with a plain note saying what happened.
//!
//! Slack calls run while events keep arriving: the turn's queue never waits
//! on Slack (a long `Retry-After` would otherwise stall the agent's link).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use clawswarm_proto::v1::Outcome;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    api::SlackApiError,
    split::{FENCE_CLOSE, MAX_STREAM_MESSAGE, MAX_TEXT_MESSAGE, cut_point, open_fence},
};
use crate::mesh::{TurnEnd, TurnEvent, TurnStream};

#[derive(Clone, Debug)]
pub struct ReplyConfig {
    /// Try `chat.startStream` first.
    pub native_streaming: bool,
    /// Send an append once this much text waits...
    pub append_chars: usize,
    /// ...or once text has waited this long.
    pub append_interval: Duration,
    /// Fallback mode: at most one `chat.update` per message this often
    /// (Tier 3 is ~50 per minute per workspace).
    pub update_interval: Duration,
    pub stream_max: usize,
    pub text_max: usize,
    /// Give up on a turn that sends nothing for this long (the sidecar has
    /// its own idle timeout; this is the backstop).
    pub idle_timeout: Duration,
    pub thinking_status: String,
}

impl Default for ReplyConfig {
    fn default() -> Self {
        Self {
            native_streaming: true,
            append_chars: 256,
            append_interval: Duration::from_secs(1),
            update_interval: Duration::from_millis(1500),
            stream_max: MAX_STREAM_MESSAGE,
            text_max: MAX_TEXT_MESSAGE,
            idle_timeout: Duration::from_secs(15 * 60),
            thinking_status: "is thinking…".into(),
        }
    }
}

/// Where the reply goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplyPlace {
    pub channel: String,
    pub thread_ts: String,
    /// The person the reply is for (streams outside DMs need it).
    pub user: String,
    pub team: String,
    pub is_dm: bool,
}

/// One Slack call the writer wants made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Status(String),
    Start { text: String },
    Append { ts: String, text: String },
    Stop { ts: String, text: String },
    Post { text: String },
    Update { ts: String, text: String },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Self::Status(_) => "status",
            Self::Start { .. } => "start_stream",
            Self::Append { .. } => "append_stream",
            Self::Stop { .. } => "stop_stream",
            Self::Post { .. } => "post_message",
            Self::Update { .. } => "update",
        }
    }
}

/// The Slack calls a reply needs; [`super::api::SlackApi`] is the real one.
#[async_trait]
pub trait ReplyApi: Send + Sync + 'static {
    /// Make the call; `Start` and `Post` return the new message's ts.
    async fn perform(
        &self,
        place: &ReplyPlace,
        action: &Action,
    ) -> Result<Option<String>, SlackApiError>;
}

/// Where turn events come from ([`TurnStream`] in production).
#[async_trait]
pub trait TurnEvents: Send {
    async fn next_event(&mut self) -> Option<TurnEvent>;
}

#[async_trait]
impl TurnEvents for TurnStream {
    async fn next_event(&mut self) -> Option<TurnEvent> {
        self.next().await
    }
}

/// How a reply went, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyReport {
    pub outcome: Outcome,
    /// "native", "fallback" or "none".
    pub mode: &'static str,
    pub messages: usize,
    /// Slack calls that failed (after retries).
    pub failed_calls: usize,
    /// Text that could not be delivered at all.
    pub gave_up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Native,
    Fallback,
}

struct Current {
    ts: String,
    sent: String,
}

/// The state machine: decides the next call from what has arrived and what
/// Slack has accepted. No I/O here, so it is tested without Slack.
struct Writer {
    cfg: ReplyConfig,
    mode: Mode,
    cur: Option<Current>,
    pending: String,
    pending_since: Option<Instant>,
    last_write: Option<Instant>,
    end: Option<TurnEnd>,
    status_sent: bool,
    note_sent: bool,
    /// A stream to close before writing elsewhere (after an append failed).
    abandon: Option<String>,
    /// Text of the next message starts with this (a code fence reopened).
    carry: String,
    messages: usize,
    failed_calls: usize,
    consecutive_failures: u32,
    gave_up: bool,
    done: bool,
    used_native: bool,
    /// The call in flight finishes the current message (it is full).
    closing: bool,
}

/// Consecutive failed calls after which the reply is abandoned.
const MAX_CONSECUTIVE_FAILURES: u32 = 4;

pub fn failure_note(end: &TurnEnd) -> Option<String> {
    let detail = end.error.chars().take(300).collect::<String>();
    let text = match end.outcome {
        Outcome::Ok => return None,
        Outcome::Timeout => {
            "Your agent took too long to answer, so I stopped waiting. Please try again.".to_owned()
        }
        Outcome::Cancelled => "This reply was cancelled before it finished.".to_owned(),
        Outcome::Rejected => {
            "Your agent is busy with other messages right now. Please try again in a moment."
                .to_owned()
        }
        Outcome::NotFound => "Your agent could not find this conversation any more.".to_owned(),
        Outcome::Error | Outcome::Unspecified if detail.is_empty() => {
            "Something went wrong while your agent was answering. Please try again.".to_owned()
        }
        Outcome::Error | Outcome::Unspecified => format!(
            "Something went wrong while your agent was answering ({detail}). Please try again."
        ),
    };
    Some(format!(":warning: {text}"))
}

impl Writer {
    fn new(cfg: ReplyConfig) -> Self {
        let mode = if cfg.native_streaming {
            Mode::Native
        } else {
            Mode::Fallback
        };
        Self {
            cfg,
            mode,
            cur: None,
            pending: String::new(),
            pending_since: None,
            last_write: None,
            end: None,
            status_sent: false,
            note_sent: false,
            abandon: None,
            carry: String::new(),
            messages: 0,
            failed_calls: 0,
            consecutive_failures: 0,
            gave_up: false,
            done: false,
            used_native: false,
            closing: false,
        }
    }

    fn push(&mut self, delta: &str, now: Instant) {
        if delta.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.pending_since = Some(now);
        }
        self.pending.push_str(delta);
    }

    fn max(&self) -> usize {
        match self.mode {
            Mode::Native => self.cfg.stream_max,
            Mode::Fallback => self.cfg.text_max,
        }
    }

    /// Fallback mode edits one message at most every `update_interval`.
    fn throttled(&self, now: Instant) -> bool {
        self.mode == Mode::Fallback
            && self.cur.is_some()
            && self
                .last_write
                .is_some_and(|t| now < t + self.cfg.update_interval)
    }

    /// Enough text has waited (or the turn ended) to be worth a call.
    fn flush_due(&self, now: Instant) -> bool {
        if self.pending.is_empty() || self.throttled(now) {
            return false;
        }
        let waited = self
            .pending_since
            .is_some_and(|t| now >= t + self.cfg.append_interval);
        self.end.is_some() || waited || self.pending.len() >= self.cfg.append_chars
    }

    /// When to look again if no event arrives and no call is in flight.
    fn wake_at(&self, now: Instant) -> Option<Instant> {
        let mut at = if self.end.is_some() && !self.done {
            now
        } else {
            self.pending_since.filter(|_| !self.pending.is_empty())? + self.cfg.append_interval
        };
        if self.mode == Mode::Fallback
            && self.cur.is_some()
            && let Some(w) = self.last_write
        {
            at = at.max(w + self.cfg.update_interval);
        }
        Some(at)
    }

    fn take_pending(&mut self, n: usize) -> String {
        let rest = self.pending.split_off(n);
        let taken = std::mem::replace(&mut self.pending, rest);
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        taken
    }

    /// The next call to make, if any. Call only when no call is in flight.
    fn next_action(&mut self, now: Instant) -> Option<Action> {
        if self.done {
            return None;
        }
        if !self.status_sent {
            self.status_sent = true;
            return Some(Action::Status(self.cfg.thinking_status.clone()));
        }
        if let Some(ts) = self.abandon.take() {
            return Some(Action::Stop {
                ts,
                text: String::new(),
            });
        }
        let max = self.max();
        match self.cur.as_ref().map(|c| (c.ts.clone(), c.sent.clone())) {
            None => {
                if self.flush_due(now) || (!self.carry.is_empty() && !self.pending.is_empty()) {
                    let mut body = std::mem::take(&mut self.carry);
                    let room = max.saturating_sub(body.len() + FENCE_CLOSE.len());
                    let cut = cut_point(&self.pending, 0, room);
                    body.push_str(&self.take_pending(cut));
                    self.close_fence_if_cut(&mut body);
                    return Some(match self.mode {
                        Mode::Native => Action::Start { text: body },
                        Mode::Fallback => Action::Post { text: body },
                    });
                }
                if let Some(end) = &self.end
                    && self.pending.is_empty()
                {
                    self.done = true;
                    let text = match failure_note(end) {
                        Some(note) => note,
                        None if self.messages == 0 => {
                            "_Your agent finished without saying anything._".to_owned()
                        }
                        None => return None,
                    };
                    self.note_sent = true;
                    return Some(Action::Post { text });
                }
                None
            }
            Some((ts, sent)) => {
                if self.throttled(now) {
                    return None;
                }
                let sent_len = sent.len();
                let total = sent_len + self.pending.len();
                let hard = total + FENCE_CLOSE.len() > max;
                // In a message's last eighth, end it at the next clean place
                // rather than fill it and be forced to cut mid-word.
                let soft = total > max - max / 8 && self.flush_due(now);
                if (hard || soft) && !self.pending.is_empty() {
                    let combined = format!("{sent}{}", self.pending);
                    let limit = if hard {
                        max - FENCE_CLOSE.len()
                    } else {
                        combined.len() - 1
                    };
                    let mut part = if sent_len + FENCE_CLOSE.len() >= max {
                        String::new()
                    } else {
                        let cut = clean_cut(&combined, sent_len, limit);
                        self.take_pending(cut - sent_len)
                    };
                    if !hard && part.is_empty() {
                        // Nothing clean in reach yet: keep appending.
                        let len = self.pending.len();
                        let part = self.take_pending(len);
                        return Some(match self.mode {
                            Mode::Native => Action::Append { ts, text: part },
                            Mode::Fallback => Action::Update {
                                ts,
                                text: format!("{sent}{part}"),
                            },
                        });
                    }
                    self.closing = true;
                    let full = format!("{sent}{part}");
                    if let Some(opener) = open_fence(&full) {
                        self.carry = format!("{opener}\n");
                        part.push_str(FENCE_CLOSE);
                    }
                    return Some(match self.mode {
                        Mode::Native => Action::Stop { ts, text: part },
                        Mode::Fallback => Action::Update {
                            ts,
                            text: format!("{sent}{part}"),
                        },
                    });
                }
                if self.flush_due(now) {
                    let len = self.pending.len();
                    let part = self.take_pending(len);
                    return Some(match self.mode {
                        Mode::Native => Action::Append { ts, text: part },
                        Mode::Fallback => Action::Update {
                            ts,
                            text: format!("{}{}", sent, part),
                        },
                    });
                }
                let end = self.end.as_ref()?;
                if !self.pending.is_empty() {
                    return None;
                }
                let note = failure_note(end).filter(|_| !self.note_sent);
                self.note_sent = true;
                self.done = true;
                let note_text = note.map(|n| format!("\n\n{n}")).unwrap_or_default();
                match self.mode {
                    Mode::Native => Some(Action::Stop {
                        ts,
                        text: note_text,
                    }),
                    Mode::Fallback if note_text.is_empty() => None,
                    Mode::Fallback if sent_len + note_text.len() <= max => Some(Action::Update {
                        ts,
                        text: format!("{}{}", sent, note_text),
                    }),
                    Mode::Fallback => Some(Action::Post {
                        text: note_text.trim_start().to_owned(),
                    }),
                }
            }
        }
    }

    fn close_fence_if_cut(&mut self, body: &mut String) {
        // Only when more text follows; a reply that ends inside a fence is the agent's business.
        if !self.pending.is_empty()
            && let Some(opener) = open_fence(body)
        {
            self.carry = format!("{opener}\n");
            body.push_str(FENCE_CLOSE);
        }
    }

    /// Slack answered `action` with `result`.
    fn on_done(
        &mut self,
        action: Action,
        result: Result<Option<String>, SlackApiError>,
        now: Instant,
    ) {
        let ok = result.is_ok();
        if ok {
            self.consecutive_failures = 0;
        } else if !matches!(action, Action::Status(_)) {
            self.failed_calls += 1;
            self.consecutive_failures += 1;
        }
        match (action, result) {
            (Action::Status(_), Err(e)) => debug!(error = %e, "thread status not set"),
            (Action::Status(_), Ok(_)) => {}
            (Action::Start { text }, Ok(ts)) => {
                self.used_native = true;
                self.messages += 1;
                self.last_write = Some(now);
                self.cur = Some(Current {
                    ts: ts.unwrap_or_default(),
                    sent: text,
                });
            }
            (Action::Start { text }, Err(e)) => {
                info!(error = %e, "native streaming unavailable; falling back to post and update");
                self.mode = Mode::Fallback;
                self.unsend(text);
            }
            (Action::Append { text, .. }, Ok(_)) => {
                self.last_write = Some(now);
                if let Some(c) = &mut self.cur {
                    c.sent.push_str(&text);
                }
            }
            (Action::Append { ts, text }, Err(e)) => {
                warn!(error = %e, "stream append failed; continuing with post and update");
                self.mode = Mode::Fallback;
                self.abandon = Some(ts);
                self.cur = None;
                self.unsend(text);
            }
            (Action::Stop { .. }, r) => {
                self.closing = false;
                if let Err(e) = r {
                    warn!(error = %e, "stream stop failed");
                }
                self.cur = None;
                self.last_write = Some(now);
            }
            (Action::Post { text }, Ok(ts)) => {
                self.messages += 1;
                self.last_write = Some(now);
                let ts = ts.unwrap_or_default();
                // A note posted on its own ends the reply; nothing more goes there.
                self.cur = if self.done {
                    None
                } else {
                    Some(Current { ts, sent: text })
                };
            }
            (Action::Post { text }, Err(e)) => {
                warn!(error = %e, "reply message not posted");
                if self.done {
                    self.gave_up = true;
                } else {
                    self.unsend(text);
                }
            }
            (Action::Update { text, .. }, Ok(_)) => {
                self.last_write = Some(now);
                if std::mem::take(&mut self.closing) {
                    self.cur = None;
                } else if let Some(c) = &mut self.cur {
                    c.sent = text;
                }
            }
            (Action::Update { text, .. }, Err(e)) => {
                warn!(error = %e, "reply update failed");
                self.last_write = Some(now);
                self.closing = false;
                if let Some(c) = &self.cur {
                    let unsent = text.get(c.sent.len()..).unwrap_or("").to_owned();
                    self.unsend(unsent);
                }
            }
        }
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
            warn!(
                failed_calls = self.failed_calls,
                "giving up on this reply after repeated slack failures"
            );
            self.gave_up = true;
            self.done = true;
            self.pending.clear();
        }
    }

    /// Put text that did not reach Slack back in front of the queue.
    fn unsend(&mut self, text: String) {
        let text = match text.strip_suffix(FENCE_CLOSE) {
            Some(t) if !self.carry.is_empty() => {
                self.carry.clear();
                t.to_owned()
            }
            _ => text,
        };
        if self.done && self.pending.is_empty() && !text.is_empty() {
            // The final call failed; let the loop retry it as content.
            self.done = false;
            self.note_sent = false;
        }
        self.pending.insert_str(0, &text);
        if self.pending_since.is_none() && !self.pending.is_empty() {
            self.pending_since = Some(Instant::now());
        }
    }

    fn finished(&self) -> bool {
        self.done && self.abandon.is_none()
    }
}

/// A cut in `text` between `min` and `max` at whitespace (or the end), else `min`.
fn clean_cut(text: &str, min: usize, max: usize) -> usize {
    let cut = cut_point(text, min, max);
    let clean = cut == text.len() || text[..cut].ends_with(char::is_whitespace);
    if clean && cut <= max.max(min) {
        cut
    } else {
        min
    }
}

type InFlight =
    Pin<Box<dyn Future<Output = (Action, Result<Option<String>, SlackApiError>)> + Send>>;

/// Stream a turn's events into Slack until the turn ends and the reply is
/// complete (or Slack keeps refusing it).
pub async fn write_reply(
    api: Arc<dyn ReplyApi>,
    place: ReplyPlace,
    cfg: ReplyConfig,
    events: &mut dyn TurnEvents,
) -> ReplyReport {
    let idle = cfg.idle_timeout;
    let mut w = Writer::new(cfg);
    let place = Arc::new(place);
    let mut inflight: Option<InFlight> = None;
    let mut idle_deadline = Instant::now() + idle;
    let mut outcome = Outcome::Unspecified;
    loop {
        let now = Instant::now();
        if inflight.is_none() {
            if let Some(action) = w.next_action(now) {
                debug!(call = action.name(), "slack reply call");
                let (api, place) = (api.clone(), place.clone());
                inflight = Some(Box::pin(async move {
                    let r = api.perform(&place, &action).await;
                    (action, r)
                }));
            } else if w.finished() {
                break;
            }
        }
        let wake = w.wake_at(now);
        let reading = w.end.is_none();
        tokio::select! {
            ev = events.next_event(), if reading => {
                idle_deadline = Instant::now() + idle;
                match ev {
                    Some(TurnEvent::Chunk { delta, .. }) => w.push(&delta, Instant::now()),
                    Some(TurnEvent::Progress(_)) | Some(TurnEvent::Accepted { .. }) => {}
                    Some(TurnEvent::End(end)) => { outcome = end.outcome; w.end = Some(end); }
                    None => {
                        outcome = Outcome::Error;
                        w.end = Some(TurnEnd::failed(Outcome::Error, "the turn ended without a result"));
                    }
                }
            }
            (action, result) = async { match inflight.as_mut() { Some(f) => f.await, None => std::future::pending().await } }, if inflight.is_some() => {
                inflight = None;
                w.on_done(action, result, Instant::now());
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() && inflight.is_none() => {}
            _ = tokio::time::sleep_until(idle_deadline), if reading => {
                warn!(idle = ?idle, "turn sent nothing for too long; closing the reply");
                outcome = Outcome::Timeout;
                w.end = Some(TurnEnd::failed(Outcome::Timeout, "no reply from your agent"));
            }
        }
    }
    let mode = if w.used_native {
        "native"
    } else if w.messages > 0 {
        "fallback"
    } else {
        "none"
    };
    ReplyReport {
        outcome,
        mode,
        messages: w.messages,
        failed_calls: w.failed_calls,
        gave_up: w.gave_up,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
