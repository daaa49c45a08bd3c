//! When to renew: Linkerd's schedule, so a fleet of sidecars started together
//! does not renew together, and a missed renewal still leaves ~30 % of the
//! lifetime to retry in.

use std::time::{Duration, SystemTime};

use rand::Rng as _;

const REFRESH_AT: f64 = 0.7;
const MAX_JITTER: f64 = 0.1;

/// Time to wait before renewing: 70 % of the lifetime after `not_before`,
/// minus up to 10 % of the lifetime at random, measured from `now`; clamped
/// to `[min, max]`; `min` when that moment has already passed.
pub fn refresh_delay(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    min: Duration,
    max: Duration,
) -> Duration {
    let jitter = rand::rng().random_range(0.0..=MAX_JITTER);
    delay_with_jitter(not_before, not_after, now, min, max, jitter)
}

pub(crate) fn delay_with_jitter(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    min: Duration,
    max: Duration,
    jitter: f64,
) -> Duration {
    let (min, max) = if min <= max { (min, max) } else { (max, min) };
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    if lifetime.is_zero() {
        return min;
    }
    let offset = lifetime
        .mul_f64(REFRESH_AT)
        .saturating_sub(lifetime.mul_f64(jitter.clamp(0.0, MAX_JITTER)));
    let Some(at) = not_before.checked_add(offset) else {
        return max;
    };
    match at.duration_since(now) {
        Ok(d) if !d.is_zero() => d.clamp(min, max),
        _ => min,
    }
}

#[cfg(test)]
mod tests;
