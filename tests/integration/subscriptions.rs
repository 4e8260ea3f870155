//! Black-box tests of subscriptions and notifications (clause 5.8): the API and its validation,
//! persistence across restarts, every notification trigger, the filters and formats of
//! notifications, delivery statistics with a receiver that is down, a slow receiver that must not
//! delay a fast one, throttling, timeInterval, MQTT delivery through a real Mosquitto and, on
//! PostgreSQL, two broker instances on one database notifying each change once. Receivers are real
//! HTTP servers on loopback.

use crate::common;

use common::receiver::{dead_url, mqtt_listener, Receiver};
use common::{assert_problem, assert_status, read, TestServer};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Creates a subscription and returns its id (from the Location header).
pub(crate) async fn subscribe(s: &TestServer, sub: Value) -> String {
    let r = s
        .send(
            reqwest::Method::POST,
            "/subscriptions",
            "application/json",
            &sub,
        )
        .await;
    let (status, headers, body) = read(r).await;
    assert_eq!(status, 201, "subscription created: {body}");
    let location = headers["location"].to_str().unwrap().to_string();
    location.rsplit('/').next().unwrap().to_string()
}

/// A subscription to every Room notifying `url`, with the members of `extra` added.
pub(crate) fn sub(id: &str, url: &str, extra: Value) -> Value {
    let mut s = json!({
        "id": id,
        "type": "Subscription",
        "entities": [{"type": "Room"}],
        "notification": {"endpoint": {"uri": url}},
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

/// A Room with a temperature and a name.
pub(crate) fn room(id: &str, temp: f64) -> Value {
    json!({
        "id": id,
        "type": "Room",
        "temperature": {"type": "Property", "value": temp, "unitCode": "CEL"},
        "name": {"type": "Property", "value": "kitchen"},
    })
}

/// Updates attributes of an entity, asserting 204.
pub(crate) async fn patch_attrs(s: &TestServer, id: &str, body: Value) {
    let r = s
        .send(
            reqwest::Method::PATCH,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &body,
        )
        .await;
    assert_status(r, 204).await;
}

/// Creates an entity, asserting 201.
pub(crate) async fn create(s: &TestServer, e: Value) {
    assert_status(s.create(&e).await, 201).await;
}

#[actix_web::test]
async fn the_api_creates_reads_pages_updates_and_deletes_subscriptions() {
    let s = TestServer::start().await;
    let url = "http://127.0.0.1:9/notify";
    for i in 0..3 {
        subscribe(
            &s,
            sub(&format!("urn:ngsi-ld:Subscription:api{i}"), url, json!({})),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, one) = s
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:api1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], "urn:ngsi-ld:Subscription:api1");
    assert_eq!(one["type"], "Subscription");
    assert_eq!(one["entities"], json!([{"type": "Room"}]));
    assert_eq!(one["status"], "active");
    assert_eq!(one["notification"]["endpoint"]["uri"], url);
    assert_eq!(
        one["notificationTrigger"],
        json!(["attributeCreated", "attributeUpdated"])
    );

    // Pages in creation order, with a count and next/prev links.
    let r = s
        .client
        .get(s.url("/subscriptions?limit=2&offset=1&count=true"))
        .send()
        .await
        .unwrap();
    let (status, headers, page) = read(r).await;
    assert_eq!(status, 200);
    assert_eq!(headers["ngsild-results-count"], "3");
    let ids: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "urn:ngsi-ld:Subscription:api1",
            "urn:ngsi-ld:Subscription:api2"
        ]
    );

    // 409 for a known id, 404 for an unknown one.
    let r = s
        .send(
            reqwest::Method::POST,
            "/subscriptions",
            "application/json",
            &sub("urn:ngsi-ld:Subscription:api0", url, json!({})),
        )
        .await;
    assert_problem(r, 409, "AlreadyExists").await;
    let (status, _) = s
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:none")
        .await;
    assert_eq!(status, 404);

    // PATCH replaces the given members; the result is validated as a whole.
    let r = s
        .send(
            reqwest::Method::PATCH,
            "/subscriptions/urn:ngsi-ld:Subscription:api0",
            "application/json",
            &json!({"isActive": false, "q": "temperature>20"}),
        )
        .await;
    assert_status(r, 204).await;
    let (_, patched) = s
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:api0")
        .await;
    assert_eq!(patched["status"], "paused");
    assert_eq!(patched["q"], "temperature>20");
    let r = s
        .send(
            reqwest::Method::PATCH,
            "/subscriptions/urn:ngsi-ld:Subscription:api0",
            "application/json",
            &json!({"notification": {"format": "keyValues"}}),
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
    let r = s
        .send(
            reqwest::Method::PATCH,
            "/subscriptions/urn:ngsi-ld:Subscription:none",
            "application/json",
            &json!({"isActive": false}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;

    let r = s
        .client
        .delete(s.url("/subscriptions/urn:ngsi-ld:Subscription:api0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = s
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:api0")
        .await;
    assert_eq!(status, 404);
    let r = s
        .client
        .delete(s.url("/subscriptions/urn:ngsi-ld:Subscription:api0"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
}

#[actix_web::test]
async fn every_invalid_member_is_bad_request_data() {
    let s = TestServer::start().await;
    let url = "http://127.0.0.1:9/notify";
    let base = || sub("urn:ngsi-ld:Subscription:bad", url, json!({}));
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut with = |what: &'static str, f: &dyn Fn(&mut Value)| {
        let mut s = base();
        f(&mut s);
        cases.push((what, s));
    };
    with("bad q", &|s| s["q"] = json!("temperature>>"));
    with(
        "bad geoQ",
        &|s| {
            s["geoQ"] =
                json!({"georel": "near;maxDistance==1", "geometry": "Point", "coordinates": "nope"})
        },
    );
    with("bad scopeQ", &|s| s["scopeQ"] = json!("Madrid"));
    with("watchedAttributes with timeInterval", &|s| {
        s["watchedAttributes"] = json!(["temperature"]);
        s["timeInterval"] = json!(10);
    });
    with("bad endpoint URI", &|s| {
        s["notification"]["endpoint"]["uri"] = json!("not a uri")
    });
    with("ftp endpoint", &|s| {
        s["notification"]["endpoint"]["uri"] = json!("ftp://127.0.0.1/x")
    });
    with("mqtt endpoint without topic", &|s| {
        s["notification"]["endpoint"]["uri"] = json!("mqtt://127.0.0.1")
    });
    with("expiresAt in the past", &|s| {
        s["expiresAt"] = json!("2001-01-01T00:00:00Z")
    });
    with("unknown format", &|s| {
        s["notification"]["format"] = json!("compact")
    });
    with("unknown trigger", &|s| {
        s["notificationTrigger"] = json!(["entityChanged"])
    });
    with("showChanges with keyValues", &|s| {
        s["notification"]["format"] = json!("keyValues");
        s["notification"]["showChanges"] = json!(true);
    });
    with("attributes with pick", &|s| {
        s["notification"]["attributes"] = json!(["name"]);
        s["notification"]["pick"] = json!(["name"]);
    });
    with("same member in pick and omit", &|s| {
        s["notification"]["pick"] = json!(["name"]);
        s["notification"]["omit"] = json!(["name"]);
    });
    with("negative throttling", &|s| s["throttling"] = json!(-1));
    with("throttling with timeInterval", &|s| {
        s["throttling"] = json!(2);
        s["timeInterval"] = json!(10);
    });
    with("no endpoint", &|s| s["notification"] = json!({}));
    with("no entities nor watchedAttributes", &|s| {
        s.as_object_mut().unwrap().remove("entities");
    });
    with("wrong type", &|s| s["type"] = json!("Subscriptions"));
    with("unknown accept", &|s| {
        s["notification"]["endpoint"]["accept"] = json!("text/plain")
    });
    with("non-string receiverInfo", &|s| {
        s["notification"]["endpoint"]["receiverInfo"] = json!([{"key": "a", "value": 1}])
    });
    with("bad id", &|s| s["id"] = json!("no uri"));
    for (what, body) in cases {
        let r = s
            .send(
                reqwest::Method::POST,
                "/subscriptions",
                "application/json",
                &body,
            )
            .await;
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(got, 400, "{what}: {text}");
        assert!(text.contains("BadRequestData"), "{what}: {text}");
    }
    // Nothing of the refused subscriptions was stored.
    let (_, all) = s.get_json("/subscriptions").await;
    assert_eq!(all, json!([]));
}

#[actix_web::test]
async fn subscriptions_survive_a_restart_and_keep_notifying() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let database = common::fresh_database_url().await;
    let settings = |s: &mut twinlink::config::Settings| {
        s.data_dir = data_dir.clone();
        s.database_url = database.clone();
    };
    let mut rx = Receiver::ok().await;
    let (s, broker) = TestServer::start_with_broker(settings).await;
    subscribe(
        &s,
        sub("urn:ngsi-ld:Subscription:durable", &rx.url, json!({})),
    )
    .await;
    s.stop().await;
    drop(s);
    // The store is released once nothing (server worker, background task) holds the broker.
    let released = Arc::downgrade(&broker.into_inner());
    for _ in 0..100 {
        if released.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        released.upgrade().is_none(),
        "the stopped broker is released"
    );

    let s = TestServer::start_with(settings).await;
    let (status, got) = s
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:durable")
        .await;
    assert_eq!(status, 200, "{got}");
    create(&s, room("urn:ngsi-ld:Room:d1", 20.0)).await;
    // Changes made while the stored subscriptions load wait for them: the first write notifies.
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:d1",
        json!({"temperature": {"type": "Property", "value": 21}}),
    )
    .await;
    let n = rx.next(5).await;
    assert_eq!(n.entity()["temperature"]["value"], 21);
    assert_eq!(n.body["subscriptionId"], "urn:ngsi-ld:Subscription:durable");
}

/// Which triggers a sequence of writes raises, one subscription per trigger.
#[actix_web::test]
async fn every_notification_trigger_fires_on_its_change_only() {
    let s = TestServer::start().await;
    let triggers = [
        "entityCreated",
        "entityUpdated",
        "entityDeleted",
        "attributeCreated",
        "attributeUpdated",
        "attributeDeleted",
    ];
    let mut receivers = Vec::new();
    for t in triggers {
        let rx = Receiver::ok().await;
        subscribe(
            &s,
            sub(
                &format!("urn:ngsi-ld:Subscription:{t}"),
                &rx.url,
                json!({"notificationTrigger": [t]}),
            ),
        )
        .await;
        receivers.push((t, rx));
    }
    let id = "urn:ngsi-ld:Room:t1";
    // The writes, each with the triggers it should raise (independent of the implementation).
    let steps: Vec<(&str, Vec<&str>)> = vec![
        ("create", vec!["entityCreated"]),
        (
            "update temperature",
            vec!["entityUpdated", "attributeUpdated"],
        ),
        ("append humidity", vec!["entityUpdated", "attributeCreated"]),
        ("delete name", vec!["entityUpdated", "attributeDeleted"]),
        // Deleting the entity deletes its attributes too (attributeDeleted).
        ("delete entity", vec!["entityDeleted", "attributeDeleted"]),
    ];
    for (step, expected) in steps {
        match step {
            "create" => create(&s, room(id, 20.0)).await,
            "update temperature" => {
                patch_attrs(
                    &s,
                    id,
                    json!({"temperature": {"type": "Property", "value": 22}}),
                )
                .await
            }
            "append humidity" => {
                let r = s
                    .send(
                        reqwest::Method::POST,
                        &format!("/entities/{id}/attrs"),
                        "application/json",
                        &json!({"humidity": {"type": "Property", "value": 40}}),
                    )
                    .await;
                assert_status(r, 204).await;
            }
            "delete name" => {
                let r = s
                    .client
                    .delete(s.url(&format!("/entities/{id}/attrs/name")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
            _ => {
                let r = s
                    .client
                    .delete(s.url(&format!("/entities/{id}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
        }
        for (t, rx) in receivers.iter_mut() {
            if expected.contains(t) {
                let n = rx.next(5).await;
                assert_eq!(n.body["triggerReason"], *t, "{step}");
                assert_eq!(n.entity()["id"], id, "{step}");
                match (step, *t) {
                    ("delete name", _) => {
                        assert_eq!(n.entity()["name"]["value"], "urn:ngsi-ld:null", "{step}");
                        assert_eq!(n.entity()["humidity"]["value"], 40, "{step}");
                    }
                    ("delete entity", _) => {
                        assert!(n.entity()["deletedAt"].is_string(), "{step}: {}", n.body)
                    }
                    ("update temperature", _) => {
                        assert_eq!(n.entity()["temperature"]["value"], 22, "{step}")
                    }
                    _ => {}
                }
            } else {
                rx.nothing(0).await;
            }
        }
    }
    for (_, rx) in receivers.iter_mut() {
        rx.nothing(300).await;
    }
}

#[actix_web::test]
async fn filters_select_the_notified_entities() {
    let s = TestServer::start().await;
    let mut rx_q = Receiver::ok().await;
    let mut rx_geo = Receiver::ok().await;
    let mut rx_scope = Receiver::ok().await;
    let mut rx_pattern = Receiver::ok().await;
    let mut rx_watched = Receiver::ok().await;
    let mut rx_type = Receiver::ok().await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:q",
            &rx_q.url,
            json!({"q": "temperature>25"}),
        ),
    )
    .await;
    subscribe(&s, sub("urn:ngsi-ld:Subscription:geo", &rx_geo.url, json!({
        "geoQ": {"georel": "near;maxDistance==2000", "geometry": "Point", "coordinates": [-3.7, 40.4]}
    }))).await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:scope",
            &rx_scope.url,
            json!({"scopeQ": "/Madrid/#"}),
        ),
    )
    .await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:pattern",
            &rx_pattern.url,
            json!({
                "entities": [{"type": "Room", "idPattern": "^urn:ngsi-ld:Room:A"}]
            }),
        ),
    )
    .await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:watched",
            &rx_watched.url,
            json!({
                "watchedAttributes": ["name"]
            }),
        ),
    )
    .await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:type",
            &rx_type.url,
            json!({
                "entities": [{"type": "Office|Hall"}]
            }),
        ),
    )
    .await;

    let mut madrid = room("urn:ngsi-ld:Room:A1", 20.0);
    madrid["location"] =
        json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.701, 40.401]}});
    madrid["scope"] = json!("/Madrid/Centro");
    create(&s, madrid).await;
    let mut paris = room("urn:ngsi-ld:Room:B1", 20.0);
    paris["location"] =
        json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]}});
    paris["scope"] = json!("/Paris");
    create(&s, paris).await;
    let mut hall = room("urn:ngsi-ld:Hall:1", 20.0);
    hall["type"] = json!("Hall");
    create(&s, hall).await;

    // temperature 30 on both rooms: q matches both; geo and scope only the Madrid room.
    for id in ["urn:ngsi-ld:Room:A1", "urn:ngsi-ld:Room:B1"] {
        patch_attrs(
            &s,
            id,
            json!({"temperature": {"type": "Property", "value": 30}}),
        )
        .await;
    }
    let mut q_ids = vec![
        rx_q.next(5).await.entity()["id"].clone(),
        rx_q.next(5).await.entity()["id"].clone(),
    ];
    q_ids.sort_by_key(|v| v.to_string());
    assert_eq!(
        q_ids,
        [json!("urn:ngsi-ld:Room:A1"), json!("urn:ngsi-ld:Room:B1")]
    );
    assert_eq!(rx_geo.next(5).await.entity()["id"], "urn:ngsi-ld:Room:A1");
    assert_eq!(rx_scope.next(5).await.entity()["id"], "urn:ngsi-ld:Room:A1");
    assert_eq!(
        rx_pattern.next(5).await.entity()["id"],
        "urn:ngsi-ld:Room:A1"
    );
    // A temperature at or below 25 does not satisfy q.
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:A1",
        json!({"temperature": {"type": "Property", "value": 10}}),
    )
    .await;
    for rx in [&mut rx_geo, &mut rx_scope, &mut rx_pattern] {
        assert_eq!(rx.next(5).await.entity()["temperature"]["value"], 10);
    }
    // watchedAttributes: only a change of name notifies.
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:B1",
        json!({"name": {"type": "Property", "value": "hall"}}),
    )
    .await;
    assert_eq!(rx_watched.next(5).await.entity()["name"]["value"], "hall");
    // ... and the room still has temperature 30, so q notifies that change too.
    assert_eq!(rx_q.next(5).await.entity()["name"]["value"], "hall");
    // The type expression selects the Hall, never the rooms.
    patch_attrs(
        &s,
        "urn:ngsi-ld:Hall:1",
        json!({"name": {"type": "Property", "value": "big"}}),
    )
    .await;
    assert_eq!(rx_type.next(5).await.entity()["id"], "urn:ngsi-ld:Hall:1");
    rx_q.nothing(300).await;
    rx_geo.nothing(0).await;
    rx_scope.nothing(0).await;
    rx_pattern.nothing(0).await;
    rx_watched.nothing(0).await;
    rx_type.nothing(0).await;
}

