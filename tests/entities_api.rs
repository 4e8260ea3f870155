//! Black-box tests of the entity lifecycle endpoints.

mod common;

use common::{assert_problem, TestServer};
use serde_json::json;

#[actix_web::test]
async fn create_then_retrieve_round_trips_a_normalized_entity() {
    let s = TestServer::start().await;
    let entity = json!({
        "id": "urn:ngsi-ld:Building:1",
        "type": "Building",
        "name": {"type": "Property", "value": "Tower"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.3, 48.8]}}
    });
    let r = s.create(&entity).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["Location"],
        "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1"
    );
    let (status, body) = s.get_json("/entities/urn:ngsi-ld:Building:1").await;
    assert_eq!(status, 200);
    assert_eq!(body, entity);
    assert_problem(s.create(&entity).await, 409, "AlreadyExists").await;
}
