//! Black-box tests of every entity lifecycle endpoint of GS CIM 009 V1.9.1 clause 5.6 over the HTTP
//! binding of clause 6.4: create (5.6.1), update attributes (5.6.2), append attributes (5.6.3),
//! partial attribute update (5.6.4), delete attribute (5.6.5), delete entity (5.6.6), merge entity
//! (5.6.17), replace entity (5.6.18), replace attribute (5.6.19) and retrieve (5.7.1), including
//! multi-attributes (datasetId, clause 4.5.5). Every write is read back.

use crate::common;

use common::{assert_no_content, assert_problem, assert_status, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// The instances of an attribute as a list sorted by datasetId (the default instance first), so that
/// multi-attributes compare without depending on the order the broker lists them in.
fn instances(attr: &Value) -> Vec<Value> {
    let mut list = match attr {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    list.sort_by_key(|i| i["datasetId"].as_str().unwrap_or("").to_string());
    list
}

/// The entity types as a sorted list (a string or an array in the response).
fn types(entity: &Value) -> Vec<String> {
    let mut t: Vec<String> = match &entity["type"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().expect("type is a string").to_string())
            .collect(),
        other => panic!("entity type missing: {other}"),
    };
    t.sort();
    t
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(
        v.as_str()
            .unwrap_or_else(|| panic!("a DateTime string, got {v}")),
    )
    .unwrap_or_else(|e| panic!("{v} is not an RFC 3339 DateTime: {e}"))
}

async fn pause() {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}

// ------------------------------------------------------------------------------------------------
// POST /entities, GET /entities/{id}, DELETE /entities/{id}
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn create_answers_201_with_location_and_a_duplicate_409_keeps_the_first() {
    let s = TestServer::start().await;
    let first = json!({
        "id": "urn:ngsi-ld:Building:L1",
        "type": "Building",
        "name": {"type": "Property", "value": "First"}
    });
    let r = s.create(&first).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["Location"],
        "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:L1"
    );
    assert!(
        r.text().await.unwrap().is_empty(),
        "201 of create has no body"
    );

    let second = json!({
        "id": "urn:ngsi-ld:Building:L1",
        "type": "House",
        "name": {"type": "Property", "value": "Second"}
    });
    assert_problem(s.create(&second).await, 409, "AlreadyExists").await;
    assert_eq!(
        s.entity("urn:ngsi-ld:Building:L1", "").await,
        first,
        "the duplicate changed nothing"
    );
}

#[actix_web::test]
async fn create_accepts_a_trailing_slash_on_the_collection() {
    let s = TestServer::start().await;
    let e = json!({"id": "urn:ngsi-ld:Building:slash", "type": "Building", "h": {"type": "Property", "value": 1}});
    let r = s
        .send(Method::POST, "/entities/", "application/json", &e)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(s.entity("urn:ngsi-ld:Building:slash", "").await, e);
    // and on a sub-resource
    let r = s
        .send(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Building:slash/attrs/",
            "application/json",
            &json!({"h": {"type": "Property", "value": 2}}),
        )
        .await;
    assert_no_content(r).await;
    assert_eq!(
        s.entity("urn:ngsi-ld:Building:slash", "").await["h"]["value"],
        2
    );
}

#[actix_web::test]
async fn retrieving_an_unknown_entity_is_resource_not_found() {
    let s = TestServer::start().await;
    let r = s
        .req(Method::GET, "/entities/urn:ngsi-ld:Building:nothing")
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
}

