//! Outcomes as data: every event ends as exactly one [`Outcome`]; the doors derive
//! their answers (HTTP status, SQS batch failures, DLQ) from these alone.

use std::fmt;
use std::time::Duration;

use kustomer_mapping::{EventError, EventType, SchemaFix};

/// How a failure must be handled (spec section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// A bad event or a non-retryable 4xx: never retried.
    Permanent,
    /// 401/403: retried once after the API key has been reloaded, then permanent.
    Auth,
    /// 429: retried later.
    Throttled,
    /// 5xx (incl. D6/D7's 502), transport failures, Secrets Manager unreachable: retried.
    Transient,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Permanent => "permanent",
            FailureClass::Auth => "auth",
            FailureClass::Throttled => "throttled",
            FailureClass::Transient => "transient",
        }
    }

    /// Whether retrying the same event later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, FailureClass::Throttled | FailureClass::Transient)
    }

    /// The class of an HTTP error status (spec 8.1).
    pub fn of_status(status: u16) -> FailureClass {
        match status {
            401 | 403 => FailureClass::Auth,
            429 => FailureClass::Throttled,
            400..=499 => FailureClass::Permanent,
            _ => FailureClass::Transient,
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was not delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    /// The HTTP status (Kustomer's, or 400 for a bad event); `None` for transport failures.
    pub status: Option<u16>,
    pub message: String,
    /// How long Kustomer asked us to wait (`Retry-After` / `x-ratelimit-reset`).
    pub retry_after: Option<Duration>,
    /// What logs show instead of `message` when the message carries outside values
    /// (Kustomer's error body, which may echo personal data; an event's own text).
    /// `message` itself still goes to the caller (webhook answer, DLQ attributes).
    pub log_message: Option<String>,
}

impl Failure {
    pub fn new(class: FailureClass, status: Option<u16>, message: impl Into<String>) -> Self {
        Failure {
            class,
            status,
            message: message.into(),
            retry_after: None,
            log_message: None,
        }
    }

    /// The text logs may carry: `message` unless that holds outside values.
    pub fn log_text(&self) -> &str {
        self.log_message.as_deref().unwrap_or(&self.message)
    }

    /// A failure carrying an HTTP status, classed by it.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        Failure::new(FailureClass::of_status(status), Some(status), message)
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Failure::new(FailureClass::Transient, None, message)
    }
}

impl From<EventError> for Failure {
    fn from(error: EventError) -> Self {
        let mut failure = Failure::from_status(error.status, error.message);
        failure.log_message = error.log_message.map(str::to_string);
        failure
    }
}

impl std::error::Error for Failure {}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} ({status}): {}", self.class, self.message),
            None => write!(f, "{}: {}", self.class, self.message),
        }
    }
}

/// What happened to an event's company (spec 12.5): an action, never a value. Logged on
/// the event's outcome line and counted by the EMF metric `Companies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompanyAction {
    /// Resolved to an existing company (by a look-up, or from the company-id cache).
    Found,
    Created,
    /// A group's company, found, then updated with the group's traits.
    Updated,
    /// The identify's customer is written without its company.
    NotLinked(NotLinked),
}

/// Why a company was not linked (spec 12.1, 12.3): the `Reason` of `CompaniesNotLinked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotLinked {
    /// No look-up found it and there is no valid name (3–255 characters) to create it.
    NotFound,
    /// A company look-up answered 4xx (not 404, 408, 429): e.g. a key without company rights.
    LookupRefused,
    /// The create answered 4xx (not 408, 409, 429).
    CreateRefused,
    /// The create answered 409 and the look-up after it found nothing.
    Conflict,
    /// Kustomer's answer gave no usable company id (not a 24-hex id, no `data`).
    BadAnswer,
}

impl CompanyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CompanyAction::Found => "found",
            CompanyAction::Created => "created",
            CompanyAction::Updated => "updated",
            CompanyAction::NotLinked(_) => "not_linked",
        }
    }

    /// Why the company was not linked, for [`CompanyAction::NotLinked`].
    pub fn reason(self) -> Option<&'static str> {
        match self {
            CompanyAction::NotLinked(reason) => Some(reason.as_str()),
            _ => None,
        }
    }
}

impl NotLinked {
    pub fn as_str(self) -> &'static str {
        match self {
            NotLinked::NotFound => "not_found",
            NotLinked::LookupRefused => "lookup_refused",
            NotLinked::CreateRefused => "create_refused",
            NotLinked::Conflict => "conflict",
            NotLinked::BadAnswer => "bad_answer",
        }
    }
}

/// The event reached Kustomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// HTTP requests made for it, look-ups included.
    pub requests: u32,
    /// The status of the final write.
    pub write_status: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered(Delivered),
    Failed(Failure),
}

/// What happened to one event.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    /// `None` when the type could not be read (the outcome says why).
    pub event_type: Option<EventType>,
    pub attempts: u32,
    pub duration: Duration,
    /// What section 11 changed in the event's body (fields, never values).
    pub schema_fixes: Vec<SchemaFix>,
    /// What the last attempt did with the event's company (section 12), if it has one.
    pub company: Option<CompanyAction>,
}

impl Report {
    /// The report of an event the pipeline never ran (a bug): retryable, so nothing is lost.
    pub fn not_delivered() -> Report {
        Report::unattempted(Failure::transient(
            "internal error: the event was not delivered (a bug); retry it",
        ))
    }

    /// The report of something that failed before any attempt (a body holding no event).
    pub fn unattempted(failure: Failure) -> Report {
        Report {
            outcome: Outcome::Failed(failure),
            event_type: None,
            attempts: 0,
            duration: Duration::ZERO,
            schema_fixes: Vec::new(),
            company: None,
        }
    }
}

impl Outcome {
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Failed(failure) => Some(failure),
            Outcome::Delivered(_) => None,
        }
    }
}
