//! Companies (spec section 12) through the Lambda's pipeline, with the product's default
//! settings, against the stand-in Kustomer with memory (`tests/support/fake.rs`): the
//! company-id cache and its single flight, a stale cached company, the metrics and the
//! outcome log line.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rudder_kustomer::outcome::{CompanyAction, NotLinked, Outcome, Report};
use rudder_kustomer::pipeline::Pipeline;
use rudder_kustomer::settings::lambda::{self, LambdaSettings};
use rudder_kustomer::telemetry::{emf_documents, log_outcome};
use serde_json::{json, Value};
use support::fake::FakeKustomer;
use support::{is_company_path, Reply, Request, StubServer};

/// The function's pipeline with its default mapping flags (fit and companies on).
fn pipeline(stub: &StubServer, cache: bool) -> Pipeline {
    let settings: HashMap<&str, String> = HashMap::from([
        (lambda::LOCAL_API_KEY, "companies-test-key".to_string()),
        (lambda::BASE_ENDPOINT, stub.base_url()),
        (lambda::MAX_IN_FLIGHT, "8".to_string()),
        (lambda::RETRY_MAX_ATTEMPTS, "2".to_string()),
        (
            lambda::CUSTOMER_CACHE_TTL_SECONDS,
            if cache { "300" } else { "0" }.to_string(),
        ),
    ]);
    let settings = LambdaSettings::from_lookup(|name| settings.get(name).cloned())
        .expect("the test's settings are valid");
    Pipeline::new(&settings).expect("client")
}

async fn fake_stub(fake: FakeKustomer) -> (Arc<FakeKustomer>, StubServer) {
    let fake = Arc::new(fake);
    let answers = Arc::clone(&fake);
    let stub = StubServer::start(move |request: &Request| answers.answer(request)).await;
    (fake, stub)
}

fn identify(user: &str, company: Value) -> Value {
    json!({"type": "identify", "userId": user, "messageId": format!("m-{user}"),
           "traits": {"company": company}})
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30)
}

fn company_requests(stub: &StubServer, method: &str) -> Vec<String> {
    stub.requests()
        .into_iter()
        .filter(|r| r.method == method && is_company_path(r.path()))
        .map(|r| r.target)
        .collect()
}

