//! Failure routing as data. [`dispose`] is pure: from a door's units (SQS messages, or the
//! events of a direct invocation) and the pipeline's reports it decides which units are
//! reported for retry, which go back to the retry queue and which are parked in the
//! dead-letter queue. [`carry_out`] then acts on that decision, logs every outcome once,
//! and falls back where a queue refuses an item.

use std::ops::Range;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::invocation::{fifo_keys, message_id, Door};
use super::App;
use crate::aws::sqs::{Parked, QueueError, Queued};
use crate::outcome::{Failure, Report};
use crate::telemetry::log_outcome;

/// One thing a door retries or parks as a whole: an SQS message, or one event of a
/// direct invocation.
pub(super) struct Unit<'a> {
    /// The SQS message id (what `batchItemFailures` names); empty for a direct event.
    pub(super) message_id: &'a str,
    /// The body as received, parked whole when every event in it failed for good; `None`
    /// for a direct event (its JSON is written when it is placed).
    pub(super) body: Option<&'a str>,
    /// Its events, as a range of the door's event list, or why its body holds none.
    pub(super) events: Result<Range<usize>, Failure>,
    /// Its SQS FIFO message group (`MessageGroupId`); `None` on a standard queue and for a
    /// direct event.
    pub(super) group: Option<&'a str>,
}

/// How a door retries a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// SQS: report the message in `batchItemFailures`; SQS delivers it again.
    ReportToSqs,
    /// Direct: put the event in the function's own queue (when there is one).
    RetryQueue { available: bool },
}

/// What a door can do with failures: its retry and whether a dead-letter queue exists.
#[derive(Debug, Clone, Copy)]
pub(super) struct Routes {
    pub(super) retry: Retry,
    pub(super) dead_letter_queue: bool,
}

/// A unit, or one event of it, on its way to a queue.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Placement {
    pub(super) unit: usize,
    /// `None`: the unit's whole body; `Some(i)`: only event `i` (the others were delivered,
    /// so a redrive must not send them twice).
    pub(super) event: Option<usize>,
    pub(super) failure: Failure,
}

/// Where every failed unit goes. Delivered units appear nowhere.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Disposition {
    /// Units to report for retry (SQS `batchItemFailures`), by index.
    pub(super) report: Vec<usize>,
    /// Events for the function's retry queue (direct).
    pub(super) requeue: Vec<Placement>,
    /// Units or events for the dead-letter queue, each with its error.
    pub(super) park: Vec<Placement>,
    /// Failed events that have nowhere to go (direct without its queues): the invocation
    /// fails, so Lambda retries it and then uses its own on-failure destination.
    pub(super) unplaceable: usize,
}

/// Decides, unit by unit: delivered units need nothing; a unit holding a retryable
/// failure is retried whole (retrying a delivered event is harmless, dropping a retryable
/// one loses it); a unit whose failures are all permanent is parked: whole when nothing
/// in it was delivered, else only its failed events.
///
/// FIFO (AWS's rule for partial batch responses): once a unit of a message group is
/// reported for retry, every later unit of that group in the batch is reported too,
/// whatever its outcome, so that none is settled ahead of it. Other groups go on.
pub(super) fn dispose(units: &[Unit], reports: &[Report], routes: Routes) -> Disposition {
    let mut disposition = Disposition::default();
    let mut stopped_groups: std::collections::HashSet<&str> = Default::default();
    for (position, unit) in units.iter().enumerate() {
        let stopped = unit
            .group
            .is_some_and(|group| stopped_groups.contains(group));
        if stopped && routes.retry == Retry::ReportToSqs {
            disposition.report.push(position);
            continue;
        }
        let failures: Vec<(Option<usize>, &Failure)> = match &unit.events {
            Err(failure) => vec![(None, failure)],
            Ok(range) => range
                .clone()
                .filter_map(|index| {
                    let failure = reports.get(index)?.outcome.failure()?;
                    Some((Some(index), failure))
                })
                .collect(),
        };
        let Some(&(_, first)) = failures.first() else {
            continue;
        };
        if let Some(&(_, retryable)) = failures.iter().find(|(_, f)| f.class.is_retryable()) {
            match routes.retry {
                Retry::ReportToSqs => {
                    disposition.report.push(position);
                    stopped_groups.extend(unit.group);
                }
                Retry::RetryQueue { available: true } => disposition.requeue.push(Placement {
                    unit: position,
                    event: None,
                    failure: retryable.clone(),
                }),
                Retry::RetryQueue { available: false } => disposition.unplaceable += 1,
            }
            continue;
        }
        if !routes.dead_letter_queue {
            // SQS's redrive policy moves a message reported often enough to the DLQ.
            match routes.retry {
                Retry::ReportToSqs => disposition.report.push(position),
                Retry::RetryQueue { .. } => disposition.unplaceable += failures.len(),
            }
            continue;
        }
        let all_failed = match &unit.events {
            Ok(range) => failures.len() == range.len(),
            Err(_) => true,
        };
        if all_failed {
            disposition.park.push(Placement {
                unit: position,
                event: None,
                failure: first.clone(),
            });
        } else {
            disposition
                .park
                .extend(failures.into_iter().map(|(event, failure)| Placement {
                    unit: position,
                    event,
                    failure: failure.clone(),
                }));
        }
    }
    disposition
}

