//! The Lambda's delivery pipeline: every door hands its events here. Events of one user
//! go in order; different users run concurrently, at most `max_in_flight` at once; throttled
//! and transient failures are retried with jittered exponential backoff inside the
//! deadline; a 401/403 reloads the API key once. Every event ends as one [`Report`].

use std::cmp::Reverse;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::Value;

use tokio::time::Instant;

use crate::aws::secrets::KeyProvider;
use crate::kustomer::{ClientOptions, ClientSetupError, KustomerClient};
use crate::outcome::{CompanyAction, Failure, FailureClass, Outcome, Report};
use crate::pipeline::attempt::Attempt;
use crate::pipeline::id_cache::{CompanyCache, CustomerCache};
use crate::pipeline::pacing::Pacer;
use crate::settings::lambda::LambdaSettings;
use crate::telemetry::Metrics;
use crate::telemetry::Observation;
use kustomer_mapping::settings::{BaseEndpoint, MappingFlags};
use kustomer_mapping::values::{first_usable, text_form};
use kustomer_mapping::{map_event, EventType, Plan};

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
            pacer: Pacer::new(settings.max_in_flight, settings.max_requests_per_minute),
        })
    }

    /// The same pipeline with another source of the API key and webhook token.
    pub fn with_key_provider(mut self, keys: KeyProvider) -> Pipeline {
        self.keys = keys;
        self
    }

    /// Back to a cold container's delivery state, with `max_in_flight` workers: a pacer that
    /// knows nothing of Kustomer's budget yet, no metrics pending (the fuzz harness reuses
    /// one app across cases this way).
    pub fn reset_delivery_state(&mut self, max_in_flight: usize) {
        self.max_in_flight = max_in_flight;
        self.pacer = Pacer::new(max_in_flight, None);
        self.metrics.take();
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
        let mut chains = group_by_user(events);
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
                for &index in chain {
                    let report = self.deliver(&events[index], deadline).await;
                    let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = slots.get_mut(index) {
                        *slot = Some(report);
                    }
                }
            }
        });
        join_all(workers).await;
        let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
        // Every event is in exactly one chain; a gap would be a bug, and still an outcome.
        slots
            .into_iter()
            .map(|slot| slot.unwrap_or_else(Report::not_delivered))
            .collect()
    }

    async fn deliver(&self, event: &Value, deadline: Instant) -> Report {
        let started = Instant::now();
        let event_type = EventType::of(event).ok();
        // Mapped once: retries re-use the plan, and the report carries its schema fixes.
        let mut plan = map_event(event, &self.flags);
        let schema_fixes = plan.as_mut().map(Plan::take_fixes).unwrap_or_default();
        let mut attempts = 0u32;
        let mut key_reloaded = false;
        let mut company = None;
        let outcome = loop {
            attempts += 1;
            let result = match self.keys.current().await {
                Ok(credentials) => {
                    let api_key = &credentials.api_key;
                    let result = self.attempt(&plan, api_key, deadline, &mut company).await;
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
            tokio::time::sleep(wait).await;
        };
        let report = Report {
            outcome,
            event_type,
            attempts,
            duration: started.elapsed(),
            schema_fixes,
            company,
        };
        self.metrics.event(&report);
        report
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

/// Indices grouped by user (userId, else anonymousId), in input order within a group.
/// Events without either run alone: they fail in the mapping without any request.
fn group_by_user(events: &[Value]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_user: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (index, event) in events.iter().enumerate() {
        match first_usable(event, &["userId", "anonymousId"]).map(text_form) {
            Some(user) => {
                let group = *by_user.entry(user).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[group].push(index);
            }
            None => groups.push(vec![index]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_keep_user_order() {
        let events = vec![
            json!({"userId": "a"}),
            json!({"anonymousId": "b"}),
            json!({"userId": "a", "anonymousId": "x"}),
            json!({}),
            json!({"userId": 7}),
            json!({"anonymousId": "7"}),
        ];
        assert_eq!(
            group_by_user(&events),
            vec![vec![0, 2], vec![1], vec![3], vec![4, 5]]
        );
    }
}
