//! Reading events from files or stdin, for `plan` and `send`.
//!
//! Accepted: one JSON event, a JSON array, JSON Lines, any of these gzip-compressed
//! (detected by the magic bytes 1f 8b, not the name), and what the SQS door accepts as
//! bodies (EventBridge/SNS envelopes, Lambda on-failure records) plus `aws sqs
//! receive-message` output (`{"Messages": [{"Body": ...}]}`), Lambda's SQS event
//! (`{"Records": [...]}`) and the `--failures` file's own records (replays).
//!
//! One rule finds the records, wherever reading starts, so that a resume reads exactly
//! what a whole read reads from that record on:
//!
//! - The input's [`Shape`] is decided once, from its start. It is one JSON *document* (a
//!   pretty-printed event or array, `receive-message` output) when its first non-blank
//!   line is the unfinished start of a JSON value and the next `cap` bytes from there
//!   continue that one value; otherwise it is JSON *Lines*. A checkpoint records the
//!   shape ([`Resume::shape`]), so a resume never decides again.
//! - In Lines, every non-blank line is one record, parsed on its own: a bad byte or a cut
//!   record costs that line only, reported as unreadable with its text (lossy UTF-8) so
//!   that the failures file can be fixed and sent again. A document is one record.
//! - A record longer than the cap (`--max-record-bytes`, default 1 MiB) is one unreadable
//!   record, skipped without being held: memory follows the cap and the caller's chunk
//!   size, never the input's size.
//!
//! A record holds one event or several (an array, an envelope). Every item carries the
//! [`Position`] of its record (line number, byte offset in the decompressed text) and its
//! index there, and, when the input was read from its first byte, a [`Digest`] of the
//! input through that record (stdin has no other identity a resume could check).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek, SeekFrom};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{decode_events, decode_value};

/// The default of `--max-record-bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// The longest line or document read; a longer one is one unreadable record.
    pub max_record_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// How an input holds its records (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Lines,
    Document,
}

/// Where an item starts: its record, by line number and byte offset in the decompressed
/// text, and its index in there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub line: u64,
    pub offset: u64,
    pub index: u64,
}

/// The CRC-32 of an input's first `bytes` decompressed bytes: enough to tell that a
/// stream given again is not the one read before (not a defence against forgery).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub bytes: u64,
    pub crc32: u32,
}

/// Where to start reading. `Resume::default()` is the input's start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume {
    /// As decided by an earlier read; `None` decides it now (only right at the start, or
    /// after blank lines alone).
    pub shape: Option<Shape>,
    /// A record boundary ([`Located::position`] or [`Input::next_at`] of an earlier read).
    pub position: Position,
    /// The input must have this digest ([`Located::through`] of the record at `position`):
    /// checked before the first item is handed out. Only for inputs read from their
    /// first byte (stdin, gzip): a plain file is sought, not read up to the position.
    pub through: Option<Digest>,
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

/// An item, where its record starts, and the input's digest through that record.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub item: Item,
    pub position: Position,
    pub through: Option<Digest>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One input (a file or stdin) as a stream of items.
pub struct Input {
    reader: Box<dyn BufRead + Send>,
    cap: usize,
    shape: Option<Shape>,
    /// Newlines and decompressed bytes consumed so far.
    line: u64,
    offset: u64,
    /// The CRC of everything consumed, when reading began at the first byte.
    crc: Option<crc32fast::Hasher>,
    pending: VecDeque<Located>,
    /// Items of the first record to drop (resuming inside a record).
    skip: u64,
    finished: bool,
}

/// A line as read: at most `cap` + 2 bytes of it are kept (the line ending included).
struct RawLine {
    kept: Vec<u8>,
    too_long: bool,
}

impl RawLine {
    /// The line without its ending (`\n` or `\r\n`).
    fn text(&self) -> &[u8] {
        let text = self.kept.strip_suffix(b"\n").unwrap_or(&self.kept);
        text.strip_suffix(b"\r").unwrap_or(text)
    }

    fn is_blank(&self) -> bool {
        !self.too_long && self.kept.iter().all(u8::is_ascii_whitespace)
    }
}

/// What the bytes from a document's first line on are.
enum Document {
    /// One complete value, then whitespace alone.
    Complete(Value),
    /// The start of one value, cut by the end of the bytes.
    Prefix,
    /// Neither (the error, for the message).
    Not(serde_json::Error),
}

