//! Spec section 12 [D26]: companies. Every company field is mapped in this file:
//!
//! - 12.1 the company of an identify ([`identify`]): its externalId (`traits.company.id`)
//!   and name (the `company` of 5.5), taken out of the customer body to be resolved;
//! - 12.2 `group` ([`group`]): the company body from the group's traits, the table
//!   [`company_body`] follows row by row, and the link of the user's customer;
//! - 12.3 how a company is found: its look-ups ([`CompanyLookup`]), which element of an
//!   answer is the company ([`CompanyLookup::pick`]), and the keys the function caches its
//!   id under ([`CompanyLookup::cache_key`], [`CompanyRef::keys`]);
//! - 12.4 Kustomer's limits: the externalId and the name here, the rest by the company
//!   rules of `fit.rs`.
//!
//! Sans-IO like the rest of the mapping: the plan lists the look-ups and writes, the
//! function's pipeline runs them, `rudder-kustomer plan` prints them.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

use super::fit::{self, is_company_name, is_kustomer_id, FixAction, Fixes, SchemaFix};
use super::identify::{self, address_text, missing_value};
use super::{CustomerRef, EventError, Method, Write};
use crate::values::lists::USER_ID;
use crate::values::{encode_path_segment, is_truthy, is_usable, js_trim, text_form, Reader};

/// 12.4: the longest company externalId (and so groupId) Kustomer takes.
pub const MAX_EXTERNAL_ID: usize = 256;
/// 12.2 step 5: a group's customer look-up reads the user's e-mail from `context.traits`
/// only (a group's own `traits` are the company's).
const GROUP_EMAIL: &[&str] = &["context.traits.email"];
/// 12.1: where an identify's company externalId comes from.
const COMPANY_ID: &[&str] = &["traits.company.id", "context.traits.company.id"];
const COMPANIES: &str = "/v1/companies";

/// How to find a company (12.3) and, for an identify, how to make it when it is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanyRef {
    /// Tried in order; the first that finds a company wins.
    pub lookups: Vec<CompanyLookup>,
    /// 12.3 point 5 (identify): the body of `POST /v1/companies` when no look-up finds it
    /// (`{"name": …, "externalId": …}`); `None` without a valid name (12.4), and for a
    /// group, whose own company body creates it.
    pub create: Option<Value>,
    /// 12.3 point 6: every key the company's id is remembered under once it is created
    /// (`externalId=<x>`, `name=<the name trimmed and lower-cased>`); events of one company
    /// are resolved one at a time over these keys.
    pub keys: Vec<String>,
}

/// One company look-up, `GET BASE{path}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyLookup {
    pub by: CompanyLookupBy,
    /// `/v1/companies?externalId=acct_1` or `/v1/companies?filter=Acme%20Ltd`, the value
    /// percent-encoded (12.3 point 3).
    pub path: String,
    /// 12.3 point 6: the cache key of this look-up's answer, `externalId=<x>` or
    /// `name=<the name trimmed and lower-cased>`.
    pub cache_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompanyLookupBy {
    ExternalId,
    /// `?filter=`: found is the first company whose name, trimmed and lower-cased, is this.
    Name(String),
}

impl CompanyLookupBy {
    pub fn as_str(&self) -> &'static str {
        match self {
            CompanyLookupBy::ExternalId => "externalId",
            CompanyLookupBy::Name(_) => "name",
        }
    }
}

impl CompanyLookup {
    /// 12.3 point 4: the company in a 200 answer's `data` array: the first element (by
    /// externalId), or the first whose `attributes.name` matches (by name).
    pub fn pick<'a>(&self, data: &'a [Value]) -> Option<&'a Value> {
        match &self.by {
            CompanyLookupBy::ExternalId => data.first(),
            CompanyLookupBy::Name(name) => data.iter().find(|company| {
                company
                    .pointer("/attributes/name")
                    .and_then(Value::as_str)
                    .is_some_and(|found| normalised_name(found) == *name)
            }),
        }
    }
}

impl CompanyRef {
    /// 12.3 point 5: `POST /v1/companies` for an identify's company nobody found.
    pub fn create_write(&self) -> Option<Write> {
        self.create.as_ref().map(|body| Write {
            method: Method::Post,
            path: COMPANIES.to_string(),
            body: body.clone(),
            fixes: Vec::new(),
        })
    }
}

