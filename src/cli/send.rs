//! `send`: reads events in chunks and delivers each chunk through the Lambda's own
//! [`Pipeline`] (per-user order, concurrency, pacing, customer-id cache, retries), then
//! appends the chunk's failures to `--failures` and moves the `--checkpoint` on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::checkpoint::{Checkpoint, InputProgress};
use super::input::{Input, Item, Located};
use super::options::setting_problem;
use super::progress::{self, Progress, Snapshot};
use super::{Options, EXIT_INTERRUPTED, EXIT_SOME_FAILED, EXIT_USAGE};
use crate::outcome::Report;
use crate::outcome::{Outcome, DELIVERED_OUTCOMES};
use crate::pipeline::Pipeline;
use crate::settings::lambda::{self, LambdaSettings};

/// A chunk has this long; far more than any backfill chunk needs, so only the pipeline's
/// own retry limits end an event.
const CHUNK_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Why a run stopped early.
enum Stop {
    Usage(String),
    Failed(String),
}

pub fn run(program: &str, options: &Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{program}: cannot start: {e}");
            return ExitCode::from(EXIT_SOME_FAILED);
        }
    };
    match runtime.block_on(send(program, options)) {
        Ok(status) => ExitCode::from(status),
        Err(Stop::Usage(message)) => {
            eprintln!("{program}: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Stop::Failed(message)) => {
            eprintln!("{program}: {message}");
            ExitCode::from(EXIT_SOME_FAILED)
        }
    }
}

/// The function's settings: flags first, then the same environment variables.
fn settings(options: &Options) -> Result<LambdaSettings, String> {
    let given: BTreeMap<&str, &String> = options.settings.iter().map(|(k, v)| (*k, v)).collect();
    let lookup = |name: &str| {
        given
            .get(name)
            .map(|v| v.to_string())
            .or_else(|| std::env::var(name).ok())
    };
    let mut config = LambdaSettings::from_lookup(lookup).map_err(|e| {
        if e.setting == lambda::SECRET_ID && lookup(lambda::LOCAL_API_KEY).is_none() {
            format!(
                "no API key: set {} or give --secret-id ({})",
                lambda::LOCAL_API_KEY,
                lambda::SECRET_ID
            )
        } else {
            setting_problem(&e)
        }
    })?;
    // The mapping settings were read with plan's (flags, then the same variables).
    config.base = options.base.clone();
    config.flags = options.flags;
    Ok(config)
}

/// Where failure records go.
enum Sink {
    File(File),
    Stdout,
}

impl Sink {
    /// Appends the records and makes them durable before the checkpoint moves past them.
    fn append(&mut self, records: &[Value]) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for record in records {
            text.push_str(&record.to_string());
            text.push('\n');
        }
        let result = match self {
            Sink::File(file) => file
                .write_all(text.as_bytes())
                .and_then(|()| file.sync_data()),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
        };
        result.map_err(|e| format!("cannot write the failures: {e}"))
    }
}

/// This run's figures, for the progress line and the summary.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    /// Failure class → events; `unreadable` for input that is not an event.
    failed: BTreeMap<&'static str, u64>,
    requests: u64,
    retries: u64,
    throttles: u64,
    cache_hits: u64,
    /// Delivered without a write: an unchanged update, a repeated messageId.
    unchanged: u64,
    duplicates: u64,
}

impl Tally {
    fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// SIGINT/SIGTERM count: the first lets the chunk in flight finish, the second stops.
fn watch_signals() -> Result<watch::Receiver<u32>, String> {
    let (sender, receiver) = watch::channel(0u32);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let problem = |e: std::io::Error| format!("cannot watch for signals: {e}");
        let mut interrupt = signal(SignalKind::interrupt()).map_err(problem)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(problem)?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                sender.send_modify(|count| *count += 1);
            }
        });
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                sender.send_modify(|count| *count += 1);
            }
        });
    }
    Ok(receiver)
}

