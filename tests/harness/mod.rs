//! The shared harness of the door tests (tests/webhook.rs, sqs.rs, direct.rs) and the
//! fault matrix (tests/faults.rs): `entry::handle` with a real `KustomerClient` talking to
//! the scripted Kustomer stub (tests/support), queues in process (`MemoryQueues`), and
//! Secrets Manager on moto (tests/moto) where a test's key comes from a secret.
//!
//! The fault matrix checks that every input event is accounted for exactly once:
//! delivered (a write the stub answered 2xx), reported for retry (webhook 429/503, SQS
//! batch item failure, direct invocation error), or found in the dead-letter or retry
//! queue. Each row prints `| row | expected | observed |`:
//! `cargo test --test faults -- --nocapture`.

#![allow(dead_code)]

pub(crate) use std::collections::HashMap;
// Used by some of the test files only.
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::time::Duration;

pub(crate) use base64::Engine;
pub(crate) use serde_json::{json, Value};

pub(crate) use crate::moto::{self, MotoServer};
pub(crate) use crate::support::{self, user_of, Reply, Request, StubServer};
pub(crate) use rudder_kustomer::aws::secrets::KeyProvider;
pub(crate) use rudder_kustomer::aws::sqs::MemoryQueues;
pub(crate) use rudder_kustomer::entry::{handle, App, InvocationError};
pub(crate) use rudder_kustomer::envelope::decode_events;
pub(crate) use rudder_kustomer::settings::lambda::{self, LambdaSettings};

pub(crate) const API_KEY: &str = "sk-entry-test-key";
pub(crate) const TOKEN: &str = "entry-webhook-token";
pub(crate) const SECRET_NAME: &str = "rudder-kustomer/test";

// ---------------------------------------------------------------------------------------
// The Kustomer stub, with a log of what it answered.
// ---------------------------------------------------------------------------------------

/// One request the stub received and how it answered.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) at: std::time::Instant,
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) authorization: Option<String>,
    /// The external id a write is for (`identity.externalId` or `externalId`).
    pub(crate) key: Option<String>,
    /// `None` when the stub answered with a fault (reset, hang, close).
    pub(crate) status: Option<u16>,
}

impl Seen {
    pub(crate) fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

pub(crate) struct Kustomer {
    pub(crate) stub: StubServer,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl Kustomer {
    pub(crate) async fn start<F>(respond: F) -> Kustomer
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

    /// A stub that answers `reply` to every write for `key` and `accept`s everything else.
    pub(crate) async fn failing_for(key: &'static str, reply: Reply) -> Kustomer {
        Kustomer::start(move |request: &Request| {
            if write_key(request).as_deref() == Some(key) {
                reply.clone()
            } else {
                accept(request)
            }
        })
        .await
    }

    /// A stub that accepts everything (look-ups find nothing, writes succeed).
    pub(crate) async fn accepting() -> Kustomer {
        Kustomer::start(accept).await
    }

    pub(crate) fn url(&self) -> String {
        self.stub.base_url()
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn writes(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(Seen::is_write).collect()
    }

    pub(crate) fn writes_for(&self, key: &str) -> Vec<Seen> {
        self.writes()
            .into_iter()
            .filter(|seen| seen.key.as_deref() == Some(key))
            .collect()
    }

    /// The delivered keys, sorted: the order of concurrent writes is not the point.
    pub(crate) fn delivered_sorted(&self) -> Vec<String> {
        let mut delivered = self.delivered();
        delivered.sort();
        delivered
    }

    /// The keys of the writes answered with a 2xx: the delivered events.
    pub(crate) fn delivered(&self) -> Vec<String> {
        self.writes()
            .into_iter()
            .filter(|seen| seen.status.is_some_and(|s| (200..300).contains(&s)))
            .filter_map(|seen| seen.key)
            .collect()
    }
}

/// The normal answers: look-ups find nothing, a create answers 201 with an id (a company's
/// a Kustomer id), other writes 201/200.
pub(crate) fn accept(request: &Request) -> Reply {
    match (request.method.as_str(), request.path()) {
        ("GET", path) if support::is_company_path(path) => Reply::json(200, &json!({"data": []})),
        ("POST", "/v1/companies") => Reply::json(
            201,
            &json!({"data": {"type": "company", "id": "5f3c0ffee0000000000c0a01"}}),
        ),
        ("GET", _) => Reply::json(404, &json!({"errors": [{"status": 404}]})),
        ("POST", "/v1/customers") => Reply::json(201, &json!({"data": {"id": "cust-created"}})),
        ("PUT", _) => Reply::json(200, &json!({"data": {"id": "cust-updated"}})),
        _ => Reply::json(201, &json!({"data": {"type": "tracking_event"}})),
    }
}

pub(crate) fn is_write(request: &Request) -> bool {
    request.method != "GET"
}

/// The external id a write is for, from its JSON body.
pub(crate) fn write_key(request: &Request) -> Option<String> {
    if !is_write(request) {
        return None;
    }
    support::write_user(request)
}

// ---------------------------------------------------------------------------------------
// The app under test.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(crate) enum Keys {
    /// `KUSTOMER_API_KEY` (+ `WEBHOOK_TOKEN`).
    Local { token: Option<&'static str> },
    /// A Secrets Manager secret on moto holding this string.
    Secret(String),
    /// Secrets Manager unreachable (a closed loopback port).
    Down,
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) keys: Keys,
    /// Give the app a dead-letter queue and a retry queue (in process).
    pub(crate) queues: bool,
    /// A dead-letter queue that refuses every message (as SQS does for a missing queue).
    pub(crate) missing_dlq: bool,
    pub(crate) max_attempts: u32,
    pub(crate) request_timeout_ms: u64,
    pub(crate) webhook_auth_none: bool,
    /// The queues are FIFO (`QueueType=fifo`).
    pub(crate) fifo: bool,
    /// Extra settings (variable, value).
    pub(crate) settings: Vec<(&'static str, String)>,
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
            fifo: false,
            settings: Vec::new(),
        }
    }
}

impl Options {
    pub(crate) fn with_queues(self) -> Self {
        Options {
            queues: true,
            ..self
        }
    }

