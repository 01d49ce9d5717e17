//! Delivery load (issue 5, benchmark 2): the Lambda's pipeline (`Pipeline::deliver_all`,
//! built by `App::new` from settings as the bootstrap builds it, API key given locally)
//! over SQS-sized batches of 100 generated events, against the stub Kustomer of
//! `tests/support` answering every request after 50 ms, with 8 requests in flight.
//!
//! The stub behaves like Kustomer (`tests/support/fake.rs`): it keeps the customers it
//! created (look-ups by e-mail or externalId find them afterwards), knows about 70 % of the
//! e-mail addresses and half of the workload's company accounts from before, and creates,
//! updates and finds companies (spec section 12). The pipeline runs on a current-thread runtime as in the Lambda; the stub runs on
//! a runtime of its own.
//!
//! Four runs, each with a fresh stub and a fresh app (cold caches): the mixed workload
//! (20 % identify, 5 % group, 25 % each track/page/screen; 20 measured batches) and a repeat-user identify workload (20 users, 5
//! measured batches), each with the customer-id cache on (the default) and off
//! (`CUSTOMER_CACHE_TTL_SECONDS=0`). The first batch of each run warms up and is not
//! counted.
//!
//! Printed as a table, one row per run: events/s, Kustomer requests per event, the longest
//! per-user chain of requests in a batch, p50/p99 batch time, the ideal batch time
//! (requests ÷ concurrency × latency, but never less than the longest per-user chain ×
//! latency), batch time ÷ ideal (median and worst batch), and this process's RSS before
//! the run → its peak during the run (VmHWM, reset before each run; the stub, its request
//! log and the run's workload live in the same process, so the growth is the closer figure
//! for the pipeline). Then Kustomer requests per identify after warm-up for the
//! repeat-user runs.
//!
//! Then the companies run: the whole 10,000-event workload through one container without
//! latency, with `LinkCompanies` on and off: Kustomer requests per event, company look-ups
//! per distinct company (the company-id cache's effect), companies found, created, updated
//! and not linked, customers linked.
//!
//! Run with `cargo bench --bench load` (about a minute). Never asserted as timings anywhere.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kustomer_mapping::values::{first_usable, text_form};
use rudder_kustomer::entry::App;
use rudder_kustomer::outcome::Outcome;
use rudder_kustomer::settings::lambda::{self, LambdaSettings};
use serde_json::Value;
use support::fake::FakeKustomer;
use support::{Request, StubServer};
use tokio::time::Instant;

const LATENCY: Duration = Duration::from_millis(50);
const CONCURRENCY: usize = 8;
const BATCH: usize = 100;
const BATCHES: usize = 20;
const SEED: u64 = 42;
/// Repeat-user run: this many users, identify only.
const REPEAT_USERS: usize = 20;
const REPEAT_BATCHES: usize = 6;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than "load" skips the run.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "load".contains(f.as_str())) {
        return;
    }
    let stub_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("stub runtime");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("pipeline runtime");
    let cache_off = [(lambda::CUSTOMER_CACHE_TTL_SECONDS, "0")];
    let repeat_name = format!("repeat identify, {REPEAT_USERS} users");
    let runs: [(String, bool, &Settings); 4] = [
        ("mixed workload".into(), false, &[]),
        ("mixed, cache off".into(), false, &cache_off),
        (repeat_name.clone(), true, &[]),
        (format!("{repeat_name}, cache off"), true, &cache_off),
    ];
    let mut rows = Vec::new();
    for (name, repeat, settings) in runs {
        let events = if repeat {
            workload::repeat_identify(REPEAT_USERS, BATCH * REPEAT_BATCHES, SEED)
        } else {
            workload::events(BATCH * (BATCHES + 1), SEED)
        };
        // A fresh Kustomer and a fresh container (cold caches) per run.
        let kustomer = Arc::new(fake_kustomer());
        let responder = move |request: &Request| kustomer.answer(request).with_delay(LATENCY);
        let stub = stub_runtime.block_on(StubServer::start(responder));
        let app = build_app(&stub.base_url(), settings);
        rows.push(runtime.block_on(run(&name, &app, &stub, &events)));
        stub.shutdown();
    }

    println!();
    println!(
        "delivery load: batches of {BATCH} events, stub latency {} ms per request, \
         MAX_IN_FLIGHT={CONCURRENCY}; the first batch of each run warms up and is not counted",
        LATENCY.as_millis()
    );
    print_table(&rows);
    println!();
    for row in rows.iter().filter(|row| row.name.starts_with(&repeat_name)) {
        println!(
            "{}: {:.2} Kustomer requests per identify after warm-up \
             (warm-up batch: {:.2}; customer-id cache hits after warm-up: {})",
            row.name, row.requests_per_event, row.warmup_requests_per_event, row.cache_hits
        );
    }
    companies(&stub_runtime, &runtime);
}

