//! Mapping throughput (issue 5, benchmark 1): parse + map over the generated workload.
//!
//! - `parse_map/<type>`: one event's JSON text → `serde_json::Value` → `map_event`, cycling
//!   through the workload's events of that type (2,000 identify, 500 group, 2,500 of each
//!   other type; group with the schema stage and companies on, as only they map it).
//! - `map_only/<type>`: `map_event` alone on already-parsed events (where the time goes).
//! - `workload/parse_map`: all 10,000 events, one core; criterion reports events/s.
//! - `workload/parse_map_serialize`: the same plus serialising each request body, as the
//!   Lambda does before sending.
//! - `schema_stage/*_off`, `schema_stage/*_on`: the whole workload with the schema stage
//!   (spec section 11, D25) and companies (section 12, D26; both on in the product by
//!   default) off and on: parse + map + serialise, and map alone. The ratio of the two is
//!   the stages' cost (off, group events are refused at once).
//!
//! The other groups map with `MappingFlags::default()`: every flag off, the stage included.
//!
//! Run with `cargo bench --bench mapping`; each benchmark measures for a few seconds.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use kustomer_mapping::settings::MappingFlags;
use kustomer_mapping::{map_event, Plan};
use serde_json::Value;

const EVENTS: usize = 10_000;
const SEED: u64 = 42;
const TYPES: [&str; 5] = ["identify", "track", "page", "screen", "group"];

fn parse_map(text: &str, flags: &MappingFlags) -> Option<Plan> {
    let event: Value = serde_json::from_str(text).ok()?;
    map_event(&event, flags).ok()
}

fn body_of(plan: &Plan) -> &Value {
    match plan {
        Plan::Identify(identify) => &identify.body,
        Plan::Tracking(write) => &write.body,
        Plan::Group(group) => &group.company_body,
    }
}

/// Serialised size of the plan's request body (the bytes the Lambda would send).
fn body_bytes(plan: &Plan) -> usize {
    serde_json::to_vec(body_of(plan)).map_or(0, |bytes| bytes.len())
}

fn benches(c: &mut Criterion) {
    let flags = MappingFlags::default();
    let events = workload::events(EVENTS, SEED);
    let texts: Vec<String> = events.iter().map(Value::to_string).collect();
    let total_bytes: usize = texts.iter().map(String::len).sum();
    eprintln!(
        "workload: {EVENTS} events, seed {SEED}, {} bytes ({} bytes/event)",
        total_bytes,
        total_bytes / EVENTS
    );
    // The product's defaults: the schema fit and companies on (spec 11, 12).
    let fit = MappingFlags::product_defaults();
    assert!(
        texts.iter().all(|text| parse_map(text, &fit).is_some()),
        "every generated event maps with the product's defaults"
    );
    let changed = events
        .iter()
        .filter(|event| {
            let off = map_event(event, &flags).ok();
            let on = map_event(event, &fit).ok();
            off.as_ref().map(body_of) != on.as_ref().map(body_of)
        })
        .count();
    eprintln!("schema stage: {changed} of {EVENTS} bodies changed");

    let mut group = c.benchmark_group("parse_map");
    group.throughput(Throughput::Elements(1));
    for kind in TYPES {
        let of_kind: Vec<&str> = texts
            .iter()
            .zip(&events)
            .filter(|(_, event)| event["type"] == kind)
            .map(|(text, _)| text.as_str())
            .collect();
        let mut next = 0usize;
        // group is mapped only with section 12 on; the other types as before, flags off.
        let flags = if kind == "group" { fit } else { flags };
        group.bench_function(kind, |b| {
            b.iter(|| {
                next = (next + 1) % of_kind.len();
                black_box(parse_map(black_box(of_kind[next]), &flags))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("map_only");
    group.throughput(Throughput::Elements(1));
    for kind in TYPES {
        let of_kind: Vec<&Value> = events.iter().filter(|e| e["type"] == kind).collect();
        let mut next = 0usize;
        let flags = if kind == "group" { fit } else { flags };
        group.bench_function(kind, |b| {
            b.iter(|| {
                next = (next + 1) % of_kind.len();
                black_box(map_event(black_box(of_kind[next]), &flags).ok())
            })
        });
    }
    group.finish();

    let mut group = whole_workload_group(c, "workload");
    group.bench_function("parse_map", |b| {
        b.iter(|| {
            texts
                .iter()
                .filter(|text| parse_map(black_box(text), &flags).is_some())
                .count()
        })
    });
    group.bench_function("parse_map_serialize", |b| {
        b.iter(|| parse_map_serialize(&texts, &flags))
    });
    group.finish();

    // The same workload, the schema stage off and on.
    let mut group = whole_workload_group(c, "schema_stage");
    for (name, flags) in [
        ("parse_map_serialize_off", flags),
        ("parse_map_serialize_on", fit),
    ] {
        group.bench_function(name, |b| b.iter(|| parse_map_serialize(&texts, &flags)));
    }
    for (name, flags) in [("map_only_off", flags), ("map_only_on", fit)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                events
                    .iter()
                    .filter(|event| map_event(black_box(event), &flags).is_ok())
                    .count()
            })
        });
    }
    group.finish();
}

/// A group over the whole workload: a few long samples, throughput in events.
fn whole_workload_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(EVENTS as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(4));
    group
}

/// Every event parsed, mapped and its request body serialised, as the Lambda does.
fn parse_map_serialize(texts: &[String], flags: &MappingFlags) -> usize {
    texts
        .iter()
        .filter_map(|text| parse_map(black_box(text), flags))
        .map(|plan| body_bytes(&plan))
        .sum()
}

criterion_group! {
    name = mapping;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(mapping);
