//! Reading values out of a RudderStack event (spec section 3): key-by-key paths,
//! "usable" values, candidate lists, JavaScript's text form and compact JSON, and
//! the percent-encoding of values placed in URL paths (D2).

use std::fmt::Write as _;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Number, Value};

/// Spec 3.3 shared candidate lists.
pub mod lists {
    /// [D3] Three paths only: never `context.externalId.0.id`.
    pub const EMAIL: &[&str] = &["traits.email", "context.traits.email", "properties.email"];
    pub const USER_ID: &[&str] = &[
        "userId",
        "traits.userId",
        "traits.id",
        "context.traits.userId",
        "context.traits.id",
        "anonymousId",
    ];
    pub const USER_ID_WITHOUT_ANONYMOUS: &[&str] = &[
        "userId",
        "traits.userId",
        "traits.id",
        "context.traits.userId",
        "context.traits.id",
    ];
    pub const FIRST_NAME: &[&str] = &[
        "traits.firstName",
        "traits.firstname",
        "traits.first_name",
        "context.traits.firstName",
        "context.traits.firstname",
        "context.traits.first_name",
    ];
    pub const LAST_NAME: &[&str] = &[
        "traits.lastName",
        "traits.lastname",
        "traits.last_name",
        "context.traits.lastName",
        "context.traits.lastname",
        "context.traits.last_name",
    ];
    pub const PHONE: &[&str] = &["traits.phone", "context.traits.phone", "properties.phone"];
    pub const WEBSITE: &[&str] = &[
        "traits.website",
        "context.traits.website",
        "properties.website",
    ];
    pub const ADDRESS: &[&str] = &["traits.address", "context.traits.address"];
}

/// JavaScript truthiness: not null/missing, not `false`, not `0`/`-0`/NaN, not `""`.
pub fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => !number_is_zero(n),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Spec 3.2: truthy, or exactly `false`, or exactly `0`.
pub fn is_usable(value: &Value) -> bool {
    // Every value except null and "" is truthy, `false` or a zero (`-0 === 0` in JS).
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn number_is_zero(n: &Number) -> bool {
    if let Some(i) = n.as_i64() {
        i == 0
    } else if let Some(u) = n.as_u64() {
        u == 0
    } else {
        // NaN cannot come out of JSON; -0.0 == 0.0 covers negative zero.
        n.as_f64().is_none_or(|f| f == 0.0)
    }
}

/// Spec 3.1 [D24]: key-by-key walk; numeric segments index arrays.
pub fn get_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = value;
    for segment in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(segment)?,
            // JS `array["01"]` is undefined: only canonical indices reach elements.
            Value::Array(items) => items.get(array_index(segment)? as usize)?,
            _ => return None,
        };
    }
    Some(current)
}

/// The first usable value over a list of candidate paths.
pub fn first_usable<'a>(value: &'a Value, paths: &[&str]) -> Option<&'a Value> {
    paths
        .iter()
        .filter_map(|path| get_path(value, path))
        .find(|candidate| is_usable(candidate))
}

/// Like [`first_usable`], but only a truthy first usable value counts (derived fields, look-ups).
pub fn first_truthy_usable<'a>(value: &'a Value, paths: &[&str]) -> Option<&'a Value> {
    first_usable(value, paths).filter(|v| is_truthy(v))
}

/// Resolves spec paths against one event with the common parents (`traits`,
/// `context`, `context.traits`, `properties`) looked up once: same results as
/// [`get_path`], fewer hash look-ups for the long candidate lists.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    event: &'a Value,
    traits: Option<&'a Value>,
    context: Option<&'a Value>,
    context_traits: Option<&'a Value>,
    properties: Option<&'a Value>,
}

impl<'a> Reader<'a> {
    pub fn new(event: &'a Value) -> Self {
        let context = get_path(event, "context");
        Reader {
            event,
            traits: get_path(event, "traits"),
            context,
            context_traits: context.and_then(|c| get_path(c, "traits")),
            properties: get_path(event, "properties"),
        }
    }

