//! Black-box tests of context source registration subscriptions (clause 5.11, HTTP 6.12 and
//! 6.13): the /csourceSubscriptions API and its validation, the ContextSourceNotification sent on
//! creation, update and every registration change (newlyMatching, updated, noLongerMatching), the
//! filters that select registrations (entities, watchedAttributes, q, csf, geoQ, scopeQ,
//! temporalQ), status, delivery statistics, throttling, timeInterval, tenants, restarts, MQTT
//! delivery and, on PostgreSQL, two instances notifying each registration change once.

use crate::common;

use common::receiver::{dead_url, mqtt_listener, Receiver};
use common::{assert_no_content, assert_problem, read, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// A registration subscription to registrations of Room entities, notified at `url`.
fn csub(id: &str, url: &str, extra: Value) -> Value {
    let mut s = json!({
        "id": id,
        "type": "Subscription",
        "entities": [{"type": "Room"}],
        "notification": {"endpoint": {"uri": url, "accept": "application/json"}},
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

/// A registration of a source of Room entities (and, with `bus`, of Bus entities in a second
/// RegistrationInfo).
fn registration(id: &str, bus: bool) -> Value {
    let mut information = vec![json!({
        "entities": [{"type": "Room"}],
        "propertyNames": ["temperature", "name"],
    })];
    if bus {
        information.push(json!({"entities": [{"type": "Bus"}]}));
    }
    json!({
        "id": id,
        "type": "ContextSourceRegistration",
        "information": information,
        "endpoint": "http://127.0.0.1:9/source",
    })
}

async fn post(s: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    s.send(Method::POST, path, "application/json", body).await
}

async fn subscribe(s: &TestServer, body: &Value) -> String {
    let (status, headers, answer) = read(post(s, "/csourceSubscriptions", body).await).await;
    assert_eq!(status, 201, "created: {answer}");
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/ngsi-ld/v1/csourceSubscriptions/"),
        "{location}"
    );
    location.rsplit('/').next().unwrap().to_string()
}

async fn register(s: &TestServer, body: &Value) {
    let r = post(s, "/csourceRegistrations", body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

async fn patch(s: &TestServer, path: &str, body: &Value) {
    assert_no_content(s.send(Method::PATCH, path, "application/json", body).await).await;
}

/// Asserts a ContextSourceNotification of this subscription, reason and registrations (in order).
fn assert_notification(n: &Value, sub: &str, reason: &str, registrations: &[&str]) {
    assert_eq!(n["type"], "ContextSourceNotification", "{n}");
    assert_eq!(n["subscriptionId"], sub, "{n}");
    assert_eq!(n["triggerReason"], reason, "{n}");
    assert!(
        n["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("urn:ngsi-ld:Notification:")),
        "{n}"
    );
    assert!(
        n["notifiedAt"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{n}"
    );
    let ids: Vec<&str> = n["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, registrations, "{n}");
    for r in n["data"].as_array().unwrap() {
        assert_eq!(r["type"], "ContextSourceRegistration", "{n}");
    }
}

/// The subscription, once its statistics show `sent` notifications.
async fn with_stats(s: &TestServer, id: &str, sent: u64) -> Value {
    let mut got = Value::Null;
    for _ in 0..40 {
        got = s.get_json(&format!("/csourceSubscriptions/{id}")).await.1;
        if got["notification"]["timesSent"] == sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

#[actix_web::test]
async fn the_api_creates_reads_pages_updates_and_deletes_csource_subscriptions() {
    let s = TestServer::start().await;
    let ids: Vec<String> = (1..=3)
        .map(|i| format!("urn:ngsi-ld:Subscription:c{i}"))
        .collect();
    for id in &ids {
        assert_eq!(
            subscribe(&s, &csub(id, "http://127.0.0.1:9/notify", json!({}))).await,
            *id
        );
    }
    // Retrieve: the members given, type, status; no entity notificationTrigger.
    let (status, one) = s
        .get_json(&format!("/csourceSubscriptions/{}", ids[0]))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], ids[0]);
    assert_eq!(one["type"], "Subscription");
    assert_eq!(one["entities"], json!([{"type": "Room"}]));
    assert_eq!(one["status"], "active");
    assert_eq!(
        one["notification"]["endpoint"]["uri"],
        "http://127.0.0.1:9/notify"
    );
    assert!(one.get("notificationTrigger").is_none(), "{one}");
    // A second create with the same id.
    assert_problem(
        post(
            &s,
            "/csourceSubscriptions",
            &csub(&ids[0], "http://127.0.0.1:9/notify", json!({})),
        )
        .await,
        409,
        "AlreadyExists",
    )
    .await;
    // Entity subscriptions and registration subscriptions are apart.
    let (_, entity_subs) = s.get_json("/subscriptions").await;
    assert_eq!(entity_subs, json!([]));
    let (status, _) = s.get_json(&format!("/subscriptions/{}", ids[0])).await;
    assert_eq!(status, 404);
    // Query: oldest first, paged with Link headers and a count.
    let (status, headers, page) = s
        .get_with("/csourceSubscriptions?limit=1&offset=1&count=true", &[])
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["id"], ids[1]);
    assert_eq!(headers["ngsild-results-count"], "3");
    let links: Vec<&str> = headers
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        links.iter().any(
            |l| l.contains("</ngsi-ld/v1/csourceSubscriptions?limit=1&offset=0>; rel=\"prev\"")
        ),
        "{links:?}"
    );
    assert!(
        links.iter().any(
            |l| l.contains("</ngsi-ld/v1/csourceSubscriptions?limit=1&offset=2>; rel=\"next\"")
        ),
        "{links:?}"
    );
    let (_, all) = s.get_json("/csourceSubscriptions").await;
    let listed: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    s.problem_of(
        Method::GET,
        "/csourceSubscriptions?limit=-5",
        400,
        "BadRequestData",
    )
    .await;
    // Update: 204, the member replaced, paused.
    patch(
        &s,
        &format!("/csourceSubscriptions/{}", ids[0]),
        &json!({"isActive": false, "entities": [{"type": "Bus"}]}),
    )
    .await;
    let (_, one) = s
        .get_json(&format!("/csourceSubscriptions/{}", ids[0]))
        .await;
    assert_eq!(one["status"], "paused", "{one}");
    assert_eq!(one["isActive"], false);
    assert_eq!(one["entities"], json!([{"type": "Bus"}]));
    // Unknown ids and ids that are not URIs.
    assert_problem(
        s.send(
            Method::PATCH,
            "/csourceSubscriptions/urn:ngsi-ld:Subscription:unknown",
            "application/json",
            &json!({"isActive": true}),
        )
        .await,
        404,
        "ResourceNotFound",
    )
    .await;
    s.problem_of(
        Method::GET,
        "/csourceSubscriptions/invalidUri",
        400,
        "BadRequestData",
    )
    .await;
    // Delete.
    let path = format!("/csourceSubscriptions/{}", ids[0]);
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    let (status, _) = s.get_json(&path).await;
    assert_eq!(status, 404);
    s.problem_of(Method::DELETE, &path, 404, "ResourceNotFound")
        .await;
    // A subscription without an id gets one.
    let mut anonymous = csub("x", "http://127.0.0.1:9/notify", json!({}));
    anonymous.as_object_mut().unwrap().remove("id");
    let id = subscribe(&s, &anonymous).await;
    assert!(id.starts_with("urn:ngsi-ld:Subscription:"), "{id}");
}

#[actix_web::test]
async fn every_invalid_member_is_bad_request_data() {
    let s = TestServer::start().await;
    let base = csub(
        "urn:ngsi-ld:Subscription:bad",
        "http://127.0.0.1:9/notify",
        json!({}),
    );
    let cases: Vec<(&str, Value)> = vec![
        ("no notification", {
            let mut b = base.clone();
            b.as_object_mut().unwrap().remove("notification");
            b
        }),
        ("wrong type", {
            let mut b = base.clone();
            b["type"] = json!("RandomType");
            b
        }),
        ("bad q", {
            let mut b = base.clone();
            b["q"] = json!("speed>");
            b
        }),
        ("bad csf", {
            let mut b = base.clone();
            b["csf"] = json!("endpoint==");
            b
        }),
        ("empty watchedAttributes", {
            let mut b = base.clone();
            b["watchedAttributes"] = json!([]);
            b
        }),
        ("past expiresAt", {
            let mut b = base.clone();
            b["expiresAt"] = json!("2018-08-01T22:07:00Z");
            b
        }),
        ("temporalQ without timerel", {
            let mut b = base.clone();
            b["temporalQ"] = json!({"timeAt": "2020-06-01T22:07:00Z"});
            b
        }),
        ("temporalQ with a bad time", {
            let mut b = base.clone();
            b["temporalQ"] = json!({"timerel": "after", "timeAt": "yesterday"});
            b
        }),
        ("endpoint of another scheme", {
            let mut b = base.clone();
            b["notification"]["endpoint"]["uri"] = json!("ftp://127.0.0.1/notify");
            b
        }),
    ];
    for (what, body) in cases {
        let r = post(&s, "/csourceSubscriptions", &body).await;
        assert_eq!(r.status(), 400, "{what}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(
            problem["type"], "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
            "{what}: {problem}"
        );
    }
    let (_, all) = s.get_json("/csourceSubscriptions").await;
    assert_eq!(all, json!([]), "nothing invalid was stored");
    // A fragment is checked the same way.
    subscribe(&s, &base).await;
    let r = s
        .send(
            Method::PATCH,
            "/csourceSubscriptions/urn:ngsi-ld:Subscription:bad",
            "application/json",
            &json!({"type": null, "notification": {"endpoint": {"uri": "nowhere"}}}),
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
}

#[actix_web::test]
async fn registration_changes_are_notified_with_their_trigger_reason() {
    let s = TestServer::start().await;
    let mut rx = Receiver::ok().await;
    let sub = "urn:ngsi-ld:Subscription:changes";
    subscribe(&s, &csub(sub, &rx.url, json!({}))).await;
    rx.nothing(300).await; // nothing matches yet: no initial notification
    let reg = "urn:ngsi-ld:ContextSourceRegistration:r1";
    register(&s, &registration(reg, true)).await;
    let n = rx.next(5).await;
    assert_notification(&n.body, sub, "newlyMatching", &[reg]);
    assert_eq!(
        n.header("content-type"),
        Some("application/json"),
        "{:?}",
        n.headers
    );
    assert!(n.header("link").is_some(), "{:?}", n.headers);
    // Only the RegistrationInfo the subscription selects is shown.
    let shown = &n.body["data"][0];
    assert_eq!(
        shown["information"],
        json!([{"entities": [{"type": "Room"}], "propertyNames": ["temperature", "name"]}]),
        "{shown}"
    );
    assert_eq!(shown["endpoint"], "http://127.0.0.1:9/source");
    // Still matching after an update: updated, with the new state.
    let path = format!("/csourceRegistrations/{reg}");
    patch(&s, &path, &json!({"endpoint": "http://127.0.0.1:9/moved"})).await;
    let n = rx.next(5).await.body;
    assert_notification(&n, sub, "updated", &[reg]);
    assert_eq!(n["data"][0]["endpoint"], "http://127.0.0.1:9/moved");
    // No longer matching.
    patch(
        &s,
        &path,
        &json!({"information": [{"entities": [{"type": "Bus"}]}]}),
    )
    .await;
    let n = rx.next(5).await.body;
    assert_notification(&n, sub, "noLongerMatching", &[reg]);
    assert_eq!(
        n["data"][0]["information"],
        json!([{"entities": [{"type": "Bus"}]}]),
        "the latest state: {n}"
    );
    // A change that concerns the subscription neither before nor after.
    patch(&s, &path, &json!({"endpoint": "http://127.0.0.1:9/again"})).await;
    register(
        &s,
        &json!({
            "id": "urn:ngsi-ld:ContextSourceRegistration:other",
            "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": "Car"}]}],
            "endpoint": "http://127.0.0.1:9/source",
        }),
    )
    .await;
    rx.nothing(500).await;
    // Matching again, then deleted.
    patch(
        &s,
        &path,
        &json!({"information": [{"entities": [{"type": "Room"}]}]}),
    )
    .await;
    assert_notification(&rx.next(5).await.body, sub, "newlyMatching", &[reg]);
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    let n = rx.next(5).await.body;
    assert_notification(&n, sub, "noLongerMatching", &[reg]);
    rx.nothing(300).await;
    // Every delivery is counted.
    let got = with_stats(&s, sub, 5).await;
    let notification = &got["notification"];
    assert_eq!(notification["timesSent"], 5, "{got}");
    assert_eq!(notification["status"], "ok", "{got}");
    assert!(notification["lastSuccess"].is_string(), "{got}");
    assert!(notification["lastNotification"].is_string(), "{got}");
    assert!(notification.get("timesFailed").is_none(), "{got}");
}

#[actix_web::test]
async fn creating_or_updating_a_subscription_notifies_the_registrations_it_selects() {
    let s = TestServer::start().await;
    let (r1, r2) = (
        "urn:ngsi-ld:ContextSourceRegistration:a",
        "urn:ngsi-ld:ContextSourceRegistration:b",
    );
    register(&s, &registration(r1, false)).await;
    let mut bus_only = registration(r2, false);
    bus_only["information"] = json!([{"entities": [{"type": "Bus"}]}]);
    register(&s, &bus_only).await;
    let mut rx = Receiver::ok().await;
    let sub = "urn:ngsi-ld:Subscription:initial";
    subscribe(&s, &csub(sub, &rx.url, json!({}))).await;
    assert_notification(&rx.next(5).await.body, sub, "newlyMatching", &[r1]);
    rx.nothing(300).await;
    // After an update, what it selects now.
    let path = format!("/csourceSubscriptions/{sub}");
    patch(&s, &path, &json!({"entities": [{"type": "Bus"}]})).await;
    assert_notification(&rx.next(5).await.body, sub, "newlyMatching", &[r2]);
    patch(
        &s,
        &path,
        &json!({"entities": [{"type": "Bus"}, {"type": "Room"}]}),
    )
    .await;
    assert_notification(&rx.next(5).await.body, sub, "newlyMatching", &[r1, r2]);
    // Paused: nothing, neither on update nor on a change.
    patch(&s, &path, &json!({"isActive": false})).await;
    register(
        &s,
        &registration("urn:ngsi-ld:ContextSourceRegistration:c", false),
    )
    .await;
    rx.nothing(500).await;
    // A subscription that selects nothing gets no (empty) notification.
    let mut other = Receiver::ok().await;
    subscribe(
        &s,
        &csub(
            "urn:ngsi-ld:Subscription:none",
            &other.url,
            json!({"entities": [{"type": "Car"}]}),
        ),
    )
    .await;
    other.nothing(500).await;
}

#[actix_web::test]
async fn filters_select_the_notified_registrations() {
    let s = TestServer::start().await;
    let mut rx = Receiver::ok().await;
    let filters: Vec<(&str, Value)> = vec![
        (
            "watched-temperature",
            json!({"watchedAttributes": ["temperature"]}),
        ),
        ("watched-speed", json!({"watchedAttributes": ["speed"]})),
        ("q-model", json!({"q": "sourceType==\"model\""})),
        ("q-sensor", json!({"q": "sourceType==\"sensor\""})),
        (
            "csf-endpoint",
            json!({"csf": "endpoint==\"http://rooms.example.org\""}),
        ),
        (
            "csf-other",
            json!({"csf": "endpoint==\"http://other.example.org\""}),
        ),
        (
            "geo-near",
            json!({"geoQ": {"georel": "near;maxDistance==2000", "geometry": "Point", "coordinates": [-8.503, 41.202]}}),
        ),
        (
            "geo-far",
            json!({"geoQ": {"georel": "near;maxDistance==200", "geometry": "Point", "coordinates": [-8.503, 41.202], "geoproperty": "location"}}),
        ),
        ("scope-porto", json!({"scopeQ": "/Porto/#"})),
        ("scope-lisbon", json!({"scopeQ": "/Lisbon"})),
        (
            "management-after",
            json!({"temporalQ": {"timerel": "after", "timeAt": "2021-06-01T00:00:00Z", "timeproperty": "modifiedAt"}}),
        ),
        (
            "observation-after",
            json!({"temporalQ": {"timerel": "after", "timeAt": "2021-06-01T00:00:00Z", "timeproperty": "observedAt"}}),
        ),
        (
            "id-match",
            json!({"entities": [{"type": "Room", "id": "urn:ngsi-ld:Room:1"}]}),
        ),
        (
            "id-miss",
            json!({"entities": [{"type": "Room", "id": "urn:ngsi-ld:Other:1"}]}),
        ),
    ];
    for (name, extra) in &filters {
        subscribe(
            &s,
            &csub(
                &format!("urn:ngsi-ld:Subscription:{name}"),
                &rx.url,
                extra.clone(),
            ),
        )
        .await;
    }
    rx.nothing(300).await;
    register(
        &s,
        &json!({
            "id": "urn:ngsi-ld:ContextSourceRegistration:rooms",
            "type": "ContextSourceRegistration",
            "information": [{
                "entities": [{"type": "Room", "idPattern": "^urn:ngsi-ld:Room:.*"}],
                "propertyNames": ["temperature"],
            }],
            "endpoint": "http://rooms.example.org",
            "location": {"type": "Point", "coordinates": [-8.521, 41.2]},
            "scope": "/Porto/Centre",
            "sourceType": "model",
            "managementInterval": {"startAt": "2022-01-01T00:00:00Z"},
        }),
    )
    .await;
    let mut notified = Vec::new();
    while let Ok(Some(n)) =
        tokio::time::timeout(Duration::from_millis(1500), rx_next(&mut rx)).await
    {
        assert_eq!(n["triggerReason"], "newlyMatching", "{n}");
        notified.push(
            n["subscriptionId"]
                .as_str()
                .unwrap()
                .trim_start_matches("urn:ngsi-ld:Subscription:")
                .to_string(),
        );
    }
    notified.sort();
    let mut expected = vec![
        "watched-temperature",
        "q-model",
        "csf-endpoint",
        "geo-near",
        "scope-porto",
        "management-after",
        "id-match",
    ];
    expected.sort();
    assert_eq!(notified, expected);
}

/// The next notification body, if the receiver is open.
async fn rx_next(rx: &mut Receiver) -> Option<Value> {
    Some(rx.next(30).await.body)
}

#[actix_web::test]
async fn failed_deliveries_expiry_and_throttling() {
    let s = TestServer::start().await;
    // A receiver that is down: counted as failed.
    let failing = "urn:ngsi-ld:Subscription:down";
    subscribe(&s, &csub(failing, &dead_url(), json!({}))).await;
    // Throttled: one notification per 10 s.
    let mut rx = Receiver::ok().await;
    let throttled = "urn:ngsi-ld:Subscription:throttled";
    subscribe(&s, &csub(throttled, &rx.url, json!({"throttling": 10}))).await;
    // Expiring in two seconds.
    let mut late = Receiver::ok().await;
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let expiring = "urn:ngsi-ld:Subscription:expiring";
    subscribe(
        &s,
        &csub(expiring, &late.url, json!({"expiresAt": expires})),
    )
    .await;
    register(
        &s,
        &registration("urn:ngsi-ld:ContextSourceRegistration:t1", false),
    )
    .await;
    assert_notification(
        &rx.next(5).await.body,
        throttled,
        "newlyMatching",
        &["urn:ngsi-ld:ContextSourceRegistration:t1"],
    );
    late.next(5).await;
    register(
        &s,
        &registration("urn:ngsi-ld:ContextSourceRegistration:t2", false),
    )
    .await;
    rx.nothing(500).await;
    let mut got = Value::Null;
    for _ in 0..100 {
        got = s
            .get_json(&format!("/csourceSubscriptions/{failing}"))
            .await
            .1;
        if got["notification"]["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let notification = &got["notification"];
    assert_eq!(notification["status"], "failed", "{got}");
    assert!(
        notification["timesFailed"].as_u64().unwrap_or(0) >= 1,
        "{got}"
    );
    assert!(notification["lastFailure"].is_string(), "{got}");
    assert!(notification.get("lastSuccess").is_none(), "{got}");
    // Once expired, nothing more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    late.next(5).await; // the second registration, before expiry
    let (_, sub) = s
        .get_json(&format!("/csourceSubscriptions/{expiring}"))
        .await;
    assert_eq!(sub["status"], "expired", "{sub}");
    register(
        &s,
        &registration("urn:ngsi-ld:ContextSourceRegistration:t3", false),
    )
    .await;
    late.nothing(500).await;
}

#[actix_web::test]
async fn a_time_interval_notifies_the_matching_registrations_periodically() {
    let s = TestServer::start().await;
    let reg = "urn:ngsi-ld:ContextSourceRegistration:periodic";
    register(&s, &registration(reg, false)).await;
    let mut rx = Receiver::ok().await;
    let sub = "urn:ngsi-ld:Subscription:periodic";
    subscribe(&s, &csub(sub, &rx.url, json!({"timeInterval": 1}))).await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert_notification(&rx.next(5).await.body, sub, "newlyMatching", &[reg]);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "periodic, not all at once: {:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn tenants_notifications_compaction_and_restart() {
    let s = TestServer::start().await;
    let (_ctx_server, ctx) = common::vocab_context("https://example.org/twin#", &["Room"]);
    let mut rx = Receiver::ok().await;
    let sub = "urn:ngsi-ld:Subscription:tenant";
    // In tenant t1, with a user context and notifications as JSON-LD.
    let mut body = csub(sub, &rx.url, json!({}));
    body["notification"]["endpoint"]["accept"] = json!("application/ld+json");
    let r = s
        .req(Method::POST, "/csourceSubscriptions")
        .header("Content-Type", "application/json")
        .header("Link", common::link(&ctx))
        .header("NGSILD-Tenant", "t1")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (status, _) = s.get_json(&format!("/csourceSubscriptions/{sub}")).await;
    assert_eq!(status, 404, "another tenant does not see it");
    // A registration of the default tenant does not concern it.
    register(
        &s,
        &registration("urn:ngsi-ld:ContextSourceRegistration:default", false),
    )
    .await;
    rx.nothing(500).await;
    // Survives a restart.
    let s = s.restart().await;
    let r = s
        .req(Method::POST, "/csourceRegistrations")
        .header("Content-Type", "application/json")
        .header("Link", common::link(&ctx))
        .header("NGSILD-Tenant", "t1")
        .body(registration("urn:ngsi-ld:ContextSourceRegistration:t1", false).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let n = rx.next(10).await;
    assert_notification(
        &n.body,
        sub,
        "newlyMatching",
        &["urn:ngsi-ld:ContextSourceRegistration:t1"],
    );
    assert_eq!(n.header("ngsild-tenant"), Some("t1"));
    assert_eq!(n.header("content-type"), Some("application/ld+json"));
    assert_eq!(n.body["@context"], json!(ctx), "{}", n.body);
    // Compacted with the subscription's context: the type is the short name.
    assert_eq!(
        n.body["data"][0]["information"][0]["entities"][0]["type"], "Room",
        "{}",
        n.body
    );
}

#[actix_web::test]
async fn notifications_go_over_mqtt() {
    let (host, port) = common::services::mqtt_host_port();
    let s = TestServer::start().await;
    let topic = format!("twinlink-test/{}/csub", uuid::Uuid::new_v4().simple());
    let mut rx = mqtt_listener(&host, port, &topic).await;
    let sub = "urn:ngsi-ld:Subscription:mqtt";
    subscribe(
        &s,
        &csub(sub, &format!("mqtt://{host}:{port}/{topic}"), json!({})),
    )
    .await;
    let reg = "urn:ngsi-ld:ContextSourceRegistration:mqtt";
    register(&s, &registration(reg, false)).await;
    let message = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an MQTT notification arrives")
        .unwrap();
    assert_notification(&message["body"], sub, "newlyMatching", &[reg]);
    assert_eq!(message["metadata"]["Content-Type"], "application/json");
    let got = with_stats(&s, sub, 1).await;
    assert_eq!(got["notification"]["status"], "ok", "{got}");
}

/// Two instances on one PostgreSQL database: each registration change, committed through either,
/// is notified once, also to a registration subscription created on the other instance.
#[actix_web::test]
async fn two_instances_notify_each_registration_change_once() {
    let a = TestServer::start_on_postgres().await;
    let url = a.database_url.clone().expect("a PostgreSQL server");
    let b = TestServer::start_with(|s| s.database_url = Some(url.clone())).await;
    let mut rx = Receiver::ok().await;
    let sub = "urn:ngsi-ld:Subscription:shared";
    subscribe(&a, &csub(sub, &rx.url, json!({}))).await;
    let reg = "urn:ngsi-ld:ContextSourceRegistration:shared";
    // Created through the other instance at once, before it may have heard of the subscription.
    register(&b, &registration(reg, false)).await;
    assert_notification(&rx.next(5).await.body, sub, "newlyMatching", &[reg]);
    let path = format!("/csourceRegistrations/{reg}");
    patch(&a, &path, &json!({"endpoint": "http://127.0.0.1:9/a"})).await;
    patch(&b, &path, &json!({"endpoint": "http://127.0.0.1:9/b"})).await;
    for endpoint in ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"] {
        let n = rx.next(5).await.body;
        assert_notification(&n, sub, "updated", &[reg]);
        assert_eq!(n["data"][0]["endpoint"], endpoint);
    }
    assert_no_content(a.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_notification(&rx.next(5).await.body, sub, "noLongerMatching", &[reg]);
    rx.nothing(1500).await;
    let (status, _) = b.get_json(&format!("/csourceSubscriptions/{sub}")).await;
    assert_eq!(status, 200);
}

/// A deleted subscription notifies no more: a notification still being retried when it is
/// deleted (the registration deleted just before, as a client cleaning up does) is dropped.
#[actix_web::test]
async fn a_deleted_subscription_stops_retrying_its_notifications() {
    let s = TestServer::start().await;
    let reg = "urn:ngsi-ld:ContextSourceRegistration:retried";
    register(&s, &registration(reg, false)).await;
    // A receiver that answers 503: every notification is retried.
    let mut rx = Receiver::start(503, Duration::ZERO).await;
    let sub = "urn:ngsi-ld:Subscription:retried";
    subscribe(&s, &csub(sub, &rx.url, json!({}))).await;
    assert_notification(&rx.next(5).await.body, sub, "newlyMatching", &[reg]);
    assert_no_content(
        s.req(Method::DELETE, &format!("/csourceSubscriptions/{sub}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    rx.nothing(2000).await;
}
