//! What Kustomer's answers mean: look-up outcomes (spec 5.2 point 3, D6, D7), company
//! look-ups and creates (12.3), error messages from bodies (5.4), and write statuses (8.2).

use serde_json::Value;

use super::client::HttpResponse;
use crate::outcome::{Failure, FailureClass, NotLinked};
use kustomer_mapping::values::{encode_path_segment, is_truthy, js_json};
use kustomer_mapping::{company_id, CompanyLookup};

/// The fixed text for a look-up failure without a usable body; also D6/D7's prefix.
pub const LOOKUP_ERROR: &str = "Error while lookingUp Kustomer";
const WRITE_ERROR: &str = "Error while sending to Kustomer";

/// The longest customer id the function uses, as encoded for a path. Kustomer's ids are
/// 24 characters; a longer one cannot be trusted to fit in the next request's URL (a
/// permanent 400 there would drop the event), so it is a malformed answer (D6), never
/// cached or written to.
pub const MAX_CUSTOMER_ID_CHARS: usize = 1_024;

/// A customer id from an answer, encoded for a path, when it can be used in a URL.
fn usable_customer_id(id: &Value) -> Result<String, String> {
    let encoded = encode_path_segment(id);
    if encoded.len() > MAX_CUSTOMER_ID_CHARS {
        return Err(format!(
            "the customer id is {} characters long (at most {MAX_CUSTOMER_ID_CHARS} fit a request)",
            encoded.len()
        ));
    }
    Ok(encoded)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupResult {
    /// The customer id, already encoded as a path segment.
    Found(String),
    NotFound,
}

pub fn classify_lookup(response: &HttpResponse) -> Result<LookupResult, Failure> {
    match response.status {
        200 => {
            let id = serde_json::from_slice::<Value>(&response.body)
                .ok()
                .and_then(|body| {
                    body.get("data")?
                        .get("id")
                        .filter(|id| is_truthy(id))
                        .cloned()
                });
            // D6: a success status without a usable customer is an upstream fault.
            let malformed = |why: &str| {
                Failure::new(
                    FailureClass::Transient,
                    Some(502),
                    format!("{LOOKUP_ERROR}: the 200 answer {why}"),
                )
            };
            match id {
                Some(id) => usable_customer_id(&id)
                    .map(LookupResult::Found)
                    .map_err(|why| malformed(&format!("is unusable: {why}"))),
                None => Err(malformed("has no data.id")),
            }
        }
        404 => Ok(LookupResult::NotFound),
        400..=599 => Err(error_failure(response, LOOKUP_ERROR)),
        // D7: 1xx, other 2xx and 3xx are upstream faults, not client errors.
        status => Err(Failure::new(
            FailureClass::Transient,
            Some(502),
            format!("{LOOKUP_ERROR}: unexpected status {status}"),
        )),
    }
}

/// The new customer's id from a create answer (`{"data":{"id":…}}`), encoded for a path;
/// `None` when the answer names none. An id that cannot be used in a URL is a malformed
/// answer (D6: 502, retried), like a look-up's.
pub fn created_customer_id(body: &[u8]) -> Result<Option<String>, Failure> {
    let id = serde_json::from_slice::<Value>(body).ok().and_then(|body| {
        body.get("data")?
            .get("id")
            .filter(|id| is_truthy(id))
            .cloned()
    });
    let Some(id) = id else { return Ok(None) };
    usable_customer_id(&id).map(Some).map_err(|why| {
        Failure::new(
            FailureClass::Transient,
            Some(502),
            format!("{WRITE_ERROR}: the create's answer is unusable: {why}"),
        )
    })
}

/// What a company look-up's answer means (spec 12.3 point 4).
#[derive(Debug, Clone, PartialEq)]
pub enum CompanyAnswer {
    /// The company's id: a Kustomer id, usable as it is in a body and in a path.
    Found(String),
    NotFound,
    /// The company cannot be linked: an identify is written without it, a group fails
    /// with `failure`.
    Unlinkable {
        reason: NotLinked,
        failure: Failure,
    },
}

/// 12.3 point 4: 200 with a `data` array: the company the look-up picks, else not found;
/// 404: not found; 5xx, 408, 429: `Err`, retried like a customer look-up; any other 4xx:
/// not linked. A 200 without a `data` array, an unusable id and the odd statuses of D7
/// are answers Kustomer should not give: not linked too, with D6's 502 for a group.
pub fn classify_company_lookup(
    response: &HttpResponse,
    lookup: &CompanyLookup,
) -> Result<CompanyAnswer, Failure> {
    let bad_answer = |why: &str| CompanyAnswer::Unlinkable {
        reason: NotLinked::BadAnswer,
        failure: Failure::new(
            FailureClass::Transient,
            Some(502),
            format!("{LOOKUP_ERROR}: company look-up: {why}"),
        ),
    };
    match response.status {
        200 => {
            let body = serde_json::from_slice::<Value>(&response.body).ok();
            let Some(data) = body.as_ref().and_then(|b| b.get("data")?.as_array()) else {
                return Ok(bad_answer("the 200 answer has no data array"));
            };
            match lookup.pick(data) {
                None => Ok(CompanyAnswer::NotFound),
                Some(company) => match company.get("id").and_then(company_id) {
                    Some((id, _)) => Ok(CompanyAnswer::Found(id)),
                    None => Ok(bad_answer("the company's id is not a Kustomer id")),
                },
            }
        }
        404 => Ok(CompanyAnswer::NotFound),
        // 408 is a timeout on Kustomer's side: retried, unlike other 4xx (8.1).
        408 => Err(Failure {
            class: FailureClass::Transient,
            ..error_failure(response, LOOKUP_ERROR)
        }),
        429 | 500..=599 => Err(error_failure(response, LOOKUP_ERROR)),
        400..=499 => Ok(CompanyAnswer::Unlinkable {
            reason: NotLinked::LookupRefused,
            failure: error_failure(response, LOOKUP_ERROR),
        }),
        status => Ok(bad_answer(&format!("unexpected status {status}"))),
    }
}

/// The new company's id from a create answer (`{"data":{"id":…}}`): a Kustomer id only.
pub fn created_company_id(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    company_id(body.get("data")?.get("id")?).map(|(id, _)| id)
}

/// `Ok(status)` for a 2xx; a classified failure otherwise.
pub fn classify_write(response: &HttpResponse) -> Result<u16, Failure> {
    match response.status {
        200..=299 => Ok(response.status),
        400..=599 => Err(error_failure(response, WRITE_ERROR)),
        status => Err(Failure::new(
            FailureClass::Transient,
            Some(502),
            format!("{WRITE_ERROR}: unexpected status {status}"),
        )),
    }
}

fn error_failure(response: &HttpResponse, empty_text: &str) -> Failure {
    let mut failure =
        Failure::from_status(response.status, body_message(&response.body, empty_text));
    failure.log_message = Some(loggable_error(response.status, &response.body, empty_text));
    failure.retry_after = response.rate_limit.retry_after.or(match response.status {
        429 => response.rate_limit.reset,
        _ => None,
    });
    failure
}

/// What logs may say of an error answer: the status and Kustomer's error `code` and
/// `title` (JSON:API `errors[0]`), never the rest of the body, which may echo what we sent.
fn loggable_error(status: u16, body: &[u8], prefix: &str) -> String {
    let first_error = serde_json::from_slice::<Value>(body).ok().and_then(|body| {
        let error = body.get("errors")?.get(0)?.clone();
        Some(error)
    });
    let field = |name: &str| {
        first_error
            .as_ref()
            .and_then(|error| error.get(name))
            .and_then(Value::as_str)
            .map(|text| text.chars().take(80).collect::<String>())
    };
    let mut text = format!("{prefix}: Kustomer answered {status}");
    for (name, value) in [("code", field("code")), ("title", field("title"))] {
        if let Some(value) = value {
            text.push_str(&format!(", {name} {value:?}"));
        }
    }
    text
}

/// Spec 5.4: the body as compact JSON (plain text becomes a JSON string); an empty body
/// or a falsy JSON value gives `empty_text`.
fn body_message(body: &[u8], empty_text: &str) -> String {
    if body.is_empty() {
        return empty_text.to_string();
    }
    let value = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    if is_truthy(&value) {
        js_json(&value)
    } else {
        empty_text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kustomer::RateLimit;
    use bytes::Bytes;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            body: Bytes::from(body.to_string()),
            rate_limit: RateLimit::default(),
        }
    }

    #[test]
    fn logs_see_code_and_title_never_the_body() {
        let echo = r#"{"errors":[{"status":400,"code":"invalid_params","title":"Invalid","detail":"ann@x.test is taken","source":{"pointer":"ann@x.test"}}]}"#;
        let failure = classify_write(&response(400, echo)).unwrap_err();
        assert!(
            failure.message.contains("ann@x.test"),
            "the caller still gets the body"
        );
        assert_eq!(
            failure.log_text(),
            r#"Error while sending to Kustomer: Kustomer answered 400, code "invalid_params", title "Invalid""#
        );
        let plain = classify_lookup(&response(500, "ann@x.test")).unwrap_err();
        assert!(!plain.log_text().contains("ann@"), "{}", plain.log_text());
    }

    #[test]
    fn lookup_found_and_not_found() {
        assert_eq!(
            classify_lookup(&response(200, r#"{"data":{"id":"a b/c"}}"#)),
            Ok(LookupResult::Found("a%20b%2Fc".into()))
        );
        assert_eq!(
            classify_lookup(&response(404, "whatever")),
            Ok(LookupResult::NotFound)
        );
    }

    #[test]
    fn lookup_d6_200_without_id_is_502() {
        for body in [
            "",
            "{}",
            r#"{"data":{}}"#,
            r#"{"data":{"id":""}}"#,
            "<html>",
            "[]",
        ] {
            let failure = classify_lookup(&response(200, body)).unwrap_err();
            assert_eq!(failure.status, Some(502), "{body}");
            assert_eq!(failure.class, FailureClass::Transient);
            assert!(failure.message.starts_with(LOOKUP_ERROR));
        }
    }

    /// Issue 18: an id too long for the next request's URL is Kustomer's fault (D6), not
    /// the event's: a retryable 502, from a look-up and from a create alike.
    #[test]
    fn unusable_ids_are_502() {
        let long = "c".repeat(5_000);
        let body = format!(r#"{{"data":{{"id":"{long}"}}}}"#);
        let failure = classify_lookup(&response(200, &body)).unwrap_err();
        assert_eq!(
            (failure.status, failure.class),
            (Some(502), FailureClass::Transient)
        );
        assert!(
            failure.message.contains("5000 characters"),
            "{}",
            failure.message
        );
        assert!(!failure.message.contains("ccccc"), "never the id itself");
        let failure = created_customer_id(body.as_bytes()).unwrap_err();
        assert_eq!(
            (failure.status, failure.class),
            (Some(502), FailureClass::Transient)
        );
        // Within the bound, as before; encoded ids count as encoded.
        let fits = "d".repeat(MAX_CUSTOMER_ID_CHARS);
        let body = format!(r#"{{"data":{{"id":"{fits}"}}}}"#);
        assert_eq!(created_customer_id(body.as_bytes()), Ok(Some(fits.clone())));
        assert!(classify_lookup(&response(200, &body)).is_ok());
        let encoded = "/".repeat(MAX_CUSTOMER_ID_CHARS / 3 + 1);
        let body = format!(r#"{{"data":{{"id":"{encoded}"}}}}"#);
        assert!(classify_lookup(&response(200, &body)).is_err());
        for none in [&b""[..], b"{}", br#"{"data":{"id":""}}"#] {
            assert_eq!(created_customer_id(none), Ok(None));
        }
    }

    #[test]
    fn lookup_d7_odd_statuses_are_502() {
        for status in [101, 201, 202, 204, 301, 307] {
            let failure = classify_lookup(&response(status, "{}")).unwrap_err();
            assert_eq!(failure.status, Some(502));
            assert!(failure.message.starts_with(LOOKUP_ERROR));
        }
    }

    #[test]
    fn lookup_error_bodies_follow_5_4() {
        let case = |status, body: &str| classify_lookup(&response(status, body)).unwrap_err();
        let conflict = case(409, r#"{"errors":[{"title":"Conflict","status":409}]}"#);
        assert_eq!(
            conflict.message,
            r#"{"errors":[{"title":"Conflict","status":409}]}"#
        );
        assert_eq!(conflict.class, FailureClass::Permanent);
        assert_eq!(
            case(502, "Bad gateway, retry").message,
            r#""Bad gateway, retry""#
        );
        assert_eq!(case(500, "").message, LOOKUP_ERROR);
        assert_eq!(case(500, "null").message, LOOKUP_ERROR);
        assert_eq!(case(500, "0").message, LOOKUP_ERROR);
        assert_eq!(case(500, r#""""#).message, LOOKUP_ERROR);
        assert_eq!(case(500, "  ").message, r#""  ""#);
        assert_eq!(case(500, r#"{"n":1.0}"#).message, r#"{"n":1}"#);
        assert_eq!(case(401, "{}").class, FailureClass::Auth);
        assert_eq!(case(429, "{}").class, FailureClass::Throttled);
        assert_eq!(case(503, "{}").class, FailureClass::Transient);
    }

    #[test]
    fn write_statuses() {
        assert_eq!(classify_write(&response(201, "{}")), Ok(201));
        assert_eq!(
            classify_write(&response(400, "{}")).unwrap_err().class,
            FailureClass::Permanent
        );
        assert_eq!(
            classify_write(&response(302, "")).unwrap_err().status,
            Some(502)
        );
    }

    fn by_external_id() -> CompanyLookup {
        CompanyLookup {
            by: kustomer_mapping::CompanyLookupBy::ExternalId,
            path: "/v1/companies?externalId=x".into(),
            cache_key: "externalId=x".into(),
        }
    }

    #[test]
    fn company_lookups_12_3() {
        let lookup = by_external_id();
        let answer = |status, body: &str| classify_company_lookup(&response(status, body), &lookup);
        assert_eq!(
            answer(
                200,
                r#"{"data":[{"id":"5f3c0ffee0000000000c0a01"},{"id":"5f3c0ffee0000000000c0a02"}]}"#
            ),
            Ok(CompanyAnswer::Found("5f3c0ffee0000000000c0a01".into()))
        );
        assert_eq!(answer(200, r#"{"data":[]}"#), Ok(CompanyAnswer::NotFound));
        assert_eq!(answer(404, "<html>"), Ok(CompanyAnswer::NotFound));
        for (status, body) in [
            (200, "{}"),
            (200, "[]"),
            (200, ""),
            (200, r#"{"data":[{"id":"../admin"}]}"#),
            (200, r#"{"data":[{}]}"#),
            (302, ""),
        ] {
            match answer(status, body) {
                Ok(CompanyAnswer::Unlinkable {
                    reason: NotLinked::BadAnswer,
                    failure,
                }) => {
                    assert_eq!(failure.status, Some(502));
                    assert!(failure.message.starts_with(LOOKUP_ERROR));
                }
                other => panic!("{status} {body}: {other:?}"),
            }
        }
        for status in [400, 401, 403, 409, 422] {
            match answer(status, r#"{"errors":[{"title":"Forbidden"}]}"#) {
                Ok(CompanyAnswer::Unlinkable {
                    reason: NotLinked::LookupRefused,
                    failure,
                }) => {
                    assert_eq!(failure.status, Some(status));
                    assert_eq!(failure.message, r#"{"errors":[{"title":"Forbidden"}]}"#);
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        for (status, class) in [
            (408, FailureClass::Transient),
            (429, FailureClass::Throttled),
            (500, FailureClass::Transient),
            (503, FailureClass::Transient),
        ] {
            let failure = answer(status, "").unwrap_err();
            assert_eq!((failure.status, failure.class), (Some(status), class));
        }
    }

    #[test]
    fn created_company_ids() {
        assert_eq!(
            created_company_id(br#"{"data":{"type":"company","id":"5f3c0ffee0000000000c0a01"}}"#)
                .as_deref(),
            Some("5f3c0ffee0000000000c0a01")
        );
        for body in [
            &b""[..],
            b"{}",
            br#"{"data":{"id":"x y"}}"#,
            br#"{"data":{"id":5}}"#,
        ] {
            assert_eq!(created_company_id(body), None);
        }
    }
}
