//! Data-model checks on write (issue 18 items 2 and 4), black-box on both stores: an
//! AirQualityObserved written to the Smart Data Models rules of its model (dataModel.Environment
//! 0.1.4; the package ships its examples only as links, so the payload is the model's Madrid
//! example written in NGSI-LD form) is accepted, and each mutation that breaks one rule is
//! refused with 400 BadRequestData naming the attribute, the rule and the model version, over
//! HTTP single writes, batch, temporal provision and MQTT; nothing refused is written. In `flag`
//! mode the same entities are written with their findings on them and counted.

use crate::common::{self, assert_problem, metric, TestServer};
use crate::mqtt_ingest::{broker_with, unique, Peer};
use reqwest::Method;
use serde_json::{json, Value};
use twinlink::model::conformance::{Binding, Mode};

const ENV: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld";
const MODEL: &str = "data model dataModel.Environment/AirQualityObserved 0.1.4";
/// The findings attribute, as the core @context compacts it.
const FINDINGS: &str = "dataModelFindings";

fn binding(tenant: &str, mode: Mode) -> Binding {
    Binding {
        tenant: tenant.into(),
        model: "AirQualityObserved".into(),
        type_iri: None,
        mode,
        schema: None,
    }
}

async fn checked(mode: Mode) -> TestServer {
    TestServer::start_with(move |s| s.data_models = vec![binding("", mode)]).await
}

/// The model's Madrid example (attributes of dataModel.Environment/AirQualityObserved) in
/// NGSI-LD normalized form, with the terms of the Environment @context.
fn madrid(id: &str) -> Value {
    json!({
        "id": id,
        "type": "AirQualityObserved",
        "dateObserved": {"type": "Property", "value": "2016-03-15T11:00:00Z"},
        "location": {"type": "GeoProperty",
                     "value": {"type": "Point", "coordinates": [-3.712247222222222, 40.423852777777775]}},
        "address": {"type": "Property", "value": {"addressCountry": "ES", "addressLocality": "Madrid",
                                                  "streetAddress": "Plaza de España"}},
        "areaServed": {"type": "Property", "value": "Brooklands"},
        "airQualityIndex": {"type": "Property", "value": 65},
        "airQualityLevel": {"type": "Property", "value": "moderate"},
        "co": {"type": "Property", "value": 500, "unitCode": "GP"},
        "no2": {"type": "Property", "value": 69, "unitCode": "GQ"},
        "so2": {"type": "Property", "value": 11, "unitCode": "GQ"},
        "temperature": {"type": "Property", "value": 12.2},
        "precipitation": {"type": "Property", "value": 0},
        "typeofLocation": {"type": "Property", "value": "outdoor"},
        "reliability": {"type": "Property", "value": 0.7},
        "source": {"type": "Property", "value": "http://datos.madrid.es"},
        "refPointOfInterest": {"type": "Relationship",
                               "object": "urn:ngsi-ld:PointOfInterest:28079004-Pza.deEspanya"}
    })
}

/// Each mutation of the example, with the attribute and rule its refusal must name.
fn mutations(id: &str) -> Vec<(Value, &'static str, &'static str)> {
    let with = |name: &str, attr: Value| {
        let mut e = madrid(id);
        e[name] = attr;
        e
    };
    let mut unobserved = madrid(id);
    unobserved.as_object_mut().unwrap().remove("dateObserved");
    vec![
        (
            with("no2", json!({"type": "Property", "value": "69"})),
            "no2",
            "type",
        ),
        (
            with(
                "typeofLocation",
                json!({"type": "Property", "value": "outside"}),
            ),
            "typeofLocation",
            "enum",
        ),
        (
            with(
                "dateObserved",
                json!({"type": "Property", "value": "15/03/2016"}),
            ),
            "dateObserved",
            "format",
        ),
        (
            with(
                "refPointOfInterest",
                json!({"type": "Property", "value": "urn:ngsi-ld:P:1"}),
            ),
            "refPointOfInterest",
            "kind",
        ),
        (unobserved, "dateObserved", "required"),
    ]
}

