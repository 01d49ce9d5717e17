//! identify → customer body and look-up plan (spec section 5).

use serde_json::{json, Map, Value};

use super::{CustomerRef, EventError, IdentifyPlan, Lookup, LookupBy};
use crate::values::lists::{
    ADDRESS, EMAIL, FIRST_NAME, LAST_NAME, PHONE, USER_ID, USER_ID_WITHOUT_ANONYMOUS, WEBSITE,
};
use crate::values::{encode_path_segment, is_truthy, push_text_form, Reader};

/// Spec 5.5: body key and its candidate paths, in body order.
const FIELDS: &[(&str, &[&str])] = &[
    ("name", &["traits.name", "context.traits.name"]),
    ("externalId", USER_ID),
    ("username", &["traits.userName", "context.traits.userName"]),
    (
        "company",
        &[
            "traits.company.name",
            "context.traits.company.name",
            "traits.company",
            "context.traits.company",
        ],
    ),
    (
        "signedUpAt",
        &["traits.createdAt", "context.traits.createdAt"],
    ),
    (
        "lastActivityAt",
        &["traits.lastActivityAt", "context.traits.lastActivityAt"],
    ),
    (
        "lastCustomerActivityAt",
        &[
            "traits.lastCustomerActivityAt",
            "context.traits.lastCustomerActivityAt",
        ],
    ),
    (
        "lastSeenAt",
        &["traits.lastSeenAt", "context.traits.lastSeenAt"],
    ),
    (
        "importedAt",
        &["traits.importedAt", "context.traits.importedAt"],
    ),
    ("avatarUrl", &["traits.avatar", "context.traits.avatar"]),
    ("gender", &["traits.gender", "context.traits.gender"]),
    ("tags", &["traits.tags", "context.traits.tags"]),
    ("locale", &["context.locale"]),
    ("emails", &["traits.emails", "context.traits.emails"]),
    ("phones", &["traits.phones", "context.traits.phones"]),
    ("socials", &["traits.socials", "context.traits.socials"]),
    (
        "birthdayAt",
        &[
            "traits.dob",
            "context.traits.dob",
            "traits.birthday",
            "context.traits.birthday",
        ],
    ),
    (
        "custom",
        &["traits.customObject", "context.traits.customObject"],
    ),
    (
        "sentiment",
        &["traits.sentiment", "context.traits.sentiment"],
    ),
    (
        "whatsapps",
        &["traits.whatsapps", "context.traits.whatsapps"],
    ),
    (
        "facebookIds",
        &["traits.facebookIds", "context.traits.facebookIds"],
    ),
    (
        "instagramIds",
        &["traits.instagramIds", "context.traits.instagramIds"],
    ),
    ("timeZone", &["traits.timeZone", "context.traits.timeZone"]),
    (
        "defaultLang",
        &["traits.defaultLanguage", "context.traits.defaultLanguage"],
    ),
    ("rev", &["traits.rev", "context.traits.rev"]),
];

/// Spec 7: the 400 for a required value that is missing (`"userId"`, `"event"`).
pub(super) fn missing_value(field: &str) -> EventError {
    EventError::bad_event(format!("Missing required value from \"{field}\""))
}

pub(super) fn plan(event: &Value) -> Result<IdentifyPlan, EventError> {
    let r = Reader::new(event);
    // [D5] The event cannot succeed without an id: fail before any look-up.
    let external_id = r
        .first_usable(USER_ID)
        .ok_or_else(|| missing_value("userId"))?;
    Ok(IdentifyPlan {
        customer: customer_ref(&r, EMAIL),
        body: body(&r, external_id),
        fixes: Vec::new(),
        company: None,
    })
}

/// Spec 5.2: the kustomerId, else the look-ups (e-mail from `email_paths`: the e-mail list
/// for identify, `context.traits.email` for group, 12.2).
pub(super) fn customer_ref(r: &Reader, email_paths: &[&str]) -> CustomerRef {
    match kustomer_id(r) {
        Some(id) => CustomerRef::Known(encode_path_segment(id)),
        None => CustomerRef::Lookups(lookups(r, email_paths)),
    }
}

