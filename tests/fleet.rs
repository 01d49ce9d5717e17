//! The fleet test (issue 18): several `bootstrap` processes, each under its own fake Lambda
//! Runtime API, draining one shared SQS queue into one stub Kustomer that enforces an
//! organisation's rate-limit budget. The pieces, each in `tests/fleet/`:
//!
//! - `queue.rs`: the SQS queue, in process (standard or FIFO, visibility timeout, receive
//!   counts and redrive to a dead-letter list, FIFO group locking and deduplication);
//! - `runtime.rs`: the Runtime API emulator (Lambda's SQS event source mapping: batches,
//!   deadlines, `batchItemFailures`) and the processes;
//! - `kustomer.rs`: the stub Kustomer (budget windows, `x-ratelimit-*`, 429 + Retry-After,
//!   customers, tracking, injected 503s), on tests/support's `StubServer`;
//! - `workload.rs`: the users' events, deterministic for a seed;
//! - `figures.rs`: what a run shows (definitions there) and the side-by-side table.
//!
//! `small_fleet_fifo` runs in `make test`: 2 processes of the debug binary, 400 events,
//! FIFO with the fleet's ledger (a DynamoDB table in moto), a budget that never throttles;
//! it asserts no event lost, no duplicate customer, no order violation and no repeated
//! message delivered twice. `fleet` (ignored; `make fleet`) runs the full workload, 3,000
//! events of 150 users, with 3 processes of the release binary (`FLEET_BINARY`, else
//! `target/release/bootstrap`) against a budget of 2,000 requests a minute: on a standard
//! queue, on a FIFO queue without the ledger, and on a FIFO queue with it (the template's
//! FIFO default); it prints the runs' figures side by side: measured, never asserted.

mod moto;
mod support;

#[path = "fleet/figures.rs"]
mod figures;
#[path = "fleet/kustomer.rs"]
mod kustomer;
#[path = "fleet/queue.rs"]
mod queue;
#[path = "fleet/runtime.rs"]
mod runtime;
#[path = "fleet/workload.rs"]
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use figures::{Figures, RunRecord};
use kustomer::{Kustomer, KustomerConfig};
use queue::{Queue, QueueConfig};
use runtime::{Process, RuntimeApi, RuntimeConfig};
use workload::{Workload, WorkloadConfig};

const API_KEY: &str = "fleet-api-key";
/// Lambda's BatchSize for the queue (template.yaml's default).
const BATCH_SIZE: usize = 10;
/// The queue's maxReceiveCount (template.yaml's default and minimum).
const MAX_RECEIVE_COUNT: u32 = 5;
/// The ledger's table when `shared_dedup` is on.
const LEDGER_TABLE: &str = "fleet-delivered-events";

#[derive(Debug, Clone)]
struct FleetConfig {
    label: &'static str,
    binary: PathBuf,
    processes: usize,
    fifo: bool,
    /// The fleet's ledger of delivered events (SharedDeduplication on): a DynamoDB table in
    /// moto shared by the processes.
    shared_dedup: bool,
    workload: WorkloadConfig,
    budget: u32,
    window: Duration,
    /// Kept above `function_timeout`, as AWS requires of an SQS event source: a batch is
    /// never handed to a second process while the first still works on it in time.
    visibility_timeout: Duration,
    function_timeout: Duration,
    /// The run gives up then; what is still queued counts as lost.
    timeout: Duration,
}

/// The full workload of issue 18: 150 users × 20 events.
fn full_workload() -> WorkloadConfig {
    WorkloadConfig {
        users: 150,
        tracking_per_user: 15,
        repeated_identifies: 4,
        identical_repeats: 3,
        faults: 30,
        repeat_share: 0.02,
        companies: 15,
        seed: 18,
    }
}

struct Run {
    figures: Figures,
    /// Each process's log file and its last lines.
    logs: Vec<(PathBuf, String)>,
}

