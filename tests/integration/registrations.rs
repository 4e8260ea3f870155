//! Black-box tests of context source registrations (5.9) and their discovery (5.10):
//! /csourceRegistrations on the real server, both stores.

use crate::common;

use common::{assert_no_content, assert_problem, link, read, ContextServer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const VOCAB: &str = "https://example.org/twin#";

/// A user context that names the test's types and attributes under [`VOCAB`].
fn user_context() -> (ContextServer, String) {
    common::vocab_context(
        VOCAB,
        &[
            "Vehicle",
            "Building",
            "speed",
            "brandName",
            "name",
            "owner",
            "sourceType",
        ],
    )
}

fn vehicle_registration(id: &str) -> Value {
    json!({
        "id": id,
        "type": "ContextSourceRegistration",
        "information": [{
            "entities": [{"id": "urn:ngsi-ld:Vehicle:A456", "type": "Vehicle"}],
            "propertyNames": ["brandName", "speed"],
            "relationshipNames": ["owner"]
        }],
        "endpoint": "http://127.0.0.1:9/source",
    })
}

async fn register(s: &TestServer, ctx: &str, body: &Value) -> reqwest::Response {
    s.send_linked(Method::POST, "/csourceRegistrations", ctx, body)
        .await
}

async fn discover(
    s: &TestServer,
    ctx: &str,
    query: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    s.get_with(
        &format!("/csourceRegistrations?{query}"),
        &[("Link", &link(ctx))],
    )
    .await
}

fn ids(body: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = body
        .as_array()
        .expect("an array of registrations")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    ids.sort();
    ids
}

#[actix_web::test]
async fn a_registration_round_trips_compacted_with_the_callers_context() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let id = "urn:ngsi-ld:ContextSourceRegistration:round-trip";
    let mut body = vehicle_registration(id);
    body["mode"] = json!("inclusive");
    body["operations"] = json!(["retrieveOps", "updateOps"]);
    body["expiresAt"] = json!("2100-01-01T00:00:00Z");
    body["location"] = json!({"type": "Point", "coordinates": [-8.521, 41.2]});
    body["contextSourceInfo"] = json!([{"key": "Authorization", "value": "Bearer x"}]);
    body["management"] = json!({"localOnly": true, "timeout": 500, "cacheDuration": "PT5M"});
    body["observationInterval"] = json!({"startAt": "2020-08-01T22:07:00Z"});
    body["sourceType"] = json!("sensor");
    let r = register(&s, &ctx, &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    assert_eq!(
        r.headers()["Location"],
        format!("/ngsi-ld/v1/csourceRegistrations/{id}")
    );
    // With the creator's context, the registration reads back as it was sent, and no system
    // member appears without options=sysAttrs.
    let (status, _, got) = s
        .get_with(
            &format!("/csourceRegistrations/{id}"),
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, body);
    // Without it, the names are the IRIs the creator's context gave them.
    let (_, plain) = s.get_json(&format!("/csourceRegistrations/{id}")).await;
    assert_eq!(
        plain["information"][0]["entities"][0]["type"],
        format!("{VOCAB}Vehicle")
    );
    assert_eq!(
        plain["information"][0]["propertyNames"],
        json!([format!("{VOCAB}brandName"), format!("{VOCAB}speed")])
    );
    assert_eq!(plain[format!("{VOCAB}sourceType")], "sensor");
    // application/ld+json carries the context in the body.
    let (_, _, ld) = s
        .get_with(
            &format!("/csourceRegistrations/{id}"),
            &[("Link", &link(&ctx)), ("Accept", "application/ld+json")],
        )
        .await;
    assert_eq!(ld["@context"], json!(ctx));
    let (_, sys) = s
        .get_json(&format!("/csourceRegistrations/{id}?options=sysAttrs"))
        .await;
    assert!(
        sys["createdAt"].is_string() && sys["modifiedAt"].is_string(),
        "{sys}"
    );
}

#[actix_web::test]
async fn a_registration_without_id_gets_one_and_a_duplicate_id_is_refused() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let mut body = vehicle_registration("x");
    body.as_object_mut().unwrap().remove("id");
    let r = register(&s, &ctx, &body).await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["Location"].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap();
    assert!(
        id.starts_with("urn:ngsi-ld:ContextSourceRegistration:"),
        "{id}"
    );
    let (status, got) = s.get_json(&format!("/csourceRegistrations/{id}")).await;
    assert_eq!((status, got["id"].as_str()), (200, Some(id)));

    let dup = vehicle_registration("urn:ngsi-ld:ContextSourceRegistration:dup");
    assert_eq!(register(&s, &ctx, &dup).await.status(), 201);
    assert_problem(register(&s, &ctx, &dup).await, 409, "AlreadyExists").await;
}

