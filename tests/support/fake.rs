//! A Kustomer stand-in with memory, for the load benchmark (benches/load.rs) and the
//! end-to-end test (tests/e2e.rs): a responder for [`super::StubServer`].
//!
//! - Customers: look-ups by `email=` / `externalId=` find the customers given by
//!   [`FakeKustomer::with_customer`], those created by `POST /v1/customers` (when
//!   [`FakeKustomer::remember_customers`] is on), and a share of all e-mail addresses
//!   ([`FakeKustomer::known_emails_percent`], by a stable hash: customers that existed
//!   before the run). Updates answer 200.
//! - Companies (spec section 12): `POST /v1/companies` creates one (409 when its externalId
//!   is taken), `PUT /v1/companies/<id>` updates it (404 when unknown), `GET
//!   /v1/companies?externalId=` finds it by externalId, `GET /v1/companies?filter=` returns
//!   every company whose name contains the filter, in any case (as a search does: the
//!   caller picks the exact match). Ids are 24 hexadecimal characters, as Kustomer's.
//! - Every customer write's `company` is recorded ([`FakeKustomer::links`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::{Reply, Request};

/// One company the fake knows.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeCompany {
    pub id: String,
    pub name: Option<String>,
    pub external_id: Option<String>,
}

#[derive(Default)]
pub struct FakeKustomer {
    /// `email=<encoded>` / `externalId=<encoded>` → customer id.
    customers: Mutex<HashMap<String, String>>,
    companies: Mutex<Vec<FakeCompany>>,
    /// (customer write target, company id) of every customer write carrying a company.
    links: Mutex<Vec<(String, String)>>,
    next_id: AtomicU64,
    remember_customers: bool,
    known_emails_percent: u64,
}

impl FakeKustomer {
    pub fn new() -> FakeKustomer {
        FakeKustomer::default()
    }

    /// Customers created are found by later look-ups.
    pub fn remember_customers(mut self) -> FakeKustomer {
        self.remember_customers = true;
        self
    }

    /// This share of e-mail addresses belongs to customers that existed before.
    pub fn known_emails_percent(mut self, percent: u64) -> FakeKustomer {
        self.known_emails_percent = percent;
        self
    }

    /// A customer that exists: `key` as the look-up path has it (`externalId=usr_1`).
    pub fn with_customer(self, key: &str, id: &str) -> FakeKustomer {
        self.customers
            .lock()
            .unwrap()
            .insert(key.to_string(), id.to_string());
        self
    }

    /// A company that exists.
    pub fn with_company(self, name: &str, external_id: Option<&str>) -> FakeKustomer {
        let id = self.new_id();
        self.companies.lock().unwrap().push(FakeCompany {
            id,
            name: Some(name.to_string()),
            external_id: external_id.map(str::to_string),
        });
        self
    }

    /// The company is deleted in Kustomer.
    pub fn delete_company(&self, id: &str) {
        self.companies.lock().unwrap().retain(|c| c.id != id);
    }

    pub fn companies(&self) -> Vec<FakeCompany> {
        self.companies.lock().unwrap().clone()
    }

    /// (customer write target, company id) of every customer write that carried a company.
    pub fn links(&self) -> Vec<(String, String)> {
        self.links.lock().unwrap().clone()
    }

