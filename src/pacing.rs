//! Rate-limit pacing: keeps this container under Kustomer's per-org budget instead of
//! learning it from 429s. Every response's `x-ratelimit-remaining` / `x-ratelimit-reset`
//! updates a local budget; each request reserves one unit before it starts. When the
//! budget runs low the requests are spread over the time left in the window, and at
//! zero they wait for the reset. An optional ceiling (requests per minute) spaces
//! requests for orgs that share their budget with other integrations.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::kustomer::RateLimit;

/// Without a reset time, an exhausted budget is retried after this long.
const UNKNOWN_RESET_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Pacer {
    /// Requests that may be in flight at once: started but not yet counted by Kustomer.
    concurrency: i64,
    /// Minimum spacing between request starts, from the per-minute ceiling.
    interval: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Requests left in the current window, as far as we know (reservations deducted).
    remaining: Option<i64>,
    limit: Option<u64>,
    reset_at: Option<Instant>,
    last_start: Option<Instant>,
    in_flight: i64,
}

impl Pacer {
    pub fn new(concurrency: usize, max_per_minute: Option<u32>) -> Self {
        Pacer {
            concurrency: concurrency.max(1) as i64,
            interval: max_per_minute
                .filter(|rpm| *rpm > 0)
                .map(|rpm| Duration::from_secs(60) / rpm),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request may start, and reserves it. Returns how long it waited.
    pub async fn before_request(&self) -> Duration {
        let started = Instant::now();
        loop {
            let wait = {
                let mut state = self.state();
                let now = Instant::now();
                if state.reset_at.is_some_and(|reset| now >= reset) {
                    // A new window: the budget is unknown until the next answer.
                    state.remaining = None;
                    state.reset_at = None;
                }
                let mut earliest = now;
                if let (Some(interval), Some(last)) = (self.interval, state.last_start) {
                    earliest = earliest.max(last + interval);
                }
                if let Some(remaining) = state.remaining {
                    if remaining <= 0 {
                        earliest = earliest.max(state.reset_at.unwrap_or(now + UNKNOWN_RESET_WAIT));
                    } else if let (Some(reset), Some(last)) = (state.reset_at, state.last_start) {
                        // Low budget: spread what is left over the rest of the window.
                        let low_water = self.concurrency.max(state.limit.unwrap_or(0) as i64 / 10);
                        if remaining <= low_water {
                            let spacing =
                                reset.saturating_duration_since(now) / (remaining as u32 + 1);
                            earliest = earliest.max(last + spacing);
                        }
                    }
                }
                if earliest <= now {
                    if let Some(remaining) = state.remaining.as_mut() {
                        *remaining -= 1;
                    }
                    state.last_start = Some(now);
                    state.in_flight += 1;
                    return started.elapsed();
                }
                earliest - now
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Learns from one answer (also called, with no headers, when none came back).
    pub fn after_response(&self, rate_limit: &RateLimit) {
        let mut state = self.state();
        state.in_flight = (state.in_flight - 1).max(0);
        let Some(reported) = rate_limit.remaining else {
            return;
        };
        let now = Instant::now();
        let reported = reported.min(i64::MAX as u64) as i64;
        let reset_at = rate_limit.reset.map(|reset| now + reset);
        let new_window = match (state.reset_at, reset_at) {
            (None, _) => true,
            (Some(current), Some(reported)) => reported > current + Duration::from_secs(1),
            (Some(_), None) => false,
        };
        state.limit = rate_limit.limit.or(state.limit);
        state.remaining = Some(if new_window {
            // Requests already started may not be counted in `reported` yet.
            reported - state.in_flight
        } else {
            state
                .remaining
                .map_or(reported, |known| known.min(reported))
        });
        if new_window || state.reset_at.is_none() {
            state.reset_at = reset_at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(remaining: u64, reset_secs: u64) -> RateLimit {
        RateLimit {
            limit: Some(10),
            remaining: Some(remaining),
            reset: Some(Duration::from_secs(reset_secs)),
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_reset_when_the_budget_is_spent() {
        let pacer = Pacer::new(1, None);
        assert_eq!(pacer.before_request().await, Duration::ZERO);
        pacer.after_response(&rate(0, 30));
        let waited = pacer.before_request().await;
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn spreads_a_low_budget_over_the_window() {
        let pacer = Pacer::new(1, None);
        pacer.before_request().await;
        pacer.after_response(&rate(1, 10));
        // One left, ten seconds to go: the next request is spaced, not sent at once.
        let waited = pacer.before_request().await;
        assert!(waited >= Duration::from_secs(4), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ceiling_spaces_requests() {
        let pacer = Pacer::new(8, Some(60));
        pacer.before_request().await;
        pacer.after_response(&RateLimit::default());
        assert!(pacer.before_request().await >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn plenty_of_budget_means_no_wait() {
        let pacer = Pacer::new(8, None);
        for _ in 0..5 {
            assert_eq!(pacer.before_request().await, Duration::ZERO);
            pacer.after_response(&rate(900, 60));
        }
    }
}
