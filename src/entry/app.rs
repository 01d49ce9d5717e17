//! The app a container builds once from its settings, and why it may fail to start.

use std::sync::Arc;

use crate::aws::secrets::KeyProvider;
use crate::aws::sqs::{EventQueues, SqsQueues};
use crate::kustomer::ClientSetupError;
use crate::pipeline::Pipeline;
use crate::settings::lambda::{LambdaSettings, WebhookAuth, WebhookMode};

/// Why the function cannot start; reported to Lambda's init-error call and logged.
#[derive(Debug)]
pub enum StartupError {
    /// A setting (environment variable) is missing or invalid.
    InvalidSetting(kustomer_mapping::settings::SettingError),
    /// The HTTP client for Kustomer cannot be built (the system's TLS roots).
    ClientSetup(ClientSetupError),
}

impl StartupError {
    pub fn error_type(&self) -> &'static str {
        match self {
            StartupError::InvalidSetting(_) => "InvalidSetting",
            StartupError::ClientSetup(_) => "ClientSetup",
        }
    }
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartupError::InvalidSetting(problem) => problem.fmt(f),
            StartupError::ClientSetup(problem) => problem.fmt(f),
        }
    }
}

impl std::error::Error for StartupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartupError::InvalidSetting(problem) => Some(problem),
            StartupError::ClientSetup(problem) => Some(problem),
        }
    }
}

impl From<kustomer_mapping::settings::SettingError> for StartupError {
    fn from(problem: kustomer_mapping::settings::SettingError) -> Self {
        StartupError::InvalidSetting(problem)
    }
}

/// Everything the handler needs, built once per container.
pub struct App {
    pipeline: Pipeline,
    pub(super) queues: Arc<dyn EventQueues>,
    pub(super) webhook_auth: WebhookAuth,
    pub(super) webhook_mode: WebhookMode,
    pub(super) metrics_namespace: String,
    pub(super) function_name: String,
}

impl App {
    /// Builds the app from the settings; no network IO (the secret is fetched at first need).
    pub fn new(config: &LambdaSettings) -> Result<App, StartupError> {
        Ok(App {
            pipeline: Pipeline::new(config).map_err(StartupError::ClientSetup)?,
            queues: Arc::new(SqsQueues::new(
                config.retry_queue_url.clone(),
                config.dead_letter_queue_url.clone(),
            )),
            webhook_auth: config.webhook_auth,
            webhook_mode: config.webhook_mode,
            metrics_namespace: config.metrics_namespace.clone(),
            function_name: std::env::var("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|_| "rudder-kustomer".into()),
        })
    }

    /// The same app with other queues (in-process ones in tests, or SQS through an
    /// explicit SDK configuration).
    pub fn with_queues(mut self, queues: Arc<dyn EventQueues>) -> App {
        self.queues = queues;
        self
    }

    /// The same app with another source of the API key and webhook token.
    pub fn with_key_provider(mut self, keys: KeyProvider) -> App {
        self.pipeline = self.pipeline.with_key_provider(keys);
        self
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Back to a cold container's delivery state, with `max_in_flight` workers: a pacer that
    /// knows nothing of Kustomer's budget yet, no metrics pending (the fuzz harness reuses one
    /// app across cases this way).
    pub fn reset_delivery_state(&mut self, max_in_flight: usize) {
        self.pipeline.reset_delivery_state(max_in_flight);
    }

    /// Delivers a door's events: one report per event, in order.
    pub(super) async fn deliver_all(
        &self,
        events: &[serde_json::Value],
        deadline: tokio::time::Instant,
    ) -> Vec<crate::outcome::Report> {
        self.pipeline.deliver_all(events, deadline).await
    }

    /// [`App::deliver_all`] chaining the events of each message group too (SQS FIFO).
    pub(super) async fn deliver_in_groups(
        &self,
        events: &[serde_json::Value],
        groups: &[Option<&str>],
        deadline: tokio::time::Instant,
    ) -> Vec<crate::outcome::Report> {
        self.pipeline
            .deliver_in_groups(events, groups, deadline)
            .await
    }

    /// Counts an outcome the door decided itself (a body that holds no event).
    pub(super) fn count(&self, report: &crate::outcome::Report) {
        self.pipeline.metrics().event(report);
    }
}
