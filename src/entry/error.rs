//! Why an invocation fails as a whole: the error Lambda records.

use crate::envelope::EnvelopeError;

/// Why an invocation failed as a whole (Lambda, SQS and RudderStack then retry it). The
/// variant's name is the `errorType` Lambda records; messages never quote event values.
#[derive(Debug)]
pub enum InvocationError {
    /// The payload is not an API Gateway request, an SQS batch or RudderStack events.
    UnsupportedPayload(String),
    /// A direct invocation's envelope (EventBridge) holds no usable event.
    BadEnvelope(EnvelopeError),
    /// A direct invocation's failed events could be neither retried nor parked.
    QueueUnavailable { unplaced: usize, received: usize },
    /// A bug: handling the invocation panicked.
    InternalError,
}

impl InvocationError {
    pub fn error_type(&self) -> &'static str {
        match self {
            InvocationError::UnsupportedPayload(_) => "UnsupportedPayload",
            InvocationError::BadEnvelope(_) => "BadEnvelope",
            InvocationError::QueueUnavailable { .. } => "QueueUnavailable",
            InvocationError::InternalError => "InternalError",
        }
    }
}

impl std::fmt::Display for InvocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvocationError::UnsupportedPayload(problem) => f.write_str(problem),
            InvocationError::BadEnvelope(problem) => write!(f, "unsupported payload: {problem}"),
            InvocationError::QueueUnavailable { unplaced, received } => write!(
                f,
                "{unplaced} of {received} events were neither delivered nor queued; failing the invocation so Lambda retries it"
            ),
            InvocationError::InternalError => f.write_str(
                "internal error while handling the invocation (a bug): failed so that its events are retried",
            ),
        }
    }
}

impl std::error::Error for InvocationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InvocationError::BadEnvelope(problem) => Some(problem),
            _ => None,
        }
    }
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}
