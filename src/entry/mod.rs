//! The doors: one Lambda handler, dispatched on the payload's shape. Each door only
//! decodes its envelope into events and turns the pipeline's reports into its answer.
//!
//! - `webhook`: API Gateway HTTP API (2.0) / REST (1.0) proxy events, Lambda function URLs
//! - `sqs`: SQS batches (bodies: event, array, EventBridge or SNS envelopes)
//! - `direct`: RudderStack's AWS Lambda destination (one event or an array)

mod direct;
mod envelope;
mod sqs;
mod webhook;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Config, WebhookAuth};
use crate::pipeline::{Pipeline, Report};
use crate::queue::{EventQueues, SqsQueues};
use crate::secrets::KeyProvider;
use crate::telemetry;

pub use envelope::{decode_events, decode_value, EnvelopeError};

/// Why the function cannot start; reported to Lambda's init-error call and logged.
#[derive(Debug)]
pub enum StartupError {
    /// A setting (environment variable) is missing or invalid.
    InvalidSetting(crate::settings::ConfigError),
    /// The HTTP client for Kustomer cannot be built (the system's TLS roots).
    ClientSetup(String),
}

impl StartupError {
    pub fn error_type(&self) -> &'static str {
        match self {
            StartupError::InvalidSetting(_) => "InvalidSetting",
            StartupError::ClientSetup(_) => "ClientSetup",
        }
    }
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartupError::InvalidSetting(problem) => problem.fmt(f),
            StartupError::ClientSetup(problem) => f.write_str(problem),
        }
    }
}

impl std::error::Error for StartupError {}

impl From<crate::settings::ConfigError> for StartupError {
    fn from(problem: crate::settings::ConfigError) -> Self {
        StartupError::InvalidSetting(problem)
    }
}

/// Everything the handler needs, built once per container.
pub struct App {
    pipeline: Pipeline,
    queues: Arc<dyn EventQueues>,
    webhook_auth: WebhookAuth,
    metrics_namespace: String,
    function_name: String,
}

impl App {
    /// Builds the app from the settings; no network IO (the secret is fetched at first need).
    pub fn new(config: &Config) -> Result<App, StartupError> {
        let client = crate::kustomer::KustomerClient::new(crate::kustomer::ClientOptions {
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
        })
        .map_err(StartupError::ClientSetup)?;
        Ok(App {
            pipeline: Pipeline {
                client,
                base: config.base.clone(),
                flags: config.flags,
                keys: crate::secrets::KeyProvider::new(
                    config.key_source.clone(),
                    config.secret_cache_ttl,
                ),
                max_attempts: config.max_attempts,
                max_in_flight: config.max_in_flight,
                metrics: Default::default(),
                cache: config.customer_cache_ttl.map(|ttl| {
                    crate::cache::CustomerCache::new(ttl, config.customer_cache_max_entries)
                }),
                pacer: crate::pacing::Pacer::new(
                    config.max_in_flight,
                    config.max_requests_per_minute,
                ),
            },
            queues: Arc::new(SqsQueues::new(
                config.retry_queue_url.clone(),
                config.dead_letter_queue_url.clone(),
            )),
            webhook_auth: config.webhook_auth,
            metrics_namespace: config.metrics_namespace.clone(),
            function_name: std::env::var("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|_| "rudder-kustomer".into()),
        })
    }

    /// The same app with other queues (in-process ones in tests, or SQS through an
    /// explicit SDK configuration).
    pub fn with_queues(mut self, queues: Arc<dyn EventQueues>) -> App {
        self.queues = queues;
        self
    }

    /// The same app with another source of the API key and webhook token.
    pub fn with_key_provider(mut self, keys: KeyProvider) -> App {
        self.pipeline.keys = keys;
        self
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}

/// Why an invocation failed as a whole (Lambda, SQS and RudderStack then retry it). The
/// variant's name is the `errorType` Lambda records; messages never quote event values.
#[derive(Debug)]
pub enum InvocationError {
    /// The payload is not an API Gateway request, an SQS batch or RudderStack events.
    UnsupportedPayload(String),
    /// A direct invocation's envelope (EventBridge) holds no usable event.
    BadEnvelope(EnvelopeError),
    /// A direct invocation's failed events could be neither retried nor parked.
    QueueUnavailable { unplaced: usize, received: usize },
    /// A bug: handling the invocation panicked.
    InternalError,
}

impl InvocationError {
    pub fn error_type(&self) -> &'static str {
        match self {
            InvocationError::UnsupportedPayload(_) => "UnsupportedPayload",
            InvocationError::BadEnvelope(_) => "BadEnvelope",
            InvocationError::QueueUnavailable { .. } => "QueueUnavailable",
            InvocationError::InternalError => "InternalError",
        }
    }
}

impl std::fmt::Display for InvocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvocationError::UnsupportedPayload(problem) => f.write_str(problem),
            InvocationError::BadEnvelope(problem) => write!(f, "unsupported payload: {problem}"),
            InvocationError::QueueUnavailable { unplaced, received } => write!(
                f,
                "{unplaced} of {received} events were neither delivered nor queued; failing the invocation so Lambda retries it"
            ),
            InvocationError::InternalError => f.write_str(
                "internal error while handling the invocation (a bug): failed so that its events are retried",
            ),
        }
    }
}