#[actix_web::test]
async fn delete_entity_answers_204_then_404_and_the_id_can_be_reused() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:D1";
    let e = json!({"id": id, "type": "Building", "old": {"type": "Property", "value": 1}});
    assert_eq!(s.create(&e).await.status(), 201);
    let keep = json!({"id": "urn:ngsi-ld:Building:D2", "type": "Building"});
    assert_eq!(s.create(&keep).await.status(), 201);

    assert_no_content(
        s.req(Method::DELETE, &format!("/entities/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    s.assert_absent(id).await;
    let again = s
        .req(Method::DELETE, &format!("/entities/{id}"))
        .send()
        .await
        .unwrap();
    assert_problem(again, 404, "ResourceNotFound").await;
    assert_eq!(
        s.entity("urn:ngsi-ld:Building:D2", "").await,
        keep,
        "other entities are untouched"
    );

    let fresh = json!({"id": id, "type": "Building", "new": {"type": "Property", "value": 2}});
    assert_eq!(s.create(&fresh).await.status(), 201, "the id is free again");
    assert_eq!(
        s.entity(id, "").await,
        fresh,
        "nothing of the deleted entity comes back"
    );
}

// ------------------------------------------------------------------------------------------------
// PATCH /entities/{id} (merge, 5.6.17)
// ------------------------------------------------------------------------------------------------

fn merge_target(id: &str) -> Value {
    json!({
        "id": id,
        "type": "Building",
        "temperature": {
            "type": "Property", "value": 20, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z",
            "accuracy": {"type": "Property", "value": 0.5},
            "source": {"type": "Property", "value": "sensor-A"}
        },
        "humidity": {"type": "Property", "value": 40},
        "status": {"type": "Property", "value": "ok"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}
    })
}

#[actix_web::test]
async fn merge_merges_attributes_and_sub_attributes_deletes_nulls_and_adds_types() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:M1";
    assert_eq!(s.create(&merge_target(id)).await.status(), 201);
    let patch = json!({
        "type": "Landmark",
        "temperature": {
            "type": "Property", "value": 25, "observedAt": "2024-02-01T00:00:00Z",
            "accuracy": {"type": "Property", "value": 0.1},
            "source": "urn:ngsi-ld:null",
            "calibrated": {"type": "Property", "value": true}
        },
        "humidity": "urn:ngsi-ld:null",
        "status": {"type": "Property", "value": "urn:ngsi-ld:null"},
        "height": {"type": "Property", "value": 30}
    });
    assert_no_content(
        s.send(
            Method::PATCH,
            &format!("/entities/{id}"),
            "application/json",
            &patch,
        )
        .await,
    )
    .await;

    let got = s.entity(id, "").await;
    assert_eq!(
        types(&got),
        vec!["Building", "Landmark"],
        "types are added, none removed"
    );
    assert_eq!(
        got["temperature"],
        json!({
            "type": "Property", "value": 25, "unitCode": "CEL", "observedAt": "2024-02-01T00:00:00Z",
            "accuracy": {"type": "Property", "value": 0.1},
            "calibrated": {"type": "Property", "value": true}
        }),
        "given members replace, absent ones (unitCode) stay, a Null sub-attribute is removed"
    );
    assert_eq!(
        got["owner"],
        merge_target(id)["owner"],
        "attributes not in the fragment stay"
    );
    assert_eq!(
        got["height"],
        json!({"type": "Property", "value": 30}),
        "new attributes are added"
    );
    assert!(
        got.get("humidity").is_none(),
        "concise NGSI-LD Null deletes: {got}"
    );
    assert!(
        got.get("status").is_none(),
        "normalized NGSI-LD Null deletes: {got}"
    );
    assert!(
        !got.to_string().contains("urn:ngsi-ld:null"),
        "Null is never stored: {got}"
    );
}

#[actix_web::test]
async fn merge_of_a_missing_entity_or_with_another_id_changes_nothing() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:M2";
    assert_eq!(s.create(&merge_target(id)).await.status(), 201);
    let r = s
        .send(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Building:none",
            "application/json",
            &json!({"height": 1}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    s.assert_absent("urn:ngsi-ld:Building:none").await;

    let other =
        json!({"id": "urn:ngsi-ld:Building:other", "height": {"type": "Property", "value": 1}});
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}"),
            "application/json",
            &other,
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(s.entity(id, "").await, merge_target(id));
}

// ------------------------------------------------------------------------------------------------
// PUT /entities/{id} (replace, 5.6.18)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn replace_entity_drops_old_attributes_and_keeps_created_at() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:R1";
    let e = json!({
        "id": id, "type": "Building",
        "name": {"type": "Property", "value": "Old"},
        "temperature": {"type": "Property", "value": 20}
    });
    assert_eq!(s.create(&e).await.status(), 201);
    let before = s.entity(id, "?options=sysAttrs").await;
    pause().await;

    let replacement = json!({"type": "Building", "height": {"type": "Property", "value": 30}});
    assert_no_content(
        s.send(
            Method::PUT,
            &format!("/entities/{id}"),
            "application/json",
            &replacement,
        )
        .await,
    )
    .await;

    assert_eq!(
        s.entity(id, "").await,
        json!({"id": id, "type": "Building", "height": {"type": "Property", "value": 30}})
    );
    let after = s.entity(id, "?options=sysAttrs").await;
    assert_eq!(
        after["createdAt"], before["createdAt"],
        "createdAt survives a replace"
    );
    assert!(
        time(&after["modifiedAt"]) > time(&before["modifiedAt"]),
        "modifiedAt moves: {before} -> {after}"
    );
}