/// Asserts a 400 BadRequestData whose detail names the attribute, the rule and the model.
async fn assert_refused(r: reqwest::Response, attr: &str, rule: &str) {
    let problem = assert_problem(r, 400, "BadRequestData").await;
    assert_named(&problem, attr, rule);
}

fn assert_named(problem: &Value, attr: &str, rule: &str) {
    let detail = problem["detail"].as_str().unwrap_or_default();
    let expected = format!("attribute '{attr}' breaks the '{rule}' rule of {MODEL}");
    assert!(detail.contains(&expected), "{expected} in {problem}");
}

#[actix_web::test]
async fn the_example_is_accepted_and_each_mutation_refused_with_its_rule() {
    let s = checked(Mode::Reject).await;
    let good = "urn:ngsi-ld:AirQualityObserved:Madrid-28079004";
    let r = s
        .send_linked(Method::POST, "/entities", ENV, &madrid(good))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    for (i, (e, attr, rule)) in mutations("urn:ngsi-ld:AirQualityObserved:bad")
        .into_iter()
        .enumerate()
    {
        let id = format!("urn:ngsi-ld:AirQualityObserved:bad-{i}");
        let mut e = e;
        e["id"] = json!(id);
        let r = s.send_linked(Method::POST, "/entities", ENV, &e).await;
        assert_refused(r, attr, rule).await;
        s.assert_absent(&id).await;
    }
    // An update is judged on what it brings; the entity stays as it was.
    let patch = json!({"no2": {"type": "Property", "value": "high"}});
    let r = s
        .send_linked(
            Method::PATCH,
            &format!("/entities/{good}/attrs"),
            ENV,
            &patch,
        )
        .await;
    assert_refused(r, "no2", "type").await;
    let r = s
        .send_linked(
            Method::PATCH,
            &format!("/entities/{good}/attrs"),
            ENV,
            &json!({"no2": {"type": "Property", "value": 70}}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let stored = s.entity(good, "").await;
    let no2 = "https://smartdatamodels.org/dataModel.Environment/no2";
    assert_eq!(stored[no2]["value"], 70, "{stored}");
    // Deleting a required attribute is refused too.
    let r = s
        .req(
            Method::DELETE,
            &format!("/entities/{good}/attrs/dateObserved"),
        )
        .header("Link", common::link(ENV))
        .send()
        .await
        .unwrap();
    assert_refused(r, "dateObserved", "required").await;
    // Entities of other types, and other tenants, are not checked.
    let other = json!({"id": "urn:ngsi-ld:Thing:1", "type": "Thing", "no2": {"type": "Property", "value": "x"}});
    assert_eq!(
        s.send_linked(Method::POST, "/entities", ENV, &other)
            .await
            .status(),
        201
    );
    let mut e = mutations("urn:ngsi-ld:AirQualityObserved:elsewhere")
        .remove(0)
        .0;
    e["id"] = json!("urn:ngsi-ld:AirQualityObserved:elsewhere");
    let r = s
        .req(Method::POST, "/entities")
        .header("Content-Type", "application/json")
        .header("Link", common::link(ENV))
        .header("NGSILD-Tenant", "unchecked")
        .body(e.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let metrics = s.metrics().await;
    let labels = [
        ("model", "dataModel.Environment/AirQualityObserved"),
        ("rule", "type"),
        ("mode", "reject"),
    ];
    assert!(
        metric(&metrics, "twinlink_data_model_findings_total", &labels) >= 2.0,
        "{metrics}"
    );
}

/// A batch body: the entities with the Environment @context in each.
fn ld(entities: Vec<Value>) -> Value {
    let ctx = json!([
        ENV,
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
    ]);
    Value::Array(
        entities
            .into_iter()
            .map(|mut e| {
                e["@context"] = ctx.clone();
                e
            })
            .collect(),
    )
}

#[actix_web::test]
async fn in_a_batch_only_the_breaking_entities_fail_with_their_reason() {
    let s = checked(Mode::Reject).await;
    let good = "urn:ngsi-ld:AirQualityObserved:batch-good";
    let cases = mutations("urn:ngsi-ld:AirQualityObserved:batch");
    let mut body = vec![madrid(good)];
    for (i, (e, _, _)) in cases.iter().enumerate() {
        let mut e = e.clone();
        e["id"] = json!(format!("urn:ngsi-ld:AirQualityObserved:batch-{i}"));
        body.push(e);
    }
    for op in ["create", "upsert"] {
        let r = s
            .send_ld(
                Method::POST,
                &format!("/entityOperations/{op}"),
                &ld(body.clone()),
            )
            .await;
        let status = r.status().as_u16();
        let result: Value = r.json().await.unwrap();
        assert_eq!(status, 207, "{op}: {result}");
        let errors = result["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), cases.len(), "{op}: {result}");
        for (i, (_, attr, rule)) in cases.iter().enumerate() {
            let error = &errors[i];
            assert_eq!(
                error["entityId"],
                format!("urn:ngsi-ld:AirQualityObserved:batch-{i}")
            );
            assert!(
                error["error"]["type"]
                    .as_str()
                    .unwrap()
                    .ends_with("BadRequestData"),
                "{error}"
            );
            assert_named(&error["error"], attr, rule);
            s.assert_absent(&format!("urn:ngsi-ld:AirQualityObserved:batch-{i}"))
                .await;
        }
    }
    s.entity(good, "").await;
}

#[actix_web::test]
async fn temporal_provision_is_checked_instance_by_instance() {
    let s = checked(Mode::Reject).await;
    let id = "urn:ngsi-ld:AirQualityObserved:temporal";
    let mut e = madrid(id);
    e["no2"] = json!([
        {"type": "Property", "value": "sixty", "observedAt": "2016-03-15T10:00:00Z"},
        {"type": "Property", "value": 69, "observedAt": "2016-03-15T11:00:00Z"}
    ]);
    let r = s
        .send_linked(Method::POST, "/temporal/entities", ENV, &e)
        .await;
    assert_refused(r, "no2", "type").await;
    s.assert_absent(id).await;
    e["no2"][0]["value"] = json!(60);
    let r = s
        .send_linked(Method::POST, "/temporal/entities", ENV, &e)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[actix_web::test]
async fn flagged_entities_are_written_with_their_findings_and_found_by_q() {
    let s = TestServer::start_with(|s| s.data_models = vec![binding("*", Mode::Flag)]).await;
    let id = "urn:ngsi-ld:AirQualityObserved:flagged";
    let mut e = madrid(id);
    e["no2"] = json!({"type": "Property", "value": "69"});
    e["typeofLocation"] = json!({"type": "Property", "value": "outside"});
    let r = s.send_linked(Method::POST, "/entities", ENV, &e).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let stored = s.entity(id, "").await;
    let found = stored[FINDINGS]["value"]
        .as_array()
        .unwrap_or_else(|| panic!("findings in {stored}"))
        .clone();
    let rules: Vec<(&str, &str)> = found
        .iter()
        .map(|f| {
            (
                f["attribute"].as_str().unwrap(),
                f["rule"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [("no2", "type"), ("typeofLocation", "enum")],
        "{stored}"
    );
    assert_eq!(
        found[0]["model"],
        "dataModel.Environment/AirQualityObserved"
    );
    assert_eq!(found[0]["version"], "0.1.4");
    assert!(stored[FINDINGS]["observedAt"].is_string(), "{stored}");
    let (status, hits) = s.get_json("/entities?type=https://smartdatamodels.org/dataModel.Environment/AirQualityObserved&q=dataModelFindings").await;
    assert_eq!(status, 200);
    assert_eq!(hits.as_array().map(Vec::len), Some(1), "{hits}");
    // Fixing the entity takes the record off.
    let r = s
        .send_linked(Method::PUT, &format!("/entities/{id}"), ENV, &madrid(id))
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert!(s.entity(id, "").await.get(FINDINGS).is_none());
    let metrics = s.metrics().await;
    let labels = [("rule", "enum"), ("mode", "flag")];
    assert!(
        metric(&metrics, "twinlink_data_model_findings_total", &labels) >= 1.0,
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_refused_mqtt_message_goes_to_the_error_topic_with_its_problem() {
    let url = common::services::mqtt_url();
    let prefix = unique("dm");
    let s = broker_with(&url, &prefix, |s| {
        s.data_models = vec![binding("", Mode::Reject)]
    })
    .await;
    let mut peer = Peer::connect(&url).await;
    peer.subscribe(&format!("{prefix}/errors")).await;
    crate::mqtt_ingest::until_ingesting(&s, &peer, &prefix).await;
    let topic = format!("{prefix}/entities");
    let bad = "urn:ngsi-ld:AirQualityObserved:mqtt-bad";
    let mut e = mutations(bad).remove(1).0;
    e["@context"] = json!(ENV);
    peer.publish(&topic, e.to_string()).await;
    let good = "urn:ngsi-ld:AirQualityObserved:mqtt-good";
    let mut g = madrid(good);
    g["@context"] = json!(ENV);
    peer.publish(&topic, g.to_string()).await;
    let (at, report) = peer.next().await;
    assert_eq!(at, format!("{prefix}/errors"));
    assert_eq!(report["entityId"], bad, "{report}");
    assert!(
        report["error"]["type"]
            .as_str()
            .unwrap()
            .ends_with("BadRequestData"),
        "{report}"
    );
    assert_named(&report["error"], "typeofLocation", "enum");
    crate::mqtt_ingest::eventually(&s, &format!("/entities/{good}"), &[], |_| true).await;
    s.assert_absent(bad).await;
}

#[actix_web::test]
async fn space_time_checks_refuse_what_lies_outside_the_twin() {
    let territory: twinlink::model::conformance::spacetime::TerritoryConfig = toml::from_str(
        r#"bbox = [-3.9, 40.3, -3.5, 40.6]
           max-future-seconds = 300
           unit-codes = true
           mode = "reject""#,
    )
    .expect("a territory");
    let s = TestServer::start_with(move |s| s.territory = vec![territory]).await;
    let id = "urn:ngsi-ld:AirQualityObserved:Madrid-spacetime";
    let r = s
        .send_linked(Method::POST, "/entities", ENV, &madrid(id))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let future = (chrono::Utc::now() + chrono::TimeDelta::hours(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cases = [
        (
            json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.17, 41.38]}}}),
            "https://uri.etsi.org/ngsi-ld/location",
            "territory",
        ),
        (
            json!({"no2": {"type": "Property", "value": 70, "observedAt": future}}),
            "https://smartdatamodels.org/dataModel.Environment/no2",
            "observedAt",
        ),
        (
            json!({"no2": {"type": "Property", "value": 70, "unitCode": "ug/m3"}}),
            "https://smartdatamodels.org/dataModel.Environment/no2",
            "unitCode",
        ),
    ];
    for (patch, attr, rule) in cases {
        let r = s
            .send_linked(Method::PATCH, &format!("/entities/{id}/attrs"), ENV, &patch)
            .await;
        let problem = assert_problem(r, 400, "BadRequestData").await;
        let expected =
            format!("attribute '{attr}' breaks the '{rule}' rule of the territory check");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(&expected),
            "{expected} in {problem}"
        );
    }
    let stored = s.entity(id, "").await;
    assert_eq!(
        stored["https://smartdatamodels.org/dataModel.Environment/no2"]["value"], 69,
        "{stored}"
    );
}

#[actix_web::test]
async fn a_users_json_schema_is_checked_on_the_key_values_form() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aqo.schema.json");
    let schema = json!({
        "type": "object",
        "required": ["id", "type", "no2"],
        "properties": {"type": {"const": "AirQualityObserved"},
                       "no2": {"type": "number", "maximum": 400}}
    });
    std::fs::write(&file, schema.to_string()).unwrap();
    let s = TestServer::start_with(move |s| {
        let mut b = binding("", Mode::Reject);
        b.schema = Some(file);
        s.data_models = vec![b];
    })
    .await;
    let id = "urn:ngsi-ld:AirQualityObserved:schema";
    let mut e = madrid(id);
    e["no2"]["value"] = json!(450);
    let r = s.send_linked(Method::POST, "/entities", ENV, &e).await;
    let problem = assert_problem(r, 400, "BadRequestData").await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("attribute 'no2' breaks the 'schema' rule of the schema "),
        "{problem}"
    );
    assert!(detail.contains("450"), "{problem}");
    s.assert_absent(id).await;
    let r = s
        .send_linked(Method::POST, "/entities", ENV, &madrid(id))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[actix_web::test]
async fn bindings_set_through_the_admin_api_apply_to_their_tenant_until_deleted() {
    let s = TestServer::start().await;
    let api = format!("{}/ngsi-ld/ex/dataModels", s.root());
    let post = |body: Value| {
        s.client
            .post(&api)
            .header("Content-Type", "application/json")
            .header("NGSILD-Tenant", "city")
            .body(body.to_string())
            .send()
    };
    let r = post(json!({"model": "NoSuchModel", "mode": "reject"}))
        .await
        .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    let r = post(json!({"model": "AirQualityObserved", "mode": "reject"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["Location"].to_str().unwrap().to_string();
    let listed: Value = s
        .client
        .get(&api)
        .header("NGSILD-Tenant", "city")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed[0]["model"], "dataModel.Environment/AirQualityObserved",
        "{listed}"
    );
    assert_eq!(listed[0]["source"], "api");
    assert!(
        location.ends_with(listed[0]["id"].as_str().unwrap()),
        "{location} {listed}"
    );
    let bad = || {
        let mut e = mutations("urn:ngsi-ld:AirQualityObserved:api").remove(0).0;
        e["id"] = json!("urn:ngsi-ld:AirQualityObserved:api");
        e
    };
    let create = |tenant: &'static str| {
        s.req(Method::POST, "/entities")
            .header("Content-Type", "application/json")
            .header("Link", common::link(ENV))
            .header("NGSILD-Tenant", tenant)
            .body(bad().to_string())
            .send()
    };
    assert_refused(create("city").await.unwrap(), "no2", "type").await;
    assert_eq!(create("elsewhere").await.unwrap().status(), 201);
    let r = s
        .client
        .delete(format!("{}{location}", s.root()))
        .header("NGSILD-Tenant", "city")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(create("city").await.unwrap().status(), 201);
}

/// Two instances on one PostgreSQL database (whatever the store under test): a binding added
/// through one is applied by the other within its reload period.
#[actix_web::test]
async fn a_binding_added_through_one_instance_applies_on_the_other() {
    let a = TestServer::start_on_postgres().await;
    let url = a.database_url.clone().expect("a PostgreSQL server");
    let b = TestServer::start_with(|s| s.database_url = Some(url.clone())).await;
    let r = a
        .client
        .post(format!("{}/ngsi-ld/ex/dataModels", a.root()))
        .header("Content-Type", "application/json")
        .body(json!({"model": "AirQualityObserved", "mode": "reject"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut status = 0;
    for i in 0..50 {
        let mut e = mutations("urn:ngsi-ld:AirQualityObserved:other")
            .remove(0)
            .0;
        e["id"] = json!(format!("urn:ngsi-ld:AirQualityObserved:other-{i}"));
        let r = b.send_linked(Method::POST, "/entities", ENV, &e).await;
        status = r.status().as_u16();
        if status == 400 {
            assert_refused(r, "no2", "type").await;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 400,
        "the other instance applies the binding within seconds"
    );
}
