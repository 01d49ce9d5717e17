//! The Kustomer API key (and webhook token): from Secrets Manager, cached for a TTL.
//!
//! Own TTL cache, not `aws-secretsmanager-caching`: that crate calls DescribeSecret after its TTL
//! (one more IAM action), re-enables the SDK's default features and returns non-`Send` errors.
//!
//! The secret string is the bare API key or `{"apiKey": "...", "webhookToken": "..."}`,
//! optionally with `"previousWebhookToken"` during a token rotation (both are accepted).
//! [`KeyProvider::current`] serves the cached value while it is younger than the TTL and
//! fetches otherwise; [`KeyProvider::reload`] refetches after Kustomer answered 401/403;
//! [`KeyProvider::reload_for_webhook_token`] refetches after a webhook token matched
//! neither token, at most once per [`TOKEN_RELOAD_INTERVAL`].
//! Fetches are single-flight: one `GetSecretValue` at a time, and callers that waited on
//! a fetch take its result instead of starting their own. Nothing here ever formats a
//! secret value: failures name the secret id only.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell, RwLock};
use tokio::time::Instant;

use crate::outcome::{Failure, FailureClass};
use crate::settings::lambda::KeySource;
use kustomer_mapping::settings::Secret;

/// The API key and, when the secret has them, the webhook tokens. `Debug` shows none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub api_key: Secret,
    pub webhook_token: Option<Secret>,
    /// The token being rotated out: still accepted until it is removed from the secret.
    pub previous_webhook_token: Option<Secret>,
}

/// Why a secret string holds no usable credentials: says what is wrong, never what the
/// secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFormatError {
    EmptyKey,
    NotJsonObject,
    EmptyApiKey,
    ApiKeyNotText,
    NoApiKey,
    NotText { field: &'static str },
}

impl std::fmt::Display for SecretFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretFormatError::EmptyKey => f.write_str("holds an empty API key"),
            SecretFormatError::NotJsonObject => {
                f.write_str("starts with '{' but is not a valid JSON object")
            }
            SecretFormatError::EmptyApiKey => f.write_str("is JSON with an empty \"apiKey\""),
            SecretFormatError::ApiKeyNotText => {
                f.write_str("is JSON whose \"apiKey\" is not a string")
            }
            SecretFormatError::NoApiKey => f.write_str("is JSON without an \"apiKey\" field"),
            SecretFormatError::NotText { field } => {
                write!(f, "is JSON whose \"{field}\" is not a string")
            }
        }
    }
}

impl std::error::Error for SecretFormatError {}

impl Credentials {
    /// Reads a secret string: the bare API key, or JSON with `apiKey` (+ `webhookToken`).
    pub fn parse(secret_string: &str) -> Result<Credentials, SecretFormatError> {
        let text = secret_string.trim();
        if !text.starts_with('{') {
            if text.is_empty() {
                return Err(SecretFormatError::EmptyKey);
            }
            return Ok(Credentials {
                api_key: Secret::new(text),
                webhook_token: None,
                previous_webhook_token: None,
            });
        }
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
            return Err(SecretFormatError::NotJsonObject);
        };
        let api_key = match object.get("apiKey") {
            Some(Value::String(key)) if !key.trim().is_empty() => Secret::new(key.trim()),
            Some(Value::String(_)) => return Err(SecretFormatError::EmptyApiKey),
            Some(_) => return Err(SecretFormatError::ApiKeyNotText),
            None => return Err(SecretFormatError::NoApiKey),
        };
        let token = |field: &'static str| match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(token)) if token.trim().is_empty() => Ok(None),
            Some(Value::String(token)) => Ok(Some(Secret::new(token.trim()))),
            Some(_) => Err(SecretFormatError::NotText { field }),
        };
        Ok(Credentials {
            api_key,
            webhook_token: token("webhookToken")?,
            previous_webhook_token: token("previousWebhookToken")?,
        })
    }
}

/// Timeouts for Secrets Manager calls: a black-holed endpoint must fail well inside the
/// 10 s RudderStack waits for a webhook answer (the SDK retries up to 3 attempts within).
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(4))
        .build()
}

