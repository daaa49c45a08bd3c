//! One turn as its requester sees it: a bounded stream of events that
//! cancels the turn when dropped early.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use clawswarm_certs::AgentId;
use clawswarm_proto::v1::{Outcome, Usage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest turn id accepted; ids travel in every frame and log line.
pub const MAX_TURN_ID_BYTES: usize = 128;
/// Longest conversation id accepted.
pub const MAX_CONVERSATION_BYTES: usize = 256;
/// Largest turn text accepted. Slack caps a message at 40,000 characters
/// (up to 160 KB of UTF-8); 256 KiB leaves room and keeps frames small.
pub const MAX_TURN_TEXT_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub enum TurnEvent {
    /// The turn has an id and is on its way; always the first event.
    Accepted {
        turn_id: String,
    },
    /// Human-readable progress while the agent wakes or starts.
    Progress(String),
    Chunk {
        seq: u64,
        delta: String,
    },
    End(TurnEnd),
    /// This controller stepped down (lost its Lease) while the turn ran.
    /// The turn goes on: its sidecar keeps the reply and reports it to the
    /// next leader (`Hello.pending`), which finishes it. The requester here
    /// must stop without writing anything more.
    HandedOver,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TurnEnd {
    pub outcome: Outcome,
    pub error: String,
    pub usage: Usage,
    pub chunks: u64,
}

impl TurnEnd {
    pub fn failed(outcome: Outcome, error: impl Into<String>) -> Self {
        Self {
            outcome,
            error: error.into(),
            usage: Usage::default(),
            chunks: 0,
        }
    }
}

/// What a caller asks of an agent.
#[derive(Clone, Debug)]
pub struct TurnSpec {
    /// Optional; generated when empty. Reusing an id lets the caller resume.
    pub turn_id: Option<String>,
    pub conversation: String,
    pub text: String,
    /// Opaque to the sidecar, echoed back so a restarted controller can
    /// finish the reply (e.g. which Slack message to keep writing).
    pub reply_target: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum TurnSpecError {
    #[error("turn_id must be 1..={MAX_TURN_ID_BYTES} characters of [A-Za-z0-9._:-]")]
    TurnId,
    #[error(
        "conversation must be 1..={MAX_CONVERSATION_BYTES} printable characters without whitespace"
    )]
    Conversation,
    #[error("text is empty")]
    EmptyText,
    #[error("text is {0} bytes; the limit is {MAX_TURN_TEXT_BYTES}")]
    TextTooLarge(usize),
}

pub fn validate_turn_id(id: &str) -> Result<(), TurnSpecError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TURN_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TurnSpecError::TurnId)
    }
}

pub fn validate_conversation(c: &str) -> Result<(), TurnSpecError> {
    let ok = !c.is_empty()
        && c.len() <= MAX_CONVERSATION_BYTES
        && c.chars().all(|ch| !ch.is_whitespace() && !ch.is_control());
    if ok {
        Ok(())
    } else {
        Err(TurnSpecError::Conversation)
    }
}

impl TurnSpec {
    pub fn validate(&self) -> Result<(), TurnSpecError> {
        if let Some(id) = &self.turn_id {
            validate_turn_id(id)?;
        }
        validate_conversation(&self.conversation)?;
        if self.text.trim().is_empty() {
            return Err(TurnSpecError::EmptyText);
        }
        if self.text.len() > MAX_TURN_TEXT_BYTES {
            return Err(TurnSpecError::TextTooLarge(self.text.len()));
        }
        Ok(())
    }
}

/// Called when a requester drops its stream before the end.
pub(crate) trait CancelTurn: Send + Sync {
    fn cancel_turn(&self, agent: &AgentId, turn_id: &str, reason: &str);
}

/// The requester's side of a turn.
pub struct TurnStream {
    pub(crate) agent: AgentId,
    pub(crate) turn_id: String,
    pub(crate) rx: mpsc::Receiver<TurnEvent>,
    pub(crate) ended: bool,
    /// Set once the turn reached the agent; before that, cancelling means
    /// stopping the task still delivering it.
    pub(crate) dispatched: Arc<AtomicBool>,
    pub(crate) delivery: CancellationToken,
    pub(crate) canceller: Arc<dyn CancelTurn>,
}

impl TurnStream {
    pub fn turn_id(&self) -> &str {
        &self.turn_id
    }

    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The next event; `None` after the end (or if the turn was torn down).
    pub async fn next(&mut self) -> Option<TurnEvent> {
        if self.ended {
            return None;
        }
        let ev = self.rx.recv().await;
        match &ev {
            Some(TurnEvent::End(_) | TurnEvent::HandedOver) | None => self.ended = true,
            _ => {}
        }
        ev
    }
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.delivery.cancel();
        if self.dispatched.load(Ordering::Acquire) {
            self.canceller
                .cancel_turn(&self.agent, &self.turn_id, "requester went away");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> TurnSpec {
        TurnSpec {
            turn_id: None,
            conversation: "dm-1".into(),
            text: text.into(),
            reply_target: vec![],
        }
    }

    #[test]
    fn oversized_text_is_refused_with_its_size() {
        let big = "x".repeat(MAX_TURN_TEXT_BYTES + 1);
        assert!(
            matches!(spec(&big).validate(), Err(TurnSpecError::TextTooLarge(n)) if n == MAX_TURN_TEXT_BYTES + 1)
        );
        assert!(spec(&"x".repeat(MAX_TURN_TEXT_BYTES)).validate().is_ok());
    }

    #[test]
    fn turn_ids_with_spaces_or_slashes_are_refused() {
        for bad in ["", "a b", "a/b", &"x".repeat(MAX_TURN_ID_BYTES + 1)] {
            assert!(validate_turn_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_turn_id("01J9Z-abc_def.1:2").is_ok());
    }

    #[test]
    fn blank_text_and_bad_conversations_are_refused() {
        assert!(matches!(
            spec("  ").validate(),
            Err(TurnSpecError::EmptyText)
        ));
        let mut s = spec("hi");
        s.conversation = "has space".into();
        assert!(matches!(s.validate(), Err(TurnSpecError::Conversation)));
    }
}
