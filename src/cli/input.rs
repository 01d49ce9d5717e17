//! Reading events from files or stdin, for `plan` and `send`.
//!
//! Accepted: one JSON event, a JSON array, JSON Lines, any of these gzip-compressed
//! (detected by the magic bytes 1f 8b, not the name), and what the SQS door accepts as
//! bodies (EventBridge/SNS envelopes, Lambda on-failure records) plus `aws sqs
//! receive-message` output (`{"Messages": [{"Body": ...}]}`), Lambda's SQS event
//! (`{"Records": [...]}`) and the `--failures` file's own records (replays).
//!
//! JSON Lines are read one line at a time, so memory follows the caller's chunk size,
//! not the file's size. A document spread over several lines (a pretty-printed event or
//! array, `receive-message` output) is read whole. Every item carries the [`Position`]
//! to resume from, so a checkpoint can restart a file exactly at its first unfinished
//! event.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{decode_events, decode_value};

/// Where an item starts: the unit (a line, or a whole multi-line document) that holds
/// it, by line number and byte offset in the decompressed text, and its index in there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub line: u64,
    pub offset: u64,
    pub index: u64,
}

/// One thing read: an event, or a part of the input that is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Value),
    /// `message` starts with the line number; `raw` is the text when there was some.
    Unreadable {
        message: String,
        raw: Option<String>,
    },
}

/// An item and the line its unit starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub item: Item,
    pub line: u64,
}

/// Counts the bytes read from the file itself (compressed ones for gzip): progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One input (a file or stdin) as a stream of items.
pub struct Input {
    reader: Box<dyn BufRead + Send>,
    /// Lines and decompressed bytes consumed so far.
    line: u64,
    offset: u64,
    pending: VecDeque<(Located, Position)>,
    /// Set once the first unit has shown whether this is JSON Lines.
    started: bool,
    /// Items of the first unit to drop (resuming inside a unit).
    skip: u64,
    raw_read: Arc<AtomicU64>,
    /// The file's size on disk; `None` for stdin.
    pub size: Option<u64>,
}

impl Input {
    /// Opens `name` (`-` is stdin) at its start.
    pub fn open(name: &str) -> Result<Input, String> {
        Input::open_at(name, Position::default())
    }

    /// Opens `name` so that the first item read is the one at `position`.
    pub fn open_at(name: &str, position: Position) -> Result<Input, String> {
        let problem = |e: io::Error| format!("cannot read {name}: {e}");
        let raw_read = Arc::new(AtomicU64::new(0));
        let (reader, size, skip_bytes): (Box<dyn BufRead + Send>, _, _) = if name == "-" {
            let stdin = BufReader::new(io::stdin());
            let (reader, _) = decompressed(stdin, &raw_read).map_err(problem)?;
            (reader, None, position.offset)
        } else {
            let mut file = File::open(name).map_err(problem)?;
            let size = file.metadata().map_err(problem)?.len();
            let mut magic = [0u8; 2];
            let got = read_up_to(&mut file, &mut magic).map_err(problem)?;
            if got == 2 && magic == GZIP_MAGIC {
                file.seek(SeekFrom::Start(0)).map_err(problem)?;
                let counting = Counting {
                    inner: file,
                    count: raw_read.clone(),
                };
                let reader = BufReader::new(MultiGzDecoder::new(BufReader::new(counting)));
                (
                    Box::new(reader) as Box<dyn BufRead + Send>,
                    Some(size),
                    position.offset,
                )
            } else {
                // Plain text: seek straight to the unit instead of reading up to it.
                file.seek(SeekFrom::Start(position.offset))
                    .map_err(problem)?;
                raw_read.store(position.offset, Ordering::Relaxed);
                let counting = Counting {
                    inner: file,
                    count: raw_read.clone(),
                };
                (Box::new(BufReader::new(counting)) as _, Some(size), 0)
            }
        };
        let mut input = Input {
            reader,
            line: position.line.saturating_sub(1),
            offset: position.offset,
            pending: VecDeque::new(),
            started: false,
            skip: position.index,
            raw_read,
            size,
        };
        if skip_bytes > 0 {
            let skipped = io::copy(&mut (&mut input.reader).take(skip_bytes), &mut io::sink())
                .map_err(problem)?;
            if skipped < skip_bytes {
                return Err(format!(
                    "cannot resume {name}: it is shorter than the checkpoint says"
                ));
            }
        }
        Ok(input)
    }

    /// Bytes read from the file so far (compressed bytes for gzip).
    pub fn bytes_read(&self) -> u64 {
        self.raw_read.load(Ordering::Relaxed)
    }

    /// Where the next item starts (after the last one, once all were read).
    pub fn position(&self) -> Position {
        match self.pending.front() {
            Some((_, position)) => *position,
            None => Position {
                line: self.line + 1,
                offset: self.offset,
                index: 0,
            },
        }
    }

