//! advancedTransform of `meta` (spec 6.2): name → dashed text, meta keys renamed and
//! values converted, in JavaScript key order (which decides collisions).

use serde_json::{Map, Value};

use crate::values::{dash_whitespace, for_each_js_ordered, push_js_json, text_form};

/// [D12] The event name as text (any JSON type), trimmed, whitespace runs → `-`.
pub(super) fn name(name: &Value) -> Value {
    let dashed = match name {
        Value::String(s) => dash_whitespace(s),
        other => dash_whitespace(&text_form(other)),
    };
    Value::String(dashed)
}

/// The rebuilt `meta`: always an object. `meta` is the `properties` value of the event;
/// keys listed in `excluded` are not part of the 6.1 `meta` and are skipped.
pub(super) fn meta(meta: Option<&Value>, excluded: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(Value::Object(original)) = meta else {
        return out;
    };
    for_each_js_ordered(original, |key, value| {
        if excluded.contains(&key.as_str()) {
            return;
        }
        let (new_key, new_value) = convert(dash_whitespace(key), value);
        // Like a JS assignment: a later key with the same name overwrites in place.
        out.insert(new_key, new_value);
    });
    out
}

/// Rules 1–6 of spec 6.2 for one entry; `key` is already trimmed and dashed.
fn convert(key: String, value: &Value) -> (String, Value) {
    match value {
        Value::Number(_) => (with_suffix(key, "Num"), value.clone()),
        Value::String(s) if is_date_like(s) => (with_suffix(key, "At"), value.clone()),
        Value::Array(_) if is_date_like(&text_form(value)) => {
            (with_suffix(key, "At"), value.clone())
        }
        Value::Bool(b) => (key, Value::String(b.to_string())),
        Value::Array(items) => {
            let mut joined = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    joined.push(',');
                }
                push_js_json(&mut joined, item);
            }
            (key, Value::String(joined))
        }
        Value::Object(_) => {
            let mut text = String::new();
            push_js_json(&mut text, value);
            (key, Value::String(text))
        }
        // Strings that are not dates, and null. (Text forms of null, booleans and
        // objects never look like dates.)
        _ => (key, value.clone()),
    }
}

/// Appends `suffix` unless the key already ends with it (case-sensitive).
fn with_suffix(mut key: String, suffix: &str) -> String {
    if !key.ends_with(suffix) {
        key.push_str(suffix);
    }
    key
}

/// The whole-string pattern of spec 6.2, case-insensitive, without a regex engine:
/// `^\d{4}(-\d\d(-\d\d(T\d\d:\d\d(:\d\d)?(\.\d+)?(([+-]\d\d:\d\d)|Z)?)?)?)?$`.
fn is_date_like(s: &str) -> bool {
    let mut c = Cursor(s.as_bytes());
    if !c.digits(4) {
        return false;
    }
    if c.done() {
        return true;
    }
    // -MM
    if !(c.eat(b'-') && c.digits(2)) {
        return false;
    }
    if c.done() {
        return true;
    }
    // -DD
    if !(c.eat(b'-') && c.digits(2)) {
        return false;
    }
    if c.done() {
        return true;
    }
    // Thh:mm
    if !((c.eat(b'T') || c.eat(b't')) && c.digits(2) && c.eat(b':') && c.digits(2)) {
        return false;
    }
    // Each optional group either matches fully or is absent; a partial match can never
    // be rescued by a later group, because their first characters all differ.
    let mut probe = c;
    if probe.eat(b':') && probe.digits(2) {
        c = probe;
    }
    let mut probe = c;
    if probe.eat(b'.') && probe.digits(1) {
        while probe.digits(1) {}
        c = probe;
    }
    let mut probe = c;
    if (probe.eat(b'+') || probe.eat(b'-')) && probe.digits(2) && probe.eat(b':') && probe.digits(2)
    {
        c = probe;
    } else if !c.eat(b'Z') {
        c.eat(b'z');
    }
    c.done()
}