impl Run {
    fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|(path, tail)| format!("--- {} (last lines)\n{tail}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn log_dir(label: &str) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fleet")
        .join(format!("{label}-{stamp}"));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

async fn run_fleet(config: &FleetConfig) -> Run {
    assert!(
        config.binary.is_file(),
        "no bootstrap binary at {} (make fleet builds it: cargo build --release --bin bootstrap)",
        config.binary.display()
    );
    let workload = Workload::generate(&config.workload);
    let queue = Arc::new(Queue::new(QueueConfig {
        fifo: config.fifo,
        visibility_timeout: config.visibility_timeout,
        max_receive_count: MAX_RECEIVE_COUNT,
        dedup_window: Duration::from_secs(300),
        backlog_threshold: config.processes * BATCH_SIZE,
    }));
    for message in &workload.messages {
        let group = config.fifo.then(|| message.group.clone());
        let dedup = config.fifo.then(|| message.dedup_id.clone());
        queue.send(message.body.clone(), group, dedup);
    }
    let kustomer = Kustomer::start(KustomerConfig {
        budget: config.budget,
        window: config.window,
        faults: workload.faults.clone(),
        fault_failures: 4,
    })
    .await;
    // Kept alive until the run ends (moto stops when dropped).
    let moto = config.shared_dedup.then(moto::MotoServer::start);
    let mut ledger_env: Vec<(&str, String)> = Vec::new();
    if let Some(moto) = &moto {
        moto.create_ledger_table(LEDGER_TABLE).await;
        ledger_env = moto.env_for_sdk();
        ledger_env.push(("DEDUP_TABLE", LEDGER_TABLE.into()));
    }
    let stub_started = Instant::now();
    let dir = log_dir(config.label);
    let runtime_config = RuntimeConfig {
        batch_size: BATCH_SIZE,
        function_timeout: config.function_timeout,
    };
    let mut apis = Vec::new();
    let mut processes = Vec::new();
    for index in 0..config.processes {
        let api = RuntimeApi::start(index, Arc::clone(&queue), runtime_config).await;
        let env: Vec<(String, String)> = [
            (
                "AWS_LAMBDA_FUNCTION_NAME",
                runtime::FUNCTION_NAME.to_string(),
            ),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_RUNTIME_API", api.address()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("KUSTOMER_API_KEY", API_KEY.into()),
            ("KUSTOMER_BASE_ENDPOINT", kustomer.base_url()),
            // template.yaml's defaults, spelled out.
            ("MAX_IN_FLIGHT", "8".into()),
            ("RETRY_MAX_ATTEMPTS", "3".into()),
            ("LOG_LEVEL", "warn".into()),
        ]
        .into_iter()
        .chain(ledger_env.iter().cloned())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let log = dir.join(format!("process-{index}.log"));
        processes.push(Process::start(&config.binary, env, log));
        apis.push(api);
    }

    let started = Instant::now();
    let timed_out = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        processes.iter_mut().for_each(Process::keep_alive);
        if queue.len() == 0 && apis.iter().all(|api| api.in_flight() == 0) {
            break false;
        }
        if started.elapsed() > config.timeout {
            break true;
        }
    };
    let wall = started.elapsed();
    processes.iter_mut().for_each(Process::stop);
    apis.iter().for_each(RuntimeApi::shutdown);

    let ledger = kustomer.ledger();
    let queue_report = queue.report();
    let mut stats = runtime::RuntimeStats::default();
    for api in &apis {
        let one = api.stats();
        stats.invocations += one.invocations;
        stats.messages_handed_out += one.messages_handed_out;
        stats.responses += one.responses;
        stats.batch_item_failures += one.batch_item_failures;
        stats.invocation_errors += one.invocation_errors;
        stats.rejected_answers += one.rejected_answers;
        stats.init_errors += one.init_errors;
    }
    let figures = figures::compute(&RunRecord {
        workload: &workload,
        ledger: &ledger,
        queue: &queue_report,
        runtime: stats,
        backlog: queue_report
            .backlog_end
            .map(|end| end.saturating_duration_since(stub_started)),
        budget: config.budget,
        window: config.window,
        wall,
        timed_out,
        process_exits: processes.iter().map(|p| p.exits.len()).sum(),
    });
    if !ledger.unexpected.is_empty() {
        eprintln!(
            "{}: requests the stub did not expect (first 10): {:?}",
            config.label,
            &ledger.unexpected[..ledger.unexpected.len().min(10)]
        );
    }
    let logs = processes
        .iter()
        .map(|p| (p.log_path().to_path_buf(), p.log_tail(30)))
        .collect();
    Run { figures, logs }
}

