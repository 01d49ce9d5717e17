//! track, page, screen → `POST /v1/tracking/identityEvent` (spec section 6).

use serde_json::{Map, Value};

use super::identify::missing_value;
use super::{advanced, EventError, EventType, Method, Write};
use crate::settings::MappingFlags;
use crate::values::lists::{EMAIL, USER_ID};
use crate::values::{is_js_whitespace, is_usable, text_form, Reader};

const PATH: &str = "/v1/tracking/identityEvent";
const PAGE_NAME: &str = "Web-Page-Viewed";
const SCREEN_NAME: &str = "Screen-Viewed";
/// Sources of the page/screen name suffix.
const NAME_SOURCES: &[&str] = &["event", "properties.event", "name", "properties.name"];
const SESSION_ID: &[&str] = &[
    "properties.kustomerSessionId",
    "properties.kustomer_session_id",
    "context.sessionId",
];
const TRACKING_ID: &[&str] = &[
    "properties.kustomerTrackingId",
    "properties.kustomer_tracking_id",
];
/// Lifted into `sessionId`/`trackingId`, so left out of `meta`.
const NOT_META: &[&str] = &[
    "kustomerSessionId",
    "kustomer_session_id",
    "kustomerTrackingId",
    "kustomer_tracking_id",
];

pub(super) fn write(
    event: &Value,
    kind: EventType,
    flags: &MappingFlags,
) -> Result<Write, EventError> {
    let r = Reader::new(event);
    // Spec 6.4: the event name is checked before the identity.
    let name = match kind {
        EventType::Track => event
            .get("event")
            .filter(|name| is_usable(name))
            .cloned()
            .ok_or_else(|| missing_value("event"))?,
        EventType::Page => Value::String(template_name(&r, PAGE_NAME, flags.generic_page)),
        EventType::Screen => Value::String(template_name(&r, SCREEN_NAME, flags.generic_screen)),
        // map_event sends identify and group elsewhere; refuse rather than guess.
        EventType::Identify | EventType::Group => {
            return Err(EventError::bad_event(format!(
                "Event type {} is not a tracking event",
                kind.as_str()
            )))
        }
    };
    let identity = identity(&r, flags)?;

    let mut out = Map::with_capacity(4);
    let properties = event.get("properties").filter(|p| is_usable(p));
    let (name, meta) = if flags.advanced_transform {
        let meta = advanced::meta(properties, NOT_META);
        (advanced::name(&name), Some(Value::Object(meta)))
    } else {
        (name, properties.map(plain_meta))
    };
    out.insert("name".to_string(), name);
    if let Some(session) = r.first_usable(SESSION_ID) {
        out.insert("sessionId".to_string(), session.clone());
    }
    if let Some(tracking) = r.first_usable(TRACKING_ID) {
        out.insert("trackingId".to_string(), tracking.clone());
    }
    if let Some(mut meta) = meta {
        // [D11] Without meta there is nothing to remove; the event goes without meta.
        if flags.set_identity_email && flags.disable_email_as_tracking_property {
            if let Value::Object(map) = &mut meta {
                map.shift_remove("email");
            }
        }
        out.insert("meta".to_string(), meta);
    }

    let mut body = Map::with_capacity(2);
    body.insert("identity".to_string(), Value::Object(identity));
    body.insert("event".to_string(), Value::Object(out));
    Ok(Write {
        method: Method::Post,
        path: PATH.to_string(),
        body: Value::Object(body),
        fixes: Vec::new(),
    })
}

/// Spec 6.3: external id (D9: required), e-mail when asked for and present (D3, D10).
fn identity(r: &Reader, flags: &MappingFlags) -> Result<Map<String, Value>, EventError> {
    let external_id = r
        .first_usable(USER_ID)
        .ok_or_else(|| missing_value("userId"))?;
    let mut identity = Map::with_capacity(2);
    identity.insert("externalId".to_string(), external_id.clone());
    if flags.set_identity_email {
        if let Some(email) = r.first_usable(EMAIL) {
            identity.insert("email".to_string(), email.clone());
        }
    }
    Ok(identity)
}

