//! Black-box tests of the batch entity operations of GS CIM 009 V1.9.1: create (5.6.7), upsert
//! (5.6.8), update (5.6.9), delete (5.6.10) and merge (5.6.20) over /entityOperations/* (6.14–6.18,
//! 6.31), with mixed good and bad entities. Each entity succeeds or fails on its own: 201/204 when
//! all succeed, else 207 with a BatchOperationResult (5.2.16) of per-entity BatchEntityErrors
//! (5.2.17). Every outcome is read back.

use crate::common;

use common::{
    assert_http_error, assert_no_content, assert_problem_one_of, assert_status, link, read,
    writing_transactions, ContextServer, TestServer,
};
use reqwest::Method;
use serde_json::{json, Value};

const ERRORS: &str = "https://uri.etsi.org/ngsi-ld/errors/";

fn room(n: &str, attrs: Value) -> Value {
    let mut e = json!({"id": format!("urn:ngsi-ld:Room:{n}"), "type": "Room"});
    for (k, v) in attrs.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

fn id(n: &str) -> String {
    format!("urn:ngsi-ld:Room:{n}")
}

fn prop(v: Value) -> Value {
    json!({"type": "Property", "value": v})
}

async fn batch(s: &TestServer, op: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    read(
        s.send(
            Method::POST,
            &format!("/entityOperations/{op}"),
            "application/json",
            body,
        )
        .await,
    )
    .await
}

/// A BatchOperationResult as (success ids, [(entity id, error type, status)]), after checking its
/// shape.
fn outcome(body: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let success = body["success"]
        .as_array()
        .unwrap_or_else(|| panic!("a success array: {body}"))
        .iter()
        .map(|v| v.as_str().expect("success lists ids").to_string())
        .collect();
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("an errors array: {body}"))
        .iter()
        .map(|e| {
            let kind = e["error"]["type"]
                .as_str()
                .unwrap_or_else(|| panic!("a ProblemDetails with a type: {e}"));
            assert!(
                e["error"]["detail"].as_str().is_some_and(|d| !d.is_empty())
                    || e["error"]["title"].as_str().is_some_and(|d| !d.is_empty()),
                "the error says what is wrong: {e}"
            );
            (
                e["entityId"].as_str().unwrap_or_default().to_string(),
                kind.strip_prefix(ERRORS).unwrap_or(kind).to_string(),
            )
        })
        .collect();
    (success, errors)
}

