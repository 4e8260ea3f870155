//! Black-box tests of the attribute kinds of GS CIM 009 V1.9.1 clause 4.5 (Property, Relationship,
//! GeoProperty, LanguageProperty, VocabProperty, ListProperty, ListRelationship, JsonProperty) in the
//! normalized, concise (4.5.x.3) and simplified/keyValues (4.5.4) representations, GeoJSON (4.5.16,
//! 4.5.17), the language filter (4.15), sysAttrs (6.3.11) and projection with attrs/pick/omit (4.21).

use crate::common;

use common::{assert_problem_one_of, ContextServer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const POINT: fn() -> Value = || json!({"type": "Point", "coordinates": [2.35, 48.85]});
const POLYGON: fn() -> Value =
    || json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]});

fn config_json() -> Value {
    json!({"speed": 3, "type": "raw", "nested": [true, null, {"a": "b"}]})
}

/// One entity holding every attribute kind, in normalized form.
fn all_kinds(id: &str) -> Value {
    json!({
        "id": id,
        "type": "Building",
        "temperature": {
            "type": "Property", "value": 21.5, "unitCode": "CEL", "observedAt": "2024-05-01T12:00:00Z",
            "accuracy": {"type": "Property", "value": 0.2}
        },
        "address": {"type": "Property", "value": {"streetAddress": "Rue X", "postalCode": "75001"}},
        "name": {"type": "Property", "value": "Tower"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1", "objectType": "Person"},
        "location": {"type": "GeoProperty", "value": POINT()},
        "area": {"type": "GeoProperty", "value": POLYGON()},
        "street": {"type": "LanguageProperty", "languageMap": {"fr": "Grand Place", "nl": "Grote Markt"}},
        "category": {"type": "VocabProperty", "vocab": "monument"},
        "readings": {"type": "ListProperty", "valueList": [1, 2, 3]},
        "route": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Road:1"}, {"object": "urn:ngsi-ld:Road:2"}]},
        "config": {"type": "JsonProperty", "json": config_json()}
    })
}

/// The same entity written in the concise representation (4.5.x.3).
fn all_kinds_concise(id: &str) -> Value {
    json!({
        "id": id,
        "type": "Building",
        "temperature": {"value": 21.5, "unitCode": "CEL", "observedAt": "2024-05-01T12:00:00Z", "accuracy": 0.2},
        "address": {"value": {"streetAddress": "Rue X", "postalCode": "75001"}},
        "name": "Tower",
        "owner": {"object": "urn:ngsi-ld:Person:1", "objectType": "Person"},
        "location": POINT(),
        "area": {"value": POLYGON()},
        "street": {"languageMap": {"fr": "Grand Place", "nl": "Grote Markt"}},
        "category": {"vocab": "monument"},
        "readings": {"valueList": [1, 2, 3]},
        "route": {"objectList": [{"object": "urn:ngsi-ld:Road:1"}, {"object": "urn:ngsi-ld:Road:2"}]},
        "config": {"json": config_json()}
    })
}

fn with_id(mut e: Value, id: &str) -> Value {
    e["id"] = json!(id);
    e
}

async fn setup(id: &str) -> TestServer {
    let s = TestServer::start().await;
    let r = s.create(&all_kinds(id)).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    s
}

// ------------------------------------------------------------------------------------------------
// normalized
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn every_kind_round_trips_in_normalized_form() {
    let id = "urn:ngsi-ld:Building:K1";
    let s = setup(id).await;
    assert_eq!(s.entity(id, "").await, all_kinds(id));
    assert_eq!(s.entity(id, "?options=normalized").await, all_kinds(id));
    assert_eq!(s.entity(id, "?format=normalized").await, all_kinds(id));
}

// ------------------------------------------------------------------------------------------------
// concise
// ------------------------------------------------------------------------------------------------

/// Checks the members of a concise rendering that clause 4.5 fixes exactly.
fn check_concise(c: &Value) {
    assert_eq!(c["id"], "urn:ngsi-ld:Building:K2");
    assert_eq!(c["type"], "Building");
    assert_eq!(
        c["temperature"],
        json!({"value": 21.5, "unitCode": "CEL", "observedAt": "2024-05-01T12:00:00Z", "accuracy": 0.2}),
        "no type member; a sub-Property with only a value is the bare value"
    );
    assert_eq!(
        c["name"], "Tower",
        "a Property with only a value is the bare value (4.5.2.3)"
    );
    assert_eq!(
        c["address"],
        json!({"value": {"streetAddress": "Rue X", "postalCode": "75001"}}),
        "a JSON-object value keeps its value member"
    );
    assert_eq!(
        c["owner"],
        json!({"object": "urn:ngsi-ld:Person:1", "objectType": "Person"})
    );
    for geo in ["location", "area"] {
        let expected = if geo == "location" {
            POINT()
        } else {
            POLYGON()
        };
        assert!(
            c[geo] == expected || c[geo] == json!({"value": expected}),
            "a concise GeoProperty is its geometry (or {{value: geometry}}), without type GeoProperty: {}",
            c[geo]
        );
    }
    assert_eq!(
        c["street"],
        json!({"languageMap": {"fr": "Grand Place", "nl": "Grote Markt"}})
    );
    assert_eq!(c["category"], json!({"vocab": "monument"}));
    assert_eq!(c["readings"], json!({"valueList": [1, 2, 3]}));
    let route = c["route"]["objectList"]
        .as_array()
        .unwrap_or_else(|| panic!("objectList: {c}"));
    let targets: Vec<&str> = route
        .iter()
        .map(|i| i.as_str().or_else(|| i["object"].as_str()).expect("URI"))
        .collect();
    assert_eq!(targets, vec!["urn:ngsi-ld:Road:1", "urn:ngsi-ld:Road:2"]);
    assert_eq!(
        c["route"].as_object().unwrap().len(),
        1,
        "only objectList: {}",
        c["route"]
    );
    assert_eq!(c["config"], json!({"json": config_json()}));
}

#[actix_web::test]
async fn every_kind_renders_concise_and_the_concise_form_is_lossless() {
    let id = "urn:ngsi-ld:Building:K2";
    let s = setup(id).await;
    for query in ["?format=concise", "?options=concise"] {
        let c = s.entity(id, query).await;
        check_concise(&c);
        // Lossless: the concise rendering, posted back as a new entity, reads back identical.
        let copy_id = format!("urn:ngsi-ld:Building:K2copy{}", query.len());
        let mut copy = with_id(c.clone(), &copy_id);
        copy.as_object_mut().unwrap().remove("@context");
        let r = s.create(&copy).await;
        assert_eq!(
            r.status(),
            201,
            "concise output is valid input: {}",
            r.text().await.unwrap()
        );
        assert_eq!(
            s.entity(&copy_id, "").await,
            all_kinds(&copy_id),
            "from {query}"
        );
    }
}

#[actix_web::test]
async fn concise_input_is_accepted_for_every_kind() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:K3";
    let r = s.create(&all_kinds_concise(id)).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(s.entity(id, "").await, all_kinds(id));
}

