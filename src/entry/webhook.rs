//! The webhook door: RudderStack's Webhook destination through API Gateway (HTTP API 2.0,
//! REST 1.0) or a function URL. RudderStack waits 10 s, retries on 5xx/408/429 and drops
//! on other 4xx, so: 200 delivered, 400 bad event, 401 bad token, 429/503 retry later,
//! 500 when our own configuration (the API key) is wrong. Never a 4xx for a transient
//! failure, never a 5xx for a bad event.
//!
//! Queue mode (`WEBHOOK_MODE=queue`): after the token and the body are checked, the events
//! go to the function's queue, one message each (grouped by user on a FIFO queue), and the
//! answer is 202 once SQS took them all; 503 when it refused one (RudderStack retries; a
//! FIFO queue drops the copies it already has), 400 for an event SQS can never take.

use std::time::Duration;

use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyResponse, ApiGatewayV2httpRequest,
    ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body;
use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::HeaderMap;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::invocation::{
    answer_by, failure_summary, fifo_keys, into_json, message_id, typed, Invocation,
    MAX_LISTED_FAILURES,
};
use super::{App, InvocationError};
use crate::aws::secrets::Credentials;
use crate::aws::sqs::{QueueError, QueueErrorKind, Queued};
use crate::outcome::{FailureClass, Report};
use crate::settings::lambda::{WebhookAuth, WebhookMode};
use crate::telemetry::log_outcome;

/// RudderStack gives up after 10 s: answer by then, with room for API Gateway.
const REPLY_WITHIN: Duration = Duration::from_millis(8_500);
/// Time kept back from Lambda's own deadline to write the answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(300);

/// What the door reads of a request, whichever payload version carried it.
struct Request<'a> {
    headers: &'a HeaderMap,
    body: Option<&'a str>,
    is_base64_encoded: bool,
}

/// The door's answer before it is put in the payload version's response type.
pub(super) struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// Payload 2.0 (HTTP API, function URLs: `rawPath`, `version` "2.0") or REST 1.0.
pub(super) async fn handle(
    app: &App,
    payload: Value,
    invocation: &Invocation<'_>,
) -> Result<Value, InvocationError> {
    let version_2 = payload.get("rawPath").is_some()
        || payload.get("version").and_then(Value::as_str) == Some("2.0");
    if version_2 {
        let request: ApiGatewayV2httpRequest =
            typed(payload, "an API Gateway HTTP API (2.0) request")?;
        let reply = respond(app, &Request::from(&request), invocation).await;
        into_json(ApiGatewayV2httpResponse::from(reply))
    } else {
        let request: ApiGatewayProxyRequest =
            typed(payload, "an API Gateway REST (1.0) proxy request")?;
        let reply = respond(app, &Request::from(&request), invocation).await;
        into_json(ApiGatewayProxyResponse::from(reply))
    }
}

/// Both payload versions answer with the same three fields (their types are
/// `#[non_exhaustive]`: built from `Default`).
macro_rules! response_from_reply {
    ($($response:ty),*) => {$(
        impl From<Reply> for $response {
            fn from(reply: Reply) -> Self {
                let mut answer = <$response>::default();
                answer.status_code = i64::from(reply.status);
                answer.headers = reply.headers;
                answer.body = Some(Body::Text(reply.body));
                answer
            }
        }
    )*};
}
response_from_reply!(ApiGatewayV2httpResponse, ApiGatewayProxyResponse);

impl<'a> From<&'a ApiGatewayV2httpRequest> for Request<'a> {
    fn from(request: &'a ApiGatewayV2httpRequest) -> Self {
        Request {
            headers: &request.headers,
            body: request.body.as_deref(),
            is_base64_encoded: request.is_base64_encoded,
        }
    }
}

impl<'a> From<&'a ApiGatewayProxyRequest> for Request<'a> {
    fn from(request: &'a ApiGatewayProxyRequest) -> Self {
        Request {
            headers: &request.headers,
            body: request.body.as_deref(),
            is_base64_encoded: request.is_base64_encoded,
        }
    }
}

