//! Where the doors put the events they cannot deliver now: permanently failed events in
//! the dead-letter queue (with the error as message attributes), transiently failed
//! direct invocations in the retry queue. [`EventQueues`] is what the doors use;
//! [`SqsQueues`] is the real one, [`MemoryQueues`] keeps messages in the process (tests).
//!
//! Both use SendMessageBatch: at most 10 entries and 256 KiB per call, each entry's
//! result mapped back to its item, one `Result` per item in order. An item SQS would
//! refuse anyway (too large, empty, characters SQS does not accept) fails alone without
//! a call. Errors name the queue and the cause, never a message body.
//!
//! FIFO queues (a URL ending in `.fifo`): every message carries its [`FifoKeys`] (message
//! group and deduplication id), and the calls go one after the other, in order, so that
//! a group's messages keep their order. Standard queues ignore the keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use futures_util::future::BoxFuture;
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;

use crate::outcome::Failure;

/// SQS's limit for one message (body + attributes) and for one batch call.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// SQS's limit of entries per SendMessageBatch call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// `errorMessage` attributes are cut to this many characters.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 1_000;
/// SendMessageBatch calls in flight at once for one `park`/`requeue`.
const MAX_CALLS_IN_FLIGHT: usize = 4;

/// What a FIFO queue needs of every message (a standard queue ignores both): the message
/// group (the event's user, or the group its message came in) and the deduplication id
/// (derived from the event's `messageId`), each made an id SQS accepts
/// ([`crate::digest::sqs_id`]: as it is, or hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoKeys {
    pub group: String,
    pub dedup: String,
}

impl FifoKeys {
    pub fn new(group: &str, dedup: &str) -> FifoKeys {
        FifoKeys {
            group: crate::digest::sqs_id(group),
            dedup: crate::digest::sqs_id(dedup),
        }
    }
}

/// A permanently failed event on its way to the dead-letter queue.
#[derive(Debug, Clone)]
pub struct Parked {
    /// The original body, exactly as received.
    pub body: String,
    pub failure: Failure,
    /// The door it came through: `"sqs"`, `"direct"`, `"apigw"`.
    pub source: &'static str,
    pub keys: FifoKeys,
}

/// An event on its way to the function's own queue: a transiently failed direct event,
/// or an event the webhook queues (`WEBHOOK_MODE=queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub body: String,
    pub keys: FifoKeys,
}

/// Why an item could not be placed in a queue. The kind says whether trying again can
/// help: `Refused`/`Unreachable` may pass later, `NotConfigured`/`Unsendable` never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueError {
    pub kind: QueueErrorKind,
    /// Names the queue and the cause, never the message body.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueErrorKind {
    /// No URL for that queue in the settings.
    NotConfigured,
    /// SQS would refuse this message whatever happens (size, empty, characters): not sent.
    Unsendable,
    /// SQS answered with an error (for the call or for this entry).
    Refused,
    /// No answer from SQS: connection failure, timeout, unreadable response.
    Unreachable,
}

