//! Black-box tests of @context handling (GS CIM 009 V1.9.1 clauses 5.5.6, 5.5.7 and 6.3.5): Link
//! header and body contexts, remote contexts served by a local test server (nested, cached, broken,
//! slow, too big), the offline context directory, URL-prefix rewrites, and the bundled core and
//! Smart Data Models contexts that must resolve without any network. LdContextNotAvailable is HTTP
//! 504 in the clause 6.3.2 table since V1.8.1 (503 before).

use crate::common;

use common::{assert_problem, link, ContextServer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const EX: &str = "https://example.org/ns#";

fn user_context() -> Value {
    json!({"@context": {
        "ex": EX,
        "Sensor": "ex:Sensor",
        "temperature": "ex:temperature",
        "owner": {"@id": "ex:owner", "@type": "@id"}
    }})
}

fn sensor(id: &str) -> Value {
    json!({
        "id": id,
        "type": "Sensor",
        "temperature": {"type": "Property", "value": 21},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}
    })
}

/// The expanded form of `sensor(id)` as a client without the user context sees it.
fn sensor_expanded(id: &str) -> Value {
    json!({
        "id": id,
        "type": format!("{EX}Sensor"),
        format!("{EX}temperature"): {"type": "Property", "value": 21},
        format!("{EX}owner"): {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}
    })
}

async fn get_linked(
    s: &TestServer,
    id: &str,
    context: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    s.get_with(&format!("/entities/{id}"), &[("Link", &link(context))])
        .await
}

// ------------------------------------------------------------------------------------------------
// Link header, inline and array contexts
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_link_header_context_expands_terms_and_compacts_them_back() {
    let ctx = ContextServer::start();
    ctx.serve("/ctx.jsonld", &user_context());
    let url = ctx.url("/ctx.jsonld");
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:C1";
    let r = s
        .send_linked(Method::POST, "/entities", &url, &sensor(id))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let (status, headers, body) = get_linked(&s, id, &url).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        sensor(id),
        "the same context gives back the short names"
    );
    let link_back = headers
        .get("Link")
        .map(|h| h.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        link_back.contains(&url),
        "application/json answers name the context in a Link header: {link_back}"
    );

    assert_eq!(
        s.entity(id, "").await,
        sensor_expanded(id),
        "without the context, full IRIs"
    );

    let (status, _, body) = s
        .get_with(
            &format!("/entities/{id}"),
            &[("Link", &link(&url)), ("Accept", "application/ld+json")],
        )
        .await;
    assert_eq!(status, 200);
    let body_ctx = &body["@context"];
    assert!(
        body_ctx == &json!(url) || body_ctx.as_array().is_some_and(|a| a.contains(&json!(url))),
        "application/ld+json answers carry the context in the body: {body_ctx}"
    );
    let mut without_ctx = body.clone();
    without_ctx.as_object_mut().unwrap().remove("@context");
    assert_eq!(without_ctx, sensor(id));
    assert_eq!(ctx.hits("/ctx.jsonld"), 1, "fetched once");
}

