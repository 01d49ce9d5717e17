//! The retry policy: how long to wait before the next attempt of a throttled or
//! transiently failed event.

use std::time::Duration;

use crate::kustomer::MAX_ADVERTISED_WAIT;

/// First retry waits up to this long (full jitter), doubling each time.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Retry wait: full jitter over an exponential window, but never less than Kustomer asked.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let window = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let jittered = window.mul_f64(fastrand::f64());
    match retry_after {
        Some(asked) => asked
            .min(MAX_ADVERTISED_WAIT)
            .saturating_add(jittered.min(Duration::from_millis(250))),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_honours_retry_after_and_caps() {
        for attempt in 1..20 {
            assert!(backoff(attempt, None) <= BACKOFF_CAP);
        }
        let asked = Duration::from_secs(3);
        let wait = backoff(1, Some(asked));
        assert!(wait >= asked && wait <= asked + Duration::from_millis(250));
    }
}
