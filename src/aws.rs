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
