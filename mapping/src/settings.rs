//! The Kustomer destination settings, typed and checked once (spec section 1).

use std::fmt;

use serde_json::Value;

/// Kustomer's US instance, the default base endpoint.
pub const US_ENDPOINT: &str = "https://api.kustomerapp.com";
/// Kustomer's EU instance.
pub const EU_ENDPOINT: &str = "https://api.prod2.kustomerapp.com";
/// Kustomer's IN instance.
pub const IN_ENDPOINT: &str = "https://api.prod4.kustomerapp.com";

/// A secret string (API key, webhook token). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself: only for the `Authorization` header and constant-time comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The mapping switches of the destination (spec 1.1), all `false` in `Default` (tests
/// and the conformance runner rely on "off unless set"). The settings readers (RudderStack's
/// config object, the function's environment, the command line) all read them through
/// [`MAPPING_FLAGS`], which gives each flag its names and its default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingFlags {
    pub generic_page: bool,
    pub generic_screen: bool,
    pub advanced_transform: bool,
    pub set_identity_email: bool,
    pub disable_email_as_tracking_property: bool,
    /// Spec section 11 [D25]: fit every write body to Kustomer's contract.
    pub fit_to_kustomer_schema: bool,
    /// Spec section 12 [D26]: company traits and `group` events become linked Kustomer
    /// companies. Acts only together with `fit_to_kustomer_schema` (see [`Self::companies`]).
    pub link_companies: bool,
}

impl MappingFlags {
    /// Whether section 12 acts: `linkCompanies` and `fitToKustomerSchema` both on.
    pub fn companies(&self) -> bool {
        self.link_companies && self.fit_to_kustomer_schema
    }
}

/// `fitToKustomerSchema` when the setting is absent (spec 11: on by default).
pub const FIT_TO_SCHEMA_DEFAULT: bool = true;
/// `linkCompanies` when the setting is absent (spec 12: on by default).
pub const LINK_COMPANIES_DEFAULT: bool = true;

/// One mapping flag: its name in each place a user can set it, and its default. Adding a
/// flag is a field of [`MappingFlags`] and one row of [`MAPPING_FLAGS`].
pub struct FlagSetting {
    /// RudderStack's destination config key (spec 1.1), e.g. `genericPage`.
    pub key: &'static str,
    /// The function's environment variable (set by the template parameter).
    pub env: &'static str,
    /// The command line's option, `--<option>[=true|false]`.
    pub option: &'static str,
    /// The value when the setting is absent.
    pub default: bool,
    pub field: fn(&mut MappingFlags) -> &mut bool,
}

/// Every mapping flag, one row each.
#[rustfmt::skip]
pub const MAPPING_FLAGS: &[FlagSetting] = &[
    FlagSetting { key: "genericPage", env: "KUSTOMER_GENERIC_PAGE", option: "generic-page", default: false, field: |f| &mut f.generic_page },
    FlagSetting { key: "genericScreen", env: "KUSTOMER_GENERIC_SCREEN", option: "generic-screen", default: false, field: |f| &mut f.generic_screen },
    FlagSetting { key: "advancedTransform", env: "KUSTOMER_ADVANCED_TRANSFORM", option: "advanced-transform", default: false, field: |f| &mut f.advanced_transform },
    FlagSetting { key: "setIdentityEmail", env: "KUSTOMER_SET_IDENTITY_EMAIL", option: "set-identity-email", default: false, field: |f| &mut f.set_identity_email },
    FlagSetting { key: "disableEmailAsTrackingProperty", env: "KUSTOMER_DISABLE_EMAIL_AS_TRACKING_PROPERTY", option: "disable-email-as-tracking-property", default: false, field: |f| &mut f.disable_email_as_tracking_property },
    FlagSetting { key: "fitToKustomerSchema", env: "KUSTOMER_FIT_TO_SCHEMA", option: "fit-to-kustomer-schema", default: FIT_TO_SCHEMA_DEFAULT, field: |f| &mut f.fit_to_kustomer_schema },
    FlagSetting { key: "linkCompanies", env: "KUSTOMER_LINK_COMPANIES", option: "link-companies", default: LINK_COMPANIES_DEFAULT, field: |f| &mut f.link_companies },
];

impl MappingFlags {
    /// The flags when nothing is set: each flag's default of [`MAPPING_FLAGS`] (the schema
    /// fit and companies on, the rest off), what the function maps with out of the box.
    pub fn product_defaults() -> MappingFlags {
        let read = MappingFlags::read(|_| Ok::<_, std::convert::Infallible>(None));
        read.unwrap_or_default()
    }