#[actix_web::test]
async fn notifications_honour_format_projection_sysattrs_lang_and_show_changes() {
    let s = TestServer::start().await;
    let mut kv = Receiver::ok().await;
    let mut concise = Receiver::ok().await;
    let mut attrs = Receiver::ok().await;
    let mut picked = Receiver::ok().await;
    let mut sys = Receiver::ok().await;
    let mut changes = Receiver::ok().await;
    let mut ld = Receiver::ok().await;
    let mut info = Receiver::ok().await;
    let mut geo = Receiver::ok().await;
    let n = |rx: &Receiver, extra: Value| {
        let mut notification = json!({"endpoint": {"uri": rx.url}});
        for (k, v) in extra.as_object().unwrap() {
            notification[k] = v.clone();
        }
        notification
    };
    let subs = [
        (
            "kv",
            json!({"notification": n(&kv, json!({"format": "keyValues"}))}),
        ),
        (
            "concise",
            json!({"notification": n(&concise, json!({"format": "concise"})), "lang": "en"}),
        ),
        (
            "attrs",
            json!({"notification": n(&attrs, json!({"attributes": ["temperature"]}))}),
        ),
        (
            "pick",
            json!({"notification": n(&picked, json!({"pick": ["id", "name"]}))}),
        ),
        (
            "sys",
            json!({"notification": n(&sys, json!({"sysAttrs": true}))}),
        ),
        (
            "changes",
            json!({"notification": n(&changes, json!({"showChanges": true}))}),
        ),
        (
            "ld",
            json!({"notification": {"endpoint": {"uri": ld.url, "accept": "application/ld+json"}}}),
        ),
        (
            "info",
            json!({"notification": {"endpoint": {"uri": info.url, "receiverInfo": [{"key": "X-Auth", "value": "secret"}]}}}),
        ),
        (
            "geo",
            json!({"notification": {"format": "keyValues", "endpoint": {"uri": geo.url, "accept": "application/geo+json"}}}),
        ),
    ];
    for (name, extra) in subs {
        subscribe(
            &s,
            sub(
                &format!("urn:ngsi-ld:Subscription:{name}"),
                "http://127.0.0.1:9/x",
                extra,
            ),
        )
        .await;
    }
    let mut e = room("urn:ngsi-ld:Room:f1", 20.0);
    e["label"] =
        json!({"type": "LanguageProperty", "languageMap": {"en": "Kitchen", "es": "Cocina"}});
    let point = json!({"type": "Point", "coordinates": [2.0, 41.0]});
    e["location"] = json!({"type": "GeoProperty", "value": point});
    create(&s, e).await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:f1",
        json!({"temperature": {"type": "Property", "value": 23, "unitCode": "CEL"}}),
    )
    .await;

    let got = kv.next(5).await;
    assert_eq!(got.entity()["temperature"], 23);
    assert_eq!(got.entity()["name"], "kitchen");
    assert_eq!(got.body["type"], "Notification");
    assert_eq!(got.body["subscriptionId"], "urn:ngsi-ld:Subscription:kv");
    assert!(got.body["id"]
        .as_str()
        .unwrap()
        .starts_with("urn:ngsi-ld:Notification:"));
    assert!(got.body["notifiedAt"].is_string());
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert!(got.header("link").unwrap().contains("ngsi-ld-core-context"));

    let got = concise.next(5).await;
    assert_eq!(got.entity()["name"], "kitchen");
    assert_eq!(
        got.entity()["temperature"],
        json!({"value": 23, "unitCode": "CEL"})
    );
    assert_eq!(
        got.entity()["label"],
        json!({"value": "Kitchen", "lang": "en"})
    );

    let got = attrs.next(5).await;
    let keys: Vec<&String> = got.entity().as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "type", "temperature"]);

    let got = picked.next(5).await;
    assert_eq!(
        got.entity(),
        &json!({"id": "urn:ngsi-ld:Room:f1", "name": {"type": "Property", "value": "kitchen"}})
    );

    let got = sys.next(5).await;
    assert!(got.entity()["createdAt"].is_string());
    assert!(got.entity()["temperature"]["modifiedAt"].is_string());

    let got = changes.next(5).await;
    assert_eq!(got.entity()["temperature"]["value"], 23);
    assert_eq!(got.entity()["temperature"]["previousValue"], 20.0);
    assert!(got.entity()["name"].get("previousValue").is_none());

    let got = ld.next(5).await;
    assert_eq!(got.header("content-type"), Some("application/ld+json"));
    assert!(got.header("link").is_none());
    assert!(got.body["@context"]
        .to_string()
        .contains("ngsi-ld-core-context"));

    let got = info.next(5).await;
    assert_eq!(got.header("x-auth"), Some("secret"));

    let got = geo.next(5).await;
    assert_eq!(got.header("content-type"), Some("application/geo+json"));
    assert_eq!(got.entity()["type"], "Feature");
    assert_eq!(got.entity()["id"], "urn:ngsi-ld:Room:f1");
    assert_eq!(got.entity()["geometry"], point);
    assert_eq!(got.entity()["properties"]["temperature"], 23);
}