/// `properties` as `meta` without the four Kustomer keys; non-objects pass through.
/// Copies entry by entry so the event itself is never touched.
fn plain_meta(properties: &Value) -> Value {
    match properties {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !NOT_META.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `<prefix>-<escaped text form>` (or the bare prefix), trimmed at the end as the
/// reference's template output was.
fn template_name(r: &Reader, prefix: &str, generic: bool) -> String {
    let source = if generic {
        None
    } else {
        r.first_usable(NAME_SOURCES)
    };
    let Some(source) = source else {
        return prefix.to_string();
    };
    let mut name = String::with_capacity(prefix.len() + 16);
    name.push_str(prefix);
    name.push('-');
    match source {
        Value::String(s) => push_html_escaped(&mut name, s),
        other => push_html_escaped(&mut name, &text_form(other)),
    }
    // The prefix starts without whitespace, so only the end can need trimming.
    let kept = name.trim_end_matches(is_js_whitespace).len();
    name.truncate(kept);
    name
}

/// Handlebars' escaping of `& < > " ' `` =`.
fn push_html_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '`' => out.push_str("&#x60;"),
            '=' => out.push_str("&#x3D;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{map_event, Plan};
    use serde_json::json;

    const OFF: MappingFlags = MappingFlags {
        generic_page: false,
        generic_screen: false,
        advanced_transform: false,
        set_identity_email: false,
        disable_email_as_tracking_property: false,
        fit_to_kustomer_schema: false,
        link_companies: false,
    };

    fn run(event: &Value, flags: MappingFlags) -> Result<Value, EventError> {
        match map_event(event, &flags)? {
            Plan::Tracking(write) => {
                assert_eq!(write.method, Method::Post);
                assert_eq!(write.path, "/v1/tracking/identityEvent");
                Ok(write.body)
            }
            other => panic!("tracking write expected, got {other:?}"),
        }
    }

    fn body(event: Value) -> Value {
        run(&event, OFF).unwrap()
    }

    fn error(event: Value) -> String {
        let err = run(&event, OFF).unwrap_err();
        assert_eq!(err.status, 400);
        err.message
    }

    fn page_name(event: Value, flags: MappingFlags) -> Value {
        run(&event, flags).unwrap()["event"]["name"].clone()
    }

    #[test]
    fn section_7_type_errors() {
        for missing in [
            json!({}),
            json!({"type": null}),
            json!({"type": ""}),
            json!({"type": 0}),
            json!({"type": false}),
        ] {
            assert_eq!(error(missing), "Event type is required");
        }
        // [D4]
        for bad in [
            json!(5),
            json!(-1.5),
            json!(true),
            json!({}),
            json!([]),
            json!(["track"]),
        ] {
            assert_eq!(
                error(json!({"type": bad, "userId": "u"})),
                "Event type must be a string"
            );
        }
        assert_eq!(
            error(json!({"type": "Batch", "userId": "u"})),
            "Event type Batch is not supported"
        );
        assert_eq!(
            error(json!({"type": "alias"})),
            "Event type alias is not supported"
        );
        for ok in ["PAGE", "ScReEn", "Track"] {
            assert!(
                run(&json!({"type": ok, "event": "e", "userId": "u"}), OFF).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn track_conformance_shape() {
        let event = json!({
            "type": "track", "event": "Tracking-Weekender", "userId": "user@doe", "anonymousId": "97c4",
            "properties": {"YearServicedNum": 211, "region": "strapis", "kustomerTrackingId": "sahetwiac", "kustomerSessionId": "63nsa22"}
        });
        let before = event.clone();
        assert_eq!(
            body(event.clone()),
            json!({"identity": {"externalId": "user@doe"}, "event": {
                "name": "Tracking-Weekender", "sessionId": "63nsa22", "trackingId": "sahetwiac",
                "meta": {"YearServicedNum": 211, "region": "strapis"}}})
        );
        // Never mutated.
        assert_eq!(event, before);
        let event = json!({
            "type": "track", "event": "Tracking-Weekender2", "userId": "user@doe",
            "properties": {"YearServicedNum": 211, "reg_8-821x": false, "kustomer_tracking_id": "sahetwiac", "kustomer_session_id": "63nsa22"}
        });
        assert_eq!(
            body(event),
            json!({"identity": {"externalId": "user@doe"}, "event": {
                "name": "Tracking-Weekender2", "sessionId": "63nsa22", "trackingId": "sahetwiac",
                "meta": {"YearServicedNum": 211, "reg_8-821x": false}}})
        );
    }

    #[test]
    fn track_name_rules() {
        for missing in [
            json!({"type": "track", "userId": "u"}),
            json!({"type": "track", "event": null, "userId": "u"}),
            json!({"type": "track", "event": "", "userId": "u"}),
        ] {
            assert_eq!(error(missing), "Missing required value from \"event\"");
        }
        // Any usable value is sent unchanged: no text form, no escaping, no trimming.
        for name in [
            json!(0),
            json!(false),
            json!(12.5),
            json!(" Q&A "),
            json!(["a"]),
            json!({"x": 1}),
        ] {
            let event = json!({"type": "track", "event": name.clone(), "userId": "u"});
            assert_eq!(body(event)["event"]["name"], name);
        }
        // Only msg.event counts for track.
        assert_eq!(
            error(
                json!({"type": "track", "name": "n", "properties": {"event": "e"}, "userId": "u"})
            ),
            "Missing required value from \"event\""
        );
    }

    #[test]
    fn section_6_4_order_of_checks() {
        // Event name before identity.
        assert_eq!(
            error(json!({"type": "track"})),
            "Missing required value from \"event\""
        );
        // [D9]
        assert_eq!(
            error(json!({"type": "track", "event": "e"})),
            "Missing required value from \"userId\""
        );
        assert_eq!(
            error(json!({"type": "page", "userId": "", "anonymousId": null})),
            "Missing required value from \"userId\""
        );
        assert_eq!(
            error(json!({"type": "screen", "traits": {"email": "e@x.test"}})),
            "Missing required value from \"userId\""
        );
    }

    #[test]
    fn identity_external_id_candidates() {
        let id = |event: Value| body(event)["identity"].clone();
        assert_eq!(
            id(json!({"type": "page", "anonymousId": "a"})),
            json!({"externalId": "a"})
        );
        assert_eq!(
            id(json!({"type": "page", "userId": 0, "anonymousId": "a"})),
            json!({"externalId": 0})
        );
        assert_eq!(
            id(
                json!({"type": "page", "traits": {"id": "t"}, "context": {"traits": {"userId": "c"}}})
            ),
            json!({"externalId": "t"})
        );
        assert_eq!(
            id(json!({"type": "page", "context": {"traits": {"id": "c"}}, "anonymousId": "a"})),
            json!({"externalId": "c"})
        );
    }

    #[test]
    fn page_and_screen_name_templates() {
        let page = |fields: Value| {
            let mut event = json!({"type": "page", "userId": "u"});
            event
                .as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            page_name(event, OFF)
        };
        assert_eq!(page(json!({})), json!("Web-Page-Viewed"));
        assert_eq!(
            page(json!({"name": "Cart-Viewed", "properties": {"name": "Cart Viewed"}})),
            json!("Web-Page-Viewed-Cart-Viewed")
        );
        // Sources in order: event, properties.event, name, properties.name.
        assert_eq!(
            page(json!({"event": "E", "properties": {"event": "PE", "name": "PN"}, "name": "N"})),
            json!("Web-Page-Viewed-E")
        );
        assert_eq!(
            page(json!({"event": "", "properties": {"event": "PE", "name": "PN"}, "name": "N"})),
            json!("Web-Page-Viewed-PE")
        );
        assert_eq!(
            page(json!({"event": null, "properties": {"name": "PN"}, "name": "N"})),
            json!("Web-Page-Viewed-N")
        );
        assert_eq!(
            page(json!({"properties": {"name": "PN"}})),
            json!("Web-Page-Viewed-PN")
        );
        // Text form and HTML escaping.
        assert_eq!(page(json!({"name": 0})), json!("Web-Page-Viewed-0"));
        assert_eq!(page(json!({"name": false})), json!("Web-Page-Viewed-false"));
        assert_eq!(page(json!({"name": 2.5})), json!("Web-Page-Viewed-2.5"));
        assert_eq!(
            page(json!({"name": {"a": 1}})),
            json!("Web-Page-Viewed-[object Object]")
        );
        assert_eq!(
            page(json!({"name": "Q&A"})),
            json!("Web-Page-Viewed-Q&amp;A")
        );
        assert_eq!(
            page(json!({"name": "<a href=\"x\">'`"})),
            json!("Web-Page-Viewed-&lt;a href&#x3D;&quot;x&quot;&gt;&#x27;&#x60;")
        );
        // Trimmed at the end only; leading whitespace stays after the dash.
        assert_eq!(
            page(json!({"name": "  Home  "})),
            json!("Web-Page-Viewed-  Home")
        );
        assert_eq!(
            page(json!({"name": "Home\u{feff}\u{3000}\n"})),
            json!("Web-Page-Viewed-Home")
        );
        assert_eq!(
            page(json!({"name": "Home\u{85}"})),
            json!("Web-Page-Viewed-Home\u{85}")
        );
        assert_eq!(page(json!({"name": "   "})), json!("Web-Page-Viewed-"));
        assert_eq!(page(json!({"name": []})), json!("Web-Page-Viewed-"));

        let screen = json!({"type": "screen", "userId": "u", "event": "Test-Event-Screen"});
        assert_eq!(
            page_name(screen.clone(), OFF),
            json!("Screen-Viewed-Test-Event-Screen")
        );
        let screen_ab =
            json!({"type": "screen", "userId": "u", "properties": {"name": ["A", "B"]}});
        assert_eq!(page_name(screen_ab, OFF), json!("Screen-Viewed-A,B"));
        assert_eq!(
            page_name(json!({"type": "screen", "userId": "u"}), OFF),
            json!("Screen-Viewed")
        );
    }

    #[test]
    fn generic_names_only_for_their_own_type() {
        let page = json!({"type": "page", "userId": "u", "name": "Unfinished page"});
        let screen = json!({"type": "screen", "userId": "u", "event": "Test-Event-Screen"});
        let generic_page = MappingFlags {
            generic_page: true,
            ..OFF
        };
        let generic_screen = MappingFlags {
            generic_screen: true,
            ..OFF
        };
        assert_eq!(
            page_name(page.clone(), generic_page),
            json!("Web-Page-Viewed")
        );
        assert_eq!(
            page_name(screen.clone(), generic_page),
            json!("Screen-Viewed-Test-Event-Screen")
        );
        assert_eq!(page_name(screen, generic_screen), json!("Screen-Viewed"));
        assert_eq!(
            page_name(page, generic_screen),
            json!("Web-Page-Viewed-Unfinished page")
        );
    }

    #[test]
    fn session_and_tracking_ids() {
        let ids = |properties: Value, context: Value| {
            let out = body(json!({"type": "screen", "userId": "u", "properties": properties, "context": context}))["event"].clone();
            (
                out.get("sessionId").cloned(),
                out.get("trackingId").cloned(),
            )
        };
        assert_eq!(
            ids(
                json!({"kustomerSessionId": "s1", "kustomer_session_id": "s2", "kustomerTrackingId": "t1", "kustomer_tracking_id": "t2"}),
                json!({"sessionId": "s3"})
            ),
            (Some(json!("s1")), Some(json!("t1")))
        );
        assert_eq!(
            ids(
                json!({"kustomerSessionId": "", "kustomer_session_id": "s2", "kustomerTrackingId": null, "kustomer_tracking_id": "t2"}),
                json!({})
            ),
            (Some(json!("s2")), Some(json!("t2")))
        );
        assert_eq!(
            ids(json!({}), json!({"sessionId": "hsad522"})),
            (Some(json!("hsad522")), None)
        );
        assert_eq!(
            ids(
                json!({"kustomerSessionId": 0, "kustomerTrackingId": 17}),
                json!({})
            ),
            (Some(json!(0)), Some(json!(17)))
        );
        assert_eq!(
            ids(json!({}), json!({"sessionId": 1609693773})),
            (Some(json!(1609693773)), None)
        );
        assert_eq!(ids(json!({}), json!({})), (None, None));
    }

    #[test]
    fn meta_rules() {
        let meta = |properties: Value| {
            body(json!({"type": "page", "userId": "u", "properties": properties}))["event"]
                .get("meta")
                .cloned()
        };
        assert_eq!(
            meta(
                json!({"kustomerSessionId": "s", "kustomer_session_id": "s", "kustomerTrackingId": "t", "kustomer_tracking_id": "t",
                "name": "n", "event": "e", "email": "m", "n": null, "deep": {"x": null}})
            ),
            Some(json!({"name": "n", "event": "e", "email": "m", "n": null, "deep": {"x": null}}))
        );
        assert_eq!(meta(json!({})), Some(json!({})));
        assert_eq!(meta(json!({"kustomerSessionId": "s"})), Some(json!({})));
        assert_eq!(
            meta(json!(["a", {"kustomerSessionId": 1}])),
            Some(json!(["a", {"kustomerSessionId": 1}]))
        );
        assert_eq!(meta(json!(0)), Some(json!(0)));
        assert_eq!(meta(json!(false)), Some(json!(false)));
        assert_eq!(meta(json!("text")), Some(json!("text")));
        assert_eq!(meta(json!("")), None);
        assert_eq!(meta(json!(null)), None);
        assert_eq!(
            body(json!({"type": "page", "userId": "u"}))["event"],
            json!({"name": "Web-Page-Viewed"})
        );
    }

    #[test]
    fn set_identity_email_d3_d10() {
        let with_email = MappingFlags {
            set_identity_email: true,
            ..OFF
        };
        let identity = |event: Value, flags| run(&event, flags).unwrap()["identity"].clone();
        let base = json!({"type": "track", "event": "e", "userId": "u",
            "traits": {"email": "t@x.test"}, "context": {"traits": {"email": "c@x.test"}}, "properties": {"email": "p@x.test"}});
        assert_eq!(
            identity(base.clone(), with_email),
            json!({"externalId": "u", "email": "t@x.test"})
        );
        assert_eq!(identity(base, OFF), json!({"externalId": "u"}));
        let event = json!({"type": "track", "event": "e", "userId": "u", "context": {"traits": {"email": "c@x.test"}}});
        assert_eq!(
            identity(event, with_email),
            json!({"externalId": "u", "email": "c@x.test"})
        );
        let event = json!({"type": "track", "event": "e", "userId": "u", "properties": {"email": "p@x.test"}});
        assert_eq!(
            identity(event, with_email),
            json!({"externalId": "u", "email": "p@x.test"})
        );
        // [D3] an external id is not an e-mail; [D10] no e-mail → no key.
        let event = json!({"type": "track", "event": "e", "userId": "u",
            "context": {"externalId": [{"type": "kustomerId", "id": "k@x.test"}]}, "traits": {"email": ""}});
        assert_eq!(identity(event, with_email), json!({"externalId": "u"}));
        // A usable falsy e-mail is still the first usable value.
        let event = json!({"type": "track", "event": "e", "userId": "u", "traits": {"email": 0}});
        assert_eq!(
            identity(event, with_email),
            json!({"externalId": "u", "email": 0})
        );
    }

    #[test]
    fn disable_email_as_tracking_property_d11() {
        let both = MappingFlags {
            set_identity_email: true,
            disable_email_as_tracking_property: true,
            ..OFF
        };
        let disable_only = MappingFlags {
            disable_email_as_tracking_property: true,
            ..OFF
        };
        let event = json!({"type": "track", "event": "e", "userId": "u", "properties": {"a": 1, "email": "p@x.test", "b": 2}});
        let out = run(&event, both).unwrap();
        assert_eq!(
            out["identity"],
            json!({"externalId": "u", "email": "p@x.test"})
        );
        assert_eq!(
            serde_json::to_string(&out["event"]["meta"]).unwrap(),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(
            run(&event, disable_only).unwrap()["event"]["meta"],
            json!({"a": 1, "email": "p@x.test", "b": 2})
        );
        // [D11] no properties: sent without meta, no crash.
        let event =
            json!({"type": "track", "event": "e", "userId": "u", "traits": {"email": "t@x.test"}});
        assert_eq!(
            run(&event, both).unwrap(),
            json!({"identity": {"externalId": "u", "email": "t@x.test"}, "event": {"name": "e"}})
        );
        // Non-object meta is left alone.
        let event = json!({"type": "track", "event": "e", "userId": "u", "properties": ["email"]});
        assert_eq!(
            run(&event, both).unwrap()["event"]["meta"],
            json!(["email"])
        );
    }

    #[test]
    fn disable_email_after_advanced_transform() {
        let flags = MappingFlags {
            advanced_transform: true,
            set_identity_email: true,
            disable_email_as_tracking_property: true,
            ..OFF
        };
        let event = json!({"type": "track", "event": "e", "userId": "u", "properties": {" email ": "x@y.test", "other": "o"}});
        assert_eq!(
            run(&event, flags).unwrap()["event"]["meta"],
            json!({"other": "o"})
        );
        let event =
            json!({"type": "track", "event": "e", "userId": "u", "properties": {"email": 5}});
        assert_eq!(
            run(&event, flags).unwrap()["event"]["meta"],
            json!({"emailNum": 5})
        );
        let event = json!({"type": "track", "event": "e", "userId": "u", "properties": {"email": "2020-01-01"}});
        assert_eq!(
            run(&event, flags).unwrap()["event"]["meta"],
            json!({"emailAt": "2020-01-01"})
        );
        // With advancedTransform, meta is always there.
        let event = json!({"type": "track", "event": "e", "userId": "u"});
        assert_eq!(
            run(&event, flags).unwrap()["event"],
            json!({"name": "e", "meta": {}})
        );
    }

    #[test]
    fn advanced_transform_in_the_event() {
        let advanced = MappingFlags {
            advanced_transform: true,
            ..OFF
        };
        let event = json!({"type": "track", "event": " Add  to   Cart ", "userId": "u",
            "properties": {"kustomerSessionId": "s", "kustomer_tracking_id": "t", "price": 9.5, "on": true, "when": "2020-02-29", "12": 1, "12Num": "lit"}});
        let before = event.clone();
        let out = run(&event, advanced).unwrap();
        assert_eq!(event, before);
        assert_eq!(
            out,
            json!({"identity": {"externalId": "u"}, "event": {"name": "Add-to-Cart", "sessionId": "s", "trackingId": "t",
                "meta": {"12Num": "lit", "priceNum": 9.5, "on": "true", "whenAt": "2020-02-29"}}})
        );
        // [D12] non-string names.
        for (name, text) in [
            (json!(7), "7"),
            (json!(true), "true"),
            (json!(false), "false"),
            (json!(0), "0"),
        ] {
            let event = json!({"type": "track", "event": name, "userId": "u"});
            assert_eq!(run(&event, advanced).unwrap()["event"]["name"], json!(text));
        }
        // Non-object properties give an empty meta.
        let event = json!({"type": "track", "event": "e", "userId": "u", "properties": ["a"]});
        assert_eq!(run(&event, advanced).unwrap()["event"]["meta"], json!({}));
        // Page/screen names go through the same rule; the fixed ones are unaffected.
        let event = json!({"type": "page", "userId": "u", "name": " Home  Page "});
        assert_eq!(
            page_name(event, advanced),
            json!("Web-Page-Viewed--Home-Page")
        );
        assert_eq!(
            page_name(json!({"type": "screen", "userId": "u"}), advanced),
            json!("Screen-Viewed")
        );
        let generic = MappingFlags {
            generic_page: true,
            ..advanced
        };
        assert_eq!(
            page_name(json!({"type": "page", "userId": "u", "name": "x"}), generic),
            json!("Web-Page-Viewed")
        );
    }

    #[test]
    fn identify_kind_is_refused_here() {
        assert!(write(
            &json!({"type": "identify", "userId": "u"}),
            EventType::Identify,
            &OFF
        )
        .is_err());
    }
}