// =======================================================================================
// make test: the small asserted fleet
// =======================================================================================

/// 2 processes, 400 events (20 users, 4 of whose tracking events fail 4 times with 503,
/// 8 messages enqueued twice), FIFO with the ledger, a budget that never throttles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_fleet_fifo() {
    let config = FleetConfig {
        label: "small-fifo",
        binary: PathBuf::from(env!("CARGO_BIN_EXE_bootstrap")),
        processes: 2,
        fifo: true,
        shared_dedup: true,
        workload: WorkloadConfig {
            users: 20,
            faults: 4,
            companies: 4,
            seed: 400,
            ..full_workload()
        },
        budget: 1_000_000,
        window: Duration::from_secs(60),
        visibility_timeout: Duration::from_secs(8),
        function_timeout: Duration::from_secs(6),
        timeout: Duration::from_secs(90),
    };
    let run = run_fleet(&config).await;
    let f = &run.figures;
    println!("{}", figures::table(&[("small FIFO", f)]));
    assert!(f.requests > 0, "nothing reached Kustomer:\n{}", run.logs());
    let problems: Vec<String> = [
        ("events lost", f.lost),
        ("duplicate customers", f.duplicate_customers),
        ("order violations", f.order_violations()),
        ("customers not linked to their company", f.not_linked),
        (
            "repeated tracking messages delivered twice",
            f.twice_repeated,
        ),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{what}: {n}"))
    .collect();
    assert!(
        problems.is_empty(),
        "{} (figures above)\nfirst order violations:\n  {}\nduplicate customers:\n  {}\nprocess logs:\n{}",
        problems.join(", "),
        f.violation_samples.join("\n  "),
        f.duplicate_samples.join("\n  "),
        run.logs()
    );
}

// =======================================================================================
// make fleet: the full workload, measured
// =======================================================================================

