//! Slack's Web API rate limits: per method (and for chat.postMessage, per
//! channel), enforced as token buckets so short bursts pass as they do on
//! slack.com while a sustained excess gets HTTP 429 with `Retry-After`.

use std::{collections::HashMap, time::Instant};

/// Slack's documented tiers (requests per minute, bursts tolerated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Tier1,
    Tier2,
    Tier3,
    Tier4,
    /// chat.postMessage: about one message per second per channel.
    PerChannelPerSecond,
}

impl Tier {
    /// (bucket capacity, tokens refilled per second).
    fn bucket(self) -> (f64, f64) {
        match self {
            Tier::Tier1 => (1.0, 1.0 / 60.0),
            Tier::Tier2 => (20.0, 20.0 / 60.0),
            Tier::Tier3 => (50.0, 50.0 / 60.0),
            Tier::Tier4 => (100.0, 100.0 / 60.0),
            // Slack allows short bursts over 1/s before it starts refusing.
            Tier::PerChannelPerSecond => (5.0, 1.0),
        }
    }

    /// The tier of each method the fake serves.
    pub fn of(method: &str) -> Tier {
        match method {
            "chat.postMessage" => Tier::PerChannelPerSecond,
            "chat.update"
            | "chat.postEphemeral"
            | "conversations.open"
            | "apps.connections.open" => Tier::Tier3,
            "chat.appendStream" | "users.info" => Tier::Tier4,
            "chat.startStream"
            | "chat.stopStream"
            | "usergroups.users.list"
            | "assistant.threads.setStatus" => Tier::Tier2,
            "auth.test" => Tier::Tier4,
            _ => Tier::Tier3,
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Default)]
pub(crate) struct Limiter {
    buckets: HashMap<(String, String), Bucket>,
}

impl Limiter {
    /// Take one token for `method` in `scope`; `Err(retry_after_secs)` when empty.
    pub fn take(&mut self, method: &str, scope: &str) -> Result<(), u64> {
        let tier = Tier::of(method);
        let (capacity, per_sec) = tier.bucket();
        let scope = if tier == Tier::PerChannelPerSecond {
            scope
        } else {
            ""
        };
        let now = Instant::now();
        let b = self
            .buckets
            .entry((method.to_owned(), scope.to_owned()))
            .or_insert(Bucket {
                tokens: capacity,
                last: now,
            });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_message_allows_a_burst_per_channel_then_refuses_with_retry_after() {
        let mut l = Limiter::default();
        for _ in 0..5 {
            assert!(l.take("chat.postMessage", "C1").is_ok());
        }
        assert_eq!(l.take("chat.postMessage", "C1"), Err(1));
        assert!(
            l.take("chat.postMessage", "C2").is_ok(),
            "another channel has its own budget"
        );
    }

    #[test]
    fn tier2_refuses_the_21st_call_in_a_minute() {
        let mut l = Limiter::default();
        for _ in 0..20 {
            assert!(l.take("chat.startStream", "C1").is_ok());
        }
        let retry = l
            .take("chat.startStream", "C2")
            .expect_err("tier 2 is per method, not per channel");
        assert!((1..=3).contains(&retry), "{retry}");
    }
}