fn ids_array(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("an array of ids: {body}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

async fn create_one(s: &TestServer, e: &Value) {
    let r = s.create(e).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

// ------------------------------------------------------------------------------------------------
// create
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn create_of_good_entities_answers_201_with_their_ids() {
    let s = TestServer::start().await;
    let entities: Vec<Value> = (1..=5)
        .map(|i| {
            room(
                &format!("C{i}"),
                json!({"temperature": {"type": "Property", "value": 20 + i, "unitCode": "CEL"},
                       "inBuilding": {"type": "Relationship", "object": "urn:ngsi-ld:Building:B1"}}),
            )
        })
        .collect();
    let (status, headers, body) = batch(&s, "create", &Value::Array(entities.clone())).await;
    assert_eq!(status, 201, "{body}");
    assert!(headers["Content-Type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        ids_array(&body),
        (1..=5).map(|i| id(&format!("C{i}"))).collect::<Vec<_>>()
    );
    for e in &entities {
        assert_eq!(&s.entity(e["id"].as_str().unwrap(), "").await, e);
    }
}

#[actix_web::test]
async fn create_reports_each_entity_and_applies_none_by_halves() {
    let s = TestServer::start().await;
    let existing = room("X", json!({"temperature": prop(json!(18))}));
    create_one(&s, &existing).await;

    let good_a = room("A", json!({"temperature": prop(json!(21))}));
    let good_c = room("C", json!({"name": prop(json!("kitchen"))}));
    let clash = room("X", json!({"temperature": prop(json!(99))}));
    // one good and one bad attribute: the whole entity is refused
    let half_bad = room(
        "B",
        json!({"temperature": prop(json!(22)), "humidity": {"type": "Property"}}),
    );
    let bad_geo = room(
        "G",
        json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [500, 0]}}}),
    );
    let no_id = json!({"type": "Room", "temperature": prop(json!(1))});
    let bad_id = json!({"id": "not a uri", "type": "Room"});
    let no_type = json!({"id": id("T")});
    let twice = room("A", json!({"temperature": prop(json!(0))}));
    let body = json!([good_a, clash, half_bad, bad_geo, no_id, bad_id, no_type, good_c, twice]);

    let (status, _, result) = batch(&s, "create", &body).await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert_eq!(success, vec![id("A"), id("C")]);
    assert_eq!(errors.len(), 7, "{result}");
    let kind_of = |entity: &str| -> Vec<&str> {
        errors
            .iter()
            .filter(|(e, _)| e == entity)
            .map(|(_, k)| k.as_str())
            .collect()
    };
    assert_eq!(kind_of(&id("X")), vec!["AlreadyExists"]);
    assert_eq!(
        kind_of(&id("A")),
        vec!["AlreadyExists"],
        "the second A of the batch"
    );
    assert_eq!(kind_of(&id("B")), vec!["BadRequestData"]);
    assert_eq!(kind_of(&id("G")), vec!["BadRequestData"]);
    assert_eq!(kind_of(&id("T")), vec!["BadRequestData"]);
    assert_eq!(kind_of("not a uri"), vec!["BadRequestData"]);

    // read back: the good ones as sent, the existing one untouched, the bad ones absent
    assert_eq!(s.entity(&id("A"), "").await, good_a);
    assert_eq!(s.entity(&id("C"), "").await, good_c);
    assert_eq!(s.entity(&id("X"), "").await, existing);
    for n in ["B", "G", "T"] {
        s.assert_absent(&id(n)).await;
    }
}

#[actix_web::test]
async fn create_where_every_entity_fails_is_still_207() {
    let s = TestServer::start().await;
    create_one(&s, &room("X", json!({}))).await;
    let (status, _, result) = batch(
        &s,
        "create",
        &json!([
            room("X", json!({})),
            room("Y", json!({"bad": {"type": "Relationship"}}))
        ]),
    )
    .await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert!(success.is_empty());
    assert_eq!(
        errors,
        vec![
            (id("X"), "AlreadyExists".to_string()),
            (id("Y"), "BadRequestData".to_string())
        ]
    );
    s.assert_absent(&id("Y")).await;
}

// ------------------------------------------------------------------------------------------------
// upsert
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn upsert_replaces_existing_entities_by_default() {
    let s = TestServer::start().await;
    create_one(
        &s,
        &room(
            "U1",
            json!({"temperature": prop(json!(18)), "name": prop(json!("hall"))}),
        ),
    )
    .await;

    // one existing, one new: 201 with only the created id
    let u1 = room("U1", json!({"humidity": prop(json!(40))}));
    let u2 = room("U2", json!({"temperature": prop(json!(25))}));
    let (status, _, body) = batch(&s, "upsert", &json!([u1, u2])).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids_array(&body), vec![id("U2")]);
    assert_eq!(
        s.entity(&id("U1"), "").await,
        u1,
        "replaced: the old attributes are gone"
    );
    assert_eq!(s.entity(&id("U2"), "").await, u2);

    // all existing: 204, and options=replace says the same
    let u1 = room("U1", json!({"name": prop(json!("lobby"))}));
    let u2 = room("U2", json!({"occupied": prop(json!(true))}));
    assert_no_content(
        s.send(
            Method::POST,
            "/entityOperations/upsert",
            "application/json",
            &json!([u1, u2]),
        )
        .await,
    )
    .await;
    assert_eq!(s.entity(&id("U1"), "").await, u1);
    assert_eq!(s.entity(&id("U2"), "").await, u2);
    let u1 = room("U1", json!({"temperature": prop(json!(1))}));
    assert_no_content(
        s.send(
            Method::POST,
            "/entityOperations/upsert?options=replace",
            "application/json",
            &json!([u1]),
        )
        .await,
    )
    .await;
    assert_eq!(s.entity(&id("U1"), "").await, u1);
}

