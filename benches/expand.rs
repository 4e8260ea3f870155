//! JSON-LD term expansion and compaction of one NGSI-LD entity with a cached active context.
//!
//! The active context (a user context of 20 terms in front of the core context v1.9) is built once,
//! outside the measured loop, through `ContextLoader::active` as the broker's cache does; the loop
//! times only `Reader::entity` (expansion, with the validation it does) and `render::entity`
//! (compaction to the normalized representation). Target from the issue: < 5 µs to expand a
//! 10-attribute entity.
//!
//! Run: `cargo bench --bench expand`

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::hint::black_box;
use twinlink::config::Settings;
use twinlink::ld::ContextLoader;
use twinlink::model::parse::{Nulls, Reader};
use twinlink::model::render::{self, RenderOptions};
use twinlink::model::{validate, Entity};

/// A user context of 20 terms: prefixes, plain terms, typed terms, a relationship term.
fn user_context() -> Value {
    json!({
        "ex": "https://twinlink.example.org/ns#",
        "schema": "https://schema.org/",
        "qudt": "http://qudt.org/schema/qudt/",
        "Building": "ex:Building",
        "Sensor": "ex:Sensor",
        "temperature": "ex:temperature",
        "humidity": "ex:relativeHumidity",
        "accuracy": "ex:accuracy",
        "floors": {"@id": "ex:floorsAboveGround", "@type": "http://www.w3.org/2001/XMLSchema#integer"},
        "height": {"@id": "ex:height", "@type": "http://www.w3.org/2001/XMLSchema#double"},
        "occupancy": "ex:occupancy",
        "energyUse": "ex:energyUse",
        "owner": {"@id": "schema:owner", "@type": "@id"},
        "managedBy": {"@id": "ex:managedBy", "@type": "@id"},
        "name": "schema:name",
        "address": "schema:address",
        "openingHours": "schema:openingHours",
        "category": {"@id": "ex:category", "@type": "@vocab"},
        "dateBuilt": {"@id": "ex:dateBuilt", "@type": "http://www.w3.org/2001/XMLSchema#date"},
        "refSensor": {"@id": "ex:refSensor", "@type": "@id"}
    })
}

/// A 10-attribute entity: a Property with sub-attributes, a Relationship, a GeoProperty Point, a
/// LanguageProperty and plain Properties.
fn entity_json() -> Value {
    json!({
        "id": "urn:ngsi-ld:Building:bench-1",
        "type": "Building",
        "temperature": {
            "type": "Property", "value": 21.7, "unitCode": "CEL", "observedAt": "2024-05-01T12:00:00Z",
            "accuracy": {"type": "Property", "value": 0.2},
            "refSensor": {"type": "Relationship", "object": "urn:ngsi-ld:Sensor:t-17"}
        },
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Company:acme"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.7038, 40.4168]}},
        "name": {"type": "LanguageProperty", "languageMap": {"en": "Head office", "es": "Sede central"}},
        "humidity": {"type": "Property", "value": 0.43},
        "floors": {"type": "Property", "value": 12},
        "height": {"type": "Property", "value": 48.5, "unitCode": "MTR"},
        "occupancy": {"type": "Property", "value": 317},
        "openingHours": {"type": "Property", "value": "Mo-Fr 08:00-20:00"},
        "energyUse": {"type": "Property", "value": 1520.4, "unitCode": "KWH"}
    })
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let loader = ContextLoader::new(&Settings::default()).expect("context loader");
    let user = user_context();
    // Built once and cached, as for every request after the first with this @context.
    let ctx = rt
        .block_on(loader.active(Some(&user)))
        .expect("active context");
    let body = entity_json();
    let now = chrono::Utc::now();

    let input = Reader::new(&ctx, now, Nulls::Forbidden)
        .entity(&body, true)
        .expect("entity parses");
    assert_eq!(input.attrs.len(), 10, "the entity has 10 attributes");
    let entity = Entity {
        id: input.id.clone().expect("id"),
        types: input.types.clone(),
        scope: None,
        attrs: input.attrs.clone(),
        created_at: now,
        modified_at: now,
        expires_at: None,
    };
    let opts = RenderOptions::default();
    // The compacted form reads back to the same expanded entity.
    let rendered = Value::Object(render::entity(&entity, &ctx, &opts));
    let again = Reader::new(&ctx, now, Nulls::Forbidden)
        .entity(&rendered, true)
        .expect("rendered entity parses");
    assert_eq!(again.attrs, input.attrs);

    let mut group = c.benchmark_group("jsonld");
    group.bench_function("expand_entity_10_attrs", |b| {
        b.iter(|| {
            Reader::new(&ctx, now, Nulls::Forbidden)
                .entity(black_box(&body), true)
                .expect("entity parses")
        })
    });
    group.bench_function("compact_entity_10_attrs", |b| {
        b.iter(|| render::entity(black_box(&entity), &ctx, &opts))
    });
    // For reference: term expansion alone (the 13 names of the entity: 10 attributes, 2
    // sub-attributes, 1 type), without parsing, validation or building the expanded entity.
    let names: Vec<&str> = vec![
        "Building",
        "temperature",
        "accuracy",
        "refSensor",
        "owner",
        "location",
        "name",
        "humidity",
        "floors",
        "height",
        "occupancy",
        "openingHours",
        "energyUse",
    ];
    group.bench_function("expand_13_names_only", |b| {
        b.iter(|| {
            names
                .iter()
                .map(|n| ctx.expand(black_box(n)).len())
                .sum::<usize>()
        })
    });
    // For reference: the per-request cost of finding the cached active context (the cache key is
    // the serialized @context).
    group.bench_function("active_context_cache_hit", |b| {
        b.iter(|| {
            rt.block_on(loader.active(Some(black_box(&user))))
                .expect("cached")
        })
    });
    group.finish();

    // Where the expansion time goes: pieces of the validation `Reader::entity` does, each timed
    // alone on the same entity's data (for orientation; the sum is not the total).
    let mut parts = c.benchmark_group("jsonld_parts");
    let point = body["location"]["value"].clone();
    parts.bench_function("validate_geometry_point", |b| {
        b.iter(|| validate::geometry("bench", black_box(&point)).expect("valid"))
    });
    let uris = [
        "urn:ngsi-ld:Building:bench-1",
        "urn:ngsi-ld:Sensor:t-17",
        "urn:ngsi-ld:Company:acme",
    ];
    parts.bench_function("validate_3_uris", |b| {
        b.iter(|| {
            uris.iter()
                .for_each(|u| validate::uri("bench", black_box(u)).expect("valid"))
        })
    });
    parts.bench_function("validate_date_time", |b| {
        b.iter(|| validate::date_time("bench", black_box("2024-05-01T12:00:00Z")).expect("valid"))
    });
    parts.bench_function("validate_13_names", |b| {
        b.iter(|| {
            names
                .iter()
                .for_each(|n| validate::name("bench", black_box(n)).expect("valid"))
        })
    });
    parts.bench_function("clone_request_body", |b| {
        b.iter(|| black_box(&body).clone())
    });
    parts.finish();
}

criterion_group!(expand, benches);
criterion_main!(expand);
