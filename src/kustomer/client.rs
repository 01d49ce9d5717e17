//! The HTTP transport: one pooled connection set, timeouts, `Authorization: Bearer`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::outcome::Failure;
use kustomer_mapping::settings::{BaseEndpoint, Secret};

/// Kustomer's answers are small; anything larger is cut off rather than buffered whole.
const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Whole request: connect, send, and read the full response.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Kustomer's rate-limit headers, as read from one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Seconds until the window resets (an epoch value is converted).
    pub reset: Option<Duration>,
    pub retry_after: Option<Duration>,
}

/// A response as the classifiers see it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Bytes,
    pub rate_limit: RateLimit,
}

#[derive(Clone)]
pub struct KustomerClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    options: ClientOptions,
}

impl std::fmt::Debug for KustomerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KustomerClient")
            .field("options", &self.options)
            .finish()
    }
}

/// Why the Kustomer client cannot be built: the system's TLS root certificates.
#[derive(Debug)]
pub struct ClientSetupError(std::io::Error);

impl std::fmt::Display for ClientSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot load the system's TLS root certificates: {}",
            self.0
        )
    }
}

impl std::error::Error for ClientSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl KustomerClient {
    pub fn new(options: ClientOptions) -> Result<Self, ClientSetupError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.set_nodelay(true);
        // http:// is let through only because the settings allow it for loopback alone.
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(ClientSetupError)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .build(https);
        Ok(KustomerClient { http, options })
    }

    /// Sends one request to a target from [`request_uri`]; `Err` only when no HTTP
    /// response came back (D23: retryable).
    pub async fn request(
        &self,
        method: http::Method,
        uri: http::Uri,
        api_key: &Secret,
        body: Option<&Value>,
    ) -> Result<HttpResponse, Failure> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("rudder-kustomer/", env!("CARGO_PKG_VERSION")),
            );
        let mut authorization =
            http::HeaderValue::from_str(&format!("Bearer {}", api_key.expose())).map_err(|_| {
                Failure::new(
                    crate::outcome::FailureClass::Auth,
                    None,
                    "the API key has characters a header cannot carry",
                )
            })?;
        authorization.set_sensitive(true);
        builder = builder.header(http::header::AUTHORIZATION, authorization);
        let payload = match body {
            Some(body) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                // A `Value` always serialises; were it ever not to, the event fails
                // (dead-letter queue, replayable) instead of going out with an empty body.
                let bytes = serde_json::to_vec(body).map_err(|_| {
                    Failure::new(
                        crate::outcome::FailureClass::Permanent,
                        Some(500),
                        "internal error: the request body could not be serialised",
                    )
                })?;
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| Failure::transient(format!("cannot build a request: {e}")))?;

        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                Failure::transient(format!("Kustomer unreachable: {}", transport_reason(&e)))
            })?;
            let status = response.status().as_u16();
            let rate_limit = read_rate_limit(response.headers());
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| Failure::transient(format!("Kustomer response cut off: {e}")))?
                .to_bytes();
            Ok(HttpResponse {
                status,
                body,
                rate_limit,
            })
        };
        match tokio::time::timeout(self.options.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::transient(format!(
                "Kustomer did not answer within {} ms",
                self.options.request_timeout.as_millis()
            ))),
        }
    }
}

/// `BASE{path}` as a request target, or `None` when it cannot be one (an event value made
/// it longer than a URL may be): a permanent fault of the event, found before anything is
/// sent or counted.
pub fn request_uri(base: &BaseEndpoint, path: &str) -> Option<http::Uri> {
    format!("{}{}", base.as_str(), path).parse().ok()
}

/// The innermost cause of a transport error, without URLs or headers.
fn transport_reason(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    let mut reason = if error.is_connect() {
        "connection failed".to_string()
    } else {
        "connection lost".to_string()
    };
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    reason
}

/// The longest wait any header can ask for: Kustomer's windows are a minute long, and a
/// Lambda invocation lasts at most 15 minutes. Larger, infinite or garbled values are
/// outside data gone wrong, never a reason to sleep (or to overflow an `Instant`).
pub const MAX_ADVERTISED_WAIT: Duration = Duration::from_secs(60);
/// Counts above this are read as this: no org has a larger per-minute budget, and it keeps
/// every later sum and division far from overflow.
const MAX_ADVERTISED_COUNT: u64 = 1_000_000;