#[actix_web::test]
async fn upsert_with_options_update_keeps_other_attributes() {
    let s = TestServer::start().await;
    create_one(
        &s,
        &room(
            "V1",
            json!({"temperature": prop(json!(18)), "name": prop(json!("hall"))}),
        ),
    )
    .await;
    let (status, _, body) = read(
        s.send(
            Method::POST,
            "/entityOperations/upsert?options=update",
            "application/json",
            &json!([
                room(
                    "V1",
                    json!({"temperature": prop(json!(19)), "humidity": prop(json!(40))})
                ),
                room("V2", json!({"name": prop(json!("new"))}))
            ]),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids_array(&body), vec![id("V2")]);
    assert_eq!(
        s.entity(&id("V1"), "").await,
        room(
            "V1",
            json!({"temperature": prop(json!(19)), "name": prop(json!("hall")), "humidity": prop(json!(40))})
        )
    );
    // an unknown option is refused
    let r = s
        .send(
            Method::POST,
            "/entityOperations/upsert?options=merge",
            "application/json",
            &json!([room("V1", json!({}))]),
        )
        .await;
    assert_problem_one_of(r, 400, &["InvalidRequest", "BadRequestData"]).await;
}

#[actix_web::test]
async fn upsert_reports_bad_entities_in_a_207() {
    let s = TestServer::start().await;
    let old = room("W1", json!({"temperature": prop(json!(10))}));
    create_one(&s, &old).await;
    let w1 = room("W1", json!({"temperature": prop(json!(11))}));
    let w2 = room("W2", json!({"temperature": prop(json!(12))}));
    let bad_new = room("W3", json!({"temperature": prop(Value::Null)}));
    let bad_old = room(
        "W1",
        json!({"temperature": prop(json!(13)), "humidity": {"type": "Property"}}),
    );
    let (status, _, result) = batch(&s, "upsert", &json!([w1, bad_new, w2, bad_old])).await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert_eq!(success, vec![id("W1"), id("W2")]);
    assert_eq!(
        errors,
        vec![
            (id("W3"), "BadRequestData".to_string()),
            (id("W1"), "BadRequestData".to_string())
        ]
    );
    // the refused replacement of W1 left the accepted one in place
    assert_eq!(s.entity(&id("W1"), "").await, w1);
    assert_eq!(s.entity(&id("W2"), "").await, w2);
    s.assert_absent(&id("W3")).await;
}

// ------------------------------------------------------------------------------------------------
// update
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn update_appends_and_overwrites_and_reports_unknown_entities() {
    let s = TestServer::start().await;
    create_one(
        &s,
        &room(
            "P1",
            json!({"temperature": prop(json!(18)), "name": prop(json!("a"))}),
        ),
    )
    .await;
    create_one(&s, &room("P2", json!({"temperature": prop(json!(18))}))).await;

    let (status, _, result) = batch(
        &s,
        "update",
        &json!([
            room(
                "P1",
                json!({"temperature": prop(json!(30)), "humidity": prop(json!(50))})
            ),
            room("P9", json!({"temperature": prop(json!(30))})),
            room("P2", json!({"humidity": {"type": "Property"}}))
        ]),
    )
    .await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert_eq!(success, vec![id("P1")]);
    assert_eq!(
        errors,
        vec![
            (id("P9"), "ResourceNotFound".to_string()),
            (id("P2"), "BadRequestData".to_string())
        ]
    );
    assert_eq!(
        s.entity(&id("P1"), "").await,
        room(
            "P1",
            json!({"temperature": prop(json!(30)), "name": prop(json!("a")), "humidity": prop(json!(50))})
        )
    );
    assert_eq!(
        s.entity(&id("P2"), "").await,
        room("P2", json!({"temperature": prop(json!(18))}))
    );
    s.assert_absent(&id("P9")).await;

    // all known: 204
    assert_no_content(
        s.send(
            Method::POST,
            "/entityOperations/update",
            "application/json",
            &json!([
                room("P1", json!({"name": prop(json!("b"))})),
                room("P2", json!({"name": prop(json!("c"))}))
            ]),
        )
        .await,
    )
    .await;
    assert_eq!(s.entity(&id("P1"), "").await["name"]["value"], "b");
    assert_eq!(s.entity(&id("P2"), "").await["name"]["value"], "c");
}

#[actix_web::test]
async fn update_with_no_overwrite_keeps_existing_attributes() {
    let s = TestServer::start().await;
    create_one(&s, &room("N1", json!({"temperature": prop(json!(18))}))).await;
    create_one(&s, &room("N2", json!({"name": prop(json!("x"))}))).await;
    let (status, _, result) = read(
        s.send(
            Method::POST,
            "/entityOperations/update?options=noOverwrite",
            "application/json",
            &json!([
                room(
                    "N1",
                    json!({"temperature": prop(json!(99)), "humidity": prop(json!(40))})
                ),
                room("N2", json!({"temperature": prop(json!(5))}))
            ]),
        )
        .await,
    )
    .await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert_eq!(success, vec![id("N2")]);
    assert_eq!(errors.len(), 1, "{result}");
    assert_eq!(errors[0].0, id("N1"));
    // the existing value stays; the new attribute is appended (5.6.3)
    assert_eq!(
        s.entity(&id("N1"), "").await,
        room(
            "N1",
            json!({"temperature": prop(json!(18)), "humidity": prop(json!(40))})
        )
    );
    assert_eq!(
        s.entity(&id("N2"), "").await,
        room(
            "N2",
            json!({"name": prop(json!("x")), "temperature": prop(json!(5))})
        )
    );
    // nothing in conflict: 204
    assert_no_content(
        s.send(
            Method::POST,
            "/entityOperations/update?options=noOverwrite",
            "application/json",
            &json!([room("N2", json!({"pressure": prop(json!(1013))}))]),
        )
        .await,
    )
    .await;
}

// ------------------------------------------------------------------------------------------------
// merge
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn merge_patches_each_entity_and_reports_unknown_ones() {
    let s = TestServer::start().await;
    create_one(
        &s,
        &room(
            "M1",
            json!({
                "temperature": {"type": "Property", "value": 18, "unitCode": "CEL"},
                "name": prop(json!("hall")),
                "obsolete": prop(json!(1))
            }),
        ),
    )
    .await;
    create_one(&s, &room("M2", json!({"name": prop(json!("m2"))}))).await;
    let (status, _, result) = batch(
        &s,
        "merge",
        &json!([
            room("M1", json!({
                "temperature": {"type": "Property", "value": 21},
                "obsolete": {"type": "Property", "value": "urn:ngsi-ld:null"},
                "humidity": prop(json!(45))
            })),
            room("M7", json!({"name": prop(json!("nobody"))})),
            room("M2", json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1]}}}))
        ]),
    )
    .await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert_eq!(success, vec![id("M1")]);
    assert_eq!(
        errors,
        vec![
            (id("M7"), "ResourceNotFound".to_string()),
            (id("M2"), "BadRequestData".to_string())
        ]
    );
    assert_eq!(
        s.entity(&id("M1"), "").await,
        room(
            "M1",
            json!({
                "temperature": {"type": "Property", "value": 21, "unitCode": "CEL"},
                "name": prop(json!("hall")),
                "humidity": prop(json!(45))
            })
        ),
        "merged: value replaced, unitCode kept, Null deleted, new attribute added, others untouched"
    );
    assert_eq!(
        s.entity(&id("M2"), "").await,
        room("M2", json!({"name": prop(json!("m2"))}))
    );
    s.assert_absent(&id("M7")).await;

    assert_no_content(
        s.send(
            Method::POST,
            "/entityOperations/merge",
            "application/json",
            &json!([
                room("M1", json!({"name": prop(json!("lobby"))})),
                room("M2", json!({"name": prop(json!("z"))}))
            ]),
        )
        .await,
    )
    .await;
    assert_eq!(s.entity(&id("M1"), "").await["name"]["value"], "lobby");
    assert_eq!(s.entity(&id("M2"), "").await["name"]["value"], "z");
}

