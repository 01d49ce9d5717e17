//! End to end: the real `bootstrap` binary under the Lambda runtime emulator
//! (`cargo lambda watch`), invoked with every file in `events/` through
//! `cargo lambda invoke`, against the Kustomer stub (tests/support) and moto (tests/moto)
//! for Secrets Manager and SQS.
//!
//! Checked: every answer (webhook statuses and summaries, no SQS batch item failures,
//! direct summaries), every request Kustomer received (method, path, `Authorization:
//! Bearer <the key from the secret>`, one write per event, bodies fitted to Kustomer's
//! contract by the schema stage that is on by default), empty dead-letter and retry
//! queues, and the logs (issue 4): JSON outcome lines with request id, event type and
//! outcome; EMF lines; never the API key, the webhook token or the personal data of the
//! sample events.
//!
//! Kustomer is the stand-in with memory of `tests/support/fake.rs`, so companies (spec
//! section 12) are created, found and updated as they would be: after the samples, an
//! identify with a new company name (created, the customer linked), a second user of that
//! company (found in the company-id cache: no look-up), a group for an existing customer,
//! then a restart of the function with the same events (found by look-up, no duplicate).
//!
//! Needs `cargo lambda` (`pip install cargo-lambda`; `.ci/run` installs it) and
//! `moto_server`. The first start compiles the binary: allow a few minutes.

mod moto;
mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use moto::MotoServer;
use rudder_kustomer::envelope::decode_events;
use support::fake::FakeKustomer;
use support::{is_company_path, user_of, Reply, Request, StubServer};

const API_KEY: &str = "e2e-api-key-123";
const WEBHOOK_TOKEN: &str = "local-webhook-token";
const SECRET_NAME: &str = "rudder-kustomer/e2e";
/// The function name `cargo lambda watch` serves: the binary's name.
const FUNCTION: &str = "bootstrap";
/// How long the first invocation may take: it waits for the binary to compile.
const FIRST_INVOKE_TIMEOUT: Duration = Duration::from_secs(330);
const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// The level the function logs at: the most verbose the template allows, so that anything
/// a library prints is checked too.
const LOG_LEVEL: &str = "trace";
/// The customer the stub "finds" by userId (so identify also takes the update path).
const KNOWN_USER: &str = "usr_7f3a91";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------
// cargo lambda watch, killed with its whole process group when dropped.
// ---------------------------------------------------------------------------------------

