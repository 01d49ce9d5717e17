//! Spec section 11 [D25]: fits the write bodies to Kustomer's published contract
//! (`kustomer-contract.json`): keeps what is valid, rewrites what has one obvious valid
//! form, drops the rest field by field, and reports each change without its value.
//!
//! The rules are read here, top to bottom: [`customer_rule`], [`company_rule`] and
//! [`identity_event_rule`] name the rule of every body field, [`CUSTOMER_LISTS`] and
//! [`COMPANY_LISTS`] are the table of 11.3 (with 12.4's limit of 10 for companies), and the
//! functions below them are the rules of 11.1, 11.2, 11.5 (custom attributes by suffix)
//! and 11.6 (the 100 KB body limit).
//!
//! Fitted in place on the `serde_json::Value` rather than through typed structs: structs
//! would re-order keys (so a valid body would no longer pass through byte-identical) and
//! lose the unknown customer keys the contract allows.

use serde::Serialize;
use serde_json::{Map, Value};

use super::identify::missing_value;
use super::EventError;
use crate::dates::{format_unix_ms, in_range, parse_date_time, yyyymmdd};
use crate::values::{is_js_whitespace, js_trim, push_js_json, text_form};

/// One change the stage made to a body: which field, what happened, why. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaFix {
    /// The body field: `customer.gender`, `event.sessionId`, `customer.phones.type`
    /// (a key inside the elements of a list), `company.name`, `event.meta` and
    /// `customer.custom`/`company.custom` (any key of meta or custom: those keys are the
    /// user's and unbounded, so they never name a field in logs or metrics).
    pub field: &'static str,
    pub action: FixAction,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FixAction {
    /// The field is still there, in another form (or, for a list, with fewer elements).
    Rewritten,
    /// The field was removed.
    Dropped,
}

/// The fixes of one body, each (field, action, reason) at most once.
#[derive(Debug, Default)]
pub(crate) struct Fixes(Vec<SchemaFix>);

impl Fixes {
    pub(crate) fn into_vec(self) -> Vec<SchemaFix> {
        self.0
    }

    pub(crate) fn push(&mut self, field: &'static str, action: FixAction, reason: &'static str) {
        let known = self
            .0
            .iter()
            .any(|fix| fix.field == field && fix.action == action && fix.reason == reason);
        if !known {
            self.0.push(SchemaFix {
                field,
                action,
                reason,
            });
        }
    }
}

