//! Black-box tests of transient entities and attributes (GS CIM 009 V1.9.1 clause 4.22,
//! `expiresAt`): what has expired is never served (retrieve, query, count, discovery,
//! notifications, temporal), even before the reaper has removed it; the reaper removes it from
//! the current state without notifying or recording; updates set, keep or clear an expiry as the
//! operation's semantics say; malformed values are BadRequestData; registrations expire too.

use crate::common;

use chrono::{SecondsFormat, Utc};
use common::receiver::Receiver;
use common::{assert_no_content, assert_problem, assert_status, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use twinlink::store::history::HistoryQuery;
use twinlink::store::DEFAULT_TENANT;

/// A DateTime `ms` milliseconds from now, to the millisecond.
fn in_ms(ms: i64) -> String {
    (Utc::now() + chrono::TimeDelta::milliseconds(ms)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Sleeps until a time given by [`in_ms`] has passed, with a margin.
async fn wait_past(ms: i64) {
    tokio::time::sleep(Duration::from_millis(ms as u64 + 300)).await;
}

/// A server whose reaper does not run during the test (an hour between sweeps).
async fn without_reaper() -> (
    TestServer,
    actix_web::web::Data<twinlink::service::AppState>,
) {
    TestServer::start_with_broker(|s| s.reap_every = Duration::from_secs(3600)).await
}

/// PATCHes `body` (JSON) to `path` and expects 204.
async fn patched(s: &TestServer, path: &str, body: &Value) {
    assert_no_content(s.send(Method::PATCH, path, "application/json", body).await).await;
}

fn vehicle(id: &str, expires: Option<&str>) -> Value {
    let mut e = json!({
        "id": id,
        "type": "Vehicle",
        "speed": {"type": "Property", "value": 10},
    });
    if let Some(t) = expires {
        e["expiresAt"] = json!(t);
    }
    e
}

async fn ids_of(s: &TestServer, query: &str) -> Vec<String> {
    let (status, body) = s.get_json(&format!("/entities?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap_or_else(|| panic!("an array: {body}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn an_expired_entity_is_never_served_even_before_the_reaper_runs() {
    let (s, broker) = without_reaper().await;
    let t = in_ms(1200);
    assert_status(
        s.create(&vehicle("urn:ngsi-ld:Vehicle:t1", Some(&t))).await,
        201,
    )
    .await;
    assert_status(
        s.create(&vehicle("urn:ngsi-ld:Vehicle:d1", None)).await,
        201,
    )
    .await;
    assert_eq!(
        ids_of(&s, "type=Vehicle").await,
        ["urn:ngsi-ld:Vehicle:d1", "urn:ngsi-ld:Vehicle:t1"]
    );
    assert_eq!(
        s.entity("urn:ngsi-ld:Vehicle:t1", "").await["speed"]["value"],
        10
    );
    wait_past(1200).await;
    s.assert_absent("urn:ngsi-ld:Vehicle:t1").await;
    assert_eq!(ids_of(&s, "type=Vehicle").await, ["urn:ngsi-ld:Vehicle:d1"]);
    assert_eq!(
        ids_of(&s, "type=Vehicle&q=speed==10").await,
        ["urn:ngsi-ld:Vehicle:d1"]
    );
    let r = s
        .req(Method::GET, "/entities?type=Vehicle&count=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["NGSILD-Results-Count"], "1");
    let (_, types) = s.get_json("/types?details=true").await;
    assert!(types.to_string().contains("Vehicle"), "{types}");
    // Updates see no entity, and the id is free for a new one.
    let patch = json!({"speed": {"type": "Property", "value": 11}});
    assert_problem(
        s.send(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Vehicle:t1/attrs",
            "application/json",
            &patch,
        )
        .await,
        404,
        "ResourceNotFound",
    )
    .await;
    assert_status(
        s.create(&vehicle("urn:ngsi-ld:Vehicle:t1", None)).await,
        201,
    )
    .await;
    // The reaper then finds nothing of the old entity to remove: the new one stays.
    broker.store().reap(100).await.unwrap();
    assert_eq!(
        s.entity("urn:ngsi-ld:Vehicle:t1", "").await["speed"]["value"],
        10
    );
    assert_eq!(
        broker.store().reap(100).await.unwrap(),
        0,
        "nothing is due any more"
    );
}

#[actix_web::test]
async fn expired_attributes_instances_and_sub_attributes_vanish_and_their_siblings_stay() {
    let (s, broker) = without_reaper().await;
    let t = in_ms(1200);
    let e = json!({
        "id": "urn:ngsi-ld:Vehicle:a1",
        "type": "Vehicle",
        "temperature": {"type": "Property", "value": 21, "expiresAt": t},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:p1", "expiresAt": t},
        "speed": [
            {"type": "Property", "value": 10,
             "accuracy": {"type": "Property", "value": 0.5, "expiresAt": t}},
            {"type": "Property", "value": 20, "datasetId": "urn:ngsi-ld:d:radar", "expiresAt": t},
        ],
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]},
                     "expiresAt": t},
        "name": {"type": "Property", "value": "van"},
    });
    assert_status(s.create(&e).await, 201).await;
    let near = "type=Vehicle&geometry=Point&coordinates=[2.35,48.85]&georel=near;maxDistance==100";
    assert_eq!(ids_of(&s, near).await, ["urn:ngsi-ld:Vehicle:a1"]);
    assert_eq!(
        ids_of(&s, "type=Vehicle&q=temperature>20").await,
        ["urn:ngsi-ld:Vehicle:a1"]
    );
    wait_past(1200).await;
    let live = s.entity("urn:ngsi-ld:Vehicle:a1", "").await;
    for gone in ["temperature", "owner", "location"] {
        assert!(live.get(gone).is_none(), "{gone} expired: {live}");
    }
    assert_eq!(
        live["speed"]["value"], 10,
        "only the durable instance is left: {live}"
    );
    assert!(live["speed"].get("accuracy").is_none(), "{live}");
    assert_eq!(live["name"]["value"], "van");
    assert!(ids_of(&s, "type=Vehicle&q=temperature>20").await.is_empty());
    assert!(ids_of(&s, near).await.is_empty());
    assert_eq!(
        ids_of(&s, "type=Vehicle&q=!temperature").await,
        ["urn:ngsi-ld:Vehicle:a1"]
    );
    // The reaper removes them from the stored state (on PostgreSQL the queries above, decided in
    // SQL, had it done already); what is served does not change.
    broker.store().reap(100).await.unwrap();
    assert_eq!(s.entity("urn:ngsi-ld:Vehicle:a1", "").await, live);
    assert_eq!(broker.store().reap(100).await.unwrap(), 0);
}

#[actix_web::test]
async fn the_reaper_removes_what_expired_in_the_background() {
    let (s, broker) =
        TestServer::start_with_broker(|s| s.reap_every = Duration::from_millis(100)).await;
    let t = in_ms(500);
    assert_status(
        s.create(&vehicle("urn:ngsi-ld:Vehicle:r1", Some(&t))).await,
        201,
    )
    .await;
    wait_past(500).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        broker.store().reap(100).await.unwrap(),
        0,
        "the background reaper has removed the expired entity already"
    );
    s.assert_absent("urn:ngsi-ld:Vehicle:r1").await;
}

#[actix_web::test]
async fn expires_at_is_shown_with_sys_attrs_only_and_as_written() {
    let s = TestServer::start().await;
    let t = "2100-01-01T00:00:00Z";
    let e = json!({
        "id": "urn:ngsi-ld:Vehicle:s1", "type": "Vehicle", "expiresAt": t,
        "speed": {"type": "Property", "value": 1, "expiresAt": t,
                  "accuracy": {"type": "Property", "value": 2, "expiresAt": t}},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:P:1", "expiresAt": t},
    });
    assert_status(s.create(&e).await, 201).await;
    let shown = s
        .entity("urn:ngsi-ld:Vehicle:s1", "?options=sysAttrs")
        .await;
    assert_eq!(shown["expiresAt"], t);
    assert_eq!(shown["speed"]["expiresAt"], t);
    assert_eq!(shown["speed"]["accuracy"]["expiresAt"], t);
    assert_eq!(shown["owner"]["expiresAt"], t);
    let plain = s.entity("urn:ngsi-ld:Vehicle:s1", "").await;
    assert!(!plain.to_string().contains("expiresAt"), "{plain}");
}

#[actix_web::test]
async fn malformed_expires_at_is_bad_request_data_and_nothing_is_written() {
    let s = TestServer::start().await;
    for bad in [
        json!("not-a-date"),
        json!("2026-13-45T00:00:00Z"),
        json!(42),
        // The NGSI-LD Null only removes an expiry in an update.
        json!("urn:ngsi-ld:null"),
    ] {
        let mut e = vehicle("urn:ngsi-ld:Vehicle:m1", None);
        e["expiresAt"] = bad.clone();
        assert_problem(s.create(&e).await, 400, "BadRequestData").await;
        let mut e = vehicle("urn:ngsi-ld:Vehicle:m1", None);
        e["speed"]["expiresAt"] = bad;
        assert_problem(s.create(&e).await, 400, "BadRequestData").await;
    }
    s.assert_absent("urn:ngsi-ld:Vehicle:m1").await;
}

#[actix_web::test]
async fn updates_set_keep_or_clear_an_expiry_as_their_semantics_say() {
    let s = TestServer::start().await;
    let t = in_ms(1500);
    let e = json!({
        "id": "urn:ngsi-ld:Building:u1", "type": "Building",
        "temperature": {"type": "Property", "value": 1, "expiresAt": t},
        "humidity": {"type": "Property", "value": 50, "expiresAt": t},
        "pressure": {"type": "Property", "value": 1000, "expiresAt": t},
    });
    assert_status(s.create(&e).await, 201).await;
    let path = "/entities/urn:ngsi-ld:Building:u1";
    // Update Attributes (5.6.2) replaces the whole instance: no expiresAt, durable again.
    let replace = json!({"temperature": {"type": "Property", "value": 2}});
    patched(&s, &format!("{path}/attrs"), &replace).await;
    // Partial Attribute Update (5.6.4) and Merge (5.6.17) keep what they do not name.
    let partial = json!({"type": "Property", "value": 51});
    patched(&s, &format!("{path}/attrs/humidity"), &partial).await;
    let merge = json!({"pressure": {"type": "Property", "value": 1001}});
    patched(&s, path, &merge).await;
    wait_past(1500).await;
    let live = s.entity("urn:ngsi-ld:Building:u1", "").await;
    assert_eq!(live["temperature"]["value"], 2, "{live}");
    assert!(live.get("humidity").is_none(), "{live}");
    assert!(live.get("pressure").is_none(), "{live}");
    // A merge sets the entity's expiry; a time already past makes it expired at once.
    let merge = json!({"expiresAt": "2100-01-01T00:00:00Z"});
    patched(&s, path, &merge).await;
    let shown = s
        .entity("urn:ngsi-ld:Building:u1", "?options=sysAttrs")
        .await;
    assert_eq!(shown["expiresAt"], "2100-01-01T00:00:00Z");
    // The NGSI-LD Null removes it (5.5.4's exception for Fragments).
    let merge = json!({"expiresAt": "urn:ngsi-ld:null"});
    patched(&s, path, &merge).await;
    let shown = s
        .entity("urn:ngsi-ld:Building:u1", "?options=sysAttrs")
        .await;
    assert!(shown.get("expiresAt").is_none(), "{shown}");
    let merge = json!({"expiresAt": "2020-01-01T00:00:00Z"});
    patched(&s, path, &merge).await;
    s.assert_absent("urn:ngsi-ld:Building:u1").await;
    // Replace (5.6.18) takes the expiry of the new content: none.
    assert_status(
        s.create(&vehicle("urn:ngsi-ld:Vehicle:u2", Some(&in_ms(800))))
            .await,
        201,
    )
    .await;
    let content = json!({"type": "Vehicle", "speed": {"type": "Property", "value": 3}});
    assert_no_content(
        s.send(
            Method::PUT,
            "/entities/urn:ngsi-ld:Vehicle:u2",
            "application/json",
            &content,
        )
        .await,
    )
    .await;
    wait_past(800).await;
    assert_eq!(
        s.entity("urn:ngsi-ld:Vehicle:u2", "").await["speed"]["value"],
        3
    );
}

#[actix_web::test]
async fn an_expired_instance_leaves_the_history_but_an_expired_entity_does_not_take_it_along() {
    let (s, broker) = without_reaper().await;
    let t = in_ms(1200);
    let e = json!({
        "id": "urn:ngsi-ld:Building:h1", "type": "Building",
        "flash": {"type": "Property", "value": 10, "expiresAt": t},
        "steady": {"type": "Property", "value": 100},
    });
    assert_status(s.create(&e).await, 201).await;
    let whole = vehicle("urn:ngsi-ld:Vehicle:h2", Some(&t));
    assert_status(s.create(&whole).await, 201).await;
    let names = |records: Vec<twinlink::store::history::InstanceChange>| -> Vec<String> {
        let mut n: Vec<String> = records
            .into_iter()
            .filter_map(|r| r.attr)
            .map(|a| a.rsplit('/').next().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    let history = |id: &'static str| {
        let broker = broker.clone();
        async move {
            broker
                .store()
                .history(DEFAULT_TENANT, id, &HistoryQuery::default())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        names(history("urn:ngsi-ld:Building:h1").await),
        ["flash", "steady"]
    );
    wait_past(1200).await;
    assert_eq!(names(history("urn:ngsi-ld:Building:h1").await), ["steady"]);
    assert_eq!(names(history("urn:ngsi-ld:Vehicle:h2").await), ["speed"]);
    // The temporal API serves the same: the durable attribute's evolution only.
    let (status, temporal) = s
        .get_json("/temporal/entities/urn:ngsi-ld:Building:h1?timeproperty=createdAt")
        .await;
    assert_eq!(status, 200, "{temporal}");
    assert!(temporal.get("flash").is_none(), "{temporal}");
    let steady = &temporal["steady"];
    let first = if steady.is_array() {
        &steady[0]
    } else {
        steady
    };
    assert_eq!(first["value"], 100, "{temporal}");
    broker.store().reap(100).await.unwrap();
    assert_eq!(
        names(history("urn:ngsi-ld:Vehicle:h2").await),
        ["speed"],
        "reaping records nothing and removes no history"
    );
}

#[actix_web::test]
async fn notifications_never_carry_what_expired_and_reaping_notifies_nobody() {
    let mut rx = Receiver::ok().await;
    let (s, broker) = without_reaper().await;
    let sub = json!({"id": "urn:ngsi-ld:Subscription:transient", "type": "Subscription",
        "entities": [{"type": "Vehicle"}],
        "notificationTrigger": ["entityCreated", "attributeUpdated", "attributeDeleted"],
        "notification": {"endpoint": {"uri": rx.url}}});
    assert_status(
        s.send(Method::POST, "/subscriptions", "application/json", &sub)
            .await,
        201,
    )
    .await;
    let until = in_ms(1000);
    for id in ["urn:ngsi-ld:Vehicle:n1", "urn:ngsi-ld:Vehicle:n2"] {
        let mut e = vehicle(id, None);
        e["temperature"] = json!({"type": "Property", "value": 21, "expiresAt": until});
        assert_status(s.create(&e).await, 201).await;
        let created = rx.next(5).await;
        assert_eq!(
            created.entity()["temperature"]["value"],
            21,
            "{}",
            created.body
        );
    }
    wait_past(1000).await;
    // Before any reaping: the notification of a later change shows the entity as it stands.
    let patch = json!({"speed": {"type": "Property", "value": 12}});
    patched(&s, "/entities/urn:ngsi-ld:Vehicle:n1/attrs", &patch).await;
    let unreaped = rx.next(5).await;
    assert_eq!(unreaped.entity()["id"], "urn:ngsi-ld:Vehicle:n1");
    assert_eq!(unreaped.entity()["speed"]["value"], 12, "{}", unreaped.body);
    assert!(
        unreaped.entity().get("temperature").is_none(),
        "{}",
        unreaped.body
    );
    // Reaping n2's expired attribute notifies nobody.
    assert!(broker.store().reap(100).await.unwrap() >= 1, "n2 was due");
    rx.nothing(500).await;
    patched(&s, "/entities/urn:ngsi-ld:Vehicle:n2/attrs", &patch).await;
    let reaped = rx.next(5).await;
    assert_eq!(reaped.entity()["speed"]["value"], 12, "{}", reaped.body);
    assert!(
        reaped.entity().get("temperature").is_none(),
        "{}",
        reaped.body
    );
}

#[actix_web::test]
async fn discovery_forgets_types_and_attributes_held_only_by_expired_data() {
    let (s, _broker) = without_reaper().await;
    let t = in_ms(1200);
    let ghost = json!({"id": "urn:ngsi-ld:Ghost:g1", "type": "Ghost", "expiresAt": t,
        "ectoplasm": {"type": "Property", "value": 1}});
    assert_status(s.create(&ghost).await, 201).await;
    let mut v = vehicle("urn:ngsi-ld:Vehicle:g2", None);
    v["flicker"] = json!({"type": "Property", "value": 1, "expiresAt": t});
    assert_status(s.create(&v).await, 201).await;
    let listed = |path: &'static str| {
        let s = &s;
        async move {
            let (status, body) = s.get_json(path).await;
            assert_eq!(status, 200, "{body}");
            body.to_string()
        }
    };
    for (path, names) in [
        ("/types", &["Ghost", "Vehicle"][..]),
        (
            "/types?details=true",
            &["Ghost", "ectoplasm", "flicker"][..],
        ),
        ("/attributes", &["ectoplasm", "flicker", "speed"][..]),
    ] {
        let body = listed(path).await;
        for name in names {
            assert!(body.contains(name), "{path} lists {name}: {body}");
        }
    }
    wait_past(1200).await;
    for path in [
        "/types",
        "/types?details=true",
        "/attributes",
        "/attributes?details=true",
    ] {
        let body = listed(path).await;
        for gone in ["Ghost", "ectoplasm", "flicker"] {
            assert!(!body.contains(gone), "{path} still lists {gone}: {body}");
        }
        assert!(
            body.contains("Vehicle") || body.contains("speed"),
            "{path}: {body}"
        );
    }
    for path in ["/types/Ghost", "/attributes/flicker"] {
        let r = s.req(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[actix_web::test]
async fn every_attribute_kind_and_a_past_entity_expiry_are_honoured() {
    let (s, _broker) = without_reaper().await;
    let t = in_ms(1200);
    let e = json!({
        "id": "urn:ngsi-ld:Vehicle:k1", "type": "Vehicle",
        "label": {"type": "LanguageProperty", "languageMap": {"en": "van", "fr": "camionnette"},
                  "expiresAt": t},
        "category": {"type": "VocabProperty", "vocab": "delivery", "expiresAt": t},
        "config": {"type": "JsonProperty", "json": {"seats": 2}, "expiresAt": t},
        "names": {"type": "ListProperty", "valueList": ["a", "b"], "expiresAt": t},
        "speed": {"type": "Property", "value": 10},
    });
    assert_status(s.create(&e).await, 201).await;
    let shown = s.entity("urn:ngsi-ld:Vehicle:k1", "").await;
    for kind in ["label", "category", "config", "names"] {
        assert!(
            shown.get(kind).is_some(),
            "{kind} is served before: {shown}"
        );
    }
    wait_past(1200).await;
    let shown = s.entity("urn:ngsi-ld:Vehicle:k1", "").await;
    for kind in ["label", "category", "config", "names"] {
        assert!(shown.get(kind).is_none(), "{kind} expired: {shown}");
    }
    assert_eq!(shown["speed"]["value"], 10);
    // An entity created with an expiry already past is accepted and never served (like one that
    // expired a moment after its creation); its id stays free.
    let past = vehicle("urn:ngsi-ld:Vehicle:k2", Some("2020-01-01T00:00:00Z"));
    assert_status(s.create(&past).await, 201).await;
    s.assert_absent("urn:ngsi-ld:Vehicle:k2").await;
    assert_status(
        s.create(&vehicle("urn:ngsi-ld:Vehicle:k2", None)).await,
        201,
    )
    .await;
}

#[actix_web::test]
async fn an_attributes_expiry_moves_with_a_partial_update() {
    let (s, _broker) = without_reaper().await;
    let e = json!({"id": "urn:ngsi-ld:Vehicle:m2", "type": "Vehicle",
        "speed": {"type": "Property", "value": 1, "expiresAt": in_ms(800)},
        "heading": {"type": "Property", "value": 90, "expiresAt": "2100-01-01T00:00:00Z"}});
    assert_status(s.create(&e).await, 201).await;
    let path = "/entities/urn:ngsi-ld:Vehicle:m2/attrs";
    // Later for one, sooner for the other.
    let later = json!({"type": "Property", "value": 2, "expiresAt": "2100-01-01T00:00:00Z"});
    patched(&s, &format!("{path}/speed"), &later).await;
    let sooner = json!({"type": "Property", "value": 91, "expiresAt": in_ms(800)});
    patched(&s, &format!("{path}/heading"), &sooner).await;
    wait_past(800).await;
    let shown = s.entity("urn:ngsi-ld:Vehicle:m2", "").await;
    assert_eq!(shown["speed"]["value"], 2, "{shown}");
    assert!(shown.get("heading").is_none(), "{shown}");
}

#[actix_web::test]
async fn a_registration_expires_and_a_past_expiry_is_refused() {
    let s = TestServer::start().await;
    let reg = |id: &str, expires: &str| {
        json!({"id": id, "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": "Vehicle"}]}],
            "endpoint": "http://127.0.0.1:9/ngsi-ld", "expiresAt": expires})
    };
    for bad in ["2020-01-01T00:00:00Z", "2026-13-45T00:00:00Z"] {
        assert_problem(
            s.send(
                Method::POST,
                "/csourceRegistrations",
                "application/json",
                &reg("urn:ngsi-ld:ContextSourceRegistration:x", bad),
            )
            .await,
            400,
            "BadRequestData",
        )
        .await;
    }
    let id = "urn:ngsi-ld:ContextSourceRegistration:soon";
    assert_status(
        s.send(
            Method::POST,
            "/csourceRegistrations",
            "application/json",
            &reg(id, &in_ms(1000)),
        )
        .await,
        201,
    )
    .await;
    let (status, _) = s.get_json(&format!("/csourceRegistrations/{id}")).await;
    assert_eq!(status, 200);
    wait_past(1000).await;
    let (status, body) = s.get_json(&format!("/csourceRegistrations/{id}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s.get_json("/csourceRegistrations?type=Vehicle").await;
    assert_eq!(status, 200);
    assert!(!body.to_string().contains(id), "{body}");
}