impl QueueError {
    fn new(kind: QueueErrorKind, detail: impl Into<String>) -> Self {
        QueueError {
            kind,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for QueueError {}

/// The two queues as the doors see them. One result per item, in order.
pub trait EventQueues: Send + Sync {
    fn has_dead_letter_queue(&self) -> bool;
    fn has_retry_queue(&self) -> bool;
    /// Parks permanently failed events' original bodies in the dead-letter queue with
    /// their error ([`dead_letter_attributes`]).
    fn park<'a>(&'a self, items: &'a [Parked]) -> BoxFuture<'a, Vec<Result<(), QueueError>>>;
    /// Puts events in the function's own queue (the one the SQS door reads): transiently
    /// failed direct events, and the webhook's events in queue mode.
    fn requeue<'a>(&'a self, items: &'a [Queued]) -> BoxFuture<'a, Vec<Result<(), QueueError>>>;
}

/// Whether a queue URL names a FIFO queue (its name ends in `.fifo`).
pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.ends_with(".fifo")
}

/// The message attributes of a dead letter: `errorClass`, `errorStatus` (Number, when
/// known), `errorMessage` (cut to 1,000 characters) and `source`, as
/// (name, SQS data type, value).
pub fn dead_letter_attributes(item: &Parked) -> Vec<(&'static str, &'static str, String)> {
    let mut attributes = vec![(
        "errorClass",
        "String",
        item.failure.class.as_str().to_string(),
    )];
    if let Some(status) = item.failure.status {
        attributes.push(("errorStatus", "Number", status.to_string()));
    }
    attributes.push((
        "errorMessage",
        "String",
        error_message_attribute(&item.failure.message),
    ));
    attributes.push(("source", "String", item.source.to_string()));
    attributes
}

/// Why SQS would refuse this message whatever happens, if it would. `size` counts the
/// body and the attributes, as SQS does.
fn unsendable(body: &str, size: usize) -> Option<QueueError> {
    let problem = if body.is_empty() {
        Some("the message body is empty; SQS does not accept empty messages".to_string())
    } else if size > MAX_MESSAGE_BYTES {
        Some(format!(
            "the message is {size} bytes with its attributes; SQS accepts at most {MAX_MESSAGE_BYTES}"
        ))
    } else {
        body.char_indices()
            .find(|(_, c)| !sqs_allows(*c))
            .map(|(at, c)| {
                format!(
                    "the message body has a character SQS does not accept (U+{:04X} at byte {at})",
                    c as u32
                )
            })
    };
    problem.map(|problem| QueueError::new(QueueErrorKind::Unsendable, problem))
}

fn not_configured(queue: &str, count: usize) -> Vec<Result<(), QueueError>> {
    vec![
        Err(QueueError::new(
            QueueErrorKind::NotConfigured,
            format!("no {queue} configured")
        ));
        count
    ]
}

/// Timeouts for SQS calls (the SDK retries up to 3 attempts within the operation timeout).
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build()
}

/// The retry queue and the dead-letter queue in SQS; either may be absent.
#[derive(Debug)]
pub struct SqsQueues {
    retry_queue_url: Option<String>,
    dead_letter_queue_url: Option<String>,
    /// Given by the caller (tests); otherwise loaded from the environment at first use.
    sdk_config: Option<SdkConfig>,
    client: OnceCell<aws_sdk_sqs::Client>,
}

/// One message ready to send: its position among the caller's items, and its size as
/// SQS counts it.
struct Outgoing {
    index: usize,
    body: String,
    attributes: HashMap<String, MessageAttributeValue>,
    size: usize,
    /// Set for a FIFO queue only.
    keys: Option<FifoKeys>,
}

impl SqsQueues {
    /// No IO: the SQS client is created at first use, from the environment (`AWS_REGION`,
    /// credentials, optional `AWS_ENDPOINT_URL[_SQS]`).
    pub fn new(retry_queue_url: Option<String>, dead_letter_queue_url: Option<String>) -> Self {
        SqsQueues {
            retry_queue_url,
            dead_letter_queue_url,
            sdk_config: None,
            client: OnceCell::new(),
        }
    }

    /// Like [`SqsQueues::new`] with an explicit SDK configuration (endpoint, region,
    /// credentials) instead of the process environment: tests use this.
    pub fn with_sdk_config(
        retry_queue_url: Option<String>,
        dead_letter_queue_url: Option<String>,
        sdk_config: SdkConfig,
    ) -> Self {
        SqsQueues {
            sdk_config: Some(sdk_config),
            ..SqsQueues::new(retry_queue_url, dead_letter_queue_url)
        }
    }

    pub fn has_dead_letter_queue(&self) -> bool {
        self.dead_letter_queue_url.is_some()
    }

