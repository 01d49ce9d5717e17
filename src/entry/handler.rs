//! The handler: recognises the door by the payload's shape, runs it, contains panics,
//! flushes the metrics.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::time::Instant;

use super::invocation::{into_json, typed, Door, Invocation};
use super::{direct, sqs, webhook, App, InvocationError};
use crate::telemetry;

/// Debug builds only: with this variable set, a payload holding the key
/// `rudderKustomerTestPanic` panics, so tests can prove a panic stays in its invocation.
pub const TEST_PANIC_TRIGGER: &str = "RUDDER_KUSTOMER_TEST_PANIC_TRIGGER";

/// Handles one invocation. `deadline` is the Lambda's own deadline.
///
/// A panic (a bug) ends this invocation with an error, which Lambda, SQS and RudderStack
/// all retry, and the container keeps serving: the release profile unwinds for this.
pub async fn handle(
    app: &App,
    payload: Value,
    request_id: &str,
    deadline: Instant,
) -> Result<Value, InvocationError> {
    let invocation = Invocation {
        request_id,
        deadline,
    };
    let answer = AssertUnwindSafe(dispatch(app, payload, &invocation))
        .catch_unwind()
        .await
        .unwrap_or(Err(InvocationError::InternalError));
    if let Err(problem) = &answer {
        tracing::error!(
            request_id,
            error_type = problem.error_type(),
            error = %problem,
            "invocation failed"
        );
    }
    telemetry::flush_metrics(
        app.pipeline().metrics(),
        &app.metrics_namespace,
        &app.function_name,
    );
    answer
}

async fn dispatch(
    app: &App,
    payload: Value,
    invocation: &Invocation<'_>,
) -> Result<Value, InvocationError> {
    #[cfg(debug_assertions)]
    if payload.get("rudderKustomerTestPanic").is_some()
        && std::env::var_os(TEST_PANIC_TRIGGER).is_some()
    {
        panic!("test-only panic trigger");
    }
    match Door::of(&payload)? {
        Door::Webhook => webhook::handle(app, payload, invocation).await,
        Door::Sqs => {
            let batch = typed(payload, "an SQS event")?;
            into_json(sqs::handle(app, &batch, invocation).await)
        }
        Door::Direct => direct::handle(app, payload, invocation).await,
    }
}
