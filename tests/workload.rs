//! The benchmarks' workload (the dev-only `workload` crate) as the product maps it.

use kustomer_mapping::settings::MappingFlags;
use kustomer_mapping::{map_event, CustomerRef, Plan};
use workload::{events, repeat_identify};

#[test]
fn every_event_maps() {
    // The product's defaults: the schema fit and companies on (spec 11, 12).
    let defaults = MappingFlags::product_defaults();
    for event in events(400, 2) {
        assert!(map_event(&event, &defaults).is_ok(), "{event}");
    }
    // Without section 12, group calls are refused and everything else maps.
    for event in events(400, 2) {
        let mapped = map_event(&event, &MappingFlags::default());
        assert_eq!(mapped.is_ok(), event["type"] != "group", "{event}");
    }
}

#[test]
fn identify_companies_resolve_and_groups_write_companies() {
    let all = events(400, 4);
    let mut companies = 0;
    for event in &all {
        match map_event(event, &MappingFlags::product_defaults()) {
            Ok(Plan::Identify(plan)) => companies += usize::from(plan.company.is_some()),
            Ok(Plan::Group(plan)) => {
                assert!(plan.create_company().is_ok(), "{event}");
                assert!(
                    plan.fixes.iter().all(|f| f.field.starts_with("company.")),
                    "{:?}",
                    plan.fixes
                );
            }
            _ => {}
        }
    }
    assert!(companies > 60, "{companies} identify companies to resolve");
}

#[test]
fn repeat_identify_cycles_through_identified_users() {
    let all = repeat_identify(4, 12, 9);
    for (i, event) in all.iter().enumerate() {
        assert_eq!(event["type"], "identify");
        assert_eq!(event["userId"], all[i % 4]["userId"]);
        let plan = map_event(event, &MappingFlags::default()).unwrap();
        let Plan::Identify(plan) = plan else {
            panic!("not an identify plan")
        };
        assert!(matches!(plan.customer, CustomerRef::Lookups(_)));
    }
    assert_ne!(all[0]["userId"], all[1]["userId"]);
}
