//! Black-box tests of distributed reads (4.3.6): several twinlink instances on loopback, each with
//! its own store (a city, a port and a mobility twin), federated through registrations; and a
//! recording HTTP server for the exact shape of forwarded requests.

use crate::common;

use common::{assert_problem, link, ContextServer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const VOCAB: &str = "https://example.org/twin#";

pub(crate) fn user_context() -> (ContextServer, String) {
    common::vocab_context(VOCAB, &["Vehicle", "Ship", "speed", "brandName"])
}

/// The NGSI-LD endpoint of a test server, as a registration names it.
pub(crate) fn endpoint(s: &TestServer) -> String {
    s.base.trim_end_matches("/ngsi-ld/v1").to_string()
}

pub(crate) async fn create(s: &TestServer, ctx: &str, entity: Value) {
    let r = s.send_linked(Method::POST, "/entities", ctx, &entity).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

pub(crate) async fn register(s: &TestServer, ctx: &str, body: Value) {
    let r = s
        .send_linked(Method::POST, "/csourceRegistrations", ctx, &body)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

pub(crate) fn vehicle(id: &str, speed: i64) -> Value {
    json!({"id": id, "type": "Vehicle", "speed": {"type": "Property", "value": speed}})
}

fn inclusive(id: &str, source: &TestServer, info: Value) -> Value {
    json!({"id": id, "type": "ContextSourceRegistration",
           "information": [info], "endpoint": endpoint(source)})
}

async fn query(s: &TestServer, ctx: &str, q: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    s.get_with(&format!("/entities?{q}"), &[("Link", &link(ctx))])
        .await
}

pub(crate) fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("an array of entities: {body}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn a_query_at_one_twin_returns_the_merged_answer_of_three() {
    let (_server, ctx) = user_context();
    let (city, port, mobility) = (
        TestServer::start().await,
        TestServer::start().await,
        TestServer::start().await,
    );
    create(&city, &ctx, vehicle("urn:ngsi-ld:Vehicle:city-1", 30)).await;
    create(&port, &ctx, vehicle("urn:ngsi-ld:Vehicle:port-1", 12)).await;
    create(
        &port,
        &ctx,
        json!({"id": "urn:ngsi-ld:Ship:port-2", "type": "Ship"}),
    )
    .await;
    create(&mobility, &ctx, vehicle("urn:ngsi-ld:Vehicle:mob-1", 50)).await;
    let vehicles = json!({"entities": [{"type": "Vehicle"}]});
    register(
        &city,
        &ctx,
        inclusive(
            "urn:ngsi-ld:ContextSourceRegistration:port",
            &port,
            vehicles.clone(),
        ),
    )
    .await;
    register(
        &city,
        &ctx,
        inclusive(
            "urn:ngsi-ld:ContextSourceRegistration:mob",
            &mobility,
            vehicles,
        ),
    )
    .await;

    let (status, headers, body) = query(&city, &ctx, "type=Vehicle&count=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        [
            "urn:ngsi-ld:Vehicle:city-1",
            "urn:ngsi-ld:Vehicle:mob-1",
            "urn:ngsi-ld:Vehicle:port-1"
        ]
    );
    assert_eq!(headers["NGSILD-Results-Count"], "3");
    // Entities from a source read as local ones: compacted with the caller's context.
    assert_eq!(body[2]["speed"]["value"], 12);
    assert_eq!(body[2]["type"], "Vehicle");
    // Filters and paging apply to the whole answer.
    let (_, _, fast) = query(&city, &ctx, "type=Vehicle&q=speed>20").await;
    assert_eq!(
        ids(&fast),
        ["urn:ngsi-ld:Vehicle:city-1", "urn:ngsi-ld:Vehicle:mob-1"]
    );
    let (_, headers, page) = query(&city, &ctx, "type=Vehicle&limit=1&offset=1").await;
    assert_eq!(ids(&page), ["urn:ngsi-ld:Vehicle:mob-1"]);
    assert!(headers
        .get_all("Link")
        .iter()
        .any(|l| l.to_str().unwrap().contains("rel=\"next\"")));
    // The Ship is not registered: it is not asked for.
    let (_, _, ships) = query(&city, &ctx, "type=Ship").await;
    assert_eq!(ids(&ships), Vec::<String>::new());
    // local=true keeps the query here.
    let (_, _, local) = query(&city, &ctx, "type=Vehicle&local=true").await;
    assert_eq!(ids(&local), ["urn:ngsi-ld:Vehicle:city-1"]);
    // A source's entity is retrieved through the city.
    let (status, _, got) = city
        .get_with(
            "/entities/urn:ngsi-ld:Vehicle:port-1",
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!((status, got["speed"]["value"].as_i64()), (200, Some(12)));
    let r = city
        .req(
            Method::GET,
            "/entities/urn:ngsi-ld:Vehicle:port-1?local=true",
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
    // Ordering cannot be honoured across sources.
    let (status, _, _) = query(&city, &ctx, "type=Vehicle&orderBy=speed").await;
    assert_eq!(status, 400);
    let (status, _, _) = query(&city, &ctx, "type=Vehicle&orderBy=speed&local=true").await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_split_entity_is_assembled_before_filters_and_projections_apply() {
    // The vehicle's speed is measured by the city, its brand is known to the port: filters on
    // either must find it, and it must come back whole (Orion-LD #1994, #1848; Scorpio #535).
    let (_server, ctx) = user_context();
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    let id = "urn:ngsi-ld:Vehicle:split";
    create(&city, &ctx, vehicle(id, 42)).await;
    create(
        &port,
        &ctx,
        json!({"id": id, "type": "Vehicle", "brandName": {"type": "Property", "value": "Volvo"}}),
    )
    .await;
    register(
        &city,
        &ctx,
        inclusive(
            "urn:ngsi-ld:ContextSourceRegistration:brands",
            &port,
            json!({"entities": [{"type": "Vehicle"}], "propertyNames": ["brandName"]}),
        ),
    )
    .await;
    let (status, whole) = retrieved(&city, &ctx, id).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            whole["speed"]["value"].as_i64(),
            whole["brandName"]["value"].as_str()
        ),
        (Some(42), Some("Volvo"))
    );
    for q in [
        "type=Vehicle&q=brandName==%22Volvo%22",
        "type=Vehicle&q=speed==42;brandName==%22Volvo%22",
        "type=Vehicle&attrs=brandName",
    ] {
        let (status, _, body) = query(&city, &ctx, q).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(ids(&body), [id], "{q}");
    }
    let (_, _, projected) = query(&city, &ctx, "type=Vehicle&attrs=brandName").await;
    assert!(projected[0].get("speed").is_none(), "{projected}");
    let (_, _, none) = query(&city, &ctx, "type=Vehicle&q=brandName==%22Saab%22").await;
    assert_eq!(ids(&none), Vec::<String>::new());
    // A retrieve that asks for the source's attributes only still finds the entity.
    let (status, _, brand) = city
        .get_with(
            &format!("/entities/{id}?attrs=brandName"),
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!(
        (status, brand["brandName"]["value"].as_str()),
        (200, Some("Volvo"))
    );
}

#[actix_web::test]
async fn a_dead_hanging_or_lying_source_costs_at_most_its_timeout() {
    let (_server, ctx) = user_context();
    let city = TestServer::start_with(|s| s.source_max_bytes = 64 * 1024).await;
    create(&city, &ctx, vehicle("urn:ngsi-ld:Vehicle:city-1", 30)).await;
    let peers = ContextServer::start();
    peers.serve_raw(
        "/hanging/ngsi-ld/v1/entities?type=Vehicle&limit=21",
        200,
        "application/json",
        "[]",
        10_000,
    );
    peers.serve_raw(
        "/lying/ngsi-ld/v1/entities?type=Vehicle&limit=21",
        200,
        "application/json",
        "{not json",
        0,
    );
    peers.serve_raw(
        "/wrong/ngsi-ld/v1/entities?type=Vehicle&limit=21",
        200,
        "application/json",
        json!([{"id": "not a uri", "type": "Vehicle"}]).to_string(),
        0,
    );
    let huge = json!([vehicle("urn:ngsi-ld:Vehicle:huge", 1)]).to_string() + &" ".repeat(200_000);
    peers.serve_raw(
        "/huge/ngsi-ld/v1/entities?type=Vehicle&limit=21",
        200,
        "application/json",
        huge,
        0,
    );
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let vehicles = json!([{"entities": [{"type": "Vehicle"}]}]);
    for (name, endpoint, management) in [
        ("dead", dead.clone(), json!({"timeout": 300})),
        ("hanging", peers.url("/hanging"), json!({"timeout": 300})),
        ("lying", peers.url("/lying"), json!({"timeout": 300})),
        ("wrong", peers.url("/wrong"), json!({"timeout": 300})),
        ("huge", peers.url("/huge"), json!({"timeout": 300})),
    ] {
        register(
            &city,
            &ctx,
            json!({"id": format!("urn:ngsi-ld:ContextSourceRegistration:{name}"),
                   "type": "ContextSourceRegistration", "information": vehicles,
                   "endpoint": endpoint, "management": management}),
        )
        .await;
    }
    let started = Instant::now();
    let (status, _, body) = query(&city, &ctx, "type=Vehicle").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:city-1"]);
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}, more than the sources' timeout allows"
    );
    assert_eq!(
        peers.hits("/hanging/ngsi-ld/v1/entities?type=Vehicle&limit=21"),
        1
    );
    assert_eq!(
        peers.hits("/huge/ngsi-ld/v1/entities?type=Vehicle&limit=21"),
        1
    );
    // The broker still serves its own data.
    let (status, _, _) = city
        .get_with(
            "/entities/urn:ngsi-ld:Vehicle:city-1",
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_via_loop_between_two_twins_ends() {
    let (_server, ctx) = user_context();
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    create(&a, &ctx, vehicle("urn:ngsi-ld:Vehicle:a", 1)).await;
    create(&b, &ctx, vehicle("urn:ngsi-ld:Vehicle:b", 2)).await;
    let vehicles = json!({"entities": [{"type": "Vehicle"}]});
    register(
        &a,
        &ctx,
        inclusive(
            "urn:ngsi-ld:ContextSourceRegistration:to-b",
            &b,
            vehicles.clone(),
        ),
    )
    .await;
    register(
        &b,
        &ctx,
        inclusive("urn:ngsi-ld:ContextSourceRegistration:to-a", &a, vehicles),
    )
    .await;
    let started = Instant::now();
    let (status, _, body) = query(&a, &ctx, "type=Vehicle").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Vehicle:a", "urn:ngsi-ld:Vehicle:b"]
    );
    let (status, _, body) = query(&b, &ctx, "type=Vehicle").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Vehicle:a", "urn:ngsi-ld:Vehicle:b"]
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[actix_web::test]
async fn forwarded_requests_carry_context_tenant_via_and_source_info() {
    let (_server, ctx) = user_context();
    let city = TestServer::start_with(|s| s.alias = "city-twin".into()).await;
    let source = ContextServer::start();
    let answer = json!([{"id": "urn:ngsi-ld:Vehicle:remote", "type": "Vehicle",
                         "speed": {"type": "Property", "value": 7}}]);
    source.serve_raw(
        "/src/ngsi-ld/v1/entities?type=Vehicle&limit=21&local=true",
        200,
        "application/json",
        answer.to_string(),
        0,
    );
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:shape", "type": "ContextSourceRegistration",
               "information": [{"entities": [{"type": "Vehicle"}]}],
               "endpoint": source.url("/src/"), "tenant": "harbour",
               "management": {"localOnly": true},
               "contextSourceInfo": [{"key": "Authorization", "value": "Bearer t0k"},
                                     {"key": "NGSILD-Tenant", "value": "not-sent"},
                                     {"key": "Not A Header", "value": "dropped"}]}),
    )
    .await;
    let (status, _, body) = city
        .get_with(
            "/entities?type=Vehicle",
            &[("Link", &link(&ctx)), ("Via", "1.1 dashboard")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:remote"]);
    assert_eq!(
        body[0]["speed"]["value"], 7,
        "read with the context it was asked with"
    );
    let requests = source.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    // Header names as the spec writes them, for sources that look them up case-sensitively.
    for name in ["\r\nVia: ", "\r\nLink: ", "\r\nAccept: "] {
        assert!(requests[0].contains(name), "{name:?} in:\n{}", requests[0]);
    }
    let head = requests[0].to_ascii_lowercase();
    // management.localOnly: the source is asked not to forward the request further.
    assert!(
        head.starts_with("get /src/ngsi-ld/v1/entities?type=vehicle&limit=21&local=true "),
        "{head}"
    );
    for expected in [
        format!("link: {}", link(&ctx)).to_ascii_lowercase(),
        "ngsild-tenant: harbour".to_string(),
        "via: 1.1 dashboard, 1.1 city-twin".to_string(),
        "authorization: bearer t0k".to_string(),
        "accept: application/json".to_string(),
    ] {
        assert!(head.contains(&expected), "missing '{expected}' in:\n{head}");
    }
    assert!(!head.contains("not-sent"), "{head}");
    assert!(
        !head.contains("dropped"),
        "a pair that is no header is left out: {head}"
    );

    // A request that has passed through this broker already is not forwarded again.
    let (status, _, body) = city
        .get_with(
            "/entities?type=Vehicle",
            &[("Link", &link(&ctx)), ("Via", "1.1 city-twin")],
        )
        .await;
    assert_eq!((status, ids(&body)), (200, Vec::<String>::new()));
    assert_eq!(source.requests().len(), 1);
}

#[actix_web::test]
async fn an_instance_uses_a_registration_another_instance_made() {
    // Two instances on one PostgreSQL database: the registration made on one is used by the other
    // at once (the store announces it).
    // Runs on PostgreSQL under both store runs: the embedded store is one instance by
    // construction.
    let (_server, ctx) = user_context();
    let one = TestServer::start_on_postgres().await;
    let url = one.database_url.clone().expect("a PostgreSQL server");
    let two = TestServer::start_with(|s| s.database_url = Some(url.clone())).await;
    let source = TestServer::start().await;
    create(&source, &ctx, vehicle("urn:ngsi-ld:Vehicle:far", 3)).await;
    register(
        &one,
        &ctx,
        inclusive(
            "urn:ngsi-ld:ContextSourceRegistration:shared",
            &source,
            json!({"entities": [{"type": "Vehicle"}]}),
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, body) = query(&two, &ctx, "type=Vehicle").await;
        if ids(&body) == ["urn:ngsi-ld:Vehicle:far"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second instance never used the registration: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = one
        .req(
            Method::DELETE,
            "/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:shared",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, body) = query(&two, &ctx, "type=Vehicle").await;
        if ids(&body).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second instance kept a deleted registration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn the_source_identity_names_each_tenant_and_two_tenants_of_one_broker_federate() {
    let (_server, ctx) = user_context();
    let s = TestServer::start_with(|s| s.alias = "port-twin".into()).await;
    let (status, _, me) = s.get_with("/info/sourceIdentity", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(me["type"], "ContextSourceIdentity");
    assert_eq!(me["contextSourceAlias"], "port-twin");
    assert!(me["id"].as_str().unwrap().starts_with("urn:"), "{me}");
    let uptime = me["contextSourceUptime"].as_str().unwrap();
    assert!(
        uptime.starts_with("PT") && uptime.ends_with('S'),
        "{uptime}"
    );
    let time_at = me["contextSourceTimeAt"].as_str().unwrap();
    assert!(time_at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(time_at).is_ok());
    let alias = |tenant: &'static str| {
        let s = &s;
        async move {
            let (_, _, body) = s
                .get_with("/info/sourceIdentity", &[("NGSILD-Tenant", tenant)])
                .await;
            body["contextSourceAlias"].as_str().unwrap().to_string()
        }
    };
    let (harbour, ferries) = (alias("harbour").await, alias("ferries").await);
    assert_ne!(harbour, "port-twin");
    assert_ne!(harbour, ferries);
    assert_eq!(harbour, alias("harbour").await, "stable");

    // The harbour tenant federates the ferries tenant of the same broker: the request that comes
    // back in with the harbour's alias in Via is not a loop for the ferries tenant.
    let in_tenant = |tenant: &str, method: Method, path: &str, body: Value| {
        s.req(method, path)
            .header("Content-Type", "application/json")
            .header("Link", link(&ctx))
            .header("NGSILD-Tenant", tenant)
            .body(body.to_string())
            .send()
    };
    let r = in_tenant(
        "ferries",
        Method::POST,
        "/entities",
        vehicle("urn:ngsi-ld:Vehicle:ferry", 9),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = in_tenant(
        "harbour",
        Method::POST,
        "/entities",
        vehicle("urn:ngsi-ld:Vehicle:tug", 4),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    // The ferries tenant federates a third twin in turn: its data reaches the harbour only if
    // the ferries tenant does not take the harbour's request for one it has forwarded itself.
    let operator = TestServer::start().await;
    create(&operator, &ctx, vehicle("urn:ngsi-ld:Vehicle:bus", 1)).await;
    let onward = json!({"id": "urn:ngsi-ld:ContextSourceRegistration:operator",
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Vehicle"}]}], "endpoint": endpoint(&operator)});
    let r = in_tenant("ferries", Method::POST, "/csourceRegistrations", onward)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let registration = json!({"id": "urn:ngsi-ld:ContextSourceRegistration:ferries",
        "type": "ContextSourceRegistration", "tenant": "ferries",
        "information": [{"entities": [{"type": "Vehicle"}]}], "endpoint": endpoint(&s)});
    let r = in_tenant(
        "harbour",
        Method::POST,
        "/csourceRegistrations",
        registration,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let (status, _, body) = s
        .get_with(
            "/entities?type=Vehicle",
            &[("Link", &link(&ctx)), ("NGSILD-Tenant", "harbour")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        [
            "urn:ngsi-ld:Vehicle:bus",
            "urn:ngsi-ld:Vehicle:ferry",
            "urn:ngsi-ld:Vehicle:tug"
        ]
    );
}

#[actix_web::test]
async fn updates_of_attributes_an_iot_agent_registered_go_to_the_agent() {
    // An IoT agent provisions a lamp: the broker holds its measured luminosity, the agent holds
    // the switch command (an exclusive registration of that attribute), as FIWARE IoT agents do.
    let (_server, ctx) = user_context();
    let city = TestServer::start().await;
    let agent = ContextServer::start();
    let lamp = "urn:ngsi-ld:Lamp:1";
    create(
        &city,
        &ctx,
        json!({"id": lamp, "type": "Lamp", "luminosity": {"type": "Property", "value": 10}}),
    )
    .await;
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:agent", "type": "ContextSourceRegistration",
               "mode": "exclusive", "operations": ["updateOps"],
               "information": [{"entities": [{"id": lamp, "type": "Lamp"}], "propertyNames": ["switch"]}],
               "endpoint": agent.url("/iot")}),
    )
    .await;
    agent.serve_raw(
        &format!("/iot/ngsi-ld/v1/entities/{lamp}/attrs"),
        204,
        "text/plain",
        "",
        0,
    );
    agent.serve_raw(
        &format!("/iot/ngsi-ld/v1/entities/{lamp}/attrs/switch"),
        204,
        "text/plain",
        "",
        0,
    );
    let r = city
        .send_linked(
            Method::PATCH,
            &format!("/entities/{lamp}/attrs"),
            &ctx,
            &json!({"switch": {"type": "Property", "value": "on"},
                    "luminosity": {"type": "Property", "value": 80}}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
    let requests = agent.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (head, body) = requests[0].split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with(&format!("PATCH /iot/ngsi-ld/v1/entities/{lamp}/attrs ")),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        json!({"switch": {"type": "Property", "value": "on"}}),
        "only the agent's attribute"
    );
    let (_, here) = city.get_json(&format!("/entities/{lamp}?local=true")).await;
    assert_eq!(here["luminosity"]["value"], 80);
    assert!(
        here.get("switch").is_none(),
        "the command is not stored here: {here}"
    );
    // The single-attribute form is passed on as it came.
    let r = city
        .send(
            Method::PATCH,
            &format!("/entities/{lamp}/attrs/switch"),
            "application/json",
            &json!({"value": "off"}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let requests = agent.requests();
    let (head, body) = requests[1].split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with(&format!(
            "PATCH /iot/ngsi-ld/v1/entities/{lamp}/attrs/switch "
        )),
        "{head}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"value": "off"})
    );

    // An agent that fails leaves its attribute not updated, and the rest updated (207).
    agent.serve_raw(
        &format!("/iot/ngsi-ld/v1/entities/{lamp}/attrs"),
        500,
        "text/plain",
        "boom",
        0,
    );
    let r = city
        .send_linked(
            Method::PATCH,
            &format!("/entities/{lamp}/attrs"),
            &ctx,
            &json!({"switch": {"type": "Property", "value": "on"},
                    "luminosity": {"type": "Property", "value": 5}}),
        )
        .await;
    assert_eq!(r.status(), 207);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["updated"], json!(["luminosity"]), "{report}");
    assert_eq!(
        report["notUpdated"][0]["attributeName"], "switch",
        "{report}"
    );
    let (_, here) = city.get_json(&format!("/entities/{lamp}?local=true")).await;
    assert_eq!(here["luminosity"]["value"], 5);
}

#[actix_web::test]
async fn a_failed_source_rests_for_its_cooldown() {
    let (_server, ctx) = user_context();
    let city = TestServer::start().await;
    let source = ContextServer::start();
    let path = "/src/ngsi-ld/v1/entities?type=Vehicle&limit=21";
    source.serve_raw(path, 500, "text/plain", "down for maintenance", 0);
    let calm = ContextServer::start();
    calm.serve_raw(path, 500, "text/plain", "down for maintenance", 0);
    for (name, server, management) in [
        ("resting", &source, json!({"cooldown": 60_000})),
        ("eager", &calm, json!({"timeout": 1000})),
    ] {
        register(
            &city,
            &ctx,
            json!({"id": format!("urn:ngsi-ld:ContextSourceRegistration:{name}"),
                   "type": "ContextSourceRegistration",
                   "information": [{"entities": [{"type": "Vehicle"}]}],
                   "endpoint": server.url("/src"), "management": management}),
        )
        .await;
    }
    for _ in 0..3 {
        let (status, _, body) = query(&city, &ctx, "type=Vehicle").await;
        assert_eq!((status, ids(&body)), (200, Vec::<String>::new()));
    }
    assert_eq!(source.hits(path), 1, "asked again during its cooldown");
    assert_eq!(
        calm.hits(path),
        3,
        "without a cooldown a source is asked every time"
    );
}

/// The query string of the one request `server` recorded under `prefix`, percent-decoded.
fn forwarded_query(server: &ContextServer, prefix: &str) -> String {
    let requests = server.requests();
    let head = requests
        .iter()
        .find(|r| r.starts_with(&format!("GET {prefix}")))
        .unwrap_or_else(|| panic!("no request to {prefix} in {requests:?}"));
    let target = head.split(' ').nth(1).unwrap();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[actix_web::test]
async fn filters_and_page_size_go_to_sources_of_whole_entities_only() {
    // 5.7.2.4: a source registered for whole entities runs the query's filters itself and sends
    // no more than the page needs (Orion-LD #1831, Scorpio #535); one that holds only some
    // attributes gets the selectors alone, and so does every source when the query says
    // splitEntities=true (Orion-LD #1994).
    let (_server, ctx) = user_context();
    let city = TestServer::start().await;
    let sources = ContextServer::start();
    for (name, info) in [
        ("whole", json!({"entities": [{"type": "Vehicle"}]})),
        (
            "part",
            json!({"entities": [{"type": "Ship"}], "propertyNames": ["brandName"]}),
        ),
    ] {
        register(
            &city,
            &ctx,
            json!({"id": format!("urn:ngsi-ld:ContextSourceRegistration:{name}"),
                   "type": "ContextSourceRegistration", "information": [info],
                   "endpoint": sources.url(&format!("/{name}"))}),
        )
        .await;
    }
    let filters = "q=speed%3E20&scopeQ=/A/%23&georel=near%3BmaxDistance==100&geometry=Point&coordinates=%5B1,2%5D&attrs=speed,brandName";
    let (status, _, body) = query(
        &city,
        &ctx,
        &format!("type=Vehicle&{filters}&limit=5&offset=2&count=true"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = forwarded_query(&sources, "/whole/");
    for expected in [
        "type=Vehicle",
        "q=speed>20",
        "scopeQ=/A/#",
        "georel=near;maxDistance==100",
        "geometry=Point",
        "coordinates=[1,2]",
        "attrs=speed,brandName",
        "limit=8",
        "count=true",
    ] {
        assert!(
            sent.split('&').any(|p| p == expected),
            "{expected} not in {sent}"
        );
    }
    let (status, _, body) = query(&city, &ctx, &format!("type=Ship&{filters}")).await;
    assert_eq!(status, 200, "{body}");
    let sent = forwarded_query(&sources, "/part/");
    assert!(sent.contains("type=Ship"), "{sent}");
    for stripped in ["q=", "scopeQ=", "georel=", "attrs=speed"] {
        assert!(!sent.contains(stripped), "{stripped} forwarded: {sent}");
    }
    // It is asked for the attributes it holds (4.3.6.7), whatever the caller's attrs.
    assert!(sent.split('&').any(|p| p == "attrs=brandName"), "{sent}");
    let before = sources.requests().len();
    let (status, _, _) = query(
        &city,
        &ctx,
        &format!("type=Vehicle&splitEntities=true&{filters}"),
    )
    .await;
    assert_eq!(status, 200);
    let requests = sources.requests();
    assert_eq!(requests.len(), before + 1);
    let last = requests.last().unwrap().lines().next().unwrap().to_string();
    assert!(
        last.starts_with("GET /whole/") && !last.contains("q=") && !last.contains("scopeQ="),
        "{last}"
    );
    // The flag is a boolean; anything else is refused before any source is asked.
    let r = city
        .req(Method::GET, "/entities?type=Vehicle&splitEntities=maybe")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    assert_eq!(sources.requests().len(), before + 1);
}

#[actix_web::test]
async fn a_failed_source_is_named_in_an_ngsild_warning() {
    // 6.3.17: an error answer is warned with 299, an unusable one with 111 (and not used); a 404
    // is no failure.
    let (_server, ctx) = user_context();
    let city = TestServer::start().await;
    create(&city, &ctx, vehicle("urn:ngsi-ld:Vehicle:here", 3)).await;
    let sources = ContextServer::start();
    let id = "urn:ngsi-ld:Vehicle:w";
    for (name, status, body) in [
        (
            "refusing",
            403,
            r#"{"type":"https://uri.etsi.org/ngsi-ld/errors/Forbidden"}"#,
        ),
        ("garbled", 200, "not a json document"),
        ("absent", 404, ""),
    ] {
        sources.serve_raw(
            &format!("/{name}/ngsi-ld/v1/entities/{id}"),
            status,
            "application/json",
            body.to_string(),
            0,
        );
        sources.serve_raw(
            &format!("/{name}/ngsi-ld/v1/entities?type=Vehicle&limit=21"),
            status,
            "application/json",
            body.to_string(),
            0,
        );
    }
    let warnings = |h: &reqwest::header::HeaderMap| -> Vec<String> {
        h.get_all("NGSILD-Warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    for (name, code) in [
        ("refusing", Some("299 ")),
        ("garbled", Some("111 ")),
        ("absent", None),
    ] {
        let reg = format!("urn:ngsi-ld:ContextSourceRegistration:{name}");
        register(
            &city,
            &ctx,
            json!({"id": reg, "type": "ContextSourceRegistration",
                   "information": [{"entities": [{"type": "Vehicle"}]}],
                   "endpoint": sources.url(&format!("/{name}"))}),
        )
        .await;
        let r = city
            .req(Method::GET, &format!("/entities/{id}"))
            .header("Link", link(&ctx))
            .send()
            .await
            .unwrap();
        let got = warnings(r.headers());
        assert_eq!(r.status(), 404, "{name}");
        match code {
            Some(code) => {
                assert_eq!(got.len(), 1, "{name}: {got:?}");
                assert!(got[0].starts_with(code), "{name}: {got:?}");
                assert!(got[0].contains("127.0.0.1:"), "names the source: {got:?}");
            }
            None => assert!(got.is_empty(), "{name}: {got:?}"),
        }
        // A query still answers with what the other places hold, and warns the same way.
        let r = city
            .req(Method::GET, "/entities?type=Vehicle")
            .header("Link", link(&ctx))
            .send()
            .await
            .unwrap();
        let got = warnings(r.headers());
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(got.len(), usize::from(code.is_some()), "{name}: {got:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:here"], "{name}");
        city.req(Method::DELETE, &format!("/csourceRegistrations/{reg}"))
            .send()
            .await
            .unwrap();
    }
}

/// The entity with this id as `s` answers for it (with its sources): status and body.
async fn retrieved(s: &TestServer, ctx: &str, id: &str) -> (u16, Value) {
    let (status, _, body) = s
        .get_with(&format!("/entities/{id}"), &[("Link", &link(ctx))])
        .await;
    (status, body)
}

/// The entity with this id as `s` holds it itself (local=true): status and body.
async fn held(s: &TestServer, ctx: &str, id: &str) -> (u16, Value) {
    let (status, _, body) = s
        .get_with(
            &format!("/entities/{id}?local=true"),
            &[("Link", &link(ctx))],
        )
        .await;
    (status, body)
}

fn registration(id: &str, source: &TestServer, mode: &str, info: Value) -> Value {
    json!({"id": id, "type": "ContextSourceRegistration", "mode": mode,
           "operations": ["redirectionOps"], "information": [info],
           "endpoint": endpoint(source)})
}

#[actix_web::test]
async fn writes_go_where_the_registration_modes_say() {
    // 4.3.6.2-4.3.6.3: an inclusive source gets a copy of every write, an exclusive one takes
    // its attributes away from the city, a redirect one takes whole entities; a registration
    // without write operations gets none.
    let (_server, ctx) = user_context();
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    let (car, ship, boat) = (
        "urn:ngsi-ld:Vehicle:w1",
        "urn:ngsi-ld:Ship:w2",
        "urn:ngsi-ld:Ship:w3",
    );
    register(
        &city,
        &ctx,
        registration(
            "urn:ngsi-ld:ContextSourceRegistration:copy",
            &port,
            "inclusive",
            json!({"entities": [{"type": "Vehicle"}]}),
        ),
    )
    .await;
    register(
        &city,
        &ctx,
        registration(
            "urn:ngsi-ld:ContextSourceRegistration:ships",
            &port,
            "redirect",
            json!({"entities": [{"type": "Ship"}]}),
        ),
    )
    .await;
    // Inclusive: created, updated, appended and deleted in both twins.
    create(&city, &ctx, vehicle(car, 10)).await;
    assert_eq!(held(&city, &ctx, car).await.0, 200);
    assert_eq!(held(&port, &ctx, car).await.1["speed"]["value"], 10);
    let r = city
        .send_linked(
            Method::PATCH,
            &format!("/entities/{car}/attrs"),
            &ctx,
            &json!({"speed": {"type": "Property", "value": 11}}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let r = city
        .send_linked(
            Method::POST,
            &format!("/entities/{car}/attrs"),
            &ctx,
            &json!({"brandName": {"type": "Property", "value": "Volvo"}}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    for (twin, name) in [(&city, "city"), (&port, "port")] {
        let (_, e) = held(twin, &ctx, car).await;
        assert_eq!(
            (
                e["speed"]["value"].as_i64(),
                e["brandName"]["value"].as_str()
            ),
            (Some(11), Some("Volvo")),
            "{name}: {e}"
        );
    }
    // Redirect: the ship lives in the port only; the city answers for it.
    create(
        &city,
        &ctx,
        json!({"id": ship, "type": "Ship", "speed": {"type": "Property", "value": 3}}),
    )
    .await;
    assert_eq!(held(&city, &ctx, ship).await.0, 404);
    assert_eq!(held(&port, &ctx, ship).await.1["speed"]["value"], 3);
    let r = city
        .send_linked(
            Method::PATCH,
            &format!("/entities/{ship}/attrs/speed"),
            &ctx,
            &json!({"value": 4}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(held(&port, &ctx, ship).await.1["speed"]["value"], 4);
    let r = city
        .req(Method::DELETE, &format!("/entities/{ship}/attrs/speed"))
        .header("Link", link(&ctx))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert!(held(&port, &ctx, ship).await.1.get("speed").is_none());
    for id in [car, ship] {
        let r = city
            .req(Method::DELETE, &format!("/entities/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{id}: {}", r.text().await.unwrap());
        assert_eq!(held(&city, &ctx, id).await.0, 404, "{id}");
        assert_eq!(held(&port, &ctx, id).await.0, 404, "{id}");
    }
    // A registration that offers only reads gets no writes: an inclusive one is skipped, a
    // redirect one makes the write a Conflict and nothing is written anywhere.
    let reads_only = json!({"id": "urn:ngsi-ld:ContextSourceRegistration:boats",
        "type": "ContextSourceRegistration", "mode": "redirect", "operations": ["retrieveOps"],
        "information": [{"entities": [{"id": boat, "type": "Ship"}]}], "endpoint": endpoint(&port)});
    let r = city
        .req(
            Method::DELETE,
            "/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:ships",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    register(&city, &ctx, reads_only).await;
    let r = city
        .send_linked(
            Method::POST,
            "/entities",
            &ctx,
            &json!({"id": boat, "type": "Ship"}),
        )
        .await;
    assert_problem(r, 409, "Conflict").await;
    assert_eq!(held(&city, &ctx, boat).await.0, 404);
    assert_eq!(held(&port, &ctx, boat).await.0, 404);
}

/// A car created at `city` whose speed an exclusive registration gives to `port` (its brandName
/// stays at `city`).
async fn speedometer_at(city: &TestServer, port: &TestServer, ctx: &str, car: &str) {
    register(
        city,
        ctx,
        registration(
            "urn:ngsi-ld:ContextSourceRegistration:speedometer",
            port,
            "exclusive",
            json!({"entities": [{"id": car, "type": "Vehicle"}], "propertyNames": ["speed"]}),
        ),
    )
    .await;
    create(
        city,
        ctx,
        json!({"id": car, "type": "Vehicle", "speed": {"type": "Property", "value": 70},
               "brandName": {"type": "Property", "value": "Saab"}}),
    )
    .await;
}

#[actix_web::test]
async fn an_exclusive_source_takes_its_attributes_and_a_failed_part_is_reported() {
    let (_server, ctx) = user_context();
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    let car = "urn:ngsi-ld:Vehicle:x1";
    speedometer_at(&city, &port, &ctx, car).await;
    let (_, here) = held(&city, &ctx, car).await;
    assert!(here.get("speed").is_none(), "{here}");
    assert_eq!(here["brandName"]["value"], "Saab");
    let (_, there) = held(&port, &ctx, car).await;
    assert_eq!(there["speed"]["value"], 70, "{there}");
    assert!(there.get("brandName").is_none(), "{there}");
    // The whole entity reads back through the city.
    let (status, whole) = retrieved(&city, &ctx, car).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            whole["speed"]["value"].as_i64(),
            whole["brandName"]["value"].as_str()
        ),
        (Some(70), Some("Saab"))
    );
    // Creating it again: the city refuses its part, the port its own: both are reported.
    let r = city
        .send_linked(
            Method::POST,
            "/entities",
            &ctx,
            &json!({"id": car, "type": "Vehicle", "speed": {"type": "Property", "value": 1},
                    "brandName": {"type": "Property", "value": "Saab"}}),
        )
        .await;
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors[0]["error"]["status"], 409, "{body}");
    assert!(errors[0].get("registrationId").is_none(), "{body}");
    assert_eq!(
        errors[1]["registrationId"],
        "urn:ngsi-ld:ContextSourceRegistration:speedometer"
    );
    assert_eq!(errors[1]["error"]["status"], 409, "{body}");
    assert_eq!(errors[1]["attributes"], json!(["speed"]), "{body}");
    // A request that comes back for data only the source holds is a loop.
    let alias = city.get_with("/info/sourceIdentity", &[]).await.2["contextSourceAlias"]
        .as_str()
        .unwrap()
        .to_string();
    let r = city
        .req(Method::PATCH, &format!("/entities/{car}/attrs"))
        .header("Content-Type", "application/json")
        .header("Link", link(&ctx))
        .header("Via", format!("1.1 elsewhere, 1.1 {alias}"))
        .body(json!({"speed": {"type": "Property", "value": 2}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 508, "{}", r.text().await.unwrap());
    // Deleting the entity removes both parts.
    let r = city
        .req(Method::DELETE, &format!("/entities/{car}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(held(&city, &ctx, car).await.0, 404);
    assert_eq!(held(&port, &ctx, car).await.0, 404);
}

#[actix_web::test]
async fn batches_reach_each_source_in_one_request() {
    // Batch operations are named one by one in a registration (Table 4.20-2): each source gets
    // the entities it covers in one request to its own /entityOperations.
    let (_server, ctx) = user_context();
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    let ops = json!(["createBatch", "upsertBatch", "deleteBatch"]);
    for (name, mode, info) in [
        (
            "copy",
            "inclusive",
            json!({"entities": [{"type": "Vehicle"}]}),
        ),
        ("ships", "redirect", json!({"entities": [{"type": "Ship"}]})),
    ] {
        register(
            &city,
            &ctx,
            json!({"id": format!("urn:ngsi-ld:ContextSourceRegistration:{name}"),
                   "type": "ContextSourceRegistration", "mode": mode, "operations": ops,
                   "information": [info], "endpoint": endpoint(&port)}),
        )
        .await;
    }
    let batch = json!([
        vehicle("urn:ngsi-ld:Vehicle:b1", 1),
        vehicle("urn:ngsi-ld:Vehicle:b2", 2),
        {"id": "urn:ngsi-ld:Ship:b3", "type": "Ship", "speed": {"type": "Property", "value": 3}},
    ]);
    let r = city
        .send_linked(Method::POST, "/entityOperations/create", &ctx, &batch)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    for id in ["urn:ngsi-ld:Vehicle:b1", "urn:ngsi-ld:Vehicle:b2"] {
        assert_eq!(held(&city, &ctx, id).await.0, 200, "{id}");
        assert_eq!(held(&port, &ctx, id).await.0, 200, "{id}");
    }
    assert_eq!(held(&city, &ctx, "urn:ngsi-ld:Ship:b3").await.0, 404);
    assert_eq!(
        held(&port, &ctx, "urn:ngsi-ld:Ship:b3").await.1["speed"]["value"],
        3
    );
    // Creating them again fails here and at the port, per entity.
    let r = city
        .send_linked(Method::POST, "/entityOperations/create", &ctx, &batch)
        .await;
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["success"], json!([]), "{body}");
    let ids: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entityId"].as_str().unwrap())
        .collect();
    for id in [
        "urn:ngsi-ld:Vehicle:b1",
        "urn:ngsi-ld:Vehicle:b2",
        "urn:ngsi-ld:Ship:b3",
    ] {
        assert!(ids.contains(&id), "{id} in {body}");
    }
    // Batch delete removes them everywhere; the ship, never held here, is no failure.
    let r = city
        .send_linked(
            Method::POST,
            "/entityOperations/delete",
            &ctx,
            &json!([
                "urn:ngsi-ld:Vehicle:b1",
                "urn:ngsi-ld:Vehicle:b2",
                "urn:ngsi-ld:Ship:b3"
            ]),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    for id in [
        "urn:ngsi-ld:Vehicle:b1",
        "urn:ngsi-ld:Vehicle:b2",
        "urn:ngsi-ld:Ship:b3",
    ] {
        assert_eq!(held(&city, &ctx, id).await.0, 404, "{id}");
        assert_eq!(held(&port, &ctx, id).await.0, 404, "{id}");
    }
}

#[actix_web::test]
async fn a_deployment_that_splits_entities_forwards_selectors_only() {
    // --split-entities true (5.7.2.4: "the default setting of the deployment"): sources of
    // whole entities get the selectors alone too, unless a query says splitEntities=false.
    let (_server, ctx) = user_context();
    let city = TestServer::start_with(|s| s.split_entities = true).await;
    let sources = ContextServer::start();
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:whole", "type": "ContextSourceRegistration",
               "information": [{"entities": [{"type": "Vehicle"}]}], "endpoint": sources.url("/whole")}),
    )
    .await;
    let (status, _, _) = query(&city, &ctx, "type=Vehicle&q=speed%3E20").await;
    assert_eq!(status, 200);
    let sent = forwarded_query(&sources, "/whole/");
    assert!(
        sent.contains("type=Vehicle") && !sent.contains("q="),
        "{sent}"
    );
    let (status, _, _) = query(&city, &ctx, "type=Vehicle&q=speed%3E20&splitEntities=false").await;
    assert_eq!(status, 200);
    let last = sources
        .requests()
        .last()
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(last.contains("q=speed"), "{last}");
}

/// `DELETE /entities?{query}` (purge, 5.6.21) at `s` with the caller's context.
async fn purge(s: &TestServer, ctx: &str, query: &str) -> reqwest::Response {
    s.req(Method::DELETE, &format!("/entities?{query}"))
        .header("Link", link(ctx))
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_purge_reaches_inclusive_and_redirect_sources() {
    // 4.3.6.2-4.3.6.3 for purgeEntity (in redirectionOps): an inclusive source purges its copies
    // as this broker does, a redirect one purges the entities it holds instead of it.
    let (_server, ctx) = user_context();
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    for (name, mode, kind) in [
        ("copy", "inclusive", "Vehicle"),
        ("ships", "redirect", "Ship"),
    ] {
        register(
            &city,
            &ctx,
            registration(
                &format!("urn:ngsi-ld:ContextSourceRegistration:{name}"),
                &port,
                mode,
                json!({"entities": [{"type": kind}]}),
            ),
        )
        .await;
    }
    let (slow, fast) = ("urn:ngsi-ld:Vehicle:p1", "urn:ngsi-ld:Vehicle:p2");
    create(&city, &ctx, vehicle(slow, 10)).await;
    create(&city, &ctx, vehicle(fast, 80)).await;
    for n in 1..=2 {
        create(
            &city,
            &ctx,
            json!({"id": format!("urn:ngsi-ld:Ship:p{n}"), "type": "Ship",
                   "speed": {"type": "Property", "value": n}}),
        )
        .await;
    }
    let r = purge(&city, &ctx, "type=Vehicle&q=speed%3E40").await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    for (twin, name) in [(&city, "city"), (&port, "port")] {
        assert_eq!(held(twin, &ctx, fast).await.0, 404, "{name}");
        assert_eq!(held(twin, &ctx, slow).await.0, 200, "{name}");
    }
    let r = purge(&city, &ctx, "type=Ship").await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let (_, _, ships) = query(&port, &ctx, "type=Ship").await;
    assert_eq!(ids(&ships), Vec::<String>::new());
    // drop goes to the copy too; local=true stays here.
    let r = purge(&city, &ctx, "type=Vehicle&drop=speed").await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    for (twin, name) in [(&city, "city"), (&port, "port")] {
        let (status, e) = held(twin, &ctx, slow).await;
        assert_eq!(status, 200, "{name}");
        assert!(e.get("speed").is_none(), "{name}: {e}");
    }
    let r = purge(&city, &ctx, "type=Vehicle&local=true").await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(held(&city, &ctx, slow).await.0, 404);
    assert_eq!(held(&port, &ctx, slow).await.0, 200);
}

#[actix_web::test]
async fn an_exclusive_source_purges_its_part_and_failed_parts_are_reported() {
    let (_server, ctx) = user_context();
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    let car = "urn:ngsi-ld:Vehicle:px";
    speedometer_at(&city, &port, &ctx, car).await;
    assert_eq!(held(&port, &ctx, car).await.1["speed"]["value"], 70);
    let r = purge(&city, &ctx, "type=Vehicle").await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(held(&city, &ctx, car).await.0, 404);
    assert_eq!(held(&port, &ctx, car).await.0, 404);
    // A source that fails its part is reported with its status; the purge here happened. A
    // proxied registration that does not offer purgeEntity is a Conflict, and is not asked.
    let failing = ContextServer::start();
    failing.serve_raw(
        "/ngsi-ld/v1/entities?type=Ship",
        500,
        "application/json",
        json!({"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError", "title": "x"})
            .to_string(),
        0,
    );
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:failing",
               "type": "ContextSourceRegistration", "operations": ["purgeEntity"],
               "information": [{"entities": [{"type": "Ship"}]}],
               "endpoint": failing.url("")}),
    )
    .await;
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:reads", "mode": "redirect",
               "type": "ContextSourceRegistration", "operations": ["retrieveOps"],
               "information": [{"entities": [{"type": "Ship"}], "propertyNames": ["draught"]}],
               "endpoint": endpoint(&port)}),
    )
    .await;
    create(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:Ship:px", "type": "Ship", "speed": {"type": "Property", "value": 3}}),
    )
    .await;
    let r = purge(&city, &ctx, "type=Ship").await;
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    let errors = body["errors"].as_array().unwrap();
    let by_registration = |id: &str| {
        errors
            .iter()
            .find(|e| e["registrationId"] == format!("urn:ngsi-ld:ContextSourceRegistration:{id}"))
            .unwrap_or_else(|| panic!("{id} in {body}"))
    };
    assert_eq!(by_registration("failing")["error"]["status"], 500, "{body}");
    assert_eq!(by_registration("reads")["error"]["status"], 409, "{body}");
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(held(&city, &ctx, "urn:ngsi-ld:Ship:px").await.0, 404);
    // The source got the caller's purge as it was sent, with the caller's context.
    let sent = failing
        .requests()
        .into_iter()
        .find(|r| r.starts_with("DELETE "))
        .expect("the purge reached the source");
    assert!(
        sent.starts_with("DELETE /ngsi-ld/v1/entities?type=Ship HTTP/1.1"),
        "{sent}"
    );
    assert!(sent.contains(&ctx), "{sent}");
}
