//! `plan`: the offline dry run (formerly the `transform` binary). Prints, per event, the
//! Kustomer requests the mapping would cause, or the event's error. No network.

use std::io::Write as _;
use std::process::ExitCode;

use crate::outcome::Failure;
use kustomer_mapping::settings::BaseEndpoint;
use kustomer_mapping::{map_event, CustomerRef, Plan, Write};
use serde_json::{json, Value};

use super::input::{Input, Item};
use super::Options;

pub fn run(program: &str, options: &Options) -> ExitCode {
    let files = options.inputs();
    // Open every file first: an unreadable one stops the run before any output.
    let mut inputs = Vec::new();
    for file in &files {
        match Input::open(file, &options.read) {
            Ok(reader) => inputs.push((file, reader)),
            Err(message) => {
                eprintln!("{program}: {message}");
                return ExitCode::from(1);
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut number = 0usize;
    for (file, mut events) in inputs {
        loop {
            let parsed = match events.next_item() {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("{program}: cannot read {file}: {e}");
                    return ExitCode::from(1);
                }
            };
            number += 1;
            let report = match parsed.item {
                Item::Event(event) => describe(number, &event, options),
                Item::Unreadable { message, .. } => {
                    json!({ "event": number, "source": file, "error": {
                    "status": 400, "class": "permanent", "message": message } })
                }
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

fn describe(number: usize, event: &Value, options: &Options) -> Value {
    let mut report = json!({ "event": number });
    if let Some(id) = event.get("messageId") {
        report["messageId"] = id.clone();
    }
    let plan = map_event(event, &options.flags);
    match &plan {
        Err(error) => {
            let error = error.clone();
            let failure = Failure::from(error);
            report["error"] = json!({ "status": failure.status, "class": failure.class.as_str(), "message": failure.message });
        }
        Ok(Plan::Tracking(write)) => {
            report["requests"] = json!([request(&options.base, write)]);
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
    // Section 11's changes, by field and without values; absent when there are none.
    if let Some(fixes) = plan
        .as_ref()
        .ok()
        .map(Plan::fixes)
        .filter(|f| !f.is_empty())
    {
        report["schemaFixes"] = json!(fixes);
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