    pub fn has_retry_queue(&self) -> bool {
        self.retry_queue_url.is_some()
    }

    /// [`EventQueues::park`] through SendMessageBatch.
    pub async fn park(&self, items: &[Parked]) -> Vec<Result<(), QueueError>> {
        let Some(url) = &self.dead_letter_queue_url else {
            return not_configured("dead-letter queue", items.len());
        };
        let outgoing = items.iter().enumerate().map(|(index, item)| {
            let mut attributes = HashMap::new();
            for (name, data_type, value) in dead_letter_attributes(item) {
                // build() fails only without a data type, which is always set here.
                if let Ok(attribute) = MessageAttributeValue::builder()
                    .data_type(data_type)
                    .string_value(value)
                    .build()
                {
                    attributes.insert(name.to_string(), attribute);
                }
            }
            Outgoing::new(index, &item.body, attributes)
                .map(|message| message.for_queue(url, &item.keys))
        });
        self.send_all(url, items.len(), outgoing.collect()).await
    }

    /// [`EventQueues::requeue`] through SendMessageBatch.
    pub async fn requeue(&self, items: &[Queued]) -> Vec<Result<(), QueueError>> {
        let Some(url) = &self.retry_queue_url else {
            return not_configured("retry queue", items.len());
        };
        let outgoing = items.iter().enumerate().map(|(index, item)| {
            Outgoing::new(index, &item.body, HashMap::new())
                .map(|message| message.for_queue(url, &item.keys))
        });
        self.send_all(url, items.len(), outgoing.collect()).await
    }

    async fn client(&self) -> aws_sdk_sqs::Client {
        self.client
            .get_or_init(|| async {
                let sdk_config = crate::aws::given_or_shared(&self.sdk_config).await;
                let config = aws_sdk_sqs::config::Builder::from(sdk_config)
                    .timeout_config(timeouts())
                    .build();
                aws_sdk_sqs::Client::from_conf(config)
            })
            .await
            .clone()
    }

    /// Sends the valid messages in batches (concurrently, a few calls at a time) and
    /// returns one result per original item.
    async fn send_all(
        &self,
        url: &str,
        count: usize,
        outgoing: Vec<Result<Outgoing, (usize, QueueError)>>,
    ) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Result<(), QueueError>> = vec![
            Err(QueueError::new(
                QueueErrorKind::Unreachable,
                "SQS returned no result for this message"
            ));
            count
        ];
        let mut valid = Vec::with_capacity(outgoing.len());
        for item in outgoing {
            match item {
                Ok(message) => valid.push(message),
                Err((index, problem)) => results[index] = Err(problem),
            }
        }
        if valid.is_empty() {
            return results;
        }

        let client = self.client().await;
        if is_fifo(url) {
            // One call after the other, in order: a group's messages keep their order.
            for batch in batches(valid) {
                for (index, result) in send_batch(&client, url, batch).await {
                    results[index] = result;
                }
            }
            return results;
        }
        let permits = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
        let mut calls = JoinSet::new();
        for batch in batches(valid) {
            let client = client.clone();
            let url = url.to_string();
            let permits = permits.clone();
            calls.spawn(async move {
                let _permit = permits.acquire_owned().await;
                send_batch(&client, &url, batch).await
            });
        }
        while let Some(joined) = calls.join_next().await {
            match joined {
                Ok(batch_results) => {
                    for (index, result) in batch_results {
                        results[index] = result;
                    }
                }
                // A panicked call leaves its items at "no result": they count as failed.
                Err(join_error) => {
                    tracing::error!(error = %join_error, "SQS send task failed");
                }
            }
        }
        results
    }
}

