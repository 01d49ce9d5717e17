//! The conformance runner: drives the real mapping and HTTP client ([`deliver_once`])
//! through every case of `tests/cases/` (and of `$KUSTOMER_CONFORMANCE_DIR` when set)
//! against the loopback Kustomer stub of `tests/support`, exactly as
//! `shared/conformance/README.md` prescribes: each configured host gets its own prefix on
//! the stub (`https://api.prod2.kustomerapp.com` → `http://127.0.0.1:PORT/~/api.prod2.kustomerapp.com`),
//! look-ups follow the case's strict script, writes are answered 201/200 and compared,
//! errors are checked by status and message. Company requests (spec section 12), look-ups
//! and writes alike, are part of the strict script, in order, and answered from it (a
//! create's answer gives the id later writes use); `expect.requests` holds the customer and
//! tracking writes only. The case format and our extensions are described in
//! `tests/cases/README.md`.
//!
//! Run: `cargo test --test conformance -- --nocapture`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use kustomer_mapping::settings::Destination;
use rudder_kustomer::kustomer::{ClientOptions, KustomerClient};
use rudder_kustomer::pipeline::attempt::{deliver_once, Outcome};
use support::{Reply, Request, StubServer};

/// The default (US) endpoint: used when a case sets no `baseEndpoint`.
const US_ENDPOINT: &str = "https://api.kustomerapp.com";
/// How long one case may take before it counts as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// What the stub returns for a successful write.
const WRITE_ANSWER: &str = r#"{"data":{"type":"customer","id":"0123456789abcdef01234567"}}"#;

// ---------------------------------------------------------------------------------------
// Cases

/// One case, checked for shape when loaded.
#[derive(Debug, Clone)]
struct Case {
    /// Where it came from (file path as shown in reports).
    file: String,
    name: String,
    decision: Option<String>,
    config: Value,
    message: Value,
    script: Vec<ScriptEntry>,
    expect: Expect,
    /// Extension: how the stub answers writes (default 201 for POST, 200 for PUT).
    write_response: Option<StubResponse>,
}

#[derive(Debug, Clone)]
struct ScriptEntry {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    /// Company writes: the body they must carry (compared like an expected write).
    body: Option<Value>,
    response: StubResponse,
}

/// A scripted answer.
#[derive(Debug, Clone)]
enum StubResponse {
    /// JSON served compactly in file key order; `null` is an empty body.
    Json { status: u16, body: Value },
    /// Served verbatim as `text/plain`.
    Text { status: u16, text: String },
    /// Extension: `close` or `reset` the connection without answering.
    Fault(String),
}

#[derive(Debug, Clone)]
struct ExpectedWrite {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Value,
}

#[derive(Debug, Clone)]
enum StatusCheck {
    /// Not given (extension, with `class`): not checked.
    Any,
    /// `null` (extension): no HTTP status, i.e. a transport failure.
    None,
    Is(u16),
}

#[derive(Debug, Clone)]
struct ExpectedError {
    status: StatusCheck,
    message: Option<String>,
    prefix: bool,
    /// Extension: `permanent`, `auth`, `throttled` or `transient`.
    class: Option<String>,
}

#[derive(Debug, Clone)]
enum Expect {
    /// The writes that must be sent and, with `write_response`, the failure they end in.
    Outcome {
        writes: Option<Vec<ExpectedWrite>>,
        error: Option<ExpectedError>,
    },
    /// Extension: the settings are rejected (optionally naming the setting); nothing is sent.
    SettingError { setting: Option<String> },
}

fn field<'a>(object: &'a Value, key: &str) -> Result<&'a Value, String> {
    object
        .get(key)
        .ok_or_else(|| format!("missing field `{key}`"))
}

fn string_field(object: &Value, key: &str) -> Result<String, String> {
    field(object, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("field `{key}` must be a string"))
}

fn status_of(value: &Value, what: &str) -> Result<u16, String> {
    value
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| format!("{what}: status must be an integer, got {value}"))
}

fn headers_of(value: Option<&Value>) -> Result<Vec<(String, String)>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let object = value.as_object().ok_or("headers must be an object")?;
    object
        .iter()
        .map(|(name, value)| match value {
            Value::String(text) => Ok((name.clone(), text.clone())),
            other => Err(format!("header {name} must be a string, got {other}")),
        })
        .collect()
}

impl StubResponse {
    fn parse(value: &Value, what: &str) -> Result<StubResponse, String> {
        if let Some(fault) = value.get("fault") {
            return match fault.as_str() {
                Some(kind @ ("close" | "reset")) => Ok(StubResponse::Fault(kind.to_string())),
                _ => Err(format!("{what}: fault must be \"close\" or \"reset\"")),
            };
        }
        let status = status_of(field(value, "status")?, what)?;
        match (value.get("body"), value.get("text")) {
            (Some(_), Some(_)) => Err(format!("{what}: both `body` and `text`")),
            (Some(body), None) => Ok(StubResponse::Json {
                status,
                body: body.clone(),
            }),
            (None, Some(Value::String(text))) => Ok(StubResponse::Text {
                status,
                text: text.clone(),
            }),
            (None, Some(_)) => Err(format!("{what}: `text` must be a string")),
            (None, None) => Err(format!("{what}: needs `body` or `text`")),
        }
    }