async fn respond(app: &App, request: &Request<'_>, invocation: &Invocation<'_>) -> Reply {
    let deadline =
        (Instant::now() + REPLY_WITHIN).min(answer_by(invocation.deadline, ANSWER_MARGIN));
    if let Err(refused) = authorize(app, request).await {
        return refused;
    }
    let events = match decode(request.body, request.is_base64_encoded) {
        Ok(events) => events,
        Err(problem) => return reply(400, &json!({ "error": problem.to_string() }), None),
    };
    if app.webhook_mode == WebhookMode::Queue {
        return enqueue(app, &events, invocation.request_id).await;
    }
    let reports = app.deliver_all(&events, deadline).await;
    for (event, report) in events.iter().zip(&reports) {
        log_outcome(invocation.request_id, message_id(event), "webhook", report);
    }
    summarize(&events, &reports)
}

/// The answer RudderStack reads: the most retryable class decides the status (retrying a
/// batch that holds a bad event is harmless, dropping one that holds a retryable event
/// loses it), and the body lists the failures.
fn summarize(events: &[Value], reports: &[Report]) -> Reply {
    let failed = || reports.iter().filter_map(|report| report.outcome.failure());
    let has = |class: FailureClass| failed().any(|failure| failure.class == class);
    let status = if failed().next().is_none() {
        200
    } else if has(FailureClass::Throttled) {
        429
    } else if has(FailureClass::Transient) {
        503
    } else if has(FailureClass::Auth) {
        500
    } else {
        400
    };
    let retry_after = failed()
        .filter(|failure| failure.class.is_retryable())
        .filter_map(|failure| failure.retry_after)
        .max();
    let failures = failed().count();
    let listed: Vec<Value> = reports
        .iter()
        .enumerate()
        .filter_map(|(index, report)| failure_summary(index, events.get(index), report))
        .take(MAX_LISTED_FAILURES)
        .collect();
    let mut summary = json!({
        "received": reports.len(),
        "delivered": reports.len() - failures,
        "failed": listed,
    });
    if failures > MAX_LISTED_FAILURES {
        summary["failedNotListed"] = json!(failures - MAX_LISTED_FAILURES);
    }
    reply(status, &summary, retry_after)
}

/// Queue mode: every event as one message on the function's queue (its user's group and a
/// deduplication id from its messageId on a FIFO queue), then [`queued`]'s answer.
async fn enqueue(app: &App, events: &[Value], request_id: &str) -> Reply {
    let items: Vec<Queued> = events
        .iter()
        .map(|event| {
            let body = event.to_string();
            let keys = fifo_keys(std::slice::from_ref(event), None, None, &body);
            Queued { body, keys }
        })
        .collect();
    let results = app.queues.requeue(&items).await;
    let refused = results.iter().filter(|result| result.is_err()).count();
    tracing::info!(
        request_id,
        door = "webhook",
        received = events.len(),
        queued = events.len().saturating_sub(refused),
        "events queued"
    );
    for problem in results.iter().filter_map(|result| result.as_ref().err()) {
        tracing::error!(request_id, kind = ?problem.kind, error = problem.detail.as_str(), "could not queue an event");
    }
    queued(events, &results)
}

/// Queue mode's answer: 202 when SQS took every event; 503 when it refused one that may
/// pass later (RudderStack retries the call); 400 when the only refusals can never pass
/// (an event too large for SQS); 500 when the function has no queue (its configuration).
fn queued(events: &[Value], results: &[Result<(), QueueError>]) -> Reply {
    let failed: Vec<(usize, &QueueError)> = (results.iter().enumerate())
        .filter_map(|(index, result)| result.as_ref().err().map(|problem| (index, problem)))
        .collect();
    let any = |kind: QueueErrorKind| failed.iter().any(|(_, problem)| problem.kind == kind);
    let status = if failed.is_empty() {
        202
    } else if any(QueueErrorKind::Refused) || any(QueueErrorKind::Unreachable) {
        503
    } else if any(QueueErrorKind::NotConfigured) {
        500
    } else {
        400
    };
    let listed: Vec<Value> = (failed.iter().take(MAX_LISTED_FAILURES))
        .map(|(index, problem)| {
            json!({
                "index": index,
                "messageId": events.get(*index).and_then(message_id),
                "error": problem.detail,
            })
        })
        .collect();
    let mut summary = json!({
        "received": events.len(),
        "queued": events.len().saturating_sub(failed.len()),
        "failed": listed,
    });
    if failed.len() > MAX_LISTED_FAILURES {
        summary["failedNotListed"] = json!(failed.len() - MAX_LISTED_FAILURES);
    }
    reply(status, &summary, None)
}

