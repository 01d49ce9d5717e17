//! One fake Lambda Runtime API per `bootstrap` process, each polling the shared queue as
//! Lambda's SQS event source mapping does (BatchSize 10, ReportBatchItemFailures), and the
//! processes themselves.
//!
//! - `GET /2018-06-01/runtime/invocation/next` long-polls the queue for up to `batch_size`
//!   messages and answers an `SqsEvent` with the runtime headers (deadline = now + the
//!   function timeout).
//! - `POST .../invocation/<id>/response`: the messages not listed in `batchItemFailures` are
//!   deleted; the listed ones stay and come back after the visibility timeout. An answer
//!   Lambda would reject (not JSON, an unknown or empty `itemIdentifier`) or one after the
//!   deadline (Lambda would have timed the invocation out) fails the whole batch.
//! - `POST .../invocation/<id>/error`, or a process that dies: nothing is deleted; the whole
//!   batch comes back after the visibility timeout. A dead process is started again, as
//!   Lambda starts a new container.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::queue::{Queue, Received};
use crate::support::{read_request, Reply, Request};

pub const FUNCTION_NAME: &str = "rudder-kustomer-fleet";
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    pub batch_size: usize,
    /// The Lambda timeout: each invocation's deadline is this long after it is handed out.
    pub function_timeout: Duration,
}

/// What one Runtime API saw.
#[derive(Debug, Clone, Default)]
pub struct RuntimeStats {
    pub invocations: u64,
    pub messages_handed_out: u64,
    pub responses: u64,
    pub batch_item_failures: u64,
    /// `/invocation/<id>/error` calls.
    pub invocation_errors: u64,
    /// Answers Lambda would reject or that came after the deadline: whole batch failed.
    pub rejected_answers: u64,
    pub init_errors: u64,
}

struct Invocation {
    /// SQS message id → receipt handle.
    receipts: Vec<(String, String)>,
    deadline: Instant,
}

struct Shared {
    queue: Arc<Queue>,
    config: RuntimeConfig,
    queue_arn: String,
    invocations: Mutex<HashMap<String, Invocation>>,
    stats: Mutex<RuntimeStats>,
    next_id: AtomicU64,
    process: usize,
    tasks: Mutex<Vec<AbortHandle>>,
}

pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RuntimeApi {
    pub async fn start(process: usize, queue: Arc<Queue>, config: RuntimeConfig) -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("runtime API: bind 127.0.0.1");
        let addr = listener.local_addr().expect("runtime API: local address");
        let queue_arn = format!(
            "arn:aws:sqs:{REGION}:{ACCOUNT}:fleet-events{}",
            if queue.config().fifo { ".fifo" } else { "" }
        );
        let shared = Arc::new(Shared {
            queue,
            config,
            queue_arn,
            invocations: Mutex::new(HashMap::new()),
            stats: Mutex::new(RuntimeStats::default()),
            next_id: AtomicU64::new(1),
            process,
            tasks: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = tokio::spawn(serve(stream, Arc::clone(&accept_shared)));
                let mut tasks = accept_shared.tasks.lock().expect("tasks lock");
                tasks.retain(|t| !t.is_finished());
                tasks.push(conn.abort_handle());
            }
        });
        shared
            .tasks
            .lock()
            .expect("tasks lock")
            .push(accept.abort_handle());
        RuntimeApi { addr, shared }
    }

    /// `127.0.0.1:PORT`, as `AWS_LAMBDA_RUNTIME_API` wants it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Invocations handed out and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.shared
            .invocations
            .lock()
            .expect("invocations lock")
            .len()
    }

    pub fn stats(&self) -> RuntimeStats {
        self.shared.stats.lock().expect("stats lock").clone()
    }

    pub fn shutdown(&self) {
        for task in self.shared.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    while let Ok(Some(request)) = read_request(&mut stream, &mut buffer).await {
        let reply = answer(&shared, &request).await;
        if stream.write_all(&reply.encode()).await.is_err() {
            return;
        }
    }
}

async fn answer(shared: &Shared, request: &Request) -> Reply {
    let path = request.path();
    let accepted = || Reply::json(202, &json!({"status": "OK"}));
    if request.method == "GET" && path == "/2018-06-01/runtime/invocation/next" {
        return next_invocation(shared).await;
    }
    if path == "/2018-06-01/runtime/init/error" {
        shared.stats.lock().expect("stats lock").init_errors += 1;
        return accepted();
    }
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") else {
        return Reply::empty(404);
    };
    let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
    let invocation = shared
        .invocations
        .lock()
        .expect("invocations lock")
        .remove(id);
    let Some(invocation) = invocation else {
        return Reply::json(400, &json!({"errorMessage": "unknown request id"}));
    };
    match what {
        "response" => finish(shared, invocation, &request.body),
        // An invocation error: nothing is deleted, the batch comes back after the timeout.
        _ => shared.stats.lock().expect("stats lock").invocation_errors += 1,
    }
    accepted()
}

