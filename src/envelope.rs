//! Turning a message body into RudderStack events: an event, an array of events, an
//! EventBridge envelope (`detail`), an SNS notification (`Message`, itself any of these),
//! or Lambda's on-failure record of a direct invocation (`requestPayload`).

use serde_json::Value;

/// Why a body holds no usable event; the text names the envelope and the problem, never
/// a value from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError(String);

impl EnvelopeError {
    fn new(problem: impl Into<String>) -> Self {
        EnvelopeError(problem.into())
    }
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvelopeError {}

/// Decodes a body into its events, or says why it can't.
pub fn decode_events(body: &str) -> Result<Vec<Value>, EnvelopeError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| EnvelopeError::new(format!("body is not valid JSON: {e}")))?;
    events_in(value, 0)
}

/// [`decode_events`] for a body already parsed (the command line reads JSON itself).
pub fn decode_value(value: Value) -> Result<Vec<Value>, EnvelopeError> {
    events_in(value, 0)
}

fn events_in(value: Value, depth: u8) -> Result<Vec<Value>, EnvelopeError> {
    // SNS → EventBridge → events is the deepest legitimate nesting.
    if depth > 3 {
        return Err(EnvelopeError::new("envelopes nested too deeply"));
    }
    match value {
        Value::Array(events) if events.is_empty() => {
            Err(EnvelopeError::new("empty array: no event"))
        }
        Value::Array(events) => Ok(events),
        Value::Object(mut object) => {
            let is_sns = object.get("Type").and_then(Value::as_str) == Some("Notification")
                && object.contains_key("TopicArn");
            if is_sns {
                return match object.remove("Message") {
                    Some(Value::String(message)) => {
                        let inner: Value = serde_json::from_str(&message).map_err(|e| {
                            EnvelopeError::new(format!("SNS Message is not valid JSON: {e}"))
                        })?;
                        events_in(inner, depth + 1)
                    }
                    _ => Err(EnvelopeError::new(
                        "SNS notification without a Message string",
                    )),
                };
            }
            // Lambda's on-failure record of a direct invocation, redriven from the DLQ.
            let is_failure_record =
                object.contains_key("requestContext") && object.contains_key("responseContext");
            if is_failure_record {
                return match object.remove("requestPayload") {
                    Some(payload @ (Value::Object(_) | Value::Array(_))) => {
                        events_in(payload, depth + 1)
                    }
                    _ => Err(EnvelopeError::new(
                        "Lambda failure record without a requestPayload event",
                    )),
                };
            }
            if object.contains_key("detail-type") && object.contains_key("detail") {
                return match object.remove("detail") {
                    Some(detail @ (Value::Object(_) | Value::Array(_))) => {
                        events_in(detail, depth + 1)
                    }
                    _ => Err(EnvelopeError::new(
                        "EventBridge envelope whose detail is not an event",
                    )),
                };
            }
            Ok(vec![Value::Object(object)])
        }
        _ => Err(EnvelopeError::new(
            "body is neither an event (JSON object) nor an array of events",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_every_envelope() {
        let event = json!({"type": "track", "event": "x", "userId": "u"});
        let bridge =
            json!({"version": "0", "detail-type": "rudderstack", "source": "s", "detail": event});
        let sns = json!({"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": bridge.to_string()});
        assert_eq!(
            decode_events(&event.to_string()).unwrap(),
            vec![event.clone()]
        );
        assert_eq!(
            decode_events(&json!([event, event]).to_string())
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            decode_events(&bridge.to_string()).unwrap(),
            vec![event.clone()]
        );
        assert_eq!(
            decode_events(&sns.to_string()).unwrap(),
            vec![event.clone()]
        );
        let sns_plain =
            json!({"Type": "Notification", "TopicArn": "t", "Message": event.to_string()});
        assert_eq!(
            decode_events(&sns_plain.to_string()).unwrap(),
            vec![event.clone()]
        );
        let failure_record = json!({
            "version": "1.0",
            "requestContext": {"requestId": "r", "condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": [event],
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "x"}
        });
        assert_eq!(
            decode_events(&failure_record.to_string()).unwrap(),
            vec![event]
        );
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(decode_events("{oops")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        assert!(decode_events("[]")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(decode_events("42")
            .unwrap_err()
            .to_string()
            .contains("neither"));
        let sns = json!({"Type": "Notification", "TopicArn": "t", "Message": "not json"});
        assert!(decode_events(&sns.to_string())
            .unwrap_err()
            .to_string()
            .contains("SNS Message"));
    }
}
