//! The Lambda pipeline against the stub Kustomer: rate-limit pacing (a burst larger than
//! the advertised budget causes no 429; a 429 storm loses nothing) and the customer-id
//! cache (repeat identify skips look-ups; a merged customer is looked up again).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use rudder_kustomer::outcome::Outcome;
use rudder_kustomer::outcome::Report;
use rudder_kustomer::pipeline::Pipeline;
use rudder_kustomer::settings::lambda::{self, LambdaSettings};
use serde_json::{json, Value};
use support::{Reply, Request, StubServer};

const IN_FLIGHT: usize = 8;

/// The pipeline the function builds, from the function's own settings: a local key,
/// the stub as base endpoint, the mapping flags all off, the skip caches off.
fn pipeline(stub: &StubServer, max_attempts: u32, cache: bool) -> Pipeline {
    pipeline_with(
        stub,
        max_attempts,
        cache,
        &[(lambda::UNCHANGED_TTL_SECONDS, "0")],
    )
}

/// [`pipeline`] with more settings (variable, value), which win.
fn pipeline_with(
    stub: &StubServer,
    max_attempts: u32,
    cache: bool,
    more: &[(&'static str, &str)],
) -> Pipeline {
    let mut settings: HashMap<&str, String> = HashMap::from([
        (lambda::LOCAL_API_KEY, "delivery-test-key".to_string()),
        (lambda::BASE_ENDPOINT, stub.base_url()),
        (lambda::FIT_TO_SCHEMA, "false".to_string()),
        (lambda::RETRY_MAX_ATTEMPTS, max_attempts.to_string()),
        (lambda::MAX_IN_FLIGHT, IN_FLIGHT.to_string()),
        (
            lambda::CUSTOMER_CACHE_TTL_SECONDS,
            if cache { "300" } else { "0" }.to_string(),
        ),
        (lambda::CUSTOMER_CACHE_MAX_ENTRIES, "1000".to_string()),
    ]);
    settings.extend(more.iter().map(|(name, value)| (*name, value.to_string())));
    let settings = LambdaSettings::from_lookup(|name| settings.get(name).cloned())
        .expect("the test's settings are valid");
    Pipeline::new(&settings).expect("client")
}

fn track(user: usize, n: usize) -> Value {
    json!({"type": "track", "event": "Checkout Step Viewed", "userId": format!("user-{user}"),
           "properties": {"step": n}, "messageId": format!("m-{user}-{n}")})
}

fn identify(user: &str) -> Value {
    json!({"type": "identify", "userId": user, "traits": {"email": format!("{user}@example.com"), "plan": "pro"}})
}

fn deadline(seconds: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(seconds)
}

/// Every request the stub received, as `METHOD target`.
fn requested(stub: &StubServer) -> Vec<String> {
    stub.requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect()
}

fn delivered(reports: &[Report]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Delivered(_)))
        .count()
}

/// Kustomer's fixed-window limit: `limit` requests per `window`, advertised on every
/// answer; a request over the budget gets 429 with Retry-After.
fn rate_limited(limit: u32, window: Duration) -> impl Fn(&Request) -> Reply + Send + Sync {
    let state = Mutex::new((Instant::now(), 0u32));
    move |_request: &Request| {
        let mut state = state.lock().unwrap();
        let now = Instant::now();
        if now.duration_since(state.0) >= window {
            *state = (now, 0);
        }
        state.1 += 1;
        let left = window.saturating_sub(now.duration_since(state.0));
        let reset = left.as_secs_f64().ceil().max(1.0) as u64;
        let headers = |reply: Reply, remaining: u32| {
            reply
                .with_header("x-ratelimit-limit", &limit.to_string())
                .with_header("x-ratelimit-remaining", &remaining.to_string())
                .with_header("x-ratelimit-reset", &reset.to_string())
        };
        if state.1 > limit {
            headers(Reply::json(429, &json!({"errors": [{"status": 429}]})), 0)
                .with_header("retry-after", &reset.to_string())
        } else {
            headers(
                Reply::json(201, &json!({"data": {"id": "evt"}})),
                limit - state.1,
            )
        }
    }
}

