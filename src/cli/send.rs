//! `send`: reads events in chunks and delivers each chunk through the Lambda's own
//! [`Pipeline`] (per-user order, concurrency, pacing, customer-id cache, retries). Each
//! event's outcome is made durable as it ends (`journal.rs`): its failure record, then
//! the checkpoint. Everything that can be checked is checked before the first request.
//!
//! Stopping: the first Ctrl-C (or SIGTERM) stops the pipeline: no event and no request
//! starts any more, the requests on the wire finish; a second one stops at once. Either
//! way the checkpoint holds exactly the finished events and the summary is true. A 401
//! that outlives the key's reload, or a 403, stops the run the same way (exit 3): the
//! events it refused are not failures of theirs and stay for the next run.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::checkpoint::{check_writable, Checkpoint, FileIdentity, InputState};
use super::input::{count_items, Input, Item, ReadOptions, Resume};
use super::journal::{Journal, Sink};
use super::options::setting_problem;
use super::progress::{self, Progress, Snapshot};
use super::{Options, EXIT_INTERRUPTED, EXIT_REFUSED_KEY, EXIT_SOME_FAILED, EXIT_USAGE};
use crate::outcome::{Delivered, FailureClass, Outcome, Report, Skipped};
use crate::pipeline::{user_of, Hooks, Pipeline};
use crate::settings::lambda::{self, LambdaSettings};
use kustomer_mapping::EventType;

/// A chunk has this long; far more than any backfill chunk needs, so only the pipeline's
/// own retry limits end an event.
const CHUNK_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// Until an event is delivered, events go one at a time (at most this many): a refused
/// key is then found after a request or two, not after a burst of `--max-in-flight`.
const PROBE_EVENTS: usize = 8;
/// Unreadable records reported on stderr one by one; the rest are in the failures file.
const UNREADABLE_SHOWN: u64 = 20;

/// Why a run stopped before sending anything (exit 2), or broke off (exit 1).
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

/// An input, checked before anything is sent.
struct Source {
    /// As given on the command line.
    name: String,
    /// The canonical path; `-` for stdin.
    key: String,
    /// Where it stands: the checkpoint's state, or from the start (with its identity).
    state: InputState,
    /// stdin resumed: opened and checked against the checkpoint up front.
    opened: Option<Input>,
}

/// Everything checked: the inputs, where the job stands, where failures go.
struct Prepared {
    sources: Vec<Source>,
    checkpoint: Checkpoint,
    sink: Sink,
}

async fn send(program: &str, options: &Options) -> Result<u8, Stop> {
    let config = settings(options).map_err(Stop::Usage)?;
    let pipeline = Pipeline::new(&config).map_err(|e| Stop::Usage(e.to_string()))?;
    let prepared = prepare(options).map_err(Stop::Usage)?;
    // A missing or unreadable key stops here, not as one failure per event.
    pipeline
        .keys()
        .current()
        .await
        .map_err(|failure| Stop::Usage(format!("cannot get the API key: {}", failure.message)))?;
    let signals = watch_signals().map_err(Stop::Failed)?;
    let total = count_in_background(&prepared.sources, options.read);
    let done_before = prepared.sources.iter().map(|s| s.state.events).sum();
    let mut run = Run {
        program,
        options,
        pipeline: &pipeline,
        outcomes: Outcomes {
            journal: Journal::new(
                prepared.checkpoint,
                prepared.sink,
                options.checkpoint.clone(),
            ),
            tally: Mutex::default(),
            key_proven: AtomicBool::new(false),
            refused: Mutex::default(),
            broken: Mutex::default(),
            held_users: Mutex::default(),
        },
        progress: Progress::default(),
        signals: Signals {
            count: signals,
            interrupted: false,
        },
        probes: 0,
        unreadable_shown: 0,
        requests: 0,
        retries: 0,
        throttles: 0,
        cache_hits: 0,
        total,
        done_before,
    };
    // Started over: the old checkpoint goes now, not when the first event finishes.
    let restarted = if options.restart {
        run.outcomes.journal.write().err()
    } else {
        None
    };
    let broke_off = match restarted {
        Some(problem) => Some(problem),
        None => run.inputs(prepared.sources).await.err(),
    };
    Ok(run.finish(broke_off))
}

