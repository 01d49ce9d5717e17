//! The doors: one Lambda handler, dispatched on the payload's shape. Each door reads as
//! decode (its envelope into events), deliver (the pipeline), dispose (where failures go),
//! answer.
//!
//! - `handler`: recognises the door, runs it, contains panics, flushes the metrics
//! - `webhook`: API Gateway HTTP API (2.0) / REST (1.0) proxy events, Lambda function URLs
//! - `sqs`: SQS batches (bodies: event, array, EventBridge or SNS envelopes)
//! - `direct`: RudderStack's AWS Lambda destination (one event or an array)
//! - `disposition`: failure routing as data, shared by `sqs` and `direct`
//! - `invocation`: what the doors share (the door, the invocation, answer helpers)
//! - `app`: what a container builds once; `error`: what Lambda records when an
//!   invocation fails as a whole

mod app;
mod direct;
mod disposition;
mod error;
mod handler;
mod invocation;
mod sqs;
mod webhook;

pub use app::{App, StartupError};
pub use error::InvocationError;
pub use handler::{handle, TEST_PANIC_TRIGGER};
pub use invocation::Door;