/// What a rule did to a value.
enum Verdict {
    /// Valid as it was: untouched.
    Keep,
    /// Replaced in place by its valid form.
    Rewritten(&'static str),
    /// No valid form: the key goes.
    Dropped(&'static str),
}

/// The rule of one field (11.1, 12.4).
#[derive(Clone, Copy)]
enum Rule {
    Text,
    EventName,
    DateTime,
    Gender,
    Tags,
    List(&'static ObjectList),
    Sentiment,
    Rev,
    Custom,
    Meta,
    /// Customer `company`: a Kustomer company id (24 hexadecimal characters).
    CompanyId,
    /// Company `name`: text, 3–255 characters after trimming.
    CompanyName,
    /// Company `employeeCount`: a number, or a string of digits.
    Count,
}

/// 11.1: the customer body (create and update). Keys without a rule are not produced by
/// the mapping; the contract allows other customer keys, so they would be kept.
fn customer_rule(key: &str) -> Option<(&'static str, Rule)> {
    Some(match key {
        "name" => ("customer.name", Rule::Text),
        // With section 12 on, a company to resolve has left the body before this stage.
        "company" => ("customer.company", Rule::CompanyId),
        "externalId" => ("customer.externalId", Rule::Text),
        "username" => ("customer.username", Rule::Text),
        "avatarUrl" => ("customer.avatarUrl", Rule::Text),
        "locale" => ("customer.locale", Rule::Text),
        "timeZone" => ("customer.timeZone", Rule::Text),
        "defaultLang" => ("customer.defaultLang", Rule::Text),
        "signedUpAt" => ("customer.signedUpAt", Rule::DateTime),
        "lastActivityAt" => ("customer.lastActivityAt", Rule::DateTime),
        "lastCustomerActivityAt" => ("customer.lastCustomerActivityAt", Rule::DateTime),
        "lastSeenAt" => ("customer.lastSeenAt", Rule::DateTime),
        "birthdayAt" => ("customer.birthdayAt", Rule::DateTime),
        "importedAt" => ("customer.importedAt", Rule::DateTime),
        "gender" => ("customer.gender", Rule::Gender),
        "tags" => ("customer.tags", Rule::Tags),
        "sentiment" => ("customer.sentiment", Rule::Sentiment),
        "rev" => ("customer.rev", Rule::Rev),
        "custom" => ("customer.custom", Rule::Custom),
        // emails, phones, ...: the lists of the 11.3 table.
        _ => {
            let list = CUSTOMER_LISTS.into_iter().find(|list| list.name == key)?;
            (list.field, Rule::List(list))
        }
    })
}

/// 11.1 and 12.4: the company body (create and update, spec 12.2).
fn company_rule(key: &str) -> Option<(&'static str, Rule)> {
    Some(match key {
        "name" => ("company.name", Rule::CompanyName),
        "externalId" => ("company.externalId", Rule::Text),
        "avatarUrl" => ("company.avatarUrl", Rule::Text),
        "defaultLang" => ("company.defaultLang", Rule::Text),
        "employeeCount" => ("company.employeeCount", Rule::Count),
        "importedAt" => ("company.importedAt", Rule::DateTime),
        "tags" => ("company.tags", Rule::Tags),
        "rev" => ("company.rev", Rule::Rev),
        "custom" => ("company.custom", Rule::Custom),
        _ => {
            let list = COMPANY_LISTS.into_iter().find(|list| list.name == key)?;
            (list.field, Rule::List(list))
        }
    })
}

/// 11.1: the tracking body, `{"identity": {...}, "event": {...}}`.
fn identity_event_rule(part: &str, key: &str) -> Option<(&'static str, Rule)> {
    Some(match (part, key) {
        ("identity", "externalId") => ("identity.externalId", Rule::Text),
        ("identity", "email") => ("identity.email", Rule::Text),
        ("event", "name") => ("event.name", Rule::EventName),
        ("event", "sessionId") => ("event.sessionId", Rule::Text),
        ("event", "trackingId") => ("event.trackingId", Rule::Text),
        ("event", "meta") => ("event.meta", Rule::Meta),
        _ => return None,
    })
}

/// One list of 11.3: the keys an element may keep, each with its rule.
struct ObjectList {
    /// The body key.
    name: &'static str,
    /// `customer.<name>` or `company.<name>`, as reported.
    field: &'static str,
    keys: &'static [ListKey],
    /// 12.4: a company's lists keep at most 10 elements.
    max: Option<usize>,
}

struct ListKey {
    name: &'static str,
    /// `customer.<list>.<key>`, as reported.
    field: &'static str,
    kind: KeyKind,
    required: bool,
}

#[derive(Clone, Copy)]
enum KeyKind {
    /// The text rule of 11.1.
    Text,
    /// The text rule, `null` also kept (locations).
    TextOrNull,
    /// A number or `null` (locations), nothing converted.
    NumberOrNull,
    Boolean,
    /// One of these, matched after trimming and lower-casing; the reason names them.
    Enum(&'static [&'static str], &'static str),
}

const fn key(name: &'static str, field: &'static str, kind: KeyKind) -> ListKey {
    ListKey {
        name,
        field,
        kind,
        required: false,
    }
}

const fn required(name: &'static str, field: &'static str, kind: KeyKind) -> ListKey {
    ListKey {
        name,
        field,
        kind,
        required: true,
    }
}

use KeyKind::{Boolean, Enum, NumberOrNull, Text, TextOrNull};

const HOME_WORK_OTHER: KeyKind = Enum(&["home", "work", "other"], "not home/work/other");

/// 12.4: the most elements a company's list keeps.
pub(crate) const MAX_COMPANY_LIST: usize = 10;

/// The table of 11.3, once: each row gives a customer list and a company list with the
/// same keys (`customer.emails.type`, `company.emails.type`, ...).
macro_rules! object_lists {
    ($( $customer:ident $(, $company:ident)?, $name:literal: $keys:tt; )*) => {
        $(
            const $customer: ObjectList = object_list!("customer", $name, None, $keys);
            $(
                const $company: ObjectList =
                    object_list!("company", $name, Some(MAX_COMPANY_LIST), $keys);
            )?
        )*
    };
}

/// One list of [`object_lists!`], its fields named under `$prefix`.
macro_rules! object_list {
    ($prefix:literal, $name:literal, $max:expr, [ $( $make:ident($key:literal, $kind:expr) ),* $(,)? ]) => {
        ObjectList {
            name: $name,
            field: concat!($prefix, ".", $name),
            keys: &[ $( $make($key, concat!($prefix, ".", $name, ".", $key), $kind) ),* ],
            max: $max,
        }
    };
}

object_lists! {
    EMAILS, COMPANY_EMAILS, "emails": [
        required("email", Text),
        key("type", HOME_WORK_OTHER),
        key("verified", Boolean),
    ];
    PHONES, COMPANY_PHONES, "phones": [
        required("phone", Text),
        key("type", Enum(&["mobile", "home", "work", "fax", "other"], "not mobile/home/work/fax/other")),
        key("verified", Boolean),
    ];
    WHATSAPPS, COMPANY_WHATSAPPS, "whatsapps": [
        required("phone", Text),
        key("type", Enum(&["mobile"], "not mobile")),
        key("verified", Boolean),
    ];
    URLS, COMPANY_URLS, "urls": [
        required("url", Text),
        key("type", Enum(&["website", "blog", "other"], "not website/blog/other")),
    ];
    SOCIALS, COMPANY_SOCIALS, "socials": [
        required("type", Enum(
            &["twitter", "facebook", "instagram", "linkedin", "pinterest"],
            "not twitter/facebook/instagram/linkedin/pinterest",
        )),
        required("username", Text),
        key("userid", Text),
        key("url", Text),
        key("verified", Boolean),
    ];
    FACEBOOK_IDS, "facebookIds": [
        required("pageId", Text),
        required("userId", Text),
        key("name", Text),
    ];
    INSTAGRAM_IDS, "instagramIds": [
        required("pageId", Text),
        required("threadId", Text),
        required("username", Text),
        key("instagramId", Text),
    ];
    LOCATIONS, COMPANY_LOCATIONS, "locations": [
        key("type", HOME_WORK_OTHER),
        key("name", TextOrNull),
        key("address", TextOrNull),
        key("address2", TextOrNull),
        key("address3", TextOrNull),
        key("countryCode", TextOrNull),
        key("countryName", TextOrNull),
        key("regionCode", TextOrNull),
        key("regionName", TextOrNull),
        key("cityName", TextOrNull),
        key("zipCode", TextOrNull),
        key("areaCode", TextOrNull),
        key("latitude", NumberOrNull),
        key("longitude", NumberOrNull),
    ];
}

/// A company's `domains` (spec 12.2; the contract has no customer domains).
const COMPANY_DOMAINS: ObjectList = ObjectList {
    name: "domains",
    field: "company.domains",
    keys: &[required("domain", "company.domains.domain", Text)],
    max: Some(MAX_COMPANY_LIST),
};

/// 11.3, the customer's object lists.
const CUSTOMER_LISTS: [&ObjectList; 8] = [
    &EMAILS,
    &PHONES,
    &WHATSAPPS,
    &URLS,
    &SOCIALS,
    &FACEBOOK_IDS,
    &INSTAGRAM_IDS,
    &LOCATIONS,
];

/// The company's object lists (the contract has no facebookIds/instagramIds there).
const COMPANY_LISTS: [&ObjectList; 7] = [
    &COMPANY_EMAILS,
    &COMPANY_PHONES,
    &COMPANY_WHATSAPPS,
    &COMPANY_URLS,
    &COMPANY_SOCIALS,
    &COMPANY_DOMAINS,
    &COMPANY_LOCATIONS,
];

/// Fits a customer body (spec 5.5 output) in place; returns what changed.
pub(super) fn customer(body: &mut Value) -> Vec<SchemaFix> {
    let mut fixes = Fixes::default();
    if let Value::Object(map) = body {
        fit_object(map, &mut fixes, customer_rule);
    }
    fixes.0
}

/// Fits a company body (spec 12.2 output) in place, 12.4's limits included.
pub(super) fn company(body: &mut Value, fixes: &mut Fixes) {
    if let Value::Object(map) = body {
        fit_object(map, fixes, company_rule);
    }
}

/// Fits a tracking body (spec 6 output) in place; returns what changed, or the 11.4 error
/// when the identity is left with neither `externalId` nor `email`.
pub(super) fn identity_event(body: &mut Value) -> Result<Vec<SchemaFix>, EventError> {
    let mut fixes = Fixes::default();
    let mut identified = false;
    if let Value::Object(body) = body {
        for (part, value) in body.iter_mut() {
            let Value::Object(map) = value else { continue };
            fit_object(map, &mut fixes, |key| identity_event_rule(part, key));
            if part == "identity" {
                identified = map.contains_key("externalId") || map.contains_key("email");
            }
        }
    }
    if !identified {
        return Err(missing_value("userId"));
    }
    Ok(fixes.0)
}

/// Applies the rule of each key that has one; drops keys in place so that the others
/// keep their order.
fn fit_object(
    map: &mut Map<String, Value>,
    fixes: &mut Fixes,
    rule_of: impl Fn(&str) -> Option<(&'static str, Rule)>,
) {
    map.retain(|key, value| {
        let Some((field, rule)) = rule_of(key) else {
            return true;
        };
        let verdict = match rule {
            Rule::Text => text(value),
            Rule::EventName => event_name(value),
            Rule::DateTime => date_time(value),
            Rule::Gender => gender(value),
            Rule::Tags => tags(value, field, fixes),
            Rule::List(list) => object_list(value, list, fixes),
            Rule::Sentiment => sentiment(value),
            Rule::Rev => match value {
                Value::Number(_) => Verdict::Keep,
                _ => Verdict::Dropped("not a number"),
            },
            Rule::Custom => custom(value, field, fixes),
            Rule::Meta => meta(value, field, fixes),
            Rule::CompanyId => match value {
                Value::String(id) if is_kustomer_id(id) => Verdict::Keep,
                _ => Verdict::Dropped("not a Kustomer company id"),
            },
            Rule::CompanyName => company_name(value),
            Rule::Count => count(value),
        };
        record(fixes, field, verdict)
    });
}

/// Reports a verdict; whether the key stays.
fn record(fixes: &mut Fixes, field: &'static str, verdict: Verdict) -> bool {
    match verdict {
        Verdict::Keep => true,
        Verdict::Rewritten(reason) => {
            fixes.push(field, FixAction::Rewritten, reason);
            true
        }
        Verdict::Dropped(reason) => {
            fixes.push(field, FixAction::Dropped, reason);
            false
        }
    }
}

/// Text fields: a string is kept; a number or boolean becomes its text form (3.5).
fn text(value: &mut Value) -> Verdict {
    match value {
        Value::String(_) => Verdict::Keep,
        Value::Number(_) => rewrite_as_text(value, "number as text"),
        Value::Bool(_) => rewrite_as_text(value, "boolean as text"),
        _ => Verdict::Dropped("not text"),
    }
}

fn rewrite_as_text(value: &mut Value, reason: &'static str) -> Verdict {
    *value = Value::String(text_form(value));
    Verdict::Rewritten(reason)
}

/// The event name: its text form whatever its type, so the event keeps a name.
fn event_name(value: &mut Value) -> Verdict {
    let reason = match value {
        Value::String(_) => return Verdict::Keep,
        Value::Number(_) => "number as text",
        Value::Bool(_) => "boolean as text",
        Value::Array(_) => "array as text",
        Value::Object(_) => "object as text",
        Value::Null => "null as text",
    };
    rewrite_as_text(value, reason)
}

/// `m`/`male` → `m`, `f`/`female` → `f` (trimmed, any case); anything else goes.
fn gender(value: &mut Value) -> Verdict {
    let Value::String(s) = value else {
        return Verdict::Dropped("not m/f");
    };
    if s == "m" || s == "f" {
        return Verdict::Keep;
    }
    let canonical = match js_trim(s).to_lowercase().as_str() {
        "m" | "male" => "m",
        "f" | "female" => "f",
        _ => return Verdict::Dropped("not m/f"),
    };
    *s = canonical.to_string();
    Verdict::Rewritten("spelled as m/f")
}

/// An array of text: numbers and booleans as text, other elements left out; a string
/// becomes a one-element array.
fn tags(value: &mut Value, field: &'static str, fixes: &mut Fixes) -> Verdict {
    match value {
        Value::Array(items) => {
            if items.iter().all(Value::is_string) {
                return Verdict::Keep;
            }
            items.retain_mut(|item| match item {
                Value::String(_) => true,
                Value::Number(_) | Value::Bool(_) => {
                    *item = Value::String(text_form(item));
                    fixes.push(field, FixAction::Rewritten, "elements as text");
                    true
                }
                _ => {
                    fixes.push(field, FixAction::Rewritten, "elements not text left out");
                    false
                }
            });
            Verdict::Keep
        }
        Value::String(_) => {
            *value = Value::Array(vec![value.take()]);
            Verdict::Rewritten("text as a one-element list")
        }
        _ => Verdict::Dropped("not a list"),
    }
}

/// 11.3: an array of objects with the keys of the list's table, fitted; elements that
/// are not objects or lack a required key are left out; a list left empty goes.
fn object_list(value: &mut Value, list: &ObjectList, fixes: &mut Fixes) -> Verdict {
    let Value::Array(items) = value else {
        return Verdict::Dropped("not a list");
    };
    if items.is_empty() {
        // Sent empty on purpose: an empty list is valid.
        return Verdict::Keep;
    }
    items.retain_mut(|item| {
        let Value::Object(element) = item else {
            fixes.push(
                list.field,
                FixAction::Rewritten,
                "element not an object left out",
            );
            return false;
        };
        element.retain(|name, value| {
            let Some(key) = list.keys.iter().find(|key| key.name == name) else {
                fixes.push(
                    list.field,
                    FixAction::Rewritten,
                    "key not in the contract left out",
                );
                return false;
            };
            let verdict = match key.kind {
                Text => text(value),
                TextOrNull if value.is_null() => Verdict::Keep,
                TextOrNull => text(value),
                NumberOrNull => match value {
                    Value::Number(_) | Value::Null => Verdict::Keep,
                    _ => Verdict::Dropped("not a number"),
                },
                Boolean => match value {
                    Value::Bool(_) => Verdict::Keep,
                    _ => Verdict::Dropped("not a boolean"),
                },
                Enum(allowed, reason) => one_of(value, allowed, reason),
            };
            record(fixes, key.field, verdict)
        });
        let complete = list
            .keys
            .iter()
            .all(|key| !key.required || element.contains_key(key.name));
        if !complete {
            fixes.push(
                list.field,
                FixAction::Rewritten,
                "element missing a required key left out",
            );
        }
        complete
    });
    if items.is_empty() {
        return Verdict::Dropped("every element left out");
    }
    if let Some(max) = list.max.filter(|max| items.len() > *max) {
        items.truncate(max);
        fixes.push(
            list.field,
            FixAction::Rewritten,
            "more than 10 elements: the first 10 kept",
        );
    }
    Verdict::Keep
}

/// An enum value, matched after trimming and lower-casing.
fn one_of(value: &mut Value, allowed: &[&str], reason: &'static str) -> Verdict {
    let Value::String(s) = value else {
        return Verdict::Dropped(reason);
    };
    if allowed.contains(&s.as_str()) {
        return Verdict::Keep;
    }
    let normalised = js_trim(s).to_lowercase();
    match allowed.iter().find(|a| **a == normalised) {
        Some(found) => {
            *s = (*found).to_string();
            Verdict::Rewritten("trimmed and lower-cased")
        }
        None => Verdict::Dropped(reason),
    }
}

/// `{polarity: -1|0|1, confidence: number}`; other keys left out.
fn sentiment(value: &mut Value) -> Verdict {
    const INVALID: &str = "not a polarity -1/0/1 with a numeric confidence";
    let Value::Object(map) = value else {
        return Verdict::Dropped(INVALID);
    };
    let polarity_ok = map
        .get("polarity")
        .and_then(Value::as_f64)
        .is_some_and(|p| p == -1.0 || p == 0.0 || p == 1.0);
    let confidence_ok = map.get("confidence").is_some_and(Value::is_number);
    if !(polarity_ok && confidence_ok) {
        return Verdict::Dropped(INVALID);
    }
    if map.len() == 2 {
        return Verdict::Keep;
    }
    map.retain(|key, _| key == "polarity" || key == "confidence");
    Verdict::Rewritten("keys not in the contract left out")
}

/// Tracking `meta`: numbers and text only. Keys are never renamed, and every change is
/// reported as `event.meta` (the keys are the user's, see [`SchemaFix::field`]).
fn meta(value: &mut Value, field: &'static str, fixes: &mut Fixes) -> Verdict {
    let Value::Object(map) = value else {
        return Verdict::Dropped("not an object");
    };
    map.retain(|_, item| {
        let verdict = match item {
            Value::String(_) | Value::Number(_) => Verdict::Keep,
            Value::Bool(b) => {
                *item = Value::String(if *b { "true" } else { "false" }.to_string());
                Verdict::Rewritten("boolean as text")
            }
            Value::Array(_) | Value::Object(_) => {
                let reason = if item.is_array() {
                    "array as JSON text"
                } else {
                    "object as JSON text"
                };
                let mut json = String::new();
                push_js_json(&mut json, item);
                *item = Value::String(json);
                Verdict::Rewritten(reason)
            }
            Value::Null => Verdict::Dropped("null dropped"),
        };
        record(fixes, field, verdict)
    });
    Verdict::Keep
}

/// A Kustomer object id: 24 hexadecimal characters (the contract's customer `company`).
pub fn is_kustomer_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// 12.4: a company name has 3–255 characters after trimming.
pub(crate) fn is_company_name(text: &str) -> bool {
    (3..=255).contains(&js_trim(text).chars().count())
}

/// Company `name`: the text rule, then 3–255 characters after trimming (12.4).
fn company_name(value: &mut Value) -> Verdict {
    let verdict = text(value);
    match value {
        Value::String(name) if is_company_name(name) => verdict,
        Value::String(_) => Verdict::Dropped("not 3-255 characters"),
        _ => verdict,
    }
}

/// Company `employeeCount`: a number, or a string of digits as that number.
fn count(value: &mut Value) -> Verdict {
    match value {
        Value::Number(_) => Verdict::Keep,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            match plain_number(s) {
                Some(number) => {
                    *value = Value::Number(number);
                    Verdict::Rewritten("digits as a number")
                }
                None => Verdict::Dropped("not a number"),
            }
        }
        _ => Verdict::Dropped("not a number"),
    }
}

/// `-?digits(.digits)?` as a JSON number: an integer when there is no fraction and it fits.
fn plain_number(text: &str) -> Option<serde_json::Number> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    if fraction.is_none() {
        if let Ok(n) = text.parse::<i64>() {
            return Some(n.into());
        }
        if let Ok(n) = text.parse::<u64>() {
            return Some(n.into());
        }
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
}

/// The type of a custom attribute, by its key's suffix (11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suffix {
    Num,
    At,
    Str,
    Bool,
    Url,
}

/// 11.5: the suffix, matched case-sensitively, with at least one character before it.
fn suffix(key: &str) -> Option<Suffix> {
    const SUFFIXES: [(&str, Suffix); 6] = [
        ("Num", Suffix::Num),
        ("At", Suffix::At),
        ("Str", Suffix::Str),
        ("Txt", Suffix::Str),
        ("Bool", Suffix::Bool),
        ("Url", Suffix::Url),
    ];
    SUFFIXES
        .into_iter()
        .find(|(suffix, _)| key.len() > suffix.len() && key.ends_with(suffix))
        .map(|(_, kind)| kind)
}

/// 11.5: `custom`, each key fitted by its suffix; every change reported as the body's
/// `custom` field (the keys are the user's).
fn custom(value: &mut Value, field: &'static str, fixes: &mut Fixes) -> Verdict {
    let Value::Object(map) = value else {
        return Verdict::Dropped("not an object");
    };
    map.retain(|key, item| {
        let Some(kind) = suffix(key) else {
            return true;
        };
        if item.is_null() {
            return true;
        }
        let verdict = match kind {
            Suffix::Num => match item {
                Value::Number(_) => Verdict::Keep,
                Value::String(s) => match plain_number(js_trim(s)) {
                    Some(number) => {
                        *item = Value::Number(number);
                        Verdict::Rewritten("text as a number")
                    }
                    None => Verdict::Dropped("not a number"),
                },
                _ => Verdict::Dropped("not a number"),
            },
            Suffix::At => date_time(item),
            Suffix::Str => match text(item) {
                Verdict::Dropped(reason) => Verdict::Dropped(reason),
                _ if item.as_str().is_some_and(|s| s.chars().count() > 1024) => {
                    Verdict::Dropped("longer than 1,024 characters")
                }
                verdict => verdict,
            },
            Suffix::Bool => match item {
                Value::Bool(_) => Verdict::Keep,
                Value::String(s) if s.eq_ignore_ascii_case("true") => {
                    *item = Value::Bool(true);
                    Verdict::Rewritten("text as a boolean")
                }
                Value::String(s) if s.eq_ignore_ascii_case("false") => {
                    *item = Value::Bool(false);
                    Verdict::Rewritten("text as a boolean")
                }
                _ => Verdict::Dropped("not a boolean"),
            },
            Suffix::Url => match item {
                Value::String(s) if is_http_url(s) => Verdict::Keep,
                _ => Verdict::Dropped("not an http(s) URL"),
            },
        };
        record(fixes, field, verdict)
    });
    Verdict::Keep
}

/// `http://` or `https://` (any case), then at least one character, no whitespace.
fn is_http_url(s: &str) -> bool {
    let rest = [7, 8].into_iter().find_map(|len| {
        let scheme = s.get(..len)?;
        (scheme.eq_ignore_ascii_case("http://") || scheme.eq_ignore_ascii_case("https://"))
            .then(|| &s[len..])
    });
    rest.is_some_and(|rest| !rest.is_empty() && !rest.chars().any(is_js_whitespace))
}

// ---------------------------------------------------------------------------------------
// 11.6 Size.

/// Kustomer refuses a body over 100 KB (413): the most a body's compact JSON may have.
pub(crate) const MAX_BODY_BYTES: usize = 100_000;

/// 11.6: when the body's compact JSON exceeds `limit` bytes, drops the largest values of
/// its `meta` (at `path`) one at a time until it fits, each reported as `field`; `Err`
/// when it still does not fit.
pub(crate) fn fit_size(
    body: &mut Value,
    path: &[&str],
    field: &'static str,
    limit: usize,
    fixes: &mut Fixes,
) -> Result<(), EventError> {
    // Cheap first: most bodies are far below the limit.
    if json_len_bound(body) <= limit {
        return Ok(());
    }
    let mut total = json_len(body);
    if total > limit {
        let mut map = Some(&mut *body);
        for key in path {
            map = map.and_then(|m| m.get_mut(*key));
        }
        if let Some(Value::Object(map)) = map {
            // Largest first; the first of equals first.
            let mut sizes: Vec<(usize, usize, usize)> = map
                .iter()
                .enumerate()
                .map(|(i, (k, v))| (json_len(v), i, json_len(&Value::String(k.clone())) + 1))
                .collect();
            sizes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut remaining = map.len();
            let mut dropped = vec![false; map.len()];
            for (value_len, index, key_len) in sizes {
                if total <= limit {
                    break;
                }
                // One entry and, unless it is the last, its comma.
                total -= value_len + key_len + usize::from(remaining > 1);
                remaining -= 1;
                dropped[index] = true;
                fixes.push(
                    field,
                    FixAction::Dropped,
                    "largest value dropped: body over Kustomer's 100 KB limit",
                );
            }
            let mut index = 0;
            map.retain(|_, _| {
                let keep = !dropped[index];
                index += 1;
                keep
            });
        }
    }
    if total > limit {
        return Err(EventError::bad_event(
            "Body exceeds Kustomer's 100 KB limit",
        ));
    }
    Ok(())
}

/// The length of `value`'s compact JSON (what the client sends).
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; if it did, report no size at all rather than a wrong one.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// An upper bound of [`json_len`] that never reads a string's bytes: every character
/// escaped (6 bytes), every number at its longest.
fn json_len_bound(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len().saturating_mul(6).saturating_add(2),
        Value::Array(items) => items.iter().fold(items.len() + 2, |sum, item| {
            sum.saturating_add(json_len_bound(item))
        }),
        Value::Object(map) => map.iter().fold(map.len() * 2 + 2, |sum, (k, v)| {
            sum.saturating_add(k.len().saturating_mul(6) + 2)
                .saturating_add(json_len_bound(v))
        }),
    }
}

// ---------------------------------------------------------------------------------------
// 11.2 Date-time values (the calendar maths is in `dates.rs`).

fn date_time(value: &mut Value) -> Verdict {
    match value {
        Value::String(s) => match parse_date_time(s) {
            Some(parsed) if parsed.rfc3339 => Verdict::Keep,
            Some(parsed) => match format_unix_ms(parsed.unix_ms) {
                Some(text) => {
                    *s = text;
                    Verdict::Rewritten("written as RFC 3339 UTC")
                }
                None => Verdict::Dropped("not a date-time"),
            },
            None => Verdict::Dropped("not a date-time"),
        },
        Value::Number(n) => {
            const NOT_A_TIME: &str = "number not a date or Unix time of 1900-2200";
            let Some(v) = n.as_f64().filter(|v| v.is_finite()) else {
                return Verdict::Dropped(NOT_A_TIME);
            };
            // [amended 2026-12-06] A `YYYYMMDD` integer first; then Unix time, truncated to
            // whole milliseconds as JavaScript's `new Date(ms)` does.
            let date = (v.fract() == 0.0 && v.abs() < 1e15)
                .then(|| yyyymmdd(v as i64))
                .flatten();
            let (ms, reason) = if let Some(ms) = date {
                (ms as f64, "YYYYMMDD as date-time")
            } else if v.abs() >= 1e11 {
                (v.trunc(), "Unix milliseconds as date-time")
            } else if v.abs() >= 1e5 {
                ((v * 1000.0).trunc(), "Unix seconds as date-time")
            } else {
                return Verdict::Dropped(NOT_A_TIME);
            };
            // Inside the range, so `as` is exact.
            if !(ms.abs() < 1e15 && in_range(ms as i64)) {
                return Verdict::Dropped(NOT_A_TIME);
            }
            match format_unix_ms(ms as i64) {
                Some(text) => {
                    *value = Value::String(text);
                    Verdict::Rewritten(reason)
                }
                None => Verdict::Dropped(NOT_A_TIME),
            }
        }
        _ => Verdict::Dropped("not a date-time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fit_customer(body: Value) -> (Value, Vec<SchemaFix>) {
        let mut body = body;
        let fixes = customer(&mut body);
        (body, fixes)
    }

    fn fix(field: &'static str, action: FixAction, reason: &'static str) -> SchemaFix {
        SchemaFix {
            field,
            action,
            reason,
        }
    }

    fn date(value: Value) -> Option<Value> {
        let (body, _) = fit_customer(json!({ "signedUpAt": value }));
        body.get("signedUpAt").cloned()
    }

    #[test]
    fn rfc3339_real_instants_are_kept_unchanged() {
        for kept in [
            "2020-02-29T08:15:30Z",
            "2020-02-29T08:15:30.1Z",
            "2020-02-29T08:15:30.123456789+05:30",
            "1980-09-20T00:00:00-00:00",
            "2199-12-31T23:59:59.999Z",
            "1900-01-01T00:00:00Z",
            "2200-12-31T23:59:59.999+00:00",
        ] {
            assert_eq!(date(json!(kept)), Some(json!(kept)), "{kept}");
        }
    }

    #[test]
    fn other_date_forms_are_written_in_utc() {
        for (input, output) in [
            ("1980-09-20", "1980-09-20T00:00:00.000Z"),
            ("2020-02-29T08:15", "2020-02-29T08:15:00.000Z"),
            ("2020-02-29 08:15:30", "2020-02-29T08:15:30.000Z"),
            ("2020-02-29t08:15:30z", "2020-02-29T08:15:30.000Z"),
            ("2020-02-29T08:15:30z", "2020-02-29T08:15:30.000Z"),
            ("2020-02-29t08:15:30Z", "2020-02-29T08:15:30.000Z"),
            ("2020-02-29T08:15+01:00", "2020-02-29T07:15:00.000Z"),
            ("2020-02-29 23:30:00-02:30", "2020-03-01T02:00:00.000Z"),
            ("2021-01-01 00:10+00:30", "2020-12-31T23:40:00.000Z"),
            ("2020-02-29 08:15:30.9876543", "2020-02-29T08:15:30.987Z"),
            ("2020-02-29 08:15:30.5z", "2020-02-29T08:15:30.500Z"),
        ] {
            assert_eq!(date(json!(input)), Some(json!(output)), "{input}");
        }
    }

    #[test]
    fn invalid_dates_are_dropped() {
        for dropped in [
            "20-09-1980",
            "2024",
            "yesterday",
            "2020-02-30",
            "2021-02-29",
            "1900-02-29",
            "2020-13-01",
            "2020-00-10",
            "2020-04-31",
            "2020-01-01T24:00",
            "2020-01-01T23:60",
            "2020-01-01T23:59:60Z",
            "2020-01-01T08:15.25Z",
            "2020-01-01T08:15:30.Z",
            "2020-01-01T08:15:30+0100",
            "2020-01-01T08:15:30+24:00",
            "2020-01-01  08:15",
            "2020-01-01T8:15",
            "2020-01-01T08:15:30Z ",
            " 2020-01-01",
            "２０２０-01-01",
            "0000-01-01T00:30+01:00",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1899-12-31",
            "2020-01-01T08:15:30+00:60",
            "2020-01-01T08:15:30-25:00",
            "",
        ] {
            assert_eq!(date(json!(dropped)), None, "{dropped}");
        }
        for dropped in [json!(true), json!({}), json!([]), json!(null)] {
            assert_eq!(date(dropped.clone()), None, "{dropped}");
        }
        // 2000 was a leap year.
        assert_eq!(
            date(json!("2000-02-29")),
            Some(json!("2000-02-29T00:00:00.000Z"))
        );
    }

    #[test]
    fn unix_numbers_seconds_and_milliseconds() {
        for (input, output) in [
            (json!(1_700_000_000), "2023-11-14T22:13:20.000Z"),
            (json!(1_700_000_000_123_i64), "2023-11-14T22:13:20.123Z"),
            (json!(1_700_000_000.5), "2023-11-14T22:13:20.500Z"),
            (json!(100_000_000), "1973-03-03T09:46:40.000Z"),
            (json!(100_000_000_000_i64), "1973-03-03T09:46:40.000Z"),
            (json!(-100_000_000), "1966-10-31T14:13:20.000Z"),
            (json!(-2_208_988_800_i64), "1900-01-01T00:00:00.000Z"),
            (json!(7_289_654_399_999_i64), "2200-12-31T23:59:59.999Z"),
            // [amended 2026-12-06] YYYYMMDD integers, and seconds from 10^5.
            (json!(19_800_920), "1980-09-20T00:00:00.000Z"),
            (json!(19_800_920.0), "1980-09-20T00:00:00.000Z"),
            (json!(19_000_101), "1900-01-01T00:00:00.000Z"),
            (json!(22_001_231), "2200-12-31T00:00:00.000Z"),
            (json!(99_999_999), "1973-03-03T09:46:39.000Z"),
            (json!(-94_694_400), "1967-01-01T00:00:00.000Z"),
            (json!(31_536_000), "1971-01-01T00:00:00.000Z"),
            (json!(100_000), "1970-01-02T03:46:40.000Z"),
            (json!(-100_000), "1969-12-30T20:13:20.000Z"),
            // Not a real YYYYMMDD date: seconds.
            (json!(19_801_320), "1970-08-18T04:22:00.000Z"),
        ] {
            assert_eq!(date(input.clone()), Some(json!(output)), "{input}");
        }
        for dropped in [
            json!(1980),
            json!(99_999),
            json!(-99_999),
            json!(0),
            json!(-2_208_988_801_i64),
            json!(7_289_654_400_i64),
            json!(7_289_654_400_000_i64),
            json!(1e300),
            json!(u64::MAX),
        ] {
            assert_eq!(date(dropped.clone()), None, "{dropped}");
        }
    }

    #[test]
    fn gender_spellings() {
        for (input, output) in [
            (json!("m"), Some(json!("m"))),
            (json!("f"), Some(json!("f"))),
            (json!("male"), Some(json!("m"))),
            (json!(" Female "), Some(json!("f"))),
            (json!("M"), Some(json!("m"))),
            (json!("MALE"), Some(json!("m"))),
            (json!("other"), None),
            (json!(""), None),
            (json!(1), None),
            (json!(false), None),
        ] {
            let (body, fixes) = fit_customer(json!({ "gender": input.clone() }));
            assert_eq!(body.get("gender").cloned(), output, "{input}");
            match &output {
                None => assert_eq!(
                    fixes,
                    vec![fix("customer.gender", FixAction::Dropped, "not m/f")]
                ),
                Some(out) if *out == input => assert!(fixes.is_empty()),
                Some(_) => assert_eq!(
                    fixes,
                    vec![fix(
                        "customer.gender",
                        FixAction::Rewritten,
                        "spelled as m/f"
                    )]
                ),
            }
        }
    }

    #[test]
    fn text_fields() {
        let (body, fixes) = fit_customer(json!({
            "name": "Ann", "company": {"id": 5}, "externalId": 42, "username": true,
            "avatarUrl": null, "locale": ["en"], "timeZone": 1.5, "defaultLang": "en"
        }));
        assert_eq!(
            body,
            json!({"name": "Ann", "externalId": "42", "username": "true", "timeZone": "1.5",
                "defaultLang": "en"})
        );
        assert_eq!(
            fixes,
            vec![
                fix(
                    "customer.company",
                    FixAction::Dropped,
                    "not a Kustomer company id"
                ),
                fix(
                    "customer.externalId",
                    FixAction::Rewritten,
                    "number as text"
                ),
                fix("customer.username", FixAction::Rewritten, "boolean as text"),
                fix("customer.avatarUrl", FixAction::Dropped, "not text"),
                fix("customer.locale", FixAction::Dropped, "not text"),
                fix("customer.timeZone", FixAction::Rewritten, "number as text"),
            ]
        );
    }

    #[test]
    fn tags() {
        let tags_of = |tags: Value| fit_customer(json!({ "tags": tags })).0.get("tags").cloned();
        assert_eq!(tags_of(json!(["a", "b"])), Some(json!(["a", "b"])));
        assert_eq!(
            tags_of(json!(["a", 1, true, null, {"x": 1}, ["y"]])),
            Some(json!(["a", "1", "true"]))
        );
        assert_eq!(tags_of(json!("vip")), Some(json!(["vip"])));
        assert_eq!(tags_of(json!([])), Some(json!([])));
        assert_eq!(tags_of(json!([null])), Some(json!([])));
        assert_eq!(tags_of(json!(5)), None);
        assert_eq!(tags_of(json!({"a": 1})), None);
        let (_, fixes) = fit_customer(json!({"tags": [1, 2, null]}));
        assert_eq!(
            fixes,
            vec![
                fix("customer.tags", FixAction::Rewritten, "elements as text"),
                fix(
                    "customer.tags",
                    FixAction::Rewritten,
                    "elements not text left out"
                ),
            ]
        );
    }

    #[test]
    fn object_lists() {
        let (body, fixes) = fit_customer(json!({
            "emails": [{"email": "a@x.test", "type": " Work ", "verified": "yes", "primary": true},
                       {"type": "home"}, "b@x.test", {"email": 5, "type": "office"}],
            "phones": [{"phone": 5550100, "type": "mobile"}],
            "whatsapps": "+1",
            "urls": [{"url": "https://x.test", "type": "blog"}],
            "socials": [{"type": "Twitter", "username": "ann"}, {"type": "mastodon", "username": "a"}],
            "facebookIds": [{"pageId": "p"}],
            "instagramIds": [{"pageId": "p", "threadId": 1, "username": "u", "instagramId": null}],
            "locations": [{"type": "home", "address": "x", "name": null, "latitude": "1.5", "longitude": 2.5, "zipCode": 20500}],
        }));
        assert_eq!(
            body,
            json!({
                "emails": [{"email": "a@x.test", "type": "work"}, {"email": "5"}],
                "phones": [{"phone": "5550100", "type": "mobile"}],
                "urls": [{"url": "https://x.test", "type": "blog"}],
                "socials": [{"type": "twitter", "username": "ann"}],
                "instagramIds": [{"pageId": "p", "threadId": "1", "username": "u"}],
                "locations": [{"type": "home", "address": "x", "name": null, "longitude": 2.5, "zipCode": "20500"}],
            })
        );
        let fields: Vec<(&str, FixAction)> =
            fixes.iter().map(|fix| (fix.field, fix.action)).collect();
        use FixAction::{Dropped, Rewritten};
        assert_eq!(
            fields,
            vec![
                ("customer.emails.type", Rewritten),
                ("customer.emails.verified", Dropped),
                ("customer.emails", Rewritten),
                ("customer.emails", Rewritten),
                ("customer.emails", Rewritten),
                ("customer.emails.email", Rewritten),
                ("customer.emails.type", Dropped),
                ("customer.phones.phone", Rewritten),
                ("customer.whatsapps", Dropped),
                ("customer.socials.type", Rewritten),
                ("customer.socials.type", Dropped),
                ("customer.socials", Rewritten),
                ("customer.facebookIds", Rewritten),
                ("customer.facebookIds", Dropped),
                ("customer.instagramIds.threadId", Rewritten),
                ("customer.instagramIds.instagramId", Dropped),
                ("customer.locations.latitude", Dropped),
                ("customer.locations.zipCode", Rewritten),
            ]
        );
        // An empty list sent as such stays.
        let (body, fixes) = fit_customer(json!({"emails": [], "phones": [null]}));
        assert_eq!(body, json!({"emails": []}));
        assert_eq!(
            fixes.last(),
            Some(&fix(
                "customer.phones",
                FixAction::Dropped,
                "every element left out"
            ))
        );
        // Every list of the table is reachable from the customer rules.
        for list in CUSTOMER_LISTS {
            assert_eq!(list.field, format!("customer.{}", list.name));
            assert!(
                matches!(customer_rule(list.name), Some((field, Rule::List(_))) if field == list.field)
            );
            for k in list.keys {
                assert_eq!(k.field, format!("{}.{}", list.field, k.name));
            }
        }
    }

    #[test]
    fn sentiment_rev_custom() {
        let (body, fixes) = fit_customer(json!({
            "sentiment": {"confidence": 0.5, "polarity": -1, "label": "neg"},
            "rev": "3", "custom": [1]
        }));
        assert_eq!(
            body,
            json!({"sentiment": {"confidence": 0.5, "polarity": -1}})
        );
        assert_eq!(fixes.len(), 3);
        for bad in [
            json!({"polarity": 2, "confidence": 1}),
            json!({"polarity": "1", "confidence": 1}),
            json!({"polarity": 1}),
            json!({"polarity": 1, "confidence": "high"}),
            json!(0),
        ] {
            let (body, _) = fit_customer(json!({ "sentiment": bad }));
            assert_eq!(body, json!({}));
        }
        let valid =
            json!({"sentiment": {"polarity": 0, "confidence": 1}, "rev": 0, "custom": {"a": null}});
        assert_eq!(fit_customer(valid.clone()), (valid, vec![]));
    }

    fn fit_tracking(body: Value) -> Result<(Value, Vec<SchemaFix>), EventError> {
        let mut body = body;
        let fixes = identity_event(&mut body)?;
        Ok((body, fixes))
    }

    #[test]
    fn meta_values_of_every_type() {
        let (body, fixes) = fit_tracking(json!({
            "identity": {"externalId": "u"},
            "event": {"name": "e", "meta": {
                "s": "x", "n": 1.5, "t": true, "f": false, "z": null,
                "a": ["b", 2, {"y": true}, null], "o": {"k": [1], "2": "x"}, "e": []
            }}
        }))
        .unwrap();
        assert_eq!(
            body["event"]["meta"],
            json!({"s": "x", "n": 1.5, "t": "true", "f": "false",
                "a": "[\"b\",2,{\"y\":true},null]", "o": "{\"2\":\"x\",\"k\":[1]}", "e": "[]"})
        );
        assert_eq!(
            fixes,
            vec![
                fix("event.meta", FixAction::Rewritten, "boolean as text"),
                fix("event.meta", FixAction::Dropped, "null dropped"),
                fix("event.meta", FixAction::Rewritten, "array as JSON text"),
                fix("event.meta", FixAction::Rewritten, "object as JSON text"),
            ]
        );
        let (body, fixes) = fit_tracking(
            json!({"identity": {"externalId": "u"}, "event": {"name": "e", "meta": [1]}}),
        )
        .unwrap();
        assert_eq!(body["event"], json!({"name": "e"}));
        assert_eq!(
            fixes,
            vec![fix("event.meta", FixAction::Dropped, "not an object")]
        );
    }

    #[test]
    fn tracking_text_fields_and_name() {
        let (body, fixes) = fit_tracking(json!({
            "identity": {"externalId": 7, "email": {"a": 1}},
            "event": {"name": ["a", "b"], "sessionId": 1_700_000_000_000_i64, "trackingId": null}
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({"identity": {"externalId": "7"},
                "event": {"name": "a,b", "sessionId": "1700000000000"}})
        );
        let fields: Vec<&str> = fixes.iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            [
                "identity.externalId",
                "identity.email",
                "event.name",
                "event.sessionId",
                "event.trackingId"
            ]
        );
    }

    #[test]
    fn identity_left_empty_is_the_usual_400() {
        let err =
            fit_tracking(json!({"identity": {"externalId": {"id": 1}}, "event": {"name": "e"}}))
                .unwrap_err();
        assert_eq!(err, missing_value("userId"));
        // The e-mail alone is enough.
        assert!(fit_tracking(
            json!({"identity": {"externalId": [1], "email": "a@x.test"}, "event": {"name": "e"}})
        )
        .is_ok());
    }

    #[test]
    fn map_event_fits_only_with_the_flag() {
        use crate::settings::MappingFlags;
        use crate::{map_event, Plan};
        let on = MappingFlags {
            fit_to_kustomer_schema: true,
            ..MappingFlags::default()
        };
        let event = json!({"type": "page", "userId": {"id": 1}, "context": {"sessionId": 17}});
        assert!(map_event(&event, &MappingFlags::default()).is_ok());
        assert_eq!(map_event(&event, &on), Err(missing_value("userId")));
        let event = json!({"type": "identify", "userId": "u", "traits": {"gender": "Male"}});
        let Ok(Plan::Identify(plan)) = map_event(&event, &on) else {
            panic!("identify plan expected")
        };
        assert_eq!(plan.body, json!({"externalId": "u", "gender": "m"}));
        assert_eq!(plan.create().fixes, plan.fixes);
        assert_eq!(
            plan.fixes,
            vec![fix(
                "customer.gender",
                FixAction::Rewritten,
                "spelled as m/f"
            )]
        );
        let off = map_event(&event, &MappingFlags::default()).unwrap();
        assert!(off.fixes().is_empty());
    }

    #[test]
    fn valid_bodies_pass_through_byte_identical() {
        let customer_text = r#"{"name":"Ann","externalId":"u1","signedUpAt":"2020-02-29T08:15:30+01:00","gender":"f","tags":["a"],"emails":[{"type":"work","email":"a@x.test","verified":true}],"zzz":{"unknown":[null]},"locations":[{"address":null,"type":"home"}],"rev":1,"custom":{"b":1,"a":2}}"#;
        let mut body: Value = serde_json::from_str(customer_text).unwrap();
        assert!(customer(&mut body).is_empty());
        assert_eq!(serde_json::to_string(&body).unwrap(), customer_text);
        let tracking_text = r#"{"identity":{"externalId":"u"},"event":{"name":"e","sessionId":"s","meta":{"b":"x","a":1.5}}}"#;
        let mut body: Value = serde_json::from_str(tracking_text).unwrap();
        assert!(identity_event(&mut body).unwrap().is_empty());
        assert_eq!(serde_json::to_string(&body).unwrap(), tracking_text);
    }

    #[test]
    fn drops_keep_the_order_of_the_other_keys() {
        let (body, _) = fit_customer(json!({"a": 1, "gender": "x", "b": 2, "rev": "r", "c": 3}));
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"a":1,"b":2,"c":3}"#
        );
    }

    #[test]
    fn fixes_serialise_as_documented() {
        let shown =
            serde_json::to_string(&fix("customer.gender", FixAction::Dropped, "not m/f")).unwrap();
        assert_eq!(
            shown,
            r#"{"field":"customer.gender","action":"dropped","reason":"not m/f"}"#
        );
    }

    #[test]
    fn company_ids_only_in_the_customer_company() {
        for (company, kept) in [
            (json!("5f3c0ffee0000000000c0a01"), true),
            (json!("5F3C0FFEE0000000000C0A01"), true),
            (json!("5f3c0ffee0000000000c0a0"), false),
            (json!("Acme Ltd"), false),
            (json!(123), false),
        ] {
            let (body, _) = fit_customer(json!({ "company": company }));
            assert_eq!(body.get("company").is_some(), kept, "{company}");
        }
    }

    #[test]
    fn custom_attributes_by_suffix() {
        let (body, fixes) = fit_customer(json!({"custom": {
            "scoreNum": 4.5, "seatsNum": " 12 ", "ratioNum": "-1.5", "badNum": "1e5", "flagNum": true,
            "renewalAt": "2026-01-31", "okAt": "2026-01-31T10:00:00Z", "badAt": "31/01/2026", "secsAt": 1_700_000_000,
            "planStr": "gold", "codeTxt": 42, "longStr": "x".repeat(1025), "maxStr": "é".repeat(1024), "objStr": {"a": 1},
            "isVipBool": true, "yesBool": "TRUE", "noBool": "False", "badBool": 1,
            "portalUrl": "HTTPS://portal.test/a", "plainUrl": "http://x", "badUrl": "ftp://x", "spaceUrl": "https://a b", "emptyUrl": "https://",
            "nullNum": null, "nullUrl": null, "Num": "not a suffix", "At": {"kept": true}, "other": [1, {"x": null}],
            "lowernum": "kept"
        }}));
        assert_eq!(
            body["custom"],
            json!({
                "scoreNum": 4.5, "seatsNum": 12, "ratioNum": -1.5,
                "renewalAt": "2026-01-31T00:00:00.000Z", "okAt": "2026-01-31T10:00:00Z",
                "secsAt": "2023-11-14T22:13:20.000Z",
                "planStr": "gold", "codeTxt": "42", "maxStr": "é".repeat(1024),
                "isVipBool": true, "yesBool": true, "noBool": false,
                "portalUrl": "HTTPS://portal.test/a", "plainUrl": "http://x",
                "nullNum": null, "nullUrl": null, "Num": "not a suffix", "At": {"kept": true},
                "other": [1, {"x": null}], "lowernum": "kept"
            })
        );
        assert!(
            fixes.iter().all(|f| f.field == "customer.custom"),
            "{fixes:?}"
        );
        let reasons: Vec<&str> = fixes.iter().map(|f| f.reason).collect();
        for reason in [
            "text as a number",
            "not a number",
            "not a date-time",
            "longer than 1,024 characters",
            "not text",
            "text as a boolean",
            "not a boolean",
            "not an http(s) URL",
        ] {
            assert!(reasons.contains(&reason), "{reason}: {reasons:?}");
        }
        let valid = json!({"custom": {"aNum": 1, "bAt": "2020-02-29T08:15:30Z", "cStr": "x", "dBool": false, "eUrl": "https://x.test", "f": {}}});
        assert_eq!(fit_customer(valid.clone()), (valid, vec![]));
    }

    #[test]
    fn company_bodies_with_their_limits() {
        let emails: Vec<Value> = (0..12)
            .map(|i| json!({"email": format!("e{i}@x.test")}))
            .collect();
        let mut body = json!({
            "externalId": 7, "name": " AB ", "emails": emails, "employeeCount": "0042",
            "custom": {"tierStr": 5}, "avatarUrl": null, "unknown": 1
        });
        let mut fixes = Fixes::default();
        company(&mut body, &mut fixes);
        assert_eq!(body["emails"].as_array().unwrap().len(), 10);
        assert_eq!(
            body,
            json!({"externalId": "7", "emails": body["emails"].clone(), "employeeCount": 42,
                "custom": {"tierStr": "5"}, "unknown": 1})
        );
        let fields: Vec<(&str, &str)> = fixes.0.iter().map(|f| (f.field, f.reason)).collect();
        assert_eq!(
            fields,
            [
                ("company.externalId", "number as text"),
                ("company.name", "not 3-255 characters"),
                ("company.emails", "more than 10 elements: the first 10 kept"),
                ("company.employeeCount", "digits as a number"),
                ("company.custom", "number as text"),
                ("company.avatarUrl", "not text"),
            ]
        );
        for (name, kept) in [
            ("Acme", true),
            ("  Acm  ", true),
            ("x".repeat(255).as_str(), true),
            ("x".repeat(256).as_str(), false),
        ] {
            let mut body = json!({ "name": name });
            company(&mut body, &mut Fixes::default());
            assert_eq!(body.get("name").is_some(), kept, "{name}");
        }
        for count in [json!("-3"), json!("1.5"), json!(""), json!(true)] {
            let mut body = json!({ "employeeCount": count });
            company(&mut body, &mut Fixes::default());
            assert_eq!(body, json!({}), "{count}");
        }
        // Every company list's fields are named under `company.`.
        for list in COMPANY_LISTS {
            assert_eq!(list.field, format!("company.{}", list.name));
            assert_eq!(list.max, Some(MAX_COMPANY_LIST));
            for k in list.keys {
                assert_eq!(k.field, format!("{}.{}", list.field, k.name));
            }
        }
    }

    #[test]
    fn bodies_over_100_kb_lose_their_largest_values() {
        let big = "x".repeat(60_000);
        let mut body = json!({"identity": {"externalId": "u"}, "event": {"name": "e", "meta": {
            "small": "s", "big1": big.clone(), "mid": "m".repeat(30_000), "big2": big.clone()
        }}});
        let mut fixes = Fixes::default();
        fit_size(
            &mut body,
            &["event", "meta"],
            "event.meta",
            MAX_BODY_BYTES,
            &mut fixes,
        )
        .unwrap();
        // The first of the two largest goes; then the body fits.
        let meta = body["event"]["meta"].as_object().unwrap();
        let kept: Vec<&str> = meta.keys().map(String::as_str).collect();
        assert_eq!(kept, ["small", "mid", "big2"]);
        assert!(json_len(&body) <= MAX_BODY_BYTES);
        assert_eq!(fixes.0.len(), 1, "each drop reported once per reason");
        // Exactly at the limit: kept; one byte over: the value goes.
        let fit_custom = |body: &mut Value| {
            fit_size(
                body,
                &["custom"],
                "customer.custom",
                MAX_BODY_BYTES,
                &mut Fixes::default(),
            )
        };
        let exact = |len: usize| json!({"custom": {"aStr": "y".repeat(len)}});
        let overhead = json_len(&exact(0));
        let mut body = exact(MAX_BODY_BYTES - overhead);
        fit_custom(&mut body).unwrap();
        assert_eq!(json_len(&body), MAX_BODY_BYTES);
        let mut body = exact(MAX_BODY_BYTES - overhead + 1);
        fit_custom(&mut body).unwrap();
        assert_eq!(body, json!({"custom": {}}));
        // Nothing to drop: the event fails.
        let mut body = json!({"name": "n".repeat(MAX_BODY_BYTES)});
        assert_eq!(
            fit_custom(&mut body),
            Err(EventError::bad_event(
                "Body exceeds Kustomer's 100 KB limit"
            ))
        );
        // Escapes count: a value of quotes is twice its length.
        let mut body = json!({"custom": {"q": "\"".repeat(50_001)}});
        fit_custom(&mut body).unwrap();
        assert_eq!(body, json!({"custom": {}}));
    }

    #[test]
    fn the_length_bound_is_an_upper_bound() {
        for value in [
            json!({"a": "\u{1}\"é", "b": [1.5e300, -0.0, null, true, {"c": []}], "d": u64::MAX}),
            json!("x"),
            json!([]),
        ] {
            assert!(json_len_bound(&value) >= json_len(&value), "{value}");
        }
    }
}
