//! The outbound-request guard: link-local and metadata endpoints are refused at creation in any
//! mode; loopback ones under `--outbound private=deny` unless the allow-list names them; context
//! URLs obey the same policy, also where a context redirects to; a notification refused at
//! delivery time is logged; a JWKS at a refused address stops the start-up, and one whose name
//! resolves to a refused address is logged at its first fetch. No test sends anything to a
//! refused address: each is refused before a connection is made.

use crate::common::jwt::{self, claims, Signer};
use crate::common::logs::{capture, Logged};
use crate::common::receiver::Receiver;
use crate::common::{assert_problem, vocab_context, ContextServer, TestServer};
use jsonwebtoken::Algorithm;
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

/// Waits up to ten seconds for a logged event of which `found` approves.
async fn logged(log: &std::sync::Mutex<Vec<Logged>>, found: impl Fn(&Logged) -> bool) -> Logged {
    for _ in 0..100 {
        if let Some(event) = log.lock().unwrap().iter().find(|e| found(e)) {
            return event.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not logged; the log: {:#?}", log.lock().unwrap());
}

#[actix_web::test]
async fn a_notification_refused_at_delivery_time_is_logged() {
    let log = capture();
    // Made under the local default, which lets loopback receivers through; delivered by a
    // broker restarted on the same store under the production policy.
    let mut receiver = Receiver::ok().await;
    let s = TestServer::start().await;
    let r = post(&s, "/subscriptions", &subscription(&receiver.url)).await;
    assert_eq!(r.status(), 201);
    let s = s
        .restart_with(|s| s.outbound = Policy::new(Some("private=deny"), &[]).unwrap())
        .await;
    let sensor = json!({"id": "urn:ngsi-ld:Sensor:d1", "type": "Sensor"});
    assert_eq!(s.create(&sensor).await.status(), 201);
    // An attribute created: what the subscription's default triggers notify.
    let r = s
        .send(
            Method::POST,
            "/entities/urn:ngsi-ld:Sensor:d1/attrs",
            "application/json",
            &json!({"temperature": {"type": "Property", "value": 1}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let event = logged(&log, |e| {
        e.fields.get("message").map(String::as_str) == Some("notification failed")
    })
    .await;
    assert!(
        event.fields["endpoint"].starts_with(&receiver.url),
        "{event:?}"
    );
    assert!(
        event.fields["error"].contains("refused by the outbound policy"),
        "{event:?}"
    );
    receiver.nothing(300).await;
}

/// Auth settings taking the keys from the JWKS at `url`.
fn jwks_auth(url: String) -> twinlink::auth::AuthSettings {
    twinlink::auth::AuthSettings {
        jwks_url: Some(url),
        key_file: None,
        ..jwt::key_file_auth(Default::default())
    }
}

#[actix_web::test]
async fn a_jwks_at_a_refused_address_stops_the_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let settings = twinlink::config::Settings {
        data_dir: dir.path().join("data"),
        auth: jwks_auth("http://10.0.0.7/realms/city/certs".into()),
        outbound: Policy::new(Some("private=deny"), &[]).unwrap(),
        ..Default::default()
    };
    let broker = twinlink::server::app_state(settings, twinlink::server::DatabaseWait::Wait)
        .await
        .expect("the store opens");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let Err(error) = twinlink::server::serve(listener, actix_web::web::Data::new(broker)) else {
        panic!("the broker started with a JWKS URL the outbound policy refuses");
    };
    assert!(
        error.starts_with(
            "--jwks-url http://10.0.0.7/realms/city/certs: refused by the outbound policy"
        ) && error.contains("--outbound-allow"),
        "{error}"
    );
}

#[actix_web::test]
async fn a_jwks_whose_name_resolves_to_a_refused_address_is_logged_at_its_first_fetch() {
    let log = capture();
    let idp = ContextServer::start();
    let signer = Signer::of(Algorithm::ES256).with_kid("k1");
    let keys = json!({ "keys": [signer.jwk()] }).to_string();
    idp.serve_raw("/jwks.json", 200, "application/json", keys, 0);
    // The provider by name: the start-up cannot judge it without resolving it.
    let url = idp.url("/jwks.json").replace("127.0.0.1", "localhost");
    let auth = jwks_auth(url.clone());
    let s = TestServer::start_with(move |s| {
        s.auth = auth;
        s.outbound = Policy::new(Some("private=deny"), &[]).unwrap();
    })
    .await;
    let r = s
        .req(Method::GET, "/entities?type=Sensor")
        .bearer_auth(signer.sign(&claims("a")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let event = logged(&log, |e| {
        e.fields
            .get("message")
            .is_some_and(|m| m.starts_with("cannot fetch the JWKS"))
    })
    .await;
    assert_eq!(event.fields["url"], url);
    assert!(
        event.fields["message"].contains("refused by the outbound policy"),
        "{event:?}"
    );
    assert_eq!(
        idp.hits("/jwks.json"),
        0,
        "nothing was sent to the provider"
    );
}
