//! Logs and metrics. Logs: JSON lines through tracing-subscriber, one per event outcome,
//! never with the API key, the webhook token or the event's traits. Metrics: CloudWatch
//! Embedded Metric Format (EMF) lines written to stdout once per invocation.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::kustomer::RateLimit;
use crate::outcome::{CompanyAction, Outcome, Report, Skipped};
use kustomer_mapping::{Method, Write};

/// Sets up JSON logs at `log_level` (the template's `LOG_LEVEL`). When Lambda's advanced
/// logging controls set `AWS_LAMBDA_LOG_LEVEL` too, the stricter of the two applies (Lambda
/// would drop the rest anyway); `AWS_LAMBDA_LOG_FORMAT=Text` switches to plain lines.
pub fn init_logging(log_level: tracing::Level) {
    let lambda_level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .and_then(|name| crate::settings::lambda::parse_log_level(&name));
    // tracing orders levels by verbosity: the smallest is the strictest.
    let level = lambda_level.map_or(log_level, |lambda| lambda.min(log_level));
    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    // Dependencies never log below DEBUG: at TRACE lambda_runtime prints every raw event
    // (webhook token, traits) and HTTP clients may print bodies.
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = Targets::new()
        .with_default(LevelFilter::from_level(level).min(LevelFilter::DEBUG))
        .with_target("rudder_kustomer", level)
        .with_target("bootstrap", level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if text {
        builder.without_time().finish().with(filter).try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(filter)
            .try_init()
    };
}

/// Which Kustomer endpoint a request went to (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Lookup,
    CreateCustomer,
    UpdateCustomer,
    IdentityEvent,
    CompanyLookup,
    CreateCompany,
    UpdateCompany,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Lookup => "customers.lookup",
            Endpoint::CreateCustomer => "customers.create",
            Endpoint::UpdateCustomer => "customers.update",
            Endpoint::IdentityEvent => "tracking.identityEvent",
            Endpoint::CompanyLookup => "companies.lookup",
            Endpoint::CreateCompany => "companies.create",
            Endpoint::UpdateCompany => "companies.update",
        }
    }

    pub fn of(write: &Write) -> Endpoint {
        let company = write.path.starts_with("/v1/companies");
        match write.method {
            Method::Put if company => Endpoint::UpdateCompany,
            Method::Put => Endpoint::UpdateCustomer,
            Method::Post if company => Endpoint::CreateCompany,
            Method::Post if write.path == "/v1/customers" => Endpoint::CreateCustomer,
            Method::Post => Endpoint::IdentityEvent,
        }
    }
}

/// What an attempt reports as it goes (metrics).
#[derive(Debug, Clone, Copy)]
pub enum Observation {
    /// One request and its answer; `status` is `None` when no HTTP response came back.
    Exchange {
        endpoint: Endpoint,
        status: Option<u16>,
        rate_limit: RateLimit,
    },
    /// An identify skipped its look-ups thanks to the customer-id cache.
    CacheHit,
    /// The company-id cache was asked for a company: it knew it (`hit`) or not.
    CompanyCache { hit: bool },
    /// What happened to the event's company (section 12).
    Company(CompanyAction),
    /// A customer write carrying a company id succeeded: the customer is linked.
    CustomerLinked,
    /// The fleet's ledger could not be read or written.
    LedgerError,
}

/// Logs one event's outcome. Only ids, classes, statuses, the names of the fields the
/// schema fit changed (`schema_fixes="customer.gender,event.sessionId"`) and the company
/// action (`company="created"`, `company_reason="not_found"`): never event content, never
/// a company's name or id.
pub fn log_outcome(request_id: &str, message_id: Option<&str>, door: &str, report: &Report) {
    // A messageId is the sender's text: enough of it to find the event, never a flood.
    let message_id = message_id.map(|id| truncate(id, 200));
    let event_type = report.event_type.map_or("unknown", |t| t.as_str());
    let duration_ms = report.duration.as_millis() as u64;
    let fixed = fixed_fields(report);
    let schema_fixes = (!fixed.is_empty()).then(|| fixed.join(","));
    let schema_fixes = schema_fixes.as_deref();
    let company = report.company.map(CompanyAction::as_str);
    let company_reason = report.company.and_then(CompanyAction::reason);
    match &report.outcome {
        Outcome::Delivered(delivered) => tracing::info!(
            request_id,
            message_id,
            door,
            event_type,
            outcome = report.outcome.as_str(),
            kustomer_status = delivered
                .skipped
                .is_none()
                .then_some(delivered.write_status),
            requests = delivered.requests,
            attempts = report.attempts,
            duration_ms,
            schema_fixes,
            company,
            company_reason,
            "event delivered"
        ),
        Outcome::Failed(failure) => tracing::warn!(
            request_id,
            message_id,
            door,
            event_type,
            outcome = failure.class.as_str(),
            kustomer_status = failure.status,
            attempts = report.attempts,
            duration_ms,
            schema_fixes,
            company,
            company_reason,
            error = truncate(failure.log_text(), 300),
            "event not delivered"
        ),
    }
}

