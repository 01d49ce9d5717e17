//! The fleet's ledger of delivered events (`DEDUP_TABLE`; the template sets it with FIFO
//! queues): one DynamoDB table every container reads before delivering and writes after,
//! so that a repeated message is skipped whichever container gets it. The per-container
//! cache ([`crate::pipeline::skip`]) only catches repeats that land where the original did.
//!
//! - Keys are digests of the event's key (messageId, type, user): the table holds no
//!   value from an event.
//! - Items expire with the skip window (`KUSTOMER_UNCHANGED_TTL_SECONDS`): attribute
//!   `expiresAt` (epoch seconds) is the table's TTL, and a read ignores an expired item
//!   DynamoDB has not removed yet (its TTL deletes lazily).
//! - Reads are strongly consistent: a FIFO group's next batch may run in another container
//!   a moment after this one recorded the original.
//! - The ledger never loses an event: a read that fails counts as "not delivered" (the
//!   event is sent; at-least-once as without the ledger), a write that fails is logged
//!   and counted (`DedupLedgerErrors`). After a failure the container does not ask the
//!   ledger for [`PAUSE_AFTER_FAILURE`]: a hung table must not cost every event a timeout.
//! - It also holds, per customer id (digested), the digest of the last body the fleet
//!   wrote to that customer ([`DeliveredLedger::last_body`]): an update a container would
//!   skip as unchanged is skipped only if the fleet's last body is the same, so a change
//!   written by another container in between is not undone by a skip.
//! - Check, then deliver, then record: two containers holding the same message at the same
//!   moment may both send it. In a FIFO queue a message group is in one batch at a time,
//!   so there they cannot.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use tokio::sync::OnceCell;

/// DynamoDB's limit of keys per BatchGetItem call.
const MAX_KEYS_PER_READ: usize = 100;
/// Further calls for the keys a BatchGetItem left unprocessed (throttling).
const MAX_READ_ROUNDS: usize = 3;
/// How long a container leaves the ledger alone after a call failed.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(10);
const KEY: &str = "id";
/// The attribute holding a customer's last body digest (items keyed `body:<digest of id>`).
const BODY: &str = "body";
/// What [`DeliveredLedger::record_body`] stores when a write failed: Kustomer's state is
/// not known, so no body matches it.
pub const UNKNOWN_BODY: u128 = 0;
const EXPIRES_AT: &str = "expiresAt";

/// Why the ledger could not answer: names the table and the cause, never a key's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerError(pub String);

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LedgerError {}

#[derive(Debug)]
pub struct DeliveredLedger {
    table: String,
    /// How long an entry counts: the skip window.
    window: Duration,
    /// Given by the caller (tests); otherwise loaded from the environment at first use.
    sdk_config: Option<SdkConfig>,
    client: OnceCell<aws_sdk_dynamodb::Client>,
    /// Set by a failed call: no call until then.
    paused_until: Mutex<Option<Instant>>,
}

/// Timeouts for ledger calls: short, since a slow ledger delays every event.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(3))
        .build()
}

fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn key_text(key: u128) -> String {
    format!("{key:032x}")
}

fn body_key(customer_id: &str) -> String {
    format!(
        "body:{:032x}",
        crate::digest::digest128(customer_id.as_bytes())
    )
}

impl DeliveredLedger {
    /// No IO: the client is created at first use, from the environment (`AWS_REGION`,
    /// credentials, optional `AWS_ENDPOINT_URL[_DYNAMODB]`).
    pub fn new(table: String, window: Duration) -> DeliveredLedger {
        DeliveredLedger {
            table,
            window,
            sdk_config: None,
            client: OnceCell::new(),
            paused_until: Mutex::new(None),
        }
    }

    /// Like [`DeliveredLedger::new`] with an explicit SDK configuration (tests).
    pub fn with_sdk_config(
        table: String,
        window: Duration,
        sdk_config: SdkConfig,
    ) -> DeliveredLedger {
        DeliveredLedger {
            sdk_config: Some(sdk_config),
            ..DeliveredLedger::new(table, window)
        }
    }

    async fn client(&self) -> aws_sdk_dynamodb::Client {
        self.client
            .get_or_init(|| async {
                let sdk_config = crate::aws::given_or_shared(&self.sdk_config).await;
                let config = aws_sdk_dynamodb::config::Builder::from(sdk_config)
                    .timeout_config(timeouts())
                    .build();
                aws_sdk_dynamodb::Client::from_conf(config)
            })
            .await
            .clone()
    }

    /// An error while the ledger is paused after a failure, else `Ok`.
    fn check_not_paused(&self) -> Result<(), LedgerError> {
        let paused_until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        match paused_until {
            Some(until) if Instant::now() < until => Err(LedgerError(format!(
                "dedup ledger {}: not asked for {} s after a failed call",
                self.table,
                PAUSE_AFTER_FAILURE.as_secs()
            ))),
            _ => Ok(()),
        }
    }

