//! `transform`: the offline dry run. Reads RudderStack events (one JSON object, an array,
//! or JSON Lines) from files or stdin and prints, per event, the Kustomer requests the
//! mapping would cause, or the event's error. No network.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, Read, Write as _};
use std::process::ExitCode;

use rudder_kustomer::config;
use rudder_kustomer::mapping::{map_event, CustomerRef, Plan, Write};
use rudder_kustomer::outcome::Failure;
use rudder_kustomer::settings::{parse_flag_str, BaseEndpoint, ConfigError, MappingFlags};
use serde_json::{json, Value};

const USAGE: &str = "\
usage: transform [OPTIONS] [FILE ...]     (no FILE, or -, reads stdin)

Input: one JSON event, a JSON array of events, or JSON Lines.
Output: one JSON object per event (pretty; --compact for JSON Lines).

Options (each also read from the environment variable shown):
  --base-endpoint URL|us|eu|in                   KUSTOMER_BASE_ENDPOINT
  --generic-page[=true|false]                    KUSTOMER_GENERIC_PAGE
  --generic-screen[=true|false]                  KUSTOMER_GENERIC_SCREEN
  --advanced-transform[=true|false]              KUSTOMER_ADVANCED_TRANSFORM
  --set-identity-email[=true|false]              KUSTOMER_SET_IDENTITY_EMAIL
  --disable-email-as-tracking-property[=true|false]
                                                 KUSTOMER_DISABLE_EMAIL_AS_TRACKING_PROPERTY
  --compact                                      one line per event
Exit status: 0 when the input was read (rejected events are reported per event),
2 for bad options or settings, 1 for unreadable input.";

struct Options {
    base: BaseEndpoint,
    flags: MappingFlags,
    compact: bool,
    files: Vec<String>,
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("transform: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let files = if options.files.is_empty() {
        vec!["-".to_string()]
    } else {
        options.files.clone()
    };
    // Open every file first: an unreadable one stops the run before any output.
    let mut inputs = Vec::new();
    for file in &files {
        match open(file) {
            Ok(reader) => inputs.push((file, EventReader::new(reader))),
            Err(message) => {
                eprintln!("transform: {message}");
                return ExitCode::from(1);
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut number = 0usize;
    for (file, mut events) in inputs {
        loop {
            let parsed = match events.next_event() {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("transform: cannot read {file}: {e}");
                    return ExitCode::from(1);
                }
            };
            number += 1;
            let report = match parsed {
                Ok(event) => describe(number, &event, &options),
                Err(problem) => json!({ "event": number, "source": file, "error": {
                    "status": 400, "class": "permanent", "message": problem } }),
            };
            let line = if options.compact {
                serde_json::to_string(&report)
            } else {
                serde_json::to_string_pretty(&report)
            };
            if writeln!(out, "{}", line.unwrap_or_default()).is_err() {
                return ExitCode::from(1);
            }
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn parse_options() -> Result<Options, String> {
    use lexopt::prelude::*;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let env_flag = |name: &str| -> Result<bool, String> {
        env(name).map_or(Ok(false), |v| {
            parse_flag_str(name, v.trim()).map_err(|e| e.to_string())
        })
    };
    let mut base = env(config::BASE_ENDPOINT).unwrap_or_default();
    let mut flags = MappingFlags {
        generic_page: env_flag(config::GENERIC_PAGE)?,
        generic_screen: env_flag(config::GENERIC_SCREEN)?,
        advanced_transform: env_flag(config::ADVANCED_TRANSFORM)?,
        set_identity_email: env_flag(config::SET_IDENTITY_EMAIL)?,
        disable_email_as_tracking_property: env_flag(config::DISABLE_EMAIL_AS_TRACKING_PROPERTY)?,
    };
    let mut compact = false;
    let mut files = Vec::new();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let flag =
            |target: &mut bool, name: &str, parser: &mut lexopt::Parser| -> Result<(), String> {
                *target = match parser.optional_value() {
                    None => true,
                    Some(value) => {
                        let value = value.string().map_err(|e| e.to_string())?;
                        parse_flag_str(name, &value).map_err(|e| e.to_string())?
                    }
                };
                Ok(())
            };
        match arg {
            Long("base-endpoint") => {
                base = parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|e| e.to_string())?
            }
            Long("generic-page") => flag(&mut flags.generic_page, "--generic-page", &mut parser)?,
            Long("generic-screen") => {
                flag(&mut flags.generic_screen, "--generic-screen", &mut parser)?
            }
            Long("advanced-transform") => flag(
                &mut flags.advanced_transform,
                "--advanced-transform",
                &mut parser,
            )?,
            Long("set-identity-email") => flag(
                &mut flags.set_identity_email,
                "--set-identity-email",
                &mut parser,
            )?,
            Long("disable-email-as-tracking-property") => flag(
                &mut flags.disable_email_as_tracking_property,
                "--disable-email-as-tracking-property",
                &mut parser,
            )?,
            Long("compact") => compact = true,
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(file) => files.push(file.string().map_err(|e| e.to_string())?),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let base = BaseEndpoint::parse(&base).map_err(|e: ConfigError| e.to_string())?;
    Ok(Options {
        base,
        flags,
        compact,
        files,
    })
}

fn open(file: &str) -> Result<Box<dyn BufRead>, String> {
    if file == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    std::fs::File::open(file)
        .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn BufRead>)
        .map_err(|e| format!("cannot read {file}: {e}"))
}

/// Streams events: JSON Lines one line at a time (memory stays flat however long the
/// input), else the whole input as one JSON value (an array is a list of events).
struct EventReader {
    input: Box<dyn BufRead>,
    line_number: usize,
    /// Events of a whole-input value, or of a one-line array, waiting to be handed out.
    pending: std::collections::VecDeque<Result<Value, String>>,
    /// Set once the first line has shown whether this is JSON Lines.
    started: bool,
}

impl EventReader {
    fn new(input: Box<dyn BufRead>) -> Self {
        EventReader {
            input,
            line_number: 0,
            pending: Default::default(),
            started: false,
        }
    }

    fn next_event(&mut self) -> std::io::Result<Option<Result<Value, String>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            self.line_number += 1;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Array(events)) => self.pending.extend(events.into_iter().map(Ok)),
                Ok(event) => self.pending.push_back(Ok(event)),
                Err(_) if !self.started => {
                    // Not one value per line: read the rest and take the input as a whole.
                    let mut rest = String::new();
                    self.input.read_to_string(&mut rest)?;
                    let whole = format!("{}{line}{rest}", "\n".repeat(self.line_number - 1));
                    self.pending.extend(split_events(&whole));
                }
                Err(e) => self
                    .pending
                    .push_back(Err(format!("line {}: invalid JSON: {e}", self.line_number))),
            }
            self.started = true;
        }
    }
}