#[tokio::test]
async fn a_burst_larger_than_the_budget_gets_no_429() {
    let stub = StubServer::start(rate_limited(10, Duration::from_secs(1))).await;
    let events: Vec<Value> = (0..35).map(|n| track(n % 12, n)).collect();
    let reports = pipeline(&stub, 3, true)
        .deliver_all(&events, deadline(30))
        .await;

    let statuses: Vec<u16> = reports
        .iter()
        .filter_map(|r| r.outcome.failure().and_then(|f| f.status))
        .collect();
    let throttled = stub.requests().len() - events.len();
    println!(
        "pacing burst: {} events, budget 10/s, {} delivered, {} extra requests (429s)",
        events.len(),
        delivered(&reports),
        throttled
    );
    assert_eq!(delivered(&reports), events.len(), "failures: {statuses:?}");
    assert_eq!(
        stub.requests().len(),
        events.len(),
        "a 429 was answered: the pacer let a request over the budget"
    );
}

#[tokio::test]
async fn a_429_storm_is_ridden_out_without_losing_events() {
    let storm_until = Instant::now() + Duration::from_millis(1_500);
    let stub = StubServer::start(move |_request: &Request| {
        if Instant::now() < storm_until {
            Reply::json(429, &json!({"errors": [{"title": "Too Many Requests"}]}))
                .with_header("retry-after", "1")
        } else {
            Reply::json(201, &json!({"data": {"id": "evt"}}))
        }
    })
    .await;
    let events: Vec<Value> = (0..20).map(|n| track(n, n)).collect();
    let reports = pipeline(&stub, 5, true)
        .deliver_all(&events, deadline(30))
        .await;
    let throttles = stub.requests().len() - events.len();
    println!(
        "429 storm: {} events, {} delivered, {} requests answered 429",
        events.len(),
        delivered(&reports),
        throttles
    );
    assert!(throttles > 0, "the storm never hit");
    // Every event either arrived or is reported retryable; here the storm ends in time.
    assert_eq!(delivered(&reports), events.len());
}

#[tokio::test]
async fn a_storm_longer_than_the_deadline_reports_every_event_retryable() {
    let stub = StubServer::start(|_request: &Request| {
        Reply::json(429, &json!({})).with_header("retry-after", "1")
    })
    .await;
    let events: Vec<Value> = (0..6).map(|n| track(n, n)).collect();
    let reports = pipeline(&stub, 10, true)
        .deliver_all(&events, deadline(2))
        .await;
    assert_eq!(reports.len(), events.len());
    for report in &reports {
        let failure = report.outcome.failure().expect("nothing can be delivered");
        assert!(failure.class.is_retryable(), "{failure:?}");
    }
}

/// Look-ups find nothing the first time; the created customer's id is remembered.
fn kustomer_with_customers() -> impl Fn(&Request) -> Reply + Send + Sync {
    let created = Arc::new(Mutex::new(0u32));
    move |request: &Request| match request.method.as_str() {
        "GET" => Reply::empty(404),
        "POST" => {
            let mut created = created.lock().unwrap();
            *created += 1;
            Reply::json(
                201,
                &json!({"data": {"type": "customer", "id": format!("cust{created}")}}),
            )
        }
        _ => Reply::json(200, &json!({"data": {"type": "customer"}})),
    }
}

