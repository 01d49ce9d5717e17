//! The Lambda's settings: environment variables (set by template.yaml) parsed once at
//! start-up into [`LambdaSettings`]. A bad value fails the init with a message naming the variable.

use std::time::Duration;

use kustomer_mapping::settings::{
    parse_flag_str, BaseEndpoint, MappingFlags, Secret, SettingError, MAPPING_FLAGS,
};

/// Secrets Manager secret (name or ARN) holding the API key (and the webhook token).
pub const SECRET_ID: &str = "KUSTOMER_SECRET_ID";
pub const BASE_ENDPOINT: &str = "KUSTOMER_BASE_ENDPOINT";
/// `token` (default: a webhook token is required) or `none`.
pub const WEBHOOK_AUTH: &str = "WEBHOOK_AUTH";
/// `deliver` (default: the webhook delivers to Kustomer) or `queue` (it puts the events
/// on the function's queue, `RETRY_QUEUE_URL`, and answers 202).
pub const WEBHOOK_MODE: &str = "WEBHOOK_MODE";
pub const SECRET_CACHE_TTL_SECONDS: &str = "SECRET_CACHE_TTL_SECONDS";
pub const CONNECT_TIMEOUT_MS: &str = "KUSTOMER_CONNECT_TIMEOUT_MS";
pub const REQUEST_TIMEOUT_MS: &str = "KUSTOMER_REQUEST_TIMEOUT_MS";
pub const MAX_IN_FLIGHT: &str = "MAX_IN_FLIGHT";
pub const RETRY_MAX_ATTEMPTS: &str = "RETRY_MAX_ATTEMPTS";
/// The function's own SQS queue: direct invocations park transient failures there.
pub const RETRY_QUEUE_URL: &str = "RETRY_QUEUE_URL";
pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";
/// Customer-id cache (and the company-id cache, alike): entry lifetime (0 turns the
/// caches off) and size.
pub const CUSTOMER_CACHE_TTL_SECONDS: &str = "CUSTOMER_CACHE_TTL_SECONDS";
pub const CUSTOMER_CACHE_MAX_ENTRIES: &str = "CUSTOMER_CACHE_MAX_ENTRIES";
/// Optional per-container ceiling on Kustomer requests per minute (0 or empty: none).
pub const MAX_REQUESTS_PER_MINUTE: &str = "KUSTOMER_MAX_REQUESTS_PER_MINUTE";
/// How long a container remembers the body it last sent per customer (an identical
/// update is not sent again) and the messageIds it delivered (a repeat is not sent
/// again); 0 turns both off. Bounded by `CUSTOMER_CACHE_MAX_ENTRIES` like the id cache.
pub const UNCHANGED_TTL_SECONDS: &str = "KUSTOMER_UNCHANGED_TTL_SECONDS";
/// The fleet's ledger of delivered events: a DynamoDB table (empty: off). Entries last
/// `KUSTOMER_UNCHANGED_TTL_SECONDS`, so 0 there turns the ledger off too.
pub const DEDUP_TABLE: &str = "DEDUP_TABLE";
pub const METRICS_NAMESPACE: &str = "METRICS_NAMESPACE";
pub const LOG_LEVEL: &str = "LOG_LEVEL";
/// Local runs only: the API key and webhook token given directly instead of a secret.
pub const LOCAL_API_KEY: &str = "KUSTOMER_API_KEY";
pub const LOCAL_WEBHOOK_TOKEN: &str = "WEBHOOK_TOKEN";

/// The mapping flags' variables (their table is [`MAPPING_FLAGS`]), named for tests and docs.
pub const GENERIC_PAGE: &str = "KUSTOMER_GENERIC_PAGE";
pub const GENERIC_SCREEN: &str = "KUSTOMER_GENERIC_SCREEN";
pub const ADVANCED_TRANSFORM: &str = "KUSTOMER_ADVANCED_TRANSFORM";
pub const SET_IDENTITY_EMAIL: &str = "KUSTOMER_SET_IDENTITY_EMAIL";
pub const DISABLE_EMAIL_AS_TRACKING_PROPERTY: &str = "KUSTOMER_DISABLE_EMAIL_AS_TRACKING_PROPERTY";
/// Spec section 11 [D25]; on unless set to `false`.
pub const FIT_TO_SCHEMA: &str = "KUSTOMER_FIT_TO_SCHEMA";
/// Spec section 12 [D26]; on unless set to `false` (acts while the fit is on).
pub const LINK_COMPANIES: &str = "KUSTOMER_LINK_COMPANIES";

