//! The fleet's ledger (`DEDUP_TABLE`; the template sets it with FIFO queues): one DynamoDB
//! table the containers share, so that what one container learned another need not send
//! or look up again. The per-container caches ([`crate::pipeline::skip`],
//! [`crate::pipeline::id_cache`]) only help where the event before landed. Three kinds of
//! items, each keyed by a digest (the table holds no value from an event):
//!
//! - **delivered events** (messageId, type, user), for the skip window
//!   (`KUSTOMER_UNCHANGED_TTL_SECONDS`): read before a batch, written after each delivered
//!   event, so a repeated message is skipped whichever container gets it;
//! - **the last body per customer** (its digest), for the skip window: an update is
//!   unchanged when it is the fleet's last body for that customer, whichever container
//!   wrote it, so a change another container wrote since is not undone by a skip;
//! - **customer ids by look-up path**, for the customer-id cache's TTL
//!   (`CUSTOMER_CACHE_TTL_SECONDS`): a known user's identify on another container skips
//!   its look-ups (a stale id is handled like a stale cached one: 404, look up again).
//!
//! How it behaves:
//! - `expiresAt` (epoch seconds) is the table's TTL attribute; a read ignores an expired
//!   item DynamoDB has not removed yet (its TTL deletes lazily).
//! - Reads are strongly consistent (BatchGetItem): a FIFO group's next batch may run in
//!   another container a moment after this one wrote.
//! - It never loses an event: a read that fails answers "not known" (the request is sent,
//!   as without the ledger), a write that fails is logged; both count in
//!   `DedupLedgerErrors`. After a failure the container leaves the ledger alone for
//!   [`PAUSE_AFTER_FAILURE`]: a hung table must not cost every event a timeout.
//! - Check, then deliver, then record: two containers holding the same message at the
//!   same moment may both send it. In a FIFO queue a message group is in one batch at a
//!   time, so there they cannot.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use futures_util::future::join_all;
use tokio::sync::OnceCell;

use crate::digest::digest128;

/// DynamoDB's limit of keys per BatchGetItem call.
const MAX_KEYS_PER_READ: usize = 100;
/// Further calls for the keys a BatchGetItem left unprocessed (throttling).
const MAX_READ_ROUNDS: usize = 3;
/// How long a container leaves the ledger alone after a call failed.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(10);
const KEY: &str = "id";
const EXPIRES_AT: &str = "expiresAt";
/// What an item holds besides its key (a body digest, a customer id); events hold nothing.
const VALUE: &str = "value";
/// What [`DeliveredLedger::record_body`] stores when a write failed: Kustomer's state is
/// not known, so no body matches it.
pub const UNKNOWN_BODY: u128 = 0;

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
    /// How long delivered events and last bodies count: the skip window.
    window: Duration,
    /// How long customer ids count (the customer-id cache's TTL); `None`: not shared.
    customer_ttl: Option<Duration>,
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

fn hex(digest: u128) -> String {
    format!("{digest:032x}")
}

fn event_item(key: u128) -> String {
    hex(key)
}

fn body_item(customer_id: &str) -> String {
    format!("body:{}", hex(digest128(customer_id.as_bytes())))
}

fn customer_item(lookup_path: &str) -> String {
    format!("customer:{}", hex(digest128(lookup_path.as_bytes())))
}

