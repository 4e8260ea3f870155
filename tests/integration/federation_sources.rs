//! How twinlink talks to a context source as its registration asks (4.3.6.4–4.3.6.6, 5.7.1,
//! 5.7.2.4): contextSourceInfo directives and headers copied from the request, sources that offer
//! queries only, `csf`, the narrowing of what a source of fragments is asked, and the answers of
//! writes that cannot be sent or only partly succeed. A recording HTTP server plays the source.

use crate::common;
use crate::federation::{create, endpoint, ids, register, user_context, vehicle};

use common::{assert_problem, link, ContextServer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// The requests the source received, lower-cased, the first line first.
fn seen(source: &ContextServer) -> Vec<String> {
    source
        .requests()
        .iter()
        .map(|r| r.to_ascii_lowercase())
        .collect()
}

/// PATCH /entities/{id}/attrs with a new speed, in the caller's @context.
async fn update_speed(s: &TestServer, ctx: &str, id: &str) -> reqwest::Response {
    s.send_linked(
        Method::PATCH,
        &format!("/entities/{id}/attrs"),
        ctx,
        &json!({"speed": {"type": "Property", "value": 9}}),
    )
    .await
}

fn body_of(request: &str) -> Value {
    let (_, body) = request
        .split_once("\r\n\r\n")
        .expect("a request with a head");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {request}"))
}

#[actix_web::test]
async fn context_source_info_steers_media_types_and_copies_request_headers() {
    let (_ctx_server, ctx) = user_context();
    let city = TestServer::start().await;
    let source = ContextServer::start();
    source.serve_raw("/src/ngsi-ld/v1/entities", 201, "application/json", "", 0);
    let remote = json!({"id": "urn:ngsi-ld:Vehicle:v1", "type": "Vehicle",
                        "speed": {"type": "Property", "value": 3}, "@context": ctx});
    source.serve_raw(
        "/src/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:v1",
        200,
        "application/ld+json",
        remote.to_string(),
        0,
    );
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:dialect", "type": "ContextSourceRegistration",
               "information": [{"entities": [{"type": "Vehicle"}]}],
               "operations": ["createEntity", "retrieveEntity"],
               "endpoint": source.url("/src"),
               "contextSourceInfo": [{"key": "contentType", "value": "application/ld+json"},
                                     {"key": "accept", "value": "application/ld+json"},
                                     {"key": "user", "value": "urn:ngsi-ld:request"}]}),
    )
    .await;
    create(&city, &ctx, vehicle("urn:ngsi-ld:Vehicle:v1", 3)).await;
    let requests = seen(&source);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let post = &requests[0];
    assert!(post.starts_with("post /src/ngsi-ld/v1/entities "), "{post}");
    assert!(post.contains("content-type: application/ld+json"), "{post}");
    assert!(post.contains("accept: application/ld+json"), "{post}");
    assert!(
        !post.contains("\r\nlink:"),
        "ld+json carries the context in the body: {post}"
    );
    assert!(
        !post.contains("contenttype:"),
        "directives are not headers: {post}"
    );
    let body = body_of(&source.requests()[0]);
    assert_eq!(body["@context"], json!(ctx), "{body}");
    assert_eq!(body["speed"]["value"], 3, "{body}");

    // urn:ngsi-ld:request: the header of the triggering request is passed on, when it has one.
    let (status, _, body) = city
        .get_with(
            "/entities/urn:ngsi-ld:Vehicle:v1",
            &[("Link", &link(&ctx)), ("user", "abcd")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["speed"]["value"], 3,
        "the source's ld+json answer is read: {body}"
    );
    let requests = seen(&source);
    assert!(
        requests[1].contains("\r\nuser: abcd\r\n"),
        "{}",
        requests[1]
    );
    let (status, _, _) = city
        .get_with("/entities/urn:ngsi-ld:Vehicle:v1", &[("Link", &link(&ctx))])
        .await;
    assert_eq!(status, 200);
    let requests = seen(&source);
    assert!(!requests[2].contains("\r\nuser:"), "{}", requests[2]);
}