impl std::error::Error for InvocationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InvocationError::BadEnvelope(problem) => Some(problem),
            _ => None,
        }
    }
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

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
    let answer = AssertUnwindSafe(dispatch(app, payload, request_id, deadline))
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
        &app.pipeline.metrics,
        &app.metrics_namespace,
        &app.function_name,
    );
    answer
}

async fn dispatch(
    app: &App,
    payload: Value,
    request_id: &str,
    deadline: Instant,
) -> Result<Value, InvocationError> {
    #[cfg(debug_assertions)]
    if payload.get("rudderKustomerTestPanic").is_some()
        && std::env::var_os(TEST_PANIC_TRIGGER).is_some()
    {
        panic!("test-only panic trigger");
    }
    match Door::of(&payload)? {
        Door::Webhook => webhook::handle(app, payload, request_id, deadline).await,
        Door::Sqs => {
            let batch = typed(payload, "an SQS event")?;
            answer(sqs::handle(app, &batch, request_id, deadline).await)
        }
        Door::Direct => direct::handle(app, payload, request_id, deadline).await,
    }
}

/// The payload as the door's `aws_lambda_events` type. serde's message may quote a value
/// of the payload, so the error names only the shape and where it broke.
fn typed<T: serde::de::DeserializeOwned>(payload: Value, what: &str) -> Result<T, InvocationError> {
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
fn answer<T: serde::Serialize>(response: T) -> Result<Value, InvocationError> {
    serde_json::to_value(response).map_err(|_| InvocationError::InternalError)
}

/// `margin` before `deadline`, or now when that has passed.
fn before(deadline: Instant, margin: std::time::Duration) -> Instant {
    deadline.checked_sub(margin).unwrap_or_else(Instant::now)
}

/// The event's RudderStack messageId, for logs.
fn message_id(event: &Value) -> Option<&str> {
    event.get("messageId").and_then(Value::as_str)
}

/// At most this many failed events are listed in an answer (the rest are counted), and
/// each message is cut to [`MAX_LISTED_MESSAGE_CHARS`]: an answer stays far below Lambda's
/// 6 MB response limit whatever the batch.
const MAX_LISTED_FAILURES: usize = 100;
const MAX_LISTED_MESSAGE_CHARS: usize = 1_000;

/// One failed event in a JSON summary: its position, class, status and message.
fn failure_summary(index: usize, event: Option<&Value>, report: &Report) -> Option<Value> {
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
