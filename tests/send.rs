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

/// The binary under test: `RK_BIN` when set (the closing note's figures compare two
/// builds with the `measure_*` tests), else this build's.
fn binary() -> String {
    std::env::var("RK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rudder-kustomer").into())
}

/// The binary with none of this machine's settings, the test key and `base`.
fn std_cli(base: &str) -> std::process::Command {
    let mut command = std::process::Command::new(binary());
    for name in lambda::template_env_vars() {
        command.env_remove(name);
    }
    command
        .env_remove(lambda::LOCAL_API_KEY)
        .env(lambda::LOCAL_API_KEY, API_KEY)
        .env(lambda::BASE_ENDPOINT, base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn cli(base: &str) -> Command {
    let mut command = Command::from(std_cli(base));
    command.kill_on_drop(true);
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
    let (mut runs, mut interrupted, mut killed, mut died) = (0, 0, 0, 0);
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
            // Ctrl-C: the requests on the wire finished, the checkpoint is written.
            Some(130) => {}
            // SIGKILL (or SIGINT before the handler was installed).
            None => died += 1,
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
    // A clean stop repeats nothing; a kill at most the events in flight (8 by default).
    assert!(
        duplicates <= 8 * died,
        "{duplicates} events sent twice over {died} kills"
    );
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
    // Filed and summed up under one word, and reported as it was met.
    assert_eq!(records[0]["error"]["class"], "unreadable");
    assert_eq!(
        records[0]["error"]["message"],
        "line 2: invalid JSON at column 19: key must be a string"
    );
    let said = stderr(&output);
    assert!(
        said.contains("lines.jsonl: line 2: invalid JSON at column 19"),
        "{said}"
    );
    assert!(said.contains("(unreadable 1)"), "{said}");

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
/// answering after 50 ms, default concurrency; with `RK_CHECKPOINT` set, with a checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_send_throughput() {
    let dir = workdir("throughput");
    let input = dir.join("workload.jsonl");
    write_lines(&input, &workload::events(2000, 42));
    // Ids as Kustomer's (24 hex digits): a company id of another shape is unusable (issue 16).
    const ID: &str = "5f3c0ffee0000000000c0a01";
    let server = StubServer::start(|request: &Request| {
        let reply = match request.method.as_str() {
            "GET" => Reply::json(404, &json!({"errors": [{"status": 404}]})),
            "POST" if request.path() == "/v1/customers" => {
                Reply::json(201, &json!({"data": {"id": ID}}))
            }
            _ => Reply::json(200, &json!({"data": {"id": ID}})),
        };
        reply.with_delay(Duration::from_millis(50))
    })
    .await;
    let started = Instant::now();
    let mut command = cli(&server.base_url());
    command.arg("send").arg(&input);
    if std::env::var_os("RK_CHECKPOINT").is_some() {
        // The cost of writing the checkpoint as events end.
        command
            .arg("--checkpoint")
            .arg(dir.join("throughput.checkpoint"));
    }
    let output = run(&mut command).await;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("{}", stderr(&output));
    eprintln!(
        "send throughput: 2000 events in {elapsed:.1} s = {:.0} events/s, {:.2} requests/event",
        2000.0 / elapsed,
        server.requests().len() as f64 / 2000.0
    );
}

// =======================================================================================
// Issue 17: resume by content, stop in seconds, honest progress, fail fast.
// =======================================================================================

/// Runs `command` with `stdin` as its standard input.
async fn run_with_stdin(command: &mut Command, stdin: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = command.stdin(Stdio::piped()).spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).await.unwrap();
    drop(pipe);
    child.wait_with_output().await.unwrap()
}

fn lines_of(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .map(|e| format!("{e}\n"))
        .collect::<String>()
        .into_bytes()
}

/// A stub that accepts everything: the log of what it received.
async fn accepting(delay: Duration) -> (StubServer, Log) {
    stub(move |_, _| Reply::json(201, &json!({})).with_delay(delay)).await
}

fn assert_refused(output: &Output, needles: &[&str]) {
    let said = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    for needle in needles {
        assert!(said.contains(needle), "{needle:?} not in: {said}");
    }
}

/// Issue 17, item 1: a checkpoint names its inputs by content. A changed file under a
/// checkpointed name, or a partly done file replaced, is refused before anything is sent;
/// the same file by another path is the same input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_knows_its_inputs_by_content() {
    let dir = workdir("identity");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let input = dir.join("x.jsonl");
    let events: Vec<Value> = (0..20).map(|seq| track(seq % 4, seq)).collect();
    write_lines(&input, &events);
    let checkpoint = dir.join("job.checkpoint");
    let (server, log) = accepting(Duration::ZERO).await;
    let send = |name: &str| {
        let mut command = cli(&server.base_url());
        command
            .current_dir(dir.join("sub"))
            .args(["send", "--checkpoint"])
            .arg(&checkpoint)
            .arg(name);
        command
    };
    let first = run(&mut send("../x.jsonl")).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(delivered_counts(&log).len(), 20);
    // The same file by its absolute path: nothing left to send.
    let again = run(&mut send(input.to_str().unwrap())).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(server.requests().len(), 20, "sent again by another path");

    // New events under the checkpointed name: refused, and the message says how to go on.
    let other: Vec<Value> = (100..120).map(|seq| track(seq % 4, seq)).collect();
    write_lines(&input, &other);
    let changed = run(&mut send("../x.jsonl")).await;
    assert_refused(
        &changed,
        &["../x.jsonl changed since checkpoint", "--restart"],
    );
    assert_eq!(server.requests().len(), 20);
    // --restart starts over with the new content.
    let restarted = run(send("../x.jsonl").arg("--restart")).await;
    assert_eq!(restarted.status.code(), Some(0), "{}", stderr(&restarted));
    assert_eq!(delivered_counts(&log).len(), 40);

    // Partly done (Kustomer refused the key after 5 writes), then replaced.
    let partly = dir.join("partly.jsonl");
    write_lines(&partly, &events);
    let (refusing, _) = stub(|index, _| {
        if index < 5 {
            Reply::json(201, &json!({}))
        } else {
            Reply::json(403, &json!({"errors": [{"title": "Forbidden"}]}))
        }
    })
    .await;
    let partly_checkpoint = dir.join("partly.checkpoint");
    let args = |checkpoint: &Path| {
        vec![
            "send".to_string(),
            "--checkpoint".into(),
            checkpoint.to_string_lossy().into(),
            partly.to_string_lossy().into(),
        ]
    };
    let stopped = run(cli(&refusing.base_url()).args(args(&partly_checkpoint))).await;
    assert_eq!(stopped.status.code(), Some(3), "{}", stderr(&stopped));
    let mut replaced = lines_of(&other);
    replaced.truncate(lines_of(&events).len());
    std::fs::write(&partly, replaced).unwrap();
    let requests = refusing.requests().len();
    let refused = run(cli(&refusing.base_url()).args(args(&partly_checkpoint))).await;
    assert_refused(&refused, &["partly.jsonl changed since checkpoint"]);
    assert_eq!(refusing.requests().len(), requests);
}

