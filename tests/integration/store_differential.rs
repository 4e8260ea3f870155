//! Differential test of the two stores: thousands of random entities (every attribute kind,
//! datasetIds, sub-attributes, compound values, languageMaps, vocabulary terms, Point and Polygon
//! locations, scopes) are written through the embedded store and the PostgreSQL store, then
//! thousands of random queries (types, ids, idPattern, attrs, q, geoQ, scopeQ, orderBy with
//! collation and distance) are asked of both and of the query evaluator over all entities (sorted by
//! the shared comparator), the reference. Every answer must agree: the same ids in the same order,
//! the same counts and the same pages. The SQL translation is also checked
//! on its own: the rows its WHERE clause selects must include every match, and be exactly the
//! matches when it says it is exact.
//!
//! Runs on a new database copied from the test database (`common::new_database`; scripts/test.sh
//! starts it), kept when the test fails. Seeded: the seed is printed, and
//! `TWINLINK_DIFF_SEED` replays it; `TWINLINK_DIFF_ENTITIES` and `TWINLINK_DIFF_QUERIES` change the
//! size.

use crate::common;
use common::rng::{self, env_number, Rng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;
use tokio_postgres::types::{ToSql, Type};
use twinlink::ld::ActiveContext;
use twinlink::model::parse::{Nulls, Reader};
use twinlink::model::Entity;
use twinlink::query::order::OrderingText;
use twinlink::query::{self, geo, EntityQuery, Selector};
use twinlink::store::embedded::EmbeddedStore;
use twinlink::store::postgres::{sql, PgStore};
use twinlink::store::{Store, Write};

const TENANT: &str = "diff";
const NS: &str = "https://example.org/";

/// A coordinate on a 0.05° grid (so that points coincide) or anywhere, in [lo, hi], in
/// micro-degrees (see `micro`).
fn coord(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    if rng.chance(0.5) {
        let steps = ((hi - lo) / 0.05) as usize;
        micro(lo + rng.below(steps + 1) as f64 * 0.05)
    } else {
        micro(lo + rng.unit() * (hi - lo))
    }
}

const TYPES: [&str; 5] = ["Building", "Vehicle", "Sensor", "Park", "Street"];
const WORDS: [&str; 9] = [
    "ok",
    "warn",
    "fail",
    "Ok",
    "éclair",
    "a b",
    "z",
    "Madrid",
    "ok\"quote",
];
const TAGS: [&str; 5] = ["en", "fr", "EN", "de-CH", "@none"];
const TERMS: [&str; 3] = ["Male", "Female", "Other"];
const PEOPLE: [&str; 4] = [
    "urn:ngsi-ld:Person:1",
    "urn:ngsi-ld:Person:2",
    "urn:ngsi-ld:Person:3",
    "urn:ngsi-ld:Person:10",
];
const SCOPES: [&str; 9] = [
    "/Madrid",
    "/Madrid/Gardens",
    "/Madrid/Gardens/North",
    "/Madrid/Gardens/North/East",
    "/Madrid/Parks",
    "/Sevilla",
    "/Sevilla/Parks",
    "/a_b/c%d",
    "/Parks",
];
const DATES: [&str; 4] = [
    "2024-01-01T00:00:00Z",
    "2024-06-15T12:30:00Z",
    "2023-12-31T23:59:59+02:00",
    "2025-03-01T08:00:00.5Z",
];
/// Where locations are: lon 0..10, lat 40..50.
const REGION: (f64, f64, f64, f64) = (0.0, 10.0, 40.0, 50.0);

fn number(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!(rng.below(46) as i64 - 5),
        1 => json!((rng.below(200) as f64 - 50.0) / 4.0),
        2 => json!((rng.below(10_000) as f64) / 100.0),
        3 if rng.chance(0.05) => json!(9_007_199_254_740_993u64),
        3 => json!([-1, 0, 1, 20, 21, 100][rng.below(6)]),
        _ => json!(rng.below(3) as f64 * 10.0),
    }
}

fn word(rng: &mut Rng) -> Value {
    json!(rng.pick(&WORDS))
}

/// Rounds to micro-degrees, the precision of real positions. (It first kept 17-digit numbers away
/// from a 1-ulp difference on the way back from PostgreSQL, gone since serde_json's
/// `float_roundtrip` feature is on.)
fn micro(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// The corners of a w × h rectangle (a triangle when `triangle`) at (x, y), in micro-degrees.
fn ring(x: f64, y: f64, w: f64, h: f64, triangle: bool) -> Value {
    let (x2, y2) = (micro(x + w), micro(y + h));
    if triangle {
        json!([[[x, y], [x2, y], [x, y2], [x, y]]])
    } else {
        json!([[[x, y], [x2, y], [x2, y2], [x, y2], [x, y]]])
    }
}

fn point(rng: &mut Rng) -> Value {
    json!([
        coord(rng, REGION.0, REGION.1),
        coord(rng, REGION.2, REGION.3)
    ])
}

/// An entity geometry. Edges span at most 0.45° of longitude: `near` measures to great-circle
/// edges, whose poleward bulge the PostgreSQL prefilter allows for up to 0.5° (see
/// `ENTITY_EDGE_BULGE` in src/store/postgres/sql.rs).
fn geometry(rng: &mut Rng) -> Value {
    let (x, y) = (
        coord(rng, REGION.0, REGION.1),
        coord(rng, REGION.2, REGION.3),
    );
    match rng.below(10) {
        0..=5 => json!({"type": "Point", "coordinates": [x, y]}),
        6 | 7 => {
            let (w, h) = (0.01 + rng.unit() * 0.44, 0.01 + rng.unit() * 1.5);
            json!({"type": "Polygon", "coordinates": ring(x, y, w, h, false)})
        }
        8 => {
            let w = 0.05 + rng.unit() * 0.4;
            json!({"type": "Polygon", "coordinates": ring(x, y, w, w, true)})
        }
        _ => {
            let (x2, y2) = (micro(x + rng.unit() * 0.45), micro(y + rng.unit()));
            json!({"type": "LineString", "coordinates": [[x, y], [x2, y2]]})
        }
    }
}

/// An attribute of a kind that the numeric and textual attributes usually are not, with values
/// that look like theirs (JSON-LD value objects in JSON content are data there).
fn other_kind(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => json!({"type": "JsonProperty", "json": {"@value": number(rng)}}),
        1 => {
            json!({"type": "JsonProperty", "json": [number(rng), {"@value": word(rng)}, word(rng), [number(rng)]]})
        }
        2 => {
            json!({"type": "LanguageProperty", "languageMap": {"en": word(rng), "FR": [word(rng)]}})
        }
        3 => json!({"type": "VocabProperty", "vocab": rng.pick(&TERMS)}),
        4 => json!({"type": "Relationship", "object": rng.pick(&PEOPLE)}),
        _ => json!({"type": "ListRelationship", "objectList": [rng.pick(&PEOPLE)]}),
    }
}