#[tokio::test]
async fn repeat_identify_skips_the_lookups() {
    let stub = StubServer::start(kustomer_with_customers()).await;
    let pipeline = pipeline(&stub, 3, true);
    let users = ["ada", "grace", "linus"];
    let warm_up: Vec<Value> = users.iter().map(|u| identify(u)).collect();
    pipeline.deliver_all(&warm_up, deadline(10)).await;
    let after_warm_up = stub.requests().len();
    assert_eq!(
        after_warm_up,
        3 * 3,
        "cold: e-mail and userId look-ups, then a create"
    );

    let repeats: Vec<Value> = (0..30).map(|n| identify(users[n % 3])).collect();
    let reports = pipeline.deliver_all(&repeats, deadline(10)).await;
    assert_eq!(delivered(&reports), repeats.len());
    let per_identify = (stub.requests().len() - after_warm_up) as f64 / repeats.len() as f64;
    println!("repeat identify: {per_identify:.2} Kustomer requests per identify after warm-up");
    assert_eq!(per_identify, 1.0);
    for request in &stub.requests()[after_warm_up..] {
        assert_eq!(request.method, "PUT");
        assert!(
            request.target.starts_with("/v1/customers/cust"),
            "{}",
            request.target
        );
    }
}

#[tokio::test]
async fn a_merged_customer_is_looked_up_again() {
    let stub = StubServer::start(|request: &Request| {
        match (request.method.as_str(), request.target.as_str()) {
            ("GET", target) if target.contains("externalId=ada") => {
                Reply::json(200, &json!({"data": {"id": "new-id"}}))
            }
            ("GET", _) => Reply::empty(404),
            ("PUT", target) if target.starts_with("/v1/customers/old-id") => {
                Reply::json(404, &json!({"errors": [{"title": "Not Found"}]}))
            }
            _ => Reply::json(200, &json!({"data": {"id": "new-id"}})),
        }
    })
    .await;
    let pipeline = pipeline(&stub, 3, true);
    let cache = pipeline.customer_cache().expect("the cache is on");
    cache.remember(["/v1/customers/email=ada@example.com"], "old-id");

    let reports = pipeline.deliver_all(&[identify("ada")], deadline(10)).await;
    assert_eq!(delivered(&reports), 1);
    assert_eq!(
        requested(&stub),
        [
            "PUT /v1/customers/old-id?replace=false",
            "GET /v1/customers/email=ada@example.com",
            "GET /v1/customers/externalId=ada",
            "PUT /v1/customers/new-id?replace=false",
        ]
    );
    assert_eq!(
        cache
            .find(["/v1/customers/email=ada@example.com"])
            .as_deref(),
        Some("new-id")
    );
}

#[tokio::test]
async fn without_the_cache_every_identify_looks_up() {
    let stub = StubServer::start(kustomer_with_customers()).await;
    let pipeline = pipeline(&stub, 3, false);
    let events: Vec<Value> = (0..4).map(|_| identify("ada")).collect();
    pipeline.deliver_all(&events, deadline(10)).await;
    let lookups = stub.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(lookups, 4 * 2);
}