/// Spec 3.4: the `id` of the first `context.externalId` element typed `kustomerId`.
fn kustomer_id<'a>(r: &Reader<'a>) -> Option<&'a Value> {
    let Value::Array(ids) = r.get("context.externalId")? else {
        return None;
    };
    // Later elements are not consulted when the selected one has no usable id.
    let selected = ids
        .iter()
        .find(|item| item.get("type").and_then(Value::as_str) == Some("kustomerId"))?;
    selected.get("id").filter(|id| is_truthy(id))
}

/// Spec 5.2 step 2: e-mail, user id, anonymous id; each only when truthy, [D22] each
/// URL at most once.
fn lookups(r: &Reader, email_paths: &[&str]) -> Vec<Lookup> {
    let candidates = [
        (LookupBy::Email, "email=", r.first_usable(email_paths)),
        (
            LookupBy::UserId,
            "externalId=",
            r.first_usable(USER_ID_WITHOUT_ANONYMOUS),
        ),
        (LookupBy::AnonymousId, "externalId=", r.get("anonymousId")),
    ];
    let mut lookups: Vec<Lookup> = Vec::with_capacity(candidates.len());
    for (by, key, value) in candidates {
        let Some(value) = value.filter(|v| is_truthy(v)) else {
            continue;
        };
        let path = format!("/v1/customers/{key}{}", encode_path_segment(value));
        if lookups.iter().all(|known| known.path != path) {
            lookups.push(Lookup { by, path });
        }
    }
    lookups
}

/// Spec 5.5: mapped fields, then the derived ones; nothing null at the top level.
fn body(r: &Reader, external_id: &Value) -> Value {
    let mut body = Map::with_capacity(FIELDS.len() + 2);
    for &(key, paths) in FIELDS {
        let found = if key == "externalId" {
            Some(external_id)
        } else {
            r.first_usable(paths)
        };
        // The derived name/emails/phones replace a value that is not truthy; they are
        // kept in their table slot (key order is irrelevant to Kustomer).
        let value = match key {
            "name" => truthy_or_derived(found, || derived_name(r)),
            "emails" => truthy_or_derived(found, || {
                r.first_truthy_usable(EMAIL)
                    .map(|email| json!([{"type": "home", "email": email}]))
            }),
            "phones" => truthy_or_derived(found, || {
                r.first_truthy_usable(PHONE)
                    .map(|phone| json!([{"type": "home", "phone": phone}]))
            }),
            _ => found.cloned(),
        };
        if let Some(value) = value {
            body.insert(key.to_string(), value);
        }
    }
    if let Some(website) = r.first_truthy_usable(WEBSITE) {
        body.insert("urls".to_string(), json!([{ "url": website }]));
    }
    if let Some(address) = r.first_truthy_usable(ADDRESS).and_then(address_text) {
        body.insert(
            "locations".to_string(),
            json!([{"type": "home", "address": address}]),
        );
    }
    Value::Object(body)
}

/// The mapped value when truthy; otherwise the derived one, if any; otherwise the
/// mapped (usable but falsy) value.
fn truthy_or_derived(
    found: Option<&Value>,
    derive: impl FnOnce() -> Option<Value>,
) -> Option<Value> {
    match found {
        Some(value) if is_truthy(value) => Some(value.clone()),
        _ => derive().or_else(|| found.cloned()),
    }
}

/// `"<first> <last>"` when both lists give truthy values.
fn derived_name(r: &Reader) -> Option<Value> {
    let first = r.first_truthy_usable(FIRST_NAME)?;
    let last = r.first_truthy_usable(LAST_NAME)?;
    let mut name = String::new();
    push_text_form(&mut name, first);
    name.push(' ');
    push_text_form(&mut name, last);
    Some(Value::String(name))
}

