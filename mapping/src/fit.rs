//! Spec section 11 [D25]: fits the write bodies to Kustomer's published contract
//! (`kustomer-contract.json`): keeps what is valid, rewrites what has one obvious valid
//! form, drops the rest field by field, and reports each change without its value.
//!
//! The rules are read here, top to bottom: [`customer_rule`] and [`identity_event_rule`]
//! name the rule of every body field, [`OBJECT_LISTS`] is the table of 11.3, and the
//! functions below them are the rules of 11.1 and 11.2.
//!
//! Fitted in place on the `serde_json::Value` rather than through typed structs: structs
//! would re-order keys (so a valid body would no longer pass through byte-identical) and
//! lose the unknown customer keys the contract allows.

use serde::Serialize;
use serde_json::{Map, Value};

use super::identify::missing_value;
use super::EventError;
use crate::dates::{format_unix_ms, parse_date_time, END_UNIX_MS, MIN_UNIX_MS};
use crate::values::{js_trim, push_js_json, text_form};

/// One change the stage made to a body: which field, what happened, why. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaFix {
    /// The body field: `customer.gender`, `event.sessionId`, `customer.phones.type`
    /// (a key inside the elements of a list), `event.meta` (any key of meta: meta keys are
    /// the user's and unbounded, so they never name a field in logs or metrics).
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
struct Fixes(Vec<SchemaFix>);