#[actix_web::test]
async fn every_invalid_member_is_bad_request_data_naming_it() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let base = vehicle_registration("urn:ngsi-ld:ContextSourceRegistration:bad");
    let cases: Vec<(&str, Value)> = vec![
        ("information", Value::Null),
        ("information", json!([])),
        ("information", json!([{}])),
        ("information", json!([{"entities": [{"id": "urn:a:b"}]}])),
        (
            "information",
            json!([{"entities": [{"type": "Vehicle", "idPattern": "(["}]}]),
        ),
        ("information", json!([{"propertyNames": "speed"}])),
        ("information", json!([{"colour": ["red"]}])),
        (
            "information",
            json!([{"entities": [{"type": "Vehicle|Building"}]}]),
        ),
        ("endpoint", json!("not a url")),
        ("endpoint", json!("ftp://example.org/")),
        ("expiresAt", json!("2018-11-29T14:53:15Z")),
        ("expiresAt", json!(" 2035-11-29T14:53:15Z")),
        ("mode", json!("sometimes")),
        ("operations", json!(["fly"])),
        ("operations", json!([])),
        (
            "location",
            json!({"type": "Point", "coordinates": [500, 0]}),
        ),
        (
            "observationInterval",
            json!({"endAt": "2020-01-01T00:00:00Z"}),
        ),
        (
            "managementInterval",
            json!({"startAt": "2021-01-01T00:00:00Z", "endAt": "2020-01-01T00:00:00Z"}),
        ),
        ("contextSourceInfo", json!([{"key": "X-A", "value": 123}])),
        ("contextSourceInfo", json!([{"key": 5, "value": "a"}])),
        ("contextSourceInfo", json!([{"key": "X-A"}])),
        ("management", json!("yes")),
        ("management", json!({"cooldown": 0})),
        ("management", json!({"timeout": -5})),
        ("management", json!({"cacheDuration": "bogus"})),
        ("management", json!({"localOnly": "yes"})),
        ("scope", json!("Madrid")),
        ("scope", json!("/Madrid/#")),
        ("type", json!("Registration")),
    ];
    for (member, value) in cases {
        let mut body = base.clone();
        body[member] = value.clone();
        let problem = assert_problem(register(&s, &ctx, &body).await, 400, "BadRequestData").await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(member),
            "{member}={value}: the detail should name the member: {detail}"
        );
    }
    for missing in ["information", "endpoint", "type"] {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(missing);
        let problem = assert_problem(register(&s, &ctx, &body).await, 400, "BadRequestData").await;
        assert!(problem["detail"].as_str().unwrap().contains(missing));
    }
    // Nothing of the refused registrations was stored.
    let (status, _) = s
        .get_json("/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:bad")
        .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn update_replaces_members_and_null_removes_them() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let id = "urn:ngsi-ld:ContextSourceRegistration:patch";
    let mut body = vehicle_registration(id);
    body["expiresAt"] = json!("2100-01-01T00:00:00Z");
    assert_eq!(register(&s, &ctx, &body).await.status(), 201);
    let path = format!("/csourceRegistrations/{id}");
    let r = s
        .send(
            Method::PATCH,
            &path,
            "application/json",
            &json!({"endpoint": "http://127.0.0.1:9/other", "expiresAt": null}),
        )
        .await;
    assert_no_content(r).await;
    let (_, _, got) = s.get_with(&path, &[("Link", &link(&ctx))]).await;
    assert_eq!(got["endpoint"], "http://127.0.0.1:9/other");
    assert!(got.get("expiresAt").is_none(), "{got}");
    assert_eq!(got["information"], body["information"]);

    for fragment in [
        json!({"information": null}),
        json!({"type": "Building"}),
        json!({"mode": "exclusive", "information": [{"entities": [{"type": "Vehicle"}]}]}),
    ] {
        let r = s
            .send(Method::PATCH, &path, "application/json", &fragment)
            .await;
        assert_problem(r, 400, "BadRequestData").await;
    }
    let (_, _, unchanged) = s.get_with(&path, &[("Link", &link(&ctx))]).await;
    assert_eq!(unchanged, got, "a refused update changes nothing");

    let r = s
        .send(
            Method::PATCH,
            "/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:none",
            "application/json",
            &json!({"endpoint": "http://127.0.0.1:9/x"}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    let r = s
        .send(
            Method::PATCH,
            "/csourceRegistrations/not-a-uri",
            "application/json",
            &json!({"endpoint": "http://127.0.0.1:9/x"}),
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
}

#[actix_web::test]
async fn delete_removes_and_a_second_delete_is_not_found() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let id = "urn:ngsi-ld:ContextSourceRegistration:gone";
    assert_eq!(
        register(&s, &ctx, &vehicle_registration(id)).await.status(),
        201
    );
    let path = format!("/csourceRegistrations/{id}");
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    s.problem_of(Method::GET, &path, 404, "ResourceNotFound")
        .await;
    s.problem_of(Method::DELETE, &path, 404, "ResourceNotFound")
        .await;
    s.problem_of(
        Method::DELETE,
        "/csourceRegistrations/not-a-uri",
        400,
        "BadRequestData",
    )
    .await;
}

#[actix_web::test]
async fn registrations_belong_to_their_tenant() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let id = "urn:ngsi-ld:ContextSourceRegistration:tenant";
    let r = s
        .req(Method::POST, "/csourceRegistrations")
        .header("Content-Type", "application/json")
        .header("Link", link(&ctx))
        .header("NGSILD-Tenant", "port")
        .body(vehicle_registration(id).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let path = format!("/csourceRegistrations/{id}");
    let (status, _, _) = s.get_with(&path, &[("NGSILD-Tenant", "port")]).await;
    assert_eq!(status, 200);
    let (status, _) = s.get_json(&path).await;
    assert_eq!(status, 404, "another tenant does not see it");
    let (_, _, found) = discover(&s, &ctx, "type=Vehicle").await;
    assert_eq!(found, json!([]));
}

/// Registers the discovery fixtures: a vehicle source, a building source with a location, scope
/// and a registration property, and an attributes-only source.
async fn discovery_fixtures(s: &TestServer, ctx: &str) {
    let vehicles = json!({
        "id": "urn:ngsi-ld:ContextSourceRegistration:vehicles",
        "type": "ContextSourceRegistration",
        "information": [
            {"entities": [{"id": "urn:ngsi-ld:Vehicle:A456", "type": "Vehicle"}],
             "propertyNames": ["brandName", "speed"]},
            {"entities": [{"idPattern": ".*downtown$", "type": "Vehicle"}],
             "relationshipNames": ["owner"]}
        ],
        "endpoint": "http://vehicles.example.org",
        "observationInterval": {"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"}
    });
    let buildings = json!({
        "id": "urn:ngsi-ld:ContextSourceRegistration:buildings",
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Building"}], "propertyNames": ["name"]}],
        "endpoint": "http://buildings.example.org",
        "location": {"type": "Point", "coordinates": [-8.521, 41.2]},
        "scope": "/Porto/Centre",
        "sourceType": "model",
        "managementInterval": {"startAt": "2022-01-01T00:00:00Z"}
    });
    let names = json!({
        "id": "urn:ngsi-ld:ContextSourceRegistration:names",
        "type": "ContextSourceRegistration",
        "information": [{"propertyNames": ["name"]}],
        "endpoint": "http://names.example.org"
    });
    for body in [vehicles, buildings, names] {
        let r = register(s, ctx, &body).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
}

#[actix_web::test]
async fn discovery_matches_registrations_on_what_they_hold() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    discovery_fixtures(&s, &ctx).await;
    let v = "urn:ngsi-ld:ContextSourceRegistration:vehicles";
    let b = "urn:ngsi-ld:ContextSourceRegistration:buildings";
    let n = "urn:ngsi-ld:ContextSourceRegistration:names";
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // Types; an information without entities names every entity.
        ("type=Vehicle", vec![n, v]),
        ("type=Building", vec![b, n]),
        ("type=Bus", vec![n]),
        ("type=Vehicle|Building", vec![b, n, v]),
        // Attributes: any overlap with propertyNames and relationshipNames.
        ("attrs=speed", vec![v]),
        ("attrs=owner", vec![v]),
        ("attrs=name", vec![b, n]),
        ("type=Building&attrs=speed", vec![]),
        // Ids against EntityInfo ids, idPatterns and type-only entries.
        ("id=urn:ngsi-ld:Vehicle:A456", vec![b, n, v]),
        ("type=Vehicle&id=urn:ngsi-ld:Vehicle:B1", vec![n]),
        ("type=Vehicle&id=urn:ngsi-ld:Vehicle:uptown-downtown", vec![n, v]),
        ("type=Vehicle&idPattern=.*A4.*", vec![n, v]),
        // q and csf on the registration's own members.
        ("type=Building&q=sourceType==%22model%22", vec![b]),
        ("type=Building&q=sourceType==%22sensor%22", vec![]),
        ("csf=endpoint==%22http://buildings.example.org%22", vec![b]),
        // Geometry and scope.
        (
            "type=Building&georel=near;maxDistance==2000&geometry=Point&coordinates=[-8.503,41.202]",
            vec![b],
        ),
        (
            "type=Building&georel=near;maxDistance==200&geometry=Point&coordinates=[-8.503,41.202]",
            vec![],
        ),
        ("type=Building&scopeQ=/Porto/%23", vec![b]),
        ("type=Building&scopeQ=/Lisbon", vec![]),
        // Time ranges against the observation and management intervals.
        ("type=Vehicle&timerel=before&timeAt=2021-08-01T22:00:00Z", vec![v]),
        ("type=Vehicle&timerel=after&timeAt=2021-09-01T00:00:00Z", vec![]),
        (
            "type=Building&timeproperty=modifiedAt&timerel=after&timeAt=2023-01-01T00:00:00Z",
            vec![b],
        ),
    ];
    for (query, expected) in cases {
        let (status, _, body) = discover(&s, &ctx, query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), expected, "{query}");
    }
    // The whole registration is returned, compacted with the caller's context.
    let (_, _, body) = discover(&s, &ctx, "attrs=owner").await;
    assert_eq!(
        body[0]["information"][0]["propertyNames"],
        json!(["brandName", "speed"])
    );
}