#[actix_web::test]
async fn paused_expired_and_resumed_subscriptions() {
    let s = TestServer::start().await;
    let mut rx = Receiver::ok().await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:p",
            &rx.url,
            json!({"isActive": false}),
        ),
    )
    .await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut rx_exp = Receiver::ok().await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:e",
            &rx_exp.url,
            json!({"expiresAt": soon}),
        ),
    )
    .await;
    create(&s, room("urn:ngsi-ld:Room:p1", 20.0)).await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:p1",
        json!({"temperature": {"type": "Property", "value": 1}}),
    )
    .await;
    assert_eq!(rx_exp.next(5).await.entity()["temperature"]["value"], 1);
    rx.nothing(500).await;
    let (_, got) = s
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:p")
        .await;
    assert_eq!(got["status"], "paused");

    let r = s
        .send(
            reqwest::Method::PATCH,
            "/subscriptions/urn:ngsi-ld:Subscription:p",
            "application/json",
            &json!({"isActive": true}),
        )
        .await;
    assert_status(r, 204).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:p1",
        json!({"temperature": {"type": "Property", "value": 2}}),
    )
    .await;
    assert_eq!(rx.next(5).await.entity()["temperature"]["value"], 2);
    rx_exp.nothing(500).await;
    let (_, got) = s
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:e")
        .await;
    assert_eq!(got["status"], "expired");
}

