//! The SQS door (event source mapping with ReportBatchItemFailures). Transient failures
//! are reported as batch item failures so SQS redelivers them; permanent ones are parked
//! in the dead-letter queue with their error, or, without one (or when parking fails),
//! reported too, so the queue's redrive policy moves them there after maxReceiveCount.

use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use serde_json::Value;

use super::disposition::{settle, Delivered, Unit};
use super::invocation::{answer_by, Door, Invocation};
use super::App;
use crate::envelope::decode_events;
use crate::outcome::{Failure, FailureClass};

/// Time kept back from Lambda's deadline for parking and answering.
const ANSWER_MARGIN: Duration = Duration::from_secs(3);

pub(super) async fn handle(
    app: &App,
    batch: &SqsEvent,
    invocation: &Invocation<'_>,
) -> SqsBatchResponse {
    let deadline = answer_by(invocation.deadline, ANSWER_MARGIN);
    let (events, units) = decode(batch);
    // FIFO: a message group is a chain too (none of its events goes ahead of an earlier one).
    let groups: Vec<Option<&str>> = units
        .iter()
        .filter_map(|unit| Some((unit.events.as_ref().ok()?, unit.group)))
        .flat_map(|(range, group)| range.clone().map(move |_| group))
        .collect();
    let reports = app.deliver_in_groups(&events, &groups, deadline).await;
    let request_id = invocation.request_id;
    let batch = Delivered {
        units: &units,
        events: &events,
        reports: &reports,
    };
    let settled = settle(app, request_id, Door::Sqs, batch).await;
    answer(settled.report)
}

/// Every record's events in one list (the pipeline orders them by user across records),
/// and each record as a unit: its range in that list, or why its body holds no event.
fn decode(batch: &SqsEvent) -> (Vec<Value>, Vec<Unit<'_>>) {
    let mut events = Vec::new();
    let units = batch
        .records
        .iter()
        .map(|record| {
            let body = record.body.as_deref().unwrap_or("");
            let decoded = decode_events(body)
                .map(|decoded| {
                    let start = events.len();
                    events.extend(decoded);
                    start..events.len()
                })
                .map_err(|problem| {
                    Failure::new(FailureClass::Permanent, Some(400), problem.to_string())
                });
            Unit {
                message_id: record.message_id.as_deref().unwrap_or(""),
                body: Some(body),
                events: decoded,
                group: record
                    .attributes
                    .get("MessageGroupId")
                    .map(String::as_str)
                    .filter(|group| !group.is_empty()),
            }
        })
        .collect();
    (events, units)
}

/// `batchItemFailures` naming the messages SQS must deliver again.
fn answer(retry: Vec<String>) -> SqsBatchResponse {
    let mut answer = SqsBatchResponse::default();
    answer.batch_item_failures = retry
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    answer
}
