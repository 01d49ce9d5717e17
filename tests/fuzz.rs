//! Fuzz targets on stable Rust (issue 8): structure-aware random inputs, no nightly, no
//! libFuzzer. Each target draws cases from a seeded generator (fastrand), runs each under
//! `catch_unwind`, checks its invariants, and on a failure prints the case seed and the
//! failing input shrunk to a minimum (keys and array elements removed, strings shortened,
//! numbers zeroed while it still fails), as JSON.
//!
//! Targets: `mapping` (`map_event`, group events and companies included), `envelopes`
//! (message bodies, door recognition),
//! `settings` (destination config, environment, the secret string), `answers` (rate-limit
//! headers and Kustomer answer classification, company answers included), `pacer` (random
//! answers under tokio's paused clock: never a stall, never a wait past the cap),
//! `pacer_queue` (many requests waiting at the same moment: arrival order, each within its
//! share of waits), `handler` (`entry::handle` against the stub Kustomer with random
//! payloads and random answers) and `reader` (the command line's input reader on any
//! bytes, gzip or not, resumed anywhere).
//!
//! Budget: `make test` runs a small number of cases per target (a few seconds in debug).
//! `FUZZ_SECONDS=N` runs each target for N seconds instead (`make fuzz`), from a random
//! base seed; `FUZZ_SEED=S` makes the first case use seed S (to replay a printed failure);
//! `FUZZ_CASES=N` overrides the case count. Each target prints
//! `fuzz <target>: N executions, F failures`.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};

use kustomer_mapping::settings::{Destination, MappingFlags};
use kustomer_mapping::{map_event, CompanyLookup, CompanyLookupBy, Plan};
use rudder_kustomer::aws::secrets::Credentials;
use rudder_kustomer::cli::input::{decode, Input, Item, Located, ReadOptions, Resume, Shape};
use rudder_kustomer::entry::{handle, App, Door};
use rudder_kustomer::envelope::{decode_events, decode_value};
use rudder_kustomer::kustomer::{
    classify_company_lookup, classify_lookup, classify_write, created_company_id, read_rate_limit,
    CompanyAnswer, HttpResponse, MAX_ADVERTISED_WAIT,
};
use rudder_kustomer::pipeline::pacing::Pacer;
use rudder_kustomer::settings::lambda::{self, LambdaSettings};
use support::{Reply, Request, StubServer};

/// Planted in string values of events, secrets and Kustomer's answer bodies: it must never
/// reach a log line or a log text.
const MARK: &str = "pii-mark-7f3";
const TOKEN: &str = "fuzz-webhook-token";
/// Planted in secrets given as settings: never in a `Debug` of them.
const SECRET_MARK: &str = "secret-mark-c41";

// =======================================================================================
// The engine: budget, seeds, catch_unwind, shrinking.
// =======================================================================================

