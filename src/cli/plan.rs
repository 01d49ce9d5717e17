//! `plan`: the offline dry run (formerly the `transform` binary). Prints, per event, the
//! Kustomer requests the mapping would cause, or the event's error. No network.
//!
//! What depends on an answer is shown as a placeholder: `{customerId}` / `{companyId}` in
//! URLs, `<companyId>` in a customer body (as the key shows as `<apiKey>`).

use std::io::Write as _;
use std::process::ExitCode;

use crate::outcome::Failure;
use kustomer_mapping::settings::BaseEndpoint;
use kustomer_mapping::{map_event, CompanyRef, CustomerRef, IdentifyPlan, Plan, Write};
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
        Err(error) => report["error"] = error_of(error.clone()),
        Ok(Plan::Tracking(write)) => {
            report["requests"] = json!([request(&options.base, write)]);
        }
        Ok(Plan::Identify(identify)) => {
            let base = &options.base;
            // Spec 12.1: the company after the customer look-ups, before the write.
            let linked = |mut write: Write| {
                if identify.company.is_some() {
                    write.link_company(COMPANY_ID);
                }
                request(base, &write)
            };
            match &identify.customer {
                CustomerRef::Known(id) => {
                    company_lookups(&mut report, base, identify);
                    report["requests"] = json!([linked(identify.update(id))]);
                }
                CustomerRef::Lookups(_) => {
                    customer_lookups(&mut report, base, &identify.customer);
                    company_lookups(&mut report, base, identify);
                    report["ifFound"] = linked(identify.update("{customerId}"));
                    report["ifNotFound"] = linked(identify.create());
                }
            }
        }
        Ok(Plan::Group(group)) => {
            let base = &options.base;
            // Spec 12.2: the company by its groupId, written; then the customer, linked.
            report["companyLookups"] = lookups_of(base, &group.company);
            report["ifCompanyFound"] = request(base, &group.update_company("{companyId}"));
            report["ifCompanyNotFound"] = match group.create_company() {
                Ok(create) => request(base, &create),
                Err(error) => json!({ "error": error_of(error) }),
            };
            match &group.customer {
                CustomerRef::Known(id) => {
                    report["requests"] =
                        json!([request(base, &group.update_customer(id, COMPANY_ID))]);
                }
                CustomerRef::Lookups(_) => {
                    customer_lookups(&mut report, base, &group.customer);
                    report["ifFound"] =
                        request(base, &group.update_customer("{customerId}", COMPANY_ID));
                    report["ifNotFound"] = request(base, &group.create_customer(COMPANY_ID));
                }
            }
        }
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

/// The customer body's `company` when it comes from an answer (section 12).
const COMPANY_ID: &str = "<companyId>";

fn error_of(error: kustomer_mapping::EventError) -> Value {
    let failure = Failure::from(error);
    json!({ "status": failure.status, "class": failure.class.as_str(), "message": failure.message })
}

/// The customer look-ups of 5.2, as `lookups`.
fn customer_lookups(report: &mut Value, base: &BaseEndpoint, customer: &CustomerRef) {
    if let CustomerRef::Lookups(lookups) = customer {
        report["lookups"] = lookups
            .iter()
            .map(|lookup| {
                json!({ "method": "GET", "by": lookup.by.as_str(),
                "url": format!("{}{}", base.as_str(), lookup.path) })
            })
            .collect();
    }
}

/// An identify's company (12.1): `companyLookups`, then `ifCompanyNotFound` (the create,
/// or nothing when there is no valid name to create it with).
fn company_lookups(report: &mut Value, base: &BaseEndpoint, identify: &IdentifyPlan) {
    if let Some(company) = &identify.company {
        report["companyLookups"] = lookups_of(base, company);
        if let Some(create) = company.create_write() {
            report["ifCompanyNotFound"] = request(base, &create);
        }
    }
}

fn lookups_of(base: &BaseEndpoint, company: &CompanyRef) -> Value {
    company
        .lookups
        .iter()
        .map(|lookup| {
            json!({ "method": "GET", "by": lookup.by.as_str(),
            "url": format!("{}{}", base.as_str(), lookup.path) })
        })
        .collect()
}

fn request(base: &BaseEndpoint, write: &Write) -> Value {
    json!({
        "method": write.method.as_str(),
        "url": format!("{}{}", base.as_str(), write.path),
        "headers": { "Content-Type": "application/json", "Authorization": "Bearer <apiKey>" },
        "body": write.body,
    })
}
