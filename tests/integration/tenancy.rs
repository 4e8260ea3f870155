//! Black-box tests of multi-tenancy (GS CIM 009 V1.9.1 clauses 4.14, 5.5.10 and the NGSILD-Tenant
//! header of 6.3.14): a tenant is created by the first write to it, other operations on an unknown
//! tenant fail with NonexistentTenant, and tenants never see each other's entities.

use crate::common;

use common::{assert_no_content, assert_problem, read, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const ID: &str = "urn:ngsi-ld:Building:T1";

fn entity(name: &str) -> Value {
    json!({"id": ID, "type": "Building", "name": {"type": "Property", "value": name}})
}

async fn create_in(s: &TestServer, tenant: &str, e: &Value) -> reqwest::Response {
    s.req(Method::POST, "/entities")
        .header("Content-Type", "application/json")
        .header("NGSILD-Tenant", tenant)
        .body(e.to_string())
        .send()
        .await
        .unwrap()
}

async fn get_in(s: &TestServer, tenant: &str, id: &str) -> reqwest::Response {
    s.req(Method::GET, &format!("/entities/{id}"))
        .header("NGSILD-Tenant", tenant)
        .send()
        .await
        .unwrap()
}

async fn entity_in(s: &TestServer, tenant: &str, id: &str) -> Value {
    let (status, headers, body) = read(get_in(s, tenant, id).await).await;
    assert_eq!(status, 200, "{tenant}/{id}: {body}");
    assert_eq!(
        headers.get("NGSILD-Tenant").map(|h| h.to_str().unwrap()),
        Some(tenant),
        "tenant echoed (6.3.14)"
    );
    body
}

#[actix_web::test]
async fn a_tenant_springs_into_being_on_first_write() {
    let s = TestServer::start().await;
    assert_problem(get_in(&s, "acme", ID).await, 404, "NonexistentTenant").await;

    let r = create_in(&s, "acme", &entity("A")).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()
            .get("NGSILD-Tenant")
            .map(|h| h.to_str().unwrap()),
        Some("acme"),
        "tenant echoed (6.3.14)"
    );
    assert_eq!(entity_in(&s, "acme", ID).await, entity("A"));

    // Now the tenant exists: a missing entity in it is ResourceNotFound, not NonexistentTenant.
    assert_problem(
        get_in(&s, "acme", "urn:ngsi-ld:Building:other").await,
        404,
        "ResourceNotFound",
    )
    .await;
}

#[actix_web::test]
async fn other_operations_on_an_unknown_tenant_are_nonexistent_tenant_and_create_nothing() {
    let s = TestServer::start().await;
    let t = "ghost";
    let attrs = json!({"name": {"type": "Property", "value": "x"}});
    let tries = [
        (Method::DELETE, format!("/entities/{ID}"), None),
        (
            Method::PATCH,
            format!("/entities/{ID}"),
            Some(attrs.clone()),
        ),
        (
            Method::PUT,
            format!("/entities/{ID}"),
            Some(json!({"type": "Building"})),
        ),
        (
            Method::POST,
            format!("/entities/{ID}/attrs"),
            Some(attrs.clone()),
        ),
        (
            Method::PATCH,
            format!("/entities/{ID}/attrs"),
            Some(attrs.clone()),
        ),
        (
            Method::PATCH,
            format!("/entities/{ID}/attrs/name"),
            Some(json!({"value": "y"})),
        ),
        (
            Method::PUT,
            format!("/entities/{ID}/attrs/name"),
            Some(json!({"type": "Property", "value": "y"})),
        ),
        (Method::DELETE, format!("/entities/{ID}/attrs/name"), None),
    ];
    for (method, path, body) in tries {
        let mut b = s.req(method.clone(), &path).header("NGSILD-Tenant", t);
        if let Some(body) = body {
            b = b
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let (status, _, problem) = read(b.send().await.unwrap()).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(
            problem["type"], "https://uri.etsi.org/ngsi-ld/errors/NonexistentTenant",
            "{method} {path}: {problem}"
        );
    }
    assert_problem(get_in(&s, t, ID).await, 404, "NonexistentTenant").await;
}

#[actix_web::test]
async fn a_refused_create_does_not_create_the_tenant() {
    let s = TestServer::start().await;
    let bad = json!({"id": ID, "type": "Building", "loc": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [500, 0]}}});
    assert_problem(create_in(&s, "fresh", &bad).await, 400, "BadRequestData").await;
    assert_problem(get_in(&s, "fresh", ID).await, 404, "NonexistentTenant").await;
}