/// The group plan (12.2): the company by its groupId, written; then the user's customer,
/// linked to it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// By externalId (the groupId) only.
    pub company: CompanyRef,
    /// The company body, fitted (sections 11, 12.4): updated when found, created when not.
    pub company_body: Value,
    /// The user's customer: a kustomerId, or the look-ups of 5.2.
    pub customer: CustomerRef,
    /// A new customer's `externalId`: the user id of 5.1, fitted (`None` when the fit
    /// dropped it).
    pub external_id: Option<Value>,
    /// What sections 11 and 12 changed in the bodies.
    pub fixes: Vec<SchemaFix>,
}

impl GroupPlan {
    /// `POST /v1/companies` (12.2 step 4); a company cannot be created without a valid name.
    pub fn create_company(&self) -> Result<Write, EventError> {
        if self.company_body.get("name").is_none() {
            return Err(missing_value("traits.name"));
        }
        Ok(Write {
            method: Method::Post,
            path: COMPANIES.to_string(),
            body: self.company_body.clone(),
            fixes: Vec::new(),
        })
    }

    /// `PUT /v1/companies/<id>` for a company id already encoded as a path segment.
    pub fn update_company(&self, encoded_company_id: &str) -> Write {
        Write {
            method: Method::Put,
            path: format!("{COMPANIES}/{encoded_company_id}"),
            body: self.company_body.clone(),
            fixes: Vec::new(),
        }
    }

    /// 12.2 step 5, found: `PUT /v1/customers/<id>?replace=false` with `{"company": …}`.
    pub fn update_customer(&self, encoded_customer_id: &str, company_id: &str) -> Write {
        Write {
            method: Method::Put,
            path: format!("/v1/customers/{encoded_customer_id}?replace=false"),
            body: json!({ "company": company_id }),
            fixes: Vec::new(),
        }
    }

    /// 12.2 step 5, not found: `POST /v1/customers` with the user id and the company.
    pub fn create_customer(&self, company_id: &str) -> Write {
        let mut body = Map::new();
        if let Some(id) = &self.external_id {
            body.insert("externalId".to_string(), id.clone());
        }
        body.insert("company".to_string(), Value::String(company_id.to_string()));
        Write {
            method: Method::Post,
            path: "/v1/customers".to_string(),
            body: Value::Object(body),
            fixes: Vec::new(),
        }
    }
}

/// 12.1, section 12 on: the identify's company. A Kustomer id without an externalId stays
/// in the customer body as it is; a company with an externalId or a name leaves the body
/// and comes back as the id the pipeline resolves. Anything else stays for the `company`
/// rule of section 11, which drops it.
pub(super) fn identify(r: &Reader, body: &mut Value, fixes: &mut Fixes) -> Option<CompanyRef> {
    const FIELD: &str = "customer.company";
    let Value::Object(body) = body else {
        return None;
    };
    let mut cid = r.first_usable(COMPANY_ID).and_then(text_only);
    if cid.is_none() && r.first_usable(COMPANY_ID).is_some() {
        fixes.push(FIELD, FixAction::Dropped, "company id not text");
    }
    if cid
        .as_ref()
        .is_some_and(|id| id.chars().count() > MAX_EXTERNAL_ID)
    {
        fixes.push(
            FIELD,
            FixAction::Rewritten,
            "company id longer than 256 characters left out",
        );
        cid = None;
    }
    let cname = body
        .get("company")
        .filter(|company| company.is_string() || company.is_number())
        .map(|company| js_trim(&text_form(company)).to_string())
        .filter(|name| !name.is_empty());
    if let (None, Some(name)) = (&cid, &cname) {
        if is_kustomer_id(name) {
            body.insert("company".to_string(), Value::String(name.clone()));
            return None;
        }
    }
    if cid.is_none() && cname.is_none() {
        return None;
    }
    body.remove("company");
    // A name longer than Kustomer's 255 characters names no company: never looked up.
    let name = cname.filter(|name| name.chars().count() <= 255);
    let mut lookups = Vec::with_capacity(2);
    if let Some(id) = &cid {
        lookups.push(by_external_id(id));
    }
    if let Some(name) = &name {
        lookups.push(by_name(name));
    }
    if lookups.is_empty() {
        fixes.push(
            FIELD,
            FixAction::Dropped,
            "company name longer than 255 characters",
        );
        return None;
    }
    let create = name
        .as_ref()
        .filter(|name| is_company_name(name))
        .map(|name| {
            let mut create = Map::new();
            create.insert("name".to_string(), Value::String(name.clone()));
            if let Some(id) = &cid {
                create.insert("externalId".to_string(), Value::String(id.clone()));
            }
            Value::Object(create)
        });
    let keys = lookups.iter().map(|l| l.cache_key.clone()).collect();
    Some(CompanyRef {
        lookups,
        create,
        keys,
    })
}

