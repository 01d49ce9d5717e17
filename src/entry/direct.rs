//! The direct door: RudderStack's AWS Lambda destination invokes asynchronously with one
//! event or an array. Transient failures go to the function's own SQS queue (retried
//! there with SQS semantics), permanent ones to the dead-letter queue. Without those
//! queues, or when a send fails, the invocation fails so that Lambda's async retries and
//! on-failure destination take over.

use std::time::Duration;

use serde_json::{json, Value};

use super::disposition::{settle, Delivered, Unit};
use super::invocation::{answer_by, Door, Invocation};
use super::{App, InvocationError};

const ANSWER_MARGIN: Duration = Duration::from_secs(3);

pub(super) async fn handle(
    app: &App,
    payload: Value,
    invocation: &Invocation<'_>,
) -> Result<Value, InvocationError> {
    let deadline = answer_by(invocation.deadline, ANSWER_MARGIN);
    let events = decode(payload)?;
    let reports = app.deliver_all(&events, deadline).await;
    // Each event is retried or parked on its own: a unit of one.
    let units: Vec<Unit> = (0..events.len())
        .map(|index| Unit {
            message_id: "",
            body: None,
            events: Ok(index..index + 1),
            group: None,
        })
        .collect();
    let request_id = invocation.request_id;
    let batch = Delivered {
        units: &units,
        events: &events,
        reports: &reports,
    };
    let settled = settle(app, request_id, Door::Direct, batch).await;
    if settled.unplaced > 0 {
        return Err(InvocationError::QueueUnavailable {
            unplaced: settled.unplaced,
            received: events.len(),
        });
    }
    let delivered = reports.iter().filter(|r| r.outcome.failure().is_none());
    Ok(json!({
        "received": events.len(),
        "delivered": delivered.count(),
        "requeued": settled.requeued,
        "parked": settled.parked,
    }))
}

/// One event, an array of events, or an EventBridge event (a rule may target the function).
fn decode(payload: Value) -> Result<Vec<Value>, InvocationError> {
    match payload {
        Value::Array(events) => Ok(events),
        Value::Object(ref object) if object.contains_key("detail-type") => {
            crate::envelope::decode_value(payload).map_err(InvocationError::BadEnvelope)
        }
        event => Ok(vec![event]),
    }
}
