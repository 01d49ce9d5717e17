//! The Lambda's delivery pipeline: every door hands its events here. Events of one user
//! go in order; different users run concurrently, at most `max_in_flight` at once; throttled
//! and transient failures are retried with jittered exponential backoff inside the
//! deadline; a 401/403 reloads the API key once. Every event ends as one [`Report`].
//!
//! A chain stops at its first retryable failure: the rest of it is held (a transient
//! failure, no request), so that none of a user's events is delivered ahead of an earlier
//! one that will be retried. A permanent failure does not stop it: retrying cannot help.
//!
//! The command line adds two things through [`Hooks`] and [`Pipeline::stop`]: a call as
//! each event ends (its worker waits for it: `send` makes the outcome durable there),
//! and a stop that lets the requests on the wire finish and starts nothing else.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use futures_util::future::{join_all, BoxFuture};
use serde_json::Value;

use tokio::time::Instant;

use crate::aws::ledger::DeliveredLedger;
use crate::aws::secrets::KeyProvider;
use crate::kustomer::{ClientOptions, ClientSetupError, KustomerClient};
use crate::outcome::{CompanyAction, Failure, FailureClass, Outcome, Report};
use crate::pipeline::attempt::Attempt;
use crate::pipeline::id_cache::{CompanyCache, CustomerCache};
use crate::pipeline::pacing::Pacer;
use crate::pipeline::skip::{event_digest, Skips};
use crate::settings::lambda::LambdaSettings;
use crate::telemetry::Metrics;
use crate::telemetry::Observation;
use kustomer_mapping::settings::{BaseEndpoint, MappingFlags};
use kustomer_mapping::values::{first_usable, text_form};
use kustomer_mapping::{map_event, EventType, Plan};

/// Called with an event's index and report as soon as the event ends; the event's
/// worker awaits the future before it takes its next event.
pub type OnReport<'a> = dyn Fn(usize, &Report) -> BoxFuture<'a, ()> + Sync + 'a;

/// What [`Pipeline::deliver_with`] does besides delivering.
pub struct Hooks<'a> {
    /// When the caller must have its answer (see [`Pipeline::deliver_all`]).
    pub deadline: Instant,
    pub on_report: Option<&'a OnReport<'a>>,
}

pub struct Pipeline {
    client: KustomerClient,
    base: BaseEndpoint,
    flags: MappingFlags,
    keys: KeyProvider,
    max_attempts: u32,
    max_in_flight: usize,
    metrics: Arc<Metrics>,
    /// `None` turns the customer-id cache off.
    cache: Option<CustomerCache>,
    /// The company-id cache: on and bounded exactly like the customer-id cache.
    companies: Option<CompanyCache>,
    /// Unchanged updates and repeated events not sent again; `None`: off.
    skips: Option<Skips>,
    /// The fleet's ledger of delivered events (`DEDUP_TABLE`); only with the skips on.
    ledger: Option<DeliveredLedger>,
    pacer: Pacer,
}

impl Pipeline {
    /// The pipeline the settings describe: no network IO (the API key is fetched at first
    /// need). The Lambda's `App` and `rudder-kustomer send` both build it here.
    pub fn new(settings: &LambdaSettings) -> Result<Pipeline, ClientSetupError> {
        let client = KustomerClient::new(ClientOptions {
            connect_timeout: settings.connect_timeout,
            request_timeout: settings.request_timeout,
        })?;
        Ok(Pipeline {
            client,
            base: settings.base.clone(),
            flags: settings.flags,
            keys: KeyProvider::new(settings.key_source.clone(), settings.secret_cache_ttl),
            max_attempts: settings.max_attempts,
            max_in_flight: settings.max_in_flight,
            metrics: Default::default(),
            cache: settings
                .customer_cache_ttl
                .map(|ttl| CustomerCache::new(ttl, settings.customer_cache_max_entries)),
            companies: settings
                .customer_cache_ttl
                .map(|ttl| CompanyCache::new(ttl, settings.customer_cache_max_entries)),
            skips: settings
                .unchanged_ttl
                .map(|ttl| Skips::new(ttl, settings.customer_cache_max_entries)),
            ledger: settings
                .dedup_table
                .clone()
                .zip(settings.unchanged_ttl)
                .map(|(table, window)| {
                    DeliveredLedger::new(table, window)
                        .sharing_customer_ids(settings.customer_cache_ttl)
                }),
            pacer: Pacer::new(settings.max_in_flight, settings.max_requests_per_minute),
        })
    }