    /// FIFO queues (in process, as SQS FIFO).
    pub(crate) fn with_fifo_queues(self) -> Self {
        Options {
            queues: true,
            fifo: true,
            ..self
        }
    }

    /// One more setting (an environment variable of the function).
    pub(crate) fn with_setting(mut self, name: &'static str, value: &str) -> Self {
        self.settings.push((name, value.to_string()));
        self
    }

    pub(crate) fn missing_dlq(self) -> Self {
        Options {
            missing_dlq: true,
            ..self
        }
    }

    pub(crate) fn attempts(self, max_attempts: u32) -> Self {
        Options {
            max_attempts,
            ..self
        }
    }
}

pub(crate) struct Harness {
    pub(crate) app: App,
    /// Secrets Manager (this test binary's shared moto), for the harnesses whose key comes
    /// from a secret: `secret_name`, unique to this harness.
    pub(crate) moto: Option<&'static MotoServer>,
    pub(crate) secret_name: String,
    pub(crate) queues: Arc<MemoryQueues>,
}

impl Harness {
    /// Builds the app as the bootstrap does (settings parsed by `LambdaSettings`, then `App::new`),
    /// with in-process queues, and Secrets Manager on moto (or unreachable) when the key
    /// comes from a secret. The SQS adapter itself is tested against moto in tests/aws.rs.
    pub(crate) async fn start(kustomer: &Kustomer, options: Options) -> Harness {
        let needs_moto = matches!(options.keys, Keys::Secret(_));
        let moto = needs_moto.then(|| tokio::task::block_in_place(MotoServer::shared));
        static HARNESSES: AtomicUsize = AtomicUsize::new(0);
        let secret_name = format!(
            "{SECRET_NAME}-{}",
            HARNESSES.fetch_add(1, Ordering::Relaxed)
        );

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
        // So would the skip caches hide writes of events sent again (tests/delivery.rs
        // tests them); `with_setting` turns them on.
        vars.insert(lambda::UNCHANGED_TTL_SECONDS, "0".into());
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
                let moto = moto.unwrap();
                moto.create_secret(&secret_name, value).await;
                vars.insert(lambda::SECRET_ID, secret_name.clone());
            }
            Keys::Down => {
                vars.insert(lambda::SECRET_ID, secret_name.clone());
            }
        }
        for (name, value) in &options.settings {
            vars.insert(name, value.clone());
        }
        let mut queues = MemoryQueues::new(options.queues, options.queues);
        if options.fifo {
            queues = queues.fifo();
        }
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
            Keys::Secret(_) => Some(moto.unwrap().sdk_config().await),
            Keys::Down => Some(moto::sdk_config_for(&moto::unreachable_endpoint()).await),
        };
        if let Some(sdk) = secrets_endpoint {
            app = app.with_key_provider(KeyProvider::with_sdk_config(
                config.key_source.clone(),
                config.secret_cache_ttl,
                sdk,
            ));
        }
        Harness {
            app,
            moto,
            secret_name,
            queues,
        }
    }

    /// The app in front of a stub that accepts everything (`Kustomer::accepting`).
    pub(crate) async fn accepting(options: Options) -> (Kustomer, Harness) {
        let kustomer = Kustomer::accepting().await;
        let harness = Harness::start(&kustomer, options).await;
        (kustomer, harness)
    }

    pub(crate) async fn invoke(&self, payload: Value) -> Result<Value, String> {
        self.invoke_typed(payload).await.map_err(|e| e.to_string())
    }

    pub(crate) async fn invoke_typed(&self, payload: Value) -> Result<Value, InvocationError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        Box::pin(handle(&self.app, payload, "test-request-id", deadline)).await
    }

    pub(crate) async fn answer(&self, payload: Value) -> Value {
        self.invoke(payload)
            .await
            .unwrap_or_else(|e| panic!("the invocation failed: {e}"))
    }

    pub(crate) fn moto(&self) -> &MotoServer {
        self.moto.expect("this harness has no moto")
    }

    /// One SQS batch of (messageId, body) records: the answer, and where every event
    /// went (deliveries, batch item failures, both queues).
    pub(crate) async fn sqs_batch(
        &self,
        kustomer: &Kustomer,
        records: &[(&str, String)],
    ) -> (Value, Ledger) {
        let answer = self.answer(sqs(records)).await;
        let ledger = Ledger::observe(kustomer, self, sqs_retried(&answer, records)).await;
        (answer, ledger)
    }

    /// Every message in the dead-letter queue: (body, attributes).
    pub(crate) async fn dead_letters(&self) -> Vec<(String, HashMap<String, String>)> {
        self.queues.dead_letters()
    }

    /// Every message in the retry queue (bodies).
    pub(crate) async fn requeued(&self) -> Vec<String> {
        self.queues.requeued()
    }

    /// The in-process queues (their FIFO keys, ...).
    pub(crate) fn queues(&self) -> &MemoryQueues {
        &self.queues
    }
}