#[actix_web::test]
async fn a_source_offering_queries_only_is_asked_by_query() {
    // 5.7.1: a source that offers queryEntity or queryBatch but no retrieveEntity still answers
    // a retrieval, asked for the one id with the type its registration gives.
    let (_ctx_server, ctx) = user_context();
    let city = TestServer::start().await;
    let answer = json!([{"id": "urn:ngsi-ld:Vehicle:q1", "type": "Vehicle",
                         "speed": {"type": "Property", "value": 11}}])
    .to_string();
    let by_get = ContextServer::start();
    by_get.serve_raw(
        "/ngsi-ld/v1/entities?type=Vehicle&id=urn%3Angsi-ld%3AVehicle%3Aq1",
        200,
        "application/json",
        answer.clone(),
        0,
    );
    by_get.serve_raw(
        "/ngsi-ld/v1/entities?type=Vehicle&limit=21",
        200,
        "application/json",
        answer.clone(),
        0,
    );
    let by_post = ContextServer::start();
    for path in [
        "/ngsi-ld/v1/entityOperations/query",
        "/ngsi-ld/v1/entityOperations/query?limit=21",
    ] {
        by_post.serve_raw(path, 200, "application/json", answer.clone(), 0);
    }
    for (n, (source, op)) in [(&by_get, "queryEntity"), (&by_post, "queryBatch")]
        .into_iter()
        .enumerate()
    {
        register(
            &city,
            &ctx,
            json!({"id": format!("urn:ngsi-ld:ContextSourceRegistration:q{n}"),
                   "type": "ContextSourceRegistration",
                   "information": [{"entities": [{"type": "Vehicle"}]}],
                   "operations": [op], "endpoint": source.url("")}),
        )
        .await;
    }
    let (status, _, body) = city
        .get_with("/entities/urn:ngsi-ld:Vehicle:q1", &[("Link", &link(&ctx))])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["speed"]["value"], 11, "{body}");
    let get = seen(&by_get);
    assert_eq!(get.len(), 1, "{get:?}");
    assert!(
        get[0]
            .starts_with("get /ngsi-ld/v1/entities?type=vehicle&id=urn%3angsi-ld%3avehicle%3aq1 "),
        "{}",
        get[0]
    );
    let post = by_post.requests();
    assert_eq!(post.len(), 1, "{post:?}");
    assert!(
        post[0].starts_with("POST /ngsi-ld/v1/entityOperations/query "),
        "{}",
        post[0]
    );
    assert_eq!(
        body_of(&post[0]),
        json!({"type": "Query", "entities": [{"id": "urn:ngsi-ld:Vehicle:q1", "type": "Vehicle"}]})
    );

    // A query at the broker, GET or POST, reaches both, each in the form it offers.
    let (status, _, body) = city
        .get_with("/entities?type=Vehicle", &[("Link", &link(&ctx))])
        .await;
    assert_eq!(
        (status, ids(&body)),
        (200, vec!["urn:ngsi-ld:Vehicle:q1".to_string()])
    );
    let post = by_post.requests();
    assert_eq!(post.len(), 2, "{post:?}");
    assert_eq!(body_of(&post[1])["entities"], json!([{"type": "Vehicle"}]));
    let r = city
        .send_ld(
            Method::POST,
            "/entityOperations/query",
            &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "@context": ctx}),
        )
        .await;
    let (status, _, body) = common::read(r).await;
    assert_eq!(
        (status, ids(&body)),
        (200, vec!["urn:ngsi-ld:Vehicle:q1".to_string()])
    );
    assert_eq!(
        seen(&by_get).len(),
        3,
        "the query's body context compacts the type"
    );
}

