//! Black-box tests of entity maps (5.14, 5.5.14, 5.5.9.3): creating, reading, updating and
//! deleting maps per tenant, their lifetime and expiry, maps of temporal queries, `entityMap=true`
//! and the `NGSILD-EntityMap` header on queries and retrievals, paging through a map (pruning
//! what is gone, counting what still matches), maps of a federated query that name the
//! registrations whose sources hold each entity, and maps seen by several instances on one
//! PostgreSQL database.

use crate::common;

use chrono::{DateTime, TimeDelta, Utc};
use common::{assert_no_content, assert_problem, assert_status, read, ContextServer, TestServer};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

fn vehicle(id: &str, speed: i64) -> Value {
    json!({"id": id, "type": "Vehicle", "speed": {"type": "Property", "value": speed}})
}

async fn create(s: &TestServer, entity: Value) {
    assert_status(s.create(&entity).await, 201).await;
}

/// The location a response names in NGSILD-EntityMap.
fn location(headers: &HeaderMap) -> String {
    headers
        .get("NGSILD-EntityMap")
        .unwrap_or_else(|| panic!("no NGSILD-EntityMap header in {headers:?}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// The map id of a location: its last path segment.
fn map_id(location: &str) -> String {
    location.rsplit('/').next().unwrap().to_string()
}

/// The path of a map below the API base.
fn map_path(id: &str) -> String {
    format!("/entityMaps/{id}")
}

fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("an array of entities: {body}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// The entity ids of a map, in its order.
fn entries(map: &Value) -> Vec<String> {
    map["entityMap"]
        .as_object()
        .unwrap_or_else(|| panic!("an EntityMap: {map}"))
        .keys()
        .cloned()
        .collect()
}

fn expires_at(map: &Value) -> DateTime<Utc> {
    map["expiresAt"]
        .as_str()
        .unwrap_or_else(|| panic!("expiresAt in {map}"))
        .parse()
        .unwrap()
}

/// GETs a path with an NGSILD-EntityMap header.
async fn get_mapped(s: &TestServer, path: &str, location: &str) -> (u16, HeaderMap, Value) {
    s.get_with(path, &[("NGSILD-EntityMap", location)]).await
}

/// The Link headers of a response, joined.
fn links(headers: &HeaderMap) -> String {
    headers
        .get_all("Link")
        .iter()
        .map(|l| l.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[actix_web::test]
async fn a_map_of_a_query_is_created_read_updated_and_deleted() {
    let s = TestServer::start().await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:slow", 30)).await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:fast", 90)).await;
    create(&s, json!({"id": "urn:ngsi-ld:Ship:1", "type": "Ship"})).await;

    let before = Utc::now();
    let (status, headers, map) = s.get_with("/entityMaps?type=Vehicle", &[]).await;
    assert_eq!(status, 201, "{map}");
    let loc = location(&headers);
    let id = map_id(&loc);
    assert_eq!(loc, format!("/ngsi-ld/v1/entityMaps/{id}"));
    assert_eq!(map["id"], id.as_str());
    assert_eq!(map["type"], "EntityMap");
    assert_eq!(
        map["entityMap"],
        json!({"urn:ngsi-ld:Vehicle:fast": ["@none"], "urn:ngsi-ld:Vehicle:slow": ["@none"]})
    );
    // The default lifetime is an hour.
    let expiry = expires_at(&map);
    assert!(expiry > before + TimeDelta::minutes(59) && expiry <= Utc::now() + TimeDelta::hours(1));

    let (status, got) = s.get_json(&map_path(&id)).await;
    assert_eq!((status, &got), (200, &map));
    // The filters decide the candidates.
    let (status, _, fast) = s
        .get_with("/entityMaps?type=Vehicle&q=speed%3E50", &[])
        .await;
    assert_eq!(status, 201);
    assert_eq!(entries(&fast), ["urn:ngsi-ld:Vehicle:fast"]);
    // POST with a Query body does the same.
    let r = s
        .send(
            Method::POST,
            "/entityMaps",
            "application/json",
            &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "q": "speed<50"}),
        )
        .await;
    let (status, headers, slow) = read(r).await;
    assert_eq!(status, 201, "{slow}");
    assert_eq!(entries(&slow), ["urn:ngsi-ld:Vehicle:slow"]);
    assert_eq!(map_id(&location(&headers)), slow["id"].as_str().unwrap());

    // PATCH: expiresAt is capped at the maximum lifetime (a day); output-only members are
    // ignored; anything else is refused.
    let r = s
        .send(
            Method::PATCH,
            &map_path(&id),
            "application/json",
            &json!({"expiresAt": "2099-01-01T00:00:00Z",
                    "entityMap": {"urn:ngsi-ld:Vehicle:injected": ["@none"]}}),
        )
        .await;
    assert_no_content(r).await;
    let (_, patched) = s.get_json(&map_path(&id)).await;
    assert!(expires_at(&patched) <= Utc::now() + TimeDelta::days(1));
    assert!(expires_at(&patched) > Utc::now() + TimeDelta::hours(23));
    assert_eq!(patched["entityMap"], map["entityMap"]);
    for bad in [
        json!({"expiresAt": "tomorrow"}),
        json!({"expiresAt": 5}),
        json!({"entities": []}),
        json!({"type": "Subscription"}),
        json!([]),
    ] {
        let r = s
            .send(Method::PATCH, &map_path(&id), "application/json", &bad)
            .await;
        assert_problem(r, 400, "BadRequestData").await;
    }
    let r = s
        .send(
            Method::PATCH,
            &map_path("urn:ngsi-ld:EntityMap:unknown"),
            "application/json",
            &json!({"expiresAt": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;

    // Not a URI: 400; unknown: 404.
    for method in [Method::GET, Method::DELETE] {
        s.problem_of(
            method.clone(),
            "/entityMaps/not%20a%20uri",
            400,
            "BadRequestData",
        )
        .await;
        s.problem_of(
            method,
            &map_path("urn:ngsi-ld:EntityMap:x"),
            404,
            "ResourceNotFound",
        )
        .await;
    }
    let r = s.req(Method::DELETE, &map_path(&id)).send().await.unwrap();
    assert_no_content(r).await;
    s.problem_of(Method::GET, &map_path(&id), 404, "ResourceNotFound")
        .await;
    s.problem_of(Method::DELETE, &map_path(&id), 404, "ResourceNotFound")
        .await;
}

#[actix_web::test]
async fn too_wide_queries_and_bad_map_parameters_are_refused() {
    let s = TestServer::start().await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:1", 30)).await;
    for path in [
        "/entityMaps?id=urn:ngsi-ld:Vehicle:1",
        "/entityMaps?type=Vehicle&entityMapLifetime=1hour",
        "/entities?type=Vehicle&entityMap=true&entityMapLifetime=P1H",
        "/entities?type=Vehicle&entityMap=yes",
        "/entities/urn:ngsi-ld:Vehicle:1?entityMap=1",
        "/temporal/entityMaps?type=Vehicle",
        "/temporal/entityMaps?type=Vehicle&timerel=after",
    ] {
        s.problem_of(Method::GET, path, 400, "BadRequestData").await;
    }
}

#[actix_web::test]
async fn a_map_belongs_to_its_tenant() {
    let s = TestServer::start().await;
    let owner = [("NGSILD-Tenant", "owner")];
    let r = s
        .req(Method::POST, "/entities")
        .header("NGSILD-Tenant", "owner")
        .header("Content-Type", "application/json")
        .body(vehicle("urn:ngsi-ld:Vehicle:t", 1).to_string())
        .send()
        .await
        .unwrap();
    assert_status(r, 201).await;
    let (status, headers, _) = s.get_with("/entityMaps?type=Vehicle", &owner).await;
    assert_eq!(status, 201);
    let id = map_id(&location(&headers));
    for tenant in ["other", ""] {
        let mut get = s.req(Method::GET, &map_path(&id));
        let mut delete = s.req(Method::DELETE, &map_path(&id));
        if !tenant.is_empty() {
            get = get.header("NGSILD-Tenant", tenant);
            delete = delete.header("NGSILD-Tenant", tenant);
        }
        let (status, _, body) = read(get.send().await.unwrap()).await;
        assert_eq!(status, 404, "{body}");
        assert!(!body.to_string().contains("Vehicle:t"));
        assert_eq!(delete.send().await.unwrap().status(), 404);
    }
    let (status, _, map) = s.get_with(&map_path(&id), &owner).await;
    assert_eq!(status, 200);
    assert_eq!(entries(&map), ["urn:ngsi-ld:Vehicle:t"]);
    // The owner's reads use it.
    let (status, headers, _) = s
        .get_with(
            "/entities/urn:ngsi-ld:Vehicle:t",
            &[("NGSILD-Tenant", "owner"), ("NGSILD-EntityMap", &id)],
        )
        .await;
    assert_eq!((status, map_id(&location(&headers))), (200, id.clone()));
}

#[actix_web::test]
async fn lifetimes_are_capped_and_expired_maps_are_gone() {
    let (s, broker) = TestServer::start_with_broker(|settings| {
        settings.entity_map_lifetime = TimeDelta::minutes(5);
        settings.entity_map_max_lifetime = TimeDelta::hours(2);
    })
    .await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:1", 30)).await;
    let now = Utc::now();
    let (_, _, default) = s.get_with("/entityMaps?type=Vehicle", &[]).await;
    let expiry = expires_at(&default);
    assert!(expiry > now + TimeDelta::minutes(4) && expiry <= Utc::now() + TimeDelta::minutes(5));
    let (_, _, long) = s
        .get_with("/entityMaps?type=Vehicle&entityMapLifetime=P3650D", &[])
        .await;
    let expiry = expires_at(&long);
    assert!(expiry > now + TimeDelta::minutes(119) && expiry <= Utc::now() + TimeDelta::hours(2));
    let (_, _, short) = s
        .get_with("/entityMaps?type=Vehicle&entityMapLifetime=PT10M", &[])
        .await;
    assert!(expires_at(&short) <= Utc::now() + TimeDelta::minutes(10));

    // An expired map is never served: not read, not used by a query (which makes a new one).
    let id = long["id"].as_str().unwrap().to_string();
    let r = s
        .send(
            Method::PATCH,
            &map_path(&id),
            "application/json",
            &json!({"expiresAt": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_no_content(r).await;
    s.problem_of(Method::GET, &map_path(&id), 404, "ResourceNotFound")
        .await;
    let (status, headers, body) = get_mapped(&s, "/entities?type=Vehicle", &id).await;
    assert_eq!(status, 201, "{body}");
    assert_ne!(map_id(&location(&headers)), id);
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:1"]);

    // The sweep removes what has expired by then.
    let later = Utc::now() + TimeDelta::hours(3);
    let removed = broker.store().sweep_entity_maps(later).await.unwrap();
    assert!(removed >= 3, "{removed} maps swept");
    let short_id = short["id"].as_str().unwrap();
    s.problem_of(Method::GET, &map_path(short_id), 404, "ResourceNotFound")
        .await;
    assert_eq!(broker.store().sweep_entity_maps(later).await.unwrap(), 0);
}

#[actix_web::test]
async fn a_temporal_map_holds_the_entities_with_instances_in_the_range() {
    let s = TestServer::start().await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:1", 30)).await;
    create(
        &s,
        json!({"id": "urn:ngsi-ld:Ship:1", "type": "Ship",
                      "speed": {"type": "Property", "value": 3}}),
    )
    .await;
    let (status, headers, map) = s
        .get_with(
            "/temporal/entityMaps?type=Vehicle&timerel=before&timeAt=2999-01-01T00:00:00Z&timeproperty=createdAt",
            &[],
        )
        .await;
    assert_eq!(status, 201, "{map}");
    assert_eq!(map_id(&location(&headers)), map["id"].as_str().unwrap());
    assert_eq!(
        map["entityMap"],
        json!({"urn:ngsi-ld:Vehicle:1": ["@none"]})
    );
    let (status, _, empty) = s
        .get_with(
            "/temporal/entityMaps?type=Vehicle&timerel=before&timeAt=2000-01-01T00:00:00Z&timeproperty=createdAt",
            &[],
        )
        .await;
    assert_eq!((status, empty["entityMap"].clone()), (201, json!({})));
    // POST with a Query body and its temporalQ.
    let r = s
        .send(
            Method::POST,
            "/temporal/entityMaps",
            "application/json",
            &json!({"type": "Query", "entities": [{"type": "Ship"}],
                    "temporalQ": {"timerel": "after", "timeAt": "2000-01-01T00:00:00Z",
                                  "timeproperty": "createdAt"}}),
        )
        .await;
    let body = assert_status(r, 201).await;
    assert_eq!(entries(&body), ["urn:ngsi-ld:Ship:1"]);
    let r = s
        .send(
            Method::POST,
            "/temporal/entityMaps",
            "application/json",
            &json!({"type": "Query", "entities": [{"type": "Ship"}]}),
        )
        .await;
    assert_problem(r, 400, "BadRequestData").await;
}

#[actix_web::test]
async fn a_query_asking_for_a_map_gets_one_and_later_queries_are_fixed_to_it() {
    let s = TestServer::start().await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:a", 30)).await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:b", 90)).await;
    let (status, headers, body) = s
        .get_with("/entities?type=Vehicle&entityMap=true", &[])
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Vehicle:a", "urn:ngsi-ld:Vehicle:b"]
    );
    assert_eq!(body[1]["speed"]["value"], 90);
    let loc = location(&headers);
    // An entity created since is not among the map's candidates; the location is echoed.
    create(&s, vehicle("urn:ngsi-ld:Vehicle:c", 50)).await;
    let (status, headers, body) = get_mapped(&s, "/entities?type=Vehicle", &loc).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(location(&headers), loc);
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Vehicle:a", "urn:ngsi-ld:Vehicle:b"]
    );
    // A later request may name ids: the map's candidates among them.
    let (_, _, body) = get_mapped(
        &s,
        "/entities?type=Vehicle&id=urn:ngsi-ld:Vehicle:b,urn:ngsi-ld:Vehicle:c",
        &loc,
    )
    .await;
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:b"]);
    // The bare id works as a reference too, and POST queries take the header.
    let r = s
        .req(Method::POST, "/entityOperations/query")
        .header("Content-Type", "application/json")
        .header("NGSILD-EntityMap", map_id(&loc))
        .body(json!({"type": "Query", "entities": [{"type": "Vehicle"}]}).to_string())
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(r).await;
    assert_eq!((status, location(&headers)), (200, loc.clone()), "{body}");
    assert_eq!(ids(&body).len(), 2);
    // An unknown reference makes a new map (201 and a fresh location).
    let (status, headers, body) =
        get_mapped(&s, "/entities?type=Vehicle", "urn:ngsi-ld:EntityMap:gone").await;
    assert_eq!(status, 201);
    assert!(!location(&headers).contains("gone"));
    assert_eq!(ids(&body).len(), 3);
    // Without maps, nothing changes: no header.
    let (status, headers, _) = s.get_with("/entities?type=Vehicle", &[]).await;
    assert_eq!(status, 200);
    assert!(headers.get("NGSILD-EntityMap").is_none());
}

#[actix_web::test]
async fn paging_through_a_map_prunes_what_no_longer_matches_and_counts_what_does() {
    let s = TestServer::start().await;
    for i in 0..5 {
        create(&s, vehicle(&format!("urn:ngsi-ld:Vehicle:p{i}"), 50)).await;
    }
    let (status, headers, _) = s
        .get_with(
            "/entities?type=Vehicle&q=speed%3E10&entityMap=true&limit=1",
            &[],
        )
        .await;
    assert_eq!(status, 201);
    let loc = location(&headers);
    let id = map_id(&loc);
    let (status, headers, body) =
        get_mapped(&s, "/entities?type=Vehicle&q=speed%3E10&limit=2", &loc).await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Vehicle:p0", "urn:ngsi-ld:Vehicle:p1"]
    );
    let link = links(&headers);
    assert!(
        link.contains("rel=\"next\"") && link.contains("offset=2"),
        "{link}"
    );
    assert!(
        !link.contains("Vehicle:p"),
        "a link carries the query, not ids: {link}"
    );
    let (_, headers, body) = get_mapped(
        &s,
        "/entities?type=Vehicle&q=speed%3E10&limit=2&offset=4",
        &loc,
    )
    .await;
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:p4"]);
    let link = links(&headers);
    assert!(
        !link.contains("rel=\"next\"") && link.contains("rel=\"prev\""),
        "{link}"
    );

    // p0 is deleted and p1 no longer matches: the page skips them and fills up from later
    // candidates, and the map forgets them.
    let r = s
        .req(Method::DELETE, "/entities/urn:ngsi-ld:Vehicle:p0")
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    slow_down(&s, "urn:ngsi-ld:Vehicle:p1").await;
    let (_, _, body) = get_mapped(&s, "/entities?type=Vehicle&q=speed%3E10&limit=2", &loc).await;
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Vehicle:p2", "urn:ngsi-ld:Vehicle:p3"]
    );
    let (_, map) = s.get_json(&map_path(&id)).await;
    assert_eq!(
        entries(&map),
        [
            "urn:ngsi-ld:Vehicle:p2",
            "urn:ngsi-ld:Vehicle:p3",
            "urn:ngsi-ld:Vehicle:p4"
        ]
    );
    // count checks every candidate, also those after the page.
    slow_down(&s, "urn:ngsi-ld:Vehicle:p4").await;
    let (_, headers, body) = get_mapped(
        &s,
        "/entities?type=Vehicle&q=speed%3E10&limit=1&count=true",
        &loc,
    )
    .await;
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:p2"]);
    assert_eq!(headers["NGSILD-Results-Count"], "2");
    let (_, map) = s.get_json(&map_path(&id)).await;
    assert_eq!(
        entries(&map),
        ["urn:ngsi-ld:Vehicle:p2", "urn:ngsi-ld:Vehicle:p3"]
    );
    // A page past the end is empty.
    let (status, _, body) =
        get_mapped(&s, "/entities?type=Vehicle&q=speed%3E10&offset=2", &loc).await;
    assert_eq!((status, ids(&body)), (200, Vec::<String>::new()));
}

/// Sets a vehicle's speed to 5, below what the paging test's query asks for.
async fn slow_down(s: &TestServer, id: &str) {
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &json!({"speed": {"type": "Property", "value": 5}}),
        )
        .await;
    assert_no_content(r).await;
}

#[actix_web::test]
async fn retrievals_name_the_map_they_used_or_made() {
    let s = TestServer::start().await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:r", 30)).await;
    let path = "/entities/urn:ngsi-ld:Vehicle:r";
    let (status, headers, body) = s.get_with(&format!("{path}?entityMap=true"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "urn:ngsi-ld:Vehicle:r");
    assert!(body.get("entityMap").is_none());
    let loc = location(&headers);
    let (_, map) = s.get_json(&map_path(&map_id(&loc))).await;
    assert_eq!(
        map["entityMap"],
        json!({"urn:ngsi-ld:Vehicle:r": ["@none"]})
    );
    let (status, headers, _) = get_mapped(&s, path, &loc).await;
    assert_eq!((status, location(&headers)), (200, loc.clone()));
    let (status, headers, _) = get_mapped(&s, path, "urn:ngsi-ld:EntityMap:dead").await;
    assert_eq!(status, 200);
    assert!(!location(&headers).contains("dead"));
    let (status, headers, _) = s.get_with(path, &[]).await;
    assert_eq!(status, 200);
    assert!(headers.get("NGSILD-EntityMap").is_none());
    // A retrieval that fails makes no map.
    let (status, headers, _) = s
        .get_with("/entities/urn:ngsi-ld:Vehicle:none?entityMap=true", &[])
        .await;
    assert_eq!(status, 404);
    assert!(headers.get("NGSILD-EntityMap").is_none());
}

#[actix_web::test]
async fn temporal_reads_use_and_make_maps() {
    let s = TestServer::start().await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:one", 30)).await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:two", 90)).await;
    let window = "timerel=after&timeAt=2000-01-01T00:00:00Z&timeproperty=createdAt";
    let (status, headers, body) = s
        .get_with(
            &format!("/temporal/entities/urn:ngsi-ld:Vehicle:one?{window}&entityMap=true"),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, map) = s.get_json(&map_path(&map_id(&location(&headers)))).await;
    assert_eq!(
        map["entityMap"],
        json!({"urn:ngsi-ld:Vehicle:one": ["@none"]})
    );

    let (status, headers, body) = s
        .get_with(
            &format!("/temporal/entities?type=Vehicle&id=urn:ngsi-ld:Vehicle:one&{window}&entityMap=true"),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let loc = location(&headers);
    let (status, headers, body) = get_mapped(
        &s,
        &format!("/temporal/entities?type=Vehicle&{window}"),
        &loc,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(location(&headers), loc);
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:one"]);
    let (status, headers, body) = get_mapped(
        &s,
        &format!("/temporal/entities?type=Vehicle&{window}"),
        "urn:ngsi-ld:EntityMap:dead",
    )
    .await;
    assert_eq!(status, 201);
    assert!(!location(&headers).contains("dead"));
    assert_eq!(ids(&body).len(), 2);
    // A map of entities is a map for the temporal API too, and the other way round.
    let (_, headers, _) = s
        .get_with("/entities?type=Vehicle&entityMap=true&q=speed%3E50", &[])
        .await;
    let (_, _, body) = get_mapped(
        &s,
        &format!("/temporal/entities?type=Vehicle&{window}"),
        &location(&headers),
    )
    .await;
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:two"]);
}

#[actix_web::test]
async fn a_map_survives_a_restart() {
    let s = TestServer::start().await;
    create(&s, vehicle("urn:ngsi-ld:Vehicle:d", 1)).await;
    let (_, headers, _) = s.get_with("/entityMaps?type=Vehicle", &[]).await;
    let id = map_id(&location(&headers));
    let s = s.restart().await;
    let (status, map) = s.get_json(&map_path(&id)).await;
    assert_eq!(status, 200, "{map}");
    assert_eq!(entries(&map), ["urn:ngsi-ld:Vehicle:d"]);
}

/// The NGSI-LD endpoint of a test server, as a registration names it.
fn endpoint(s: &TestServer) -> String {
    s.base.trim_end_matches("/ngsi-ld/v1").to_string()
}

async fn register(s: &TestServer, id: &str, endpoint: &str) {
    let body = json!({"id": id, "type": "ContextSourceRegistration",
                      "information": [{"entities": [{"type": "Vehicle"}]}],
                      "endpoint": endpoint});
    let r = s
        .send(
            Method::POST,
            "/csourceRegistrations",
            "application/json",
            &body,
        )
        .await;
    assert_status(r, 201).await;
}

#[actix_web::test]
async fn a_map_of_a_federated_query_names_the_registrations_and_fixes_later_pages() {
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    // A source that holds nothing: asked when the map is made, never for a later page.
    let empty = ContextServer::start();
    create(&city, vehicle("urn:ngsi-ld:Vehicle:c1", 30)).await;
    create(&city, vehicle("urn:ngsi-ld:Vehicle:both", 40)).await;
    create(&port, vehicle("urn:ngsi-ld:Vehicle:p1", 50)).await;
    create(&port, vehicle("urn:ngsi-ld:Vehicle:p2", 60)).await;
    create(&port, vehicle("urn:ngsi-ld:Vehicle:both", 40)).await;
    let reg = "urn:ngsi-ld:ContextSourceRegistration:port";
    register(&city, reg, &endpoint(&port)).await;
    register(
        &city,
        "urn:ngsi-ld:ContextSourceRegistration:empty",
        &empty.url("/empty"),
    )
    .await;

    let (status, headers, body) =
        s_get(&city, "/entities?type=Vehicle&entityMap=true&limit=2").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Vehicle:both", "urn:ngsi-ld:Vehicle:c1"]
    );
    let loc = location(&headers);
    let (_, map) = city.get_json(&map_path(&map_id(&loc))).await;
    assert_eq!(
        map["entityMap"],
        json!({
            "urn:ngsi-ld:Vehicle:both": ["@none", reg],
            "urn:ngsi-ld:Vehicle:c1": ["@none"],
            "urn:ngsi-ld:Vehicle:p1": [reg],
            "urn:ngsi-ld:Vehicle:p2": [reg],
        })
    );
    let asked = empty.requests().len();
    assert_eq!(asked, 1, "{:?}", empty.requests());

    // Since: a new vehicle at the port (not a candidate), p1 gone there, p2 changed there.
    create(&port, vehicle("urn:ngsi-ld:Vehicle:p0", 70)).await;
    let r = port
        .req(Method::DELETE, "/entities/urn:ngsi-ld:Vehicle:p1")
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let r = port
        .send(
            Method::PATCH,
            "/entities/urn:ngsi-ld:Vehicle:p2/attrs",
            "application/json",
            &json!({"speed": {"type": "Property", "value": 61}}),
        )
        .await;
    assert_no_content(r).await;
    let (status, headers, body) = get_mapped(
        &city,
        "/entities?type=Vehicle&limit=2&offset=2&count=true",
        &loc,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:p2"]);
    assert_eq!(body[0]["speed"]["value"], 61, "read again from the port");
    assert_eq!(headers["NGSILD-Results-Count"], "3");
    assert_eq!(
        empty.requests().len(),
        asked,
        "the map names no entity of that source"
    );
    let (_, map) = city.get_json(&map_path(&map_id(&loc))).await;
    assert_eq!(
        entries(&map),
        [
            "urn:ngsi-ld:Vehicle:both",
            "urn:ngsi-ld:Vehicle:c1",
            "urn:ngsi-ld:Vehicle:p2"
        ]
    );
    // A retrieval with the map asks only the registrations the map names for the entity.
    let (status, headers, got) = get_mapped(&city, "/entities/urn:ngsi-ld:Vehicle:p2", &loc).await;
    assert_eq!((status, got["speed"]["value"].as_i64()), (200, Some(61)));
    assert_eq!(location(&headers), loc);
    assert_eq!(empty.requests().len(), asked);
    // The filters are re-checked on what the port holds now.
    let (_, _, body) = get_mapped(&city, "/entities?type=Vehicle&q=speed%3E60", &loc).await;
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:p2"]);
}

async fn s_get(s: &TestServer, path: &str) -> (u16, HeaderMap, Value) {
    s.get_with(path, &[]).await
}

#[actix_web::test]
async fn instances_on_one_database_share_their_maps() {
    // Runs on PostgreSQL under both store runs: the embedded store is one instance by
    // construction.
    let one = TestServer::start_on_postgres().await;
    let url = one.database_url.clone().expect("a PostgreSQL server");
    let two = TestServer::start_with(|s| s.database_url = Some(url.clone())).await;
    for i in 0..3 {
        create(&one, vehicle(&format!("urn:ngsi-ld:Vehicle:s{i}"), 10)).await;
    }
    let (status, headers, _) = one
        .get_with("/entities?type=Vehicle&entityMap=true&limit=1", &[])
        .await;
    assert_eq!(status, 201);
    let loc = location(&headers);
    let (status, headers, body) =
        get_mapped(&two, "/entities?type=Vehicle&limit=1&offset=1", &loc).await;
    assert_eq!((status, location(&headers)), (200, loc.clone()), "{body}");
    assert_eq!(ids(&body), ["urn:ngsi-ld:Vehicle:s1"]);
    // A pruning by one instance is seen by the other.
    let r = two
        .req(Method::DELETE, "/entities/urn:ngsi-ld:Vehicle:s1")
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let (_, _, body) = get_mapped(&two, "/entities?type=Vehicle&count=true", &loc).await;
    assert_eq!(
        ids(&body),
        ["urn:ngsi-ld:Vehicle:s0", "urn:ngsi-ld:Vehicle:s2"]
    );
    let (_, map) = one.get_json(&map_path(&map_id(&loc))).await;
    assert_eq!(
        entries(&map),
        ["urn:ngsi-ld:Vehicle:s0", "urn:ngsi-ld:Vehicle:s2"]
    );
    let r = two
        .req(Method::DELETE, &map_path(&map_id(&loc)))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    one.problem_of(
        Method::GET,
        &map_path(&map_id(&loc)),
        404,
        "ResourceNotFound",
    )
    .await;
}