/// A whole-number setting: its variable, default and range, and the option of
/// `rudder-kustomer send` that sets it too (`--<option> N`).
pub struct NumberSetting {
    pub env: &'static str,
    pub option: Option<&'static str>,
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

/// Every whole-number setting, one row each. Adding one is a row here, a field of
/// [`LambdaSettings`] and the line in [`LambdaSettings::from_lookup`] that types it.
#[rustfmt::skip]
pub const NUMBER_SETTINGS: &[NumberSetting] = &[
    NumberSetting { env: SECRET_CACHE_TTL_SECONDS, option: None, default: 300, min: 0, max: 86_400 },
    NumberSetting { env: CONNECT_TIMEOUT_MS, option: Some("connect-timeout-ms"), default: 2_000, min: 50, max: 60_000 },
    NumberSetting { env: REQUEST_TIMEOUT_MS, option: Some("request-timeout-ms"), default: 5_000, min: 100, max: 120_000 },
    NumberSetting { env: MAX_IN_FLIGHT, option: Some("max-in-flight"), default: 8, min: 1, max: 256 },
    NumberSetting { env: RETRY_MAX_ATTEMPTS, option: Some("max-attempts"), default: 3, min: 1, max: 10 },
    NumberSetting { env: CUSTOMER_CACHE_TTL_SECONDS, option: Some("customer-cache-ttl-seconds"), default: 300, min: 0, max: 86_400 },
    NumberSetting { env: CUSTOMER_CACHE_MAX_ENTRIES, option: Some("customer-cache-max-entries"), default: 10_000, min: 1, max: 1_000_000 },
    NumberSetting { env: MAX_REQUESTS_PER_MINUTE, option: Some("max-requests-per-minute"), default: 0, min: 0, max: 100_000 },
    NumberSetting { env: UNCHANGED_TTL_SECONDS, option: Some("unchanged-ttl-seconds"), default: 300, min: 0, max: 86_400 },
];

/// The other variables the template sets (besides the mapping flags and the numbers).
const OTHER_TEMPLATE_VARS: &[&str] = &[
    SECRET_ID,
    BASE_ENDPOINT,
    WEBHOOK_AUTH,
    WEBHOOK_MODE,
    RETRY_QUEUE_URL,
    DEAD_LETTER_QUEUE_URL,
    DEDUP_TABLE,
    METRICS_NAMESPACE,
    LOG_LEVEL,
];

/// Every variable the function reads that the SAM template must set.
pub fn template_env_vars() -> Vec<&'static str> {
    let flags = MAPPING_FLAGS.iter().map(|flag| flag.env);
    let numbers = NUMBER_SETTINGS.iter().map(|number| number.env);
    flags
        .chain(numbers)
        .chain(OTHER_TEMPLATE_VARS.iter().copied())
        .collect()
}

/// Where the API key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    SecretsManager {
        secret_id: String,
    },
    /// `KUSTOMER_API_KEY` (+ `WEBHOOK_TOKEN`) given directly: local runs.
    Local {
        api_key: Secret,
        webhook_token: Option<Secret>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAuth {
    Token,
    None,
}

/// What the webhook does with the events it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookMode {
    /// Delivers them to Kustomer and answers with the outcome (200, 400, 429, 503).
    Deliver,
    /// Puts them on the function's queue and answers 202 once SQS accepted them all; the
    /// SQS door delivers them at Kustomer's pace.
    Queue,
}