/// A byte cursor for [`is_date_like`].
#[derive(Clone, Copy)]
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }

    fn eat(&mut self, byte: u8) -> bool {
        match self.0.split_first() {
            Some((&first, rest)) if first == byte => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// Exactly `n` ASCII digits (JS `\d` is ASCII only).
    fn digits(&mut self, n: usize) -> bool {
        match self.0.get(..n) {
            Some(head) if head.iter().all(u8::is_ascii_digit) => {
                self.0 = &self.0[n..];
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn transformed(properties: &str) -> String {
        let properties = parse(properties);
        serde_json::to_string(&meta(Some(&properties), &[])).unwrap()
    }

    #[test]
    fn d12_name_becomes_dashed_text() {
        assert_eq!(name(&json!(" Add  to   Cart ")), json!("Add-to-Cart"));
        assert_eq!(name(&json!(7)), json!("7"));
        assert_eq!(name(&json!(2.5)), json!("2.5"));
        assert_eq!(name(&json!(0)), json!("0"));
        assert_eq!(name(&json!(true)), json!("true"));
        assert_eq!(name(&json!(false)), json!("false"));
        assert_eq!(name(&json!(["a b", "c"])), json!("a-b,c"));
        assert_eq!(name(&json!({"a": 1})), json!("[object-Object]"));
        assert_eq!(name(&json!("Web-Page-Viewed")), json!("Web-Page-Viewed"));
        assert_eq!(name(&json!("Screen-Viewed")), json!("Screen-Viewed"));
        assert_eq!(name(&json!("\u{feff}a\u{a0}\u{2028}b\t")), json!("a-b"));
    }

    #[test]
    fn meta_is_always_an_object() {
        assert_eq!(meta(None, &[]), Map::new());
        for not_object in [
            json!([1, 2]),
            json!("text"),
            json!(0),
            json!(false),
            json!(true),
        ] {
            assert_eq!(meta(Some(&not_object), &[]), Map::new(), "{not_object}");
        }
        assert_eq!(meta(Some(&json!({})), &[]), Map::new());
    }

    #[test]
    fn rule_1_numbers_get_num() {
        assert_eq!(
            transformed(r#"{"age":3,"YearServicedNum":211,"countnum":1.5,"zero":0,"neg":-2}"#),
            r#"{"ageNum":3,"YearServicedNum":211,"countnumNum":1.5,"zeroNum":0,"negNum":-2}"#
        );
    }

    #[test]
    fn rule_2_dates_get_at() {
        for date in [
            "1999",
            "4021",
            "2020-99",
            "2020-02-29",
            "2020-02-29t08:15z",
            "2020-02-29T08:15:30-03:00",
            "2020-02-29T08:15.25Z",
            "2020-02-29T08:15",
            "2020-02-29T08:15:30",
            "2020-02-29T08:15:30.123",
            "2020-02-29T08:15:30.1+01:00",
            "2021-01-25T15:32:56.409Z",
            "2020-02-29T08:15Z",
        ] {
            assert!(is_date_like(date), "{date}");
        }
        for not_date in [
            "2020-02-29T08:15:30+0100",
            "2020-02-29 08:15",
            "12345",
            "199",
            "",
            "2020-",
            "2020-1",
            "2020-01-",
            "2020-01-01T",
            "2020-01-01T08",
            "2020-01-01T08:1",
            "2020-01-01T08:15:",
            "2020-01-01T08:15.",
            "2020-01-01T08:15:30Z+01:00",
            "2020-01-01T08:15+01",
            "2020-01-01T08:15ZZ",
            "2020-01-01x08:15",
            "2020-01-01T08:15\n",
            "１９９９",
            "abcd",
        ] {
            assert!(!is_date_like(not_date), "{not_date}");
        }
        assert_eq!(
            transformed(
                r#"{"born":"1999","zip":"4021","d":"2020-02-29t08:15z","list":["1999"],"createdAt":"2020-02-29","bad":"2020-02-29 08:15"}"#
            ),
            r#"{"bornAt":"1999","zipAt":"4021","dAt":"2020-02-29t08:15z","listAt":["1999"],"createdAt":"2020-02-29","bad":"2020-02-29 08:15"}"#
        );
        // Suffix check is case-sensitive.
        assert_eq!(
            transformed(r#"{"createdat":"2020"}"#),
            r#"{"createdatAt":"2020"}"#
        );
    }

    #[test]
    fn rule_3_booleans_become_strings() {
        assert_eq!(
            transformed(r#"{"a":true,"b":false}"#),
            r#"{"a":"true","b":"false"}"#
        );
    }

    #[test]
    fn rule_4_arrays_become_joined_json() {
        assert_eq!(
            transformed(r#"{"a":["b",2,{"y":true},null],"e":[],"n":[[1,2],"x\"y",1.0]}"#),
            r#"{"a":"\"b\",2,{\"y\":true},null","e":"","n":"[1,2],\"x\\\"y\",1"}"#
        );
    }

    #[test]
    fn rule_5_objects_become_compact_js_json() {
        assert_eq!(
            transformed(r#"{"o":{"b":1,"2":[true],"a":{"1":null,"x":"y"}},"e":{}}"#),
            r#"{"o":"{\"2\":[true],\"b\":1,\"a\":{\"1\":null,\"x\":\"y\"}}","e":"{}"}"#
        );
    }

    #[test]
    fn rule_6_other_strings_and_null_unchanged() {
        assert_eq!(
            transformed(r#"{"s":"hello","n":null,"blank":" ","t":"true"}"#),
            r#"{"s":"hello","n":null,"blank":" ","t":"true"}"#
        );
    }

    #[test]
    fn keys_are_trimmed_and_dashed_top_level_only() {
        assert_eq!(
            transformed(r#"{" my  key ":"v"," count\tall ":2,"o":{" in ner ":1}}"#),
            r#"{"my-key":"v","count-allNum":2,"o":"{\" in ner \":1}"}"#
        );
    }

    #[test]
    fn js_key_order_and_collisions() {
        // Index-like keys first (ascending), then the others in event order.
        assert_eq!(
            transformed(r#"{"b":"x","10":"y","2":"z"}"#),
            r#"{"2":"z","10":"y","b":"x"}"#
        );
        // "12" (renamed 12Num) is visited first, so the literal "12Num" wins even after it.
        assert_eq!(
            transformed(r#"{"12Num":"literal","12":5}"#),
            r#"{"12Num":"literal"}"#
        );
        assert_eq!(
            transformed(r#"{"12":5,"12Num":"literal"}"#),
            r#"{"12Num":"literal"}"#
        );
        // Otherwise the later key wins, at the place of the first.
        assert_eq!(
            transformed(r#"{"a b":"first","c":1,"a-b":"second"}"#),
            r#"{"a-b":"second","cNum":1}"#
        );
        assert_eq!(transformed(r#"{"ageNum":1,"age":2}"#), r#"{"ageNum":2}"#);
    }

    #[test]
    fn excluded_keys_are_skipped() {
        let properties = json!({"kustomerSessionId": 1, "x": true});
        assert_eq!(
            serde_json::to_string(&meta(Some(&properties), &["kustomerSessionId"])).unwrap(),
            r#"{"x":"true"}"#
        );
    }
}
