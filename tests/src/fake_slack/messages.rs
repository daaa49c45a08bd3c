//! The messages the bot has written, as a person in Slack would see them.

use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// chat.postMessage (possibly edited by chat.update).
    Posted,
    /// chat.startStream / appendStream / stopStream.
    Streamed,
}

#[derive(Clone, Debug)]
pub struct FakeMessage {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub kind: MessageKind,
    /// A stream that has not been stopped yet.
    pub streaming: bool,
    /// chat.update or appendStream calls applied.
    pub edits: u32,
}

#[derive(Default)]
pub(crate) struct Store {
    /// Keyed by (channel, ts); ts values are unique and increasing.
    by_key: BTreeMap<(String, String), FakeMessage>,
    next_ts: u64,
}

impl Store {
    pub fn next_ts(&mut self) -> String {
        self.next_ts += 1;
        format!("1700000000.{:06}", self.next_ts)
    }

    pub fn insert(&mut self, msg: FakeMessage) {
        self.by_key
            .insert((msg.channel.clone(), msg.ts.clone()), msg);
    }

    pub fn get_mut(&mut self, channel: &str, ts: &str) -> Option<&mut FakeMessage> {
        self.by_key.get_mut(&(channel.to_owned(), ts.to_owned()))
    }

    pub fn all(&self) -> Vec<FakeMessage> {
        let mut all: Vec<_> = self.by_key.values().cloned().collect();
        all.sort_by(|a, b| a.ts.cmp(&b.ts));
        all
    }

    pub fn thread_text(&self, channel: &str, thread_ts: Option<&str>) -> String {
        let mut msgs: Vec<_> = self
            .by_key
            .values()
            .filter(|m| m.channel == channel && m.thread_ts.as_deref() == thread_ts)
            .collect();
        msgs.sort_by(|a, b| a.ts.cmp(&b.ts));
        msgs.iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// DM channel ids are stable per user, like Slack's.
pub(crate) fn dm_channel(map: &mut HashMap<String, String>, user: &str) -> String {
    map.entry(user.to_owned())
        .or_insert_with(|| format!("D{}", user.trim_start_matches('U')))
        .clone()
}
