//! The Kustomer HTTP client: look-ups, writes, and the classification of every answer
//! (spec 5.2–5.4, 8). Built on hyper-util + rustls: the path is sent exactly as built
//! (reqwest's URL parser would turn `%2E%2E` back into a dot segment, breaking D2).

mod client;
mod response;

pub use client::{
    read_rate_limit, request_uri, ClientOptions, ClientSetupError, HttpResponse, KustomerClient,
    RateLimit, MAX_ADVERTISED_WAIT,
};
pub use response::{
    classify_company_lookup, classify_lookup, classify_write, created_company_id,
    created_customer_id, CompanyAnswer, LookupResult, LOOKUP_ERROR, MAX_CUSTOMER_ID_CHARS,
};
