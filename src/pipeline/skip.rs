//! Requests not worth sending, per warm container: an update identical to the last body
//! sent for that customer ([`UnchangedUpdates`]), an event whose messageId was delivered
//! already ([`DeliveredEvents`]). Both remember for `KUSTOMER_UNCHANGED_TTL_SECONDS` and at
//! most `CUSTOMER_CACHE_MAX_ENTRIES` entries, keep digests instead of bodies (bounded
//! memory) and cost no request.

use serde_json::Value;

use super::user_of;

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
