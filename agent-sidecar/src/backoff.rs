//! The one retry schedule: capped exponential backoff with full jitter, so
//! ten thousand sidecars that lost the same controller do not come back in
//! lockstep.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next wait: uniform in [min, min·2^attempt] capped at max.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if ceiling <= self.min {
            return self.min;
        }
        let span = (ceiling - self.min).as_millis() as u64;
        self.min + Duration::from_millis(rand::rng().random_range(0..=span))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_but_never_pass_the_cap_or_drop_below_the_floor() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut b = Backoff::new(min, max);
        let mut ceiling_seen = Duration::ZERO;
        for _ in 0..50 {
            let d = b.next_delay();
            assert!(d >= min && d <= max, "{d:?}");
            ceiling_seen = ceiling_seen.max(d);
        }
        assert!(
            ceiling_seen > Duration::from_secs(1),
            "jitter never reached the upper range: {ceiling_seen:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }
}