/// 12.2: a `group` event (section 12 on).
pub(super) fn group(event: &Value) -> Result<GroupPlan, EventError> {
    let r = Reader::new(event);
    // Step 1: the groupId, text, at most 256 characters.
    let gid = r
        .get("groupId")
        .filter(|id| is_usable(id))
        .and_then(text_only)
        .filter(|id| id.chars().count() <= MAX_EXTERNAL_ID)
        .ok_or_else(|| missing_value("groupId"))?;
    // Step 2: the user.
    let user_id = r
        .first_usable(USER_ID)
        .ok_or_else(|| missing_value("userId"))?;
    // Step 3: the company body, fitted by section 11 and 12.4.
    let mut fixes = Fixes::default();
    let mut company_body = company_body(&r, &gid);
    fit::company(&mut company_body, &mut fixes);
    fit::fit_size(
        &mut company_body,
        &["custom"],
        "company.custom",
        fit::MAX_BODY_BYTES,
        &mut fixes,
    )?;
    // Step 5's new customer: the user id, fitted like the customer's.
    let mut link = json!({ "externalId": user_id });
    let mut fixes = fixes.into_vec();
    fixes.extend(fit::customer(&mut link));
    // Found by the groupId alone; created, it is the company of its name too.
    let mut keys = vec![external_id_key(&gid)];
    if let Some(name) = company_body.get("name").and_then(Value::as_str) {
        keys.push(name_key(name));
    }
    Ok(GroupPlan {
        company: CompanyRef {
            lookups: vec![by_external_id(&gid)],
            create: None,
            keys,
        },
        company_body,
        customer: identify::customer_ref(&r, GROUP_EMAIL),
        external_id: link.get("externalId").cloned(),
        fixes,
    })
}

/// The table of 12.2 step 3, row by row: company field ← the group's trait (first usable
/// value). Fitted afterwards (`fit::company`).
fn company_body(r: &Reader, gid: &str) -> Value {
    let trait_of = |key: &str| r.get(key).filter(|value| is_usable(value));
    let mut body = Map::new();
    body.insert("externalId".into(), Value::String(gid.to_string()));
    if let Some(name) = trait_of("traits.name") {
        body.insert("name".into(), name.clone());
    }
    if let Some(email) = trait_of("traits.email") {
        body.insert("emails".into(), json!([{"type": "work", "email": email}]));
    }
    if let Some(phone) = trait_of("traits.phone") {
        body.insert("phones".into(), json!([{"type": "work", "phone": phone}]));
    }
    let website = trait_of("traits.website");
    if let Some(url) = website {
        body.insert("urls".into(), json!([{"type": "website", "url": url}]));
    }
    let domain = match trait_of("traits.domain") {
        Some(domain) => Some(domain.clone()),
        None => website
            .and_then(Value::as_str)
            .and_then(website_host)
            .map(Value::String),
    };
    if let Some(domain) = domain {
        body.insert("domains".into(), json!([{ "domain": domain }]));
    }
    if let Some(avatar) = trait_of("traits.avatar") {
        body.insert("avatarUrl".into(), avatar.clone());
    }
    if let Some(employees) = trait_of("traits.employees") {
        body.insert("employeeCount".into(), employees.clone());
    }
    let address = trait_of("traits.address")
        .filter(|address| is_truthy(address))
        .and_then(address_text);
    if let Some(address) = address {
        body.insert(
            "locations".into(),
            json!([{"type": "work", "address": address}]),
        );
    }
    if let Some(tags) = trait_of("traits.tags") {
        body.insert("tags".into(), tags.clone());
    }
    if let Some(custom) = trait_of("traits.customObject") {
        body.insert("custom".into(), custom.clone());
    }
    Value::Object(body)
}

