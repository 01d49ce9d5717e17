//! kustomer-mapping: one RudderStack event + the destination settings → a [`Plan`] (the
//! Kustomer requests it asks for) or an [`EventError`]. Pure (sans-IO): look-ups are
//! listed here and run by the function's pipeline, or printed by `rudder-kustomer plan`.
//!
//! Where each field comes from:
//! - `identify.rs`: the customer body and look-ups (spec section 5)
//! - `tracking.rs`: track/page/screen identityEvent (section 6), `advanced.rs` its
//!   advancedTransform of `meta` (6.2)
//! - `fit.rs`: the last stage (section 11, D25, flag `fit_to_kustomer_schema`): every body
//!   fitted to Kustomer's contract, the changes listed as [`SchemaFix`]es on the plan;
//!   `dates.rs` is its calendar maths (11.2)
//! - `plan.rs`: the vocabulary (plans, writes, look-ups, errors)
//! - `settings.rs`: the destination's settings (section 1), checked once
//! - `values.rs`: paths, "usable", text form, JavaScript's JSON (section 3)

mod advanced;
mod dates;
mod fit;
mod identify;
mod plan;
pub mod settings;
mod tracking;
pub mod values;

pub use fit::{FixAction, SchemaFix};
pub use plan::{
    CustomerRef, EventError, EventType, IdentifyPlan, Lookup, LookupBy, Method, Plan, Write,
};

use serde_json::Value;

use crate::settings::MappingFlags;

/// Maps one event. Never mutates it, never does IO. With `fit_to_kustomer_schema`, the
/// body is then fitted to Kustomer's contract (section 11) and the fixes are on the plan.
pub fn map_event(event: &Value, flags: &MappingFlags) -> Result<Plan, EventError> {
    match EventType::of(event)? {
        EventType::Identify => {
            let mut plan = identify::plan(event)?;
            if flags.fit_to_kustomer_schema {
                plan.fixes = fit::customer(&mut plan.body);
            }
            Ok(Plan::Identify(plan))
        }
        kind => {
            let mut write = tracking::write(event, kind, flags)?;
            if flags.fit_to_kustomer_schema {
                write.fixes = fit::identity_event(&mut write.body)?;
            }
            Ok(Plan::Tracking(write))
        }
    }
}
