//! `rudder-kustomer send` as an operator runs it: the real binary against the stub
//! Kustomer (and moto for `--secret-id`), with faults, interruptions and resumes.

mod moto;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rudder_kustomer::settings::lambda;
use serde_json::{json, Value};
use support::{Reply, Request, StubServer};
use tokio::process::Command;

const API_KEY: &str = "sk-backfill-test";

/// A fresh directory for one test's files.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rk-send-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with none of this machine's settings, the test key and `base`.
fn cli(base: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rudder-kustomer"));
    for name in lambda::template_env_vars() {
        command.env_remove(name);
    }
    command
        .env_remove(lambda::LOCAL_API_KEY)
        .env(lambda::LOCAL_API_KEY, API_KEY)
        .env(lambda::BASE_ENDPOINT, base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(command: &mut Command) -> Output {
    command.output().await.expect("run rudder-kustomer")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn track(user: usize, seq: usize) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": format!("user-{user}"),
           "messageId": format!("m-{seq}"), "properties": {"seq": seq}})
}

fn write_lines(path: &Path, events: &[Value]) {
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The event's `seq` in a tracking write the stub received.
fn seq_of(request: &Request) -> Option<u64> {
    request.body_json()?.pointer("/event/meta/seq")?.as_u64()
}

/// Failure records of a failures file, by seq (a seq may repeat: at least once).
fn failure_seqs(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON record per line");
            assert!(record["error"]["class"].is_string(), "{record}");
            record["event"]["properties"]["seq"]
                .as_u64()
                .expect("the original event")
        })
        .collect()
}

/// What the stub answered: (seq, user, 2xx?, when), in order of arrival.
type Log = Arc<Mutex<Vec<(Option<u64>, String, bool, Instant)>>>;

/// A stub whose answer for each request comes from `decide(index, seq)`; a 2xx answer
/// is logged as a delivery.
async fn stub(
    decide: impl Fn(usize, Option<u64>) -> Reply + Send + Sync + 'static,
) -> (StubServer, Log) {
    let log: Log = Default::default();
    let recorded = log.clone();
    let server = StubServer::start(move |request: &Request| {
        let seq = seq_of(request);
        let reply = decide(request.index, seq);
        let ok = reply.fault.is_none() && (200..300).contains(&reply.status);
        let user = support::write_user(request).unwrap_or_default();
        recorded
            .lock()
            .unwrap()
            .push((seq, user, ok, Instant::now()));
        reply
    })
    .await;
    (server, log)
}

