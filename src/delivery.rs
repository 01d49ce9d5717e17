//! Delivery: runs a mapping [`Plan`] over the Kustomer client and returns one outcome.
//! [`deliver_once`] is a single attempt (the conformance runner uses it); the Lambda's
//! [`crate::pipeline`] adds retries, key reloads, ordering and concurrency around it.

use serde_json::Value;

use crate::kustomer::{classify_lookup, classify_write, HttpResponse, KustomerClient, LookupResult, RateLimit};
use crate::mapping::{map_event, CustomerRef, Method, Plan, Write};
use crate::settings::{BaseEndpoint, Destination, MappingFlags, Secret};

pub use crate::outcome::{Delivered, Failure, FailureClass, Outcome};

/// One attempt at one event: map, look up (identify), write.
pub async fn deliver_once(client: &KustomerClient, destination: &Destination, event: &Value) -> Outcome {
    let target = Target {
        client,
        base: &destination.base,
        api_key: &destination.api_key,
        flags: &destination.flags,
    };
    match target.attempt(event, &mut |_| {}).await {
        Ok(delivered) => Outcome::Delivered(delivered),
        Err(failure) => Outcome::Failed(failure),
    }
}

/// Which Kustomer endpoint a request went to (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Lookup,
    CreateCustomer,
    UpdateCustomer,
    IdentityEvent,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Lookup => "customers.lookup",
            Endpoint::CreateCustomer => "customers.create",
            Endpoint::UpdateCustomer => "customers.update",
            Endpoint::IdentityEvent => "tracking.identityEvent",
        }
    }

    fn of(write: &Write) -> Endpoint {
        match write.method {
            Method::Put => Endpoint::UpdateCustomer,
            Method::Post if write.path == "/v1/customers" => Endpoint::CreateCustomer,
            Method::Post => Endpoint::IdentityEvent,
        }
    }
}

/// One request/response as the pipeline observes it (metrics, pacing).
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub endpoint: Endpoint,
    /// `None` when no HTTP response came back.
    pub status: Option<u16>,
    pub rate_limit: RateLimit,
}

/// Everything an attempt needs, borrowed so that retries re-use it.
pub struct Target<'a> {
    pub client: &'a KustomerClient,
    pub base: &'a BaseEndpoint,
    pub api_key: &'a Secret,
    pub flags: &'a MappingFlags,
}

impl Target<'_> {
    /// Runs one event once. `observe` sees every request's endpoint, status and rate limit.
    pub async fn attempt(
        &self,
        event: &Value,
        observe: &mut (dyn FnMut(Exchange) + Send),
    ) -> Result<Delivered, Failure> {
        let plan = map_event(event, self.flags)?;
        let mut requests = 0u32;
        let write = match plan {
            Plan::Tracking(write) => write,
            Plan::Identify(identify) => match &identify.customer {
                CustomerRef::Known(id) => identify.update(id),
                CustomerRef::Lookups(lookups) => {
                    let mut found = None;
                    // Sequential on purpose: the spec orders the look-ups and stops at the first hit.
                    for lookup in lookups {
                        requests += 1;
                        let response = self.client.lookup(self.base, self.api_key, lookup).await;
                        let response = observed(Endpoint::Lookup, response, observe)?;
                        if let LookupResult::Found(id) = classify_lookup(&response)? {
                            found = Some(id);
                            break;
                        }
                    }
                    match found {
                        Some(id) => identify.update(&id),
                        None => identify.create(),
                    }
                }
            },
        };
        requests += 1;
        let response = self.client.write(self.base, self.api_key, &write).await;
        let response = observed(Endpoint::of(&write), response, observe)?;
        let write_status = classify_write(&response)?;
        Ok(Delivered {
            requests,
            write_status,
        })
    }
}

fn observed(
    endpoint: Endpoint,
    response: Result<HttpResponse, Failure>,
    observe: &mut (dyn FnMut(Exchange) + Send),
) -> Result<HttpResponse, Failure> {
    observe(Exchange {
        endpoint,
        status: response.as_ref().ok().map(|r| r.status),
        rate_limit: response.as_ref().map(|r| r.rate_limit).unwrap_or_default(),
    });
    response
}