#[actix_web::test]
async fn csf_picks_the_sources_a_query_consults() {
    let (_ctx_server, ctx) = user_context();
    let city = TestServer::start().await;
    let source = ContextServer::start();
    source.serve_raw(
        "/ngsi-ld/v1/entities?type=Vehicle&limit=21",
        200,
        "application/json",
        json!([vehicle("urn:ngsi-ld:Vehicle:remote", 1)]).to_string(),
        0,
    );
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:csf", "type": "ContextSourceRegistration",
               "information": [{"entities": [{"type": "Vehicle"}]}], "sourceType": "sensor",
               "endpoint": source.url("")}),
    )
    .await;
    let (status, _, body) = city
        .get_with(
            "/entities?type=Vehicle&csf=sourceType==%22archive%22",
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!((status, ids(&body)), (200, Vec::<String>::new()));
    assert!(
        source.requests().is_empty(),
        "a source csf rules out is not asked"
    );
    let (status, _, body) = city
        .get_with(
            "/entities?type=Vehicle&csf=sourceType==%22sensor%22",
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!(
        (status, ids(&body)),
        (200, vec!["urn:ngsi-ld:Vehicle:remote".to_string()])
    );
    let r = city
        .get_with(
            "/entities?type=Vehicle&csf=sourceType==",
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!(r.0, 400, "an invalid csf is BadRequestData: {}", r.2);
}

#[actix_web::test]
async fn a_source_of_fragments_is_asked_for_its_entities_and_attributes_only() {
    // 4.3.6.7: an exclusive source holds the speed of one vehicle; a query by type asks it for
    // that vehicle's speed, and the fragment is merged with what is held here.
    let (_ctx_server, ctx) = user_context();
    let city = TestServer::start().await;
    let source = ContextServer::start();
    let id = "urn:ngsi-ld:Vehicle:frag";
    source.serve_raw(
        "/ngsi-ld/v1/entities?type=Vehicle&id=urn%3Angsi-ld%3AVehicle%3Afrag&attrs=speed&limit=10000",
        200,
        "application/json",
        json!([vehicle(id, 80)]).to_string(),
        0,
    );
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:frag", "type": "ContextSourceRegistration",
               "mode": "exclusive", "operations": ["redirectionOps"],
               "information": [{"entities": [{"id": id, "type": "Vehicle"}], "propertyNames": ["speed"]}],
               "endpoint": source.url("")}),
    )
    .await;
    create(
        &city,
        &ctx,
        json!({"id": id, "type": "Vehicle", "brandName": {"type": "Property", "value": "Volvo"}}),
    )
    .await;
    let (status, _, body) = city
        .get_with("/entities?type=Vehicle", &[("Link", &link(&ctx))])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["speed"]["value"], 80, "{body}");
    assert_eq!(body[0]["brandName"]["value"], "Volvo", "{body}");
    assert_eq!(source.requests().len(), 1);
}