/// Long-polls the queue until it hands out at least one message.
async fn next_invocation(shared: &Shared) -> Reply {
    let batch: Vec<Received> = loop {
        let batch = shared
            .queue
            .receive_wait(shared.config.batch_size, Duration::from_secs(20))
            .await;
        if !batch.is_empty() {
            break batch;
        }
    };
    let id = format!(
        "fleet-{}-{:06}",
        shared.process,
        shared.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let deadline = Instant::now() + shared.config.function_timeout;
    let deadline_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        + shared.config.function_timeout.as_millis() as u64;
    let records: Vec<Value> = batch.iter().map(|m| record(&shared.queue_arn, m)).collect();
    {
        let mut stats = shared.stats.lock().expect("stats lock");
        stats.invocations += 1;
        stats.messages_handed_out += batch.len() as u64;
    }
    shared.invocations.lock().expect("invocations lock").insert(
        id.clone(),
        Invocation {
            receipts: batch
                .into_iter()
                .map(|m| (m.message_id, m.receipt_handle))
                .collect(),
            deadline,
        },
    );
    Reply::json(200, &json!({ "Records": records }))
        .with_header("Lambda-Runtime-Aws-Request-Id", &id)
        .with_header("Lambda-Runtime-Deadline-Ms", &deadline_ms.to_string())
        .with_header(
            "Lambda-Runtime-Invoked-Function-Arn",
            &format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION_NAME}"),
        )
        .with_header(
            "Lambda-Runtime-Trace-Id",
            "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
        )
}

/// One SQS record as Lambda's event source mapping builds it.
fn record(queue_arn: &str, message: &Received) -> Value {
    let mut attributes = json!({
        "ApproximateReceiveCount": message.receive_count.to_string(),
        "SentTimestamp": message.sent_epoch_ms.to_string(),
        "SenderId": "AIDAFLEETTESTSENDER",
        "ApproximateFirstReceiveTimestamp": message.first_received_epoch_ms.to_string(),
    });
    if let Some(group) = &message.group {
        attributes["MessageGroupId"] = json!(group);
        attributes["SequenceNumber"] = json!(format!("{:020}", message.sequence_number));
    }
    if let Some(dedup) = &message.dedup_id {
        attributes["MessageDeduplicationId"] = json!(dedup);
    }
    json!({
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    })
}

/// Applies an invocation's answer: deletes every message not reported as failed.
fn finish(shared: &Shared, invocation: Invocation, body: &[u8]) {
    let mut stats = shared.stats.lock().expect("stats lock");
    stats.responses += 1;
    let ids: HashSet<&str> = invocation
        .receipts
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    let failed = match failed_items(body, &ids) {
        Some(failed) if Instant::now() <= invocation.deadline => failed,
        // Lambda fails the whole batch: nothing is deleted.
        _ => {
            stats.rejected_answers += 1;
            return;
        }
    };
    stats.batch_item_failures += failed.len() as u64;
    drop(stats);
    for (id, receipt) in &invocation.receipts {
        if !failed.contains(id.as_str()) {
            shared.queue.delete(receipt);
        }
    }
}

/// The message ids an answer reports as failed, or `None` when Lambda would treat the
/// answer as a failure of the whole batch (AWS's rules for partial batch responses).
fn failed_items(body: &[u8], ids: &HashSet<&str>) -> Option<HashSet<String>> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    let items = match answer.get("batchItemFailures") {
        None | Some(Value::Null) => return Some(HashSet::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return None,
    };
    items
        .iter()
        .map(|item| match item.get("itemIdentifier") {
            Some(Value::String(id)) if ids.contains(id.as_str()) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The processes
// ---------------------------------------------------------------------------------------

/// One `bootstrap` process under its Runtime API; started again when it dies.
pub struct Process {
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Child,
    /// How often it exited on its own (each time it was started again).
    pub exits: Vec<String>,
}

impl Process {
    pub fn start(binary: &Path, env: Vec<(String, String)>, log: PathBuf) -> Process {
        let child = spawn(binary, &env, &log);
        Process {
            binary: binary.to_path_buf(),
            env,
            log,
            child,
            exits: Vec::new(),
        }
    }

    /// Starts the process again if it exited (Lambda would start a new container).
    pub fn keep_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exits.push(status.to_string());
            self.child = spawn(&self.binary, &self.env, &self.log);
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log, without the metric (EMF) lines of every invocation.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().filter(|l| !l.contains("\"_aws\"")).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills its whole process group.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(binary: &Path, env: &[(String, String)], log: &Path) -> Child {
    let output: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open the process log {}: {e}", log.display()));
    let errors = output.try_clone().expect("clone the process log handle");
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        // Its own process group, killed as a whole at the end.
        .process_group(0);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}