// ---------------------------------------------------------------------------------------
// Events and envelopes.
// ---------------------------------------------------------------------------------------

pub(crate) fn track(user: &str) -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": format!("msg-{user}"),
        "properties": {"order_id": "ORD-1", "total": 12.5},
    })
}

/// A track without an event name: refused for good (400) before any request.
pub(crate) fn unnamed_track(user: &str) -> Value {
    json!({"type": "track", "userId": user})
}

pub(crate) fn page(user: &str) -> Value {
    json!({"type": "page", "name": "Pricing", "userId": user, "messageId": format!("msg-{user}")})
}

pub(crate) fn screen(user: &str) -> Value {
    json!({"type": "screen", "name": "Cart", "userId": user, "messageId": format!("msg-{user}")})
}

pub(crate) fn identify(user: &str) -> Value {
    json!({
        "type": "identify",
        "userId": user,
        "messageId": format!("msg-{user}"),
        "traits": {"email": format!("{user}@example.test"), "name": "Test Person"},
    })
}

/// The keys of the events in a message body, or `raw:<body>` when it cannot be decoded.
pub(crate) fn keys_of_body(body: &str) -> Vec<String> {
    match decode_events(body) {
        Ok(events) => events.iter().map(user_of).collect(),
        Err(_) => vec![format!("raw:{body}")],
    }
}

