//! A scriptable stand-in for the Kustomer API: a small HTTP/1.1 server on loopback.
//!
//! [`StubServer::start`] binds `127.0.0.1` on a random port and serves every connection
//! with a hand-written HTTP/1.1 parser (request line, headers, a `Content-Length` or
//! chunked body; keep-alive, so one connection may carry many requests). Nothing is
//! decoded or normalised: each [`Request`] keeps the raw request target exactly as the
//! client sent it (`/~/api.kustomerapp.com/v1/customers/email=a%40b`), the method, the
//! headers in order (looked up case-insensitively with [`Request::header`]) and the body
//! bytes. Every request is recorded before it is answered ([`StubServer::requests`]).
//!
//! What the stub answers is decided per request by a responder, a function
//! `Fn(&Request) -> Reply` (see [`replies_in_order`] for a fixed queue of replies). A
//! [`Reply`] sets the status, extra headers (`Retry-After`, `x-ratelimit-*`, ...), the body
//! and a delay before answering, or instead injects a fault: close the connection without
//! answering ([`Reply::close`]), reset it with an RST ([`Reply::reset`]), write raw bytes
//! and close ([`Reply::raw`], for malformed or truncated answers), or never answer
//! ([`Reply::hang`], for timeouts). `Content-Length` is added unless the reply sets one.
//!
//! ```ignore
//! let stub = StubServer::start(|req: &Request| match req.method.as_str() {
//!     "GET" => Reply::empty(404),
//!     _ => Reply::json(201, &serde_json::json!({"data": {"id": "c1"}})),
//! })
//! .await;
//! let base = stub.base_url(); // "http://127.0.0.1:PORT"
//! // ... drive the product ...
//! assert_eq!(stub.requests()[0].target, "/v1/customers/email=a@b.test");
//! stub.shutdown();
//! ```
#![allow(dead_code)]

pub mod fake;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Largest request head (request line + headers) the stub accepts.
const MAX_HEAD: usize = 64 * 1024;

/// One request as received, byte for byte.
#[derive(Debug, Clone)]
pub struct Request {
    /// Position in the order of arrival over the whole server, from 0.
    pub index: usize,
    /// Which connection carried it (1 for the first accepted connection, ...).
    pub connection: u64,
    pub method: String,
    /// The raw request target: no percent-decoding, no dot-segment removal.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Header names and values in the order received (values trimmed of spaces/tabs).
    pub headers: Vec<(String, String)>,
    /// The body after de-chunking; empty when none.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the headers with this name (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, `None` when it is not valid JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The target's path (before `?`), still raw.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What to do instead of (or how to) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without answering (FIN).
    Close,
    /// Reset the connection (`SO_LINGER` 0, then drop: RST).
    Reset,
    /// Write these bytes verbatim, then close (malformed or truncated responses).
    Raw(Vec<u8>),
    /// Never answer; the connection stays open until the client gives up or the stub shuts down.
    Hang,
}

/// The stub's answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Reason phrase; a standard one when `None`.
    pub reason: Option<String>,
    /// Extra headers, written in this order. `Content-Length` is added unless present here.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (or before the fault).
    pub delay: Duration,
    /// Close the connection after this answer (sends `Connection: close`).
    pub close_after: bool,
    /// When set, no normal answer is sent.
    pub fault: Option<Fault>,
}

