//! rudder-kustomer: RudderStack events → Kustomer, from AWS Lambda.
//!
//! Data flow: `entry` (envelope decoding per door) → `delivery` (one pipeline) →
//! `mapping` (pure: event → plan) + `kustomer` (HTTP client) → outcome per event.

pub mod aws;
pub mod cache;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod entry;
pub mod event;
pub mod kustomer;
pub mod mapping;
pub mod outcome;
pub mod pacing;
pub mod pipeline;
pub mod queue;
pub mod retry;
pub mod secrets;
pub mod settings;
pub mod telemetry;