#[tokio::test]
async fn requests_in_flight_stay_within_the_limit_and_users_stay_in_order() {
    let arrivals = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let seen = Arc::clone(&arrivals);
    let latency = Duration::from_millis(60);
    let stub = StubServer::start(move |request: &Request| {
        let body = request.body_json().unwrap_or_default();
        let user = body["identity"]["externalId"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let step = body["event"]["meta"]["step"].to_string();
        seen.lock()
            .unwrap()
            .push((Instant::now(), format!("{user}:{step}")));
        Reply::json(201, &json!({"data": {"id": "evt"}})).with_delay(latency)
    })
    .await;
    // 30 users, one of them with a chain of 10 events.
    let mut events: Vec<Value> = (0..30).map(|user| track(user, 0)).collect();
    events.extend((1..10).map(|n| track(0, n)));
    let reports = pipeline(&stub, 1, false)
        .deliver_all(&events, deadline(30))
        .await;
    assert_eq!(delivered(&reports), events.len());

    let arrivals = arrivals.lock().unwrap().clone();
    // A request is in flight for the stub's latency after it arrives.
    let window = latency - Duration::from_millis(10);
    let busiest = arrivals
        .iter()
        .map(|(at, _)| {
            arrivals
                .iter()
                .filter(|(other, _)| *other <= *at && at.duration_since(*other) < window)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= IN_FLIGHT,
        "{busiest} requests in flight, limit {IN_FLIGHT}"
    );
    let chain: Vec<&str> = arrivals
        .iter()
        .map(|(_, key)| key.as_str())
        .filter(|key| key.starts_with("user-0:"))
        .collect();
    let expected: Vec<String> = (0..10).map(|n| format!("user-0:{n}")).collect();
    assert_eq!(
        chain, expected,
        "one user's events must arrive in their order"
    );
}

/// Issue 8, faults 1 and 2: absurd waits in Kustomer's headers used to overflow an
/// `Instant` (a panic, which aborted the container). Each answer here must end as an
/// outcome within the deadline, with no panic.
#[tokio::test]
async fn hostile_rate_limit_headers_never_crash_or_stall() {
    let answers: Vec<(u16, &[(&str, &str)])> = vec![
        (429, &[("retry-after", "1e19")]),
        (503, &[("retry-after", "inf")]),
        (429, &[("x-ratelimit-reset", "99999999999999999999")]),
        (
            200,
            &[
                ("x-ratelimit-remaining", "10"),
                ("x-ratelimit-reset", "1e19"),
            ],
        ),
        (
            200,
            &[
                ("x-ratelimit-remaining", "10"),
                ("x-ratelimit-reset", "inf"),
            ],
        ),
        (
            200,
            &[
                ("x-ratelimit-limit", "100000000000"),
                ("x-ratelimit-remaining", "4294967295"),
                ("x-ratelimit-reset", "60"),
            ],
        ),
        (200, &[("x-ratelimit-remaining", "0")]),
        (
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000000000"),
            ],
        ),
    ];
    for (status, headers) in answers {
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let first = std::sync::atomic::AtomicBool::new(true);
        let stub = StubServer::start(move |_request: &Request| {
            // The hostile answer once, then plain successes.
            let mut reply = if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                Reply::json(status, &json!({"data": {"id": "evt"}}))
            } else {
                Reply::json(201, &json!({"data": {"id": "evt"}}))
            };
            for (name, value) in &owned {
                reply = reply.with_header(name, value);
            }
            reply
        })
        .await;
        let events: Vec<Value> = (0..3).map(|n| track(n, n)).collect();
        let started = Instant::now();
        let reports = pipeline(&stub, 3, false)
            .deliver_all(&events, deadline(8))
            .await;
        assert_eq!(reports.len(), events.len(), "{headers:?}");
        // Bounded by the deadline given (8 s) plus the attempt in progress, never longer.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{headers:?} stalled for {:?}",
            started.elapsed()
        );
        // The warm pipeline keeps sending afterwards.
        let later = pipeline(&stub, 3, false)
            .deliver_all(&[track(9, 9)], deadline(8))
            .await;
        assert_eq!(delivered(&later), 1, "{headers:?}");
    }
}

/// Issue 8, fault 7: a look-up value too long for a URL is the event's permanent fault,
/// named by its field, and nothing is sent or counted.
#[tokio::test]
async fn a_lookup_value_too_long_for_a_url_fails_for_good_without_a_request() {
    let stub = StubServer::start(|_request: &Request| Reply::json(404, &json!(null))).await;
    let long_email = format!("{}@example.com", "a".repeat(70_000));
    let event = json!({"type": "identify", "userId": "u-1", "traits": {"email": long_email}});
    let reports = pipeline(&stub, 3, false)
        .deliver_all(&[event], deadline(8))
        .await;
    let failure = reports[0].outcome.failure().expect("a failure");
    assert_eq!(failure.status, Some(400));
    assert!(!failure.class.is_retryable());
    assert_eq!(
        failure.message,
        "the email is too long to fit in a Kustomer URL"
    );
    assert_eq!(reports[0].attempts, 1);
    assert!(stub.requests().is_empty(), "a request was sent");
}