/// The distinct fields of the report's schema fixes, in order.
fn fixed_fields(report: &Report) -> Vec<&'static str> {
    let mut fields: Vec<&'static str> = Vec::with_capacity(report.schema_fixes.len());
    for fix in &report.schema_fixes {
        if !fields.contains(&fix.field) {
            fields.push(fix.field);
        }
    }
    fields
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// Counters of one invocation, flushed as EMF by the handler.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// (event type, outcome) → events
    pub events: BTreeMap<(&'static str, &'static str), u64>,
    /// (endpoint, status class) → requests
    pub requests: BTreeMap<(&'static str, &'static str), u64>,
    pub retries: u64,
    pub throttles: u64,
    pub cache_hits: u64,
    /// Company-id cache answers (its hit rate).
    pub company_cache_hits: u64,
    pub company_cache_misses: u64,
    /// company action (`found`, `created`, `updated`, `not_linked`) → companies
    pub companies: BTreeMap<&'static str, u64>,
    /// why not linked → companies
    pub companies_not_linked: BTreeMap<&'static str, u64>,
    /// Customer writes that carried a company id.
    pub customers_linked: u64,
    /// Identify updates not sent: the body was the one last sent to that customer.
    pub updates_skipped: u64,
    /// Events not sent: their messageId was delivered already.
    pub duplicates_skipped: u64,
    /// Reads or writes of the fleet's ledger of delivered events that failed.
    pub dedup_ledger_errors: u64,
    /// body field → events whose body the schema fit changed there
    pub schema_fixes: BTreeMap<&'static str, u64>,
    /// Per delivered event, milliseconds (EMF takes up to 100 values per metric).
    pub latencies_ms: Vec<f64>,
}

impl Metrics {
    fn with(&self, change: impl FnOnce(&mut Counts)) {
        // A poisoned lock only means a panic elsewhere; metrics are still worth keeping.
        let mut counts = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut counts);
    }

    pub fn event(&self, report: &Report) {
        let event_type = report.event_type.map_or("unknown", |t| t.as_str());
        let outcome = report.outcome.as_str();
        let skipped = match &report.outcome {
            Outcome::Delivered(delivered) => delivered.skipped,
            Outcome::Failed(_) => None,
        };
        self.with(|c| {
            *c.events.entry((event_type, outcome)).or_default() += 1;
            for field in fixed_fields(report) {
                *c.schema_fixes.entry(field).or_default() += 1;
            }
            if matches!(report.outcome, Outcome::Delivered(_)) {
                c.latencies_ms.push(report.duration.as_secs_f64() * 1000.0);
            }
            match skipped {
                Some(Skipped::Unchanged) => c.updates_skipped += 1,
                Some(Skipped::Duplicate) => c.duplicates_skipped += 1,
                None => {}
            }
        });
    }

    pub fn observe(&self, observation: &Observation) {
        let (endpoint, status) = match observation {
            Observation::CacheHit => return self.cache_hit(),
            Observation::CompanyCache { hit: true } => {
                return self.with(|c| c.company_cache_hits += 1)
            }
            Observation::CompanyCache { hit: false } => {
                return self.with(|c| c.company_cache_misses += 1)
            }
            Observation::Company(action) => {
                return self.with(|c| {
                    *c.companies.entry(action.as_str()).or_default() += 1;
                    if let Some(reason) = action.reason() {
                        *c.companies_not_linked.entry(reason).or_default() += 1;
                    }
                })
            }
            Observation::CustomerLinked => return self.with(|c| c.customers_linked += 1),
            Observation::LedgerError => return self.ledger_error(),
            Observation::Exchange {
                endpoint, status, ..
            } => (endpoint, status),
        };
        let class = match status {
            None => "transport",
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
        };
        self.with(|c| *c.requests.entry((endpoint.as_str(), class)).or_default() += 1);
    }

    pub fn retry(&self) {
        self.with(|c| c.retries += 1);
    }

    pub fn throttle(&self) {
        self.with(|c| c.throttles += 1);
    }

    pub fn ledger_error(&self) {
        self.with(|c| c.dedup_ledger_errors += 1);
    }

    pub fn cache_hit(&self) {
        self.with(|c| c.cache_hits += 1);
    }

    /// The counts so far, left in place (the command line's progress reads them).
    pub fn snapshot(&self) -> Counts {
        let mut copy = Counts::default();
        self.with(|c| copy = c.clone());
        copy
    }

    /// Takes the counts, leaving zeros for the next invocation.
    pub fn take(&self) -> Counts {
        let mut taken = Counts::default();
        self.with(|c| std::mem::swap(c, &mut taken));
        taken
    }
}