/// The stand-in Kustomer of every run: it keeps the customers it created, knows 70 % of
/// the e-mail addresses from before, and half of the workload's company accounts.
fn fake_kustomer() -> FakeKustomer {
    let mut kustomer = FakeKustomer::new()
        .remember_customers()
        .known_emails_percent(70);
    for (id, name) in workload::accounts().into_iter().step_by(2) {
        kustomer = kustomer.with_company(&name, Some(&id));
    }
    kustomer
}

/// Spec section 12 on the whole 10,000-event workload (`workload 10000`), one container
/// (cold caches at the start), no latency: Kustomer requests per event with companies on
/// and off, company look-ups per distinct company, and what happened to the companies.
fn companies(stub_runtime: &tokio::runtime::Runtime, runtime: &tokio::runtime::Runtime) {
    const EVENTS: usize = 10_000;
    let events = workload::events(EVENTS, SEED);
    let groups = events.iter().filter(|e| e["type"] == "group").count();
    println!();
    println!(
        "companies: the {EVENTS}-event workload (seed {SEED}, {groups} group calls, companies of {} \
         accounts, half of them known to Kustomer before), one container, batches of {BATCH}",
        workload::ACCOUNTS
    );
    println!(
        "| run | requests/event | company look-ups | distinct companies looked up | max look-ups of one company | \
         found | created | updated | not linked | customers linked | company cache hits / misses | failed |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, link) in [
        ("companies on (default)", "true"),
        ("companies off", "false"),
    ] {
        let kustomer = Arc::new(fake_kustomer());
        let answers = Arc::clone(&kustomer);
        let stub = stub_runtime.block_on(StubServer::start(move |request: &Request| {
            answers.answer(request)
        }));
        let app = build_app(&stub.base_url(), &[(lambda::LINK_COMPANIES, link)]);
        let mut failed = 0;
        let mut counts = rudder_kustomer::telemetry::Counts::default();
        for batch in events.chunks(BATCH) {
            let reports = runtime.block_on(
                app.pipeline()
                    .deliver_all(batch, Instant::now() + Duration::from_secs(60)),
            );
            failed += reports
                .iter()
                .filter(|r| r.outcome.failure().is_some())
                .count();
            let taken = app.pipeline().metrics().take();
            for (action, n) in taken.companies {
                *counts.companies.entry(action).or_default() += n;
            }
            counts.customers_linked += taken.customers_linked;
            counts.company_cache_hits += taken.company_cache_hits;
            counts.company_cache_misses += taken.company_cache_misses;
        }
        let requests = stub.requests();
        let lookups: Vec<&Request> = requests
            .iter()
            .filter(|r| r.method == "GET" && r.path() == "/v1/companies")
            .collect();
        let mut per_company: HashMap<&str, usize> = HashMap::new();
        for lookup in &lookups {
            *per_company.entry(lookup.target.as_str()).or_default() += 1;
        }
        let distinct: BTreeSet<&str> = per_company.keys().copied().collect();
        let action = |a: &str| counts.companies.get(a).copied().unwrap_or(0);
        println!(
            "| {name} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {failed} |",
            requests.len() as f64 / EVENTS as f64,
            lookups.len(),
            distinct.len(),
            per_company.values().max().copied().unwrap_or(0),
            action("found"),
            action("created"),
            action("updated"),
            action("not_linked"),
            counts.customers_linked,
            counts.company_cache_hits,
            counts.company_cache_misses,
        );
        stub.shutdown();
    }
}

/// Settings added to the defaults of [`build_app`].
type Settings<'a> = [(&'a str, &'a str)];

/// The app as the bootstrap builds it, from settings (extra settings override).
fn build_app(base_url: &str, extra: &[(&str, &str)]) -> App {
    let concurrency = CONCURRENCY.to_string();
    let mut settings: HashMap<&str, &str> = HashMap::from([
        (lambda::LOCAL_API_KEY, "bench-api-key"),
        (lambda::BASE_ENDPOINT, base_url),
        (lambda::MAX_IN_FLIGHT, concurrency.as_str()),
        (lambda::WEBHOOK_AUTH, "none"),
    ]);
    settings.extend(extra.iter().copied());
    let config = LambdaSettings::from_lookup(|name| settings.get(name).map(|v| v.to_string()))
        .expect("settings");
    App::new(&config).expect("app")
}

#[derive(Debug, Clone, Default)]
struct Row {
    name: String,
    batches: usize,
    events: usize,
    failed: usize,
    events_per_second: f64,
    requests_per_event: f64,
    warmup_requests_per_event: f64,
    p50_ms: f64,
    p99_ms: f64,
    ideal_p50_ms: f64,
    ratio_p50: f64,
    ratio_max: f64,
    longest_chain: usize,
    rss_before_mb: f64,
    peak_rss_mb: f64,
    cache_hits: u64,
}

