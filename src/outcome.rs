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

/// The event reached Kustomer, or Kustomer already has it (`skipped`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// HTTP requests made for it, look-ups included.
    pub requests: u32,
    /// The status of the final write; `0` when there was none (`skipped`).
    pub write_status: u16,
    /// Why no write was needed: the event counts as delivered all the same.
    pub skipped: Option<Skipped>,
}

impl Delivered {
    /// Written, the final write answered `write_status`.
    pub fn written(requests: u32, write_status: u16) -> Delivered {
        Delivered {
            requests,
            write_status,
            skipped: None,
        }
    }

    /// Not written: Kustomer already has it (`requests` look-ups may have been made).
    pub fn skipped(requests: u32, why: Skipped) -> Delivered {
        Delivered {
            requests,
            write_status: 0,
            skipped: Some(why),
        }
    }
}

/// Why a delivered event needed no write (issue 18: every request saved is an event
/// delivered within Kustomer's budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skipped {
    /// The update's body is the one this container last sent that customer.
    Unchanged,
    /// This container delivered this messageId already.
    Duplicate,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Unchanged => "unchanged",
            Skipped::Duplicate => "duplicate",
        }
    }
}

/// The outcomes that count as delivered (webhook 200, no SQS failure, `send`'s delivered).
pub const DELIVERED_OUTCOMES: [&str; 3] = ["delivered", "unchanged", "duplicate"];

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

/// Why an event was not attempted: an earlier event of its chain (its user, its message
/// group) failed and will be retried, so this one waits its turn behind it.
pub const HELD_BEHIND: &str =
    "held behind an earlier event of the same user that failed: retried after it";

impl Report {
    /// The report of an event that was never attempted (no request), with its outcome.
    pub fn without_attempt(outcome: Outcome, event_type: Option<EventType>) -> Report {
        Report {
            outcome,
            event_type,
            attempts: 0,
            duration: Duration::ZERO,
            schema_fixes: Vec::new(),
            company: None,
        }
    }

    /// The report of something that failed before any attempt (a body holding no event).
    pub fn unattempted(failure: Failure) -> Report {
        Report::without_attempt(Outcome::Failed(failure), None)
    }

    /// The report of an event the pipeline never ran (a bug): retryable, so nothing is lost.
    pub fn not_delivered() -> Report {
        Report::unattempted(Failure::transient(
            "internal error: the event was not delivered (a bug); retry it",
        ))
    }

    /// An event held behind an earlier failed event of its chain ([`HELD_BEHIND`]):
    /// transient, so it is retried with (and after) the one it waits for.
    pub fn held(event_type: Option<EventType>) -> Report {
        let failure = Failure::transient(HELD_BEHIND);
        Report::without_attempt(Outcome::Failed(failure), event_type)
    }

    /// An event this container delivered already (its messageId): delivered, no request.
    pub fn duplicate(event_type: Option<EventType>) -> Report {
        let delivered = Delivered::skipped(0, Skipped::Duplicate);
        Report::without_attempt(Outcome::Delivered(delivered), event_type)
    }
}

impl Outcome {
    /// The outcome's name in logs and metrics: `delivered`, `unchanged`, `duplicate`
    /// ([`DELIVERED_OUTCOMES`]), or the failure's class.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Delivered(Delivered {
                skipped: Some(why), ..
            }) => why.as_str(),
            Outcome::Delivered(_) => "delivered",
            Outcome::Failed(failure) => failure.class.as_str(),
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Failed(failure) => Some(failure),
            Outcome::Delivered(_) => None,
        }
    }
}
