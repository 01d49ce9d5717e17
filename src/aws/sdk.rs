//! The AWS SDK configuration (region, credentials, endpoint overrides such as
//! `AWS_ENDPOINT_URL`), loaded once per container at first need and shared by the
//! Secrets Manager and SQS clients, so a cold start pays for it at most once.

use aws_config::{BehaviorVersion, SdkConfig};
use tokio::sync::OnceCell;

static SHARED: OnceCell<SdkConfig> = OnceCell::const_new();

pub async fn shared_config() -> &'static SdkConfig {
    SHARED
        .get_or_init(|| aws_config::defaults(BehaviorVersion::latest()).load())
        .await
}

/// The configuration a client was given (tests: an explicit endpoint), else the shared one.
pub async fn given_or_shared(given: &Option<SdkConfig>) -> &SdkConfig {
    match given {
        Some(config) => config,
        None => shared_config().await,
    }
}

/// An error and its sources, `: `-joined (`dispatch failure: io error: ... refused`).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.ends_with(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}