    /// The same pipeline with another source of the API key and webhook token.
    pub fn with_key_provider(mut self, keys: KeyProvider) -> Pipeline {
        self.keys = keys;
        self
    }

    /// The same pipeline with another ledger of delivered events (tests: an explicit
    /// endpoint); `None` turns it off.
    pub fn with_ledger(mut self, ledger: Option<DeliveredLedger>) -> Pipeline {
        self.ledger = ledger;
        self
    }

    /// Back to a cold container's delivery state, with `max_in_flight` workers: a pacer that
    /// knows nothing of Kustomer's budget yet, no metrics pending (the fuzz harness reuses
    /// one app across cases this way).
    pub fn reset_delivery_state(&mut self, max_in_flight: usize) {
        self.max_in_flight = max_in_flight;
        self.pacer = Pacer::new(max_in_flight, None);
        self.metrics.take();
        if let Some(skips) = &self.skips {
            skips.clear();
        }
    }

    /// The API key and webhook tokens (the webhook door checks its token here).
    pub fn keys(&self) -> &KeyProvider {
        &self.keys
    }

    /// What the deliveries counted since the last flush.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The customer-id cache, when it is on.
    pub fn customer_cache(&self) -> Option<&CustomerCache> {
        self.cache.as_ref()
    }

    /// The company-id cache, when it is on.
    pub fn company_cache(&self) -> Option<&CompanyCache> {
        self.companies.as_ref()
    }

    /// Stops for good (the command line's Ctrl-C, a refused key): no event and no request
    /// starts any more, no retry either; requests on the wire finish (within the request
    /// timeout). [`Pipeline::deliver_with`] then returns, with `None` for every event that
    /// did not end: not tried, or tried without an outcome (so it is sent again later).
    pub fn stop(&self) {
        self.pacer.close();
    }

    pub fn is_stopped(&self) -> bool {
        self.pacer.is_closed()
    }

    /// Delivers every event and returns one report per event, in input order.
    /// `deadline` is when the door must start answering: no retry is begun that could
    /// not finish before it, and an attempt still running then fails as transient.
    ///
    /// Each user's events form a chain, run in order by one of at most `max_in_flight`
    /// workers, so at most that many requests are in flight and at most that many
    /// chains hold state at once: memory follows the payload, not the count of users.
    /// Workers take the chains with the most expected requests first (longest-first
    /// scheduling: a batch takes about max(longest chain, requests ÷ workers) round trips).
    pub async fn deliver_all(&self, events: &[Value], deadline: Instant) -> Vec<Report> {
        self.deliver_in_groups(events, &[], deadline).await
    }

    /// [`Pipeline::deliver_all`] where events that share a message group (an SQS FIFO
    /// batch: `groups[i]` is event `i`'s `MessageGroupId`) are chained too, as well as
    /// events of one user: none is delivered ahead of an earlier one of its group either.
    pub async fn deliver_in_groups(
        &self,
        events: &[Value],
        groups: &[Option<&str>],
        deadline: Instant,
    ) -> Vec<Report> {
        let hooks = Hooks {
            deadline,
            on_report: None,
        };
        self.deliver_chains(events, groups, &hooks)
            .await
            .into_iter()
            // Unended only after a stop: retryable, so nothing is lost.
            .map(|report| report.unwrap_or_else(Report::not_delivered))
            .collect()
    }

    /// [`Pipeline::deliver_all`] with [`Hooks`]: `None` for the events a
    /// [`Pipeline::stop`] left without an outcome (the one a chain was at when it stopped,
    /// and every later one of that chain; chains not begun). A chain held by an earlier
    /// retryable failure still reports its held events after a stop (no request is made):
    /// left without an outcome, they would be sent again ahead of the failed event they
    /// wait for.
    pub async fn deliver_with(&self, events: &[Value], hooks: &Hooks<'_>) -> Vec<Option<Report>> {
        self.deliver_chains(events, &[], hooks).await
    }