/// One JSON value (an array is a list of events), else JSON Lines, one event per line.
fn split_events(text: &str) -> Vec<Result<Value, String>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(events)) => events.into_iter().map(Ok).collect(),
        Ok(event) => vec![Ok(event)],
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                serde_json::from_str::<Value>(line)
                    .map_err(|e| format!("line {}: invalid JSON: {e}", index + 1))
            })
            .collect(),
    }
}

fn describe(number: usize, event: &Value, options: &Options) -> Value {
    let mut report = json!({ "event": number });
    if let Some(id) = event.get("messageId") {
        report["messageId"] = id.clone();
    }
    match map_event(event, &options.flags) {
        Err(error) => {
            let failure = Failure::from(error);
            report["error"] = json!({ "status": failure.status, "class": failure.class.as_str(), "message": failure.message });
        }
        Ok(Plan::Tracking(write)) => {
            report["requests"] = json!([request(&options.base, &write)]);
        }
        Ok(Plan::Identify(identify)) => match &identify.customer {
            CustomerRef::Known(id) => {
                report["requests"] = json!([request(&options.base, &identify.update(id))]);
            }
            CustomerRef::Lookups(lookups) => {
                report["lookups"] = lookups
                    .iter()
                    .map(|lookup| {
                        json!({ "method": "GET", "by": lookup.by.as_str(),
                        "url": format!("{}{}", options.base.as_str(), lookup.path) })
                    })
                    .collect();
                report["ifFound"] = request(&options.base, &identify.update("{customerId}"));
                report["ifNotFound"] = request(&options.base, &identify.create());
            }
        },
    }
    report
}

fn request(base: &BaseEndpoint, write: &Write) -> Value {
    json!({
        "method": write.method.as_str(),
        "url": format!("{}{}", base.as_str(), write.path),
        "headers": { "Content-Type": "application/json", "Authorization": "Bearer <apiKey>" },
        "body": write.body,
    })
}
