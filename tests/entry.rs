//! The Lambda handler in process: `entry::handle` behind every door, with a real
//! `KustomerClient` talking to the scripted stub (tests/support) and, where AWS is
//! involved, the real SDK talking to moto (tests/moto): the secret in Secrets Manager,
//! the dead-letter queue and the retry queue in SQS.
//!
//! Two parts:
//! - door tests (`webhook_*`, `sqs_*`, `direct_*`, `unknown_*`): answers, statuses,
//!   batch item failures, queue contents and message attributes;
//! - the fault matrix (`fault_*`), one test per row, each checking that every input event
//!   is accounted for exactly once: delivered (a write the stub answered 2xx), reported
//!   for retry (webhook 429/503, SQS batch item failure, direct invocation error), or
//!   found in the moto dead-letter or retry queue. Each row prints
//!   `| row | expected | observed |`: `cargo test --test entry fault_ -- --nocapture`.

mod moto;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use moto::MotoServer;
use rudder_kustomer::aws::secrets::KeyProvider;
use rudder_kustomer::aws::sqs::MemoryQueues;
use rudder_kustomer::entry::{decode_events, handle, App, InvocationError};
use rudder_kustomer::settings::lambda::{self, LambdaSettings};
use support::{user_of, Reply, Request, StubServer};

const API_KEY: &str = "sk-entry-test-key";
const TOKEN: &str = "entry-webhook-token";
const SECRET_NAME: &str = "rudder-kustomer/test";

// ---------------------------------------------------------------------------------------
// The Kustomer stub, with a log of what it answered.
// ---------------------------------------------------------------------------------------

/// One request the stub received and how it answered.
#[derive(Debug, Clone)]
struct Seen {
    at: std::time::Instant,
    method: String,
    target: String,
    authorization: Option<String>,
    /// The external id a write is for (`identity.externalId` or `externalId`).
    key: Option<String>,
    /// `None` when the stub answered with a fault (reset, hang, close).
    status: Option<u16>,
}

impl Seen {
    fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

struct Kustomer {
    stub: StubServer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Kustomer {
    async fn start<F>(respond: F) -> Kustomer
    where
        F: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let stub = StubServer::start(move |request: &Request| {
            let reply = respond(request);
            log.lock().unwrap().push(Seen {
                at: std::time::Instant::now(),
                method: request.method.clone(),
                target: request.target.clone(),
                authorization: request.header("authorization").map(str::to_string),
                key: write_key(request),
                status: reply.fault.is_none().then_some(reply.status),
            });
            reply
        })
        .await;
        Kustomer { stub, seen }
    }

    /// A stub that accepts everything (look-ups find nothing, writes succeed).
    async fn accepting() -> Kustomer {
        Kustomer::start(accept).await
    }

    fn url(&self) -> String {
        self.stub.base_url()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn writes(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(Seen::is_write).collect()
    }

    fn writes_for(&self, key: &str) -> Vec<Seen> {
        self.writes()
            .into_iter()
            .filter(|seen| seen.key.as_deref() == Some(key))
            .collect()
    }

    /// The keys of the writes answered with a 2xx: the delivered events.
    fn delivered(&self) -> Vec<String> {
        self.writes()
            .into_iter()
            .filter(|seen| seen.status.is_some_and(|s| (200..300).contains(&s)))
            .filter_map(|seen| seen.key)
            .collect()
    }
}

/// The normal answers: look-ups find nothing, a create answers 201 with an id, other
/// writes 201/200.
fn accept(request: &Request) -> Reply {
    match (request.method.as_str(), request.path()) {
        ("GET", _) => Reply::json(404, &json!({"errors": [{"status": 404}]})),
        ("POST", "/v1/customers") => Reply::json(201, &json!({"data": {"id": "cust-created"}})),
        ("PUT", _) => Reply::json(200, &json!({"data": {"id": "cust-updated"}})),
        _ => Reply::json(201, &json!({"data": {"type": "tracking_event"}})),
    }
}

fn is_write(request: &Request) -> bool {
    request.method != "GET"
}

/// The external id a write is for, from its JSON body.
fn write_key(request: &Request) -> Option<String> {
    if !is_write(request) {
        return None;
    }
    support::write_user(request)
}

// ---------------------------------------------------------------------------------------
// The app under test.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Keys {
    /// `KUSTOMER_API_KEY` (+ `WEBHOOK_TOKEN`).
    Local { token: Option<&'static str> },
    /// A Secrets Manager secret on moto holding this string.
    Secret(String),
    /// Secrets Manager unreachable (a closed loopback port).
    Down,
}

#[derive(Debug, Clone)]
struct Options {
    keys: Keys,
    /// Give the app a dead-letter queue and a retry queue (in process).
    queues: bool,
    /// A dead-letter queue that refuses every message (as SQS does for a missing queue).
    missing_dlq: bool,
    max_attempts: u32,
    request_timeout_ms: u64,
    webhook_auth_none: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keys: Keys::Local { token: Some(TOKEN) },
            queues: false,
            missing_dlq: false,
            max_attempts: 2,
            request_timeout_ms: 2_000,
            webhook_auth_none: false,
        }
    }
}

impl Options {
    fn with_queues(self) -> Self {
        Options {
            queues: true,
            ..self
        }
    }

    fn attempts(self, max_attempts: u32) -> Self {
        Options {
            max_attempts,
            ..self
        }
    }
}

struct Harness {
    app: App,
    /// Secrets Manager, for the harnesses whose key comes from a secret.
    moto: Option<MotoServer>,
    queues: Arc<MemoryQueues>,
}

impl Harness {
    /// Builds the app as the bootstrap does (settings parsed by `LambdaSettings`, then `App::new`),
    /// with in-process queues, and Secrets Manager on moto (or unreachable) when the key
    /// comes from a secret. The SQS adapter itself is tested against moto in tests/aws.rs.
    async fn start(kustomer: &Kustomer, options: Options) -> Harness {
        let needs_moto = matches!(options.keys, Keys::Secret(_));
        let moto = needs_moto.then(|| tokio::task::block_in_place(MotoServer::start));

        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert(lambda::BASE_ENDPOINT, kustomer.url());
        vars.insert(lambda::RETRY_MAX_ATTEMPTS, options.max_attempts.to_string());
        vars.insert(
            lambda::REQUEST_TIMEOUT_MS,
            options.request_timeout_ms.to_string(),
        );
        vars.insert(lambda::CONNECT_TIMEOUT_MS, "500".into());
        vars.insert(lambda::MAX_IN_FLIGHT, "4".into());
        // The customer-id cache would hide look-ups from the second invocation on.
        vars.insert(lambda::CUSTOMER_CACHE_TTL_SECONDS, "0".into());
        if options.webhook_auth_none {
            vars.insert(lambda::WEBHOOK_AUTH, "none".into());
        }
        match &options.keys {
            Keys::Local { token } => {
                vars.insert(lambda::LOCAL_API_KEY, API_KEY.into());
                if let Some(token) = token {
                    vars.insert(lambda::LOCAL_WEBHOOK_TOKEN, token.to_string());
                }
            }
            Keys::Secret(value) => {
                let moto = moto.as_ref().unwrap();
                moto.create_secret(SECRET_NAME, value).await;
                vars.insert(lambda::SECRET_ID, SECRET_NAME.into());
            }
            Keys::Down => {
                vars.insert(lambda::SECRET_ID, SECRET_NAME.into());
            }
        }
        let mut queues = MemoryQueues::new(options.queues, options.queues);
        if options.missing_dlq {
            queues = queues.refusing_dead_letters();
        }
        let queues = Arc::new(queues);

        let config = LambdaSettings::from_lookup(|name| vars.get(name).cloned())
            .unwrap_or_else(|e| panic!("test settings refused: {e}"));
        let mut app = App::new(&config)
            .expect("App::new")
            .with_queues(queues.clone());
        let secrets_endpoint = match &options.keys {
            Keys::Local { .. } => None,
            Keys::Secret(_) => Some(moto.as_ref().unwrap().sdk_config().await),
            Keys::Down => Some(moto::sdk_config_for(&moto::unreachable_endpoint()).await),
        };
        if let Some(sdk) = secrets_endpoint {
            app = app.with_key_provider(KeyProvider::with_sdk_config(
                config.key_source.clone(),
                config.secret_cache_ttl,
                sdk,
            ));
        }
        Harness { app, moto, queues }
    }

    async fn invoke(&self, payload: Value) -> Result<Value, String> {
        self.invoke_typed(payload).await.map_err(|e| e.to_string())
    }

    async fn invoke_typed(&self, payload: Value) -> Result<Value, InvocationError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        Box::pin(handle(&self.app, payload, "test-request-id", deadline)).await
    }

    async fn answer(&self, payload: Value) -> Value {
        self.invoke(payload)
            .await
            .unwrap_or_else(|e| panic!("the invocation failed: {e}"))
    }

    fn moto(&self) -> &MotoServer {
        self.moto.as_ref().expect("this harness has no moto")
    }

    /// Every message in the dead-letter queue: (body, attributes).
    async fn dead_letters(&self) -> Vec<(String, HashMap<String, String>)> {
        self.queues.dead_letters()
    }

    /// Every message in the retry queue (bodies).
    async fn requeued(&self) -> Vec<String> {
        self.queues.requeued()
    }
}

