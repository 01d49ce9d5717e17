//! The direct door: RudderStack's AWS Lambda destination invokes asynchronously with one
//! event or an array. Transient failures go to the function's own SQS queue (retried
//! there with SQS semantics), permanent ones to the dead-letter queue. Without those
//! queues, or when a send fails, the invocation fails so that Lambda's async retries and
//! on-failure destination take over.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::{message_id, App, InvocationError};
use crate::aws::sqs::{Parked, QueueError};
use crate::telemetry::log_outcome;

const ANSWER_MARGIN: Duration = Duration::from_secs(3);

pub(super) async fn handle(
    app: &App,
    payload: Value,
    request_id: &str,
    lambda_deadline: Instant,
) -> Result<Value, InvocationError> {
    let deadline = super::answer_by(lambda_deadline, ANSWER_MARGIN);
    let events = match payload {
        Value::Array(events) => events,
        // An EventBridge rule may target the function directly.
        Value::Object(ref object) if object.contains_key("detail-type") => {
            super::decode_value(payload).map_err(InvocationError::BadEnvelope)?
        }
        event => vec![event],
    };
    let reports = app.deliver_all(&events, deadline).await;
    let mut requeue = Vec::new();
    let mut park = Vec::new();
    for (event, report) in events.iter().zip(&reports) {
        log_outcome(request_id, message_id(event), "direct", report);
        if let Some(failure) = report.outcome.failure() {
            if failure.class.is_retryable() {
                requeue.push(event.to_string());
            } else {
                park.push(Parked {
                    body: event.to_string(),
                    failure: failure.clone(),
                    source: "direct",
                });
            }
        }
    }

    let mut unplaced = 0usize;
    if !requeue.is_empty() {
        if app.queues.has_retry_queue() {
            unplaced += count_errors(
                request_id,
                "retry queue",
                app.queues.requeue(&requeue).await,
            );
        } else {
            unplaced += requeue.len();
        }
    }
    if !park.is_empty() {
        if app.queues.has_dead_letter_queue() {
            unplaced += count_errors(
                request_id,
                "dead-letter queue",
                app.queues.park(&park).await,
            );
        } else {
            unplaced += park.len();
        }
    }
    let delivered = reports
        .iter()
        .filter(|r| r.outcome.failure().is_none())
        .count();
    if unplaced > 0 {
        return Err(InvocationError::QueueUnavailable {
            unplaced,
            received: events.len(),
        });
    }
    Ok(json!({
        "received": events.len(),
        "delivered": delivered,
        "requeued": requeue.len(),
        "parked": park.len(),
    }))
}

fn count_errors(request_id: &str, queue: &str, results: Vec<Result<(), QueueError>>) -> usize {
    results
        .into_iter()
        .filter_map(Result::err)
        .inspect(|problem| {
            tracing::error!(
                request_id,
                queue,
                kind = ?problem.kind,
                error = problem.detail.as_str(),
                "could not queue an event"
            )
        })
        .count()
}