impl Outgoing {
    fn new(
        index: usize,
        body: &str,
        attributes: HashMap<String, MessageAttributeValue>,
    ) -> Result<Outgoing, (usize, QueueError)> {
        let size = body.len()
            + attributes
                .iter()
                .map(|(name, value)| {
                    name.len() + value.data_type().len() + value.string_value().map_or(0, str::len)
                })
                .sum::<usize>();
        match unsendable(body, size) {
            Some(problem) => Err((index, problem)),
            None => Ok(Outgoing {
                index,
                body: body.to_string(),
                attributes,
                size,
                keys: None,
            }),
        }
    }

    /// The message as `url`'s queue wants it: with its FIFO keys when the queue is FIFO.
    fn for_queue(mut self, url: &str, keys: &FifoKeys) -> Outgoing {
        self.keys = is_fifo(url).then(|| keys.clone());
        self
    }
}

/// Groups messages into SendMessageBatch calls: ≤ 10 entries and ≤ 256 KiB each.
fn batches(messages: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let mut batches = Vec::new();
    let mut current: Vec<Outgoing> = Vec::new();
    let mut current_size = 0;
    for message in messages {
        if current.len() == MAX_BATCH_ENTRIES || current_size + message.size > MAX_MESSAGE_BYTES {
            batches.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current_size += message.size;
        current.push(message);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// One SendMessageBatch call; entry ids are the items' indexes. When SQS refuses the
/// whole call (it does so for one oversized or malformed entry), each entry is sent
/// again alone so that one bad message does not fail the others.
async fn send_batch(
    client: &aws_sdk_sqs::Client,
    url: &str,
    batch: Vec<Outgoing>,
) -> Vec<(usize, Result<(), QueueError>)> {
    let mut entries = Vec::with_capacity(batch.len());
    let mut results = Vec::with_capacity(batch.len());
    for message in batch {
        let (group, dedup) = message.keys.map(|k| (k.group, k.dedup)).unzip();
        let entry = SendMessageBatchRequestEntry::builder()
            .id(message.index.to_string())
            .message_body(message.body)
            .set_message_group_id(group)
            .set_message_deduplication_id(dedup)
            .set_message_attributes(if message.attributes.is_empty() {
                None
            } else {
                Some(message.attributes)
            })
            .build();
        match entry {
            Ok(entry) => entries.push((message.index, entry)),
            Err(error) => results.push((
                message.index,
                Err(QueueError::new(
                    QueueErrorKind::Unsendable,
                    format!("cannot build the SQS entry: {error}"),
                )),
            )),
        }
    }
    if entries.is_empty() {
        return results;
    }
    let indexes: Vec<usize> = entries.iter().map(|(index, _)| *index).collect();
    let batch_entries = entries.iter().map(|(_, entry)| entry.clone()).collect();
    match send_entries(client, url, &indexes, batch_entries).await {
        Ok(sent) => results.extend(sent),
        Err(failure) if failure.kind == QueueErrorKind::Refused && entries.len() > 1 => {
            tracing::warn!(queue = url, error = %failure, "SendMessageBatch refused; sending one by one");
            for (index, entry) in entries {
                match send_entries(client, url, &[index], vec![entry]).await {
                    Ok(sent) => results.extend(sent),
                    Err(failure) => results.push((index, Err(call_failed(url, &failure)))),
                }
            }
        }
        Err(failure) => {
            tracing::warn!(queue = url, error = %failure, messages = indexes.len(), "SendMessageBatch failed");
            for index in indexes {
                results.push((index, Err(call_failed(url, &failure))));
            }
        }
    }
    results
}

/// An item's error when its whole SendMessageBatch call failed.
fn call_failed(url: &str, failure: &QueueError) -> QueueError {
    QueueError::new(
        failure.kind,
        format!("SendMessageBatch to {url} failed: {failure}"),
    )
}

/// Sends `entries` (ids: `indexes`) in one call and maps each entry's result back.
async fn send_entries(
    client: &aws_sdk_sqs::Client,
    url: &str,
    indexes: &[usize],
    entries: Vec<SendMessageBatchRequestEntry>,
) -> Result<Vec<(usize, Result<(), QueueError>)>, QueueError> {
    let output = client
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|error| match &error {
            SdkError::ServiceError(_) => QueueError::new(QueueErrorKind::Refused, describe(&error)),
            _ => QueueError::new(QueueErrorKind::Unreachable, describe(&error)),
        })?;
    let mut by_id: HashMap<usize, Result<(), QueueError>> = HashMap::new();
    for ok in output.successful() {
        if let Ok(index) = ok.id().parse() {
            by_id.insert(index, Ok(()));
        }
    }
    for failed in output.failed() {
        if let Ok(index) = failed.id().parse() {
            let message = failed.message().unwrap_or("no message");
            let fault = if failed.sender_fault() {
                "sender"
            } else {
                "SQS"
            };
            by_id.insert(
                index,
                Err(QueueError::new(
                    QueueErrorKind::Refused,
                    format!(
                        "SQS refused the message for {url}: {} ({fault} fault): {message}",
                        failed.code()
                    ),
                )),
            );
        }
    }
    Ok(indexes
        .iter()
        .map(|index| {
            let result = by_id.remove(index).unwrap_or_else(|| {
                Err(QueueError::new(
                    QueueErrorKind::Unreachable,
                    format!("SQS returned no result for this message ({url})"),
                ))
            });
            (*index, result)
        })
        .collect())
}

fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug + 'static>(
    error: &SdkError<E, R>,
) -> String {
    match error {
        SdkError::ServiceError(context) => {
            let err = context.err();
            let code = err.code().unwrap_or("UnknownError");
            match err.message() {
                Some(message) if !message.is_empty() => format!("{code}: {message}"),
                _ => code.to_string(),
            }
        }
        SdkError::TimeoutError(_) => "timed out".to_string(),
        _ => crate::aws::error_chain(error),
    }
}

/// The characters SQS accepts in a message body or string attribute:
/// `#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`.
fn sqs_allows(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// The failure message as an attribute value: SQS-safe characters, at most 1,000 of them,
/// never empty.
fn error_message_attribute(message: &str) -> String {
    let cleaned: String = message
        .chars()
        .map(|c| if sqs_allows(c) { c } else { '\u{FFFD}' })
        .take(MAX_ERROR_MESSAGE_CHARS)
        .collect();
    if cleaned.trim().is_empty() {
        "(no message)".to_string()
    } else {
        cleaned
    }
}

impl EventQueues for SqsQueues {
    fn has_dead_letter_queue(&self) -> bool {
        SqsQueues::has_dead_letter_queue(self)
    }

    fn has_retry_queue(&self) -> bool {
        SqsQueues::has_retry_queue(self)
    }

    fn park<'a>(&'a self, items: &'a [Parked]) -> BoxFuture<'a, Vec<Result<(), QueueError>>> {
        Box::pin(SqsQueues::park(self, items))
    }

    fn requeue<'a>(&'a self, items: &'a [Queued]) -> BoxFuture<'a, Vec<Result<(), QueueError>>> {
        Box::pin(SqsQueues::requeue(self, items))
    }
}

/// Queues in the process: what the doors would have sent to SQS, kept for inspection.
/// Refuses what SQS would refuse, and can be told to refuse everything (as SQS does for
/// a queue that does not exist). FIFO ([`MemoryQueues::fifo`]) as SQS FIFO: a message
/// needs a valid group and deduplication id, and a deduplication id seen in its group in
/// the last 5 minutes is accepted but not kept.
#[derive(Debug, Default)]
pub struct MemoryQueues {
    dead_letter_queue: Option<MemoryQueue>,
    retry_queue: Option<MemoryQueue>,
}

/// One message a [`MemoryQueues`] queue kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub body: String,
    pub attributes: HashMap<String, String>,
    /// The FIFO keys it was sent with (a FIFO queue only).
    pub keys: Option<FifoKeys>,
}

/// SQS FIFO's deduplication interval.
const DEDUPLICATION_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct MemoryQueue {
    refuse: bool,
    fifo: bool,
    messages: std::sync::Mutex<Vec<StoredMessage>>,
    /// FIFO: (group, deduplication id) → when first sent.
    seen: std::sync::Mutex<HashMap<(String, String), std::time::Instant>>,
}

impl MemoryQueue {
    fn send(
        &self,
        body: &str,
        attributes: Vec<(&'static str, &'static str, String)>,
        keys: &FifoKeys,
    ) -> Result<(), QueueError> {
        let size = body.len()
            + attributes
                .iter()
                .map(|(name, data_type, value)| name.len() + data_type.len() + value.len())
                .sum::<usize>();
        if let Some(problem) = unsendable(body, size) {
            return Err(problem);
        }
        if self.refuse {
            return Err(QueueError::new(
                QueueErrorKind::Refused,
                "the queue refused the message (as SQS does for a queue that does not exist)",
            ));
        }
        if self.fifo {
            if !crate::digest::is_sqs_id(&keys.group) || !crate::digest::is_sqs_id(&keys.dedup) {
                return Err(QueueError::new(
                    QueueErrorKind::Refused,
                    "InvalidParameterValue: a FIFO message needs a valid MessageGroupId and MessageDeduplicationId",
                ));
            }
            let now = std::time::Instant::now();
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.retain(|_, at| now.duration_since(*at) < DEDUPLICATION_INTERVAL);
            let key = (keys.group.clone(), keys.dedup.clone());
            if seen.contains_key(&key) {
                return Ok(()); // accepted, not delivered again: SQS FIFO deduplication
            }
            seen.insert(key, now);
        }
        let attributes = attributes
            .into_iter()
            .map(|(name, _, value)| (name.to_string(), value))
            .collect();
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(StoredMessage {
                body: body.to_string(),
                attributes,
                keys: self.fifo.then(|| keys.clone()),
            });
        Ok(())
    }

    fn contents(&self) -> Vec<StoredMessage> {
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl MemoryQueues {
    /// `retry`/`dead_letter`: whether each queue exists.
    pub fn new(retry: bool, dead_letter: bool) -> Self {
        MemoryQueues {
            retry_queue: retry.then(MemoryQueue::default),
            dead_letter_queue: dead_letter.then(MemoryQueue::default),
        }
    }

    /// The same queues as FIFO queues (`QueueType=fifo`).
    pub fn fifo(mut self) -> Self {
        for queue in [&mut self.retry_queue, &mut self.dead_letter_queue]
            .into_iter()
            .flatten()
        {
            queue.fifo = true;
        }
        self
    }

    /// A dead-letter queue that refuses every message.
    pub fn refusing_dead_letters(mut self) -> Self {
        self.dead_letter_queue = Some(MemoryQueue {
            refuse: true,
            ..MemoryQueue::default()
        });
        self
    }

    /// The dead letters so far, in order.
    pub fn dead_letter_messages(&self) -> Vec<StoredMessage> {
        self.dead_letter_queue
            .as_ref()
            .map(MemoryQueue::contents)
            .unwrap_or_default()
    }

    /// The messages re-queued so far, in order.
    pub fn requeued_messages(&self) -> Vec<StoredMessage> {
        self.retry_queue
            .as_ref()
            .map(MemoryQueue::contents)
            .unwrap_or_default()
    }

    /// The dead letters so far: body and message attributes, in order.
    pub fn dead_letters(&self) -> Vec<(String, HashMap<String, String>)> {
        (self.dead_letter_messages().into_iter())
            .map(|message| (message.body, message.attributes))
            .collect()
    }

    /// The bodies re-queued so far, in order.
    pub fn requeued(&self) -> Vec<String> {
        (self.requeued_messages().into_iter())
            .map(|message| message.body)
            .collect()
    }
}

impl EventQueues for MemoryQueues {
    fn has_dead_letter_queue(&self) -> bool {
        self.dead_letter_queue.is_some()
    }

    fn has_retry_queue(&self) -> bool {
        self.retry_queue.is_some()
    }

    fn park<'a>(&'a self, items: &'a [Parked]) -> BoxFuture<'a, Vec<Result<(), QueueError>>> {
        let results = match &self.dead_letter_queue {
            Some(queue) => items
                .iter()
                .map(|item| queue.send(&item.body, dead_letter_attributes(item), &item.keys))
                .collect(),
            None => not_configured("dead-letter queue", items.len()),
        };
        Box::pin(std::future::ready(results))
    }

    fn requeue<'a>(&'a self, items: &'a [Queued]) -> BoxFuture<'a, Vec<Result<(), QueueError>>> {
        let results = match &self.retry_queue {
            Some(queue) => items
                .iter()
                .map(|item| queue.send(&item.body, Vec::new(), &item.keys))
                .collect(),
            None => not_configured("retry queue", items.len()),
        };
        Box::pin(std::future::ready(results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::FailureClass;

    fn queued(body: &str) -> Queued {
        Queued {
            body: body.into(),
            keys: FifoKeys::new("user-1", body),
        }
    }

    fn message(index: usize, size: usize) -> Outgoing {
        Outgoing::new(index, &"x".repeat(size), HashMap::new())
            .unwrap_or_else(|(_, e)| panic!("{e}"))
    }

    #[test]
    fn batches_respect_count_and_size() {
        let counts: Vec<usize> = batches((0..23).map(|i| message(i, 10)).collect())
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(counts, [10, 10, 3]);

        let big = MAX_MESSAGE_BYTES / 2;
        let sizes: Vec<usize> = batches(vec![message(0, big), message(1, big), message(2, 1)])
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [2, 1]);
        let indexes: Vec<usize> = batches((0..12).map(|i| message(i, 1)).collect())
            .into_iter()
            .flatten()
            .map(|m| m.index)
            .collect();
        assert_eq!(indexes, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn unsendable_messages_fail_alone() {
        let too_big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let (index, problem) = Outgoing::new(3, &too_big, HashMap::new()).err().unwrap();
        assert_eq!(index, 3);
        assert!(problem.detail.contains("262145 bytes"), "{problem}");
        assert!(Outgoing::new(0, "", HashMap::new()).is_err());
        let (_, problem) = Outgoing::new(0, "a\u{0}b", HashMap::new()).err().unwrap();
        assert!(problem.detail.contains("U+0000"), "{problem}");
        assert!(Outgoing::new(0, "ok \t\n\r é 😀", HashMap::new()).is_ok());
        // Attributes count toward the limit.
        let mut attributes = HashMap::new();
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("m".repeat(100))
            .build()
            .unwrap();
        attributes.insert("errorMessage".to_string(), value);
        assert!(Outgoing::new(0, &"x".repeat(MAX_MESSAGE_BYTES - 50), attributes).is_err());
    }

    #[test]
    fn error_message_is_cut_and_cleaned() {
        let long = "é".repeat(1_500);
        assert_eq!(
            error_message_attribute(&long).chars().count(),
            MAX_ERROR_MESSAGE_CHARS
        );
        assert_eq!(error_message_attribute("a\u{1}b"), "a\u{FFFD}b");
        assert_eq!(error_message_attribute(""), "(no message)");
    }

    #[tokio::test]
    async fn without_queues_every_item_fails() {
        let queues = SqsQueues::new(None, None);
        assert!(!queues.has_dead_letter_queue() && !queues.has_retry_queue());
        let parked = Parked {
            body: "{}".into(),
            failure: Failure::new(FailureClass::Permanent, Some(400), "bad"),
            source: "sqs",
            keys: FifoKeys::new("u", "m"),
        };
        let results = queues.park(&[parked.clone(), parked]).await;
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(Result::is_err));
        assert_eq!(queues.requeue(&[queued("{}")]).await.len(), 1);
    }

    #[tokio::test]
    async fn memory_queues_keep_what_sqs_would_and_refuse_the_rest() {
        let queues = MemoryQueues::new(true, true);
        let parked = |body: &str| Parked {
            body: body.into(),
            failure: Failure::new(FailureClass::Permanent, Some(400), "bad"),
            source: "direct",
            keys: FifoKeys::new("u", body),
        };
        let results = queues
            .park(&[parked("{}"), parked(""), parked("a\u{0}")])
            .await;
        let kinds: Vec<_> = results
            .iter()
            .map(|r| r.as_ref().map_err(|e| e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                Ok(&()),
                Err(QueueErrorKind::Unsendable),
                Err(QueueErrorKind::Unsendable)
            ]
        );
        let letters = queues.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].1["errorClass"], "permanent");
        assert_eq!(letters[0].1["errorStatus"], "400");
        assert_eq!(letters[0].1["source"], "direct");
        assert_eq!(queues.requeue(&[queued("{}")]).await, vec![Ok(())]);
        assert_eq!(queues.requeued(), ["{}"]);

        let refusing = MemoryQueues::new(false, false).refusing_dead_letters();
        assert!(!refusing.has_retry_queue() && refusing.has_dead_letter_queue());
        let result = refusing.park(&[parked("{}")]).await;
        assert_eq!(
            result[0].as_ref().map_err(|e| e.kind),
            Err(QueueErrorKind::Refused)
        );
        let result = refusing.requeue(&[queued("{}")]).await;
        assert_eq!(
            result[0].as_ref().map_err(|e| e.kind),
            Err(QueueErrorKind::NotConfigured)
        );
    }

    /// FIFO as SQS: keys kept with the message, a repeated deduplication id accepted but
    /// not kept (per group), an id SQS would refuse refused; a standard queue ignores keys.
    #[tokio::test]
    async fn memory_fifo_queues_keep_keys_and_deduplicate_per_group() {
        let queues = MemoryQueues::new(true, true).fifo();
        let item = |group: &str, dedup: &str, body: &str| Queued {
            body: body.into(),
            keys: FifoKeys::new(group, dedup),
        };
        let results = queues
            .requeue(&[
                item("u1", "m1", "first"),
                item("u1", "m1", "again"),
                item("u2", "m1", "other group"),
                item("u1", "m2", "second"),
            ])
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(queues.requeued(), ["first", "other group", "second"]);
        let keys: Vec<FifoKeys> = (queues.requeued_messages().into_iter())
            .filter_map(|m| m.keys)
            .collect();
        assert_eq!(keys[2], FifoKeys::new("u1", "m2"));
        let unusable = Queued {
            body: "x".into(),
            keys: FifoKeys {
                group: "a group".into(),
                dedup: "d".into(),
            },
        };
        assert_eq!(
            queues.requeue(&[unusable]).await[0]
                .as_ref()
                .map_err(|e| e.kind),
            Err(QueueErrorKind::Refused)
        );
        let standard = MemoryQueues::new(true, false);
        standard
            .requeue(&[item("u1", "m1", "a"), item("u1", "m1", "b")])
            .await;
        assert_eq!(standard.requeued(), ["a", "b"]);
        assert!(standard
            .requeued_messages()
            .iter()
            .all(|m| m.keys.is_none()));
    }

    #[test]
    fn fifo_keys_go_only_to_fifo_queues() {
        let keys = FifoKeys::new("user 1", "msg-1");
        assert!(
            keys.group.starts_with("h-"),
            "a space is not allowed: hashed"
        );
        let outgoing = |url: &str| message(0, 3).for_queue(url, &keys).keys;
        assert_eq!(outgoing("https://sqs/q.fifo"), Some(keys.clone()));
        assert_eq!(outgoing("https://sqs/q"), None);
    }
}