#[actix_web::test]
async fn writes_that_cannot_be_sent_or_half_succeed_say_so() {
    let (_ctx_server, ctx) = user_context();
    let city = TestServer::start().await;
    let source = ContextServer::start();
    let redirected = "urn:ngsi-ld:Vehicle:redirected";
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:ro", "type": "ContextSourceRegistration",
               "mode": "redirect", "operations": ["retrieveOps"],
               "information": [{"entities": [{"id": redirected, "type": "Vehicle"}]}],
               "endpoint": source.url("/ro")}),
    )
    .await;
    // 5.6.2.4: the whole update belongs to a redirect source that does not offer it: Conflict,
    // and nothing is sent.
    let r = update_speed(&city, &ctx, redirected).await;
    assert_problem(r, 409, "Conflict").await;
    assert!(source.requests().is_empty());

    // An inclusive source took its copy but this broker does not hold the entity: a partial
    // success, not a 204.
    let copied = "urn:ngsi-ld:Vehicle:copied";
    source.serve_raw(
        &format!("/inc/ngsi-ld/v1/entities/{copied}/attrs"),
        204,
        "application/json",
        "",
        0,
    );
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:inc", "type": "ContextSourceRegistration",
               "operations": ["updateOps"],
               "information": [{"entities": [{"id": copied, "type": "Vehicle"}]}],
               "endpoint": source.url("/inc")}),
    )
    .await;
    let r = update_speed(&city, &ctx, copied).await;
    let (status, _, body) = common::read(r).await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["updated"], json!(["speed"]), "{body}");
    assert_eq!(body["notUpdated"][0]["attributeName"], "speed", "{body}");
    assert_eq!(seen(&source).len(), 1);

    // 5.6.19.4: replacing an attribute replaces the instance with the same datasetId; the
    // default instance of an attribute that has only a named one is not there to replace.
    let local = "urn:ngsi-ld:Vehicle:local";
    create(
        &city,
        &ctx,
        json!({"id": local, "type": "Vehicle",
               "speed": {"type": "Property", "value": 1, "datasetId": "urn:ngsi-ld:dataset:a"}}),
    )
    .await;
    let r = city
        .send_linked(
            Method::PUT,
            &format!("/entities/{local}/attrs/speed"),
            &ctx,
            &json!({"type": "Property", "value": 2}),
        )
        .await;
    assert_problem(r, 404, "ResourceNotFound").await;
    let r = city
        .send_linked(
            Method::PUT,
            &format!("/entities/{local}/attrs/speed"),
            &ctx,
            &json!({"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:dataset:a"}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let (_, _, held) = city
        .get_with(
            &format!("/entities/{local}?local=true"),
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!(held["speed"]["value"], 2, "{held}");
}

#[actix_web::test]
async fn a_batch_delete_reaches_an_exclusive_source_of_some_attributes() {
    let (_ctx_server, ctx) = user_context();
    let city = TestServer::start().await;
    let source = ContextServer::start();
    source.serve_raw(
        "/x/ngsi-ld/v1/entityOperations/delete",
        204,
        "application/json",
        "",
        0,
    );
    let id = "urn:ngsi-ld:Vehicle:excl";
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:excl", "type": "ContextSourceRegistration",
               "mode": "exclusive", "operations": ["redirectionOps", "deleteBatch"],
               "information": [{"entities": [{"id": id, "type": "Vehicle"}], "propertyNames": ["speed"]}],
               "endpoint": source.url("/x")}),
    )
    .await;
    create(
        &city,
        &ctx,
        json!({"id": id, "type": "Vehicle", "brandName": {"type": "Property", "value": "Volvo"}}),
    )
    .await;
    let r = city
        .send_ld(Method::POST, "/entityOperations/delete", &json!([id]))
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
    let requests = source.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(body_of(&requests[0]), json!([id]));
    city.assert_absent(id).await;
}

#[actix_web::test]
async fn a_registration_counts_the_requests_sent_to_its_source() {
    // Table 5.2.9-1: timesSent, timesFailed, lastSuccess, lastFailure and status.
    let (_ctx_server, ctx) = user_context();
    let city = TestServer::start().await;
    let source = ContextServer::start();
    source.serve_raw(
        "/ngsi-ld/v1/entities?type=Vehicle&limit=21",
        200,
        "application/json",
        "[]",
        0,
    );
    let id = "urn:ngsi-ld:ContextSourceRegistration:counted";
    register(
        &city,
        &ctx,
        json!({"id": id, "type": "ContextSourceRegistration",
               "information": [{"entities": [{"type": "Vehicle"}]}], "endpoint": source.url("")}),
    )
    .await;
    let (_, fresh) = city.get_json(&format!("/csourceRegistrations/{id}")).await;
    assert!(fresh.get("timesSent").is_none(), "{fresh}");
    for _ in 0..2 {
        let (status, _, _) = city
            .get_with("/entities?type=Vehicle", &[("Link", &link(&ctx))])
            .await;
        assert_eq!(status, 200);
    }
    let (_, counted) = city.get_json(&format!("/csourceRegistrations/{id}")).await;
    assert_eq!(counted["timesSent"], 2, "{counted}");
    assert!(
        counted.get("timesFailed").is_none(),
        "none failed: {counted}"
    );
    assert_eq!(counted["status"], "ok", "{counted}");
    assert!(counted["lastSuccess"].is_string() && counted.get("lastFailure").is_none());

    // The source answers an error: a failure, and the status says so.
    source.serve_raw(
        "/ngsi-ld/v1/entities?type=Vehicle&limit=21",
        500,
        "application/json",
        "{}",
        0,
    );
    city.get_with("/entities?type=Vehicle", &[("Link", &link(&ctx))])
        .await;
    let r = city
        .req(Method::GET, "/csourceRegistrations?type=Vehicle")
        .header("Link", link(&ctx))
        .send()
        .await
        .unwrap();
    let (_, _, listed) = common::read(r).await;
    assert_eq!(listed[0]["timesSent"], 3, "{listed}");
    assert_eq!(listed[0]["timesFailed"], 1, "{listed}");
    assert_eq!(listed[0]["status"], "failed", "{listed}");
    assert!(listed[0]["lastFailure"].is_string(), "{listed}");
}