#[derive(Debug, Clone)]
pub struct LambdaSettings {
    pub key_source: KeySource,
    pub base: BaseEndpoint,
    pub flags: MappingFlags,
    pub webhook_auth: WebhookAuth,
    pub webhook_mode: WebhookMode,
    pub secret_cache_ttl: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    /// Attempts per event for throttled/transient failures (1 = no retry).
    pub max_attempts: u32,
    pub retry_queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    /// `None`: the customer-id cache is off.
    pub customer_cache_ttl: Option<Duration>,
    pub customer_cache_max_entries: usize,
    pub max_requests_per_minute: Option<u32>,
    /// `None`: unchanged updates and repeated messageIds are sent again (the skip caches
    /// are off).
    pub unchanged_ttl: Option<Duration>,
    /// The fleet's ledger of delivered events (a DynamoDB table name); `None`: off.
    pub dedup_table: Option<String>,
    pub metrics_namespace: String,
    pub log_level: tracing::Level,
}

impl LambdaSettings {
    pub fn from_env() -> Result<LambdaSettings, SettingError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses from any name → value source (tests pass a map).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<LambdaSettings, SettingError> {
        let vars = Vars(&get);
        let number = |name| vars.number(name);
        Ok(LambdaSettings {
            key_source: vars.key_source()?,
            base: BaseEndpoint::parse(&vars.get(BASE_ENDPOINT).unwrap_or_default())
                .map_err(|e| SettingError::new(BASE_ENDPOINT, e.problem))?,
            flags: MappingFlags::read(|flag| vars.flag(flag.env))?,
            webhook_auth: vars.webhook_auth()?,
            webhook_mode: vars.webhook_mode()?,
            secret_cache_ttl: Duration::from_secs(number(SECRET_CACHE_TTL_SECONDS)?),
            connect_timeout: Duration::from_millis(number(CONNECT_TIMEOUT_MS)?),
            request_timeout: Duration::from_millis(number(REQUEST_TIMEOUT_MS)?),
            max_in_flight: number(MAX_IN_FLIGHT)? as usize,
            max_attempts: number(RETRY_MAX_ATTEMPTS)? as u32,
            retry_queue_url: vars.queue_url(RETRY_QUEUE_URL)?,
            dead_letter_queue_url: vars.queue_url(DEAD_LETTER_QUEUE_URL)?,
            customer_cache_ttl: nonzero(number(CUSTOMER_CACHE_TTL_SECONDS)?)
                .map(Duration::from_secs),
            customer_cache_max_entries: number(CUSTOMER_CACHE_MAX_ENTRIES)? as usize,
            max_requests_per_minute: nonzero(number(MAX_REQUESTS_PER_MINUTE)?)
                .map(|rpm| rpm as u32),
            unchanged_ttl: nonzero(number(UNCHANGED_TTL_SECONDS)?).map(Duration::from_secs),
            dedup_table: vars.table_name(DEDUP_TABLE)?,
            metrics_namespace: vars
                .get(METRICS_NAMESPACE)
                .unwrap_or_else(|| "RudderKustomer".into()),
            log_level: vars.log_level()?,
        })
    }
}

/// `0` means "off" for the settings that can be switched off.
fn nonzero(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}

