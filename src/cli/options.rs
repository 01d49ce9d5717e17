//! The command line's options, parsed in one place for `plan` and `send`; settings are
//! read like the function's (flags or the same environment variables).

use std::ffi::OsString;
use std::path::PathBuf;

use super::input::ReadOptions;
use crate::settings::lambda;
use kustomer_mapping::settings::{
    parse_flag_str, BaseEndpoint, MappingFlags, SettingError, MAPPING_FLAGS,
};

/// Exit statuses of `send` (`plan` keeps `transform`'s: 0 read, 1 unreadable, 2 usage).
pub const EXIT_SOME_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_REFUSED_KEY: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;

/// The range of `--max-record-bytes`: a line or document larger than the cap is refused.
const MIN_RECORD_BYTES: usize = 1024;
const MAX_RECORD_BYTES: usize = 1 << 30;

pub(super) const USAGE: &str = "\
usage: rudder-kustomer plan [OPTIONS] [FILE ...]   print the requests each event would cause
       rudder-kustomer send [OPTIONS] [FILE ...]   deliver the events to Kustomer
(no FILE, or -, reads stdin; a directory is refused: name the files in it)

Input: one JSON event, a JSON array of events, JSON Lines, gzip-compressed files of any
of these; SQS bodies (EventBridge/SNS envelopes), `aws sqs receive-message` output (the
dead-letter queue) and the records of a --failures file. A line or document longer than
--max-record-bytes is one unreadable record, skipped without being read whole.
Output of plan: one JSON object per event (pretty; --compact for JSON Lines).

Options (each also read from the environment variable shown):
  --base-endpoint URL|us|eu|in                   KUSTOMER_BASE_ENDPOINT
  --generic-page[=true|false]                    KUSTOMER_GENERIC_PAGE
  --generic-screen[=true|false]                  KUSTOMER_GENERIC_SCREEN
  --advanced-transform[=true|false]              KUSTOMER_ADVANCED_TRANSFORM
  --set-identity-email[=true|false]              KUSTOMER_SET_IDENTITY_EMAIL
  --disable-email-as-tracking-property[=true|false]
                                                 KUSTOMER_DISABLE_EMAIL_AS_TRACKING_PROPERTY
  --fit-to-kustomer-schema[=true|false] (default true)
                                                 KUSTOMER_FIT_TO_SCHEMA
  --link-companies[=true|false] (default true)   KUSTOMER_LINK_COMPANIES
  --max-record-bytes N (default 1048576)         longest line or document read
  --compact                                      plan: one line per event
Options of send (the API key: KUSTOMER_API_KEY, or a Secrets Manager secret):
  --secret-id NAME|ARN                           KUSTOMER_SECRET_ID
  --max-requests-per-minute N (default: none)    KUSTOMER_MAX_REQUESTS_PER_MINUTE
  --max-in-flight N (default 8)                  MAX_IN_FLIGHT
  --max-attempts N (default 3)                   RETRY_MAX_ATTEMPTS
  --connect-timeout-ms N (default 2000)          KUSTOMER_CONNECT_TIMEOUT_MS
  --request-timeout-ms N (default 5000)          KUSTOMER_REQUEST_TIMEOUT_MS
  --customer-cache-ttl-seconds N (default 300)   CUSTOMER_CACHE_TTL_SECONDS
  --customer-cache-max-entries N                 CUSTOMER_CACHE_MAX_ENTRIES
                        (both bound the company-id cache too)
  --unchanged-ttl-seconds N (default 300)        KUSTOMER_UNCHANGED_TTL_SECONDS
  --checkpoint FILE     record each finished event; run the same command again to resume
                        (an input whose content changed since is refused)
  --restart             start the --checkpoint over instead of resuming it
  --failures FILE       append failed events (JSON Lines; replayable); default stdout
  --chunk-size N        events read and delivered at a time (default 1000)
  --dry-run             print the plan instead of sending
Exit status of send: 0 all delivered; 1 some failed (in --failures), or the run broke
off (an input or the checkpoint could not be read or written); 2 bad options, settings
or inputs, or a checkpoint that does not match them: nothing was sent; 3 Kustomer
refused the API key (401 after reloading it, or 403): the run stopped at once;
130 interrupted: Ctrl-C once lets the requests on the wire finish and starts nothing
new, twice stops at once. The checkpoint then holds exactly the finished events.
Exit status of plan: 0 when the input was read (rejected events are reported per
event), 2 for bad options or settings, 1 for unreadable input.";

/// Options of `send` that are the function's settings, by option name → variable: the
/// number settings that have an option, and the secret. Read by
/// [`lambda::LambdaSettings::from_lookup`], so defaults and checks are the function's.
fn setting_option(name: &str) -> Option<&'static str> {
    if name == "secret-id" {
        return Some(lambda::SECRET_ID);
    }
    lambda::NUMBER_SETTINGS
        .iter()
        .find(|setting| setting.option == Some(name))
        .map(|setting| setting.env)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Plan,
    Send,
}