/// Every metric [`emf_documents`] can write (its test keeps this list true); the
/// dashboard in template.yaml shows each of them (tests/template.rs).
pub const EMITTED_METRICS: &[&str] = &[
    "Events",
    "KustomerRequests",
    "Retries",
    "Throttles",
    "CustomerCacheHits",
    "UpdatesSkipped",
    "DuplicatesSkipped",
    "DedupLedgerErrors",
    "DeliveryLatency",
    "SchemaFixes",
    "Companies",
    "CompaniesNotLinked",
    "CustomersLinked",
    "CompanyCacheHits",
    "CompanyCacheMisses",
];

/// EMF documents for one invocation's counts: one per dimension combination (EMF allows
/// one value per dimension key and document), plus one without dimensions for the rest.
pub fn emf_documents(counts: &Counts, namespace: &str, function_name: &str) -> Vec<Value> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let document = |dimensions: &[(&str, &str)], metrics: &[(&str, &str, Value)]| {
        let mut root = Map::new();
        let mut dimension_names: Vec<&str> = vec!["FunctionName"];
        root.insert("FunctionName".into(), json!(function_name));
        for (name, value) in dimensions {
            dimension_names.push(name);
            root.insert((*name).into(), json!(value));
        }
        let definitions: Vec<Value> = metrics
            .iter()
            .map(|(name, unit, _)| json!({ "Name": name, "Unit": unit }))
            .collect();
        for (name, _, value) in metrics {
            root.insert((*name).into(), value.clone());
        }
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [dimension_names],
                    "Metrics": definitions,
                }],
            }),
        );
        Value::Object(root)
    };
    let mut documents = Vec::new();
    for ((event_type, outcome), count) in &counts.events {
        documents.push(document(
            &[("EventType", event_type), ("Outcome", outcome)],
            &[("Events", "Count", json!(count))],
        ));
    }
    for ((endpoint, class), count) in &counts.requests {
        documents.push(document(
            &[("Endpoint", endpoint), ("StatusClass", class)],
            &[("KustomerRequests", "Count", json!(count))],
        ));
    }
    // Field names are the fixed set of body fields (never meta keys): bounded dimension.
    for (field, count) in &counts.schema_fixes {
        documents.push(document(
            &[("Field", field)],
            &[("SchemaFixes", "Count", json!(count))],
        ));
    }
    // Section 12: companies by action (found, created, updated, not_linked), and the
    // not linked ones by reason: both fixed, small sets.
    for (action, count) in &counts.companies {
        documents.push(document(
            &[("Action", action)],
            &[("Companies", "Count", json!(count))],
        ));
    }
    for (reason, count) in &counts.companies_not_linked {
        documents.push(document(
            &[("Reason", reason)],
            &[("CompaniesNotLinked", "Count", json!(count))],
        ));
    }
    let mut totals = vec![
        ("Retries", "Count", json!(counts.retries)),
        ("Throttles", "Count", json!(counts.throttles)),
        ("CustomerCacheHits", "Count", json!(counts.cache_hits)),
        ("CustomersLinked", "Count", json!(counts.customers_linked)),
        (
            "CompanyCacheHits",
            "Count",
            json!(counts.company_cache_hits),
        ),
        (
            "CompanyCacheMisses",
            "Count",
            json!(counts.company_cache_misses),
        ),
        ("UpdatesSkipped", "Count", json!(counts.updates_skipped)),
        (
            "DuplicatesSkipped",
            "Count",
            json!(counts.duplicates_skipped),
        ),
        (
            "DedupLedgerErrors",
            "Count",
            json!(counts.dedup_ledger_errors),
        ),
    ];
    if !counts.latencies_ms.is_empty() {
        let values: Vec<f64> = counts.latencies_ms.iter().take(100).copied().collect();
        totals.push(("DeliveryLatency", "Milliseconds", json!(values)));
    }
    documents.push(document(&[], &totals));
    documents
}