#[actix_web::test]
async fn types_and_attributes_include_what_sources_hold() {
    // 5.7.5-5.7.10 with 4.3.6: the catalogue of a federating twin adds what its sources hold.
    let (_ctx_server, ctx) = user_context();
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    create(&city, &ctx, vehicle("urn:ngsi-ld:Vehicle:c1", 5)).await;
    create(&port, &ctx, vehicle("urn:ngsi-ld:Vehicle:p1", 6)).await;
    for n in 1..=2 {
        create(
            &port,
            &ctx,
            json!({"id": format!("urn:ngsi-ld:Ship:s{n}"), "type": "Ship",
                   "brandName": {"type": "Property", "value": "Maersk"}}),
        )
        .await;
    }
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:catalogue", "type": "ContextSourceRegistration",
               "information": [{"entities": [{"type": "Ship"}, {"type": "Vehicle"}]}],
               "operations": ["retrieveEntityTypes", "retrieveEntityTypeDetails", "retrieveEntityTypeInfo",
                              "retrieveAttrTypes", "retrieveAttrTypeDetails", "retrieveAttrTypeInfo"],
               "endpoint": endpoint(&port)}),
    )
    .await;
    let get = |path: &'static str| {
        let (city, ctx) = (&city, ctx.clone());
        async move {
            let (status, _, body) = city.get_with(path, &[("Link", &link(&ctx))]).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    let list = get("/types").await;
    assert_eq!(list["typeList"], json!(["Ship", "Vehicle"]), "{list}");
    let local = get("/types?local=true").await;
    assert_eq!(local["typeList"], json!(["Vehicle"]), "{local}");
    let details = get("/types?details=true").await;
    let ship = details
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["typeName"] == "Ship")
        .unwrap_or_else(|| panic!("{details}"));
    assert_eq!(ship["attributeNames"], json!(["brandName"]), "{details}");
    let vehicles = get("/types/Vehicle").await;
    assert_eq!(
        vehicles["entityCount"], 2,
        "one here, one at the port: {vehicles}"
    );
    let ships = get("/types/Ship").await;
    assert_eq!(ships["entityCount"], 2, "{ships}");
    assert_eq!(
        ships["attributeDetails"][0]["attributeTypes"],
        json!(["Property"])
    );

    let attributes = get("/attributes").await;
    assert_eq!(
        attributes["attributeList"],
        json!(["brandName", "speed"]),
        "{attributes}"
    );
    let speed = get("/attributes/speed").await;
    assert_eq!(speed["attributeCount"], 2, "{speed}");
    assert_eq!(speed["typeNames"], json!(["Vehicle"]), "{speed}");
    let brand = get("/attributes/brandName").await;
    assert_eq!(brand["typeNames"], json!(["Ship"]), "{brand}");

    // A source that cannot be reached is named in a warning; the answer stands.
    port.stop().await;
    let (status, headers, body) = city.get_with("/types", &[("Link", &link(&ctx))]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["typeList"], json!(["Vehicle"]), "{body}");
    assert!(headers.get("NGSILD-Warning").is_some(), "{headers:?}");
}

/// A vehicle's speed observed at these hours of 2026-01-01, as a temporal representation.
fn speeds(id: &str, hours: &[(u32, i64)]) -> Value {
    let instances: Vec<Value> = hours
        .iter()
        .map(|(h, v)| {
            json!({"type": "Property", "value": v,
                   "observedAt": format!("2026-01-01T{h:02}:00:00Z")})
        })
        .collect();
    json!({"id": id, "type": "Vehicle", "speed": instances})
}

