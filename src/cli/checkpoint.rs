//! `--checkpoint FILE`: what a `send` has done, per input, so that running the same
//! command again sends exactly what is left.
//!
//! Inputs are keyed by canonical path (`-` for stdin) and named by content: a file by its
//! size, modification time and the CRC-32 of its first MiB ([`FileIdentity`]); stdin by
//! the digest of what was read up to the resume point ([`InputState::through`]). A resume
//! with an input whose identity differs is refused.
//!
//! Progress is per event: `next` is where the first item not done starts (always a record
//! boundary), `done_after` the items after it that are done (workers end events out of
//! order; at most a chunk of them). The [`Ledger`] keeps both while a run reads; the
//! journal (`journal.rs`) writes the checkpoint as events end.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::input::{Digest, Located, Position, Shape};

/// The checkpoint format; an older one is refused (it named inputs by path alone).
pub const VERSION: u32 = 2;

/// How much of a file's start its identity digests.
const HEAD_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// By canonical path; `-` for stdin.
    pub inputs: BTreeMap<String, InputState>,
    /// Over every run of this job: the exit status says whether all were delivered.
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputState {
    /// As given on the command line (for messages).
    pub name: String,
    /// `None` for stdin.
    pub file: Option<FileIdentity>,
    pub shape: Option<Shape>,
    /// Items finished (delivered, or written to the failures file), from the start.
    pub events: u64,
    /// Where the first unfinished item starts.
    pub next: Position,
    /// stdin: its digest through the record at `next` (through everything read, at the end).
    pub through: Option<Digest>,
    /// Finished items after `next`, counted from it (the item at `next` is 0).
    pub done_after: Vec<u64>,
    /// Every item of the input is finished.
    pub done: bool,
}

/// What a file's content is taken to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub size: u64,
    /// Nanoseconds since the Unix epoch; `None` where the system has no such time.
    pub modified_ns: Option<u64>,
    /// The CRC-32 of the first `head_bytes` bytes.
    pub head_bytes: u64,
    pub head_crc32: u32,
}

impl FileIdentity {
    pub fn of(path: &Path) -> Result<FileIdentity, String> {
        let problem = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut file = std::fs::File::open(path).map_err(problem)?;
        let metadata = file.metadata().map_err(problem)?;
        let modified_ns = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|since| u64::try_from(since.as_nanos()).ok());
        let mut head = Vec::new();
        (&mut file)
            .take(HEAD_BYTES)
            .read_to_end(&mut head)
            .map_err(problem)?;
        Ok(FileIdentity {
            size: metadata.len(),
            modified_ns,
            head_bytes: head.len() as u64,
            head_crc32: crc32fast::hash(&head),
        })
    }

    /// How `now` differs from `self`, in words; `None` when it does not.
    pub fn change(&self, now: &FileIdentity) -> Option<String> {
        if self.size != now.size {
            Some(format!(
                "its size was {} bytes, now {}",
                self.size, now.size
            ))
        } else if self.head_bytes != now.head_bytes || self.head_crc32 != now.head_crc32 {
            Some("its first MiB differs".into())
        } else if self.modified_ns != now.modified_ns {
            Some("its modification time differs".into())
        } else {
            None
        }
    }
}

impl Checkpoint {
    /// The checkpoint in `path`; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>, String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read checkpoint {}: {e}", path.display())),
        };
        let start_over = format!(
            "run with --restart to start over, or delete {}",
            path.display()
        );
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "checkpoint {} is not one of ours ({e}): {start_over}",
                path.display()
            )
        })?;
        if value.get("version").and_then(serde_json::Value::as_u64) != Some(u64::from(VERSION)) {
            return Err(format!(
                "checkpoint {} was written by another version of rudder-kustomer: {start_over}",
                path.display()
            ));
        }
        serde_json::from_value(value).map(Some).map_err(|e| {
            format!(
                "checkpoint {} is not one of ours ({e}): {start_over}",
                path.display()
            )
        })
    }

    pub fn new() -> Checkpoint {
        Checkpoint {
            version: VERSION,
            ..Checkpoint::default()
        }
    }
}

