//! Black-box tests of Purge Entities (5.6.21, `DELETE /entities`): what each selector purges, the
//! `drop` and `keep` options, the requests refused as too wide or malformed (nothing is deleted
//! then), tenants, notifications and history of what a purge removes, and a purge larger than
//! one store write. The distributed form is in `federation.rs`.

use crate::common;

use common::receiver::Receiver;
use common::{assert_no_content, assert_problem, assert_status, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use twinlink::store::history::HistoryQuery;
use twinlink::store::DEFAULT_TENANT;

fn building(n: u32, name: &str, scope: &str, at: [f64; 2]) -> Value {
    json!({
        "id": format!("urn:ngsi-ld:Building:b{n}"),
        "type": "Building",
        "name": {"type": "Property", "value": name},
        "subCategory": {"type": "Property", "value": "tourism"},
        "height": {"type": "Property", "value": 10 * n},
        "scope": scope,
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": at}},
    })
}

fn vehicle(n: u32, speed: i64) -> Value {
    json!({
        "id": format!("urn:ngsi-ld:Vehicle:v{n}"),
        "type": "Vehicle",
        "name": {"type": "Property", "value": format!("car {n}")},
        "speed": {"type": "Property", "value": speed},
    })
}

async fn create_all(s: &TestServer, entities: &[Value]) {
    for e in entities {
        assert_status(s.create(e).await, 201).await;
    }
}

/// `DELETE /entities?{query}` with the default tenant and context.
async fn purge(s: &TestServer, query: &str) -> reqwest::Response {
    s.req(Method::DELETE, &format!("/entities?{query}"))
        .send()
        .await
        .expect("request")
}

/// The ids of every entity of the tenant, in id order.
async fn all_ids(s: &TestServer) -> Vec<String> {
    let (status, body) = s.get_json("/entities?local=true&limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap_or_else(|| panic!("an array: {body}"))
        .iter()
        .map(|e| {
            e["id"]
                .as_str()
                .unwrap()
                .trim_start_matches("urn:ngsi-ld:")
                .to_string()
        })
        .collect()
}

#[actix_web::test]
async fn each_selector_purges_what_it_matches() {
    let s = TestServer::start().await;
    create_all(
        &s,
        &[
            building(1, "Eiffel Tower", "/Paris/Left", [2.2945, 48.8584]),
            building(2, "Louvre", "/Paris/Right", [2.3376, 48.8606]),
            building(3, "Big Ben", "/London", [-0.1246, 51.5007]),
            building(4, "Orsay", "/Paris/Left", [2.3266, 48.8600]),
            vehicle(1, 10),
            vehicle(2, 80),
            vehicle(3, 50),
            json!({"id": "urn:ngsi-ld:Ship:s1", "type": "Ship"}),
        ],
    )
    .await;
    let steps: [(&str, &[&str]); 8] = [
        // q alone names an attribute (060_03_02).
        (
            "q=name==%22Eiffel%20Tower%22",
            &[
                "Building:b2",
                "Building:b3",
                "Building:b4",
                "Ship:s1",
                "Vehicle:v1",
                "Vehicle:v2",
                "Vehicle:v3",
            ],
        ),
        (
            "type=Vehicle&q=speed%3E40",
            &[
                "Building:b2",
                "Building:b3",
                "Building:b4",
                "Ship:s1",
                "Vehicle:v1",
            ],
        ),
        // id with a type (060_03_04), scopeQ with a type.
        (
            "id=urn:ngsi-ld:Building:b4&type=Building",
            &["Building:b2", "Building:b3", "Ship:s1", "Vehicle:v1"],
        ),
        (
            "type=Building&scopeQ=/London",
            &["Building:b2", "Ship:s1", "Vehicle:v1"],
        ),
        // An idPattern that matches nothing purges nothing.
        (
            "type=Building&idPattern=.*:Ship:.*",
            &["Building:b2", "Ship:s1", "Vehicle:v1"],
        ),
        // attrs alone: the entities with one of them.
        ("attrs=speed,colour", &["Building:b2", "Ship:s1"]),
        // A geoQ alone narrows enough.
        (
            "georel=near;maxDistance==100&geometry=Point&coordinates=[2.3376,48.8606]",
            &["Ship:s1"],
        ),
        // local=true alone is the whole tenant (060_03_03).
        ("local=true", &[]),
    ];
    for (query, left) in steps {
        assert_no_content(purge(&s, query).await).await;
        assert_eq!(all_ids(&s).await, left, "after {query}");
    }
}

#[actix_web::test]
async fn drop_and_keep_delete_attributes_and_leave_the_entities() {
    let s = TestServer::start().await;
    create_all(
        &s,
        &[
            building(1, "Eiffel Tower", "/Paris", [2.2945, 48.8584]),
            building(2, "Louvre", "/Paris", [2.3376, 48.8606]),
            vehicle(1, 10),
        ],
    )
    .await;
    let attrs = |e: &Value| {
        let mut names: Vec<String> = e
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !["id", "type", "scope", "createdAt", "modifiedAt"].contains(&k.as_str()))
            .cloned()
            .collect();
        names.sort();
        names
    };
    // drop (060_04): the named attributes go from every match; other types keep theirs.
    assert_no_content(purge(&s, "type=Building&drop=name,height").await).await;
    for b in ["b1", "b2"] {
        let e = s.entity(&format!("urn:ngsi-ld:Building:{b}"), "").await;
        assert_eq!(attrs(&e), ["location", "subCategory"], "{e}");
        assert_eq!(e["scope"], "/Paris", "{e}");
    }
    assert_eq!(
        attrs(&s.entity("urn:ngsi-ld:Vehicle:v1", "").await),
        ["name", "speed"]
    );
    // keep (060_05): every attribute but the named ones goes.
    assert_no_content(
        purge(
            &s,
            "id=urn:ngsi-ld:Building:b1&type=Building&keep=subCategory",
        )
        .await,
    )
    .await;
    let b1 = s.entity("urn:ngsi-ld:Building:b1", "").await;
    assert_eq!(attrs(&b1), ["subCategory"], "{b1}");
    assert_eq!(
        attrs(&s.entity("urn:ngsi-ld:Building:b2", "").await),
        ["location", "subCategory"]
    );
    // An entity without the attributes to drop is not written.
    let before = s
        .entity("urn:ngsi-ld:Building:b2", "?options=sysAttrs")
        .await;
    assert_no_content(purge(&s, "type=Building&drop=colour").await).await;
    let after = s
        .entity("urn:ngsi-ld:Building:b2", "?options=sysAttrs")
        .await;
    assert_eq!(before["modifiedAt"], after["modifiedAt"]);
    assert_eq!(attrs(&after), ["location", "subCategory"]);
}

#[actix_web::test]
async fn a_purge_too_wide_or_malformed_is_refused_and_deletes_nothing() {
    let s = TestServer::start().await;
    create_all(&s, &[building(1, "Eiffel Tower", "/Paris", [2.29, 48.85])]).await;
    for query in [
        // 5.6.21.4: ids, idPattern, system attributes and scopeQ alone are too wide.
        "",
        "id=urn:ngsi-ld:Building:b1",
        "idPattern=.*",
        "attrs=createdAt",
        "q=modifiedAt%3E%222020-01-01T00:00:00Z%22",
        "scopeQ=/Paris",
        "type=*&local=false",
        // drop and keep together; id and type are no attributes.
        "type=Building&keep=name&drop=subCategory",
        "type=Building&drop=id",
        // No Linked Entity retrieval in a purge (5.6.21.4).
        "type=Building&q=owner%7Bname%7D==%22x%22",
        "type=Building&attrs=owner%7Bname%7D",
        // Malformed selectors.
        "type=Building&idPattern=a**",
        "georel=near&geometry=Point&coordinates=[2.29,48.85]",
    ] {
        assert_problem(purge(&s, query).await, 400, "BadRequestData").await;
    }
    // A parameter the operation does not know is a syntax error (059_01_08).
    assert_problem(
        purge(&s, "invalidParams=invalidValue&type=Building").await,
        400,
        "InvalidRequest",
    )
    .await;
    let r = s
        .req(Method::DELETE, "/entities?type=Building")
        .header("NGSILD-Tenant", "nobody")
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "NonexistentTenant").await;
    assert_eq!(all_ids(&s).await, ["Building:b1"]);
}