impl DeliveredLedger {
    /// No IO: the client is created at first use, from the environment (`AWS_REGION`,
    /// credentials, optional `AWS_ENDPOINT_URL[_DYNAMODB]`).
    pub fn new(table: String, window: Duration) -> DeliveredLedger {
        DeliveredLedger {
            table,
            window,
            customer_ttl: None,
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

    /// Shares customer ids too, each for `ttl` (`None`: not shared).
    pub fn sharing_customer_ids(mut self, ttl: Option<Duration>) -> DeliveredLedger {
        self.customer_ttl = ttl;
        self
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

    /// Which of `keys` (event digests) a container recorded as delivered within the window.
    pub async fn delivered(&self, keys: &[u128]) -> Result<HashSet<u128>, LedgerError> {
        let live = self
            .live_items(keys.iter().map(|&key| event_item(key)).collect())
            .await?;
        Ok(keys
            .iter()
            .copied()
            .filter(|&key| live.contains_key(&event_item(key)))
            .collect())
    }

    /// Records `key` (an event digest) as delivered, for the window.
    pub async fn record(&self, key: u128) -> Result<(), LedgerError> {
        self.put(event_item(key), None, self.window).await
    }

    /// The digest of the last body the fleet wrote to `customer_id` within the window
    /// (`None`: none recorded, or expired).
    pub async fn last_body(&self, customer_id: &str) -> Result<Option<u128>, LedgerError> {
        let item = body_item(customer_id);
        let live = self.live_items(vec![item.clone()]).await?;
        Ok(live
            .get(&item)
            .and_then(|value| value.as_deref())
            .and_then(|text| u128::from_str_radix(text, 16).ok()))
    }

    /// Records `body` (a digest, or [`UNKNOWN_BODY`]) as the last the fleet wrote to
    /// `customer_id`.
    pub async fn record_body(&self, customer_id: &str, body: u128) -> Result<(), LedgerError> {
        self.put(body_item(customer_id), Some(hex(body)), self.window)
            .await
    }

    /// Whether the ledger shares customer ids.
    pub fn shares_customer_ids(&self) -> bool {
        self.customer_ttl.is_some()
    }

    /// The customer id a container found or created for the first of `paths` (look-up
    /// paths, in the spec's order) that has one; `None` without customer-id sharing.
    pub async fn customer_for(&self, paths: &[&str]) -> Result<Option<String>, LedgerError> {
        if !self.shares_customer_ids() || paths.is_empty() {
            return Ok(None);
        }
        let items: Vec<String> = paths.iter().map(|path| customer_item(path)).collect();
        let live = self.live_items(items.clone()).await?;
        Ok(items
            .iter()
            .find_map(|item| live.get(item).cloned().flatten())
            .filter(|id| !id.is_empty()))
    }

    /// Records that each of `paths` leads to `customer_id` (no-op without sharing).
    pub async fn remember_customer(
        &self,
        paths: &[&str],
        customer_id: &str,
    ) -> Result<(), LedgerError> {
        let Some(ttl) = self.customer_ttl else {
            return Ok(());
        };
        let writes = paths
            .iter()
            .map(|path| self.put(customer_item(path), Some(customer_id.to_string()), ttl));
        join_all(writes).await.into_iter().collect()
    }

    /// The live items among `items` (no repeats): key → its value, if it has one.
    async fn live_items(
        &self,
        items: Vec<String>,
    ) -> Result<HashMap<String, Option<String>>, LedgerError> {
        if items.is_empty() {
            return Ok(HashMap::new());
        }
        self.check_not_paused()?;
        // BatchGetItem refuses a key asked twice.
        let mut seen = HashSet::new();
        let items = items.into_iter().filter(|item| seen.insert(item.clone()));
        self.read(items.collect())
            .await
            .map_err(|error| self.paused_by(error))
    }

    async fn read(
        &self,
        items: Vec<String>,
    ) -> Result<HashMap<String, Option<String>>, LedgerError> {
        let mut live = HashMap::new();
        let client = self.client().await;
        let now = epoch_seconds(SystemTime::now());
        for chunk in items.chunks(MAX_KEYS_PER_READ) {
            let mut pending: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|item| HashMap::from([(KEY.to_string(), AttributeValue::S(item.clone()))]))
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
                let found = output
                    .responses()
                    .and_then(|tables| tables.get(&self.table))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for item in found {
                    let text = |name| item.get(name).and_then(|value| value.as_s().ok());
                    let expires = item
                        .get(EXPIRES_AT)
                        .and_then(|value| value.as_n().ok())
                        .and_then(|n| n.parse::<u64>().ok());
                    if let (Some(key), Some(expires)) = (text(KEY), expires) {
                        if expires > now && chunk.contains(key) {
                            live.insert(key.clone(), text(VALUE).cloned());
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
        Ok(live)
    }

    /// Writes `item` (with `value`), expiring after `ttl`.
    async fn put(
        &self,
        item: String,
        value: Option<String>,
        ttl: Duration,
    ) -> Result<(), LedgerError> {
        self.check_not_paused()?;
        let expires = epoch_seconds(SystemTime::now()).saturating_add(ttl.as_secs());
        let mut request = self
            .client()
            .await
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(item))
            .item(EXPIRES_AT, AttributeValue::N(expires.to_string()));
        if let Some(value) = value {
            request = request.item(VALUE, AttributeValue::S(value));
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.paused_by(self.error("PutItem", &e)))
    }
}