/// An attribute in normalized NGSI-LD form, sometimes with several instances (datasetIds).
fn instances(rng: &mut Rng, make: &mut dyn FnMut(&mut Rng) -> Value) -> Value {
    if rng.chance(0.15) {
        let mut items = vec![make(rng)];
        let mut second = make(rng);
        second["datasetId"] = json!("urn:ngsi-ld:Dataset:a");
        items.push(second);
        if rng.chance(0.3) {
            items[0]["datasetId"] = json!("urn:ngsi-ld:Dataset:b");
        }
        Value::Array(items)
    } else {
        make(rng)
    }
}

fn entity_json(rng: &mut Rng, i: usize) -> Value {
    let ty = *rng.pick(&TYPES);
    let mut types = vec![json!(ty)];
    if rng.chance(0.2) {
        types.push(json!(rng.pick(&TYPES)));
        types.dedup();
    }
    let prefix = ["urn:ngsi-ld:", "urn:ngsi-ld:x:", "urn:NGSI-LD:"][rng.below(3)];
    let mut e = json!({"id": format!("{prefix}{ty}:{:05}", (i * 7919) % 100_000), "type": types});
    if rng.chance(0.5) {
        let n = 1 + rng.below(2);
        let scopes: Vec<&str> = (0..n).map(|_| *rng.pick(&SCOPES)).collect();
        e["scope"] = json!(scopes);
    }
    let p = |rng: &mut Rng, q: f64| rng.chance(q);
    if p(rng, 0.6) {
        e["temperature"] = instances(rng, &mut |rng| {
            if rng.chance(0.08) {
                // Another kind under the same name: numbers never match it, `!=` always does.
                return other_kind(rng);
            }
            let value = match rng.below(15) {
                0 => json!([number(rng), number(rng)]),
                1 => json!({"@value": number(rng)}),
                2 => json!([[number(rng)], {"@value": number(rng)}]),
                3 => json!([[{"@value": number(rng)}], [[number(rng)]]]),
                4 => json!({"@value": [number(rng)]}),
                5 => json!([number(rng), q_number(rng), rng.chance(0.5), word(rng)]),
                6 => json!({"@type": "Number", "@value": word(rng)}),
                7 => json!({"x": number(rng), "@value": {"@value": number(rng)}}),
                _ => number(rng),
            };
            let mut a = json!({"type": "Property", "value": value});
            if rng.chance(0.5) {
                a["unitCode"] = json!(["CEL", "FAH"][rng.below(2)]);
            }
            if rng.chance(0.5) {
                a["observedAt"] = json!(rng.pick(&DATES[..2]));
            }
            if rng.chance(0.4) {
                a["accuracy"] = json!({"type": "Property", "value": number(rng)});
            }
            if rng.chance(0.2) {
                a["sensor"] = json!({"type": "Relationship", "object": rng.pick(&PEOPLE)});
            }
            a
        });
    }
    if p(rng, 0.5) {
        e["status"] = instances(rng, &mut |rng| {
            if rng.chance(0.15) {
                return other_kind(rng);
            }
            let value = if rng.chance(0.1) {
                json!({"@value": word(rng)})
            } else if rng.chance(0.05) {
                json!([{"@value": [word(rng)]}, [word(rng)]])
            } else if rng.chance(0.2) {
                json!([word(rng), word(rng)])
            } else if rng.chance(0.1) {
                number(rng)
            } else {
                word(rng)
            };
            json!({"type": "Property", "value": value})
        });
    }
    if p(rng, 0.4) {
        let value = if rng.chance(0.9) {
            json!(rng.chance(0.5))
        } else {
            json!("true")
        };
        e["flag"] = json!({"type": "Property", "value": value});
    }
    if p(rng, 0.3) {
        e["when"] =
            json!({"type": "Property", "value": {"@type": "DateTime", "@value": rng.pick(&DATES)}});
    }
    if p(rng, 0.4) {
        let mut map = serde_json::Map::new();
        for _ in 0..1 + rng.below(3) {
            let tag = *rng.pick(&TAGS);
            let text = if rng.chance(0.2) {
                json!([word(rng), word(rng)])
            } else {
                word(rng)
            };
            map.insert(tag.to_string(), text);
        }
        e["name"] = json!({"type": "LanguageProperty", "languageMap": map});
    }
    if p(rng, 0.3) {
        let vocab = if rng.chance(0.2) {
            json!([rng.pick(&TERMS), rng.pick(&TERMS)])
        } else {
            json!(rng.pick(&TERMS))
        };
        e["category"] = json!({"type": "VocabProperty", "vocab": vocab});
    }
    if p(rng, 0.3) {
        let object = if rng.chance(0.2) {
            json!([rng.pick(&PEOPLE), rng.pick(&PEOPLE)])
        } else {
            json!(rng.pick(&PEOPLE))
        };
        e["owner"] = json!({"type": "Relationship", "object": object});
    }
    if p(rng, 0.2) {
        let list: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| {
                if rng.chance(0.5) {
                    json!({"object": rng.pick(&PEOPLE)})
                } else {
                    json!(rng.pick(&PEOPLE))
                }
            })
            .collect();
        e["members"] = json!({"type": "ListRelationship", "objectList": list});
    }
    if p(rng, 0.25) {
        let list: Vec<Value> = (0..rng.below(4)).map(|_| number(rng)).collect();
        e["readings"] = json!({"type": "ListProperty", "valueList": list});
    }
    if p(rng, 0.25) {
        let json = if rng.chance(0.2) {
            json!({"a": {"@value": number(rng)}, "b": {"c": [{"@value": word(rng)}, word(rng)]}, "d": [rng.chance(0.5)]})
        } else if rng.chance(0.75) {
            json!({"a": number(rng), "b": {"c": word(rng)}, "d": rng.chance(0.5)})
        } else {
            json!([number(rng), [number(rng)], {"a": number(rng)}])
        };
        e["config"] = json!({"type": "JsonProperty", "json": json});
    }
    if p(rng, 0.35) {
        let city = if rng.chance(0.8) {
            word(rng)
        } else {
            json!([word(rng)])
        };
        e["address"] = json!({"type": "Property", "value": {"city": city, "zip": rng.below(5) * 1000 + 28000}});
    }
    if p(rng, 0.8) {
        e["location"] = instances(
            rng,
            &mut |rng| json!({"type": "GeoProperty", "value": geometry(rng)}),
        );
    }
    if p(rng, 0.2) {
        e["area"] = json!({"type": "GeoProperty", "value": geometry(rng)});
    }
    e
}