#[actix_web::test]
async fn a_purge_stays_in_its_tenant() {
    let s = TestServer::start().await;
    let entities = [vehicle(1, 10), vehicle(2, 20)];
    create_all(&s, &entities).await;
    for e in &entities {
        let r = s
            .req(Method::POST, "/entities")
            .header("NGSILD-Tenant", "fleet")
            .header("Content-Type", "application/json")
            .body(e.to_string())
            .send()
            .await
            .unwrap();
        assert_status(r, 201).await;
    }
    // type=* selects every type of the tenant, and implies local=true.
    let r = s
        .req(Method::DELETE, "/entities?type=*")
        .header("NGSILD-Tenant", "fleet")
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let (status, _, left) = s
        .get_with("/entities?type=Vehicle", &[("NGSILD-Tenant", "fleet")])
        .await;
    assert_eq!((status, left), (200, json!([])));
    assert_eq!(all_ids(&s).await, ["Vehicle:v1", "Vehicle:v2"]);
}

#[actix_web::test]
async fn what_a_purge_removes_is_notified_and_kept_in_history() {
    let (s, broker) = TestServer::start_with_broker(|_| {}).await;
    let mut attribute_deleted = Receiver::ok().await;
    let mut entity_deleted = Receiver::ok().await;
    for (n, trigger, rx) in [
        (1, "attributeDeleted", &attribute_deleted),
        (2, "entityDeleted", &entity_deleted),
    ] {
        let sub = json!({"id": format!("urn:ngsi-ld:Subscription:purge-{n}"),
            "type": "Subscription", "entities": [{"type": "Building"}],
            "notificationTrigger": [trigger],
            "notification": {"endpoint": {"uri": rx.url}}});
        assert_status(
            s.send(Method::POST, "/subscriptions", "application/json", &sub)
                .await,
            201,
        )
        .await;
    }
    create_all(
        &s,
        &[
            building(1, "Eiffel Tower", "/Paris", [2.29, 48.85]),
            building(2, "Louvre", "/Paris", [2.33, 48.86]),
        ],
    )
    .await;
    assert_no_content(purge(&s, "type=Building&drop=name").await).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let n = attribute_deleted.next(5).await;
        assert_eq!(n.body["triggerReason"], "attributeDeleted", "{}", n.body);
        assert_eq!(
            n.entity()["name"]["value"],
            "urn:ngsi-ld:null",
            "{}",
            n.body
        );
        ids.push(n.entity()["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    assert_eq!(ids, ["urn:ngsi-ld:Building:b1", "urn:ngsi-ld:Building:b2"]);
    entity_deleted.nothing(300).await;
    assert_no_content(purge(&s, "type=Building").await).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let n = entity_deleted.next(5).await;
        assert_eq!(n.body["triggerReason"], "entityDeleted", "{}", n.body);
        assert!(n.entity()["deletedAt"].is_string(), "{}", n.body);
        ids.push(n.entity()["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    assert_eq!(ids, ["urn:ngsi-ld:Building:b1", "urn:ngsi-ld:Building:b2"]);
    // The history has the dropped attribute's deletion, then those of every other attribute, of
    // the scope and of the entity.
    let records = broker
        .store()
        .history(
            DEFAULT_TENANT,
            "urn:ngsi-ld:Building:b1",
            &HistoryQuery::default(),
        )
        .await
        .unwrap();
    let deletions: Vec<Option<String>> = records
        .iter()
        .filter(|r| r.deleted_at.is_some())
        .map(|r| {
            r.attr
                .as_deref()
                .map(|a| a.rsplit(['/', '#']).next().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        deletions.first(),
        Some(&Some("name".to_string())),
        "{records:?}"
    );
    assert_eq!(
        deletions.len(),
        6,
        "name, then height, subCategory, location, scope and the entity: {deletions:?}"
    );
    assert!(deletions.contains(&None), "{deletions:?}");
}

#[actix_web::test]
async fn a_large_purge_is_written_in_chunks() {
    let s = TestServer::start().await;
    let total = 2_500;
    for first in (0..total).step_by(1000) {
        let batch: Vec<Value> = (first..(first + 1000).min(total))
            .map(|i| {
                json!({"id": format!("urn:ngsi-ld:Sensor:{i:05}"), "type": "Sensor",
                       "temperature": {"type": "Property", "value": i % 40},
                       "status": {"type": "Property", "value": "ok"}})
            })
            .collect();
        let r = s
            .send(
                Method::POST,
                "/entityOperations/upsert",
                "application/json",
                &Value::Array(batch),
            )
            .await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let count = |q: &'static str| {
        let s = &s;
        async move {
            let (status, headers, _) = s
                .get_with(&format!("/entities?{q}&count=true&limit=0"), &[])
                .await;
            assert_eq!(status, 200, "{q}");
            headers["NGSILD-Results-Count"]
                .to_str()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        }
    };
    // Entities that keep matching after their attribute is dropped are each written once.
    assert_no_content(purge(&s, "type=Sensor&drop=temperature").await).await;
    assert_eq!(count("type=Sensor&attrs=temperature").await, 0);
    assert_eq!(count("type=Sensor&attrs=status").await, total);
    // An idPattern is decided by the evaluator (on PostgreSQL too): chunks of candidates.
    assert_no_content(purge(&s, "type=Sensor&idPattern=.*[05]$&drop=status").await).await;
    assert_eq!(count("type=Sensor&attrs=status").await, 2_000);
    assert_no_content(purge(&s, "type=Sensor&q=status==%22ok%22").await).await;
    assert_eq!(count("type=Sensor").await, 500);
    assert_no_content(purge(&s, "type=Sensor").await).await;
    assert_eq!(count("type=Sensor").await, 0);
    if let Some(url) = &s.database_url {
        // One transaction per chunk of 1,000 entities, not one per entity: 2,000 and 500.
        let client = common::sql_client(url).await;
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT xmin::text) FROM attribute_instances
                 WHERE attr IS NULL AND deleted_at IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, i64>(1)),
            (total as i64, 3)
        );
    }
}