// ---------------------------------------------------------------------------------------
// Events and envelopes.
// ---------------------------------------------------------------------------------------

fn track(user: &str) -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": format!("msg-{user}"),
        "properties": {"order_id": "ORD-1", "total": 12.5},
    })
}

fn page(user: &str) -> Value {
    json!({"type": "page", "name": "Pricing", "userId": user, "messageId": format!("msg-{user}")})
}

fn screen(user: &str) -> Value {
    json!({"type": "screen", "name": "Cart", "userId": user, "messageId": format!("msg-{user}")})
}

fn identify(user: &str) -> Value {
    json!({
        "type": "identify",
        "userId": user,
        "messageId": format!("msg-{user}"),
        "traits": {"email": format!("{user}@example.test"), "name": "Test Person"},
    })
}

/// The keys of the events in a message body, or `raw:<body>` when it cannot be decoded.
fn keys_of_body(body: &str) -> Vec<String> {
    match decode_events(body) {
        Ok(events) => events.iter().map(user_of).collect(),
        Err(_) => vec![format!("raw:{body}")],
    }
}

fn eventbridge(detail: &Value) -> Value {
    json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "RudderStack event",
        "source": "rudderstack",
        "account": "123456789012",
        "time": "2025-11-27T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    })
}

fn sns(message: &Value) -> Value {
    json!({
        "Type": "Notification",
        "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:rudderstack-events",
        "Message": message.to_string(),
        "Timestamp": "2025-11-27T10:00:00.000Z",
        "SignatureVersion": "1",
    })
}

/// An SQS batch: (messageId, body) per record.
fn sqs(records: &[(&str, String)]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id,
                "receiptHandle": format!("handle-{id}"),
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764238511512"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:rudder-kustomer",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

/// The `itemIdentifier`s of an SQS answer, sorted.
fn batch_failures(answer: &Value) -> Vec<String> {
    let failures = answer["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not an SQS answer: {answer}"));
    let mut ids: Vec<String> = failures
        .iter()
        .map(|f| {
            f["itemIdentifier"]
                .as_str()
                .unwrap_or_else(|| panic!("itemIdentifier is not a string: {answer}"))
                .to_string()
        })
        .collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "an empty id: {answer}");
    ids.sort();
    ids
}

fn encode(body: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(body)
}

/// An API Gateway HTTP API (payload 2.0) request.
fn apigw_v2(body: &str, authorization: Option<&str>, base64: bool) -> Value {
    let mut headers = json!({"content-type": "application/json", "user-agent": "RudderLabs"});
    if let Some(value) = authorization {
        headers["authorization"] = json!(value);
    }
    json!({
        "version": "2.0",
        "routeKey": "POST /rudderstack",
        "rawPath": "/rudderstack",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "http": {"method": "POST", "path": "/rudderstack", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "RudderLabs"},
            "requestId": "req-v2",
            "routeKey": "POST /rudderstack",
            "stage": "$default",
            "timeEpoch": 1764238511402u64,
        },
        "body": if base64 { encode(body) } else { body.to_string() },
        "isBase64Encoded": base64,
    })
}

