//! The reply target a Slack turn carries through the mesh: where the reply
//! goes (channel, thread, person) and the Slack message it is being written
//! into, sealed with a MAC so a controller that picks the turn up after a
//! crash or failover can trust it.
//!
//! The sidecar holds the target and hands it back in `Hello.pending` when it
//! reconnects; it is opaque to the sidecar, and a sidecar that forges or
//! edits one (to steer a reply into another channel) is refused here. The
//! key is derived from the Slack bot token: every replica has it and no
//! sidecar ever does, so any leader can open what another leader sealed
//! (docs/decisions.md, "Reply targets are sealed with the bot token").

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::reply::ReplyPlace;

/// What the target says: where the reply goes and, once the message exists,
/// its ts (the message a resumed reply continues in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackTarget {
    pub place: ReplyPlace,
    /// The reply's first message; `None` when Slack refused to create it
    /// before the turn started (a resumed reply then starts a new one).
    pub ts: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("not a slack reply target")]
    NotSlack,
    #[error("reply target is malformed")]
    Malformed,
    #[error("reply target's seal does not match (forged or altered)")]
    Forged,
}

impl TargetError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotSlack => "not_slack",
            Self::Malformed => "malformed",
            Self::Forged => "forged",
        }
    }
}

/// Marks the bytes as ours; other requesters (the Gateway) use their own.
const PREFIX: &[u8] = b"slack.v1:";
/// Domain separation: this key seals reply targets and nothing else.
const KEY_LABEL: &[u8] = b"clawswarm reply target v1";

#[derive(Serialize, Deserialize)]
struct Sealed {
    /// The target as JSON; the MAC covers exactly these bytes.
    body: String,
    mac: String,
}

/// Seals and opens reply targets; prints without its key.
#[derive(Clone)]
pub struct TargetSeal {
    key: [u8; 32],
}

impl std::fmt::Debug for TargetSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSeal").finish_non_exhaustive()
    }
}

impl TargetSeal {
    /// The seal every replica sharing this bot token agrees on.
    pub fn from_bot_token(token: &str) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(KEY_LABEL);
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(body);
        mac
    }

    pub fn seal(&self, target: &SlackTarget) -> Vec<u8> {
        // Serializing plain strings and bools cannot fail.
        let body = serde_json::to_string(target).unwrap_or_default();
        let mac = hex::encode(self.mac(body.as_bytes()).finalize().into_bytes());
        let sealed = serde_json::to_vec(&Sealed { body, mac }).unwrap_or_default();
        [PREFIX, sealed.as_slice()].concat()
    }

    pub fn open(&self, bytes: &[u8]) -> Result<SlackTarget, TargetError> {
        let rest = bytes.strip_prefix(PREFIX).ok_or(TargetError::NotSlack)?;
        let sealed: Sealed = serde_json::from_slice(rest).map_err(|_| TargetError::Malformed)?;
        let tag = hex::decode(&sealed.mac).map_err(|_| TargetError::Malformed)?;
        self.mac(sealed.body.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| TargetError::Forged)?;
        serde_json::from_str(&sealed.body).map_err(|_| TargetError::Malformed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target() -> SlackTarget {
        SlackTarget {
            place: ReplyPlace {
                channel: "D0ALICE".into(),
                thread_ts: "1700000000.000100".into(),
                user: "U0ALICE".into(),
                team: "T0".into(),
                is_dm: true,
            },
            ts: Some("1700000000.000200".into()),
        }
    }

    #[test]
    fn a_sealed_target_opens_to_itself_on_any_replica_with_the_same_token() {
        let sealed = TargetSeal::from_bot_token("xoxb-1").seal(&target());
        let other_replica = TargetSeal::from_bot_token("xoxb-1");
        assert_eq!(other_replica.open(&sealed).unwrap(), target());
    }

    #[test]
    fn a_target_sealed_under_another_token_is_forged() {
        let sealed = TargetSeal::from_bot_token("xoxb-other").seal(&target());
        assert_eq!(
            TargetSeal::from_bot_token("xoxb-1").open(&sealed),
            Err(TargetError::Forged)
        );
    }

    #[test]
    fn a_target_steered_into_another_channel_is_forged() {
        let seal = TargetSeal::from_bot_token("xoxb-1");
        let sealed = String::from_utf8(seal.seal(&target())).unwrap();
        let steered = sealed.replace("D0ALICE", "C0GENERAL");
        assert_ne!(steered, sealed);
        assert_eq!(seal.open(steered.as_bytes()), Err(TargetError::Forged));
    }

    #[test]
    fn other_requesters_and_garbage_are_told_apart() {
        let seal = TargetSeal::from_bot_token("xoxb-1");
        assert_eq!(seal.open(b"gateway"), Err(TargetError::NotSlack));
        assert_eq!(seal.open(b""), Err(TargetError::NotSlack));
        assert_eq!(seal.open(b"slack.v1:{"), Err(TargetError::Malformed));
        let bad_hex = br#"slack.v1:{"body":"{}","mac":"zz"}"#;
        assert_eq!(seal.open(bad_hex), Err(TargetError::Malformed));
    }

    #[test]
    fn the_key_does_not_print() {
        let shown = format!("{:?}", TargetSeal::from_bot_token("xoxb-secret"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
