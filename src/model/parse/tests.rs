//! Bad bodies and the member each error points at: the pointer is built from the names as the
//! client wrote them, relative to the JSON the reader was given.

use super::{Nulls, Reader};
use crate::error::{ErrorKind, NgsiError};
use crate::ld::ActiveContext;
use crate::syntax::body::BodyError;
use chrono::Utc;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

const CORE: &str = include_str!("../../../context/ngsi-ld-core-context-v1.9.jsonld");

fn ctx() -> ActiveContext {
    let core: Value = serde_json::from_str(CORE).unwrap();
    let user =
        json!({"temperature": "https://example.org/temperature", "ex": "https://example.org/"});
    ActiveContext::build(
        &[&user, &core["@context"]],
        &HashMap::<String, Arc<Value>>::new(),
    )
    .unwrap()
}

/// The error of creating an entity with `attrs` (an id and a type are added), forbidding nulls.
fn refused(attrs: Value) -> BodyError {
    let mut body = json!({"id": "urn:ngsi-ld:Room:1", "type": "Room"});
    body.as_object_mut()
        .unwrap()
        .extend(attrs.as_object().unwrap().clone());
    refused_body(&body)
}

fn refused_body(body: &Value) -> BodyError {
    let c = ctx();
    match Reader::new(&c, Utc::now(), Nulls::Forbidden).entity(body, true) {
        Ok(_) => panic!("{body} was accepted"),
        Err(e) => e,
    }
}

/// Each bad attribute, the pointer of its error, and a fragment of the problem.
#[test]
fn every_error_points_at_the_member_at_fault() {
    let polygon = json!([
        [[0, 0], [1, 0], [1, 1], [0, 0]],
        [[0.2, 0.2], [0.5, 0.2], [0.5, 91], [0.2, 0.2]]
    ]);
    let cases = [
        // The value of a Property: a null inside, a wrong JSON type for the kind.
        (
            json!({"temperature": {"type": "Property", "value": [1, null]}}),
            "/temperature/value/1",
            "a null inside a value",
        ),
        (
            json!({"temperature": {"type": "Property", "value": {"a": "urn:ngsi-ld:null"}}}),
            "/temperature/value/a",
            "a null inside a value",
        ),
        (
            json!({"temperature": {"type": "Property", "value": "urn:ngsi-ld:null"}}),
            "/temperature/value",
            "NGSI-LD Null",
        ),
        (
            json!({"temperature": {"type": 5, "value": 1}}),
            "/temperature/type",
            "not a string",
        ),
        (
            json!({"temperature": {"type": "Propery", "value": 1}}),
            "/temperature/type",
            "not an NGSI-LD attribute type",
        ),
        (
            json!({"settings": {"type": "JsonProperty", "json": "on"}}),
            "/settings/json",
            "JSON object or array",
        ),
        (
            json!({"name": {"type": "LanguageProperty", "languageMap": {"en": "x", "fr": 5}}}),
            "/name/languageMap/fr",
            "must be a string",
        ),
        (
            json!({"tags": {"type": "ListProperty", "valueList": "a"}}),
            "/tags/valueList",
            "must be an array",
        ),
        (
            json!({"category": {"type": "VocabProperty", "vocab": ["a", 2]}}),
            "/category/vocab/1",
            "vocabulary term",
        ),
        (
            json!({"temperature": {"type": "Property", "value": 1, "unitCode": 5}}),
            "/temperature/unitCode",
            "must be a string",
        ),
        (json!({"temperature": null}), "/temperature", "is null"),
        // Relationships.
        (
            json!({"refRoom": {"type": "Relationship"}}),
            "/refRoom/object",
            "needs a non-null 'object'",
        ),
        (
            json!({"refRoom": {"type": "Relationship", "object": "not a uri"}}),
            "/refRoom/object",
            "not a valid URI",
        ),
        (
            json!({"refRoom": {"type": "Relationship", "object": ["urn:a:b", 7]}}),
            "/refRoom/object/1",
            "URI or an array",
        ),
        (
            json!({"refs": {"type": "ListRelationship", "objectList": ["urn:a:b", {"object": "bad uri"}]}}),
            "/refs/objectList/1/object",
            "not a valid URI",
        ),
        (
            json!({"refRoom": {"type": "Relationship", "object": "urn:a:b", "objectType": [1]}}),
            "/refRoom/objectType/0",
            "vocabulary term",
        ),
        // Members of an attribute, and sub-attributes.
        (
            json!({"temperature": {"value": 1, "datasetId": "no uri"}}),
            "/temperature/datasetId",
            "not a valid URI",
        ),
        (
            json!({"temperature": {"value": 1, "datasetId": 3}}),
            "/temperature/datasetId",
            "must be a string",
        ),
        (
            json!({"temperature": {"value": 1, "observedAt": "yesterday"}}),
            "/temperature/observedAt",
            "must be a UTC DateTime",
        ),
        (
            json!({"temperature": {"value": 1, "observedAt": "2024-13-01T00:00:00Z"}}),
            "/temperature/observedAt",
            "not an ISO 8601 DateTime",
        ),
        (
            json!({"temperature": {"value": 1, "expiresAt": 5}}),
            "/temperature/expiresAt",
            "DateTime string",
        ),
        (
            json!({"temperature": {"value": 1, "previousValue": 0}}),
            "/temperature/previousValue",
            "not accepted in requests",
        ),
        (
            json!({"temperature": {"value": 1, "entityIdSealed": "urn:a:b"}}),
            "/temperature/entityIdSealed",
            "only the ngsildproof",
        ),
        (
            json!({"temperature": {"value": 1, "providedBy": {"type": "Relationship"}}}),
            "/temperature/providedBy/object",
            "needs a non-null 'object'",
        ),
        (
            json!({"temperature": {"value": 1, "bad name": 2}}),
            "/temperature/bad name",
            "may not contain",
        ),
        // The second instance of a multi-instance attribute.
        (
            json!({"temperature": [{"value": 1}, {"value": 2, "datasetId": "no uri"}]}),
            "/temperature/1/datasetId",
            "not a valid URI",
        ),
        (
            json!({"temperature": [{"value": 1, "datasetId": "urn:d:1"}, {"value": 2, "datasetId": "urn:d:2", "observedAt": "noon"}]}),
            "/temperature/1/observedAt",
            "UTC DateTime",
        ),
        (
            json!({"temperature": [{"value": 1}, {"value": 2}]}),
            "/temperature/1/datasetId",
            "two instances with the same datasetId",
        ),
        // GeoJSON, deep in a polygon, in a concise geometry, in a text.
        (
            json!({"location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": polygon}}}),
            "/location/value/coordinates/1/2/1",
            "latitude 91",
        ),
        (
            json!({"location": {"type": "GeoProperty", "value": {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[0, 0], [1, 0], [1, 1], [0, 1]]]]}}}),
            "/location/value/coordinates/1/0/3",
            "Polygon 1 of the MultiPolygon is not closed",
        ),
        (
            json!({"location": {"type": "Point", "coordinates": [200, 0]}}),
            "/location/coordinates/0",
            "longitude 200",
        ),
        (
            json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, "2"]}}}),
            "/location/value/coordinates/1",
            "2 or 3 numbers",
        ),
        (
            json!({"location": {"type": "GeoProperty", "value": "{\"type\": \"Point\", \"coordinates\": [1, 95]}"}}),
            "/location/value",
            "(at /coordinates/1 in the GeoJSON text)",
        ),
        (
            json!({"location": {"type": "GeoProperty", "value": {"type": "GeometryCollection", "geometries": []}}}),
            "/location/value/type",
            "GeometryCollection",
        ),
        (
            json!({"location": {"type": "Property", "value": 1}}),
            "/location",
            "must be a GeoProperty",
        ),
        // Names: the pointer escapes `~` and `/` of the name as written (RFC 6901).
        (
            json!({"https://example.org/t~x": {"value": [null]}}),
            "/https:~1~1example.org~1t~0x/value/0",
            "a null inside",
        ),
        (json!({"datasetId": 1}), "/datasetId", "NGSI-LD core member"),
    ];
    for (attrs, pointer, problem) in cases {
        let e = refused(attrs.clone());
        assert_eq!(e.pointer.to_string(), pointer, "{attrs}: {e}");
        assert!(e.problem.contains(problem), "{attrs}: {e}");
        assert_eq!(e.kind, ErrorKind::BadRequestData, "{attrs}");
    }
}