/// A door's dispose step: decides where its failures go ([`dispose`], pure), then does it
/// ([`carry_out`]). The routes follow from the door and the queues the app has.
pub(super) async fn settle(
    app: &App,
    request_id: &str,
    door: Door,
    batch: Delivered<'_>,
) -> CarriedOut {
    let retry = match door {
        Door::Sqs => Retry::ReportToSqs,
        _ => Retry::RetryQueue {
            available: app.queues.has_retry_queue(),
        },
    };
    let routes = Routes {
        retry,
        dead_letter_queue: app.queues.has_dead_letter_queue(),
    };
    let disposition = dispose(batch.units, batch.reports, routes);
    carry_out(app, request_id, door, batch, disposition).await
}

/// A door's batch after delivery: its units, its events and one report per event.
#[derive(Clone, Copy)]
pub(super) struct Delivered<'a> {
    pub(super) units: &'a [Unit<'a>],
    pub(super) events: &'a [Value],
    pub(super) reports: &'a [Report],
}

/// What is left after acting on a disposition.
pub(super) struct CarriedOut {
    /// The message ids to report in `batchItemFailures`: those decided, plus those whose
    /// parking failed (SQS delivers them again; its redrive policy ends the loop).
    pub(super) report: Vec<String>,
    /// Events with nowhere to go, decided or because a queue refused them.
    pub(super) unplaced: usize,
    /// How many units or events went to the retry queue and to the dead-letter queue.
    pub(super) requeued: usize,
    pub(super) parked: usize,
}

/// Logs every event's outcome, then places what the disposition says. A park that fails
/// is reported for retry on SQS (its message id) and counted as unplaced on the direct
/// door, which has no other way back.
async fn carry_out(
    app: &App,
    request_id: &str,
    door: Door,
    batch: Delivered<'_>,
    disposition: Disposition,
) -> CarriedOut {
    log_outcomes(app, request_id, door, batch);
    let Delivered { units, events, .. } = batch;
    let bodies = Bodies { units, events };
    let mut report: Vec<usize> = disposition.report;
    let mut unplaced = disposition.unplaceable;
    let (requeued, parked) = (disposition.requeue.len(), disposition.park.len());
    let to_park: Vec<Parked> = (disposition.park.iter())
        .map(|placement| {
            let Queued { body, keys } = bodies.of(placement);
            Parked {
                body,
                failure: placement.failure.clone(),
                source: door.as_str(),
                keys,
            }
        })
        .collect();
    let to_requeue: Vec<Queued> = disposition.requeue.iter().map(|p| bodies.of(p)).collect();
    let parks = refused(&disposition.park, &to_park, |items| app.queues.park(items));
    for (placement, problem) in parks.await {
        let message_id = units[placement.unit].message_id;
        log_unplaced(request_id, message_id, "dead-letter queue", problem);
        match door {
            Door::Sqs => report.push(placement.unit),
            _ => unplaced += 1,
        }
    }
    let requeues = refused(&disposition.requeue, &to_requeue, |items| {
        app.queues.requeue(items)
    });
    for (placement, problem) in requeues.await {
        let message_id = units[placement.unit].message_id;
        log_unplaced(request_id, message_id, "retry queue", problem);
        unplaced += 1;
    }
    report.sort_unstable();
    report.dedup();
    let report = report
        .into_iter()
        .map(|position| units[position].message_id);
    CarriedOut {
        // An empty id would make Lambda fail the whole batch; SQS never sends one.
        report: report
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect(),
        unplaced,
        requeued,
        parked,
    }
}