/// Issue 17, item 1: stdin is named by a digest of what was read. The same stream again
/// sends nothing more; a different one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_over_stdin_refuses_other_events() {
    let dir = workdir("stdin");
    let checkpoint = dir.join("stdin.checkpoint");
    let (server, log) = accepting(Duration::ZERO).await;
    let send = || {
        let mut command = cli(&server.base_url());
        command
            .args(["send", "--checkpoint"])
            .arg(&checkpoint)
            .arg("-");
        command
    };
    let events: Vec<Value> = (0..10).map(|seq| track(seq, seq)).collect();
    let first = run_with_stdin(&mut send(), &lines_of(&events)).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let same = run_with_stdin(&mut send(), &lines_of(&events)).await;
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert_eq!(server.requests().len(), 10);
    let other: Vec<Value> = (50..60).map(|seq| track(seq, seq)).collect();
    let changed = run_with_stdin(&mut send(), &lines_of(&other)).await;
    assert_refused(&changed, &["stdin", "--restart"]);
    let longer: Vec<Value> = (0..11).map(|seq| track(seq, seq)).collect();
    let more = run_with_stdin(&mut send(), &lines_of(&longer)).await;
    assert_refused(&more, &["stdin has more"]);
    assert_eq!(delivered_counts(&log).len(), 10);
}

