//! What `send` has finished, made durable as events end: failure records appended to
//! `--failures` (synced), then the checkpoint replaced (see `checkpoint.rs`), in that
//! order, so the checkpoint never moves past a failure record that is not on disk.
//!
//! Group commit: a worker whose event ended records it ([`Journal::finish`]) and waits
//! until a write holding it is done ([`Journal::durable`]) before it takes its next event.
//! One write runs at a time, on the blocking pool, and takes everything recorded until it
//! starts; the workers waiting meanwhile share the next one. So a run killed at any moment
//! repeats at most the events in flight, one per worker, while writes stay few.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::watch;

use super::checkpoint::{save, Checkpoint, InputState, Ledger};
use super::input::{Input, Located};

/// Where failure records go.
pub enum Sink {
    File(File),
    Stdout,
}

impl Sink {
    /// Appends the records and makes them durable.
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

/// The input being read: its key in the checkpoint, its state when the run began, and
/// which of its items are finished.
struct Active {
    key: String,
    base: InputState,
    ledger: Ledger,
}

struct Pending {
    checkpoint: Checkpoint,
    active: Option<Active>,
    records: Vec<Value>,
    /// Changes recorded so far; a write makes every change up to its generation durable.
    generation: u64,
    /// A write has been handed to the blocking pool and has not ended.
    writing: bool,
    /// The first write error: nothing is written after it (the checkpoint must not move
    /// past records that did not reach the disk).
    broken: Option<String>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Held while writing: writes happen one at a time, in the order their content was taken.
    files: Mutex<(Sink, Option<PathBuf>)>,
    durable: watch::Sender<u64>,
    /// A checkpoint is written: every finished item must reach the disk.
    checkpointed: bool,
}

#[derive(Clone)]
pub struct Journal(Arc<Shared>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// `checkpoint` is where the job stands; it is written to `path` (when given).
    pub fn new(checkpoint: Checkpoint, sink: Sink, path: Option<PathBuf>) -> Journal {
        Journal(Arc::new(Shared {
            pending: Mutex::new(Pending {
                checkpoint,
                active: None,
                records: Vec::new(),
                generation: 0,
                writing: false,
                broken: None,
            }),
            checkpointed: path.is_some(),
            files: Mutex::new((sink, path)),
            durable: watch::channel(0).0,
        }))
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        lock(&self.0.pending)
    }

    /// Starts reading the input `key` from `base`, the state the checkpoint has for it.
    pub fn begin(&self, key: &str, base: InputState) {
        let mut pending = self.pending();
        if let Some(active) = pending.active.take() {
            let state = active.ledger.state(&active.base);
            pending.checkpoint.inputs.insert(active.key, state);
        }
        let ledger = Ledger::resume(&base);
        pending.active = Some(Active {
            key: key.to_string(),
            base,
            ledger,
        });
    }

    /// Takes one item read from the active input: its ordinal, `None` when an earlier run
    /// finished it already.
    pub fn read(&self, located: &Located) -> Option<u64> {
        self.pending()
            .active
            .as_mut()
            .and_then(|active| active.ledger.read(located))
    }

    /// Where reading the active input stands after the items read, and its shape.
    pub fn read_to(&self, input: &Input, ended: bool) {
        if let Some(active) = self.pending().active.as_mut() {
            active.ledger.read_to(input.next_at(), ended);
            active.base.shape = active.base.shape.or(input.shape());
        }
    }

    /// Records the item `ordinal` of the active input as finished, delivered or with its
    /// failure record: the generation to wait for with [`Journal::durable`], `None` when
    /// there is nothing to write for it (a delivered event, without a checkpoint).
    pub fn finish(&self, ordinal: u64, failure: Option<Value>) -> Option<u64> {
        let write = failure.is_some() || self.0.checkpointed;
        let mut pending = self.pending();
        if let Some(active) = pending.active.as_mut() {
            active.ledger.finish(ordinal);
        }
        match failure {
            Some(record) => {
                pending.checkpoint.failed += 1;
                pending.records.push(record);
            }
            None => pending.checkpoint.delivered += 1,
        }
        pending.generation += 1;
        write.then_some(pending.generation)
    }

    /// Every item read from the active input is finished, and the input has ended.
    pub fn input_done(&self) -> bool {
        self.pending()
            .active
            .as_ref()
            .is_some_and(|active| active.ledger.ended && active.ledger.all_finished())
    }

    /// The checkpoint as it stands (the active input's progress folded in).
    pub fn checkpoint(&self) -> Checkpoint {
        self.pending().snapshot()
    }

    /// Returns once every change up to `generation` is on disk.
    pub async fn durable(&self, generation: u64) -> Result<(), String> {
        let mut durable = self.0.durable.subscribe();
        loop {
            if let Some(problem) = &self.pending().broken {
                return Err(problem.clone());
            }
            if *durable.borrow_and_update() >= generation {
                return Ok(());
            }
            let lead = !std::mem::replace(&mut self.pending().writing, true);
            if lead {
                let journal = self.clone();
                // The write goes on even if this worker is dropped (a second Ctrl-C): its
                // content was taken, so it must reach the disk before anything newer.
                let write = tokio::task::spawn_blocking(move || {
                    let result = journal.write();
                    journal.pending().writing = false;
                    journal.0.durable.send_modify(|_| {});
                    result
                });
                let _ = write.await;
            } else if durable.changed().await.is_err() {
                return Err("the journal is gone".into());
            }
        }
    }

    /// Writes everything recorded so far, now (the end of a run, or after a stop).
    pub fn write(&self) -> Result<(), String> {
        let mut files = lock(&self.0.files);
        let (sink, path) = &mut *files;
        // Records and checkpoint taken together: the checkpoint covers no finished item
        // whose record is not in this write or an earlier one.
        let (records, checkpoint, generation) = {
            let mut pending = self.pending();
            if let Some(problem) = &pending.broken {
                return Err(problem.clone());
            }
            let checkpoint = path.as_ref().map(|_| pending.snapshot());
            (
                std::mem::take(&mut pending.records),
                checkpoint,
                pending.generation,
            )
        };
        let result = sink
            .append(&records)
            .and_then(|()| match (path, checkpoint) {
                (Some(path), Some(checkpoint)) => serde_json::to_vec_pretty(&checkpoint)
                    .map_err(|e| format!("cannot write checkpoint {}: {e}", path.display()))
                    .and_then(|bytes| save(path, &bytes)),
                _ => Ok(()),
            });
        match &result {
            Ok(()) => self
                .0
                .durable
                .send_modify(|durable| *durable = (*durable).max(generation)),
            Err(problem) => self.pending().broken = Some(problem.clone()),
        }
        result
    }
}

impl Pending {
    fn snapshot(&self) -> Checkpoint {
        let mut checkpoint = self.checkpoint.clone();
        if let Some(active) = &self.active {
            checkpoint
                .inputs
                .insert(active.key.clone(), active.ledger.state(&active.base));
        }
        checkpoint
    }
}