struct Budget {
    cases: u64,
    until: Option<std::time::Instant>,
    base_seed: u64,
    first_seed: Option<u64>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl Budget {
    fn new(default_cases: u64) -> Budget {
        let seconds = env_u64("FUZZ_SECONDS").filter(|s| *s > 0);
        let base_seed = match seconds {
            // Long runs explore: a new base seed each run.
            Some(_) => fastrand::u64(..),
            // The bounded run in `make test` is the same every time.
            None => 0x5eed_f022,
        };
        Budget {
            cases: env_u64("FUZZ_CASES").unwrap_or(if seconds.is_some() {
                u64::MAX
            } else {
                default_cases
            }),
            until: seconds.map(|s| std::time::Instant::now() + Duration::from_secs(s)),
            base_seed,
            first_seed: env_u64("FUZZ_SEED"),
        }
    }

    fn seed(&self, case: u64) -> u64 {
        match (case, self.first_seed) {
            (0, Some(seed)) => seed,
            _ => splitmix(self.base_seed.wrapping_add(case)),
        }
    }

    fn more(&self, done: u64) -> bool {
        done < self.cases && self.until.is_none_or(|end| std::time::Instant::now() < end)
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

thread_local! {
    /// Set while this thread runs fuzz cases: their panics are expected findings, reported
    /// by the engine with the input, not by the default hook once per shrinking step.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn install_quiet_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
}

/// Runs one case: `Err` says what went wrong (a broken invariant or a panic).
fn run_case(check: &dyn Fn(&Value) -> Result<(), String>, input: &Value) -> Result<(), String> {
    QUIET.with(|quiet| quiet.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| check(input)));
    QUIET.with(|quiet| quiet.set(false));
    match result {
        Ok(outcome) => outcome,
        Err(panic) => Err(format!(
            "panic: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(not a string)".into())
        )),
    }
}

/// Runs a target for its budget; panics (failing the test) after printing every failure's
/// seed and minimized input.
fn fuzz(
    target: &str,
    default_cases: u64,
    max_shrink_checks: usize,
    generate: impl Fn(&mut fastrand::Rng) -> Value,
    check: impl Fn(&Value) -> Result<(), String>,
) {
    install_quiet_panic_hook();
    let budget = Budget::new(default_cases);
    let mut executions = 0u64;
    let mut failures = Vec::new();
    while budget.more(executions) && failures.len() < 3 {
        let seed = budget.seed(executions);
        let input = generate(&mut fastrand::Rng::with_seed(seed));
        executions += 1;
        if let Err(problem) = run_case(&check, &input) {
            let (small, small_problem, checks) = shrink(&input, &check, max_shrink_checks);
            executions += checks as u64;
            failures.push(format!(
                "seed {seed}: {problem}\n  minimized ({checks} checks): {small_problem}\n  input: {}",
                serde_json::to_string(&small).unwrap_or_default()
            ));
        }
    }
    println!(
        "fuzz {target}: {executions} executions, {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "fuzz {target} found {} failing inputs (replay: FUZZ_SEED=<seed> FUZZ_CASES=1 cargo test --test fuzz {target}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Greedy shrinking: take the first one-step-smaller input that still fails, repeat.
fn shrink(
    input: &Value,
    check: &dyn Fn(&Value) -> Result<(), String>,
    max_checks: usize,
) -> (Value, String, usize) {
    let mut current = input.clone();
    let mut problem = run_case(check, &current).err().unwrap_or_default();
    let mut checks = 1;
    'outer: while checks < max_checks {
        for candidate in smaller(&current) {
            if checks >= max_checks {
                break 'outer;
            }
            checks += 1;
            if let Err(still) = run_case(check, &candidate) {
                current = candidate;
                problem = still;
                continue 'outer;
            }
        }
        break;
    }
    (current, problem, checks)
}

/// Every input one step smaller than `value`, the biggest steps first.
fn smaller(value: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    match value {
        Value::Object(map) => {
            for key in map.keys() {
                let mut fewer = map.clone();
                fewer.remove(key);
                out.push(Value::Object(fewer));
            }
            for (key, inner) in map {
                for candidate in smaller(inner) {
                    let mut changed = map.clone();
                    changed.insert(key.clone(), candidate);
                    out.push(Value::Object(changed));
                }
            }
        }
        Value::Array(items) => {
            if items.len() > 1 {
                let half = items.len() / 2;
                out.push(Value::Array(items[..half].to_vec()));
                out.push(Value::Array(items[half..].to_vec()));
            }
            for index in 0..items.len() {
                let mut fewer = items.clone();
                fewer.remove(index);
                out.push(Value::Array(fewer));
            }
            for (index, inner) in items.iter().enumerate() {
                for candidate in smaller(inner) {
                    let mut changed = items.clone();
                    changed[index] = candidate;
                    out.push(Value::Array(changed));
                }
            }
        }
        Value::String(text) if !text.is_empty() => {
            let chars: Vec<char> = text.chars().collect();
            out.push(json!(""));
            if chars.len() > 1 {
                out.push(json!(chars[..chars.len() / 2].iter().collect::<String>()));
                out.push(json!(chars[chars.len() / 2..].iter().collect::<String>()));
                out.push(json!(chars[..chars.len() - 1].iter().collect::<String>()));
            }
        }
        Value::Number(n) if n.as_f64() != Some(0.0) => out.push(json!(0)),
        _ => {}
    }
    out
}

// =======================================================================================
// Generators: RudderStack-like events with hostile values.
// =======================================================================================

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

/// Strings that have broken parsers before: numbers in disguise, URL syntax, control and
/// non-ASCII characters, and now and then a very long one.
fn hostile_string(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..14) {
        0 => String::new(),
        1 => pick(
            rng,
            &[
                "1e19",
                "inf",
                "-inf",
                "NaN",
                "-0",
                "99999999999999999999",
                "4294967295",
                "1700000000000",
                "0x10",
                " 12 ",
            ],
        )
        .to_string(),
        2 => pick(
            rng,
            &[
                "..", ".", "../../v1", "%2E%2E", "a/b", "?x=1#y", "a b", "%", "%zz", "\\",
            ],
        )
        .to_string(),
        3 => pick(
            rng,
            &[
                "\u{0}", "\r\n", "\t", "\u{202e}", "\u{feff}", "é", "名前", "🦀", "\u{85}",
            ],
        )
        .to_string(),
        4 if rng.u8(..8) == 0 => {
            // Too long for a URL (fault 7): 70 KB ASCII or 22 KB of 3-byte characters.
            if rng.bool() {
                format!("{MARK}{}", "a".repeat(70_000))
            } else {
                format!("{MARK}{}", "ü名".repeat(7_500))
            }
        }
        5 => format!("{MARK}-{}@example.test", rng.u32(..1_000)),
        6 => format!("{MARK} {}", "x".repeat(rng.usize(..300))),
        7 => (0..rng.usize(..20))
            .map(|_| rng.char(..))
            .collect::<String>(),
        _ => format!("{MARK}-{}", rng.u32(..100_000)),
    }
}

fn hostile_number(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..8) {
        0 => json!(0),
        1 => json!(u64::MAX),
        2 => json!(i64::MIN),
        3 => json!(1e308),
        4 => json!(-0.0),
        5 => json!(rng.f64() * 1e6),
        _ => json!(rng.i64(-1_000..1_000_000)),
    }
}

fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    let leaf = depth >= 3 || rng.u8(..3) > 0;
    match rng.u8(..if leaf { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => hostile_number(rng),
        3 | 4 => json!(hostile_string(rng)),
        5 => Value::Array(
            (0..rng.usize(..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.usize(..5) {
                map.insert(random_key(rng), random_value(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

fn random_key(rng: &mut fastrand::Rng) -> String {
    if rng.bool() {
        pick(
            rng,
            &[
                "email",
                "phone",
                "name",
                "firstName",
                "lastName",
                "address",
                "id",
                "type",
                "userId",
                "url",
                "a.b",
                "",
                "__proto__",
                "constructor",
                "sessionId",
            ],
        )
        .to_string()
    } else {
        format!("k{}", rng.u8(..50))
    }
}

/// A value for a field the mapping reads: usually the right type, often not.
fn field(rng: &mut fastrand::Rng, usual: impl FnOnce(&mut fastrand::Rng) -> Value) -> Value {
    if rng.u8(..4) == 0 {
        random_value(rng, 1)
    } else {
        usual(rng)
    }
}

fn traits(rng: &mut fastrand::Rng) -> Value {
    let mut map = Map::new();
    for (key, chance) in [
        ("email", 2),
        ("phone", 3),
        ("name", 3),
        ("firstName", 4),
        ("lastName", 4),
        ("address", 5),
        ("website", 6),
        ("emails", 8),
    ] {
        if rng.u8(..chance) == 0 {
            let value = match key {
                "address" => field(rng, |rng| {
                    json!({"street": hostile_string(rng), "city": hostile_string(rng),
                           "state": hostile_string(rng), "postalCode": hostile_number(rng)})
                }),
                "emails" => field(rng, |rng| json!([hostile_string(rng)])),
                _ => field(rng, |rng| json!(hostile_string(rng))),
            };
            map.insert(key.to_string(), value);
        }
    }
    // Section 12: a company (name, Kustomer id, object with id and name), group traits.
    if rng.u8(..3) == 0 {
        let company = field(rng, |rng| match rng.u8(..4) {
            0 => json!(pick(rng, &["5f3c0ffee0000000000c0a01", "AB", " Acme Ltd "]).to_string()),
            1 => json!(hostile_string(rng)),
            _ => {
                json!({"id": if rng.bool() { hostile_number(rng) } else { json!(hostile_string(rng)) },
                        "name": hostile_string(rng)})
            }
        });
        map.insert("company".into(), company);
    }
    for (key, chance) in [("domain", 6), ("employees", 5), ("avatar", 6), ("tags", 6)] {
        if rng.u8(..chance) == 0 {
            let value = field(rng, |rng| match key {
                "employees" if rng.bool() => json!(rng.u32(..100_000).to_string()),
                "employees" => hostile_number(rng),
                "tags" => json!([hostile_string(rng), hostile_number(rng)]),
                _ => json!(hostile_string(rng)),
            });
            map.insert(key.to_string(), value);
        }
    }
    // Section 11.5: custom attributes of every suffix, with hostile values.
    if rng.u8(..3) == 0 {
        let mut custom = Map::new();
        for _ in 0..rng.usize(1..5) {
            let key = *pick(
                rng,
                &[
                    "scoreNum",
                    "renewalAt",
                    "planStr",
                    "notesTxt",
                    "isVipBool",
                    "portalUrl",
                    "Num",
                    "x",
                ],
            );
            let value = match rng.u8(..4) {
                0 => json!(hostile_string(rng)),
                1 => hostile_number(rng),
                _ => random_value(rng, 1),
            };
            custom.insert(key.to_string(), value);
        }
        map.insert("customObject".into(), field(rng, |_| Value::Object(custom)));
    }
    for _ in 0..rng.usize(..3) {
        map.insert(random_key(rng), random_value(rng, 2));
    }
    Value::Object(map)
}

/// A RudderStack-like event: the fields the mapping reads, with hostile values and types.
fn event(rng: &mut fastrand::Rng) -> Value {
    let mut map = Map::new();
    let kind = match rng.u8(..12) {
        0 => random_value(rng, 2),
        1 => json!(pick(
            rng,
            &["alias", "group", "", "IDENTIFY", "Track", " page"]
        )),
        n => json!(["identify", "track", "page", "screen", "group"][usize::from(n % 5)]),
    };
    if rng.u8(..20) > 0 {
        map.insert("type".into(), kind);
    }
    if rng.u8(..3) == 0 {
        let group_id = field(rng, |rng| match rng.u8(..5) {
            0 => hostile_number(rng),
            1 => json!("g".repeat(rng.usize(250..260))),
            _ => json!(hostile_string(rng)),
        });
        map.insert("groupId".into(), group_id);
    }
    let user = |rng: &mut fastrand::Rng| {
        field(rng, |rng| {
            if rng.u8(..4) == 0 {
                hostile_number(rng)
            } else {
                json!(hostile_string(rng))
            }
        })
    };
    if rng.u8(..6) > 0 {
        map.insert("userId".into(), user(rng));
    }
    if rng.bool() {
        map.insert("anonymousId".into(), user(rng));
    }
    if rng.u8(..4) > 0 {
        // Never planted: message ids are logged on purpose.
        map.insert("messageId".into(), json!(format!("m-{}", rng.u32(..))));
    }
    if rng.bool() {
        map.insert("event".into(), field(rng, |rng| json!(hostile_string(rng))));
    }
    if rng.bool() {
        map.insert("name".into(), field(rng, |rng| json!(hostile_string(rng))));
    }
    if rng.bool() {
        map.insert("traits".into(), field(rng, traits));
    }
    if rng.bool() {
        map.insert("properties".into(), field(rng, traits));
    }
    if rng.bool() {
        let mut context = Map::new();
        if rng.bool() {
            context.insert("traits".into(), field(rng, traits));
        }
        if rng.u8(..3) == 0 {
            context.insert(
                "externalId".into(),
                field(rng, |rng| {
                    json!([{"type": pick(rng, &["kustomerId", "email", "other"]), "id": hostile_string(rng)}])
                }),
            );
        }
        if rng.u8(..4) == 0 {
            context.insert("sessionId".into(), hostile_number(rng));
        }
        map.insert("context".into(), Value::Object(context));
    }
    for (key, chance) in [("timestamp", 3), ("originalTimestamp", 4), ("sentAt", 5)] {
        if rng.u8(..chance) == 0 {
            map.insert(key.into(), field(rng, |rng| json!(hostile_string(rng))));
        }
    }
    if rng.u8(..5) == 0 {
        map.insert(random_key(rng), random_value(rng, 1));
    }
    Value::Object(map)
}

fn events(rng: &mut fastrand::Rng, max: usize) -> Vec<Value> {
    (0..rng.usize(1..=max)).map(|_| event(rng)).collect()
}

fn flags_from(input: &Value) -> MappingFlags {
    let flag = |n: usize| input.get(n).and_then(Value::as_bool).unwrap_or(false);
    MappingFlags {
        generic_page: flag(0),
        generic_screen: flag(1),
        advanced_transform: flag(2),
        set_identity_email: flag(3),
        disable_email_as_tracking_property: flag(4),
        fit_to_kustomer_schema: flag(5),
        link_companies: flag(6),
    }
}

fn random_flags(rng: &mut fastrand::Rng) -> Value {
    json!((0..7).map(|_| rng.bool()).collect::<Vec<_>>())
}

/// A path the client sends as built: ASCII, no space, no `#`, one `?` at most.
fn sendable_path(path: &str) -> bool {
    path.starts_with("/v1/")
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
        && path.matches('?').count() <= 1
}

// =======================================================================================
// Target: mapping.
// =======================================================================================

#[test]
fn mapping() {
    fuzz(
        "mapping",
        3_000,
        3_000,
        |rng| json!({"event": event(rng), "flags": random_flags(rng)}),
        |input| {
            let event = input.get("event").cloned().unwrap_or(Value::Null);
            let flags = flags_from(input.get("flags").unwrap_or(&Value::Null));
            let first = map_event(&event, &flags);
            // Pure: the same input maps the same way.
            if first != map_event(&event, &flags) {
                return Err("map_event is not deterministic".into());
            }
            match first {
                Ok(Plan::Identify(plan)) => {
                    if !plan.body.is_object() {
                        return Err("identify body is not an object".into());
                    }
                    if let Some(company) = &plan.company {
                        if !flags.companies() || company.lookups.is_empty() {
                            return Err(format!("company to resolve with {flags:?}"));
                        }
                        if plan.body.get("company").is_some() {
                            return Err("a company to resolve left in the body".into());
                        }
                        if let Some(path) = company
                            .lookups
                            .iter()
                            .map(|l| &l.path)
                            .find(|p| !sendable_path(p))
                        {
                            return Err(format!("company look-up path {path:?}"));
                        }
                    }
                    if let Some(company) = plan.body.get("company") {
                        let id = company.as_str().unwrap_or_default();
                        if flags.fit_to_kustomer_schema && !kustomer_mapping::is_kustomer_id(id) {
                            return Err(format!("customer company {company} is not an id"));
                        }
                    }
                }
                Ok(Plan::Group(group)) => {
                    if !flags.companies() {
                        return Err(format!("a group mapped with {flags:?}"));
                    }
                    let external_id = group.company_body["externalId"]
                        .as_str()
                        .unwrap_or_default();
                    if external_id.is_empty() || external_id.chars().count() > 256 {
                        return Err(format!("company externalId {external_id:?}"));
                    }
                    if !group.company.lookups.iter().all(|l| sendable_path(&l.path)) {
                        return Err(format!("company look-ups {:?}", group.company.lookups));
                    }
                    let name_ok = group.company_body.get("name").is_none_or(|name| {
                        name.as_str().is_some_and(|n| {
                            (3..=255)
                                .contains(&kustomer_mapping::values::js_trim(n).chars().count())
                        })
                    });
                    if !name_ok {
                        return Err(format!("company name {}", group.company_body["name"]));
                    }
                }
                Ok(Plan::Tracking(write)) => {
                    if !write.path.starts_with('/') {
                        return Err(format!("tracking path {:?}", write.path));
                    }
                }
                Err(error) => {
                    if !(400..500).contains(&error.status) {
                        return Err(format!("bad event with status {}", error.status));
                    }
                    let logged = error.log_message.unwrap_or(&error.message);
                    if logged.contains(MARK) {
                        return Err(format!("log text carries an event value: {logged}"));
                    }
                }
            }
            Ok(())
        },
    );
}

// =======================================================================================
// Target: envelopes (message bodies of every door, door recognition).
// =======================================================================================

fn envelope(rng: &mut fastrand::Rng, inner: Value, depth: u32) -> Value {
    if depth > 4 {
        return inner;
    }
    match rng.u8(..7) {
        0 => envelope(
            rng,
            json!({"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t",
                   "Message": inner.to_string()}),
            depth + 1,
        ),
        1 => envelope(
            rng,
            json!({"detail-type": "RudderStack event", "source": "rudderstack", "detail": inner}),
            depth + 1,
        ),
        2 => envelope(
            rng,
            json!({"requestContext": {"requestId": "r"}, "responseContext": {"statusCode": 200},
                   "requestPayload": inner}),
            depth + 1,
        ),
        3 => random_value(rng, 0),
        _ => inner,
    }
}

#[test]
fn envelopes() {
    fuzz(
        "envelopes",
        3_000,
        3_000,
        |rng| {
            let inner = if rng.bool() {
                event(rng)
            } else {
                Value::Array(events(rng, 4))
            };
            let wrapped = envelope(rng, inner, 0);
            let mut text = wrapped.to_string();
            if rng.u8(..6) == 0 {
                // A cut body, as a truncated message would be.
                let cut = rng.usize(..=text.len());
                text = text.chars().take(cut).collect();
            }
            json!({"value": wrapped, "text": text})
        },
        |input| {
            let value = input.get("value").cloned().unwrap_or(Value::Null);
            let text = input.get("text").and_then(Value::as_str).unwrap_or("");
            let from_value = decode_value(value.clone());
            // The same envelope, parsed or as text, decodes the same way.
            let from_text = decode_events(&value.to_string());
            if from_value.as_ref().map(Vec::len).ok() != from_text.as_ref().map(Vec::len).ok() {
                return Err(format!(
                    "value and text decode differently: {:?} / {:?}",
                    from_value.map(|e| e.len()),
                    from_text.map(|e| e.len())
                ));
            }
            for events in [from_value, decode_events(text)].into_iter().flatten() {
                if events.is_empty() {
                    return Err("decoded to no event without an error".into());
                }
            }
            if let Err(problem) = Door::of(&value) {
                let problem = problem.to_string();
                if problem.contains(MARK) {
                    return Err(format!("door error shows a value: {problem}"));
                }
            }
            Ok(())
        },
    );
}

// =======================================================================================
// Target: settings (destination config, Lambda environment, the secret string).
// =======================================================================================

const ENV_NAMES: &[&str] = &[
    lambda::SECRET_ID,
    lambda::BASE_ENDPOINT,
    lambda::GENERIC_PAGE,
    lambda::ADVANCED_TRANSFORM,
    lambda::WEBHOOK_AUTH,
    lambda::SECRET_CACHE_TTL_SECONDS,
    lambda::CONNECT_TIMEOUT_MS,
    lambda::REQUEST_TIMEOUT_MS,
    lambda::MAX_IN_FLIGHT,
    lambda::RETRY_MAX_ATTEMPTS,
    lambda::RETRY_QUEUE_URL,
    lambda::DEAD_LETTER_QUEUE_URL,
    lambda::CUSTOMER_CACHE_TTL_SECONDS,
    lambda::CUSTOMER_CACHE_MAX_ENTRIES,
    lambda::MAX_REQUESTS_PER_MINUTE,
    lambda::LOCAL_API_KEY,
    lambda::LOCAL_WEBHOOK_TOKEN,
];

fn setting_text(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..6) {
        0 => rng.u64(..300).to_string(),
        1 => pick(
            rng,
            &[
                "true",
                "FALSE",
                "none",
                "token",
                "https://api.kustomerapp.com",
                "http://127.0.0.1:1",
                "https://api.prod2.kustomerapp.com/",
                "http://api.kustomerapp.com",
                "https://sqs.us-east-1.amazonaws.com/1/q",
            ],
        )
        .to_string(),
        _ => hostile_string(rng),
    }
}

#[test]
fn settings() {
    fuzz(
        "settings",
        3_000,
        3_000,
        |rng| {
            let mut destination = Map::new();
            for key in [
                "apiKey",
                "baseEndpoint",
                "genericPage",
                "genericScreen",
                "advancedTransform",
                "setIdentityEmail",
                "disableEmailAsTrackingProperty",
            ] {
                if rng.u8(..3) > 0 {
                    let value = match rng.u8(..3) {
                        0 => random_value(rng, 2),
                        1 => json!(rng.bool()),
                        _ => json!(setting_text(rng)),
                    };
                    destination.insert(key.into(), value);
                }
            }
            let mut env = Map::new();
            for name in ENV_NAMES {
                if rng.u8(..3) == 0 {
                    let value =
                        if [lambda::LOCAL_API_KEY, lambda::LOCAL_WEBHOOK_TOKEN].contains(name) {
                            format!("{SECRET_MARK}-{}", hostile_string(rng))
                        } else {
                            setting_text(rng)
                        };
                    env.insert(name.to_string(), json!(value));
                }
            }
            let mut secret = Map::new();
            for key in ["apiKey", "webhookToken", "previousWebhookToken"] {
                if rng.u8(..4) > 0 {
                    let value = match rng.u8(..4) {
                        0 => random_value(rng, 2),
                        _ => json!(format!("{MARK}-{}", hostile_string(rng))),
                    };
                    secret.insert(key.into(), value);
                }
            }
            let secret_text = match rng.u8(..4) {
                0 => format!("{MARK}{}", hostile_string(rng)),
                1 => {
                    let text = Value::Object(secret.clone()).to_string();
                    text.chars().take(rng.usize(..=text.len())).collect()
                }
                _ => Value::Object(secret).to_string(),
            };
            json!({"destination": destination, "env": env, "secret": secret_text})
        },
        |input| {
            let destination = input.get("destination").cloned().unwrap_or(Value::Null);
            if let Ok(parsed) = Destination::from_json(&destination) {
                if parsed.api_key.is_empty() {
                    return Err("an empty API key was accepted".into());
                }
            }
            let env = input.get("env").cloned().unwrap_or(json!({}));
            let lookup = |name: &str| env.get(name).and_then(Value::as_str).map(str::to_string);
            if let Ok(config) = LambdaSettings::from_lookup(lookup) {
                if !(1..=256).contains(&config.max_in_flight) || config.max_attempts == 0 {
                    return Err(format!(
                        "settings out of range: {} in flight, {} attempts",
                        config.max_in_flight, config.max_attempts
                    ));
                }
                if format!("{config:?}").contains(SECRET_MARK) {
                    return Err("Debug of the settings shows a secret".into());
                }
            }
            let secret = input.get("secret").and_then(Value::as_str).unwrap_or("");
            match Credentials::parse(secret) {
                Err(problem) if problem.to_string().contains(MARK) => {
                    Err(format!("the secret's error shows its value: {problem}"))
                }
                Ok(credentials) if format!("{credentials:?}").contains(MARK) => {
                    Err("Debug of the credentials shows a secret".into())
                }
                _ => Ok(()),
            }
        },
    );
}

// =======================================================================================
// Target: Kustomer's answers (rate-limit headers, classification).
// =======================================================================================

const RATE_HEADERS: &[&str] = &[
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

fn header_value(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..8) {
        0 => rng.u64(..).to_string(),
        1 => format!("{}", rng.f64() * 10f64.powi(rng.i32(-3..25))),
        2 => format!("-{}", rng.u32(..100)),
        3 => rng.u32(..120).to_string(),
        4 => (1_764_000_000 + rng.u64(..200)).to_string(),
        5 => (1_764_000_000_000u64 + rng.u64(..200_000)).to_string(),
        _ => hostile_string(rng).chars().take(40).collect(),
    }
}

fn random_headers(rng: &mut fastrand::Rng) -> Value {
    let mut map = Map::new();
    for name in RATE_HEADERS {
        if rng.bool() {
            map.insert(name.to_string(), json!(header_value(rng)));
        }
    }
    Value::Object(map)
}

fn header_map(headers: &Value) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if let Some(object) = headers.as_object() {
        for (name, value) in object {
            let (Ok(name), Some(Ok(value))) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                value
                    .as_str()
                    .map(|v| http::HeaderValue::from_bytes(v.as_bytes())),
            ) else {
                continue;
            };
            map.append(name, value);
        }
    }
    map
}

fn answer_body(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..8) {
        0 => String::new(),
        1 => json!({"data": {"id": hostile_string(rng), "type": "customer"}}).to_string(),
        // Kustomer's code and title may be logged; its detail, like the rest, must not.
        2 => json!({"errors": [{"status": rng.u16(..600),
                    "code": hostile_string(rng).replace(MARK, "code"),
                    "title": hostile_string(rng).replace(MARK, "title"),
                    "detail": format!("{MARK} echo a@b.test"),
                    "source": {"pointer": "/data/attributes/emails/0/email"}}]})
        .to_string(),
        3 => format!("<html>{MARK}</html>"),
        4 => random_value(rng, 0).to_string(),
        5 => {
            json!({"data": [{"id": hostile_string(rng)}], "meta": random_value(rng, 1)}).to_string()
        }
        // Company answers (section 12): look-ups (names carry the mark) and creates.
        6 => json!({"data": [
            {"id": "5f3c0ffee0000000000c0a01", "attributes": {"name": format!("{MARK} Acme")}},
            {"id": hostile_string(rng), "attributes": {"name": hostile_string(rng)}}
        ]})
        .to_string(),
        _ => json!({"data": {"type": "company", "id": pick(rng, &["5f3c0ffee0000000000c0a02", "../x", ""])}})
            .to_string(),
    }
}

fn answer_status(rng: &mut fastrand::Rng) -> u16 {
    if rng.u8(..5) == 0 {
        rng.u16(100..600)
    } else {
        *pick(
            rng,
            &[
                200, 201, 202, 204, 301, 400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504,
            ],
        )
    }
}

#[test]
fn answers() {
    fuzz(
        "answers",
        5_000,
        3_000,
        |rng| {
            json!({"status": answer_status(rng), "headers": random_headers(rng),
                   "body": answer_body(rng)})
        },
        |input| {
            let headers = header_map(input.get("headers").unwrap_or(&Value::Null));
            let rate_limit = read_rate_limit(&headers);
            for wait in [rate_limit.reset, rate_limit.retry_after]
                .into_iter()
                .flatten()
            {
                if wait > MAX_ADVERTISED_WAIT {
                    return Err(format!("a wait of {wait:?} passed the cap"));
                }
            }
            let response = HttpResponse {
                status: input
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(200),
                body: input
                    .get("body")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
                    .into(),
                rate_limit,
            };
            let by_name = CompanyLookup {
                by: CompanyLookupBy::Name("acme".into()),
                path: "/v1/companies?filter=Acme".into(),
                cache_key: "name=acme".into(),
            };
            let company = classify_company_lookup(&response, &by_name);
            let unlinkable = match &company {
                Ok(CompanyAnswer::Found(id)) if !kustomer_mapping::is_kustomer_id(id) => {
                    return Err(format!("a company id that is no Kustomer id: {id:?}"))
                }
                Ok(CompanyAnswer::Unlinkable { failure, .. }) => Some(failure.clone()),
                _ => None,
            };
            if let Some(id) = created_company_id(&response.body) {
                if !kustomer_mapping::is_kustomer_id(&id) {
                    return Err(format!(
                        "a created company id that is no Kustomer id: {id:?}"
                    ));
                }
            }
            let failures = [
                classify_lookup(&response).err(),
                classify_write(&response).err(),
                company.err(),
                unlinkable,
            ];
            for failure in failures.into_iter().flatten() {
                if failure.log_text().contains(MARK) {
                    return Err(format!(
                        "log text carries Kustomer's body: {}",
                        failure.log_text()
                    ));
                }
                if failure.retry_after.is_some_and(|w| w > MAX_ADVERTISED_WAIT) {
                    return Err("a failure asks for a wait past the cap".into());
                }
            }
            Ok(())
        },
    );
}

// =======================================================================================
// Target: the pacer under tokio's paused clock.
// =======================================================================================

#[test]
fn pacer() {
    fuzz(
        "pacer",
        400,
        1_000,
        |rng| {
            let steps: Vec<Value> = (0..rng.usize(1..12))
                .map(|_| {
                    let take = rng.usize(1..6);
                    let answers: Vec<Value> = (0..take)
                        .map(|_| match rng.u8(..8) {
                            0 => Value::Null, // cancelled: the reservation is dropped
                            1 => json!({}),
                            _ => random_headers(rng),
                        })
                        .collect();
                    json!({"answers": answers})
                })
                .collect();
            json!({"concurrency": rng.u64(1..16),
                   "rpm": if rng.u8(..4) == 0 { json!(rng.u32(1..1000)) } else { Value::Null },
                   "steps": steps})
        },
        |input| on_a_paused_clock(pace(input)),
    );
}

/// Runs a pacer case on a current-thread runtime under tokio's paused clock.
fn on_a_paused_clock(
    case: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(case)
}

/// Any single wait: the cap, plus the 1 s probe wait of an unknown reset, plus rounding.
const LONGEST_WAIT: Duration = Duration::from_secs(62);

async fn pace(input: &Value) -> Result<(), String> {
    let concurrency = input
        .get("concurrency")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let rpm = input
        .get("rpm")
        .and_then(Value::as_u64)
        .map(|n| n.min(u64::from(u32::MAX)) as u32);
    let pacer = Pacer::new(concurrency, rpm);
    let no_steps = Vec::new();
    let steps = input
        .get("steps")
        .and_then(Value::as_array)
        .unwrap_or(&no_steps);
    let reserve = |step: usize| {
        let pacer = &pacer;
        async move {
            let started = tokio::time::Instant::now();
            match tokio::time::timeout(LONGEST_WAIT * 10, pacer.before_request()).await {
                Ok(reservation) if started.elapsed() <= LONGEST_WAIT => Ok(reservation),
                Ok(_) => Err(format!(
                    "step {step}: a request waited {:?}",
                    started.elapsed()
                )),
                Err(_) => Err(format!("step {step}: stalled (no start in 10 minutes)")),
            }
        }
    };
    for (step, spec) in steps.iter().enumerate() {
        let answers = spec
            .get("answers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut reservations = Vec::new();
        for _ in &answers {
            reservations.push(reserve(step).await?);
        }
        // Answers come back in any order: their headers (random windows) say which.
        for (reservation, answer) in reservations.into_iter().zip(answers) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if answer.is_null() {
                drop(reservation);
            } else {
                reservation.answered(&read_rate_limit(&header_map(&answer)));
            }
        }
    }
    // Whatever came before, the next request starts within the bound: no pinned pacer.
    reserve(steps.len()).await.map(drop)
}

/// Issue 18: many requests wait at the same moment. Workers (as a container's) start
/// together and each sends requests one after another; every request is answered with
/// random headers, dropped unanswered, or given up while it waits (a deadline). Requests
/// start in the order they asked, none waits more than its share (one capped wait per
/// request ahead of it when it asked, plus its own), and one that gives up blocks nobody.
#[test]
fn pacer_queue() {
    fuzz(
        "pacer_queue",
        200,
        600,
        |rng| {
            let request = |rng: &mut fastrand::Rng| match rng.u8(..12) {
                // Gives up after this many seconds of waiting (a deadline).
                0 => json!({"give_up_after": rng.u64(0..200)}),
                1 => json!({"answer": Value::Null}), // started, then dropped unanswered
                2 => json!({"answer": {}}),
                _ => json!({"answer": random_headers(rng)}),
            };
            let workers: Vec<Value> = (0..rng.usize(2..9))
                .map(|_| Value::Array((0..rng.usize(1..9)).map(|_| request(rng)).collect()))
                .collect();
            json!({"concurrency": rng.u64(1..16),
                   "rpm": if rng.u8(..3) == 0 { json!(rng.u32(1..600)) } else { Value::Null },
                   "spent": rng.bool(),
                   "workers": workers})
        },
        |input| on_a_paused_clock(queue_up(input)),
    );
}

/// One request's start: (arrival number, start number, requests ahead when it asked, wait).
type Start = (usize, usize, usize, Duration);

async fn queue_up(input: &Value) -> Result<(), String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::Instant;
    let concurrency = input["concurrency"].as_u64().unwrap_or(1) as usize;
    let rpm = input["rpm"]
        .as_u64()
        .map(|n| n.min(u64::from(u32::MAX)) as u32);
    let pacer = Arc::new(Pacer::new(concurrency, rpm));
    if input["spent"].as_bool().unwrap_or(false) {
        // Everyone arrives on a spent window with a minute to go.
        let spent = json!({"x-ratelimit-limit": "100", "x-ratelimit-remaining": "0",
                           "x-ratelimit-reset": "60"});
        let reservation = pacer.before_request().await;
        reservation.answered(&read_rate_limit(&header_map(&spent)));
    }
    let no_workers = Vec::new();
    let workers = input["workers"].as_array().unwrap_or(&no_workers);
    let arrived = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let starts = Arc::new(Mutex::new(Vec::<Start>::new()));
    let tasks: Vec<_> = workers
        .iter()
        .map(|requests| {
            let requests = requests.as_array().cloned().unwrap_or_default();
            let (pacer, arrived, started, starts) = (
                Arc::clone(&pacer),
                Arc::clone(&arrived),
                Arc::clone(&started),
                Arc::clone(&starts),
            );
            tokio::spawn(async move {
                for request in requests {
                    let arrival = arrived.fetch_add(1, Ordering::SeqCst);
                    let ahead = arrival - started.load(Ordering::SeqCst);
                    let patience = request["give_up_after"]
                        .as_u64()
                        .map_or(Duration::from_secs(1_000_000), Duration::from_secs);
                    let asked = Instant::now();
                    let waiting = tokio::time::timeout(patience, pacer.before_request());
                    let Ok(reservation) = waiting.await else {
                        // Gave its place up: nobody counts it as ahead any more.
                        started.fetch_add(1, Ordering::SeqCst);
                        continue;
                    };
                    let order = started.fetch_add(1, Ordering::SeqCst);
                    let start = (arrival, order, ahead, asked.elapsed());
                    starts.lock().unwrap_or_else(|e| e.into_inner()).push(start);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    match &request["answer"] {
                        Value::Null => drop(reservation),
                        answer => reservation.answered(&read_rate_limit(&header_map(answer))),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| format!("a worker panicked: {e}"))?;
    }
    let mut starts = starts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    starts.sort_by_key(|(_, order, ..)| *order);
    let arrivals: Vec<usize> = starts.iter().map(|(arrival, ..)| *arrival).collect();
    if !arrivals.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(format!("started out of arrival order: {arrivals:?}"));
    }
    for (arrival, _, ahead, waited) in starts {
        let share = LONGEST_WAIT * u32::try_from(ahead + 1).unwrap_or(u32::MAX);
        if waited > share {
            return Err(format!(
                "request {arrival} waited {waited:?} with {ahead} ahead (share {share:?})"
            ));
        }
    }
    Ok(())
}

// =======================================================================================
// Target: the handler (`entry::handle`) against the stub Kustomer.
// =======================================================================================

/// The stub's script for the case being run: answers in turn, cycling.
type Script = Arc<Mutex<(Vec<Value>, usize)>>;

fn scripted_reply(script: &Script, request: &Request) -> Reply {
    let mut script = script.lock().unwrap_or_else(|e| e.into_inner());
    let (answers, next) = &mut *script;
    if answers.is_empty() {
        return match request.method.as_str() {
            "GET" => Reply::empty(404),
            _ => Reply::json(201, &json!({"data": {"id": "c1"}})),
        };
    }
    let answer = answers[*next % answers.len()].clone();
    *next += 1;
    match answer.get("fault").and_then(Value::as_str) {
        Some("reset") => return Reply::reset(),
        Some("close") => return Reply::close(),
        Some("garbage") => return Reply::raw(format!("HTTP/1.1 2{MARK}\r\n\r\n")),
        _ => {}
    }
    let status = answer
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (200..600).contains(s))
        .unwrap_or(200);
    let body = answer.get("body").and_then(Value::as_str).unwrap_or("");
    let mut reply = Reply::text(status, body).with_header("content-type", "application/json");
    if let Some(headers) = answer.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            if let Some(value) = value.as_str() {
                // Header injection is not the point here: keep the framing intact.
                if !value.contains(['\r', '\n']) {
                    reply = reply.with_header(name, value);
                }
            }
        }
    }
    reply
}

fn random_answer(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..30) {
        0 => json!({"fault": "reset"}),
        1 => json!({"fault": "close"}),
        2 => json!({"fault": "garbage"}),
        _ => json!({"status": answer_status(rng), "headers": random_headers(rng),
                    "body": answer_body(rng)}),
    }
}

/// The payload of a door around the case's events (or a raw body).
fn payload(input: &Value) -> Value {
    let no_events = Vec::new();
    let events = input
        .get("events")
        .and_then(Value::as_array)
        .unwrap_or(&no_events);
    let body = match input.get("raw").and_then(Value::as_str) {
        Some(raw) => raw.to_string(),
        None if events.len() == 1 => events[0].to_string(),
        None => Value::Array(events.clone()).to_string(),
    };
    let token = input
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or(TOKEN)
        .to_string();
    match input
        .get("door")
        .and_then(Value::as_str)
        .unwrap_or("direct")
    {
        "v2" => json!({
            "version": "2.0", "rawPath": "/rudderstack", "routeKey": "POST /rudderstack",
            "headers": {"authorization": format!("Bearer {token}")},
            "requestContext": {"http": {"method": "POST"}, "requestId": "r"},
            "body": body, "isBase64Encoded": false,
        }),
        "v1" => json!({
            "httpMethod": "POST", "path": "/rudderstack",
            "headers": {"Authorization": format!("Bearer {token}")},
            "requestContext": {"requestId": "r"}, "body": body, "isBase64Encoded": false,
        }),
        "sqs" => {
            let records: Vec<Value> = events
                .iter()
                .enumerate()
                .map(|(n, event)| {
                    json!({"messageId": format!("sqs-{n}"), "body": event.to_string(),
                           "eventSource": "aws:sqs", "attributes": {"ApproximateReceiveCount": "1"}})
                })
                .collect();
            json!({ "Records": records })
        }
        _ => match input.get("raw") {
            Some(raw) => raw.clone(),
            None => Value::Array(events.clone()),
        },
    }
}

struct HandlerWorld {
    runtime: tokio::runtime::Runtime,
    stub: StubServer,
    script: Script,
    app: Mutex<App>,
}

fn handler_world() -> HandlerWorld {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let script: Script = Arc::new(Mutex::new((Vec::new(), 0)));
    let for_stub = Arc::clone(&script);
    let stub = runtime.block_on(StubServer::start(move |request: &Request| {
        scripted_reply(&for_stub, request)
    }));
    let app = app_for(&stub).expect("the fuzz app's settings");
    HandlerWorld {
        runtime,
        stub,
        script,
        app: Mutex::new(app),
    }
}

/// One app for the whole target (building the HTTPS client loads the system's roots, which
/// would dominate each case); [`fresh_state`] gives each case a cold pacer.
fn app_for(stub: &StubServer) -> Result<App, String> {
    let vars = [
        (lambda::LOCAL_API_KEY, "sk-fuzz".to_string()),
        (lambda::LOCAL_WEBHOOK_TOKEN, TOKEN.to_string()),
        (lambda::BASE_ENDPOINT, stub.base_url()),
        (lambda::REQUEST_TIMEOUT_MS, "400".to_string()),
        (lambda::CONNECT_TIMEOUT_MS, "200".to_string()),
        (lambda::RETRY_MAX_ATTEMPTS, "3".to_string()),
        // A cache would carry state from one case to the next.
        (lambda::CUSTOMER_CACHE_TTL_SECONDS, "0".to_string()),
    ];
    let config = LambdaSettings::from_lookup(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    })
    .map_err(|e| format!("settings: {e}"))?;
    App::new(&config).map_err(|e| e.to_string())
}

/// What a case may change, reset: workers and a pacer that knows nothing yet.
fn fresh_state(app: &mut App, input: &Value) {
    let in_flight = input
        .get("in_flight")
        .and_then(Value::as_u64)
        .unwrap_or(4)
        .clamp(1, 16) as usize;
    app.reset_delivery_state(in_flight);
}

/// Invariants of one answer.
fn check_answer(input: &Value, answer: &Result<Value, String>) -> Result<(), String> {
    let answer = match answer {
        Err(problem) if problem.contains("internal error") => {
            return Err(format!("the handler panicked: {problem}"))
        }
        Err(_) => return Ok(()), // a direct invocation that could not place its failures
        Ok(answer) => answer,
    };
    let size = answer.to_string().len();
    if size > 6 * 1024 * 1024 {
        return Err(format!("answer of {size} bytes is over Lambda's 6 MB"));
    }
    match input.get("door").and_then(Value::as_str) {
        Some("v1" | "v2") => {
            let status = answer["statusCode"].as_u64().unwrap_or(0);
            if ![200, 400, 401, 429, 500, 503].contains(&status) {
                return Err(format!("webhook status {status}"));
            }
            let body: Value = serde_json::from_str(answer["body"].as_str().unwrap_or(""))
                .map_err(|e| format!("webhook body is not JSON: {e}"))?;
            if let Some(received) = body.get("received").and_then(Value::as_u64) {
                let delivered = body["delivered"].as_u64().unwrap_or(0);
                let listed = body["failed"].as_array().map_or(0, Vec::len) as u64;
                let unlisted = body
                    .get("failedNotListed")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if delivered + listed + unlisted != received {
                    return Err(format!(
                        "{received} received but {delivered} delivered + {listed} listed + {unlisted} not listed"
                    ));
                }
                if (status == 200) != (listed + unlisted == 0) {
                    return Err(format!("status {status} with {listed} failures listed"));
                }
            }
        }
        Some("sqs") => {
            let records = input["events"].as_array().map_or(0, Vec::len);
            let failures = answer["batchItemFailures"]
                .as_array()
                .ok_or("no batchItemFailures")?;
            for failure in failures {
                let id = failure["itemIdentifier"].as_str().unwrap_or("");
                let known = id
                    .strip_prefix("sqs-")
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n < records);
                if !known {
                    return Err(format!("batch item failure for unknown id {id:?}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[test]
fn handler() {
    let world = handler_world();
    // Everything logged (info and up, as in production) by this test binary.
    let logs = support::capture_logs(tracing::Level::INFO);
    let cases_that_logged = std::sync::atomic::AtomicU64::new(0);
    fuzz(
        "handler",
        60,
        150,
        |rng| {
            let door = *pick(rng, &["v1", "v2", "sqs", "direct"]);
            let mut input = json!({
                "door": door,
                "events": events(rng, 6),
                "answers": (0..rng.usize(..6)).map(|_| random_answer(rng)).collect::<Vec<_>>(),
                "in_flight": rng.u64(1..9),
            });
            match rng.u8(..20) {
                0 => input["raw"] = json!(hostile_string(rng)),
                1 => input["raw"] = random_value(rng, 0),
                2 => input["token"] = json!(hostile_string(rng)),
                _ => {}
            }
            input
        },
        |input| {
            let answers = input
                .get("answers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            *world.script.lock().unwrap_or_else(|e| e.into_inner()) = (answers, 0);
            let mut app = world.app.lock().unwrap_or_else(|e| e.into_inner());
            fresh_state(&mut app, input);
            let app = &*app;
            let payload = payload(input);
            logs.clear();
            let answer = world.runtime.block_on(async {
                // Leaves 150 ms to deliver behind every door's own answer margin: cases
                // spend most of their time in retry backoff, which the deadline cuts short.
                let margin = match input.get("door").and_then(Value::as_str) {
                    Some("v1" | "v2") => Duration::from_millis(450),
                    _ => Duration::from_millis(3_150),
                };
                let deadline = tokio::time::Instant::now() + margin;
                tokio::time::timeout(
                    Duration::from_secs(30),
                    handle(app, payload, "fuzz-request", deadline),
                )
                .await
            });
            let answer = answer.map_err(|_| "the handler stalled for 30 s".to_string())?;
            let answer = answer.map_err(|e| e.to_string());
            check_answer(input, &answer)?;
            let logged = logs.text();
            if !logged.is_empty() {
                cases_that_logged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(line) = logged.lines().find(|line| line.contains(MARK)) {
                return Err(format!(
                    "a log line carries an event or answer value: {}",
                    line.chars().take(400).collect::<String>()
                ));
            }
            Ok(())
        },
    );
    world.stub.shutdown();
    // The leak check means something only if the logs were captured.
    assert!(
        cases_that_logged.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no handler case logged anything: the log capture is broken"
    );
}

// =======================================================================================
// Target: the command line's input reader (issue 17, item 7).
// =======================================================================================

/// A piece of an input file: text (an event line, a cut one, a pretty document, blank
/// space, a line over the cap) or raw bytes, any of them.
fn reader_piece(rng: &mut fastrand::Rng) -> Value {
    let line = |value: Value| json!(format!("{value}\n"));
    match rng.u8(..16) {
        0..=4 => line(event(rng)),
        5 => line(Value::Array(events(rng, 3))),
        6 => {
            let inner = event(rng);
            line(envelope(rng, inner, 0))
        }
        7 => {
            // A record cut short, as an interrupted export leaves it.
            let text = event(rng).to_string();
            let cut = text
                .char_indices()
                .nth(rng.usize(..text.chars().count().max(1)));
            json!(format!("{}\n", &text[..cut.map_or(0, |(at, _)| at)]))
        }
        8 => json!(serde_json::to_string_pretty(&Value::Array(events(rng, 3))).unwrap_or_default()),
        9 => json!(pick(rng, &["\n", "\r\n", "  \t\n", "", "[", "{", "]\n", ",\n"]).to_string()),
        10 => json!(format!(
            "{{\"type\":\"track\",\"x\":\"{}\"}}\n",
            "y".repeat(rng.usize(..3_000))
        )),
        // Bytes that are not UTF-8, or anything at all.
        11 => json!((0..rng.usize(1..8))
            .map(|_| rng.u8(0x80..))
            .collect::<Vec<u8>>()),
        12 => json!((0..rng.usize(..40))
            .map(|_| rng.u8(..))
            .collect::<Vec<u8>>()),
        _ => line(random_value(rng, 1)),
    }
}

/// The input's text, and the file's bytes (gzip of the text when asked).
fn reader_bytes(input: &Value) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = Vec::new();
    for piece in input
        .get("pieces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match piece {
            Value::String(text) => bytes.extend_from_slice(text.as_bytes()),
            Value::Array(raw) => {
                bytes.extend(raw.iter().filter_map(Value::as_u64).map(|b| b as u8))
            }
            _ => {}
        }
    }
    if input.get("gzip").and_then(Value::as_bool) == Some(true) {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = gz.write_all(&bytes);
        let file = gz.finish().unwrap_or_default();
        return (bytes, file);
    }
    (bytes.clone(), bytes)
}

/// The line without its ending.
fn line_text(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The shape rule, written out on its own: a document when the first non-blank line (at
/// most `cap` long) is an unfinished JSON value and the next `cap` bytes from it continue
/// one value; JSON Lines otherwise. With it, where that document starts.
fn shape_oracle(text: &[u8], cap: usize) -> Option<(Shape, usize, u64)> {
    let mut offset = 0;
    for (number, line) in (1u64..).zip(text.split_inclusive(|&b| b == b'\n')) {
        let body = line_text(line);
        if body.iter().all(u8::is_ascii_whitespace) {
            offset += line.len();
            continue;
        }
        let unfinished = body.len() <= cap
            && matches!(serde_json::from_slice::<Value>(body), Err(e) if e.is_eof());
        if !unfinished {
            return Some((Shape::Lines, offset, number));
        }
        let window = &text[offset..text.len().min(offset + cap + 1)];
        let mut parser = serde_json::Deserializer::from_slice(window);
        let one = serde::Deserialize::deserialize(&mut parser).and_then(|_: Value| parser.end());
        return Some(match one {
            Err(e) if !e.is_eof() => (Shape::Lines, offset, number),
            _ => (Shape::Document, offset, number),
        });
    }
    None
}

/// Every item up to the end, or up to a read error (a corrupt gzip stream).
fn read_all(input: &mut Input) -> Vec<Located> {
    let mut items = Vec::new();
    while let Ok(Some(located)) = input.next_item() {
        items.push(located);
    }
    items
}

/// What JSON Lines must give, line by line, each line on its own: the oracle for the
/// rule "a bad byte or a cut record costs that line only".
fn lines_oracle(text: &[u8], cap: usize) -> Vec<(u64, Option<Value>)> {
    let mut expected = Vec::new();
    for (number, line) in (1u64..).zip(text.split_inclusive(|&b| b == b'\n')) {
        let line = line_text(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let items = match serde_json::from_slice::<Value>(line) {
            Ok(value) if line.len() <= cap => decode(value),
            _ => vec![Item::Unreadable {
                message: String::new(),
                raw: None,
            }],
        };
        expected.extend(items.into_iter().map(|item| match item {
            Item::Event(event) => (number, Some(event)),
            Item::Unreadable { .. } => (number, None),
        }));
    }
    expected
}

#[test]
fn reader() {
    let path = std::env::temp_dir().join(format!("rk-fuzz-reader-{}", std::process::id()));
    let path = path.to_string_lossy().into_owned();
    fuzz(
        "reader",
        400,
        400,
        |rng| {
            json!({
                "pieces": (0..rng.usize(..14)).map(|_| reader_piece(rng)).collect::<Vec<_>>(),
                "gzip": rng.u8(..3) == 0,
                "cap": *pick(rng, &[1_024u64, 4_096, 1 << 20]),
                "resume": (0..3).map(|_| rng.u64(..1_000)).collect::<Vec<_>>(),
                "offset": rng.u64(..4_000),
                // A damaged gzip stream: read up to the damage, never a panic.
                "damage": if rng.u8(..8) == 0 { json!(rng.u64(..)) } else { Value::Null },
            })
        },
        |input| {
            let (text, mut bytes) = reader_bytes(input);
            let damaged = match input.get("damage").and_then(Value::as_u64) {
                Some(at) if !bytes.is_empty() => {
                    let at = at as usize % bytes.len();
                    bytes[at] ^= 0x5a;
                    true
                }
                _ => false,
            };
            // Text that happens to start like gzip is read as (broken) gzip.
            let damaged = damaged || (text == bytes && text.starts_with(&[0x1f, 0x8b]));
            std::fs::write(&path, &bytes).map_err(|e| format!("temp file: {e}"))?;
            let cap = input.get("cap").and_then(Value::as_u64).unwrap_or(1 << 20) as usize;
            let options = ReadOptions {
                max_record_bytes: cap,
            };
            let mut whole = Input::open(&path, &options)?;
            let items = read_all(&mut whole);
            let shape = whole.shape();
            for pair in items.windows(2) {
                let (a, b) = (pair[0].position, pair[1].position);
                if (b.offset, b.index) <= (a.offset, a.index) {
                    return Err(format!("positions go back: {a:?} then {b:?}"));
                }
            }
            for located in &items {
                if let Item::Unreadable { raw: Some(raw), .. } = &located.item {
                    if raw.chars().count() > cap + 2 {
                        return Err(format!(
                            "an unreadable record of {} chars was held",
                            raw.len()
                        ));
                    }
                }
            }
            // Resuming at any record boundary reads exactly the rest.
            let points = input
                .get("resume")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for point in points.iter().filter_map(Value::as_u64) {
                let k = point as usize % (items.len() + 1);
                let resume = match items.get(k) {
                    Some(at) => Resume {
                        shape,
                        position: at.position,
                        through: at.through,
                    },
                    None => {
                        let (position, through) = whole.next_at();
                        Resume {
                            shape,
                            position,
                            through,
                        }
                    }
                };
                let rest = read_all(&mut Input::open_at(&path, &options, &resume)?);
                let strip = |items: &[Located]| -> Vec<(Item, u64, u64, u64)> {
                    items
                        .iter()
                        .map(|l| {
                            (
                                l.item.clone(),
                                l.position.line,
                                l.position.offset,
                                l.position.index,
                            )
                        })
                        .collect()
                };
                if strip(&rest) != strip(&items[k..]) {
                    return Err(format!(
                        "resuming at item {k} of {}: {} items instead of {}",
                        items.len(),
                        rest.len(),
                        items.len() - k
                    ));
                }
            }
            // Anywhere at all (not a boundary): no panic, and no item before that point.
            let offset = input.get("offset").and_then(Value::as_u64).unwrap_or(0);
            let anywhere = Resume {
                shape: Some(shape.unwrap_or(Shape::Lines)),
                position: rudder_kustomer::cli::input::Position {
                    line: 1,
                    offset,
                    index: 0,
                },
                through: None,
            };
            if let Ok(mut resumed) = Input::open_at(&path, &options, &anywhere) {
                if let Some(early) = read_all(&mut resumed)
                    .iter()
                    .find(|l| l.position.offset < offset)
                {
                    return Err(format!(
                        "an item before the resume point: {:?}",
                        early.position
                    ));
                }
            }
            if damaged {
                return Ok(());
            }
            // The rule, checked against its own statement: the shape, then the records.
            let oracle = shape_oracle(&text, cap);
            if shape != oracle.map(|(shape, _, _)| shape) {
                return Err(format!("shape {shape:?}, the rule says {oracle:?}"));
            }
            let expected = match oracle {
                // JSON Lines: each line on its own, whatever its neighbours hold.
                Some((Shape::Lines, _, _)) | None => lines_oracle(&text, cap),
                // A document: its events when it fits the cap and parses, else one record.
                Some((Shape::Document, offset, line)) => {
                    let rest = &text[offset..];
                    match serde_json::from_slice::<Value>(rest) {
                        Ok(value) if rest.len() <= cap => decode(value)
                            .into_iter()
                            .map(|item| match item {
                                Item::Event(event) => (line, Some(event)),
                                Item::Unreadable { .. } => (line, None),
                            })
                            .collect(),
                        _ => vec![(line, None)],
                    }
                }
            };
            let got: Vec<(u64, Option<Value>)> = items
                .iter()
                .map(|l| match &l.item {
                    Item::Event(event) => (l.position.line, Some(event.clone())),
                    Item::Unreadable { .. } => (l.position.line, None),
                })
                .collect();
            if got != expected {
                let first = got.iter().zip(&expected).position(|(a, b)| a != b);
                return Err(format!(
                    "read otherwise than the rule says ({shape:?}): {} items, expected {} (first difference at item {first:?})",
                    got.len(),
                    expected.len()
                ));
            }
            Ok(())
        },
    );
    let _ = std::fs::remove_file(&path);
}