/// The temporary file a checkpoint is written to before it is renamed over `path`.
fn temporary(path: &Path) -> PathBuf {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    PathBuf::from(temporary)
}

/// Fails unless a checkpoint can be written at `path` (checked before anything is sent).
pub fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!(
            "--checkpoint {} is a directory: name a file",
            path.display()
        ));
    }
    let temporary = temporary(path);
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&temporary)
        .and_then(|_| std::fs::remove_file(&temporary))
        .map_err(|e| {
            format!(
                "cannot write checkpoint {} (tried {}): {e}",
                path.display(),
                temporary.display()
            )
        })
}

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, fsync of the
/// directory): a crash leaves the old checkpoint or the new one.
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let problem = |e: std::io::Error| format!("cannot write checkpoint {}: {e}", path.display());
    let temporary = temporary(path);
    let mut file = std::fs::File::create(&temporary).map_err(problem)?;
    file.write_all(bytes).map_err(problem)?;
    file.sync_all().map_err(problem)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(problem)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // The rename itself is durable once the directory is synced.
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// Which items of the input being read are finished. Items are numbered in reading order
/// from the point this run resumed at (its "ordinal").
#[derive(Debug, Default)]
pub struct Ledger {
    /// From the first unfinished item on: where each starts, its digest, finished yet.
    open: VecDeque<(Position, Option<Digest>, bool)>,
    /// The ordinal of `open`'s first entry.
    first: u64,
    /// Ordinals handed out so far.
    read: u64,
    /// Where the next item to read starts, and its digest (the state once `open` is empty).
    read_to: (Position, Option<Digest>),
    /// Ordinals an earlier run finished, not to be sent again.
    earlier: BTreeSet<u64>,
    /// Items finished by this run.
    pub finished: u64,
    /// The input has no more items.
    pub ended: bool,
}

impl Ledger {
    /// A ledger for an input resumed at `state` (fresh: `InputState::default()`).
    pub fn resume(state: &InputState) -> Ledger {
        Ledger {
            read_to: (state.next, state.through),
            earlier: state.done_after.iter().copied().collect(),
            ..Ledger::default()
        }
    }

    /// Takes one item read: its ordinal, or `None` when an earlier run finished it.
    pub fn read(&mut self, located: &Located) -> Option<u64> {
        let ordinal = self.read;
        self.read += 1;
        let earlier = self.earlier.remove(&ordinal);
        self.open
            .push_back((located.position, located.through, earlier));
        self.settle();
        (!earlier).then_some(ordinal)
    }

    /// Where reading stands after the items read so far; `ended` at the end of the input.
    pub fn read_to(&mut self, next: (Position, Option<Digest>), ended: bool) {
        self.read_to = next;
        self.ended = ended;
    }

    /// Marks the item `ordinal` finished.
    pub fn finish(&mut self, ordinal: u64) {
        let Some(at) = ordinal.checked_sub(self.first) else {
            return;
        };
        if let Some(entry) = usize::try_from(at)
            .ok()
            .and_then(|at| self.open.get_mut(at))
        {
            if !entry.2 {
                entry.2 = true;
                self.finished += 1;
            }
        }
        self.settle();
    }

    /// Every item read is finished (and, with `ended`, the whole input).
    pub fn all_finished(&self) -> bool {
        self.open.is_empty()
    }

    fn settle(&mut self) {
        while self.open.front().is_some_and(|entry| entry.2) {
            self.open.pop_front();
            self.first += 1;
        }
    }