/// Sends `items` (one per placement, when there are any) and gives back the placements
/// the queue refused, with why.
async fn refused<'i, 'p, T>(
    placements: &'p [Placement],
    items: &'i [T],
    send: impl FnOnce(&'i [T]) -> BoxFuture<'i, Vec<Result<(), QueueError>>>,
) -> Vec<(&'p Placement, QueueError)> {
    if items.is_empty() {
        return Vec::new();
    }
    let results = send(items).await;
    placements
        .iter()
        .zip(results)
        .filter_map(|(placement, result)| result.err().map(|problem| (placement, problem)))
        .collect()
}

/// What a placement puts in a queue: a unit's body as received, or one event's JSON, with
/// its FIFO keys ([`fifo_keys`]): a whole unit keeps the group it came in, one event goes
/// in its user's group.
struct Bodies<'a> {
    units: &'a [Unit<'a>],
    events: &'a [Value],
}

impl Bodies<'_> {
    fn of(&self, placement: &Placement) -> Queued {
        let unit = self.units.get(placement.unit);
        let range = match (placement.event, unit) {
            (Some(index), _) => index..index + 1,
            (
                None,
                Some(Unit {
                    events: Ok(range), ..
                }),
            ) => range.clone(),
            (None, _) => 0..0,
        };
        let events = self.events.get(range).unwrap_or_default();
        let body = match (placement.event, unit) {
            (
                None,
                Some(Unit {
                    body: Some(body), ..
                }),
            ) => body.to_string(),
            _ => events.first().map(Value::to_string).unwrap_or_default(),
        };
        // A whole unit keeps the group it came in; one event of it goes to its user's.
        let group = unit
            .and_then(|unit| unit.group)
            .filter(|_| placement.event.is_none());
        let keys = fifo_keys(events, group, unit.and_then(unit_id), &body);
        Queued { body, keys }
    }
}

/// One log line per event (and per body that held none), counted in the metrics.
fn log_outcomes(app: &App, request_id: &str, door: Door, batch: Delivered<'_>) {
    let Delivered {
        units,
        events,
        reports,
    } = batch;
    for unit in units {
        match &unit.events {
            Ok(range) => {
                for index in range.clone() {
                    if let (Some(event), Some(report)) = (events.get(index), reports.get(index)) {
                        let id = message_id(event).or(unit_id(unit));
                        log_outcome(request_id, id, door.as_str(), report);
                    }
                }
            }
            Err(failure) => {
                let report = Report::unattempted(failure.clone());
                log_outcome(request_id, unit_id(unit), door.as_str(), &report);
                app.count(&report);
            }
        }
    }
}

/// A unit's message id for logs, when it has one (an SQS message).
fn unit_id<'a>(unit: &Unit<'a>) -> Option<&'a str> {
    (!unit.message_id.is_empty()).then_some(unit.message_id)
}

