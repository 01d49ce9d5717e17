//! What every door shares: which door a payload came through, the invocation it serves,
//! and the helpers that turn payloads, deadlines and reports into its answer.

use serde_json::Value;
use tokio::time::Instant;

use super::InvocationError;
use crate::aws::sqs::FifoKeys;
use crate::outcome::Report;
use crate::pipeline::skip::event_key;
use crate::pipeline::user_of;

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

/// The invocation a door serves: Lambda's request id (for logs) and deadline.
pub(super) struct Invocation<'a> {
    pub(super) request_id: &'a str,
    pub(super) deadline: Instant,
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
pub(super) fn into_json<T: serde::Serialize>(response: T) -> Result<Value, InvocationError> {
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

/// The group of a message that holds no event with a user (a FIFO queue needs one).
const NO_USER_GROUP: &str = "rudder-kustomer";

/// The FIFO keys of a message the function sends (retry queue, dead-letter queue, the
/// webhook's queue mode): `group`, else the user (userId, else anonymousId) of the first
/// event it holds; the deduplication id from the `messageId` of the one event it holds
/// (with its type and user: [`event_key`]), else `fallback_id` (the SQS message id it came
/// in), else the body itself. Standard queues ignore them.
pub(super) fn fifo_keys(
    events: &[Value],
    group: Option<&str>,
    fallback_id: Option<&str>,
    body: &str,
) -> FifoKeys {
    let user = events.first().and_then(user_of);
    let group = group.or(user.as_deref()).unwrap_or(NO_USER_GROUP);
    let one = match events {
        [event] => event_key(event),
        _ => None,
    };
    FifoKeys::new(group, one.as_deref().or(fallback_id).unwrap_or(body))
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
