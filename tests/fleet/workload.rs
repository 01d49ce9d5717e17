//! The fleet's workload, deterministic for a seed.
//!
//! Per user: one first identify (version 1), then 15 tracking events and 4 repeated
//! identifies in a shuffled order; of the repeats, 3 are identical to the identify before
//! (same traits, so the same version) and one changes the traits (version 2). Users'
//! streams are interleaved at random, each in its own order. Events are shaped as
//! RudderStack's server-side SDKs send them (a `userId`, no `anonymousId`).
//!
//! What the figures need travels in the events and reaches Kustomer through the mapping
//! and the schema fit (spec 5.5, 6.1, 11):
//! - identify: `traits.customObject.versionNum` (a `Num` key holding a number is kept in
//!   the customer's `custom`);
//! - tracking: `properties.fleetSeq`, the event's place in its user's stream (a number in
//!   `event.meta` is kept as is).
//!
//! Companies (issue 16): users belong to `companies` companies, round robin; every identify
//! names its user's company in `traits.company` (`id` and `name`), so the function finds or
//! creates the company and links the customer to it.
//!
//! Each event is one SQS message with a unique RudderStack `messageId`. A share of the
//! messages is enqueued twice (a new SQS message id, the same body; in FIFO the same group
//! and a new deduplication id, as a producer's retry outside the 5-minute window would be),
//! the copy somewhere after the original and before that user's next event.

use std::collections::HashSet;

use fastrand::Rng;
use serde_json::{json, Value};
use workload::iso;

#[derive(Debug, Clone, Copy)]
pub struct WorkloadConfig {
    pub users: usize,
    pub tracking_per_user: usize,
    pub repeated_identifies: usize,
    /// Of the repeated identifies, how many are identical to the identify before.
    pub identical_repeats: usize,
    /// Tracking events whose first writes fail with 503.
    pub faults: usize,
    /// Share of the messages enqueued twice.
    pub repeat_share: f64,
    /// Companies the users belong to (0: no company in the identifies).
    pub companies: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Content {
    /// A customer write of this version.
    Identify { version: u64 },
    /// A tracking event with this `fleetSeq`.
    Track { seq: u64 },
}

/// One event of the workload.
#[derive(Debug, Clone)]
pub struct Event {
    pub user: String,
    pub content: Content,
    pub message_id: String,
    /// The user's company: its externalId (`fleet-co-NN`, named `Fleet Co NN`).
    pub company: Option<String>,
}

/// One SQS message to enqueue.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: String,
    pub group: String,
    pub dedup_id: String,
}

pub struct Workload {
    pub events: Vec<Event>,
    /// In queue order, copies included.
    pub messages: Vec<Message>,
    /// Events sent twice.
    pub repeated: HashSet<usize>,
    /// Tracking events whose first writes fail: (user, fleetSeq).
    pub faults: HashSet<(String, u64)>,
}

/// 2026-12-01T00:00:00Z: the workload's clock starts here.
const START_MS: u64 = 1_796_083_200_000;

impl Workload {
    pub fn generate(config: &WorkloadConfig) -> Workload {
        let mut rng = Rng::with_seed(config.seed);
        // Each user's stream, in order: (user index, content).
        let streams: Vec<Vec<Content>> = (0..config.users)
            .map(|_| user_stream(&mut rng, config))
            .collect();
        let users: Vec<String> = (0..config.users)
            .map(|u| format!("fleet-u{u:04}"))
            .collect();

        // Interleave: repeatedly the next event of a random user with events left.
        let mut cursors = vec![0usize; config.users];
        let mut open: Vec<usize> = (0..config.users).collect();
        let mut order: Vec<(usize, Content)> = Vec::new();
        while !open.is_empty() {
            let pick = rng.usize(..open.len());
            let user = open[pick];
            order.push((user, streams[user][cursors[user]]));
            cursors[user] += 1;
            if cursors[user] == streams[user].len() {
                open.swap_remove(pick);
            }
        }

        let events: Vec<Event> = order
            .iter()
            .enumerate()
            .map(|(index, (user, content))| Event {
                user: users[*user].clone(),
                content: *content,
                message_id: format!("fleet-{:x}-{index:05}", config.seed),
                company: (config.companies > 0)
                    .then(|| format!("fleet-co-{:02}", user % config.companies)),
            })
            .collect();
        let bodies: Vec<String> = events
            .iter()
            .enumerate()
            .map(|(index, event)| body(event, START_MS + index as u64 * 250).to_string())
            .collect();

        let repeat_count = (events.len() as f64 * config.repeat_share).round() as usize;
        let mut all: Vec<usize> = (0..events.len()).collect();
        rng.shuffle(&mut all);
        let repeated: HashSet<usize> = all.into_iter().take(repeat_count).collect();

        let mut tracking: Vec<usize> = (0..events.len())
            .filter(|&i| matches!(events[i].content, Content::Track { .. }))
            .collect();
        rng.shuffle(&mut tracking);
        let faults: HashSet<(String, u64)> = tracking
            .into_iter()
            .take(config.faults)
            .map(|i| match events[i].content {
                Content::Track { seq } => (events[i].user.clone(), seq),
                Content::Identify { .. } => unreachable!("only tracking events were chosen"),
            })
            .collect();

        // Queue order: each copy lands after its original, before that user's next event.
        let mut slots: Vec<(f64, Message)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let message = |dedup_id: String| Message {
                body: bodies[index].clone(),
                group: event.user.clone(),
                dedup_id,
            };
            slots.push((index as f64, message(event.message_id.clone())));
            if repeated.contains(&index) {
                let next = (index + 1..events.len())
                    .find(|&j| events[j].user == event.user)
                    .unwrap_or(events.len());
                let at = index as f64 + rng.f64() * (next - index) as f64;
                // Strictly after the original and before the next event of the user.
                let at = at.clamp(index as f64 + 0.25, next as f64 - 0.25);
                slots.push((at, message(format!("{}-retry", event.message_id))));
            }
        }
        slots.sort_by(|a, b| a.0.total_cmp(&b.0));
        Workload {
            events,
            messages: slots.into_iter().map(|(_, m)| m).collect(),
            repeated,
            faults,
        }
    }
}