#[actix_web::test]
async fn the_same_id_in_two_tenants_is_two_entities() {
    let s = TestServer::start().await;
    assert_eq!(
        create_in(&s, "alpha", &entity("in alpha")).await.status(),
        201
    );
    assert_eq!(
        create_in(&s, "beta", &entity("in beta")).await.status(),
        201
    );
    assert_eq!(
        s.create(&entity("in default")).await.status(),
        201,
        "the id is free in the default tenant too"
    );
    assert_eq!(entity_in(&s, "alpha", ID).await, entity("in alpha"));
    assert_eq!(entity_in(&s, "beta", ID).await, entity("in beta"));
    assert_eq!(s.entity(ID, "").await, entity("in default"));

    // an update in one tenant leaves the others alone
    let r = s
        .req(Method::PATCH, &format!("/entities/{ID}/attrs"))
        .header("Content-Type", "application/json")
        .header("NGSILD-Tenant", "alpha")
        .body(json!({"name": {"type": "Property", "value": "changed"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    assert_eq!(entity_in(&s, "alpha", ID).await, entity("changed"));
    assert_eq!(entity_in(&s, "beta", ID).await, entity("in beta"));
    assert_eq!(s.entity(ID, "").await, entity("in default"));
}

#[actix_web::test]
async fn deleting_in_one_tenant_leaves_the_other() {
    let s = TestServer::start().await;
    assert_eq!(create_in(&s, "alpha", &entity("a")).await.status(), 201);
    assert_eq!(create_in(&s, "beta", &entity("b")).await.status(), 201);
    let r = s
        .req(Method::DELETE, &format!("/entities/{ID}"))
        .header("NGSILD-Tenant", "alpha")
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    assert_problem(get_in(&s, "alpha", ID).await, 404, "ResourceNotFound").await;
    assert_eq!(entity_in(&s, "beta", ID).await, entity("b"));
    // deleting in the default tenant, where the entity never was, is ResourceNotFound and harmless
    let r = s
        .req(Method::DELETE, &format!("/entities/{ID}"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
    assert_eq!(entity_in(&s, "beta", ID).await, entity("b"));
}

#[actix_web::test]
async fn the_default_tenant_does_not_see_tenant_data_and_vice_versa() {
    let s = TestServer::start().await;
    assert_eq!(create_in(&s, "alpha", &entity("a")).await.status(), 201);
    s.assert_absent(ID).await;
    let other = json!({"id": "urn:ngsi-ld:Building:D", "type": "Building"});
    assert_eq!(s.create(&other).await.status(), 201);
    assert_problem(
        get_in(&s, "alpha", "urn:ngsi-ld:Building:D").await,
        404,
        "ResourceNotFound",
    )
    .await;
}

#[actix_web::test]
async fn the_tenant_header_is_echoed_on_errors_and_multi_status_too() {
    let s = TestServer::start().await;
    let r = get_in(&s, "nowhere", ID).await;
    assert_eq!(
        r.headers()
            .get("NGSILD-Tenant")
            .map(|h| h.to_str().unwrap()),
        Some("nowhere")
    );
    assert_problem(r, 404, "NonexistentTenant").await;
    assert_eq!(create_in(&s, "alpha", &entity("a")).await.status(), 201);
    let r = create_in(&s, "alpha", &entity("a")).await;
    assert_eq!(
        r.headers()
            .get("NGSILD-Tenant")
            .map(|h| h.to_str().unwrap()),
        Some("alpha")
    );
    assert_problem(r, 409, "AlreadyExists").await;
    let r = s
        .req(Method::PATCH, &format!("/entities/{ID}/attrs"))
        .header("Content-Type", "application/json")
        .header("NGSILD-Tenant", "alpha")
        .body(json!({"ghost": {"type": "Property", "value": "urn:ngsi-ld:null"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    assert_eq!(
        r.headers()
            .get("NGSILD-Tenant")
            .map(|h| h.to_str().unwrap()),
        Some("alpha")
    );
}