#[test]
fn entity_members_point_at_themselves() {
    let cases = [
        (json!({"type": "Room"}), "/id", "has no id"),
        (
            json!({"@id": 5, "type": "Room"}),
            "/@id",
            "must be a string",
        ),
        (
            json!({"id": "no uri", "type": "Room"}),
            "/id",
            "not a valid URI",
        ),
        (json!({"id": "urn:a:b"}), "/type", "has no type"),
        (
            json!({"id": "urn:a:b", "type": ["Room", 7]}),
            "/type/1",
            "must be a string",
        ),
        (
            json!({"id": "urn:a:b", "@type": ["Room", "1st"]}),
            "/@type/1",
            "starts with a digit",
        ),
        (
            json!({"id": "urn:a:b", "type": "Room", "scope": ["/a", "b"]}),
            "/scope/1",
            "not a scope path",
        ),
        (
            json!({"id": "urn:a:b", "type": "Room", "expiresAt": "soon"}),
            "/expiresAt",
            "ISO 8601",
        ),
    ];
    for (body, pointer, problem) in cases {
        let e = refused_body(&body);
        assert_eq!(e.pointer.to_string(), pointer, "{body}: {e}");
        assert!(e.problem.contains(problem), "{body}: {e}");
    }
    let e = refused_body(&json!(["not", "an", "object"]));
    assert_eq!(
        (e.kind, e.pointer.is_root()),
        (ErrorKind::InvalidRequest, true)
    );
}

#[test]
fn an_attribute_body_is_pointed_into_from_its_own_root() {
    // PATCH .../attrs/{attrId} and PUT: the body is the attribute, named by the path.
    let c = ctx();
    let reader = Reader::new(&c, Utc::now(), Nulls::Forbidden);
    let iri = "https://example.org/temperature";
    let body = json!([{"value": 1}, {"value": 2, "datasetId": "urn:d:1", "observedAt": "x"}]);
    let e = reader.attribute("temperature", iri, &body).unwrap_err();
    assert_eq!(e.pointer.to_string(), "/1/observedAt");
}

#[test]
fn the_detail_names_the_pointer_first_and_the_problem_details_carry_it() {
    let e = NgsiError::from(refused(json!({"refRoom": {"type": "Relationship"}})));
    assert_eq!(
        e.detail,
        "/refRoom/object: attribute 'refRoom' is a Relationship and needs a non-null 'object' member"
    );
    let details = e.problem_details();
    assert_eq!(details["pointer"], "/refRoom/object");
    assert_eq!(
        details["type"],
        "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    );
    assert_eq!(details["status"], 400);
}
