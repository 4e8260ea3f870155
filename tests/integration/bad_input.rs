//! Black-box tests of bad input (GS CIM 009 V1.9.1 clauses 5.5.2, 6.3.4, 6.3.5 and the attribute
//! rules of 4.5/4.6/4.7): each request gets the right status and NGSI-LD error type, and changes
//! nothing, which every test proves by reading the data back.

use crate::common;

use common::{assert_http_error, assert_problem, assert_problem_one_of, link, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const ID: &str = "urn:ngsi-ld:Building:bad";

fn good(id: &str) -> Value {
    json!({
        "id": id,
        "type": "Building",
        "name": {"type": "Property", "value": "Tower"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.3, 48.8]}}
    })
}

/// A server holding `good(ID)`.
async fn with_entity() -> TestServer {
    let s = TestServer::start().await;
    assert_eq!(s.create(&good(ID)).await.status(), 201);
    s
}

/// POSTs a raw body to /entities.
async fn post_raw(s: &TestServer, content_type: &str, body: &str) -> reqwest::Response {
    s.req(Method::POST, "/entities")
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// `good(ID)` with one attribute added or replaced.
fn entity_with(name: &str, attr: Value) -> Value {
    let mut e = good(ID);
    e[name] = attr;
    e
}

/// Creating `entity` is refused with 400 BadRequestData and nothing is stored.
async fn refused_create(s: &TestServer, entity: &Value) {
    assert_problem(s.create(entity).await, 400, "BadRequestData").await;
    if let Some(id) = entity["id"].as_str() {
        if url::Url::parse(id).is_ok() {
            s.assert_absent(id).await;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// JSON syntax and shape
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_nul_character_in_a_string_is_refused_and_an_escaped_backslash_is_not() {
    let s = with_entity().await;
    // U+0000 in a value (JSON can only carry it escaped): refused on both stores alike.
    let r = post_raw(
        &s,
        "application/json",
        r#"{"id": "urn:ngsi-ld:Building:x0", "type": "Building", "name": {"type": "Property", "value": "a\u0000b"}}"#,
    )
    .await;
    let problem = assert_problem(r, 400, "BadRequestData").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("U+0000"),
        "{problem}"
    );
    s.assert_absent("urn:ngsi-ld:Building:x0").await;
    // The same in an update leaves the stored value as it was.
    let r = s
        .req(Method::PATCH, &format!("/entities/{ID}/attrs"))
        .header("Content-Type", "application/json")
        .body(r#"{"name": {"type": "Property", "value": "\u0000"}}"#)
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(s.entity(ID, "").await["name"]["value"], "Tower");
    // A backslash followed by the text "u0000" is an ordinary string.
    let r = post_raw(
        &s,
        "application/json",
        r#"{"id": "urn:ngsi-ld:Building:x1", "type": "Building", "name": {"type": "Property", "value": "a\\u0000b"}}"#,
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        s.entity("urn:ngsi-ld:Building:x1", "").await["name"]["value"],
        "a\\u0000b"
    );
}

#[actix_web::test]
async fn malformed_json_is_invalid_request() {
    let s = with_entity().await;
    let r = post_raw(
        &s,
        "application/json",
        r#"{"id": "urn:ngsi-ld:Building:x1", "type": "Building",,}"#,
    )
    .await;
    assert_problem(r, 400, "InvalidRequest").await;
    s.assert_absent("urn:ngsi-ld:Building:x1").await;

    let r = s
        .req(Method::PATCH, &format!("/entities/{ID}/attrs"))
        .header("Content-Type", "application/json")
        .body(r#"{"name": {"type": "Property",, "value": "X"}}"#)
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "InvalidRequest").await;

    let r = s
        .req(Method::POST, &format!("/entities/{ID}/attrs"))
        .header("Content-Type", "application/json")
        .body("")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "InvalidRequest").await;
    assert_eq!(s.entity(ID, "").await, good(ID));
}

#[actix_web::test]
async fn a_body_that_is_not_an_object_is_invalid_request() {
    let s = with_entity().await;
    for body in [
        "[]",
        "\"text\"",
        "42",
        "null",
        "[{\"id\": \"urn:ngsi-ld:Building:x2\", \"type\": \"Building\"}]",
    ] {
        assert_problem(
            post_raw(&s, "application/json", body).await,
            400,
            "InvalidRequest",
        )
        .await;
        let r = s
            .req(Method::PATCH, &format!("/entities/{ID}/attrs"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(r, 400, "InvalidRequest").await;
    }
    s.assert_absent("urn:ngsi-ld:Building:x2").await;
    assert_eq!(s.entity(ID, "").await, good(ID));
}

#[actix_web::test]
async fn an_id_that_is_not_a_uri_or_is_missing_is_bad_request_data() {
    let s = TestServer::start().await;
    for id in [
        json!("not a uri"),
        json!("plainword"),
        json!(""),
        json!(42),
        json!(["urn:a:b"]),
    ] {
        let e = json!({"id": id, "type": "Building", "name": {"type": "Property", "value": "x"}});
        assert_problem(s.create(&e).await, 400, "BadRequestData").await;
    }
    let e = json!({"type": "Building", "name": {"type": "Property", "value": "x"}});
    assert_problem(s.create(&e).await, 400, "BadRequestData").await;
    // and an id in the URL that is not a URI
    let r = s
        .req(Method::GET, "/entities/plainword")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    let r = s
        .send(
            Method::PATCH,
            "/entities/plainword/attrs",
            "application/json",
            &json!({"name": {"type": "Property", "value": 1}}),
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
}

#[actix_web::test]
async fn a_missing_or_invalid_type_is_bad_request_data() {
    let s = TestServer::start().await;
    let mut e = good(ID);
    e.as_object_mut().unwrap().remove("type");
    refused_create(&s, &e).await;
    for t in [
        json!([]),
        json!(7),
        json!("Buil ding"),
        json!(["Building", 3]),
    ] {
        let mut e = good(ID);
        e["type"] = t;
        refused_create(&s, &e).await;
    }
}

#[actix_web::test]
async fn an_invalid_attribute_name_is_bad_request_data() {
    let s = with_entity().await;
    for name in ["temp(1)", "a b", "x=y", "semi;colon", "quote\"d", "<tag>"] {
        refused_create(
            &s,
            &json!({"id": "urn:ngsi-ld:Building:n1", "type": "Building", name: {"type": "Property", "value": 1}}),
        )
        .await;
        let body = json!({name: {"type": "Property", "value": 1}});
        let r = s
            .send(
                Method::POST,
                &format!("/entities/{ID}/attrs"),
                "application/json",
                &body,
            )
            .await;
        assert_problem(r, 400, "BadRequestData").await;
    }
    // in a sub-attribute too
    let body = json!({"name": {"type": "Property", "value": "x", "bad(sub)": {"type": "Property", "value": 1}}});
    let r = s
        .send(
            Method::POST,
            &format!("/entities/{ID}/attrs"),
            "application/json",
            &body,
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(s.entity(ID, "").await, good(ID));
}

// ------------------------------------------------------------------------------------------------
// GeoJSON
// ------------------------------------------------------------------------------------------------

fn bad_geometries() -> Vec<(&'static str, Value)> {
    vec![
        (
            "open polygon ring",
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
        ),
        (
            "longitude out of range",
            json!({"type": "Point", "coordinates": [200, 10]}),
        ),
        (
            "latitude out of range",
            json!({"type": "Point", "coordinates": [10, 95]}),
        ),
        (
            "unknown geometry type",
            json!({"type": "Circle", "coordinates": [1, 2]}),
        ),
        (
            "coordinates not numbers",
            json!({"type": "Point", "coordinates": "x"}),
        ),
        (
            "one coordinate",
            json!({"type": "Point", "coordinates": [1]}),
        ),
        (
            "short line",
            json!({"type": "LineString", "coordinates": [[0, 0]]}),
        ),
        ("not an object", json!("POINT(1 2)")),
    ]
}

#[actix_web::test]
async fn invalid_geo_json_is_bad_request_data_on_create_and_update() {
    let s = with_entity().await;
    for (why, geometry) in bad_geometries() {
        let mut e = good("urn:ngsi-ld:Building:g1");
        e["location"] = json!({"type": "GeoProperty", "value": geometry});
        let r = s.create(&e).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 400, "{why}: {text}");
        assert!(text.contains("BadRequestData"), "{why}: {text}");
        s.assert_absent("urn:ngsi-ld:Building:g1").await;

        let body = json!({"location": {"type": "GeoProperty", "value": geometry}});
        let r = s
            .send(
                Method::PATCH,
                &format!("/entities/{ID}/attrs"),
                "application/json",
                &body,
            )
            .await;
        assert_problem(r, 400, "BadRequestData").await;
    }
    assert_eq!(s.entity(ID, "").await, good(ID));
}

// ------------------------------------------------------------------------------------------------
// attribute shapes
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn attributes_without_their_value_member_are_bad_request_data() {
    let s = TestServer::start().await;
    for (name, attr) in [
        ("rel", json!({"type": "Relationship"})),
        (
            "rel",
            json!({"type": "Relationship", "object": "not a uri"}),
        ),
        ("rel", json!({"type": "Relationship", "object": 42})),
        ("rel", json!({"type": "Relationship", "object": null})),
        ("prop", json!({"type": "Property"})),
        ("prop", json!({"type": "Property", "value": null})),
        ("prop", Value::Null),
        ("geo", json!({"type": "GeoProperty"})),
        (
            "lang",
            json!({"type": "LanguageProperty", "languageMap": "text"}),
        ),
        (
            "lang",
            json!({"type": "LanguageProperty", "languageMap": {"not a tag!": "x"}}),
        ),
        (
            "lang",
            json!({"type": "LanguageProperty", "languageMap": {"fr": 3}}),
        ),
        ("list", json!({"type": "ListProperty", "valueList": 3})),
        (
            "rels",
            json!({"type": "ListRelationship", "objectList": ["not a uri"]}),
        ),
        (
            "rels",
            json!({"type": "ListRelationship", "objectList": "urn:ngsi-ld:X:1"}),
        ),
        ("json", json!({"type": "JsonProperty"})),
        ("vocab", json!({"type": "VocabProperty", "vocab": 5})),
    ] {
        refused_create(&s, &entity_with(name, attr)).await;
    }
}

#[actix_web::test]
async fn an_unknown_attribute_type_is_bad_request_data() {
    let s = TestServer::start().await;
    for t in ["Propertyy", "property", "TemporalProperty", "Feature"] {
        refused_create(&s, &entity_with("x", json!({"type": t, "value": 1}))).await;
    }
    refused_create(&s, &entity_with("x", json!({"type": 5, "value": 1}))).await;
}

#[actix_web::test]
async fn bad_members_of_attributes_are_bad_request_data() {
    let s = TestServer::start().await;
    for attr in [
        json!({"type": "Property", "value": 1, "observedAt": "yesterday"}),
        json!({"type": "Property", "value": 1, "observedAt": 5}),
        json!({"type": "Property", "value": 1, "datasetId": "not a uri"}),
        json!({"type": "Property", "value": 1, "unitCode": 7}),
    ] {
        refused_create(&s, &entity_with("x", attr)).await;
    }
}

#[actix_web::test]
async fn members_the_kind_forbids_are_bad_request_data() {
    let s = TestServer::start().await;
    let mut wrong = Vec::new();
    for (why, attr) in [
        (
            "4.5.2.2 Property with object",
            json!({"type": "Property", "value": 1, "object": "urn:ngsi-ld:Other:1"}),
        ),
        (
            "4.5.2.2 Property with languageMap",
            json!({"type": "Property", "value": 1, "languageMap": {"en": "hello"}}),
        ),
        (
            "4.5.2.2 Property with valueList",
            json!({"type": "Property", "value": 1, "valueList": [1, 2]}),
        ),
        (
            "4.5.3.2 Relationship with unitCode",
            json!({"type": "Relationship", "object": "urn:ngsi-ld:X:1", "unitCode": "MTR"}),
        ),
        (
            "4.5.3.2 Relationship with value",
            json!({"type": "Relationship", "object": "urn:ngsi-ld:X:1", "value": 42}),
        ),
        (
            "4.5.21.2 ListProperty with value",
            json!({"type": "ListProperty", "valueList": [1.2], "value": 3}),
        ),
        (
            "4.5.24.2 JsonProperty with unitCode",
            json!({"type": "JsonProperty", "json": {"a": 1}, "unitCode": "MTR"}),
        ),
        (
            "4.5.24.2 JsonProperty with value",
            json!({"type": "JsonProperty", "json": {"a": 1}, "value": 1}),
        ),
    ] {
        let e = entity_with("x", attr);
        let r = s.create(&e).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        if status != 400 || !text.contains("errors/BadRequestData") {
            wrong.push(format!("{why}: {status} {text}"));
            let _ = s
                .req(Method::DELETE, &format!("/entities/{ID}"))
                .send()
                .await;
        }
        s.assert_absent(ID).await;
    }
    assert!(
        wrong.is_empty(),
        "accepted or wrongly refused:\n{}",
        wrong.join("\n")
    );
}

#[actix_web::test]
async fn one_bad_attribute_refuses_the_whole_request() {
    let s = with_entity().await;
    let body = json!({
        "height": {"type": "Property", "value": 30},
        "owner": {"type": "Relationship", "object": "not a uri"}
    });
    for method in [Method::POST, Method::PATCH] {
        let r = s
            .send(
                method,
                &format!("/entities/{ID}/attrs"),
                "application/json",
                &body,
            )
            .await;
        assert_problem(r, 400, "BadRequestData").await;
    }
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{ID}"),
            "application/json",
            &body,
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    let mut replacement = body.clone();
    replacement["type"] = json!("Building");
    let r = s
        .send(
            Method::PUT,
            &format!("/entities/{ID}"),
            "application/json",
            &replacement,
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(s.entity(ID, "").await, good(ID), "nothing is half-applied");
}

// ------------------------------------------------------------------------------------------------
// transport: size, media types, @context placement (6.3.4, 6.3.5)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn an_oversized_body_is_413_and_stores_nothing() {
    let s = TestServer::start_with(|s| s.max_body_bytes = 1000).await;
    let small = good("urn:ngsi-ld:Building:small");
    assert_eq!(
        s.create(&small).await.status(),
        201,
        "a body under the limit is fine"
    );
    let mut big = good("urn:ngsi-ld:Building:big");
    big["blob"] = json!({"type": "Property", "value": "x".repeat(3000)});
    assert_http_error(s.create(&big).await, 413).await;
    s.assert_absent("urn:ngsi-ld:Building:big").await;
    let body = json!({"blob": {"type": "Property", "value": "y".repeat(3000)}});
    let r = s
        .send(
            Method::POST,
            "/entities/urn:ngsi-ld:Building:small/attrs",
            "application/json",
            &body,
        )
        .await;
    assert_http_error(r, 413).await;
    assert_eq!(s.entity("urn:ngsi-ld:Building:small", "").await, small);
}

#[actix_web::test]
async fn an_unsupported_content_type_is_415() {
    let s = with_entity().await;
    let e = good("urn:ngsi-ld:Building:ct");
    for ct in ["text/plain", "application/xml"] {
        assert_http_error(s.send(Method::POST, "/entities", ct, &e).await, 415).await;
        let body = json!({"name": {"type": "Property", "value": "Other"}});
        assert_http_error(
            s.send(Method::PATCH, &format!("/entities/{ID}/attrs"), ct, &body)
                .await,
            415,
        )
        .await;
        assert_http_error(
            s.send(
                Method::PATCH,
                &format!("/entities/{ID}/attrs/name"),
                ct,
                &json!({"value": "Other"}),
            )
            .await,
            415,
        )
        .await;
    }
    s.assert_absent("urn:ngsi-ld:Building:ct").await;
    assert_eq!(s.entity(ID, "").await, good(ID));
}

#[actix_web::test]
async fn an_accept_header_with_nothing_offered_is_406() {
    let s = with_entity().await;
    for accept in ["application/xml", "text/html", "image/png"] {
        let (status, _, _) = s
            .get_with(&format!("/entities/{ID}"), &[("Accept", accept)])
            .await;
        assert_eq!(status, 406, "Accept: {accept}");
    }
    let r = s
        .req(Method::GET, &format!("/entities/{ID}"))
        .header("Accept", "application/xml")
        .send()
        .await
        .unwrap();
    assert_http_error(r, 406).await;
    // the JSON flavours and wildcards are fine
    for accept in [
        "application/json",
        "application/ld+json",
        "*/*",
        "application/*",
        "text/html, application/json;q=0.5",
    ] {
        let (status, _, _) = s
            .get_with(&format!("/entities/{ID}"), &[("Accept", accept)])
            .await;
        assert_eq!(status, 200, "Accept: {accept}");
    }
    // Media types are case-insensitive (RFC 9110 8.3.1), and every Accept line of a request counts
    // (5.3: a field given on several lines is one list).
    let r = s
        .req(Method::GET, &format!("/entities/{ID}"))
        .header("Accept", "text/html")
        .header(
            "Accept",
            "Application/LD+JSON;q=0.8, application/json;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/ld+json");
    // A weight that is not a number leaves the range at the default weight (RFC 9110 gives no
    // rule that drops it), ahead of a range weighted below it.
    let r = s
        .req(Method::GET, &format!("/entities/{ID}"))
        .header(
            "Accept",
            "application/ld+json;q=notanumber, application/json;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/ld+json");
}

#[actix_web::test]
async fn json_with_an_at_context_member_is_bad_request_data() {
    let s = with_entity().await;
    let mut e = good("urn:ngsi-ld:Building:c1");
    e["@context"] = json!("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld");
    assert_problem(s.create(&e).await, 400, "BadRequestData").await;
    s.assert_absent("urn:ngsi-ld:Building:c1").await;
    let body = json!({
        "name": {"type": "Property", "value": "Other"},
        "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
    });
    let r = s
        .send(
            Method::POST,
            &format!("/entities/{ID}/attrs"),
            "application/json",
            &body,
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(s.entity(ID, "").await, good(ID));
}

#[actix_web::test]
async fn json_ld_without_an_at_context_is_bad_request_data() {
    let s = with_entity().await;
    let e = good("urn:ngsi-ld:Building:c2");
    assert_problem(
        s.send_ld(Method::POST, "/entities", &e).await,
        400,
        "BadRequestData",
    )
    .await;
    s.assert_absent("urn:ngsi-ld:Building:c2").await;
    let body = json!({"name": {"type": "Property", "value": "Other"}});
    let r = s
        .send_ld(Method::PATCH, &format!("/entities/{ID}"), &body)
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(s.entity(ID, "").await, good(ID));
}

#[actix_web::test]
async fn json_ld_with_a_link_header_is_bad_request_data() {
    let s = with_entity().await;
    let core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld";
    let mut e = good("urn:ngsi-ld:Building:c3");
    e["@context"] = json!(core);
    let r = s
        .req(Method::POST, "/entities")
        .header("Content-Type", "application/ld+json")
        .header("Link", link(core))
        .body(e.to_string())
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    s.assert_absent("urn:ngsi-ld:Building:c3").await;
    // the same body without the Link header is fine (sanity check of the payload)
    assert_eq!(s.send_ld(Method::POST, "/entities", &e).await.status(), 201);
}

// ------------------------------------------------------------------------------------------------
// query parameters and headers
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn an_unknown_options_value_is_refused() {
    let s = with_entity().await;
    for q in [
        "?options=bogus",
        "?options=keyValues,bogus",
        "?format=fancy",
    ] {
        let r = s
            .req(Method::GET, &format!("/entities/{ID}{q}"))
            .send()
            .await
            .unwrap();
        assert_problem_one_of(r, 400, &["BadRequestData", "InvalidRequest"]).await;
    }
    let body = json!({"height": {"type": "Property", "value": 30}});
    let r = s
        .send(
            Method::POST,
            &format!("/entities/{ID}/attrs?options=bogus"),
            "application/json",
            &body,
        )
        .await;
    assert_problem_one_of(r, 400, &["BadRequestData", "InvalidRequest"]).await;
    assert_eq!(s.entity(ID, "").await, good(ID));
}

#[actix_web::test]
async fn a_bad_tenant_header_is_refused_and_creates_nothing() {
    let s = TestServer::start().await;
    let e = good("urn:ngsi-ld:Building:t1");
    for tenant in ["bad tenant!", "a/b", "x".repeat(300).as_str(), "<t>"] {
        let r = s
            .req(Method::POST, "/entities")
            .header("Content-Type", "application/json")
            .header("NGSILD-Tenant", tenant)
            .body(e.to_string())
            .send()
            .await
            .unwrap();
        assert_problem_one_of(r, 400, &["BadRequestData", "InvalidRequest"]).await;
    }
    s.assert_absent("urn:ngsi-ld:Building:t1").await;
    for tenant in ["bad", "a", "t"] {
        let (status, _, body) = s
            .get_with(
                "/entities/urn:ngsi-ld:Building:t1",
                &[("NGSILD-Tenant", tenant)],
            )
            .await;
        assert_eq!(status, 404, "{tenant}: {body}");
    }
}

#[actix_web::test]
async fn delete_all_must_be_true_or_false() {
    let s = with_entity().await;
    for q in ["?deleteAll=maybe", "?deleteAll=1", "?deleteAll="] {
        let r = s
            .req(Method::DELETE, &format!("/entities/{ID}/attrs/name{q}"))
            .send()
            .await
            .unwrap();
        assert_problem_one_of(r, 400, &["BadRequestData", "InvalidRequest"]).await;
    }
    let r = s
        .req(
            Method::DELETE,
            &format!("/entities/{ID}/attrs/name?datasetId=not%20a%20uri"),
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(s.entity(ID, "").await, good(ID));
}

#[actix_web::test]
async fn unknown_paths_and_methods_are_refused() {
    let s = with_entity().await;
    let r = s.req(Method::GET, "/nothing/here").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s.req(Method::PUT, "/entities").send().await.unwrap();
    assert_problem(r, 400, "BadRequestData").await; // a replace that lacks the entity id (ETSI 054_02_02)
    let r = s
        .req(Method::POST, &format!("/entities/{ID}"))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(s.entity(ID, "").await, good(ID));
}

// ------------------------------------------------------------------------------------------------
// HTTP preconditions of 6.3.4
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_content_type_with_parameters_is_accepted_and_a_missing_one_is_415() {
    let s = TestServer::start().await;
    let e = good("urn:ngsi-ld:Building:cs");
    let r = s
        .send(
            Method::POST,
            "/entities",
            "application/json; charset=utf-8",
            &e,
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(s.entity("urn:ngsi-ld:Building:cs", "").await, e);
    let r = s
        .req(Method::POST, "/entities")
        .body(good("urn:ngsi-ld:Building:nct").to_string())
        .send()
        .await
        .unwrap();
    assert_http_error(r, 415).await;
    s.assert_absent("urn:ngsi-ld:Building:nct").await;
}

#[actix_web::test]
async fn a_write_without_content_length_is_411() {
    let s = with_entity().await;
    let chunked = |body: Value| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(body.to_string().into_bytes())];
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    let r = s
        .req(Method::POST, "/entities")
        .header("Content-Type", "application/json")
        .body(chunked(good("urn:ngsi-ld:Building:chunked")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 411);
    assert!(
        r.text().await.unwrap().is_empty(),
        "411 has no payload body"
    );
    s.assert_absent("urn:ngsi-ld:Building:chunked").await;
    let r = s
        .req(Method::PATCH, &format!("/entities/{ID}/attrs"))
        .header("Content-Type", "application/json")
        .body(chunked(
            json!({"name": {"type": "Property", "value": "Other"}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 411);
    assert_eq!(s.entity(ID, "").await, good(ID));
}

#[actix_web::test]
async fn an_invalid_link_header_is_bad_request_data() {
    let s = TestServer::start().await;
    let e = good("urn:ngsi-ld:Building:lk");
    for value in [
        "<not a url>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
        "<>; rel=\"http://www.w3.org/ns/json-ld#context\"",
        "no-brackets; rel=\"http://www.w3.org/ns/json-ld#context\"",
    ] {
        let r = s
            .req(Method::POST, "/entities")
            .header("Content-Type", "application/json")
            .header("Link", value)
            .body(e.to_string())
            .send()
            .await
            .unwrap();
        assert_problem(r, 400, "BadRequestData").await;
    }
    s.assert_absent("urn:ngsi-ld:Building:lk").await;
}

// ------------------------------------------------------------------------------------------------
// Query languages: the detail points at what is wrong
// ------------------------------------------------------------------------------------------------

/// GET /entities with the given parameters (values percent-encoded here) is refused with 400
/// BadRequestData; its detail.
async fn refused_query(s: &TestServer, params: &[(&str, &str)]) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let r = s
        .req(Method::GET, &format!("/entities?{query}"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, 400, "BadRequestData").await;
    problem["detail"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn a_bad_query_names_the_parameter_the_position_and_the_fragment() {
    let s = with_entity().await;
    let q = [("type", "Building"), ("q", "temperature>>3")];
    assert_eq!(
        refused_query(&s, &q).await,
        "q: '>3' is not a number, date, time or quoted string at position 13"
    );
    assert_eq!(
        refused_query(&s, &[("type", "Building"), ("q", "(name==\"Tower\"")]).await,
        "q: unclosed '(' at position 1"
    );
    assert_eq!(
        refused_query(&s, &[("type", "Building"), ("scopeQ", "/Madrid;Gardens")]).await,
        "scopeQ: 'Gardens' is not a scope pattern such as /Madrid/Gardens, /Madrid/+ or /Madrid/# at position 9"
    );
    assert_eq!(
        refused_query(&s, &[("type", "Building;(Bad Type)")]).await,
        "type: the entity type 'Bad Type' contains the character ' ', which NGSI-LD names may not contain at position 11"
    );
    let geo = refused_query(
        &s,
        &[
            ("type", "Building"),
            ("georel", "near;maxDistance==far"),
            ("geometry", "Point"),
            ("coordinates", "[2.3,48.8]"),
        ],
    )
    .await;
    assert_eq!(
        geo,
        "georel: maxDistance 'far' is not a number of metres at position 6"
    );
    // The same q in a query body says the same, once.
    let r = s
        .req(Method::POST, "/entityOperations/query")
        .json(&json!({"type": "Query", "entities": [{"type": "Building"}], "q": "temperature>>3"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(
        problem["detail"],
        "q: '>3' is not a number, date, time or quoted string at position 13"
    );
    // And nothing changed.
    assert_eq!(s.entity(ID, "").await["name"]["value"], "Tower");
}

// ------------------------------------------------------------------------------------------------
// JSON bodies: the ProblemDetails point at the member at fault
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_bad_body_names_the_json_pointer_of_the_member_at_fault() {
    let s = with_entity().await;
    let second_instance = entity_with(
        "name",
        json!([
            {"type": "Property", "value": "Tower"},
            {"type": "Property", "value": "Torre", "datasetId": "not a uri"}
        ]),
    );
    let cases = [
        (second_instance, "/name/1/datasetId"),
        (
            entity_with(
                "location",
                json!({"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 91], [0, 0]]]}}),
            ),
            "/location/value/coordinates/0/2/1",
        ),
        (
            entity_with("refRoom", json!({"type": "Relationship"})),
            "/refRoom/object",
        ),
        (
            entity_with(
                "name",
                json!({"type": "Property", "value": "x", "observedAt": "noon"}),
            ),
            "/name/observedAt",
        ),
    ];
    for (mut entity, pointer) in cases {
        entity["id"] = json!("urn:ngsi-ld:Building:pointed");
        let problem = assert_problem(s.create(&entity).await, 400, "BadRequestData").await;
        assert_eq!(problem["pointer"], pointer, "{problem}");
        assert_eq!(
            problem["title"],
            "The request contains invalid NGSI-LD data"
        );
        assert_eq!(problem["status"], 400);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with(&format!("{pointer}: ")), "{detail}");
        s.assert_absent("urn:ngsi-ld:Building:pointed").await;
    }
    // An error of the body as a whole has the empty pointer.
    let problem = assert_problem(s.create(&json!([1])).await, 400, "InvalidRequest").await;
    assert_eq!(problem["pointer"], "", "{problem}");
    // A query error keeps its position and has no pointer.
    let r = s
        .req(Method::GET, "/entities?type=Building&q=a>>1")
        .send()
        .await
        .unwrap();
    assert!(assert_problem(r, 400, "BadRequestData")
        .await
        .get("pointer")
        .is_none());
}

#[actix_web::test]
async fn a_batch_points_into_each_refused_entity() {
    let s = with_entity().await;
    let ok = good("urn:ngsi-ld:Building:batch-ok");
    let mut bad = good("urn:ngsi-ld:Building:batch-bad");
    bad["name"] = json!({"type": "Property", "value": "x", "unitCode": 5});
    let r = s
        .send(
            Method::POST,
            "/entityOperations/create",
            "application/json",
            &json!([ok, bad]),
        )
        .await;
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["success"], json!(["urn:ngsi-ld:Building:batch-ok"]));
    let error = &body["errors"][0];
    assert_eq!(error["entityId"], "urn:ngsi-ld:Building:batch-bad");
    // Relative to the entity, not to the array of the batch.
    assert_eq!(error["error"]["pointer"], "/name/unitCode", "{body}");
    assert_eq!(
        error["error"]["type"],
        "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    );
    assert!(
        error["error"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("/name/unitCode: "),
        "{body}"
    );
    s.assert_absent("urn:ngsi-ld:Building:batch-bad").await;
}