impl Input {
    /// Opens `name` (`-` is stdin) at its start.
    pub fn open(name: &str, options: &ReadOptions) -> Result<Input, String> {
        Input::open_at(name, options, &Resume::default())
    }

    /// Opens `name` so that the first item read is the one at `resume.position`.
    pub fn open_at(name: &str, options: &ReadOptions, resume: &Resume) -> Result<Input, String> {
        let shown = if name == "-" { "stdin" } else { name };
        let problem = |e: io::Error| format!("cannot read {shown}: {e}");
        let position = resume.position;
        let (reader, sought): (Box<dyn BufRead + Send>, bool) = if name == "-" {
            (
                decompressed(BufReader::new(io::stdin())).map_err(problem)?,
                false,
            )
        } else {
            let mut file = File::open(name).map_err(problem)?;
            let size = file.metadata().map_err(problem)?.len();
            let mut magic = [0u8; 2];
            let got = read_up_to(&mut file, &mut magic).map_err(problem)?;
            if got == 2 && magic == GZIP_MAGIC {
                file.seek(SeekFrom::Start(0)).map_err(problem)?;
                let gzip = MultiGzDecoder::new(BufReader::new(file));
                (Box::new(BufReader::new(gzip)), false)
            } else {
                if position.offset > size {
                    return Err(shorter(shown));
                }
                // Plain text: seek straight to the record instead of reading up to it.
                file.seek(SeekFrom::Start(position.offset))
                    .map_err(problem)?;
                (Box::new(BufReader::new(file)), position.offset > 0)
            }
        };
        let mut input = Input {
            reader,
            cap: options.max_record_bytes.max(1),
            shape: resume.shape,
            line: 0,
            offset: 0,
            crc: (!sought).then(crc32fast::Hasher::new),
            pending: VecDeque::new(),
            skip: position.index,
            finished: false,
        };
        if sought {
            input.offset = position.offset;
        } else if input.discard(position.offset).map_err(problem)? < position.offset {
            return Err(shorter(shown));
        }
        input.line = position.line.saturating_sub(1);
        match resume.through {
            Some(expected) if !sought => input.verify(shown, expected).map_err(problem)??,
            _ => {}
        }
        Ok(input)
    }

    /// The shape, once the first record has shown it.
    pub fn shape(&self) -> Option<Shape> {
        self.shape
    }

    /// Where the next item starts (after the last one, once all were read), and the
    /// input's digest through its record (through everything read, at the end).
    pub fn next_at(&self) -> (Position, Option<Digest>) {
        match self.pending.front() {
            Some(located) => (located.position, located.through),
            None => (
                Position {
                    line: self.line + 1,
                    offset: self.offset,
                    index: 0,
                },
                self.digest(),
            ),
        }
    }

    /// Whether no item is left (the next record is read to know).
    pub fn at_end(&mut self) -> io::Result<bool> {
        while self.pending.is_empty() && !self.finished {
            self.read_record()?;
        }
        Ok(self.pending.is_empty())
    }

    /// The next item; `Ok(None)` at the end. An `Err` is an I/O or decompression error.
    pub fn next_item(&mut self) -> io::Result<Option<Located>> {
        loop {
            if let Some(located) = self.pending.pop_front() {
                return Ok(Some(located));
            }
            if self.finished {
                return Ok(None);
            }
            self.read_record()?;
        }
    }

    fn digest(&self) -> Option<Digest> {
        self.crc.as_ref().map(|crc| Digest {
            bytes: self.offset,
            crc32: crc.clone().finalize(),
        })
    }

    /// Reads records until `expected.bytes` and compares the digest there. The outer
    /// `Err` is an I/O error, the inner one says that the input is not the one expected.
    fn verify(&mut self, name: &str, expected: Digest) -> io::Result<Result<(), String>> {
        while self.offset < expected.bytes && !self.finished {
            self.read_record()?;
        }
        let found = self
            .pending
            .iter()
            .filter_map(|located| located.through)
            .chain(self.digest())
            .find(|digest| digest.bytes == expected.bytes);
        Ok(if found == Some(expected) {
            Ok(())
        } else {
            Err(format!(
                "{name} is not the input the checkpoint was written for: its first {} bytes differ",
                expected.bytes
            ))
        })
    }

