//! Black-box tests of linked entity retrieval (4.5.23: join=inline|flat, joinLevel) on retrieve
//! and query, and of query parameters that name no attribute.

use crate::common;

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

#[actix_web::test]
async fn pick_and_omit_shape_the_linked_entities() {
    let s = city_and_buildings().await;
    // pick=rel{…}: the linking entity keeps the Relationship, the linked one only what is picked.
    let (status, body) = s
        .get_json("/entities?type=Building&join=inline&pick=id,locatedAt{id,name}")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body[0],
        json!({"id": "urn:ngsi-ld:Building:B1", "locatedAt": {"type": "Relationship",
               "object": "urn:ngsi-ld:City:Paris",
               "entity": {"id": "urn:ngsi-ld:City:Paris", "name": {"type": "Property", "value": "Paris"}}}})
    );
    let (_, flat) = s
        .get_json("/entities?type=Building&join=flat&omit=locatedAt{name}")
        .await;
    let paris = flat
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "urn:ngsi-ld:City:Paris")
        .expect("the linked city");
    assert_eq!(
        paris,
        &json!({"id": "urn:ngsi-ld:City:Paris", "type": "City"})
    );
    // Linked selections need join, a joinLevel deep enough and something inside the braces.
    for path in [
        "/entities?type=Building&pick=locatedAt{name}",
        "/entities?type=Building&join=inline&pick=locatedAt{isIn{name}}",
        "/entities/urn:ngsi-ld:Building:B1?pick=id,locatedAt{}&join=inline",
        "/entities/urn:ngsi-ld:Building:B1?omit=locatedAt{name",
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_problem(r, 400, "BadRequestData").await;
    }
}

