//! Temporal history through the HTTP API: every write over /entities and /entityOperations records
//! what it did to each attribute instance, read back from the store (`Store::history`) of the
//! broker behind the test server. Runs on the embedded store, and on PostgreSQL with
//! `TWINLINK_TEST_STORE=postgres`, where the scenario also runs on an embedded store and both
//! sequences must agree.

use crate::common;

use chrono::{DateTime, Utc};
use common::{assert_no_content, assert_status, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::ops::Bound;
use twinlink::store::history::{HistoryQuery, InstanceChange, TimeProperty};
use twinlink::store::DEFAULT_TENANT;

const VOCAB: &str = "https://uri.etsi.org/ngsi-ld/default-context/";
const CORE: &str = "https://uri.etsi.org/ngsi-ld/";
const DS_B: &str = "urn:ngsi-ld:Dataset:b";

type AppState = actix_web::web::Data<twinlink::service::AppState>;

/// The short name of an attribute IRI of the default or core context.
fn short(attr: &str) -> String {
    attr.trim_start_matches(VOCAB)
        .trim_start_matches(CORE)
        .to_string()
}

/// A record without what differs between runs and stores (instance id, timestamps): attribute
/// (short name; None for the entity), datasetId, kind, value member (None when deleted and for
/// the entity), whether it records a deletion.
type Norm = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Value>,
    bool,
);

fn norm(records: &[InstanceChange]) -> Vec<Norm> {
    records
        .iter()
        .map(|r| {
            (
                r.attr.as_deref().map(short),
                r.dataset_id.clone(),
                r.kind.map(|k| k.name().to_string()),
                r.value
                    .as_ref()
                    .filter(|_| r.attr.is_some())
                    .map(|v| v.json()["value"].clone()),
                r.deleted_at.is_some(),
            )
        })
        .collect()
}

fn rec(attr: &str, ds: Option<&str>, value: Value) -> Norm {
    (
        Some(attr.to_string()),
        ds.map(str::to_string),
        Some("Property".into()),
        Some(value),
        false,
    )
}

fn gone(attr: &str, ds: Option<&str>) -> Norm {
    (
        Some(attr.to_string()),
        ds.map(str::to_string),
        Some("Property".into()),
        None,
        true,
    )
}

fn entity_gone() -> Norm {
    (None, None, None, None, true)
}

async fn history(broker: &AppState, id: &str, query: HistoryQuery) -> Vec<InstanceChange> {
    broker
        .store()
        .history(DEFAULT_TENANT, id, &query)
        .await
        .expect("history reads")
}

async fn all(broker: &AppState, id: &str) -> Vec<InstanceChange> {
    history(broker, id, HistoryQuery::default()).await
}

fn attr_query(attr: &str) -> HistoryQuery {
    HistoryQuery {
        attr: Some(format!("{VOCAB}{attr}")),
        ..HistoryQuery::default()
    }
}

async fn json_req(s: &TestServer, method: Method, path: &str, body: Value) -> reqwest::Response {
    s.send(method, path, "application/json", &body).await
}

const ROOM: &str = "urn:ngsi-ld:Room:h1";

fn room() -> Value {
    json!({
        "id": ROOM,
        "type": "Room",
        "temperature": [
            {"type": "Property", "value": 20, "observedAt": "2024-05-01T10:00:00Z"},
            {"type": "Property", "value": 1, "datasetId": DS_B}
        ],
        "name": {"type": "Property", "value": "kitchen"}
    })
}