#[actix_web::test]
async fn concise_object_list_of_bare_uris_is_normalized_on_output() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:K4";
    let e = json!({"id": id, "type": "Vehicle", "route": {"type": "ListRelationship", "objectList": ["urn:ngsi-ld:Road:1", {"object": "urn:ngsi-ld:Road:2"}]}});
    assert_eq!(s.create(&e).await.status(), 201);
    assert_eq!(
        s.entity(id, "").await["route"],
        json!({"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Road:1"}, {"object": "urn:ngsi-ld:Road:2"}]})
    );
}

// ------------------------------------------------------------------------------------------------
// keyValues (simplified, 4.5.4)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn property_relationship_geo_language_and_list_render_as_key_values() {
    let id = "urn:ngsi-ld:Building:K5";
    let s = setup(id).await;
    for query in [
        "?options=keyValues",
        "?format=keyValues",
        "?format=simplified",
    ] {
        let kv = s.entity(id, query).await;
        assert_eq!(kv["id"], id, "{query}");
        assert_eq!(kv["type"], "Building", "{query}");
        assert_eq!(
            kv["temperature"],
            json!(21.5),
            "{query}: the Property Value, sub-attributes dropped"
        );
        assert_eq!(kv["name"], "Tower", "{query}");
        assert_eq!(
            kv["address"],
            json!({"streetAddress": "Rue X", "postalCode": "75001"}),
            "{query}"
        );
        assert_eq!(
            kv["owner"], "urn:ngsi-ld:Person:1",
            "{query}: the Relationship's object"
        );
        assert_eq!(kv["location"], POINT(), "{query}");
        assert_eq!(kv["area"], POLYGON(), "{query}");
        assert_eq!(
            kv["street"],
            json!({"languageMap": {"fr": "Grand Place", "nl": "Grote Markt"}}),
            "{query}"
        );
        assert_eq!(
            kv["readings"],
            json!([1, 2, 3]),
            "{query}: the bare valueList"
        );
        assert!(
            !kv.to_string().contains("observedAt"),
            "{query}: no reified members: {kv}"
        );
    }
}