/// Checks everything that can be checked before a request: inputs, paths, checkpoint.
fn prepare(options: &Options) -> Result<Prepared, String> {
    if options.restart && options.checkpoint.is_none() {
        return Err("--restart starts a --checkpoint over: give --checkpoint FILE too".into());
    }
    let mut sources: Vec<Source> = Vec::new();
    for name in options.inputs() {
        let key = if name == "-" {
            name.clone()
        } else {
            checked_file(&name)?
        };
        if let Some(other) = sources.iter().find(|source| source.key == key) {
            return Err(if key == "-" {
                "stdin (-) is named twice".to_string()
            } else {
                format!("{} and {name} are the same file: name it once", other.name)
            });
        }
        sources.push(Source {
            name,
            key,
            state: InputState::default(),
            opened: None,
        });
    }
    let is_input = |path: &Path| {
        let path = std::fs::canonicalize(path).ok();
        sources
            .iter()
            .find(|source| path.as_deref() == Some(Path::new(&source.key)))
    };
    if let Some(path) = &options.failures {
        if is_input(path).is_some() || path.is_dir() {
            return Err(format!(
                "--failures {} is {}: write the failures to a new file",
                path.display(),
                if path.is_dir() {
                    "a directory"
                } else {
                    "also an input"
                }
            ));
        }
    }
    let mut checkpoint = Checkpoint::new();
    if let Some(path) = &options.checkpoint {
        let same = |a: &Path, b: &Path| {
            a == b
                || std::fs::canonicalize(a)
                    .is_ok_and(|a| std::fs::canonicalize(b).is_ok_and(|b| a == b))
        };
        if options
            .failures
            .as_deref()
            .is_some_and(|failures| same(failures, path))
        {
            return Err("--checkpoint and --failures name the same file: name two".into());
        }
        if is_input(path).is_some() {
            return Err(format!(
                "--checkpoint {} is also an input: name another file",
                path.display()
            ));
        }
        check_writable(path)?;
        if !options.restart {
            checkpoint = Checkpoint::load(path)?.unwrap_or(checkpoint);
        }
    }
    let sink = match &options.failures {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Sink::File)
            .map_err(|e| format!("cannot write --failures {}: {e}", path.display()))?,
        None => Sink::Stdout,
    };
    if let Some(path) = &options.checkpoint {
        for source in &mut sources {
            resume(source, &checkpoint, path, &options.read)?;
        }
    }
    Ok(Prepared {
        sources,
        checkpoint,
        sink,
    })
}

/// A file input as the checkpoint knows it: its canonical path, after checking that it is
/// a file that can be read.
fn checked_file(name: &str) -> Result<String, String> {
    let metadata = std::fs::metadata(name).map_err(|e| format!("cannot read {name}: {e}"))?;
    if metadata.is_dir() {
        return Err(format!(
            "{name} is a directory: name the files in it (for example {}/*.gz)",
            name.trim_end_matches('/')
        ));
    }
    if !metadata.is_file() {
        return Err(format!(
            "{name} is not a regular file: give it on stdin (-) instead"
        ));
    }
    std::fs::File::open(name).map_err(|e| format!("cannot read {name}: {e}"))?;
    std::fs::canonicalize(name)
        .map(|path| path.to_string_lossy().into_owned())
        .map_err(|e| format!("cannot read {name}: {e}"))
}

/// Sets where `source` stands in `checkpoint`, refusing an input that is not the one the
/// checkpoint was written for.
fn resume(
    source: &mut Source,
    checkpoint: &Checkpoint,
    path: &Path,
    read: &ReadOptions,
) -> Result<(), String> {
    let start_over = || {
        format!(
            "run with --restart to start over, or delete {}",
            path.display()
        )
    };
    let identity = match source.key.as_str() {
        "-" => None,
        key => Some(FileIdentity::of(Path::new(key))?),
    };
    let Some(state) = checkpoint.inputs.get(&source.key) else {
        source.state = InputState {
            name: source.name.clone(),
            file: identity,
            ..InputState::default()
        };
        return Ok(());
    };
    if let (Some(before), Some(now)) = (&state.file, &identity) {
        if let Some(change) = before.change(now) {
            return Err(format!(
                "{} changed since checkpoint {} was written ({change}): {}",
                source.name,
                path.display(),
                start_over()
            ));
        }
    }
    source.state = InputState {
        name: source.name.clone(),
        ..state.clone()
    };
    if source.key == "-" {
        // stdin has no identity but its content: what the earlier run read is read and
        // compared now, before anything is sent.
        let resume = Resume {
            shape: state.shape,
            position: state.next,
            through: state.through,
        };
        let mut input = Input::open_at("-", read, &resume)
            .map_err(|problem| format!("{problem}: {}", start_over()))?;
        if state.done
            && !input
                .at_end()
                .map_err(|e| format!("cannot read stdin: {e}"))?
        {
            return Err(format!(
                "stdin has more than the finished run read: {}",
                start_over()
            ));
        }
        source.opened = Some(input);
    }
    Ok(())
}

