//! The SQS door (event source mapping with ReportBatchItemFailures). Transient failures
//! are reported as batch item failures so SQS redelivers them; permanent ones are parked
//! in the dead-letter queue with their error, or, without one (or when parking fails),
//! reported too, so the queue's redrive policy moves them there after maxReceiveCount.

use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use super::{message_id, App, Invocation};
use crate::aws::sqs::Parked;
use crate::envelope::decode_events;
use crate::outcome::Report;
use crate::outcome::{Failure, FailureClass, Outcome};
use crate::telemetry::log_outcome;

/// Time kept back from Lambda's deadline for parking and answering.
const ANSWER_MARGIN: Duration = Duration::from_secs(3);

struct Record<'a> {
    message_id: &'a str,
    body: &'a str,
    /// Range of this record's events in the flattened list, or why the body is unusable.
    events: Result<std::ops::Range<usize>, Failure>,
}

pub(super) async fn handle(
    app: &App,
    batch: &SqsEvent,
    invocation: &Invocation<'_>,
) -> SqsBatchResponse {
    let (request_id, lambda_deadline) = (invocation.request_id, invocation.deadline);
    let deadline = super::answer_by(lambda_deadline, ANSWER_MARGIN);
    let mut events = Vec::new();
    let mut records = Vec::new();
    for record in &batch.records {
        let message_id = record.message_id.as_deref().unwrap_or("");
        let body = record.body.as_deref().unwrap_or("");
        let decoded = decode_events(body).map(|decoded| {
            let start = events.len();
            events.extend(decoded);
            start..events.len()
        });
        let decoded = decoded.map_err(|problem| {
            Failure::new(FailureClass::Permanent, Some(400), problem.to_string())
        });
        records.push(Record {
            message_id,
            body,
            events: decoded,
        });
    }

    let reports = app.deliver_all(&events, deadline).await;
    let mut retry: Vec<&str> = Vec::new();
    let mut to_park: Vec<(usize, Parked)> = Vec::new();
    for (position, record) in records.iter().enumerate() {
        let failures: Vec<(usize, &Failure)> = match &record.events {
            Err(failure) => {
                let report = Report {
                    outcome: Outcome::Failed(failure.clone()),
                    event_type: None,
                    attempts: 0,
                    duration: Duration::ZERO,
                    schema_fixes: Vec::new(),
                    company: None,
                };
                log_outcome(request_id, Some(record.message_id), "sqs", &report);
                app.count(&report);
                to_park.push((position, parked(record.body.to_string(), failure)));
                continue;
            }
            Ok(range) => range
                .clone()
                .filter_map(|index| {
                    log_outcome(
                        request_id,
                        message_id(&events[index]).or(Some(record.message_id)),
                        "sqs",
                        &reports[index],
                    );
                    reports[index]
                        .outcome
                        .failure()
                        .map(|failure| (index, failure))
                })
                .collect(),
        };
        if failures.is_empty() {
            continue;
        }
        if failures
            .iter()
            .any(|(_, failure)| failure.class.is_retryable())
        {
            retry.push(record.message_id);
        } else if let Ok(range) = &record.events {
            if failures.len() == range.len() {
                to_park.push((position, parked(record.body.to_string(), failures[0].1)));
            } else {
                // Part of the body was delivered: park only the failed events, so a redrive
                // does not send the delivered ones twice.
                for (index, failure) in failures {
                    to_park.push((position, parked(events[index].to_string(), failure)));
                }
            }
        }
    }

    if !to_park.is_empty() {
        if app.queues.has_dead_letter_queue() {
            let items: Vec<Parked> = to_park.iter().map(|(_, item)| item.clone()).collect();
            let results = app.queues.park(&items).await;
            for ((position, _), result) in to_park.iter().zip(results) {
                if let Err(problem) = result {
                    tracing::error!(
                        request_id,
                        message_id = records[*position].message_id,
                        kind = ?problem.kind,
                        error = problem.detail.as_str(),
                        "could not park in the dead-letter queue; reporting for retry"
                    );
                    retry.push(records[*position].message_id);
                }
            }
        } else {
            retry.extend(
                to_park
                    .iter()
                    .map(|(position, _)| records[*position].message_id),
            );
        }
    }

    retry.sort_unstable();
    retry.dedup();
    // An empty id would make Lambda fail the whole batch; such a record cannot exist in SQS.
    retry.retain(|id| !id.is_empty());
    let mut answer = SqsBatchResponse::default();
    answer.batch_item_failures = retry
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id.to_string();
            failure
        })
        .collect();
    answer
}

fn parked(body: String, failure: &Failure) -> Parked {
    Parked {
        body,
        failure: failure.clone(),
        source: "sqs",
    }
}
