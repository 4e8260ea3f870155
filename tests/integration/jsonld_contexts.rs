//! Black-box tests of the @context management API (GS CIM 009 V1.9.1 clauses 5.13, 6.30 and
//! 6.31): user @contexts added (kind Hosted), served back at their own URL and resolved from there
//! without a fetch; fetched @contexts listed as Cached with their usage, dropped and reloaded;
//! @contexts created for subscriptions whose @context is not one URL (ImplicitlyCreated); the
//! errors of each operation; tenants; persistence across a restart and, on PostgreSQL, across
//! instances.

use crate::common;

use common::{assert_no_content, assert_problem, read, ContextServer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const EX: &str = "https://example.org/hosted#";

fn user_context() -> Value {
    json!({"@context": {
        "Sensor": format!("{EX}Sensor"),
        "temperature": format!("{EX}temperature")
    }})
}

fn sensor(id: &str) -> Value {
    json!({"id": id, "type": "Sensor", "temperature": {"type": "Property", "value": 20}})
}

/// The id part of a /jsonldContexts URL or path, percent-encoded for a path segment.
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// POSTs a @context document as application/json; returns the Location path.
async fn add(s: &TestServer, tenant: Option<&str>, doc: &Value) -> String {
    let mut b = s
        .req(Method::POST, "/jsonldContexts")
        .header("Content-Type", "application/json")
        .body(doc.to_string());
    if let Some(t) = tenant {
        b = b.header("NGSILD-Tenant", t);
    }
    let r = b.send().await.expect("request");
    let location = r
        .headers()
        .get("Location")
        .map(|h| h.to_str().unwrap().to_string());
    let status = r.status().as_u16();
    assert_eq!(status, 201, "{}", r.text().await.unwrap());
    let location = location.expect("a Location header");
    assert!(
        location.starts_with("/ngsi-ld/v1/jsonldContexts/"),
        "{location}"
    );
    location
}

/// The local id at the end of a Location path or a context URL.
fn local_id(location: &str) -> String {
    location.rsplit('/').next().unwrap().to_string()
}

async fn get(s: &TestServer, tenant: Option<&str>, path: &str) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = tenant.map(|t| ("NGSILD-Tenant", t)).into_iter().collect();
    let (status, _, body) = s.get_with(path, &headers).await;
    (status, body)
}