/// `Err` holds the answer to send instead.
///
/// A token that matches neither `webhookToken` nor `previousWebhookToken` reloads the
/// secret once before the 401 (rate-limited in [`crate::aws::secrets::KeyProvider`]): after a
/// rotation, a warm container serves the new token at once instead of refusing it until
/// its cached secret expires (RudderStack drops events answered with a 4xx).
async fn authorize(app: &App, request: &Request<'_>) -> Result<(), Reply> {
    if app.webhook_auth == WebhookAuth::None {
        return Ok(());
    }
    let keys = app.pipeline().keys();
    let credentials = keys.current().await.map_err(cannot_check)?;
    let presented = request
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .unwrap_or("");
    let mut check = token_check(&credentials, presented);
    // No token at all can never be a newly rotated one: no reload for it.
    if check != TokenCheck::Accepted && !presented.is_empty() {
        if let Some(newer) = keys
            .reload_for_webhook_token(&credentials)
            .await
            .map_err(cannot_check)?
        {
            check = token_check(&newer, presented);
        }
    }
    match check {
        TokenCheck::Accepted => Ok(()),
        TokenCheck::NotConfigured => Err(reply(
            401,
            &json!({ "error": "no webhook token is configured (set webhookToken in the secret, or WEBHOOK_AUTH=none)" }),
            None,
        )),
        TokenCheck::Refused => Err(reply(
            401,
            &json!({ "error": "missing or wrong webhook token (Authorization: Bearer <token>)" }),
            None,
        )),
    }
}

/// Secrets Manager failed: 503 (RudderStack retries) when that is transient.
fn cannot_check(failure: crate::outcome::Failure) -> Reply {
    let status = if failure.class.is_retryable() {
        503
    } else {
        500
    };
    reply(
        status,
        &json!({ "error": "cannot check the webhook token now", "detail": failure.message }),
        None,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenCheck {
    Accepted,
    Refused,
    NotConfigured,
}

/// Compares with both tokens in constant time (no early exit on the first match).
fn token_check(credentials: &Credentials, presented: &str) -> TokenCheck {
    let tokens = [
        credentials.webhook_token.as_ref(),
        credentials.previous_webhook_token.as_ref(),
    ];
    if tokens.iter().all(Option::is_none) {
        return TokenCheck::NotConfigured;
    }
    let matched = tokens
        .iter()
        .flatten()
        .fold(subtle::Choice::from(0), |matched, token| {
            matched | presented.as_bytes().ct_eq(token.expose().as_bytes())
        });
    if bool::from(matched) {
        TokenCheck::Accepted
    } else {
        TokenCheck::Refused
    }
}

/// Why a webhook body holds no event (answered 400: RudderStack drops it, and retrying
/// the same body could never succeed).
#[derive(Debug)]
enum BodyError {
    Missing,
    NotBase64(base64::DecodeError),
    NotUtf8,
    NotJson(serde_json::Error),
    EmptyArray,
    NotAnEvent,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Missing => f.write_str("the request has no body: send a RudderStack event"),
            BodyError::NotBase64(e) => write!(f, "the body is marked base64 but is not: {e}"),
            BodyError::NotUtf8 => f.write_str("the body is not UTF-8 text"),
            BodyError::NotJson(e) => write!(f, "the body is not valid JSON: {e}"),
            BodyError::EmptyArray => f.write_str("the body is an empty array: no event"),
            BodyError::NotAnEvent => f.write_str(
                "the body must be a RudderStack event (a JSON object) or an array of events",
            ),
        }
    }
}

impl std::error::Error for BodyError {}