    /// The input's state: `base` (as this run found it) moved on by what this run did.
    pub fn state(&self, base: &InputState) -> InputState {
        let (next, through) = match self.open.front() {
            Some((position, through, _)) => (*position, *through),
            None => self.read_to,
        };
        let origin = self.first;
        let done_after = self
            .open
            .iter()
            .zip(0u64..)
            .filter(|((_, _, done), _)| *done)
            .map(|(_, at)| at)
            .chain(
                self.earlier
                    .iter()
                    .filter(|ordinal| **ordinal >= self.read)
                    .map(|ordinal| ordinal - origin),
            )
            .collect();
        InputState {
            events: base.events + self.finished,
            next,
            through,
            done_after,
            done: self.ended && self.open.is_empty(),
            ..base.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::input::Item;

    fn located(offset: u64) -> Located {
        Located {
            item: Item::Event(serde_json::Value::Null),
            position: Position {
                line: offset + 1,
                offset,
                index: 0,
            },
            through: None,
        }
    }

    #[test]
    fn saves_and_loads_and_refuses_other_versions() {
        let dir = std::env::temp_dir().join(format!("rk-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.checkpoint");
        let _ = std::fs::remove_file(&path);
        assert_eq!(Checkpoint::load(&path).unwrap(), None);
        check_writable(&path).unwrap();
        let mut checkpoint = Checkpoint {
            delivered: 5,
            failed: 1,
            ..Checkpoint::new()
        };
        checkpoint.inputs.insert(
            "/data/a.jsonl".into(),
            InputState {
                name: "a.jsonl".into(),
                events: 6,
                done_after: vec![2, 3],
                ..Default::default()
            },
        );
        save(&path, &serde_json::to_vec(&checkpoint).unwrap()).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(checkpoint));
        std::fs::write(&path, r#"{"inputs": {}, "delivered": 0, "failed": 0}"#).unwrap();
        assert!(Checkpoint::load(&path)
            .unwrap_err()
            .contains("another version"));
        std::fs::write(&path, "not json").unwrap();
        assert!(Checkpoint::load(&path)
            .unwrap_err()
            .contains("not one of ours"));
        assert!(check_writable(&dir).unwrap_err().contains("directory"));
    }

    #[test]
    fn a_file_identity_names_what_changed() {
        let dir = std::env::temp_dir().join(format!("rk-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.jsonl");
        std::fs::write(&path, "{\"a\": 1}\n").unwrap();
        let before = FileIdentity::of(&path).unwrap();
        assert_eq!(before.change(&FileIdentity::of(&path).unwrap()), None);
        std::fs::write(&path, "{\"a\": 2}\n").unwrap();
        let after = FileIdentity::of(&path).unwrap();
        assert_eq!(
            before.change(&after).as_deref(),
            Some("its first MiB differs")
        );
        std::fs::write(&path, "{\"a\": 22}\n").unwrap();
        let longer = FileIdentity::of(&path).unwrap();
        assert!(before.change(&longer).unwrap().contains("size"));
    }

    /// Items end out of order: the state names the first unfinished one and those after
    /// it that are finished; a resume from that state skips exactly those.
    #[test]
    fn the_ledger_records_exactly_what_is_finished() {
        let mut ledger = Ledger::resume(&InputState::default());
        let ordinals: Vec<_> = (0..6).map(|n| ledger.read(&located(n * 10))).collect();
        assert_eq!(ordinals, [0, 1, 2, 3, 4, 5].map(Some));
        ledger.read_to((located(60).position, None), true);
        for ordinal in [1, 3, 4] {
            ledger.finish(ordinal);
        }
        let state = ledger.state(&InputState::default());
        assert_eq!(state.next.offset, 0);
        assert_eq!(state.done_after, [1, 3, 4]);
        assert_eq!(state.events, 3);
        ledger.finish(0);
        let state = ledger.state(&InputState::default());
        assert_eq!(
            (state.next.offset, state.done_after.clone()),
            (20, vec![1, 2])
        );

        // Resumed there, reading one item at a time: finished ones come back as None.
        let mut resumed = Ledger::resume(&state);
        assert_eq!(resumed.read(&located(20)), Some(0));
        resumed.read_to((located(30).position, None), false);
        // Not read yet, and finished by the earlier run: still in the state.
        assert_eq!(resumed.state(&state).done_after, [1, 2]);
        assert_eq!(resumed.read(&located(30)), None);
        assert_eq!(resumed.read(&located(40)), None);
        assert_eq!(resumed.read(&located(50)), Some(3));
        resumed.read_to((located(60).position, None), true);
        resumed.finish(3);
        resumed.finish(0);
        let end = resumed.state(&state);
        assert!(end.done);
        assert_eq!((end.next.offset, end.events), (60, 6));
    }
}
