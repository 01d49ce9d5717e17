//! The event queue, in process: moto's SQS does not keep up with thousands of messages
//! (shared/toolchain.md, 2026-12-06).
//!
//! SQS semantics the fleet depends on, and nothing more:
//! - a received message is invisible until `receive + visibility_timeout`; deleting it with
//!   its latest receipt handle removes it, otherwise it becomes visible again (a failed
//!   batch item, an invocation error, a process that died: nothing to do, time does it);
//! - receive counts; a visible message already received `max_receive_count` times moves to
//!   the dead-letter list at the next receive instead of being delivered (redrive);
//! - FIFO: a group with any message in flight is locked; messages of a group come in order;
//!   a receive fills the batch with as many messages of one group as it can before taking
//!   the next group (as SQS documents), so a batch may hold several groups, in order within
//!   each; a `MessageDeduplicationId` seen within the window is dropped at send.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub fifo: bool,
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
    /// SQS FIFO: 5 minutes.
    pub dedup_window: Duration,
    /// The backlog ends when at most this many messages are left (not deleted, not dead):
    /// what the fleet can hold in flight at once (processes × batch size).
    pub backlog_threshold: usize,
}

/// One message as a receive hands it out.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub group: Option<String>,
    pub dedup_id: Option<String>,
    pub sequence_number: u64,
    pub receive_count: u32,
    pub sent_epoch_ms: u64,
    pub first_received_epoch_ms: u64,
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub body: String,
}

/// What is left of the queue at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct QueueReport {
    /// Bodies of the messages neither deleted nor dead-lettered.
    pub remaining: Vec<String>,
    pub dead: Vec<DeadLetter>,
    pub sent: usize,
    pub deduplicated: usize,
    pub receives: usize,
    /// Receives of a message that had been received before.
    pub redeliveries: usize,
    pub deleted: usize,
    /// Deletes with an outdated receipt handle (the message was received again meanwhile).
    pub stale_deletes: usize,
    pub backlog_end: Option<Instant>,
}

struct Message {
    id: String,
    body: String,
    group: Option<String>,
    dedup_id: Option<String>,
    sequence: u64,
    sent_epoch_ms: u64,
    first_received_epoch_ms: Option<u64>,
    receive_count: u32,
    invisible_until: Option<Instant>,
}

impl Message {
    fn in_flight(&self, now: Instant) -> bool {
        self.invisible_until.is_some_and(|until| until > now)
    }
}

#[derive(Default)]
struct State {
    /// In send order.
    messages: VecDeque<Message>,
    dedup_seen: HashMap<String, Instant>,
    report: QueueReport,
}

