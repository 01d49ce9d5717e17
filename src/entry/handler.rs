//! The handler: recognises the door by the payload's shape, runs it, contains panics,
//! flushes the metrics; and the helpers the doors share.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::time::Instant;

use super::{direct, sqs, webhook, App, InvocationError};
use crate::outcome::Report;
use crate::telemetry;

/// Which door a payload came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Webhook,
    Sqs,
    Direct,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Webhook => "webhook",
            Door::Sqs => "sqs",
            Door::Direct => "direct",
        }
    }

    /// Recognises the payload's shape; an unknown one is named by its top-level keys
    /// (never its values, which may be personal data).
    pub fn of(payload: &Value) -> Result<Door, InvocationError> {
        match payload {
            Value::Array(_) => Ok(Door::Direct),
            Value::Object(object) => {
                if object.contains_key("requestContext")
                    && (object.contains_key("httpMethod") || object.contains_key("rawPath"))
                {
                    Ok(Door::Webhook)
                } else if object
                    .get("Records")
                    .and_then(|records| records.get(0))
                    .and_then(|record| record.get("eventSource"))
                    .is_some_and(|source| source == "aws:sqs")
                {
                    Ok(Door::Sqs)
                } else if [
                    "type",
                    "event",
                    "userId",
                    "anonymousId",
                    "messageId",
                    "detail",
                ]
                .iter()
                .any(|key| object.contains_key(*key))
                {
                    Ok(Door::Direct)
                } else {
                    let keys: Vec<&str> = object.keys().map(String::as_str).take(20).collect();
                    Err(InvocationError::UnsupportedPayload(format!(
                        "unsupported payload: not an API Gateway, SQS or RudderStack event (top-level keys: [{}])",
                        keys.join(", ")
                    )))
                }
            }
            other => Err(InvocationError::UnsupportedPayload(format!(
                "unsupported payload: a JSON {}, not an object or array",
                match other {
                    Value::Null => "null",
                    Value::Bool(_) => "boolean",
                    Value::Number(_) => "number",
                    _ => "string",
                }
            ))),
        }
    }
}

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

/// The invocation a door serves: Lambda's request id (for logs) and deadline.
pub(super) struct Invocation<'a> {
    pub(super) request_id: &'a str,
    pub(super) deadline: Instant,
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
            answer(sqs::handle(app, &batch, invocation).await)
        }
        Door::Direct => direct::handle(app, payload, invocation).await,
    }
}

/// The payload as the door's `aws_lambda_events` type. serde's message may quote a value
/// of the payload, so the error names only the shape and where it broke.
pub(super) fn typed<T: serde::de::DeserializeOwned>(
    payload: Value,
    what: &str,
) -> Result<T, InvocationError> {
    serde_json::from_value(payload).map_err(|error| {
        InvocationError::UnsupportedPayload(format!(
            "unsupported payload: not {what} ({:?} error at line {}, column {})",
            error.classify(),
            error.line(),
            error.column()
        ))
    })
}

/// A door's typed answer as the JSON Lambda returns.
pub(super) fn answer<T: serde::Serialize>(response: T) -> Result<Value, InvocationError> {
    serde_json::to_value(response).map_err(|_| InvocationError::InternalError)
}

/// When a door must start answering: `margin` before Lambda's `deadline`, or now when
/// that has passed.
pub(super) fn answer_by(deadline: Instant, margin: std::time::Duration) -> Instant {
    deadline.checked_sub(margin).unwrap_or_else(Instant::now)
}

/// The event's RudderStack messageId, for logs.
pub(super) fn message_id(event: &Value) -> Option<&str> {
    event.get("messageId").and_then(Value::as_str)
}

/// At most this many failed events are listed in an answer (the rest are counted), and
/// each message is cut to [`MAX_LISTED_MESSAGE_CHARS`]: an answer stays far below Lambda's
/// 6 MB response limit whatever the batch.
pub(super) const MAX_LISTED_FAILURES: usize = 100;
const MAX_LISTED_MESSAGE_CHARS: usize = 1_000;

/// One failed event in a JSON summary: its position, class, status and message.
pub(super) fn failure_summary(
    index: usize,
    event: Option<&Value>,
    report: &Report,
) -> Option<Value> {
    let failure = report.outcome.failure()?;
    let message: String = failure
        .message
        .chars()
        .take(MAX_LISTED_MESSAGE_CHARS)
        .collect();
    Some(serde_json::json!({
        "index": index,
        "messageId": event.and_then(message_id),
        "class": failure.class.as_str(),
        "status": failure.status,
        "message": message,
    }))
}