/// Issue 17, items 2 and 7: the first Ctrl-C under a slow rate ceiling stops new events at
/// once; the process exits once the requests on the wire are answered. The bound is the
/// issue's: 2 s after the signal plus the in-flight requests' time (the stub answers after
/// 300 ms; the expected figure is about that). A resume then repeats nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_ctrl_c_stops_in_seconds_and_a_resume_repeats_nothing() {
    let dir = workdir("ctrl-c");
    let input = dir.join("slow.jsonl");
    let total = 60;
    let events: Vec<Value> = (0..total).map(|seq| track(seq % 7, seq)).collect();
    write_lines(&input, &events);
    let delay = Duration::from_millis(300);
    let (server, log) = accepting(delay).await;
    let checkpoint = dir.join("slow.checkpoint");
    let mut command = cli(&server.base_url());
    command
        .args(["send", "--max-requests-per-minute", "300", "--checkpoint"])
        .arg(&checkpoint)
        .arg(&input);
    let child = command.spawn().unwrap();
    let pid = child.id().unwrap();
    let started = Instant::now();
    while server.requests().len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    interrupt(pid);
    let output = child.wait_with_output().await.unwrap();
    let took = signalled.elapsed();
    eprintln!("Ctrl-C to exit at 300 requests a minute: {took:?}");
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        took < Duration::from_secs(2) + delay,
        "exited {took:?} after the signal"
    );
    let summary = stderr(&output);
    let sent = delivered_counts(&log).len();
    assert!(
        summary.contains(&format!("{sent} events in")),
        "a true summary: {summary}"
    );
    // Resumed without the ceiling: everything else, nothing twice.
    let resumed = run(cli(&server.base_url())
        .args(["send", "--checkpoint"])
        .arg(&checkpoint)
        .arg(&input))
    .await;
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let delivered = delivered_counts(&log);
    assert_eq!(delivered.len(), total);
    assert!(
        delivered.values().all(|n| *n == 1),
        "sent twice: {delivered:?}"
    );
}