    fn reply(&self) -> Reply {
        match self {
            StubResponse::Json { status, body } if body.is_null() => Reply::empty(*status),
            StubResponse::Json { status, body } => Reply::json(*status, body),
            StubResponse::Text { status, text } => Reply::text(*status, text),
            StubResponse::Fault(kind) if kind == "reset" => Reply::reset(),
            StubResponse::Fault(_) => Reply::close(),
        }
    }
}

impl Case {
    fn from_value(file: &str, raw: &Value) -> Result<Case, String> {
        let name = string_field(raw, "name")?;
        let decision = match raw.get("decision") {
            None => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(other) => return Err(format!("`decision` must be a string, got {other}")),
        };
        let config = field(raw, "config")?.clone();
        if !config.is_object() {
            return Err("`config` must be an object".to_string());
        }
        let message = field(raw, "message")?.clone();
        let mut script = Vec::new();
        let entries = field(raw, "kustomer")?
            .as_array()
            .ok_or("`kustomer` must be an array")?;
        for (i, entry) in entries.iter().enumerate() {
            let what = format!("kustomer[{i}]");
            let request = field(entry, "request").map_err(|e| format!("{what}: {e}"))?;
            script.push(ScriptEntry {
                method: string_field(request, "method").map_err(|e| format!("{what}: {e}"))?,
                url: string_field(request, "url").map_err(|e| format!("{what}: {e}"))?,
                headers: headers_of(request.get("headers")).map_err(|e| format!("{what}: {e}"))?,
                body: request.get("body").cloned(),
                response: StubResponse::parse(
                    field(entry, "response").map_err(|e| format!("{what}: {e}"))?,
                    &what,
                )?,
            });
        }
        let write_response = match raw.get("write_response") {
            None => None,
            Some(value) => Some(StubResponse::parse(value, "write_response")?),
        };
        let expect_value = field(raw, "expect")?;
        let expect = if let Some(config_error) = expect_value.get("config_error") {
            Expect::SettingError {
                setting: match config_error.get("setting") {
                    None => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => return Err(format!("config_error.setting: got {other}")),
                },
            }
        } else {
            let writes = match expect_value.get("requests") {
                None => None,
                Some(list) => {
                    let list = list.as_array().ok_or("expect.requests must be an array")?;
                    let mut writes = Vec::new();
                    for (i, write) in list.iter().enumerate() {
                        let what = format!("expect.requests[{i}]");
                        writes.push(ExpectedWrite {
                            method: string_field(write, "method")
                                .map_err(|e| format!("{what}: {e}"))?,
                            url: string_field(write, "url").map_err(|e| format!("{what}: {e}"))?,
                            headers: headers_of(write.get("headers"))
                                .map_err(|e| format!("{what}: {e}"))?,
                            body: field(write, "body")
                                .map_err(|e| format!("{what}: {e}"))?
                                .clone(),
                        });
                    }
                    Some(writes)
                }
            };
            let error = match expect_value.get("error") {
                None => None,
                Some(error) => {
                    let status = match error.get("status") {
                        None => StatusCheck::Any,
                        Some(Value::Null) => StatusCheck::None,
                        Some(value) => StatusCheck::Is(status_of(value, "expect.error")?),
                    };
                    let message = match error.get("message") {
                        None => None,
                        Some(Value::String(m)) => Some(m.clone()),
                        Some(other) => return Err(format!("expect.error.message: got {other}")),
                    };
                    let prefix = match error.get("match") {
                        None => false,
                        Some(v) if v == "prefix" => true,
                        Some(other) => return Err(format!("expect.error.match: got {other}")),
                    };
                    let class = match error.get("class") {
                        None => None,
                        Some(Value::String(c))
                            if ["permanent", "auth", "throttled", "transient"]
                                .contains(&c.as_str()) =>
                        {
                            Some(c.clone())
                        }
                        Some(other) => return Err(format!("expect.error.class: got {other}")),
                    };
                    if matches!(status, StatusCheck::Any) && class.is_none() {
                        return Err("expect.error needs `status` or `class`".to_string());
                    }
                    Some(ExpectedError {
                        status,
                        message,
                        prefix,
                        class,
                    })
                }
            };
            match (&writes, &error) {
                (None, None) => {
                    return Err("expect needs `requests`, `error` or `config_error`".to_string())
                }
                (Some(_), Some(_)) if write_response.is_none() => {
                    return Err(
                        "expect has both `requests` and `error` (only with `write_response`)"
                            .to_string(),
                    )
                }
                _ => {}
            }
            Expect::Outcome { writes, error }
        };
        Ok(Case {
            file: file.to_string(),
            name,
            decision,
            config,
            message,
            script,
            expect,
            write_response,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Hosts

/// Splits `scheme://authority/rest` into (authority, rest), `rest` kept byte for byte.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let (_, after) = url.split_once("://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    (!authority.is_empty()).then_some((authority, rest))
}

/// The configured base mapped onto the stub, path and trailing slashes kept.
/// Only `https` values are mapped: anything else is left for the product to judge.
fn map_base(stub_base: &str, configured: &str) -> Option<String> {
    let scheme = configured.get(..8)?;
    if !scheme.eq_ignore_ascii_case("https://") {
        return None;
    }
    let (authority, rest) = split_url(configured)?;
    Some(format!("{stub_base}/~/{authority}{rest}"))
}

/// The raw request target the stub must see for an expected URL.
fn expected_target(url: &str) -> Result<String, String> {
    let (authority, rest) =
        split_url(url).ok_or_else(|| format!("expected URL {url:?} has no scheme and host"))?;
    Ok(format!("/~/{authority}{rest}"))
}

// ---------------------------------------------------------------------------------------
// Comparisons

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

fn child_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::String(key.to_string()))
    }
}