#[actix_web::test]
async fn creation_and_updates_record_changed_instances_only() {
    let (s, broker) = TestServer::start_with_broker(|_| {}).await;
    assert_status(s.create(&room()).await, 201).await;
    let created = all(&broker, ROOM).await;
    assert_eq!(
        norm(&created),
        vec![
            rec("name", None, json!("kitchen")),
            rec("temperature", None, json!(20)),
            rec("temperature", Some(DS_B), json!(1)),
        ]
    );
    assert!(created
        .iter()
        .all(|r| r.instance_id.starts_with("urn:ngsi-ld:") && r.deleted_at.is_none()));
    assert_eq!(created[1].num, Some(20.0));
    assert_eq!(
        created[1].observed_at,
        Some("2024-05-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap())
    );
    assert_eq!(created[0].num, None);

    // Update the default instance; `name` is rewritten with the same value: no record for it.
    let r = json_req(
        &s,
        Method::PATCH,
        &format!("/entities/{ROOM}/attrs"),
        json!({"temperature": {"type": "Property", "value": 21}, "name": {"type": "Property", "value": "kitchen"}}),
    )
    .await;
    assert_no_content(r).await;
    // Partial update of the datasetId instance only.
    let r = json_req(
        &s,
        Method::PATCH,
        &format!("/entities/{ROOM}/attrs/temperature"),
        json!({"value": 2, "datasetId": DS_B}),
    )
    .await;
    assert_no_content(r).await;

    let records = all(&broker, ROOM).await;
    assert_eq!(
        norm(&records[3..]),
        vec![
            rec("temperature", None, json!(21)),
            rec("temperature", Some(DS_B), json!(2)),
        ]
    );
    let mut ids: Vec<_> = records.iter().map(|r| &r.instance_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every record has its own instance id");

    // One attribute, in time order; datasetIds are kept apart.
    let temperature = history(&broker, ROOM, attr_query("temperature")).await;
    assert_eq!(
        temperature.iter().map(|r| r.num).collect::<Vec<_>>(),
        vec![Some(20.0), Some(1.0), Some(21.0), Some(2.0)]
    );
    assert!(temperature
        .windows(2)
        .all(|w| w[0].modified_at <= w[1].modified_at));
    let default_only: Vec<_> = temperature
        .iter()
        .filter(|r| r.dataset_id.is_none())
        .map(|r| r.num)
        .collect();
    assert_eq!(default_only, vec![Some(20.0), Some(21.0)]);

    // lastN is per attribute; bounds select by the time property.
    let last = history(
        &broker,
        ROOM,
        HistoryQuery {
            last_n: Some(1),
            ..HistoryQuery::default()
        },
    )
    .await;
    assert_eq!(
        norm(&last),
        vec![
            rec("name", None, json!("kitchen")),
            rec("temperature", Some(DS_B), json!(2))
        ]
    );
    let later = history(
        &broker,
        ROOM,
        HistoryQuery {
            from: Bound::Excluded(created[0].modified_at),
            ..attr_query("temperature")
        },
    )
    .await;
    assert_eq!(later.len(), 2);
    let before = history(
        &broker,
        ROOM,
        HistoryQuery {
            to: Bound::Excluded(records[3].modified_at),
            ..HistoryQuery::default()
        },
    )
    .await;
    assert_eq!(norm(&before), norm(&created));
    let observed = history(
        &broker,
        ROOM,
        HistoryQuery {
            time_property: TimeProperty::ObservedAt,
            ..HistoryQuery::default()
        },
    )
    .await;
    assert_eq!(norm(&observed), vec![rec("temperature", None, json!(20))]);
    s.stop().await;
}

#[actix_web::test]
async fn deletions_of_instances_attributes_and_the_entity_are_recorded() {
    let (s, broker) = TestServer::start_with_broker(|_| {}).await;
    assert_status(s.create(&room()).await, 201).await;
    let r = s
        .req(
            Method::DELETE,
            &format!("/entities/{ROOM}/attrs/temperature?datasetId={DS_B}"),
        )
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let r = s
        .req(
            Method::DELETE,
            &format!("/entities/{ROOM}/attrs/temperature"),
        )
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let r = s
        .req(Method::DELETE, &format!("/entities/{ROOM}"))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;

    let records = all(&broker, ROOM).await;
    assert_eq!(
        norm(&records[3..]),
        vec![
            gone("temperature", Some(DS_B)),
            gone("temperature", None),
            entity_gone(),
            gone("name", None),
        ]
    );
    let entity = &records[5];
    assert_eq!(entity.deleted_at, Some(entity.modified_at));
    assert_eq!(
        entity.value.as_ref().unwrap().json()["types"],
        json!([format!("{VOCAB}Room")])
    );
    let deleted = history(
        &broker,
        ROOM,
        HistoryQuery {
            time_property: TimeProperty::DeletedAt,
            ..HistoryQuery::default()
        },
    )
    .await;
    assert_eq!(deleted.len(), 4);
    assert!(deleted.iter().all(|r| r.deleted_at == Some(r.modified_at)));
    s.stop().await;
}

#[actix_web::test]
async fn append_merge_and_replace_are_recorded() {
    let (s, broker) = TestServer::start_with_broker(|_| {}).await;
    assert_status(s.create(&room()).await, 201).await;
    let r = json_req(
        &s,
        Method::POST,
        &format!("/entities/{ROOM}/attrs"),
        json!({"humidity": {"type": "Property", "value": 40}}),
    )
    .await;
    assert_no_content(r).await;
    let r = json_req(
        &s,
        Method::PATCH,
        &format!("/entities/{ROOM}"),
        json!({"humidity": {"type": "Property", "value": 41, "unitCode": "P1"}, "name": {"type": "Property", "value": "kitchen"}}),
    )
    .await;
    assert_no_content(r).await;
    let r = json_req(
        &s,
        Method::PUT,
        &format!("/entities/{ROOM}"),
        json!({"type": "Room", "name": {"type": "Property", "value": "pantry"}, "humidity": {"type": "Property", "value": 41, "unitCode": "P1"}}),
    )
    .await;
    assert_no_content(r).await;
    let records = all(&broker, ROOM).await;
    assert_eq!(
        norm(&records[3..]),
        vec![
            rec("humidity", None, json!(40)),
            rec("humidity", None, json!(41)),
            rec("name", None, json!("pantry")),
            gone("temperature", None),
            gone("temperature", Some(DS_B)),
        ]
    );
    assert_eq!(records[4].value.as_ref().unwrap().json()["unit_code"], "P1");
    s.stop().await;
}

#[actix_web::test]
async fn batch_writes_record_every_entity() {
    let (s, broker) = TestServer::start_with_broker(|_| {}).await;
    let batch = |v: i64| -> Value {
        (0..5)
            .map(|n| {
                json!({
                    "id": format!("urn:ngsi-ld:Room:b{n}"),
                    "type": "Room",
                    "temperature": {"type": "Property", "value": if n < 2 { v } else { 0 }},
                    "name": {"type": "Property", "value": format!("room {n}")}
                })
            })
            .collect()
    };
    let r = json_req(&s, Method::POST, "/entityOperations/upsert", batch(1)).await;
    assert_status(r, 201).await;
    // Upserted again: only the two rooms whose temperature changed get a record.
    let r = json_req(&s, Method::POST, "/entityOperations/upsert", batch(2)).await;
    assert_no_content(r).await;
    let ids: Vec<String> = (0..5).map(|n| format!("urn:ngsi-ld:Room:b{n}")).collect();
    let r = json_req(&s, Method::POST, "/entityOperations/delete", json!(ids)).await;
    assert_no_content(r).await;
    for (n, id) in ids.iter().enumerate() {
        let mut expected = vec![
            rec("name", None, json!(format!("room {n}"))),
            rec("temperature", None, json!(if n < 2 { 1 } else { 0 })),
        ];
        if n < 2 {
            expected.push(rec("temperature", None, json!(2)));
        }
        expected.extend([entity_gone(), gone("name", None), gone("temperature", None)]);
        assert_eq!(norm(&all(&broker, id).await), expected, "history of {id}");
    }
    s.stop().await;
}

/// The same writes, in order, with one attribute of each interesting shape.
async fn scenario(s: &TestServer) {
    let id = "urn:ngsi-ld:Sensor:s1";
    let entity = json!({
        "id": id,
        "type": "Sensor",
        "temperature": {"type": "Property", "value": 20.5, "observedAt": "2024-05-01T10:00:00Z",
                        "accuracy": {"type": "Property", "value": 0.1}},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [8.5, 47.3]}},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:p1"},
        "tags": {"type": "ListProperty", "valueList": ["a", "b"]}
    });
    assert_status(s.create(&entity).await, 201).await;
    let steps = [
        (
            Method::PATCH,
            "/attrs",
            json!({"temperature": {"type": "Property", "value": 21, "observedAt": "2024-05-01T10:05:00Z"}}),
        ),
        (
            Method::PATCH,
            "/attrs/temperature",
            json!({"accuracy": {"type": "Property", "value": 0.2}}),
        ),
        (
            Method::POST,
            "/attrs",
            json!({"temperature": {"type": "Property", "value": 5, "datasetId": DS_B}}),
        ),
        (
            Method::PATCH,
            "",
            json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [8.6, 47.4]}}}),
        ),
        (
            Method::PUT,
            "/attrs/owner",
            json!({"type": "Relationship", "object": "urn:ngsi-ld:Person:p1"}),
        ),
    ];
    for (method, path, body) in steps {
        let r = json_req(s, method, &format!("/entities/{id}{path}"), body).await;
        assert_no_content(r).await;
    }
    let r = s
        .req(Method::DELETE, &format!("/entities/{id}/attrs/tags"))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let r = s
        .req(Method::DELETE, &format!("/entities/{id}"))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
}