/// The events of a webhook body: one event or an array, possibly base64-encoded.
fn decode(body: Option<&str>, is_base64_encoded: bool) -> Result<Vec<Value>, BodyError> {
    let raw = body.ok_or(BodyError::Missing)?;
    let decoded;
    let text = if is_base64_encoded {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(BodyError::NotBase64)?;
        decoded = String::from_utf8(bytes).map_err(|_| BodyError::NotUtf8)?;
        decoded.as_str()
    } else {
        raw
    };
    match serde_json::from_str(text).map_err(BodyError::NotJson)? {
        Value::Array(events) if events.is_empty() => Err(BodyError::EmptyArray),
        Value::Array(events) => Ok(events),
        event @ Value::Object(_) => Ok(vec![event]),
        _ => Err(BodyError::NotAnEvent),
    }
}

/// A JSON answer with its status and, for a retry, `Retry-After` in whole seconds.
fn reply(status: u16, body: &Value, retry_after: Option<Duration>) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_forms() {
        let event = json!({"type": "track"});
        let plain = event.to_string();
        let body = |text: Option<&str>, base64| decode(text, base64).map_err(|e| e.to_string());
        assert_eq!(body(Some(&plain), false).unwrap(), vec![event.clone()]);
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(json!([event, event]).to_string());
        assert_eq!(body(Some(&encoded), true).unwrap().len(), 2);
        assert!(body(Some("{no"), false)
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(body(None, false).unwrap_err().contains("no body"));
        assert!(body(Some("3"), false).unwrap_err().contains("JSON object"));
    }

    #[test]
    fn headers_match_any_case() {
        let request: ApiGatewayProxyRequest = serde_json::from_value(json!({
            "httpMethod": "POST", "headers": {"AuthoriZation": "Bearer t"},
            "requestContext": {"httpMethod": "POST"}
        }))
        .unwrap();
        assert_eq!(request.headers.get(AUTHORIZATION).unwrap(), "Bearer t");
    }

    #[test]
    fn either_token_is_accepted_and_nothing_else() {
        let credentials = |current: Option<&str>, previous: Option<&str>| Credentials {
            api_key: kustomer_mapping::settings::Secret::new("sk"),
            webhook_token: current.map(kustomer_mapping::settings::Secret::new),
            previous_webhook_token: previous.map(kustomer_mapping::settings::Secret::new),
        };
        let rotating = credentials(Some("tok-new"), Some("tok-old"));
        assert_eq!(token_check(&rotating, "tok-new"), TokenCheck::Accepted);
        assert_eq!(token_check(&rotating, "tok-old"), TokenCheck::Accepted);
        for wrong in ["", "tok-", "tok-newx", "tok-ol", "TOK-NEW"] {
            assert_eq!(
                token_check(&rotating, wrong),
                TokenCheck::Refused,
                "{wrong}"
            );
        }
        let previous_only = credentials(None, Some("tok-old"));
        assert_eq!(token_check(&previous_only, "tok-old"), TokenCheck::Accepted);
        assert_eq!(
            token_check(&credentials(None, None), ""),
            TokenCheck::NotConfigured
        );
    }

    #[test]
    fn queue_mode_answers_202_503_400_or_500() {
        let events = [json!({"messageId": "m0"}), json!({"messageId": "m1"})];
        let problem = |kind| {
            Err(QueueError {
                kind,
                detail: "why".into(),
            })
        };
        let status = |results: &[Result<(), QueueError>]| queued(&events, results).status;
        assert_eq!(status(&[Ok(()), Ok(())]), 202);
        let unsendable = problem(QueueErrorKind::Unsendable);
        assert_eq!(status(&[Ok(()), unsendable.clone()]), 400);
        assert_eq!(status(&[unsendable, problem(QueueErrorKind::Refused)]), 503);
        assert_eq!(status(&[problem(QueueErrorKind::Unreachable), Ok(())]), 503);
        assert_eq!(
            status(&[problem(QueueErrorKind::NotConfigured), Ok(())]),
            500
        );
        let answer = queued(&events, &[Ok(()), problem(QueueErrorKind::Refused)]);
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            body,
            json!({"received": 2, "queued": 1,
                   "failed": [{"index": 1, "messageId": "m1", "error": "why"}]})
        );
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        let answer = reply(429, &json!({}), Some(Duration::from_millis(1_200)));
        assert_eq!(answer.headers.get(RETRY_AFTER).unwrap(), "2");
    }
}