    /// The event itself.
    pub fn event(&self) -> &'a Value {
        self.event
    }

    /// [`get_path`] on the event.
    pub fn get(&self, path: &str) -> Option<&'a Value> {
        let (parent, rest) = if let Some(rest) = path.strip_prefix("traits.") {
            (self.traits, rest)
        } else if let Some(rest) = path.strip_prefix("context.traits.") {
            (self.context_traits, rest)
        } else if let Some(rest) = path.strip_prefix("context.") {
            (self.context, rest)
        } else if let Some(rest) = path.strip_prefix("properties.") {
            (self.properties, rest)
        } else {
            (Some(self.event), path)
        };
        get_path(parent?, rest)
    }

    /// [`first_usable`] on the event.
    pub fn first_usable(&self, paths: &[&str]) -> Option<&'a Value> {
        paths
            .iter()
            .filter_map(|path| self.get(path))
            .find(|candidate| is_usable(candidate))
    }

    /// [`first_truthy_usable`] on the event.
    pub fn first_truthy_usable(&self, paths: &[&str]) -> Option<&'a Value> {
        self.first_usable(paths).filter(|v| is_truthy(v))
    }
}

/// Spec 3.5: JavaScript's `String(value)`.
pub fn text_form(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        _ => {
            let mut out = String::new();
            push_text_form(&mut out, value);
            out
        }
    }
}

/// Appends JavaScript's `String(value)` to `out`.
pub fn push_text_form(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Array(items) => push_joined_array(out, items),
        other => push_scalar_text(out, other),
    }
}

/// `Array.prototype.join(",")`: null elements are empty, nested arrays flatten.
fn push_joined_array(out: &mut String, items: &[Value]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => {}
            Value::Array(inner) => push_joined_array(out, inner),
            other => push_scalar_text(out, other),
        }
    }
}

fn push_scalar_text(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Number(n) => push_number(out, n),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Object(_) => out.push_str("[object Object]"),
        Value::Null => out.push_str("null"),
        Value::Array(items) => push_joined_array(out, items),
    }
}

/// Integers beyond this magnitude are not exact doubles; JS would have rounded them.
const MAX_SAFE: u64 = 1 << 53;

/// A JSON number as JavaScript prints it.
pub fn push_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= MAX_SAFE {
            let _ = write!(out, "{i}");
            return;
        }
        push_f64(out, i as f64);
    } else if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE {
            let _ = write!(out, "{u}");
            return;
        }
        // `as` rounds to nearest, as JSON.parse does.
        push_f64(out, u as f64);
    } else if let Some(f) = n.as_f64() {
        push_f64(out, f);
    }
}

fn push_f64(out: &mut String, f: f64) {
    if f == 0.0 {
        // String(-0) is "0".
        out.push('0');
    } else {
        out.push_str(ryu_js::Buffer::new().format(f));
    }
}

/// Compact JSON as JavaScript's `JSON.stringify` writes it: JS key order, JS numbers.
pub fn js_json(value: &Value) -> String {
    let mut out = String::new();
    push_js_json(&mut out, value);
    out
}

/// Appends the `JSON.stringify` text of `value` to `out`.
pub fn push_js_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => push_number(out, n),
        Value::String(s) => push_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_js_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let mut first = true;
            for_each_js_ordered(map, |key, item| {
                if !first {
                    out.push(',');
                }
                first = false;
                push_json_string(out, key);
                out.push(':');
                push_js_json(out, item);
            });
            out.push('}');
        }
    }
}

/// A JSON string literal escaped as `JSON.stringify` (and serde_json) do.
pub fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `key` as a canonical array index (decimal, no sign, no leading zero, < 2^32 - 1).
pub fn array_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    u32::try_from(n).ok().filter(|&n| n != u32::MAX)
}

/// Visits the entries of `map` in JavaScript key order: canonical array indices
/// ascending first, then the other keys in insertion order.
pub fn for_each_js_ordered<'a>(
    map: &'a Map<String, Value>,
    mut f: impl FnMut(&'a String, &'a Value),
) {
    // Fast path: most objects have no index-like key, so insertion order is JS order.
    if !map.keys().any(|k| array_index(k).is_some()) {
        map.iter().for_each(|(k, v)| f(k, v));
        return;
    }
    let mut indexed: Vec<(u32, &'a String, &'a Value)> = map
        .iter()
        .filter_map(|(k, v)| array_index(k).map(|i| (i, k, v)))
        .collect();
    indexed.sort_unstable_by_key(|&(i, _, _)| i);
    for (_, k, v) in indexed {
        f(k, v);
    }
    for (k, v) in map.iter().filter(|(k, _)| array_index(k).is_none()) {
        f(k, v);
    }
}