/// A record with everything that must agree across stores: the normalised record, the whole
/// value without its system timestamps, the number and the observedAt.
type Comparable = (Norm, Option<Value>, Option<f64>, Option<DateTime<Utc>>);

fn comparable(records: &[InstanceChange]) -> Vec<Comparable> {
    fn strip(v: &mut Value) {
        if let Value::Object(m) = v {
            m.remove("created_at");
            m.remove("modified_at");
            m.values_mut().for_each(strip);
        }
    }
    norm(records)
        .into_iter()
        .zip(records)
        .map(|(n, r)| {
            let mut value = r.value.as_ref().map(|v| v.json());
            value.iter_mut().for_each(strip);
            (n, value, r.num, r.observed_at)
        })
        .collect()
}

#[actix_web::test]
async fn both_stores_record_the_same_sequence() {
    let (s, broker) = TestServer::start_with_broker(|_| {}).await;
    scenario(&s).await;
    let id = "urn:ngsi-ld:Sensor:s1";
    let records = all(&broker, id).await;
    let kinds: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.attr.as_deref().map(short),
                r.kind.map(|k| k.name()),
                r.deleted_at.is_some(),
            )
        })
        .collect();
    let a = |name: &str, kind: &'static str, deleted: bool| {
        (Some(name.to_string()), Some(kind), deleted)
    };
    assert_eq!(
        kinds,
        vec![
            // create (core `location` sorts after default-context names)
            a("owner", "Relationship", false),
            a("tags", "ListProperty", false),
            a("temperature", "Property", false),
            a("location", "GeoProperty", false),
            // PATCH attrs, partial update (sub-attribute), append with datasetId, merge
            a("temperature", "Property", false),
            a("temperature", "Property", false),
            a("temperature", "Property", false),
            a("location", "GeoProperty", false),
            // the identical PUT of owner recorded nothing; DELETE tags; DELETE entity
            a("tags", "ListProperty", true),
            (None, None, true),
            a("owner", "Relationship", true),
            a("temperature", "Property", true),
            a("temperature", "Property", true),
            a("location", "GeoProperty", true),
        ]
    );
    assert_eq!(
        records[2].value.as_ref().unwrap().json()["sub"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(records[6].dataset_id.as_deref(), Some(DS_B));
    assert_eq!(
        records[5].value.as_ref().unwrap().json()["sub"][format!("{VOCAB}accuracy")]["value"],
        json!(0.2)
    );

    if let Some(url) = broker.settings().database_url.clone() {
        // PostgreSQL keeps GeoProperty values as geometries.
        let client = common::sql_client(&url).await;
        let points: Vec<String> = client
            .query(
                "SELECT ST_AsText(location) FROM attribute_instances WHERE location IS NOT NULL ORDER BY modified_at",
                &[],
            )
            .await
            .expect("query")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(points, vec!["POINT(8.5 47.3)", "POINT(8.6 47.4)"]);

        // The same writes on the embedded store record the same history.
        let (e, embedded) = TestServer::start_with_broker(|s| s.database_url = None).await;
        scenario(&e).await;
        let other = all(&embedded, id).await;
        assert_eq!(comparable(&other), comparable(&records));
        e.stop().await;
    }
    s.stop().await;
}