/// How long an expired key is used again while Secrets Manager cannot be reached.
const STALE_GRACE: Duration = Duration::from_secs(30);

/// At most one reload per this interval (per container) because a webhook token did not
/// match: anyone can send a wrong token, and that must not drive Secrets Manager traffic.
pub const TOKEN_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

struct Cached {
    credentials: Arc<Credentials>,
    fetched_at: Instant,
}

/// Hands out the current [`Credentials`]; see the module doc.
pub struct KeyProvider {
    source: KeySource,
    ttl: Duration,
    /// `Local` credentials, built once.
    local: Option<Arc<Credentials>>,
    /// Given by the caller (tests); otherwise loaded from the environment at first need.
    sdk_config: Option<SdkConfig>,
    client: OnceCell<aws_sdk_secretsmanager::Client>,
    cached: RwLock<Option<Cached>>,
    /// Held for the whole of a fetch; keeps the last fetch's result for the callers that
    /// waited on it.
    fetch: Mutex<Option<Result<Arc<Credentials>, Failure>>>,
    /// Completed fetches (successful or not).
    fetches: AtomicU64,
    /// When a mismatching webhook token last caused a reload. Only touched with the fetch
    /// lock held, so a plain mutex (never held across an await) is enough.
    token_reloaded_at: std::sync::Mutex<Option<Instant>>,
}