#[actix_web::test]
async fn a_receiver_that_is_down_is_retried_and_recorded_as_failed() {
    let s = TestServer::start().await;
    let mut ok = Receiver::ok().await;
    subscribe(
        &s,
        sub("urn:ngsi-ld:Subscription:down", &dead_url(), json!({})),
    )
    .await;
    subscribe(&s, sub("urn:ngsi-ld:Subscription:up", &ok.url, json!({}))).await;
    create(&s, room("urn:ngsi-ld:Room:r1", 20.0)).await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:r1",
        json!({"temperature": {"type": "Property", "value": 1}}),
    )
    .await;
    ok.next(5).await;
    // Retries take 250 ms + 1 s before the failure is final.
    let mut got = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = s
            .get_json("/subscriptions/urn:ngsi-ld:Subscription:down")
            .await
            .1;
        if got["notification"]["status"] == "failed" {
            break;
        }
    }
    let n = &got["notification"];
    assert_eq!(n["status"], "failed", "{got}");
    assert_eq!(n["timesFailed"], 1);
    assert_eq!(n["timesSent"], 1);
    assert!(n["lastFailure"].is_string());
    assert!(n.get("lastSuccess").is_none());
    let (_, up) = s
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:up")
        .await;
    assert_eq!(up["notification"]["status"], "ok");
    assert!(up["notification"]["lastSuccess"].is_string());
    // An HTTP 500 answer is retried: the receiver sees three attempts.
    let mut failing = Receiver::start(500, Duration::ZERO).await;
    subscribe(
        &s,
        sub("urn:ngsi-ld:Subscription:500", &failing.url, json!({})),
    )
    .await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:r1",
        json!({"temperature": {"type": "Property", "value": 2}}),
    )
    .await;
    for _ in 0..3 {
        failing.next(5).await;
    }
    failing.nothing(1500).await;
}

