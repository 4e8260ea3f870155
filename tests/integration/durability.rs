//! Durability of acknowledged writes (design invariant 1): the real `twinlink` binary is started on
//! a data directory, written to, killed with SIGKILL (or stopped with SIGTERM), restarted on the same
//! directory, and everything acknowledged before must read back exactly.

use crate::common;

use common::process::Broker;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

fn building(n: usize) -> Value {
    json!({
        "id": format!("urn:ngsi-ld:Building:dur{n}"),
        "type": "Building",
        "name": {"type": "Property", "value": format!("Building {n}"), "unitCode": "X"},
        "height": {"type": "Property", "value": n * 10},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [n as f64, 45.0]}},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
        "speed": [
            {"type": "Property", "value": 1},
            {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"}
        ]
    })
}

/// Writes a known history and returns the state every entity must have afterwards (built by hand
/// from the requests, not read from the server), plus ids that must be gone.
async fn write_history(b: &Broker) -> (Vec<(Option<&'static str>, String, Value)>, Vec<String>) {
    let mut expected = Vec::new();
    for n in 0..6 {
        b.write(Method::POST, "/entities", None, &building(n), 201)
            .await;
    }
    // 0: update attrs (whole attribute replaced)
    b.write(
        Method::PATCH,
        "/entities/urn:ngsi-ld:Building:dur0/attrs",
        None,
        &json!({"name": {"type": "Property", "value": "renamed"}}),
        204,
    )
    .await;
    let mut e0 = building(0);
    e0["name"] = json!({"type": "Property", "value": "renamed"});
    expected.push((None, "urn:ngsi-ld:Building:dur0".to_string(), e0));
    // 1: partial update and a new dataset instance appended
    b.write(
        Method::PATCH,
        "/entities/urn:ngsi-ld:Building:dur1/attrs/height",
        None,
        &json!({"value": 111}),
        204,
    )
    .await;
    b.write(
        Method::POST,
        "/entities/urn:ngsi-ld:Building:dur1/attrs",
        None,
        &json!({"speed": {"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:b"}}),
        204,
    )
    .await;
    let mut e1 = building(1);
    e1["height"]["value"] = json!(111);
    e1["speed"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:b"}));
    expected.push((None, "urn:ngsi-ld:Building:dur1".to_string(), e1));
    // 2: delete an attribute instance and a whole attribute
    let (status, _) = b
        .send(
            Method::DELETE,
            "/entities/urn:ngsi-ld:Building:dur2/attrs/speed?datasetId=urn:ngsi-ld:Dataset:a",
            None,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = b
        .send(
            Method::DELETE,
            "/entities/urn:ngsi-ld:Building:dur2/attrs/owner",
            None,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let mut e2 = building(2);
    e2["speed"] = json!({"type": "Property", "value": 1});
    e2.as_object_mut().unwrap().remove("owner");
    expected.push((None, "urn:ngsi-ld:Building:dur2".to_string(), e2));
    // 3: deleted
    let (status, _) = b
        .send(
            Method::DELETE,
            "/entities/urn:ngsi-ld:Building:dur3",
            None,
            None,
        )
        .await;
    assert_eq!(status, 204);
    // 4: merge with a Null and a new type
    b.write(
        Method::PATCH,
        "/entities/urn:ngsi-ld:Building:dur4",
        None,
        &json!({"type": "Landmark", "height": "urn:ngsi-ld:null", "name": {"type": "Property", "value": "merged"}}),
        204,
    )
    .await;
    let mut e4 = building(4);
    e4["type"] = json!(["Building", "Landmark"]);
    e4.as_object_mut().unwrap().remove("height");
    e4["name"] = json!({"type": "Property", "value": "merged", "unitCode": "X"});
    expected.push((None, "urn:ngsi-ld:Building:dur4".to_string(), e4));
    // 5: replaced, then a burst of acknowledged updates; the last one must survive
    b.write(
        Method::PUT,
        "/entities/urn:ngsi-ld:Building:dur5",
        None,
        &json!({"type": "Building", "counter": {"type": "Property", "value": 0}}),
        204,
    )
    .await;
    for v in 1..=30 {
        b.write(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Building:dur5/attrs",
            None,
            &json!({"counter": {"type": "Property", "value": v}}),
            204,
        )
        .await;
    }
    expected.push((
        None,
        "urn:ngsi-ld:Building:dur5".to_string(),
        json!({"id": "urn:ngsi-ld:Building:dur5", "type": "Building", "counter": {"type": "Property", "value": 30}}),
    ));
    // a tenant
    let t = building(9);
    b.write(Method::POST, "/entities", Some("acme"), &t, 201)
        .await;
    expected.push((Some("acme"), "urn:ngsi-ld:Building:dur9".to_string(), t));
    (expected, vec!["urn:ngsi-ld:Building:dur3".to_string()])
}

fn sorted_instances(mut e: Value) -> Value {
    if let Some(Value::Array(list)) = e.get_mut("speed") {
        list.sort_by_key(|i| i["datasetId"].as_str().unwrap_or("").to_string());
    }
    if let Some(Value::Array(types)) = e.get_mut("type") {
        types.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    e
}

/// Reads every entity (normalized and with sysAttrs) for a later exact comparison.
async fn snapshot(
    b: &Broker,
    expected: &[(Option<&'static str>, String, Value)],
    gone: &[String],
) -> Vec<Value> {
    let mut out = Vec::new();
    for (tenant, id, want) in expected {
        let (status, got) = b.get(id, *tenant, "").await;
        assert_eq!(status, 200, "{id}: {got}");
        assert_eq!(
            sorted_instances(got),
            sorted_instances(want.clone()),
            "{id}"
        );
        let (status, sys) = b.get(id, *tenant, "?options=sysAttrs").await;
        assert_eq!(status, 200);
        out.push(sorted_instances(sys));
    }
    for id in gone {
        let (status, body) = b.get(id, None, "").await;
        assert_eq!(status, 404, "{id} stays deleted: {body}");
    }
    out
}

#[actix_web::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let database = common::fresh_database_url().await;
    let data = dir.path().join("data");
    let b = Broker::start(&data, &database).await;
    let (expected, gone) = write_history(&b).await;
    let before = snapshot(&b, &expected, &gone).await;
    drop(b); // SIGKILL (Child::kill), then wait

    let b = Broker::start(&data, &database).await;
    let after = snapshot(&b, &expected, &gone).await;
    assert_eq!(
        after, before,
        "every entity, with its system times, reads back exactly"
    );
    // the store is writable after recovery
    b.write(Method::POST, "/entities", None, &building(20), 201)
        .await;
    let (status, body) = b
        .send(Method::POST, "/entities", None, Some(&building(0)))
        .await;
    assert_eq!(status, 409, "recovered entities still exist: {body}");
}

#[actix_web::test]
async fn sigkill_right_after_an_acknowledged_write_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let database = common::fresh_database_url().await;
    let data = dir.path().join("data");
    let b = Broker::start(&data, &database).await;
    b.write(Method::POST, "/entities", None, &building(1), 201)
        .await;
    for round in 0..3 {
        let v = json!({"height": {"type": "Property", "value": 1000 + round}});
        b.write(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Building:dur1/attrs",
            None,
            &v,
            204,
        )
        .await;
    }
    let last = json!({"id": "urn:ngsi-ld:Building:dur50", "type": "Building"});
    b.write(Method::POST, "/entities", None, &last, 201).await;
    drop(b);
    let b = Broker::start(&data, &database).await;
    let (status, got) = b.get("urn:ngsi-ld:Building:dur50", None, "").await;
    assert_eq!((status, got), (200, last));
    let (_, got) = b.get("urn:ngsi-ld:Building:dur1", None, "").await;
    assert_eq!(got["height"]["value"], 1002);
}

#[actix_web::test]
async fn sigterm_exits_zero_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let database = common::fresh_database_url().await;
    let data = dir.path().join("data");
    let mut b = Broker::start(&data, &database).await;
    let (expected, gone) = write_history(&b).await;
    let before = snapshot(&b, &expected, &gone).await;

    let exit = b.terminate(Duration::from_secs(40)).await;
    assert_eq!(exit.code(), Some(0), "SIGTERM is a clean shutdown: {exit}");
    drop(b);

    let b = Broker::start(&data, &database).await;
    let after = snapshot(&b, &expected, &gone).await;
    assert_eq!(after, before);
}