#[actix_web::test]
async fn vocab_json_and_list_relationship_render_as_key_values() {
    let id = "urn:ngsi-ld:Building:K6";
    let s = setup(id).await;
    let kv = s.entity(id, "?options=keyValues").await;
    assert_eq!(
        kv["category"],
        json!({"vocab": "monument"}),
        "4.5.4 example 6"
    );
    assert_eq!(
        kv["config"],
        json!({"json": config_json()}),
        "4.5.4 example 5"
    );
    assert_eq!(
        kv["route"],
        json!(["urn:ngsi-ld:Road:1", "urn:ngsi-ld:Road:2"]),
        "4.5.4 example 8"
    );
}

#[actix_web::test]
async fn multi_attribute_renders_as_a_dataset_map_in_key_values() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:K7";
    let e = json!({"id": id, "type": "Vehicle", "speed": [
        {"type": "Property", "value": 55},
        {"type": "Property", "value": 11, "datasetId": "urn:ngsi-ld:Dataset:gps"}
    ]});
    assert_eq!(s.create(&e).await.status(), 201);
    assert_eq!(
        s.entity(id, "?options=keyValues").await["speed"],
        json!({"dataset": {"@none": 55, "urn:ngsi-ld:Dataset:gps": 11}})
    );
}

// ------------------------------------------------------------------------------------------------
// LanguageProperty and lang (4.15)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn lang_picks_one_language_as_a_property_with_lang() {
    let id = "urn:ngsi-ld:Building:K8";
    let s = setup(id).await;
    let e = s.entity(id, "?lang=fr").await;
    assert_eq!(
        e["street"],
        json!({"type": "Property", "value": "Grand Place", "lang": "fr"})
    );
    assert_eq!(
        e["name"],
        all_kinds(id)["name"],
        "other attributes are untouched"
    );
    let e = s.entity(id, "?lang=nl").await;
    assert_eq!(
        e["street"],
        json!({"type": "Property", "value": "Grote Markt", "lang": "nl"})
    );
    let e = s.entity(id, "?lang=fr-CH,fr;q=0.9,nl;q=0.8").await;
    assert_eq!(
        e["street"]["value"], "Grand Place",
        "ranked preference: {}",
        e["street"]
    );
    let kv = s.entity(id, "?lang=nl&options=keyValues").await;
    assert_eq!(
        kv["street"], "Grote Markt",
        "ETSI TP 018_07_05: keyValues with lang gives the string"
    );
    let c = s.entity(id, "?lang=fr&format=concise").await;
    assert_eq!(c["street"], json!({"value": "Grand Place", "lang": "fr"}));
    // no matching language: any supported one (4.15), with the lang it actually is
    let e = s.entity(id, "?lang=de").await;
    let (value, tag) = (e["street"]["value"].clone(), e["street"]["lang"].clone());
    assert_eq!(e["street"]["type"], "Property", "{}", e["street"]);
    assert!(
        (value == "Grand Place" && tag == "fr") || (value == "Grote Markt" && tag == "nl"),
        "falls back to a supported language: {}",
        e["street"]
    );
}

#[actix_web::test]
async fn lang_star_picks_any_one_language() {
    let id = "urn:ngsi-ld:Building:K9";
    let s = setup(id).await;
    let e = s.entity(id, "?lang=*").await;
    let street = &e["street"];
    assert_eq!(street["type"], "Property", "{street}");
    assert!(
        (street["value"] == "Grand Place" && street["lang"] == "fr")
            || (street["value"] == "Grote Markt" && street["lang"] == "nl"),
        "{street}"
    );
    let kv = s.entity(id, "?lang=*&options=keyValues").await;
    assert!(
        kv["street"] == "Grand Place" || kv["street"] == "Grote Markt",
        "{}",
        kv["street"]
    );
}

