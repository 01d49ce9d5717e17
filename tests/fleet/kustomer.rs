//! The stub Kustomer shared by the whole fleet (on tests/support's `StubServer`).
//!
//! - An organisation budget in fixed windows from the stub's start: every answer carries
//!   `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (whole seconds
//!   until the window ends, a form `kustomer::read_rate_limit` reads); past the budget it
//!   answers 429 with `Retry-After` = those seconds. Every answered request, injected 503s
//!   included, uses the budget; 429s do not.
//! - Customers keyed by externalId and e-mail: look-ups find them (200 with a 24-hex id) or
//!   not (404); `POST /v1/customers` always creates one, so two creates for one user are
//!   two customers, as in Kustomer; `PUT /v1/customers/<id>` updates a known one.
//! - `POST /v1/tracking/identityEvent` records the delivery; the chosen tracking events
//!   (user, `meta.fleetSeq`) answer 503 to their first `fault_failures` writes.
//! - Companies (spec 12.3): `GET /v1/companies?externalId=` / `?filter=<name>` answer 200
//!   with a `data` array (empty when none); `POST /v1/companies` creates one, or answers
//!   409 when its externalId exists (Kustomer's conflict, as spec 12.3 point 5 describes
//!   it: two containers creating one company at once); `PUT /v1/companies/<id>` updates a
//!   known one. Customer writes' `company` is recorded. (Customers keep the rule above:
//!   a second create is a second customer, so that such races show as duplicates.)
//!
//! Every 2xx write goes into [`Ledger::writes`] in the order answered: the figures are
//! computed from it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{Reply, Request, StubServer};

#[derive(Debug, Clone)]
pub struct KustomerConfig {
    /// Requests per window for the whole organisation.
    pub budget: u32,
    pub window: Duration,
    /// Tracking events (user, fleetSeq) whose first writes fail with 503.
    pub faults: HashSet<(String, u64)>,
    pub fault_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Create,
    Update,
    Tracking,
}

/// One write Kustomer accepted.
#[derive(Debug, Clone)]
pub struct Write {
    /// Since the stub started.
    pub at: Duration,
    pub kind: WriteKind,
    /// The body's externalId (customer) or identity.externalId (tracking).
    pub user: String,
    /// Customer writes: `custom.versionNum`; tracking: `meta.fleetSeq`.
    pub key: Option<u64>,
    pub email: Option<String>,
    /// The company id a customer write links the customer to.
    pub company: Option<String>,
}

/// One company created: its externalId and name.
#[derive(Debug, Clone)]
pub struct CompanyCreate {
    pub at: Duration,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub id: String,
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Every request received, 429s and injected 503s included.
    pub requests: u64,
    pub throttled: u64,
    pub injected_503: u64,
    pub lookups: u64,
    /// Requests the stub did not expect (unknown path or customer, unreadable body).
    pub unexpected: Vec<String>,
    pub writes: Vec<Write>,
    /// Requests answered (not 429) in each window, by window index.
    pub used_per_window: Vec<u32>,
    /// Of those, look-ups and injected 503s, by window index.
    pub lookups_per_window: Vec<u32>,
    pub injected_per_window: Vec<u32>,
    /// When each window's budget ran out (since the stub started), if it did.
    pub spent_at: Vec<Option<Duration>>,
    /// Every company created, in order; creates answered 409 (the externalId existed).
    pub company_creates: Vec<CompanyCreate>,
    pub company_conflicts: u64,
    companies_by_external: HashMap<String, String>,
    /// Lower-cased name → (id, name as created).
    companies_by_name: HashMap<String, (String, String)>,
    company_ids: HashSet<String>,
    customers_by_external: HashMap<String, String>,
    customers_by_email: HashMap<String, String>,
    customer_ids: HashSet<String>,
    fault_hits: HashMap<(String, u64), u32>,
}

pub struct Kustomer {
    stub: StubServer,
    ledger: Arc<Mutex<Ledger>>,
}

impl Kustomer {
    pub async fn start(config: KustomerConfig) -> Kustomer {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let started = Instant::now();
        let shared = Arc::clone(&ledger);
        let rules = config;
        let stub = StubServer::start(move |request: &Request| {
            let mut ledger = shared.lock().expect("ledger lock");
            ledger.answer(&rules, started.elapsed(), request)
        })
        .await;
        Kustomer { stub, ledger }
    }