async fn send(program: &str, options: &Options) -> Result<u8, Stop> {
    let config = settings(options).map_err(Stop::Usage)?;
    let pipeline = Pipeline::new(&config).map_err(|e| Stop::Usage(e.to_string()))?;
    let pipeline = &pipeline;
    let inputs = options.inputs();
    let mut sizes = Vec::new();
    for name in &inputs {
        if name == "-" {
            sizes.push(None);
            continue;
        }
        let metadata =
            std::fs::metadata(name).map_err(|e| Stop::Usage(format!("cannot read {name}: {e}")))?;
        sizes.push(Some(metadata.len()));
        if let Some(failures) = &options.failures {
            if same_file(failures, name) {
                return Err(Stop::Usage(format!(
                    "--failures {} is also an input: write the failures of a replay to a new file",
                    failures.display()
                )));
            }
        }
    }
    let total_bytes: Option<u64> = sizes.iter().copied().sum();
    let mut checkpoint = match &options.checkpoint {
        Some(path) => Checkpoint::load(path).map_err(Stop::Usage)?,
        None => Checkpoint::default(),
    };
    let mut sink = match &options.failures {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Sink::File)
            .map_err(|e| Stop::Usage(format!("cannot open {}: {e}", path.display())))?,
        None => Sink::Stdout,
    };
    // A missing or unreadable key stops here, not as one failure per event.
    pipeline
        .keys()
        .current()
        .await
        .map_err(|failure| Stop::Usage(format!("cannot get the API key: {}", failure.message)))?;
    let mut signals = watch_signals().map_err(Stop::Failed)?;

    let mut progress = Progress::default();
    let mut tally = Tally::default();
    let mut bytes_done = 0u64;
    let mut bytes_at_start = None;
    let mut interrupted = false;
    'inputs: for (name, size) in inputs.iter().zip(&sizes) {
        let mut state: InputProgress = checkpoint.inputs.get(name).cloned().unwrap_or_default();
        if state.done {
            bytes_done += size.unwrap_or(0);
            continue;
        }
        let mut input = Input::open_at(name, state.next).map_err(Stop::Failed)?;
        bytes_at_start.get_or_insert(bytes_done + input.bytes_read());
        loop {
            if *signals.borrow_and_update() > 0 {
                interrupted = true;
                break 'inputs;
            }
            let mut chunk: Vec<Located> = Vec::with_capacity(options.chunk_size.min(10_000));
            let mut end = false;
            while chunk.len() < options.chunk_size {
                match input.next_item() {
                    Ok(Some(item)) => chunk.push(item),
                    Ok(None) => {
                        end = true;
                        break;
                    }
                    Err(e) => {
                        progress.clear();
                        summary(program, &tally, &progress, &checkpoint, options);
                        return Err(Stop::Failed(format!(
                            "cannot read {name} after event {}: {e}",
                            state.events + chunk.len() as u64
                        )));
                    }
                }
            }
            let next = input.position();
            let mut events = Vec::new();
            for located in &mut chunk {
                if let Item::Event(event) = &mut located.item {
                    events.push(std::mem::take(event));
                }
            }
            let base = Snapshot {
                events: tally.delivered + tally.failed_total(),
                delivered: tally.delivered,
                failed: tally.failed_total(),
                bytes: bytes_done + input.bytes_read(),
                bytes_at_start: bytes_at_start.unwrap_or(0),
                total_bytes,
            };
            let Some(reports) = deliver(pipeline, &events, &mut signals, &mut progress, base).await
            else {
                // Stopped at once: the checkpoint still points at this chunk's start.
                interrupted = true;
                break 'inputs;
            };
            let counts = pipeline.metrics().take();
            tally.requests += counts.requests.values().sum::<u64>();
            tally.retries += counts.retries;
            tally.throttles += counts.throttles;
            tally.cache_hits += counts.cache_hits;
            tally.unchanged += counts.updates_skipped;
            tally.duplicates += counts.duplicates_skipped;

            let mut records = Vec::new();
            let (mut delivered, mut failed) = (0, 0);
            let mut reports = reports.into_iter().zip(events);
            for located in chunk {
                let (record, class) = match located.item {
                    Item::Event(_) => match reports.next() {
                        Some((report, event)) => {
                            match failure_record(&report, event, name, located.line) {
                                None => {
                                    delivered += 1;
                                    continue;
                                }
                                Some(found) => found,
                            }
                        }
                        None => continue,
                    },
                    Item::Unreadable { message, raw } => (
                        json!({
                            "raw": raw,
                            "error": { "class": "permanent", "status": 400, "message": message },
                            "source": name, "line": located.line,
                        }),
                        "unreadable",
                    ),
                };
                failed += 1;
                *tally.failed.entry(class).or_default() += 1;
                records.push(record);
            }
            tally.delivered += delivered;
            sink.append(&records).map_err(Stop::Failed)?;
            state.events += delivered + failed;
            state.next = next;
            state.done = end;
            checkpoint.delivered += delivered;
            checkpoint.failed += failed;
            checkpoint.inputs.insert(name.clone(), state.clone());
            if let Some(path) = &options.checkpoint {
                checkpoint.save(path).map_err(Stop::Failed)?;
            }
            if end {
                bytes_done += size.unwrap_or(0);
                break;
            }
        }
    }
    progress.clear();
    summary(program, &tally, &progress, &checkpoint, options);
    if interrupted {
        eprintln!(
            "{program}: interrupted; run the same command again to continue{}",
            if options.checkpoint.is_some() {
                ""
            } else {
                " (without --checkpoint it starts over)"
            }
        );
        return Ok(EXIT_INTERRUPTED);
    }
    let failed = if options.checkpoint.is_some() {
        checkpoint.failed
    } else {
        tally.failed_total()
    };
    Ok(if failed > 0 { EXIT_SOME_FAILED } else { 0 })
}