/// A first pass counts the items of every file in the background: the progress line's
/// total. Not for stdin, which cannot be read twice.
fn count_in_background(sources: &[Source], read: ReadOptions) -> Arc<OnceLock<u64>> {
    let total = Arc::new(OnceLock::new());
    if sources.iter().any(|source| source.key == "-") {
        return total;
    }
    let keys: Vec<String> = sources.iter().map(|source| source.key.clone()).collect();
    let slot = total.clone();
    // Without the thread there is just no total: the run goes on.
    let _ = std::thread::Builder::new()
        .name("count".into())
        .spawn(move || {
            let mut sum = 0;
            for key in keys {
                match count_items(&key, &read) {
                    Ok(count) => sum += count,
                    Err(_) => return,
                }
            }
            let _ = slot.set(sum);
        });
    total
}

/// SIGINT/SIGTERM count: the first stops the pipeline, the second abandons the requests
/// on the wire.
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

/// This run's outcomes, for the progress line and the summary.
#[derive(Debug, Default)]
struct Tally {
    /// Delivered events, the skipped ones below included (they count as delivered).
    delivered: u64,
    /// Delivered without a write: an unchanged update, a repeated messageId.
    unchanged: u64,
    duplicates: u64,
    /// Failure class → events; `unreadable` for input that is not an event.
    failed: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The second signal came: the delivery was dropped with its requests.
struct Abandoned;

/// One run of `send` over the checked inputs.
struct Run<'a> {
    program: &'a str,
    options: &'a Options,
    pipeline: &'a Pipeline,
    outcomes: Outcomes,
    progress: Progress,
    signals: Signals,
    /// Events tried alone so far.
    probes: usize,
    unreadable_shown: u64,
    /// The pipeline's counts, moved here after each delivery.
    requests: u64,
    retries: u64,
    throttles: u64,
    cache_hits: u64,
    total: Arc<OnceLock<u64>>,
    /// Events finished by earlier runs of the job (of this command's inputs).
    done_before: u64,
}

/// Where the events' outcomes go: the workers record them here as events end.
struct Outcomes {
    journal: Journal,
    tally: Mutex<Tally>,
    /// An event was delivered: the key works, events need not be tried one at a time.
    key_proven: AtomicBool,
    /// Kustomer refused the key: its answer.
    refused: Mutex<Option<String>>,
    /// The failures or the checkpoint could not be written.
    broken: Mutex<Option<String>>,
    /// Users with an event that failed retryably in this run: their later events are held
    /// behind it (filed after it in the failures), never delivered ahead of it. The
    /// pipeline holds a chain within one delivery; this carries it across chunks and the
    /// first events sent one at a time.
    held_users: Mutex<HashSet<String>>,
}

/// What one chunk read holds.
#[derive(Default)]
struct Chunk {
    events: Vec<Value>,
    /// Per event: where it is.
    slots: Vec<Slot>,
    /// The generation that makes the chunk's unreadable records durable.
    unreadable: Option<u64>,
    /// Why reading stopped early.
    problem: Option<String>,
    /// The input has no more items.
    ended: bool,
}

/// One event being delivered: its ordinal in its input, its line.
#[derive(Clone, Copy)]
struct Slot {
    ordinal: u64,
    line: u64,
}