/// Issue 18: a user's chain stops at its first transient failure. Its later events are
/// held (transient, no request made), so none is delivered ahead of the one to retry;
/// other users go on, and a permanent failure stops nothing (it will never succeed).
#[tokio::test]
async fn a_chain_stops_at_its_first_transient_failure() {
    let stub = StubServer::start(|request: &Request| {
        let body = request.body_json().unwrap_or_default();
        let user = body["identity"]["externalId"].as_str().unwrap_or("");
        let step = body["event"]["meta"]["step"].as_u64();
        match (user, step) {
            ("user-0", Some(1)) => Reply::json(503, &json!({"errors": [{"status": 503}]})),
            ("user-1", Some(1)) => Reply::json(400, &json!({"errors": [{"status": 400}]})),
            _ => Reply::json(201, &json!({"data": {"id": "evt"}})),
        }
    })
    .await;
    let events: Vec<Value> = (0..4)
        .flat_map(|step| (0..3).map(move |user| track(user, step)))
        .collect();
    let reports = pipeline(&stub, 2, false)
        .deliver_all(&events, deadline(30))
        .await;
    let outcome = |user: usize, step: usize| {
        let index = events
            .iter()
            .position(|e| e["messageId"] == format!("m-{user}-{step}"))
            .expect("the event");
        &reports[index]
    };
    for step in 0..4 {
        assert!(
            outcome(2, step).outcome.failure().is_none(),
            "user-2 goes on"
        );
    }
    let failed = outcome(0, 1).outcome.failure().expect("503 twice");
    assert_eq!((failed.status, outcome(0, 1).attempts), (Some(503), 2));
    for step in [2, 3] {
        let held = outcome(0, step);
        let failure = held.outcome.failure().expect("held behind step 1");
        assert!(failure.class.is_retryable(), "{failure:?}");
        assert_eq!(failure.message, rudder_kustomer::outcome::HELD_BEHIND);
        assert_eq!(held.attempts, 0);
    }
    let permanent = outcome(1, 1).outcome.failure().expect("400");
    assert!(!permanent.class.is_retryable());
    for step in [2, 3] {
        assert!(
            outcome(1, step).outcome.failure().is_none(),
            "a permanent failure does not stop the chain"
        );
    }
    let sent_for_user_0: Vec<u64> = stub
        .requests()
        .iter()
        .filter_map(|r| r.body_json())
        .filter(|b| b["identity"]["externalId"] == "user-0")
        .filter_map(|b| b["event"]["meta"]["step"].as_u64())
        .collect();
    assert_eq!(
        sent_for_user_0,
        [0, 1, 1],
        "nothing sent after the failed event"
    );
}