/// One user's stream: the first identify, then repeats and tracking events shuffled.
fn user_stream(rng: &mut Rng, config: &WorkloadConfig) -> Vec<Content> {
    let mut rest: Vec<bool> = std::iter::repeat_n(true, config.repeated_identifies)
        .chain(std::iter::repeat_n(false, config.tracking_per_user))
        .collect();
    rng.shuffle(&mut rest);
    let changed = config.repeated_identifies - config.identical_repeats;
    // Which of the repeats change the traits (the others repeat the identify before).
    let mut changes: Vec<bool> = std::iter::repeat_n(true, changed)
        .chain(std::iter::repeat_n(false, config.identical_repeats))
        .collect();
    rng.shuffle(&mut changes);
    let mut changes = changes.into_iter();
    let mut version = 1;
    let mut stream = vec![Content::Identify { version }];
    for (place, is_identify) in rest.into_iter().enumerate() {
        if is_identify {
            if changes.next().unwrap_or(false) {
                version += 1;
            }
            stream.push(Content::Identify { version });
        } else {
            stream.push(Content::Track {
                seq: place as u64 + 1,
            });
        }
    }
    stream
}

/// The RudderStack event of one workload event, sent at `ms`.
pub fn body(event: &Event, ms: u64) -> Value {
    let number = event.user.trim_start_matches("fleet-u");
    let context = json!({
        "library": {"name": "rudder-sdk-node", "version": "2.1.1"},
        "locale": "en-US",
    });
    let stamps = |mut value: Value| {
        value["originalTimestamp"] = json!(iso(ms));
        value["sentAt"] = json!(iso(ms + 40));
        value["receivedAt"] = json!(iso(ms + 90));
        value["timestamp"] = json!(iso(ms + 50));
        value
    };
    match event.content {
        Content::Identify { version } => stamps(with_company(
            event,
            json!({
                "type": "identify",
                "messageId": event.message_id,
                "userId": event.user,
                "channel": "server",
                "context": context,
                "traits": {
                    "name": format!("Fleet User {number}"),
                    "email": format!("{}@fleet.example.com", event.user),
                    "createdAt": "2026-11-02T08:00:00.000Z",
                    "plan": if version == 1 { "basic" } else { "pro" },
                    "customObject": {
                        "versionNum": version,
                        "planStr": if version == 1 { "basic" } else { "pro" },
                    },
                },
            }),
        )),
        Content::Track { seq } => stamps(json!({
            "type": "track",
            "messageId": event.message_id,
            "userId": event.user,
            "channel": "server",
            "context": context,
            "event": "Fleet Step Completed",
            "properties": {"fleetSeq": seq, "step": format!("step-{seq}"), "amount": 12.5},
        })),
    }
}

/// The company's name for its externalId: `fleet-co-07` is `Fleet Co 07`.
pub fn company_name(external_id: &str) -> String {
    format!("Fleet Co {}", external_id.trim_start_matches("fleet-co-"))
}

/// An identify with its user's company in `traits.company` (spec 12.1), when it has one.
fn with_company(event: &Event, mut identify: Value) -> Value {
    if let Some(company) = &event.company {
        identify["traits"]["company"] = json!({"id": company, "name": company_name(company)});
    }
    identify
}
