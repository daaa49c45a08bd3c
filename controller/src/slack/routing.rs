//! Which Slack events become turns, and for which conversation.
//!
//! - A DM to the bot, a mention of the bot, or a reply in a thread the bot
//!   was mentioned in goes to the **sender's own** agent.
//! - One conversation per DM (`slack:<team>:<dm channel>`) and one per
//!   channel thread (`slack:<team>:<channel>:<thread ts>`); a mention outside
//!   a thread starts one. Every reply goes into the thread of the message
//!   (Slack's native streaming only streams into threads).
//! - Messages from this bot and from other bots, edits, joins and other
//!   subtypes are ignored, and so is a channel message that mentions the bot
//!   (Slack also sends it as `app_mention`, which is the one handled).

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

use slack_morphism::prelude::*;

/// Who we are in this workspace (from `auth.test`).
#[derive(Clone, Debug)]
pub struct BotIdentity {
    pub user_id: String,
    pub bot_id: Option<String>,
    pub team_id: String,
}

/// A message someone sent their agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub team: String,
    pub channel: String,
    pub is_dm: bool,
    pub user: String,
    pub text: String,
    pub ts: String,
    pub thread_ts: Option<String>,
}

impl Inbound {
    /// The agent-side conversation this message belongs to.
    pub fn conversation(&self) -> String {
        match (&self.thread_ts, self.is_dm) {
            (_, true) => format!("slack:{}:{}", self.team, self.channel),
            (Some(t), false) => format!("slack:{}:{}:{}", self.team, self.channel, t),
            (None, false) => format!("slack:{}:{}:{}", self.team, self.channel, self.ts),
        }
    }

    /// The thread the reply goes into.
    pub fn reply_thread(&self) -> &str {
        self.thread_ts.as_deref().unwrap_or(&self.ts)
    }
}

/// Why an event is not a turn (logged as a label; the text never is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    OwnMessage,
    OtherBot,
    Subtype(String),
    /// A channel message not addressed to the bot.
    NotForUs,
    /// Handled through its `app_mention` twin.
    MentionTwin,
    Empty,
    /// An event type the front door does not act on.
    Unhandled(String),
}

impl Skip {
    pub fn label(&self) -> &'static str {
        match self {
            Self::OwnMessage => "own_message",
            Self::OtherBot => "other_bot",
            Self::Subtype(_) => "subtype",
            Self::NotForUs => "not_for_us",
            Self::MentionTwin => "mention_twin",
            Self::Empty => "empty",
            Self::Unhandled(_) => "unhandled_type",
        }
    }
}

/// Channel threads the bot was mentioned in, so plain replies there reach
/// the sender's agent. Bounded: the oldest threads are forgotten first.
type ThreadKey = (String, String);

pub struct ActiveThreads {
    cap: usize,
    inner: Mutex<(HashSet<ThreadKey>, VecDeque<ThreadKey>)>,
}

impl ActiveThreads {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::default(),
        }
    }

    pub fn add(&self, channel: &str, thread_ts: &str) {
        let key = (channel.to_owned(), thread_ts.to_owned());
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !g.0.insert(key.clone()) {
            return;
        }
        g.1.push_back(key);
        while g.1.len() > self.cap {
            if let Some(old) = g.1.pop_front() {
                g.0.remove(&old);
            }
        }
    }

    pub fn contains(&self, channel: &str, thread_ts: &str) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.contains(&(channel.to_owned(), thread_ts.to_owned()))
    }
}

/// `<@U123>` and `<@U123|name>` mentions of `user` removed.
fn strip_mention(text: &str, user: &str) -> String {
    let mut out = text.to_owned();
    for pat in [format!("<@{user}>"), format!("<@{user}|")] {
        while let Some(i) = out.find(&pat) {
            let end = out[i..].find('>').map_or(out.len(), |j| i + j + 1);
            out.replace_range(i..end, "");
        }
    }
    out.trim().to_owned()
}

pub fn event_type(body: &SlackEventCallbackBody) -> String {
    match serde_json::to_value(body) {
        Ok(v) => v
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("unknown")
            .to_owned(),
        Err(_) => "unknown".into(),
    }
}

