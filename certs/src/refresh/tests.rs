use std::time::{Duration, SystemTime};

use super::*;

const HOUR: Duration = Duration::from_secs(3600);
const MIN: Duration = Duration::from_secs(10);
const MAX: Duration = Duration::from_secs(48 * 3600);

fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

#[test]
fn renews_at_70_percent_without_jitter_and_60_percent_with_full_jitter() {
    let nb = start();
    let na = nb + 10 * HOUR;
    assert_eq!(delay_with_jitter(nb, na, nb, MIN, MAX, 0.0), 7 * HOUR);
    assert_eq!(delay_with_jitter(nb, na, nb, MIN, MAX, 0.1), 6 * HOUR);
    // Measured from now, not from not_before.
    assert_eq!(
        delay_with_jitter(nb, na, nb + 2 * HOUR, MIN, MAX, 0.0),
        5 * HOUR
    );
}

#[test]
fn random_delay_stays_between_60_and_70_percent_of_lifetime() {
    let nb = start();
    let na = nb + 24 * HOUR;
    for _ in 0..200 {
        let d = refresh_delay(nb, na, nb, MIN, MAX);
        assert!(d >= 24 * HOUR * 6 / 10 && d <= 24 * HOUR * 7 / 10, "{d:?}");
    }
}

#[test]
fn delay_is_clamped_to_min_and_max() {
    let nb = start();
    assert_eq!(
        refresh_delay(nb, nb + 1000 * HOUR, nb, MIN, MAX),
        MAX,
        "long lifetimes still renew within max"
    );
    assert_eq!(
        refresh_delay(nb, nb + Duration::from_secs(4), nb, MIN, MAX),
        MIN,
        "tiny lifetimes never spin"
    );
}

#[test]
fn past_refresh_point_or_expired_certificate_waits_min() {
    let nb = start();
    let na = nb + 24 * HOUR;
    assert_eq!(refresh_delay(nb, na, nb + 23 * HOUR, MIN, MAX), MIN);
    assert_eq!(refresh_delay(nb, na, na + HOUR, MIN, MAX), MIN);
    // A certificate whose not_after precedes not_before is treated as expired.
    assert_eq!(refresh_delay(na, nb, nb, MIN, MAX), MIN);
}

#[test]
fn swapped_bounds_do_not_panic() {
    let nb = start();
    let d = refresh_delay(nb, nb + 24 * HOUR, nb, MAX, MIN);
    assert!((MIN..=MAX).contains(&d));
}