#[actix_web::test]
async fn q_follows_relationships_into_linked_entities() {
    let s = city_and_buildings().await;
    let other = json!({"id": "urn:ngsi-ld:Building:B3", "type": "Building",
        "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:Village:V"}});
    assert_eq!(s.create(&other).await.status(), 201);
    let village = json!({"id": "urn:ngsi-ld:Village:V", "type": "Village",
        "name": {"type": "Property", "value": "Paris"}});
    assert_eq!(s.create(&village).await.status(), 201);
    let ids = |body: &Value| -> Vec<String> {
        body.as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let query = |q: &str| format!("/entities?type=Building&join=inline&q={}", urlencode(q));
    // Both targets are named Paris; a type hint keeps only the City.
    let (status, body) = s.get_json(&query(r#"locatedAt{name}=="Paris""#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Building:B1", "urn:ngsi-ld:Building:B3"]
    );
    let (_, body) = s.get_json(&query(r#"locatedAt{City:name}=="Paris""#)).await;
    assert_eq!(ids(&body), ["urn:ngsi-ld:Building:B1"]);
    let (_, body) = s.get_json(&query(r#"locatedAt{Town:name}=="Paris""#)).await;
    assert_eq!(ids(&body), Vec::<String>::new());
    // B2 points to a missing entity: it has no linked name.
    let (_, body) = s.get_json(&query("!locatedAt{name}")).await;
    assert_eq!(ids(&body), ["urn:ngsi-ld:Building:B2"]);
    // Without join, or deeper than joinLevel, a linked q is refused.
    for path in [
        format!(
            "/entities?type=Building&q={}",
            urlencode(r#"locatedAt{name}=="Paris""#)
        ),
        query(r#"locatedAt{isIn{name}}=="France""#),
    ] {
        let r = s.client.get(s.url(&path)).send().await.unwrap();
        assert_problem(r, 400, "BadRequestData").await;
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[actix_web::test]
async fn a_subscription_follows_linked_entity_paths_as_they_stand_at_each_change() {
    use common::receiver::Receiver;
    let s = TestServer::start().await;
    let mut rx = Receiver::ok().await;
    for (id, level) in [("low", 0.3), ("full", 0.95)] {
        let device = json!({"id": format!("urn:ngsi-ld:Device:{id}"), "type": "Device",
            "batteryLevel": {"type": "Property", "value": level}});
        assert_eq!(s.create(&device).await.status(), 201);
    }
    let sub = json!({"id": "urn:ngsi-ld:Subscription:linked", "type": "Subscription",
        "entities": [{"type": "Vehicle"}], "q": "isConnectedTo{batteryLevel}<0.5",
        "notificationTrigger": ["entityCreated", "attributeUpdated"],
        "notification": {"endpoint": {"uri": rx.url}}});
    let r = s
        .send(
            reqwest::Method::POST,
            "/subscriptions",
            "application/json",
            &sub,
        )
        .await;
    assert_eq!(r.status(), 201);
    let vehicle = |id: &str, device: &str| {
        json!({"id": format!("urn:ngsi-ld:Vehicle:{id}"), "type": "Vehicle",
            "isConnectedTo": {"type": "Relationship", "object": format!("urn:ngsi-ld:Device:{device}")}})
    };
    // Created first, linked to the healthy device: no notification.
    assert_eq!(s.create(&vehicle("ok", "full")).await.status(), 201);
    assert_eq!(s.create(&vehicle("weak", "low")).await.status(), 201);
    let n = rx.next(5).await;
    assert_eq!(n.entity()["id"], "urn:ngsi-ld:Vehicle:weak", "{}", n.body);
    rx.nothing(300).await;
    // Once the healthy device runs low, a change of its vehicle matches.
    let low = json!({"batteryLevel": {"type": "Property", "value": 0.1}});
    let r = s
        .send(
            reqwest::Method::PATCH,
            "/entities/urn:ngsi-ld:Device:full/attrs",
            "application/json",
            &low,
        )
        .await;
    assert_eq!(r.status(), 204);
    let relink =
        json!({"isConnectedTo": {"type": "Relationship", "object": "urn:ngsi-ld:Device:full"}});
    let r = s
        .send(
            reqwest::Method::PATCH,
            "/entities/urn:ngsi-ld:Vehicle:ok/attrs",
            "application/json",
            &relink,
        )
        .await;
    assert_eq!(r.status(), 204);
    let n = rx.next(5).await;
    assert_eq!(n.entity()["id"], "urn:ngsi-ld:Vehicle:ok", "{}", n.body);
}

#[actix_web::test]
async fn notifications_carry_linked_entities_inline_or_flat_as_the_subscription_joins() {
    use common::receiver::Receiver;
    let s = TestServer::start().await;
    let city = json!({"id": "urn:ngsi-ld:City:Paris", "type": "City",
        "name": {"type": "Property", "value": "Paris"}});
    assert_eq!(s.create(&city).await.status(), 201);
    let mut receivers = Vec::new();
    for join in ["inline", "flat"] {
        let rx = Receiver::ok().await;
        let sub = json!({"id": format!("urn:ngsi-ld:Subscription:join-{join}"),
            "type": "Subscription", "entities": [{"type": "Building"}],
            "notificationTrigger": ["entityCreated"],
            "notification": {"endpoint": {"uri": rx.url}, "join": join, "joinLevel": 1}});
        let r = s
            .send(
                reqwest::Method::POST,
                "/subscriptions",
                "application/json",
                &sub,
            )
            .await;
        assert_eq!(r.status(), 201);
        receivers.push(rx);
    }
    let building = json!({"id": "urn:ngsi-ld:Building:eiffel", "type": "Building",
        "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:Paris"}});
    assert_eq!(s.create(&building).await.status(), 201);
    let inline = receivers[0].next(5).await;
    let data = inline.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{}", inline.body);
    assert_eq!(
        data[0]["locatedAt"]["entity"]["name"]["value"], "Paris",
        "{}",
        inline.body
    );
    let flat = receivers[1].next(5).await;
    let ids: Vec<&str> = flat.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["urn:ngsi-ld:Building:eiffel", "urn:ngsi-ld:City:Paris"],
        "{}",
        flat.body
    );
    // A join that is neither inline, flat nor @none is refused.
    let bad = json!({"type": "Subscription", "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}, "join": "deep"}});
    let r = s
        .send(
            reqwest::Method::POST,
            "/subscriptions",
            "application/json",
            &bad,
        )
        .await;
    assert_eq!(r.status(), 400);
}