// ---- queries ----

/// One generated query, with the texts it was parsed from (for failure reports).
struct Case {
    query: EntityQuery,
    text: String,
}

const NUMERIC_PATHS: [&str; 7] = [
    "temperature",
    "temperature.accuracy",
    "readings",
    "address[zip]",
    "config[a]",
    "temperature[x]",
    "status",
];
const STRING_PATHS: [&str; 16] = [
    "status",
    "temperature",
    "name",
    "name[en]",
    "name[EN]",
    "name[*]",
    "name[de-ch]",
    "category",
    "owner",
    "members",
    "address[city]",
    "config[b.c]",
    "temperature.unitCode",
    "temperature.datasetId",
    "temperature.sensor",
    "location[type]",
];
const OTHER_PATHS: [&str; 9] = [
    "flag",
    "config[d]",
    "when",
    "temperature.observedAt",
    "temperature.createdAt",
    "nothing",
    "temperature.observedAt.unitCode",
    "name[en.x]",
    "location",
];

fn q_number(rng: &mut Rng) -> String {
    number(rng).to_string().replace(['[', ']'], "")
}

fn q_string(rng: &mut Rng) -> String {
    let options = [
        rng.pick(&WORDS).to_string(),
        rng.pick(&PEOPLE).to_string(),
        "CEL".into(),
        "urn:ngsi-ld:Dataset:a".into(),
        format!("{NS}Male"),
        "Point".into(),
        "Polygon".into(),
        "20".into(),
    ];
    serde_json::to_string(&options[rng.below(options.len())]).unwrap()
}

fn q_operand(rng: &mut Rng, kind: usize) -> String {
    match kind {
        0 => q_number(rng),
        1 => q_string(rng),
        2 => ["true", "false"][rng.below(2)].into(),
        3 => rng.pick(&DATES).to_string(),
        _ => rng.pick(&TERMS).to_string(),
    }
}

/// A q term; a negative one (`!attr`, `!=`, `!~=`) matches most entities, so it usually comes
/// with a positive one (`;`), which keeps answers small enough to compare quickly.
fn q_term(rng: &mut Rng) -> String {
    let term = q_term_of(rng, true);
    let negative = term.starts_with('!') || term.contains("!=") || term.contains("!~=");
    if negative && rng.chance(0.7) {
        format!("{term};{}", q_term_of(rng, false))
    } else {
        term
    }
}

fn q_term_of(rng: &mut Rng, negative: bool) -> String {
    let (path, kind) = match rng.below(10) {
        0..=3 => (*rng.pick(&NUMERIC_PATHS), 0),
        4..=7 => (*rng.pick(&STRING_PATHS), 1),
        _ => {
            let p = *rng.pick(&OTHER_PATHS);
            let kind = match p {
                "flag" | "config[d]" => 2,
                "when" | "temperature.observedAt" | "temperature.createdAt" => 3,
                _ => rng.below(3),
            };
            (p, kind)
        }
    };
    // Now and then an operand of another kind than the path holds.
    let kind = if rng.chance(0.1) { rng.below(5) } else { kind };
    let kind = if kind == 1 && rng.chance(0.2) {
        4
    } else {
        kind
    };
    match rng.below(16) {
        0 => return path.to_string(),
        1 if negative => return format!("!{path}"),
        _ => {}
    }
    let ops: &[&str] = if negative {
        &["==", "==", "!=", ">", ">=", "<", "<=", "~=", "!~="]
    } else {
        &["==", "==", ">", ">=", "<", "<=", "~="]
    };
    let op = *rng.pick(ops);
    match op {
        "~=" | "!~=" => {
            let re = *rng.pick(&[
                "\"^o\"",
                "\"k$\"",
                "\"(?i)OK\"",
                "\"^urn:ngsi-ld:Person:1\"",
                "\"a.b\"",
            ]);
            format!("{path}{op}{re}")
        }
        "==" | "!=" if rng.chance(0.3) => {
            if rng.chance(0.5) {
                let (a, b) = match kind {
                    0 => {
                        let (a, b) = (rng.below(30) as i64 - 5, rng.below(30) as i64);
                        (a.min(b).to_string(), a.max(b).to_string())
                    }
                    1 => ("\"a\"".to_string(), "\"p\"".to_string()),
                    _ => (DATES[0].to_string(), DATES[1].to_string()),
                };
                format!("{path}{op}{a}..{b}")
            } else {
                let items: Vec<String> = (0..2 + rng.below(2))
                    .map(|_| q_operand(rng, kind))
                    .collect();
                format!("{path}{op}{}", items.join(","))
            }
        }
        _ => format!("{path}{op}{}", q_operand(rng, kind)),
    }
}

