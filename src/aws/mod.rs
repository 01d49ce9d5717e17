//! The AWS services the function uses, through the AWS SDK for Rust.
//!
//! - `sdk`: the SDK configuration, loaded once per container, and error texts
//! - `secrets`: the Kustomer API key and webhook tokens from Secrets Manager, cached
//! - `ledger`: the fleet's ledger of delivered events in DynamoDB (`DEDUP_TABLE`)
//! - `sqs`: the dead-letter and retry queues (and the in-process stand-in for tests)

pub mod ledger;
mod sdk;
pub mod secrets;
pub mod sqs;

pub(crate) use sdk::error_chain;
pub use sdk::{given_or_shared, shared_config};