/// Delivers one chunk, showing progress; `None` when a second signal says stop now.
async fn deliver(
    pipeline: &Pipeline,
    events: &[Value],
    signals: &mut watch::Receiver<u32>,
    progress: &mut Progress,
    base: Snapshot,
) -> Option<Vec<Report>> {
    let delivery = pipeline.deliver_all(events, Instant::now() + CHUNK_DEADLINE);
    tokio::pin!(delivery);
    let mut ticker = tokio::time::interval(progress.tick());
    loop {
        tokio::select! {
            reports = &mut delivery => return Some(reports),
            _ = ticker.tick() => {
                let counts = pipeline.metrics().snapshot();
                let (mut delivered, mut failed) = (0, 0);
                for ((_, outcome), n) in &counts.events {
                    if DELIVERED_OUTCOMES.contains(outcome) { delivered += n } else { failed += n }
                }
                progress.show(&Snapshot {
                    events: base.events + delivered + failed,
                    delivered: base.delivered + delivered,
                    failed: base.failed + failed,
                    ..base
                });
            }
            changed = signals.changed() => {
                if changed.is_err() || *signals.borrow_and_update() >= 2 {
                    return None;
                }
                progress.note(&format!(
                    "interrupted: finishing the {} events in flight, then saving the checkpoint \
                     (interrupt again to stop now; those events are sent again on resume)",
                    events.len()
                ));
            }
        }
    }
}

/// The failures-file record of a failed event (its class for the summary), `None` when
/// it was delivered. Fields as the dead-letter queue's message attributes.
fn failure_record(
    report: &Report,
    event: Value,
    source: &str,
    line: u64,
) -> Option<(Value, &'static str)> {
    match &report.outcome {
        Outcome::Delivered(_) => None,
        Outcome::Failed(failure) => Some((
            json!({
                "event": event,
                "error": {
                    "class": failure.class.as_str(),
                    "status": failure.status,
                    "message": failure.message,
                },
                "attempts": report.attempts,
                "source": source,
                "line": line,
            }),
            failure.class.as_str(),
        )),
    }
}

fn summary(
    program: &str,
    tally: &Tally,
    progress: &Progress,
    checkpoint: &Checkpoint,
    options: &Options,
) {
    let events = tally.delivered + tally.failed_total();
    let elapsed = progress.elapsed();
    let classes: Vec<String> = tally
        .failed
        .iter()
        .map(|(class, n)| format!("{class} {n}"))
        .collect();
    let skipped = match (tally.unchanged, tally.duplicates) {
        (0, 0) => String::new(),
        (unchanged, duplicates) => format!(" ({unchanged} unchanged, {duplicates} duplicate)"),
    };
    eprintln!(
        "{program}: {events} events in {} ({:.0}/s): delivered {}{skipped}, failed {}{}",
        progress::duration(elapsed),
        events as f64 / elapsed.as_secs_f64().max(0.001),
        tally.delivered,
        tally.failed_total(),
        if classes.is_empty() {
            String::new()
        } else {
            format!(" ({})", classes.join(", "))
        }
    );
    eprintln!(
        "{program}: Kustomer requests {} ({:.2} per event), retries {}, throttles {}, customer-cache hits {}",
        tally.requests,
        tally.requests as f64 / events.max(1) as f64,
        tally.retries,
        tally.throttles,
        tally.cache_hits
    );
    if let Some(path) = &options.checkpoint {
        eprintln!(
            "{program}: whole job ({}): delivered {}, failed {}",
            path.display(),
            checkpoint.delivered,
            checkpoint.failed
        );
    }
    if tally.failed_total() > 0 {
        if let Some(path) = &options.failures {
            eprintln!(
                "{program}: failed events are in {}; fix them and send that file again",
                path.display()
            );
        }
    }
}

fn same_file(a: &std::path::Path, b: &str) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