async fn details(s: &TestServer, id: &str) -> Value {
    let (status, body) = get(
        s,
        None,
        &format!("/jsonldContexts/{}?details=true", segment(id)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The detailed entries of `GET /jsonldContexts` (of one kind when given).
async fn listed(s: &TestServer, tenant: Option<&str>, kind: Option<&str>) -> Vec<Value> {
    let query = kind.map_or(String::new(), |k| format!("&kind={k}"));
    let (status, body) = get(s, tenant, &format!("/jsonldContexts?details=true{query}")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().expect("an array").clone()
}

fn entry<'a>(entries: &'a [Value], url: &str) -> Option<&'a Value> {
    entries.iter().find(|e| e["URL"] == url)
}

#[actix_web::test]
async fn a_hosted_context_is_added_served_listed_and_deleted() {
    let s = TestServer::start().await;
    let location = add(&s, None, &user_context()).await;
    let id = local_id(&location);

    let r = s
        .req(Method::GET, &format!("/jsonldContexts/{id}"))
        .send()
        .await
        .unwrap();
    let content_type = r.headers()["Content-Type"].to_str().unwrap().to_string();
    let (status, _, body) = read(r).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    assert_eq!(body, user_context(), "the document as it was added");

    let meta = details(&s, &id).await;
    assert_eq!(meta["kind"], "Hosted");
    assert_eq!(meta["localId"], id);
    assert!(meta["createdAt"].is_string(), "{meta}");
    let url = meta["URL"].as_str().unwrap().to_string();
    assert!(url.starts_with("http") && url.ends_with(&location), "{url}");
    let keys: Vec<&String> = meta.as_object().unwrap().keys().collect();
    assert!(
        keys.iter()
            .all(|k| ["URL", "localId", "kind", "createdAt"].contains(&k.as_str())),
        "a Hosted @context has no usage counts: {meta}"
    );

    let (status, urls) = get(&s, None, "/jsonldContexts").await;
    assert_eq!(status, 200);
    assert!(urls.as_array().unwrap().contains(&json!(url)), "{urls}");
    assert!(entry(&listed(&s, None, Some("Hosted")).await, &url).is_some());
    assert!(entry(&listed(&s, None, Some("Cached")).await, &url).is_none());
    assert!(entry(&listed(&s, None, Some("ImplicitlyCreated")).await, &url).is_none());

    let r = s
        .req(Method::DELETE, &format!("/jsonldContexts/{id}"))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let path = format!("/jsonldContexts/{id}");
    s.problem_of(Method::GET, &path, 404, "ResourceNotFound")
        .await;
    s.problem_of(Method::DELETE, &path, 404, "ResourceNotFound")
        .await;
    assert!(entry(&listed(&s, None, None).await, &url).is_none());
}

#[actix_web::test]
async fn a_hosted_context_resolves_at_its_url_without_a_fetch() {
    let s = TestServer::start().await;
    let id = local_id(&add(&s, None, &user_context()).await);
    let url = details(&s, &id).await["URL"].as_str().unwrap().to_string();
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &url,
            &sensor("urn:ngsi-ld:Sensor:h1"),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // The same path on a host nobody listens on: the broker knows the id, nothing is fetched.
    let elsewhere = format!("http://127.0.0.1:9/ngsi-ld/v1/jsonldContexts/{id}");
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &elsewhere,
            &sensor("urn:ngsi-ld:Sensor:h2"),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    for id in ["urn:ngsi-ld:Sensor:h1", "urn:ngsi-ld:Sensor:h2"] {
        let got = s.entity(id, "").await;
        assert_eq!(got["type"], format!("{EX}Sensor"), "{got}");
        assert_eq!(got[format!("{EX}temperature")]["value"], 20, "{got}");
    }
}

#[actix_web::test]
async fn bad_contexts_and_parameters_are_refused() {
    let s = TestServer::start().await;
    let post = |body: String| {
        s.req(Method::POST, "/jsonldContexts")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let r = post("{\"@context\": {\"a\": \"urn:a\"".into())
        .await
        .unwrap();
    assert_problem(r, 400, "InvalidRequest").await;
    let r = post(json!({"a": "urn:a"}).to_string()).await.unwrap();
    assert_problem(r, 400, "InvalidRequest").await;
    for bad in [json!(42), json!(true), json!(["https://example.org/c", 7])] {
        let r = post(json!({ "@context": bad }).to_string()).await.unwrap();
        let problem = assert_problem(r, 400, "BadRequestData").await;
        assert!(problem["detail"].is_string());
    }
    // A @context that refers to a document that cannot be retrieved is not stored.
    let gone = ContextServer::start();
    let r = post(json!({"@context": [gone.url("/missing.jsonld")]}).to_string())
        .await
        .unwrap();
    assert_problem(r, 504, "LdContextNotAvailable").await;
    assert!(listed(&s, None, Some("Hosted")).await.is_empty());

    for query in ["details=other", "kind=other", "details=true&kind=Other"] {
        let path = format!("/jsonldContexts?{query}");
        s.problem_of(Method::GET, &path, 400, "BadRequestData")
            .await;
    }
    s.problem_of(
        Method::DELETE,
        "/jsonldContexts/urn:ngsi-ld:Context:nothing?reload=maybe",
        400,
        "BadRequestData",
    )
    .await;
    s.problem_of(
        Method::GET,
        "/jsonldContexts/urn:ngsi-ld:Context:nothing",
        404,
        "ResourceNotFound",
    )
    .await;
}

#[actix_web::test]
async fn a_fetched_context_is_listed_as_cached_with_its_usage_and_can_be_dropped_or_reloaded() {
    let ctx = ContextServer::start();
    ctx.serve("/ctx.jsonld", &user_context());
    let url = ctx.url("/ctx.jsonld");
    let s = TestServer::start().await;
    let create = |n: u32| {
        let entity = sensor(&format!("urn:ngsi-ld:Sensor:c{n}"));
        let (s, url) = (&s, &url);
        async move { s.send_linked(Method::POST, "/entities", url, &entity).await }
    };
    assert_eq!(create(1).await.status(), 201);
    let cached = listed(&s, None, Some("Cached")).await;
    let first = entry(&cached, &url).expect("the fetched @context is listed as Cached");
    assert_eq!(first["kind"], "Cached");
    assert_eq!(
        first["numberOfHits"], 0,
        "fetching it is no use of the cached copy"
    );
    assert!(first["localId"].is_string() && first["createdAt"].is_string());

    assert_eq!(create(2).await.status(), 201);
    // Served by its URL: the second request and this one are uses of the cached copy.
    let served = details(&s, &url).await;
    assert_eq!(served["numberOfHits"], 2, "{served}");
    assert!(served["lastUsage"].is_string(), "{served}");
    let (status, doc) = get(&s, None, &format!("/jsonldContexts/{}", segment(&url))).await;
    assert_eq!((status, doc), (200, user_context()));
    // ... and by its local id.
    let local = served["localId"].as_str().unwrap();
    assert_eq!(details(&s, local).await["URL"], url);
    assert_eq!(ctx.hits("/ctx.jsonld"), 1, "fetched once");

    // reload fetches it anew; when that fails, the cached copy stays.
    let path = format!("/jsonldContexts/{}", segment(&url));
    let r = s
        .req(Method::DELETE, &format!("{path}?reload=true"))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    assert_eq!(ctx.hits("/ctx.jsonld"), 2);
    ctx.serve_raw("/ctx.jsonld", 500, "text/plain", "down", 0);
    s.problem_of(
        Method::DELETE,
        &format!("{path}?reload=true"),
        504,
        "LdContextNotAvailable",
    )
    .await;
    assert_eq!(details(&s, &url).await["kind"], "Cached");

    // Dropped, it is fetched again by the next request that needs it.
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    s.problem_of(Method::GET, &path, 404, "ResourceNotFound")
        .await;
    ctx.serve("/ctx.jsonld", &user_context());
    assert_eq!(create(3).await.status(), 201);
    assert_eq!(ctx.hits("/ctx.jsonld"), 4);
    assert!(entry(&listed(&s, None, Some("Cached")).await, &url).is_some());
}

#[actix_web::test]
async fn the_core_context_stays_and_only_cached_contexts_reload() {
    let s = TestServer::start().await;
    for core in [
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld",
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld",
    ] {
        let path = format!("/jsonldContexts/{}", segment(core));
        assert_eq!(details(&s, core).await["kind"], "Cached");
        s.problem_of(Method::DELETE, &path, 400, "BadRequestData")
            .await;
        // Bundled with the broker: reloading it changes nothing.
        let r = s
            .req(Method::DELETE, &format!("{path}?reload=true"))
            .send()
            .await
            .unwrap();
        assert_no_content(r).await;
        assert_eq!(details(&s, core).await["kind"], "Cached");
    }
    let id = local_id(&add(&s, None, &user_context()).await);
    s.problem_of(
        Method::DELETE,
        &format!("/jsonldContexts/{id}?reload=true"),
        400,
        "BadRequestData",
    )
    .await;
    assert_eq!(details(&s, &id).await["kind"], "Hosted", "still there");
}

#[actix_web::test]
async fn a_subscription_whose_context_is_not_one_url_gets_an_implicitly_created_one() {
    let s = TestServer::start().await;
    let inline = user_context()["@context"].clone();
    let subscription = |id: &str, context: Value| {
        json!({
            "id": id,
            "type": "Subscription",
            "entities": [{"type": "Sensor"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
            "@context": context
        })
    };
    let sub = "urn:ngsi-ld:Subscription:implicit";
    let r = s
        .send_ld(
            Method::POST,
            "/subscriptions",
            &subscription(sub, inline.clone()),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (_, got) = get(&s, None, &format!("/subscriptions/{sub}")).await;
    let url = got["jsonldContext"]
        .as_str()
        .expect("a jsonldContext")
        .to_string();
    let id = local_id(&url);
    let implicit = listed(&s, None, Some("ImplicitlyCreated")).await;
    assert_eq!(implicit.len(), 1, "{implicit:?}");
    assert_eq!(implicit[0]["URL"], url);
    let (status, doc) = get(&s, None, &format!("/jsonldContexts/{id}")).await;
    assert_eq!((status, doc), (200, json!({ "@context": inline })));
    s.problem_of(
        Method::DELETE,
        &format!("/jsonldContexts/{id}?reload=true"),
        400,
        "BadRequestData",
    )
    .await;

    // One URL is a URL already: nothing is created.
    let ctx = ContextServer::start();
    ctx.serve("/ctx.jsonld", &user_context());
    let r = s
        .send_ld(
            Method::POST,
            "/subscriptions",
            &subscription(
                "urn:ngsi-ld:Subscription:url",
                json!(ctx.url("/ctx.jsonld")),
            ),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(listed(&s, None, Some("ImplicitlyCreated")).await.len(), 1);
    // So is one URL as the one member of an array, and the subscription reads as it was given.
    let r = s
        .send_ld(
            Method::POST,
            "/subscriptions",
            &subscription(
                "urn:ngsi-ld:Subscription:url-in-array",
                json!([ctx.url("/ctx.jsonld")]),
            ),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(listed(&s, None, Some("ImplicitlyCreated")).await.len(), 1);
    let (_, got) = get(
        &s,
        None,
        "/subscriptions/urn:ngsi-ld:Subscription:url-in-array",
    )
    .await;
    assert!(got.get("jsonldContext").is_none(), "{got}");
    // A subscription that is refused leaves no @context behind.
    let mut refused = subscription("urn:ngsi-ld:Subscription:bad", inline);
    refused["notification"] = json!({});
    let r = s.send_ld(Method::POST, "/subscriptions", &refused).await;
    assert_eq!(r.status(), 400);
    assert_eq!(listed(&s, None, Some("ImplicitlyCreated")).await.len(), 1);

    let r = s
        .req(Method::DELETE, &format!("/jsonldContexts/{id}"))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    assert!(listed(&s, None, Some("ImplicitlyCreated")).await.is_empty());
}

/// A stored @context belongs to its tenant: another tenant neither lists, serves nor deletes
/// it. A GET of its URL without a tenant (the URL carries none) finds it, as any @context
/// document is found at its URL.
#[actix_web::test]
async fn a_stored_context_belongs_to_its_tenant_and_is_served_at_its_url() {
    let s = TestServer::start().await;
    let id = local_id(&add(&s, Some("ctxa"), &user_context()).await);
    let path = format!("/jsonldContexts/{id}");
    let details = format!("{path}?details=true");
    for tenant in [None, Some("ctxa")] {
        assert_eq!(
            get(&s, tenant, &path).await,
            (200, user_context()),
            "{tenant:?}"
        );
        let (status, meta) = get(&s, tenant, &details).await;
        assert_eq!((status, &meta["kind"]), (200, &json!("Hosted")), "{meta}");
    }
    assert_eq!(get(&s, Some("ctxb"), &path).await.0, 404);
    assert_eq!(get(&s, Some("ctxb"), &details).await.0, 404);
    let (_, urls) = get(&s, Some("ctxb"), "/jsonldContexts").await;
    assert!(!urls.to_string().contains(&id), "{urls}");
    let (_, urls) = get(&s, None, "/jsonldContexts").await;
    assert!(!urls.to_string().contains(&id), "{urls}");
    for tenant in ["ctxb", ""] {
        let mut r = s.req(Method::DELETE, &path);
        if !tenant.is_empty() {
            r = r.header("NGSILD-Tenant", tenant);
        }
        assert_problem(r.send().await.unwrap(), 404, "ResourceNotFound").await;
    }
    assert_eq!(listed(&s, Some("ctxa"), Some("Hosted")).await.len(), 1);
    let r = s
        .req(Method::DELETE, &path)
        .header("NGSILD-Tenant", "ctxa")
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    assert_eq!(get(&s, None, &path).await.0, 404);
}

/// A subscription of an inline @context with an application/json receiver: the Link header of
/// its notifications names the ImplicitlyCreated @context of the subscription's tenant, and
/// the receiver, which sends no tenant, can fetch it there.
#[actix_web::test]
async fn a_receiver_fetches_the_implicit_context_its_notifications_name() {
    let s = TestServer::start().await;
    let mut receiver = common::receiver::Receiver::ok().await;
    let inline = user_context()["@context"].clone();
    let subscription = json!({
        "id": "urn:ngsi-ld:Subscription:tenant-implicit",
        "type": "Subscription",
        "entities": [{"type": "Sensor"}],
        "notificationTrigger": ["entityCreated"],
        "notification": {"endpoint": {"uri": receiver.url, "accept": "application/json"}},
        "@context": inline
    });
    created_in(&s, "ctxn", "/subscriptions", &subscription).await;
    let mut entity = sensor("urn:ngsi-ld:Sensor:n1");
    entity["@context"] = inline.clone();
    created_in(&s, "ctxn", "/entities", &entity).await;
    let notification = receiver.next(10).await;
    let link = notification.header("Link").expect("a Link header");
    let url = twinlink::ld::context_of_link(link).expect("a @context link");
    assert!(url.contains("/ngsi-ld/v1/jsonldContexts/"), "{url}");
    let r = reqwest::get(&url).await.unwrap();
    let (status, _, doc) = read(r).await;
    assert_eq!((status, doc), (200, json!({ "@context": inline })), "{url}");
    // Listed by its tenant only.
    let id = local_id(&url);
    assert_eq!(
        listed(&s, Some("ctxn"), Some("ImplicitlyCreated"))
            .await
            .len(),
        1
    );
    assert!(
        listed(&s, None, Some("ImplicitlyCreated")).await.is_empty(),
        "{id}"
    );
}

/// The jsonldContext a subscription of the default tenant names.
/// POSTs the JSON-LD `body` to `path` in `tenant` and expects 201.
async fn created_in(s: &TestServer, tenant: &str, path: &str, body: &Value) {
    let r = s
        .req(Method::POST, path)
        .header("Content-Type", "application/ld+json")
        .header("NGSILD-Tenant", tenant)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn named_context(s: &TestServer, id: &str) -> Option<String> {
    let (status, got) = get(s, None, &format!("/subscriptions/{id}")).await;
    assert_eq!(status, 200, "{got}");
    got["jsonldContext"].as_str().map(str::to_string)
}

/// The URLs of the default tenant's ImplicitlyCreated @contexts, sorted.
async fn implicit_urls(s: &TestServer) -> Vec<String> {
    let mut urls: Vec<String> = listed(s, None, Some("ImplicitlyCreated"))
        .await
        .iter()
        .map(|e| e["URL"].as_str().unwrap().to_string())
        .collect();
    urls.sort();
    urls
}

/// An ImplicitlyCreated @context lives as long as its subscription names it: an update with a
/// new @context replaces it, an update naming a jsonldContext and a deletion remove it; a
/// @context that a subscription only named stays.
#[actix_web::test]
async fn an_implicit_context_goes_with_its_subscription() {
    let s = TestServer::start().await;
    let sub = |id: &str, context: Value| {
        json!({
            "id": id,
            "type": "Subscription",
            "entities": [{"type": "Sensor"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
            "@context": context
        })
    };
    let first = json!({"Sensor": format!("{EX}Sensor")});
    let second = json!({"Sensor": format!("{EX}Sensor"), "t": format!("{EX}temperature")});
    let a = "urn:ngsi-ld:Subscription:owner-a";
    let r = s
        .send_ld(Method::POST, "/subscriptions", &sub(a, first))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let old = named_context(&s, a).await.expect("an implicit @context");
    assert_eq!(implicit_urls(&s).await, std::slice::from_ref(&old));

    // An update with another inline @context: a new one, the old one gone.
    let fragment = json!({"throttling": 5, "@context": second.clone()});
    let r = s
        .send_ld(Method::PATCH, &format!("/subscriptions/{a}"), &fragment)
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let new = named_context(&s, a).await.expect("an implicit @context");
    assert_ne!(new, old);
    assert_eq!(implicit_urls(&s).await, std::slice::from_ref(&new));
    assert_eq!(
        get(&s, None, &format!("/jsonldContexts/{}", local_id(&old)))
            .await
            .0,
        404
    );
    let (_, doc) = get(&s, None, &format!("/jsonldContexts/{}", local_id(&new))).await;
    assert_eq!(doc, json!({ "@context": second }));
    // An update that changes something else keeps it.
    let r = s
        .send_ld(
            Method::PATCH,
            &format!("/subscriptions/{a}"),
            &json!({"throttling": 6, "@context": second.clone()}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(named_context(&s, a).await.as_deref(), Some(new.as_str()));

    // Another subscription naming a's @context itself does not take it away when deleted.
    let b = "urn:ngsi-ld:Subscription:named-b";
    let mut body = sub(b, second.clone());
    body["jsonldContext"] = json!(new.clone());
    let r = s.send_ld(Method::POST, "/subscriptions", &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_no_content(
        s.req(Method::DELETE, &format!("/subscriptions/{b}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(implicit_urls(&s).await, std::slice::from_ref(&new));

    // An update naming a Hosted @context: the implicit one goes, the Hosted one is named.
    let hosted = details(&s, &local_id(&add(&s, None, &user_context()).await)).await["URL"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .send_ld(
            Method::PATCH,
            &format!("/subscriptions/{a}"),
            &json!({"jsonldContext": hosted.clone(), "@context": second.clone()}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(named_context(&s, a).await.as_deref(), Some(hosted.as_str()));
    assert!(implicit_urls(&s).await.is_empty());

    // A deletion takes its implicit @context with it, and leaves the Hosted one it named.
    let c = "urn:ngsi-ld:Subscription:owner-c";
    let r = s
        .send_ld(Method::POST, "/subscriptions", &sub(c, second))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(implicit_urls(&s).await.len(), 1);
    for id in [a, c] {
        assert_no_content(
            s.req(Method::DELETE, &format!("/subscriptions/{id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
    assert!(implicit_urls(&s).await.is_empty());
    assert_eq!(listed(&s, None, Some("Hosted")).await.len(), 1);
}

#[actix_web::test]
async fn stored_contexts_survive_a_restart() {
    let s = TestServer::start().await;
    let id = local_id(&add(&s, None, &user_context()).await);
    let s = s.restart().await;
    let url = details(&s, &id).await["URL"].as_str().unwrap().to_string();
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            &url,
            &sensor("urn:ngsi-ld:Sensor:r1"),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(
        s.entity("urn:ngsi-ld:Sensor:r1", "").await["type"],
        format!("{EX}Sensor")
    );
}

/// Two instances on one PostgreSQL database: a @context added through one is served by the other
/// and resolves there; deleted through the other, it is gone from both.
#[actix_web::test]
async fn instances_on_one_database_share_stored_contexts() {
    let a = TestServer::start_on_postgres().await;
    let url = a.database_url.clone().expect("a PostgreSQL server");
    let b = TestServer::start_with(|s| s.database_url = Some(url.clone())).await;
    let id = local_id(&add(&a, None, &user_context()).await);
    let (status, doc) = get(&b, None, &format!("/jsonldContexts/{id}")).await;
    assert_eq!((status, doc), (200, user_context()));
    let context_url = format!("http://127.0.0.1:9/ngsi-ld/v1/jsonldContexts/{id}");
    let mut created = 0;
    for _ in 0..50 {
        let r = b
            .send_linked(
                Method::POST,
                "/entities",
                &context_url,
                &sensor("urn:ngsi-ld:Sensor:p1"),
            )
            .await;
        created = r.status().as_u16();
        if created == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        created, 201,
        "the other instance resolves the @context within seconds"
    );
    assert_eq!(
        b.entity("urn:ngsi-ld:Sensor:p1", "").await["type"],
        format!("{EX}Sensor")
    );
    assert_no_content(
        b.req(Method::DELETE, &format!("/jsonldContexts/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(get(&a, None, &format!("/jsonldContexts/{id}")).await.0, 404);
    assert!(listed(&a, None, Some("Hosted")).await.is_empty());
}

/// The cache of fetched @contexts keeps at most `--context-cache` documents: past it the least
/// recently used go, and are fetched again when a new request needs them.
#[actix_web::test]
async fn the_cache_of_fetched_contexts_keeps_at_most_its_size() {
    let ctx = ContextServer::start();
    let s = TestServer::start_with(|s| s.context_cache = 2).await;
    let paths: Vec<String> = (0..5).map(|i| format!("/cached-{i}.jsonld")).collect();
    for (i, path) in paths.iter().enumerate() {
        ctx.serve(path, &user_context());
        let id = format!("urn:ngsi-ld:Sensor:cache-{i}");
        let r = s
            .send_linked(Method::POST, "/entities", &ctx.url(path), &sensor(&id))
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let fetched: Vec<Value> = listed(&s, None, Some("Cached"))
        .await
        .into_iter()
        .filter(|e| e["URL"].as_str().unwrap().starts_with(&ctx.url("/")))
        .collect();
    assert!(!fetched.is_empty() && fetched.len() <= 2, "{fetched:?}");
    // A new @context naming each document (no processed context to reuse) needs the evicted
    // ones fetched again.
    for (i, path) in paths.iter().enumerate() {
        let mut e = sensor(&format!("urn:ngsi-ld:Sensor:cache-again-{i}"));
        e["@context"] = json!([ctx.url(path), {"n": format!("urn:n:{i}")}]);
        let r = s.send_ld(Method::POST, "/entities", &e).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let hits: usize = paths.iter().map(|p| ctx.hits(p)).sum();
    assert!(hits >= paths.len() + 3, "{hits} fetches");
}
