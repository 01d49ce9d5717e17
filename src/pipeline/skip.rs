//! Requests not worth sending, per warm container: an update identical to the last body
//! sent for that customer ([`UnchangedUpdates`]), an event whose messageId was delivered
//! already ([`DeliveredEvents`]). Both remember for `KUSTOMER_UNCHANGED_TTL_SECONDS` and at
//! most `CUSTOMER_CACHE_MAX_ENTRIES` entries, keep digests instead of bodies (bounded
//! memory) and cost no request.

use std::time::Duration;

use serde_json::Value;

use super::ttl_map::TtlMap;
use super::user_of;
use crate::digest::digest128;

/// What identifies a repeat of an event: its `messageId`, with its type and user (a
/// producer that reuses one messageId for different events does not lose any). `None`
/// without a messageId: such an event is never taken for a repeat.
pub fn event_key(event: &Value) -> Option<String> {
    let message_id = event
        .get("messageId")?
        .as_str()
        .filter(|id| !id.is_empty())?;
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    let user = user_of(event).unwrap_or_default();
    Some(format!("{event_type}:{user}:{message_id}"))
}

/// The digest of [`event_key`]: what the caches and the fleet's ledger keep.
pub fn event_digest(event: &Value) -> Option<u128> {
    event_key(event).map(|key| digest128(key.as_bytes()))
}

/// The two skip caches, on and off together (`KUSTOMER_UNCHANGED_TTL_SECONDS`).
#[derive(Debug)]
pub struct Skips {
    pub unchanged: UnchangedUpdates,
    pub delivered: DeliveredEvents,
}

impl Skips {
    pub fn new(ttl: Duration, capacity: usize) -> Skips {
        Skips {
            unchanged: UnchangedUpdates {
                sent: TtlMap::new(ttl, capacity),
            },
            delivered: DeliveredEvents {
                keys: TtlMap::new(ttl, capacity),
            },
        }
    }

    /// Forgets everything (a cold container).
    pub fn clear(&self) {
        self.unchanged.sent.retain(|_, _| false);
        self.delivered.keys.retain(|_, _| false);
    }
}

/// Customer id → digest of the body this container last sent it, answered 2xx.
#[derive(Debug)]
pub struct UnchangedUpdates {
    sent: TtlMap<String, u128>,
}

/// What the caches and the fleet's ledger keep of a body.
pub fn body_digest(body: &Value) -> u128 {
    digest128(body.to_string().as_bytes())
}

impl UnchangedUpdates {
    /// Whether `body` is what this container last sent customer `id` (within the TTL).
    pub fn is_unchanged(&self, id: &str, body: &Value) -> bool {
        self.sent.get(id) == Some(body_digest(body))
    }

    /// `body` reached customer `id` (a 2xx write): an identical update is skipped next.
    pub fn sent(&self, id: &str, body: &Value) {
        self.sent.insert(id.to_string(), body_digest(body));
    }

    /// A write for `id` failed: what Kustomer holds for it is not known any more.
    pub fn forget(&self, id: &str) {
        self.sent.remove(id);
    }
}

/// Digests of the [`event_key`]s of the events this container delivered.
#[derive(Debug)]
pub struct DeliveredEvents {
    keys: TtlMap<u128, ()>,
}

/// Keyed by [`event_digest`], which the pipeline computes once per event (an event without
/// a messageId has none, so it never counts as delivered before).
impl DeliveredEvents {
    /// Whether this container delivered the event with digest `key` already.
    pub fn delivered_before(&self, key: u128) -> bool {
        self.keys.get(&key).is_some()
    }

    /// The event with digest `key` was delivered (only then: a failed event must be tried
    /// again).
    pub fn delivered(&self, key: u128) {
        self.keys.insert(key, ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test(start_paused = true)]
    async fn unchanged_bodies_per_customer_within_the_ttl() {
        let skips = Skips::new(Duration::from_secs(300), 100);
        let body = json!({"name": "Ada", "custom": {"planStr": "pro"}});
        let unchanged = &skips.unchanged;
        assert!(!unchanged.is_unchanged("c1", &body));
        unchanged.sent("c1", &body);
        assert!(unchanged.is_unchanged("c1", &body));
        assert!(!unchanged.is_unchanged("c2", &body), "another customer");
        assert!(!unchanged.is_unchanged("c1", &json!({"name": "Ada"})));
        unchanged.forget("c1");
        assert!(
            !unchanged.is_unchanged("c1", &body),
            "a failed write forgets"
        );
        unchanged.sent("c1", &body);
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(!unchanged.is_unchanged("c1", &body), "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn delivered_events_by_message_id_type_and_user() {
        let skips = Skips::new(Duration::from_secs(300), 100);
        let track = json!({"type": "track", "userId": "u1", "messageId": "m1", "event": "A"});
        let key = |event: &Value| event_digest(event).expect("a messageId");
        let events = &skips.delivered;
        assert!(!events.delivered_before(key(&track)));
        events.delivered(key(&track));
        let mut resent = track.clone();
        resent["sentAt"] = json!("2026-12-01T00:00:01Z");
        assert!(
            events.delivered_before(key(&resent)),
            "a repeat with another sentAt"
        );
        let page = json!({"type": "page", "userId": "u1", "messageId": "m1"});
        assert!(
            !events.delivered_before(key(&page)),
            "another event with the messageId"
        );
        let anonymous = json!({"type": "track", "event": "A"});
        assert_eq!(
            event_digest(&anonymous),
            None,
            "no messageId: never skipped"
        );
        skips.clear();
        assert!(!events.delivered_before(key(&track)));
    }
}