#[actix_web::test]
async fn discovery_refuses_an_unrestricted_or_malformed_query() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    for query in [
        "",
        "id=not-a-uri",
        "q=(invalid",
        "type=Vehicle&csf=endpoint==",
        "georel=within",
        "timerel=before",
        "type=Vehicle&limit=-1",
    ] {
        let (status, _, body) = discover(&s, &ctx, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body["type"], "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
            "{query}: {body}"
        );
    }
}

#[actix_web::test]
async fn discovery_pages_with_count_and_links() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    for i in 0..3 {
        let mut body = vehicle_registration(&format!("urn:ngsi-ld:ContextSourceRegistration:p{i}"));
        body["information"] = json!([{"entities": [{"type": "Building"}]}]);
        assert_eq!(register(&s, &ctx, &body).await.status(), 201);
    }
    let (status, headers, body) =
        discover(&s, &ctx, "type=Building&limit=1&offset=1&count=true").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), vec!["urn:ngsi-ld:ContextSourceRegistration:p1"]);
    assert_eq!(headers["NGSILD-Results-Count"], "3");
    let links: Vec<&str> = headers
        .get_all("Link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|l| !l.contains("json-ld#context"))
        .collect();
    assert!(
        links.iter().any(|l| l.starts_with(
            "</ngsi-ld/v1/csourceRegistrations?type=Building&count=true&limit=1&offset=0>; rel=\"prev\""
        )),
        "{links:?}"
    );
    assert!(
        links.iter().any(|l| l.contains("offset=2>; rel=\"next\"")),
        "{links:?}"
    );
}