    /// A call failed: pauses the ledger and passes the error on.
    fn paused_by(&self, error: LedgerError) -> LedgerError {
        let until = Instant::now().checked_add(PAUSE_AFTER_FAILURE);
        *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
        error
    }

    fn error(&self, what: &str, error: &(dyn std::error::Error + 'static)) -> LedgerError {
        LedgerError(format!(
            "dedup ledger {}: {what} failed: {}",
            self.table,
            crate::aws::error_chain(error)
        ))
    }

    /// Which of `keys` a container recorded within the window.
    pub async fn delivered(&self, keys: &[u128]) -> Result<HashSet<u128>, LedgerError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        self.check_not_paused()?;
        self.read(keys).await.map_err(|error| self.paused_by(error))
    }

    async fn read(&self, keys: &[u128]) -> Result<HashSet<u128>, LedgerError> {
        let wanted: HashSet<u128> = keys.iter().copied().collect();
        let mut found = HashSet::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        let client = self.client().await;
        let now = epoch_seconds(SystemTime::now());
        let texts: Vec<String> = wanted.iter().map(|&key| key_text(key)).collect();
        for chunk in texts.chunks(MAX_KEYS_PER_READ) {
            let mut pending: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|text| HashMap::from([(KEY.to_string(), AttributeValue::S(text.clone()))]))
                .collect();
            for _ in 0..MAX_READ_ROUNDS {
                if pending.is_empty() {
                    break;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| self.error("BatchGetItem", &e))?;
                let output = client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| self.error("BatchGetItem", &e))?;
                let items = output
                    .responses()
                    .and_then(|tables| tables.get(&self.table))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for item in items {
                    let live = item
                        .get(EXPIRES_AT)
                        .and_then(|value| value.as_n().ok())
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|expires| expires > now);
                    let key = item
                        .get(KEY)
                        .and_then(|value| value.as_s().ok())
                        .and_then(|text| u128::from_str_radix(text, 16).ok());
                    if let (true, Some(key)) = (live, key) {
                        if wanted.contains(&key) {
                            found.insert(key);
                        }
                    }
                }
                pending = output
                    .unprocessed_keys()
                    .and_then(|tables| tables.get(&self.table))
                    .map(|left| left.keys().to_vec())
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(LedgerError(format!(
                    "dedup ledger {}: BatchGetItem left {} keys unprocessed",
                    self.table,
                    pending.len()
                )));
            }
        }
        Ok(found)
    }

    /// Records `key` as delivered, for the window.
    pub async fn record(&self, key: u128) -> Result<(), LedgerError> {
        self.check_not_paused()?;
        self.write(key).await.map_err(|error| self.paused_by(error))
    }

    async fn write(&self, key: u128) -> Result<(), LedgerError> {
        self.put(key_text(key), None).await
    }

    /// The digest of the last body the fleet wrote to `customer_id` within the window
    /// (`None`: none recorded, or expired).
    pub async fn last_body(&self, customer_id: &str) -> Result<Option<u128>, LedgerError> {
        self.check_not_paused()?;
        self.read_body(customer_id)
            .await
            .map_err(|error| self.paused_by(error))
    }

    async fn read_body(&self, customer_id: &str) -> Result<Option<u128>, LedgerError> {
        let output = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(body_key(customer_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", &e))?;
        let now = epoch_seconds(SystemTime::now());
        Ok(output.item().and_then(|item| {
            let expires = item.get(EXPIRES_AT)?.as_n().ok()?.parse::<u64>().ok()?;
            let body = item.get(BODY)?.as_s().ok()?;
            (expires > now)
                .then(|| u128::from_str_radix(body, 16).ok())
                .flatten()
        }))
    }

    /// Records `body` (a digest, or [`UNKNOWN_BODY`]) as the last the fleet wrote to
    /// `customer_id`.
    pub async fn record_body(&self, customer_id: &str, body: u128) -> Result<(), LedgerError> {
        self.check_not_paused()?;
        self.put(body_key(customer_id), Some(body))
            .await
            .map_err(|error| self.paused_by(error))
    }

    async fn put(&self, key: String, body: Option<u128>) -> Result<(), LedgerError> {
        let expires = epoch_seconds(SystemTime::now()).saturating_add(self.window.as_secs());
        let mut request = self
            .client()
            .await
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(key))
            .item(EXPIRES_AT, AttributeValue::N(expires.to_string()));
        if let Some(body) = body {
            request = request.item(BODY, AttributeValue::S(key_text(body)));
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("PutItem", &e))
    }
}