/// Issue 17, item 2: a second Ctrl-C stops at once, abandoning the requests on the wire
/// (answered here only after 3 s), and still writes the checkpoint and a true summary; the
/// resume sends the abandoned events again and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_stops_at_once_with_a_checkpoint_and_a_summary() {
    let dir = workdir("ctrl-c-twice");
    let input = dir.join("events.jsonl");
    let total = 30;
    write_lines(
        &input,
        &(0..total).map(|seq| track(seq, seq)).collect::<Vec<_>>(),
    );
    let slow = Duration::from_secs(3);
    let (server, log) = stub(move |index, _| {
        // The first event (tried alone) is answered at once, the 4 after it hang on (less
        // than the request timeout), the rest (the resume) are answered at once.
        let delay = if (1..=4).contains(&index) {
            slow
        } else {
            Duration::ZERO
        };
        Reply::json(201, &json!({})).with_delay(delay)
    })
    .await;
    let checkpoint = dir.join("twice.checkpoint");
    let send = || {
        let mut command = cli(&server.base_url());
        command
            .args(["send", "--max-in-flight", "4", "--checkpoint"])
            .arg(&checkpoint)
            .arg(&input);
        command
    };
    let child = send().spawn().unwrap();
    let pid = child.id().unwrap();
    let started = Instant::now();
    while server.requests().len() < 5 {
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    interrupt(pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    interrupt(pid);
    let output = child.wait_with_output().await.unwrap();
    let took = signalled.elapsed();
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{said}");
    assert!(took < slow, "waited {took:?} for the requests on the wire");
    // The summary counts the one event finished, and the requests made.
    assert!(said.contains("1 events in"), "{said}");
    assert!(said.contains("Kustomer requests 1 "), "{said}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["delivered"], 1, "{saved}");
    let resumed = run(&mut send()).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let delivered = delivered_counts(&log);
    assert_eq!(delivered.len(), total);
    let repeated: usize = delivered.values().map(|n| n - 1).sum();
    assert!(repeated <= 4, "{repeated} sent twice");
}

/// Issue 17, item 2: progress is recorded per event, so a SIGKILL repeats at most the
/// events that were in flight (`--max-in-flight` of them), not a chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_repeats_at_most_the_events_in_flight() {
    let dir = workdir("sigkill");
    let input = dir.join("events.jsonl");
    let total = 400;
    let events: Vec<Value> = (0..total).map(|seq| track(seq % 40, seq)).collect();
    write_lines(&input, &events);
    let (server, log) = accepting(Duration::from_millis(10)).await;
    let checkpoint = dir.join("kill.checkpoint");
    let in_flight = 4;
    let send = || {
        let mut command = cli(&server.base_url());
        command
            .args(["send", "--max-in-flight", &in_flight.to_string()])
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg(&input);
        command
    };
    let mut kills = 0;
    for _ in 0..5 {
        let before = server.requests().len();
        let mut child = send().spawn().unwrap();
        let started = Instant::now();
        while server.requests().len() < before + 40 && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if child.try_wait().unwrap().is_none() {
            child.start_kill().unwrap();
            kills += 1;
        }
        child.wait().await.unwrap();
    }
    let last = run(&mut send()).await;
    assert_eq!(last.status.code(), Some(0), "{}", stderr(&last));
    let delivered = delivered_counts(&log);
    assert_eq!(delivered.len(), total, "an event was lost");
    let repeated: usize = delivered.values().map(|n| n - 1).sum();
    eprintln!("SIGKILL: {kills} kills, {repeated} events sent twice (at most {in_flight} each)");
    assert!(kills > 0);
    assert!(
        repeated <= in_flight * kills,
        "{repeated} repeats over {kills} kills"
    );
}

/// Issue 17, item 4: a wrong key stops the run after a handful of requests (exit 3), with
/// the checkpoint written and no failure record for events Kustomer never judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_the_run_after_a_few_requests() {
    let dir = workdir("wrong-key");
    let input = dir.join("events.jsonl");
    write_lines(
        &input,
        &(0..500).map(|seq| track(seq % 50, seq)).collect::<Vec<_>>(),
    );
    let (server, _) = stub(|_, _| {
        Reply::json(401, &json!({"errors": [{"title": "Unauthorized"}]}))
            .with_delay(Duration::from_millis(30))
    })
    .await;
    let (checkpoint, failures) = (dir.join("key.checkpoint"), dir.join("failures.jsonl"));
    let output = run(cli(&server.base_url())
        .env(lambda::LOCAL_API_KEY, "wrong")
        .args(["send", "--checkpoint"])
        .arg(&checkpoint)
        .arg("--failures")
        .arg(&failures)
        .arg(&input))
    .await;
    let said = stderr(&output);
    eprintln!("wrong key: {} requests", server.requests().len());
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(said.contains("Kustomer refused the API key"), "{said}");
    assert!(server.requests().len() <= 10, "{}", server.requests().len());
    assert_eq!(std::fs::read_to_string(&failures).unwrap(), "");
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["delivered"], 0);
    assert_eq!(saved["failed"], 0);
}