#[actix_web::test]
async fn temporal_evolutions_include_the_instances_sources_hold() {
    // 5.7.3 and 5.7.4 with 4.3.6: the city holds one reading of a vehicle, the port two more, and
    // another vehicle only the port knows.
    let (_ctx_server, ctx) = user_context();
    let (city, port) = (TestServer::start().await, TestServer::start().await);
    for (server, body) in [
        (&city, speeds("urn:ngsi-ld:Vehicle:t1", &[(3, 30)])),
        (&port, speeds("urn:ngsi-ld:Vehicle:t1", &[(1, 10), (2, 20)])),
        (&port, speeds("urn:ngsi-ld:Vehicle:t2", &[(4, 40)])),
    ] {
        let r = server
            .send_linked(Method::POST, "/temporal/entities", &ctx, &body)
            .await;
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:history", "type": "ContextSourceRegistration",
               "information": [{"entities": [{"type": "Vehicle"}]}],
               "operations": ["retrieveTemporal", "queryTemporal"], "endpoint": endpoint(&port)}),
    )
    .await;
    let values = |body: &Value| -> Vec<i64> {
        body["speed"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|i| i["value"].as_i64().unwrap())
            .collect()
    };
    let window = "timerel=after&timeAt=2025-12-31T00:00:00Z";
    let get = |path: String| {
        let (city, ctx) = (&city, ctx.clone());
        async move {
            let (status, headers, body) = city.get_with(&path, &[("Link", &link(&ctx))]).await;
            assert_eq!(status, 200, "{path}: {body}");
            (headers, body)
        }
    };
    let (_, one) = get(format!(
        "/temporal/entities/urn:ngsi-ld:Vehicle:t1?{window}"
    ))
    .await;
    assert_eq!(values(&one), [10, 20, 30], "merged in time order: {one}");
    let (_, last) = get(format!(
        "/temporal/entities/urn:ngsi-ld:Vehicle:t1?{window}&lastN=2"
    ))
    .await;
    assert_eq!(values(&last), [20, 30], "lastN over the whole: {last}");
    let (_, simplified) = get(format!(
        "/temporal/entities/urn:ngsi-ld:Vehicle:t1?{window}&options=temporalValues"
    ))
    .await;
    assert_eq!(
        simplified["speed"]["values"].as_array().map(Vec::len),
        Some(3),
        "{simplified}"
    );
    let (_, here) = get(format!(
        "/temporal/entities/urn:ngsi-ld:Vehicle:t1?{window}&local=true"
    ))
    .await;
    assert_eq!(values(&here), [30]);
    // Held only at the port: still found.
    let (_, remote) = get(format!(
        "/temporal/entities/urn:ngsi-ld:Vehicle:t2?{window}"
    ))
    .await;
    assert_eq!(values(&remote), [40]);

    let (_, all) = get(format!(
        "/temporal/entities?type=Vehicle&{window}&count=true"
    ))
    .await;
    assert_eq!(
        ids(&all),
        ["urn:ngsi-ld:Vehicle:t1", "urn:ngsi-ld:Vehicle:t2"],
        "{all}"
    );
    assert_eq!(values(&all[0]), [10, 20, 30]);
    let (headers, first) = get(format!(
        "/temporal/entities?type=Vehicle&{window}&limit=1&count=true"
    ))
    .await;
    assert_eq!(ids(&first), ["urn:ngsi-ld:Vehicle:t1"]);
    assert_eq!(headers["NGSILD-Results-Count"], "2");
    let (_, second) = get(format!(
        "/temporal/entities?type=Vehicle&{window}&limit=1&offset=1"
    ))
    .await;
    assert_eq!(ids(&second), ["urn:ngsi-ld:Vehicle:t2"]);

    // Aggregation runs over the instances of every place: 10, 20 (port) and 30 (city).
    let (_, aggregated) = get(format!(
        "/temporal/entities/urn:ngsi-ld:Vehicle:t1?{window}&options=aggregatedValues&aggrMethods=sum,avg,totalCount&aggrPeriodDuration=PT0S"
    ))
    .await;
    let bucket = |method: &str| aggregated["speed"][method][0][0].clone();
    assert_eq!(
        (bucket("sum"), bucket("avg"), bucket("totalCount")),
        (json!(60.0), json!(20.0), json!(3)),
        "{aggregated}"
    );
    let (_, hourly) = get(format!(
        "/temporal/entities?type=Vehicle&{window}&options=aggregatedValues&aggrMethods=max&aggrPeriodDuration=PT1H&lastN=2"
    ))
    .await;
    assert_eq!(
        ids(&hourly),
        ["urn:ngsi-ld:Vehicle:t1", "urn:ngsi-ld:Vehicle:t2"],
        "{hourly}"
    );
    let maxima: Vec<Value> = hourly[0]["speed"]["max"]
        .as_array()
        .unwrap_or_else(|| panic!("{hourly}"))
        .iter()
        .map(|b| b[0].clone())
        .collect();
    assert_eq!(
        maxima,
        [json!(20.0), json!(30.0)],
        "the last two hours: {hourly}"
    );

    // A POST query gives its sources the same question.
    let r = city
        .send_ld(
            Method::POST,
            "/temporal/entityOperations/query",
            &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "@context": ctx,
                    "temporalQ": {"timerel": "after", "timeAt": "2025-12-31T00:00:00Z"}}),
        )
        .await;
    let (status, _, posted) = common::read(r).await;
    assert_eq!(status, 200, "{posted}");
    assert_eq!(
        ids(&posted),
        ["urn:ngsi-ld:Vehicle:t1", "urn:ngsi-ld:Vehicle:t2"]
    );
}