/// Issue 18, fewer requests: an identify whose update is the one this container last sent
/// that customer is not sent again (`unchanged`, delivered); a changed one is; a failed
/// write forgets the body. An event whose messageId (type, user) this container delivered
/// is not sent again (`duplicate`); a failed one is tried again next time.
#[tokio::test]
async fn unchanged_updates_and_repeated_events_are_not_sent() {
    use rudder_kustomer::outcome::{Delivered, Skipped};
    let fail_next_put = Arc::new(Mutex::new(false));
    let failing = Arc::clone(&fail_next_put);
    let created = Arc::new(Mutex::new(0u32));
    let stub = StubServer::start(move |request: &Request| match request.method.as_str() {
        "GET" => Reply::empty(404),
        "PUT" if std::mem::take(&mut *failing.lock().unwrap()) => Reply::empty(503),
        "POST" if request.path() == "/v1/customers" => {
            let mut created = created.lock().unwrap();
            *created += 1;
            Reply::json(201, &json!({"data": {"id": format!("cust{created}")}}))
        }
        _ => Reply::json(201, &json!({"data": {"id": "x"}})),
    })
    .await;
    let pipeline = pipeline_with(&stub, 1, true, &[]);
    let skipped = |report: &Report| match &report.outcome {
        Outcome::Delivered(Delivered { skipped, .. }) => *skipped,
        Outcome::Failed(failure) => panic!("failed: {failure}"),
    };
    let with_id = |mut event: Value, id: &str| {
        event["messageId"] = json!(id);
        event
    };
    let ada = identify("ada");
    let mut changed = ada.clone();
    changed["traits"]["name"] = json!("Ada Lovelace");
    let events = vec![
        with_id(ada.clone(), "i1"),     // look-ups, create
        with_id(ada.clone(), "i2"),     // the create's body again: not sent
        with_id(changed.clone(), "i3"), // changed: sent
        with_id(changed.clone(), "i4"), // as i3: not sent
        track(1, 1),
        track(1, 1), // a repeat of the same messageId: not sent
    ];
    let reports = pipeline.deliver_all(&events, deadline(10)).await;
    let outcomes: Vec<Option<Skipped>> = reports.iter().map(skipped).collect();
    use Skipped::{Duplicate, Unchanged};
    assert_eq!(
        outcomes,
        [
            None,
            Some(Unchanged),
            None,
            Some(Unchanged),
            None,
            Some(Duplicate)
        ]
    );
    // Users run concurrently: ada's requests in order, and one tracking event.
    let targets: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    let (tracking, of_ada): (Vec<String>, Vec<String>) =
        targets.into_iter().partition(|t| t.contains("tracking"));
    assert_eq!(
        of_ada,
        [
            "GET /v1/customers/email=ada@example.com",
            "GET /v1/customers/externalId=ada",
            "POST /v1/customers",
            "PUT /v1/customers/cust1",
        ]
    );
    assert_eq!(tracking, ["POST /v1/tracking/identityEvent"]);
    let counts = pipeline.metrics().take();
    assert_eq!(
        (counts.updates_skipped, counts.duplicates_skipped),
        (1 + 1, 1)
    );
    assert_eq!(counts.events[&("identify", "unchanged")], 2);
    assert_eq!(counts.events[&("track", "duplicate")], 1);

    // A failed update forgets the body: the next identical one is sent.
    *fail_next_put.lock().unwrap() = true;
    let reports = pipeline
        .deliver_all(std::slice::from_ref(&ada), deadline(10))
        .await;
    assert!(reports[0].outcome.failure().is_some());
    let reports = pipeline
        .deliver_all(&[ada.clone(), ada], deadline(10))
        .await;
    assert_eq!(
        reports.iter().map(skipped).collect::<Vec<_>>(),
        [None, Some(Unchanged)]
    );
    let puts = stub.requests().iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 1 + 1 + 1, "i3, the failed one, the one after it");
}

/// Issue 18, a create that races: two writers both miss a new user in the look-ups; the
/// second create is answered 409. The look-ups run once more and the customer they find is
/// updated; the 409 stands only if they find none.
#[tokio::test]
async fn a_create_answered_409_looks_up_again_and_updates() {
    let created_elsewhere = Arc::new(Mutex::new(false));
    let seen = Arc::clone(&created_elsewhere);
    let stub = StubServer::start(move |request: &Request| {
        let exists = *seen.lock().unwrap();
        match (request.method.as_str(), request.path()) {
            ("GET", path) if exists && path.contains("externalId=ada") => {
                Reply::json(200, &json!({"data": {"id": "cust-other"}}))
            }
            ("GET", _) => Reply::empty(404),
            ("POST", "/v1/customers") => {
                // Someone else created ada (and only ada) a moment ago.
                let ada = request
                    .body_json()
                    .is_some_and(|b| b["externalId"] == "ada");
                *seen.lock().unwrap() |= ada;
                Reply::json(
                    409,
                    &json!({"errors": [{"status": 409, "title": "Conflict"}]}),
                )
            }
            _ => Reply::json(200, &json!({"data": {"id": "cust-other"}})),
        }
    })
    .await;
    let pipeline = pipeline(&stub, 1, true);
    let reports = pipeline.deliver_all(&[identify("ada")], deadline(10)).await;
    assert_eq!(delivered(&reports), 1, "{:?}", reports[0].outcome);
    assert_eq!(
        requested(&stub),
        [
            "GET /v1/customers/email=ada@example.com",
            "GET /v1/customers/externalId=ada",
            "POST /v1/customers",
            "GET /v1/customers/email=ada@example.com",
            "GET /v1/customers/externalId=ada",
            "PUT /v1/customers/cust-other?replace=false",
        ]
    );
    let cache = pipeline.customer_cache().expect("on");
    assert_eq!(
        cache.find(["/v1/customers/externalId=ada"]).as_deref(),
        Some("cust-other")
    );

    // Nobody to be found after the 409: it stands (a permanent failure), after one retry
    // of the look-ups only.
    let before = stub.requests().len();
    let reports = pipeline.deliver_all(&[identify("bob")], deadline(10)).await;
    let failure = reports[0].outcome.failure().expect("the 409 stands");
    assert_eq!(failure.status, Some(409));
    assert!(!failure.class.is_retryable());
    assert_eq!(stub.requests().len() - before, 2 + 1 + 2);
}