#[actix_web::test]
async fn proxied_registrations_name_exactly_what_they_take_over() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let exclusive = |id: &str, info: Value| {
        json!({"id": id, "type": "ContextSourceRegistration", "mode": "exclusive",
               "information": [info], "endpoint": "http://127.0.0.1:9/x"})
    };
    // An exclusive registration names entity ids and attributes.
    for info in [
        json!({"entities": [{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}]}),
        json!({"entities": [{"type": "Vehicle"}], "propertyNames": ["speed"]}),
        json!({"entities": [{"idPattern": ".*", "type": "Vehicle"}], "propertyNames": ["speed"]}),
        json!({"propertyNames": ["speed"]}),
    ] {
        let body = exclusive("urn:ngsi-ld:ContextSourceRegistration:e0", info);
        assert_problem(register(&s, &ctx, &body).await, 400, "BadRequestData").await;
    }
    let speed_of_1 = json!({"entities": [{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}],
                             "propertyNames": ["speed"]});
    let first = exclusive(
        "urn:ngsi-ld:ContextSourceRegistration:e1",
        speed_of_1.clone(),
    );
    assert_eq!(register(&s, &ctx, &first).await.status(), 201);
    // Nobody else may take the same attribute over.
    let second = exclusive(
        "urn:ngsi-ld:ContextSourceRegistration:e2",
        speed_of_1.clone(),
    );
    assert_problem(register(&s, &ctx, &second).await, 409, "Conflict").await;
    let mut redirect = second.clone();
    redirect["mode"] = json!("redirect");
    assert_problem(register(&s, &ctx, &redirect).await, 409, "Conflict").await;
    // Another attribute of the same entity is free.
    let brand = json!({"entities": [{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}],
                        "propertyNames": ["brandName"]});
    let third = exclusive("urn:ngsi-ld:ContextSourceRegistration:e3", brand);
    assert_eq!(register(&s, &ctx, &third).await.status(), 201);
    // ...and an update cannot take over what another holds either.
    let r = s
        .send_linked(
            Method::PATCH,
            "/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:e3",
            &ctx,
            &json!({"information": [speed_of_1.clone()]}),
        )
        .await;
    assert_problem(r, 409, "Conflict").await;

    // Redirect registrations may overlap each other.
    let redirect_to = |id: &str| {
        json!({"id": id, "type": "ContextSourceRegistration", "mode": "redirect",
               "information": [{"entities": [{"type": "Building"}]}],
               "endpoint": "http://127.0.0.1:9/x"})
    };
    for id in [
        "urn:ngsi-ld:ContextSourceRegistration:r1",
        "urn:ngsi-ld:ContextSourceRegistration:r2",
    ] {
        assert_eq!(register(&s, &ctx, &redirect_to(id)).await.status(), 201);
    }

    // Data held here cannot be taken over.
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &ctx,
            &json!({"id": "urn:ngsi-ld:Vehicle:2", "type": "Vehicle",
                    "speed": {"type": "Property", "value": 3}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let local = json!({"entities": [{"id": "urn:ngsi-ld:Vehicle:2", "type": "Vehicle"}],
                       "propertyNames": ["speed"]});
    let body = exclusive("urn:ngsi-ld:ContextSourceRegistration:e4", local);
    assert_problem(register(&s, &ctx, &body).await, 409, "Conflict").await;
    let mut body = redirect_to("urn:ngsi-ld:ContextSourceRegistration:r3");
    body["information"] = json!([{"entities": [{"type": "Vehicle"}]}]);
    assert_problem(register(&s, &ctx, &body).await, 409, "Conflict").await;

    // An auxiliary registration serves reads only.
    let mut aux = redirect_to("urn:ngsi-ld:ContextSourceRegistration:a1");
    aux["mode"] = json!("auxiliary");
    aux["operations"] = json!(["updateOps"]);
    assert_problem(register(&s, &ctx, &aux).await, 400, "BadRequestData").await;
    aux["operations"] = json!(["retrieveOps"]);
    assert_eq!(register(&s, &ctx, &aux).await.status(), 201);
}

#[actix_web::test]
async fn registrations_survive_a_restart() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let id = "urn:ngsi-ld:ContextSourceRegistration:durable";
    assert_eq!(
        register(&s, &ctx, &vehicle_registration(id)).await.status(),
        201
    );
    let restarted = s.restart().await;
    let (status, _, got) = restarted
        .get_with(
            &format!("/csourceRegistrations/{id}"),
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, vehicle_registration(id));
    let (_, _, found) = discover(&restarted, &ctx, "attrs=speed").await;
    assert_eq!(ids(&found), vec![id]);
    let (status, _, _) = read(
        restarted
            .req(Method::DELETE, &format!("/csourceRegistrations/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 204);
}

#[actix_web::test]
async fn an_expired_registration_is_not_discovered() {
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut body = vehicle_registration("urn:ngsi-ld:ContextSourceRegistration:brief");
    body["expiresAt"] = json!(soon);
    assert_eq!(register(&s, &ctx, &body).await.status(), 201);
    let (_, _, found) = discover(&s, &ctx, "type=Vehicle").await;
    assert_eq!(
        ids(&found),
        vec!["urn:ngsi-ld:ContextSourceRegistration:brief"]
    );
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let (_, _, found) = discover(&s, &ctx, "type=Vehicle").await;
    assert_eq!(found, json!([]));
    // 5.9.2.4: "implementations shall delete the Registration when this point in time is
    // reached".
    let (status, _) = s
        .get_json("/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:brief")
        .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn response_header_names_keep_their_usual_capitalisation() {
    // Clients that look headers up in a plain, case-sensitive map (the ETSI suite reads Location
    // so) find them.
    use std::io::{Read, Write};
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let body = vehicle_registration("urn:ngsi-ld:ContextSourceRegistration:raw").to_string();
    let addr = s
        .base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let request = format!(
        "POST /ngsi-ld/v1/csourceRegistrations HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nLink: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        link(&ctx),
        body.len()
    );
    let head = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(
        head.contains("\r\nLocation: /ngsi-ld/v1/csourceRegistrations/"),
        "{head}"
    );
}

#[actix_web::test]
async fn conflicting_exclusive_registrations_made_at_once_are_not_both_accepted() {
    // 4.3.6.3: of several exclusive registrations of one attribute sent together, one wins.
    let s = TestServer::start().await;
    let (_server, ctx) = user_context();
    let body = |n: usize| {
        json!({"id": format!("urn:ngsi-ld:ContextSourceRegistration:race{n}"),
               "type": "ContextSourceRegistration", "mode": "exclusive",
               "information": [{"entities": [{"id": "urn:ngsi-ld:Vehicle:race", "type": "Vehicle"}],
                                "propertyNames": ["speed"]}],
               "endpoint": "http://127.0.0.1:9/x"})
    };
    let bodies: Vec<Value> = (0..8).map(body).collect();
    let sent = futures_util::future::join_all(bodies.iter().map(|b| register(&s, &ctx, b))).await;
    let mut statuses: Vec<u16> = sent.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
}
