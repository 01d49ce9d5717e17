//! Delivery: runs a mapping [`Plan`] over the Kustomer client and returns one outcome.
//! [`deliver_once`] is a single attempt with no state (the conformance runner uses it);
//! the Lambda's [`crate::pipeline`] adds retries, key reloads, ordering, concurrency,
//! pacing, the id caches and the unchanged-update cache around [`Attempt::run`].
//!
//! Every request, customer or company, look-up or write, goes through
//! [`Attempt::exchange`]: checked, paced, sent, observed, and its answer classified by
//! `kustomer/response.rs`.

use bytes::Bytes;
use serde_json::Value;

use crate::aws::ledger::{DeliveredLedger, UNKNOWN_BODY};
use crate::kustomer::{
    classify_company_lookup, classify_lookup, classify_write, created_company_id,
    created_customer_id, request_uri, CompanyAnswer, HttpResponse, KustomerClient, LookupResult,
};
use crate::outcome::{CompanyAction, NotLinked, Skipped};
use crate::pipeline::id_cache::{CompanyCache, CustomerCache, SingleFlight};
use crate::pipeline::pacing::Pacer;
use crate::pipeline::skip::{body_digest, UnchangedUpdates};
use crate::telemetry::{Endpoint, Observation};
use kustomer_mapping::settings::{BaseEndpoint, Destination, MappingFlags, Secret};
use kustomer_mapping::{
    map_event, CompanyLookup, CompanyRef, CustomerRef, GroupPlan, IdentifyPlan, Method, Plan, Write,
};

pub use crate::outcome::{Delivered, Failure, FailureClass, Outcome};

/// One attempt at one event: map, look up (identify), write. No cache, no pacing.
pub async fn deliver_once(
    client: &KustomerClient,
    destination: &Destination,
    event: &Value,
) -> Outcome {
    let attempt = Attempt {
        client,
        base: &destination.base,
        api_key: &destination.api_key,
        flags: &destination.flags,
        customers: None,
        companies: None,
        unchanged: None,
        ledger: None,
        pacer: None,
    };
    match attempt.run_event(event, &mut |_| {}).await {
        Ok(delivered) => Outcome::Delivered(delivered),
        Err(failure) => Outcome::Failed(failure),
    }
}

pub type Observer<'a> = dyn FnMut(Observation) + Send + 'a;

/// One attempt at one event: what it needs, borrowed so that retries re-use it.
pub struct Attempt<'a> {
    pub client: &'a KustomerClient,
    pub base: &'a BaseEndpoint,
    pub api_key: &'a Secret,
    pub flags: &'a MappingFlags,
    /// The customer-id cache, when it is on.
    pub customers: Option<&'a CustomerCache>,
    /// The company-id cache, when it is on (same settings as the customer-id cache).
    pub companies: Option<&'a CompanyCache>,
    /// The bodies last sent per customer: an identical update is not sent again.
    pub unchanged: Option<&'a UnchangedUpdates>,
    /// The fleet's ledger: its last body per customer decides what is unchanged, and its
    /// customer ids save look-ups the customer-id cache misses.
    pub ledger: Option<&'a DeliveredLedger>,
    pub pacer: Option<&'a Pacer>,
}

/// What writing an event came to.
enum Written {
    /// Sent; the final write answered this status.
    Sent(u16),
    /// Not sent: the customer already has this body ([`UnchangedUpdates`]).
    Unchanged,
}

/// Where an event's customer is (spec 5.2).
enum Located {
    /// The event's kustomerId.
    Known(String),
    /// From the customer-id cache: may be stale (merged, deleted).
    Cached(String),
    /// Found by a look-up.
    Found(String),
    /// No look-up found it: created.
    New,
}

impl Located {
    fn id(&self) -> Option<&str> {
        match self {
            Located::Known(id) | Located::Cached(id) | Located::Found(id) => Some(id),
            Located::New => None,
        }
    }
}

/// A company found (12.3): its id, and whether it came from the cache (may be stale).
struct FoundCompany {
    id: String,
    cached: bool,
}

/// What looking a company up gave.
enum Resolution {
    Found(FoundCompany),
    NotFound,
    /// Cannot be linked: an identify goes on without it, a group fails with the failure.
    Unlinkable(NotLinked, Failure),
}

/// What creating a company gave.
enum Creation {
    Created(String),
    /// 409, then found by the look-up.
    Found(FoundCompany),
    Unlinkable(NotLinked, Failure),
}