/// Lists every place where `got` is not the same JSON value as `expected`: key order is
/// ignored, numbers compare by value, `null` differs from a missing key.
fn json_diff(path: &str, expected: &Value, got: &Value, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (key, e_value) in e {
                match g.get(key) {
                    Some(g_value) => json_diff(&child_path(path, key), e_value, g_value, out),
                    None => out.push(format!(
                        "{}: missing (expected {e_value})",
                        child_path(path, key)
                    )),
                }
            }
            for (key, g_value) in g {
                if !e.contains_key(key) {
                    out.push(format!(
                        "{}: unexpected key (got {g_value})",
                        child_path(path, key)
                    ));
                }
            }
        }
        (Value::Array(e), Value::Array(g)) => {
            if e.len() != g.len() {
                out.push(format!(
                    "{path}: expected {} elements, got {}: expected {expected}, got {got}",
                    e.len(),
                    g.len()
                ));
                return;
            }
            for (i, (e_item, g_item)) in e.iter().zip(g).enumerate() {
                json_diff(&format!("{path}[{i}]"), e_item, g_item, out);
            }
        }
        (Value::Number(e), Value::Number(g)) => {
            if !numbers_equal(e, g) {
                out.push(format!("{path}: expected {e}, got {g}"));
            }
        }
        _ => {
            if expected != got {
                out.push(format!("{path}: expected {expected}, got {got}"));
            }
        }
    }
}