/// Delivers `events` in batches of [`BATCH`]; the first batch warms up.
async fn run(name: &str, app: &App, stub: &StubServer, events: &[Value]) -> Row {
    let rss_before_mb = status_kb("VmRSS:").unwrap_or(0) as f64 / 1024.0;
    reset_peak_rss();
    let mut batch_ms = Vec::new();
    let mut ratios = Vec::new();
    let mut ideals = Vec::new();
    let (mut requests, mut delivered_events, mut failed, mut chain_max) = (0usize, 0, 0, 0);
    let mut warmup_requests_per_event = 0.0;
    let mut measured = Duration::ZERO;
    let mut cache_hits = 0;
    for (index, batch) in events.chunks(BATCH).enumerate() {
        let before = stub.requests().len();
        let started = Instant::now();
        let reports = app
            .pipeline()
            .deliver_all(batch, Instant::now() + Duration::from_secs(60))
            .await;
        let elapsed = started.elapsed();
        let batch_requests = stub.requests().len() - before;
        let counts = app.pipeline().metrics().take();
        if index == 0 {
            warmup_requests_per_event = batch_requests as f64 / batch.len() as f64;
            continue;
        }
        cache_hits += counts.cache_hits;
        let per_event: Vec<usize> = reports
            .iter()
            .map(|report| match &report.outcome {
                Outcome::Delivered(delivered) => delivered.requests as usize,
                Outcome::Failed(_) => 0,
            })
            .collect();
        failed += reports
            .iter()
            .filter(|r| r.outcome.failure().is_some())
            .count();
        let chain = longest_user_chain(batch, &per_event);
        chain_max = chain_max.max(chain);
        let latency_ms = LATENCY.as_secs_f64() * 1000.0;
        let ideal_ms = (batch_requests as f64 / CONCURRENCY as f64).max(chain as f64) * latency_ms;
        let ms = elapsed.as_secs_f64() * 1000.0;
        batch_ms.push(ms);
        ideals.push(ideal_ms);
        ratios.push(ms / ideal_ms);
        requests += batch_requests;
        delivered_events += batch.len();
        measured += elapsed;
    }
    Row {
        name: name.to_string(),
        batches: batch_ms.len(),
        events: delivered_events,
        failed,
        events_per_second: delivered_events as f64 / measured.as_secs_f64(),
        requests_per_event: requests as f64 / delivered_events as f64,
        warmup_requests_per_event,
        p50_ms: percentile(&batch_ms, 50.0),
        p99_ms: percentile(&batch_ms, 99.0),
        ideal_p50_ms: percentile(&ideals, 50.0),
        ratio_p50: percentile(&ratios, 50.0),
        ratio_max: percentile(&ratios, 100.0),
        longest_chain: chain_max,
        rss_before_mb,
        peak_rss_mb: status_kb("VmHWM:").unwrap_or(0) as f64 / 1024.0,
        cache_hits,
    }
}

/// The most requests one user's events need in this batch: they go one after another
/// (the pipeline keeps a user's events in order), so this many latencies at least.
fn longest_user_chain(batch: &[Value], requests: &[usize]) -> usize {
    let mut chains: HashMap<String, usize> = HashMap::new();
    let mut longest = 0;
    for (event, &count) in batch.iter().zip(requests) {
        let chain = match first_usable(event, &["userId", "anonymousId"]).map(text_form) {
            Some(user) => {
                let chain = chains.entry(user).or_default();
                *chain += count;
                *chain
            }
            None => count,
        };
        longest = longest.max(chain);
    }
    longest
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn print_table(rows: &[Row]) {
    println!(
        "| run | batches × events = total | failed | events/s | requests/event | longest user chain | \
         p50 batch ms | p99 batch ms | ideal ms (p50) | batch/ideal p50 | batch/ideal max | RSS before → peak MB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        println!(
            "| {} | {} × {} = {} | {} | {:.0} | {:.2} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} → {:.1} |",
            row.name,
            row.batches,
            BATCH,
            row.events,
            row.failed,
            row.events_per_second,
            row.requests_per_event,
            row.longest_chain,
            row.p50_ms,
            row.p99_ms,
            row.ideal_p50_ms,
            row.ratio_p50,
            row.ratio_max,
            row.rss_before_mb,
            row.peak_rss_mb,
        );
    }
}

/// A size from /proc/self/status (`VmHWM:` peak RSS, `VmRSS:` current RSS), kB.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets VmHWM to the current RSS (Linux: write 5 to clear_refs); ignored when refused.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