pub struct Queue {
    config: QueueConfig,
    state: Mutex<State>,
    /// Woken on every send and delete (a delete may unlock a FIFO group).
    changed: Notify,
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Queue {
    pub fn new(config: QueueConfig) -> Queue {
        Queue {
            config,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    pub fn config(&self) -> QueueConfig {
        self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("queue lock")
    }

    /// Sends one message; `None` when FIFO deduplication dropped it.
    pub fn send(
        &self,
        body: String,
        group: Option<String>,
        dedup_id: Option<String>,
    ) -> Option<String> {
        let now = Instant::now();
        let mut state = self.state();
        if let (true, Some(dedup)) = (self.config.fifo, &dedup_id) {
            let window = self.config.dedup_window;
            if state
                .dedup_seen
                .get(dedup)
                .is_some_and(|at| now.duration_since(*at) < window)
            {
                state.report.deduplicated += 1;
                return None;
            }
            state.dedup_seen.insert(dedup.clone(), now);
        }
        state.report.sent += 1;
        let sequence = state.report.sent as u64;
        let id = format!("00000000-f1ee-4000-8000-{sequence:012}");
        state.messages.push_back(Message {
            id: id.clone(),
            body,
            group: if self.config.fifo { group } else { None },
            dedup_id: if self.config.fifo { dedup_id } else { None },
            sequence,
            sent_epoch_ms: epoch_ms(),
            first_received_epoch_ms: None,
            receive_count: 0,
            invisible_until: None,
        });
        drop(state);
        self.changed.notify_waiters();
        Some(id)
    }

    /// Receives up to `max` messages now (possibly none).
    pub fn receive(&self, max: usize) -> Vec<Received> {
        let now = Instant::now();
        let mut state = self.state();
        let max_receives = self.config.max_receive_count;
        let mut take: Vec<usize> = Vec::new();
        let mut dead: Vec<usize> = Vec::new();
        // A visible message received max_receive_count times already goes to the DLQ.
        let mut consider = |index: usize, message: &Message, take: &mut Vec<usize>| {
            if message.receive_count >= max_receives {
                dead.push(index);
                true
            } else if take.len() < max {
                take.push(index);
                true
            } else {
                false
            }
        };
        if self.config.fifo {
            let locked: HashSet<&str> = state
                .messages
                .iter()
                .filter(|m| m.in_flight(now))
                .filter_map(|m| m.group.as_deref())
                .collect();
            // Groups in the order of their oldest message; then as many of one group as fit.
            let mut groups: Vec<&str> = Vec::new();
            let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
            for (index, message) in state.messages.iter().enumerate() {
                let group = message.group.as_deref().unwrap_or("");
                if locked.contains(group) {
                    continue;
                }
                members
                    .entry(group)
                    .or_insert_with(|| {
                        groups.push(group);
                        Vec::new()
                    })
                    .push(index);
            }
            'groups: for group in groups {
                for &index in &members[group] {
                    if !consider(index, &state.messages[index], &mut take) {
                        break 'groups;
                    }
                }
            }
        } else {
            for (index, message) in state.messages.iter().enumerate() {
                if !message.in_flight(now) && !consider(index, message, &mut take) {
                    break;
                }
            }
        }
        let state = &mut *state;
        let mut received = Vec::with_capacity(take.len());
        for &index in &take {
            let message = &mut state.messages[index];
            message.receive_count += 1;
            message.invisible_until = Some(now + self.config.visibility_timeout);
            let first = *message.first_received_epoch_ms.get_or_insert_with(epoch_ms);
            state.report.receives += 1;
            if message.receive_count > 1 {
                state.report.redeliveries += 1;
            }
            received.push(Received {
                message_id: message.id.clone(),
                receipt_handle: format!("{}#{}", message.id, message.receive_count),
                body: message.body.clone(),
                group: message.group.clone(),
                dedup_id: message.dedup_id.clone(),
                sequence_number: message.sequence,
                receive_count: message.receive_count,
                sent_epoch_ms: message.sent_epoch_ms,
                first_received_epoch_ms: first,
            });
        }
        dead.sort_unstable();
        for index in dead.into_iter().rev() {
            if let Some(message) = state.messages.remove(index) {
                state.report.dead.push(DeadLetter { body: message.body });
            }
        }
        self.note_backlog(state, now);
        received
    }

    /// Waits (long poll) up to `wait` for at least one message.
    pub async fn receive_wait(&self, max: usize, wait: Duration) -> Vec<Received> {
        let end = Instant::now() + wait;
        loop {
            // Created before the receive, so a send in between is not missed.
            let changed = self.changed.notified();
            let received = self.receive(max);
            if !received.is_empty() || Instant::now() >= end {
                return received;
            }
            // Visibility timeouts end without a notification: look again soon.
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            }
        }
    }

    /// Deletes a message by its receipt handle; `false` when the handle is outdated.
    pub fn delete(&self, receipt_handle: &str) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let current = state
            .messages
            .iter()
            .position(|m| format!("{}#{}", m.id, m.receive_count) == receipt_handle);
        let deleted = match current {
            Some(index) => {
                state.messages.remove(index);
                state.report.deleted += 1;
                true
            }
            None => {
                state.report.stale_deletes += 1;
                false
            }
        };
        self.note_backlog(&mut state, now);
        drop(state);
        self.changed.notify_waiters();
        deleted
    }

    fn note_backlog(&self, state: &mut State, now: Instant) {
        if state.report.backlog_end.is_none()
            && state.report.sent > 0
            && state.messages.len() <= self.config.backlog_threshold
        {
            state.report.backlog_end = Some(now);
        }
    }

    /// Messages neither deleted nor dead-lettered (visible or in flight).
    pub fn len(&self) -> usize {
        self.state().messages.len()
    }

    pub fn report(&self) -> QueueReport {
        let state = self.state();
        let mut report = state.report.clone();
        report.remaining = state.messages.iter().map(|m| m.body.clone()).collect();
        report
    }
}