/// Writes the invocation's metrics to stdout, where Lambda picks EMF up.
pub fn flush_metrics(metrics: &Metrics, namespace: &str, function_name: &str) {
    // println! rather than a raw stdout handle, so that test harnesses can capture it.
    for document in emf_documents(&metrics.take(), namespace, function_name) {
        println!("{document}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Delivered;
    use kustomer_mapping::{FixAction, SchemaFix};
    use std::time::Duration;

    fn fix(field: &'static str) -> SchemaFix {
        SchemaFix {
            field,
            action: FixAction::Rewritten,
            reason: "number as text",
        }
    }

    #[test]
    fn schema_fixes_are_counted_once_per_event_and_field() {
        let metrics = Metrics::default();
        let report = Report {
            outcome: Outcome::Failed(crate::outcome::Failure::transient("x")),
            event_type: Some(kustomer_mapping::EventType::Identify),
            attempts: 1,
            duration: Duration::ZERO,
            schema_fixes: vec![
                fix("customer.gender"),
                fix("customer.emails"),
                SchemaFix {
                    action: FixAction::Dropped,
                    ..fix("customer.gender")
                },
            ],
            company: None,
        };
        assert_eq!(
            fixed_fields(&report),
            ["customer.gender", "customer.emails"]
        );
        metrics.event(&report);
        metrics.event(&report);
        let documents = emf_documents(&metrics.take(), "ns", "fn");
        let gender = documents
            .iter()
            .find(|d| d["Field"] == "customer.gender")
            .expect("a document for the field");
        assert_eq!(gender["SchemaFixes"], 2);
        assert_eq!(
            gender["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["FunctionName", "Field"]])
        );
    }

    #[test]
    fn levels_order_strictest_first() {
        let strictest = ["debug", "WARN", "info"]
            .into_iter()
            .filter_map(crate::settings::lambda::parse_log_level)
            .min();
        assert_eq!(strictest, Some(tracing::Level::WARN));
        assert_eq!(crate::settings::lambda::parse_log_level("loud"), None);
    }

    #[test]
    fn emf_documents_follow_the_specification() {
        let metrics = Metrics::default();
        metrics.event(&Report {
            outcome: Outcome::Delivered(Delivered::written(2, 201)),
            event_type: Some(kustomer_mapping::EventType::Identify),
            attempts: 1,
            duration: Duration::from_millis(12),
            schema_fixes: Vec::new(),
            company: None,
        });
        metrics.retry();
        let documents = emf_documents(&metrics.take(), "RudderKustomer", "fn");
        assert_eq!(documents.len(), 2);
        for document in &documents {
            let aws = &document["_aws"];
            assert!(aws["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
            let directive = &aws["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], "RudderKustomer");
            // Every dimension and metric named in the directive is a top-level member.
            for dimension in directive["Dimensions"][0].as_array().unwrap() {
                assert!(document[dimension.as_str().unwrap()].is_string());
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                let value = &document[metric["Name"].as_str().unwrap()];
                assert!(value.is_number() || value.is_array(), "{document}");
            }
        }
        assert_eq!(documents[0]["EventType"], "identify");
        assert_eq!(documents[0]["Outcome"], "delivered");
        assert_eq!(documents[0]["Events"], 1);
        assert_eq!(documents[1]["Retries"], 1);
        assert_eq!(metrics.take(), Counts::default());
    }

    #[test]
    fn emitted_metrics_lists_exactly_what_emf_documents_write() {
        let metrics = Metrics::default();
        metrics.event(&Report {
            outcome: Outcome::Delivered(Delivered::written(1, 201)),
            event_type: Some(kustomer_mapping::EventType::Track),
            attempts: 1,
            duration: Duration::from_millis(5),
            schema_fixes: vec![fix("event.sessionId")],
            company: Some(CompanyAction::Created),
        });
        metrics.observe(&Observation::CacheHit);
        metrics.observe(&Observation::CompanyCache { hit: true });
        metrics.observe(&Observation::Company(CompanyAction::NotLinked(
            crate::outcome::NotLinked::NotFound,
        )));
        metrics.observe(&Observation::CustomerLinked);
        metrics.observe(&Observation::Exchange {
            endpoint: Endpoint::IdentityEvent,
            status: Some(201),
            rate_limit: Default::default(),
        });
        metrics.retry();
        metrics.throttle();
        let mut written = std::collections::BTreeSet::new();
        for document in emf_documents(&metrics.take(), "ns", "fn") {
            for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
            {
                written.insert(metric["Name"].as_str().unwrap().to_string());
            }
        }
        let listed: std::collections::BTreeSet<String> =
            EMITTED_METRICS.iter().map(|m| m.to_string()).collect();
        assert_eq!(written, listed);
    }
}
