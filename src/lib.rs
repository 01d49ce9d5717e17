//! rudder-kustomer: RudderStack events → Kustomer, from AWS Lambda.
//!
//! Data flow: `entry` (envelope decoding per door) → `delivery` (one pipeline) →
//! `mapping` (pure: event → plan) + `kustomer` (HTTP client) → outcome per event.

pub mod event;
pub mod mapping;
pub mod settings;
pub mod config;
pub mod delivery;
pub mod kustomer;
pub mod outcome;
pub mod pipeline;
pub mod telemetry;
pub mod entry;
pub mod secrets;
pub mod queue;