impl Run<'_> {
    /// Every input in turn; `Err` says why the run broke off (a read error).
    async fn inputs(&mut self, sources: Vec<Source>) -> Result<(), String> {
        for source in sources {
            if source.state.done {
                continue;
            }
            if self.stopping().is_err() || self.pipeline.is_stopped() {
                return Ok(());
            }
            let name = source.name.clone();
            let mut input = match source.opened {
                Some(input) => input,
                None => {
                    let resume = Resume {
                        shape: source.state.shape,
                        position: source.state.next,
                        through: None,
                    };
                    Input::open_at(&source.key, &self.options.read, &resume)?
                }
            };
            self.outcomes.journal.begin(&source.key, source.state);
            if self.input(&name, &mut input).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One input, chunk by chunk: `Ok(true)` when the run stops here.
    async fn input(&mut self, name: &str, input: &mut Input) -> Result<bool, String> {
        loop {
            if self.stopping().is_err() || self.pipeline.is_stopped() {
                return Ok(true);
            }
            let chunk = self.read_chunk(name, input);
            self.outcomes.journal.read_to(input, chunk.ended);
            if let Some(generation) = chunk.unreadable {
                if let Err(problem) = self.outcomes.journal.durable(generation).await {
                    *lock(&self.outcomes.broken) = Some(problem);
                    return Ok(true);
                }
            }
            if self
                .deliver(name, &chunk.events, &chunk.slots)
                .await
                .is_err()
            {
                return Ok(true);
            }
            if let Some(problem) = chunk.problem {
                return Err(problem);
            }
            if chunk.ended {
                // Events left without an outcome at the end: the run was stopped.
                return Ok(!self.outcomes.journal.input_done());
            }
        }
    }

    /// Reads up to a chunk of items. Unreadable ones are reported and recorded at once;
    /// they count towards the chunk too, since their text is held until it is written.
    fn read_chunk(&mut self, name: &str, input: &mut Input) -> Chunk {
        let mut chunk = Chunk::default();
        let mut items = 0;
        while items < self.options.chunk_size {
            let located = match input.next_item() {
                Ok(Some(located)) => located,
                Ok(None) => {
                    chunk.ended = true;
                    break;
                }
                Err(e) => {
                    chunk.problem = Some(format!(
                        "cannot read {name} after line {}: {e}",
                        input.next_at().0.line.saturating_sub(1)
                    ));
                    break;
                }
            };
            let Some(ordinal) = self.outcomes.journal.read(&located) else {
                continue; // finished by an earlier run
            };
            items += 1;
            let line = located.position.line;
            match located.item {
                Item::Event(event) => {
                    chunk.events.push(event);
                    chunk.slots.push(Slot { ordinal, line });
                }
                Item::Unreadable { message, raw } => {
                    let written = self.unreadable(name, ordinal, line, message, raw);
                    chunk.unreadable = written.or(chunk.unreadable);
                }
            }
        }
        chunk
    }

    /// Reports an unreadable record on stderr (the first few) and records its failure:
    /// the generation to wait for (see [`Journal::finish`]).
    fn unreadable(
        &mut self,
        name: &str,
        ordinal: u64,
        line: u64,
        message: String,
        raw: Option<String>,
    ) -> Option<u64> {
        self.unreadable_shown += 1;
        if self.unreadable_shown <= UNREADABLE_SHOWN {
            self.progress
                .note(&format!("{}: {name}: {message}", self.program));
        } else if self.unreadable_shown == UNREADABLE_SHOWN + 1 {
            self.progress.note(&format!(
                "{}: more unreadable records: they are in the failures file only",
                self.program
            ));
        }
        *lock(&self.outcomes.tally)
            .failed
            .entry("unreadable")
            .or_default() += 1;
        let record = json!({
            "raw": raw,
            "error": { "class": "unreadable", "message": message },
            "source": name, "line": line,
        });
        self.outcomes.journal.finish(ordinal, Some(record))
    }

    /// Delivers one chunk. Until an event has been delivered, the first events go one at
    /// a time (see [`PROBE_EVENTS`]).
    async fn deliver(
        &mut self,
        name: &str,
        events: &[Value],
        slots: &[Slot],
    ) -> Result<(), Abandoned> {
        let mut from = 0;
        while from < events.len()
            && self.probes < PROBE_EVENTS
            && !self.outcomes.key_proven.load(Ordering::Relaxed)
            && !self.pipeline.is_stopped()
        {
            self.probes += 1;
            self.deliver_some(name, &events[from..=from], &slots[from..=from])
                .await?;
            from += 1;
        }
        if from < events.len() && !self.pipeline.is_stopped() {
            self.deliver_some(name, &events[from..], &slots[from..])
                .await?;
        }
        Ok(())
    }

    async fn deliver_some(
        &mut self,
        name: &str,
        events: &[Value],
        slots: &[Slot],
    ) -> Result<(), Abandoned> {
        let behind_failure = |event: &Value| {
            let held = lock(&self.outcomes.held_users);
            !held.is_empty() && user_of(event).is_some_and(|user| held.contains(&user))
        };
        if events.iter().any(behind_failure) {
            let (mut rest, mut rest_slots) = (Vec::new(), Vec::new());
            for (event, slot) in events.iter().zip(slots) {
                if behind_failure(event) {
                    let report = Report::held(EventType::of(event).ok());
                    let generation =
                        self.outcomes
                            .record(self.pipeline, &report, *slot, event, name);
                    self.outcomes.durable(self.pipeline, generation).await;
                } else {
                    rest.push(event.clone());
                    rest_slots.push(*slot);
                }
            }
            return Box::pin(self.deliver_some(name, &rest, &rest_slots)).await;
        }
        {
            let (outcomes, pipeline) = (&self.outcomes, self.pipeline);
            let on_report = move |index: usize, report: &Report| -> BoxFuture<'_, ()> {
                let generation = match (slots.get(index), events.get(index)) {
                    (Some(slot), Some(event)) => {
                        outcomes.record(pipeline, report, *slot, event, name)
                    }
                    _ => None,
                };
                Box::pin(outcomes.durable(pipeline, generation))
            };
            let hooks = Hooks {
                deadline: Instant::now() + CHUNK_DEADLINE,
                on_report: Some(&on_report),
            };
            let delivery = pipeline.deliver_with(events, &hooks);
            tokio::pin!(delivery);
            let mut ticker = tokio::time::interval(self.progress.tick());
            // Without a signal watcher (it cannot end on unix) there is nothing to wait for.
            let mut watching = true;
            loop {
                tokio::select! {
                    _ = &mut delivery => break,
                    _ = ticker.tick() => {
                        let snapshot = snapshot(&self.outcomes.tally, self.done_before, &self.total);
                        self.progress.show(&snapshot);
                    }
                    changed = self.signals.count.changed(), if watching => watching = changed.is_ok(),
                }
                self.signals
                    .stopping(&mut self.progress, self.pipeline, self.program)?;
            }
        }
        self.absorb_metrics();
        Ok(())
    }

    /// Moves the pipeline's counts into this run's (the per-event latencies they also
    /// keep would otherwise grow with the run).
    fn absorb_metrics(&mut self) {
        let counts = self.pipeline.metrics().take();
        self.requests += counts.requests.values().sum::<u64>();
        self.retries += counts.retries;
        self.throttles += counts.throttles;
        self.cache_hits += counts.cache_hits;
    }

    /// Acts on the signals received: the first stops the pipeline, the second is `Err`.
    fn stopping(&mut self) -> Result<(), Abandoned> {
        self.signals
            .stopping(&mut self.progress, self.pipeline, self.program)
    }

    /// Writes what is left to write, prints the summary: the exit status.
    fn finish(&mut self, broke_off: Option<String>) -> u8 {
        self.progress.clear();
        // Requests of a delivery abandoned by a second signal are counted too.
        self.absorb_metrics();
        let written = self.outcomes.journal.write();
        let checkpoint = self.outcomes.journal.checkpoint();
        self.summary(&checkpoint);
        let program = self.program;
        let restart_hint = if self.options.checkpoint.is_some() {
            "run the same command again to continue"
        } else {
            "without --checkpoint, running it again starts over"
        };
        if let Some(problem) = lock(&self.outcomes.broken).clone().or(written.err()) {
            eprintln!("{program}: {problem}; stopped");
            return EXIT_SOME_FAILED;
        }
        if let Some(answer) = lock(&self.outcomes.refused).clone() {
            eprintln!(
                "{program}: Kustomer refused the API key ({answer}); stopped. Check {} or \
                 --secret-id, then {restart_hint}",
                lambda::LOCAL_API_KEY
            );
            return EXIT_REFUSED_KEY;
        }
        if let Some(problem) = broke_off {
            eprintln!("{program}: {problem}");
            return EXIT_SOME_FAILED;
        }
        let complete = self
            .options
            .inputs()
            .iter()
            .all(|name| input_done(&checkpoint, name));
        if self.signals.interrupted && !complete {
            eprintln!("{program}: interrupted; {restart_hint}");
            return EXIT_INTERRUPTED;
        }
        let failed = if self.options.checkpoint.is_some() {
            checkpoint.failed
        } else {
            lock(&self.outcomes.tally).failed_total()
        };
        if failed > 0 {
            EXIT_SOME_FAILED
        } else {
            0
        }
    }

    fn summary(&self, checkpoint: &Checkpoint) {
        let program = self.program;
        let tally = lock(&self.outcomes.tally);
        let events = tally.delivered + tally.failed_total();
        let elapsed = self.progress.elapsed();
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
            "{program}: {events} events in {} ({:.1}/s): delivered {}{skipped}, failed {}{}",
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
            self.requests,
            self.requests as f64 / events.max(1) as f64,
            self.retries,
            self.throttles,
            self.cache_hits
        );
        if let Some(path) = &self.options.checkpoint {
            let left = self
                .total
                .get()
                .map(|total| {
                    let done = self.done_before + events;
                    format!("; {} events left", total.saturating_sub(done))
                })
                .unwrap_or_default();
            eprintln!(
                "{program}: whole job ({}): delivered {}, failed {}{left}",
                path.display(),
                checkpoint.delivered,
                checkpoint.failed
            );
        }
        if tally.failed_total() > 0 {
            if let Some(path) = &self.options.failures {
                eprintln!(
                    "{program}: failed events are in {}; fix them and send that file again",
                    path.display()
                );
            }
        }
    }
}

