//! The doors: one Lambda handler, dispatched on the payload's shape. Each door only
//! decodes its envelope into events and turns the pipeline's reports into its answer.
//!
//! - `webhook`: API Gateway HTTP API (2.0) / REST (1.0) proxy events, Lambda function URLs
//! - `sqs`: SQS batches (bodies: event, array, EventBridge or SNS envelopes)
//! - `direct`: RudderStack's AWS Lambda destination (one event or an array)

//!
//! `handler` dispatches to them; `app` is what a container builds once; `error` is what
//! Lambda records when an invocation fails as a whole.

mod app;
mod direct;
mod error;
mod handler;
mod sqs;
mod webhook;

pub use app::{App, StartupError};
pub use error::InvocationError;
use handler::{
    answer, answer_by, failure_summary, message_id, typed, Invocation, MAX_LISTED_FAILURES,
};
pub use handler::{handle, Door, TEST_PANIC_TRIGGER};