impl fmt::Debug for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyProvider")
            .field("source", &self.source)
            .field("ttl", &self.ttl)
            .field("fetches", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

impl KeyProvider {
    /// No IO: the Secrets Manager client is created at the first fetch, from the
    /// environment (`AWS_REGION`, credentials, optional `AWS_ENDPOINT_URL[_SECRETS_MANAGER]`).
    pub fn new(source: KeySource, ttl: Duration) -> Self {
        Self::build(source, ttl, None)
    }

    /// Like [`KeyProvider::new`] with an explicit SDK configuration (endpoint, region,
    /// credentials) instead of the process environment: tests use this.
    pub fn with_sdk_config(source: KeySource, ttl: Duration, sdk_config: SdkConfig) -> Self {
        Self::build(source, ttl, Some(sdk_config))
    }

    fn build(source: KeySource, ttl: Duration, sdk_config: Option<SdkConfig>) -> Self {
        let local = match &source {
            KeySource::Local {
                api_key,
                webhook_token,
            } => Some(Arc::new(Credentials {
                api_key: api_key.clone(),
                webhook_token: webhook_token.clone(),
                previous_webhook_token: None,
            })),
            KeySource::SecretsManager { .. } => None,
        };
        KeyProvider {
            source,
            ttl,
            local,
            sdk_config,
            client: OnceCell::new(),
            cached: RwLock::new(None),
            fetch: Mutex::new(None),
            fetches: AtomicU64::new(0),
            token_reloaded_at: std::sync::Mutex::new(None),
        }
    }

    /// How many fetches from Secrets Manager have completed (successful or not).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Acquire)
    }

    /// The credentials: cached for the TTL, fetched at first need and after expiry.
    pub async fn current(&self) -> Result<Arc<Credentials>, Failure> {
        if let Some(local) = &self.local {
            return Ok(local.clone());
        }
        if let Some(fresh) = self.fresh().await {
            return Ok(fresh);
        }
        let seen = self.fetch_count();
        let mut last = self.fetch.lock().await;
        if self.fetch_count() != seen {
            // A fetch finished while we waited for the lock: share its result.
            if let Some(result) = last.as_ref() {
                return result.clone();
            }
        }
        if let Some(fresh) = self.fresh().await {
            return Ok(fresh);
        }
        match self.fetch_locked(&mut last).await {
            // Secrets Manager is down but we know a key: keep delivering with it for a
            // while rather than failing every event (a revoked key still gets its 401).
            Err(failure) if failure.class.is_retryable() => match self.serve_stale().await {
                Some(stale) => {
                    tracing::warn!(
                        error = failure.message.as_str(),
                        grace_seconds = STALE_GRACE.as_secs(),
                        "Secrets Manager unreachable; using the expired cached key"
                    );
                    Ok(stale)
                }
                None => Err(failure),
            },
            other => other,
        }
    }

    /// The expired cached credentials, re-armed for [`STALE_GRACE`] so that an outage
    /// costs one Secrets Manager call per grace period, not one per event.
    async fn serve_stale(&self) -> Option<Arc<Credentials>> {
        let mut cached = self.cached.write().await;
        let cached = cached.as_mut()?;
        let grace = STALE_GRACE.min(self.ttl);
        cached.fetched_at = Instant::now()
            .checked_sub(self.ttl - grace)
            .unwrap_or_else(Instant::now);
        Some(cached.credentials.clone())
    }

    /// After Kustomer refused `stale` (401/403): fetch the secret again, once. When
    /// another task has already replaced `stale`, returns the newer value without fetching.
    pub async fn reload(&self, stale: &Arc<Credentials>) -> Result<Arc<Credentials>, Failure> {
        if let Some(local) = &self.local {
            return Ok(local.clone());
        }
        let seen = self.fetch_count();
        let mut last = self.fetch.lock().await;
        if let Some(cached) = self.cached.read().await.as_ref() {
            if !Arc::ptr_eq(&cached.credentials, stale) {
                return Ok(cached.credentials.clone());
            }
        }
        if self.fetch_count() != seen {
            // A reload of the same stale value failed while we waited: share that failure.
            if let Some(Err(failure)) = last.as_ref() {
                return Err(failure.clone());
            }
        }
        self.fetch_locked(&mut last).await
    }

    /// After a webhook token matched neither token of `seen`: the credentials to check it
    /// against again. `Ok(Some(newer))` when the secret was reloaded (or another call
    /// already replaced `seen`); `Ok(None)` when there is nothing newer and a reload for a
    /// token already ran within [`TOKEN_RELOAD_INTERVAL`]; `Err` when the reload failed
    /// (or the one within the interval did), so the token cannot be checked now.
    ///
    /// Single-flight: concurrent mismatching calls wait on the same fetch lock, and those
    /// that waited find `seen` replaced and take the new value without fetching.
    pub async fn reload_for_webhook_token(
        &self,
        seen: &Arc<Credentials>,
    ) -> Result<Option<Arc<Credentials>>, Failure> {
        if self.local.is_some() {
            return Ok(None);
        }
        let mut last = self.fetch.lock().await;
        if let Some(cached) = self.cached.read().await.as_ref() {
            if !Arc::ptr_eq(&cached.credentials, seen) {
                return Ok(Some(cached.credentials.clone()));
            }
        }
        let now = Instant::now();
        {
            let mut reloaded_at = self
                .token_reloaded_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !token_reload_due(*reloaded_at, now) {
                return match last.as_ref() {
                    Some(Err(failure)) if failure.class.is_retryable() => Err(failure.clone()),
                    _ => Ok(None),
                };
            }
            *reloaded_at = Some(now);
        }
        tracing::info!("webhook token did not match: reloading the secret");
        self.fetch_locked(&mut last).await.map(Some)
    }

    async fn fresh(&self) -> Option<Arc<Credentials>> {
        let cached = self.cached.read().await;
        cached
            .as_ref()
            .filter(|c| c.fetched_at.elapsed() < self.ttl)
            .map(|c| c.credentials.clone())
    }

    /// Fetches with the fetch lock held (`last` is its guard) and records the result.
    async fn fetch_locked(
        &self,
        last: &mut Option<Result<Arc<Credentials>, Failure>>,
    ) -> Result<Arc<Credentials>, Failure> {
        let result = self.fetch_from_secrets_manager().await.map(Arc::new);
        if let Ok(credentials) = &result {
            *self.cached.write().await = Some(Cached {
                credentials: credentials.clone(),
                fetched_at: Instant::now(),
            });
        }
        *last = Some(result.clone());
        self.fetches.fetch_add(1, Ordering::AcqRel);
        result
    }

    async fn client(&self) -> &aws_sdk_secretsmanager::Client {
        self.client
            .get_or_init(|| async {
                let sdk_config = crate::aws::given_or_shared(&self.sdk_config).await;
                let config = aws_sdk_secretsmanager::config::Builder::from(sdk_config)
                    .timeout_config(timeouts())
                    .build();
                aws_sdk_secretsmanager::Client::from_conf(config)
            })
            .await
    }

    async fn fetch_from_secrets_manager(&self) -> Result<Credentials, Failure> {
        let KeySource::SecretsManager { secret_id } = &self.source else {
            return Err(auth("no secret configured".into()));
        };
        let started = Instant::now();
        let output = self
            .client()
            .await
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|error| classify(secret_id, error))?;
        let Some(secret_string) = output.secret_string() else {
            return Err(auth(format!(
                "secret {secret_id} has no SecretString (a binary secret cannot hold the API key)"
            )));
        };
        let credentials = Credentials::parse(secret_string)
            .map_err(|problem| auth(format!("secret {secret_id} {problem}")))?;
        tracing::info!(
            secret_id = %secret_id,
            version_id = output.version_id().unwrap_or("-"),
            webhook_token = credentials.webhook_token.is_some(),
            previous_webhook_token = credentials.previous_webhook_token.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fetched the Kustomer API key from Secrets Manager"
        );
        Ok(credentials)
    }
}

