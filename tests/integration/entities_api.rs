//! Black-box tests of the entity lifecycle endpoints.

use crate::common;

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

#[actix_web::test]
async fn expires_at_is_a_system_attribute() {
    // 6.3.11: expiresAt of the entity and of its attributes shows only with options=sysAttrs.
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:transient";
    let r = s
        .create(
            &json!({"id": id, "type": "Vehicle", "expiresAt": "2100-01-01T00:00:00Z",
            "speed": {"type": "Property", "value": 7, "expiresAt": "2100-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let plain = s.entity(id, "").await;
    assert!(!plain.to_string().contains("expiresAt"), "{plain}");
    assert_eq!(plain["speed"]["value"], 7);
    let sys = s.entity(id, "?options=sysAttrs").await;
    assert_eq!(sys["expiresAt"], "2100-01-01T00:00:00Z", "{sys}");
    assert_eq!(sys["speed"]["expiresAt"], "2100-01-01T00:00:00Z", "{sys}");
    assert!(sys["createdAt"].is_string());
}

#[actix_web::test]
async fn prefer_an_earlier_version_reformats_later_attribute_kinds() {
    // 4.3.6.8: VocabProperty and ListProperty came with 1.8; a client preferring 1.5 gets them as
    // Properties (203, Preference-Applied); one preferring 1.9 gets the payload as stored (200).
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Building:versioned";
    let r = s
        .create(&json!({"id": id, "type": "Building",
            "category": {"type": "VocabProperty", "vocab": "commercial"},
            "floors": {"type": "ListProperty", "valueList": [1, 2]},
            "name": {"type": "Property", "value": "Tower"}}))
        .await;
    assert_eq!(r.status(), 201);
    let path = format!("/entities/{id}");
    let (status, headers, old) = s.get_with(&path, &[("Prefer", "ngsi-ld=1.5")]).await;
    assert_eq!(status, 203, "{old}");
    assert_eq!(headers["Preference-Applied"], "ngsi-ld=1.5");
    assert_eq!(
        old["category"],
        json!({"type": "Property", "value": "commercial"})
    );
    assert_eq!(old["floors"], json!({"type": "Property", "value": [1, 2]}));
    assert_eq!(old["name"], json!({"type": "Property", "value": "Tower"}));
    let (status, headers, native) = s.get_with(&path, &[("Prefer", "ngsi-ld=1.9")]).await;
    assert_eq!(status, 200, "{native}");
    assert_eq!(headers["Preference-Applied"], "ngsi-ld=1.9");
    assert_eq!(native["category"]["type"], "VocabProperty");
    let (status, headers, _) = s.get_with(&path, &[]).await;
    assert_eq!(status, 200);
    assert!(headers.get("Preference-Applied").is_none());
}

#[actix_web::test]
async fn prefer_body_json_moves_a_geojson_context_to_a_link() {
    // 6.3.6: with Prefer: body=json a GeoJSON answer has no @context member; the Link carries it.
    let s = TestServer::start().await;
    let r = s
        .create(&json!({"id": "urn:ngsi-ld:Spot:g1", "type": "Spot",
                        "location": {"type": "GeoProperty",
                                     "value": {"type": "Point", "coordinates": [2.0, 48.0]}}}))
        .await;
    assert_eq!(r.status(), 201);
    for (prefer, in_body) in [(None, true), (Some("body=json"), false)] {
        let mut headers = vec![("Accept", "application/geo+json")];
        headers.extend(prefer.map(|p| ("Prefer", p)));
        let (status, h, body) = s.get_with("/entities?type=Spot", &headers).await;
        assert_eq!(status, 200, "{body}");
        assert!(h["Content-Type"]
            .to_str()
            .unwrap()
            .starts_with("application/geo+json"));
        assert_eq!(
            body.get("@context").is_some(),
            in_body,
            "{prefer:?}: {body}"
        );
        assert_eq!(h.get("Link").is_some(), !in_body, "{prefer:?}: {h:?}");
    }
}

#[actix_web::test]
async fn a_partial_attribute_update_accepts_merge_patch_json() {
    // 6.3.4: a PATCH body may be application/merge-patch+json.
    let s = TestServer::start().await;
    let r = s
        .create(&json!({"id": "urn:ngsi-ld:Spot:m1", "type": "Spot",
                        "free": {"type": "Property", "value": 1}}))
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .send(
            reqwest::Method::PATCH,
            "/entities/urn:ngsi-ld:Spot:m1/attrs/free",
            "application/merge-patch+json",
            &json!({"value": 2}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
    let e = s.entity("urn:ngsi-ld:Spot:m1", "").await;
    assert_eq!(e["free"]["value"], 2, "{e}");
}