/// An API Gateway REST API proxy (payload 1.0) request; header names as the client sent them.
fn apigw_v1(body: &str, authorization: Option<&str>, base64: bool) -> Value {
    let mut headers = json!({"Content-Type": "application/json", "User-Agent": "RudderLabs"});
    if let Some(value) = authorization {
        headers["Authorization"] = json!(value);
    }
    json!({
        "resource": "/rudderstack",
        "path": "/rudderstack",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {},
        "queryStringParameters": null,
        "requestContext": {"resourcePath": "/rudderstack", "httpMethod": "POST", "stage": "prod", "requestId": "req-v1"},
        "body": if base64 { encode(body) } else { body.to_string() },
        "isBase64Encoded": base64,
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A webhook answer: status, the `retry-after` header, the parsed JSON body.
fn webhook_answer(answer: &Value) -> (u16, Option<String>, Value) {
    let status = answer["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("not a proxy answer: {answer}")) as u16;
    let retry_after = answer["headers"]["retry-after"]
        .as_str()
        .map(str::to_string);
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the answer body is not JSON ({e}): {answer}"));
    (status, retry_after, body)
}

fn sample(file: &str) -> Value {
    let path = format!("{}/events/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Logs: everything the library logs (debug and up), from every test of this binary.
// ---------------------------------------------------------------------------------------

static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

/// The process-wide log buffer. Global (tasks run on any worker thread), so a test sees
/// the lines of the tests running beside it too: enough for "never in any log".
struct Logs(Arc<Mutex<Vec<u8>>>);

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Logs {
    let buffer = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(Arc::clone(&buffer));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in tests/entry.rs");
        buffer
    });
    Logs(Arc::clone(buffer))
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// None of `needles` appears in any log line so far; something was logged at all.
    fn assert_absent(&self, needles: &[&str]) {
        let text = self.text();
        assert!(
            !text.is_empty(),
            "nothing was logged: is the capture working?"
        );
        for needle in needles {
            let shown: String = needle.chars().take(40).collect();
            assert!(
                !text.contains(needle),
                "the logs carry {shown:?}...: {}",
                text.lines()
                    .find(|line| line.contains(needle))
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Accounting for the fault matrix.
// ---------------------------------------------------------------------------------------

/// Where the input events ended up, by key.
#[derive(Debug, Default)]
struct Ledger {
    delivered: Vec<String>,
    /// Reported for retry to the caller (webhook 429/503, SQS batch item failure, direct Err).
    retried: Vec<String>,
    dead_lettered: Vec<String>,
    requeued: Vec<String>,
}

impl Ledger {
    /// Everything the stub received and both queues hold, plus what the answer reported
    /// for retry.
    async fn observe(kustomer: &Kustomer, harness: &Harness, retried: Vec<String>) -> Ledger {
        Ledger {
            delivered: kustomer.delivered(),
            retried,
            dead_lettered: dlq_keys(harness).await,
            requeued: requeued_keys(harness).await,
        }
    }

    /// Checks that every input is in exactly one place and nothing else is anywhere;
    /// prints the matrix row first so a failing row still shows what was observed.
    fn settle(&self, row: &str, expected: &str, inputs: &[String]) {
        let places: [(&str, &Vec<String>); 4] = [
            ("delivered", &self.delivered),
            ("retry", &self.retried),
            ("DLQ", &self.dead_lettered),
            ("retry queue", &self.requeued),
        ];
        let mut problems = Vec::new();
        let mut lost = 0;
        for input in inputs {
            let found: Vec<&str> = places
                .iter()
                .flat_map(|(place, keys)| keys.iter().filter(|k| *k == input).map(|_| *place))
                .collect();
            if found.is_empty() {
                lost += 1;
                problems.push(format!("{input}: lost"));
            } else if found.len() > 1 {
                problems.push(format!(
                    "{input}: accounted {} times ({found:?})",
                    found.len()
                ));
            }
        }
        for (place, keys) in &places {
            for key in keys.iter() {
                if !inputs.contains(key) {
                    problems.push(format!("{key}: in {place} but not an input"));
                }
            }
        }
        let observed = places
            .iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(place, keys)| {
                let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                keys.sort();
                format!("{place}: {}", keys.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "| {row} | {expected} | {observed}; {} events, {lost} lost |",
            inputs.len()
        );
        assert!(problems.is_empty(), "{row}: {problems:#?}\n{self:#?}");
    }
}

fn keys(users: &[&str]) -> Vec<String> {
    users.iter().map(|u| u.to_string()).collect()
}

/// Retried keys of an SQS answer: the events of every record reported.
fn sqs_retried(answer: &Value, records: &[(&str, String)]) -> Vec<String> {
    let failed = batch_failures(answer);
    records
        .iter()
        .filter(|(id, _)| failed.iter().any(|f| f == id))
        .flat_map(|(_, body)| keys_of_body(body))
        .collect()
}

async fn dlq_keys(harness: &Harness) -> Vec<String> {
    harness
        .dead_letters()
        .await
        .iter()
        .flat_map(|(body, _)| keys_of_body(body))
        .collect()
}

async fn requeued_keys(harness: &Harness) -> Vec<String> {
    harness
        .requeued()
        .await
        .iter()
        .flat_map(|body| keys_of_body(body))
        .collect()
}

// =======================================================================================
// Webhook door
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_http_api_v2_plain_body_one_event_is_200() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let body = track("u-v2").to_string();
    let answer = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), false))
        .await;
    let (status, retry_after, summary) = webhook_answer(&answer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(retry_after, None);
    assert_eq!(
        summary,
        json!({"received": 1, "delivered": 1, "failed": []})
    );
    assert_eq!(answer["headers"]["content-type"], "application/json");
    // Payload 2.0 answers carry `cookies` (cargo lambda's emulator requires the field).
    assert_eq!(answer["cookies"], json!([]));
    let seen = kustomer.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/v1/tracking/identityEvent");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(bearer(API_KEY).as_str())
    );
    assert_eq!(kustomer.delivered(), ["u-v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_http_api_v2_base64_body_with_an_array_is_200() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let body = json!([identify("u-b64-a"), track("u-b64-b"), page("u-b64-c")]).to_string();
    let answer = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), true))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        summary,
        json!({"received": 3, "delivered": 3, "failed": []})
    );
    let mut delivered = kustomer.delivered();
    delivered.sort();
    assert_eq!(delivered, ["u-b64-a", "u-b64-b", "u-b64-c"]);
    // identify: look-ups by e-mail and by userId, nothing found, then a create.
    let identify_requests: Vec<(String, String)> = kustomer
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" || s.target == "/v1/customers")
        .map(|s| (s.method, s.target))
        .collect();
    assert_eq!(identify_requests.len(), 3, "{identify_requests:?}");
    assert!(identify_requests[0].1.starts_with("/v1/customers/email="));
    assert_eq!(identify_requests[1].1, "/v1/customers/externalId=u-b64-a");
    assert_eq!(
        identify_requests[2],
        ("POST".into(), "/v1/customers".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rest_api_v1_plain_and_base64_bodies_are_200() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let plain = harness
        .answer(apigw_v1(
            &track("u-v1-plain").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    assert_eq!(webhook_answer(&plain).0, 200, "{plain}");
    // REST proxy answers must not have fields API Gateway 1.0 does not know.
    let fields: Vec<&str> = plain
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let rest_fields = [
        "statusCode",
        "headers",
        "multiValueHeaders",
        "body",
        "isBase64Encoded",
    ];
    assert!(
        fields.iter().all(|field| rest_fields.contains(field)),
        "{fields:?}"
    );
    let array = json!([screen("u-v1-b64"), track("u-v1-b64")]).to_string();
    let encoded = harness
        .answer(apigw_v1(&array, Some(&bearer(TOKEN)), true))
        .await;
    let (status, _, summary) = webhook_answer(&encoded);
    assert_eq!(status, 200, "{encoded}");
    assert_eq!(summary["delivered"], 2);
    assert_eq!(kustomer.delivered(), ["u-v1-plain", "u-v1-b64", "u-v1-b64"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sample_events_are_200() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Local {
            token: Some("local-webhook-token"),
        },
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    for file in [
        "apigw-v2-identify.json",
        "apigw-v2-track-base64.json",
        "apigw-v1-page.json",
    ] {
        let answer = harness.answer(sample(file)).await;
        let (status, _, summary) = webhook_answer(&answer);
        assert_eq!(status, 200, "{file}: {answer}");
        assert_eq!(summary["delivered"], 1, "{file}: {summary}");
    }
    let mut delivered = kustomer.delivered();
    delivered.sort();
    assert_eq!(delivered, ["usr_2c8d55", "usr_7f3a91", "usr_9b04e1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bad_json_is_400_and_sends_nothing() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    for request in [
        apigw_v2("{\"type\": \"track\",", Some(&bearer(TOKEN)), false),
        apigw_v1("not json at all", Some(&bearer(TOKEN)), true),
        apigw_v2("[]", Some(&bearer(TOKEN)), false),
    ] {
        let answer = harness.answer(request).await;
        let (status, _, body) = webhook_answer(&answer);
        assert_eq!(status, 400, "{answer}");
        assert!(body["error"].is_string(), "{body}");
    }
    let answer = harness
        .answer(apigw_v2(
            "{\"type\": \"track\",",
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    assert!(webhook_answer(&answer).2["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert!(kustomer.seen().is_empty(), "{:#?}", kustomer.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_unsupported_type_is_400_naming_the_problem() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let event =
        json!({"type": "alias", "userId": "u-alias", "messageId": "msg-alias", "previousId": "x"});
    let answer = harness
        .answer(apigw_v2(&event.to_string(), Some(&bearer(TOKEN)), false))
        .await;
    let (status, retry_after, summary) = webhook_answer(&answer);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(retry_after, None);
    assert_eq!(summary["received"], 1);
    assert_eq!(summary["delivered"], 0);
    let failed = &summary["failed"][0];
    assert_eq!(failed["index"], 0);
    assert_eq!(failed["messageId"], "msg-alias");
    assert_eq!(failed["class"], "permanent");
    assert_eq!(failed["status"], 400);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("alias is not supported"),
        "{failed}"
    );
    assert!(kustomer.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_missing_or_wrong_token_is_401() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let body = track("u-401").to_string();
    let wrong = [
        None,
        Some(String::new()),
        Some(TOKEN.to_string()),                 // no "Bearer "
        Some(format!("Bearer {TOKEN}x")),        // longer
        Some(format!("Bearer {}", &TOKEN[1..])), // shorter
        Some("Bearer ".to_string()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
    ];
    for authorization in &wrong {
        for request in [
            apigw_v2(&body, authorization.as_deref(), false),
            apigw_v1(&body, authorization.as_deref(), false),
        ] {
            let answer = harness.answer(request).await;
            let (status, _, error) = webhook_answer(&answer);
            assert_eq!(status, 401, "{authorization:?}: {answer}");
            let text = error.to_string();
            assert!(!text.contains(TOKEN), "the answer shows the token: {text}");
        }
    }
    assert!(kustomer.seen().is_empty(), "{:#?}", kustomer.seen());
    // The right token, lower-case scheme too.
    for authorization in [bearer(TOKEN), format!("bearer {TOKEN}")] {
        let answer = harness
            .answer(apigw_v2(&body, Some(&authorization), false))
            .await;
        assert_eq!(webhook_answer(&answer).0, 200, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_without_a_configured_token_is_401() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Local { token: None },
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let body = track("u-no-token").to_string();
    for authorization in [None, Some(bearer(TOKEN)), Some("Bearer ".to_string())] {
        let answer = harness
            .answer(apigw_v2(&body, authorization.as_deref(), false))
            .await;
        let (status, _, error) = webhook_answer(&answer);
        assert_eq!(status, 401, "{answer}");
        assert!(error["error"]
            .as_str()
            .unwrap()
            .contains("no webhook token is configured"));
    }
    assert!(kustomer.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_without_a_token_in_the_secret_is_401() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Secret("sk-bare-key-in-secret".into()),
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let answer = harness
        .answer(apigw_v2(
            &track("u").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    assert_eq!(webhook_answer(&answer).0, 401, "{answer}");
    assert!(kustomer.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_auth_none_accepts_calls_without_a_token() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Local { token: None },
        webhook_auth_none: true,
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let answer = harness
        .answer(apigw_v2(&track("u-open").to_string(), None, false))
        .await;
    assert_eq!(webhook_answer(&answer).0, 200, "{answer}");
    assert_eq!(kustomer.delivered(), ["u-open"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secret_token_from_secrets_manager_is_checked() {
    let kustomer = Kustomer::accepting().await;
    let secret = json!({"apiKey": "sk-from-moto", "webhookToken": "tok-from-moto"}).to_string();
    let options = Options {
        keys: Keys::Secret(secret),
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let body = track("u-moto").to_string();
    let refused = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), false))
        .await;
    assert_eq!(webhook_answer(&refused).0, 401, "{refused}");
    let accepted = harness
        .answer(apigw_v2(&body, Some("Bearer tok-from-moto"), false))
        .await;
    assert_eq!(webhook_answer(&accepted).0, 200, "{accepted}");
    let seen = kustomer.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer sk-from-moto")
    );
    // The first fetch, and one reload because the first token matched nothing (it could
    // have been a newly rotated one); the right token was then served from the cache.
    assert_eq!(harness.app.pipeline().keys.fetch_count(), 2);
}

/// Issue 8, fault 6: wrong tokens cannot drive Secrets Manager traffic. A burst of
/// concurrent bad calls shares one reload (single-flight), and later bad calls within
/// `TOKEN_RELOAD_INTERVAL` (10 s) reload nothing. Counted with the provider's fetch
/// counter, which counts every GetSecretValue that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bad_token_burst_reloads_the_secret_at_most_once() {
    let logs = capture_logs();
    let kustomer = Kustomer::accepting().await;
    let token = "tok-burst-good-41f0";
    let options = Options {
        keys: Keys::Secret(json!({"apiKey": "sk-burst", "webhookToken": token}).to_string()),
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let body = track("u-burst").to_string();
    let good = harness
        .answer(apigw_v2(&body, Some(&bearer(token)), false))
        .await;
    assert_eq!(webhook_answer(&good).0, 200, "{good}");
    assert_eq!(harness.app.pipeline().keys.fetch_count(), 1);

    let bad: Vec<String> = (0..40).map(|n| format!("tok-burst-bad-{n:02}")).collect();
    let burst = futures_util::future::join_all(
        bad.iter()
            .map(|t| harness.answer(apigw_v2(&body, Some(&bearer(t)), false))),
    )
    .await;
    for answer in &burst {
        assert_eq!(webhook_answer(answer).0, 401, "{answer}");
    }
    assert_eq!(
        harness.app.pipeline().keys.fetch_count(),
        2,
        "40 concurrent bad calls: one shared reload"
    );
    for t in &bad {
        let answer = harness
            .answer(apigw_v2(&body, Some(&bearer(t)), false))
            .await;
        assert_eq!(webhook_answer(&answer).0, 401, "{answer}");
    }
    assert_eq!(
        harness.app.pipeline().keys.fetch_count(),
        2,
        "no reload within 10 s of the last one"
    );
    // The good token still works and is still served from the cache.
    let good = harness
        .answer(apigw_v2(&body, Some(&bearer(token)), false))
        .await;
    assert_eq!(webhook_answer(&good).0, 200, "{good}");
    assert_eq!(harness.app.pipeline().keys.fetch_count(), 2);
    let mut presented: Vec<&str> = bad.iter().map(String::as_str).collect();
    presented.extend([token, "sk-burst"]);
    logs.assert_absent(&presented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_throttled_is_429_with_retry_after_and_does_not_wait_past_the_reply_time() {
    let kustomer = Kustomer::start(|request: &Request| {
        if is_write(request) {
            Reply::json(429, &json!({"errors": [{"title": "Too Many Requests"}]}))
                .with_header("Retry-After", "30")
        } else {
            accept(request)
        }
    })
    .await;
    // Three attempts allowed, but Kustomer asks for 30 s: more than RudderStack waits.
    let harness = Harness::start(&kustomer, Options::default().attempts(3)).await;
    let started = std::time::Instant::now();
    let answer = harness
        .answer(apigw_v2(
            &track("u-429").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    let elapsed = started.elapsed();
    let (status, retry_after, summary) = webhook_answer(&answer);
    assert_eq!(status, 429, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("30"));
    assert_eq!(summary["failed"][0]["class"], "throttled");
    assert_eq!(summary["failed"][0]["status"], 429);
    assert_eq!(
        kustomer.writes().len(),
        1,
        "no retry can finish before the reply"
    );
    assert!(
        elapsed < Duration::from_secs(9),
        "answered after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_transient_failure_is_503_never_4xx() {
    let kustomer = Kustomer::start(|request: &Request| {
        if is_write(request) {
            Reply::text(503, "upstream unavailable")
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let answer = harness
        .answer(apigw_v2(
            &track("u-503").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(summary["failed"][0]["class"], "transient");
    assert_eq!(summary["failed"][0]["status"], 503);
    // max_attempts 2: the write was tried twice.
    assert_eq!(kustomer.writes().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mixed_bad_and_throttled_events_answer_the_retryable_status() {
    let kustomer = Kustomer::start(|request: &Request| {
        if write_key(request).as_deref() == Some("u-throttled") {
            Reply::empty(429).with_header("Retry-After", "2")
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().attempts(1)).await;
    let bad = json!({"type": "track", "userId": "u-bad"}); // no event name
    let body = json!([track("u-ok"), bad, track("u-throttled")]).to_string();
    let answer = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), false))
        .await;
    let (status, retry_after, summary) = webhook_answer(&answer);
    assert_eq!(
        status, 429,
        "a batch holding a retryable event must be retried: {answer}"
    );
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!(summary["received"], 3);
    assert_eq!(summary["delivered"], 1);
    let classes: Vec<(u64, &str)> = summary["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["index"].as_u64().unwrap(), f["class"].as_str().unwrap()))
        .collect();
    assert_eq!(classes, [(1, "permanent"), (2, "throttled")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_kustomer_refusing_the_key_is_500_after_one_reload() {
    let kustomer = Kustomer::start(|_: &Request| {
        Reply::json(401, &json!({"errors": [{"title": "Unauthorized"}]}))
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let answer = harness
        .answer(apigw_v2(
            &track("u-key").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    assert_eq!(status, 500, "our own configuration is wrong: {answer}");
    assert_eq!(summary["failed"][0]["class"], "auth");
    // One attempt, one after the reload: never more.
    assert_eq!(kustomer.writes().len(), 2);
}

// =======================================================================================
// SQS door
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_raw_event_and_array_bodies_are_delivered() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let records = [
        ("m-raw", track("u-raw").to_string()),
        (
            "m-array",
            json!([identify("u-arr-1"), page("u-arr-2")]).to_string(),
        ),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let mut delivered = kustomer.delivered();
    delivered.sort();
    assert_eq!(delivered, ["u-arr-1", "u-arr-2", "u-raw"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_eventbridge_and_sns_envelopes_are_unwrapped() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let records = [
        ("m-bridge", eventbridge(&track("u-bridge")).to_string()),
        ("m-sns", sns(&page("u-sns")).to_string()),
        (
            "m-sns-bridge",
            sns(&eventbridge(&screen("u-sns-bridge"))).to_string(),
        ),
        (
            "m-sns-array",
            sns(&json!([track("u-sns-arr-1"), track("u-sns-arr-2")])).to_string(),
        ),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let mut delivered = kustomer.delivered();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            "u-bridge",
            "u-sns",
            "u-sns-arr-1",
            "u-sns-arr-2",
            "u-sns-bridge"
        ]
    );
    let names: Vec<String> = kustomer.seen().iter().map(|s| s.target.clone()).collect();
    assert!(
        names.iter().all(|t| t == "/v1/tracking/identityEvent"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_sample_events_have_no_batch_failures() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let mut expected = 0;
    for file in [
        "sqs-raw-event.json",
        "sqs-array.json",
        "sqs-eventbridge.json",
        "sqs-sns.json",
    ] {
        let payload = sample(file);
        for record in payload["Records"].as_array().unwrap() {
            expected += decode_events(record["body"].as_str().unwrap())
                .unwrap()
                .len();
        }
        let answer = harness.answer(payload).await;
        assert_eq!(answer, json!({"batchItemFailures": []}), "{file}");
    }
    assert_eq!(kustomer.delivered().len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_undecodable_body_goes_to_the_dlq_with_its_error() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let records = [
        ("m-garbage", "{\"type\": \"track\", oops".to_string()),
        ("m-number", "42".to_string()),
        ("m-good", track("u-good").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(kustomer.delivered(), ["u-good"]);
    let mut parked = harness.dead_letters().await;
    parked.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(parked.len(), 2, "{parked:#?}");
    let (body, attributes) = &parked[1];
    assert_eq!(
        body, "{\"type\": \"track\", oops",
        "the original body, as received"
    );
    assert_eq!(attributes["errorClass"], "permanent");
    assert_eq!(attributes["errorStatus"], "400");
    assert!(
        attributes["errorMessage"].contains("not valid JSON"),
        "{attributes:?}"
    );
    assert_eq!(attributes["source"], "sqs");
    assert_eq!(parked[0].0, "42");
    assert!(
        parked[0].1["errorMessage"].contains("neither an event"),
        "{:?}",
        parked[0].1
    );
    assert!(harness.requeued().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batch_item_failures_carry_exactly_the_failed_message_ids() {
    let kustomer = Kustomer::start(|request: &Request| match write_key(request).as_deref() {
        Some(user) if user.starts_with("u-flaky") => Reply::empty(503),
        Some("u-bad") => Reply::json(400, &json!({"errors": [{"title": "invalid"}]})),
        _ => accept(request),
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let records = [
        ("2f1b8f8a-0001", track("u-ok-1").to_string()),
        ("2f1b8f8a-0002", track("u-flaky-1").to_string()),
        ("2f1b8f8a-0003", track("u-bad").to_string()),
        (
            "2f1b8f8a-0004",
            json!([track("u-ok-2"), track("u-flaky-2")]).to_string(),
        ),
        ("2f1b8f8a-0005", page("u-ok-3").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(
        batch_failures(&answer),
        ["2f1b8f8a-0002", "2f1b8f8a-0004"],
        "{answer}"
    );
    // The 400 was parked, not reported.
    let parked = harness.dead_letters().await;
    assert_eq!(parked.len(), 1, "{parked:#?}");
    assert_eq!(keys_of_body(&parked[0].0), ["u-bad"]);
    assert_eq!(parked[0].1["errorStatus"], "400");
    assert_eq!(parked[0].1["errorClass"], "permanent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_permanent_failure_without_a_dlq_is_reported_for_the_redrive_policy() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let records = [
        (
            "m-bad",
            json!({"type": "track", "userId": "u-bad"}).to_string(),
        ),
        ("m-garbage", "not json".to_string()),
        ("m-ok", track("u-ok").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(batch_failures(&answer), ["m-bad", "m-garbage"]);
}

// =======================================================================================
// Direct door
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_single_event_is_delivered() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let answer = harness.answer(identify("u-direct")).await;
    assert_eq!(
        answer,
        json!({"received": 1, "delivered": 1, "requeued": 0, "parked": 0})
    );
    assert_eq!(kustomer.delivered(), ["u-direct"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_array_and_eventbridge_target_are_delivered() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let answer = harness
        .answer(json!([identify("u-d1"), track("u-d1"), screen("u-d2")]))
        .await;
    assert_eq!(
        answer,
        json!({"received": 3, "delivered": 3, "requeued": 0, "parked": 0})
    );
    // One user's events in their order: the identify's write before the track.
    let order: Vec<String> = kustomer
        .writes()
        .into_iter()
        .filter(|w| w.key.as_deref() == Some("u-d1"))
        .map(|w| w.target)
        .collect();
    assert_eq!(order, ["/v1/customers", "/v1/tracking/identityEvent"]);

    let answer = harness.answer(eventbridge(&track("u-rule"))).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    for file in ["direct-single.json", "direct-array.json"] {
        let payload = sample(file);
        let count = payload.as_array().map_or(1, Vec::len) as u64;
        let answer = harness.answer(payload).await;
        assert_eq!(answer["received"], count, "{file}: {answer}");
        assert_eq!(answer["delivered"], count, "{file}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_transient_failure_goes_to_the_retry_queue() {
    let kustomer = Kustomer::start(|request: &Request| {
        if write_key(request).as_deref() == Some("u-flaky") {
            Reply::empty(502)
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let flaky = track("u-flaky");
    let answer = harness
        .answer(json!([track("u-fine"), flaky.clone()]))
        .await;
    assert_eq!(
        answer,
        json!({"received": 2, "delivered": 1, "requeued": 1, "parked": 0})
    );
    let requeued = harness.requeued().await;
    assert_eq!(requeued.len(), 1);
    let body: Value = serde_json::from_str(&requeued[0]).unwrap();
    assert_eq!(body, flaky, "the event itself, so the SQS door can take it");
    assert!(harness.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_permanent_failure_goes_to_the_dlq_with_its_error() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let bad = json!({"type": "track", "userId": "u-bad", "messageId": "msg-bad"});
    let answer = harness.answer(json!([bad.clone(), track("u-fine")])).await;
    assert_eq!(
        answer,
        json!({"received": 2, "delivered": 1, "requeued": 0, "parked": 1})
    );
    let parked = harness.dead_letters().await;
    assert_eq!(parked.len(), 1);
    let (body, attributes) = &parked[0];
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), bad);
    assert_eq!(attributes["errorClass"], "permanent");
    assert_eq!(attributes["errorStatus"], "400");
    assert_eq!(attributes["source"], "direct");
    assert!(!attributes["errorMessage"].is_empty());
    assert!(harness.requeued().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_without_queues_fails_the_invocation() {
    let kustomer = Kustomer::start(|request: &Request| {
        if write_key(request).as_deref() == Some("u-flaky") {
            Reply::empty(500)
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let error = harness
        .invoke(json!([track("u-fine"), track("u-flaky")]))
        .await
        .expect_err("a transient failure without a retry queue fails the invocation");
    assert!(error.contains("1 of 2 events"), "{error}");
    let error = harness
        .invoke(json!({"type": "track", "userId": "u-bad"}))
        .await
        .expect_err("a permanent failure without a DLQ fails the invocation");
    assert!(error.contains("1 of 1 events"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_dlq_send_failing_fails_the_invocation() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        missing_dlq: true,
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let error = harness
        .invoke_typed(json!({"type": "track", "userId": "u-bad"}))
        .await
        .expect_err("the event could not be parked");
    assert_eq!(error.error_type(), "QueueUnavailable");
    let error = error.to_string();
    assert!(error.contains("neither delivered nor queued"), "{error}");
}

// =======================================================================================
// Anything else
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_shape_is_an_error_naming_keys_not_values() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let payload = json!({
        "customerEmail": "hidden.person@example.com",
        "action": {"phone": "+1 555 0100"},
        "Records": [{"eventSource": "aws:kinesis", "data": "c2VjcmV0"}],
    });
    let error = harness.invoke(payload).await.expect_err("unknown shape");
    assert!(error.contains("customerEmail"), "{error}");
    assert!(error.contains("action"), "{error}");
    assert!(error.contains("Records"), "{error}");
    for value in ["hidden.person", "555", "c2VjcmV0", "kinesis"] {
        assert!(
            !error.contains(value),
            "the error shows a value ({value}): {error}"
        );
    }
    for payload in [json!("secret-string-value"), json!(12345), json!(null)] {
        let error = harness.invoke(payload).await.expect_err("not an object");
        assert!(error.contains("unsupported payload"), "{error}");
        assert!(
            !error.contains("secret-string-value") && !error.contains("12345"),
            "{error}"
        );
    }
    // Lambda records the error's type: a readable name, not a Rust type path.
    let error = harness
        .invoke_typed(json!({"customerEmail": "x"}))
        .await
        .expect_err("unknown shape");
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "UnsupportedPayload");
    assert!(diagnostic.error_message.contains("customerEmail"));
    assert!(kustomer.seen().is_empty());
}

// =======================================================================================
// The fault matrix: one row per test; every input event accounted for exactly once.
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_01_kustomer_429_with_retry_after_then_success() {
    let writes = AtomicUsize::new(0);
    let kustomer = Kustomer::start(move |request: &Request| {
        if is_write(request) && writes.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::json(429, &json!({"errors": [{"status": 429}]})).with_header("Retry-After", "1")
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().attempts(3)).await;
    let records = [("m-1", track("u-throttled").to_string())];
    let answer = harness.answer(sqs(&records)).await;

    let attempts = kustomer.writes_for("u-throttled");
    let statuses: Vec<Option<u16>> = attempts.iter().map(|s| s.status).collect();
    let gap = attempts[1].at.duration_since(attempts[0].at);
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: sqs_retried(&answer, &records),
        ..Ledger::default()
    };
    ledger.settle(
        "01 Kustomer 429 + Retry-After: 1, then 201",
        "delivered on the 2nd attempt, >= 1 s later",
        &keys(&["u-throttled"]),
    );
    println!("| 01 | (429 row detail) | write statuses {statuses:?}, gap {gap:?} |");
    assert_eq!(statuses, [Some(429), Some(201)]);
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After not honoured: {gap:?}"
    );
    assert_eq!(ledger.delivered, ["u-throttled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_02_kustomer_500() {
    let kustomer = Kustomer::start(|request: &Request| {
        if write_key(request).as_deref() == Some("u-500") {
            Reply::json(
                500,
                &json!({"errors": [{"title": "Internal Server Error"}]}),
            )
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let records = [
        ("m-500", track("u-500").to_string()),
        ("m-ok", track("u-ok").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    let ledger = Ledger::observe(&kustomer, &harness, sqs_retried(&answer, &records)).await;
    ledger.settle(
        "02 Kustomer 500 (SQS)",
        "retried twice, then batch item failure",
        &keys(&["u-500", "u-ok"]),
    );
    assert_eq!(batch_failures(&answer), ["m-500"]);
    assert_eq!(kustomer.writes_for("u-500").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_03_kustomer_503() {
    let kustomer = Kustomer::start(|request: &Request| {
        if write_key(request).as_deref() == Some("u-503") {
            Reply::text(503, "Service Unavailable").with_header("Retry-After", "0")
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let answer = harness
        .answer(json!([track("u-503"), identify("u-ok")]))
        .await;
    let ledger = Ledger::observe(&kustomer, &harness, Vec::new()).await;
    ledger.settle(
        "03 Kustomer 503 (direct)",
        "retried twice, then sent to the retry queue",
        &keys(&["u-503", "u-ok"]),
    );
    assert_eq!(answer["requeued"], 1, "{answer}");
    assert_eq!(ledger.requeued, ["u-503"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_04_kustomer_timeout() {
    let kustomer = Kustomer::start(|request: &Request| {
        if write_key(request).as_deref() == Some("u-slow") {
            Reply::hang()
        } else {
            accept(request)
        }
    })
    .await;
    let options = Options {
        request_timeout_ms: 300,
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let body = json!([track("u-slow"), track("u-ok")]).to_string();
    let started = std::time::Instant::now();
    let answer = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), false))
        .await;
    let elapsed = started.elapsed();
    let (status, _, summary) = webhook_answer(&answer);
    let retried: Vec<String> = summary["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| matches!(f["class"].as_str(), Some("transient" | "throttled")))
        .map(|f| ["u-slow", "u-ok"][f["index"].as_u64().unwrap() as usize].to_string())
        .collect();
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: if status == 503 { retried } else { Vec::new() },
        ..Ledger::default()
    };
    ledger.settle(
        "04 Kustomer never answers (300 ms timeout, webhook)",
        "2 attempts time out, webhook answers 503",
        &keys(&["u-slow", "u-ok"]),
    );
    assert_eq!(status, 503, "{answer}");
    assert!(summary["failed"][0]["message"]
        .as_str()
        .unwrap()
        .contains("did not answer within 300 ms"));
    assert_eq!(kustomer.writes_for("u-slow").len(), 2);
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_05_connection_reset() {
    let first = AtomicBool::new(true);
    let kustomer = Kustomer::start(
        move |request: &Request| match write_key(request).as_deref() {
            Some("u-reset-once") if first.swap(false, Ordering::SeqCst) => Reply::reset(),
            Some("u-reset-always") => Reply::reset(),
            _ => accept(request),
        },
    )
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let records = [
        ("m-once", track("u-reset-once").to_string()),
        ("m-always", track("u-reset-always").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    let ledger = Ledger::observe(&kustomer, &harness, sqs_retried(&answer, &records)).await;
    ledger.settle(
        "05 connection reset (once / always, SQS)",
        "once: delivered on retry; always: batch item failure",
        &keys(&["u-reset-once", "u-reset-always"]),
    );
    assert_eq!(ledger.delivered, ["u-reset-once"]);
    assert_eq!(batch_failures(&answer), ["m-always"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_06_key_rotated_401_then_success_after_reload() {
    let rotated = Arc::new(AtomicBool::new(false));
    let rotated_in_stub = Arc::clone(&rotated);
    let kustomer = Kustomer::start(move |request: &Request| {
        let old_accepted = !rotated_in_stub.load(Ordering::SeqCst);
        match request.header("authorization") {
            Some("Bearer sk-new") => accept(request),
            Some("Bearer sk-old") if old_accepted => accept(request),
            _ => Reply::json(401, &json!({"errors": [{"title": "Unauthorized"}]})),
        }
    })
    .await;
    let secret_old = json!({"apiKey": "sk-old", "webhookToken": TOKEN}).to_string();
    let options = Options {
        keys: Keys::Secret(secret_old),
        ..Options::default()
    }
    .with_queues();
    let harness = Harness::start(&kustomer, options).await;

    // First call: the old key works and is cached.
    let first = [("m-before", track("u-before").to_string())];
    let answer_before = harness.answer(sqs(&first)).await;
    assert_eq!(batch_failures(&answer_before), Vec::<String>::new());
    // The key is rotated: Secrets Manager has the new one, Kustomer refuses the old one.
    let secret_new = json!({"apiKey": "sk-new", "webhookToken": TOKEN}).to_string();
    harness.moto().update_secret(SECRET_NAME, &secret_new).await;
    rotated.store(true, Ordering::SeqCst);
    let second = [
        ("m-after-1", track("u-after-1").to_string()),
        ("m-after-2", identify("u-after-2").to_string()),
    ];
    let answer = harness.answer(sqs(&second)).await;

    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: [
            sqs_retried(&answer_before, &first),
            sqs_retried(&answer, &second),
        ]
        .concat(),
        dead_lettered: dlq_keys(&harness).await,
        requeued: requeued_keys(&harness).await,
    };
    let fetches = harness.app.pipeline().keys.fetch_count();
    ledger.settle(
        "06 401 after key rotation (Secrets Manager updated)",
        "key reloaded once, events delivered with the new key",
        &keys(&["u-before", "u-after-1", "u-after-2"]),
    );
    println!("| 06 | (rotation detail) | Secrets Manager fetches: {fetches} |");
    assert_eq!(fetches, 2, "one fetch at start, one reload after the 401s");
    let after: Vec<(Option<String>, Option<u16>)> = kustomer
        .writes_for("u-after-1")
        .into_iter()
        .map(|s| (s.authorization, s.status))
        .collect();
    // u-after-1 runs beside u-after-2: it meets the old key's 401 itself, or starts after
    // the other's reload and uses the new key at once. Either way, one write with it.
    let old_then_new = [
        (Some("Bearer sk-old".to_string()), Some(401)),
        (Some("Bearer sk-new".to_string()), Some(201)),
    ];
    assert!(
        after == old_then_new || after == old_then_new[1..],
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_07_lookup_fails_mid_identify() {
    let lookups = AtomicUsize::new(0);
    let kustomer = Kustomer::start(move |request: &Request| {
        if request.method == "GET" {
            // First attempt: the e-mail look-up finds nothing, the userId look-up fails.
            match lookups.fetch_add(1, Ordering::SeqCst) {
                1 => Reply::json(500, &json!({"errors": [{"title": "Internal"}]})),
                _ => Reply::empty(404),
            }
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let mut event = identify("u-identify");
    event["anonymousId"] = json!("anon-identify");
    let records = [("m-identify", event.to_string())];
    let answer = harness.answer(sqs(&records)).await;
    let sequence: Vec<String> = kustomer
        .seen()
        .iter()
        .map(|s| {
            let what = s.target.split('=').next().unwrap_or("").to_string();
            format!("{} {what} {}", s.method, s.status.unwrap_or(0))
        })
        .collect();
    let ledger = Ledger::observe(&kustomer, &harness, sqs_retried(&answer, &records)).await;
    ledger.settle(
        "07 look-up 404 then 500 mid-identify",
        "no write after the failed look-up; retried, one create",
        &keys(&["u-identify"]),
    );
    println!("| 07 | (identify detail) | {} |", sequence.join(" > "));
    assert_eq!(
        sequence,
        [
            "GET /v1/customers/email 404",
            "GET /v1/customers/externalId 500",
            "GET /v1/customers/email 404",
            "GET /v1/customers/externalId 404",
            "GET /v1/customers/externalId 404",
            "POST /v1/customers 201",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_08_secrets_manager_down() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Down,
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let records = [
        ("m-1", track("u-sm-1").to_string()),
        ("m-2", identify("u-sm-2").to_string()),
    ];
    let started = std::time::Instant::now();
    let answer = harness.answer(sqs(&records)).await;
    let elapsed = started.elapsed();
    let webhook = harness
        .answer(apigw_v2(
            &track("u-sm-3").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    let (webhook_status, _, _) = webhook_answer(&webhook);
    let mut retried = sqs_retried(&answer, &records);
    if webhook_status == 503 {
        retried.push("u-sm-3".into());
    }
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried,
        ..Ledger::default()
    };
    ledger.settle(
        "08 Secrets Manager down (closed port)",
        "transient: SQS batch item failures, webhook 503",
        &keys(&["u-sm-1", "u-sm-2", "u-sm-3"]),
    );
    println!("| 08 | (Secrets Manager detail) | SQS batch answered in {elapsed:?}, webhook {webhook_status} |");
    assert_eq!(batch_failures(&answer), ["m-1", "m-2"]);
    assert_eq!(webhook_status, 503, "{webhook}");
    assert!(kustomer.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_09_dlq_send_failing() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        missing_dlq: true,
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let records = [
        (
            "m-bad",
            json!({"type": "track", "userId": "u-bad"}).to_string(),
        ),
        ("m-garbage", "{{{".to_string()),
        ("m-ok", track("u-ok").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: sqs_retried(&answer, &records),
        ..Ledger::default()
    };
    ledger.settle(
        "09 DLQ send failing (queue does not exist)",
        "permanent failures reported as batch item failures",
        &[keys(&["u-bad", "u-ok"]), vec!["raw:{{{".to_string()]].concat(),
    );
    assert_eq!(batch_failures(&answer), ["m-bad", "m-garbage"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_10_mixed_batch_sqs() {
    let kustomer = Kustomer::start(|request: &Request| match write_key(request).as_deref() {
        Some("u-kustomer-400") => {
            Reply::json(400, &json!({"errors": [{"title": "bad attribute"}]}))
        }
        Some("u-transient") => Reply::empty(503),
        _ => accept(request),
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let records = [
        ("m-good-1", track("u-good-1").to_string()),
        ("m-good-2", identify("u-good-2").to_string()),
        (
            "m-bad-event",
            json!({"type": "track", "userId": "u-bad-event"}).to_string(),
        ),
        ("m-kustomer-400", page("u-kustomer-400").to_string()),
        ("m-transient", screen("u-transient").to_string()),
        ("m-garbage", "<xml/>".to_string()),
        (
            "m-partly",
            json!([
                track("u-partly-good"),
                json!({"type": "alias", "userId": "u-partly-bad"})
            ])
            .to_string(),
        ),
    ];
    let answer = harness.answer(sqs(&records)).await;
    let parked = harness.dead_letters().await;
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: sqs_retried(&answer, &records),
        dead_lettered: parked
            .iter()
            .flat_map(|(body, _)| keys_of_body(body))
            .collect(),
        requeued: requeued_keys(&harness).await,
    };
    ledger.settle(
        "10 mixed SQS batch: good, bad, Kustomer 400, transient, undecodable, half-good body",
        "good delivered; bad/400/undecodable in DLQ; transient reported",
        &[
            keys(&[
                "u-good-1",
                "u-good-2",
                "u-bad-event",
                "u-kustomer-400",
                "u-transient",
                "u-partly-good",
                "u-partly-bad",
            ]),
            vec!["raw:<xml/>".to_string()],
        ]
        .concat(),
    );
    assert_eq!(batch_failures(&answer), ["m-transient"]);
    for (body, attributes) in &parked {
        assert_eq!(
            attributes["errorClass"], "permanent",
            "{body}: {attributes:?}"
        );
        assert_eq!(attributes["errorStatus"], "400", "{body}: {attributes:?}");
        assert_eq!(attributes["source"], "sqs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_11_mixed_batch_direct() {
    let kustomer = Kustomer::start(|request: &Request| match write_key(request).as_deref() {
        Some("u-transient") => Reply::empty(500),
        Some("u-throttled") => Reply::empty(429).with_header("Retry-After", "0"),
        _ => accept(request),
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let events = json!([
        track("u-good-1"),
        json!({"type": "track", "event": "No user"}),
        track("u-transient"),
        identify("u-good-2"),
        page("u-throttled"),
        json!({"type": "group", "userId": "u-unsupported"}),
    ]);
    let answer = harness.answer(events).await;
    let ledger = Ledger::observe(&kustomer, &harness, Vec::new()).await;
    ledger.settle(
        "11 mixed direct array: good, bad, transient, throttled",
        "good delivered; bad in DLQ; transient/throttled in retry queue",
        &keys(&[
            "u-good-1",
            "(no user)",
            "u-transient",
            "u-good-2",
            "u-throttled",
            "u-unsupported",
        ]),
    );
    assert_eq!(
        answer,
        json!({"received": 6, "delivered": 2, "requeued": 2, "parked": 2})
    );
}

/// Issue 8, fault 6: after a rotation (`webhookToken` new, `previousWebhookToken` old), a
/// warm container serves the new token at once (one reload on the first mismatch) and
/// still the old one; no answer or log line shows either token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_17_webhook_token_rotated_new_token_served_at_once() {
    let logs = capture_logs();
    let kustomer = Kustomer::accepting().await;
    let old = "tok-rotation-old-5d1c";
    let new = "tok-rotation-new-9e7a";
    let options = Options {
        keys: Keys::Secret(json!({"apiKey": "sk-rotation", "webhookToken": old}).to_string()),
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let call =
        |user: &str, token: &str| apigw_v2(&track(user).to_string(), Some(&bearer(token)), false);
    assert_eq!(
        webhook_answer(&harness.answer(call("u-rot-0", old)).await).0,
        200
    );
    // Step 1 of the procedure: the new token becomes webhookToken, the old one stays
    // as previousWebhookToken. The container's cached secret (TTL 300 s) is now stale.
    let rotated =
        json!({"apiKey": "sk-rotation", "webhookToken": new, "previousWebhookToken": old});
    harness
        .moto()
        .update_secret(SECRET_NAME, &rotated.to_string())
        .await;
    let with_new = harness.answer(call("u-rot-1", new)).await;
    assert_eq!(webhook_answer(&with_new).0, 200, "{with_new}");
    assert_eq!(harness.app.pipeline().keys.fetch_count(), 2, "one reload");
    let with_old = harness.answer(call("u-rot-2", old)).await;
    assert_eq!(webhook_answer(&with_old).0, 200, "{with_old}");
    let with_new_again = harness.answer(call("u-rot-3", new)).await;
    assert_eq!(webhook_answer(&with_new_again).0, 200, "{with_new_again}");
    assert_eq!(
        harness.app.pipeline().keys.fetch_count(),
        2,
        "both tokens served from the reloaded secret"
    );
    let refused = harness.answer(call("u-rot-4", "tok-never-issued")).await;
    assert_eq!(webhook_answer(&refused).0, 401, "{refused}");
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        ..Ledger::default()
    };
    ledger.settle(
        "17 (issue 8.6) webhook token rotated: new one in webhookToken, old in previousWebhookToken",
        "new token served at once (one reload), old one still served, unknown one 401",
        &keys(&["u-rot-0", "u-rot-1", "u-rot-2", "u-rot-3"]),
    );
    for answer in [&with_new, &with_old, &refused] {
        let text = answer.to_string();
        assert!(!text.contains(old) && !text.contains(new), "{text}");
    }
    logs.assert_absent(&[old, new, "tok-never-issued", "sk-rotation"]);
}

// ---------------------------------------------------------------------------------------
// Issue 8: hostile answers and oversized input (rows 12-20).
// ---------------------------------------------------------------------------------------

/// A stub that gives `hostile` to the first write and `accept`s everything else.
async fn hostile_once(hostile: Reply) -> Kustomer {
    let first = AtomicBool::new(true);
    Kustomer::start(move |request: &Request| {
        if is_write(request) && first.swap(false, Ordering::SeqCst) {
            hostile.clone()
        } else {
            accept(request)
        }
    })
    .await
}

/// Rows 12-15: an SQS batch of `users` against a stub whose first answer is hostile; then
/// a second invocation on the same (warm) app. Every event is delivered or reported for
/// retry; the handler neither panics nor stalls (the harness deadline is 30 s).
async fn hostile_answer_row(row: &str, expected: &str, hostile: Reply, users: &[&str]) -> Ledger {
    let kustomer = hostile_once(hostile).await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let records: Vec<(String, String)> = users
        .iter()
        .map(|u| (format!("m-{u}"), track(u).to_string()))
        .collect();
    let records: Vec<(&str, String)> = records
        .iter()
        .map(|(id, body)| (id.as_str(), body.clone()))
        .collect();
    let answer = harness.answer(sqs(&records)).await;
    let later = [("m-later", track("u-later").to_string())];
    let answer_later = harness.answer(sqs(&later)).await;
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: [
            sqs_retried(&answer, &records),
            sqs_retried(&answer_later, &later),
        ]
        .concat(),
        ..Ledger::default()
    };
    let mut inputs = keys(users);
    inputs.push("u-later".into());
    ledger.settle(row, expected, &inputs);
    assert_eq!(
        kustomer.writes_for("u-later").last().and_then(|s| s.status),
        Some(201),
        "{row}: the warm container must send again"
    );
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_12_huge_retry_after_is_capped() {
    for (label, hostile, expected, retried) in [
        (
            "429 + Retry-After: 1e19",
            Reply::empty(429).with_header("Retry-After", "1e19"),
            "no crash: the wait is capped at 60 s, past the deadline: reported for retry at once",
            1,
        ),
        (
            "503 + Retry-After: inf",
            Reply::empty(503).with_header("Retry-After", "inf"),
            "no crash: an unreadable Retry-After is ignored: usual backoff, delivered",
            0,
        ),
        (
            "429 + x-ratelimit-reset: 99999999999999999999",
            Reply::empty(429).with_header("x-ratelimit-reset", "99999999999999999999"),
            "no crash: an absurd reset is unknown: usual backoff, delivered",
            0,
        ),
    ] {
        let ledger = hostile_answer_row(
            &format!("12 (issue 8.1) {label}, SQS"),
            expected,
            hostile,
            &["u-huge", "u-other"],
        )
        .await;
        // Whichever write came first got the hostile answer.
        assert_eq!(ledger.retried.len(), retried, "{label}: {ledger:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_13_reset_1e19_on_a_200() {
    for reset in ["1e19", "inf"] {
        let ledger = hostile_answer_row(
            &format!("13 (issue 8.2) 200 + x-ratelimit-remaining: 10, x-ratelimit-reset: {reset}"),
            "no crash: the absurd reset is unknown; everything delivered",
            Reply::json(201, &json!({"data": {"type": "tracking_event"}}))
                .with_header("x-ratelimit-remaining", "10")
                .with_header("x-ratelimit-reset", reset),
            &["u-a", "u-b", "u-c"],
        )
        .await;
        assert!(ledger.retried.is_empty(), "{ledger:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_14_division_by_zero_headers() {
    let ledger = hostile_answer_row(
        "14 (issue 8.3) limit 100000000000, remaining 4294967295, reset 60, then more requests",
        "no crash (no wrapping divisor); everything delivered",
        Reply::json(201, &json!({"data": {"type": "tracking_event"}}))
            .with_header("x-ratelimit-limit", "100000000000")
            .with_header("x-ratelimit-remaining", "4294967295")
            .with_header("x-ratelimit-reset", "60"),
        &["u-a", "u-b", "u-c", "u-d", "u-e"],
    )
    .await;
    assert!(ledger.retried.is_empty(), "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_15_remaining_0_without_reset_does_not_pin_the_container() {
    for reset in [None, Some("1700000000000")] {
        let mut hostile = Reply::json(201, &json!({"data": {"type": "tracking_event"}}))
            .with_header("x-ratelimit-remaining", "0");
        if let Some(reset) = reset {
            hostile = hostile.with_header("x-ratelimit-reset", reset);
        }
        let kustomer = hostile_once(hostile).await;
        let harness = Harness::start(&kustomer, Options::default()).await;
        let records = [
            ("m-a", track("u-a").to_string()),
            ("m-b", track("u-b").to_string()),
            ("m-c", track("u-c").to_string()),
        ];
        let answer = harness.answer(sqs(&records)).await;
        let later = [("m-later", track("u-later").to_string())];
        let answer_later = harness.answer(sqs(&later)).await;
        let writes = kustomer.writes();
        // Measured, not asserted: how long the pinning answer held the next request back.
        let resumed_after = writes[1].at.duration_since(writes[0].at);
        let ledger = Ledger {
            delivered: kustomer.delivered(),
            retried: [
                sqs_retried(&answer, &records),
                sqs_retried(&answer_later, &later),
            ]
            .concat(),
            ..Ledger::default()
        };
        ledger.settle(
            &format!(
                "15 (issue 8.4) 200 + x-ratelimit-remaining: 0, reset {}",
                reset.unwrap_or("absent")
            ),
            "the batch completes after a bounded wait and a probe; the next invocation sends",
            &keys(&["u-a", "u-b", "u-c", "u-later"]),
        );
        println!("| 15 | (pinned container detail) | next request sent {resumed_after:?} after the pinning answer |");
        assert!(ledger.retried.is_empty(), "{ledger:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_16_late_429_after_a_newer_window() {
    // u-late's first write is answered last, with an older window's 429; every other
    // answer reports a newer window with plenty left. Spaced answers keep the batch
    // running while the late 429 arrives.
    let late_done = AtomicBool::new(false);
    let kustomer = Kustomer::start(move |request: &Request| {
        if !is_write(request) {
            return accept(request);
        }
        if write_key(request).as_deref() == Some("u-late")
            && !late_done.swap(true, Ordering::SeqCst)
        {
            return Reply::empty(429)
                .with_header("Retry-After", "1")
                .with_header("x-ratelimit-remaining", "0")
                .with_header("x-ratelimit-reset", "1")
                .with_delay(Duration::from_millis(200));
        }
        accept(request)
            .with_header("x-ratelimit-remaining", "290")
            .with_header("x-ratelimit-reset", "30")
            .with_delay(Duration::from_millis(100))
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().attempts(3)).await;
    let users: Vec<String> = std::iter::once("u-late".to_string())
        .chain((0..15).map(|n| format!("u-{n:02}")))
        .collect();
    let records: Vec<(String, String)> = users
        .iter()
        .map(|u| (format!("m-{u}"), track(u).to_string()))
        .collect();
    let records: Vec<(&str, String)> = records
        .iter()
        .map(|(id, body)| (id.as_str(), body.clone()))
        .collect();
    let started = std::time::Instant::now();
    let answer = harness.answer(sqs(&records)).await;
    let elapsed = started.elapsed();
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: sqs_retried(&answer, &records),
        ..Ledger::default()
    };
    ledger.settle(
        "16 (issue 8.5) late 429 (remaining 0, reset 1) after answers of a newer window (290, 30)",
        "the older window is ignored: no freeze, everything delivered (u-late on its retry)",
        &users,
    );
    println!(
        "| 16 | (late 429 detail) | batch of {} answered in {elapsed:?} |",
        users.len()
    );
    assert!(ledger.retried.is_empty(), "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_18_70_kb_email_is_a_permanent_400_without_a_request() {
    let logs = capture_logs();
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let long_email = format!("{}@example.com", "q7".repeat(35_000));
    let long_user = "ü".repeat(11_000); // 22 KB of non-ASCII userId
    let mut by_email = identify("u-long-email");
    by_email["traits"]["email"] = json!(long_email);
    let mut by_user = identify(&long_user);
    by_user["traits"] = json!({"name": "Test Person"});
    // Message ids are logged on purpose: this one must not be the userId.
    by_user["messageId"] = json!("msg-long-user");
    // Nothing counted: the pipeline's request metrics see no request that was not sent.
    harness
        .app
        .pipeline()
        .deliver_all(
            &[by_email.clone()],
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await;
    let counted = harness.app.pipeline().metrics.take().requests;
    let records = [
        ("m-email", by_email.to_string()),
        ("m-user", by_user.to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    let parked = harness.dead_letters().await;
    // The 22 KB key is shown by its length in the matrix.
    let short = |keys: Vec<String>| -> Vec<String> {
        keys.into_iter()
            .map(|k| {
                if k == long_user {
                    "u-(22 KB)".to_string()
                } else {
                    k
                }
            })
            .collect()
    };
    let ledger = Ledger {
        delivered: short(kustomer.delivered()),
        retried: short(sqs_retried(&answer, &records)),
        dead_lettered: short(
            parked
                .iter()
                .flat_map(|(body, _)| keys_of_body(body))
                .collect(),
        ),
        requeued: short(requeued_keys(&harness).await),
    };
    ledger.settle(
        "18 (issue 8.7) identify with a 70 KB email / a 22 KB non-ASCII userId (SQS)",
        "permanent 400 naming the field, nothing sent or counted, DLQ; the value in no log",
        &keys(&["u-long-email", "u-(22 KB)"]),
    );
    assert!(kustomer.seen().is_empty(), "a request was sent");
    assert!(counted.is_empty(), "requests counted: {counted:?}");
    let mut messages: Vec<&str> = parked
        .iter()
        .map(|(_, attributes)| attributes["errorMessage"].as_str())
        .collect();
    messages.sort();
    println!("| 18 | (URL too long detail) | DLQ errorMessage: {messages:?} |");
    for (_, attributes) in &parked {
        assert_eq!(attributes["errorStatus"], "400");
        assert!(
            attributes["errorMessage"].contains("too long"),
            "{attributes:?}"
        );
    }
    assert!(messages.iter().any(|m| m.contains("email")), "{messages:?}");
    logs.assert_absent(&[&"q7".repeat(50), &"ü".repeat(50)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_19_kustomer_400_echoing_the_email_stays_out_of_the_logs() {
    let logs = capture_logs();
    let echoed = "echoed.person.5e2@example.test";
    let kustomer = Kustomer::start(move |request: &Request| {
        if request.method == "POST" && request.path() == "/v1/customers" {
            Reply::json(
                400,
                &json!({"errors": [{"status": 400, "code": "invalid_email", "title": "Invalid email",
                        "detail": format!("{echoed} is not a valid e-mail address"),
                        "source": {"pointer": "/data/attributes/emails/0/email"}}]}),
            )
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let mut event = identify("u-echo");
    event["traits"]["email"] = json!(echoed);
    let records = [("m-echo", event.to_string())];
    let answer = harness.answer(sqs(&records)).await;
    let parked = harness.dead_letters().await;
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: sqs_retried(&answer, &records),
        dead_lettered: parked
            .iter()
            .flat_map(|(body, _)| keys_of_body(body))
            .collect(),
        requeued: requeued_keys(&harness).await,
    };
    ledger.settle(
        "19 (issue 8.8) Kustomer 400 whose body echoes the e-mail (SQS)",
        "permanent, DLQ; logs carry status, code and title only",
        &keys(&["u-echo"]),
    );
    let text = logs.text();
    assert!(
        text.contains("invalid_email") || text.contains("Invalid email"),
        "the log should name Kustomer's code or title"
    );
    logs.assert_absent(&[echoed, "is not a valid e-mail address"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_20_many_distinct_users_run_through_bounded_workers() {
    // Each answer takes 10 ms, so one worker starts at most one request per 10 ms: the
    // most request starts within any 9 ms bounds the number of workers sending.
    let kustomer =
        Kustomer::start(|request: &Request| accept(request).with_delay(Duration::from_millis(10)))
            .await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let users: Vec<String> = (0..400).map(|n| format!("u-many-{n:03}")).collect();
    let events: Vec<Value> = users.iter().map(|u| track(u)).collect();
    let answer = harness
        .answer(apigw_v2(
            &Value::Array(events).to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    let starts: Vec<std::time::Instant> = kustomer.writes().iter().map(|s| s.at).collect();
    let busiest = starts
        .iter()
        .map(|at| {
            starts
                .iter()
                .filter(|other| {
                    **other >= *at && other.duration_since(*at) < Duration::from_millis(9)
                })
                .count()
        })
        .max()
        .unwrap_or(0);
    let ledger = Ledger {
        delivered: kustomer.delivered(),
        retried: if status == 503 || status == 429 {
            users.clone()
        } else {
            Vec::new()
        },
        ..Ledger::default()
    };
    ledger.settle(
        "20 (issue 8.9) 400 distinct users in one webhook body, MaxInFlight 4",
        "all delivered by at most 4 workers (memory follows the payload)",
        &users,
    );
    println!("| 20 | (bounded workers detail) | at most {busiest} request starts within 9 ms; {} connections |", kustomer.stub.connections());
    assert_eq!(status, 200, "{summary}");
    assert!(
        busiest <= 4,
        "{busiest} workers sending at once, MaxInFlight 4"
    );
}

/// Issue 8: a panic (a bug) ends its own invocation with an error and the container
/// keeps serving. Debug builds honour a test-only trigger for this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_its_invocation_and_the_next_one_is_served() {
    std::env::set_var(rudder_kustomer::entry::TEST_PANIC_TRIGGER, "1");
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let failed = harness
        .invoke(json!({"rudderKustomerTestPanic": true, "type": "track"}))
        .await
        .expect_err("a panic must end as an invocation error");
    assert!(failed.contains("internal error"), "{failed}");
    let answer = harness.answer(track("after-panic")).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
}

/// Issue 8, faults 8 and 9: a large webhook batch of failures answers with a bounded
/// list (the rest counted), and the logs never see Kustomer's error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_failures_answer_with_a_bounded_list() {
    let kustomer = Kustomer::accepting().await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let events: Vec<Value> = (0..1_000)
        .map(|n| json!({"type": "alias", "userId": format!("u{n}")}))
        .collect();
    let body = Value::Array(events).to_string();
    let answer = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), false))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    assert_eq!(status, 400, "{summary}");
    assert_eq!(summary["received"], 1_000);
    assert_eq!(summary["failed"].as_array().map(Vec::len), Some(100));
    assert_eq!(summary["failedNotListed"], 900);
}
