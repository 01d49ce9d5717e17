//! Rate-limit pacing: keeps this container under Kustomer's per-org budget instead of
//! learning it from 429s. Every response's `x-ratelimit-remaining` / `x-ratelimit-reset`
//! updates a local budget; each request reserves one unit before it starts. When the
//! budget runs low the requests are spread over the time left in the window, and at
//! zero they wait for the reset. An optional ceiling (requests per minute) spaces
//! requests for orgs that share their budget with other integrations.
//!
//! After a wait the pacer sends one request first (a probe) and the others when its
//! answer allows: after a spent window, and after Kustomer's `Retry-After`. Closing the
//! pacer ([`Pacer::close`]) starts nothing more: how a stopped pipeline lets the requests
//! on the wire finish and nothing else begin.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::kustomer::{RateLimit, MAX_ADVERTISED_WAIT};

/// Without a usable reset time, an exhausted budget waits this long, then one request
/// probes whether Kustomer takes requests again.
const UNKNOWN_RESET_WAIT: Duration = Duration::from_secs(1);
/// Resets that differ by less than this belong to the same window (answers are rounded).
const SAME_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Pacer {
    /// Requests that may be in flight at once: started but not yet counted by Kustomer.
    concurrency: i64,
    /// Minimum spacing between request starts, from the per-minute ceiling.
    interval: Option<Duration>,
    state: Mutex<State>,
    /// Wakes the waiters when what they wait on changes: an answer changed the budget (a
    /// probe's answer can reopen the flow long before the waiters' own wake-up time), a
    /// place was given back, the pacer was closed.
    changed: tokio::sync::Notify,
    /// Set for good by [`Pacer::close`].
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Requests left in the current window, as far as we know (reservations deducted).
    remaining: Option<i64>,
    limit: Option<u64>,
    reset_at: Option<Instant>,
    last_start: Option<Instant>,
    in_flight: i64,
    /// After an exhausted window, one request probes; its answer (with or without
    /// headers) tells whether the budget is back. `probing`: the probe is due or out;
    /// `probe_out`: it has started.
    probing: bool,
    probe_out: bool,
    /// When the longest `Retry-After` heard ends: the first request after it probes.
    /// Requests before it are not held (the throttled ones wait it out themselves, and a
    /// hostile `Retry-After` must not stall every other event for a minute).
    probe_after: Option<Instant>,
}

/// One request's place in the budget, from [`Pacer::before_request`] to its answer.
/// Dropped without [`Reservation::answered`] (the request was cancelled or never sent),
/// it still gives its in-flight place back: a lost place would shrink the budget for good.
#[derive(Debug)]
pub struct Reservation<'a> {
    pacer: &'a Pacer,
    /// How long the request waited for its turn.
    pub waited: Duration,
    open: bool,
    /// This request is the probe of an exhausted window.
    probe: bool,
}

impl Reservation<'_> {
    /// Learns from the request's answer (also called, with no headers, when none came back).
    pub fn answered(mut self, rate_limit: &RateLimit) {
        self.open = false;
        let mut state = self.pacer.state();
        state.in_flight = (state.in_flight - 1).max(0);
        state.learn(rate_limit, Instant::now(), self.probe);
        drop(state);
        self.pacer.changed.notify_waiters();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.open {
            let mut state = self.pacer.state();
            state.in_flight = (state.in_flight - 1).max(0);
            if self.probe {
                // The probe never got an answer: the next request probes instead.
                state.probe_out = false;
            }
            drop(state);
            self.pacer.changed.notify_waiters();
        }
    }
}

/// `at + wait`, never past [`MAX_ADVERTISED_WAIT`] and never overflowing.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait.min(MAX_ADVERTISED_WAIT)).unwrap_or(at)
}