/// Issue 17, item 5: everything that can be checked is checked before the first request,
/// with exit 2, and the messages say what is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_are_refused_before_the_first_request() {
    let dir = workdir("up-front");
    let input = dir.join("events.jsonl");
    write_lines(&input, &[track(1, 1), track(2, 2)]);
    let file = input.to_str().unwrap();
    let (server, _) = accepting(Duration::ZERO).await;
    let send = |args: &[&str]| {
        let mut command = cli(&server.base_url());
        command.arg("send").args(args);
        command
    };
    let directory = run(&mut send(&[file, dir.to_str().unwrap()])).await;
    assert_refused(&directory, &["is a directory: name the files in it"]);
    let nowhere = dir.join("no-such-dir").join("x");
    let nowhere = nowhere.to_str().unwrap();
    let checkpoint = run(&mut send(&["--checkpoint", nowhere, file])).await;
    assert_refused(&checkpoint, &["cannot write checkpoint"]);
    let failures = run(&mut send(&["--failures", nowhere, file])).await;
    assert_refused(&failures, &["cannot write --failures"]);
    let twice = run(send(&[file]).current_dir(&dir).arg("events.jsonl")).await;
    assert_refused(&twice, &["are the same file"]);
    let restart = run(&mut send(&["--restart", file])).await;
    assert_refused(&restart, &["--restart"]);
    let one = dir.join("one.file");
    let one = one.to_str().unwrap();
    let shared = run(&mut send(&["--checkpoint", one, "--failures", one, file])).await;
    assert_refused(&shared, &["name the same file"]);
    let ftp = run(cli("ftp://example.com").args(["send", file])).await;
    assert_refused(&ftp, &["https", "loopback", "us, eu, in"]);
    let cap = run(&mut send(&["--max-record-bytes", "12", file])).await;
    assert_refused(&cap, &["--max-record-bytes must be a whole number from"]);
    assert_eq!(server.requests().len(), 0, "a request went out");
}

/// Issue 17, item 6: after a 429 with Retry-After, the first request after the wait goes
/// alone; the next one only after its answer (300 ms later here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_the_first_request_goes_alone() {
    let dir = workdir("probe");
    let input = dir.join("events.jsonl");
    write_lines(
        &input,
        &(0..40).map(|seq| track(seq, seq)).collect::<Vec<_>>(),
    );
    let answer = Duration::from_millis(300);
    let (server, log) = stub(move |index, _| match index {
        // The first event goes alone (the key check); then 8 in flight get a 429.
        0 => Reply::json(201, &json!({})),
        1..=8 => Reply::json(429, &json!({}))
            .with_header("Retry-After", "1")
            .with_delay(Duration::from_millis(100)),
        _ => Reply::json(201, &json!({})).with_delay(answer),
    })
    .await;
    let output = run(cli(&server.base_url()).args(["send", input.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let times: Vec<Instant> = log.lock().unwrap().iter().map(|e| e.3).collect();
    assert!(times.len() > 10);
    let throttled_at = times[8];
    assert!(
        times[9] - throttled_at >= Duration::from_millis(900),
        "Retry-After not honoured"
    );
    let gap = times[10] - times[9];
    eprintln!("after the 429s: the second request came {gap:?} after the first");
    assert!(
        gap >= answer - Duration::from_millis(50),
        "a request started beside the probe: {gap:?}"
    );
}

/// The merge of issues 17 and 18 in `send`: a user's events after a retryable failure are
/// held (no request) and filed after it, in order, so that replaying the failures file
/// keeps the user's order; a repeated messageId is not sent again and counts as delivered,
/// named in the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_follow_their_failure_and_duplicates_count_as_delivered() {
    held_events_follow_their_failure("held", "1000").await;
}

/// One event a chunk: a user's later event is in another delivery than its failure, and
/// still held behind it (never delivered ahead of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_follow_their_failure_across_chunks() {
    held_events_follow_their_failure("held-chunks", "1").await;
}

async fn held_events_follow_their_failure(name: &str, chunk_size: &str) {
    let dir = workdir(name);
    let input = dir.join("events.jsonl");
    // user-9 first (the key check goes alone), then user-0's three events, the second of
    // them failing for good (503), and user-5's event twice.
    let events = [
        track(9, 0),
        track(0, 1),
        track(0, 2),
        track(0, 3),
        track(5, 4),
        track(5, 4),
    ];
    write_lines(&input, &events);
    let (server, log) = stub(|_, seq| match seq {
        Some(2) => Reply::empty(503),
        _ => Reply::json(201, &json!({})),
    })
    .await;
    let failures = dir.join("failures.jsonl");
    let output = run(cli(&server.base_url()).args([
        "send",
        "--max-attempts",
        "1",
        "--chunk-size",
        chunk_size,
        "--failures",
        failures.to_str().unwrap(),
        input.to_str().unwrap(),
    ]))
    .await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("6 events in")
            && said.contains("delivered 4 (0 unchanged, 1 duplicate), failed 2 (transient 2)"),
        "{said}"
    );
    let sent: Vec<Option<u64>> = log.lock().unwrap().iter().map(|e| e.0).collect();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort_unstable();
    assert_eq!(
        sent_sorted,
        [Some(0), Some(1), Some(2), Some(4)],
        "{sent:?}"
    );
    // seq 1 delivered, seq 2 failed, seq 3 held behind it: filed after it.
    assert_eq!(failure_seqs(&failures), [2, 3]);
}

