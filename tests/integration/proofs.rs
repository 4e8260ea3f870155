//! Black-box tests of entity proofs (GS CIM 009 V1.9.1 clause 4.5.2.2, Annex C.11): the
//! `ngsildproof` Property round-trips its W3C Data Integrity proof untouched, with its sealed
//! members as bare strings, in every representation; the sealed members anywhere else and a
//! proof that is not an object are BadRequestData, and nothing is written.

use crate::common;

use common::receiver::Receiver;
use common::{assert_problem, assert_status, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

fn proof() -> Value {
    json!({
        "type": "DataIntegrityProof",
        "created": "2025-01-27T21:02:24Z",
        "verificationMethod": "https://example.edu/issuers/565049#z6MkwXG2WjeQnNHc6SaVWoT",
        "cryptosuite": "eddsa-rdfc-2022",
        "proofPurpose": "assertionMethod",
        "proofValue": "zQeVbY4oey5q2M3XKaxup3tmzN4DRFTLVqpLMweBrSxMY",
    })
}

#[actix_web::test]
async fn a_proof_round_trips_untouched_with_its_sealed_members() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:proof1";
    let e = json!({
        "id": id, "type": "Vehicle",
        "speed": {"type": "Property", "value": 55},
        "ngsildproof": {"type": "Property", "value": proof(),
                        "entityIdSealed": id, "entityTypeSealed": "Vehicle"},
    });
    assert_status(s.create(&e).await, 201).await;
    let normalized = s.entity(id, "").await;
    assert_eq!(normalized["ngsildproof"]["type"], "Property");
    assert_eq!(normalized["ngsildproof"]["value"], proof());
    assert_eq!(normalized["ngsildproof"]["entityIdSealed"], id);
    assert_eq!(normalized["ngsildproof"]["entityTypeSealed"], "Vehicle");
    let concise = s.entity(id, "?format=concise").await;
    assert_eq!(concise["ngsildproof"]["value"], proof(), "{concise}");
    assert_eq!(concise["ngsildproof"]["entityIdSealed"], id, "{concise}");
    let key_values = s.entity(id, "?format=keyValues").await;
    assert_eq!(key_values["ngsildproof"], proof(), "{key_values}");
}

#[actix_web::test]
async fn sealed_members_elsewhere_and_non_object_proofs_are_refused() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:proof2";
    let bad = [
        json!({"speed": {"type": "Property", "value": 1, "entityIdSealed": id}}),
        json!({"ngsildproof": {"type": "Property", "value": "not-a-proof-object"}}),
        json!({"ngsildproof": {"type": "Relationship", "object": "urn:ngsi-ld:Proof:1"}}),
        json!({"ngsildproof": {"type": "Property", "value": proof(), "entityTypeSealed": 42}}),
        json!({"ngsildproof": {"type": "Property", "value": proof(), "entityIdSealed": "not a uri"}}),
    ];
    for attrs in bad {
        let mut e = json!({"id": id, "type": "Vehicle"});
        for (k, v) in attrs.as_object().unwrap() {
            e[k] = v.clone();
        }
        assert_problem(s.create(&e).await, 400, "BadRequestData").await;
    }
    s.assert_absent(id).await;
}

#[actix_web::test]
async fn a_proof_is_served_untouched_by_queries_geojson_temporal_and_notifications() {
    let mut rx = Receiver::ok().await;
    let s = TestServer::start().await;
    let sub = json!({"id": "urn:ngsi-ld:Subscription:proofs", "type": "Subscription",
        "entities": [{"type": "Vehicle"}], "notificationTrigger": ["entityCreated"],
        "notification": {"endpoint": {"uri": rx.url}}});
    assert_status(
        s.send(Method::POST, "/subscriptions", "application/json", &sub)
            .await,
        201,
    )
    .await;
    let id = "urn:ngsi-ld:Vehicle:proof3";
    let sealed = |v: &Value| {
        assert_eq!(v["value"], proof(), "{v}");
        assert_eq!(v["entityIdSealed"], id, "{v}");
        assert_eq!(v["entityTypeSealed"], "Vehicle", "{v}");
    };
    let e = json!({
        "id": id, "type": "Vehicle",
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]}},
        "ngsildproof": {"type": "Property", "value": proof(),
                        "entityIdSealed": id, "entityTypeSealed": "Vehicle"},
    });
    assert_status(s.create(&e).await, 201).await;
    let notified = rx.next(5).await;
    sealed(&notified.entity()["ngsildproof"]);
    let (status, list) = s.get_json("/entities?type=Vehicle").await;
    assert_eq!(status, 200, "{list}");
    sealed(&list[0]["ngsildproof"]);
    let geojson: Value = s
        .req(Method::GET, &format!("/entities/{id}"))
        .header("Accept", "application/geo+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sealed(&geojson["properties"]["ngsildproof"]);
    let (status, temporal) = s
        .get_json(&format!("/temporal/entities/{id}?timeproperty=createdAt"))
        .await;
    assert_eq!(status, 200, "{temporal}");
    let instances = &temporal["ngsildproof"];
    let first = if instances.is_array() {
        &instances[0]
    } else {
        instances
    };
    sealed(first);
}
