//! Delivery: runs a mapping [`Plan`] over the Kustomer client and returns one outcome.
//! [`deliver_once`] is a single attempt with no state (the conformance runner uses it);
//! the Lambda's [`crate::pipeline`] adds retries, key reloads, ordering, concurrency,
//! pacing, the customer-id cache and the unchanged-update cache around [`Attempt::run`].

use bytes::Bytes;
use serde_json::Value;

use crate::kustomer::{
    classify_lookup, classify_write, created_customer_id, request_uri, HttpResponse,
    KustomerClient, LookupResult,
};
use crate::outcome::Skipped;
use crate::pipeline::customer_cache::CustomerCache;
use crate::pipeline::pacing::Pacer;
use crate::pipeline::skip::UnchangedUpdates;
use crate::telemetry::{Endpoint, Observation};
use kustomer_mapping::settings::{BaseEndpoint, Destination, MappingFlags, Secret};
use kustomer_mapping::{map_event, CustomerRef, IdentifyPlan, Lookup, Method, Plan, Write};

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
        cache: None,
        unchanged: None,
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
    pub cache: Option<&'a CustomerCache>,
    /// The bodies last sent per customer: an identical update is not sent again.
    pub unchanged: Option<&'a UnchangedUpdates>,
    pub pacer: Option<&'a Pacer>,
}

/// What writing an event came to.
enum Written {
    /// Sent; the final write answered this status.
    Sent(u16),
    /// Not sent: the customer already has this body ([`UnchangedUpdates`]).
    Unchanged,
}

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
            Plan::Identify(identify) => match &identify.customer {
                CustomerRef::Known(id) => self.update(identify, id, &mut requests, observe).await?,
                CustomerRef::Lookups(lookups) => {
                    self.identify(identify, lookups, &mut requests, observe)
                        .await?
                }
            },
        };
        Ok(match written {
            Written::Sent(status) => Delivered::written(requests, status),
            Written::Unchanged => Delivered::skipped(requests, Skipped::Unchanged),
        })
    }

    /// Spec 5.2: cached id, else the look-ups in order, then update or create. A create
    /// answered 409 (someone created the customer since the look-ups: another container,
    /// another integration) runs the look-ups once more and updates the customer they find;
    /// the 409 stands only if they find none.
    async fn identify(
        &self,
        identify: &IdentifyPlan,
        lookups: &[Lookup],
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Result<Written, Failure> {
        let paths = || lookups.iter().map(|lookup| lookup.path.as_str());
        if let Some(id) = self.cache.and_then(|cache| cache.find(paths())) {
            observe(Observation::CacheHit);
            match self.update(identify, &id, requests, observe).await {
                // The customer was merged or deleted since: forget it and look it up again.
                Err(failure) if failure.status == Some(404) => {
                    if let Some(cache) = self.cache {
                        cache.forget(&id);
                    }
                }
                result => return result,
            }
        }
        let found = match self.look_up(lookups, requests, observe).await? {
            Some(id) => id,
            None => match self.create(identify, requests, observe).await {
                Ok((status, created)) => {
                    if let (Some(cache), Some(id)) = (self.cache, created) {
                        cache.remember(paths(), &id);
                    }
                    return Ok(Written::Sent(status));
                }
                Err(conflict) if conflict.status == Some(409) => {
                    let again = self.look_up(lookups, requests, observe).await?;
                    again.ok_or(conflict)?
                }
                Err(failure) => return Err(failure),
            },
        };
        let written = self.update(identify, &found, requests, observe).await?;
        if let Some(cache) = self.cache {
            cache.remember(paths(), &found);
        }
        Ok(written)
    }

    /// The look-ups in order: the first customer found (sequential on purpose: the spec
    /// orders them and stops at the first hit).
    async fn look_up(
        &self,
        lookups: &[Lookup],
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Result<Option<String>, Failure> {
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
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Creates the customer: the write's status and the new id, when the answer names one
    /// (an id unusable in a URL fails the attempt, D6). The body is remembered as sent.
    async fn create(
        &self,
        identify: &IdentifyPlan,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Result<(u16, Option<String>), Failure> {
        let write = identify.create();
        let (status, body) = self.send(&write, requests, observe).await?;
        let id = created_customer_id(&body)?;
        if let (Some(unchanged), Some(id)) = (self.unchanged, &id) {
            unchanged.sent(id, &write.body);
        }
        Ok((status, id))
    }

    /// Updates customer `id`, unless this container last sent it this very body (within
    /// the TTL): then nothing is sent. A 2xx remembers the body; a failure forgets it.
    async fn update(
        &self,
        identify: &IdentifyPlan,
        id: &str,
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Result<Written, Failure> {
        let write = identify.update(id);
        if self
            .unchanged
            .is_some_and(|sent| sent.is_unchanged(id, &write.body))
        {
            return Ok(Written::Unchanged);
        }
        let result = self.send(&write, requests, observe).await;
        if let Some(unchanged) = self.unchanged {
            match &result {
                Ok(_) => unchanged.sent(id, &write.body),
                Err(_) => unchanged.forget(id),
            }
        }
        result.map(|(status, _)| Written::Sent(status))
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
            // Only an update's path carries a value: the customer id.
            path_value: "customer id",
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