fn seconds_from_env(name: &str, default: u64) -> Duration {
    let value = std::env::var(name).ok().map(|v| {
        v.trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{name} must be a whole number of seconds (got {v:?})"))
    });
    Duration::from_secs(value.unwrap_or(default))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long, measured only: `make fleet`"]
async fn fleet() {
    // Relative paths from the package's root, where make and cargo run.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = match std::env::var_os("FLEET_BINARY") {
        Some(path) => manifest.join(path),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| manifest.join("target"), |dir| manifest.join(dir))
            .join("release/bootstrap"),
    };
    let base = FleetConfig {
        label: "standard",
        binary,
        processes: 3,
        fifo: false,
        shared_dedup: false,
        workload: full_workload(),
        budget: 2_000,
        window: seconds_from_env("FLEET_WINDOW_SECONDS", 60),
        visibility_timeout: seconds_from_env("FLEET_VISIBILITY_SECONDS", 40),
        function_timeout: Duration::from_secs(30),
        timeout: seconds_from_env("FLEET_TIMEOUT_SECONDS", 1_200),
    };
    let fifo_ledger_off = FleetConfig {
        label: "fifo-ledger-off",
        fifo: true,
        ..base.clone()
    };
    // The template's FIFO default: SharedDeduplication auto, the ledger on.
    let fifo = FleetConfig {
        label: "fifo",
        shared_dedup: true,
        ..fifo_ledger_off.clone()
    };
    let mut runs = Vec::new();
    for config in [&base, &fifo_ledger_off, &fifo] {
        println!(
            "fleet: {} queue, {} processes ...",
            config.label, config.processes
        );
        let run = run_fleet(config).await;
        println!("{}", figures::table(&[(config.label, &run.figures)]));
        assert!(
            run.figures.requests > 0,
            "nothing reached Kustomer:\n{}",
            run.logs()
        );
        runs.push((config.label, run));
    }
    let columns: Vec<(&str, &Figures)> = runs.iter().map(|(l, r)| (*l, &r.figures)).collect();
    println!(
        "\nfleet, 3 processes, budget 2,000 requests per 60 s window:\n{}",
        figures::table(&columns)
    );
    for (label, run) in &runs {
        let f = &run.figures;
        for (what, samples) in [
            ("first order violations", &f.violation_samples),
            ("duplicate customers", &f.duplicate_samples),
        ] {
            if !samples.is_empty() {
                println!("{label}, {what}:\n  {}", samples.join("\n  "));
            }
        }
        println!(
            "logs: {}",
            run.logs
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

// =======================================================================================
// The harness's own pieces: they must see what they are meant to see.
// =======================================================================================

fn queue_config(fifo: bool) -> QueueConfig {
    QueueConfig {
        fifo,
        visibility_timeout: Duration::from_millis(200),
        max_receive_count: 2,
        dedup_window: Duration::from_secs(300),
        backlog_threshold: 0,
    }
}

#[tokio::test]
async fn queue_standard_visibility_receive_counts_and_redrive() {
    let queue = Queue::new(queue_config(false));
    for body in ["a", "b", "c"] {
        queue.send(body.into(), None, None);
    }
    let first = queue.receive(2);
    assert_eq!(bodies(&first), ["a", "b"]);
    assert_eq!(bodies(&queue.receive(10)), ["c"], "a and b are in flight");
    assert!(queue.receive(10).is_empty());
    assert!(queue.delete(&first[0].receipt_handle));
    tokio::time::sleep(Duration::from_millis(250)).await;
    // b and c were not deleted: visible again, received a second time.
    let again = queue.receive(10);
    assert_eq!(bodies(&again), ["b", "c"]);
    assert!(again.iter().all(|m| m.receive_count == 2));
    assert!(
        !queue.delete(&first[1].receipt_handle),
        "an outdated receipt handle"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Received max_receive_count (2) times: the next receive moves them to the DLQ.
    assert!(queue.receive(10).is_empty());
    let report = queue.report();
    assert_eq!(report.dead.len(), 2);
    assert_eq!(
        (report.deleted, report.redeliveries, queue.len()),
        (1, 2, 0)
    );
}

#[tokio::test]
async fn queue_fifo_groups_order_locking_and_deduplication() {
    let queue = Queue::new(queue_config(true));
    let send = |body: &str, group: &str, dedup: &str| {
        queue.send(body.into(), Some(group.into()), Some(dedup.into()))
    };
    send("u1-a", "u1", "d1");
    send("u2-a", "u2", "d2");
    send("u1-b", "u1", "d3");
    assert!(send("u1-b again", "u1", "d3").is_none(), "deduplicated");
    send("u2-b", "u2", "d4");
    send("u3-a", "u3", "d5");
    // As many of one group as fit, then the next group; each in order.
    let batch = queue.receive(3);
    assert_eq!(bodies(&batch), ["u1-a", "u1-b", "u2-a"]);
    // u1 and u2 are locked while any of their messages is in flight.
    assert_eq!(bodies(&queue.receive(10)), ["u3-a"]);
    assert!(queue.receive(10).is_empty());
    // u2 stays locked until u2-a is deleted; u1-b failed and comes back first in u1.
    assert!(queue.delete(&batch[0].receipt_handle));
    assert!(queue.delete(&batch[2].receipt_handle));
    assert_eq!(bodies(&queue.receive(10)), ["u2-b"]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = queue.receive(10);
    assert_eq!(bodies(&again)[0], "u1-b");
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(queue.report().deduplicated, 1);
}

fn bodies(received: &[queue::Received]) -> Vec<&str> {
    received.iter().map(|m| m.body.as_str()).collect()
}

/// The stub's budget headers are in a form the product reads; 429 past the budget with
/// Retry-After; a chosen tracking event fails with 503 exactly `fault_failures` times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_budget_headers_and_faults() {
    let faults = [("u1".to_string(), 7)].into_iter().collect();
    let kustomer = Kustomer::start(KustomerConfig {
        budget: 4,
        window: Duration::from_secs(30),
        faults,
        fault_failures: 2,
    })
    .await;
    let track = serde_json::json!({"identity": {"externalId": "u1"}, "event": {"name": "x", "meta": {"fleetSeq": 7}}});
    let url = kustomer.base_url();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, headers) = post(&url, "/v1/tracking/identityEvent", &track).await;
        let read = rudder_kustomer::kustomer::read_rate_limit(&headers);
        statuses.push(status);
        assert_eq!(read.limit, Some(4), "{headers:?}");
        let reset = read.reset.expect("x-ratelimit-reset is read");
        assert!(
            reset > Duration::ZERO && reset <= Duration::from_secs(30),
            "{reset:?}"
        );
        if status == 429 {
            assert_eq!(read.remaining, Some(0));
            assert_eq!(
                read.retry_after,
                Some(reset),
                "Retry-After = the window's end"
            );
        }
    }
    assert_eq!(statuses, [503, 503, 201, 201, 429]);
    let ledger = kustomer.ledger();
    assert_eq!(
        (ledger.requests, ledger.throttled, ledger.injected_503),
        (5, 1, 2)
    );
    assert_eq!(ledger.writes.len(), 2, "two deliveries of one event");
}

/// A minimal HTTP/1.1 POST: status and headers.
async fn post(base: &str, path: &str, body: &serde_json::Value) -> (u16, http::HeaderMap) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the stub");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read the answer");
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                http::HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name"),
                http::HeaderValue::from_str(value.trim()).expect("a header value"),
            );
        }
    }
    (status, headers)
}