fn all_delivered(reports: &[Report]) {
    for report in reports {
        assert!(
            matches!(report.outcome, Outcome::Delivered(_)),
            "{:?}",
            report.outcome
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_one_new_company_resolve_it_once() {
    let (fake, stub) = fake_stub(FakeKustomer::new()).await;
    let pipeline = pipeline(&stub, true);
    // Twelve users of one company in one batch, eight at a time: the first looks it up and
    // creates it, the others wait for it and find it in the cache.
    let events: Vec<Value> = (0..12)
        .map(|i| {
            identify(
                &format!("u{i}"),
                json!({"id": "acct_7", "name": "Acme Widgets"}),
            )
        })
        .collect();
    let reports = pipeline.deliver_all(&events, deadline()).await;
    all_delivered(&reports);
    assert_eq!(
        company_requests(&stub, "GET"),
        [
            "/v1/companies?externalId=acct_7",
            "/v1/companies?filter=Acme%20Widgets"
        ]
    );
    assert_eq!(company_requests(&stub, "POST"), ["/v1/companies"]);
    let companies = fake.companies();
    assert_eq!(companies.len(), 1);
    let links = fake.links();
    assert_eq!(links.len(), 12);
    assert!(links.iter().all(|(_, company)| *company == companies[0].id));
    let created = reports
        .iter()
        .filter(|r| r.company == Some(CompanyAction::Created))
        .count();
    let found = reports
        .iter()
        .filter(|r| r.company == Some(CompanyAction::Found))
        .count();
    assert_eq!((created, found), (1, 11));
    let counts = pipeline.metrics().take();
    assert_eq!(counts.companies.get("created"), Some(&1));
    assert_eq!(counts.companies.get("found"), Some(&11));
    assert_eq!(counts.customers_linked, 12);
    // The first event asked the cache for the externalId and then for the name (its two
    // look-ups); the others found the externalId.
    assert_eq!(
        (counts.company_cache_hits, counts.company_cache_misses),
        (11, 2)
    );
    // The next batch: no company request at all.
    let before = stub.requests().len();
    let reports = pipeline
        .deliver_all(
            &[identify(
                "u99",
                json!({"id": "acct_7", "name": "Acme Widgets"}),
            )],
            deadline(),
        )
        .await;
    all_delivered(&reports);
    assert!(stub.requests()[before..]
        .iter()
        .all(|r| !is_company_path(r.path())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_named_with_and_without_its_id_is_created_once() {
    let (fake, stub) = fake_stub(FakeKustomer::new()).await;
    let pipeline = pipeline(&stub, true);
    // At once: users naming the new company alone, with its id, and its group call.
    let mut events = Vec::new();
    for i in 0..4 {
        events.push(identify(&format!("n{i}"), json!("Umbrella Corp")));
        events.push(identify(
            &format!("i{i}"),
            json!({"id": "acct_u", "name": "Umbrella Corp"}),
        ));
    }
    events.push(json!({"type": "group", "userId": "g0", "groupId": "acct_u",
                       "traits": {"name": "Umbrella Corp"}}));
    all_delivered(&pipeline.deliver_all(&events, deadline()).await);
    let companies = fake.companies();
    assert_eq!(companies.len(), 1, "{companies:?}");
    assert!(fake
        .links()
        .iter()
        .all(|(_, company)| *company == companies[0].id));
    // Each look-up at most once.
    let lookups = company_requests(&stub, "GET");
    let distinct: std::collections::BTreeSet<&String> = lookups.iter().collect();
    assert_eq!(distinct.len(), lookups.len(), "{lookups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_every_event_looks_its_company_up() {
    let (fake, stub) = fake_stub(FakeKustomer::new().with_company("Acme Widgets", None)).await;
    let pipeline = pipeline(&stub, false);
    let events: Vec<Value> = (0..3)
        .map(|i| identify(&format!("u{i}"), json!(" acme widgets ")))
        .collect();
    all_delivered(&pipeline.deliver_all(&events, deadline()).await);
    assert_eq!(company_requests(&stub, "GET").len(), 3);
    assert!(company_requests(&stub, "POST").is_empty());
    assert_eq!(fake.links().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_updates_and_a_stale_cached_company_is_looked_up_again() {
    let (fake, stub) = fake_stub(FakeKustomer::new()).await;
    let pipeline = pipeline(&stub, true);
    let group = |user: &str| {
        json!({"type": "group", "userId": user, "groupId": "acct_9",
               "traits": {"name": "Initech", "employees": "40"}})
    };
    let reports = pipeline.deliver_all(&[group("a")], deadline()).await;
    all_delivered(&reports);
    assert_eq!(reports[0].company, Some(CompanyAction::Created));
    let first = fake.companies()[0].id.clone();
    // A second group of the company: from the cache, updated.
    let reports = pipeline.deliver_all(&[group("b")], deadline()).await;
    all_delivered(&reports);
    assert_eq!(reports[0].company, Some(CompanyAction::Updated));
    assert_eq!(
        company_requests(&stub, "GET").len(),
        1,
        "one look-up, then the cache"
    );
    // The company is deleted in Kustomer: the cached id's update answers 404, so it is
    // forgotten, looked up (not found) and created again; the customer links the new one.
    fake.delete_company(&first);
    let reports = pipeline.deliver_all(&[group("c")], deadline()).await;
    all_delivered(&reports);
    assert_eq!(reports[0].company, Some(CompanyAction::Created));
    assert_eq!(
        company_requests(&stub, "PUT"),
        [
            format!("/v1/companies/{first}"),
            format!("/v1/companies/{first}")
        ]
    );
    assert_eq!(company_requests(&stub, "GET").len(), 2);
    let second = fake.companies()[0].id.clone();
    assert_ne!(first, second);
    assert_eq!(fake.links().last().map(|(_, id)| id.clone()), Some(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_that_cannot_be_linked_is_reported_and_the_customer_written() {
    // Company look-ups refused (a key without company rights): 403.
    let fake = Arc::new(FakeKustomer::new());
    let answers = Arc::clone(&fake);
    let stub = StubServer::start(move |request: &Request| {
        if is_company_path(request.path()) {
            Reply::json(
                403,
                &json!({"errors": [{"status": 403, "title": "Forbidden"}]}),
            )
        } else {
            answers.answer(request)
        }
    })
    .await;
    let pipeline = pipeline(&stub, true);
    let reports = pipeline
        .deliver_all(&[identify("u1", json!("Secret Partners Ltd"))], deadline())
        .await;
    all_delivered(&reports);
    assert_eq!(
        reports[0].company,
        Some(CompanyAction::NotLinked(NotLinked::LookupRefused))
    );
    let customer_write = stub
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("the customer is written");
    assert_eq!(
        customer_write.body_json(),
        Some(json!({"externalId": "u1"}))
    );
    let counts = pipeline.metrics().take();
    assert_eq!(counts.companies_not_linked.get("lookup_refused"), Some(&1));
    let documents = emf_documents(&counts, "ns", "fn");
    assert!(documents
        .iter()
        .any(|d| d["Reason"] == "lookup_refused" && d["CompaniesNotLinked"] == 1));
    // The outcome line names the action and the reason, never the company.
    let logs = support::capture_logs(tracing::Level::INFO);
    log_outcome("req-1", Some("m-u1"), "direct", &reports[0]);
    let text = logs.text();
    assert!(
        text.contains("not_linked") && text.contains("lookup_refused"),
        "{text}"
    );
    logs.assert_absent(&["Secret Partners", "Secret%20Partners"]);
}