fn delivered_counts(log: &Log) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for (seq, _, ok, _) in log.lock().unwrap().iter() {
        if let (Some(seq), true) = (seq, ok) {
            *counts.entry(*seq).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stormy_backfill_ends_delivered_or_in_the_failures_file() {
    let dir = workdir("storm");
    let (users, total) = (150, 2000);
    let events: Vec<Value> = (0..total).map(|seq| track(seq % users, seq)).collect();
    let input = dir.join("export.jsonl");
    write_lines(&input, &events);
    let permanent = |seq: u64| seq % 97 == 5;
    let (server, log) = stub(move |index, seq| {
        if seq.is_some_and(permanent) {
            Reply::json(
                400,
                &json!({"errors": [{"status": 400, "title": "Bad Request"}]}),
            )
        } else if index % 600 < 40 {
            // A 429 storm: some events run out of attempts inside it.
            Reply::json(429, &json!({})).with_header("Retry-After", "0")
        } else if index % 53 == 7 {
            Reply::empty(503)
        } else if index % 71 == 11 {
            Reply::reset()
        } else {
            Reply::json(201, &json!({"data": {"id": "t"}}))
        }
    })
    .await;
    let failures = dir.join("failures.jsonl");
    let rpm = 60_000u64;
    let output = run(cli(&server.base_url()).args([
        "send",
        "--max-requests-per-minute",
        &rpm.to_string(),
        "--failures",
        failures.to_str().unwrap(),
        input.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("Kustomer requests"),
        "{}",
        stderr(&output)
    );

    let delivered = delivered_counts(&log);
    let failed = failure_seqs(&failures);
    let failed_set: BTreeSet<u64> = failed.iter().copied().collect();
    assert_eq!(failed.len(), failed_set.len(), "a failure written twice");
    for seq in 0..total as u64 {
        let ok = delivered.get(&seq).copied().unwrap_or(0);
        assert!(
            (ok == 1) != failed_set.contains(&seq),
            "event {seq}: delivered {ok} times, in failures: {}",
            failed_set.contains(&seq)
        );
        if permanent(seq) {
            assert!(failed_set.contains(&seq));
        }
    }
    assert!(
        failed_set.len() > (total / 97),
        "the storms made some fail too"
    );

    let log = log.lock().unwrap().clone();
    // Per-user order: each user's deliveries arrive in input order.
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (seq, user, ok, _) in &log {
        if let (Some(seq), true) = (seq, ok) {
            if let Some(previous) = last.insert(user, *seq) {
                assert!(previous < *seq, "{user}: {seq} after {previous}");
            }
        }
    }
    // The ceiling: no 100 ms window holds more than its share of requests (plus the
    // requests in flight, which may arrive together after a slow start).
    let times: Vec<Instant> = log.iter().map(|(_, _, _, at)| *at).collect();
    let window = Duration::from_millis(100);
    let allowed = (rpm as f64 * window.as_secs_f64() / 60.0) as usize + 8 + 1;
    let mut end = 0;
    for start in 0..times.len() {
        while end < times.len() && times[end] - times[start] < window {
            end += 1;
        }
        assert!(end - start <= allowed, "{} requests in 100 ms", end - start);
    }
}

/// Sends SIGINT to the child (as Ctrl-C does).
fn interrupt(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_runs_resume_without_losing_an_event() {
    let dir = workdir("resume");
    let total = 5000u64;
    let events: Vec<Value> = (0..total as usize)
        .map(|seq| track(seq % 200, seq))
        .collect();
    // gzip: resuming inside compressed input re-reads up to the checkpoint.
    let input = dir.join("export.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for event in &events {
        writeln!(gz, "{event}").unwrap();
    }
    std::fs::write(&input, gz.finish().unwrap()).unwrap();
    let (server, log) = stub(|_, seq| {
        if seq.is_some_and(|s| s % 50 == 3) {
            Reply::json(400, &json!({})).with_delay(Duration::from_millis(4))
        } else {
            Reply::json(201, &json!({})).with_delay(Duration::from_millis(4))
        }
    })
    .await;
    let (checkpoint, failures) = (dir.join("job.checkpoint"), dir.join("failures.jsonl"));
    let args = [
        "send",
        "--chunk-size",
        "150",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--failures",
        failures.to_str().unwrap(),
        input.to_str().unwrap(),
    ];
    let (mut runs, mut interrupted, mut killed) = (0, 0, 0);
    let mut exits = Vec::new();
    let final_status = loop {
        runs += 1;
        assert!(runs <= 30, "never finished");
        let mut child = cli(&server.base_url()).args(args).spawn().unwrap();
        let pid = child.id().unwrap();
        if runs > 8 {
            break child.wait().await.unwrap().code();
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..600))).await;
        if runs % 2 == 0 {
            let _ = child.start_kill();
            killed += 1;
        } else {
            interrupt(pid);
            interrupted += 1;
        }
        let status = child.wait().await.unwrap();
        exits.push(status.code());
        match status.code() {
            // Finished before the signal: the checkpoint says done from now on.
            Some(0 | 1) => {}
            // Ctrl-C: the chunk in flight finished, the checkpoint is written.
            Some(130) => {}
            // SIGKILL (or SIGINT before the handler was installed).
            None => {}
            other => panic!("unexpected exit {other:?}"),
        }
    };
    assert_eq!(final_status, Some(1), "some events fail permanently");
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert!(
        saved["inputs"][input.to_str().unwrap()]["done"] == true,
        "{saved}"
    );

    let delivered = delivered_counts(&log);
    let failed = failure_seqs(&failures);
    let failed_set: BTreeSet<u64> = failed.iter().copied().collect();
    let lost: Vec<u64> = (0..total)
        .filter(|seq| !delivered.contains_key(seq) && !failed_set.contains(seq))
        .collect();
    let duplicates: usize =
        delivered.values().map(|n| n - 1).sum::<usize>() + (failed.len() - failed_set.len());
    eprintln!(
        "interruptions: {runs} runs ({interrupted} SIGINT, {killed} SIGKILL), {total} events, \
         lost {}, duplicates {duplicates}; exit statuses of the interrupted runs {exits:?}",
        lost.len()
    );
    assert!(lost.is_empty(), "lost events: {lost:?}");
    for seq in &failed_set {
        assert_eq!(seq % 50, 3, "only permanent failures end in the file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_shape_is_read() {
    let dir = workdir("shapes");
    let e = |seq: usize| track(seq, seq);
    // gzip JSON Lines under a name that does not say so.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for seq in 0..3 {
        writeln!(gz, "{}", e(seq)).unwrap();
    }
    std::fs::write(dir.join("export-1"), gz.finish().unwrap()).unwrap();
    let array = serde_json::to_string_pretty(&json!([e(3), e(4)])).unwrap();
    std::fs::write(dir.join("array.json"), array).unwrap();
    std::fs::write(
        dir.join("lines.jsonl"),
        format!("{}\n{{\"type\": \"track\", oops\n{}\n", e(5), e(6)),
    )
    .unwrap();
    // The dead-letter queue, as `aws sqs receive-message` prints it.
    let bridge =
        json!({"version": "0", "detail-type": "rudderstack", "source": "s", "detail": e(7)});
    let dlq = json!({"Messages": [
        {"MessageId": "1", "ReceiptHandle": "r1", "Body": bridge.to_string(),
         "MessageAttributes": {"errorClass": {"StringValue": "transient", "DataType": "String"}}},
        {"MessageId": "2", "ReceiptHandle": "r2", "Body": e(8).to_string()},
    ]});
    std::fs::write(
        dir.join("dlq.json"),
        serde_json::to_string_pretty(&dlq).unwrap(),
    )
    .unwrap();
    // A failures file of an earlier run, fixed by hand: sent again as is.
    let record =
        json!({"event": e(9), "error": {"class": "permanent", "status": 400, "message": "x"}});
    std::fs::write(dir.join("fixed.jsonl"), format!("{record}\n")).unwrap();

    let (server, log) = stub(|_, _| Reply::json(201, &json!({}))).await;
    let failures = dir.join("failures.jsonl");
    let names = [
        "export-1",
        "array.json",
        "lines.jsonl",
        "dlq.json",
        "fixed.jsonl",
    ];
    let mut command = cli(&server.base_url());
    command
        .current_dir(&dir)
        .args(["send", "--failures", "failures.jsonl"])
        .args(names);
    let output = run(&mut command).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let delivered = delivered_counts(&log);
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    let records: Vec<Value> = std::fs::read_to_string(&failures)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["source"], "lines.jsonl");
    assert_eq!(records[0]["line"], 2);
    assert_eq!(records[0]["raw"], "{\"type\": \"track\", oops");
    assert!(records[0]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("line 2: invalid JSON"));

    // --dry-run is plan.
    let plan = run(cli("eu")
        .current_dir(&dir)
        .args(["plan", "--compact"])
        .args(names))
    .await;
    let dry = run(cli("eu")
        .current_dir(&dir)
        .args(["send", "--dry-run", "--compact"])
        .args(names))
    .await;
    assert_eq!(plan.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&plan.stdout).lines().count(), 11);
    assert_eq!(plan.stdout, dry.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_comes_from_secrets_manager_with_secret_id() {
    let moto = moto::MotoServer::shared();
    moto.create_secret("kustomer/backfill", "{\"apiKey\": \"sk-from-moto\"}")
        .await;
    let (server, log) = stub(|_, _| Reply::json(201, &json!({}))).await;
    let dir = workdir("secret");
    let input = dir.join("events.jsonl");
    write_lines(&input, &[track(1, 1), track(2, 2)]);
    // `send --secret-id ID events.jsonl`, the key in no variable: only moto has it.
    let send_with_secret = |secret_id: &str| {
        let mut command = cli(&server.base_url());
        command
            .env_remove(lambda::LOCAL_API_KEY)
            .envs(moto.env_for_sdk())
            .args(["send", "--secret-id", secret_id])
            .arg(&input);
        command
    };
    let output = run(&mut send_with_secret("kustomer/backfill")).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(delivered_counts(&log).len(), 2);
    for request in server.requests() {
        assert_eq!(request.header("authorization"), Some("Bearer sk-from-moto"));
    }
    let missing = run(&mut send_with_secret("no/such")).await;
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(!stderr(&missing).contains("sk-from-moto"));
}

#[tokio::test]
async fn bad_options_and_settings_exit_2() {
    let dir = workdir("usage");
    let input = dir.join("events.jsonl");
    write_lines(&input, &[track(1, 1)]);
    let file = input.to_str().unwrap();
    let bad_in_flight = run(cli("us").args(["send", "--max-in-flight", "0", file])).await;
    assert_eq!(bad_in_flight.status.code(), Some(2));
    assert!(stderr(&bad_in_flight).contains("--max-in-flight"));
    let no_key = run(cli("us")
        .env_remove(lambda::LOCAL_API_KEY)
        .args(["send", file]))
    .await;
    assert_eq!(no_key.status.code(), Some(2));
    assert!(stderr(&no_key).contains("--secret-id"));
    let plan_only = run(cli("us").args(["plan", "--checkpoint", "x", file])).await;
    assert_eq!(plan_only.status.code(), Some(2));
    let same = run(cli("us").args(["send", "--failures", file, file])).await;
    assert_eq!(same.status.code(), Some(2));
    let missing = run(cli("us").args(["send", "no-such-file.jsonl"])).await;
    assert_eq!(missing.status.code(), Some(2));
}

/// Throughput figure for the README (a measurement, not a test: `cargo test --release
/// --test send -- --ignored --nocapture`): 2,000 workload events against the stub
/// answering after 50 ms, default concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_send_throughput() {
    let dir = workdir("throughput");
    let input = dir.join("workload.jsonl");
    write_lines(&input, &workload::events(2000, 42));
    let server = StubServer::start(|request: &Request| {
        let reply = match request.method.as_str() {
            "GET" => Reply::json(404, &json!({"errors": [{"status": 404}]})),
            "POST" if request.path() == "/v1/customers" => {
                Reply::json(201, &json!({"data": {"id": "c1"}}))
            }
            _ => Reply::json(200, &json!({"data": {"id": "c1"}})),
        };
        reply.with_delay(Duration::from_millis(50))
    })
    .await;
    let started = Instant::now();
    let output = run(cli(&server.base_url()).args(["send", input.to_str().unwrap()])).await;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("{}", stderr(&output));
    eprintln!(
        "send throughput: 2000 events in {elapsed:.1} s = {:.0} events/s, {:.2} requests/event",
        2000.0 / elapsed,
        server.requests().len() as f64 / 2000.0
    );
}
