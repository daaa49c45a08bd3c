//! Writes one turn's reply into Slack as it streams.
//!
//! The reply's first message may be made before the turn starts
//! ([`open_message`]) so its ts can travel in the turn's reply target; a
//! controller that takes over a turn continues that message
//! ([`Opening::Resumed`]).
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

mod writer;

use super::{
    api::SlackApiError,
    split::{MAX_STREAM_MESSAGE, MAX_TEXT_MESSAGE},
};
use crate::mesh::{TurnEnd, TurnEvent, TurnStream};
use writer::Writer;

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
    Start {
        text: String,
    },
    Append {
        ts: String,
        text: String,
    },
    Stop {
        ts: String,
        text: String,
    },
    Post {
        text: String,
    },
    Update {
        ts: String,
        text: String,
    },
    /// `chat.stopStream` with no text on a stream another controller left
    /// open; a message that is not streaming any more is already sealed.
    Seal {
        ts: String,
    },
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
            Self::Seal { .. } => "seal_stream",
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
    /// This controller stepped down mid-reply; the next leader finishes it.
    pub handed_over: bool,
}

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

type InFlight =
    Pin<Box<dyn Future<Output = (Action, Result<Option<String>, SlackApiError>)> + Send>>;

/// Where a reply starts writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opening {
    /// No message yet: the first text makes one.
    Fresh,
    /// A message made before the turn started ([`open_message`]).
    Opened { ts: String, native: bool },
    /// A message another controller was writing when it died: finish it
    /// with the whole reply, replayed from the first chunk.
    Resumed { ts: String },
}

impl Opening {
    pub fn ts(&self) -> Option<&str> {
        match self {
            Self::Fresh => None,
            Self::Opened { ts, .. } | Self::Resumed { ts } => Some(ts),
        }
    }
}

/// Make the reply's first message before the turn starts, so its ts can
/// travel in the turn's reply target and a controller that takes over
/// after a crash continues the same message. A stream where native
/// streaming works, else a placeholder post; `Fresh` if Slack refuses both
/// (the reply then makes its message when text arrives, as before).
pub async fn open_message(api: &dyn ReplyApi, place: &ReplyPlace, cfg: &ReplyConfig) -> Opening {
    if cfg.native_streaming {
        let start = Action::Start {
            text: String::new(),
        };
        match api.perform(place, &start).await {
            Ok(Some(ts)) if !ts.is_empty() => return Opening::Opened { ts, native: true },
            Ok(_) => warn!("chat.startStream returned no ts"),
            Err(e) => {
                info!(error = %e, "native streaming unavailable; falling back to post and update")
            }
        }
    }
    let post = Action::Post {
        text: format!("_{}_", cfg.thinking_status),
    };
    match api.perform(place, &post).await {
        Ok(Some(ts)) if !ts.is_empty() => Opening::Opened { ts, native: false },
        Ok(_) => {
            warn!("chat.postMessage returned no ts");
            Opening::Fresh
        }
        Err(e) => {
            warn!(error = %e, "reply message not opened; it is made when text arrives");
            Opening::Fresh
        }
    }
}

/// Stream a turn's events into Slack until the turn ends and the reply is
/// complete (or Slack keeps refusing it).
pub async fn write_reply(
    api: Arc<dyn ReplyApi>,
    place: ReplyPlace,
    cfg: ReplyConfig,
    opening: Opening,
    events: &mut dyn TurnEvents,
) -> ReplyReport {
    let idle = cfg.idle_timeout;
    let mut w = match opening {
        Opening::Fresh => Writer::new(cfg),
        Opening::Opened { ts, native } => Writer::into_message(cfg, native, ts),
        Opening::Resumed { ts } => Writer::resuming(cfg, ts),
    };
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
                    Some(TurnEvent::Progress(p)) => w.progress(&p),
                    Some(TurnEvent::Accepted { .. }) => {}
                    Some(TurnEvent::End(end)) => { outcome = end.outcome; w.end = Some(end); }
                    // Stop at once, writing nothing more: the next leader
                    // rewrites this message whole from the sidecar's copy.
                    Some(TurnEvent::HandedOver) => return ReplyReport {
                        outcome: Outcome::Unspecified,
                        mode: if w.used_native { "native" } else { "fallback" },
                        messages: w.messages,
                        failed_calls: w.failed_calls,
                        gave_up: false,
                        handed_over: true,
                    },
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
        handed_over: false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