    /// Reads up to the next record (skipping blank lines) and queues its items; at the end
    /// of the input, marks it finished. After an error the input ends, and nothing of the
    /// record that failed counts as read: [`Input::next_at`] is its start, where a resume
    /// must begin.
    fn read_record(&mut self) -> io::Result<()> {
        loop {
            let (line, offset) = (self.line + 1, self.offset);
            let crc = self.crc.clone();
            match self.read_one(line, offset) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    (self.line, self.offset, self.crc) = (line - 1, offset, crc);
                    self.finished = true;
                    return Err(e);
                }
            }
        }
    }

    /// Reads one line and, unless it is blank (`false`), the record starting there.
    fn read_one(&mut self, line: u64, offset: u64) -> io::Result<bool> {
        let Some(raw) = self.read_line()? else {
            self.finished = true;
            return Ok(true);
        };
        if raw.is_blank() {
            return Ok(false);
        }
        let items = match self.shape {
            Some(Shape::Lines) => self.line_items(&raw),
            Some(Shape::Document) => self.document(raw, line, true)?,
            // Only a line that opens a value it does not close may start a document.
            None if !raw.too_long && is_eof(serde_json::from_slice::<Value>(raw.text())) => {
                self.document(raw, line, false)?
            }
            None => {
                self.shape = Some(Shape::Lines);
                self.line_items(&raw)
            }
        };
        self.push(line, offset, items);
        Ok(true)
    }

    /// Consumes one line (through its `\n`, or to the end), keeping at most `cap` + 2
    /// bytes of it; `None` at the end of the input.
    fn read_line(&mut self) -> io::Result<Option<RawLine>> {
        let mut kept = Vec::new();
        let mut too_long = false;
        let mut any = false;
        loop {
            let buffer = match self.reader.fill_buf() {
                Ok(buffer) => buffer,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buffer.is_empty() {
                break;
            }
            any = true;
            let (piece, ends) = match buffer.iter().position(|&b| b == b'\n') {
                Some(at) => (&buffer[..=at], true),
                None => (buffer, false),
            };
            if !too_long {
                if kept.len() + piece.len() <= self.cap + 2 {
                    kept.extend_from_slice(piece);
                } else {
                    too_long = true;
                    kept = Vec::new();
                }
            }
            let n = piece.len();
            account(&mut self.line, &mut self.offset, &mut self.crc, piece);
            self.reader.consume(n);
            if ends {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        let mut raw = RawLine { kept, too_long };
        // The ending may take the 2 spare bytes; the text itself must fit the cap.
        raw.too_long |= raw.text().len() > self.cap;
        Ok(Some(raw))
    }

    /// The items of a JSON Lines record.
    fn line_items(&self, raw: &RawLine) -> Vec<Item> {
        if raw.too_long {
            return vec![self.too_long("line")];
        }
        let text = raw.text();
        match serde_json::from_slice::<Value>(text) {
            Ok(value) => decode(value),
            Err(e) => vec![Item::Unreadable {
                message: match std::str::from_utf8(text) {
                    Err(bad) => format!("not UTF-8 text (byte {})", bad.valid_up_to() + 1),
                    Ok(_) => format!(
                        "invalid JSON at column {}: {}",
                        e.column(),
                        json_problem(&e)
                    ),
                },
                raw: Some(String::from_utf8_lossy(text).into_owned()),
            }],
        }
    }

    /// A document starting with `first` (line `line`): read up to the cap and parsed
    /// whole. When the shape is still open (`decided` false), bytes that do not continue
    /// one value make the input JSON Lines instead: they are put back to be read as lines.
    fn document(&mut self, first: RawLine, line: u64, decided: bool) -> io::Result<Vec<Item>> {
        if first.too_long {
            self.drain()?;
            return Ok(vec![self.too_long("JSON document")]);
        }
        let mut whole = first.kept.clone();
        let more = self.cap + 1 - whole.len().min(self.cap + 1);
        let mut rest = Vec::with_capacity(more.min(64 * 1024));
        (&mut self.reader)
            .take(more as u64)
            .read_to_end(&mut rest)?;
        whole.extend_from_slice(&rest);
        let larger = whole.len() > self.cap;
        let parsed = parse_document(&whole);
        if !decided {
            if let Document::Not(_) = parsed {
                self.shape = Some(Shape::Lines);
                let reader = std::mem::replace(&mut self.reader, Box::new(io::empty()));
                self.reader = Box::new(Cursor::new(rest).chain(reader));
                return Ok(self.line_items(&first));
            }
            self.shape = Some(Shape::Document);
        }
        account(&mut self.line, &mut self.offset, &mut self.crc, &rest);
        if larger {
            self.drain()?;
            return Ok(vec![self.too_long("JSON document")]);
        }
        let lossy = || Some(String::from_utf8_lossy(&whole).trim_end().to_string());
        Ok(match parsed {
            Document::Complete(value) => decode(value),
            Document::Prefix => vec![Item::Unreadable {
                message: "the JSON document ends before it is complete".into(),
                raw: lossy(),
            }],
            Document::Not(e) => vec![Item::Unreadable {
                message: format!(
                    "invalid JSON document at line {}, column {}: {}",
                    line + e.line().saturating_sub(1) as u64,
                    e.column(),
                    json_problem(&e)
                ),
                raw: lossy(),
            }],
        })
    }

    fn too_long(&self, what: &str) -> Item {
        Item::Unreadable {
            message: format!(
                "a {what} longer than {} bytes (--max-record-bytes): skipped without reading it",
                self.cap
            ),
            raw: None,
        }
    }

    /// Queues the items of the record at (`line`, `offset`), less those a resume skips.
    fn push(&mut self, line: u64, offset: u64, items: Vec<Item>) {
        let skip = std::mem::take(&mut self.skip);
        let through = self.digest();
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
            self.pending.push_back(Located {
                item,
                position,
                through,
            });
        }
    }

    /// Consumes the rest of the input without keeping it (a document over the cap).
    fn drain(&mut self) -> io::Result<()> {
        loop {
            let buffer = match self.reader.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(buffer) => buffer,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let n = buffer.len();
            account(&mut self.line, &mut self.offset, &mut self.crc, buffer);
            self.reader.consume(n);
        }
    }

    /// Consumes up to `n` bytes: how many there were.
    fn discard(&mut self, n: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < n {
            let buffer = match self.reader.fill_buf() {
                Ok([]) => break,
                Ok(buffer) => buffer,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let take = buffer.len().min((n - done) as usize);
            let mut no_lines = 0;
            account(
                &mut no_lines,
                &mut self.offset,
                &mut self.crc,
                &buffer[..take],
            );
            self.reader.consume(take);
            done += take as u64;
        }
        Ok(done)
    }
}

/// Counts the items of `name` from its start: the total a progress line needs.
pub fn count_items(name: &str, options: &ReadOptions) -> Result<u64, String> {
    let mut input = Input::open(name, options)?;
    let mut count = 0;
    while input
        .next_item()
        .map_err(|e| format!("cannot read {name}: {e}"))?
        .is_some()
    {
        count += 1;
    }
    Ok(count)
}

/// Bytes consumed: the offset, the newlines and the digest move on.
fn account(lines: &mut u64, offset: &mut u64, crc: &mut Option<crc32fast::Hasher>, bytes: &[u8]) {
    *offset += bytes.len() as u64;
    *lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    if let Some(crc) = crc {
        crc.update(bytes);
    }
}

fn shorter(name: &str) -> String {
    format!("cannot resume {name}: it is shorter than the checkpoint says")
}

fn is_eof<T>(result: Result<T, serde_json::Error>) -> bool {
    matches!(result, Err(e) if e.is_eof())
}

fn parse_document(bytes: &[u8]) -> Document {
    let mut parser = serde_json::Deserializer::from_slice(bytes);
    match Value::deserialize(&mut parser).and_then(|value| parser.end().map(|()| value)) {
        Ok(value) => Document::Complete(value),
        Err(e) if e.is_eof() => Document::Prefix,
        Err(e) => Document::Not(e),
    }
}

/// serde_json's message without its " at line L column C" (the caller says where).
fn json_problem(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
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
) -> io::Result<Box<dyn BufRead + Send>> {
    let gzip = reader.fill_buf()?.starts_with(&GZIP_MAGIC);
    Ok(if gzip {
        Box::new(BufReader::new(MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
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
                            Err(e) => bad(format!(
                                "failure record's raw text: invalid JSON at column {}: {}",
                                e.column(),
                                json_problem(&e)
                            )),
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

fn unreadable(message: &str) -> Item {
    Item::Unreadable {
        message: message.to_string(),
        raw: None,
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

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn options(cap: usize) -> ReadOptions {
        ReadOptions {
            max_record_bytes: cap,
        }
    }

    fn all(input: &mut Input) -> Vec<Located> {
        let mut out = Vec::new();
        while let Some(located) = input.next_item().unwrap() {
            out.push(located);
        }
        out
    }

    fn read(path: &str, cap: usize) -> (Vec<Located>, Option<Shape>) {
        let mut input = Input::open(path, &options(cap)).unwrap();
        let items = all(&mut input);
        (items, input.shape())
    }

    fn event(n: u64) -> Value {
        json!({"type": "track", "event": "e", "userId": "u", "properties": {"n": n}})
    }

    fn events_of(items: &[Located]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|l| match &l.item {
                Item::Event(e) => e.pointer("/properties/n").and_then(Value::as_u64),
                Item::Unreadable { .. } => None,
            })
            .collect()
    }

    fn unreadable_of(items: &[Located]) -> Vec<(String, Option<String>)> {
        items
            .iter()
            .filter_map(|l| match &l.item {
                Item::Unreadable { message, raw } => Some((message.clone(), raw.clone())),
                Item::Event(_) => None,
            })
            .collect()
    }

    /// The same items at the same positions; digests too where the resumed read has them
    /// (a plain file is sought, so it has none).
    fn assert_same(resumed: &[Located], whole: &[Located], context: &str) {
        let strip = |items: &[Located], keep: bool| -> Vec<Located> {
            items
                .iter()
                .map(|l| Located {
                    through: l.through.filter(|_| keep),
                    ..l.clone()
                })
                .collect()
        };
        let digests = resumed.iter().all(|l| l.through.is_some());
        assert_eq!(strip(resumed, digests), strip(whole, digests), "{context}");
    }

    /// Resuming at every item's position (with the shape and digest a checkpoint keeps)
    /// gives exactly the items from there on; the count of items.
    fn assert_resumable(path: &str, cap: usize) -> usize {
        let (items, shape) = read(path, cap);
        for (k, located) in items.iter().enumerate() {
            let resume = Resume {
                shape,
                position: located.position,
                through: located.through,
            };
            let rest = all(&mut Input::open_at(path, &options(cap), &resume).unwrap());
            assert_same(&rest, &items[k..], &format!("resuming {path} at item {k}"));
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
        let (items, shape) = read(&path, DEFAULT_MAX_RECORD_BYTES);
        assert_eq!(shape, Some(Shape::Lines));
        assert_eq!(items.len(), 5);
        assert_eq!(
            unreadable_of(&items),
            [(
                "line 3: invalid JSON at column 2: key must be a string".to_string(),
                Some("{oops".to_string())
            )]
        );
        assert_eq!(items[3].position.index, 1);
        assert_eq!(assert_resumable(&path, DEFAULT_MAX_RECORD_BYTES), 5);
    }

    #[test]
    fn gzip_and_documents_resume_anywhere() {
        let lines: String = (1..=5).map(|n| format!("{}\n", event(n))).collect();
        // A name that does not say gzip: the magic bytes do.
        let path = temp("events.json", &gzip(lines.as_bytes()));
        assert_eq!(assert_resumable(&path, DEFAULT_MAX_RECORD_BYTES), 5);
        let pretty = serde_json::to_string_pretty(&json!([event(1), event(2), event(3)])).unwrap();
        let path = temp("array.json", format!("\n\n{pretty}\n\n").as_bytes());
        assert_eq!(read(&path, 1 << 20).1, Some(Shape::Document));
        assert_eq!(assert_resumable(&path, DEFAULT_MAX_RECORD_BYTES), 3);
    }

    /// Issue 17, item 7: a first record cut short (`{"type":"tr`, or `[{…},`) is one bad
    /// line, not the start of a document swallowing the rest.
    #[test]
    fn a_cut_first_record_costs_that_line_only() {
        for first in ["{\"type\":\"tr", &format!("[{},", event(0))] {
            let text = format!("{first}\n{}\n{}\n", event(1), event(2));
            let path = temp("cut.jsonl", text.as_bytes());
            let (items, shape) = read(&path, DEFAULT_MAX_RECORD_BYTES);
            assert_eq!(shape, Some(Shape::Lines), "{first}");
            assert_eq!(events_of(&items), [1, 2], "{first}");
            let bad = unreadable_of(&items);
            assert_eq!(bad.len(), 1);
            assert_eq!(bad[0].1.as_deref(), Some(first));
            assert_resumable(&path, DEFAULT_MAX_RECORD_BYTES);
        }
    }

    /// Issue 17, item 7: a byte that is not UTF-8 costs its line only, and the line's text
    /// is kept (lossy) for the failures file.
    #[test]
    fn a_bad_byte_costs_that_line_only() {
        let mut bytes = b"{\"type\":\"tr\n".to_vec();
        bytes.extend_from_slice(format!("{}\n", event(1)).as_bytes());
        bytes.extend_from_slice(b"{\"type\":\"track\",\"event\":\"caf\xe9\",\"userId\":\"u\"}\n");
        bytes.extend_from_slice(format!("{}\n", event(2)).as_bytes());
        let path = temp("latin1.jsonl", &gzip(&bytes));
        let (items, _) = read(&path, DEFAULT_MAX_RECORD_BYTES);
        assert_eq!(events_of(&items), [1, 2]);
        let bad = unreadable_of(&items);
        assert_eq!(bad.len(), 2);
        assert!(bad[1].0.starts_with("line 3: not UTF-8 text"), "{bad:?}");
        assert_eq!(
            bad[1].1.as_deref(),
            Some("{\"type\":\"track\",\"event\":\"caf\u{fffd}\",\"userId\":\"u\"}")
        );
        assert_resumable(&path, DEFAULT_MAX_RECORD_BYTES);
    }

    #[test]
    fn records_over_the_cap_are_refused_unread() {
        let cap = 1024;
        let huge = json!({"type": "track", "userId": "u", "event": "x".repeat(5000)});
        // First, in the middle and last: a line over the cap is one unreadable record.
        let text = format!("{huge}\n{}\n{huge}\n{}\n{huge}", event(1), event(2));
        let path = temp("huge.jsonl", text.as_bytes());
        let (items, shape) = read(&path, cap);
        assert_eq!(shape, Some(Shape::Lines));
        assert_eq!(events_of(&items), [1, 2]);
        let bad = unreadable_of(&items);
        assert_eq!(bad.len(), 3);
        assert!(
            bad[0]
                .0
                .starts_with("line 1: a line longer than 1024 bytes"),
            "{bad:?}"
        );
        assert_eq!(bad[2].1, None);
        assert_resumable(&path, cap);
        // A document over the cap, pretty or cut: one unreadable record for the input.
        let pretty =
            serde_json::to_string_pretty(&json!((0..40).map(event).collect::<Vec<_>>())).unwrap();
        for text in [pretty.as_str(), &pretty[..pretty.len() / 2]] {
            let path = temp("big.json", text.as_bytes());
            let (items, shape) = read(&path, cap);
            assert_eq!(shape, Some(Shape::Document));
            assert_eq!(items.len(), 1);
            assert!(unreadable_of(&items)[0]
                .0
                .contains("JSON document longer than 1024"));
        }
        // Under the cap, a cut document is one unreadable record with its text.
        let cut = &pretty[..300];
        let path = temp("cut.json", cut.as_bytes());
        let (items, _) = read(&path, 1 << 20);
        assert_eq!(
            unreadable_of(&items),
            [(
                "line 1: the JSON document ends before it is complete".into(),
                Some(cut.trim_end().to_string())
            )]
        );
    }

    /// A read error ends the input; where it stands is the start of the record that
    /// failed, never the middle of it (a resume there reads that record again).
    #[test]
    fn a_read_error_leaves_the_position_at_the_record_that_failed() {
        // The last line has no ending: its bytes are out before the damage shows.
        let lines: Vec<String> = (1..=50).map(|n| event(n).to_string()).collect();
        let lines = lines.join("\n");
        let mut bytes = gzip(lines.as_bytes());
        let at = bytes.len() - 6;
        bytes[at] ^= 0xff; // the trailer's CRC: found once every byte is out
        let path = temp("damaged.gz", &bytes);
        let mut input = Input::open(&path, &options(1 << 20)).unwrap();
        let mut read = 0;
        let error = loop {
            match input.next_item() {
                Ok(Some(_)) => read += 1,
                Ok(None) => panic!("the damage went unnoticed"),
                Err(e) => break e,
            }
        };
        assert!(!error.to_string().is_empty());
        assert_eq!(read, 49);
        let (position, _) = input.next_at();
        assert_eq!(position.line, read + 1);
        assert_eq!(
            position.offset,
            lines
                .lines()
                .take(read as usize)
                .map(|l| l.len() as u64 + 1)
                .sum::<u64>()
        );
        assert!(
            input.next_item().unwrap().is_none(),
            "read on after an error"
        );
    }

    #[test]
    fn a_changed_stream_is_refused_on_resume() {
        let lines: String = (1..=4).map(|n| format!("{}\n", event(n))).collect();
        let path = temp("stream.gz", &gzip(lines.as_bytes()));
        let (items, shape) = read(&path, 1 << 20);
        let resume = Resume {
            shape,
            position: items[2].position,
            through: items[2].through,
        };
        assert!(Input::open_at(&path, &options(1 << 20), &resume).is_ok());
        let changed = lines.replace("\"n\":2", "\"n\":9");
        std::fs::write(&path, gzip(changed.as_bytes())).unwrap();
        let refused = Input::open_at(&path, &options(1 << 20), &resume)
            .err()
            .unwrap();
        assert!(
            refused.contains("not the input the checkpoint"),
            "{refused}"
        );
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

    /// A small deterministic generator: the property test needs no crate.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = self.0;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (x ^ (x >> 31)) % n.max(1)
        }
    }

    /// Random inputs of every kind the reader meets: lines of events, arrays, cut and
    /// non-UTF-8 lines, blank lines, lines over the cap, pretty documents, gzip or not.
    fn random_input(rng: &mut Rng) -> Vec<u8> {
        let mut bytes = Vec::new();
        if rng.below(5) == 0 {
            let events: Vec<Value> = (0..rng.below(6)).map(event).collect();
            let pretty = serde_json::to_string_pretty(&events).unwrap();
            let cut = if rng.below(3) == 0 {
                rng.below(pretty.len() as u64) as usize
            } else {
                pretty.len()
            };
            bytes.extend_from_slice(&pretty.as_bytes()[..cut]);
        } else {
            for n in 0..rng.below(12) {
                let line = match rng.below(9) {
                    0 => String::new(),
                    1 => format!("[{}, {}]", event(n), event(n + 100)),
                    2 => {
                        let text = event(n).to_string();
                        text[..rng.below(text.len() as u64) as usize].to_string()
                    }
                    3 => format!("{{\"type\":\"track\",\"x\":\"{}\"}}", "y".repeat(300)),
                    4 => "  \t".into(),
                    _ => event(n).to_string(),
                };
                bytes.extend_from_slice(line.as_bytes());
                if rng.below(10) == 0 {
                    bytes.push(0xff);
                }
                if rng.below(12) > 0 {
                    bytes.extend_from_slice(if rng.below(4) == 0 { b"\r\n" } else { b"\n" });
                }
            }
        }
        if rng.below(3) == 0 {
            gzip(&bytes)
        } else {
            bytes
        }
    }

    /// Issue 17, item 7 (property): resuming at any record boundary gives exactly the
    /// records from there on, over random inputs and random resume points; and every
    /// intact event line of a JSON Lines input is read as its event.
    #[test]
    fn resuming_anywhere_reads_the_rest_exactly() {
        let mut rng = Rng(17);
        for case in 0..300 {
            let bytes = random_input(&mut rng);
            let path = temp("property.in", &bytes);
            let cap = [256, 1 << 20][rng.below(2) as usize];
            let (items, shape) = read(&path, cap);
            for _ in 0..3 {
                let k = rng.below(items.len() as u64 + 1) as usize;
                let resume = match items.get(k) {
                    Some(located) => Resume {
                        shape,
                        position: located.position,
                        through: located.through,
                    },
                    None => {
                        let mut input = Input::open(&path, &options(cap)).unwrap();
                        all(&mut input);
                        let (position, through) = input.next_at();
                        Resume {
                            shape,
                            position,
                            through,
                        }
                    }
                };
                let rest = all(&mut Input::open_at(&path, &options(cap), &resume).unwrap());
                assert_same(
                    &rest,
                    &items[k..],
                    &format!("case {case}: resuming at item {k}"),
                );
            }
        }
    }
}