#[actix_web::test]
async fn a_slow_receiver_does_not_delay_a_fast_one() {
    let s = TestServer::start().await;
    let mut slow = Receiver::start(200, Duration::from_secs(3)).await;
    let mut fast = Receiver::ok().await;
    subscribe(
        &s,
        sub("urn:ngsi-ld:Subscription:slow", &slow.url, json!({})),
    )
    .await;
    subscribe(
        &s,
        sub("urn:ngsi-ld:Subscription:fast", &fast.url, json!({})),
    )
    .await;
    create(&s, room("urn:ngsi-ld:Room:s1", 20.0)).await;
    let started = std::time::Instant::now();
    for v in 1..=3 {
        patch_attrs(
            &s,
            "urn:ngsi-ld:Room:s1",
            json!({"temperature": {"type": "Property", "value": v}}),
        )
        .await;
    }
    // The writes are not held up by the slow receiver either.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "writes waited for delivery"
    );
    for v in 1..=3 {
        let n = fast.next(2).await;
        assert_eq!(n.entity()["temperature"]["value"], v, "in commit order");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the fast receiver waited"
    );
    assert_eq!(slow.next(5).await.entity()["temperature"]["value"], 1);
}

/// Sixteen subscriptions to one receiver that takes 300 ms to answer, on a broker with
/// `concurrency` notifications in flight per receiver: how long their sixteen notifications take.
async fn sixteen_notifications_to_a_slow_receiver(concurrency: usize) -> Duration {
    let s = TestServer::start_with(|st| st.notification_concurrency = concurrency).await;
    let mut slow = Receiver::start(200, Duration::from_millis(300)).await;
    for i in 0..16 {
        let entities =
            json!({"entities": [{"id": format!("urn:ngsi-ld:Room:side{i}"), "type": "Room"}]});
        subscribe(
            &s,
            sub(
                &format!("urn:ngsi-ld:Subscription:side{i}"),
                &slow.url,
                entities,
            ),
        )
        .await;
        create(&s, room(&format!("urn:ngsi-ld:Room:side{i}"), 20.0)).await;
    }
    let started = std::time::Instant::now();
    for i in 0..16 {
        patch_attrs(
            &s,
            &format!("urn:ngsi-ld:Room:side{i}"),
            json!({"temperature": {"type": "Property", "value": i}}),
        )
        .await;
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 16 {
        let n = slow.next(10).await;
        seen.insert(n.entity()["id"].as_str().unwrap().to_string());
    }
    started.elapsed()
}

#[actix_web::test]
async fn subscriptions_sharing_a_slow_receiver_are_notified_side_by_side() {
    // One after the other, sixteen would take 4.8 s.
    let took = sixteen_notifications_to_a_slow_receiver(32).await;
    assert!(
        took < Duration::from_secs(3),
        "sixteen notifications to one receiver took {took:?}: they were sent one at a time"
    );
}

#[actix_web::test]
async fn notification_concurrency_one_sends_to_a_receiver_one_at_a_time() {
    let took = sixteen_notifications_to_a_slow_receiver(1).await;
    assert!(
        took >= Duration::from_millis(16 * 300 - 100),
        "sixteen notifications took {took:?} with --notification-concurrency 1"
    );
}

#[actix_web::test]
async fn throttling_and_time_interval() {
    let s = TestServer::start().await;
    let mut throttled = Receiver::ok().await;
    let mut periodic = Receiver::ok().await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:thr",
            &throttled.url,
            json!({"throttling": 2}),
        ),
    )
    .await;
    create(&s, room("urn:ngsi-ld:Room:i1", 20.0)).await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:int",
            &periodic.url,
            json!({"timeInterval": 1}),
        ),
    )
    .await;
    for v in 1..=3 {
        patch_attrs(
            &s,
            "urn:ngsi-ld:Room:i1",
            json!({"temperature": {"type": "Property", "value": v}}),
        )
        .await;
    }
    assert_eq!(throttled.next(5).await.entity()["temperature"]["value"], 1);
    throttled.nothing(1000).await;
    // Periodic notifications carry every matching entity, whether it changed or not.
    let first = periodic.next(3).await;
    let second = periodic.next(3).await;
    for n in [first, second] {
        assert_eq!(n.entity()["id"], "urn:ngsi-ld:Room:i1");
        assert!(n.body.get("triggerReason").is_none());
    }
}