impl Fixes {
    fn push(&mut self, field: &'static str, action: FixAction, reason: &'static str) {
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

/// The rule of one field (11.1).
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
}

/// 11.1: the customer body (create and update). Keys without a rule are not produced by
/// the mapping; the contract allows other customer keys, so they would be kept.
fn customer_rule(key: &str) -> Option<(&'static str, Rule)> {
    Some(match key {
        "name" => ("customer.name", Rule::Text),
        "company" => ("customer.company", Rule::Text),
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
            let list = OBJECT_LISTS.into_iter().find(|list| list.name == key)?;
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
    /// The customer key.
    name: &'static str,
    /// `customer.<name>`, as reported.
    field: &'static str,
    keys: &'static [ListKey],
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

/// 11.3, the table of object lists.
const OBJECT_LISTS: [&ObjectList; 8] = [
    &EMAILS,
    &PHONES,
    &WHATSAPPS,
    &URLS,
    &SOCIALS,
    &FACEBOOK_IDS,
    &INSTAGRAM_IDS,
    &LOCATIONS,
];

const EMAILS: ObjectList = ObjectList {
    name: "emails",
    field: "customer.emails",
    keys: &[
        required("email", "customer.emails.email", Text),
        key("type", "customer.emails.type", HOME_WORK_OTHER),
        key("verified", "customer.emails.verified", Boolean),
    ],
};
const PHONES: ObjectList = ObjectList {
    name: "phones",
    field: "customer.phones",
    keys: &[
        required("phone", "customer.phones.phone", Text),
        key(
            "type",
            "customer.phones.type",
            Enum(
                &["mobile", "home", "work", "fax", "other"],
                "not mobile/home/work/fax/other",
            ),
        ),
        key("verified", "customer.phones.verified", Boolean),
    ],
};
const WHATSAPPS: ObjectList = ObjectList {
    name: "whatsapps",
    field: "customer.whatsapps",
    keys: &[
        required("phone", "customer.whatsapps.phone", Text),
        key(
            "type",
            "customer.whatsapps.type",
            Enum(&["mobile"], "not mobile"),
        ),
        key("verified", "customer.whatsapps.verified", Boolean),
    ],
};
const URLS: ObjectList = ObjectList {
    name: "urls",
    field: "customer.urls",
    keys: &[
        required("url", "customer.urls.url", Text),
        key(
            "type",
            "customer.urls.type",
            Enum(&["website", "blog", "other"], "not website/blog/other"),
        ),
    ],
};
const SOCIALS: ObjectList = ObjectList {
    name: "socials",
    field: "customer.socials",
    keys: &[
        required(
            "type",
            "customer.socials.type",
            Enum(
                &["twitter", "facebook", "instagram", "linkedin", "pinterest"],
                "not twitter/facebook/instagram/linkedin/pinterest",
            ),
        ),
        required("username", "customer.socials.username", Text),
        key("userid", "customer.socials.userid", Text),
        key("url", "customer.socials.url", Text),
        key("verified", "customer.socials.verified", Boolean),
    ],
};
const FACEBOOK_IDS: ObjectList = ObjectList {
    name: "facebookIds",
    field: "customer.facebookIds",
    keys: &[
        required("pageId", "customer.facebookIds.pageId", Text),
        required("userId", "customer.facebookIds.userId", Text),
        key("name", "customer.facebookIds.name", Text),
    ],
};
const INSTAGRAM_IDS: ObjectList = ObjectList {
    name: "instagramIds",
    field: "customer.instagramIds",
    keys: &[
        required("pageId", "customer.instagramIds.pageId", Text),
        required("threadId", "customer.instagramIds.threadId", Text),
        required("username", "customer.instagramIds.username", Text),
        key("instagramId", "customer.instagramIds.instagramId", Text),
    ],
};
const LOCATIONS: ObjectList = ObjectList {
    name: "locations",
    field: "customer.locations",
    keys: &[
        key("type", "customer.locations.type", HOME_WORK_OTHER),
        key("name", "customer.locations.name", TextOrNull),
        key("address", "customer.locations.address", TextOrNull),
        key("address2", "customer.locations.address2", TextOrNull),
        key("address3", "customer.locations.address3", TextOrNull),
        key("countryCode", "customer.locations.countryCode", TextOrNull),
        key("countryName", "customer.locations.countryName", TextOrNull),
        key("regionCode", "customer.locations.regionCode", TextOrNull),
        key("regionName", "customer.locations.regionName", TextOrNull),
        key("cityName", "customer.locations.cityName", TextOrNull),
        key("zipCode", "customer.locations.zipCode", TextOrNull),
        key("areaCode", "customer.locations.areaCode", TextOrNull),
        key("latitude", "customer.locations.latitude", NumberOrNull),
        key("longitude", "customer.locations.longitude", NumberOrNull),
    ],
};

/// Fits a customer body (spec 5.5 output) in place; returns what changed.
pub(super) fn customer(body: &mut Value) -> Vec<SchemaFix> {
    let mut fixes = Fixes::default();
    if let Value::Object(map) = body {
        fit_object(map, &mut fixes, customer_rule);
    }
    fixes.0
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
            Rule::Custom => match value {
                Value::Object(_) => Verdict::Keep,
                _ => Verdict::Dropped("not an object"),
            },
            Rule::Meta => meta(value, field, fixes),
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
            let Some(v) = n.as_f64().filter(|v| v.is_finite()) else {
                return Verdict::Dropped("number not a Unix time of 1900-2200");
            };
            // Truncated to whole milliseconds, as JavaScript's `new Date(ms)` does.
            let (ms, reason) = if v.abs() >= 1e11 {
                (v.trunc(), "Unix milliseconds as date-time")
            } else if v.abs() >= 1e8 {
                ((v * 1000.0).trunc(), "Unix seconds as date-time")
            } else {
                return Verdict::Dropped("number not a Unix time of 1900-2200");
            };
            if ms < MIN_UNIX_MS as f64 || ms >= END_UNIX_MS as f64 {
                return Verdict::Dropped("number not a Unix time of 1900-2200");
            }
            match format_unix_ms(ms as i64) {
                Some(text) => {
                    *value = Value::String(text);
                    Verdict::Rewritten(reason)
                }
                None => Verdict::Dropped("number not a Unix time of 1900-2200"),
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
            "0001-01-01T00:00:00Z",
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
        ] {
            assert_eq!(date(input.clone()), Some(json!(output)), "{input}");
        }
        for dropped in [
            json!(1980),
            json!(19_800_920),
            json!(99_999_999),
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
                fix("customer.company", FixAction::Dropped, "not text"),
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
        for list in OBJECT_LISTS {
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
}
