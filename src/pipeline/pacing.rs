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
//!
//! Requests start in the order they asked: waiters queue for their turn (a fair lock)
//! and only the first in line waits for the budget, so none can lose every round to
//! later ones. A request waits for the requests ahead of it and for its own slot only.
//!
//! A fleet: every container sees the organisation's budget, which all of them spend, so
//! each paces on the organisation's numbers, not on a share it would have to guess: half
//! of a window's budget may go at once, the other half no faster than an even line down to
//! zero at the reset. Every container holds the fleet to the same line, so a backlogged
//! fleet spends the whole budget and keeps delivering through the whole window, instead
//! of spending it in seconds and leaving every container's events to wait (past their
//! invocation's deadline) for the reset, or, spreading "what is left" as if it were alone,
//! spending it N times too fast and then trickling.

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
/// Kustomer's rate-limit window: the even line runs from the limit at its start to zero
/// at its reset.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Pacer {
    /// The queue of waiters: tokio's mutex grants the lock in the order it was asked
    /// (FIFO), so the first in line waits for the next slot while the others wait their turn.
    turn: tokio::sync::Mutex<()>,
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
            // A place in flight is free again.
            self.pacer.changed.notify_waiters();
        }
    }
}

/// When the next request may start to keep the budget on the even line: a burst (half of
/// `limit`, or the requests a container has in flight at once, whichever is more) at
/// once, the rest no faster than a line from `limit - burst` a [`WINDOW`] before `reset`
/// down to zero at `reset`: a request starts when what is left (`remaining`, itself
/// included) is on or above the line, so the last one starts a step before the reset.
/// `now` when it is already so.
fn on_the_line(
    now: Instant,
    reset: Instant,
    limit: u64,
    concurrency: i64,
    remaining: i64,
) -> Instant {
    let limit = limit.max(1) as f64;
    let burst = (limit / 2.0)
        .floor()
        .max(concurrency as f64)
        .min(limit - 1.0)
        .max(0.0);
    let paced = (limit - burst).max(1.0);
    let left = remaining.max(0) as f64;
    if left >= paced {
        return now;
    }
    // The line is down to `left` this long before the reset.
    let left_then = WINDOW.mul_f64(left / paced);
    reset.checked_sub(left_then).unwrap_or(now).max(now)
}

/// `at + wait`, never past [`MAX_ADVERTISED_WAIT`] and never overflowing.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait.min(MAX_ADVERTISED_WAIT)).unwrap_or(at)
}

impl Pacer {
    pub fn new(concurrency: usize, max_per_minute: Option<u32>) -> Self {
        Pacer {
            turn: tokio::sync::Mutex::new(()),
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

    /// Waits until a request may start, and reserves its place in the budget. Requests
    /// start in the order they called this (cancelling a call gives its place up). The
    /// first in line waits for the next slot the budget allows: at most
    /// [`MAX_ADVERTISED_WAIT`] at a time, and an exhausted budget with no known reset is
    /// probed after [`UNKNOWN_RESET_WAIT`]; the others wait only for those ahead of them.
    pub async fn before_request(&self) -> Reservation<'_> {
        let started = Instant::now();
        let _turn = self.turn.lock().await;
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
            // let every waiter into a wall of 429s. Otherwise a new window starts with
            // Kustomer's limit, as far as we know (without one, unknown) until an answer says.
            let exhausted = self.remaining.is_some_and(|remaining| remaining <= 0);
            let limit = self
                .limit
                .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX));
            self.remaining = if exhausted { Some(1) } else { limit };
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
                if let (Some(reset), Some(limit)) = (self.reset_at, self.limit) {
                    let line = on_the_line(now, reset, limit, concurrency, remaining);
                    earliest = earliest.max(line);
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
        // One of 10 left, ten seconds to go: the next request waits for the even line
        // (5 paced over 60 s after a burst of 5) to come down to it, 12 s before the reset:
        // at once. With 1 left of 100 it is spaced: 1.2 s before the reset.
        let waited = pacer.before_request().await.waited;
        assert_eq!(waited, Duration::ZERO);
        let pacer = Pacer::new(1, None);
        let hundred = RateLimit {
            limit: Some(100),
            ..rate(1, 10)
        };
        request(&pacer, &hundred).await;
        let waited = pacer.before_request().await.waited;
        let expected = Duration::from_secs(10) - Duration::from_secs(60) / 50;
        assert!(
            waited >= expected && waited <= expected + Duration::from_millis(1),
            "{waited:?}"
        );
    }

