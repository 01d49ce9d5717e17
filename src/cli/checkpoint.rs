//! `--checkpoint FILE`: how far a `send` got, per input, so that running the same
//! command again continues at the first unfinished event (never after it: a chunk that
//! was in flight when the run stopped is sent again, at least once).
//!
//! Written after every chunk, once its failures are on disk: to a temporary file next
//! to it, fsynced, then renamed over it, so a crash leaves the old or the new one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::input::Position;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// By input name as given on the command line (`-` for stdin).
    pub inputs: BTreeMap<String, InputProgress>,
    /// Over every run of this job: the exit status says whether all were delivered.
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputProgress {
    /// Events finished (delivered or written to the failures file), from the start.
    pub events: u64,
    /// Where the first unfinished event starts.
    pub next: Position,
    /// Every event of the input is finished.
    pub done: bool,
}

impl Checkpoint {
    /// The checkpoint in `path`; a fresh one when the file does not exist.
    pub fn load(path: &Path) -> Result<Checkpoint, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("checkpoint {} is not one of ours: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(format!("cannot read checkpoint {}: {e}", path.display())),
        }
    }

    /// Replaces `path` atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let problem =
            |e: std::io::Error| format!("cannot write checkpoint {}: {e}", path.display());
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = std::path::PathBuf::from(temporary);
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let mut file = std::fs::File::create(&temporary).map_err(problem)?;
        file.write_all(&text).map_err(problem)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = std::env::temp_dir().join(format!("rk-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.checkpoint");
        let _ = std::fs::remove_file(&path);
        assert_eq!(Checkpoint::load(&path).unwrap(), Checkpoint::default());
        let mut checkpoint = Checkpoint {
            delivered: 5,
            failed: 1,
            ..Default::default()
        };
        checkpoint.inputs.insert(
            "a.jsonl".into(),
            InputProgress {
                events: 6,
                next: Position {
                    line: 7,
                    offset: 420,
                    index: 1,
                },
                done: false,
            },
        );
        checkpoint.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), checkpoint);
        std::fs::write(&path, "not json").unwrap();
        assert!(Checkpoint::load(&path)
            .unwrap_err()
            .contains("not one of ours"));
    }
}