/// Why an attempt is aborted; a company's `Err` is for retrying the event.
type Attempted<T> = Result<T, Failure>;

impl Attempt<'_> {
    /// Runs one event once.
    pub async fn run_event(
        &self,
        event: &Value,
        observe: &mut Observer<'_>,
    ) -> Result<Delivered, Failure> {
        let plan = map_event(event, self.flags)?;
        self.run(&plan, observe).await
    }

    /// Runs one already mapped event once (retries map the event only once).
    pub async fn run(&self, plan: &Plan, observe: &mut Observer<'_>) -> Result<Delivered, Failure> {
        let mut requests = 0u32;
        let written = match plan {
            Plan::Tracking(write) => {
                Written::Sent(self.send(write, &mut requests, observe).await?.0)
            }
            Plan::Identify(identify) => self.identify(identify, &mut requests, observe).await?,
            Plan::Group(group) => self.group(group, &mut requests, observe).await?,
        };
        Ok(match written {
            Written::Sent(status) => Delivered::written(requests, status),
            Written::Unchanged => Delivered::skipped(requests, Skipped::Unchanged),
        })
    }

    /// Spec 5.2 and 12.1: the customer (kustomerId, cached id, look-ups), then its
    /// company, then the update or create.
    async fn identify(
        &self,
        identify: &IdentifyPlan,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Attempted<Written> {
        let located = self
            .locate(&identify.customer, true, requests, observe)
            .await?;
        let company = match &identify.company {
            Some(company) => self.identify_company(company, requests, observe).await?,
            None => None,
        };
        let write_for = |customer: Option<&str>| {
            let mut write = match customer {
                Some(id) => identify.update(id),
                None => identify.create(),
            };
            if let Some(company) = &company {
                write.link_company(company);
            }
            write
        };
        self.write_customer(&identify.customer, located, write_for, requests, observe)
            .await
    }

    /// Spec 12.2: the company written (updated when found, created when not), then the
    /// user's customer linked to it.
    async fn group(
        &self,
        group: &GroupPlan,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Attempted<Written> {
        let company = self.group_company(group, requests, observe).await?;
        let located = self
            .locate(&group.customer, true, requests, observe)
            .await?;
        let write_for = |customer: Option<&str>| match customer {
            Some(id) => group.update_customer(id, &company),
            None => group.create_customer(&company),
        };
        self.write_customer(&group.customer, located, write_for, requests, observe)
            .await
    }

    /// Spec 5.2: the kustomerId, a cached id (`use_cache`), or the look-ups in order.
    async fn locate(
        &self,
        customer: &CustomerRef,
        use_cache: bool,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Attempted<Located> {
        let lookups = match customer {
            CustomerRef::Known(id) => return Ok(Located::Known(id.clone())),
            CustomerRef::Lookups(lookups) => lookups,
        };
        let paths = lookups.iter().map(|lookup| lookup.path.as_str());
        if let Some(id) = self
            .customers
            .filter(|_| use_cache)
            .and_then(|c| c.find(paths.clone()))
        {
            observe(Observation::CacheHit);
            return Ok(Located::Cached(id));
        }
        if use_cache {
            // Another container found or created the customer: its id, without look-ups.
            let paths: Vec<&str> = paths.collect();
            if let Some(id) = self.fleet_customer(&paths, observe).await {
                if let Some(cache) = self.customers {
                    cache.remember(paths.iter().copied(), &id);
                }
                observe(Observation::CacheHit);
                return Ok(Located::Cached(id));
            }
        }
        // Sequential on purpose: the spec orders the look-ups and stops at the first hit.
        for lookup in lookups {
            let request = Request {
                endpoint: Endpoint::Lookup,
                method: http::Method::GET,
                path: &lookup.path,
                body: None,
                path_value: lookup.by.as_str(),
            };
            let response = self.exchange(request, requests, observe).await?;
            if let LookupResult::Found(id) = classify_lookup(&response)? {
                return Ok(Located::Found(id));
            }
        }
        Ok(Located::New)
    }

    /// Writes the customer where [`Self::locate`] put it: update or create. A cached id
    /// that Kustomer no longer knows (404) is forgotten and the customer looked up again.
    /// A create answered 409 (someone created the customer since the look-ups: another
    /// container, another integration) runs the look-ups once more and updates the customer
    /// they find; the 409 stands only if they find none. An update identical to the body
    /// this container last sent that customer is not sent ([`Written::Unchanged`]).
    async fn write_customer(
        &self,
        customer: &CustomerRef,
        mut located: Located,
        write_for: impl Fn(Option<&str>) -> Write,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Attempted<Written> {
        let mut looked_up_after_conflict = false;
        loop {
            let write = write_for(located.id());
            let unchanged = located.id().zip(self.unchanged);
            if let Some((id, sent)) = unchanged {
                // With the fleet's ledger its last body decides: another container may have
                // written since, or written this very body.
                let skip = match self.ledger {
                    Some(ledger) => {
                        self.fleet_last_body_is(ledger, id, &write.body, observe)
                            .await
                    }
                    None => sent.is_unchanged(id, &write.body),
                };
                if skip {
                    return Ok(Written::Unchanged);
                }
            }
            let result = self.send(&write, requests, observe).await;
            // What the customer holds now: this body, or (after a failure) not known.
            if let Some((id, sent)) = unchanged {
                match &result {
                    Ok(_) => sent.sent(id, &write.body),
                    Err(_) => sent.forget(id),
                }
                let now_holds = result
                    .as_ref()
                    .map_or(UNKNOWN_BODY, |_| body_digest(&write.body));
                self.record_fleet_body(id, now_holds, observe).await;
            }
            let (status, body) = match result {
                // The customer was merged or deleted since: forget it and look it up again.
                Err(failure) if failure.status == Some(404) => match &located {
                    Located::Cached(id) => {
                        if let Some(cache) = self.customers {
                            cache.forget(id);
                        }
                        located = self.locate(customer, false, requests, observe).await?;
                        continue;
                    }
                    _ => return Err(failure),
                },
                Err(conflict)
                    if conflict.status == Some(409)
                        && matches!(located, Located::New)
                        && !looked_up_after_conflict =>
                {
                    looked_up_after_conflict = true;
                    located = self.locate(customer, false, requests, observe).await?;
                    if matches!(located, Located::New) {
                        return Err(conflict);
                    }
                    continue;
                }
                result => result?,
            };
            // A new customer's id: one unusable in a URL is a malformed answer (D6).
            let created = match located {
                Located::New => created_customer_id(&body)?,
                _ => None,
            };
            if let (Some(id), Some(sent)) = (&created, self.unchanged) {
                sent.sent(id, &write.body);
                self.record_fleet_body(id, body_digest(&write.body), observe)
                    .await;
            }
            if let CustomerRef::Lookups(lookups) = customer {
                let id = match located {
                    Located::Found(id) => Some(id),
                    Located::New => created,
                    Located::Known(_) | Located::Cached(_) => None,
                };
                if let Some(id) = id {
                    let paths: Vec<&str> = lookups.iter().map(|l| l.path.as_str()).collect();
                    if let Some(cache) = self.customers {
                        cache.remember(paths.iter().copied(), &id);
                    }
                    self.remember_fleet_customer(&paths, &id, observe).await;
                }
            }
            if write.body.get("company").is_some() {
                observe(Observation::CustomerLinked);
            }
            return Ok(Written::Sent(status));
        }
    }

    /// Whether the fleet's last body for customer `id` is `body`. A ledger that cannot
    /// answer says no: the update is sent.
    async fn fleet_last_body_is(
        &self,
        ledger: &DeliveredLedger,
        id: &str,
        body: &Value,
        observe: &mut Observer<'_>,
    ) -> bool {
        match ledger.last_body(id).await {
            Ok(last) => last == Some(body_digest(body)),
            Err(problem) => {
                observe(Observation::LedgerError);
                tracing::warn!(error = %problem, "dedup ledger unread: the update is sent");
                false
            }
        }
    }

    /// The customer id the fleet's ledger holds for the first of `paths`; `None` without
    /// a ledger or when it cannot answer (the look-ups run).
    async fn fleet_customer(&self, paths: &[&str], observe: &mut Observer<'_>) -> Option<String> {
        let ledger = self.ledger?;
        match ledger.customer_for(paths).await {
            Ok(id) => id,
            Err(problem) => {
                observe(Observation::LedgerError);
                tracing::warn!(error = %problem, "dedup ledger unread: the customer is looked up");
                None
            }
        }
    }

    /// Shares with the fleet that `paths` lead to customer `id`.
    async fn remember_fleet_customer(&self, paths: &[&str], id: &str, observe: &mut Observer<'_>) {
        let Some(ledger) = self.ledger else {
            return;
        };
        if let Err(problem) = ledger.remember_customer(paths, id).await {
            observe(Observation::LedgerError);
            tracing::warn!(error = %problem, "dedup ledger not written");
        }
    }

    /// Tells the fleet's ledger what customer `id` holds now (a body digest, or
    /// [`UNKNOWN_BODY`] after a failed write).
    async fn record_fleet_body(&self, id: &str, body: u128, observe: &mut Observer<'_>) {
        let Some(ledger) = self.ledger else {
            return;
        };
        if let Err(problem) = ledger.record_body(id, body).await {
            observe(Observation::LedgerError);
            tracing::warn!(error = %problem, "dedup ledger not written");
        }
    }

    /// Spec 12.1, 12.3: an identify's company id; `None` when it cannot be linked
    /// (reported), `Err` when the event must be retried.
    async fn identify_company(
        &self,
        company: &CompanyRef,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Attempted<Option<String>> {
        let _flight = self.single_flight(company).await;
        let resolved = match self
            .find_company(&company.lookups, true, requests, observe)
            .await?
        {
            Resolution::Found(found) => Ok(found.id),
            Resolution::Unlinkable(reason, _) => Err(reason),
            Resolution::NotFound => match company.create_write() {
                // Nothing to create it with: no valid name (12.4).
                None => Err(NotLinked::NotFound),
                Some(create) => match self
                    .create_company(&create, company, requests, observe)
                    .await?
                {
                    Creation::Created(id) => Ok(id),
                    Creation::Found(found) => Ok(found.id),
                    Creation::Unlinkable(reason, _) => Err(reason),
                },
            },
        };
        match resolved {
            Ok(id) => Ok(Some(id)),
            Err(reason) => {
                observe(Observation::Company(CompanyAction::NotLinked(reason)));
                Ok(None)
            }
        }
    }

    /// Spec 12.2 step 4: the group's company by its groupId: updated when found (a cached
    /// id Kustomer no longer knows is forgotten and looked up again), created when not.
    async fn group_company(
        &self,
        group: &GroupPlan,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Attempted<String> {
        let company = &group.company;
        let _flight = self.single_flight(company).await;
        let mut use_cache = true;
        loop {
            let found = match self
                .find_company(&company.lookups, use_cache, requests, observe)
                .await?
            {
                Resolution::Found(found) => found,
                Resolution::NotFound => {
                    let create = group.create_company()?;
                    match self
                        .create_company(&create, company, requests, observe)
                        .await?
                    {
                        Creation::Created(id) => return Ok(id),
                        // 409, then found by the look-up: updated like any found company.
                        Creation::Found(found) => found,
                        Creation::Unlinkable(_, failure) => return Err(failure),
                    }
                }
                Resolution::Unlinkable(_, failure) => return Err(failure),
            };
            match self
                .send(&group.update_company(&found.id), requests, observe)
                .await
            {
                Ok(_) => {
                    observe(Observation::Company(CompanyAction::Updated));
                    return Ok(found.id);
                }
                Err(failure) if failure.status == Some(404) && found.cached => {
                    if let Some(cache) = self.companies {
                        cache.forget(&found.id);
                    }
                    use_cache = false;
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Holds the company's keys while this event resolves it (with the cache on).
    async fn single_flight(&self, company: &CompanyRef) -> Vec<SingleFlight<'_>> {
        match self.companies {
            Some(cache) => cache.single_flight_all(&company.keys).await,
            None => Vec::new(),
        }
    }

    /// Spec 12.3 points 1, 2, 4 and 6: `lookups` in order, each answered from the cache
    /// when it knows the answer, else by Kustomer. The id found is remembered under the
    /// keys of the look-ups that led to it.
    async fn find_company(
        &self,
        lookups: &[CompanyLookup],
        use_cache: bool,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Attempted<Resolution> {
        for (index, lookup) in lookups.iter().enumerate() {
            let led_to = &lookups[..=index];
            if let Some(cache) = self.companies.filter(|_| use_cache) {
                let cached = cache.find([lookup.cache_key.as_str()]);
                observe(Observation::CompanyCache {
                    hit: cached.is_some(),
                });
                if let Some(id) = cached {
                    self.remember_company(led_to, &id);
                    observe(Observation::Company(CompanyAction::Found));
                    return Ok(Resolution::Found(FoundCompany { id, cached: true }));
                }
            }
            let request = Request {
                endpoint: Endpoint::CompanyLookup,
                method: http::Method::GET,
                path: &lookup.path,
                body: None,
                path_value: match lookup.by {
                    kustomer_mapping::CompanyLookupBy::ExternalId => "company externalId",
                    kustomer_mapping::CompanyLookupBy::Name(_) => "company name",
                },
            };
            let response = self.exchange(request, requests, observe).await?;
            match classify_company_lookup(&response, lookup)? {
                CompanyAnswer::Found(id) => {
                    self.remember_company(led_to, &id);
                    observe(Observation::Company(CompanyAction::Found));
                    return Ok(Resolution::Found(FoundCompany { id, cached: false }));
                }
                CompanyAnswer::NotFound => {}
                CompanyAnswer::Unlinkable { reason, failure } => {
                    return Ok(Resolution::Unlinkable(reason, failure))
                }
            }
        }
        Ok(Resolution::NotFound)
    }

    /// Spec 12.3 point 5: `POST /v1/companies`. A 409 (created elsewhere a moment ago)
    /// runs the first look-up once more; a refusal (4xx) leaves the company unlinked.
    async fn create_company(
        &self,
        create: &Write,
        company: &CompanyRef,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Attempted<Creation> {
        match self.send(create, requests, observe).await {
            Ok((_, body)) => match created_company_id(&body) {
                Some(id) => {
                    if let Some(cache) = self.companies {
                        cache.remember(company.keys.iter().map(String::as_str), &id);
                    }
                    observe(Observation::Company(CompanyAction::Created));
                    Ok(Creation::Created(id))
                }
                None => Ok(Creation::Unlinkable(
                    NotLinked::BadAnswer,
                    Failure::new(
                        FailureClass::Transient,
                        Some(502),
                        "Error while sending to Kustomer: the company create answer has no company id",
                    ),
                )),
            },
            Err(failure) if failure.status == Some(409) => {
                let first = company.lookups.get(..1).unwrap_or_default();
                Ok(
                    match self
                        .find_company(first, false, requests, observe)
                        .await?
                    {
                        Resolution::Found(found) => Creation::Found(found),
                        Resolution::NotFound => Creation::Unlinkable(NotLinked::Conflict, failure),
                        Resolution::Unlinkable(reason, failure) => {
                            Creation::Unlinkable(reason, failure)
                        }
                    },
                )
            }
            Err(failure) if !failure.class.is_retryable() => {
                Ok(Creation::Unlinkable(NotLinked::CreateRefused, failure))
            }
            Err(failure) => Err(failure),
        }
    }

    fn remember_company(&self, lookups: &[CompanyLookup], id: &str) {
        if let Some(cache) = self.companies {
            cache.remember(lookups.iter().map(|l| l.cache_key.as_str()), id);
        }
    }

    async fn send(
        &self,
        write: &Write,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Result<(u16, Bytes), Failure> {
        let method = match write.method {
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
        };
        let request = Request {
            endpoint: Endpoint::of(write),
            method,
            path: &write.path,
            body: Some(&write.body),
            // Only an update's path carries a value: the customer's or company's id.
            path_value: if write.path.starts_with("/v1/companies") {
                "company id"
            } else {
                "customer id"
            },
        };
        let response = self.exchange(request, requests, observe).await?;
        Ok((classify_write(&response)?, response.body))
    }

    /// One request: checked, paced, sent, observed. A target too long for a URL fails
    /// the event for good (naming the field in the path, never its value) and counts
    /// nothing.
    async fn exchange(
        &self,
        request: Request<'_>,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Result<HttpResponse, Failure> {
        let Request {
            endpoint,
            method,
            path,
            body,
            path_value,
        } = request;
        let Some(uri) = request_uri(self.base, path) else {
            return Err(Failure::from_status(
                400,
                format!("the {path_value} is too long to fit in a Kustomer URL"),
            ));
        };
        *requests += 1;
        let reservation = match self.pacer {
            Some(pacer) => Some(pacer.before_request().await),
            None => None,
        };
        let response = self.client.request(method, uri, self.api_key, body).await;
        let rate_limit = response.as_ref().map(|r| r.rate_limit).unwrap_or_default();
        if let Some(reservation) = reservation {
            reservation.answered(&rate_limit);
        }
        observe(Observation::Exchange {
            endpoint,
            status: response.as_ref().ok().map(|r| r.status),
            rate_limit,
        });
        response
    }
}

/// One request to Kustomer, relative to the base endpoint.
struct Request<'a> {
    endpoint: Endpoint,
    method: http::Method,
    path: &'a str,
    body: Option<&'a Value>,
    /// The field the path carries (`email`, `customer id`, ...): named in the error when
    /// the path is too long for a URL, where its value never is.
    path_value: &'static str,
}