/// Opens a pseudo-terminal: (master, slave).
fn pty() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd as _;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors, owned by what is returned.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors are open and owned by nothing else.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

/// Runs `command` with stderr on a pseudo-terminal: its status and what the terminal
/// showed, as (when, text) per redraw.
fn run_on_terminal(mut command: std::process::Command) -> (Option<i32>, Vec<(Instant, String)>) {
    use std::io::Read as _;
    let (mut master, slave) = pty();
    command.stderr(Stdio::from(slave));
    let mut child = command.spawn().unwrap();
    // The parent's copy of the slave end closes here, so reads end when the child exits.
    drop(command);
    let reader = std::thread::spawn(move || {
        let mut shown = Vec::new();
        let mut buffer = [0u8; 4096];
        // EIO once the child has exited: the end of the terminal's output.
        while let Ok(n @ 1..) = master.read(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            shown.push((Instant::now(), text));
        }
        shown
    });
    let status = child.wait().unwrap();
    let chunks = reader.join().unwrap();
    // Split into redraws: each starts with "\r\x1b[2K".
    let mut lines: Vec<(Instant, String)> = Vec::new();
    for (at, text) in chunks {
        for (n, piece) in text.split('\r').enumerate() {
            match lines.last_mut() {
                Some(last) if n == 0 => last.1.push_str(piece),
                _ => lines.push((at, piece.trim_start_matches("\x1b[2K").to_string())),
            }
        }
    }
    (status.code(), lines)
}

/// One progress line: (done, total, percent, has elapsed, has ETA).
fn progress_of(line: &str) -> Option<(u64, u64, u64, bool, bool)> {
    let (done, rest) = line.split_once('/')?;
    let (total, rest) = rest.split_once(" events (")?;
    let (percent, _) = rest.split_once(" %)")?;
    Some((
        done.trim().parse().ok()?,
        total.parse().ok()?,
        percent.parse().ok()?,
        line.contains(", elapsed "),
        line.contains(", ETA "),
    ))
}

/// Issue 17, item 3: seen through a terminal, the progress line shows done/total, the
/// elapsed time and an ETA, and never 100 % before the last event is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_line_counts_finished_events_against_the_total() {
    let dir = workdir("progress");
    let input = dir.join("events.jsonl.gz");
    let total = 300u64;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for seq in 0..total as usize {
        writeln!(gz, "{}", track(seq % 30, seq)).unwrap();
    }
    std::fs::write(&input, gz.finish().unwrap()).unwrap();
    let (server, _) = accepting(Duration::from_millis(20)).await;
    let mut command = std_cli(&server.base_url());
    command.args(["send", "--max-in-flight", "2", "--chunk-size", "1000"]);
    command.arg(&input);
    let (status, lines) = tokio::task::spawn_blocking(move || run_on_terminal(command))
        .await
        .unwrap();
    assert_eq!(status, Some(0), "{lines:?}");
    let progress: Vec<_> = lines.iter().filter_map(|(_, l)| progress_of(l)).collect();
    assert!(progress.len() >= 3, "{lines:?}");
    for (done, shown_total, percent, elapsed, _) in &progress {
        assert_eq!(*shown_total, total);
        assert!(done <= shown_total);
        assert!(
            *percent < 100 || done == shown_total,
            "{percent} % at {done}"
        );
        assert!(elapsed);
    }
    assert!(progress.iter().any(|p| p.4), "no ETA shown: {lines:?}");
    let summary = lines.iter().map(|(_, l)| l.as_str()).collect::<String>();
    assert!(summary.contains("300 events in"), "{summary}");
}

// =======================================================================================
// The closing note's figures (measured, never asserted): run against this build and
// against another with RK_BIN=path, e.g.
//   RK_BIN=/tmp/before/rudder-kustomer cargo test --test send measure_ -- --ignored --nocapture --test-threads=1
// =======================================================================================

