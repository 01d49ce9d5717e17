//! The Lambda's settings: environment variables (set by template.yaml) parsed once at
//! start-up into [`LambdaSettings`]. A bad value fails the init with a message naming the variable.

use std::time::Duration;

use kustomer_mapping::settings::{
    parse_flag_str, BaseEndpoint, MappingFlags, Secret, SettingError, FIT_TO_SCHEMA_DEFAULT,
};

/// Secrets Manager secret (name or ARN) holding the API key (and the webhook token).
pub const SECRET_ID: &str = "KUSTOMER_SECRET_ID";
pub const BASE_ENDPOINT: &str = "KUSTOMER_BASE_ENDPOINT";
pub const GENERIC_PAGE: &str = "KUSTOMER_GENERIC_PAGE";
pub const GENERIC_SCREEN: &str = "KUSTOMER_GENERIC_SCREEN";
pub const ADVANCED_TRANSFORM: &str = "KUSTOMER_ADVANCED_TRANSFORM";
pub const SET_IDENTITY_EMAIL: &str = "KUSTOMER_SET_IDENTITY_EMAIL";
pub const DISABLE_EMAIL_AS_TRACKING_PROPERTY: &str = "KUSTOMER_DISABLE_EMAIL_AS_TRACKING_PROPERTY";
/// Spec section 11 [D25]; on unless set to `false`.
pub const FIT_TO_SCHEMA: &str = "KUSTOMER_FIT_TO_SCHEMA";
/// `token` (default: a webhook token is required) or `none`.
pub const WEBHOOK_AUTH: &str = "WEBHOOK_AUTH";
pub const SECRET_CACHE_TTL_SECONDS: &str = "SECRET_CACHE_TTL_SECONDS";
pub const CONNECT_TIMEOUT_MS: &str = "KUSTOMER_CONNECT_TIMEOUT_MS";
pub const REQUEST_TIMEOUT_MS: &str = "KUSTOMER_REQUEST_TIMEOUT_MS";
pub const MAX_IN_FLIGHT: &str = "MAX_IN_FLIGHT";
pub const RETRY_MAX_ATTEMPTS: &str = "RETRY_MAX_ATTEMPTS";
/// The function's own SQS queue: direct invocations park transient failures there.
pub const RETRY_QUEUE_URL: &str = "RETRY_QUEUE_URL";
pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";
/// Customer-id cache: entry lifetime (0 turns the cache off) and size.
pub const CUSTOMER_CACHE_TTL_SECONDS: &str = "CUSTOMER_CACHE_TTL_SECONDS";
pub const CUSTOMER_CACHE_MAX_ENTRIES: &str = "CUSTOMER_CACHE_MAX_ENTRIES";
/// Optional per-container ceiling on Kustomer requests per minute (0 or empty: none).
pub const MAX_REQUESTS_PER_MINUTE: &str = "KUSTOMER_MAX_REQUESTS_PER_MINUTE";
pub const METRICS_NAMESPACE: &str = "METRICS_NAMESPACE";
pub const LOG_LEVEL: &str = "LOG_LEVEL";
/// Local runs only: the API key and webhook token given directly instead of a secret.
pub const LOCAL_API_KEY: &str = "KUSTOMER_API_KEY";
pub const LOCAL_WEBHOOK_TOKEN: &str = "WEBHOOK_TOKEN";

/// Every variable the function reads that the SAM template must set.
pub const TEMPLATE_ENV_VARS: &[&str] = &[
    SECRET_ID,
    BASE_ENDPOINT,
    GENERIC_PAGE,
    GENERIC_SCREEN,
    ADVANCED_TRANSFORM,
    SET_IDENTITY_EMAIL,
    DISABLE_EMAIL_AS_TRACKING_PROPERTY,
    FIT_TO_SCHEMA,
    WEBHOOK_AUTH,
    SECRET_CACHE_TTL_SECONDS,
    CONNECT_TIMEOUT_MS,
    REQUEST_TIMEOUT_MS,
    MAX_IN_FLIGHT,
    RETRY_MAX_ATTEMPTS,
    RETRY_QUEUE_URL,
    DEAD_LETTER_QUEUE_URL,
    CUSTOMER_CACHE_TTL_SECONDS,
    CUSTOMER_CACHE_MAX_ENTRIES,
    MAX_REQUESTS_PER_MINUTE,
    METRICS_NAMESPACE,
    LOG_LEVEL,
];

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