/// A replacement without a type keeps the entity's types (5.6.18: the types are replaced only
/// when the fragment gives some); its id and createdAt stay as well.
#[actix_web::test]
async fn replace_without_a_type_keeps_the_types() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:R2";
    let e = json!({"id": id, "type": ["Building", "Landmark"],
                   "name": {"type": "Property", "value": "Old"}});
    assert_eq!(s.create(&e).await.status(), 201);
    let before = s.entity(id, "?options=sysAttrs").await;
    assert_no_content(
        s.send(
            Method::PUT,
            &format!("/entities/{id}"),
            "application/json",
            &json!({"height": {"type": "Property", "value": 30}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        s.entity(id, "").await,
        json!({"id": id, "type": ["Building", "Landmark"],
               "height": {"type": "Property", "value": 30}})
    );
    let after = s.entity(id, "?options=sysAttrs").await;
    assert_eq!(after["createdAt"], before["createdAt"]);
}

#[actix_web::test]
async fn replace_of_a_missing_entity_or_with_another_id_is_refused() {
    let s = TestServer::start().await;
    let r = s
        .send(
            Method::PUT,
            "/entities/urn:ngsi-ld:Building:none",
            "application/json",
            &json!({"type": "Building"}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    s.assert_absent("urn:ngsi-ld:Building:none").await;

    let id = "urn:ngsi-ld:Building:R2";
    let e = json!({"id": id, "type": "Building", "a": {"type": "Property", "value": 1}});
    assert_eq!(s.create(&e).await.status(), 201);
    let body = json!({"id": "urn:ngsi-ld:Building:R3", "type": "Building", "b": {"type": "Property", "value": 2}});
    assert_problem(
        s.send(
            Method::PUT,
            &format!("/entities/{id}"),
            "application/json",
            &body,
        )
        .await,
        400,
        "BadRequestData",
    )
    .await;
    assert_eq!(s.entity(id, "").await, e);
}

// ------------------------------------------------------------------------------------------------
// POST /entities/{id}/attrs (append, 5.6.3)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn append_adds_new_attributes_and_overwrites_existing_ones() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:A1";
    let e = json!({
        "id": id, "type": "Building",
        "name": {"type": "Property", "value": "A", "unitCode": "X"},
        "temperature": {"type": "Property", "value": 20}
    });
    assert_eq!(s.create(&e).await.status(), 201);
    let body = json!({
        "name": {"type": "Property", "value": "B"},
        "height": {"type": "Property", "value": 30}
    });
    assert_no_content(
        s.send(
            Method::POST,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(
        s.entity(id, "").await,
        json!({
            "id": id, "type": "Building",
            "name": {"type": "Property", "value": "B"},
            "temperature": {"type": "Property", "value": 20},
            "height": {"type": "Property", "value": 30}
        })
    );
}

#[actix_web::test]
async fn append_with_no_overwrite_answers_207_and_keeps_existing_attributes() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:A2";
    let e = json!({"id": id, "type": "Building", "name": {"type": "Property", "value": "A"}});
    assert_eq!(s.create(&e).await.status(), 201);
    let body = json!({
        "name": {"type": "Property", "value": "C"},
        "width": {"type": "Property", "value": 7}
    });
    let r = s
        .send(
            Method::POST,
            &format!("/entities/{id}/attrs?options=noOverwrite"),
            "application/json",
            &body,
        )
        .await;
    let result = assert_status(r, 207).await;
    assert_eq!(
        result["updated"],
        json!(["width"]),
        "UpdateResult: {result}"
    );
    let not_updated = result["notUpdated"].as_array().expect("notUpdated array");
    assert_eq!(not_updated.len(), 1, "{result}");
    assert_eq!(not_updated[0]["attributeName"], "name");
    assert!(
        not_updated[0]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "a reason is given: {result}"
    );
    assert_eq!(
        s.entity(id, "").await,
        json!({
            "id": id, "type": "Building",
            "name": {"type": "Property", "value": "A"},
            "width": {"type": "Property", "value": 7}
        })
    );
}

#[actix_web::test]
async fn append_adds_a_new_dataset_instance_and_types_and_refuses_missing_entities() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:A3";
    let e = json!({"id": id, "type": "Building", "speed": {"type": "Property", "value": 20}});
    assert_eq!(s.create(&e).await.status(), 201);
    let body = json!({
        "type": "Landmark",
        "speed": {"type": "Property", "value": 7, "datasetId": "urn:ngsi-ld:Dataset:b"}
    });
    assert_no_content(
        s.send(
            Method::POST,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &body,
        )
        .await,
    )
    .await;
    let got = s.entity(id, "").await;
    assert_eq!(types(&got), vec!["Building", "Landmark"]);
    assert_eq!(
        instances(&got["speed"]),
        vec![
            json!({"type": "Property", "value": 20}),
            json!({"type": "Property", "value": 7, "datasetId": "urn:ngsi-ld:Dataset:b"}),
        ]
    );

    let r = s
        .send(
            Method::POST,
            "/entities/urn:ngsi-ld:Building:none/attrs",
            "application/json",
            &json!({"x": 1}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    s.assert_absent("urn:ngsi-ld:Building:none").await;
}

// ------------------------------------------------------------------------------------------------
// PATCH /entities/{id}/attrs (update, 5.6.2)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn update_attrs_replaces_whole_attributes() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:U1";
    let e = json!({
        "id": id, "type": "Building",
        "temperature": {"type": "Property", "value": 20, "unitCode": "CEL", "accuracy": {"type": "Property", "value": 1}},
        "name": {"type": "Property", "value": "n"}
    });
    assert_eq!(s.create(&e).await.status(), 201);
    let body = json!({"temperature": {"type": "Property", "value": 100, "observedAt": "2022-03-14T13:00:00Z"}});
    assert_no_content(
        s.send(
            Method::PATCH,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &body,
        )
        .await,
    )
    .await;
    let got = s.entity(id, "").await;
    assert_eq!(
        got["temperature"],
        json!({"type": "Property", "value": 100, "observedAt": "2022-03-14T13:00:00Z"}),
        "the whole attribute is replaced (5.5.8 example 2): unitCode and sub-attributes go"
    );
    assert_eq!(got["name"], e["name"]);
}

#[actix_web::test]
async fn update_attrs_appends_what_the_entity_lacks_and_reports_deletions_of_it() {
    // 5.6.2.4: "If the target Entity does not include a matching Attribute ... then such
    // Attribute shall be appended to the target Entity" (and an instance with a datasetId it
    // lacks likewise); deleting what it lacks is not done, and reported.
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:U2";
    let e = json!({"id": id, "type": "Building", "name": {"type": "Property", "value": "n"}});
    assert_eq!(s.create(&e).await.status(), 201);
    let body = json!({
        "name": {"type": "Property", "value": "m"},
        "ghost": {"type": "Property", "value": 1},
        "speed": {"type": "Property", "value": 30, "datasetId": "urn:ngsi-ld:Dataset:radar"},
    });
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &body,
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        s.entity(id, "").await,
        json!({"id": id, "type": "Building", "name": {"type": "Property", "value": "m"},
               "ghost": {"type": "Property", "value": 1},
               "speed": {"type": "Property", "value": 30, "datasetId": "urn:ngsi-ld:Dataset:radar"}})
    );
    let body = json!({"phantom": {"type": "Property", "value": "urn:ngsi-ld:null"}});
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &body,
        )
        .await;
    let result = assert_status(r, 207).await;
    assert_eq!(result["updated"], json!([]), "{result}");
    assert_eq!(
        result["notUpdated"][0]["attributeName"], "phantom",
        "{result}"
    );
}

#[actix_web::test]
async fn update_attrs_null_deletes_and_datasets_are_addressed_by_dataset_id() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:U3";
    let e = json!({
        "id": id, "type": "Building",
        "temperature": {"type": "Property", "value": 20},
        "speed": [
            {"type": "Property", "value": 1},
            {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"}
        ]
    });
    assert_eq!(s.create(&e).await.status(), 201);
    let body = json!({
        "temperature": {"type": "Property", "value": "urn:ngsi-ld:null"},
        "speed": {"type": "Property", "value": 50, "datasetId": "urn:ngsi-ld:Dataset:a"}
    });
    assert_no_content(
        s.send(
            Method::PATCH,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &body,
        )
        .await,
    )
    .await;
    let got = s.entity(id, "").await;
    assert!(
        got.get("temperature").is_none(),
        "Null deletes the attribute: {got}"
    );
    assert_eq!(
        instances(&got["speed"]),
        vec![
            json!({"type": "Property", "value": 1}),
            json!({"type": "Property", "value": 50, "datasetId": "urn:ngsi-ld:Dataset:a"}),
        ],
        "only the instance with that datasetId changes"
    );

    let r = s
        .send(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Building:none/attrs",
            "application/json",
            &json!({"x": 1}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
}

#[actix_web::test]
async fn update_attrs_with_a_type_adds_the_type() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:U4";
    assert_eq!(
        s.create(&json!({"id": id, "type": "Building"}))
            .await
            .status(),
        201
    );
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &json!({"type": "Vehicle"}),
        )
        .await;
    assert_no_content(r).await;
    assert_eq!(types(&s.entity(id, "").await), vec!["Building", "Vehicle"]);
}

// ------------------------------------------------------------------------------------------------
// PATCH /entities/{id}/attrs/{attrId} (partial attribute update, 5.6.4)
// ------------------------------------------------------------------------------------------------

fn partial_target(id: &str) -> Value {
    json!({
        "id": id, "type": "Building",
        "temperature": {
            "type": "Property", "value": 20, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z",
            "accuracy": {"type": "Property", "value": 0.5}
        },
        "speed": [
            {"type": "Property", "value": 1},
            {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"}
        ],
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}
    })
}

#[actix_web::test]
async fn partial_update_changes_only_the_given_members() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:P1";
    assert_eq!(s.create(&partial_target(id)).await.status(), 201);
    let before = s.entity(id, "?options=sysAttrs").await;
    pause().await;

    let fragment = json!({"value": 25, "observedAt": "2024-02-01T00:00:00Z"});
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs/temperature"),
            "application/json",
            &fragment,
        )
        .await;
    assert_no_content(r).await;

    let mut expected = partial_target(id);
    expected["temperature"]["value"] = json!(25);
    expected["temperature"]["observedAt"] = json!("2024-02-01T00:00:00Z");
    assert_eq!(
        s.entity(id, "").await,
        expected,
        "unitCode and the sub-attribute stay (5.5.8 example 1)"
    );

    let after = s.entity(id, "?options=sysAttrs").await;
    assert_eq!(
        after["temperature"]["createdAt"],
        before["temperature"]["createdAt"]
    );
    assert!(time(&after["temperature"]["modifiedAt"]) > time(&before["temperature"]["modifiedAt"]));
}