/// Each listed header must be present, every occurrence with exactly this value.
fn header_problems(what: &str, request: &Request, listed: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in listed {
        let got = request.header_all(name);
        if got.is_empty() {
            problems.push(format!(
                "{what}: header {name} missing (expected {value:?})"
            ));
        } else if got.iter().any(|g| g != value) {
            problems.push(format!(
                "{what}: header {name}: expected {value:?}, got {got:?}"
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// Running a case

/// What the stub's responder tracks while a case runs.
struct ScriptState {
    script: Vec<(ScriptEntry, Result<String, String>)>,
    /// Script requests received so far (look-ups and company writes).
    gets: usize,
    problems: Vec<String>,
    write_reply: Option<Reply>,
}

/// A request to `.../v1/companies` (spec section 12): scripted, whatever its method.
fn is_company_request(request: &Request) -> bool {
    let path = request.path();
    path.ends_with("/v1/companies") || path.contains("/v1/companies/")
}

/// A request the case's `kustomer` script answers: every look-up, and company writes.
fn is_scripted(request: &Request) -> bool {
    request.method == "GET" || is_company_request(request)
}

/// Traffic that cannot come from the product: other tests on this machine probing a port
/// the stub happens to hold (seen: `GET /moto-api/`). Every product request carries
/// `Authorization` and, since every base is mapped, a `/~/` prefix; a request with neither
/// is answered 404 and left out of the checks.
fn is_foreign(request: &Request) -> bool {
    !request.target.starts_with("/~/") && request.header("authorization").is_none()
}

impl ScriptState {
    fn answer(&mut self, request: &Request) -> Reply {
        if is_foreign(request) {
            return Reply::empty(404);
        }
        match request.method.as_str() {
            _ if is_scripted(request) => self.answer_lookup(request),
            "POST" | "PUT" => match &self.write_reply {
                Some(reply) => reply.clone(),
                None => {
                    let status = if request.method == "POST" { 201 } else { 200 };
                    Reply::text(status, WRITE_ANSWER)
                        .with_header("Content-Type", "application/json")
                }
            },
            other => {
                self.problems.push(format!(
                    "unexpected {other} {} (only GET look-ups and POST/PUT writes exist)",
                    request.target
                ));
                Reply::empty(405)
            }
        }
    }

    fn answer_lookup(&mut self, request: &Request) -> Reply {
        let n = self.gets;
        self.gets += 1;
        let Some((entry, target)) = self.script.get(n) else {
            self.problems.push(format!(
                "unexpected look-up #{}: {} {} (the script has only {} look-up(s))",
                n + 1,
                request.method,
                request.target,
                self.script.len()
            ));
            return Reply::empty(404);
        };
        let what = format!("look-up #{}", n + 1);
        let mut problems = Vec::new();
        if entry.method != request.method {
            problems.push(format!(
                "{what}: script expects {} {}, got {}",
                entry.method, entry.url, request.method
            ));
        }
        match target {
            Ok(target) if *target == request.target => {}
            Ok(target) => problems.push(format!(
                "{what}: wrong URL\n        expected {target}\n        got      {}",
                request.target
            )),
            Err(e) => problems.push(format!("{what}: {e}")),
        }
        problems.extend(header_problems(&what, request, &entry.headers));
        match (&entry.body, request.method.as_str()) {
            // A company write: its body as the script gives it (same JSON value).
            (Some(expected), _) => match serde_json::from_slice::<Value>(&request.body) {
                Ok(body) => {
                    let mut diff = Vec::new();
                    json_diff("$", expected, &body, &mut diff);
                    problems.extend(diff.into_iter().map(|line| format!("{what}: body {line}")));
                }
                Err(e) => problems.push(format!(
                    "{what}: body is not JSON ({e}): {:?}",
                    request.body_text()
                )),
            },
            (None, "GET") if !request.body.is_empty() => problems.push(format!(
                "{what}: a look-up has no body, got {:?}",
                request.body_text()
            )),
            (None, "GET") => {}
            (None, method) => problems.push(format!(
                "{what}: the script gives no body for {method} {}",
                entry.url
            )),
        }
        if problems.is_empty() {
            entry.response.reply()
        } else {
            self.problems.extend(problems);
            Reply::empty(404)
        }
    }
}

// Field by field, so that options added to the client later keep their defaults here.
#[allow(clippy::field_reassign_with_default)]
fn new_client() -> Result<KustomerClient, String> {
    let mut options = ClientOptions::default();
    options.connect_timeout = Duration::from_secs(5);
    options.request_timeout = Duration::from_secs(10);
    KustomerClient::new(options).map_err(|e| format!("client: {e}"))
}

/// Runs one case against a fresh stub and a fresh client; `Err` lists what differed.
async fn run_case(case: &Case) -> Result<(), Vec<String>> {
    let state = Arc::new(Mutex::new(ScriptState {
        script: case
            .script
            .iter()
            .map(|entry| (entry.clone(), expected_target(&entry.url)))
            .collect(),
        gets: 0,
        problems: Vec::new(),
        write_reply: case.write_response.as_ref().map(StubResponse::reply),
    }));
    let responder_state = Arc::clone(&state);
    let stub =
        StubServer::start(move |request: &Request| responder_state.lock().unwrap().answer(request))
            .await;

    let mut config = case.config.clone();
    if let Some(Value::String(base)) = config.get("baseEndpoint") {
        if let Some(mapped) = map_base(&stub.base_url(), base) {
            config["baseEndpoint"] = Value::String(mapped);
        }
    }
    // The cases pin down sections 1-10: the schema fit (section 11, on by default in the
    // product) runs only when the case sets it (shared/conformance/README.md). Companies
    // (section 12) act only with it, so they too are off unless the case sets the fit.
    if let Value::Object(settings) = &mut config {
        settings
            .entry("fitToKustomerSchema")
            .or_insert(Value::Bool(false));
    }
    let default_us = map_base(&stub.base_url(), US_ENDPOINT).expect("US endpoint maps");
    let destination = Destination::from_json_with_default(&config, &default_us);

    let mut problems = Vec::new();
    let writes = match (&case.expect, destination) {
        (Expect::SettingError { setting }, Err(err)) => {
            if let Some(setting) = setting {
                if err.setting != *setting {
                    problems.push(format!(
                        "configuration error names setting {:?}, expected {setting:?} ({err})",
                        err.setting
                    ));
                }
            }
            if stub.requests().iter().any(|r| !is_foreign(r)) {
                problems.push("requests were sent with an invalid configuration".to_string());
            }
            return finish(problems);
        }
        (Expect::SettingError { .. }, Ok(_)) => {
            problems.push("configuration accepted, expected a configuration error".to_string());
            return finish(problems);
        }
        (Expect::Outcome { .. }, Err(err)) => {
            problems.push(format!("configuration rejected: {err}"));
            return finish(problems);
        }
        (Expect::Outcome { writes, error }, Ok(destination)) => {
            let client = match new_client() {
                Ok(client) => client,
                Err(e) => return Err(vec![e]),
            };
            let outcome = tokio::time::timeout(
                CASE_TIMEOUT,
                deliver_once(&client, &destination, &case.message),
            )
            .await;
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(_) => return Err(vec![format!("no outcome within {CASE_TIMEOUT:?}")]),
            };
            check_outcome(&outcome, error.as_ref(), &stub, &mut problems);
            writes.clone()
        }
    };

    // Look-ups left unused.
    {
        let state = state.lock().unwrap();
        problems.extend(state.problems.iter().cloned());
        for (i, (entry, _)) in state.script.iter().enumerate().skip(state.gets) {
            problems.push(format!(
                "look-up #{} never requested: {} {}",
                i + 1,
                entry.method,
                entry.url
            ));
        }
    }

    // Writes: the customer and tracking writes (company writes are in the script).
    let sent: Vec<Request> = stub
        .requests()
        .into_iter()
        .filter(|r| !is_foreign(r) && !is_scripted(r) && (r.method == "POST" || r.method == "PUT"))
        .collect();
    // With an error and no `requests`, no write may be sent.
    let expected_writes = writes.unwrap_or_default();
    problems.extend(write_problems(&expected_writes, &sent));
    stub.shutdown();
    finish(problems)
}

fn finish(problems: Vec<String>) -> Result<(), Vec<String>> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_outcome(
    outcome: &Outcome,
    error: Option<&ExpectedError>,
    stub: &StubServer,
    problems: &mut Vec<String>,
) {
    match (outcome, error) {
        (Outcome::Delivered(delivered), None) => {
            let received: Vec<Request> = stub
                .requests()
                .into_iter()
                .filter(|r| !is_foreign(r))
                .collect();
            if delivered.requests as usize != received.len() {
                problems.push(format!(
                    "outcome counts {} request(s), the stub received {}",
                    delivered.requests,
                    received.len()
                ));
            }
            if let Some(last) = received.last().filter(|last| !is_scripted(last)) {
                let status = if last.method == "POST" { 201 } else { 200 };
                if delivered.write_status != status {
                    problems.push(format!(
                        "outcome write_status {}, the stub answered {status}",
                        delivered.write_status
                    ));
                }
            }
        }
        (Outcome::Delivered(delivered), Some(error)) => problems.push(format!(
            "delivered (write status {}), expected error {}",
            delivered.write_status,
            describe_error(error)
        )),
        (Outcome::Failed(failure), None) => problems.push(format!(
            "failed, expected delivery: class {}, status {:?}, message {:?}",
            failure.class.as_str(),
            failure.status,
            failure.message
        )),
        (Outcome::Failed(failure), Some(error)) => {
            let got = format!(
                "class {}, status {:?}, message {:?}",
                failure.class.as_str(),
                failure.status,
                failure.message
            );
            let status_ok = match error.status {
                StatusCheck::Any => true,
                StatusCheck::None => failure.status.is_none(),
                StatusCheck::Is(s) => failure.status == Some(s),
            };
            let message_ok = match &error.message {
                None => true,
                Some(m) if error.prefix => failure.message.starts_with(m.as_str()),
                Some(m) => failure.message == *m,
            };
            let class_ok = error
                .class
                .as_ref()
                .is_none_or(|c| c == failure.class.as_str());
            if !(status_ok && message_ok && class_ok) {
                problems.push(format!(
                    "wrong error\n        expected {}\n        got      {got}",
                    describe_error(error)
                ));
            }
        }
    }
}

fn describe_error(error: &ExpectedError) -> String {
    let mut parts = Vec::new();
    if let Some(class) = &error.class {
        parts.push(format!("class {class}"));
    }
    match error.status {
        StatusCheck::Any => {}
        StatusCheck::None => parts.push("no status (transport failure)".to_string()),
        StatusCheck::Is(s) => parts.push(format!("status {s}")),
    }
    if let Some(message) = &error.message {
        let how = if error.prefix { "starting with " } else { "" };
        parts.push(format!("message {how}{message:?}"));
    }
    parts.join(", ")
}

fn write_problems(expected: &[ExpectedWrite], sent: &[Request]) -> Vec<String> {
    let mut problems = Vec::new();
    if expected.len() != sent.len() {
        let listed: Vec<String> = sent
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect();
        problems.push(format!(
            "expected {} write(s), the stub received {}: {listed:?}",
            expected.len(),
            sent.len()
        ));
    }
    for (i, (want, got)) in expected.iter().zip(sent).enumerate() {
        let what = format!("write #{}", i + 1);
        if want.method != got.method {
            problems.push(format!(
                "{what}: method expected {}, got {}",
                want.method, got.method
            ));
        }
        match expected_target(&want.url) {
            Ok(target) if target == got.target => {}
            Ok(target) => problems.push(format!(
                "{what}: wrong URL\n        expected {target}\n        got      {}",
                got.target
            )),
            Err(e) => problems.push(format!("{what}: {e}")),
        }
        problems.extend(header_problems(&what, got, &want.headers));
        match serde_json::from_slice::<Value>(&got.body) {
            Ok(body) => {
                let mut diff = Vec::new();
                json_diff("$", &want.body, &body, &mut diff);
                for line in diff {
                    problems.push(format!("{what}: body {line}"));
                }
            }
            Err(e) => problems.push(format!(
                "{what}: body is not JSON ({e}): {:?}",
                got.body_text()
            )),
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// Folders

fn own_cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// Loads every `*.json` of a folder, sorted by file name. A case that cannot be read is
/// returned as an error with its label.
/// A loaded case, or (file label, why it cannot be read).
type Loaded = Result<Case, (String, String)>;

fn load_dir(dir: &Path, label: &str) -> Result<Vec<Loaded>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read case folder {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!(
            "case folder {} holds no *.json case",
            dir.display()
        ));
    }
    Ok(paths
        .iter()
        .map(|path| {
            let file_name = path.file_name().unwrap_or_default().to_string_lossy();
            let shown = format!("{label}/{file_name}");
            std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
                .and_then(|raw| Case::from_value(&shown, &raw))
                .map_err(|e| (shown.clone(), format!("unreadable case: {e}")))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let mut folders = vec![(own_cases_dir(), "tests/cases".to_string())];
    if let Ok(extra) = std::env::var("KUSTOMER_CONFORMANCE_DIR") {
        if !extra.is_empty() {
            folders.push((
                PathBuf::from(&extra),
                extra.trim_end_matches('/').to_string(),
            ));
        }
    }
    let mut passed = 0usize;
    let mut failures: Vec<String> = Vec::new();
    for (dir, label) in &folders {
        let cases = match load_dir(dir, label) {
            Ok(cases) => cases,
            Err(problem) => {
                failures.push(format!("FOLDER {label}: {problem}"));
                continue;
            }
        };
        for case in cases {
            match case {
                Err((file, problem)) => failures.push(format!("FAIL {file}\n    - {problem}")),
                Ok(case) => match run_case(&case).await {
                    Ok(()) => passed += 1,
                    Err(problems) => failures.push(report(&case, &problems)),
                },
            }
        }
    }
    println!("conformance: {passed} passed, {} failed", failures.len());
    if !failures.is_empty() {
        panic!(
            "{} conformance case(s) failed:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

fn report(case: &Case, problems: &[String]) -> String {
    let decision = case
        .decision
        .as_ref()
        .map(|d| format!(" [decision {d}]"))
        .unwrap_or_default();
    let mut text = format!("FAIL {}{decision}\n    {}", case.file, case.name);
    for problem in problems {
        text.push_str(&format!("\n    - {problem}"));
    }
    text
}

// ---------------------------------------------------------------------------------------
// Self-tests of the runner: cases that break the script must fail, for the right reason.

fn lookup(url: &str, status: u16) -> Value {
    json!({
        "request": {"method": "GET", "url": url, "headers": {"Authorization": "Bearer k-self"}},
        "response": {"status": status, "body": null}
    })
}

fn write(method: &str, url: &str, body: Value) -> Value {
    json!({
        "method": method,
        "url": url,
        "headers": {"Content-Type": "application/json", "Authorization": "Bearer k-self"},
        "body": body
    })
}

fn identify_event() -> Value {
    json!({
        "type": "identify",
        "userId": "self-7",
        "traits": {"email": "self@runner.test"}
    })
}

fn identify_body() -> Value {
    json!({
        "externalId": "self-7",
        "emails": [{"type": "home", "email": "self@runner.test"}]
    })
}

const EMAIL_URL: &str = "https://api.kustomerapp.com/v1/customers/email=self@runner.test";
const UID_URL: &str = "https://api.kustomerapp.com/v1/customers/externalId=self-7";
const CREATE_URL: &str = "https://api.kustomerapp.com/v1/customers";

fn self_case(kustomer: Value, expect: Value) -> Case {
    Case::from_value(
        "self-test",
        &json!({
            "name": "runner self-test",
            "config": {"apiKey": "k-self"},
            "message": identify_event(),
            "kustomer": kustomer,
            "expect": expect
        }),
    )
    .expect("self-test case is well-formed")
}

async fn assert_fails_with(case: Case, needle: &str) {
    match run_case(&case).await {
        Ok(()) => panic!("the runner passed a broken case; expected a problem with {needle:?}"),
        Err(problems) => assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem containing {needle:?}, got {problems:#?}"
        ),
    }
}

/// A self-test case whose stub answers the look-ups `lookups`, expecting the one create
/// of the well-formed case, fails with `needle`.
async fn assert_lookups_fail_with(lookups: Value, needle: &str) {
    let expect = json!({"requests": [write("POST", CREATE_URL, identify_body())]});
    assert_fails_with(self_case(lookups, expect), needle).await;
}

/// The control: the well-formed version of the cases below passes.
#[tokio::test]
async fn runner_passes_a_correct_case() {
    let case = self_case(
        json!([lookup(EMAIL_URL, 404), lookup(UID_URL, 404)]),
        json!({"requests": [write("POST", CREATE_URL, identify_body())]}),
    );
    assert_eq!(run_case(&case).await, Ok(()));
}

/// Section 11 runs only when the case sets `fitToKustomerSchema`: absent means off.
#[tokio::test]
async fn runner_fits_bodies_only_when_the_case_says_so() {
    let case = |config: Value, gender: &str| {
        let mut event = identify_event();
        event["traits"]["gender"] = json!("male");
        let mut body = identify_body();
        body["gender"] = json!(gender);
        Case::from_value(
            "self-test",
            &json!({
                "name": "runner self-test: schema fit",
                "config": config,
                "message": event,
                "kustomer": [lookup(EMAIL_URL, 404), lookup(UID_URL, 404)],
                "expect": {"requests": [write("POST", CREATE_URL, body)]}
            }),
        )
        .expect("self-test case is well-formed")
    };
    let unset = json!({"apiKey": "k-self"});
    assert_eq!(run_case(&case(unset.clone(), "male")).await, Ok(()));
    assert_fails_with(case(unset, "m"), "").await;
    let on = json!({"apiKey": "k-self", "fitToKustomerSchema": "true"});
    assert_eq!(run_case(&case(on, "m")).await, Ok(()));
    let off = json!({"apiKey": "k-self", "fitToKustomerSchema": false});
    assert_eq!(run_case(&case(off, "male")).await, Ok(()));
}

/// Company requests (section 12) follow the script too, writes included, and a create's
/// scripted answer gives the id the customer write carries.
fn company_case(create_body: Value, customer_company: &str) -> Case {
    let mut event = identify_event();
    event["traits"]["company"] = json!(" Runner Co ");
    let mut body = identify_body();
    body["company"] = json!(customer_company);
    Case::from_value(
        "self-test",
        &json!({
            "name": "runner self-test: company created",
            "config": {"apiKey": "k-self", "fitToKustomerSchema": true},
            "message": event,
            "kustomer": [
                lookup(EMAIL_URL, 404),
                lookup(UID_URL, 404),
                {
                    "request": {"method": "GET", "url": "https://api.kustomerapp.com/v1/companies?filter=Runner%20Co"},
                    "response": {"status": 200, "body": {"data": [{"id": "5f3c0ffee0000000000c0a99", "attributes": {"name": "Runner Co Two"}}]}}
                },
                {
                    "request": {"method": "POST", "url": "https://api.kustomerapp.com/v1/companies",
                        "headers": {"Authorization": "Bearer k-self"}, "body": create_body},
                    "response": {"status": 201, "body": {"data": {"type": "company", "id": "5f3c0ffee0000000000c0a01"}}}
                }
            ],
            "expect": {"requests": [write("POST", CREATE_URL, body)]}
        }),
    )
    .expect("self-test case is well-formed")
}

#[tokio::test]
async fn runner_scripts_company_lookups_and_writes() {
    let case = company_case(json!({"name": "Runner Co"}), "5f3c0ffee0000000000c0a01");
    assert_eq!(run_case(&case).await, Ok(()));
    let wrong_body = company_case(
        json!({"name": "Runner Co", "externalId": "x"}),
        "5f3c0ffee0000000000c0a01",
    );
    assert_fails_with(wrong_body, "look-up #4: body $.externalId: missing").await;
    let wrong_id = company_case(json!({"name": "Runner Co"}), "5f3c0ffee0000000000c0a99");
    assert_fails_with(wrong_id, "write #1: body $.company").await;
}

#[tokio::test]
async fn runner_fails_an_extra_lookup() {
    assert_lookups_fail_with(json!([lookup(EMAIL_URL, 404)]), "unexpected look-up #2").await;
}

#[tokio::test]
async fn runner_fails_a_different_lookup_url() {
    let other = "https://api.kustomerapp.com/v1/customers/email=other@runner.test";
    let lookups = json!([lookup(other, 404), lookup(UID_URL, 404)]);
    assert_lookups_fail_with(lookups, "look-up #1: wrong URL").await;
}

#[tokio::test]
async fn runner_fails_a_lookup_on_another_host() {
    let other_host = "https://api.prod2.kustomerapp.com/v1/customers/email=self@runner.test";
    let lookups = json!([lookup(other_host, 404), lookup(UID_URL, 404)]);
    assert_lookups_fail_with(lookups, "look-up #1: wrong URL").await;
}

#[tokio::test]
async fn runner_fails_an_unused_lookup() {
    let never = "https://api.kustomerapp.com/v1/customers/externalId=never";
    let lookups = json!([
        lookup(EMAIL_URL, 404),
        lookup(UID_URL, 404),
        lookup(never, 404)
    ]);
    assert_lookups_fail_with(lookups, "look-up #3 never requested").await;
}

#[tokio::test]
async fn runner_fails_a_missing_write() {
    let case = self_case(
        json!([lookup(EMAIL_URL, 404), lookup(UID_URL, 404)]),
        json!({"requests": [
            write("POST", CREATE_URL, identify_body()),
            write("POST", CREATE_URL, identify_body())
        ]}),
    );
    assert_fails_with(case, "expected 2 write(s), the stub received 1").await;
}

#[tokio::test]
async fn runner_fails_an_extra_write() {
    let case = self_case(
        json!([lookup(EMAIL_URL, 404), lookup(UID_URL, 404)]),
        json!({"requests": []}),
    );
    assert_fails_with(case, "expected 0 write(s), the stub received 1").await;
}

#[tokio::test]
async fn runner_fails_a_wrong_body() {
    let mut body = identify_body();
    body["externalId"] = json!("self-8");
    let case = self_case(
        json!([lookup(EMAIL_URL, 404), lookup(UID_URL, 404)]),
        json!({"requests": [write("POST", CREATE_URL, body)]}),
    );
    assert_fails_with(case, "write #1: body $.externalId: expected \"self-8\"").await;
}

#[tokio::test]
async fn runner_fails_a_wrong_write_url() {
    let case = self_case(
        json!([lookup(EMAIL_URL, 404), lookup(UID_URL, 404)]),
        json!({"requests": [write(
            "POST",
            "https://api.prod2.kustomerapp.com/v1/customers",
            identify_body()
        )]}),
    );
    assert_fails_with(case, "write #1: wrong URL").await;
}

#[tokio::test]
async fn runner_fails_a_wrong_error_message() {
    let case = Case::from_value(
        "self-test",
        &json!({
            "name": "runner self-test: error",
            "config": {"apiKey": "k-self"},
            "message": {"type": "Batch", "userId": "self-7"},
            "kustomer": [],
            "expect": {"error": {"status": 400, "message": "Event type batch is not supported"}}
        }),
    )
    .unwrap();
    assert_fails_with(case, "wrong error").await;
}

#[tokio::test]
async fn runner_fails_an_error_when_a_write_was_expected() {
    let case = self_case(
        json!([lookup(EMAIL_URL, 500), lookup(UID_URL, 404)]),
        json!({"requests": [write("POST", CREATE_URL, identify_body())]}),
    );
    assert_fails_with(case, "failed, expected delivery").await;
}

#[test]
fn json_comparison_rules() {
    let diff = |e: Value, g: Value| {
        let mut out = Vec::new();
        json_diff("$", &e, &g, &mut out);
        out
    };
    assert!(diff(
        json!({"a": 1, "b": [1, 2]}),
        json!({"b": [1.0, 2], "a": 1.0})
    )
    .is_empty());
    assert_eq!(
        diff(json!({"a": null}), json!({})),
        ["$.a: missing (expected null)"]
    );
    assert_eq!(
        diff(json!({}), json!({"a": null})),
        ["$.a: unexpected key (got null)"]
    );
    assert_eq!(
        diff(json!({"a": 0}), json!({"a": "0"})),
        ["$.a: expected 0, got \"0\""]
    );
    assert_eq!(
        diff(json!({"x": {"a.b": ["s"]}}), json!({"x": {"a.b": "s"}})),
        ["$.x[\"a.b\"]: expected [\"s\"], got \"s\""]
    );
    assert_eq!(diff(json!([1, 2]), json!([1])).len(), 1);
}

#[test]
fn hosts_map_onto_prefixes() {
    let stub = "http://127.0.0.1:9";
    assert_eq!(
        map_base(stub, "https://api.prod2.kustomerapp.com").unwrap(),
        "http://127.0.0.1:9/~/api.prod2.kustomerapp.com"
    );
    assert_eq!(
        map_base(stub, "https://gw.example.net/k//").unwrap(),
        "http://127.0.0.1:9/~/gw.example.net/k//"
    );
    assert_eq!(map_base(stub, "http://api.kustomerapp.com"), None);
    assert_eq!(
        expected_target("https://gw.example.net/k/v1/customers/%2E%2E?replace=false").unwrap(),
        "/~/gw.example.net/k/v1/customers/%2E%2E?replace=false"
    );
}

#[test]
fn foreign_traffic_is_recognised() {
    let request = |target: &str, auth: bool| Request {
        index: 0,
        connection: 1,
        method: "GET".to_string(),
        target: target.to_string(),
        version: "HTTP/1.1".to_string(),
        headers: if auth {
            vec![("authorization".to_string(), "Bearer x".to_string())]
        } else {
            Vec::new()
        },
        body: Vec::new(),
    };
    assert!(is_foreign(&request("/moto-api/", false)));
    assert!(!is_foreign(&request("/moto-api/", true)));
    assert!(!is_foreign(&request(
        "/~/api.kustomerapp.com/v1/customers",
        false
    )));
    assert!(!is_foreign(&request("/v1/customers", true)));
}

#[test]
fn case_folder_rules() {
    assert!(load_dir(Path::new("/nonexistent/kustomer-cases"), "x").is_err());
}

// ---------------------------------------------------------------------------------------
// Self-tests of the stub (tests/support), with a raw TCP client.

#[tokio::test]
async fn stub_keeps_raw_targets_and_serves_keep_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stub = StubServer::start(support::replies_in_order(
        vec![
            Reply::json(200, &json!({"b": 1, "a": 2})).with_header("Retry-After", "3"),
            Reply::empty(204),
        ],
        Reply::empty(404),
    ))
    .await;
    let mut conn = tokio::net::TcpStream::connect(stub.addr()).await.unwrap();
    conn.write_all(
        b"GET /~/h/v1/customers/%2E%2E/../x%2Fy?replace=false HTTP/1.1\r\nHost: h\r\nAUTHORIZATION: Bearer z\r\n\r\n\
          POST /w HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n\
          PUT /p HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Retry-After: 3\r\n"), "{answer}");
    assert!(
        answer.contains("{\"b\":1,\"a\":2}HTTP/1.1 204 No Content\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        "{answer}"
    );
    let requests = stub.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].target,
        "/~/h/v1/customers/%2E%2E/../x%2Fy?replace=false"
    );
    assert_eq!(requests[0].header("authorization"), Some("Bearer z"));
    assert_eq!(requests[1].body_json(), Some(json!({"a": 1})));
    assert_eq!(requests[2].body, b"{}");
    assert!(requests.iter().all(|r| r.connection == 1));
    assert_eq!(stub.connections(), 1);
}

#[tokio::test]
async fn stub_injects_close_and_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stub = StubServer::start(|request: &Request| {
        if request.target == "/reset" {
            Reply::reset()
        } else {
            Reply::close()
        }
    })
    .await;
    for (target, reset) in [("/close", false), ("/reset", true)] {
        let mut conn = tokio::net::TcpStream::connect(stub.addr()).await.unwrap();
        conn.write_all(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        let result = conn.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "{target}: {answer:?}");
        if reset {
            let err = result.expect_err("a reset connection fails the read");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        } else {
            assert_eq!(result.unwrap(), 0);
        }
    }
    assert_eq!(stub.requests().len(), 2);
}