/// A truthy address as location text: a string as is; an object's street, city, state and
/// postal code joined by single spaces, empty slots kept; nothing for other types.
pub(super) fn address_text(address: &Value) -> Option<Value> {
    match address {
        Value::String(_) => Some(address.clone()),
        Value::Object(map) => {
            let parts = ["street", "city", "state", "postalCode"]
                .map(|key| map.get(key).filter(|part| is_truthy(part)));
            if parts.iter().all(Option::is_none) {
                return None;
            }
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                if let Some(part) = part {
                    push_text_form(&mut text, part);
                }
            }
            Some(Value::String(text))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MappingFlags;
    use crate::{map_event, Plan};

    fn lookup(by: LookupBy, path: &str) -> Lookup {
        Lookup {
            by,
            path: path.to_string(),
        }
    }

    fn lookups_of(event: Value) -> Vec<Lookup> {
        match plan(&event).unwrap().customer {
            CustomerRef::Lookups(lookups) => lookups,
            other => panic!("expected look-ups, got {other:?}"),
        }
    }

    fn body_of(event: Value) -> Value {
        plan(&event).unwrap().body
    }

    #[test]
    fn d5_missing_user_id_fails_before_anything() {
        for event in [
            json!({"type": "identify"}),
            json!({"type": "identify", "userId": "", "anonymousId": null, "traits": {"email": "a@b.test"}}),
            json!({"type": "identify", "context": {"externalId": [{"type": "kustomerId", "id": "k1"}]}}),
            json!({"type": "identify", "traits": {"userId": null, "id": ""}, "context": {"traits": {"userId": ""}}}),
        ] {
            let err = plan(&event).unwrap_err();
            assert_eq!(
                err,
                EventError::bad_event("Missing required value from \"userId\"")
            );
        }
    }

    #[test]
    fn external_id_candidates_in_order() {
        let full = json!({
            "userId": "u", "anonymousId": "anon",
            "traits": {"userId": "tu", "id": "ti"},
            "context": {"traits": {"userId": "cu", "id": "ci"}}
        });
        assert_eq!(body_of(full.clone())["externalId"], json!("u"));
        let mut e = full.clone();
        e["userId"] = json!(null);
        assert_eq!(body_of(e.clone())["externalId"], json!("tu"));
        e["traits"]["userId"] = json!("");
        assert_eq!(body_of(e.clone())["externalId"], json!("ti"));
        e["traits"]["id"] = json!(null);
        assert_eq!(body_of(e.clone())["externalId"], json!("cu"));
        e["context"]["traits"]["userId"] = json!(null);
        assert_eq!(body_of(e.clone())["externalId"], json!("ci"));
        e["context"]["traits"]["id"] = json!(null);
        assert_eq!(body_of(e)["externalId"], json!("anon"));
        // userId 0 is a valid externalId but not a look-up key.
        let event = json!({"userId": 0, "anonymousId": "a1"});
        assert_eq!(body_of(event.clone())["externalId"], json!(0));
        assert_eq!(
            lookups_of(event),
            vec![lookup(LookupBy::AnonymousId, "/v1/customers/externalId=a1")]
        );
        assert_eq!(
            body_of(json!({"userId": false}))["externalId"],
            json!(false)
        );
    }

    #[test]
    fn kustomer_id_shortcut_spec_3_4() {
        let with_ids = |ids: Value| json!({"userId": "u1", "context": {"externalId": ids}});
        let customer = |event: Value| plan(&event).unwrap().customer;
        assert_eq!(
            customer(with_ids(json!([{"type": "kustomerId", "id": "abcd1234"}]))),
            CustomerRef::Known("abcd1234".into())
        );
        assert_eq!(
            customer(with_ids(
                json!([{"type": "other", "id": "x"}, null, 5, {"type": "kustomerId", "id": "k2"}])
            )),
            CustomerRef::Known("k2".into())
        );
        // Case-sensitive type.
        assert!(matches!(
            customer(with_ids(json!([{"type": "KustomerId", "id": "k"}]))),
            CustomerRef::Lookups(_)
        ));
        // The first kustomerId element decides, even with an empty id.
        for empty in [json!(""), json!(null), json!(0), json!(false)] {
            assert!(matches!(
                customer(with_ids(
                    json!([{"type": "kustomerId", "id": empty}, {"type": "kustomerId", "id": "k2"}])
                )),
                CustomerRef::Lookups(_)
            ));
        }
        assert!(matches!(
            customer(with_ids(
                json!([{"type": "kustomerId"}, {"type": "kustomerId", "id": "k2"}])
            )),
            CustomerRef::Lookups(_)
        ));
        // Must be an array.
        assert!(matches!(
            customer(with_ids(json!({"0": {"type": "kustomerId", "id": "k"}}))),
            CustomerRef::Lookups(_)
        ));
        // [D2] encoded, text form.
        assert_eq!(
            customer(with_ids(json!([{"type": "kustomerId", "id": 987}]))),
            CustomerRef::Known("987".into())
        );
        assert_eq!(
            customer(with_ids(
                json!([{"type": "kustomerId", "id": "x/../admin"}])
            )),
            CustomerRef::Known("x%2F..%2Fadmin".into())
        );
        assert_eq!(
            customer(with_ids(json!([{"type": "kustomerId", "id": "."}]))),
            CustomerRef::Known("%2E".into())
        );
        assert_eq!(
            customer(with_ids(json!([{"type": "kustomerId", "id": ".."}]))),
            CustomerRef::Known("%2E%2E".into())
        );
        // No look-ups with a kustomerId, even when e-mail and ids are there.
        let event = json!({"userId": "u", "anonymousId": "a", "traits": {"email": "e@x.test"},
            "context": {"externalId": [{"type": "kustomerId", "id": "abcd1234"}]}});
        let plan = plan(&event).unwrap();
        assert_eq!(plan.customer, CustomerRef::Known("abcd1234".into()));
        assert_eq!(
            plan.update("abcd1234").path,
            "/v1/customers/abcd1234?replace=false"
        );
    }

    #[test]
    fn lookups_in_order_only_for_truthy_keys() {
        let event = json!({"userId": "Testc", "anonymousId": "97c46c81", "context": {"traits": {"email": "test@rudderstack.com"}}});
        assert_eq!(
            lookups_of(event),
            vec![
                lookup(LookupBy::Email, "/v1/customers/email=test@rudderstack.com"),
                lookup(LookupBy::UserId, "/v1/customers/externalId=Testc"),
                lookup(LookupBy::AnonymousId, "/v1/customers/externalId=97c46c81"),
            ]
        );
        // uid from the traits; anonymous id only from msg.anonymousId.
        let event = json!({"traits": {"id": "t-id"}, "context": {"traits": {"anonymousId": "x"}}});
        assert_eq!(
            lookups_of(event),
            vec![lookup(LookupBy::UserId, "/v1/customers/externalId=t-id")]
        );
        // The first usable e-mail decides: `false` is usable but not truthy, so no e-mail look-up.
        let event = json!({"userId": "u", "traits": {"email": false}, "context": {"traits": {"email": "e@x.test"}}});
        assert_eq!(
            lookups_of(event),
            vec![lookup(LookupBy::UserId, "/v1/customers/externalId=u")]
        );
        let event = json!({"userId": "", "traits": {"email": "", "userId": 0}, "anonymousId": "a"});
        assert_eq!(
            lookups_of(event),
            vec![lookup(LookupBy::AnonymousId, "/v1/customers/externalId=a")]
        );
        // Only the anonymous id: it is both externalId and the one look-up.
        let event = json!({"anonymousId": 42});
        assert_eq!(
            lookups_of(event.clone()),
            vec![lookup(LookupBy::AnonymousId, "/v1/customers/externalId=42")]
        );
        assert_eq!(body_of(event)["externalId"], json!(42));
    }

    #[test]
    fn d2_lookup_values_are_encoded() {
        let event = json!({"userId": "dept/sales?q=1#top", "anonymousId": "id with two spaces",
            "traits": {"email": "50%off@shop.test"}});
        assert_eq!(
            lookups_of(event),
            vec![
                lookup(LookupBy::Email, "/v1/customers/email=50%25off@shop.test"),
                lookup(
                    LookupBy::UserId,
                    "/v1/customers/externalId=dept%2Fsales%3Fq=1%23top"
                ),
                lookup(
                    LookupBy::AnonymousId,
                    "/v1/customers/externalId=id%20with%20two%20spaces"
                ),
            ]
        );
        let event = json!({"userId": "x/../admin", "properties": {"email": "zoë@café.test"}});
        assert_eq!(
            lookups_of(event),
            vec![
                lookup(
                    LookupBy::Email,
                    "/v1/customers/email=zo%C3%AB@caf%C3%A9.test"
                ),
                lookup(LookupBy::UserId, "/v1/customers/externalId=x%2F..%2Fadmin"),
            ]
        );
        let event = json!({"userId": 987, "traits": {"email": "ann.lee+promo@shop.test"}});
        assert_eq!(
            lookups_of(event),
            vec![
                lookup(
                    LookupBy::Email,
                    "/v1/customers/email=ann.lee+promo@shop.test"
                ),
                lookup(LookupBy::UserId, "/v1/customers/externalId=987"),
            ]
        );
    }

    #[test]
    fn d22_duplicate_lookup_urls_are_skipped() {
        let event = json!({"userId": "same", "anonymousId": "same"});
        assert_eq!(
            lookups_of(event),
            vec![lookup(LookupBy::UserId, "/v1/customers/externalId=same")]
        );
        let event = json!({"userId": 7, "anonymousId": "7"});
        assert_eq!(
            lookups_of(event),
            vec![lookup(LookupBy::UserId, "/v1/customers/externalId=7")]
        );
        // An e-mail equal to an id is a different URL.
        let event = json!({"userId": "a@b.test", "traits": {"email": "a@b.test"}});
        assert_eq!(lookups_of(event).len(), 2);
    }

    #[test]
    fn d3_external_id_is_never_an_email() {
        let event = json!({"userId": "u", "context": {"externalId": [{"type": "zendesk", "id": "z@x.test"}]}});
        assert_eq!(
            lookups_of(event.clone()),
            vec![lookup(LookupBy::UserId, "/v1/customers/externalId=u")]
        );
        assert_eq!(body_of(event), json!({"externalId": "u"}));
    }

    #[test]
    fn every_mapped_field_from_traits() {
        let event = json!({
            "type": "identify", "userId": "u1",
            "context": {"locale": "en-US"},
            "traits": {
                "name": "Ann Lee", "userName": "ann", "company": {"name": "Acme"},
                "createdAt": "c", "lastActivityAt": "la", "lastCustomerActivityAt": "lca",
                "lastSeenAt": "ls", "importedAt": "ia", "avatar": "av", "gender": "f",
                "tags": ["t"], "locale": "fr-FR", "emails": [{"email": "e"}], "phones": [{"phone": "p"}],
                "socials": [{"type": "x"}], "dob": "1990", "customObject": {"k": null},
                "sentiment": {"polarity": 1}, "whatsapps": ["w"], "facebookIds": ["f"],
                "instagramIds": ["i"], "timeZone": "UTC", "defaultLanguage": "en", "rev": 3
            }
        });
        assert_eq!(
            body_of(event),
            json!({
                "name": "Ann Lee", "externalId": "u1", "username": "ann", "company": "Acme",
                "signedUpAt": "c", "lastActivityAt": "la", "lastCustomerActivityAt": "lca",
                "lastSeenAt": "ls", "importedAt": "ia", "avatarUrl": "av", "gender": "f",
                "tags": ["t"], "locale": "en-US", "emails": [{"email": "e"}], "phones": [{"phone": "p"}],
                "socials": [{"type": "x"}], "birthdayAt": "1990", "custom": {"k": null},
                "sentiment": {"polarity": 1}, "whatsapps": ["w"], "facebookIds": ["f"],
                "instagramIds": ["i"], "timeZone": "UTC", "defaultLang": "en", "rev": 3
            })
        );
    }

    #[test]
    fn every_mapped_field_from_context_traits() {
        let event = json!({
            "anonymousId": "a1",
            "context": {"traits": {
                "name": "Ann Lee", "userName": "ann", "company": {"name": "Acme"},
                "createdAt": "c", "lastActivityAt": "la", "lastCustomerActivityAt": "lca",
                "lastSeenAt": "ls", "importedAt": "ia", "avatar": "av", "gender": "f",
                "tags": ["t"], "locale": "fr-FR", "emails": [{"email": "e"}], "phones": [{"phone": "p"}],
                "socials": [{"type": "x"}], "birthday": "1990", "customObject": {"k": 1},
                "sentiment": 0, "whatsapps": ["w"], "facebookIds": ["f"],
                "instagramIds": ["i"], "timeZone": "UTC", "defaultLanguage": "en", "rev": 0
            }}
        });
        assert_eq!(
            body_of(event),
            json!({
                "name": "Ann Lee", "externalId": "a1", "username": "ann", "company": "Acme",
                "signedUpAt": "c", "lastActivityAt": "la", "lastCustomerActivityAt": "lca",
                "lastSeenAt": "ls", "importedAt": "ia", "avatarUrl": "av", "gender": "f",
                "tags": ["t"], "emails": [{"email": "e"}], "phones": [{"phone": "p"}],
                "socials": [{"type": "x"}], "birthdayAt": "1990", "custom": {"k": 1},
                "sentiment": 0, "whatsapps": ["w"], "facebookIds": ["f"],
                "instagramIds": ["i"], "timeZone": "UTC", "defaultLang": "en", "rev": 0
            })
        );
    }

    #[test]
    fn precedence_between_candidates() {
        // Root traits beat context.traits field by field.
        let event = json!({"userId": "u", "traits": {"gender": "f"},
            "context": {"traits": {"gender": "m", "timeZone": "UTC"}}});
        assert_eq!(
            body_of(event),
            json!({"externalId": "u", "gender": "f", "timeZone": "UTC"})
        );
        // context.traits.dob beats traits.birthday.
        let event = json!({"userId": "u", "traits": {"birthday": "b"}, "context": {"traits": {"dob": "d"}}});
        assert_eq!(body_of(event)["birthdayAt"], json!("d"));
        let event = json!({"userId": "u", "traits": {"birthday": "b"}, "context": {"traits": {"birthday": "cb"}}});
        assert_eq!(body_of(event)["birthdayAt"], json!("b"));
        // context.traits.company.name beats a root traits.company string.
        let event = json!({"userId": "u", "traits": {"company": "Root Inc"}, "context": {"traits": {"company": {"name": "Ctx"}}}});
        assert_eq!(body_of(event)["company"], json!("Ctx"));
        let event = json!({"userId": "u", "traits": {"company": "Root Inc"}});
        assert_eq!(body_of(event)["company"], json!("Root Inc"));
        // A company object without name is sent whole.
        let event = json!({"userId": "u", "traits": {"company": {"id": 5, "x": null}}});
        assert_eq!(body_of(event)["company"], json!({"id": 5, "x": null}));
        // locale only from context.locale.
        let event = json!({"userId": "u", "traits": {"locale": "fr"}, "context": {"traits": {"locale": "de"}}});
        assert_eq!(body_of(event), json!({"externalId": "u"}));
    }

    #[test]
    fn values_keep_their_type_and_nulls_are_dropped() {
        let event = json!({"userId": "u", "traits": {
            "phones": "text", "tags": [], "rev": 0, "gender": false, "name": null, "userName": "",
            "customObject": {"a": null, "b": [null]}, "avatar": null
        }});
        assert_eq!(
            body_of(event),
            json!({"externalId": "u", "phones": "text", "tags": [], "rev": 0, "gender": false,
                "custom": {"a": null, "b": [null]}})
        );
    }

    #[test]
    fn derived_name() {
        let name = |traits: Value| {
            body_of(json!({"userId": "u", "traits": traits}))
                .get("name")
                .cloned()
        };
        assert_eq!(
            name(json!({"firstName": "Test", "lastName": "Rudderlabs"})),
            Some(json!("Test Rudderlabs"))
        );
        assert_eq!(
            name(json!({"firstname": "a", "last_name": "b"})),
            Some(json!("a b"))
        );
        assert_eq!(
            name(json!({"first_name": 7, "lastname": ["x", "y"]})),
            Some(json!("7 x,y"))
        );
        assert_eq!(name(json!({"firstName": "Only"})), None);
        assert_eq!(name(json!({"lastName": "Only"})), None);
        assert_eq!(name(json!({"firstName": "A", "lastName": 0})), None);
        // An existing truthy name wins.
        assert_eq!(
            name(json!({"name": "Given", "firstName": "A", "lastName": "B"})),
            Some(json!("Given"))
        );
        // A falsy usable name is replaced by the derived one, kept otherwise.
        assert_eq!(
            name(json!({"name": 0, "firstName": "A", "lastName": "B"})),
            Some(json!("A B"))
        );
        assert_eq!(
            name(json!({"name": false, "firstName": "A"})),
            Some(json!(false))
        );
        // First/last from context.traits, root first.
        let event = json!({"userId": "u", "traits": {"lastName": "Root"},
            "context": {"traits": {"firstName": "Ctx", "lastName": "Ctx"}}});
        assert_eq!(body_of(event)["name"], json!("Ctx Root"));
    }

    #[test]
    fn derived_emails_and_phones() {
        let event =
            json!({"userId": "u", "context": {"traits": {"email": "e@x.test", "phone": "+1"}}});
        assert_eq!(
            body_of(event),
            json!({"externalId": "u", "emails": [{"type": "home", "email": "e@x.test"}],
                "phones": [{"type": "home", "phone": "+1"}]})
        );
        // properties are the last candidate; the value keeps its type.
        let event = json!({"userId": "u", "properties": {"email": "p@x.test", "phone": 5550100}});
        assert_eq!(
            body_of(event.clone())["emails"],
            json!([{"type": "home", "email": "p@x.test"}])
        );
        assert_eq!(
            body_of(event)["phones"],
            json!([{"type": "home", "phone": 5550100}])
        );
        // An empty array is truthy: kept, nothing derived.
        let event = json!({"userId": "u", "traits": {"emails": [], "phones": [], "email": "e", "phone": "p"}});
        let body = body_of(event);
        assert_eq!((&body["emails"], &body["phones"]), (&json!([]), &json!([])));
        // "" is not usable: derived. 0 is usable but falsy: derived when possible, else kept.
        let event = json!({"userId": "u", "traits": {"emails": "", "phones": 0, "email": "e", "phone": "p"}});
        let body = body_of(event);
        assert_eq!(body["emails"], json!([{"type": "home", "email": "e"}]));
        assert_eq!(body["phones"], json!([{"type": "home", "phone": "p"}]));
        let event = json!({"userId": "u", "traits": {"phones": 0, "phone": ""}});
        assert_eq!(body_of(event)["phones"], json!(0));
        // No e-mail or phone: nothing.
        let event = json!({"userId": "u", "traits": {"email": 0, "phone": false}});
        assert_eq!(body_of(event), json!({"externalId": "u"}));
    }

    #[test]
    fn derived_urls() {
        let event = json!({"userId": "u", "context": {"traits": {"website": "www.example.test"}}});
        assert_eq!(body_of(event)["urls"], json!([{"url": "www.example.test"}]));
        let event = json!({"userId": "u", "properties": {"website": 7}});
        assert_eq!(body_of(event)["urls"], json!([{"url": 7}]));
        let event =
            json!({"userId": "u", "traits": {"website": 0}, "properties": {"website": "w"}});
        assert_eq!(body_of(event).get("urls"), None);
    }

    #[test]
    fn derived_locations() {
        let locations = |address: Value| {
            body_of(json!({"userId": "u", "traits": {"address": address}}))
                .get("locations")
                .cloned()
        };
        let home = |text: &str| Some(json!([{"type": "home", "address": text}]));
        assert_eq!(
            locations(json!("test address string")),
            home("test address string")
        );
        assert_eq!(
            locations(
                json!({"street": "24 Dovers Lane", "city": "Miami", "state": "Florida", "postalCode": "1890001", "country": "USA"})
            ),
            home("24 Dovers Lane Miami Florida 1890001")
        );
        assert_eq!(locations(json!({"state": "Ohio"})), home("  Ohio "));
        assert_eq!(
            locations(json!({"street": "9 Elm Rd", "postalCode": 20500})),
            home("9 Elm Rd   20500")
        );
        assert_eq!(
            locations(json!({"street": " x ", "city": 0, "state": "", "postalCode": true})),
            home(" x    true")
        );
        assert_eq!(locations(json!({"country": "USA"})), None);
        assert_eq!(
            locations(json!({"street": "", "city": null, "state": 0, "postalCode": false})),
            None
        );
        assert_eq!(locations(json!({})), None);
        assert_eq!(locations(json!(["street"])), None);
        assert_eq!(locations(json!(12)), None);
        assert_eq!(locations(json!(true)), None);
        assert_eq!(locations(json!("")), None);
        // context.traits.address as fallback.
        let event = json!({"userId": "u", "context": {"traits": {"address": {"city": "Lyon"}}}});
        assert_eq!(
            body_of(event)["locations"],
            json!([{"type": "home", "address": " Lyon  "}])
        );
    }

    #[test]
    fn full_identify_plan() {
        let event = json!({
            "type": "identify", "userId": "Testc", "anonymousId": "97c4",
            "context": {"locale": "en-US", "traits": {
                "firstName": "Test", "lastName": "Rudderlabs", "email": "test@rudderstack.com",
                "phone": "+12345578900", "website": "www.mattertoast873.com", "userName": "Testc47",
                "address": {"city": "Miami", "country": "USA", "postalCode": 1890001, "state": "Florida", "street": "24 Dovers Lane"}
            }}
        });
        let plan = plan(&event).unwrap();
        assert_eq!(
            plan.body,
            json!({
                "name": "Test Rudderlabs", "externalId": "Testc", "username": "Testc47", "locale": "en-US",
                "emails": [{"type": "home", "email": "test@rudderstack.com"}],
                "phones": [{"type": "home", "phone": "+12345578900"}],
                "urls": [{"url": "www.mattertoast873.com"}],
                "locations": [{"type": "home", "address": "24 Dovers Lane Miami Florida 1890001"}]
            })
        );
        assert_eq!(plan.create().path, "/v1/customers");
        assert_eq!(
            plan.customer,
            CustomerRef::Lookups(vec![
                lookup(LookupBy::Email, "/v1/customers/email=test@rudderstack.com"),
                lookup(LookupBy::UserId, "/v1/customers/externalId=Testc"),
                lookup(LookupBy::AnonymousId, "/v1/customers/externalId=97c4"),
            ])
        );
    }

    #[test]
    fn tracking_flags_do_not_affect_identify() {
        let event = json!({"type": "iDentify", "userId": "u", "traits": {"email": "e@x.test", "name": " a  b "},
            "properties": {"x": 1}});
        let all = MappingFlags {
            generic_page: true,
            generic_screen: true,
            advanced_transform: true,
            set_identity_email: true,
            disable_email_as_tracking_property: true,
            fit_to_kustomer_schema: false,
            link_companies: true,
        };
        let with_flags = map_event(&event, &all).unwrap();
        assert_eq!(
            with_flags,
            map_event(&event, &MappingFlags::default()).unwrap()
        );
        let Plan::Identify(plan) = with_flags else {
            panic!("identify plan expected")
        };
        assert_eq!(plan.body["name"], json!(" a  b "));
    }

    #[test]
    fn dotted_keys_do_not_satisfy_paths_d24() {
        let event = json!({"userId": "u", "traits.email": "dotted@x.test", "context.traits": {"name": "Dotted"}});
        assert_eq!(
            lookups_of(event.clone()),
            vec![lookup(LookupBy::UserId, "/v1/customers/externalId=u")]
        );
        assert_eq!(body_of(event), json!({"externalId": "u"}));
    }
}
