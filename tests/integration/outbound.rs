//! The outbound-request guard: link-local and metadata endpoints are refused at creation in any
//! mode; loopback ones under `--outbound private=deny` unless the allow-list names them; context
//! URLs obey the same policy, also where a context redirects to. No test sends anything to a refused address: each is refused
//! before a connection is made.

use crate::common::receiver::Receiver;
use crate::common::{assert_problem, vocab_context, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use twinlink::outbound::Policy;

fn subscription(endpoint: &str) -> Value {
    json!({
        "type": "Subscription", "entities": [{"type": "Sensor"}],
        "notification": {"endpoint": {"uri": endpoint}}
    })
}

fn registration(endpoint: &str) -> Value {
    json!({
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Crane"}]}],
        "endpoint": endpoint
    })
}

async fn post(s: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    s.send(Method::POST, path, "application/json", body).await
}

/// Asserts a 400 BadRequestData that names the outbound policy.
async fn assert_refused(r: reqwest::Response) {
    let problem = assert_problem(r, 400, "BadRequestData").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("outbound policy"), "{detail}");
}

async fn production(allow: &[&str]) -> TestServer {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    TestServer::start_with(move |s| {
        s.outbound = Policy::new(Some("private=deny"), &allow).unwrap();
    })
    .await
}

#[actix_web::test]
async fn metadata_and_link_local_endpoints_are_refused_in_every_mode() {
    let local = TestServer::start().await;
    let production = production(&["169.254.0.0/16"]).await;
    for s in [&local, &production] {
        for endpoint in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.0.1/",
            "http://[fe80::1]:8080/notify",
            "http://[::ffff:169.254.169.254]/",
            "http://100.100.100.200/",
            "http://192.0.0.192/",
            "http://[fd00:ec2::254]/",
            "mqtt://169.254.169.254/notify",
        ] {
            assert_refused(post(s, "/subscriptions", &subscription(endpoint)).await).await;
        }
        assert_refused(
            post(
                s,
                "/csourceSubscriptions",
                &json!({
                    "type": "Subscription", "entities": [{"type": "Crane"}],
                    "notification": {"endpoint": {"uri": "http://169.254.169.254/"}}
                }),
            )
            .await,
        )
        .await;
        assert_refused(
            post(
                s,
                "/csourceRegistrations",
                &registration("http://169.254.169.254"),
            )
            .await,
        )
        .await;
    }
    // The zero-setup default lets loopback endpoints be, by address or by name.
    for endpoint in ["http://127.0.0.1:9/notify", "http://localhost:9/notify"] {
        let r = post(&local, "/subscriptions", &subscription(endpoint)).await;
        assert_eq!(r.status(), 201, "{endpoint}");
    }
    // An update to a refused endpoint is refused too.
    let r = post(
        &local,
        "/subscriptions",
        &subscription("http://127.0.0.1:9/n"),
    )
    .await;
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap();
    let r = local
        .send(
            Method::PATCH,
            &format!("/subscriptions/{id}"),
            "application/json",
            &json!({"notification": {"endpoint": {"uri": "http://169.254.169.254/"}}}),
        )
        .await;
    assert_refused(r).await;
}

#[actix_web::test]
async fn loopback_and_private_ranges_are_refused_in_production_unless_allowed() {
    let s = production(&[]).await;
    for endpoint in [
        "http://127.0.0.1:9/notify",
        "http://localhost:9/notify",
        "http://[::1]:9/notify",
        "http://0.0.0.0:9/notify",
        "http://10.0.0.8/notify",
        "http://172.16.0.1/notify",
        "http://172.31.255.254/notify",
        "http://192.168.1.1/notify",
        "http://100.64.0.1/notify",
        "http://[fc00::1]/notify",
        "http://[fd12:3456::1]/notify",
        "http://[::ffff:192.168.1.1]/notify",
        "mqtt://10.0.0.8/notify",
    ] {
        assert_refused(post(&s, "/subscriptions", &subscription(endpoint)).await).await;
    }
    assert_refused(
        post(
            &s,
            "/csourceRegistrations",
            &registration("http://127.0.0.1:9"),
        )
        .await,
    )
    .await;
    // A context at a loopback address is refused like an endpoint.
    let (_context_server, context) = vocab_context("https://vocab.test/", &["temperature"]);
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &context,
            &json!({"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor",
                    "temperature": {"type": "Property", "value": 1}}),
        )
        .await;
    assert_refused(r).await;

    // The allow-list opens loopback again: subscriptions are made and delivered.
    let s = production(&["127.0.0.0/8"]).await;
    let mut receiver = Receiver::ok().await;
    let r = post(&s, "/subscriptions", &subscription(&receiver.url)).await;
    assert_eq!(r.status(), 201);
    assert_refused(post(&s, "/subscriptions", &subscription("http://[::1]:9/n")).await).await;
    let r = s
        .create(&json!({"id": "urn:ngsi-ld:Sensor:2", "type": "Sensor",
                        "temperature": {"type": "Property", "value": 1}}))
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .send(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Sensor:2/attrs",
            "application/json",
            &json!({"temperature": {"type": "Property", "value": 2}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let notification = receiver.next(5).await;
    assert_eq!(notification.entity()["id"], "urn:ngsi-ld:Sensor:2");
}

#[actix_web::test]
async fn a_context_redirected_to_a_refused_address_is_refused() {
    // The context server itself (127.0.0.1) is allowed; where it redirects to is checked again.
    let s = production(&["127.0.0.1/32"]).await;
    let (contexts, context) = vocab_context("https://vocab.test/", &["temperature"]);
    let entity = |i: u32| {
        json!({"id": format!("urn:ngsi-ld:Sensor:r{i}"), "type": "Sensor",
               "temperature": {"type": "Property", "value": 1}})
    };
    let targets = [
        "http://10.0.0.8/context.jsonld",
        "http://[::1]:9/context.jsonld",
        "http://169.254.169.254/context.jsonld",
    ];
    for (i, target) in targets.into_iter().enumerate() {
        let path = format!("/redirect-{i}");
        contexts.redirect(&path, target);
        let r = s
            .send_linked(Method::POST, "/entities", &contexts.url(&path), &entity(0))
            .await;
        assert_refused(r).await;
        assert_eq!(
            contexts.hits(&path),
            1,
            "{target}: the redirect was followed to it"
        );
    }
    // A redirect to an allowed address is followed.
    contexts.redirect("/redirect-ok", &context);
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &contexts.url("/redirect-ok"),
            &entity(1),
        )
        .await;
    assert_eq!(r.status(), 201);
}