fn q_expr(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 || rng.chance(0.5) {
        return q_term(rng);
    }
    let n = 2 + rng.below(2);
    let sep = if rng.chance(0.65) { ";" } else { "|" };
    let items: Vec<String> = (0..n)
        .map(|_| {
            let inner = q_expr(rng, depth - 1);
            if inner.contains(';') || inner.contains('|') {
                format!("({inner})")
            } else {
                inner
            }
        })
        .collect();
    items.join(sep)
}

fn scope_expr(rng: &mut Rng) -> String {
    let atom = |rng: &mut Rng| {
        rng.pick(&[
            "/Madrid",
            "/Madrid/#",
            "/Madrid/+",
            "/+/Parks",
            "/#",
            "/Madrid/Gardens",
            "/Madrid/Gardens/#",
            "/+",
            "/Madrid/+/North/#",
            "/a_b/c%d",
            "/a_b/#",
            "/Sevilla/Parks",
            "/Nowhere",
        ])
        .to_string()
    };
    match rng.below(4) {
        0 | 1 => atom(rng),
        2 => format!("{},{}", atom(rng), atom(rng)),
        _ => format!("({}|{});{}", atom(rng), atom(rng), atom(rng)),
    }
}

fn type_expr(rng: &mut Rng) -> String {
    let t = |rng: &mut Rng| rng.pick(&TYPES).to_string();
    match rng.below(5) {
        0 | 1 => t(rng),
        2 => format!("{},{}", t(rng), t(rng)),
        3 => format!("{};{}", t(rng), t(rng)),
        _ => format!("({}|{});{}", t(rng), t(rng), t(rng)),
    }
}

fn geo_query(rng: &mut Rng, ctx: &ActiveContext, locations: &[Value]) -> (geo::GeoQuery, String) {
    // Relations that select most located entities (disjoint, minDistance) are rarer: every one of
    // them makes the PostgreSQL store read and evaluate most rows.
    let georel = match rng.below(20) {
        0..=6 => format!(
            "near;maxDistance=={}",
            [500, 5_000, 30_000, 150_000][rng.below(4)]
        ),
        7 => format!(
            "near;minDistance=={}",
            [1_000, 100_000, 400_000][rng.below(3)]
        ),
        8 | 9 => "within".into(),
        10 | 11 => "contains".into(),
        12 | 13 => "intersects".into(),
        14 | 15 => "overlaps".into(),
        16 => "disjoint".into(),
        _ => "equals".into(),
    };
    let (geometry, coordinates) = if !locations.is_empty() && rng.chance(0.3) {
        // A stored geometry, so that equals, contains and touching cases occur.
        let g = rng.pick(locations);
        (
            g["type"].as_str().unwrap().to_string(),
            g["coordinates"].to_string(),
        )
    } else if rng.chance(0.5) {
        ("Point".to_string(), point(rng).to_string())
    } else {
        let (x, y) = (
            coord(rng, REGION.0, REGION.1),
            coord(rng, REGION.2, REGION.3),
        );
        let (w, h) = (0.2 + rng.unit() * 4.0, 0.2 + rng.unit() * 4.0);
        ("Polygon".to_string(), ring(x, y, w, h, false).to_string())
    };
    let geoproperty = rng.chance(0.15).then_some("area");
    let g = geo::parse(&georel, &geometry, &coordinates, geoproperty, ctx)
        .unwrap_or_else(|e| panic!("geoQ {georel} {geometry} {coordinates}: {e}"));
    (
        g,
        format!("georel={georel}&geometry={geometry}&coordinates={coordinates}&geoproperty={geoproperty:?}"),
    )
}

/// orderBy values of the random cases: attributes of every kind, members, several keys, distance.
const ORDERINGS: [&str; 12] = [
    "temperature",
    "temperature;desc",
    "status",
    "status;desc,temperature",
    "id;desc",
    "type,address[city];desc",
    "name[en]",
    "flag;desc,when",
    "temperature.accuracy",
    "location;dist-asc",
    "location;dist-desc,id",
    "readings,category;desc,address;desc",
];