#[actix_web::test]
async fn an_inline_object_context_in_a_json_ld_body_is_used() {
    let ctx = ContextServer::start();
    ctx.serve("/ctx.jsonld", &user_context());
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:C2";
    let mut body = sensor(id);
    body["@context"] = user_context()["@context"].clone();
    let r = s.send_ld(Method::POST, "/entities", &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(s.entity(id, "").await, sensor_expanded(id));
    let (status, _, got) = get_linked(&s, id, &ctx.url("/ctx.jsonld")).await;
    assert_eq!(status, 200);
    assert_eq!(
        got,
        sensor(id),
        "the same definitions, served, compact it back"
    );
}

#[actix_web::test]
async fn an_array_context_of_a_url_and_an_inline_object_combines_both() {
    let ctx = ContextServer::start();
    ctx.serve("/base.jsonld", &user_context());
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:C3";
    let mut body = sensor(id);
    body["humidity"] = json!({"type": "Property", "value": 40});
    body["@context"] = json!([
        ctx.url("/base.jsonld"),
        {"humidity": "https://example.org/other#humidity", "temperature": "https://example.org/override#temperature"}
    ]);
    let r = s.send_ld(Method::POST, "/entities", &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = s.entity(id, "").await;
    assert_eq!(got["type"], format!("{EX}Sensor"), "from the URL: {got}");
    assert_eq!(
        got[format!("{EX}owner")]["object"],
        "urn:ngsi-ld:Person:1",
        "from the URL: {got}"
    );
    assert_eq!(
        got["https://example.org/other#humidity"]["value"], 40,
        "from the inline object: {got}"
    );
    assert_eq!(
        got["https://example.org/override#temperature"]["value"], 21,
        "a later entry overrides an earlier one: {got}"
    );
    assert!(got.get(format!("{EX}temperature")).is_none(), "{got}");
}

#[actix_web::test]
async fn a_nested_remote_reference_is_followed() {
    let ctx = ContextServer::start();
    ctx.serve(
        "/inner.jsonld",
        &json!({"@context": {"temperature": "https://example.org/inner#temperature"}}),
    );
    ctx.serve(
        "/outer.jsonld",
        &json!({"@context": [ctx.url("/inner.jsonld"), {"speed": "https://example.org/outer#speed"}]}),
    );
    let outer = ctx.url("/outer.jsonld");
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:C4";
    let e = json!({
        "id": id, "type": "Sensor",
        "temperature": {"type": "Property", "value": 1},
        "speed": {"type": "Property", "value": 2}
    });
    let r = s.send_linked(Method::POST, "/entities", &outer, &e).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = s.entity(id, "").await;
    assert_eq!(
        got["https://example.org/inner#temperature"]["value"], 1,
        "{got}"
    );
    assert_eq!(got["https://example.org/outer#speed"]["value"], 2, "{got}");
    let (status, _, back) = get_linked(&s, id, &outer).await;
    assert_eq!(status, 200);
    assert_eq!(back, e);
    assert_eq!(ctx.hits("/outer.jsonld"), 1);
    assert_eq!(ctx.hits("/inner.jsonld"), 1);
}

#[actix_web::test]
async fn a_remote_context_is_fetched_once_and_cached() {
    let ctx = ContextServer::start();
    ctx.serve("/cached.jsonld", &user_context());
    let url = ctx.url("/cached.jsonld");
    let s = TestServer::start().await;
    for n in 0..3 {
        let r = s
            .send_linked(
                Method::POST,
                "/entities",
                &url,
                &sensor(&format!("urn:ngsi-ld:Sensor:cache{n}")),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    for n in 0..3 {
        let (status, _, body) = get_linked(&s, &format!("urn:ngsi-ld:Sensor:cache{n}"), &url).await;
        assert_eq!(status, 200);
        assert_eq!(body, sensor(&format!("urn:ngsi-ld:Sensor:cache{n}")));
    }
    let r = s
        .send_linked(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Sensor:cache0/attrs",
            &url,
            &json!({"temperature": 5}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let mut body = sensor("urn:ngsi-ld:Sensor:cache9");
    body["@context"] = json!(url);
    assert_eq!(
        s.send_ld(Method::POST, "/entities", &body).await.status(),
        201
    );
    assert_eq!(
        ctx.hits("/cached.jsonld"),
        1,
        "one fetch for every use of the same URL"
    );
}

#[actix_web::test]
async fn core_terms_cannot_be_redefined_by_a_user_context() {
    let ctx = ContextServer::start();
    ctx.serve(
        "/evil.jsonld",
        &json!({"@context": {"location": "https://example.org/my#location"}}),
    );
    let url = ctx.url("/evil.jsonld");
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:C5";
    let e = json!({"id": id, "type": "Sensor", "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}}});
    let r = s.send_linked(Method::POST, "/entities", &url, &e).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = s.entity(id, "").await;
    assert!(
        got.get("location").is_some(),
        "location keeps its core IRI (the core context is applied last): {got}"
    );
}

// ------------------------------------------------------------------------------------------------
// contexts that cannot be used
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn an_unreachable_context_is_ld_context_not_available_and_creates_nothing() {
    let ctx = ContextServer::start();
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:U1";
    for url in [
        "http://127.0.0.1:1/ctx.jsonld".to_string(),
        ctx.url("/missing.jsonld"),
    ] {
        let r = s
            .send_linked(Method::POST, "/entities", &url, &sensor(id))
            .await;
        assert_problem(r, 504, "LdContextNotAvailable").await;
        let mut body = sensor(id);
        body["@context"] = json!([url, {"x": "https://example.org/x"}]);
        assert_problem(
            s.send_ld(Method::POST, "/entities", &body).await,
            504,
            "LdContextNotAvailable",
        )
        .await;
        s.assert_absent(id).await;
        let r = s
            .req(Method::GET, &format!("/entities/{id}"))
            .header("Link", link(&url))
            .send()
            .await
            .unwrap();
        assert_problem(r, 504, "LdContextNotAvailable").await;
    }
}

#[actix_web::test]
async fn a_served_context_that_is_not_json_ld_is_bad_request_data() {
    let ctx = ContextServer::start();
    ctx.serve_raw(
        "/broken.jsonld",
        200,
        "application/ld+json",
        "this is { not json",
        0,
    );
    ctx.serve(
        "/nocontext.jsonld",
        &json!({"note": "no context member here"}),
    );
    ctx.serve_raw(
        "/page.html",
        200,
        "text/html",
        "<html><body>hello</body></html>",
        0,
    );
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:B1";
    for path in ["/broken.jsonld", "/nocontext.jsonld", "/page.html"] {
        let r = s
            .send_linked(Method::POST, "/entities", &ctx.url(path), &sensor(id))
            .await;
        assert_problem(r, 400, "BadRequestData").await;
        s.assert_absent(id).await;
    }
}

#[actix_web::test]
async fn a_context_over_the_size_limit_is_refused_with_504() {
    let ctx = ContextServer::start();
    let mut terms = serde_json::Map::new();
    for n in 0..200 {
        terms.insert(
            format!("term{n}"),
            json!(format!("https://example.org/big#term{n}")),
        );
    }
    terms.insert(
        "temperature".into(),
        json!("https://example.org/big#temperature"),
    );
    ctx.serve("/big.jsonld", &json!({"@context": terms}));
    ctx.serve(
        "/small.jsonld",
        &json!({"@context": {"temperature": "https://example.org/small#temperature"}}),
    );
    let s = TestServer::start_with(|s| s.context_max_bytes = 1000).await;
    let id = "urn:ngsi-ld:Sensor:S1";
    let e = json!({"id": id, "type": "Sensor", "temperature": {"type": "Property", "value": 1}});
    let r = s
        .send_linked(Method::POST, "/entities", &ctx.url("/big.jsonld"), &e)
        .await;
    assert_problem(r, 504, "LdContextNotAvailable").await;
    s.assert_absent(id).await;
    let r = s
        .send_linked(Method::POST, "/entities", &ctx.url("/small.jsonld"), &e)
        .await;
    assert_eq!(r.status(), 201, "a context under the limit is fine");
    assert_eq!(
        s.entity(id, "").await["https://example.org/small#temperature"]["value"],
        1
    );
}

#[actix_web::test]
async fn a_slow_context_server_times_out_with_504_in_bounded_time() {
    let ctx = ContextServer::start();
    ctx.serve_raw(
        "/slow.jsonld",
        200,
        "application/ld+json",
        user_context().to_string(),
        3000,
    );
    let s = TestServer::start_with(|s| s.context_timeout_ms = 300).await;
    let id = "urn:ngsi-ld:Sensor:T1";
    let start = Instant::now();
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &ctx.url("/slow.jsonld"),
            &sensor(id),
        )
        .await;
    let elapsed = start.elapsed();
    assert_problem(r, 504, "LdContextNotAvailable").await;
    assert!(
        elapsed < Duration::from_millis(2500),
        "gave up after the timeout, not the server's delay: {elapsed:?}"
    );
    s.assert_absent(id).await;
}

// ------------------------------------------------------------------------------------------------
// offline directory and rewrites
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn the_offline_context_directory_resolves_an_unserved_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = "https://contexts.example.org/offline/model.jsonld";
    std::fs::write(
        dir.path().join("index.json"),
        json!({url: "model.jsonld"}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model.jsonld"),
        json!({"@context": {"temperature": "https://example.org/offline#temperature", "Sensor": "https://example.org/offline#Sensor"}})
            .to_string(),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let s = TestServer::start_with(move |s| {
        s.context_dir = Some(path);
        s.context_timeout_ms = 500;
    })
    .await;
    let id = "urn:ngsi-ld:Sensor:O1";
    let e = json!({"id": id, "type": "Sensor", "temperature": {"type": "Property", "value": 3}});
    let r = s.send_linked(Method::POST, "/entities", url, &e).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = s.entity(id, "").await;
    assert_eq!(got["type"], "https://example.org/offline#Sensor", "{got}");
    assert_eq!(
        got["https://example.org/offline#temperature"]["value"], 3,
        "{got}"
    );
    let (status, _, back) = get_linked(&s, id, url).await;
    assert_eq!(status, 200);
    assert_eq!(back, e);
}

#[actix_web::test]
async fn a_prefix_rewrite_resolves_an_https_url_through_the_local_server() {
    let ctx = ContextServer::start();
    ctx.serve("/mirror/model.jsonld", &user_context());
    let port = ctx.port;
    let s = TestServer::start_with(move |s| {
        s.context_rewrites = vec![(
            "https://example.org/ctx/".into(),
            format!("http://127.0.0.1:{port}/mirror/"),
        )];
    })
    .await;
    let url = "https://example.org/ctx/model.jsonld";
    let id = "urn:ngsi-ld:Sensor:W1";
    let r = s
        .send_linked(Method::POST, "/entities", url, &sensor(id))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(
        ctx.hits("/mirror/model.jsonld"),
        1,
        "fetched through the rewrite"
    );
    assert_eq!(s.entity(id, "").await, sensor_expanded(id));
    let (status, headers, back) = get_linked(&s, id, url).await;
    assert_eq!(status, 200);
    assert_eq!(back, sensor(id));
    let link_back = headers
        .get("Link")
        .map(|h| h.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        link_back.contains(url),
        "the client's URL, not the mirror, is given back: {link_back}"
    );
    assert_eq!(ctx.hits("/mirror/model.jsonld"), 1);
}

// ------------------------------------------------------------------------------------------------
// bundled contexts (no network)
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn the_bundled_core_contexts_resolve_offline() {
    let s = TestServer::start_with(|s| s.context_timeout_ms = 500).await;
    for (n, url) in [
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld",
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld",
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("urn:ngsi-ld:Building:core{n}");
        let e = json!({
            "id": id, "type": "Building",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
            "temperature": {"type": "Property", "value": 20, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z"},
            "@context": url
        });
        let r = s.send_ld(Method::POST, "/entities", &e).await;
        assert_eq!(r.status(), 201, "{url}: {}", r.text().await.unwrap());
        // location expanded to the core IRI: it is the default GeoJSON geometry
        let (status, _, f) = s
            .get_with(
                &format!("/entities/{id}"),
                &[("Accept", "application/geo+json")],
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            f["geometry"],
            json!({"type": "Point", "coordinates": [1, 2]}),
            "{url}"
        );
        let got = s.entity(&id, "").await;
        assert_eq!(
            got["temperature"],
            json!({"type": "Property", "value": 20, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z"}),
            "{url}: {got}"
        );
        // and the core IRI of location is a GeoProperty by definition
        let bad = json!({"id": format!("{id}x"), "type": "Building", "location": {"type": "Property", "value": 1}, "@context": url});
        assert_problem(
            s.send_ld(Method::POST, "/entities", &bad).await,
            400,
            "BadRequestData",
        )
        .await;
        // the same URL in a Link header
        let linked = json!({"id": format!("{id}l"), "type": "Building", "temperature": {"type": "Property", "value": 1}});
        assert_eq!(
            s.send_linked(Method::POST, "/entities", url, &linked)
                .await
                .status(),
            201,
            "{url}"
        );
    }
}

#[actix_web::test]
async fn a_smart_data_models_context_resolves_offline() {
    let s = TestServer::start_with(|s| s.context_timeout_ms = 500).await;
    let url = "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld";
    let sdm = "https://smartdatamodels.org/dataModel.Environment/";
    let id = "urn:ngsi-ld:AirQualityObserved:Madrid-1";
    let e = json!({
        "id": id,
        "type": "AirQualityObserved",
        "no2": {"type": "Property", "value": 22, "unitCode": "GQ"},
        "airQualityIndex": {"type": "Property", "value": 3},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.7, 40.4]}}
    });
    let r = s.send_linked(Method::POST, "/entities", url, &e).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = s.entity(id, "").await;
    assert_eq!(got["type"], format!("{sdm}AirQualityObserved"), "{got}");
    assert_eq!(
        got[format!("{sdm}no2")],
        json!({"type": "Property", "value": 22, "unitCode": "GQ"}),
        "{got}"
    );
    assert_eq!(got[format!("{sdm}airQualityIndex")]["value"], 3, "{got}");
    assert!(got.get("location").is_some(), "core terms stay core: {got}");
    let (status, _, back) = get_linked(&s, id, url).await;
    assert_eq!(status, 200);
    assert_eq!(back, e);
}

// ------------------------------------------------------------------------------------------------
// more ways a remote context can be given or go wrong
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn the_context_link_is_found_among_other_links() {
    let ctx = ContextServer::start();
    ctx.serve("/ctx.jsonld", &user_context());
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:L1";
    let header = format!(
        "<https://example.org/doc>; rel=\"alternate\", {}",
        link(&ctx.url("/ctx.jsonld"))
    );
    let r = s
        .req(Method::POST, "/entities")
        .header("Content-Type", "application/json")
        .header("Link", header)
        .body(sensor(id).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(s.entity(id, "").await, sensor_expanded(id));
}

#[actix_web::test]
async fn a_context_server_error_is_ld_context_not_available() {
    let ctx = ContextServer::start();
    ctx.serve_raw("/error.jsonld", 500, "text/plain", "boom", 0);
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:E1";
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &ctx.url("/error.jsonld"),
            &sensor(id),
        )
        .await;
    assert_problem(r, 504, "LdContextNotAvailable").await;
    s.assert_absent(id).await;
    // a failure is not cached as a success, and the next request asks again
    ctx.serve("/error.jsonld", &user_context());
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &ctx.url("/error.jsonld"),
            &sensor(id),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(s.entity(id, "").await, sensor_expanded(id));
}

#[actix_web::test]
async fn invalid_context_documents_are_bad_request_data() {
    let ctx = ContextServer::start();
    ctx.serve("/a.jsonld", &json!({"@context": [ctx.url("/b.jsonld")]}));
    ctx.serve("/b.jsonld", &json!({"@context": [ctx.url("/a.jsonld")]}));
    ctx.serve("/number.jsonld", &json!({"@context": 42}));
    ctx.serve("/badterm.jsonld", &json!({"@context": {"temperature": 5}}));
    ctx.serve(
        "/array.jsonld",
        &json!([{"@context": {"a": "https://example.org/a"}}]),
    );
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:I1";
    for path in [
        "/a.jsonld",
        "/number.jsonld",
        "/badterm.jsonld",
        "/array.jsonld",
    ] {
        let start = Instant::now();
        let r = s
            .send_linked(Method::POST, "/entities", &ctx.url(path), &sensor(id))
            .await;
        assert_problem(r, 400, "BadRequestData").await;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{path} answered promptly"
        );
        s.assert_absent(id).await;
    }
    assert!(
        ctx.hits("/a.jsonld") <= 1 && ctx.hits("/b.jsonld") <= 1,
        "a cycle is not refetched endlessly"
    );
}

#[actix_web::test]
async fn a_scoped_context_in_a_user_context_is_bad_request_data_and_nothing_is_written() {
    let s = TestServer::start().await;
    let e = json!({
        "id": "urn:ngsi-ld:Vehicle:scoped", "type": "Vehicle",
        "speed": {"type": "Property", "value": 1},
        "@context": [{"Vehicle": {"@id": "https://example.org/Vehicle",
                                   "@context": {"speed": "https://example.org/hidden-speed"}}}],
    });
    let r = s
        .send(Method::POST, "/entities", "application/ld+json", &e)
        .await;
    let problem = assert_problem(r, 400, "BadRequestData").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("scoped"),
        "{problem}"
    );
    s.assert_absent("urn:ngsi-ld:Vehicle:scoped").await;
}