/// Issue 18, found by fuzzing: a look-up or a create answered with a customer id that
/// cannot be used in a URL (5,000 characters) is Kustomer's fault, like any malformed
/// answer (D6): a retryable 502, and the id is never cached (nor written to).
#[tokio::test]
async fn an_unusable_customer_id_is_a_retryable_502_and_never_cached() {
    let long_id = "9".repeat(5_000);
    for lookup_finds in [true, false] {
        let id = long_id.clone();
        let stub = StubServer::start(move |request: &Request| {
            match (request.method.as_str(), request.path()) {
                ("GET", _) if lookup_finds => Reply::json(200, &json!({"data": {"id": id}})),
                ("GET", _) => Reply::empty(404),
                ("POST", "/v1/customers") => Reply::json(201, &json!({"data": {"id": id}})),
                _ => Reply::json(200, &json!({"data": {"id": "c"}})),
            }
        })
        .await;
        let pipeline = pipeline_with(&stub, 1, true, &[]);
        for _ in 0..2 {
            let reports = pipeline.deliver_all(&[identify("ada")], deadline(10)).await;
            let failure = reports[0].outcome.failure().expect("a malformed answer");
            assert_eq!(failure.status, Some(502), "{failure}");
            assert!(failure.class.is_retryable(), "{failure}");
        }
        assert!(pipeline.customer_cache().expect("on").is_empty());
        let methods: Vec<String> = stub.requests().iter().map(|r| r.method.clone()).collect();
        let expected: &[&str] = if lookup_finds {
            &["GET", "GET"]
        } else {
            &["GET", "GET", "POST", "GET", "GET", "POST"]
        };
        assert_eq!(
            methods, expected,
            "no write to the id; looked up again each time"
        );
    }
}