/// The variables as the function reads them. An empty variable means "not set": SAM
/// passes empty strings for blank parameters.
struct Vars<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|value| !value.trim().is_empty())
    }

    fn flag(&self, name: &str) -> Result<Option<bool>, SettingError> {
        self.get(name)
            .map(|value| parse_flag_str(name, value.trim()))
            .transpose()
    }

    /// A setting of [`NUMBER_SETTINGS`], checked against its range.
    fn number(&self, name: &str) -> Result<u64, SettingError> {
        let Some(setting) = NUMBER_SETTINGS.iter().find(|setting| setting.env == name) else {
            return Err(SettingError::new(name, "is not a number setting (a bug)"));
        };
        let Some(raw) = self.get(name) else {
            return Ok(setting.default);
        };
        let (min, max) = (setting.min, setting.max);
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(SettingError::new(
                name,
                format!("must be a whole number from {min} to {max} (got {raw:?})"),
            )),
        }
    }

    fn key_source(&self) -> Result<KeySource, SettingError> {
        match (self.get(SECRET_ID), self.get(LOCAL_API_KEY)) {
            (Some(secret_id), _) => Ok(KeySource::SecretsManager { secret_id }),
            (None, Some(key)) => Ok(KeySource::Local {
                api_key: Secret::new(key),
                webhook_token: self.get(LOCAL_WEBHOOK_TOKEN).map(Secret::new),
            }),
            (None, None) => Err(SettingError::new(
                SECRET_ID,
                format!("is required (or {LOCAL_API_KEY} for local runs)"),
            )),
        }
    }

    fn webhook_auth(&self) -> Result<WebhookAuth, SettingError> {
        match self
            .get(WEBHOOK_AUTH)
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => Ok(WebhookAuth::Token),
            Some(v) if v == "token" => Ok(WebhookAuth::Token),
            Some(v) if v == "none" => Ok(WebhookAuth::None),
            Some(v) => Err(SettingError::new(
                WEBHOOK_AUTH,
                format!("must be token or none (got {v:?})"),
            )),
        }
    }

    fn webhook_mode(&self) -> Result<WebhookMode, SettingError> {
        let mode = self
            .get(WEBHOOK_MODE)
            .map(|v| v.trim().to_ascii_lowercase());
        let mode = match mode.as_deref() {
            None | Some("deliver") => WebhookMode::Deliver,
            Some("queue") => WebhookMode::Queue,
            Some(other) => {
                return Err(SettingError::new(
                    WEBHOOK_MODE,
                    format!("must be deliver or queue (got {other:?})"),
                ))
            }
        };
        if mode == WebhookMode::Queue && self.get(RETRY_QUEUE_URL).is_none() {
            return Err(SettingError::new(
                WEBHOOK_MODE,
                format!("queue needs the queue's URL in {RETRY_QUEUE_URL}"),
            ));
        }
        Ok(mode)
    }

    fn queue_url(&self, name: &str) -> Result<Option<String>, SettingError> {
        match self.get(name) {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => Ok(Some(url)),
            Some(url) => Err(SettingError::new(
                name,
                format!("must be a queue URL (got {url:?})"),
            )),
            None => Ok(None),
        }
    }

    /// A DynamoDB table: its name (3–255 of `A-Za-z0-9_.-`) or its ARN.
    fn table_name(&self, name: &str) -> Result<Option<String>, SettingError> {
        let Some(table) = self.get(name).map(|table| table.trim().to_string()) else {
            return Ok(None);
        };
        let plain_name = (3..=255).contains(&table.len())
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        let arn = table.starts_with("arn:") && table.len() <= 1024 && table.contains(":table/");
        if plain_name || arn {
            Ok(Some(table))
        } else {
            Err(SettingError::new(
                name,
                "must be a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -) or a table ARN",
            ))
        }
    }

    fn log_level(&self) -> Result<tracing::Level, SettingError> {
        match self.get(LOG_LEVEL) {
            None => Ok(tracing::Level::INFO),
            Some(name) => parse_log_level(&name).ok_or_else(|| {
                SettingError::new(LOG_LEVEL, "must be one of trace, debug, info, warn, error")
            }),
        }
    }
}