    fn new_id(&self) -> String {
        format!("{:024x}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn answer(&self, request: &Request) -> Reply {
        let path = request.path();
        let query = request.target.split_once('?').map_or("", |(_, q)| q);
        match (request.method.as_str(), path) {
            ("GET", "/v1/companies") => self.find_companies(query),
            ("POST", "/v1/companies") => self.create_company(request),
            ("PUT", _) if path.starts_with("/v1/companies/") => {
                self.update_company(request, path.trim_start_matches("/v1/companies/"))
            }
            ("GET", _) => self.find_customer(path.trim_start_matches("/v1/customers/")),
            ("POST", "/v1/customers") => {
                let id = self.new_id();
                if let Some(body) = request.body_json() {
                    self.link(request, &body);
                    if self.remember_customers {
                        let mut customers = self.customers.lock().unwrap();
                        if let Some(email) = body["emails"][0]["email"].as_str() {
                            customers.insert(format!("email={email}"), id.clone());
                        }
                        if let Some(external) = body.get("externalId").and_then(Value::as_str) {
                            customers.insert(format!("externalId={external}"), id.clone());
                        }
                    }
                }
                Reply::json(201, &customer(&id))
            }
            ("PUT", _) if path.starts_with("/v1/customers/") => {
                if let Some(body) = request.body_json() {
                    self.link(request, &body);
                }
                Reply::json(200, &customer(path.trim_start_matches("/v1/customers/")))
            }
            ("POST", "/v1/tracking/identityEvent") => Reply::json(
                201,
                &json!({"data": {"type": "identityEvent", "id": format!("{:024x}", fnv(&request.body_text()))}}),
            ),
            _ => not_found(),
        }
    }

    fn link(&self, request: &Request, body: &Value) {
        if let Some(company) = body.get("company").and_then(Value::as_str) {
            self.links
                .lock()
                .unwrap()
                .push((request.target.clone(), company.to_string()));
        }
    }

    fn find_customer(&self, key: &str) -> Reply {
        let mut customers = self.customers.lock().unwrap();
        let known = customers.get(key).cloned().or_else(|| {
            let existed = key.starts_with("email=") && fnv(key) % 100 < self.known_emails_percent;
            existed.then(|| {
                let id = format!("{:024x}", fnv(key));
                customers.insert(key.to_string(), id.clone());
                id
            })
        });
        match known {
            Some(id) => Reply::json(200, &customer(&id)),
            None => not_found(),
        }
    }

    fn find_companies(&self, query: &str) -> Reply {
        let companies = self.companies.lock().unwrap();
        let found: Vec<Value> = match query.split_once('=') {
            Some(("externalId", value)) => {
                let wanted = percent_decode(value);
                companies
                    .iter()
                    .filter(|c| c.external_id.as_deref() == Some(wanted.as_str()))
                    .map(company)
                    .collect()
            }
            Some(("filter", value)) => {
                let wanted = percent_decode(value).to_lowercase();
                companies
                    .iter()
                    .filter(|c| {
                        c.name
                            .as_deref()
                            .is_some_and(|n| n.to_lowercase().contains(wanted.trim()))
                    })
                    .map(company)
                    .collect()
            }
            _ => {
                return Reply::json(
                    400,
                    &json!({"errors": [{"status": 400, "title": "Bad Request"}]}),
                )
            }
        };
        Reply::json(200, &json!({ "data": found }))
    }

    fn create_company(&self, request: &Request) -> Reply {
        let body = request.body_json().unwrap_or(Value::Null);
        let external_id = body.get("externalId").and_then(Value::as_str);
        let mut companies = self.companies.lock().unwrap();
        if external_id.is_some()
            && companies
                .iter()
                .any(|c| c.external_id.as_deref() == external_id)
        {
            return Reply::json(
                409,
                &json!({"errors": [{"status": 409, "title": "Conflict", "code": "duplicate"}]}),
            );
        }
        let Some(name) = body.get("name").and_then(Value::as_str) else {
            return Reply::json(
                400,
                &json!({"errors": [{"status": 400, "title": "name is required"}]}),
            );
        };
        let created = FakeCompany {
            id: self.new_id(),
            name: Some(name.to_string()),
            external_id: external_id.map(str::to_string),
        };
        let answer = company(&created);
        companies.push(created);
        Reply::json(201, &json!({ "data": answer }))
    }

    fn update_company(&self, request: &Request, id: &str) -> Reply {
        let body = request.body_json().unwrap_or(Value::Null);
        let mut companies = self.companies.lock().unwrap();
        let Some(found) = companies.iter_mut().find(|c| c.id == id) else {
            return not_found();
        };
        if let Some(name) = body.get("name").and_then(Value::as_str) {
            found.name = Some(name.to_string());
        }
        Reply::json(200, &json!({ "data": company(found) }))
    }
}

fn company(company: &FakeCompany) -> Value {
    json!({"type": "company", "id": company.id,
           "attributes": {"name": company.name, "externalId": company.external_id}})
}

fn customer(id: &str) -> Value {
    json!({"data": {"type": "customer", "id": id, "attributes": {"displayName": "Fake Customer"}}})
}

fn not_found() -> Reply {
    Reply::json(
        404,
        &json!({"errors": [{"status": 404, "code": "not_found", "title": "Not Found"}]}),
    )
}

/// `%XX` back to bytes (the query values of spec 12.3 point 3).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// FNV-1a: a stable hash (std's is randomised per process).
pub fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