/// Whether a token mismatch may reload the secret now, given the last such reload.
fn token_reload_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= TOKEN_RELOAD_INTERVAL)
}

fn auth(message: String) -> Failure {
    Failure::new(FailureClass::Auth, None, message)
}

/// Transient (retry later) vs Auth (a configuration problem) for a failed GetSecretValue.
/// Uses the error code and AWS's message, never anything from a secret.
fn classify(
    secret_id: &str,
    error: SdkError<GetSecretValueError, aws_sdk_secretsmanager::config::http::HttpResponse>,
) -> Failure {
    let transient = |detail: String| {
        Failure::transient(format!(
            "Secrets Manager unavailable for secret {secret_id}: {detail}"
        ))
    };
    match &error {
        SdkError::ServiceError(context) => {
            let err = context.err();
            let status = context.raw().status().as_u16();
            let code = err.code().unwrap_or("UnknownError");
            let detail = match err.message() {
                Some(message) if !message.is_empty() => format!("{code} ({status}): {message}"),
                _ => format!("{code} ({status})"),
            };
            match err {
                GetSecretValueError::ResourceNotFoundException(_) => auth(format!(
                    "secret {secret_id} does not exist in Secrets Manager: {detail}"
                )),
                GetSecretValueError::DecryptionFailure(_) => auth(format!(
                    "secret {secret_id} cannot be decrypted (the role needs kms:Decrypt on its key): {detail}"
                )),
                GetSecretValueError::InvalidParameterException(_)
                | GetSecretValueError::InvalidRequestException(_) => auth(format!(
                    "secret {secret_id} cannot be read: {detail}"
                )),
                GetSecretValueError::InternalServiceError(_) => transient(detail),
                _ if status == 429 || status >= 500 || is_throttling(code) => transient(detail),
                _ if code == "AccessDeniedException" || status == 401 || status == 403 => {
                    auth(format!(
                        "access to secret {secret_id} denied (the role needs secretsmanager:GetSecretValue): {detail}"
                    ))
                }
                _ if (400..500).contains(&status) => {
                    auth(format!("secret {secret_id} cannot be read: {detail}"))
                }
                _ => transient(detail),
            }
        }
        SdkError::TimeoutError(_) => transient("timed out".into()),
        SdkError::DispatchFailure(_) => transient(crate::aws::error_chain(&error)),
        // The body may have been (part of) the secret: say nothing about it.
        SdkError::ResponseError(context) => transient(format!(
            "unreadable response (HTTP {})",
            context.raw().status().as_u16()
        )),
        SdkError::ConstructionFailure(_) => auth(format!(
            "cannot build the Secrets Manager request for secret {secret_id} (check AWS_REGION): {}",
            crate::aws::error_chain(&error)
        )),
        _ => transient("unexpected SDK error".into()),
    }
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "ServiceUnavailable"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_reloads_are_at_most_one_per_interval() {
        let start = Instant::now();
        assert!(token_reload_due(None, start));
        assert!(!token_reload_due(Some(start), start));
        assert!(!token_reload_due(
            Some(start),
            start + TOKEN_RELOAD_INTERVAL - Duration::from_millis(1)
        ));
        assert!(token_reload_due(Some(start), start + TOKEN_RELOAD_INTERVAL));
        // A clock that went backwards never allows a reload early.
        assert!(!token_reload_due(
            Some(start + TOKEN_RELOAD_INTERVAL),
            start
        ));
    }

    #[test]
    fn previous_webhook_token_is_read_beside_the_current_one() {
        let both = Credentials::parse(
            r#"{"apiKey": "sk-1", "webhookToken": "tok-new", "previousWebhookToken": " tok-old "}"#,
        )
        .unwrap();
        assert_eq!(
            both.webhook_token.as_ref().map(Secret::expose),
            Some("tok-new")
        );
        assert_eq!(
            both.previous_webhook_token.as_ref().map(Secret::expose),
            Some("tok-old")
        );
        let none = Credentials::parse(r#"{"apiKey": "sk-1", "previousWebhookToken": ""}"#).unwrap();
        assert!(none.previous_webhook_token.is_none());
        let bad =
            Credentials::parse(r#"{"apiKey": "sk-1", "previousWebhookToken": ["tok-hidden"]}"#)
                .unwrap_err()
                .to_string();
        assert!(
            bad.contains("previousWebhookToken") && !bad.contains("tok-hidden"),
            "{bad}"
        );
    }

    #[test]
    fn bare_key_is_trimmed() {
        let credentials = Credentials::parse("  sk-bare\n").unwrap();
        assert_eq!(credentials.api_key.expose(), "sk-bare");
        assert!(credentials.webhook_token.is_none());
    }

    #[test]
    fn json_with_and_without_token() {
        let both = Credentials::parse(r#"{"apiKey": "sk-1", "webhookToken": "tok-1"}"#).unwrap();
        assert_eq!(both.api_key.expose(), "sk-1");
        assert_eq!(
            both.webhook_token.as_ref().map(Secret::expose),
            Some("tok-1")
        );
        let key_only = Credentials::parse(r#"{"apiKey": "sk-2", "webhookToken": ""}"#).unwrap();
        assert!(key_only.webhook_token.is_none());
    }

    #[test]
    fn bad_secrets_say_what_is_wrong_without_the_value() {
        for (secret, expected) in [
            ("", "empty API key"),
            ("   ", "empty API key"),
            (r#"{"webhookToken": "tok-hidden"}"#, "without an \"apiKey\""),
            (
                r#"{"apiKey": "", "webhookToken": "tok-hidden"}"#,
                "empty \"apiKey\"",
            ),
            (
                r#"{"apiKey": 7, "webhookToken": "tok-hidden"}"#,
                "not a string",
            ),
            (
                r#"{"apiKey": "sk-hidden", "webhookToken": 1}"#,
                "\"webhookToken\" is not",
            ),
            (r#"{"apiKey": "sk-hidden""#, "not a valid JSON object"),
        ] {
            let problem = Credentials::parse(secret).unwrap_err().to_string();
            assert!(problem.contains(expected), "{secret}: {problem}");
            assert!(!problem.contains("hidden"), "{problem}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let credentials = Credentials::parse(
            r#"{"apiKey": "sk-very-secret", "webhookToken": "tok-very-secret"}"#,
        )
        .unwrap();
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        let provider = KeyProvider::new(
            KeySource::Local {
                api_key: Secret::new("sk-very-secret"),
                webhook_token: None,
            },
            Duration::from_secs(1),
        );
        let shown = format!("{provider:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[tokio::test]
    async fn local_source_needs_no_io() {
        let provider = KeyProvider::new(
            KeySource::Local {
                api_key: Secret::new("sk-local"),
                webhook_token: Some(Secret::new("tok-local")),
            },
            Duration::ZERO,
        );
        let first = provider.current().await.unwrap();
        assert_eq!(first.api_key.expose(), "sk-local");
        assert_eq!(
            first.webhook_token.as_ref().map(Secret::expose),
            Some("tok-local")
        );
        let reloaded = provider.reload(&first).await.unwrap();
        assert!(Arc::ptr_eq(&first, &reloaded));
        assert_eq!(provider.fetch_count(), 0);
    }
}