    /// Every flag from one source: `read` gives a flag's value when the source sets it
    /// (`None`: absent, so the default applies), or why it cannot be used.
    pub fn read<E>(
        mut read: impl FnMut(&FlagSetting) -> Result<Option<bool>, E>,
    ) -> Result<MappingFlags, E> {
        let mut flags = MappingFlags::default();
        for setting in MAPPING_FLAGS {
            *(setting.field)(&mut flags) = read(setting)?.unwrap_or(setting.default);
        }
        Ok(flags)
    }
}

/// A Kustomer base endpoint: `https://…` (or `http://` on loopback), no trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseEndpoint(String);

impl BaseEndpoint {
    /// Accepts `us`, `eu`, `in` or a URL; an empty value means the US instance.
    pub fn parse(input: &str) -> Result<Self, SettingError> {
        Self::parse_with_default(input, US_ENDPOINT)
    }

    /// Like [`BaseEndpoint::parse`], with another URL standing in for the US default
    /// (tests point the default at a stub server).
    pub fn parse_with_default(input: &str, default_us: &str) -> Result<Self, SettingError> {
        let value = match input.trim().to_ascii_lowercase().as_str() {
            "" | "us" => default_us.to_string(),
            "eu" => EU_ENDPOINT.to_string(),
            "in" => IN_ENDPOINT.to_string(),
            _ => input.trim().to_string(),
        };
        let invalid =
            |why: &str| SettingError::new("baseEndpoint", format!("{why} (got {value:?})"));
        let stripped = value.trim_end_matches('/');
        let uri: http::Uri = stripped
            .parse()
            .map_err(|_| invalid("is not a valid URL"))?;
        let host = uri.host().ok_or_else(|| invalid("has no host"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {}
            Some("http") => {
                return Err(invalid(
                    "must use https (plain http only for loopback hosts)",
                ))
            }
            _ => {
                return Err(invalid(
                    "must be an https URL (http only for a loopback host), or one of us, eu, in",
                ))
            }
        }
        if uri.query().is_some() || stripped.contains('#') {
            return Err(invalid("must not have a query or fragment"));
        }
        Ok(BaseEndpoint(stripped.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for BaseEndpoint {
    fn default() -> Self {
        BaseEndpoint(US_ENDPOINT.to_string())
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// Everything one event needs besides itself: where to send, with which key, mapped how.
#[derive(Debug, Clone)]
pub struct Destination {
    pub api_key: Secret,
    pub base: BaseEndpoint,
    pub flags: MappingFlags,
}

impl Destination {
    /// Reads RudderStack's destination config object (`{"apiKey": …, "baseEndpoint": …, …}`).
    pub fn from_json(config: &Value) -> Result<Self, SettingError> {
        Self::from_json_with_default(config, US_ENDPOINT)
    }

    /// Like [`Destination::from_json`], with another URL standing in for the US default.
    pub fn from_json_with_default(config: &Value, default_us: &str) -> Result<Self, SettingError> {
        let object = config
            .as_object()
            .ok_or_else(|| SettingError::new("config", "must be a JSON object"))?;
        let api_key = match object.get("apiKey") {
            Some(Value::String(key)) if !key.is_empty() => Secret::new(key.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(SettingError::new("apiKey", "is required (D21)"))
            }
            Some(_) => return Err(SettingError::new("apiKey", "must be a string")),
        };
        let base = match object.get("baseEndpoint") {
            None | Some(Value::Null) => BaseEndpoint::parse_with_default("", default_us)?,
            Some(Value::String(s)) => BaseEndpoint::parse_with_default(s, default_us)?,
            Some(_) => return Err(SettingError::new("baseEndpoint", "must be a string")),
        };
        let flags = MappingFlags::read(|setting| {
            object
                .get(setting.key)
                .map(|value| parse_flag(setting.key, value))
                .transpose()
        })?;
        Ok(Destination {
            api_key,
            base,
            flags,
        })
    }
}

/// [D19] A flag is a JSON boolean or the string "true"/"false" in any case; nothing else.
pub fn parse_flag(name: &str, value: &Value) -> Result<bool, SettingError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_flag_str(name, s),
        other => Err(SettingError::new(
            name,
            format!("must be true or false (got {})", json_kind(other)),
        )),
    }
}

/// [D19] for text settings (environment variables): "true"/"false" in any case.
pub fn parse_flag_str(name: &str, value: &str) -> Result<bool, SettingError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(SettingError::new(
            name,
            format!("must be true or false (got {value:?})"),
        ))
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A setting that cannot be used; names the setting, never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub setting: String,
    pub problem: String,
}

impl SettingError {
    pub fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        SettingError {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting {}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for SettingError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_never_shows_in_debug_or_display() {
        let destination = Destination::from_json(&json!({"apiKey": "sk-very-secret"})).unwrap();
        let shown = format!("{destination:?} {}", destination.api_key);
        assert!(!shown.contains("sk-very-secret"), "{shown}");
    }

    #[test]
    fn base_endpoint_rules() {
        let ok = |s: &str| BaseEndpoint::parse(s).map(|b| b.0);
        assert_eq!(ok("").unwrap(), US_ENDPOINT);
        assert_eq!(ok("us").unwrap(), US_ENDPOINT);
        assert_eq!(ok("EU").unwrap(), EU_ENDPOINT);
        assert_eq!(ok("in").unwrap(), IN_ENDPOINT);
        assert_eq!(
            ok("https://example-org.api.kustomerapp.com///").unwrap(),
            "https://example-org.api.kustomerapp.com"
        );
        assert_eq!(
            ok("https://gw.example.net/k/").unwrap(),
            "https://gw.example.net/k"
        );
        assert_eq!(
            ok("http://127.0.0.1:8080/x/").unwrap(),
            "http://127.0.0.1:8080/x"
        );
        assert_eq!(ok("http://localhost:1").unwrap(), "http://localhost:1");
        assert_eq!(ok("http://[::1]:1").unwrap(), "http://[::1]:1");
        assert!(ok("http://api.kustomerapp.com").is_err());
        assert!(ok("http://10.0.0.1").is_err());
        assert!(ok("ftp://x.test").is_err());
        assert!(ok("not a url").is_err());
    }

    #[test]
    fn flags_are_strict_booleans() {
        assert!(parse_flag("f", &json!(true)).unwrap());
        assert!(parse_flag("f", &json!("TrUe")).unwrap());
        assert!(!parse_flag("f", &json!("fAlSe")).unwrap());
        for bad in [json!(1), json!("yes"), json!(null), json!({}), json!("")] {
            let err = parse_flag("genericPage", &bad).unwrap_err();
            assert_eq!(err.setting, "genericPage");
        }
        let destination =
            Destination::from_json(&json!({"apiKey": "k", "genericPage": "false"})).unwrap();
        assert!(!destination.flags.generic_page);
    }

    #[test]
    fn fit_to_kustomer_schema_is_on_unless_set() {
        let flags = |config: serde_json::Value| Destination::from_json(&config).map(|d| d.flags);
        assert!(
            flags(json!({"apiKey": "k"}))
                .unwrap()
                .fit_to_kustomer_schema
        );
        assert!(
            !flags(json!({"apiKey": "k", "fitToKustomerSchema": "FALSE"}))
                .unwrap()
                .fit_to_kustomer_schema
        );
        assert!(
            flags(json!({"apiKey": "k", "fitToKustomerSchema": true}))
                .unwrap()
                .fit_to_kustomer_schema
        );
        let err = flags(json!({"apiKey": "k", "fitToKustomerSchema": null})).unwrap_err();
        assert_eq!(err.setting, "fitToKustomerSchema");
        // The derived default stays all off.
        assert!(!MappingFlags::default().fit_to_kustomer_schema);
    }

    #[test]
    fn product_defaults_are_the_table_defaults() {
        let defaults = MappingFlags::product_defaults();
        assert_eq!(
            defaults,
            Destination::from_json(&json!({"apiKey": "k"}))
                .unwrap()
                .flags
        );
        assert!(defaults.fit_to_kustomer_schema && defaults.companies());
        assert!(!defaults.generic_page && !defaults.advanced_transform);
    }

    #[test]
    fn link_companies_is_on_unless_set_and_acts_only_with_the_fit() {
        let flags = |config: serde_json::Value| Destination::from_json(&config).unwrap().flags;
        let defaults = flags(json!({"apiKey": "k"}));
        assert!(defaults.link_companies && defaults.companies());
        let off = flags(json!({"apiKey": "k", "linkCompanies": "False"}));
        assert!(!off.link_companies && !off.companies());
        let no_fit = flags(json!({"apiKey": "k", "fitToKustomerSchema": false}));
        assert!(no_fit.link_companies && !no_fit.companies());
        let err = Destination::from_json(&json!({"apiKey": "k", "linkCompanies": 1})).unwrap_err();
        assert_eq!(err.setting, "linkCompanies");
        assert!(!MappingFlags::default().link_companies);
    }

    #[test]
    fn missing_api_key_is_a_config_error() {
        for config in [json!({}), json!({"apiKey": ""}), json!({"apiKey": null})] {
            assert_eq!(
                Destination::from_json(&config).unwrap_err().setting,
                "apiKey"
            );
        }
    }
}