struct Watch {
    child: Child,
    port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Watch {
    /// `name` tells the logs of one start from another's (`<name>.stdout.log`).
    fn start(name: &str, port: u16, env: &[(&str, String)], logs: &Path) -> Watch {
        let stdout = logs.join(format!("{name}.stdout.log"));
        let stderr = logs.join(format!("{name}.stderr.log"));
        let mut command = Command::new("cargo");
        command
            .args(["lambda", "watch", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            // Other edits to the tree must not restart the function mid-test.
            .arg("--ignore-changes")
            .current_dir(manifest_dir())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create the watch stdout log"))
            .stderr(File::create(&stderr).expect("create the watch stderr log"))
            // Its own process group: cargo, cargo-lambda and the function die together.
            .process_group(0);
        for (name, value) in env {
            command.arg("--env-var").arg(format!("{name}={value}"));
        }
        // Nothing from the developer's shell may stand in for the settings under test.
        for name in [
            "KUSTOMER_API_KEY",
            "WEBHOOK_TOKEN",
            "WEBHOOK_AUTH",
            "AWS_PROFILE",
            "AWS_LAMBDA_LOG_FORMAT",
            "AWS_LAMBDA_LOG_LEVEL",
            "RUST_LOG",
        ] {
            command.env_remove(name);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start cargo lambda watch: {e}"));
        Watch {
            child,
            port,
            stdout,
            stderr,
        }
    }

    /// Waits until the emulator accepts connections (it listens before compiling).
    fn wait_listening(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "cargo lambda watch exited ({status}) before listening:\n{}",
                    self.tail()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen on {} within {timeout:?}:\n{}",
                self.port,
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything written so far (stdout, then stderr).
    fn output(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        format!("{}\n{}", read(&self.stdout), read(&self.stderr))
    }

    /// The last lines written, for failure messages.
    fn tail(&self) -> String {
        let output = self.output();
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `cargo lambda` must be installed: the test fails (never skips) without it.
fn require_cargo_lambda() {
    let installed = Command::new("cargo")
        .args(["lambda", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        installed,
        "`cargo lambda` is not installed: run `pip install cargo-lambda` (.ci/run installs it); \
         the end-to-end test needs it"
    );
}

// ---------------------------------------------------------------------------------------
// cargo lambda invoke
// ---------------------------------------------------------------------------------------

struct Invocation {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Invocation {
    fn answer(&self, what: &str) -> Value {
        assert!(
            self.success,
            "{what}: the invocation failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("{what}: the answer is not JSON ({e}): {}", self.stdout))
    }
}

async fn invoke(port: u16, data: (&str, &str), timeout: Duration, watch: &Watch) -> Invocation {
    let mut command = tokio::process::Command::new("cargo");
    command
        .args(["lambda", "invoke", "--invoke-address", "127.0.0.1"])
        .args(["--invoke-port", &port.to_string(), "--color", "never"])
        .args([data.0, data.1, FUNCTION])
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "cargo lambda invoke {} did not return within {timeout:?}; the emulator said:\n{}",
                data.1,
                watch.tail()
            )
        })
        .unwrap_or_else(|e| panic!("cannot run cargo lambda invoke: {e}"));
    Invocation {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// The sample events
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Webhook,
    Sqs,
    Direct,
}

struct Sample {
    file: String,
    door: Door,
    /// The RudderStack events inside, in order.
    events: Vec<Value>,
}

fn samples() -> Vec<Sample> {
    let dir = manifest_dir().join("events");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(dir.join(&file)).unwrap();
            let payload: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            let door = if file.starts_with("apigw-") {
                Door::Webhook
            } else if file.starts_with("sqs-") {
                Door::Sqs
            } else if file.starts_with("direct-") || file.starts_with("rudderstack-") {
                Door::Direct
            } else {
                panic!("events/{file}: a new kind of sample; teach tests/e2e.rs what it expects")
            };
            let events = events_in(&file, door, &payload);
            assert!(!events.is_empty(), "{file}: no event inside");
            Sample { file, door, events }
        })
        .collect()
}

fn events_in(file: &str, door: Door, payload: &Value) -> Vec<Value> {
    let flatten = |value: Value| match value {
        Value::Array(events) => events,
        event => vec![event],
    };
    match door {
        Door::Webhook => {
            let body = payload["body"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no body"));
            let text = if payload["isBase64Encoded"] == json!(true) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                String::from_utf8(bytes).unwrap()
            } else {
                body.to_string()
            };
            flatten(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}")))
        }
        Door::Sqs => payload["Records"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: no Records"))
            .iter()
            .flat_map(|record| {
                decode_events(record["body"].as_str().unwrap_or(""))
                    .unwrap_or_else(|e| panic!("{file}: {e}"))
            })
            .collect(),
        Door::Direct => flatten(payload.clone()),
    }
}

/// Personal data in the samples: the traits' e-mails, phones, names (and street), and
/// e-mails given as properties.
fn personal_data(samples: &[Sample]) -> BTreeSet<String> {
    const KEYS: &[&str] = &[
        "email",
        "phone",
        "name",
        "firstName",
        "lastName",
        "userName",
        "street",
    ];
    fn collect(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(object) => {
                for (key, value) in object {
                    match value {
                        Value::String(text) if KEYS.contains(&key.as_str()) && text.len() > 3 => {
                            found.insert(text.clone());
                        }
                        _ => collect(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| collect(item, found)),
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    for event in samples.iter().flat_map(|s| &s.events) {
        for traits in [event.pointer("/context/traits"), event.get("traits")]
            .into_iter()
            .flatten()
        {
            collect(traits, &mut found);
        }
        if let Some(Value::String(email)) = event.pointer("/properties/email") {
            found.insert(email.clone());
        }
    }
    found
}

fn write_key(request: &Request) -> Option<String> {
    support::write_user(request)
}

/// Kustomer with one customer known by userId (so identify also takes the update path);
/// customers created are not found again (every sample sees the same customers), companies
/// are kept.
fn kustomer() -> FakeKustomer {
    FakeKustomer::new().with_customer(&format!("externalId={KNOWN_USER}"), KNOWN_CUSTOMER)
}

const KNOWN_CUSTOMER: &str = "cust-7f3a91";

/// The user a customer or tracking write is for; a write to the known customer (a group's
/// link carries only the company) is its user's. Company writes are for no user.
fn written_user(request: &Request) -> Option<String> {
    if is_company_path(request.path()) {
        return None;
    }
    let known = format!("/v1/customers/{KNOWN_CUSTOMER}?replace=false");
    write_key(request).or_else(|| (request.target == known).then(|| KNOWN_USER.to_string()))
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_through_cargo_lambda_watch() {
    require_cargo_lambda();
    let samples = samples();
    assert!(samples.len() >= 13, "expected the 13+ samples of events/");

    let fake = std::sync::Arc::new(kustomer());
    let answers = std::sync::Arc::clone(&fake);
    let stub = StubServer::start(move |request: &Request| answers.answer(request)).await;
    let moto = tokio::task::block_in_place(MotoServer::start);
    let secret = json!({"apiKey": API_KEY, "webhookToken": WEBHOOK_TOKEN}).to_string();
    moto.create_secret(SECRET_NAME, &secret).await;
    let queue = moto.create_queue("e2e-queue").await;
    let dlq = moto.create_queue("e2e-dlq").await;

    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    std::fs::create_dir_all(&logs).unwrap();
    let port = free_port();
    let env: Vec<(&str, String)> = vec![
        ("KUSTOMER_SECRET_ID", SECRET_NAME.to_string()),
        ("KUSTOMER_BASE_ENDPOINT", stub.base_url()),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("DEAD_LETTER_QUEUE_URL", dlq.clone()),
        ("RETRY_QUEUE_URL", queue.clone()),
        ("RETRY_MAX_ATTEMPTS", "2".into()),
        // Every sample goes through every door to one warm process, many sharing a
        // messageId: each must be written, not skipped as a repeat (tests/delivery.rs
        // covers the skips).
        ("KUSTOMER_UNCHANGED_TTL_SECONDS", "0".into()),
        ("LOG_LEVEL", LOG_LEVEL.into()),
        ("METRICS_NAMESPACE", "RudderKustomerE2E".into()),
    ];
    let mut watch = tokio::task::block_in_place(|| {
        let mut watch = Watch::start("watch", port, &env, &logs);
        watch.wait_listening(Duration::from_secs(60));
        watch
    });

    // The first invocation waits for the build. An unknown shape: an error naming its
    // top-level keys, never its values.
    let started = Instant::now();
    let warmup = invoke(
        port,
        ("--data-ascii", r#"{"e2eWarmup": "hidden-warmup-value"}"#),
        FIRST_INVOKE_TIMEOUT,
        &watch,
    )
    .await;
    println!("first invocation (build included): {:?}", started.elapsed());
    assert!(
        !warmup.success,
        "an unknown shape must fail: {}",
        warmup.stdout
    );
    let error = format!("{}{}", warmup.stdout, warmup.stderr);
    assert!(
        error.contains("unsupported payload") && error.contains("e2eWarmup"),
        "{error}\n{}",
        watch.tail()
    );
    assert!(!error.contains("hidden-warmup-value"), "{error}");
    assert!(stub.requests().is_empty());

    let mut events_sent = 0;
    let mut invocations = 1;
    for sample in &samples {
        let file = &sample.file;
        let before = stub.requests().len();
        let path = manifest_dir().join("events").join(file);
        let invocation = invoke(
            port,
            ("--data-file", path.to_str().unwrap()),
            INVOKE_TIMEOUT,
            &watch,
        )
        .await;
        invocations += 1;
        let answer = invocation.answer(file);
        let count = sample.events.len();
        events_sent += count;
        match sample.door {
            Door::Webhook => {
                assert_eq!(answer["statusCode"], 200, "{file}: {answer}");
                let summary: Value =
                    serde_json::from_str(answer["body"].as_str().unwrap_or("")).unwrap();
                assert_eq!(
                    summary,
                    json!({"received": count, "delivered": count, "failed": []}),
                    "{file}"
                );
            }
            Door::Sqs => assert_eq!(answer, json!({"batchItemFailures": []}), "{file}"),
            Door::Direct => assert_eq!(
                answer,
                json!({"received": count, "delivered": count, "requeued": 0, "parked": 0}),
                "{file}"
            ),
        }

        // What Kustomer received for this file: the key from the secret on every request,
        // known endpoints only, one successful write per event.
        let requests = stub.requests()[before..].to_vec();
        let mut written: Vec<String> = Vec::new();
        for request in &requests {
            assert_eq!(
                request.header("authorization"),
                Some(format!("Bearer {API_KEY}").as_str()),
                "{file}: {} {}",
                request.method,
                request.target
            );
            let path = request.path();
            match request.method.as_str() {
                "GET" => assert!(
                    path.starts_with("/v1/customers/email=")
                        || path.starts_with("/v1/customers/externalId=")
                        || request.target.starts_with("/v1/companies?externalId=")
                        || request.target.starts_with("/v1/companies?filter="),
                    "{file}: GET {}",
                    request.target
                ),
                "POST" => {
                    assert!(
                        path == "/v1/customers"
                            || path == "/v1/tracking/identityEvent"
                            || path == "/v1/companies",
                        "{file}: POST {}",
                        request.target
                    );
                    written.extend(written_user(request));
                }
                "PUT" => {
                    let company_update = path
                        .strip_prefix("/v1/companies/")
                        .is_some_and(kustomer_mapping::is_kustomer_id);
                    assert!(
                        company_update
                            || request.target
                                == format!("/v1/customers/{KNOWN_CUSTOMER}?replace=false"),
                        "{file}: PUT {}",
                        request.target
                    );
                    written.extend(written_user(request));
                }
                other => panic!("{file}: unexpected method {other} {}", request.target),
            }
            assert_eq!(
                request.header("content-type").is_some(),
                request.method != "GET",
                "{file}: {} {}",
                request.method,
                request.target
            );
        }
        check_fitted(file, &requests);
        let mut expected: Vec<String> = sample.events.iter().map(user_of).collect();
        expected.sort();
        written.sort();
        assert_eq!(written, expected, "{file}: one write per event");
        println!(
            "{file}: {count} event(s), {} request(s) to Kustomer: ok",
            requests.len()
        );
    }
    // The function URL path the README shows: a plain HTTP POST becomes an HTTP API event.
    let track =
        std::fs::read_to_string(manifest_dir().join("events/rudderstack-track.json")).unwrap();
    let before = stub.requests().len();
    let url_path = format!("/lambda-url/{FUNCTION}/rudderstack");
    let authorization = format!("Bearer {WEBHOOK_TOKEN}");
    let (status, body) = http_post(port, &url_path, Some(&authorization), &track).await;
    assert_eq!(status, 200, "function URL: {body}");
    let summary: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        summary,
        json!({"received": 1, "delivered": 1, "failed": []})
    );
    let (status, body) = http_post(port, &url_path, Some("Bearer wrong-token"), &track).await;
    assert_eq!(status, 401, "function URL, wrong token: {body}");
    let (status, body) = http_post(port, &url_path, None, &track).await;
    assert_eq!(status, 401, "function URL, no token: {body}");
    assert_eq!(
        stub.requests().len(),
        before + 1,
        "one write, for the authorised call"
    );
    invocations += 3;
    events_sent += 1;
    println!("function URL POST: 200, wrong/missing token: 401: ok");

    let all = stub.requests();
    assert!(
        all.iter().any(|r| r.method == "PUT"),
        "the known customer was updated"
    );

    // Companies (spec 12): created, found in the cache, a group; then a restart.
    let scenario = CompanyScenario {
        fake: &fake,
        stub: &stub,
    };
    scenario.before_restart(&watch).await;
    invocations += 3;
    events_sent += 3;
    watch.stop();
    let restart_port = free_port();
    let restarted = tokio::task::block_in_place(|| {
        let mut watch = Watch::start("restart", restart_port, &env, &logs);
        watch.wait_listening(Duration::from_secs(60));
        watch
    });
    scenario.after_restart(&restarted).await;
    invocations += 2;
    events_sent += 2;
    let all = stub.requests();

    // Nothing was parked or re-queued.
    assert!(
        moto.receive_all(&dlq).await.is_empty(),
        "the DLQ is not empty"
    );
    assert!(
        moto.receive_all(&queue).await.is_empty(),
        "the retry queue is not empty"
    );

    // Log hygiene: everything the function printed, before and after the restart.
    let mut restarted = restarted;
    restarted.stop();
    let output = format!("{}\n{}", watch.output(), restarted.output());
    check_logs(&output, &samples, events_sent, invocations);
    println!(
        "e2e: {} files, {events_sent} events, {} Kustomer requests, logs at {}",
        samples.len(),
        all.len(),
        logs.display()
    );
}

/// Spec section 11 (D25), on by default: the writes reach Kustomer fitted to its contract.
/// The identify sample sends `gender: "male"` and a day-first birthday, the track sample the
/// Android SDK's numeric `context.sessionId` and a `null` property; every tracking write has
/// a text `sessionId` and only text or numbers in `meta`.
fn check_fitted(file: &str, requests: &[Request]) {
    for company in requests
        .iter()
        .filter(|r| r.method != "GET" && is_company_path(r.path()))
    {
        let body = company.body_json().unwrap_or_default();
        let external_id = body["externalId"].as_str().unwrap_or_default();
        assert!(
            !external_id.is_empty() && external_id.chars().count() <= 256,
            "{file}: {body}"
        );
        if let Some(name) = body.get("name") {
            let name = name.as_str().unwrap_or_default().trim();
            assert!((3..=255).contains(&name.chars().count()), "{file}: {body}");
        }
    }
    let writes: Vec<(String, Value)> = requests
        .iter()
        .filter(|r| r.method != "GET" && !is_company_path(r.path()))
        .map(|r| {
            let body = r
                .body_json()
                .unwrap_or_else(|| panic!("{file}: a write without a JSON body"));
            (r.path().to_string(), body)
        })
        .collect();
    for (path, body) in &writes {
        if path == "/v1/tracking/identityEvent" {
            let event = &body["event"];
            assert!(
                event.get("sessionId").is_none_or(Value::is_string),
                "{file}: sessionId not text: {body}"
            );
            assert!(event["name"].is_string(), "{file}: {body}");
            if let Some(meta) = event.get("meta") {
                let meta = meta.as_object().unwrap_or_else(|| panic!("{file}: {body}"));
                assert!(
                    meta.values().all(|v| v.is_string() || v.is_number()),
                    "{file}: meta values must be text or numbers: {body}"
                );
            }
        } else if let Some(gender) = body.get("gender") {
            assert!(gender == "m" || gender == "f", "{file}: gender {gender}");
        }
    }
    match file {
        "rudderstack-identify.json" => {
            let [(_, body)] = &writes[..] else {
                panic!("{file}: one write expected, got {writes:?}")
            };
            assert_eq!(body["gender"], "m", "{file}: {body}");
            assert!(body.get("birthdayAt").is_none(), "{file}: {body}");
            assert_eq!(body["signedUpAt"], "2024-03-18T09:41:07.000Z", "{file}");
            // Section 12: the company object became the Kustomer company's id.
            let company = body["company"].as_str().unwrap_or_default();
            assert!(kustomer_mapping::is_kustomer_id(company), "{file}: {body}");
        }
        "rudderstack-group.json" => {
            let [(path, body)] = &writes[..] else {
                panic!("{file}: one customer write expected, got {writes:?}")
            };
            assert_eq!(path, &format!("/v1/customers/{KNOWN_CUSTOMER}"), "{file}");
            let company = body["company"].as_str().unwrap_or_default();
            assert!(kustomer_mapping::is_kustomer_id(company), "{file}: {body}");
            assert_eq!(body.as_object().map(|b| b.len()), Some(1), "{file}: {body}");
            let company_write = requests
                .iter()
                .find(|r| r.method != "GET" && is_company_path(r.path()))
                .and_then(Request::body_json)
                .unwrap_or_else(|| panic!("{file}: no company write"));
            assert_eq!(company_write["externalId"], "acct_20931", "{file}");
            assert_eq!(company_write["employeeCount"], 240, "{file}");
            assert_eq!(company_write["custom"]["seatsNum"], 25, "{file}");
            assert_eq!(company_write["custom"]["isEnterpriseBool"], false, "{file}");
        }
        "rudderstack-track.json" => {
            let [(_, body)] = &writes[..] else {
                panic!("{file}: one write expected, got {writes:?}")
            };
            assert_eq!(
                body["event"]["sessionId"], "1764241930217",
                "{file}: {body}"
            );
            assert!(
                body["event"]["meta"].get("referral_code").is_none(),
                "{file}"
            );
            assert_eq!(body["event"]["meta"]["first_order"], "false", "{file}");
            assert!(body["event"]["meta"]["products"].is_string(), "{file}");
        }
        _ => {}
    }
}

/// A minimal HTTP/1.1 POST (`Connection: close`): status and body.
async fn http_post(
    port: u16,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to cargo lambda watch");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(INVOKE_TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("the function URL did not answer")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, payload) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let payload = if chunked {
        let mut out = String::new();
        let mut rest = payload;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        payload.to_string()
    };
    (status, payload)
}

fn check_logs(output: &str, samples: &[Sample], events: usize, invocations: usize) {
    let json_lines: Vec<Value> = output
        .lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .filter_map(|line| serde_json::from_str(line.trim()).ok())
        .collect();
    let outcomes: Vec<&Value> = json_lines
        .iter()
        .filter(|line| {
            ["request_id", "event_type", "outcome"]
                .iter()
                .all(|field| line.get(*field).is_some_and(|v| v.is_string()))
        })
        .collect();
    assert!(
        outcomes.len() >= events,
        "{} outcome log lines (request_id, event_type, outcome) for {events} events",
        outcomes.len()
    );
    for line in &outcomes {
        assert_eq!(line["outcome"], "delivered", "{line}");
        assert!(!line["request_id"].as_str().unwrap().is_empty(), "{line}");
        assert!(line.get("message_id").is_some(), "{line}");
    }
    // D25: the outcome lines name the fields the schema stage fixed (never their values),
    // and the EMF metric SchemaFixes counts them by Field.
    let fixed: BTreeSet<&str> = outcomes
        .iter()
        .filter_map(|line| line.get("schema_fixes")?.as_str())
        .flat_map(|fields| fields.split(','))
        .collect();
    // D26: outcome lines name the company action, and EMF counts companies by action.
    let actions: BTreeSet<&str> = outcomes
        .iter()
        .filter_map(|line| line.get("company")?.as_str())
        .collect();
    for action in ["created", "found", "updated"] {
        assert!(
            actions.contains(action),
            "no outcome line with company {action}: {actions:?}"
        );
    }
    for action in ["created", "found"] {
        assert!(
            json_lines
                .iter()
                .any(|line| line["Action"] == action && line["Companies"].is_number()),
            "no EMF Companies for {action}"
        );
    }
    for field in ["customer.gender", "event.sessionId", "event.meta"] {
        assert!(
            fixed.contains(field),
            "no outcome line names {field}: {fixed:?}"
        );
    }
    assert!(
        json_lines
            .iter()
            .any(|line| line["Field"] == "customer.gender" && line["SchemaFixes"].is_number()),
        "no EMF SchemaFixes for customer.gender"
    );
    let emf = json_lines
        .iter()
        .filter(|line| line.get("_aws").is_some())
        .count();
    assert!(
        emf >= invocations,
        "{emf} EMF lines for {invocations} invocations"
    );

    let mut secrets = vec![API_KEY.to_string(), WEBHOOK_TOKEN.to_string()];
    secrets.extend(COMPANY_NAMES.iter().map(|name| name.to_string()));
    let personal = personal_data(samples);
    assert!(
        personal.iter().any(|p| p.contains('@')) && personal.iter().any(|p| p.starts_with('+')),
        "no e-mail or phone found in the samples: {personal:?}"
    );
    secrets.extend(personal);
    let leaks: Vec<String> = secrets
        .iter()
        .filter(|secret| output.contains(secret.as_str()))
        .map(|secret| {
            let line = output
                .lines()
                .find(|line| line.contains(secret.as_str()))
                .unwrap_or("");
            format!("{secret:?} in: {}", &line[..line.len().min(400)])
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "the logs show secrets or personal data:\n{}",
        leaks.join("\n")
    );
    println!(
        "logs: {} outcome lines, {emf} EMF lines, {} values checked absent",
        outcomes.len(),
        secrets.len()
    );
}

// ---------------------------------------------------------------------------------------
// Companies (spec section 12)
// ---------------------------------------------------------------------------------------

/// Company names the scenario sends: business data, never in a log.
const COMPANY_NAMES: &[&str] = &[
    "Globex Example Corp",
    "Initech Example",
    "Northwind Example Ltd",
];
const GLOBEX: &str = "Globex Example Corp";
const INITECH_ID: &str = "acct_e2e_9";

fn identify_with_company(user: &str) -> Value {
    json!({"type": "identify", "userId": user, "messageId": format!("e2e-{user}"),
           "traits": {"email": format!("{user}@globex.example.com"), "company": GLOBEX},
           "context": {"library": {"name": "RudderLabs JavaScript SDK", "version": "3.11.7"}}})
}

fn group_of_known_user() -> Value {
    json!({"type": "group", "userId": KNOWN_USER, "groupId": INITECH_ID, "messageId": "e2e-group-9",
           "traits": {"name": "Initech Example", "employees": "35"},
           "context": {"library": {"name": "RudderLabs JavaScript SDK", "version": "3.11.7"}}})
}

struct CompanyScenario<'a> {
    fake: &'a FakeKustomer,
    stub: &'a StubServer,
}

impl CompanyScenario<'_> {
    /// One direct invocation of one event: delivered; the requests it caused.
    async fn deliver(&self, watch: &Watch, event: &Value, what: &str) -> Vec<Request> {
        let before = self.stub.requests().len();
        let data = event.to_string();
        let invocation = invoke(
            watch.port,
            ("--data-ascii", &data),
            FIRST_INVOKE_TIMEOUT,
            watch,
        )
        .await;
        let answer = invocation.answer(what);
        assert_eq!(
            answer,
            json!({"received": 1, "delivered": 1, "requeued": 0, "parked": 0}),
            "{what}"
        );
        self.stub.requests()[before..].to_vec()
    }

    fn company_id(&self, name: &str) -> String {
        let companies = self.fake.companies();
        let found: Vec<_> = companies
            .iter()
            .filter(|c| c.name.as_deref() == Some(name))
            .collect();
        assert_eq!(found.len(), 1, "one company named {name}: {companies:?}");
        found[0].id.clone()
    }

    fn linked(&self, requests: &[Request]) -> String {
        let write = requests
            .iter()
            .rfind(|r| r.method != "GET" && !is_company_path(r.path()))
            .expect("a customer write");
        let body = write.body_json().unwrap_or_default();
        body["company"].as_str().unwrap_or_default().to_string()
    }

    async fn before_restart(&self, watch: &Watch) {
        let companies_before = self.fake.companies().len();
        // A new company name: looked up by name, created, the customer linked to it.
        let requests = self
            .deliver(watch, &identify_with_company("e2e-co-a"), "new company")
            .await;
        let lookups = company_lookups(&requests);
        assert_eq!(
            lookups,
            ["/v1/companies?filter=Globex%20Example%20Corp"],
            "new company"
        );
        assert_eq!(company_creates(&requests), 1, "new company");
        let globex = self.company_id(GLOBEX);
        assert_eq!(self.linked(&requests), globex, "new company: linked");
        // Another user of the same company: from the cache, no company request.
        let requests = self
            .deliver(watch, &identify_with_company("e2e-co-b"), "same company")
            .await;
        assert!(
            company_lookups(&requests).is_empty(),
            "same company: {requests:?}"
        );
        assert_eq!(company_creates(&requests), 0, "same company");
        assert_eq!(self.linked(&requests), globex, "same company: linked");
        // A group for an existing customer: the company created, the customer updated.
        let requests = self.deliver(watch, &group_of_known_user(), "group").await;
        assert_eq!(
            company_lookups(&requests),
            [format!("/v1/companies?externalId={INITECH_ID}")],
            "group"
        );
        assert_eq!(company_creates(&requests), 1, "group");
        let initech = self.company_id("Initech Example");
        let link = requests.last().expect("the group's customer write");
        assert_eq!(
            (link.method.as_str(), link.target.as_str()),
            (
                "PUT",
                format!("/v1/customers/{KNOWN_CUSTOMER}?replace=false").as_str()
            )
        );
        assert_eq!(self.linked(&requests), initech, "group: linked");
        assert_eq!(self.fake.companies().len(), companies_before + 2);
        println!("companies: created and linked, the second user from the cache, a group: ok");
    }

    /// A new container with the same events: the companies are found by look-up, none is
    /// created again.
    async fn after_restart(&self, watch: &Watch) {
        let companies_before = self.fake.companies().len();
        let requests = self
            .deliver(watch, &identify_with_company("e2e-co-a"), "after restart")
            .await;
        assert_eq!(
            company_lookups(&requests),
            ["/v1/companies?filter=Globex%20Example%20Corp"],
            "after restart"
        );
        assert_eq!(company_creates(&requests), 0, "after restart: no duplicate");
        assert_eq!(self.linked(&requests), self.company_id(GLOBEX));
        let requests = self
            .deliver(watch, &group_of_known_user(), "group after restart")
            .await;
        assert_eq!(company_creates(&requests), 0, "group after restart");
        let initech = self.company_id("Initech Example");
        assert!(
            requests
                .iter()
                .any(|r| r.method == "PUT" && r.path() == format!("/v1/companies/{initech}")),
            "group after restart: the company updated"
        );
        assert_eq!(self.linked(&requests), initech);
        assert_eq!(
            self.fake.companies().len(),
            companies_before,
            "no duplicate company"
        );
        println!("companies after a restart: found by look-up, none created again: ok");
    }
}

fn company_lookups(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.method == "GET" && is_company_path(r.path()))
        .map(|r| r.target.clone())
        .collect()
}

fn company_creates(requests: &[Request]) -> usize {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path() == "/v1/companies")
        .count()
}

/// A bad setting stops the init: the binary tells Lambda through the Runtime API's
/// init-error call (with a readable error type and the variable's name) and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_is_reported_through_the_init_error_call() {
    let runtime_api = StubServer::start(|_: &Request| Reply::json(202, &json!({}))).await;
    let address = runtime_api
        .base_url()
        .trim_start_matches("http://")
        .to_string();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &address)
        .env("KUSTOMER_API_KEY", API_KEY)
        .env("LOG_LEVEL", "loud")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the binary exits")
        .expect("the binary runs");
    assert!(!output.status.success());
    let requests = runtime_api.requests();
    let init_error = requests
        .iter()
        .find(|r| r.path() == "/2018-06-01/runtime/init/error")
        .unwrap_or_else(|| panic!("no init error call: {requests:?}"));
    assert_eq!(
        init_error.header("lambda-runtime-function-error-type"),
        Some("InvalidSetting")
    );
    let body: Value = serde_json::from_slice(&init_error.body).unwrap();
    assert_eq!(body["errorType"], "InvalidSetting");
    assert!(body["errorMessage"].as_str().unwrap().contains("LOG_LEVEL"));
    assert!(
        !requests
            .iter()
            .any(|r| r.path().contains("/invocation/next")),
        "it must not serve invocations"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LOG_LEVEL"), "{stderr}");
    assert!(!stderr.contains(API_KEY), "{stderr}");
}
