//! kustomer-mapping: one RudderStack event + the destination settings → a [`Plan`] (the
//! Kustomer requests it asks for) or an [`EventError`]. Pure (sans-IO): look-ups are
//! listed here and run by the function's pipeline, or printed by `rudder-kustomer plan`.
//!
//! Where each field comes from:
//! - `identify.rs`: the customer body and look-ups (spec section 5)
//! - `tracking.rs`: track/page/screen identityEvent (section 6), `advanced.rs` its
//!   advancedTransform of `meta` (6.2)
//! - `company.rs`: companies (section 12, D26, flag `link_companies`): an identify's
//!   company and its resolution, `group` events, the company body; every company field
//! - `fit.rs`: the last stage (section 11, D25, flag `fit_to_kustomer_schema`): every body
//!   fitted to Kustomer's contract (custom attributes by suffix, the 100 KB limit), the
//!   changes listed as [`SchemaFix`]es on the plan; `dates.rs` is its calendar maths (11.2)
//! - `plan.rs`: the vocabulary (plans, writes, look-ups, errors)
//! - `settings.rs`: the destination's settings (section 1), checked once
//! - `values.rs`: paths, "usable", text form, JavaScript's JSON (section 3)

mod advanced;
mod company;
mod dates;
mod fit;
mod identify;
mod plan;
pub mod settings;
mod tracking;
pub mod values;

pub use company::{company_id, CompanyLookup, CompanyLookupBy, CompanyRef, GroupPlan};
pub use fit::{is_kustomer_id, FixAction, SchemaFix};
pub use plan::{
    CustomerRef, EventError, EventType, IdentifyPlan, Lookup, LookupBy, Method, Plan, Write,
};

use serde_json::Value;

use crate::settings::MappingFlags;

/// Maps one event. Never mutates it, never does IO. With `fit_to_kustomer_schema`, the
/// body is then fitted to Kustomer's contract (section 11) and the fixes are on the plan;
/// with `link_companies` too, companies become linked Kustomer companies (section 12).
pub fn map_event(event: &Value, flags: &MappingFlags) -> Result<Plan, EventError> {
    match EventType::of(event)? {
        EventType::Identify => {
            let mut plan = identify::plan(event)?;
            if flags.fit_to_kustomer_schema {
                let mut fixes = fit::Fixes::default();
                if flags.companies() {
                    let r = values::Reader::new(event);
                    plan.company = company::identify(&r, &mut plan.body, &mut fixes);
                }
                let mut fixes = fixes.into_vec();
                fixes.extend(fit::customer(&mut plan.body));
                // 11.6, with room for the company id a resolved company adds.
                let limit = match plan.company {
                    Some(_) => fit::MAX_BODY_BYTES - COMPANY_LINK_BYTES,
                    None => fit::MAX_BODY_BYTES,
                };
                let mut size_fixes = fit::Fixes::default();
                fit::fit_size(
                    &mut plan.body,
                    &["custom"],
                    "customer.custom",
                    limit,
                    &mut size_fixes,
                )?;
                fixes.extend(size_fixes.into_vec());
                plan.fixes = fixes;
            }
            Ok(Plan::Identify(plan))
        }
        EventType::Group if flags.companies() => Ok(Plan::Group(company::group(event)?)),
        EventType::Group => {
            let name = event.get("type").and_then(Value::as_str).unwrap_or("group");
            Err(EventType::not_supported(name))
        }
        kind => {
            let mut write = tracking::write(event, kind, flags)?;
            if flags.fit_to_kustomer_schema {
                let mut fixes = fit::identity_event(&mut write.body)?;
                let mut size_fixes = fit::Fixes::default();
                fit::fit_size(
                    &mut write.body,
                    &["event", "meta"],
                    "event.meta",
                    fit::MAX_BODY_BYTES,
                    &mut size_fixes,
                )?;
                fixes.extend(size_fixes.into_vec());
                write.fixes = fixes;
            }
            Ok(Plan::Tracking(write))
        }
    }
}

/// `,"company":"<24 hexadecimal characters>"`: what linking adds to a customer body.
const COMPANY_LINK_BYTES: usize = 37;