/// The host of a website (`https://www.acme.test:8443/about` → `acme.test`), lower-cased,
/// without a leading `www.`; a website without a scheme is read as starting with its host.
fn website_host(website: &str) -> Option<String> {
    let website = js_trim(website);
    let after_scheme = match website.split_once("://") {
        Some((scheme, rest))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) =>
        {
            rest
        }
        _ => website,
    };
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    };
    let host = host.to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host);
    let valid = !host.is_empty()
        && !host.starts_with('.')
        && !host.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then(|| host.to_string())
}

/// 12.3 point 1: `GET /v1/companies?externalId=<x>`.
fn by_external_id(id: &str) -> CompanyLookup {
    CompanyLookup {
        by: CompanyLookupBy::ExternalId,
        path: format!("{COMPANIES}?externalId={}", query_encode(id)),
        cache_key: external_id_key(id),
    }
}

/// 12.3 point 2: `GET /v1/companies?filter=<n>`.
fn by_name(name: &str) -> CompanyLookup {
    CompanyLookup {
        by: CompanyLookupBy::Name(normalised_name(name)),
        path: format!("{COMPANIES}?filter={}", query_encode(name)),
        cache_key: name_key(name),
    }
}

fn external_id_key(id: &str) -> String {
    format!("externalId={id}")
}

fn name_key(name: &str) -> String {
    format!("name={}", normalised_name(name))
}

/// A name as 12.3 compares it: trimmed and lower-cased.
fn normalised_name(name: &str) -> String {
    js_trim(name).to_lowercase()
}

/// The text rule of 11.1 for ids: a string as it is, a number or boolean as its text form.
fn text_only(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(_) | Value::Bool(_) => Some(text_form(value)),
        _ => None,
    }
}