    /// The next item; `Ok(None)` at the end. An `Err` is an I/O or decompression error.
    pub fn next_item(&mut self) -> io::Result<Option<Located>> {
        loop {
            if let Some((located, _)) = self.pending.pop_front() {
                return Ok(Some(located));
            }
            let (start_line, start_offset) = (self.line + 1, self.offset);
            let mut bytes = Vec::new();
            let n = self.reader.read_until(b'\n', &mut bytes)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.offset += n as u64;
            let Ok(text) = String::from_utf8(bytes) else {
                self.push_unit(start_line, start_offset, vec![unreadable("not UTF-8 text")]);
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            let first = !self.started;
            self.started = true;
            match serde_json::from_str::<Value>(&text) {
                Ok(value) => self.push_unit(start_line, start_offset, decode(value)),
                Err(e) if first && e.is_eof() => {
                    // Not one value per line: the input is one document over many lines.
                    self.read_whole(text, start_line, start_offset)?
                }
                Err(e) => {
                    let item = Item::Unreadable {
                        message: format!("invalid JSON: {e}"),
                        raw: Some(text.trim_end().to_string()),
                    };
                    self.push_unit(start_line, start_offset, vec![item]);
                }
            }
        }
    }

    fn read_whole(&mut self, first: String, line: u64, offset: u64) -> io::Result<()> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest)?;
        self.offset += rest.len() as u64;
        let mut whole = first.into_bytes();
        whole.extend_from_slice(&rest);
        self.line += rest.iter().filter(|&&b| b == b'\n').count() as u64
            + u64::from(!rest.is_empty() && !rest.ends_with(b"\n"));
        let Ok(text) = String::from_utf8(whole) else {
            self.push_unit(line, offset, vec![unreadable("not UTF-8 text")]);
            return Ok(());
        };
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            self.push_unit(line, offset, decode(value));
            return Ok(());
        }
        // Not one document either: JSON Lines after all, each line on its own.
        let mut at = offset;
        for (number, piece) in (line..).zip(text.split_inclusive('\n')) {
            if !piece.trim().is_empty() {
                let items = match serde_json::from_str::<Value>(piece) {
                    Ok(value) => decode(value),
                    Err(e) => vec![Item::Unreadable {
                        message: format!("invalid JSON: {e}"),
                        raw: Some(piece.trim_end().to_string()),
                    }],
                };
                self.push_unit(number, at, items);
            }
            at += piece.len() as u64;
        }
        Ok(())
    }

    fn push_unit(&mut self, line: u64, offset: u64, items: Vec<Item>) {
        let skip = std::mem::take(&mut self.skip);
        for (index, item) in (0u64..).zip(items).skip(skip as usize) {
            let item = match item {
                Item::Unreadable { message, raw } => Item::Unreadable {
                    message: format!("line {line}: {message}"),
                    raw,
                },
                event => event,
            };
            let position = Position {
                line,
                offset,
                index,
            };
            self.pending.push_back((Located { item, line }, position));
        }
    }
}

fn unreadable(message: &str) -> Item {
    Item::Unreadable {
        message: message.to_string(),
        raw: None,
    }
}

/// Reads until `buf` is full or the end: how many bytes were read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Stdin, decompressed when it starts with the gzip magic bytes.
fn decompressed<R: Read + Send + 'static>(
    mut reader: BufReader<R>,
    count: &Arc<AtomicU64>,
) -> io::Result<(Box<dyn BufRead + Send>, bool)> {
    let gzip = reader.fill_buf()?.starts_with(&GZIP_MAGIC);
    let counting = Counting {
        inner: reader,
        count: count.clone(),
    };
    Ok(if gzip {
        (
            Box::new(BufReader::new(MultiGzDecoder::new(counting))),
            true,
        )
    } else {
        (Box::new(BufReader::new(counting)), false)
    })
}

/// The events of one JSON value, as the SQS door would decode a body, plus the shapes
/// only files have (see the module doc).
pub fn decode(value: Value) -> Vec<Item> {
    let bad = |problem: String| vec![unreadable(&problem)];
    match value {
        Value::Array(elements) if !elements.is_empty() => {
            elements.into_iter().flat_map(decode_element).collect()
        }
        Value::Object(ref object) => {
            if let Some(Value::Array(messages)) = object.get("Messages") {
                // `aws sqs receive-message` output: each Body as the SQS door reads it.
                return messages
                    .iter()
                    .flat_map(|message| body_events(message.get("Body")))
                    .collect();
            }
            let records = object.get("Records").and_then(Value::as_array);
            if let Some(records) = records.filter(|r| {
                r.first()
                    .and_then(|record| record.get("eventSource"))
                    .is_some_and(|source| source == "aws:sqs")
            }) {
                return records
                    .iter()
                    .flat_map(|record| body_events(record.get("body")))
                    .collect();
            }
            if object.get("error").is_some_and(Value::is_object) {
                // A record of the failures file: send its event again.
                match (object.get("event"), object.get("raw")) {
                    (Some(event @ (Value::Object(_) | Value::Array(_))), _) => {
                        return decode(event.clone())
                    }
                    (None, Some(Value::String(raw))) => {
                        return match serde_json::from_str::<Value>(raw) {
                            Ok(value) => decode(value),
                            Err(e) => bad(format!("failure record's raw text: invalid JSON: {e}")),
                        }
                    }
                    _ => {}
                }
            }
            match decode_value(value) {
                Ok(events) => events.into_iter().map(Item::Event).collect(),
                Err(problem) => bad(problem.to_string()),
            }
        }
        other => match decode_value(other) {
            Ok(events) => events.into_iter().map(Item::Event).collect(),
            Err(problem) => bad(problem.to_string()),
        },
    }
}