// ------------------------------------------------------------------------------------------------
// VocabProperty with a user context
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn vocab_terms_compact_back_with_the_same_context() {
    let ctx = ContextServer::start();
    ctx.serve(
        "/vocab.jsonld",
        &json!({"@context": {
            "ex": "https://example.org/ns#",
            "category": {"@id": "ex:category", "@type": "@vocab"},
            "tags": {"@id": "ex:tags", "@type": "@vocab"},
            "monument": "ex:monument",
            "sightseeing": "ex:sightseeing"
        }}),
    );
    let url = ctx.url("/vocab.jsonld");
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:V1";
    let e = json!({
        "id": id, "type": "Building",
        "category": {"type": "VocabProperty", "vocab": "monument"},
        "tags": {"type": "VocabProperty", "vocab": ["monument", "sightseeing"]}
    });
    let r = s.send_linked(Method::POST, "/entities", &url, &e).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let (status, _, with_ctx) = s
        .get_with(&format!("/entities/{id}"), &[("Link", &common::link(&url))])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        with_ctx, e,
        "names and vocab terms compact back with the same context"
    );

    let plain = s.entity(id, "").await;
    assert_eq!(
        plain["https://example.org/ns#category"],
        json!({"type": "VocabProperty", "vocab": "https://example.org/ns#monument"}),
        "without the context the terms are full IRIs: {plain}"
    );
    assert_eq!(
        plain["https://example.org/ns#tags"]["vocab"],
        json!([
            "https://example.org/ns#monument",
            "https://example.org/ns#sightseeing"
        ])
    );
}

// ------------------------------------------------------------------------------------------------
// sysAttrs (6.3.11)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn sys_attrs_adds_created_and_modified_at_on_entity_and_attributes() {
    let id = "urn:ngsi-ld:Building:S1";
    let s = setup(id).await;
    let plain = s.entity(id, "").await;
    assert!(
        !plain.to_string().contains("createdAt") && !plain.to_string().contains("modifiedAt"),
        "{plain}"
    );

    let e = s.entity(id, "?options=sysAttrs").await;
    let parse = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(
            v.as_str().unwrap_or_else(|| panic!("DateTime string: {v}")),
        )
        .unwrap_or_else(|err| panic!("{v}: {err}"))
    };
    let created = parse(&e["createdAt"]);
    let modified = parse(&e["modifiedAt"]);
    assert!(created <= modified);
    let age = chrono::Utc::now().signed_duration_since(created);
    assert!(
        age.num_seconds().abs() < 60,
        "createdAt is the creation time: {created}"
    );
    for name in all_kinds(id)
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "id" && *k != "type")
    {
        parse(&e[name]["createdAt"]);
        parse(&e[name]["modifiedAt"]);
    }
    let mut stripped = e.clone();
    for v in stripped.as_object_mut().unwrap().values_mut() {
        if let Value::Object(attr) = v {
            attr.remove("createdAt");
            attr.remove("modifiedAt");
        }
    }
    let obj = stripped.as_object_mut().unwrap();
    obj.remove("createdAt");
    obj.remove("modifiedAt");
    // sub-attributes may carry system times too; drop them before comparing the rest
    if let Some(acc) = stripped["temperature"]["accuracy"].as_object_mut() {
        acc.remove("createdAt");
        acc.remove("modifiedAt");
    }
    assert_eq!(
        stripped,
        all_kinds(id),
        "sysAttrs adds members and changes nothing else"
    );
}