/// 12.3 point 3: query values keep `A–Z a–z 0–9 - . _ ~`; every other byte is `%XX`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn query_encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// A company id from Kustomer, as the customer body and the update URL take it: only a
/// Kustomer id (24 hexadecimal characters); anything else in an answer is not usable.
pub fn company_id(id: &Value) -> Option<(String, String)> {
    let id = id.as_str().filter(|id| is_kustomer_id(id))?;
    Some((
        id.to_string(),
        encode_path_segment(&Value::String(id.to_string())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MappingFlags;
    use crate::{map_event, LookupBy, Plan};

    fn identify_plan(traits: Value) -> crate::IdentifyPlan {
        let event = json!({"type": "identify", "userId": "u1", "traits": traits});
        match map_event(&event, &MappingFlags::product_defaults()) {
            Ok(Plan::Identify(plan)) => plan,
            other => panic!("identify plan expected, got {other:?}"),
        }
    }

    fn group_plan(event: Value) -> Result<GroupPlan, EventError> {
        match map_event(&event, &MappingFlags::product_defaults())? {
            Plan::Group(plan) => Ok(plan),
            other => panic!("group plan expected, got {other:?}"),
        }
    }

    #[test]
    fn identify_company_by_external_id_then_name() {
        let plan = identify_plan(json!({"company": {"id": "acct 1/2", "name": "  Acme & Co  "}}));
        assert_eq!(plan.body, json!({"externalId": "u1"}));
        let company = plan.company.expect("a company to resolve");
        assert_eq!(
            company.lookups,
            vec![
                CompanyLookup {
                    by: CompanyLookupBy::ExternalId,
                    path: "/v1/companies?externalId=acct%201%2F2".into(),
                    cache_key: "externalId=acct 1/2".into(),
                },
                CompanyLookup {
                    by: CompanyLookupBy::Name("acme & co".into()),
                    path: "/v1/companies?filter=Acme%20%26%20Co".into(),
                    cache_key: "name=acme & co".into(),
                },
            ]
        );
        assert_eq!(
            company.create,
            Some(json!({"name": "Acme & Co", "externalId": "acct 1/2"}))
        );
        assert_eq!(company.keys, ["externalId=acct 1/2", "name=acme & co"]);
        assert!(plan.fixes.is_empty());
    }

    #[test]
    fn identify_company_name_only_number_and_id_only() {
        let company = identify_plan(json!({"company": "Globex"})).company.unwrap();
        assert_eq!(company.lookups.len(), 1);
        assert_eq!(company.keys, ["name=globex"]);
        assert_eq!(company.create, Some(json!({"name": "Globex"})));
        let company = identify_plan(json!({"company": {"name": 1234.5}}))
            .company
            .unwrap();
        assert_eq!(company.lookups[0].path, "/v1/companies?filter=1234.5");
        // An object without name but with an id: by externalId only, nothing to create with.
        let company = identify_plan(json!({"company": {"id": 77}}))
            .company
            .unwrap();
        assert_eq!(
            company.lookups,
            vec![by_external_id("77")],
            "number id as text"
        );
        assert_eq!(company.create, None);
        // A name too short to create: looked up, never created.
        let company = identify_plan(json!({"company": " AB "})).company.unwrap();
        assert_eq!(company.lookups.len(), 1);
        assert_eq!(company.create, None);
    }

    #[test]
    fn identify_kustomer_id_is_kept_without_requests() {
        let plan = identify_plan(json!({"company": "5F3c0ffee0000000000c0a01"}));
        assert_eq!(plan.company, None);
        assert_eq!(plan.body["company"], json!("5F3c0ffee0000000000c0a01"));
        // With an externalId it is a name like any other.
        let plan =
            identify_plan(json!({"company": {"id": "acct_1", "name": "5f3c0ffee0000000000c0a01"}}));
        assert!(plan.company.is_some());
        assert!(plan.body.get("company").is_none());
    }

    #[test]
    fn identify_nothing_to_resolve_is_dropped() {
        for company in [json!({"x": 1}), json!(true), json!("   "), json!([1])] {
            let plan = identify_plan(json!({ "company": company }));
            assert_eq!(plan.company, None, "{company}");
            assert_eq!(plan.body, json!({"externalId": "u1"}), "{company}");
            assert_eq!(plan.fixes[0].field, "customer.company");
        }
        let long = "x".repeat(256);
        let plan = identify_plan(json!({ "company": long }));
        assert_eq!(plan.company, None);
        assert_eq!(
            plan.fixes[0].reason,
            "company name longer than 255 characters"
        );
        // An id over 256 characters is left out; the name still resolves.
        let plan = identify_plan(json!({"company": {"id": "i".repeat(257), "name": "Initech"}}));
        let company = plan.company.unwrap();
        assert_eq!(company.create, Some(json!({"name": "Initech"})));
        assert_eq!(company.keys, ["name=initech"]);
    }

    #[test]
    fn link_off_keeps_only_kustomer_ids_and_refuses_group() {
        let off = MappingFlags {
            link_companies: false,
            ..MappingFlags::product_defaults()
        };
        let event = |company: Value| json!({"type": "identify", "userId": "u", "traits": {"company": company}});
        let Ok(Plan::Identify(plan)) = map_event(&event(json!("Acme")), &off) else {
            panic!()
        };
        assert_eq!(
            (plan.body, plan.company),
            (json!({"externalId": "u"}), None)
        );
        let Ok(Plan::Identify(plan)) = map_event(&event(json!("5f3c0ffee0000000000c0a01")), &off)
        else {
            panic!()
        };
        assert_eq!(plan.body["company"], json!("5f3c0ffee0000000000c0a01"));
        let group = json!({"type": "Group", "userId": "u", "groupId": "g"});
        for flags in [off, MappingFlags::default()] {
            assert_eq!(
                map_event(&group, &flags),
                Err(crate::EventType::not_supported("Group"))
            );
        }
    }

    #[test]
    fn group_company_body_row_by_row() {
        let plan = group_plan(json!({
            "type": "group", "userId": "u7", "groupId": "acct_9",
            "context": {"traits": {"email": "ann@user.test"}},
            "traits": {
                "name": "Initech Ltd", "email": "hello@initech.test", "phone": 5550100,
                "website": "https://WWW.Initech.test:8443/about?x=1", "avatar": "https://cdn.test/i.png",
                "employees": "250", "address": {"street": "1 Main St", "city": "Austin"},
                "tags": ["b2b", 3], "customObject": {"tierStr": "gold", "seatsNum": "12"},
                "industry": "software"
            }
        }))
        .unwrap();
        assert_eq!(
            plan.company_body,
            json!({
                "externalId": "acct_9", "name": "Initech Ltd",
                "emails": [{"type": "work", "email": "hello@initech.test"}],
                "phones": [{"type": "work", "phone": "5550100"}],
                "urls": [{"type": "website", "url": "https://WWW.Initech.test:8443/about?x=1"}],
                "domains": [{"domain": "initech.test"}],
                "avatarUrl": "https://cdn.test/i.png", "employeeCount": 250,
                "locations": [{"type": "work", "address": "1 Main St Austin  "}],
                "tags": ["b2b", "3"], "custom": {"tierStr": "gold", "seatsNum": 12}
            })
        );
        assert_eq!(plan.company.lookups, vec![by_external_id("acct_9")]);
        assert_eq!(plan.company.keys, ["externalId=acct_9", "name=initech ltd"]);
        assert_eq!(plan.external_id, Some(json!("u7")));
        let CustomerRef::Lookups(lookups) = &plan.customer else {
            panic!()
        };
        let by: Vec<LookupBy> = lookups.iter().map(|l| l.by).collect();
        assert_eq!(by, [LookupBy::Email, LookupBy::UserId]);
        assert_eq!(lookups[0].path, "/v1/customers/email=ann@user.test");
        assert_eq!(
            plan.create_company().unwrap().path,
            "/v1/companies".to_string()
        );
        assert_eq!(plan.update_company("5f3c").path, "/v1/companies/5f3c");
        assert_eq!(
            plan.update_customer("c1", "5f3c").body,
            json!({"company": "5f3c"})
        );
        assert_eq!(
            plan.create_customer("5f3c").body,
            json!({"externalId": "u7", "company": "5f3c"})
        );
    }

    #[test]
    fn group_checks_in_order() {
        let missing = |field| Err(missing_value(field));
        assert_eq!(
            group_plan(json!({"type": "group", "groupId": "g"})),
            missing("userId")
        );
        for gid in [
            json!(null),
            json!(""),
            json!({"id": 1}),
            json!("g".repeat(257)),
        ] {
            assert_eq!(
                group_plan(json!({"type": "group", "groupId": gid})),
                missing("groupId")
            );
        }
        let plan = group_plan(json!({"type": "group", "userId": 5, "groupId": 0})).unwrap();
        assert_eq!(plan.company_body, json!({"externalId": "0"}));
        assert_eq!(plan.external_id, Some(json!("5")));
        assert_eq!(plan.create_company(), Err(missing_value("traits.name")));
        let plan = group_plan(
            json!({"type": "group", "userId": "u", "groupId": "g".repeat(256),
            "traits": {"name": "AB"}}),
        )
        .unwrap();
        assert_eq!(plan.company_body.get("name"), None);
        assert_eq!(plan.fixes[0].field, "company.name");
    }

    #[test]
    fn group_lists_keep_ten() {
        let tags: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
        let plan = group_plan(json!({"type": "group", "userId": "u", "groupId": "g",
            "traits": {"name": "Acme", "tags": tags, "domain": "acme.test"}}))
        .unwrap();
        assert_eq!(plan.company_body["tags"].as_array().unwrap().len(), 12);
        assert_eq!(
            plan.company_body["domains"],
            json!([{"domain": "acme.test"}])
        );
    }

    #[test]
    fn hosts_of_websites() {
        for (website, host) in [
            ("https://www.acme.test/x", Some("acme.test")),
            ("http://user@Shop.Acme.test:80", Some("shop.acme.test")),
            ("www.acme.test", Some("acme.test")),
            ("acme.test/about", Some("acme.test")),
            ("https://", None),
            ("  ", None),
            ("https://a b.test", None),
        ] {
            assert_eq!(website_host(website).as_deref(), host, "{website}");
        }
    }

    #[test]
    fn picks_by_name_trimmed_and_lower_cased() {
        let lookup = by_name(" ACME Ltd");
        let data = [
            json!({"id": "a", "attributes": {"name": "Acme Ltd Holdings"}}),
            json!({"id": "b", "attributes": {"name": " ACME LTD "}}),
            json!({"id": "c", "attributes": {"name": "acme ltd"}}),
        ];
        assert_eq!(lookup.pick(&data).map(|c| &c["id"]), Some(&json!("b")));
        assert_eq!(lookup.pick(&data[..1]), None);
        assert_eq!(
            by_external_id("x").pick(&data).map(|c| &c["id"]),
            Some(&json!("a"))
        );
    }

    #[test]
    fn company_ids_from_answers() {
        assert_eq!(
            company_id(&json!("5f3c0ffee0000000000c0a01")),
            Some((
                "5f3c0ffee0000000000c0a01".into(),
                "5f3c0ffee0000000000c0a01".into()
            ))
        );
        for bad in [
            json!("../x"),
            json!(12),
            json!(""),
            json!("5f3c0ffee0000000000c0a0z"),
        ] {
            assert_eq!(company_id(&bad), None, "{bad}");
        }
    }
}