/// A log level by name, as `LOG_LEVEL` and Lambda's `AWS_LAMBDA_LOG_LEVEL` spell it.
pub fn parse_log_level(name: &str) -> Option<tracing::Level> {
    match name.trim().to_ascii_lowercase().as_str() {
        "trace" => Some(tracing::Level::TRACE),
        "debug" => Some(tracing::Level::DEBUG),
        "info" => Some(tracing::Level::INFO),
        "warn" | "warning" => Some(tracing::Level::WARN),
        "error" | "fatal" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<LambdaSettings, SettingError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LambdaSettings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let config = parse(&[(SECRET_ID, "kustomer/api")]).unwrap();
        assert_eq!(
            config.base.as_str(),
            kustomer_mapping::settings::US_ENDPOINT
        );
        assert_eq!(config.webhook_auth, WebhookAuth::Token);
        assert_eq!(config.max_in_flight, 8);
        assert_eq!(config.secret_cache_ttl, Duration::from_secs(300));
        assert_eq!(config.webhook_mode, WebhookMode::Deliver);
        assert_eq!(config.unchanged_ttl, Some(Duration::from_secs(300)));
        let queue = parse(&[
            (SECRET_ID, "s"),
            (WEBHOOK_MODE, "queue"),
            (
                RETRY_QUEUE_URL,
                "https://sqs.us-east-1.amazonaws.com/1/q.fifo",
            ),
            (UNCHANGED_TTL_SECONDS, "0"),
        ])
        .unwrap();
        assert_eq!(queue.webhook_mode, WebhookMode::Queue);
        assert_eq!(queue.unchanged_ttl, None);
        assert_eq!(config.dedup_table, None, "no table, no ledger");
        for table in [
            "rk-delivered",
            "arn:aws:dynamodb:eu-west-1:1:table/rk-delivered",
        ] {
            let ledger = parse(&[(SECRET_ID, "s"), (DEDUP_TABLE, table)]).unwrap();
            assert_eq!(ledger.dedup_table.as_deref(), Some(table));
        }
        // Every mapping flag off, except the schema fit and companies (spec 11, 12: on by
        // default).
        assert_eq!(
            config.flags,
            MappingFlags {
                fit_to_kustomer_schema: true,
                link_companies: true,
                ..MappingFlags::default()
            }
        );
        let off = parse(&[(SECRET_ID, "s"), (FIT_TO_SCHEMA, "False")]).unwrap();
        assert!(!off.flags.fit_to_kustomer_schema);
        let off = parse(&[(SECRET_ID, "s"), (LINK_COMPANIES, "FALSE")]).unwrap();
        assert!(!off.flags.link_companies && off.flags.fit_to_kustomer_schema);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            (GENERIC_PAGE, "yes"),
            (FIT_TO_SCHEMA, "0"),
            (LINK_COMPANIES, "on"),
            (MAX_IN_FLIGHT, "0"),
            (BASE_ENDPOINT, "http://api.kustomerapp.com"),
            (WEBHOOK_AUTH, "maybe"),
            (WEBHOOK_MODE, "later"),
            (WEBHOOK_MODE, "queue"),
            (UNCHANGED_TTL_SECONDS, "-1"),
            (DEAD_LETTER_QUEUE_URL, "dlq"),
            (DEDUP_TABLE, "a/b"),
            (DEDUP_TABLE, "t"),
            (LOG_LEVEL, "loud"),
        ] {
            let err = parse(&[(SECRET_ID, "s"), (name, value)]).unwrap_err();
            assert_eq!(err.setting, name);
        }
        assert_eq!(parse(&[]).unwrap_err().setting, SECRET_ID);
    }

    #[test]
    fn the_flag_constants_name_the_table_rows() {
        let named = [
            GENERIC_PAGE,
            GENERIC_SCREEN,
            ADVANCED_TRANSFORM,
            SET_IDENTITY_EMAIL,
            DISABLE_EMAIL_AS_TRACKING_PROPERTY,
            FIT_TO_SCHEMA,
            LINK_COMPANIES,
        ];
        for name in named {
            assert!(MAPPING_FLAGS.iter().any(|flag| flag.env == name), "{name}");
        }
        // Every table row reads its own variable, and every variable is read once.
        let vars = template_env_vars();
        let unique: std::collections::BTreeSet<_> = vars.iter().collect();
        assert_eq!(unique.len(), vars.len());
        for flag in MAPPING_FLAGS {
            let on = parse(&[(SECRET_ID, "s"), (flag.env, "true")]).unwrap();
            let off = parse(&[(SECRET_ID, "s"), (flag.env, "false")]).unwrap();
            assert_ne!(on.flags, off.flags, "{}", flag.env);
        }
    }

    #[test]
    fn local_key_is_not_shown() {
        let config = parse(&[
            (LOCAL_API_KEY, "sk-local-secret"),
            (LOCAL_WEBHOOK_TOKEN, "tok-secret"),
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-local-secret") && !shown.contains("tok-secret"));
    }
}