#[actix_web::test]
async fn partial_update_addresses_one_dataset_instance() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:P2";
    assert_eq!(s.create(&partial_target(id)).await.status(), 201);
    let fragment = json!({"type": "Property", "value": 9, "datasetId": "urn:ngsi-ld:Dataset:a"});
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs/speed"),
            "application/json",
            &fragment,
        )
        .await;
    assert_no_content(r).await;
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]),
        vec![
            json!({"type": "Property", "value": 1}),
            json!({"type": "Property", "value": 9, "datasetId": "urn:ngsi-ld:Dataset:a"}),
        ]
    );

    let missing = json!({"value": 3, "datasetId": "urn:ngsi-ld:Dataset:zzz"});
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs/speed"),
            "application/json",
            &missing,
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]).len(),
        2,
        "no instance is created"
    );
}

#[actix_web::test]
async fn partial_update_cannot_turn_a_property_into_a_relationship() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:P3";
    assert_eq!(s.create(&partial_target(id)).await.status(), 201);
    let fragment = json!({"type": "Relationship", "object": "urn:ngsi-ld:Thing:1"});
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs/temperature"),
            "application/json",
            &fragment,
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(
        s.entity(id, "").await,
        partial_target(id),
        "nothing changed"
    );
}

#[actix_web::test]
async fn partial_update_of_a_missing_attribute_or_entity_is_not_found() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:P4";
    assert_eq!(s.create(&partial_target(id)).await.status(), 201);
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs/ghost"),
            "application/json",
            &json!({"value": 1}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    let r = s
        .send(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Building:none/attrs/temperature",
            "application/json",
            &json!({"value": 1}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    assert_eq!(s.entity(id, "").await, partial_target(id));
}

// ------------------------------------------------------------------------------------------------
// PUT /entities/{id}/attrs/{attrId} (replace attribute, 5.6.19)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn replace_attribute_replaces_the_whole_attribute_and_may_change_its_type() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:RA1";
    assert_eq!(s.create(&partial_target(id)).await.status(), 201);
    let r = s
        .send(
            Method::PUT,
            &format!("/entities/{id}/attrs/temperature"),
            "application/json",
            &json!({"type": "Property", "value": 30}),
        )
        .await;
    assert_no_content(r).await;
    let r = s
        .send(
            Method::PUT,
            &format!("/entities/{id}/attrs/owner"),
            "application/json",
            &json!({"type": "Property", "value": "nobody"}),
        )
        .await;
    assert_no_content(r).await;
    let r = s
        .send(
            Method::PUT,
            &format!("/entities/{id}/attrs/speed"),
            "application/json",
            &json!({"type": "Property", "value": 5, "datasetId": "urn:ngsi-ld:Dataset:a"}),
        )
        .await;
    assert_no_content(r).await;

    let got = s.entity(id, "").await;
    assert_eq!(
        got["temperature"],
        json!({"type": "Property", "value": 30}),
        "unitCode, observedAt, sub-attributes go"
    );
    assert_eq!(
        got["owner"],
        json!({"type": "Property", "value": "nobody"}),
        "ETSI TP 055_01_02: new type allowed"
    );
    assert_eq!(
        instances(&got["speed"]),
        vec![
            json!({"type": "Property", "value": 1}),
            json!({"type": "Property", "value": 5, "datasetId": "urn:ngsi-ld:Dataset:a"}),
        ]
    );
}

#[actix_web::test]
async fn replace_attribute_that_does_not_exist_is_not_found_and_creates_nothing() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:RA2";
    assert_eq!(s.create(&partial_target(id)).await.status(), 201);
    let r = s
        .send(
            Method::PUT,
            &format!("/entities/{id}/attrs/ghost"),
            "application/json",
            &json!({"type": "Property", "value": 1}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    assert_eq!(s.entity(id, "").await, partial_target(id));
}

// ------------------------------------------------------------------------------------------------
// DELETE /entities/{id}/attrs/{attrId} (5.6.5)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn delete_attribute_by_dataset_id_default_instance_and_delete_all() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:DA1";
    let e = json!({
        "id": id, "type": "Building",
        "speed": [
            {"type": "Property", "value": 1},
            {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"},
            {"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:b"}
        ],
        "name": {"type": "Property", "value": "n"}
    });
    assert_eq!(s.create(&e).await.status(), 201);
    let path = format!("/entities/{id}/attrs/speed");

    let r = s
        .req(
            Method::DELETE,
            &format!("{path}?datasetId=urn:ngsi-ld:Dataset:a"),
        )
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]),
        vec![
            json!({"type": "Property", "value": 1}),
            json!({"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:b"}),
        ]
    );

    let r = s
        .req(
            Method::DELETE,
            &format!("{path}?datasetId=urn:ngsi-ld:Dataset:zzz"),
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;

    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]),
        vec![json!({"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:b"})],
        "without datasetId only the default instance goes"
    );
    let r = s.req(Method::DELETE, &path).send().await.unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;

    // put two instances back, then deleteAll=true removes every one
    let body = json!({"speed": {"type": "Property", "value": 4}});
    assert_no_content(
        s.send(
            Method::POST,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(instances(&s.entity(id, "").await["speed"]).len(), 2);
    assert_no_content(
        s.req(Method::DELETE, &format!("{path}?deleteAll=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let got = s.entity(id, "").await;
    assert!(
        got.get("speed").is_none(),
        "deleteAll removes every instance: {got}"
    );
    assert_eq!(got["name"], e["name"]);

    let r = s.req(Method::DELETE, &path).send().await.unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
    let r = s
        .req(
            Method::DELETE,
            "/entities/urn:ngsi-ld:Building:none/attrs/speed",
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
}

// ------------------------------------------------------------------------------------------------
// Multi-attributes on create (4.5.5)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn multi_attribute_instances_round_trip() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:MI1";
    let speed = json!([
        {"type": "Property", "value": 55, "source": {"type": "Property", "value": "Speedometer"}},
        {"type": "Property", "value": 54.5, "datasetId": "urn:ngsi-ld:Dataset:gps", "source": {"type": "Property", "value": "GPS"}},
        {"type": "Property", "value": 56, "datasetId": "urn:ngsi-ld:Dataset:radar"}
    ]);
    let e = json!({"id": id, "type": "Vehicle", "speed": speed});
    assert_eq!(s.create(&e).await.status(), 201);
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]),
        instances(&speed)
    );
}

#[actix_web::test]
async fn two_instances_with_one_dataset_id_are_refused() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:MI2";
    let e = json!({"id": id, "type": "Vehicle", "speed": [
        {"type": "Property", "value": 1, "datasetId": "urn:ngsi-ld:Dataset:a"},
        {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"}
    ]});
    assert_problem(s.create(&e).await, 400, "BadRequestData").await;
    s.assert_absent(id).await;
    let e = json!({"id": id, "type": "Vehicle", "speed": [
        {"type": "Property", "value": 1},
        {"type": "Property", "value": 2}
    ]});
    assert_problem(s.create(&e).await, 400, "BadRequestData").await;
    s.assert_absent(id).await;
}

#[actix_web::test]
async fn dataset_id_none_designates_the_default_instance() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:MI3";
    let e = json!({"id": id, "type": "Vehicle", "speed": [
        {"type": "Property", "value": 55, "datasetId": "@none"},
        {"type": "Property", "value": 11, "datasetId": "urn:ngsi-ld:Dataset:gps"}
    ]});
    assert_eq!(s.create(&e).await.status(), 201);
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]),
        vec![
            json!({"type": "Property", "value": 55}),
            json!({"type": "Property", "value": 11, "datasetId": "urn:ngsi-ld:Dataset:gps"}),
        ],
        "the default instance carries no datasetId in responses"
    );
    // an instance without datasetId plus "@none" are two default instances
    let dup = json!({"id": "urn:ngsi-ld:Vehicle:MI4", "type": "Vehicle", "speed": [
        {"type": "Property", "value": 55},
        {"type": "Property", "value": 56, "datasetId": "@none"}
    ]});
    assert_problem(s.create(&dup).await, 400, "BadRequestData").await;
    s.assert_absent("urn:ngsi-ld:Vehicle:MI4").await;
}

