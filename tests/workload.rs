//! The benchmarks' workload (the dev-only `workload` crate) as the product maps it.

use kustomer_mapping::settings::MappingFlags;
use kustomer_mapping::{map_event, CustomerRef, Plan};
use workload::{events, repeat_identify};

#[test]
fn every_event_maps() {
    for event in events(400, 2) {
        assert!(
            map_event(&event, &MappingFlags::default()).is_ok(),
            "{event}"
        );
    }
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