#[actix_web::test]
async fn a_source_gets_names_in_the_jsonld_context_it_registered() {
    // 4.3.6.6 jsonldContext: the source's own terms for the caller's names, its context as Link.
    let (_ctx_server, ctx) = user_context();
    let spanish = ContextServer::start();
    spanish.serve(
        "/es.jsonld",
        &json!({"@context": {"Vehiculo": "https://example.org/twin#Vehicle",
                             "velocidad": "https://example.org/twin#speed"}}),
    );
    let theirs = spanish.url("/es.jsonld");
    let city = TestServer::start().await;
    let source = ContextServer::start();
    source.serve_raw("/es/ngsi-ld/v1/entities", 201, "application/json", "", 0);
    register(
        &city,
        &ctx,
        json!({"id": "urn:ngsi-ld:ContextSourceRegistration:es", "type": "ContextSourceRegistration",
               "information": [{"entities": [{"type": "Vehicle"}]}],
               "operations": ["createEntity", "queryEntity"], "endpoint": source.url("/es"),
               "contextSourceInfo": [{"key": "jsonldContext", "value": theirs}]}),
    )
    .await;
    create(&city, &ctx, vehicle("urn:ngsi-ld:Vehicle:es1", 7)).await;
    let sent = source.requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let head = sent[0].to_ascii_lowercase();
    assert!(
        head.contains(&format!("link: {}", link(&theirs)).to_ascii_lowercase()),
        "{head}"
    );
    let body = body_of(&sent[0]);
    assert_eq!(
        body,
        json!({"id": "urn:ngsi-ld:Vehicle:es1", "type": "Vehiculo",
               "velocidad": {"type": "Property", "value": 7}})
    );

    let (status, _, _) = city
        .get_with(
            "/entities?type=Vehicle&q=speed%3E3&attrs=speed",
            &[("Link", &link(&ctx))],
        )
        .await;
    assert_eq!(status, 200);
    let sent = source.requests();
    let line = sent[1].lines().next().unwrap().to_string();
    let query = line.split_whitespace().nth(1).unwrap();
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.split_once('?').map_or("", |(_, q)| q).as_bytes())
            .into_owned()
            .collect();
    for (k, v) in [
        ("type", "Vehiculo"),
        ("q", "velocidad>3"),
        ("attrs", "velocidad"),
    ] {
        assert!(
            pairs.iter().any(|(a, b)| a == k && b == v),
            "{k}={v} in {pairs:?}"
        );
    }
}