// ------------------------------------------------------------------------------------------------
// Ids, values and types that must survive unchanged
// ------------------------------------------------------------------------------------------------

/// The origin (scheme://host:port) of the test server, to resolve a Location header against.
fn origin(s: &TestServer) -> String {
    s.base.trim_end_matches("/ngsi-ld/v1").to_string()
}

fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

#[actix_web::test]
async fn an_id_that_is_a_url_is_addressed_percent_encoded() {
    let s = TestServer::start().await;
    let id = "https://example.org/things/1";
    let e = json!({"id": id, "type": "Thing", "n": {"type": "Property", "value": 1}});
    assert_eq!(s.create(&e).await.status(), 201);
    let path = format!("/entities/{}", encode(id));
    let (status, body) = s.get_json(&path).await;
    assert_eq!((status, body), (200, e.clone()));
    let r = s
        .send(
            Method::PATCH,
            &format!("{path}/attrs/n"),
            "application/json",
            &json!({"value": 2}),
        )
        .await;
    assert_no_content(r).await;
    assert_eq!(s.get_json(&path).await.1["n"]["value"], 2);
    assert_no_content(
        s.req(Method::DELETE, &format!("{path}/attrs/n"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    let (status, _) = s.get_json(&path).await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn the_location_header_names_the_created_entity() {
    let s = TestServer::start().await;
    for id in ["https://example.org/things/1", "urn:ngsi-ld:Thing:a?b#c"] {
        let e = json!({"id": id, "type": "Thing"});
        let r = s.create(&e).await;
        assert_eq!(r.status(), 201);
        let location = r.headers()["Location"].to_str().unwrap().to_string();
        let target = if location.starts_with("http") {
            location.clone()
        } else {
            format!("{}{location}", origin(&s))
        };
        let r = s.client.get(&target).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {location}");
        assert_eq!(r.json::<Value>().await.unwrap(), e);
    }
}

#[actix_web::test]
async fn values_round_trip_exactly() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Thing:values";
    let e = json!({
        "id": id,
        "type": ["Thing", "Device"],
        "big": {"type": "Property", "value": 9007199254740993u64},
        "min": {"type": "Property", "value": i64::MIN},
        "max": {"type": "Property", "value": u64::MAX},
        "pi": {"type": "Property", "value": 9.876_543_210_987_654},
        "tiny": {"type": "Property", "value": 1e-300},
        "text": {"type": "Property", "value": "ünïcødé ✓ \"quoted\" \\ back\nslash 𝄞"},
        "empty": {"type": "Property", "value": ""},
        "flag": {"type": "Property", "value": false},
        "mixed": {"type": "Property", "value": [1, "a", true, {"k": [2.5]}]},
        "deep": {"type": "Property", "value": {"a": {"b": {"c": [1, 2, {"d": "e"}]}}}},
        "passengers": {"type": "Relationship", "object": ["urn:ngsi-ld:Person:Alice", "urn:ngsi-ld:Person:Bob"], "objectType": "Person"},
        "observed": {"type": "Property", "value": 1, "observedAt": "2020-09-09T16:40:00.000Z"}
    });
    let r = s.create(&e).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = s.entity(id, "").await;
    assert_eq!(types(&got), vec!["Device", "Thing"]);
    let (mut a, mut b) = (got.clone(), e.clone());
    a.as_object_mut().unwrap().remove("type");
    b.as_object_mut().unwrap().remove("type");
    assert_eq!(a, b);
    // the raw text keeps integers integral (no 9007199254740992 or 1.8446744073709552e19)
    let text = s
        .req(Method::GET, &format!("/entities/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("9007199254740993") && text.contains("18446744073709551615"),
        "{text}"
    );
}

#[actix_web::test]
async fn json_ld_keywords_id_and_type_are_accepted_for_the_entity() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:kw";
    let e = json!({
        "@id": id, "@type": "Building",
        "name": {"type": "Property", "value": "x"},
        "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
    });
    let r = s
        .send(Method::POST, "/entities", "application/ld+json", &e)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(
        s.entity(id, "").await,
        json!({"id": id, "type": "Building", "name": {"type": "Property", "value": "x"}})
    );
}

// ------------------------------------------------------------------------------------------------
// Concurrency: read-modify-writes of one entity do not lose updates
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn concurrent_appends_to_one_entity_lose_nothing() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:busy";
    assert_eq!(
        s.create(&json!({"id": id, "type": "Building"}))
            .await
            .status(),
        201
    );
    let path = format!("/entities/{id}/attrs");
    let writes = (0..24).map(|n| {
        let body = json!({format!("a{n}"): {"type": "Property", "value": n}});
        let path = path.clone();
        let s = &s;
        async move {
            s.send(Method::POST, &path, "application/json", &body)
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(writes).await;
    assert!(statuses.iter().all(|st| *st == 204), "{statuses:?}");
    let got = s.entity(id, "").await;
    for n in 0..24 {
        assert_eq!(got[format!("a{n}")]["value"], n, "a{n} is kept: {got}");
    }
}

#[actix_web::test]
async fn concurrent_creates_of_one_id_make_exactly_one_entity() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:race";
    let creates = (0..12).map(|n| {
        let e = json!({"id": id, "type": "Building", "n": {"type": "Property", "value": n}});
        let s = &s;
        async move {
            let r = s.create(&e).await;
            let status = r.status().as_u16();
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            (n, status, body)
        }
    });
    let results = futures_util::future::join_all(creates).await;
    let winners: Vec<i64> = results
        .iter()
        .filter(|(_, st, _)| *st == 201)
        .map(|(n, _, _)| *n)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, status, body) in results.iter().filter(|(_, st, _)| *st != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(
            body["type"],
            "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"
        );
    }
    assert_eq!(
        s.entity(id, "").await["n"]["value"],
        winners[0],
        "the stored entity is the one acknowledged with 201"
    );
}

// ------------------------------------------------------------------------------------------------
// More multi-attribute rules
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn append_with_no_overwrite_still_adds_a_new_dataset_instance() {
    // ETSI TP 010_04: an existing (name, datasetId) is left alone and reported, a new datasetId of the
    // same attribute is appended.
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:NO1";
    let e = json!({"id": id, "type": "Vehicle", "speed": {"type": "Property", "value": 55}});
    assert_eq!(s.create(&e).await.status(), 201);
    let body =
        json!({"speed": {"type": "Property", "value": 60, "datasetId": "urn:ngsi-ld:Dataset:gps"}});
    let r = s
        .send(
            Method::POST,
            &format!("/entities/{id}/attrs?options=noOverwrite"),
            "application/json",
            &body,
        )
        .await;
    assert_no_content(r).await;
    let body = json!({"speed": {"type": "Property", "value": 99}});
    let r = s
        .send(
            Method::POST,
            &format!("/entities/{id}/attrs?options=noOverwrite"),
            "application/json",
            &body,
        )
        .await;
    let result = assert_status(r, 207).await;
    assert_eq!(
        result["notUpdated"][0]["attributeName"], "speed",
        "{result}"
    );
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]),
        vec![
            json!({"type": "Property", "value": 55}),
            json!({"type": "Property", "value": 60, "datasetId": "urn:ngsi-ld:Dataset:gps"}),
        ]
    );
}