/// The figures see loss, duplicate customers and disorder (so the small test's assertions
/// can fail): a made-up ledger of a two-user workload.
#[test]
fn figures_see_loss_duplicates_and_disorder() {
    use kustomer::{Ledger, Write, WriteKind};
    use workload::Content;
    let workload = Workload::generate(&WorkloadConfig {
        users: 2,
        faults: 0,
        repeat_share: 0.0,
        ..full_workload()
    });
    let write = |user: &str, content: Content, kind: WriteKind| Write {
        at: Duration::ZERO,
        kind,
        user: user.into(),
        key: Some(match content {
            Content::Identify { version } | Content::Track { seq: version } => version,
        }),
        email: None,
        company: None,
    };
    let mut ledger = Ledger::default();
    let mut created: std::collections::HashSet<String> = Default::default();
    for event in &workload.events {
        let kind = match event.content {
            Content::Track { .. } => WriteKind::Tracking,
            Content::Identify { .. } if created.insert(event.user.clone()) => WriteKind::Create,
            Content::Identify { .. } => WriteKind::Update,
        };
        ledger.writes.push(write(&event.user, event.content, kind));
    }
    let report = queue::QueueReport::default();
    let record = |ledger: &Ledger| {
        figures::compute(&RunRecord {
            workload: &workload,
            ledger,
            queue: &report,
            runtime: Default::default(),
            backlog: None,
            budget: 1,
            window: Duration::from_secs(60),
            wall: Duration::ZERO,
            timed_out: false,
            process_exits: 0,
        })
    };
    let clean = record(&ledger);
    assert_eq!(
        (
            clean.delivered,
            clean.lost,
            clean.duplicate_customers,
            clean.order_violations()
        ),
        (40, 0, 0, 0)
    );

    let mut broken = ledger.clone();
    // One tracking event never arrives; one user is created twice; one user's last two
    // tracking events arrive swapped.
    let tracks: Vec<usize> = (0..broken.writes.len())
        .filter(|&i| broken.writes[i].kind == WriteKind::Tracking)
        .collect();
    let (last, before) = (tracks[tracks.len() - 1], tracks[tracks.len() - 2]);
    assert_eq!(
        broken.writes[last].user, broken.writes[before].user,
        "same user"
    );
    broken.writes.swap(last, before);
    let lost = broken.writes.remove(tracks[0]);
    let first_create = broken
        .writes
        .iter()
        .find(|w| w.kind == WriteKind::Create)
        .cloned();
    broken.writes.push(first_create.expect("a create"));
    let seen = record(&broken);
    assert_eq!(seen.lost, 1, "{lost:?}");
    assert_eq!(seen.duplicate_customers, 1);
    assert!(seen.order_violations() >= 1, "{:?}", seen.violation_samples);
}