#[actix_web::test]
async fn batch_writes_and_tenants_notify_through_the_same_path() {
    let s = TestServer::start().await;
    let mut rx = Receiver::ok().await;
    let mut rx_tenant = Receiver::ok().await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:batch",
            &rx.url,
            json!({"notificationTrigger": ["entityCreated"]}),
        ),
    )
    .await;
    let r = s
        .client
        .post(s.url("/subscriptions"))
        .header("Content-Type", "application/json")
        .header("NGSILD-Tenant", "other")
        .body(
            sub(
                "urn:ngsi-ld:Subscription:tenant",
                &rx_tenant.url,
                json!({"notificationTrigger": ["entityCreated"]}),
            )
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .send(
            reqwest::Method::POST,
            "/entityOperations/create",
            "application/json",
            &json!([
                room("urn:ngsi-ld:Room:b1", 1.0),
                room("urn:ngsi-ld:Room:b2", 2.0)
            ]),
        )
        .await;
    assert_eq!(r.status(), 201);
    let mut ids = vec![
        rx.next(5).await.entity()["id"].clone(),
        rx.next(5).await.entity()["id"].clone(),
    ];
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(
        ids,
        [json!("urn:ngsi-ld:Room:b1"), json!("urn:ngsi-ld:Room:b2")]
    );
    rx_tenant.nothing(300).await;
    let r = s
        .client
        .post(s.url("/entities"))
        .header("Content-Type", "application/json")
        .header("NGSILD-Tenant", "other")
        .body(room("urn:ngsi-ld:Room:t1", 1.0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let n = rx_tenant.next(5).await;
    assert_eq!(n.entity()["id"], "urn:ngsi-ld:Room:t1");
    assert_eq!(n.header("ngsild-tenant"), Some("other"));
    rx.nothing(300).await;
    let (_, list) = s.get_json("/subscriptions").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "tenants do not see each other's subscriptions"
    );
}

#[actix_web::test]
async fn mqtt_notifications_with_both_versions_and_qos() {
    let (host, port) = common::services::mqtt_host_port();
    let s = TestServer::start().await;
    let cases = [
        ("v3q0", None, "0"),
        ("v3q1", Some("mqtt3.1.1"), "1"),
        ("v5q1", Some("mqtt5.0"), "1"),
    ];
    let mut listeners = Vec::new();
    for (name, version, qos) in cases {
        let topic = format!("twinlink-test/{}/{name}", uuid::Uuid::new_v4().simple());
        let rx = mqtt_listener(&host, port, &topic).await;
        let mut notifier_info = vec![json!({"key": "MQTT-QoS", "value": qos})];
        if let Some(v) = version {
            notifier_info.push(json!({"key": "MQTT-Version", "value": v}));
        }
        subscribe(
            &s,
            sub(
                &format!("urn:ngsi-ld:Subscription:{name}"),
                "http://127.0.0.1:9/x",
                json!({"notification": {"format": "keyValues", "endpoint": {
                    "uri": format!("mqtt://{host}:{port}/{topic}"),
                    "notifierInfo": notifier_info,
                    "receiverInfo": [{"key": "X-Key", "value": name}],
                }}}),
            ),
        )
        .await;
        listeners.push((name, rx));
    }
    create(&s, room("urn:ngsi-ld:Room:m1", 20.0)).await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:m1",
        json!({"temperature": {"type": "Property", "value": 7}}),
    )
    .await;
    for (name, rx) in listeners.iter_mut() {
        let message = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{name}: an MQTT notification arrives"))
            .unwrap();
        assert_eq!(message["body"]["type"], "Notification", "{name}");
        assert_eq!(
            message["body"]["subscriptionId"],
            format!("urn:ngsi-ld:Subscription:{name}")
        );
        assert_eq!(message["body"]["data"][0]["temperature"], 7, "{name}");
        assert_eq!(
            message["metadata"]["Content-Type"], "application/json",
            "{name}"
        );
        assert_eq!(message["metadata"]["X-Key"], *name);
    }
    // The statistics count MQTT deliveries too.
    let mut got = Value::Null;
    for _ in 0..20 {
        got = s
            .get_json("/subscriptions/urn:ngsi-ld:Subscription:v5q1")
            .await
            .1;
        if got["notification"]["status"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got["notification"]["status"], "ok", "{got}");
    assert_eq!(got["notification"]["timesSent"], 1);
}

/// Two instances on one PostgreSQL database: a change written through either is notified once.
#[actix_web::test]
async fn two_instances_on_one_database_notify_each_change_once() {
    let Some(database) = common::fresh_database_url().await else {
        return; // the embedded store is one instance by construction
    };
    let a = TestServer::start_with(|s| s.database_url = Some(database.clone())).await;
    let b = TestServer::start_with(|s| s.database_url = Some(database.clone())).await;
    let mut rx = Receiver::ok().await;
    subscribe(
        &a,
        sub(
            "urn:ngsi-ld:Subscription:multi",
            &rx.url,
            json!({"notificationTrigger": ["entityCreated", "attributeUpdated"]}),
        ),
    )
    .await;
    create(&b, room("urn:ngsi-ld:Room:x1", 0.0)).await;
    assert_eq!(rx.next(5).await.body["triggerReason"], "entityCreated");
    for v in 1..=5 {
        let s = if v % 2 == 0 { &a } else { &b };
        patch_attrs(
            s,
            "urn:ngsi-ld:Room:x1",
            json!({"temperature": {"type": "Property", "value": v}}),
        )
        .await;
    }
    for v in 1..=5 {
        let n = rx.next(5).await;
        assert_eq!(
            n.entity()["temperature"]["value"],
            v,
            "once each, in commit order"
        );
    }
    rx.nothing(1000).await;
    // The subscription created on one instance is readable on the other.
    let (status, _) = b
        .get_json("/subscriptions/urn:ngsi-ld:Subscription:multi")
        .await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn notifications_are_compacted_with_the_jsonld_context() {
    let ctx = common::ContextServer::start();
    ctx.serve(
        "/notify-ctx.jsonld",
        &json!({"@context": {"T": "https://uri.etsi.org/ngsi-ld/default-context/temperature"}}),
    );
    let s = TestServer::start().await;
    let mut rx = Receiver::ok().await;
    let mut rx_ld = Receiver::ok().await;
    let url = ctx.url("/notify-ctx.jsonld");
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:jc",
            &rx.url,
            json!({"jsonldContext": url}),
        ),
    )
    .await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:jcld",
            "http://127.0.0.1:9/x",
            json!({"jsonldContext": url, "notification": {"endpoint": {"uri": rx_ld.url, "accept": "application/ld+json"}}}),
        ),
    )
    .await;
    create(&s, room("urn:ngsi-ld:Room:j1", 20.0)).await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:j1",
        json!({"temperature": {"type": "Property", "value": 5}}),
    )
    .await;
    let n = rx.next(5).await;
    assert_eq!(n.entity()["T"]["value"], 5, "{}", n.body);
    assert!(n.header("link").unwrap().contains(&url));
    let n = rx_ld.next(5).await;
    assert_eq!(n.entity()["T"]["value"], 5);
    assert_eq!(n.body["@context"], json!(url));
    assert_eq!(n.entity()["@context"], json!(url));
    // An unreachable jsonldContext refuses the subscription.
    let r = s
        .send(
            reqwest::Method::POST,
            "/subscriptions",
            "application/json",
            &sub(
                "urn:ngsi-ld:Subscription:jc2",
                &rx.url,
                json!({"jsonldContext": ctx.url("/missing.jsonld")}),
            ),
        )
        .await;
    assert!(
        r.status().as_u16() >= 400,
        "unretrievable jsonldContext refused"
    );
}