/// Decide what an Events API callback means for the front door.
pub fn classify(
    ev: &SlackPushEventCallback,
    bot: &BotIdentity,
    threads: &ActiveThreads,
) -> Result<Inbound, Skip> {
    let team = ev.team_id.0.clone();
    match &ev.event {
        SlackEventCallbackBody::Message(m) => classify_message(m, team, bot, threads),
        SlackEventCallbackBody::AppMention(m) => {
            let user = m.user.0.clone();
            if user == bot.user_id {
                return Err(Skip::OwnMessage);
            }
            let text = strip_mention(m.content.text.as_deref().unwrap_or(""), &bot.user_id);
            if text.is_empty() {
                return Err(Skip::Empty);
            }
            let channel = m.channel.0.clone();
            let thread_ts = m.origin.thread_ts.as_ref().map(|t| t.0.clone());
            let inbound = Inbound {
                team,
                is_dm: channel.starts_with('D'),
                channel,
                user,
                text,
                ts: m.origin.ts.0.clone(),
                thread_ts,
            };
            threads.add(&inbound.channel, inbound.reply_thread());
            Ok(inbound)
        }
        other => Err(Skip::Unhandled(event_type(other))),
    }
}

fn classify_message(
    m: &SlackMessageEvent,
    team: String,
    bot: &BotIdentity,
    threads: &ActiveThreads,
) -> Result<Inbound, Skip> {
    match &m.subtype {
        None
        | Some(SlackMessageEventType::ThreadBroadcast)
        | Some(SlackMessageEventType::FileShare) => {}
        Some(SlackMessageEventType::BotMessage) => return Err(Skip::OtherBot),
        Some(other) => {
            let name = serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(Skip::Subtype(name));
        }
    }
    if let Some(b) = &m.sender.bot_id {
        return Err(if Some(&b.0) == bot.bot_id.as_ref() {
            Skip::OwnMessage
        } else {
            Skip::OtherBot
        });
    }
    let user = m
        .sender
        .user
        .as_ref()
        .map(|u| u.0.clone())
        .ok_or(Skip::NotForUs)?;
    if user == bot.user_id {
        return Err(Skip::OwnMessage);
    }
    let channel = m
        .origin
        .channel
        .as_ref()
        .map(|c| c.0.clone())
        .ok_or(Skip::NotForUs)?;
    let channel_type = m.origin.channel_type.as_ref().map(|t| t.0.as_str());
    let is_dm = channel_type == Some("im") || (channel_type.is_none() && channel.starts_with('D'));
    let raw = m
        .content
        .as_ref()
        .and_then(|c| c.text.as_deref())
        .unwrap_or("");
    let thread_ts = m.origin.thread_ts.as_ref().map(|t| t.0.clone());
    if !is_dm {
        if raw.contains(&format!("<@{}", bot.user_id)) {
            return Err(Skip::MentionTwin);
        }
        match &thread_ts {
            Some(t) if threads.contains(&channel, t) => {}
            _ => return Err(Skip::NotForUs),
        }
    }
    let text = strip_mention(raw, &bot.user_id);
    if text.is_empty() {
        return Err(Skip::Empty);
    }
    Ok(Inbound {
        team,
        channel,
        is_dm,
        user,
        text,
        ts: m.origin.ts.0.clone(),
        thread_ts,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn bot() -> BotIdentity {
        BotIdentity {
            user_id: "UBOT".into(),
            bot_id: Some("BBOT".into()),
            team_id: "T1".into(),
        }
    }

    fn callback(event: Value) -> SlackPushEventCallback {
        serde_json::from_value(json!({
            "team_id": "T1", "api_app_id": "A1", "event": event, "type": "event_callback",
            "event_id": "Ev1", "event_time": 1700000000,
        }))
        .unwrap()
    }

    fn dm(user: &str, text: &str) -> Value {
        json!({"type": "message", "channel": "D1", "channel_type": "im", "user": user, "text": text, "ts": "1.000001"})
    }

    #[test]
    fn a_dm_is_a_turn_in_the_dm_conversation() {
        let got = classify(
            &callback(dm("UALICE", "hello")),
            &bot(),
            &ActiveThreads::new(10),
        )
        .unwrap();
        assert_eq!(got.user, "UALICE");
        assert_eq!(got.conversation(), "slack:T1:D1");
        assert_eq!(got.reply_thread(), "1.000001");
        assert!(got.is_dm);
    }

    #[test]
    fn a_mention_starts_a_thread_conversation_and_replies_there_follow() {
        let threads = ActiveThreads::new(10);
        let mention = json!({"type": "app_mention", "channel": "C1", "user": "UALICE", "text": "<@UBOT> summarise", "ts": "5.000001"});
        let got = classify(&callback(mention), &bot(), &threads).unwrap();
        assert_eq!(got.text, "summarise");
        assert_eq!(got.conversation(), "slack:T1:C1:5.000001");
        let reply = json!({"type": "message", "channel": "C1", "channel_type": "channel", "user": "UBOB", "text": "and more", "ts": "5.000009", "thread_ts": "5.000001"});
        let got = classify(&callback(reply), &bot(), &threads).unwrap();
        assert_eq!(
            (got.user.as_str(), got.conversation()),
            ("UBOB", "slack:T1:C1:5.000001".to_owned()),
            "the sender's own agent, same thread"
        );
    }

    #[test]
    fn channel_chatter_and_mention_twins_are_not_turns() {
        let threads = ActiveThreads::new(10);
        let chatter = json!({"type": "message", "channel": "C1", "channel_type": "channel", "user": "UBOB", "text": "lunch?", "ts": "6.1"});
        assert_eq!(
            classify(&callback(chatter), &bot(), &threads),
            Err(Skip::NotForUs)
        );
        let twin = json!({"type": "message", "channel": "C1", "channel_type": "channel", "user": "UBOB", "text": "<@UBOT> hi", "ts": "6.2"});
        assert_eq!(
            classify(&callback(twin), &bot(), &threads),
            Err(Skip::MentionTwin)
        );
    }

    #[test]
    fn bots_including_ourselves_are_ignored() {
        let threads = ActiveThreads::new(10);
        let ours = json!({"type": "message", "channel": "D1", "channel_type": "im", "bot_id": "BBOT", "text": "reply", "ts": "1.2"});
        assert_eq!(
            classify(&callback(ours), &bot(), &threads),
            Err(Skip::OwnMessage)
        );
        let other = json!({"type": "message", "subtype": "bot_message", "channel": "D1", "channel_type": "im", "bot_id": "BX", "text": "x", "ts": "1.3"});
        assert_eq!(
            classify(&callback(other), &bot(), &threads),
            Err(Skip::OtherBot)
        );
        let as_user = json!({"type": "message", "channel": "D1", "channel_type": "im", "user": "UBOT", "text": "x", "ts": "1.4"});
        assert_eq!(
            classify(&callback(as_user), &bot(), &threads),
            Err(Skip::OwnMessage)
        );
    }

    #[test]
    fn edits_empty_messages_and_other_events_are_skipped_with_a_label() {
        let threads = ActiveThreads::new(10);
        let edit = json!({"type": "message", "subtype": "message_changed", "channel": "D1", "ts": "1.5", "hidden": true});
        assert_eq!(
            classify(&callback(edit), &bot(), &threads),
            Err(Skip::Subtype("message_changed".into()))
        );
        assert_eq!(
            classify(&callback(dm("UALICE", "   ")), &bot(), &threads),
            Err(Skip::Empty)
        );
        let odd = json!({"type": "brand_new_event", "whatever": 1});
        assert_eq!(
            classify(&callback(odd), &bot(), &threads),
            Err(Skip::Unhandled("brand_new_event".into()))
        );
    }

    #[test]
    fn active_threads_are_bounded() {
        let t = ActiveThreads::new(2);
        t.add("C", "1");
        t.add("C", "2");
        t.add("C", "3");
        assert!(!t.contains("C", "1"));
        assert!(t.contains("C", "3"));
    }
}
