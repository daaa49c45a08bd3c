//! The reply state machine: decides the next Slack call from what has
//! arrived and what Slack has accepted. No I/O here, so it is tested
//! without Slack (see `tests.rs`).

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Action, ReplyConfig, failure_note};
use crate::mesh::TurnEnd;
use crate::slack::{
    api::SlackApiError,
    split::{FENCE_CLOSE, cut_point, open_fence},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Native,
    Fallback,
}

struct Current {
    ts: String,
    sent: String,
}

/// The state machine: decides the next call from what has arrived and what
/// Slack has accepted. No I/O here, so it is tested without Slack.
pub(super) struct Writer {
    cfg: ReplyConfig,
    mode: Mode,
    cur: Option<Current>,
    pending: String,
    pending_since: Option<Instant>,
    last_write: Option<Instant>,
    pub(super) end: Option<TurnEnd>,
    status_sent: bool,
    /// A progress status to show while nothing is written yet.
    progress: Option<String>,
    note_sent: bool,
    /// A stream to close before writing elsewhere (after an append failed).
    abandon: Option<String>,
    /// Text of the next message starts with this (a code fence reopened).
    carry: String,
    pub(super) messages: usize,
    pub(super) failed_calls: usize,
    consecutive_failures: u32,
    pub(super) gave_up: bool,
    done: bool,
    pub(super) used_native: bool,
    /// The call in flight finishes the current message (it is full).
    closing: bool,
    /// A stream another controller left open, to finish before editing it.
    seal: Option<String>,
}

/// Consecutive failed calls after which the reply is abandoned.
const MAX_CONSECUTIVE_FAILURES: u32 = 4;

pub(super) const EMPTY_REPLY: &str = "_Your agent finished without saying anything._";

impl Writer {
    pub(super) fn new(cfg: ReplyConfig) -> Self {
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
            progress: None,
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
            seal: None,
        }
    }

    /// Write into a message made before the turn started (its ts is in the
    /// turn's reply target): a stream when `native`, else a placeholder
    /// post whose first edit replaces it.
    pub(super) fn into_message(cfg: ReplyConfig, native: bool, ts: String) -> Self {
        let mut w = Self::new(cfg);
        w.mode = if native { Mode::Native } else { Mode::Fallback };
        w.used_native = native;
        w.messages = 1;
        w.cur = Some(Current {
            ts,
            sent: String::new(),
        });
        w
    }

    /// Finish a reply another controller was writing into message `ts`,
    /// from the turn's first chunk: close its stream if still open, then
    /// replace the message with the whole reply. Edits, not appends, so
    /// what the dead controller wrote is never written twice.
    pub(super) fn resuming(mut cfg: ReplyConfig, ts: String) -> Self {
        // The message may already hold a full stream's worth of text.
        cfg.text_max = cfg.text_max.max(cfg.stream_max);
        let mut w = Self::into_message(cfg, false, ts.clone());
        w.seal = Some(ts);
        w.status_sent = true;
        w
    }

    /// No reply text has reached Slack yet (an opened message may exist).
    fn nothing_written(&self) -> bool {
        match &self.cur {
            Some(c) => self.messages == 1 && c.sent.is_empty(),
            None => self.messages == 0,
        }
    }

    /// The router's progress while the agent wakes or starts, as a thread
    /// status ("<app> is waking your agent…"); shown only before any text.
    pub(super) fn progress(&mut self, text: &str) {
        let status = if text.starts_with("Waking") {
            "is waking your agent…"
        } else if text.starts_with("Still waiting") {
            "is still starting your agent…"
        } else if text.contains("is starting") {
            "is starting your agent…"
        } else {
            return;
        };
        if self.nothing_written() {
            self.progress = Some(status.to_owned());
        }
    }

    pub(super) fn push(&mut self, delta: &str, now: Instant) {
        if delta.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.pending_since = Some(now);
        }
        self.pending.push_str(delta);
    }

    pub(super) fn max(&self) -> usize {
        match self.mode {
            Mode::Native => self.cfg.stream_max,
            Mode::Fallback => self.cfg.text_max,
        }
    }

    /// Fallback mode edits one message at most every `update_interval`.
    pub(super) fn throttled(&self, now: Instant) -> bool {
        self.mode == Mode::Fallback
            && self.cur.is_some()
            && self
                .last_write
                .is_some_and(|t| now < t + self.cfg.update_interval)
    }

    /// Enough text has waited (or the turn ended) to be worth a call.
    pub(super) fn flush_due(&self, now: Instant) -> bool {
        if self.pending.is_empty() || self.throttled(now) {
            return false;
        }
        let waited = self
            .pending_since
            .is_some_and(|t| now >= t + self.cfg.append_interval);
        self.end.is_some() || waited || self.pending.len() >= self.cfg.append_chars
    }

    /// When to look again if no event arrives and no call is in flight.
    pub(super) fn wake_at(&self, now: Instant) -> Option<Instant> {
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

    pub(super) fn take_pending(&mut self, n: usize) -> String {
        let rest = self.pending.split_off(n);
        let taken = std::mem::replace(&mut self.pending, rest);
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        taken
    }

    /// The next call to make, if any. Call only when no call is in flight.
    pub(super) fn next_action(&mut self, now: Instant) -> Option<Action> {
        if self.done {
            return None;
        }
        if !self.status_sent {
            self.status_sent = true;
            return Some(Action::Status(self.cfg.thinking_status.clone()));
        }
        if self.nothing_written()
            && let Some(status) = self.progress.take()
        {
            return Some(Action::Status(status));
        }
        if let Some(ts) = self.seal.take() {
            return Some(Action::Seal { ts });
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
                        None if self.messages == 0 => EMPTY_REPLY.to_owned(),
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
                let note_text = match note {
                    Some(n) if sent.is_empty() => n,
                    Some(n) => format!("\n\n{n}"),
                    // An opened message must not stay empty (or a placeholder).
                    None if self.nothing_written() => EMPTY_REPLY.to_owned(),
                    None => String::new(),
                };
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

    pub(super) fn close_fence_if_cut(&mut self, body: &mut String) {
        // Only when more text follows; a reply that ends inside a fence is the agent's business.
        if !self.pending.is_empty()
            && let Some(opener) = open_fence(body)
        {
            self.carry = format!("{opener}\n");
            body.push_str(FENCE_CLOSE);
        }
    }

    /// Slack answered `action` with `result`.
    pub(super) fn on_done(
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
            (Action::Seal { .. }, Ok(_)) => {}
            (Action::Seal { ts }, Err(e)) => {
                warn!(error = %e, ts, "could not close the earlier stream; editing it anyway")
            }
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
    pub(super) fn unsend(&mut self, text: String) {
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

    pub(super) fn finished(&self) -> bool {
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