/// Whether the checkpoint has every item of the input named `name` finished.
fn input_done(checkpoint: &Checkpoint, name: &str) -> bool {
    let key = match name {
        "-" => Some("-".to_string()),
        name => std::fs::canonicalize(name)
            .ok()
            .map(|path| path.to_string_lossy().into_owned()),
    };
    key.and_then(|key| checkpoint.inputs.get(&key))
        .is_some_and(|state| state.done)
}

fn snapshot(tally: &Mutex<Tally>, done_before: u64, total: &OnceLock<u64>) -> Snapshot {
    let tally = lock(tally);
    Snapshot {
        done: done_before + tally.delivered + tally.failed_total(),
        delivered: tally.delivered,
        failed: tally.failed_total(),
        total: total.get().copied(),
    }
}

/// SIGINT/SIGTERM received so far, and whether the first was acted on.
struct Signals {
    count: watch::Receiver<u32>,
    interrupted: bool,
}

impl Signals {
    /// Acts on the signals received so far: the first stops the pipeline (no new event or
    /// request), the second is `Err`: stop at once.
    fn stopping(
        &mut self,
        progress: &mut Progress,
        pipeline: &Pipeline,
        program: &str,
    ) -> Result<(), Abandoned> {
        let count = *self.count.borrow_and_update();
        if count >= 2 {
            progress.note(&format!(
                "{program}: interrupted again: stopping now; requests still on the wire are \
                 abandoned and their events sent again on resume"
            ));
            return Err(Abandoned);
        }
        if count == 1 && !self.interrupted {
            self.interrupted = true;
            pipeline.stop();
            progress.note(&format!(
                "{program}: interrupted: no new event starts; waiting for the requests on the \
                 wire (interrupt again to stop at once)"
            ));
        }
        Ok(())
    }
}