fn random_case(rng: &mut Rng, ctx: &ActiveContext, ids: &[String], locations: &[Value]) -> Case {
    loop {
        let mut query = EntityQuery::default();
        let mut text = String::new();
        if rng.chance(0.4) {
            for _ in 0..1 + usize::from(rng.chance(0.2)) {
                let mut s = Selector::default();
                match rng.below(6) {
                    0 => {
                        s.ids = (0..1 + rng.below(4))
                            .map(|_| rng.pick(ids).clone())
                            .collect();
                        s.ids.push("urn:ngsi-ld:Nothing:1".into());
                    }
                    1 => {
                        let p = *rng.pick(&["^urn:ngsi-ld:B", "7$", "[0-3]$", "x:"]);
                        s.id_pattern = Some(query::parse_id_pattern(p).unwrap());
                    }
                    _ => {}
                }
                if s.ids.is_empty() || rng.chance(0.3) {
                    let t = type_expr(rng);
                    s.types = query::parse_types(&t, ctx).unwrap();
                    let _ = write!(text, "type={t} ");
                }
                let _ = write!(
                    text,
                    "ids={:?} idPattern={:?} ",
                    s.ids,
                    s.id_pattern.as_ref().map(|r| r.as_str())
                );
                query.selectors.push(s);
            }
        }
        if rng.chance(0.12) {
            let names = ["temperature", "name", "location", "nothing", "owner"];
            query.attrs = (0..1 + rng.below(2))
                .map(|_| {
                    let name: &&str = rng.pick(&names);
                    ctx.expand(name).into_owned()
                })
                .collect();
            let _ = write!(text, "attrs={:?} ", query.attrs);
        }
        if rng.chance(0.65) {
            let q = q_expr(rng, 2);
            match query::q::parse(&q, ctx) {
                Ok(parsed) => query.q = Some(parsed),
                Err(_) => continue,
            }
            let _ = write!(text, "q={q} ");
        }
        if rng.chance(0.25) {
            let (g, t) = geo_query(rng, ctx, locations);
            query.geo = Some(g);
            let _ = write!(text, "{t} ");
        }
        if rng.chance(0.2) {
            let s = scope_expr(rng);
            query.scope = Some(query::parse_scope(&s).unwrap());
            let _ = write!(text, "scopeQ={s} ");
        }
        if rng.chance(0.3) {
            let order_by = *rng.pick(&ORDERINGS);
            let from = locations.get(rng.below(locations.len().max(1)));
            let coordinates = from.map(|g| match &g["coordinates"] {
                Value::Array(c) if c.first().is_some_and(Value::is_number) => json!(c),
                _ => json!([1.5, 41.5]),
            });
            let ordering = OrderingText {
                order_by: order_by.split(',').collect(),
                coordinates,
                geometry: None,
                collation: rng.chance(0.3).then_some("und"),
            };
            query.order = query::order::parse(&ordering, ctx).unwrap();
            let _ = write!(text, "orderBy={order_by} {ordering:?} ");
        }
        if !text.is_empty() {
            return Case { query, text };
        }
    }
}

// ---- the test ----

fn context() -> ActiveContext {
    let ctx = json!({
        "@vocab": NS,
        "location": "https://uri.etsi.org/ngsi-ld/location",
        "Male": format!("{NS}Male"),
    });
    ActiveContext::build(&[&ctx], &HashMap::<String, Arc<Value>>::new()).unwrap()
}

fn ids(page: &[Arc<Entity>]) -> Vec<&str> {
    page.iter().map(|e| e.id.as_str()).collect()
}