impl Reply {
    /// A reply with this status, no body.
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            reason: None,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            close_after: false,
            fault: None,
        }
    }

    /// A compact JSON body (object keys in their order), `Content-Type: application/json`.
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::empty(status)
            .with_header("Content-Type", "application/json")
            .with_body(body.to_string())
    }

    /// A text body served verbatim, `Content-Type: text/plain`.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::empty(status)
            .with_header("Content-Type", "text/plain")
            .with_body(body)
    }

    fn fault(fault: Fault) -> Reply {
        Reply {
            fault: Some(fault),
            ..Reply::empty(0)
        }
    }

    /// Close the connection without answering.
    pub fn close() -> Reply {
        Reply::fault(Fault::Close)
    }

    /// Reset the connection without answering.
    pub fn reset() -> Reply {
        Reply::fault(Fault::Reset)
    }

    /// Write these bytes as the whole answer, then close.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::fault(Fault::Raw(bytes.into()))
    }

    /// Never answer.
    pub fn hang() -> Reply {
        Reply::fault(Fault::Hang)
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn with_reason(mut self, reason: &str) -> Reply {
        self.reason = Some(reason.to_string());
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn closing(mut self) -> Reply {
        self.close_after = true;
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The bytes of a normal answer (also used by other loopback servers of the tests,
    /// e.g. the fleet test's Runtime API emulator).
    pub fn encode(&self) -> Vec<u8> {
        let reason = self
            .reason
            .clone()
            .unwrap_or_else(|| reason_phrase(self.status).to_string());
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        // 1xx, 204 and 304 answers carry neither a body nor a Content-Length.
        let bodiless = self.status < 200 || self.status == 204 || self.status == 304;
        if !bodiless && !self.has_header("content-length") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if self.close_after && !self.has_header("connection") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if !bodiless {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// The function deciding each answer.
pub type Responder = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A responder that answers with `replies` in order, then with `fallback` for ever.
pub fn replies_in_order(
    replies: Vec<Reply>,
    fallback: Reply,
) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let queue = Mutex::new(VecDeque::from(replies));
    move |_req: &Request| {
        queue
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| fallback.clone())
    }
}

struct Shared {
    responder: Responder,
    requests: Mutex<Vec<Request>>,
    connections: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// The running stub. Dropping it (or [`StubServer::shutdown`]) stops it.
pub struct StubServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl StubServer {
    /// Binds `127.0.0.1:0` and starts serving with `responder`.
    pub async fn start<F>(responder: F) -> StubServer
    where
        F: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("stub: bind 127.0.0.1");
        let addr = listener.local_addr().expect("stub: local address");
        let shared = Arc::new(Shared {
            responder: Arc::new(responder),
            requests: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let id = accept_shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let conn_shared = Arc::clone(&accept_shared);
                let task = tokio::spawn(serve_connection(stream, id, conn_shared));
                let mut tasks = accept_shared.tasks.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.push(task.abort_handle());
            }
        });
        shared.tasks.lock().unwrap().push(accept.abort_handle());
        StubServer { addr, shared }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops every open connection.
    pub fn shutdown(&self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves requests on one connection until it closes or a reply ends it.
async fn serve_connection(mut stream: TcpStream, connection: u64, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let parsed = match read_request(&mut stream, &mut buffer).await {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return, // clean close between requests
            Err(problem) => {
                let reply = Reply::text(400, &problem).closing();
                let _ = stream.write_all(&reply.encode()).await;
                return;
            }
        };
        let keep_alive = wants_keep_alive(&parsed);
        let request = {
            let mut requests = shared.requests.lock().unwrap();
            let request = Request {
                index: requests.len(),
                connection,
                ..parsed
            };
            requests.push(request.clone());
            request
        };
        let reply = (shared.responder)(&request);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        match &reply.fault {
            Some(Fault::Close) => {
                let _ = stream.shutdown().await;
                return;
            }
            Some(Fault::Reset) => {
                let _ = stream.set_zero_linger();
                drop(stream);
                return;
            }
            Some(Fault::Raw(bytes)) => {
                let _ = stream.write_all(bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Some(Fault::Hang) => {
                // Wait until the client closes (or the stub is shut down).
                let mut sink = [0u8; 1024];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
            None => {}
        }
        if stream.write_all(&reply.encode()).await.is_err() {
            return;
        }
        let _ = stream.flush().await;
        if reply.close_after || !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

fn wants_keep_alive(request: &Request) -> bool {
    let connection = request
        .header("connection")
        .map(|v| v.to_ascii_lowercase())
        .unwrap_or_default();
    if request.version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    }
}

/// Reads one request. `Ok(None)`: the client closed before sending anything. Public for
/// the other loopback servers of the tests (the fleet test's Runtime API emulator).
pub async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<Option<Request>, String> {
    // The head.
    let head_end = loop {
        if let Some(pos) = find(buffer, b"\r\n\r\n") {
            break pos;
        }
        if buffer.len() > MAX_HEAD {
            return Err("request head too large".to_string());
        }
        if fill(stream, buffer).await? == 0 {
            if buffer.is_empty() {
                return Ok(None);
            }
            return Err("connection closed inside the request head".to_string());
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    buffer.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || target.is_empty() {
        return Err(format!("malformed request line {request_line:?}"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header line {line:?}"));
        };
        headers.push((
            name.to_string(),
            value.trim_matches(|c| c == ' ' || c == '\t').to_string(),
        ));
    }
    let mut request = Request {
        index: 0,
        connection: 0,
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body: Vec::new(),
    };

    // The body.
    let chunked = request
        .header_all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked(stream, buffer).await?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad Content-Length {length:?}"))?;
        while buffer.len() < length {
            if fill(stream, buffer).await? == 0 {
                return Err("connection closed inside the body".to_string());
            }
        }
        request.body = buffer.drain(..length).collect();
    }
    Ok(Some(request))
}

async fn read_chunked(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buffer, "a chunk size").await?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(stream, buffer, "the trailers").await?.is_empty() {}
            return Ok(body);
        }
        while buffer.len() < size + 2 {
            if fill(stream, buffer).await? == 0 {
                return Err("connection closed inside a chunk".to_string());
            }
        }
        body.extend(buffer.drain(..size));
        buffer.drain(..2);
    }
}

/// Takes one CRLF-terminated line off the buffer (reading more as needed), without its CRLF.
async fn read_line(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    inside: &str,
) -> Result<String, String> {
    let end = loop {
        if let Some(pos) = find(buffer, b"\r\n") {
            break pos;
        }
        if fill(stream, buffer).await? == 0 {
            return Err(format!("connection closed inside {inside}"));
        }
    };
    let line = String::from_utf8_lossy(&buffer[..end]).into_owned();
    buffer.drain(..end + 2);
    Ok(line)
}

async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 8192];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read error: {e}"))?;
    buffer.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The key tests account an event under: its userId, else its anonymousId, as text.
pub fn user_of(event: &serde_json::Value) -> String {
    match event.get("userId").or_else(|| event.get("anonymousId")) {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "(no user)".into(),
    }
}

/// The user a write request is for: `identity.externalId` (tracking) or `externalId`
/// (customer create/update), as text. A company write (spec 12) is for no user: its
/// `externalId` is the company's.
pub fn write_user(request: &Request) -> Option<String> {
    if is_company_path(request.path()) {
        return None;
    }
    let body = request.body_json()?;
    let id = body
        .pointer("/identity/externalId")
        .or_else(|| body.get("externalId"))?;
    Some(match id {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

/// `/v1/companies`, `/v1/companies?...` or `/v1/companies/<id>` (spec section 12).
pub fn is_company_path(path: &str) -> bool {
    path == "/v1/companies"
        || path.starts_with("/v1/companies/")
        || path.starts_with("/v1/companies?")
}

// ---------------------------------------------------------------------------------------
// Logs: everything the library logs, captured for "never in any log" checks.
// ---------------------------------------------------------------------------------------

static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

/// The process-wide log buffer. Global (tasks run on any worker thread), so a test sees
/// the lines of the tests running beside it too: enough for "never in any log".
pub struct Logs(Arc<Mutex<Vec<u8>>>);

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

/// Installs the global subscriber writing into the buffer (once per test binary: the
/// first call's `level` holds for the whole binary).
pub fn capture_logs(level: tracing::Level) -> Logs {
    let buffer = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(Arc::clone(&buffer));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish();
        // Another subscriber would be a bug in the test binary: the leak checks would
        // then see nothing.
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in a test binary capturing logs");
        buffer
    });
    Logs(Arc::clone(buffer))
}

impl Logs {
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// None of `needles` appears in any log line so far; something was logged at all.
    pub fn assert_absent(&self, needles: &[&str]) {
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
