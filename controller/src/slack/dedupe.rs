//! Slack retries an event it thinks we missed (no ack within 3 s, or an
//! error), with the same top-level `event_id`. Remember ids for a while so a
//! retry does not start a second turn. Bounded in size and age: Slack's last
//! retry comes about five minutes after the first delivery.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use tokio::time::Instant;

pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_CAPACITY: usize = 50_000;

pub struct Dedupe {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    at: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

impl Dedupe {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// True the first time `id` is seen within the TTL; false for a repeat.
    pub fn first_sighting(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        seen.expire(now, self.ttl);
        if seen.at.contains_key(id) {
            return false;
        }
        while seen.at.len() >= self.capacity {
            let Some((old, at)) = seen.order.pop_front() else {
                break;
            };
            if seen.at.get(&old) == Some(&at) {
                seen.at.remove(&old);
            }
        }
        seen.at.insert(id.to_owned(), now);
        seen.order.push_back((id.to_owned(), now));
        true
    }

    /// Forget `id` so Slack's retry is handled (we could not take the work).
    pub fn forget(&self, id: &str) {
        let mut seen = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        seen.at.remove(id);
        // The stale order entry is skipped on expiry because `at` no longer matches.
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .at
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Dedupe {
    fn default() -> Self {
        Self::new(DEFAULT_TTL, DEFAULT_CAPACITY)
    }
}

impl Seen {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((id, at)) = self.order.front() {
            if now.duration_since(*at) < ttl {
                break;
            }
            if self.at.get(id) == Some(at) {
                self.at.remove(id);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_retry_within_the_ttl_is_a_duplicate() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        assert!(d.first_sighting("Ev1"));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!d.first_sighting("Ev1"));
        assert!(d.first_sighting("Ev2"));
    }

    #[tokio::test(start_paused = true)]
    async fn ids_expire_after_the_ttl() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        assert!(d.first_sighting("Ev1"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(d.first_sighting("Ev1"));
        assert_eq!(d.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_ids_go_first_when_full() {
        let d = Dedupe::new(Duration::from_secs(60), 2);
        assert!(d.first_sighting("a"));
        assert!(d.first_sighting("b"));
        assert!(d.first_sighting("c"));
        assert_eq!(d.len(), 2);
        assert!(d.first_sighting("a"), "a was evicted to make room");
        assert!(!d.first_sighting("c"));
    }

    #[tokio::test(start_paused = true)]
    async fn forgotten_ids_are_handled_again() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        assert!(d.first_sighting("Ev1"));
        d.forget("Ev1");
        assert!(d.first_sighting("Ev1"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            d.first_sighting("Ev1"),
            "the re-added id expires on its own clock"
        );
    }
}