    pub fn base_url(&self) -> String {
        self.stub.base_url()
    }

    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().expect("ledger lock").clone()
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Ledger {
    fn answer(&mut self, rules: &KustomerConfig, now: Duration, request: &Request) -> Reply {
        self.requests += 1;
        let window = rules.window.as_secs_f64();
        let index = (now.as_secs_f64() / window) as usize;
        if self.used_per_window.len() <= index {
            self.used_per_window.resize(index + 1, 0);
            self.lookups_per_window.resize(index + 1, 0);
            self.injected_per_window.resize(index + 1, 0);
            self.spent_at.resize(index + 1, None);
        }
        let reset = (window * (index + 1) as f64 - now.as_secs_f64())
            .ceil()
            .max(1.0) as u64;
        let used = &mut self.used_per_window[index];
        let over = *used >= rules.budget;
        if !over {
            *used += 1;
        }
        let remaining = rules.budget.saturating_sub(*used);
        if !over && remaining == 0 {
            self.spent_at[index] = Some(now);
        }
        let with_budget = |reply: Reply| {
            reply
                .with_header("x-ratelimit-limit", &rules.budget.to_string())
                .with_header("x-ratelimit-remaining", &remaining.to_string())
                .with_header("x-ratelimit-reset", &reset.to_string())
        };
        if over {
            self.throttled += 1;
            let body = json!({"errors": [{"status": 429, "title": "Too Many Requests"}]});
            return with_budget(Reply::json(429, &body))
                .with_header("Retry-After", &reset.to_string());
        }
        with_budget(self.route(rules, now, request))
    }

    fn route(&mut self, rules: &KustomerConfig, now: Duration, request: &Request) -> Reply {
        let path = request.path();
        let not_found = || {
            Reply::json(
                404,
                &json!({"errors": [{"status": 404, "title": "Not Found"}]}),
            )
        };
        let found = |id: &str| Reply::json(200, &json!({"data": {"type": "customer", "id": id}}));
        let body = request.body_json().unwrap_or(Value::Null);
        match (request.method.as_str(), path) {
            ("GET", "/v1/companies") => {
                self.lookups += 1;
                if let Some(n) = self.lookups_per_window.last_mut() {
                    *n += 1;
                }
                self.company_lookup(request)
            }
            ("POST", "/v1/companies") => self.create_company(now, &body),
            ("PUT", _) if path.starts_with("/v1/companies/") => {
                let id = path.trim_start_matches("/v1/companies/");
                if self.company_ids.contains(id) {
                    Reply::json(200, &json!({"data": {"type": "company", "id": id}}))
                } else {
                    self.unexpected.push(format!("PUT {}", request.target));
                    not_found()
                }
            }
            ("GET", _) => {
                self.lookups += 1;
                if let Some(n) = self.lookups_per_window.last_mut() {
                    *n += 1;
                }
                let hit = if let Some(email) = path.strip_prefix("/v1/customers/email=") {
                    self.customers_by_email.get(email)
                } else if let Some(id) = path.strip_prefix("/v1/customers/externalId=") {
                    self.customers_by_external.get(id)
                } else {
                    self.unexpected.push(format!("GET {}", request.target));
                    None
                };
                hit.map_or_else(not_found, |id| found(id))
            }
            ("POST", "/v1/customers") => {
                let (Some(user), version) = (text(body.get("externalId")), customer_version(&body))
                else {
                    self.unexpected.push("a create without externalId".into());
                    return Reply::json(400, &json!({"errors": [{"status": 400}]}));
                };
                let email = text(body.pointer("/emails/0/email"));
                let id = format!("5f0c{:020x}", self.customer_ids.len() + 1);
                self.customer_ids.insert(id.clone());
                // Look-ups find the first customer of a user, as a search would.
                self.customers_by_external
                    .entry(user.clone())
                    .or_insert_with(|| id.clone());
                if let Some(email) = &email {
                    self.customers_by_email
                        .entry(email.clone())
                        .or_insert_with(|| id.clone());
                }
                self.writes.push(Write {
                    at: now,
                    kind: WriteKind::Create,
                    user,
                    key: version,
                    email,
                    company: text(body.get("company")),
                });
                Reply::json(201, &json!({"data": {"type": "customer", "id": id}}))
            }
            ("PUT", _) => {
                let id = path.strip_prefix("/v1/customers/").unwrap_or("");
                let user = text(body.get("externalId"));
                match user {
                    Some(user) if self.customer_ids.contains(id) => {
                        let email = text(body.pointer("/emails/0/email"));
                        let key = customer_version(&body);
                        self.writes.push(Write {
                            at: now,
                            kind: WriteKind::Update,
                            user,
                            key,
                            email,
                            company: text(body.get("company")),
                        });
                        found(id)
                    }
                    _ => {
                        self.unexpected.push(format!("PUT {}", request.target));
                        not_found()
                    }
                }
            }
            ("POST", "/v1/tracking/identityEvent") => {
                let user = text(body.pointer("/identity/externalId"));
                let seq = body.pointer("/event/meta/fleetSeq").and_then(Value::as_u64);
                let (Some(user), Some(seq)) = (user, seq) else {
                    self.unexpected
                        .push("a tracking event without user or fleetSeq".into());
                    return Reply::json(400, &json!({"errors": [{"status": 400}]}));
                };
                let key = (user, seq);
                if rules.faults.contains(&key) {
                    let hits = self.fault_hits.entry(key.clone()).or_default();
                    if *hits < rules.fault_failures {
                        *hits += 1;
                        self.injected_503 += 1;
                        if let Some(n) = self.injected_per_window.last_mut() {
                            *n += 1;
                        }
                        return Reply::json(
                            503,
                            &json!({"errors": [{"status": 503, "title": "Service Unavailable"}]}),
                        );
                    }
                }
                let (user, seq) = key;
                self.writes.push(Write {
                    at: now,
                    kind: WriteKind::Tracking,
                    user,
                    key: Some(seq),
                    email: None,
                    company: None,
                });
                Reply::json(
                    201,
                    &json!({"data": {"type": "identityEvent", "id": format!("7e{:022x}", self.writes.len())}}),
                )
            }
            _ => {
                self.unexpected
                    .push(format!("{} {}", request.method, request.target));
                not_found()
            }
        }
    }
}

impl Ledger {
    /// `GET /v1/companies?externalId=<x>` or `?filter=<name>`: 200 with the companies found.
    fn company_lookup(&mut self, request: &Request) -> Reply {
        let query = request.target.split_once('?').map_or("", |(_, q)| q);
        let found: Option<String> = if let Some(id) = query.strip_prefix("externalId=") {
            self.companies_by_external.get(&percent_decode(id)).cloned()
        } else if let Some(name) = query.strip_prefix("filter=") {
            let name = percent_decode(name).trim().to_lowercase();
            self.companies_by_name.get(&name).map(|(id, _)| id.clone())
        } else {
            self.unexpected.push(format!("GET {}", request.target));
            None
        };
        let data: Vec<Value> = found
            .into_iter()
            .map(|id| {
                let create = self.company_creates.iter().find(|c| c.id == id);
                json!({"type": "company", "id": id, "attributes": {
                    "name": create.and_then(|c| c.name.clone()),
                    "externalId": create.and_then(|c| c.external_id.clone()),
                }})
            })
            .collect();
        Reply::json(200, &json!({ "data": data }))
    }