impl Outcomes {
    /// Waits until a recorded outcome is on disk; a write error stops the run.
    async fn durable(&self, pipeline: &Pipeline, generation: Option<u64>) {
        if let Some(generation) = generation {
            if let Err(problem) = self.journal.durable(generation).await {
                lock(&self.broken).get_or_insert(problem);
                pipeline.stop();
            }
        }
    }

    /// Records one event's outcome: the generation to wait for, `None` when there is none
    /// (nothing to write, or the event stays unfinished because Kustomer refused the key:
    /// the run stops, and the event is sent next time).
    fn record(
        &self,
        pipeline: &Pipeline,
        report: &Report,
        slot: Slot,
        event: &Value,
        source: &str,
    ) -> Option<u64> {
        match &report.outcome {
            Outcome::Delivered(Delivered { skipped, .. }) => {
                // A skip (unchanged, duplicate) follows a delivery of this run: the key works.
                self.key_proven.store(true, Ordering::Relaxed);
                let mut tally = lock(&self.tally);
                tally.delivered += 1;
                match skipped {
                    Some(Skipped::Unchanged) => tally.unchanged += 1,
                    Some(Skipped::Duplicate) => tally.duplicates += 1,
                    None => {}
                }
                drop(tally);
                self.journal.finish(slot.ordinal, None)
            }
            Outcome::Failed(failure) if failure.class == FailureClass::Auth => {
                lock(&self.refused).get_or_insert_with(|| failure.to_string());
                pipeline.stop();
                None
            }
            Outcome::Failed(failure) => {
                if failure.class.is_retryable() {
                    if let Some(user) = user_of(event) {
                        lock(&self.held_users).insert(user);
                    }
                }
                *lock(&self.tally)
                    .failed
                    .entry(failure.class.as_str())
                    .or_default() += 1;
                let record = json!({
                    "event": event,
                    "error": {
                        "class": failure.class.as_str(),
                        "status": failure.status,
                        "message": failure.message,
                    },
                    "attempts": report.attempts,
                    "source": source,
                    "line": slot.line,
                });
                self.journal.finish(slot.ordinal, Some(record))
            }
        }
    }
}