// ------------------------------------------------------------------------------------------------
// delete
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn delete_removes_the_listed_entities_and_reports_unknown_ids() {
    let s = TestServer::start().await;
    for n in ["D1", "D2", "D3"] {
        create_one(&s, &room(n, json!({}))).await;
    }
    let (status, _, result) = batch(&s, "delete", &json!([id("D1"), id("D404"), id("D2")])).await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert_eq!(success, vec![id("D1"), id("D2")]);
    assert_eq!(errors, vec![(id("D404"), "ResourceNotFound".to_string())]);
    let status_code = result["errors"][0]["error"]["status"].clone();
    assert!(
        status_code.is_null() || status_code == 404,
        "the ProblemDetails status, if given, is 404: {result}"
    );
    s.assert_absent(&id("D1")).await;
    s.assert_absent(&id("D2")).await;
    assert_eq!(s.entity(&id("D3"), "").await, room("D3", json!({})));

    // all known: 204
    assert_no_content(
        s.send(
            Method::POST,
            "/entityOperations/delete",
            "application/json",
            &json!([id("D3")]),
        )
        .await,
    )
    .await;
    s.assert_absent(&id("D3")).await;

    // all unknown: 207 with only errors
    let (status, _, result) = batch(&s, "delete", &json!([id("D1"), id("D3")])).await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert!(success.is_empty());
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|(_, k)| k == "ResourceNotFound"));

    // an id that is not a URI is an error entry of its own
    create_one(&s, &room("D5", json!({}))).await;
    let (status, _, result) = batch(&s, "delete", &json!(["not a uri", id("D5")])).await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert_eq!(success, vec![id("D5")]);
    assert_eq!(
        errors,
        vec![("not a uri".to_string(), "BadRequestData".to_string())]
    );
}