    /// Issue 18, budget share: the budget goes no faster than an even line over the window
    /// after a burst of half of it: with 2,000 for 60 s, 1,000 at once, then 1,000 over
    /// the minute.
    #[tokio::test(start_paused = true)]
    async fn the_budget_follows_an_even_line_after_a_burst() {
        let pacer = Pacer::new(8, None);
        let fresh = RateLimit {
            limit: Some(2_000),
            ..rate(2_000, 60)
        };
        request(&pacer, &fresh).await;
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..1_200 {
            let reservation = pacer.before_request().await;
            at.push(Instant::now().saturating_duration_since(start));
            drop(reservation);
        }
        assert!(
            at[999] < Duration::from_millis(1),
            "the burst: {:?}",
            at[999]
        );
        // After the burst, the other 1,000 over 60 s.
        let paced = at[1_199].saturating_sub(at[1_000]);
        let expected = Duration::from_secs(60) * 199 / 1_000;
        assert!(
            paced >= expected && paced <= expected + Duration::from_millis(100),
            "{paced:?}, expected {expected:?}"
        );
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

    /// Issue 18, found by fuzzing: with a ceiling of 2 a minute and 6 workers, waiters used
    /// to race for each slot (one waited 900 s while 33 later requests started). They start
    /// in arrival order now, and each within its share: one slot (30 s) per request ahead
    /// of it when it arrived, plus its own.
    #[tokio::test(start_paused = true)]
    async fn waiters_start_in_arrival_order_within_their_share_of_slots() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let pacer = Arc::new(Pacer::new(6, Some(2)));
        let arrived = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        // (arrival number, requests ahead at arrival, wait)
        let starts = Arc::new(Mutex::new(Vec::<(usize, usize, Duration)>::new()));
        let workers: Vec<_> = (0..6)
            .map(|_| {
                let (pacer, arrived, started, starts) = (
                    Arc::clone(&pacer),
                    Arc::clone(&arrived),
                    Arc::clone(&started),
                    Arc::clone(&starts),
                );
                tokio::spawn(async move {
                    for _ in 0..10 {
                        let arrival = arrived.fetch_add(1, Ordering::SeqCst);
                        let ahead = arrival - started.load(Ordering::SeqCst);
                        let reservation = pacer.before_request().await;
                        started.fetch_add(1, Ordering::SeqCst);
                        let waited = reservation.waited;
                        starts.lock().unwrap().push((arrival, ahead, waited));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        reservation.answered(&RateLimit::default());
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 60);
        let order: Vec<usize> = starts.iter().map(|(arrival, ..)| *arrival).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            order, sorted,
            "a request started before one that arrived earlier"
        );
        let slot = Duration::from_secs(30);
        let longest = starts
            .iter()
            .map(|(.., waited)| *waited)
            .max()
            .unwrap_or_default();
        for (arrival, ahead, waited) in starts {
            let share = slot * u32::try_from(ahead + 1).unwrap();
            assert!(
                waited <= share + Duration::from_millis(1),
                "request {arrival} waited {waited:?} with {ahead} ahead (share {share:?})"
            );
        }
        // Six in line at a slot per 30 s: nobody waits much more than three minutes.
        assert!(longest <= Duration::from_secs(181), "{longest:?}");
    }

    /// A spent budget with many waiters at once: each window lets the budget's worth of
    /// them start, in arrival order, so none waits more than its share of windows: waiter
    /// k (0-based) within k / budget + 1 windows (and the second or so by which Kustomer's
    /// whole-second reset can overstate the window). A stand-in for Kustomer answers every
    /// request from its fixed windows (as the fleet's stub does), 429 past the budget.
    #[tokio::test(start_paused = true)]
    async fn many_waiters_on_a_spent_budget_get_their_share_of_windows() {
        use std::sync::Arc;
        const BUDGET: u64 = 5;
        const WINDOW: Duration = Duration::from_secs(60);
        let origin = Instant::now();
        let used = Arc::new(std::sync::Mutex::new(
            std::collections::HashMap::<u64, u64>::new(),
        ));
        let answer = {
            let used = Arc::clone(&used);
            move || {
                let now = Instant::now().saturating_duration_since(origin);
                let window = now.as_secs() / WINDOW.as_secs();
                let mut used = used.lock().unwrap();
                let count = used.entry(window).or_default();
                *count += 1;
                let reset = WINDOW * u32::try_from(window + 1).unwrap() - now;
                let reset = Duration::from_secs(reset.as_secs_f64().ceil() as u64);
                RateLimit {
                    limit: Some(BUDGET),
                    remaining: Some(BUDGET.saturating_sub(*count)),
                    reset: Some(reset),
                    retry_after: (*count > BUDGET).then_some(reset),
                }
            }
        };
        let pacer = Arc::new(Pacer::new(8, None));
        // Window 0 is spent by the first five.
        for _ in 0..BUDGET {
            let reservation = pacer.before_request().await;
            reservation.answered(&answer());
        }
        let waiters: Vec<_> = (0..23)
            .map(|k| {
                let (pacer, answer) = (Arc::clone(&pacer), answer.clone());
                tokio::spawn(async move {
                    let reservation = pacer.before_request().await;
                    let at = Instant::now();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    reservation.answered(&answer());
                    (k, at)
                })
            })
            .collect();
        let mut starts = Vec::new();
        for waiter in waiters {
            starts.push(waiter.await.unwrap());
        }
        starts.sort_by_key(|(_, at)| *at);
        let order: Vec<u64> = starts.iter().map(|(k, _)| *k).collect();
        assert_eq!(order, (0..23).collect::<Vec<_>>(), "arrival order");
        for (k, at) in starts {
            let waited = at.saturating_duration_since(origin);
            let windows = u32::try_from(k / BUDGET + 1).unwrap();
            let share = WINDOW * windows + Duration::from_secs(2);
            assert!(
                waited <= share,
                "waiter {k} waited {waited:?} (share {share:?})"
            );
        }
        let used = used.lock().unwrap();
        assert!(used.values().all(|n| *n <= BUDGET), "a 429: {used:?}");
    }

    /// What a fleet of containers did against one organisation budget (see [`fleet`]).
    #[derive(Debug)]
    struct FleetRun {
        /// Per window: requests Kustomer counted (not 429), and 429s.
        used: Vec<u64>,
        throttled: Vec<u64>,
        /// Per window: when (since its start) the budget was spent, if it was.
        spent_at: Vec<Option<Duration>>,
    }

    /// `containers` pacers of `workers` each (a request answered 50 ms after it starts)
    /// against one stand-in Kustomer for `windows` windows of 60 s: `budget` requests per
    /// window for the whole organisation, headers on every answer, 429 with Retry-After
    /// past the budget (429s do not count), as the fleet test's stub does.
    async fn fleet(containers: usize, workers: usize, budget: u64, windows: u64) -> FleetRun {
        use std::sync::{Arc, Mutex};
        const WINDOW: Duration = Duration::from_secs(60);
        let origin = Instant::now();
        let end = origin + WINDOW * u32::try_from(windows).unwrap();
        let n = usize::try_from(windows).unwrap();
        let run = Arc::new(Mutex::new(FleetRun {
            used: vec![0; n + 1],
            throttled: vec![0; n + 1],
            spent_at: vec![None; n + 1],
        }));
        let answer = {
            let run = Arc::clone(&run);
            move || {
                let since = Instant::now().saturating_duration_since(origin);
                let window = usize::try_from(since.as_secs() / WINDOW.as_secs()).unwrap();
                let mut run = run.lock().unwrap();
                let over = run.used[window] >= budget;
                if over {
                    run.throttled[window] += 1;
                } else {
                    run.used[window] += 1;
                    if run.used[window] == budget {
                        run.spent_at[window] =
                            Some(since - WINDOW * u32::try_from(window).unwrap());
                    }
                }
                let left = WINDOW * u32::try_from(window + 1).unwrap() - since;
                let reset = Duration::from_secs(left.as_secs_f64().ceil() as u64);
                RateLimit {
                    limit: Some(budget),
                    remaining: Some(budget.saturating_sub(run.used[window])),
                    reset: Some(reset),
                    retry_after: over.then_some(reset),
                }
            }
        };
        let mut tasks = Vec::new();
        for _ in 0..containers {
            let pacer = Arc::new(Pacer::new(workers, None));
            for _ in 0..workers {
                let (pacer, answer) = (Arc::clone(&pacer), answer.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        let waiting = tokio::time::timeout_at(end, pacer.before_request());
                        let Ok(reservation) = waiting.await else {
                            break;
                        };
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        reservation.answered(&answer());
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        drop(answer);
        let mut run = Arc::try_unwrap(run).unwrap().into_inner().unwrap();
        run.used.truncate(n);
        run.throttled.truncate(n);
        run.spent_at.truncate(n);
        run
    }

    /// Issue 18, budget share: containers pacing on the organisation's headers use the
    /// whole budget of every window between them, without a 429 storm, and spend it over
    /// the window rather than in a burst followed by a long idle wait (or a trickle that
    /// leaves the waiting events to time out).
    #[tokio::test(start_paused = true)]
    async fn a_fleet_uses_the_shared_budget_without_overshooting() {
        for (containers, workers, budget) in [
            (1, 8, 300),
            (3, 8, 2_000),
            (10, 8, 2_000),
            (5, 8, 300),
            (10, 8, 300),
            (20, 8, 2_000),
            (30, 8, 300),
            (50, 8, 300),
        ] {
            let run = fleet(containers, workers, budget, 4).await;
            println!("{containers} x {workers} on {budget}: {run:?}");
            if containers > 10 {
                continue;
            }
            let total: u64 = run.used.iter().sum::<u64>() + run.throttled.iter().sum::<u64>();
            let throttled: u64 = run.throttled.iter().sum();
            // Near a window's end, containers that each see a few requests left start them
            // at once: at most a couple of 429s per container and window (so a 429 share
            // under 1 % needs a budget of a hundred requests a minute per container).
            let allowed = u64::try_from(containers).unwrap() * 2 * 4;
            assert!(
                throttled * 100 <= total * 3 && throttled <= allowed,
                "{containers} containers: {throttled} 429s of {total} requests"
            );
            // The budget lasts the window: spent in its last seconds, not in a burst.
            for spent in run.spent_at.iter().flatten() {
                assert!(*spent >= Duration::from_secs(55), "spent after {spent:?}");
            }
            for (window, used) in run.used.iter().enumerate() {
                assert!(
                    *used * 100 >= budget * 95,
                    "{containers} containers, window {window}: {used} of {budget} used"
                );
            }
        }
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