/// What went wrong with one query, for the report.
fn describe(case: &Case, what: &str, expected: &[&str], got: &[&str], all: &[Entity]) -> String {
    let missing: Vec<&&str> = expected.iter().filter(|i| !got.contains(i)).collect();
    let extra: Vec<&&str> = got.iter().filter(|i| !expected.contains(i)).collect();
    let mut s = format!(
        "{what}: {}\n  expected {} ids, got {}; missing {:?}, extra {:?}",
        case.text,
        expected.len(),
        got.len(),
        &missing[..missing.len().min(5)],
        &extra[..extra.len().min(5)]
    );
    if let Some(id) = missing.first().or(extra.first()) {
        if let Some(e) = all.iter().find(|e| e.id == **id) {
            let _ = write!(s, "\n  entity {id}: {}", serde_json::to_string(e).unwrap());
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_and_the_evaluator_agree() {
    let url = common::new_database().await;
    // scripts/test.sh runs the suite twice (embedded, then TWINLINK_TEST_STORE=postgres); the second
    // run is a smaller one with another seed.
    let second_pass = std::env::var("TWINLINK_TEST_STORE").as_deref() == Ok("postgres");
    let seed = rng::seed();
    let scale = if second_pass { 4 } else { 1 };
    let n_entities = env_number("TWINLINK_DIFF_ENTITIES").unwrap_or(2000 / scale) as usize;
    let n_queries = env_number("TWINLINK_DIFF_QUERIES").unwrap_or(2000 / scale) as usize;
    println!(
        "store_differential: seed {seed} (replay with TWINLINK_DIFF_SEED={seed}), {n_entities} entities, {n_queries} queries"
    );
    let mut rng = Rng(seed);
    let ctx = context();
    let started = Instant::now();

    // The entities.
    let now = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut all: Vec<Entity> = Vec::new();
    for i in 0..n_entities {
        let body = entity_json(&mut rng, i);
        let input = Reader::new(&ctx, now, Nulls::Forbidden)
            .entity(&body, true)
            .unwrap_or_else(|e| panic!("generated entity {body} is refused: {e}"));
        let id = input.id.unwrap();
        if all.iter().any(|e| e.id == id) {
            continue;
        }
        all.push(Entity {
            id,
            types: input.types,
            scope: input.scope,
            attrs: input.attrs,
            created_at: now,
            modified_at: now,
            expires_at: None,
        });
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let locations: Vec<Value> = all
        .iter()
        .filter_map(|e| e.attrs.get(geo::LOCATION))
        .flat_map(|instances| instances.iter().map(|a| a.value.clone()))
        .collect();
    let entity_ids: Vec<String> = all.iter().map(|e| e.id.clone()).collect();

    let dir = tempfile::tempdir().unwrap();
    let embedded = Arc::new(Store::new(
        EmbeddedStore::open(&dir.path().join("data")).expect("open the embedded store"),
    ));
    let postgres = Arc::new(Store::new(
        PgStore::connect(&url, 4)
            .await
            .expect("connect to the test database"),
    ));
    // Decoys in another tenant, which no query of TENANT may see.
    for (i, e) in all.iter().take(50).enumerate() {
        let mut decoy = e.clone();
        decoy.types = vec![format!("{NS}{}", TYPES[i % TYPES.len()])];
        for store in [&embedded, &postgres] {
            let d = decoy.clone();
            store
                .modify("other", &decoy.id, move |_| Ok((Write::Put(d), ())))
                .await
                .unwrap();
        }
    }
    let mut writes = Vec::new();
    for chunk in all.chunks(all.len().div_ceil(4).max(1)) {
        let chunk: Vec<Entity> = chunk.to_vec();
        let (embedded, postgres) = (embedded.clone(), postgres.clone());
        writes.push(tokio::spawn(async move {
            for e in chunk {
                for store in [&embedded, &postgres] {
                    let put = e.clone();
                    store
                        .modify(TENANT, &e.id, move |_| Ok((Write::Put(put), ())))
                        .await
                        .unwrap_or_else(|err| panic!("writing {}: {err}", e.id));
                }
            }
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    println!(
        "store_differential: {} entities written to both stores in {:.1?}",
        all.len(),
        started.elapsed()
    );

    // The queries: generated in order from the seed, checked by a few workers at once.
    let queries_started = Instant::now();
    let cases: Vec<Case> = (0..n_queries)
        .map(|_| random_case(&mut rng, &ctx, &entity_ids, &locations))
        .collect();
    let all = Arc::new(all);
    let mut workers = Vec::new();
    let per_worker = cases.len().div_ceil(WORKERS).max(1);
    let mut cases = cases.into_iter();
    for w in 0..WORKERS {
        let mine: Vec<(usize, Case)> = cases
            .by_ref()
            .take(per_worker)
            .enumerate()
            .map(|(i, c)| (w * per_worker + i, c))
            .collect();
        let (all, embedded, postgres, url) =
            (all.clone(), embedded.clone(), postgres.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let client = common::sql_client(&url).await;
            let mut tally = Tally::default();
            for (n, case) in mine {
                check(&case, n, &all, &embedded, &postgres, &client, &mut tally).await;
                if tally.failures.len() >= 10 {
                    break;
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for w in workers {
        let t = w.await.unwrap();
        tally.failures.extend(t.failures);
        tally.nonempty += t.nonempty;
        tally.exact += t.exact;
        tally.pages += t.pages;
    }
    println!(
        "store_differential: {n_queries} queries ({} with matches, {} exact in SQL, {} with pages checked) in {:.1?}; total {:.1?}",
        tally.nonempty,
        tally.exact,
        tally.pages,
        queries_started.elapsed(),
        started.elapsed()
    );
    drop((embedded, postgres));
    let failures = tally.failures;
    rng::conclude(&url, seed, &failures);
    assert!(
        tally.nonempty * 4 >= n_queries,
        "the generated queries should match something often ({} of {n_queries})",
        tally.nonempty
    );
}

/// Queries checked at once.
const WORKERS: usize = 4;

/// What the checks found.
#[derive(Default)]
struct Tally {
    failures: Vec<String>,
    nonempty: usize,
    exact: usize,
    pages: usize,
}

/// Checks one query: the SQL translation alone, both stores' full answers, and (every eighth
/// query) pages and counts, against the evaluator over all entities.
async fn check(
    case: &Case,
    n: usize,
    all: &[Entity],
    embedded: &Store,
    postgres: &Store,
    client: &tokio_postgres::Client,
    tally: &mut Tally,
) {
    let matches: Vec<&Entity> = all.iter().filter(|e| case.query.matches(e)).collect();
    let ordered = match &case.query.order {
        Some(order) => order.sort(matches.clone()),
        None => matches.clone(),
    };
    let expected: Vec<&str> = ordered.iter().map(|e| e.id.as_str()).collect();
    let in_id_order: Vec<&str> = matches.iter().map(|e| e.id.as_str()).collect();
    tally.nonempty += usize::from(!expected.is_empty());

    // The SQL alone: a superset of the matches, exactly them when it says so.
    let t = sql::translate(&case.query);
    tally.exact += usize::from(t.exact);
    let mut where_sql = String::from("tenant = $1");
    for c in &t.conditions {
        where_sql.push_str(" AND ");
        where_sql.push_str(c);
    }
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&TENANT, Type::TEXT)];
    params.extend(
        t.params
            .iter()
            .map(|(p, ty)| (p.as_ref() as &(dyn ToSql + Sync), ty.clone())),
    );
    let selected: Vec<String> = match client
        .query_typed(
            &format!("SELECT id FROM entities WHERE {where_sql} ORDER BY id"),
            &params,
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => {
            tally.failures.push(format!(
                "the SQL fails: {}\n  {e:?}\n  WHERE {where_sql}",
                case.text
            ));
            return;
        }
    };
    let selected: Vec<&str> = selected.iter().map(String::as_str).collect();
    let selected_set: std::collections::HashSet<&str> = selected.iter().copied().collect();
    if expected.iter().any(|id| !selected_set.contains(id)) || (t.exact && selected != in_id_order)
    {
        let what = if t.exact {
            "exact SQL differs from the evaluator"
        } else {
            "SQL superset misses matches"
        };
        tally.failures.push(
            describe(case, what, &in_id_order, &selected, all) + &format!("\n  WHERE {where_sql}"),
        );
        return;
    }

    // Both stores: the full answer, then counts and pages.
    let stores = vec![("embedded", embedded), ("postgres", postgres)];
    let mut answers = Vec::new();
    for (name, store) in &stores {
        let (page, seen) = store
            .query(TENANT, &case.query, 0, 100_000, true)
            .await
            .unwrap_or_else(|e| panic!("{name} store fails {}: {e}", case.text));
        answers.push((
            ids(&page).into_iter().map(String::from).collect::<Vec<_>>(),
            seen,
        ));
    }
    for ((name, _), (got, seen)) in stores.iter().zip(&answers) {
        let got: Vec<&str> = got.iter().map(String::as_str).collect();
        if got == expected && *seen == expected.len() {
            continue;
        }
        let what = format!("{name} store differs from the evaluator (seen {seen})");
        tally
            .failures
            .push(describe(case, &what, &expected, &got, all));
    }
    if !n.is_multiple_of(8) {
        return;
    }
    tally.pages += 1;
    let total = expected.len();
    let pairs = [
        (0, 1, true),
        (2, 3, false),
        (total.saturating_sub(1), 3, true),
        (total + 1, 2, false),
    ];
    for (offset, limit, count) in pairs {
        let want = &expected[offset.min(total)..(offset + limit).min(total)];
        for &(name, store) in &stores {
            let (page, seen) = store
                .query(TENANT, &case.query, offset, limit, count)
                .await
                .unwrap();
            let next_page = total > offset + limit;
            let seen_ok = if count {
                seen == total
            } else {
                (seen > offset + limit) == next_page
            };
            if ids(&page) != want || !seen_ok {
                tally.failures.push(format!(
                    "{name} page offset {offset} limit {limit} count {count}: {}\n  want {want:?} (total {total}), got {:?} seen {seen}",
                    case.text,
                    ids(&page)
                ));
            }
        }
    }
}

/// The 100,000 entities of docs/postgres.md, in tenant `bench` (replacing what it holds).
const LOAD_100K: &str = r#"
-- 100,000 entities of tenant 'bench' in twinlink's stored form (body = serde form of model::Entity).
-- Deterministic: every value is a function of the row number i.
--   types:       https://example.org/Type0..Type9 (10 % each), plus Rare on 0.5 % and Unique on
--                10 entities
--   temperature: Property, a number 0.00..39.99 (unitCode CEL), on every entity
--   status:      Property, one of ok/warn/fail/off
--   name:        LanguageProperty {"en", "fr"} on 20 %
--   scope:       /Madrid/District<0..19> on 30 %, /Sevilla/Parks on 10 %, none on the rest
--   location:    Point on a lon 0..10, lat 40..50 grid (99 %); two instances (datasetIds, so the
--                column is NULL and location_multi true) on 1 %
BEGIN;
DELETE FROM entities WHERE tenant = 'bench';
INSERT INTO tenants (tenant) VALUES ('bench') ON CONFLICT DO NOTHING;
INSERT INTO entities (tenant, id, types, scopes, location, location_multi, created_at, modified_at, body, attr_names)
SELECT r.*, ARRAY(SELECT jsonb_object_keys(r.body -> 'attrs')) FROM (
SELECT 'bench', e.id, e.types, e.scopes,
       CASE WHEN e.multi THEN NULL ELSE ST_SetSRID(ST_MakePoint(e.lon, e.lat), 4326) END,
       e.multi, t, t,
       jsonb_build_object(
         'id', e.id, 'types', to_jsonb(e.types), 'created_at', t, 'modified_at', t,
         'attrs', jsonb_strip_nulls(jsonb_build_object(
           'https://example.org/temperature', jsonb_build_array(jsonb_build_object(
              'kind', 'Property', 'value', e.temp, 'unit_code', 'CEL', 'created_at', t, 'modified_at', t)),
           'https://example.org/status', jsonb_build_array(jsonb_build_object(
              'kind', 'Property', 'value', (ARRAY['ok','warn','fail','off'])[1 + e.i % 4], 'created_at', t, 'modified_at', t)),
           'https://example.org/name', CASE WHEN e.i % 5 = 0 THEN jsonb_build_array(jsonb_build_object(
              'kind', 'LanguageProperty', 'value', jsonb_build_object('en', 'Entity ' || e.i, 'fr', 'Entité ' || e.i),
              'created_at', t, 'modified_at', t)) END,
           'https://uri.etsi.org/ngsi-ld/location', CASE WHEN e.multi THEN jsonb_build_array(
                jsonb_build_object('kind', 'GeoProperty', 'value', jsonb_build_object('type', 'Point', 'coordinates', jsonb_build_array(e.lon, e.lat)), 'created_at', t, 'modified_at', t),
                jsonb_build_object('kind', 'GeoProperty', 'dataset_id', 'urn:ngsi-ld:Dataset:gps', 'value', jsonb_build_object('type', 'Point', 'coordinates', jsonb_build_array(e.lat - 40, e.lon + 40)), 'created_at', t, 'modified_at', t))
              ELSE jsonb_build_array(
                jsonb_build_object('kind', 'GeoProperty', 'value', jsonb_build_object('type', 'Point', 'coordinates', jsonb_build_array(e.lon, e.lat)), 'created_at', t, 'modified_at', t)) END
         ))
       ) || CASE WHEN e.scopes IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('scope', to_jsonb(e.scopes)) END AS body
FROM (
  SELECT i,
         format('urn:ngsi-ld:Thing:%s', lpad(i::text, 6, '0')) AS id,
         CASE WHEN i % 10000 = 77 THEN ARRAY['https://example.org/Type' || i % 10, 'https://example.org/Unique']
              WHEN i % 200 = 7 THEN ARRAY['https://example.org/Type' || i % 10, 'https://example.org/Rare']
              ELSE ARRAY['https://example.org/Type' || i % 10] END AS types,
         CASE WHEN i % 10 < 3 THEN ARRAY['/Madrid/District' || (i / 10) % 20]
              WHEN i % 10 = 3 THEN ARRAY['/Sevilla/Parks'] END AS scopes,
         round(((i * 7919) % 4000) / 100.0, 2) AS temp,
         round(((i * 37) % 1000) / 100.0, 4) AS lon,
         round(40 + ((i * 101) % 1000) / 100.0, 4) AS lat,
         i % 100 = 42 AS multi
  FROM generate_series(1, 100000) AS i
) e, (SELECT timestamptz '2025-01-01T00:00:00Z' AS t) c
) r;
COMMIT;
"#;

/// The query plans of docs/postgres.md: `EXPLAIN (ANALYZE, BUFFERS)` of the statements the
/// PostgreSQL store runs for the key query shapes, on the 100,000 entities of [`LOAD_100K`] in
/// tenant `bench` of `TWINLINK_EXPLAIN_DATABASE_URL` (loaded first unless already there). Run with
/// `cargo test --test integration -- --ignored --nocapture explain_key_query_shapes`.
#[tokio::test]
#[ignore = "needs the 100,000-entity database of docs/postgres.md"]
async fn explain_key_query_shapes() {
    let Ok(url) = std::env::var("TWINLINK_EXPLAIN_DATABASE_URL") else {
        println!("explain: set TWINLINK_EXPLAIN_DATABASE_URL (see docs/postgres.md)");
        return;
    };
    let client = common::sql_client(&url).await;
    let loaded: i64 = client
        .query_one("SELECT count(*) FROM entities WHERE tenant = 'bench'", &[])
        .await
        .expect("the twinlink schema (twinlink migrate --database-url ...)")
        .get(0);
    if loaded != 100_000 {
        client.batch_execute(LOAD_100K).await.unwrap();
        client
            .batch_execute("VACUUM (ANALYZE) entities")
            .await
            .unwrap();
    }
    let ctx = context();
    let selector = |types: &str| Selector {
        types: query::parse_types(types, &ctx).unwrap(),
        ..Selector::default()
    };
    let shape = |selectors: &[&str], q: Option<&str>| EntityQuery {
        selectors: selectors.iter().map(|t| selector(t)).collect(),
        q: q.map(|text| query::q::parse(text, &ctx).unwrap()),
        ..EntityQuery::default()
    };
    let shapes: Vec<(&str, bool, EntityQuery)> = vec![
        ("type=Unique", false, shape(&["Unique"], None)),
        ("type=Rare, with count=true", true, shape(&["Rare"], None)),
        (
            "type=Type3&q=temperature==20..20.5, with count=true",
            true,
            shape(&["Type3"], Some("temperature==20..20.5")),
        ),
        (
            "q=temperature>39.9;status==\"ok\"",
            false,
            shape(&[], Some("temperature>39.9;status==\"ok\"")),
        ),
        (
            "georel=near;maxDistance==2000&geometry=Point&coordinates=[5,45]",
            false,
            EntityQuery {
                geo: Some(
                    geo::parse("near;maxDistance==2000", "Point", "[5,45]", None, &ctx).unwrap(),
                ),
                ..EntityQuery::default()
            },
        ),
        (
            "scopeQ=/Madrid/District7, with count=true",
            true,
            EntityQuery {
                scope: Some(query::parse_scope("/Madrid/District7").unwrap()),
                ..EntityQuery::default()
            },
        ),
        (
            "scopeQ=/Sevilla/#",
            false,
            EntityQuery {
                scope: Some(query::parse_scope("/Sevilla/#").unwrap()),
                ..EntityQuery::default()
            },
        ),
        (
            "attrs=name, with count=true",
            true,
            EntityQuery {
                attrs: vec![format!("{NS}name")],
                ..EntityQuery::default()
            },
        ),
    ];
    for (title, count, query) in shapes {
        let t = sql::translate(&query);
        let mut where_sql = String::from("tenant = $1");
        for c in &t.conditions {
            where_sql.push_str(" AND ");
            where_sql.push_str(c);
        }
        // As PgStore::query runs them for a first page of 20: exact translations page (and count)
        // in SQL, the others return every candidate in id order for the evaluator.
        let mut statements = Vec::new();
        if t.exact {
            let limit = if count { 20 } else { 21 };
            statements.push(format!(
                "SELECT body FROM entities WHERE {where_sql} ORDER BY id LIMIT {limit} OFFSET 0"
            ));
            if count {
                statements.push(format!("SELECT count(*) FROM entities WHERE {where_sql}"));
            }
        } else {
            statements.push(format!(
                "SELECT body FROM entities WHERE {where_sql} ORDER BY id"
            ));
        }
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&"bench", Type::TEXT)];
        params.extend(
            t.params
                .iter()
                .map(|(p, ty)| (p.as_ref() as &(dyn ToSql + Sync), ty.clone())),
        );
        println!("### {title} (exact: {})\n", t.exact);
        for (i, (p, _)) in t.params.iter().enumerate() {
            let p = format!("{p:?}");
            let short: String = p.chars().take(150).collect();
            let more = if short.len() < p.len() { " …" } else { "" };
            println!("    ${} = {short}{more}", i + 2);
        }
        for statement in statements {
            let rows = client
                .query_typed(
                    &format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {statement}"),
                    &params,
                )
                .await
                .unwrap();
            println!("\n    {statement}\n");
            for r in rows {
                let line: String = r.get(0);
                let short: String = line.chars().take(150).collect();
                let more = if short.len() < line.len() { " …" } else { "" };
                println!("    {short}{more}");
            }
        }
        println!();
    }
}