/// The merge of issues 17 and 18: `deliver_with` (the command line's hooks) keeps the
/// chains and their held rule. The hook hears every event as it ends, a chain's in order,
/// held ones included; a stop then leaves the event a chain was at, and every later one of
/// it, without an outcome, while a chain already held still reports its held events (no
/// request): left unended, `send` would send them again ahead of the failure they wait for.
#[tokio::test]
async fn deliver_with_keeps_chains_held_events_and_stops_between_events() {
    use futures_util::future::BoxFuture;
    use rudder_kustomer::pipeline::Hooks;
    // user-0's step 1 fails (503, after 150 ms) and stops the run from the hook; user-1's
    // step 1 (400 ms) is on the wire when the stop comes.
    let stub = StubServer::start(|request: &Request| {
        let body = request.body_json().unwrap_or_default();
        let user = body["identity"]["externalId"].as_str().unwrap_or("");
        let step = body["event"]["meta"]["step"].as_u64();
        match (user, step) {
            ("user-0", Some(1)) => Reply::json(503, &json!({"errors": [{"status": 503}]}))
                .with_delay(Duration::from_millis(150)),
            ("user-1", Some(1)) => Reply::json(201, &json!({"data": {"id": "evt"}}))
                .with_delay(Duration::from_millis(400)),
            _ => Reply::json(201, &json!({"data": {"id": "evt"}})),
        }
    })
    .await;
    let pipeline = pipeline(&stub, 1, false);
    // Users 0 and 1, four steps each, interleaved; users 2..=9 (one event each) come after:
    // with 8 workers the chains of users 0 and 1 go first (the longest).
    let mut events: Vec<Value> = (0..4)
        .flat_map(|step| (0..2).map(move |user| track(user, step)))
        .collect();
    events.extend((2..10).map(|user| track(user, 0)));
    let heard = Mutex::new(Vec::<(usize, bool)>::new());
    let on_report = |index: usize, report: &Report| -> BoxFuture<'_, ()> {
        heard
            .lock()
            .unwrap()
            .push((index, report.outcome.failure().is_some()));
        if report
            .outcome
            .failure()
            .is_some_and(|f| f.status == Some(503))
        {
            pipeline.stop();
        }
        Box::pin(async {})
    };
    let hooks = Hooks {
        deadline: deadline(30),
        on_report: Some(&on_report),
    };
    let reports = pipeline.deliver_with(&events, &hooks).await;
    let index = |user: usize, step: usize| {
        events
            .iter()
            .position(|e| e["messageId"] == format!("m-{user}-{step}"))
            .expect("the event")
    };
    // user-0: step 0 delivered, step 1 failed (and stopped the run), steps 2 and 3 held.
    assert!(reports[index(0, 0)]
        .as_ref()
        .unwrap()
        .outcome
        .failure()
        .is_none());
    let failed = reports[index(0, 1)].as_ref().expect("ended");
    assert_eq!(failed.outcome.failure().unwrap().status, Some(503));
    for step in [2, 3] {
        let held = reports[index(0, step)]
            .as_ref()
            .expect("held, not left unended");
        let failure = held.outcome.failure().expect("held");
        assert_eq!(failure.message, rudder_kustomer::outcome::HELD_BEHIND);
        assert_eq!(held.attempts, 0);
    }
    // user-1: step 1 was on the wire at the stop and finished; nothing after it started.
    assert!(reports[index(1, 0)]
        .as_ref()
        .unwrap()
        .outcome
        .failure()
        .is_none());
    assert!(reports[index(1, 1)]
        .as_ref()
        .unwrap()
        .outcome
        .failure()
        .is_none());
    for step in [2, 3] {
        assert!(
            reports[index(1, step)].is_none(),
            "user-1 step {step} started after the stop"
        );
    }
    // The hook heard every ended event once, each chain in order.
    let heard = heard.into_inner().unwrap();
    let ended: Vec<usize> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, report)| report.as_ref().map(|_| i))
        .collect();
    let mut heard_indices: Vec<usize> = heard.iter().map(|(i, _)| *i).collect();
    for user in 0..2 {
        let chain: Vec<usize> = heard_indices
            .iter()
            .copied()
            .filter(|&i| events[i]["userId"] == format!("user-{user}"))
            .collect();
        let mut sorted = chain.clone();
        sorted.sort_unstable();
        assert_eq!(chain, sorted, "user-{user}'s events heard out of order");
    }
    heard_indices.sort_unstable();
    assert_eq!(heard_indices, ended);
    // No request for an event without an outcome, none after user-0's failure.
    let sent: Vec<(String, u64)> = stub
        .requests()
        .iter()
        .filter_map(|r| r.body_json())
        .map(|b| {
            let user = b["identity"]["externalId"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (user, b["event"]["meta"]["step"].as_u64().unwrap_or(99))
        })
        .collect();
    for (i, report) in reports.iter().enumerate() {
        if report.is_none() {
            let user = events[i]["userId"].as_str().unwrap().to_string();
            let step = events[i]["properties"]["step"].as_u64().unwrap();
            assert!(
                !sent.contains(&(user.clone(), step)),
                "{user} step {step} was sent yet has no outcome"
            );
        }
    }
    assert!(!sent
        .iter()
        .any(|(user, step)| user == "user-0" && *step >= 2));

    // deliver_all, for the doors, is unchanged: every event ends (a stopped pipeline's
    // unended events as a retryable not-delivered).
    let reports = pipeline.deliver_all(&events[..2], deadline(5)).await;
    assert!(reports
        .iter()
        .all(|r| r.outcome.failure().is_some_and(|f| f.class.is_retryable())));
}