    /// The chains of `events` (users, message groups), each in order by one worker.
    async fn deliver_chains(
        &self,
        events: &[Value],
        groups: &[Option<&str>],
        hooks: &Hooks<'_>,
    ) -> Vec<Option<Report>> {
        let deadline = hooks.deadline;
        let elsewhere = self.delivered_elsewhere(events).await;
        let mut chains = chains(events, groups);
        chains.sort_by_cached_key(|chain| {
            Reverse(
                chain
                    .iter()
                    .map(|&i| expected_requests(&events[i]))
                    .sum::<usize>(),
            )
        });
        // One slot per event, filled in place: the reports take their exact size once,
        // with no per-worker lists to merge and sort (100,000 events: tens of MB).
        let slots: std::sync::Mutex<Vec<Option<Report>>> =
            std::sync::Mutex::new(std::iter::repeat_with(|| None).take(events.len()).collect());
        let next_chain = AtomicUsize::new(0);
        let workers = (0..self.max_in_flight.clamp(1, chains.len().max(1))).map(|_| async {
            while let Some(chain) = chains.get(next_chain.fetch_add(1, AtomicOrdering::Relaxed)) {
                let mut held = false;
                for &index in chain {
                    let report = if held {
                        let report = Report::held(EventType::of(&events[index]).ok());
                        self.metrics.event(&report);
                        report
                    } else {
                        // Stopped: this event and the rest of its chain stay without an
                        // outcome, and no other chain starts.
                        let event = &events[index];
                        let elsewhere = elsewhere.contains(&index);
                        let Some(report) = self.deliver(event, deadline, elsewhere).await else {
                            return;
                        };
                        report
                    };
                    // Only a failure that will be retried holds the rest of the chain back.
                    held |= report
                        .outcome
                        .failure()
                        .is_some_and(|failure| failure.class.is_retryable());
                    if let Some(on_report) = hooks.on_report {
                        on_report(index, &report).await;
                    }
                    let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = slots.get_mut(index) {
                        *slot = Some(report);
                    }
                }
            }
        });
        join_all(workers).await;
        // Every event is in exactly one chain: a gap is a stop (or a bug, still an outcome
        // for deliver_all).
        slots.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// The indices of those of `events` the fleet's ledger holds as delivered (none
    /// without a ledger, or when it cannot answer: then they are sent, as without it).
    async fn delivered_elsewhere(&self, events: &[Value]) -> HashSet<usize> {
        let (Some(ledger), Some(skips)) = (&self.ledger, &self.skips) else {
            return HashSet::new();
        };
        let keys: Vec<(usize, u128)> = events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| Some((index, event_digest(event)?)))
            .filter(|&(_, key)| !skips.delivered.delivered_before(key))
            .collect();
        let asked: Vec<u128> = keys.iter().map(|&(_, key)| key).collect();
        match ledger.delivered(&asked).await {
            Ok(found) => keys
                .into_iter()
                .filter(|(_, key)| found.contains(key))
                .map(|(index, _)| index)
                .collect(),
            Err(problem) => {
                self.metrics.ledger_error();
                tracing::warn!(error = %problem, "dedup ledger unread: the batch is sent");
                HashSet::new()
            }
        }
    }

    /// Whether the event with digest `key` was delivered already, by this container or
    /// (`elsewhere`: the batch's read of the fleet's ledger) by another; a repeat the fleet
    /// delivered is remembered here too.
    fn is_repeat(&self, key: Option<u128>, elsewhere: bool) -> bool {
        let (Some(skips), Some(key)) = (&self.skips, key) else {
            return false;
        };
        if elsewhere {
            skips.delivered.delivered(key);
            return true;
        }
        skips.delivered.delivered_before(key)
    }

    /// Records a delivered event (digest `key`) in this container's cache and in the
    /// fleet's ledger.
    async fn remember_delivered(&self, key: Option<u128>) {
        let (Some(skips), Some(key)) = (&self.skips, key) else {
            return;
        };
        skips.delivered.delivered(key);
        if let Some(ledger) = &self.ledger {
            if let Err(problem) = ledger.record(key).await {
                self.metrics.ledger_error();
                tracing::warn!(error = %problem, "dedup ledger not written");
            }
        }
    }