/// RFC 3986 path-segment characters kept as is (spec 5.3); everything else is `%XX`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b'+')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':');

/// Spec 5.3 [D2]: text form, percent-encoded as one RFC 3986 path segment; `.`/`..` → `%2E`.
pub fn encode_path_segment(value: &Value) -> String {
    let encoded = match value {
        Value::String(s) => utf8_percent_encode(s, SEGMENT).to_string(),
        other => utf8_percent_encode(&text_form(other), SEGMENT).to_string(),
    };
    // Dot segments would be removed or resolved by some client, proxy or server.
    match encoded.as_str() {
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => encoded,
    }
}

/// Spec 3.6: JavaScript's whitespace (`\s`, `String.prototype.trim`).
pub fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{0009}'..='\u{000D}'
            | '\u{0020}'
            | '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
            | '\u{FEFF}'
    )
}

/// JavaScript's `String.prototype.trim`.
pub fn js_trim(s: &str) -> &str {
    s.trim_matches(is_js_whitespace)
}

/// `s.trim().replace(/\s+/g, "-")`: trimmed, each whitespace run becomes one `-`.
pub fn dash_whitespace(s: &str) -> String {
    let trimmed = js_trim(s);
    let mut out = String::with_capacity(trimmed.len());
    let mut in_run = false;
    for c in trimmed.chars() {
        if is_js_whitespace(c) {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn truthiness() {
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            parse("-0"),
            parse("-0.0"),
        ] {
            assert!(!is_truthy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!(-1),
            json!(0.5),
            json!("0"),
            json!(" "),
            json!([]),
            json!({}),
            json!(u64::MAX),
        ] {
            assert!(is_truthy(&v), "{v}");
        }
    }

    #[test]
    fn usable_values_spec_3_2() {
        for v in [json!(null), json!("")] {
            assert!(!is_usable(&v), "{v}");
        }
        for v in [
            json!(0),
            parse("-0"),
            json!(0.0),
            json!(false),
            json!([]),
            json!({}),
            json!("0"),
            json!(" "),
            json!(true),
            json!("a"),
        ] {
            assert!(is_usable(&v), "{v}");
        }
    }

    #[test]
    fn paths_walk_key_by_key() {
        let event = json!({
            "context": {"traits": {"email": "a@b.test"}, "externalId": [{"id": "x"}, {"id": "y"}]},
            "s": "text",
            "n": null
        });
        assert_eq!(
            get_path(&event, "context.traits.email"),
            Some(&json!("a@b.test"))
        );
        assert_eq!(
            get_path(&event, "context.externalId.1.id"),
            Some(&json!("y"))
        );
        assert_eq!(
            get_path(&event, "context.externalId.0.id"),
            Some(&json!("x"))
        );
        assert_eq!(get_path(&event, "context.externalId.01.id"), None);
        assert_eq!(get_path(&event, "context.externalId.2.id"), None);
        assert_eq!(get_path(&event, "context.missing.email"), None);
        assert_eq!(get_path(&event, "s.length"), None);
        assert_eq!(get_path(&event, "n.x"), None);
        assert_eq!(get_path(&event, "n"), Some(&Value::Null));
        // Object keys that look like numbers are still keys.
        assert_eq!(
            get_path(&json!({"a": {"1": "one"}}), "a.1"),
            Some(&json!("one"))
        );
    }

    #[test]
    fn d24_dotted_keys_are_data_not_paths() {
        let event = json!({"context.traits": {"userId": "shadow"}, "context": {"traits": {}}});
        assert_eq!(get_path(&event, "context.traits.userId"), None);
        let event = json!({"context.traits.userId": "shadow"});
        assert_eq!(get_path(&event, "context.traits.userId"), None);
    }

    #[test]
    fn reader_agrees_with_get_path() {
        let events = [
            json!({"traits": {"a": {"b": 1}}, "context": {"traits": {"a": 2}, "locale": "x", "externalId": [{"id": 3}]},
                "properties": {"a": [4, {"b": 5}]}, "a": 6, "traits.a": 7}),
            json!({"traits": "text", "context": [{"traits": 1}], "properties": null}),
            json!({"context": {"traits": [1, 2]}, "traits": [{"a": 1}]}),
            json!([{"traits": {"a": 1}}]),
            json!(null),
        ];
        let paths = [
            "traits.a",
            "traits.a.b",
            "traits.0.a",
            "context.traits.a",
            "context.traits.1",
            "context.locale",
            "context.externalId.0.id",
            "context.0.traits",
            "properties.a.1.b",
            "properties.a.0",
            "a",
            "traits.a.c",
            "traits",
            "context",
            "0.traits.a",
            "missing.x",
        ];
        for event in &events {
            let reader = Reader::new(event);
            for path in paths {
                assert_eq!(reader.get(path), get_path(event, path), "{event} {path}");
            }
            assert_eq!(reader.first_usable(&paths), first_usable(event, &paths));
            assert_eq!(
                reader.first_truthy_usable(&paths),
                first_truthy_usable(event, &paths)
            );
            assert!(std::ptr::eq(reader.event(), event));
        }
    }

    #[test]
    fn first_usable_skips_null_and_empty_only() {
        let event = json!({"a": null, "b": "", "c": 0, "d": "x"});
        assert_eq!(first_usable(&event, &["a", "b", "c", "d"]), Some(&json!(0)));
        assert_eq!(first_usable(&event, &["a", "b", "z"]), None);
        assert_eq!(first_usable(&event, &["a", "b", "d"]), Some(&json!("x")));
        assert_eq!(first_truthy_usable(&event, &["a", "c", "d"]), None);
        assert_eq!(
            first_truthy_usable(&event, &["a", "d", "c"]),
            Some(&json!("x"))
        );
    }

    #[test]
    fn text_form_table_spec_3_5() {
        let cases: &[(&str, &str)] = &[
            (r#""abc""#, "abc"),
            ("7", "7"),
            ("2.5", "2.5"),
            ("-0.25", "-0.25"),
            ("1.0", "1"),
            ("10", "10"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("1e21", "1e+21"),
            ("1e-7", "1e-7"),
            ("1e20", "100000000000000000000"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("123.456e5", "12345600"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("0.000001", "0.000001"),
            ("9007199254740992", "9007199254740992"),
            ("-9007199254740992", "-9007199254740992"),
            ("9007199254740993", "9007199254740992"),
            ("-9007199254740993", "-9007199254740992"),
            ("18446744073709551615", "18446744073709552000"),
            ("true", "true"),
            ("false", "false"),
            ("null", "null"),
            (r#"["a",["b","c"]]"#, "a,b,c"),
            ("[]", ""),
            ("[null]", ""),
            (r#"["a",null,"b"]"#, "a,,b"),
            (r#"[1,[null,[2]],true,{}]"#, "1,,2,true,[object Object]"),
            (r#"{"a":1}"#, "[object Object]"),
            ("{}", "[object Object]"),
        ];
        for (input, expected) in cases {
            assert_eq!(text_form(&parse(input)), *expected, "{input}");
        }
        // Formatting of a correctly rounded double (node prints the same); whether the
        // JSON parser rounds long mantissas correctly is serde_json's `float_roundtrip`.
        let long: f64 = "123456789012345678901234".parse().unwrap();
        let long = Value::Number(Number::from_f64(long).unwrap());
        assert_eq!(text_form(&long), "1.2345678901234569e+23");
    }

    #[test]
    fn js_json_is_compact_with_js_key_order() {
        let v = parse(
            r#"{"b":1,"10":2,"a":[1.0,null,true,"x"],"2":{"z":0,"1":-0},"01":3,"4294967295":4,"4294967294":5,"-1":6}"#,
        );
        assert_eq!(
            js_json(&v),
            r#"{"2":{"1":0,"z":0},"10":2,"4294967294":5,"b":1,"a":[1,null,true,"x"],"01":3,"4294967295":4,"-1":6}"#
        );
        assert_eq!(
            js_json(&parse(r#"{"errors":[{"title":"Conflict","status":409}]}"#)),
            r#"{"errors":[{"title":"Conflict","status":409}]}"#
        );
        assert_eq!(
            js_json(&json!("Bad gateway, retry")),
            r#""Bad gateway, retry""#
        );
        assert_eq!(js_json(&json!(null)), "null");
        assert_eq!(js_json(&parse("1e21")), "1e+21");
    }

    #[test]
    fn js_json_string_escaping_matches_serde_json() {
        let s = "q\"b\\n\n r\r t\t b\u{8} f\u{c} c\u{1} \u{1f} del\u{7f} é 😀 \u{2028}";
        assert_eq!(js_json(&json!(s)), serde_json::to_string(s).unwrap());
        assert_eq!(js_json(&json!("a\"b\\c\nd")), r#""a\"b\\c\nd""#);
        assert_eq!(js_json(&json!("\u{1}")), r#""\u0001""#);
    }

    #[test]
    fn array_index_keys() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("10"), Some(10));
        assert_eq!(array_index("4294967294"), Some(4294967294));
        for k in [
            "",
            "01",
            "-1",
            "+1",
            "1.0",
            "4294967295",
            "99999999999",
            "1e3",
            " 1",
        ] {
            assert_eq!(array_index(k), None, "{k}");
        }
    }

    #[test]
    fn js_order_visits_indices_first() {
        let v = parse(r#"{"x":1,"5":2,"0":3,"y":4,"10":5}"#);
        let mut keys = Vec::new();
        for_each_js_ordered(v.as_object().unwrap(), |k, _| keys.push(k.as_str()));
        assert_eq!(keys, ["0", "5", "10", "x", "y"]);
    }

    #[test]
    fn d2_path_segment_encoding_examples() {
        let cases = [
            (json!("ann.lee+promo@shop.test"), "ann.lee+promo@shop.test"),
            (json!("id with two spaces"), "id%20with%20two%20spaces"),
            (json!("dept/sales?q=1#top"), "dept%2Fsales%3Fq=1%23top"),
            (json!("50%off@shop.test"), "50%25off@shop.test"),
            (json!("zoë@café.test"), "zo%C3%AB@caf%C3%A9.test"),
            (json!("x/../admin"), "x%2F..%2Fadmin"),
            (json!(987), "987"),
            (json!("."), "%2E"),
            (json!(".."), "%2E%2E"),
            (json!("..."), "..."),
            (json!("-._~@+!$&'()*,;=:"), "-._~@+!$&'()*,;=:"),
            (
                json!("a\"<>[]{}|\\^`%\n"),
                "a%22%3C%3E%5B%5D%7B%7D%7C%5C%5E%60%25%0A",
            ),
            (json!(2.5), "2.5"),
            (json!(true), "true"),
            (json!(["a", "b c"]), "a,b%20c"),
            (json!({"a": 1}), "%5Bobject%20Object%5D"),
        ];
        for (input, expected) in cases {
            assert_eq!(encode_path_segment(&input), expected, "{input}");
        }
    }

    #[test]
    fn js_whitespace_set_spec_3_6() {
        for c in [
            '\u{9}', '\u{a}', '\u{b}', '\u{c}', '\u{d}', ' ', '\u{a0}', '\u{1680}', '\u{2000}',
            '\u{2005}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
            '\u{feff}',
        ] {
            assert!(is_js_whitespace(c), "{c:?}");
        }
        for c in ['\u{85}', '\u{200b}', '\u{180e}', 'a', '-', '\u{0}'] {
            assert!(!is_js_whitespace(c), "{c:?}");
        }
        assert_eq!(js_trim("\u{feff} a b \u{3000}"), "a b");
        assert_eq!(js_trim("\u{85}a\u{85}"), "\u{85}a\u{85}");
        assert_eq!(dash_whitespace(" Add  to   Cart "), "Add-to-Cart");
        assert_eq!(dash_whitespace("a\t\n\u{a0}b c"), "a-b-c");
        assert_eq!(dash_whitespace("   "), "");
        assert_eq!(dash_whitespace("plain"), "plain");
    }
}