#[actix_web::test]
async fn a_null_in_a_batch_delete_refuses_the_whole_request() {
    // The delete body is an array of entity ids (6.17.3.1); with a null in it the array is not a
    // valid list of ids (BadRequestData, 5.6.10.4), as create, upsert, update and merge treat a null
    // entity. Nothing may be deleted.
    let s = TestServer::start().await;
    create_one(&s, &room("DN", json!({}))).await;
    for body in [json!([id("DN"), null]), json!([null]), json!([id("DN"), 7])] {
        let r = s
            .send(
                Method::POST,
                "/entityOperations/delete",
                "application/json",
                &body,
            )
            .await;
        assert_problem_one_of(r, 400, &["BadRequestData", "InvalidRequest"]).await;
        assert_eq!(
            s.entity(&id("DN"), "").await,
            room("DN", json!({})),
            "{body}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Malformed batches, contexts, limits, tenants
// ------------------------------------------------------------------------------------------------

const OPS: [&str; 5] = ["create", "upsert", "update", "merge", "delete"];

#[actix_web::test]
async fn malformed_batches_are_refused_whole() {
    let s = TestServer::start().await;
    for op in OPS {
        let good = if op == "delete" {
            json!(id("Z1"))
        } else {
            room("Z1", json!({"temperature": prop(json!(1))}))
        };
        if op == "update" || op == "merge" || op == "delete" {
            // so that the good element would succeed
            let _ = s
                .create(&room("Z1", json!({"temperature": prop(json!(0))})))
                .await;
        }
        let before = s.get_json(&format!("/entities/{}", id("Z1"))).await;
        let mut bodies = vec![
            json!([]),
            json!({"id": id("Z1"), "type": "Room"}),
            json!("urn:ngsi-ld:Room:Z1"),
        ];
        if op != "delete" {
            // (delete: see a_null_in_a_batch_delete_refuses_the_whole_request)
            bodies.push(json!([good.clone(), null]));
            bodies.push(json!([null]));
            bodies.push(json!([good.clone(), 7]));
        }
        for body in bodies {
            let r = s
                .send(
                    Method::POST,
                    &format!("/entityOperations/{op}"),
                    "application/json",
                    &body,
                )
                .await;
            assert_problem_one_of(r, 400, &["BadRequestData", "InvalidRequest"]).await;
            assert_eq!(
                s.get_json(&format!("/entities/{}", id("Z1"))).await,
                before,
                "{op} {body}: nothing was applied"
            );
        }
        // not JSON at all
        let r = s
            .req(Method::POST, &format!("/entityOperations/{op}"))
            .header("Content-Type", "application/json")
            .body("[{\"id\": ")
            .send()
            .await
            .unwrap();
        assert_problem_one_of(r, 400, &["InvalidRequest"]).await;
        // no body
        let r = s
            .req(Method::POST, &format!("/entityOperations/{op}"))
            .header("Content-Type", "application/json")
            .body("")
            .send()
            .await
            .unwrap();
        assert_problem_one_of(r, 400, &["InvalidRequest", "BadRequestData"]).await;
        // not JSON media type
        let r = s
            .send(
                Method::POST,
                &format!("/entityOperations/{op}"),
                "text/plain",
                &json!([good]),
            )
            .await;
        assert_http_error(r, 415).await;
        // unknown query parameter
        let r = s
            .send(
                Method::POST,
                &format!("/entityOperations/{op}?colour=red"),
                "application/json",
                &json!([good]),
            )
            .await;
        assert_problem_one_of(r, 400, &["InvalidRequest"]).await;
        if op != "delete" {
            let _ = s
                .req(Method::DELETE, &format!("/entities/{}", id("Z1")))
                .send()
                .await;
        }
    }
}

#[actix_web::test]
async fn json_ld_entities_each_carry_their_own_context() {
    let s = TestServer::start().await;
    let core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld";
    let a = json!({
        "@context": [{"temp": "https://example.org/a/temperature", "Sensor": "https://example.org/a/Sensor"}, core],
        "id": "urn:ngsi-ld:Sensor:LD1",
        "type": "Sensor",
        "temp": prop(json!(1))
    });
    let b = json!({
        "@context": [{"temp": "https://example.org/b/temperature", "Sensor": "https://example.org/b/Sensor"}, core],
        "id": "urn:ngsi-ld:Sensor:LD2",
        "type": "Sensor",
        "temp": prop(json!(2))
    });
    let r = s
        .send_ld(Method::POST, "/entityOperations/create", &json!([a, b]))
        .await;
    let (status, _, body) = read(r).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        ids_array(&body),
        vec!["urn:ngsi-ld:Sensor:LD1", "urn:ngsi-ld:Sensor:LD2"]
    );
    // read back without a context: full IRIs, each from its own entity's context
    assert_eq!(
        s.entity("urn:ngsi-ld:Sensor:LD1", "").await,
        json!({"id": "urn:ngsi-ld:Sensor:LD1", "type": "https://example.org/a/Sensor",
               "https://example.org/a/temperature": prop(json!(1))})
    );
    assert_eq!(
        s.entity("urn:ngsi-ld:Sensor:LD2", "").await,
        json!({"id": "urn:ngsi-ld:Sensor:LD2", "type": "https://example.org/b/Sensor",
               "https://example.org/b/temperature": prop(json!(2))})
    );
    // the query by full type IRI finds only its own
    let (status, body) = s
        .get_json("/entities?type=https%3A%2F%2Fexample.org%2Fb%2FSensor")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["id"], "urn:ngsi-ld:Sensor:LD2");

    // upsert in ld+json, one entity with an inline context and one with the core context only
    let c = json!({
        "@context": core,
        "id": "urn:ngsi-ld:Sensor:LD3",
        "type": "Sensor",
        "temp": prop(json!(3))
    });
    let a2 = json!({
        "@context": [{"temp": "https://example.org/a/temperature", "Sensor": "https://example.org/a/Sensor"}, core],
        "id": "urn:ngsi-ld:Sensor:LD1",
        "type": "Sensor",
        "temp": prop(json!(10))
    });
    let r = s
        .send_ld(Method::POST, "/entityOperations/upsert", &json!([a2, c]))
        .await;
    let (status, _, body) = read(r).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids_array(&body), vec!["urn:ngsi-ld:Sensor:LD3"]);
    assert_eq!(
        s.entity("urn:ngsi-ld:Sensor:LD1", "").await["https://example.org/a/temperature"]["value"],
        10
    );
    assert_eq!(
        s.entity("urn:ngsi-ld:Sensor:LD3", "").await,
        json!({"id": "urn:ngsi-ld:Sensor:LD3", "type": "Sensor", "temp": prop(json!(3))})
    );
}

