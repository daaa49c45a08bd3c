//! What a `/v1/responses` workload remembers of each conversation between
//! turns: the last response id (when the server keeps the context, via
//! `previous_response_id`) and/or a bounded copy of the exchanged messages
//! (when the sidecar keeps it and sends it back as `input` items).
//!
//! The state is one small file per conversation under the sidecar's own data
//! directory ([`store`]), so an agent still remembers after a sidecar
//! restart, and the workload (which may be sandboxed and untrusted) never
//! sees or edits it. See docs/decisions.md, "Conversation history".

pub mod store;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    fmt,
    str::FromStr,
    sync::atomic::{AtomicU8, Ordering},
};

use serde::{Deserialize, Serialize};

pub use store::{ConversationStore, StoreError};

/// `CLAWSWARM_WORKLOAD_HISTORY`: who keeps a conversation's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryMode {
    /// Every turn stands alone (the workload keeps sessions itself, like
    /// OpenClaw, or forgetting is wanted).
    Off,
    /// The server: `store: true` and `previous_response_id`.
    Server,
    /// The sidecar: earlier messages are sent as `input` items, `store: false`.
    Sidecar,
    /// The server while it honours `previous_response_id`, else the sidecar
    /// (the rule is on [`ServerSupport`]).
    Auto,
}

impl HistoryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Server => "server",
            Self::Sidecar => "sidecar",
            Self::Auto => "auto",
        }
    }

    /// Whether messages are copied into the store (the sidecar's own copy,
    /// also auto's fallback when the server forgets or ignores the id).
    pub fn keeps_items(self) -> bool {
        matches!(self, Self::Sidecar | Self::Auto)
    }
}

impl fmt::Display for HistoryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HistoryMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            "server" => Ok(Self::Server),
            "sidecar" => Ok(Self::Sidecar),
            "auto" => Ok(Self::Auto),
            other => Err(format!("{other:?}: expected auto, server, sidecar or off")),
        }
    }
}

/// Bounds on what the sidecar keeps. Items beyond either bound are dropped
/// oldest first; a conversation beyond `max_conversations` is forgotten
/// least recently used first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per conversation (a turn is two: the person's and the reply).
    pub max_items: usize,
    /// Bytes of message text kept per conversation.
    pub max_bytes: usize,
    /// Conversations kept per agent.
    pub max_conversations: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        // 32 turns or 128 KiB (roughly 32k tokens) is resent on every turn,
        // so the bound is also a bound on what each turn costs.
        Self {
            max_items: 64,
            max_bytes: 128 * 1024,
            max_conversations: 1000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub role: Role,
    pub text: String,
}

impl fmt::Debug for Item {
    // Conversation text is the person's data: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Item({}, <{} bytes>)",
            self.role.as_str(),
            self.text.len()
        )
    }
}

/// What is remembered of one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// The response to continue from with `previous_response_id`.
    pub last_response_id: Option<String>,
    /// Oldest first; always starts with a user message.
    pub items: VecDeque<Item>,
}

impl Conversation {
    pub fn bytes(&self) -> usize {
        self.items.iter().map(|i| i.text.len()).sum()
    }

    /// Add one finished turn, then drop the oldest messages until both
    /// bounds hold. A reply is never kept without the message it answers,
    /// so dropping stops only at a user message.
    pub fn push_turn(&mut self, user: &str, reply: &str, limits: &HistoryLimits) {
        self.items.push_back(Item {
            role: Role::User,
            text: user.to_owned(),
        });
        self.items.push_back(Item {
            role: Role::Assistant,
            text: reply.to_owned(),
        });
        self.trim(limits);
    }

    pub fn trim(&mut self, limits: &HistoryLimits) {
        let mut bytes = self.bytes();
        while !self.items.is_empty()
            && (self.items.len() > limits.max_items
                || bytes > limits.max_bytes
                || self.items.front().is_some_and(|i| i.role != Role::User))
        {
            if let Some(dropped) = self.items.pop_front() {
                bytes -= dropped.text.len();
            }
        }
    }
}

/// Whether the server honours `previous_response_id`, as learnt from its
/// answers (auto mode). Kept per sidecar run: a restarted sidecar learns
/// again, which costs at most one extra request.
///
/// The rule:
/// - a response object that echoes the `previous_response_id` we sent
///   → `Supported`;
/// - one that does not echo it (absent or another id) → the server ignored
///   it → `Unsupported`; when this shows on `response.created`, before any
///   content, the turn is resent at once with the sidecar's copy;
/// - HTTP 400 naming `previous_response_id` with code
///   `previous_response_not_found` (expired, or the server restarted)
///   → the id is forgotten and the turn resent with the sidecar's copy,
///   support unchanged; any other 400 naming it → `Unsupported`, resent.
///
/// `Unsupported` is final for the run: every later turn sends the
/// sidecar's copy.
#[derive(Debug, Default)]
pub struct ServerSupport(AtomicU8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Unknown,
    Supported,
    Unsupported,
}

impl ServerSupport {
    pub fn get(&self) -> Support {
        match self.0.load(Ordering::Acquire) {
            1 => Support::Supported,
            2 => Support::Unsupported,
            _ => Support::Unknown,
        }
    }

    /// Record what an answer showed; returns true when this changed the
    /// verdict (to log the transition once). `Unsupported` is never undone.
    pub fn set(&self, s: Support) -> bool {
        let v = match s {
            Support::Unknown => return false,
            Support::Supported => 1,
            Support::Unsupported => 2,
        };
        let prev = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur != 2 && cur != v).then_some(v)
            });
        prev.is_ok()
    }
}