#[derive(Debug, Clone)]
pub struct LambdaSettings {
    pub key_source: KeySource,
    pub base: BaseEndpoint,
    pub flags: MappingFlags,
    pub webhook_auth: WebhookAuth,
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
        // An empty variable means "not set": SAM passes empty strings for blank parameters.
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let flag_or = |name: &str, default: bool| {
            var(name).map_or(Ok(default), |v| parse_flag_str(name, v.trim()))
        };
        let flag = |name: &str| flag_or(name, false);
        let number = |name: &str, default: u64, min: u64, max: u64| -> Result<u64, SettingError> {
            let Some(raw) = var(name) else {
                return Ok(default);
            };
            match raw.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(SettingError::new(
                    name,
                    format!("must be a whole number from {min} to {max} (got {raw:?})"),
                )),
            }
        };

        let key_source = match (var(SECRET_ID), var(LOCAL_API_KEY)) {
            (Some(secret_id), _) => KeySource::SecretsManager { secret_id },
            (None, Some(key)) => KeySource::Local {
                api_key: Secret::new(key),
                webhook_token: var(LOCAL_WEBHOOK_TOKEN).map(Secret::new),
            },
            (None, None) => {
                return Err(SettingError::new(
                    SECRET_ID,
                    format!("is required (or {LOCAL_API_KEY} for local runs)"),
                ))
            }
        };
        let webhook_auth = match var(WEBHOOK_AUTH).map(|v| v.trim().to_ascii_lowercase()) {
            None => WebhookAuth::Token,
            Some(v) if v == "token" => WebhookAuth::Token,
            Some(v) if v == "none" => WebhookAuth::None,
            Some(v) => {
                return Err(SettingError::new(
                    WEBHOOK_AUTH,
                    format!("must be token or none (got {v:?})"),
                ))
            }
        };
        let base = BaseEndpoint::parse(&var(BASE_ENDPOINT).unwrap_or_default())
            .map_err(|e| SettingError::new(BASE_ENDPOINT, e.problem))?;
        let queue_url = |name: &str| -> Result<Option<String>, SettingError> {
            match var(name) {
                Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                    Ok(Some(url))
                }
                Some(url) => Err(SettingError::new(
                    name,
                    format!("must be a queue URL (got {url:?})"),
                )),
                None => Ok(None),
            }
        };

        Ok(LambdaSettings {
            key_source,
            base,
            flags: MappingFlags {
                generic_page: flag(GENERIC_PAGE)?,
                generic_screen: flag(GENERIC_SCREEN)?,
                advanced_transform: flag(ADVANCED_TRANSFORM)?,
                set_identity_email: flag(SET_IDENTITY_EMAIL)?,
                disable_email_as_tracking_property: flag(DISABLE_EMAIL_AS_TRACKING_PROPERTY)?,
                fit_to_kustomer_schema: flag_or(FIT_TO_SCHEMA, FIT_TO_SCHEMA_DEFAULT)?,
            },
            webhook_auth,
            secret_cache_ttl: Duration::from_secs(number(
                SECRET_CACHE_TTL_SECONDS,
                300,
                0,
                86_400,
            )?),
            connect_timeout: Duration::from_millis(number(CONNECT_TIMEOUT_MS, 2_000, 50, 60_000)?),
            request_timeout: Duration::from_millis(number(
                REQUEST_TIMEOUT_MS,
                5_000,
                100,
                120_000,
            )?),
            max_in_flight: number(MAX_IN_FLIGHT, 8, 1, 256)? as usize,
            max_attempts: number(RETRY_MAX_ATTEMPTS, 3, 1, 10)? as u32,
            retry_queue_url: queue_url(RETRY_QUEUE_URL)?,
            dead_letter_queue_url: queue_url(DEAD_LETTER_QUEUE_URL)?,
            customer_cache_ttl: match number(CUSTOMER_CACHE_TTL_SECONDS, 300, 0, 86_400)? {
                0 => None,
                seconds => Some(Duration::from_secs(seconds)),
            },
            customer_cache_max_entries: number(CUSTOMER_CACHE_MAX_ENTRIES, 10_000, 1, 1_000_000)?
                as usize,
            max_requests_per_minute: match number(MAX_REQUESTS_PER_MINUTE, 0, 0, 100_000)? {
                0 => None,
                rpm => Some(rpm as u32),
            },
            metrics_namespace: var(METRICS_NAMESPACE).unwrap_or_else(|| "RudderKustomer".into()),
            log_level: match var(LOG_LEVEL) {
                None => tracing::Level::INFO,
                Some(name) => parse_log_level(&name).ok_or_else(|| {
                    SettingError::new(LOG_LEVEL, "must be one of trace, debug, info, warn, error")
                })?,
            },
        })
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
        // Every mapping flag off, except the schema fit (spec 11: on by default).
        assert_eq!(
            config.flags,
            MappingFlags {
                fit_to_kustomer_schema: true,
                ..MappingFlags::default()
            }
        );
        let off = parse(&[(SECRET_ID, "s"), (FIT_TO_SCHEMA, "False")]).unwrap();
        assert!(!off.flags.fit_to_kustomer_schema);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            (GENERIC_PAGE, "yes"),
            (FIT_TO_SCHEMA, "0"),
            (MAX_IN_FLIGHT, "0"),
            (BASE_ENDPOINT, "http://api.kustomerapp.com"),
            (WEBHOOK_AUTH, "maybe"),
            (DEAD_LETTER_QUEUE_URL, "dlq"),
            (LOG_LEVEL, "loud"),
        ] {
            let err = parse(&[(SECRET_ID, "s"), (name, value)]).unwrap_err();
            assert_eq!(err.setting, name);
        }
        assert_eq!(parse(&[]).unwrap_err().setting, SECRET_ID);
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
