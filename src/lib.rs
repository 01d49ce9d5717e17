//! rudder-kustomer: RudderStack events → Kustomer, from AWS Lambda.
//!
//! How an event flows, one folder per step:
//!
//! ```text
//! entry/      the doors: webhook (API Gateway), sqs, direct: decode, deliver, dispose
//!   │           (answer, report for retry, park in a queue), answer
//!   ▼
//! pipeline/   schedule: user chains on bounded workers, retry, pacing, customer cache
//!   │
//!   ▼         attempt: one event, once
//! kustomer_mapping (the mapping/ crate), pure: event + settings → plan (look-ups,
//!   │           write body), fitted to Kustomer's contract
//!   ▼
//! kustomer/   the HTTP client and the classification of Kustomer's answers
//!   ▼
//! outcome     every event ends as one Report: delivered or failed, with its class
//! ```
//!
//! Beside the flow: `envelope` (SQS/SNS/EventBridge bodies → events, for the doors and the
//! command line), `aws/` (Secrets Manager, SQS), `digest` (SHA-256 for SQS FIFO ids and the
//! skip caches), `settings/` (the function's environment),
//! `telemetry` (JSON logs, EMF metrics), `cli/` (the `rudder-kustomer plan|send` command
//! line over the same pipeline).
//!
//! Feature `deliver` (default) is everything that talks to Kustomer or AWS; without it the
//! crate is the offline dry run `rudder-kustomer plan` alone (`make run`).

#[cfg(feature = "deliver")]
pub mod aws;
pub mod cli;
#[cfg(feature = "deliver")]
pub mod digest;
#[cfg(feature = "deliver")]
pub mod entry;
pub mod envelope;
#[cfg(feature = "deliver")]
pub mod kustomer;
pub mod outcome;
#[cfg(feature = "deliver")]
pub mod pipeline;
pub mod settings;
#[cfg(feature = "deliver")]
pub mod telemetry;
