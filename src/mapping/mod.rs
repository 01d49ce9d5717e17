//! The mapping: one RudderStack event + the destination flags → a [`Plan`] or an
//! [`EventError`]. Pure (sans-IO): look-ups are listed here and run by `delivery`.
//!
//! Where each field comes from: `identify.rs` (customer body, look-ups), `tracking.rs`
//! (track/page/screen identityEvent), `advanced.rs` (advancedTransform of `meta`).
//! `fit.rs` is the last stage (section 11, D25, flag `fit_to_kustomer_schema`): every
//! body fitted to Kustomer's contract, the changes listed as [`SchemaFix`]es on the plan.
//! Value helpers (paths, "usable", text form, JS JSON) live in `crate::mapping::values`.

mod advanced;
mod fit;
mod identify;
mod plan;
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
