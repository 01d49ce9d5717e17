//! Delivery: runs a mapping [`Plan`] over the Kustomer client and returns one outcome.
//! [`deliver_once`] is a single attempt with no state (the conformance runner uses it);
//! the Lambda's [`crate::pipeline`] adds retries, key reloads, ordering, concurrency,
//! pacing and the customer-id cache around [`Attempt::run`].

use bytes::Bytes;
use serde_json::Value;

use crate::kustomer::{
    classify_lookup, classify_write, request_uri, HttpResponse, KustomerClient, LookupResult,
};
use crate::pipeline::customer_cache::CustomerCache;
use crate::pipeline::pacing::Pacer;
use crate::telemetry::{Endpoint, Observation};
use kustomer_mapping::settings::{BaseEndpoint, Destination, MappingFlags, Secret};
use kustomer_mapping::values::{encode_path_segment, is_truthy};
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
    pub pacer: Option<&'a Pacer>,
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
        let update;
        let write = match plan {
            Plan::Tracking(write) => write,
            Plan::Identify(identify) => match &identify.customer {
                CustomerRef::Known(id) => {
                    update = identify.update(id);
                    &update
                }
                CustomerRef::Lookups(lookups) => {
                    return self
                        .identify(identify, lookups, &mut requests, observe)
                        .await;
                }
            },
        };
        let (write_status, _) = self.send(write, &mut requests, observe).await?;
        Ok(Delivered {
            requests,
            write_status,
        })
    }

    /// Spec 5.2: cached id, else the look-ups in order, then update or create.
    async fn identify(
        &self,
        identify: &IdentifyPlan,
        lookups: &[Lookup],
        requests: &mut u32,
        observe: &mut Observer<'_>,
    ) -> Result<Delivered, Failure> {
        let paths = || lookups.iter().map(|lookup| lookup.path.as_str());
        if let Some(id) = self.cache.and_then(|cache| cache.find(paths())) {
            observe(Observation::CacheHit);
            match self.send(&identify.update(&id), requests, observe).await {
                // The customer was merged or deleted since: forget it and look it up again.
                Err(failure) if failure.status == Some(404) => {
                    if let Some(cache) = self.cache {
                        cache.forget(&id);
                    }
                }
                result => {
                    return result.map(|(write_status, _)| Delivered {
                        requests: *requests,
                        write_status,
                    })
                }
            }
        }
        let mut found = None;
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
                found = Some(id);
                break;
            }
        }
        let write = match &found {
            Some(id) => identify.update(id),
            None => identify.create(),
        };
        let (write_status, body) = self.send(&write, requests, observe).await?;
        if let Some(cache) = self.cache {
            if let Some(id) = found.or_else(|| created_id(&body)) {
                cache.remember(paths(), &id);
            }
        }
        Ok(Delivered {
            requests: *requests,
            write_status,
        })
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

/// The new customer's id from a create answer (`{"data":{"id":…}}`), encoded for a path.
fn created_id(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let id = body.get("data")?.get("id")?;
    is_truthy(id).then(|| encode_path_segment(id))
}
