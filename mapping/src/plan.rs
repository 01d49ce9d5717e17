//! The mapping's vocabulary: what an event asks Kustomer to do ([`Plan`]), the event's
//! type, and why an event cannot be sent ([`EventError`]).

use serde_json::Value;

use super::company::{CompanyRef, GroupPlan};
use super::fit::SchemaFix;

/// What one event asks Kustomer to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// identify: find the customer (unless known), then create or update it.
    Identify(IdentifyPlan),
    /// track / page / screen: one `POST /v1/tracking/identityEvent`.
    Tracking(Write),
    /// group (section 12.2): create or update the company, then link the user's customer.
    Group(GroupPlan),
}

/// The identify plan (spec section 5).
#[derive(Debug, Clone, PartialEq)]
pub struct IdentifyPlan {
    pub customer: CustomerRef,
    /// The customer body sent by both create and update.
    pub body: Value,
    /// What sections 11 and 12 changed in `body` (empty when the stage is off).
    pub fixes: Vec<SchemaFix>,
    /// Section 12.1: the company to resolve after the customer look-ups and before the
    /// write; its id becomes the body's `company` ([`Write::link_company`]). `None`: no
    /// company to resolve (a Kustomer id given in the event stays in `body`).
    pub company: Option<CompanyRef>,
}

/// How identify finds the customer to write.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerRef {
    /// `context.externalId` carried a kustomerId: update it directly, no look-ups.
    /// Holds the id already percent-encoded as a path segment.
    Known(String),
    /// Try these look-ups in order (already de-duplicated, D22); create when none finds one.
    Lookups(Vec<Lookup>),
}

/// One customer look-up, `GET BASE{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lookup {
    pub by: LookupBy,
    /// e.g. `/v1/customers/email=ann%20lee@x.test`, values encoded (D2).
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupBy {
    Email,
    UserId,
    AnonymousId,
}

impl LookupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            LookupBy::Email => "email",
            LookupBy::UserId => "userId",
            LookupBy::AnonymousId => "anonymousId",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// A write request, relative to the base endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub method: Method,
    /// Starts with `/v1/`; may end with the literal `?replace=false`.
    pub path: String,
    pub body: Value,
    /// What section 11 changed in `body` (empty when the stage is off).
    pub fixes: Vec<SchemaFix>,
}

impl Write {
    /// Sets the customer body's `company` to a company id (section 12): the id found or
    /// created for an identify, or the dry run's `<companyId>`.
    pub fn link_company(&mut self, company_id: &str) {
        if let Value::Object(body) = &mut self.body {
            body.insert("company".to_string(), Value::String(company_id.to_string()));
        }
    }
}

impl Plan {
    /// What sections 11 and 12 changed in the plan's bodies.
    pub fn fixes(&self) -> &[SchemaFix] {
        match self {
            Plan::Identify(identify) => &identify.fixes,
            Plan::Tracking(write) => &write.fixes,
            Plan::Group(group) => &group.fixes,
        }
    }

    /// Moves the fixes out (a caller that reports them apart from the plan).
    pub fn take_fixes(&mut self) -> Vec<SchemaFix> {
        match self {
            Plan::Identify(identify) => std::mem::take(&mut identify.fixes),
            Plan::Tracking(write) => std::mem::take(&mut write.fixes),
            Plan::Group(group) => std::mem::take(&mut group.fixes),
        }
    }
}

impl IdentifyPlan {
    /// `POST /v1/customers`: no look-up found the customer.
    pub fn create(&self) -> Write {
        Write {
            method: Method::Post,
            path: "/v1/customers".to_string(),
            body: self.body.clone(),
            fixes: self.fixes.clone(),
        }
    }

    /// `PUT /v1/customers/<id>?replace=false` for a customer id already encoded
    /// as a path segment (see [`crate::values::encode_path_segment`]).
    pub fn update(&self, encoded_customer_id: &str) -> Write {
        Write {
            method: Method::Put,
            path: format!("/v1/customers/{encoded_customer_id}?replace=false"),
            body: self.body.clone(),
            fixes: self.fixes.clone(),
        }
    }
}

/// Why an event cannot be sent, as the spec words it (section 7): always a 400 here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    pub status: u16,
    pub message: String,
    /// Set when `message` quotes the event: what logs show instead.
    pub log_message: Option<&'static str>,
}

impl EventError {
    pub fn bad_event(message: impl Into<String>) -> Self {
        EventError {
            status: 400,
            message: message.into(),
            log_message: None,
        }
    }
}

impl std::error::Error for EventError {}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

/// The event type, checked as spec section 4 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Identify,
    Track,
    Page,
    Screen,
    /// [D26] Mapped only with section 12 on ([`crate::map_event`] refuses it otherwise).
    Group,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
        }
    }

    /// The 400 for a type this destination does not take (section 4 point 4).
    pub fn not_supported(name: &str) -> EventError {
        EventError {
            log_message: Some("Event type is not supported"),
            ..EventError::bad_event(format!("Event type {name} is not supported"))
        }
    }

    /// Spec section 4: falsy → "required", non-string → D4, unknown → "not supported".
    /// `group` is recognised here; whether it is supported depends on the settings.
    pub fn of(event: &Value) -> Result<EventType, EventError> {
        let raw = event.get("type").unwrap_or(&Value::Null);
        if !crate::values::is_truthy(raw) {
            return Err(EventError::bad_event("Event type is required"));
        }
        let Value::String(name) = raw else {
            return Err(EventError::bad_event("Event type must be a string"));
        };
        match name.to_lowercase().as_str() {
            "identify" => Ok(EventType::Identify),
            "track" => Ok(EventType::Track),
            "page" => Ok(EventType::Page),
            "screen" => Ok(EventType::Screen),
            "group" => Ok(EventType::Group),
            _ => Err(EventType::not_supported(name)),
        }
    }
}