// The send-only fields and helpers are unused in a dry-run-only build.
#[cfg_attr(not(feature = "deliver"), allow(dead_code))]
pub struct Options {
    pub(crate) base: BaseEndpoint,
    pub(crate) flags: MappingFlags,
    pub(crate) compact: bool,
    pub(crate) files: Vec<String>,
    /// `send`: settings given as flags, by environment variable name.
    pub(crate) settings: Vec<(&'static str, String)>,
    pub(crate) checkpoint: Option<PathBuf>,
    pub(crate) failures: Option<PathBuf>,
    pub(crate) chunk_size: usize,
    pub(crate) dry_run: bool,
    /// `--restart`: start over instead of resuming from `--checkpoint`.
    pub(crate) restart: bool,
    /// How inputs are read (`--max-record-bytes`).
    pub(crate) read: ReadOptions,
}

impl Options {
    /// The inputs, stdin when none was named.
    pub(crate) fn inputs(&self) -> Vec<String> {
        if self.files.is_empty() {
            vec!["-".to_string()]
        } else {
            self.files.clone()
        }
    }
}

pub(super) fn parse_options(command: Command, args: Vec<OsString>) -> Result<Options, String> {
    use lexopt::prelude::*;
    let mut options = Options {
        base: BaseEndpoint::default(),
        flags: MappingFlags::default(),
        compact: false,
        files: Vec::new(),
        settings: Vec::new(),
        checkpoint: None,
        failures: None,
        chunk_size: 1000,
        dry_run: false,
        restart: false,
        read: ReadOptions::default(),
    };
    let mut base = None;
    // Mapping flags given on the command line, by option; the rest come from the
    // environment, then from their defaults.
    let mut given_flags: Vec<(&'static str, bool)> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let send_only = |name: &str| match command {
            Command::Send => Ok(()),
            Command::Plan => Err(format!("--{name} is an option of send")),
        };
        match arg {
            Long(name) if MAPPING_FLAGS.iter().any(|flag| flag.option == name) => {
                let name = name.to_string();
                given_flags.push(mapping_flag(&name, &mut parser)?);
            }
            Long(name) if setting_option(name).is_some() => {
                send_only(name)?;
                let variable = setting_option(name).unwrap_or_default();
                options
                    .settings
                    .push((variable, string_value(&mut parser)?));
            }
            Long("base-endpoint") => base = Some(string_value(&mut parser)?),
            Long("compact") => options.compact = true,
            Long("checkpoint") => {
                send_only("checkpoint")?;
                options.checkpoint = Some(PathBuf::from(string_value(&mut parser)?));
            }
            Long("failures") => {
                send_only("failures")?;
                options.failures = Some(PathBuf::from(string_value(&mut parser)?));
            }
            Long("chunk-size") => {
                send_only("chunk-size")?;
                options.chunk_size = match string_value(&mut parser)?.parse::<usize>() {
                    Ok(n) if (1..=100_000).contains(&n) => n,
                    _ => return Err("--chunk-size must be a whole number from 1 to 100000".into()),
                };
            }
            Long("restart") => {
                send_only("restart")?;
                options.restart = true;
            }
            Long("max-record-bytes") => {
                options.read.max_record_bytes = match string_value(&mut parser)?.parse::<usize>() {
                    Ok(n) if (MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "--max-record-bytes must be a whole number from {MIN_RECORD_BYTES} to {MAX_RECORD_BYTES}"
                        ))
                    }
                };
            }
            Long("dry-run") => {
                send_only("dry-run")?;
                options.dry_run = true;
            }
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(file) => options
                .files
                .push(file.string().map_err(|e| e.to_string())?),
            other => return Err(other.unexpected().to_string()),
        }
    }
    options.flags = mapping_flags(&given_flags)?;
    let base = base
        .or_else(|| env(lambda::BASE_ENDPOINT))
        .unwrap_or_default();
    options.base = BaseEndpoint::parse(&base).map_err(|e: SettingError| e.to_string())?;
    Ok(options)
}

/// A variable of the environment, when set and not blank.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `--<flag>` or `--<flag>=true|false`: the flag's option name and its value.
fn mapping_flag(name: &str, parser: &mut lexopt::Parser) -> Result<(&'static str, bool), String> {
    use lexopt::ValueExt as _;
    let Some(flag) = MAPPING_FLAGS.iter().find(|flag| flag.option == name) else {
        return Err(format!("unknown option --{name}"));
    };
    let value = match parser.optional_value() {
        None => true,
        Some(value) => {
            let value = value.string().map_err(|e| e.to_string())?;
            parse_flag_str(&format!("--{}", flag.option), &value).map_err(|e| e.to_string())?
        }
    };
    Ok((flag.option, value))
}

/// Every mapping flag: as given on the command line (the last one wins), else from the
/// function's environment variable, else its default.
fn mapping_flags(given: &[(&'static str, bool)]) -> Result<MappingFlags, String> {
    MappingFlags::read(|flag| {
        match given
            .iter()
            .rev()
            .find(|(option, _)| *option == flag.option)
        {
            Some((_, value)) => Ok(Some(*value)),
            None => env(flag.env)
                .map(|value| parse_flag_str(flag.env, value.trim()))
                .transpose(),
        }
    })
    .map_err(|e| e.to_string())
}

fn string_value(parser: &mut lexopt::Parser) -> Result<String, String> {
    use lexopt::ValueExt as _;
    parser
        .value()
        .map_err(|e| e.to_string())?
        .string()
        .map_err(|e| e.to_string())
}

/// A settings error as the user gave it: the flag and its variable.
#[cfg_attr(not(feature = "deliver"), allow(dead_code))]
pub(crate) fn setting_problem(error: &SettingError) -> String {
    let option = lambda::NUMBER_SETTINGS
        .iter()
        .find(|setting| setting.env == error.setting)
        .and_then(|setting| setting.option)
        .or((error.setting == lambda::SECRET_ID).then_some("secret-id"));
    match option {
        Some(option) => format!("invalid --{option} ({}): {}", error.setting, error.problem),
        None => error.to_string(),
    }
}