/// An element of an array: an event, or an envelope around events.
fn decode_element(element: Value) -> Vec<Item> {
    match element {
        Value::Array(_) => vec![unreadable("an array inside an array is not an event")],
        other => decode(other),
    }
}

fn body_events(body: Option<&Value>) -> Vec<Item> {
    match body.and_then(Value::as_str) {
        Some(body) => match decode_events(body) {
            Ok(events) => events.into_iter().map(Item::Event).collect(),
            Err(problem) => vec![Item::Unreadable {
                message: problem.to_string(),
                raw: Some(body.to_string()),
            }],
        },
        None => vec![unreadable("an SQS message without a body string")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write as _;

    fn temp(name: &str, bytes: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("rk-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn all(input: &mut Input) -> Vec<(Located, Position)> {
        let mut out = Vec::new();
        loop {
            let position = input.position();
            match input.next_item().unwrap() {
                Some(located) => out.push((located, position)),
                None => return out,
            }
        }
    }

    fn event(n: u64) -> Value {
        json!({"type": "track", "event": "e", "userId": "u", "properties": {"n": n}})
    }

    /// Resuming at every item's position gives exactly the items from there on.
    fn assert_resumable(path: &str) -> usize {
        let items = all(&mut Input::open(path).unwrap());
        for (k, (_, position)) in items.iter().enumerate() {
            let rest = all(&mut Input::open_at(path, *position).unwrap());
            let expected: Vec<&Item> = items[k..].iter().map(|(l, _)| &l.item).collect();
            let got: Vec<&Item> = rest.iter().map(|(l, _)| &l.item).collect();
            assert_eq!(got, expected, "resuming {path} at item {k}");
        }
        items.len()
    }

    #[test]
    fn json_lines_with_a_bad_line_resume_anywhere() {
        let text = format!(
            "{}\n\n{{oops\n[{}, {}]\n{}",
            event(1),
            event(2),
            event(3),
            event(4)
        );
        let path = temp("lines.jsonl", text.as_bytes());
        let items = all(&mut Input::open(&path).unwrap());
        assert_eq!(items.len(), 5);
        match &items[1].0.item {
            Item::Unreadable { message, raw } => {
                assert!(message.starts_with("line 3: invalid JSON"), "{message}");
                assert_eq!(raw.as_deref(), Some("{oops"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(items[3].1.index, 1);
        assert_eq!(assert_resumable(&path), 5);
    }

    #[test]
    fn gzip_and_documents_resume_anywhere() {
        let lines: String = (1..=5).map(|n| format!("{}\n", event(n))).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(lines.as_bytes()).unwrap();
        // A name that does not say gzip: the magic bytes do.
        let path = temp("events.json", &gz.finish().unwrap());
        assert_eq!(assert_resumable(&path), 5);
        let pretty = serde_json::to_string_pretty(&json!([event(1), event(2), event(3)])).unwrap();
        let path = temp("array.json", pretty.as_bytes());
        assert_eq!(assert_resumable(&path), 3);
    }

    #[test]
    fn sqs_shapes_and_failure_records_decode() {
        let bridge = json!({"detail-type": "rudderstack", "detail": event(1)});
        let messages = json!({"Messages": [
            {"MessageId": "m1", "Body": bridge.to_string(), "MessageAttributes": {}},
            {"MessageId": "m2", "Body": json!([event(2), event(3)]).to_string()},
            {"MessageId": "m3", "Body": "not json"},
        ]});
        let items = decode(messages);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], Item::Event(event(1)));
        assert!(
            matches!(&items[3], Item::Unreadable { message, .. } if message.contains("not valid JSON"))
        );
        let record = json!({"event": event(7), "error": {"class": "transient"}});
        assert_eq!(decode(record), vec![Item::Event(event(7))]);
        let sqs = json!({"Records": [{"eventSource": "aws:sqs", "body": event(8).to_string()}]});
        assert_eq!(decode(sqs), vec![Item::Event(event(8))]);
        assert!(matches!(&decode(json!([]))[0], Item::Unreadable { .. }));
    }
}