pub(crate) fn eventbridge(detail: &Value) -> Value {
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

pub(crate) fn sns(message: &Value) -> Value {
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
pub(crate) fn sqs(records: &[(&str, String)]) -> Value {
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

/// An SQS FIFO batch: (messageId, MessageGroupId, body) records, as Lambda hands them out.
pub(crate) fn sqs_fifo(records: &[(&str, &str, String)]) -> Value {
    let plain: Vec<(&str, String)> = records.iter().map(|(id, _, b)| (*id, b.clone())).collect();
    let mut payload = sqs(&plain);
    let arn = "arn:aws:sqs:us-east-1:123456789012:rudder-kustomer.fifo";
    if let Some(list) = payload["Records"].as_array_mut() {
        for (n, (record, (_, group, _))) in list.iter_mut().zip(records).enumerate() {
            record["attributes"]["MessageGroupId"] = json!(group);
            record["attributes"]["SequenceNumber"] = json!(format!("{:020}", n + 1));
            record["eventSourceARN"] = json!(arn);
        }
    }
    payload
}

/// The `itemIdentifier`s of an SQS answer, sorted.
pub(crate) fn batch_failures(answer: &Value) -> Vec<String> {
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

pub(crate) fn encode(body: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(body)
}

/// The headers of an API Gateway request: content type, user agent and the optional
/// authorization, under the names given (the door must read either spelling).
fn proxy_headers(names: [&str; 3], authorization: Option<&str>) -> Value {
    let [content_type, user_agent, authorization_name] = names;
    let mut headers = json!({content_type: "application/json", user_agent: "RudderLabs"});
    if let Some(value) = authorization {
        headers[authorization_name] = json!(value);
    }
    headers
}

/// Sets the body of an API Gateway request, base64-encoded or not.
fn with_body(mut request: Value, body: &str, base64: bool) -> Value {
    request["body"] = json!(if base64 {
        encode(body)
    } else {
        body.to_string()
    });
    request["isBase64Encoded"] = json!(base64);
    request
}

/// An API Gateway HTTP API (payload 2.0) request.
pub(crate) fn apigw_v2(body: &str, authorization: Option<&str>, base64: bool) -> Value {
    let names = ["content-type", "user-agent", "authorization"];
    let request = json!({
        "version": "2.0",
        "routeKey": "POST /rudderstack",
        "rawPath": "/rudderstack",
        "rawQueryString": "",
        "headers": proxy_headers(names, authorization),
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "http": {"method": "POST", "path": "/rudderstack", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "RudderLabs"},
            "requestId": "req-v2",
            "routeKey": "POST /rudderstack",
            "stage": "$default",
            "timeEpoch": 1764238511402u64,
        },
    });
    with_body(request, body, base64)
}

/// An API Gateway REST API proxy (payload 1.0) request; header names as the client sent them.
pub(crate) fn apigw_v1(body: &str, authorization: Option<&str>, base64: bool) -> Value {
    let names = ["Content-Type", "User-Agent", "Authorization"];
    let request = json!({
        "resource": "/rudderstack",
        "path": "/rudderstack",
        "httpMethod": "POST",
        "headers": proxy_headers(names, authorization),
        "multiValueHeaders": {},
        "queryStringParameters": null,
        "requestContext": {"resourcePath": "/rudderstack", "httpMethod": "POST", "stage": "prod", "requestId": "req-v1"},
    });
    with_body(request, body, base64)
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A webhook answer: status, the `retry-after` header, the parsed JSON body.
pub(crate) fn webhook_answer(answer: &Value) -> (u16, Option<String>, Value) {
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

pub(crate) fn sample(file: &str) -> Value {
    let path = format!("{}/events/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Everything the library logs (debug and up), from every test of this binary
/// (tests/support).
pub(crate) fn capture_logs() -> support::Logs {
    support::capture_logs(tracing::Level::DEBUG)
}

// ---------------------------------------------------------------------------------------
// Accounting for the fault matrix.
// ---------------------------------------------------------------------------------------

/// Where the input events ended up, by key.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) delivered: Vec<String>,
    /// Reported for retry to the caller (webhook 429/503, SQS batch item failure, direct Err).
    pub(crate) retried: Vec<String>,
    pub(crate) dead_lettered: Vec<String>,
    pub(crate) requeued: Vec<String>,
}

impl Ledger {
    /// Everything the stub received and both queues hold, plus what the answer reported
    /// for retry.
    pub(crate) async fn observe(
        kustomer: &Kustomer,
        harness: &Harness,
        retried: Vec<String>,
    ) -> Ledger {
        Ledger {
            delivered: kustomer.delivered(),
            retried,
            dead_lettered: dlq_keys(harness).await,
            requeued: requeued_keys(harness).await,
        }
    }

    /// What an SQS test observes without queues: the deliveries and the batch item failures.
    pub(crate) fn sqs(kustomer: &Kustomer, answer: &Value, records: &[(&str, String)]) -> Ledger {
        Ledger {
            delivered: kustomer.delivered(),
            retried: sqs_retried(answer, records),
            ..Ledger::default()
        }
    }

    /// Checks that every input is in exactly one place and nothing else is anywhere;
    /// prints the matrix row first so a failing row still shows what was observed.
    pub(crate) fn settle(&self, row: &str, expected: &str, inputs: &[String]) {
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

pub(crate) fn keys(users: &[&str]) -> Vec<String> {
    users.iter().map(|u| u.to_string()).collect()
}

/// Retried keys of an SQS answer: the events of every record reported.
pub(crate) fn sqs_retried(answer: &Value, records: &[(&str, String)]) -> Vec<String> {
    let failed = batch_failures(answer);
    records
        .iter()
        .filter(|(id, _)| failed.iter().any(|f| f == id))
        .flat_map(|(_, body)| keys_of_body(body))
        .collect()
}

/// The keys of the events in dead-letter messages (body, attributes).
pub(crate) fn parked_keys(parked: &[(String, HashMap<String, String>)]) -> Vec<String> {
    parked
        .iter()
        .flat_map(|(body, _)| keys_of_body(body))
        .collect()
}

pub(crate) async fn dlq_keys(harness: &Harness) -> Vec<String> {
    parked_keys(&harness.dead_letters().await)
}

pub(crate) async fn requeued_keys(harness: &Harness) -> Vec<String> {
    let bodies = harness.requeued().await;
    bodies.iter().flat_map(|body| keys_of_body(body)).collect()
}