#[actix_web::test]
async fn a_link_header_context_applies_to_every_entity_of_the_batch() {
    let ctx = ContextServer::start();
    ctx.serve(
        "/rooms.jsonld",
        &json!({"@context": {"temp": "https://example.org/rooms/temperature", "Room": "https://example.org/rooms/Room"}}),
    );
    let s = TestServer::start().await;
    let url = ctx.url("/rooms.jsonld");
    let r = s
        .send_linked(
            Method::POST,
            "/entityOperations/create",
            &url,
            &json!([
                {"id": id("L1"), "type": "Room", "temp": prop(json!(1))},
                {"id": id("L2"), "type": "Room", "temp": prop(json!(2))}
            ]),
        )
        .await;
    let (status, _, body) = read(r).await;
    assert_eq!(status, 201, "{body}");
    for (n, v) in [("L1", 1), ("L2", 2)] {
        let e = s.entity(&id(n), "").await;
        assert_eq!(e["type"], "https://example.org/rooms/Room");
        assert_eq!(e["https://example.org/rooms/temperature"]["value"], v);
        let (status, _, e) = s
            .get_with(&format!("/entities/{}", id(n)), &[("Link", &link(&url))])
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            e,
            json!({"id": id(n), "type": "Room", "temp": prop(json!(v))})
        );
    }
    // an entity that carries an @context in an application/json batch is refused on its own
    let r = s
        .send(
            Method::POST,
            "/entityOperations/create",
            "application/json",
            &json!([
                {"id": id("L3"), "type": "Room"},
                {"@context": url, "id": id("L4"), "type": "Room"}
            ]),
        )
        .await;
    let (status, _, body) = read(r).await;
    assert!(status == 207 || status == 400, "{status}: {body}");
    s.assert_absent(&id("L4")).await;
}