impl Pacer {
    pub fn new(concurrency: usize, max_per_minute: Option<u32>) -> Self {
        Pacer {
            concurrency: i64::try_from(concurrency.max(1)).unwrap_or(i64::MAX),
            interval: max_per_minute
                .filter(|rpm| *rpm > 0)
                .map(|rpm| Duration::from_secs(60) / rpm),
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Starts no request from now on, for good (the pipeline was stopped): waiters stay
    /// waiting until they are dropped. Requests already started finish.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Returns once the pacer is closed and no request it let start is still out (each was
    /// answered, or dropped): what a waiter parked before its next request is waiting for
    /// will then never come.
    pub async fn closed_and_idle(&self) {
        loop {
            let changed = self.changed.notified();
            if self.is_closed() && self.state().in_flight == 0 {
                return;
            }
            changed.await;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request may start, and reserves its place in the budget. Every wait
    /// is bounded: at most [`MAX_ADVERTISED_WAIT`] at a time, and an exhausted budget with
    /// no known reset is probed after [`UNKNOWN_RESET_WAIT`].
    pub async fn before_request(&self) -> Reservation<'_> {
        let started = Instant::now();
        loop {
            // Registered before looking, so a change that lands meanwhile is not missed.
            let changed = self.changed.notified();
            if self.is_closed() {
                changed.await;
                continue;
            }
            let wait = {
                let mut state = self.state();
                let now = Instant::now();
                let earliest = state.earliest_start(now, self.interval, self.concurrency);
                if earliest <= now {
                    if let Some(remaining) = state.remaining.as_mut() {
                        *remaining -= 1;
                    }
                    state.last_start = Some(now);
                    state.in_flight += 1;
                    let probe = state.probing && !state.probe_out;
                    state.probe_out |= probe;
                    return Reservation {
                        pacer: self,
                        waited: started.elapsed(),
                        open: true,
                        probe,
                    };
                }
                earliest.saturating_duration_since(now)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.min(MAX_ADVERTISED_WAIT)) => {}
                _ = changed => {}
            }
        }
    }
}

impl State {
    /// When the next request may start (`now` when it may start at once).
    fn earliest_start(
        &mut self,
        now: Instant,
        interval: Option<Duration>,
        concurrency: i64,
    ) -> Instant {
        if self.reset_at.is_some_and(|reset| now >= reset) {
            self.reset_at = None;
            // After an exhausted window one request probes first: a wrong reset must not
            // let every waiter into a wall of 429s. Otherwise the budget is unknown until
            // the next answer.
            let exhausted = self.remaining.is_some_and(|remaining| remaining <= 0);
            self.remaining = exhausted.then_some(1);
            self.probing = exhausted;
            self.probe_out = false;
        }
        if self.probe_after.is_some_and(|after| now >= after) {
            self.probe_after = None;
            if !self.probing {
                // Retry-After has run out: as after a spent window, one request goes first
                // and the others wait for its answer (or the bounded wait of an unknown
                // reset). The window's reset is dropped with the budget: kept, it would
                // read one request left as a budget to spread over the rest of the window.
                self.probing = true;
                self.probe_out = false;
                self.remaining = Some(self.remaining.map_or(1, |remaining| remaining.min(1)));
                self.reset_at = None;
            }
        }
        let mut earliest = now;
        if let (Some(interval), Some(last)) = (interval, self.last_start) {
            earliest = earliest.max(later(last, interval));
        }
        match self.remaining {
            Some(remaining) if remaining <= 0 => {
                let reset = *self
                    .reset_at
                    .get_or_insert_with(|| later(now, UNKNOWN_RESET_WAIT));
                earliest = earliest.max(reset);
            }
            Some(remaining) => {
                if let (Some(reset), Some(last)) = (self.reset_at, self.last_start) {
                    // Low budget: spread what is left over the rest of the window.
                    let tenth = i64::try_from(self.limit.unwrap_or(0) / 10).unwrap_or(i64::MAX);
                    if remaining <= concurrency.max(tenth) {
                        let shares = u32::try_from(remaining)
                            .unwrap_or(u32::MAX)
                            .saturating_add(1);
                        let spacing = reset.saturating_duration_since(now) / shares;
                        earliest = earliest.max(later(last, spacing));
                    }
                }
            }
            None => {}
        }
        earliest
    }

    /// Learns from one answer. Answers arrive out of order: one from an older window
    /// (its reset is earlier than the one we know) never overrides a newer window. The
    /// probe's answer always starts a new window: it is the freshest word on the budget
    /// (the reset the waiters assumed meanwhile is only a guess).
    ///
    /// A `Retry-After` makes the first request after it a probe ([`State::probe_after`]);
    /// when the probe itself is asked to wait, nobody starts until that wait is over.
    fn learn(&mut self, rate_limit: &RateLimit, now: Instant, probe_answered: bool) {
        if probe_answered {
            self.probing = false;
            self.probe_out = false;
        }
        if let Some(reported) = rate_limit.remaining {
            if !self.learn_budget(rate_limit, reported, now, probe_answered) {
                return; // an older window's answer, overtaken by newer ones
            }
        } else if probe_answered {
            // Kustomer answered the probe without a budget: stop pacing on it.
            self.remaining = None;
        }
        if let Some(wait) = rate_limit.retry_after {
            let until = later(now, wait);
            if probe_answered {
                // Nobody starts before the wait is over; then one probes again. The wait
                // replaces the reset the waiters guessed, and is not stretched to the
                // window's reset: the budget may well be back sooner.
                self.remaining = Some(0);
                self.reset_at = Some(until);
            } else {
                self.probe_after = Some(self.probe_after.map_or(until, |after| after.max(until)));
            }
        }
    }

    /// Learns the budget an answer reports; `false` when the answer is of an older window.
    fn learn_budget(
        &mut self,
        rate_limit: &RateLimit,
        reported: u64,
        now: Instant,
        probe_answered: bool,
    ) -> bool {
        let reported = i64::try_from(reported).unwrap_or(i64::MAX);
        let reset_at = rate_limit.reset.map(|reset| later(now, reset));
        let new_window = match (self.reset_at, reset_at) {
            _ if probe_answered => true,
            (None, _) => true,
            (Some(current), Some(reported)) if later(reported, SAME_WINDOW) < current => {
                return false;
            }
            (Some(current), Some(reported)) => reported > later(current, SAME_WINDOW),
            (Some(_), None) => false,
        };
        self.limit = rate_limit.limit.or(self.limit);
        self.remaining = Some(if new_window {
            // Requests already started may not be counted in `reported` yet.
            reported.saturating_sub(self.in_flight)
        } else {
            self.remaining.map_or(reported, |known| known.min(reported))
        });
        if new_window || self.reset_at.is_none() {
            self.reset_at = reset_at;
        }
        true
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

    /// One request through the pacer: how long it waited; its answer carries `answer`.
    async fn request(pacer: &Pacer, answer: &RateLimit) -> Duration {
        let reservation = pacer.before_request().await;
        let waited = reservation.waited;
        reservation.answered(answer);
        waited
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_reset_when_the_budget_is_spent() {
        let pacer = Pacer::new(1, None);
        assert_eq!(request(&pacer, &rate(0, 30)).await, Duration::ZERO);
        let waited = pacer.before_request().await.waited;
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn spreads_a_low_budget_over_the_window() {
        let pacer = Pacer::new(1, None);
        request(&pacer, &rate(1, 10)).await;
        // One left, ten seconds to go: the next request is spaced, not sent at once.
        let waited = pacer.before_request().await.waited;
        assert!(waited >= Duration::from_secs(4), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ceiling_spaces_requests() {
        let pacer = Pacer::new(8, Some(60));
        request(&pacer, &RateLimit::default()).await;
        assert!(pacer.before_request().await.waited >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn plenty_of_budget_means_no_wait() {
        let pacer = Pacer::new(8, None);
        for _ in 0..5 {
            assert_eq!(request(&pacer, &rate(900, 60)).await, Duration::ZERO);
        }
    }

    /// Issue 8, fault 4: a spent budget without a reset header used to block for good.
    #[tokio::test(start_paused = true)]
    async fn spent_budget_without_reset_probes_after_a_bounded_wait() {
        let pacer = Pacer::new(4, None);
        let spent = RateLimit {
            remaining: Some(0),
            ..RateLimit::default()
        };
        request(&pacer, &spent).await;
        let probe = pacer.before_request().await;
        assert_eq!(probe.waited, UNKNOWN_RESET_WAIT);
        // While the probe is out nobody else starts; its header-less answer frees the flow.
        let others = tokio::time::timeout(Duration::from_millis(500), pacer.before_request());
        assert!(
            others.await.is_err(),
            "a second request started beside the probe"
        );
        probe.answered(&RateLimit::default());
        assert_eq!(pacer.before_request().await.waited, Duration::ZERO);
    }

    /// After a spent window, the probe's answer reopens the flow at once: the waiters that
    /// queued behind the probe (assuming a 1 s wait) start as soon as it says the budget is
    /// back, instead of one probe per second.
    #[tokio::test(start_paused = true)]
    async fn a_probe_that_finds_budget_reopens_the_flow_at_once() {
        let pacer = std::sync::Arc::new(Pacer::new(8, None));
        request(&pacer, &rate(0, 1)).await;
        let probe = pacer.before_request().await;
        assert!(probe.waited >= Duration::from_secs(1), "{:?}", probe.waited);
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move { pacer.before_request().await.waited })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answered_at = Instant::now();
        probe.answered(&RateLimit {
            limit: Some(100),
            ..rate(90, 1)
        });
        for waiter in waiters {
            let waited = waiter.await.unwrap();
            assert!(
                Instant::now() <= later(answered_at, Duration::from_millis(50)),
                "a waiter started {waited:?} after queueing, long after the probe's answer"
            );
        }
    }

    /// Issue 8, fault 4 with a reset in epoch milliseconds: read as unknown, not years.
    #[tokio::test(start_paused = true)]
    async fn spent_budget_keeps_probing_while_kustomer_says_zero() {
        let pacer = Pacer::new(1, None);
        let spent = RateLimit {
            remaining: Some(0),
            ..RateLimit::default()
        };
        for _ in 0..5 {
            let waited = request(&pacer, &spent).await;
            assert!(waited <= UNKNOWN_RESET_WAIT, "{waited:?}");
        }
    }

    /// Issue 8, fault 5: a late 429 of an older window must not freeze the newer one.
    #[tokio::test(start_paused = true)]
    async fn an_older_windows_answer_never_overrides_a_newer_one() {
        let pacer = Pacer::new(8, None);
        let late = pacer.before_request().await;
        request(&pacer, &rate(290, 30)).await;
        late.answered(&RateLimit {
            limit: Some(300),
            remaining: Some(0),
            reset: Some(Duration::from_secs(1)),
            retry_after: Some(Duration::from_secs(1)),
        });
        assert_eq!(pacer.before_request().await.waited, Duration::ZERO);
    }

    /// Issue 8, fault 3: `remaining` near u32::MAX used to wrap a divisor to zero.
    #[tokio::test(start_paused = true)]
    async fn huge_counts_neither_overflow_nor_divide_by_zero() {
        let pacer = Pacer::new(8, None);
        let huge = RateLimit {
            limit: Some(u64::MAX),
            remaining: Some(u64::MAX),
            reset: Some(MAX_ADVERTISED_WAIT),
            retry_after: None,
        };
        request(&pacer, &huge).await;
        request(
            &pacer,
            &RateLimit {
                remaining: Some(4_294_967_295),
                ..huge
            },
        )
        .await;
        assert!(pacer.before_request().await.waited <= MAX_ADVERTISED_WAIT);
    }

    fn retry_after(seconds: u64) -> RateLimit {
        RateLimit {
            retry_after: Some(Duration::from_secs(seconds)),
            ..RateLimit::default()
        }
    }

    /// Issue 17, item 6: after a Retry-After, the first request goes alone; the others
    /// start when its answer says the flow is back. During the wait nothing is held.
    #[tokio::test(start_paused = true)]
    async fn after_a_retry_after_one_request_probes_first() {
        let pacer = std::sync::Arc::new(Pacer::new(8, None));
        let throttled: Vec<_> =
            futures_util::future::join_all((0..8).map(|_| pacer.before_request())).await;
        for reservation in throttled {
            reservation.answered(&retry_after(2));
        }
        // Another event during the wait is not held back.
        assert_eq!(request(&pacer, &RateLimit::default()).await, Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let probe = pacer.before_request().await;
        assert_eq!(probe.waited, Duration::ZERO);
        let others: Vec<_> = (0..7)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move { pacer.before_request().await.waited })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            others.iter().all(|other| !other.is_finished()),
            "a request started beside the probe"
        );
        probe.answered(&RateLimit::default());
        for other in others {
            let waited = other.await.unwrap();
            assert!(waited < Duration::from_millis(350), "{waited:?}");
        }
    }

    /// A probe that is asked to wait again holds everyone until that wait is over, and
    /// no longer: its wait replaces the reset the others guessed while it was out.
    #[tokio::test(start_paused = true)]
    async fn a_probe_asked_to_wait_again_holds_everyone_for_that_wait() {
        let pacer = std::sync::Arc::new(Pacer::new(8, None));
        request(&pacer, &retry_after(1)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let probe = pacer.before_request().await;
        let waiter = {
            let pacer = pacer.clone();
            tokio::spawn(async move { pacer.before_request().await.waited })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        probe.answered(&retry_after(3));
        let waited = waiter.await.unwrap();
        assert!(waited >= Duration::from_millis(3_100), "{waited:?}");
        let probe = pacer.before_request().await;
        let waiter = {
            let pacer = pacer.clone();
            tokio::spawn(async move { pacer.before_request().await.waited })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        probe.answered(&retry_after(0));
        // Not the 1 s the waiter guessed for an unknown reset: the probe said "now".
        assert!(waiter.await.unwrap() <= Duration::from_millis(150));
    }

    /// A 429 asking for 1 s, in a window of 20 s with `remaining` left.
    fn throttled(remaining: u64) -> RateLimit {
        RateLimit {
            retry_after: Some(Duration::from_secs(1)),
            ..rate(remaining, 20)
        }
    }

    /// Inside a window with plenty left, one request is throttled for 1 s: the request
    /// that starts after that wait (the probe).
    async fn probe_inside_a_window(pacer: &Pacer) -> Reservation<'_> {
        request(pacer, &rate(500, 20)).await;
        request(pacer, &throttled(499)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        pacer.before_request().await
    }

    /// A probe asked to wait 1 s holds the others 1 s, even when its answer reports a
    /// window that resets much later (a 429 storm inside a known budget once held every
    /// request for up to the window's 20 s per probe).
    #[tokio::test(start_paused = true)]
    async fn a_probe_asked_to_wait_holds_for_that_wait_not_the_window() {
        let pacer = Pacer::new(8, None);
        let probe = probe_inside_a_window(&pacer).await;
        probe.answered(&throttled(498));
        let waited = pacer.before_request().await.waited;
        assert!(
            (Duration::from_secs(1)..Duration::from_secs(2)).contains(&waited),
            "{waited:?}"
        );
    }

    /// Inside a known window with plenty left, the probe after a Retry-After goes at the
    /// end of the wait, and its answer reopens the flow at once: one request left for the
    /// probe is not a low budget to spread over the window (that spacing held the probe
    /// for half the window's 20 s).
    #[tokio::test(start_paused = true)]
    async fn the_probe_after_a_retry_after_is_not_spread_over_the_window() {
        let pacer = Pacer::new(8, None);
        let probe = probe_inside_a_window(&pacer).await;
        assert_eq!(probe.waited, Duration::ZERO);
        probe.answered(&rate(498, 19));
        assert_eq!(pacer.before_request().await.waited, Duration::ZERO);
    }

    /// A closed pacer starts nothing more; it is idle once the requests out are answered.
    #[tokio::test(start_paused = true)]
    async fn a_closed_pacer_starts_nothing_and_then_is_idle() {
        let pacer = Pacer::new(4, None);
        let out = pacer.before_request().await;
        pacer.close();
        let next = tokio::time::timeout(Duration::from_secs(120), pacer.before_request());
        assert!(next.await.is_err(), "a request started after close");
        let idle = tokio::time::timeout(Duration::from_secs(1), pacer.closed_and_idle());
        assert!(idle.await.is_err(), "idle while a request is out");
        out.answered(&RateLimit::default());
        pacer.closed_and_idle().await;
    }

    /// A cancelled request gives its in-flight place back; otherwise every new window
    /// would start smaller and smaller until nothing is ever sent again.
    #[tokio::test(start_paused = true)]
    async fn dropped_reservations_are_not_counted_in_flight() {
        let pacer = Pacer::new(8, None);
        for _ in 0..100 {
            drop(pacer.before_request().await);
        }
        request(&pacer, &rate(5, 30)).await;
        assert_eq!(pacer.state().remaining, Some(5));
    }
}