    /// One event, retries included; `None` when the pipeline was stopped before the event
    /// ended. `elsewhere`: the fleet's ledger holds the event as delivered.
    async fn deliver(&self, event: &Value, deadline: Instant, elsewhere: bool) -> Option<Report> {
        let started = Instant::now();
        let event_type = EventType::of(event).ok();
        // Its messageId's digest, once: the skip cache and the ledger are keyed by it.
        let key = self.skips.as_ref().and_then(|_| event_digest(event));
        if self.is_repeat(key, elsewhere) {
            let report = Report::duplicate(event_type);
            self.metrics.event(&report);
            return Some(report);
        }
        // Mapped once: retries re-use the plan, and the report carries its schema fixes.
        let mut plan = map_event(event, &self.flags);
        let schema_fixes = plan.as_mut().map(Plan::take_fixes).unwrap_or_default();
        let mut attempts = 0u32;
        let mut key_reloaded = false;
        let mut company = None;
        let outcome = loop {
            if self.is_stopped() {
                return None;
            }
            attempts += 1;
            let result = match self.keys.current().await {
                Ok(credentials) => {
                    let api_key = &credentials.api_key;
                    let attempt = self.attempt(&plan, api_key, deadline, &mut company);
                    // Stopped: the attempt runs while a request is on the wire; once none is,
                    // it is parked before its next request, which will never start.
                    let result = tokio::select! {
                        biased;
                        result = attempt => result,
                        () = self.pacer.closed_and_idle() => return None,
                    };
                    // Key rotation: Kustomer refused the key, so fetch it again once.
                    if let Err(failure) = &result {
                        if failure.class == FailureClass::Auth
                            && failure.status.is_some()
                            && !key_reloaded
                        {
                            key_reloaded = true;
                            if self.keys.reload(&credentials).await.is_ok() {
                                self.metrics.retry();
                                continue;
                            }
                        }
                    }
                    result
                }
                Err(failure) => Err(failure),
            };
            let failure = match result {
                Ok(delivered) => break Outcome::Delivered(delivered),
                Err(failure) => failure,
            };
            if failure.class == FailureClass::Throttled {
                self.metrics.throttle();
            }
            if !failure.class.is_retryable() || attempts >= self.max_attempts {
                break Outcome::Failed(failure);
            }
            let wait = super::retry::backoff(attempts, failure.retry_after);
            // A wait that would end past the deadline (or past any representable time)
            // is not begun: the event is reported for a later retry instead.
            if Instant::now()
                .checked_add(wait)
                .is_none_or(|end| end >= deadline)
            {
                break Outcome::Failed(failure);
            }
            self.metrics.retry();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.pacer.closed_and_idle() => return None,
            }
        };
        if let Outcome::Delivered(_) = &outcome {
            self.remember_delivered(key).await;
        }
        let report = Report {
            outcome,
            event_type,
            attempts,
            duration: started.elapsed(),
            schema_fixes,
            company,
        };
        self.metrics.event(&report);
        Some(report)
    }

    async fn attempt(
        &self,
        plan: &Result<Plan, kustomer_mapping::EventError>,
        api_key: &kustomer_mapping::settings::Secret,
        deadline: Instant,
        company: &mut Option<CompanyAction>,
    ) -> Result<crate::outcome::Delivered, Failure> {
        // A bad event fails here, after the key (as a failed mapping always did).
        let plan = plan
            .as_ref()
            .map_err(|error| Failure::from(error.clone()))?;
        let attempt = Attempt {
            client: &self.client,
            base: &self.base,
            api_key,
            flags: &self.flags,
            customers: self.cache.as_ref(),
            companies: self.companies.as_ref(),
            unchanged: self.skips.as_ref().map(|skips| &skips.unchanged),
            ledger: self.ledger.as_ref(),
            pacer: Some(&self.pacer),
        };
        let metrics = &self.metrics;
        // The report names what this (the last) attempt did with the company.
        *company = None;
        let mut observe = |observation: Observation| {
            if let Observation::Company(action) = observation {
                *company = Some(action);
            }
            metrics.observe(&observation)
        };
        match tokio::time::timeout_at(deadline, attempt.run(plan, &mut observe)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::transient(
                "the invocation's time ran out before Kustomer answered",
            )),
        }
    }
}