#[actix_web::test]
async fn a_batch_larger_than_max_batch_is_413_and_applies_nothing() {
    let s = TestServer::start_with(|st| st.max_batch = 3).await;
    let four: Vec<Value> = (1..=4).map(|i| room(&format!("Q{i}"), json!({}))).collect();
    let four_ids: Vec<String> = (1..=4).map(|i| id(&format!("Q{i}"))).collect();
    for op in OPS {
        let body = if op == "delete" {
            json!(four_ids)
        } else {
            json!(four)
        };
        let r = s
            .send(
                Method::POST,
                &format!("/entityOperations/{op}"),
                "application/json",
                &body,
            )
            .await;
        assert_http_error(r, 413).await;
        for i in &four_ids {
            s.assert_absent(i).await;
        }
    }
    // exactly max_batch is fine
    let (status, _, body) = batch(&s, "create", &json!(four[..3])).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids_array(&body), four_ids[..3].to_vec());
    let (status, _, _) = batch(&s, "delete", &json!(four_ids[..3])).await;
    assert_eq!(status, 204);
}

#[actix_web::test]
async fn batches_write_only_into_their_tenant() {
    let s = TestServer::start().await;
    let post = |op: &str, tenant: &str, body: Value| {
        s.req(Method::POST, &format!("/entityOperations/{op}"))
            .header("Content-Type", "application/json")
            .header("NGSILD-Tenant", tenant)
            .body(body.to_string())
            .send()
    };
    let e = room("TN", json!({"temperature": prop(json!(5))}));
    let (status, headers, body) = read(post("create", "acme", json!([e])).await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["NGSILD-Tenant"], "acme");
    s.assert_absent(&id("TN")).await;
    // the same id in the default tenant is a different entity
    let (status, _, body) = batch(&s, "create", &json!([room("TN", json!({}))])).await;
    assert_eq!(status, 201, "{body}");
    // delete in acme leaves the default tenant's
    let (status, _, body) = read(post("delete", "acme", json!([id("TN")])).await.unwrap()).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(s.entity(&id("TN"), "").await, room("TN", json!({})));
    // an update in a tenant that does not exist changes nothing anywhere
    let (status, _, body) = read(
        post(
            "update",
            "nowhere",
            json!([room("TN", json!({"x": prop(json!(1))}))]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert!(status == 207 || status == 404, "{status}: {body}");
    assert_eq!(s.entity(&id("TN"), "").await, room("TN", json!({})));
}

#[actix_web::test]
async fn a_batch_is_written_in_one_transaction() {
    let s = TestServer::start().await;
    let batch: Vec<Value> = (0..60)
        .map(|i| {
            room(
                &format!("T{i}"),
                json!({"temperature": prop(json!(i)), "name": prop(json!(format!("room {i}")))}),
            )
        })
        .collect();
    let r = s
        .send(
            Method::POST,
            "/entityOperations/upsert",
            "application/json",
            &json!(batch),
        )
        .await;
    assert_eq!(r.status(), 201);
    for i in [0, 31, 59] {
        assert_eq!(
            s.entity(&id(&format!("T{i}")), "").await["temperature"]["value"],
            i
        );
    }
    // Upserting them again (update) with one bad entity in the middle: the others are written,
    // again together.
    let mut again: Vec<Value> = (0..60)
        .map(|i| {
            room(
                &format!("T{i}"),
                json!({"temperature": prop(json!(i + 100))}),
            )
        })
        .collect();
    again[30] = json!({"id": id("T30"), "temperature": prop(json!(1))}); // no type
    let (status, _, result) = read(
        s.send(
            Method::POST,
            "/entityOperations/upsert?options=update",
            "application/json",
            &json!(again),
        )
        .await,
    )
    .await;
    assert_eq!(status, 207, "{result}");
    let (success, errors) = outcome(&result);
    assert_eq!(success.len(), 59);
    assert_eq!(errors, vec![(id("T30"), "BadRequestData".to_string())]);
    assert_eq!(s.entity(&id("T30"), "").await["temperature"]["value"], 30);
    assert_eq!(s.entity(&id("T59"), "").await["temperature"]["value"], 159);
    if let Some(url) = &s.database_url {
        // Two batches, two transactions, whatever the number of entities and attributes.
        // T30 was last written by the first batch, the others by the second.
        assert_eq!(writing_transactions(url, "entities").await, 2);
        assert_eq!(writing_transactions(url, "attribute_instances").await, 2);
    }
}

#[actix_web::test]
async fn a_json_null_value_in_a_batch_update_or_merge_fails_that_entity_with_bad_request_data() {
    // JSON null is not the NGSI-LD Null (5.2.1): the entity fails, the others are written.
    let s = TestServer::start().await;
    for n in ["JN1", "JN2"] {
        assert_status(
            s.create(&room(n, json!({"name": prop(json!("a"))}))).await,
            201,
        )
        .await;
    }
    for op in ["update", "merge"] {
        let body = json!([
            {"id": id("JN1"), "type": "Room", "name": {"type": "Property", "value": null}},
            {"id": id("JN2"), "type": "Room", "name": prop(json!(op))},
        ]);
        let (status, _, result) = batch(&s, op, &body).await;
        assert_eq!(status, 207, "{op}: {result}");
        assert_eq!(result["success"], json!([id("JN2")]), "{op}: {result}");
        assert_eq!(result["errors"][0]["entityId"], id("JN1"), "{op}: {result}");
        assert_eq!(
            result["errors"][0]["error"]["type"],
            "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
            "{op}: {result}"
        );
        assert_eq!(s.entity(&id("JN1"), "").await["name"]["value"], "a");
        assert_eq!(s.entity(&id("JN2"), "").await["name"]["value"], op);
    }
}
