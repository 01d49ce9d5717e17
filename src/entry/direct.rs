//! The direct door: RudderStack's AWS Lambda destination invokes asynchronously with one
//! event or an array. Transient failures go to the function's own SQS queue (retried
//! there with SQS semantics), permanent ones to the dead-letter queue. Without those
//! queues, or when a send fails, the invocation fails so that Lambda's async retries and
//! on-failure destination take over.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::{message_id, App, Invocation, InvocationError};
use crate::aws::sqs::{Parked, QueueError};
use crate::telemetry::log_outcome;

const ANSWER_MARGIN: Duration = Duration::from_secs(3);

pub(super) async fn handle(
    app: &App,
    payload: Value,
    invocation: &Invocation<'_>,
) -> Result<Value, InvocationError> {
    let (request_id, lambda_deadline) = (invocation.request_id, invocation.deadline);
    let deadline = super::answer_by(lambda_deadline, ANSWER_MARGIN);
    let events = match payload {
        Value::Array(events) => events,
        // An EventBridge rule may target the function directly.
        Value::Object(ref object) if object.contains_key("detail-type") => {
            crate::envelope::decode_value(payload).map_err(InvocationError::BadEnvelope)?
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

    let queues = &app.queues;
    let unplaced = place(request_id, "retry queue", requeue.len(), || {
        queues.has_retry_queue().then(|| queues.requeue(&requeue))
    })
    .await
        + place(request_id, "dead-letter queue", park.len(), || {
            queues.has_dead_letter_queue().then(|| queues.park(&park))
        })
        .await;
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

/// How many of `count` events could not be placed in a queue: all of them when the queue
/// does not exist (`send` gives `None`), else those whose send failed (logged).
async fn place<'a>(
    request_id: &str,
    queue: &str,
    count: usize,
    send: impl FnOnce() -> Option<BoxFuture<'a, Vec<Result<(), QueueError>>>>,
) -> usize {
    if count == 0 {
        return 0;
    }
    let Some(sending) = send() else {
        return count;
    };
    sending
        .await
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
