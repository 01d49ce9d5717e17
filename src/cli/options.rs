//! The command line's options, parsed in one place for `plan` and `send`; settings are
//! read like the function's (flags or the same environment variables).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::settings::lambda;
use kustomer_mapping::settings::{
    parse_flag_str, BaseEndpoint, MappingFlags, SettingError, FIT_TO_SCHEMA_DEFAULT,
};

/// Exit statuses of `send` (`plan` keeps `transform`'s: 0 read, 1 unreadable, 2 usage).
pub const EXIT_SOME_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;

pub(super) const USAGE: &str = "\
usage: rudder-kustomer plan [OPTIONS] [FILE ...]   print the requests each event would cause
       rudder-kustomer send [OPTIONS] [FILE ...]   deliver the events to Kustomer
(no FILE, or -, reads stdin)

Input: one JSON event, a JSON array of events, JSON Lines, gzip-compressed files of any
of these; SQS bodies (EventBridge/SNS envelopes), `aws sqs receive-message` output (the
dead-letter queue) and the records of a --failures file.
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
  --checkpoint FILE     record progress; run the same command again to resume
  --failures FILE       append failed events (JSON Lines; replayable); default stdout
  --chunk-size N        events read and delivered at a time (default 1000)
  --dry-run             print the plan instead of sending
Exit status of send: 0 all delivered, 1 some failed, 2 bad options or settings,
130 interrupted (Ctrl-C once: finish the chunk in flight; twice: stop now).
Exit status of plan: 0 when the input was read (rejected events are reported per
event), 2 for bad options or settings, 1 for unreadable input.";

/// Options of `send` that are the function's settings: flag → environment variable.
/// Read by [`lambda::LambdaSettings::from_lookup`], so defaults and checks are the function's.
const SETTING_FLAGS: &[(&str, &str)] = &[
    ("secret-id", lambda::SECRET_ID),
    ("max-requests-per-minute", lambda::MAX_REQUESTS_PER_MINUTE),
    ("max-in-flight", lambda::MAX_IN_FLIGHT),
    ("max-attempts", lambda::RETRY_MAX_ATTEMPTS),
    ("connect-timeout-ms", lambda::CONNECT_TIMEOUT_MS),
    ("request-timeout-ms", lambda::REQUEST_TIMEOUT_MS),
    (
        "customer-cache-ttl-seconds",
        lambda::CUSTOMER_CACHE_TTL_SECONDS,
    ),
    (
        "customer-cache-max-entries",
        lambda::CUSTOMER_CACHE_MAX_ENTRIES,
    ),
];

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
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let env_flag_or = |name: &str, default: bool| -> Result<bool, String> {
        env(name).map_or(Ok(default), |v| {
            parse_flag_str(name, v.trim()).map_err(|e| e.to_string())
        })
    };
    let env_flag = |name: &str| env_flag_or(name, false);
    let mut base = env(lambda::BASE_ENDPOINT).unwrap_or_default();
    let mut flags = MappingFlags {
        generic_page: env_flag(lambda::GENERIC_PAGE)?,
        generic_screen: env_flag(lambda::GENERIC_SCREEN)?,
        advanced_transform: env_flag(lambda::ADVANCED_TRANSFORM)?,
        set_identity_email: env_flag(lambda::SET_IDENTITY_EMAIL)?,
        disable_email_as_tracking_property: env_flag(lambda::DISABLE_EMAIL_AS_TRACKING_PROPERTY)?,
        fit_to_kustomer_schema: env_flag_or(lambda::FIT_TO_SCHEMA, FIT_TO_SCHEMA_DEFAULT)?,
    };
    let mut compact = false;
    let mut files = Vec::new();
    let mut settings = Vec::new();
    let (mut checkpoint, mut failures, mut chunk_size, mut dry_run) = (None, None, 1000, false);
    let mut parser = lexopt::Parser::from_args(args);
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
        let send_only = |name: &str| -> Result<(), String> {
            match command {
                Command::Send => Ok(()),
                Command::Plan => Err(format!("--{name} is an option of send")),
            }
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
            Long("fit-to-kustomer-schema") => flag(
                &mut flags.fit_to_kustomer_schema,
                "--fit-to-kustomer-schema",
                &mut parser,
            )?,
            Long("compact") => compact = true,
            Long(name) if SETTING_FLAGS.iter().any(|(flag, _)| *flag == name) => {
                send_only(name)?;
                let variable = SETTING_FLAGS
                    .iter()
                    .find(|(flag, _)| *flag == name)
                    .map_or("", |(_, variable)| *variable);
                settings.push((variable, string_value(&mut parser)?));
            }
            Long("checkpoint") => {
                send_only("checkpoint")?;
                checkpoint = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?));
            }
            Long("failures") => {
                send_only("failures")?;
                failures = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?));
            }
            Long("chunk-size") => {
                send_only("chunk-size")?;
                chunk_size = match string_value(&mut parser)?.parse::<usize>() {
                    Ok(n) if (1..=100_000).contains(&n) => n,
                    _ => return Err("--chunk-size must be a whole number from 1 to 100000".into()),
                };
            }
            Long("dry-run") => {
                send_only("dry-run")?;
                dry_run = true;
            }
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(file) => files.push(file.string().map_err(|e| e.to_string())?),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let base = BaseEndpoint::parse(&base).map_err(|e: SettingError| e.to_string())?;
    Ok(Options {
        base,
        flags,
        compact,
        files,
        settings,
        checkpoint,
        failures,
        chunk_size,
        dry_run,
    })
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
    match SETTING_FLAGS.iter().find(|(_, v)| *v == error.setting) {
        Some((flag, variable)) => format!("invalid --{flag} ({variable}): {}", error.problem),
        None => error.to_string(),
    }
}