    /// `POST /v1/companies`: a new company (24 hexadecimal characters), or 409 when one
    /// has that externalId already.
    fn create_company(&mut self, now: Duration, body: &Value) -> Reply {
        let external_id = text(body.get("externalId"));
        if external_id
            .as_ref()
            .is_some_and(|id| self.companies_by_external.contains_key(id))
        {
            self.company_conflicts += 1;
            let conflict = json!({"errors": [{"status": 409, "title": "Conflict"}]});
            return Reply::json(409, &conflict);
        }
        let id = format!("c0c0{:020x}", self.company_ids.len() + 1);
        self.company_ids.insert(id.clone());
        let name = text(body.get("name"));
        if let Some(external_id) = &external_id {
            self.companies_by_external
                .entry(external_id.clone())
                .or_insert_with(|| id.clone());
        }
        if let Some(name) = &name {
            self.companies_by_name
                .entry(name.trim().to_lowercase())
                .or_insert_with(|| (id.clone(), name.clone()));
        }
        self.company_creates.push(CompanyCreate {
            at: now,
            external_id,
            name,
            id: id.clone(),
        });
        Reply::json(201, &json!({"data": {"type": "company", "id": id}}))
    }

    /// The company each externalId's look-ups find (its first company).
    pub fn company_of(&self, external_id: &str) -> Option<&str> {
        self.companies_by_external
            .get(external_id)
            .map(String::as_str)
    }
}

/// `%XX` → the byte (the function encodes query values, spec 12.3 point 3).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The identify's version: `custom.versionNum` of the customer body.
fn customer_version(body: &Value) -> Option<u64> {
    body.pointer("/custom/versionNum").and_then(Value::as_u64)
}
