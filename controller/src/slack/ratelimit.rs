//! Client-side pacing of Slack Web API calls, shared by every reply in flight.
//!
//! Slack's limits are per method per workspace (tiers), plus about one
//! message per second per channel for `chat.postMessage`. Waiting here before
//! a call costs nothing (more deltas accumulate, so appends get bigger)
//! whereas a 429 costs a round trip. When Slack does answer 429, the method
//! is paused for `Retry-After` for every caller, not only the one refused.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Slack's documented tiers, as (burst, calls per minute).
fn budget(method: &str) -> (f64, f64) {
    match method {
        // Tier 4 (100+/min).
        "chat.appendStream" | "users.info" | "auth.test" => (10.0, 100.0),
        // Tier 3 (50+/min).
        "chat.update" | "chat.postEphemeral" | "conversations.open" => (5.0, 50.0),
        // Tier 2 (20+/min).
        "chat.startStream"
        | "chat.stopStream"
        | "usergroups.users.list"
        | "assistant.threads.setStatus" => (5.0, 20.0),
        // ~1 message per second per channel, short bursts tolerated.
        "chat.postMessage" => (3.0, 60.0),
        _ => (5.0, 50.0),
    }
}

/// Methods limited per channel rather than per workspace.
fn per_channel(method: &str) -> bool {
    method == "chat.postMessage"
}

struct Bucket {
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

/// Longest pause accepted from a `Retry-After`; Slack's are seconds to a minute.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl RateLimiter {
    fn key(method: &str, channel: &str) -> (String, String) {
        (
            method.to_owned(),
            if per_channel(method) {
                channel.to_owned()
            } else {
                String::new()
            },
        )
    }

    /// How long the caller must wait before calling; takes a token when zero.
    fn reserve(&self, method: &str, channel: &str) -> Duration {
        let now = Instant::now();
        let (burst, per_min) = budget(method);
        let per_sec = per_min / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(Self::key(method, channel)).or_insert(Bucket {
            tokens: burst,
            last: now,
            paused_until: None,
        });
        if let Some(until) = b.paused_until {
            if until > now {
                return until - now;
            }
            b.paused_until = None;
        }
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - b.tokens) / per_sec)
        }
    }

    /// Wait for a call slot for `method` (in `channel` where that matters).
    pub async fn acquire(&self, method: &str, channel: &str) {
        loop {
            let wait = self.reserve(method, channel);
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Slack said 429: hold every caller of `method` for `retry_after`.
    pub fn pause(&self, method: &str, channel: &str, retry_after: Duration) {
        let until = Instant::now() + retry_after.min(MAX_RETRY_AFTER);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (burst, _) = budget(method);
        let b = buckets.entry(Self::key(method, channel)).or_insert(Bucket {
            tokens: burst,
            last: Instant::now(),
            paused_until: None,
        });
        b.paused_until = Some(b.paused_until.map_or(until, |u| u.max(until)));
        b.tokens = 0.0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_pass_then_calls_are_spaced_by_the_tier() {
        let l = RateLimiter::default();
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire("chat.startStream", "C1").await;
        }
        assert_eq!(Instant::now(), start, "the burst is immediate");
        l.acquire("chat.startStream", "C2").await;
        // Tier 2: 20 per minute, so the next slot is 3 s away.
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn post_message_is_paced_per_channel() {
        let l = RateLimiter::default();
        let start = Instant::now();
        for _ in 0..3 {
            l.acquire("chat.postMessage", "C1").await;
        }
        l.acquire("chat.postMessage", "C2").await;
        assert_eq!(Instant::now(), start, "another channel has its own budget");
        l.acquire("chat.postMessage", "C1").await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_caller_of_the_method() {
        let l = RateLimiter::default();
        l.pause("chat.update", "", Duration::from_secs(7));
        let start = Instant::now();
        l.acquire("chat.update", "C9").await;
        assert!(Instant::now() - start >= Duration::from_secs(7));
        let other = Instant::now();
        l.acquire("chat.appendStream", "C9").await;
        assert_eq!(Instant::now(), other, "other methods are not held");
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_retry_after_is_capped() {
        let l = RateLimiter::default();
        l.pause("chat.update", "", Duration::from_secs(86_400));
        let start = Instant::now();
        l.acquire("chat.update", "").await;
        assert!(Instant::now() - start <= MAX_RETRY_AFTER + Duration::from_secs(2));
    }
}