/// A scheduling estimate of an event's requests: an identify usually looks the
/// customer up before it writes; a group writes its company and links a customer;
/// everything else is one request.
fn expected_requests(event: &Value) -> usize {
    match EventType::of(event) {
        Ok(EventType::Identify) => 3,
        Ok(EventType::Group) => 4,
        _ => 1,
    }
}

/// The user an event belongs to: its userId, else its anonymousId, as text.
pub fn user_of(event: &Value) -> Option<String> {
    first_usable(event, &["userId", "anonymousId"]).map(text_form)
}

/// Indices in chains, in input order within a chain: events of one user (userId, else
/// anonymousId) share a chain, and so do events of one message group (`groups[i]`, when
/// given); a chain joins whatever either links (a user in two groups, a group of several
/// users). Events with neither run alone: they fail in the mapping without any request.
fn chains(events: &[Value], groups: &[Option<&str>]) -> Vec<Vec<usize>> {
    use std::collections::HashMap;
    // Union-find over the keys (users and groups): each event joins its keys' sets.
    let mut parent: Vec<usize> = Vec::new();
    fn root(parent: &mut [usize], mut node: usize) -> usize {
        while parent[node] != node {
            parent[node] = parent[parent[node]];
            node = parent[node];
        }
        node
    }
    let mut keys: HashMap<(bool, String), usize> = HashMap::new();
    let mut key_of = |parent: &mut Vec<usize>, key: (bool, String)| {
        *keys.entry(key).or_insert_with(|| {
            parent.push(parent.len());
            parent.len() - 1
        })
    };
    let nodes: Vec<Option<usize>> = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let user = user_of(event).map(|user| key_of(&mut parent, (false, user)));
            let group = groups
                .get(index)
                .copied()
                .flatten()
                .map(|group| key_of(&mut parent, (true, group.to_string())));
            if let (Some(user), Some(group)) = (user, group) {
                let (a, b) = (root(&mut parent, user), root(&mut parent, group));
                parent[a] = b;
            }
            user.or(group)
        })
        .collect();
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut chain_of_root: HashMap<usize, usize> = HashMap::new();
    for (index, node) in nodes.into_iter().enumerate() {
        match node {
            Some(node) => {
                let root = root(&mut parent, node);
                let chain = *chain_of_root.entry(root).or_insert_with(|| {
                    chains.push(Vec::new());
                    chains.len() - 1
                });
                chains[chain].push(index);
            }
            None => chains.push(vec![index]),
        }
    }
    chains
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chains_keep_user_order() {
        let events = vec![
            json!({"userId": "a"}),
            json!({"anonymousId": "b"}),
            json!({"userId": "a", "anonymousId": "x"}),
            json!({}),
            json!({"userId": 7}),
            json!({"anonymousId": "7"}),
        ];
        assert_eq!(
            chains(&events, &[]),
            vec![vec![0, 2], vec![1], vec![3], vec![4, 5]]
        );
    }

    /// A message group chains its events whoever their users are, and a user in two groups
    /// joins them: none of them is delivered ahead of an earlier one it is linked to.
    #[test]
    fn message_groups_join_chains() {
        let events = vec![
            json!({"userId": "a"}),
            json!({"userId": "b"}),
            json!({"userId": "c"}),
            json!({"userId": "a"}),
            json!({}),
            json!({"userId": "d"}),
            json!({}),
        ];
        let groups = [
            Some("g1"),
            Some("g1"),
            Some("g2"),
            Some("g3"),
            Some("g3"),
            None,
            None,
        ];
        // a and b share g1; a's second event is in g3 with a user-less event: one chain.
        assert_eq!(
            chains(&events, &groups),
            vec![vec![0, 1, 3, 4], vec![2], vec![5], vec![6]]
        );
    }
}