fn log_unplaced(request_id: &str, message_id: &str, queue: &str, problem: QueueError) {
    tracing::error!(
        request_id,
        message_id,
        queue,
        kind = ?problem.kind,
        error = problem.detail.as_str(),
        "could not queue a failed event"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Delivered, FailureClass, Outcome};

    fn delivered() -> Report {
        Report {
            outcome: Outcome::Delivered(Delivered::written(1, 201)),
            ..failed(FailureClass::Transient)
        }
    }

    fn failed(class: FailureClass) -> Report {
        Report::unattempted(Failure::new(class, Some(500), "x"))
    }

    fn message(id: &'static str, events: Range<usize>) -> Unit<'static> {
        Unit {
            message_id: id,
            body: Some("{}"),
            events: Ok(events),
            group: None,
        }
    }

    fn in_group(group: &'static str, unit: Unit<'static>) -> Unit<'static> {
        Unit {
            group: Some(group),
            ..unit
        }
    }

    const SQS: Routes = Routes {
        retry: Retry::ReportToSqs,
        dead_letter_queue: true,
    };

    fn direct(retry_queue: bool, dead_letter_queue: bool) -> Routes {
        Routes {
            retry: Retry::RetryQueue {
                available: retry_queue,
            },
            dead_letter_queue,
        }
    }

    #[test]
    fn sqs_retries_whole_messages_and_parks_only_what_failed() {
        let units = [
            message("ok", 0..1),
            message("mixed-retry", 1..3),
            message("all-bad", 3..5),
            message("part-bad", 5..7),
            Unit {
                message_id: "garbage",
                body: Some("no"),
                events: Err(Failure::new(FailureClass::Permanent, Some(400), "not JSON")),
                group: None,
            },
        ];
        let reports = [
            delivered(),
            delivered(),
            failed(FailureClass::Transient),
            failed(FailureClass::Permanent),
            failed(FailureClass::Permanent),
            delivered(),
            failed(FailureClass::Permanent),
        ];
        let disposition = dispose(&units, &reports, SQS);
        assert_eq!(disposition.report, vec![1]);
        let parked: Vec<(usize, Option<usize>)> =
            disposition.park.iter().map(|p| (p.unit, p.event)).collect();
        assert_eq!(parked, vec![(2, None), (3, Some(6)), (4, None)]);
        assert!(disposition.requeue.is_empty());
        assert_eq!(disposition.unplaceable, 0);
    }

    #[test]
    fn without_a_dead_letter_queue_sqs_reports_and_direct_cannot_place() {
        let units = [message("bad", 0..1)];
        let reports = [failed(FailureClass::Permanent)];
        let sqs = dispose(
            &units,
            &reports,
            Routes {
                dead_letter_queue: false,
                ..SQS
            },
        );
        assert_eq!(sqs.report, vec![0]);
        let direct = dispose(&units, &reports, direct(true, false));
        assert_eq!(direct.unplaceable, 1);
    }

    #[test]
    fn direct_requeues_retryable_events_when_it_can() {
        let units = [message("", 0..1), message("", 1..2)];
        let reports = [failed(FailureClass::Throttled), delivered()];
        let with_queue = dispose(&units, &reports, direct(true, true));
        assert_eq!(with_queue.requeue.len(), 1);
        assert_eq!(with_queue.requeue[0].unit, 0);
        let without = dispose(&units, &reports, direct(false, true));
        assert_eq!(without.unplaceable, 1);
        assert!(without.requeue.is_empty());
    }

    /// FIFO: after a group's record is reported, its later records are reported whatever
    /// became of them (delivered, held, permanently failed, unreadable); other groups and
    /// the records before go on as usual. A permanent failure stops nothing.
    #[test]
    fn fifo_reports_every_later_record_of_a_failed_group() {
        let garbage = Unit {
            message_id: "a-garbage",
            body: Some("no"),
            events: Err(Failure::new(FailureClass::Permanent, Some(400), "not JSON")),
            group: Some("a"),
        };
        let units = [
            in_group("a", message("a-ok", 0..1)),
            in_group("b", message("b-bad", 1..2)),
            in_group("a", message("a-fails", 2..3)),
            in_group("b", message("b-ok", 3..4)),
            in_group("a", message("a-ok-later", 4..5)),
            in_group("a", message("a-bad-later", 5..6)),
            garbage,
            message("standard", 6..7),
        ];
        let reports = [
            delivered(),
            failed(FailureClass::Permanent),
            failed(FailureClass::Transient),
            delivered(),
            delivered(),
            failed(FailureClass::Permanent),
            failed(FailureClass::Throttled),
        ];
        let disposition = dispose(&units, &reports, SQS);
        assert_eq!(disposition.report, vec![2, 4, 5, 6, 7]);
        let parked: Vec<usize> = disposition.park.iter().map(|p| p.unit).collect();
        assert_eq!(
            parked,
            vec![1],
            "b's permanent failure is parked; b goes on"
        );
    }

    /// The group rule is SQS's: a direct invocation's events (no groups) are unaffected.
    #[test]
    fn the_group_rule_needs_a_group() {
        let units = [message("", 0..1), message("", 1..2)];
        let reports = [failed(FailureClass::Transient), delivered()];
        let disposition = dispose(&units, &reports, SQS);
        assert_eq!(disposition.report, vec![0]);
    }
}
