//! The HTTP transport: one pooled connection set, timeouts, `Authorization: Bearer`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::mapping::{Lookup, Write};
use crate::outcome::Failure;
use crate::settings::{BaseEndpoint, Secret};

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

impl KustomerClient {
    pub fn new(options: ClientOptions) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.set_nodelay(true);
        // http:// is let through only because the settings allow it for loopback alone.
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's TLS root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .build(https);
        Ok(KustomerClient { http, options })
    }

    /// Sends one request; `Err` only when no HTTP response came back (D23: retryable).
    pub async fn request(
        &self,
        method: http::Method,
        url: &str,
        api_key: &Secret,
        body: Option<&Value>,
    ) -> Result<HttpResponse, Failure> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| Failure::transient(format!("cannot build a request for {url}")))?;
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
                Bytes::from(serde_json::to_vec(body).unwrap_or_default())
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

    /// `GET BASE{lookup.path}`; classify with [`super::classify_lookup`].
    pub async fn lookup(
        &self,
        base: &BaseEndpoint,
        api_key: &Secret,
        lookup: &Lookup,
    ) -> Result<HttpResponse, Failure> {
        let url = format!("{}{}", base.as_str(), lookup.path);
        self.request(http::Method::GET, &url, api_key, None).await
    }

    /// Sends one write; classify with [`super::classify_write`].
    pub async fn write(
        &self,
        base: &BaseEndpoint,
        api_key: &Secret,
        write: &Write,
    ) -> Result<HttpResponse, Failure> {
        let url = format!("{}{}", base.as_str(), write.path);
        let method = match write.method {
            crate::mapping::Method::Post => http::Method::POST,
            crate::mapping::Method::Put => http::Method::PUT,
        };
        self.request(method, &url, api_key, Some(&write.body)).await
    }
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

fn read_rate_limit(headers: &http::HeaderMap) -> RateLimit {
    let number = |name: &str| -> Option<u64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| *n >= 0.0)
            .map(|n| n as u64)
    };
    let reset = number("x-ratelimit-reset").map(|value| {
        // Epoch seconds, or seconds from now: both forms are seen in the wild.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if value > 1_000_000_000 {
            Duration::from_secs(value.saturating_sub(now))
        } else {
            Duration::from_secs(value)
        }
    });
    RateLimit {
        limit: number("x-ratelimit-limit"),
        remaining: number("x-ratelimit-remaining"),
        reset,
        retry_after: number("retry-after").map(Duration::from_secs),
    }
}