#[actix_web::test]
async fn a_receiver_that_redirects_is_not_followed() {
    // One outbound policy (issue 21, item 7): a notification is not sent on where a redirect
    // points; the redirect is a failed delivery.
    let s = TestServer::start().await;
    let mut elsewhere = Receiver::ok().await;
    let moved = common::ContextServer::start();
    moved.serve_raw(
        "/notify",
        307,
        &format!("application/json\r\nLocation: {}", elsewhere.url),
        "",
        0,
    );
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:moved",
            &moved.url("/notify"),
            json!({}),
        ),
    )
    .await;
    create(&s, room("urn:ngsi-ld:Room:r7", 20.0)).await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:r7",
        json!({"temperature": {"type": "Property", "value": 3}}),
    )
    .await;
    elsewhere.nothing(2000).await;
    assert!(moved.hits("/notify") >= 1, "the receiver was asked");
}

/// A subscription's EntitySelectors are read as a query's (5.2.33): an id may be a list of URIs,
/// and a selector that a query refuses is refused.
#[actix_web::test]
async fn entity_selectors_of_subscriptions_are_read_as_those_of_queries() {
    let s = TestServer::start().await;
    let mut rx = Receiver::ok().await;
    let (a, b) = ("urn:ngsi-ld:Room:sel-a", "urn:ngsi-ld:Room:sel-b");
    let selectors = json!([{"type": "Room", "id": [a, b]}]);
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:ids",
            &rx.url,
            json!({"entities": selectors, "notificationTrigger": ["entityCreated"]}),
        ),
    )
    .await;
    for id in ["urn:ngsi-ld:Room:sel-c", b, a] {
        create(&s, room(id, 20.0)).await;
    }
    let mut got = vec![rx.next(5).await.entity()["id"].clone()];
    got.push(rx.next(5).await.entity()["id"].clone());
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, vec![json!(a), json!(b)]);
    rx.nothing(300).await;

    for bad in [
        json!([{"type": "Room", "id": [1]}]),
        json!([{"id": a}]),
        json!([{"type": "Room", "idPattern": "a**"}]),
    ] {
        let query = json!({"type": "Query", "entities": bad});
        let subscription = sub(
            "urn:ngsi-ld:Subscription:bad",
            &rx.url,
            json!({"entities": bad}),
        );
        for (path, body) in [
            ("/entityOperations/query", query),
            ("/subscriptions", subscription),
        ] {
            let r = s
                .send(reqwest::Method::POST, path, "application/json", &body)
                .await;
            assert_problem(r, 400, "BadRequestData").await;
        }
    }
}

#[actix_web::test]
async fn a_temporal_query_notifies_only_changes_observed_within_its_range() {
    let s = TestServer::start().await;
    let mut rx = Receiver::ok().await;
    subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:temporalq",
            &rx.url,
            json!({"temporalQ": {"timerel": "between", "timeAt": "2030-01-01T00:00:00Z",
                                 "endTimeAt": "2030-01-02T00:00:00Z"}}),
        ),
    )
    .await;
    create(&s, room("urn:ngsi-ld:Room:tq", 20.0)).await;
    let observed =
        |t: &str, v: f64| json!({"temperature": {"type": "Property", "value": v, "observedAt": t}});
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:tq",
        observed("2029-12-31T23:00:00Z", 21.0),
    )
    .await;
    rx.nothing(400).await;
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:tq",
        observed("2030-01-01T12:00:00Z", 22.0),
    )
    .await;
    let n = rx.next(5).await;
    assert_eq!(n.entity()["temperature"]["value"], 22.0, "{}", n.body);
    patch_attrs(
        &s,
        "urn:ngsi-ld:Room:tq",
        observed("2030-01-03T00:00:00Z", 23.0),
    )
    .await;
    rx.nothing(400).await;
}