/// 1,000 events of 100 users as JSON Lines: a default chunk.
fn thousand_events(dir: &Path) -> PathBuf {
    let input = dir.join("events.jsonl");
    let events: Vec<Value> = (0..1000).map(|seq| track(seq % 100, seq)).collect();
    write_lines(&input, &events);
    input
}

/// 3,000 events of 300 users as gzip JSON Lines (the trial); as plain JSON Lines
/// with `RK_PLAIN` set (the build before issue 17 shows no ETA for gzip input).
fn trial_input(dir: &Path) -> PathBuf {
    let events: Vec<Value> = (0..3000).map(|seq| track(seq % 300, seq)).collect();
    if std::env::var_os("RK_PLAIN").is_some() {
        let input = dir.join("trial.jsonl");
        write_lines(&input, &events);
        return input;
    }
    let input = dir.join("trial.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for event in &events {
        writeln!(gz, "{event}").unwrap();
    }
    std::fs::write(&input, gz.finish().unwrap()).unwrap();
    input
}

/// The stub Kustomer: 30 ms latency, 503s, connection resets, a 5 s storm of
/// 429s (from the 1,500th request), and an organisation budget of 700 requests per 20 s
/// window, advertised on every answer.
async fn trial_stub() -> (StubServer, Log) {
    let window = Mutex::new((Instant::now(), 0u32));
    let storm: Mutex<Option<Instant>> = Mutex::default();
    let (limit, length) = (700u32, Duration::from_secs(20));
    stub(move |index, _| {
        let mut budget = window.lock().unwrap();
        if budget.0.elapsed() >= length {
            *budget = (Instant::now(), 0);
        }
        budget.1 += 1;
        let reset = length.saturating_sub(budget.0.elapsed()).as_secs().max(1);
        let latency = Duration::from_millis(30);
        let storming = index >= 1500
            && storm
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now)
                .elapsed()
                < Duration::from_secs(5);
        let reply = if budget.1 > limit {
            Reply::json(429, &json!({})).with_header("Retry-After", &reset.to_string())
        } else if storming {
            Reply::json(429, &json!({})).with_header("Retry-After", "1")
        } else if index % 53 == 7 {
            Reply::empty(503)
        } else if index % 71 == 11 {
            return Reply::reset().with_delay(latency);
        } else {
            Reply::json(201, &json!({}))
        };
        reply
            .with_header("x-ratelimit-limit", &limit.to_string())
            .with_header(
                "x-ratelimit-remaining",
                &limit.saturating_sub(budget.1).to_string(),
            )
            .with_header("x-ratelimit-reset", &reset.to_string())
            .with_delay(latency)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_ctrl_c_to_exit_at_300_requests_a_minute() {
    let dir = workdir("measure-ctrl-c");
    let input = thousand_events(&dir);
    let (server, _) = accepting(Duration::from_millis(30)).await;
    let child = cli(&server.base_url())
        .args(["send", "--max-requests-per-minute", "300", "--checkpoint"])
        .arg(dir.join("ck"))
        .arg(&input)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let signalled = Instant::now();
    interrupt(child.id().unwrap());
    let output = child.wait_with_output().await.unwrap();
    eprintln!(
        "FIGURE ctrl-c to exit at 300/min: {:.2} s (exit {:?}, {} requests)\n{}",
        signalled.elapsed().as_secs_f64(),
        output.status.code(),
        server.requests().len(),
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_events_repeated_per_sigkill() {
    let dir = workdir("measure-kill");
    let input = trial_input(&dir);
    let (server, log) = accepting(Duration::from_millis(30)).await;
    let checkpoint = dir.join("ck");
    let mut kills = 0;
    loop {
        let mut child = cli(&server.base_url())
            .args(["send", "--checkpoint"])
            .arg(&checkpoint)
            .arg(&input)
            .spawn()
            .unwrap();
        if kills < 5 {
            tokio::time::sleep(Duration::from_millis(1500 + fastrand::u64(..1000))).await;
            if child.try_wait().unwrap().is_none() {
                child.start_kill().unwrap();
                kills += 1;
                child.wait().await.unwrap();
                continue;
            }
        }
        child.wait().await.unwrap();
        break;
    }
    let delivered = delivered_counts(&log);
    let repeated: usize = delivered.values().map(|n| n - 1).sum();
    eprintln!(
        "FIGURE SIGKILL: {kills} kills, {repeated} events sent twice ({:.0} per kill), {} of 3000 delivered",
        repeated as f64 / kills.max(1) as f64,
        delivered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_requests_with_a_wrong_key() {
    let dir = workdir("measure-key");
    let input = thousand_events(&dir);
    let (server, _) = stub(|_, _| {
        Reply::json(401, &json!({"errors": [{"title": "Unauthorized"}]}))
            .with_delay(Duration::from_millis(30))
    })
    .await;
    let failures = dir.join("failures.jsonl");
    let started = Instant::now();
    let output = run(cli(&server.base_url())
        .env(lambda::LOCAL_API_KEY, "wrong")
        .args(["send", "--failures"])
        .arg(&failures)
        .arg(&input))
    .await;
    let records = std::fs::read_to_string(&failures)
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!(
        "FIGURE wrong key: {} requests in {:.1} s, exit {:?}, {records} failure records",
        server.requests().len(),
        started.elapsed().as_secs_f64(),
        output.status.code()
    );
}

/// `2h03m`, `1m02s`, `4.2s` back to seconds.
fn seconds_of(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Some((h, m)) = text.split_once('h') {
        return Some(
            h.parse::<f64>().ok()? * 3600.0 + m.trim_end_matches('m').parse::<f64>().ok()? * 60.0,
        );
    }
    if let Some((m, s)) = text.split_once('m') {
        return Some(m.parse::<f64>().ok()? * 60.0 + s.trim_end_matches('s').parse::<f64>().ok()?);
    }
    text.trim_end_matches('s').parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_eta_error() {
    let dir = workdir("measure-eta");
    let input = trial_input(&dir);
    let (server, _) = trial_stub().await;
    let mut command = std_cli(&server.base_url());
    command
        .arg("send")
        .arg("--failures")
        .arg(dir.join("failures.jsonl"))
        .arg(&input);
    let (status, lines) = tokio::task::spawn_blocking(move || run_on_terminal(command))
        .await
        .unwrap();
    let end = lines.last().map(|(at, _)| *at).unwrap();
    // Both builds' lines start with the events done and carry `ETA <duration>`.
    let shown: Vec<(Instant, u64, Option<f64>, &str)> = lines
        .iter()
        .filter_map(|(at, line)| {
            let done = line
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            let eta = line
                .split_once("ETA ")
                .and_then(|(_, rest)| seconds_of(rest.split([';', ',']).next()?));
            Some((*at, done, eta, line.as_str()))
        })
        .collect();
    let mut figures = Vec::new();
    for share in [0.25, 0.5, 0.75] {
        let Some((when, done, eta, line)) = shown
            .iter()
            .find(|(_, done, ..)| *done as f64 >= share * 3000.0)
        else {
            continue;
        };
        let actual = end.duration_since(*when).as_secs_f64();
        figures.push(match eta {
            Some(eta) => format!(
                "{:.0} %: ETA {eta:.0} s, actual {actual:.0} s, error {:+.0} % (at {done} events)",
                share * 100.0,
                (eta - actual) / actual * 100.0
            ),
            None => format!(
                "{:.0} %: no ETA, actual {actual:.0} s left (shown: {line:?})",
                share * 100.0
            ),
        });
    }
    let etas: Vec<f64> = shown.iter().filter_map(|(_, _, eta, _)| *eta).collect();
    eprintln!(
        "FIGURE ETA (exit {status:?}, run {:.0} s, ETA shown from {:.0} to {:.0} s): {}",
        end.duration_since(lines[0].0).as_secs_f64(),
        etas.iter().copied().fold(f64::INFINITY, f64::min),
        etas.iter().copied().fold(0.0, f64::max),
        figures.join("; ")
    );
    eprintln!("{}", lines.last().map(|(_, l)| l.as_str()).unwrap_or(""));
}