/// Reads Kustomer's rate-limit headers defensively: every number is finite, non-negative
/// and capped; a value that cannot be read is treated as absent.
pub fn read_rate_limit(headers: &http::HeaderMap) -> RateLimit {
    let number = |name: &str| -> Option<f64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    let count = |name: &str| number(name).map(|n| (n as u64).min(MAX_ADVERTISED_COUNT));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    RateLimit {
        limit: count("x-ratelimit-limit"),
        remaining: count("x-ratelimit-remaining"),
        reset: number("x-ratelimit-reset").and_then(|value| reset_wait(value, now)),
        retry_after: number("retry-after").map(capped_seconds),
    }
}

/// `x-ratelimit-reset` as a wait from now. Seen in the wild as seconds from now, epoch
/// seconds and epoch milliseconds. A value that reads as none of these, or that points
/// further ahead than [`MAX_ADVERTISED_WAIT`], is unknown (the pacer's bounded fallback
/// applies), not a wait of hours.
fn reset_wait(value: f64, now_epoch_seconds: f64) -> Option<Duration> {
    const EPOCH_SECONDS_2001: f64 = 978_307_200.0;
    const EPOCH_MILLIS_2001: f64 = EPOCH_SECONDS_2001 * 1_000.0;
    let seconds_from_now = if value >= EPOCH_MILLIS_2001 {
        value / 1_000.0 - now_epoch_seconds
    } else if value >= EPOCH_SECONDS_2001 {
        value - now_epoch_seconds
    } else {
        value
    };
    // An epoch a little in the past (clock skew): the window has just reset.
    let seconds_from_now = seconds_from_now.max(0.0);
    (seconds_from_now <= MAX_ADVERTISED_WAIT.as_secs_f64())
        .then(|| Duration::from_secs_f64(seconds_from_now))
}

/// `Retry-After` in seconds, capped (finite and non-negative already checked).
fn capped_seconds(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.min(MAX_ADVERTISED_WAIT.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn hostile_numbers_are_capped_or_ignored() {
        for huge in [
            "1e19",
            "inf",
            "99999999999999999999",
            "1e308",
            "NaN",
            "-5",
            "x",
        ] {
            let read = read_rate_limit(&headers(&[
                ("retry-after", huge),
                ("x-ratelimit-reset", huge),
                ("x-ratelimit-limit", huge),
                ("x-ratelimit-remaining", huge),
            ]));
            assert!(
                read.retry_after.unwrap_or_default() <= MAX_ADVERTISED_WAIT,
                "{huge}"
            );
            assert!(
                read.reset.unwrap_or_default() <= MAX_ADVERTISED_WAIT,
                "{huge}"
            );
            assert!(
                read.limit.unwrap_or_default() <= MAX_ADVERTISED_COUNT,
                "{huge}"
            );
            assert!(
                read.remaining.unwrap_or_default() <= MAX_ADVERTISED_COUNT,
                "{huge}"
            );
        }
        let read = read_rate_limit(&headers(&[("retry-after", "1e19")]));
        assert_eq!(read.retry_after, Some(MAX_ADVERTISED_WAIT));
    }

    #[test]
    fn reset_forms() {
        let now = 1_800_000_000.0;
        assert_eq!(reset_wait(30.0, now), Some(Duration::from_secs(30)));
        assert_eq!(reset_wait(now + 20.0, now), Some(Duration::from_secs(20)));
        assert_eq!(
            reset_wait((now + 12.5) * 1_000.0, now),
            Some(Duration::from_millis(12_500))
        );
        // In the past: reset already happened.
        assert_eq!(reset_wait(now - 5.0, now), Some(Duration::ZERO));
        // Milliseconds read as seconds would be years: unknown instead.
        assert_eq!(reset_wait(now * 1_000.0 + 3.6e9, now), None);
        assert_eq!(reset_wait(3_600.0, now), None);
        assert_eq!(reset_wait(1e19, now), None);
    }
}