// ------------------------------------------------------------------------------------------------
// attrs, pick, omit (4.21)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn attrs_pick_and_omit_project_the_entity() {
    let id = "urn:ngsi-ld:Building:PR1";
    let s = setup(id).await;
    let full = all_kinds(id);

    let e = s.entity(id, "?attrs=temperature,owner").await;
    assert_eq!(
        e,
        json!({"id": id, "type": "Building", "temperature": full["temperature"], "owner": full["owner"]})
    );

    let e = s.entity(id, "?pick=id,temperature").await;
    assert_eq!(
        e,
        json!({"id": id, "temperature": full["temperature"]}),
        "pick keeps only what it names"
    );

    let e = s.entity(id, "?omit=temperature,type,location").await;
    let mut expected = full.clone();
    for k in ["temperature", "type", "location"] {
        expected.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(e, expected);

    let e = s.entity(id, "?pick=name,street&options=keyValues").await;
    assert_eq!(
        e,
        json!({"name": "Tower", "street": {"languageMap": full["street"]["languageMap"]}})
    );

    let r = s
        .req(
            Method::GET,
            &format!("/entities/{id}?pick=name&omit=street"),
        )
        .send()
        .await
        .unwrap();
    assert_problem_one_of(r, 400, &["BadRequestData", "InvalidRequest"]).await;
}

// ------------------------------------------------------------------------------------------------
// GeoJSON (4.5.16, 4.5.17)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn geo_json_gives_a_feature_with_the_location_geometry() {
    let id = "urn:ngsi-ld:Building:G1";
    let s = setup(id).await;
    let (status, headers, f) = s
        .get_with(
            &format!("/entities/{id}"),
            &[("Accept", "application/geo+json")],
        )
        .await;
    assert_eq!(status, 200, "{f}");
    assert!(
        headers["Content-Type"]
            .to_str()
            .unwrap()
            .starts_with("application/geo+json"),
        "{:?}",
        headers["Content-Type"]
    );
    assert_eq!(f["type"], "Feature");
    assert_eq!(f["id"], id);
    assert_eq!(
        f["geometry"],
        POINT(),
        "the default geometryProperty is location"
    );
    let props = f["properties"].as_object().expect("properties object");
    assert!(
        !props.contains_key("id"),
        "properties carry no id (4.5.16.2)"
    );
    assert_eq!(props["type"], "Building");
    assert_eq!(props["temperature"], all_kinds(id)["temperature"]);
    assert_eq!(props["area"], all_kinds(id)["area"]);

    let (status, _, f) = s
        .get_with(
            &format!("/entities/{id}?geometryProperty=area"),
            &[("Accept", "application/geo+json")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(f["geometry"], POLYGON());

    let (status, _, f) = s
        .get_with(
            &format!("/entities/{id}?geometryProperty=name"),
            &[("Accept", "application/geo+json")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        f["geometry"],
        Value::Null,
        "not a geometry: null (4.5.16.1)"
    );

    let (status, _, f) = s
        .get_with(
            &format!("/entities/{id}?options=keyValues"),
            &[("Accept", "application/geo+json")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(f["geometry"], POINT());
    assert_eq!(
        f["properties"]["temperature"],
        json!(21.5),
        "simplified GeoJSON (4.5.17)"
    );
}

#[actix_web::test]
async fn geo_json_geometry_comes_from_the_default_instance() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:G2";
    let e = json!({"id": id, "type": "Vehicle", "location": [
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [9.0, 9.0]}, "datasetId": "urn:ngsi-ld:Dataset:gps"},
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}}
    ]});
    assert_eq!(s.create(&e).await.status(), 201);
    let (status, _, f) = s
        .get_with(
            &format!("/entities/{id}"),
            &[("Accept", "application/geo+json")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        f["geometry"],
        json!({"type": "Point", "coordinates": [1.0, 2.0]})
    );
}

#[actix_web::test]
async fn a_language_property_declares_no_value_type_but_lang_string() {
    // Table 5.2.32-1: a LanguageProperty's valueType, when given, is langString.
    let s = TestServer::start().await;
    let street = |value_type: &str| json!({"type": "LanguageProperty", "languageMap": {"en": "Main street"}, "valueType": value_type});
    let r = s
        .create(&json!({"id": "urn:ngsi-ld:Building:vt1", "type": "Building", "street": street("xsd:string")}))
        .await;
    let body = common::assert_problem(r, 400, "BadRequestData").await;
    assert!(
        body["detail"].as_str().unwrap().contains("langString"),
        "{body}"
    );
    s.assert_absent("urn:ngsi-ld:Building:vt1").await;
    let r = s
        .create(&json!({"id": "urn:ngsi-ld:Building:vt2", "type": "Building", "street": street("langString")}))
        .await;
    assert_eq!(r.status(), 201);
}
