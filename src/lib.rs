//! rudder-kustomer: RudderStack events → Kustomer, from AWS Lambda.
//!
//! How an event flows, one folder per step:
//!
//! ```text
//! entry/      the doors: webhook (API Gateway), sqs, direct; decode envelopes, answer
//!   │           each door from the events' outcomes, park or re-queue failures
//!   ▼
//! pipeline/   schedule: user chains on bounded workers, retry, pacing, customer cache
//!   │
//!   ▼         attempt: one event, once
//! mapping/    pure: event + flags → plan (look-ups, write body), fitted to Kustomer's
//!   │           contract (fit.rs)
//!   ▼
//! kustomer/   the HTTP client and the classification of Kustomer's answers
//!   ▼
//! outcome     every event ends as one Report: delivered or failed, with its class
//! ```
//!
//! Beside the flow: `aws/` (Secrets Manager, SQS), `settings/` (destination settings and
//! the function's environment), `telemetry` (JSON logs, EMF metrics), `cli/` (the
//! `rudder-kustomer plan|send` command line over the same pipeline).

pub mod aws;
pub mod cli;
pub mod entry;
pub mod kustomer;
pub mod mapping;
pub mod outcome;
pub mod pipeline;
pub mod settings;
pub mod telemetry;