#[actix_web::test]
async fn a_dataset_id_cannot_be_deleted_by_setting_it_to_null() {
    // 5.5.8: "A datasetId cannot be deleted by setting it to the value urn:ngsi-ld:null".
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:DN1";
    let e = json!({"id": id, "type": "Vehicle", "speed": {"type": "Property", "value": 55, "datasetId": "urn:ngsi-ld:Dataset:a"}});
    assert_eq!(s.create(&e).await.status(), 201);
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs/speed"),
            "application/json",
            &json!({"datasetId": "urn:ngsi-ld:null"}),
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(s.entity(id, "").await, e);
}

#[actix_web::test]
async fn merge_and_replace_address_dataset_instances() {
    // ETSI TP 056_04: a Null with a datasetId deletes only that instance; a merge with a datasetId
    // merges into only that instance.
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:MD1";
    let e = json!({"id": id, "type": "Vehicle", "speed": [
        {"type": "Property", "value": 1, "unitCode": "KMH"},
        {"type": "Property", "value": 2, "unitCode": "KMH", "datasetId": "urn:ngsi-ld:Dataset:a"},
        {"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:b"}
    ]});
    assert_eq!(s.create(&e).await.status(), 201);
    let patch = json!({"speed": [
        {"type": "Property", "value": 20, "datasetId": "urn:ngsi-ld:Dataset:a"},
        {"type": "Property", "value": "urn:ngsi-ld:null", "datasetId": "urn:ngsi-ld:Dataset:b"}
    ]});
    assert_no_content(
        s.send(
            Method::PATCH,
            &format!("/entities/{id}"),
            "application/json",
            &patch,
        )
        .await,
    )
    .await;
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]),
        vec![
            json!({"type": "Property", "value": 1, "unitCode": "KMH"}),
            json!({"type": "Property", "value": 20, "unitCode": "KMH", "datasetId": "urn:ngsi-ld:Dataset:a"}),
        ]
    );
    // replace the entity with a multi-attribute
    let replacement = json!({"type": "Vehicle", "speed": [
        {"type": "Property", "value": 7, "datasetId": "urn:ngsi-ld:Dataset:c"},
        {"type": "Property", "value": 8}
    ]});
    assert_no_content(
        s.send(
            Method::PUT,
            &format!("/entities/{id}"),
            "application/json",
            &replacement,
        )
        .await,
    )
    .await;
    assert_eq!(
        instances(&s.entity(id, "").await["speed"]),
        vec![
            json!({"type": "Property", "value": 8}),
            json!({"type": "Property", "value": 7, "datasetId": "urn:ngsi-ld:Dataset:c"}),
        ]
    );
}
