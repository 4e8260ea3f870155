//! Black-box tests of subscriptions at context sources (5.8.1.4, 5.8.5.4, 5.8.6): two twinlink
//! instances, B registered at A as a source offering createSubscription; a subscription at A is
//! copied to B with A's remote-notify endpoint, B's notifications reach A's subscriber under A's
//! subscription id (merged and filtered at A with splitEntities), and the deletion at A deletes
//! the copy at B.

use crate::common;
use crate::federation::endpoint;

use common::receiver::Receiver;
use common::{assert_problem, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const JSON: &str = "application/json";

/// Registers `source` at `at` for Vehicles, with the default operations (federationOps, which
/// include createSubscription).
async fn register(at: &TestServer, id: &str, source: &TestServer) {
    let body = json!({"id": id, "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Vehicle"}]}], "endpoint": endpoint(source)});
    let r = at
        .send(Method::POST, "/csourceRegistrations", JSON, &body)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

async fn subscribe(at: &TestServer, body: Value) {
    let r = at.send(Method::POST, "/subscriptions", JSON, &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// The subscriptions of a collection, polled until `done` holds (at most 10 s).
async fn until(s: &TestServer, path: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = s.get_json(path).await;
        assert_eq!(status, 200, "{body}");
        let list = body.as_array().cloned().unwrap_or_default();
        if done(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn set_speed(s: &TestServer, id: &str, speed: i64) {
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs"),
            JSON,
            &json!({"speed": {"type": "Property", "value": speed}}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
}

#[actix_web::test]
async fn a_subscription_is_copied_to_the_source_which_notifies_the_subscriber_until_deleted() {
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    let mut subscriber = Receiver::ok().await;
    let car = "urn:ngsi-ld:Vehicle:remote-1";
    let r = b
        .create(&json!({"id": car, "type": "Vehicle", "speed": {"type": "Property", "value": 10}}))
        .await;
    assert_eq!(r.status(), 201);
    register(&a, "urn:ngsi-ld:ContextSourceRegistration:b", &b).await;
    let sub = "urn:ngsi-ld:Subscription:at-a";
    subscribe(
        &a,
        json!({"id": sub, "type": "Subscription", "entities": [{"type": "Vehicle"}],
               "q": "speed>50", "notification": {"format": "keyValues",
               "endpoint": {"uri": subscriber.url}}}),
    )
    .await;

    let copies = until(&b, "/subscriptions", |l| !l.is_empty()).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    assert_ne!(copy["id"], sub);
    assert_eq!(copy["q"], "speed>50");
    assert_eq!(
        copy["notification"]["endpoint"]["uri"],
        format!("{}/ngsi-ld/ex/remote-notify", endpoint(&a))
    );
    let internal = until(&a, "/csourceSubscriptions", |l| !l.is_empty()).await;
    assert_eq!(internal.len(), 1, "{internal:?}");

    // The source filters by q: 20 is not notified, 80 is, under A's subscription id.
    set_speed(&b, car, 20).await;
    subscriber.nothing(500).await;
    set_speed(&b, car, 80).await;
    let n = subscriber.next(10).await;
    assert_eq!(n.body["subscriptionId"], sub, "{}", n.body);
    assert_eq!(n.entity()["id"], car);
    assert_eq!(
        n.entity()["speed"],
        80,
        "keyValues as A's subscription asks"
    );

    let r = a
        .req(Method::DELETE, &format!("/subscriptions/{sub}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    until(&b, "/subscriptions", |l| l.is_empty()).await;
    let (_, left) = a.get_json("/csourceSubscriptions").await;
    assert_eq!(left, json!([]));
    // A notification for the forgotten copy is refused.
    let late = json!({"type": "Notification", "subscriptionId": copy["id"], "data": []});
    let r = a
        .client
        .post(format!("{}/ngsi-ld/ex/remote-notify", endpoint(&a)))
        .json(&late)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
}

#[actix_web::test]
async fn with_split_entities_the_fragments_are_merged_and_filtered_here() {
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    let mut subscriber = Receiver::ok().await;
    let car = "urn:ngsi-ld:Vehicle:split-1";
    let brand = json!({"type": "Property", "value": "Tesla"});
    let r = a
        .create(&json!({"id": car, "type": "Vehicle", "brandName": brand}))
        .await;
    assert_eq!(r.status(), 201);
    let r = b
        .create(&json!({"id": car, "type": "Vehicle", "speed": {"type": "Property", "value": 10}}))
        .await;
    assert_eq!(r.status(), 201);
    register(&a, "urn:ngsi-ld:ContextSourceRegistration:b-split", &b).await;
    let sub = "urn:ngsi-ld:Subscription:split-at-a";
    subscribe(
        &a,
        json!({"id": sub, "type": "Subscription", "entities": [{"type": "Vehicle"}],
               "q": "speed>50;brandName==\"Tesla\"", "splitEntities": true,
               "notification": {"endpoint": {"uri": subscriber.url}}}),
    )
    .await;
    let copies = until(&b, "/subscriptions", |l| !l.is_empty()).await;
    assert!(copies[0].get("q").is_none(), "{copies:?}");
    assert_eq!(copies[0]["splitEntities"], true);

    // B's fragment alone has no brandName: only the merge with A's passes q.
    set_speed(&b, car, 99).await;
    let n = subscriber.next(10).await;
    assert_eq!(n.body["subscriptionId"], sub);
    assert_eq!(n.entity()["brandName"]["value"], "Tesla", "{}", n.body);
    assert_eq!(n.entity()["speed"]["value"], 99);
    // 10 fails q after the merge: nothing is sent.
    set_speed(&b, car, 10).await;
    subscriber.nothing(700).await;
}

#[actix_web::test]
async fn a_source_registered_later_gets_the_subscription_through_the_internal_one() {
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    let subscriber = Receiver::ok().await;
    subscribe(
        &a,
        json!({"type": "Subscription", "entities": [{"type": "Vehicle"}],
               "notification": {"endpoint": {"uri": subscriber.url}}}),
    )
    .await;
    let (_, internal) = a.get_json("/csourceSubscriptions").await;
    assert_eq!(internal.as_array().map(Vec::len), Some(1), "{internal}");
    register(&a, "urn:ngsi-ld:ContextSourceRegistration:b-later", &b).await;
    let copies = until(&b, "/subscriptions", |l| l.len() == 1).await;
    assert_eq!(copies[0]["entities"][0]["type"], "Vehicle");

    // local=true keeps a subscription off the sources.
    let r = a
        .client
        .post(a.url("/subscriptions?local=true"))
        .json(
            &json!({"type": "Subscription", "entities": [{"type": "Vehicle"}],
                      "notification": {"endpoint": {"uri": subscriber.url}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, copies) = b.get_json("/subscriptions").await;
    assert_eq!(copies.as_array().map(Vec::len), Some(1), "{copies}");
}

#[actix_web::test]
async fn a_malformed_remote_notification_is_bad_request_data() {
    let a = TestServer::start().await;
    let url = format!("{}/ngsi-ld/ex/remote-notify", endpoint(&a));
    for body in [
        json!({"type": "Notification", "data": []}),
        json!(["not", "a", "notification"]),
    ] {
        let r = a.client.post(&url).json(&body).send().await.unwrap();
        assert_problem(r, 400, "BadRequestData").await;
    }
    let r = a
        .client
        .post(&url)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "InvalidRequest").await;
}
