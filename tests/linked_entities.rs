//! Black-box tests of linked entity retrieval (4.5.23: join=inline|flat, joinLevel) on retrieve
//! and query, and of query parameters that name no attribute.

mod common;

use common::{assert_problem, TestServer};
use serde_json::{json, Value};

async fn city_and_buildings() -> TestServer {
    let s = TestServer::start().await;
    let entities = [
        json!({"id": "urn:ngsi-ld:City:Paris", "type": "City", "name": {"type": "Property", "value": "Paris"}}),
        json!({"id": "urn:ngsi-ld:Building:B1", "type": "Building",
               "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:Paris"}}),
        json!({"id": "urn:ngsi-ld:Building:B2", "type": "Building",
               "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:Nowhere"}}),
    ];
    for e in entities {
        assert_eq!(s.create(&e).await.status(), 201);
    }
    s
}

fn city() -> Value {
    json!({"id": "urn:ngsi-ld:City:Paris", "type": "City", "name": {"type": "Property", "value": "Paris"}})
}

#[actix_web::test]
async fn inline_join_puts_the_linked_entity_in_the_relationship() {
    let s = city_and_buildings().await;
    let (status, body) = s
        .get_json("/entities/urn:ngsi-ld:Building:B1?join=inline")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["locatedAt"]["object"], "urn:ngsi-ld:City:Paris");
    assert_eq!(body["locatedAt"]["entity"], city());
    let (_, simplified) = s
        .get_json("/entities/urn:ngsi-ld:Building:B1?join=inline&options=keyValues")
        .await;
    assert_eq!(
        simplified["locatedAt"],
        json!({"id": "urn:ngsi-ld:City:Paris", "type": "City", "name": "Paris"})
    );
    // A link to a missing entity stays a plain Relationship.
    let (_, dangling) = s
        .get_json("/entities/urn:ngsi-ld:Building:B2?join=inline")
        .await;
    assert!(dangling["locatedAt"].get("entity").is_none(), "{dangling}");
}

#[actix_web::test]
async fn flat_join_appends_linked_entities_once() {
    let s = city_and_buildings().await;
    let (status, body) = s
        .get_json("/entities/urn:ngsi-ld:Building:B1?join=flat")
        .await;
    assert_eq!(status, 200);
    let items = body.as_array().expect("flat join answers an array");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], "urn:ngsi-ld:Building:B1");
    assert_eq!(items[1], city());
    let (_, query) = s.get_json("/entities?type=Building&join=flat").await;
    let ids: Vec<&str> = query
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "urn:ngsi-ld:Building:B1",
            "urn:ngsi-ld:Building:B2",
            "urn:ngsi-ld:City:Paris"
        ]
    );
}

#[actix_web::test]
async fn bad_join_parameters_and_attrs_naming_no_attribute_are_400() {
    let s = city_and_buildings().await;
    for path in [
        "/entities/urn:ngsi-ld:Building:B1?join=sideways",
        "/entities/urn:ngsi-ld:Building:B1?join=inline&joinLevel=0",
        "/entities?type=Building&join=inline&joinLevel=x",
        "/entities?type=Building&attrs=id",
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_problem(r, 400, "BadRequestData").await;
    }
}
