//! Data-model checks on write (issue 18 items 2 and 4), black-box on both stores: an
//! AirQualityObserved written to the Smart Data Models rules of its model (dataModel.Environment
//! 0.1.4; the package ships its examples only as links, so the payload is the model's Madrid
//! example written in NGSI-LD form) is accepted, and each mutation that breaks one rule is
//! refused with 400 BadRequestData naming the attribute, the rule and the model version, over
//! HTTP single writes, batch, temporal provision and MQTT; nothing refused is written. A second
//! model (WeatherObserved, with units) is checked the same way. In `flag` mode the same entities
//! are written with their findings on them and counted, over HTTP, batch and MQTT. The
//! space-time checks run over HTTP, batch and MQTT; bindings of models, user schemas and
//! territories are set through the admin API too.

use crate::common::{self, assert_problem, metric, ContextServer, TestServer};
use crate::mqtt_ingest::{broker_with, unique, Peer};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use twinlink::model::conformance::{Binding, Mode};

const ENV: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld";
const WEATHER: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Weather/master/context.jsonld";
/// The findings attribute, as the core @context compacts it.
const FINDINGS: &str = "dataModelFindings";

/// Mutations of an example: the attribute, its new value (none: removed), the rule it breaks.
type Breaks = Vec<(&'static str, Option<Value>, &'static str)>;

/// A bundled model under test: an example written from the model's rules, and one mutation of
/// it per rule the model gives, shared by every transport's test.
pub(crate) struct Model {
    /// The binding's model.
    name: &'static str,
    /// How a refusal names the model and its version.
    source: &'static str,
    /// The @context of the model's subject, which its terms are written with.
    context: &'static str,
    /// The example, with an id.
    example: fn(&str) -> Value,
    /// One mutation per rule.
    breaks: fn() -> Breaks,
}

/// An example with one rule broken: the entity, the attribute and rule its refusal names.
pub(crate) struct Mutation {
    entity: Value,
    attr: &'static str,
    rule: &'static str,
}

impl Model {
    fn binding(&self, tenant: &str, mode: Mode) -> Binding {
        Binding {
            tenant: tenant.into(),
            model: Some(self.name.into()),
            type_iri: None,
            mode,
            schema: None,
            territory: None,
        }
    }

    /// The mutations of the example, the i-th with the id `{prefix}-{i}`.
    fn mutations(&self, prefix: &str) -> Vec<Mutation> {
        (self.breaks)()
            .into_iter()
            .enumerate()
            .map(|(i, (attr, value, rule))| {
                let mut entity = (self.example)(&format!("{prefix}-{i}"));
                match value {
                    Some(v) => entity[attr] = v,
                    None => {
                        entity.as_object_mut().unwrap().remove(attr);
                    }
                }
                Mutation { entity, attr, rule }
            })
            .collect()
    }

    /// Asserts that a ProblemDetails names the attribute, the rule and the model.
    fn assert_named(&self, problem: &Value, attr: &str, rule: &str) {
        let detail = problem["detail"].as_str().unwrap_or_default();
        let expected = format!(
            "attribute '{attr}' breaks the '{rule}' rule of {}",
            self.source
        );
        assert!(detail.contains(&expected), "{expected} in {problem}");
    }

    /// Asserts a 400 BadRequestData naming the attribute, the rule and the model.
    async fn assert_refused(&self, r: reqwest::Response, attr: &str, rule: &str) {
        let problem = assert_problem(r, 400, "BadRequestData").await;
        self.assert_named(&problem, attr, rule);
    }
}

fn property(value: Value) -> Value {
    json!({"type": "Property", "value": value})
}

/// AirQualityObserved (dataModel.Environment 0.1.4): the model's Madrid example in NGSI-LD
/// normalized form, with the terms of the Environment @context.
pub(crate) const AIR_QUALITY: Model = Model {
    name: "AirQualityObserved",
    source: "data model dataModel.Environment/AirQualityObserved 0.1.4",
    context: ENV,
    example: madrid,
    breaks: || {
        vec![
            ("no2", Some(property(json!("69"))), "type"),
            ("typeofLocation", Some(property(json!("outside"))), "enum"),
            (
                "dateObserved",
                Some(property(json!("15/03/2016"))),
                "format",
            ),
            (
                "refPointOfInterest",
                Some(property(json!("urn:ngsi-ld:P:1"))),
                "kind",
            ),
            ("dateObserved", None, "required"),
        ]
    },
};

/// WeatherObserved (dataModel.Weather 0.3.4), written from the model's rules (required
/// dateObserved and location, the enums of pressureTendency and visibility, the units of
/// atmosphericPressure, dewPoint and illuminance), with the terms of the Weather @context.
const WEATHER_OBSERVED: Model = Model {
    name: "dataModel.Weather/WeatherObserved",
    source: "data model dataModel.Weather/WeatherObserved 0.3.4",
    context: WEATHER,
    example: valladolid,
    breaks: || {
        let with_unit = |value: Value, code: &str| json!({"type": "Property", "value": value, "unitCode": code});
        vec![
            ("temperature", Some(property(json!("3.3"))), "type"),
            ("pressureTendency", Some(property(json!("rising"))), "enum"),
            ("dateObserved", Some(property(json!("yesterday"))), "format"),
            (
                "refDevice",
                Some(property(json!("urn:ngsi-ld:Device:1"))),
                "kind",
            ),
            ("location", None, "required"),
            // Pascal is a UN/CEFACT code, but not the model's hectopascal.
            (
                "atmosphericPressure",
                Some(with_unit(json!(93890), "PAL")),
                "unit",
            ),
        ]
    },
};

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

fn valladolid(id: &str) -> Value {
    json!({
        "id": id,
        "type": "WeatherObserved",
        "dateObserved": {"type": "Property", "value": "2016-11-30T07:00:00Z"},
        "location": {"type": "GeoProperty",
                     "value": {"type": "Point", "coordinates": [-4.754444444, 41.640833333]}},
        "address": {"type": "Property", "value": {"addressCountry": "ES",
                    "addressLocality": "Valladolid", "streetAddress": "Plaza de España"}},
        "atmosphericPressure": {"type": "Property", "value": 938.9, "unitCode": "A97"},
        "dewPoint": {"type": "Property", "value": -0.6, "unitCode": "CEL"},
        "illuminance": {"type": "Property", "value": 1000, "unitCode": "LUX"},
        "precipitation": {"type": "Property", "value": 0},
        "pressureTendency": {"type": "Property", "value": "falling"},
        "relativeHumidity": {"type": "Property", "value": 0.54},
        "temperature": {"type": "Property", "value": 3.3},
        "visibility": {"type": "Property", "value": "moderate"},
        "weatherType": {"type": "Property", "value": "overcast"},
        "windDirection": {"type": "Property", "value": 180},
        "windSpeed": {"type": "Property", "value": 2},
        "source": {"type": "Property", "value": "http://www.aemet.es"},
        "dataProvider": {"type": "Property", "value": "TEF"},
        "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:device-0A3478"}
    })
}

async fn checked(mode: Mode) -> TestServer {
    TestServer::start_with(move |s| s.data_models = vec![AIR_QUALITY.binding("", mode)]).await
}

/// Creates the example, then each mutation, over HTTP: the example is accepted, each mutation
/// refused naming its attribute, rule and model, and not written.
async fn assert_each_mutation_refused(s: &TestServer, model: &Model, prefix: &str) {
    let good = format!("{prefix}-good");
    let r = s
        .send_linked(
            Method::POST,
            "/entities",
            model.context,
            &(model.example)(&good),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    for m in model.mutations(prefix) {
        let r = s
            .send_linked(Method::POST, "/entities", model.context, &m.entity)
            .await;
        model.assert_refused(r, m.attr, m.rule).await;
        s.assert_absent(m.entity["id"].as_str().unwrap()).await;
    }
}

#[actix_web::test]
async fn the_example_is_accepted_and_each_mutation_refused_with_its_rule() {
    let s = checked(Mode::Reject).await;
    assert_each_mutation_refused(&s, &AIR_QUALITY, "urn:ngsi-ld:AirQualityObserved:Madrid").await;
    let good = "urn:ngsi-ld:AirQualityObserved:Madrid-good";
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
    AIR_QUALITY.assert_refused(r, "no2", "type").await;
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
    AIR_QUALITY
        .assert_refused(r, "dateObserved", "required")
        .await;
    // Entities of other types, and other tenants, are not checked.
    let other = json!({"id": "urn:ngsi-ld:Thing:1", "type": "Thing", "no2": {"type": "Property", "value": "x"}});
    assert_eq!(
        s.send_linked(Method::POST, "/entities", ENV, &other)
            .await
            .status(),
        201
    );
    let e = AIR_QUALITY
        .mutations("urn:ngsi-ld:AirQualityObserved:elsewhere")
        .remove(0)
        .entity;
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

/// The WeatherObserved example is accepted and each mutation, the unit rule's included, is
/// refused with its rule.
#[actix_web::test]
async fn a_second_model_refuses_each_mutation_unit_included() {
    let s = TestServer::start_with(|s| {
        s.data_models = vec![WEATHER_OBSERVED.binding("", Mode::Reject)]
    })
    .await;
    assert_each_mutation_refused(&s, &WEATHER_OBSERVED, "urn:ngsi-ld:WeatherObserved:V").await;
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

/// Sends a batch operation of entities (each with the Environment @context); asserts 207 and
/// returns the ProblemDetails of each failed entity, by id, each a BadRequestData.
async fn batch_errors(s: &TestServer, op: &str, entities: Vec<Value>) -> HashMap<String, Value> {
    let r = s
        .send_ld(
            Method::POST,
            &format!("/entityOperations/{op}"),
            &ld(entities),
        )
        .await;
    let status = r.status().as_u16();
    let result: Value = r.json().await.unwrap();
    assert_eq!(status, 207, "{op}: {result}");
    let errors = result["errors"].as_array().expect("errors");
    errors
        .iter()
        .map(|e| {
            let problem = e["error"].clone();
            assert!(
                problem["type"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("BadRequestData"),
                "{e}"
            );
            (e["entityId"].as_str().unwrap().to_string(), problem)
        })
        .collect()
}

#[actix_web::test]
async fn in_a_batch_only_the_breaking_entities_fail_with_their_reason() {
    let s = checked(Mode::Reject).await;
    let good = "urn:ngsi-ld:AirQualityObserved:batch-good";
    let cases = AIR_QUALITY.mutations("urn:ngsi-ld:AirQualityObserved:batch");
    let mut body = vec![madrid(good)];
    body.extend(cases.iter().map(|m| m.entity.clone()));
    for op in ["create", "upsert"] {
        let errors = batch_errors(&s, op, body.clone()).await;
        assert_eq!(errors.len(), cases.len(), "{op}: {errors:?}");
        for m in &cases {
            let id = m.entity["id"].as_str().unwrap();
            AIR_QUALITY.assert_named(&errors[id], m.attr, m.rule);
            s.assert_absent(id).await;
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
    AIR_QUALITY.assert_refused(r, "no2", "type").await;
    s.assert_absent(id).await;
    e["no2"][0]["value"] = json!(60);
    let r = s
        .send_linked(Method::POST, "/temporal/entities", ENV, &e)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[actix_web::test]
async fn flagged_entities_are_written_with_their_findings_and_found_by_q() {
    let s = TestServer::start_with(|s| s.data_models = vec![AIR_QUALITY.binding("*", Mode::Flag)])
        .await;
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

/// The (attribute, rule) of each finding recorded on a stored entity.
fn findings_of(stored: &Value) -> Vec<(String, String)> {
    let found = stored[FINDINGS]["value"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    found
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (text("attribute"), text("rule"))
        })
        .collect()
}

/// In `flag` mode every mutation sent in a batch is written, with its finding on it.
#[actix_web::test]
async fn a_flagged_batch_writes_every_mutation_with_its_finding() {
    let s =
        TestServer::start_with(|s| s.data_models = vec![AIR_QUALITY.binding("", Mode::Flag)]).await;
    let cases = AIR_QUALITY.mutations("urn:ngsi-ld:AirQualityObserved:flag-batch");
    let body = ld(cases.iter().map(|m| m.entity.clone()).collect());
    let r = s
        .send_ld(Method::POST, "/entityOperations/upsert", &body)
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    for m in &cases {
        let stored = s.entity(m.entity["id"].as_str().unwrap(), "").await;
        let expected = (m.attr.to_string(), m.rule.to_string());
        assert_eq!(findings_of(&stored), [expected], "{stored}");
    }
}

/// A broker ingesting from the test Mosquitto, its checks set by `adjust`, and a peer subscribed
/// to its error topic once it ingests; the topic entities are published on.
async fn over_mqtt(
    adjust: impl FnOnce(&mut twinlink::config::Settings) + Send + 'static,
) -> (TestServer, Peer, String) {
    let url = common::services::mqtt_url();
    let prefix = unique("dm");
    let s = broker_with(&url, &prefix, adjust).await;
    let peer = Peer::connect(&url).await;
    peer.subscribe(&format!("{prefix}/errors")).await;
    crate::mqtt_ingest::until_ingesting(&s, &peer, &prefix).await;
    (s, peer, format!("{prefix}/entities"))
}

/// Publishes entities with the @context `context`, then reads `count` reports of the error
/// topic: their ProblemDetails by entity id, each a BadRequestData.
async fn mqtt_errors(
    peer: &mut Peer,
    topic: &str,
    context: &str,
    entities: &[Value],
    count: usize,
) -> HashMap<String, Value> {
    for e in entities {
        let mut e = e.clone();
        e["@context"] = json!(context);
        peer.publish(topic, e.to_string()).await;
    }
    let mut reports = HashMap::new();
    while reports.len() < count {
        let (at, report) = peer.next().await;
        assert!(at.ends_with("/errors"), "{at}: {report}");
        let problem = report["error"].clone();
        assert!(
            problem["type"]
                .as_str()
                .unwrap_or_default()
                .ends_with("BadRequestData"),
            "{report}"
        );
        reports.insert(report["entityId"].as_str().unwrap().to_string(), problem);
    }
    reports
}

#[actix_web::test]
async fn a_refused_mqtt_message_goes_to_the_error_topic_with_its_problem() {
    let (s, mut peer, topic) =
        over_mqtt(|s| s.data_models = vec![AIR_QUALITY.binding("", Mode::Reject)]).await;
    let cases = AIR_QUALITY.mutations("urn:ngsi-ld:AirQualityObserved:mqtt");
    let good = "urn:ngsi-ld:AirQualityObserved:mqtt-good";
    let mut published: Vec<Value> = cases.iter().map(|m| m.entity.clone()).collect();
    published.push(madrid(good));
    let reports = mqtt_errors(&mut peer, &topic, ENV, &published, cases.len()).await;
    for m in &cases {
        let id = m.entity["id"].as_str().unwrap();
        AIR_QUALITY.assert_named(&reports[id], m.attr, m.rule);
        s.assert_absent(id).await;
    }
    crate::mqtt_ingest::eventually(&s, &format!("/entities/{good}"), &[], |_| true).await;
}

/// In `flag` mode a message that breaks a rule is written with its finding; nothing goes to the
/// error topic.
#[actix_web::test]
async fn a_flagged_mqtt_message_is_written_with_its_finding() {
    let (s, peer, topic) =
        over_mqtt(|s| s.data_models = vec![AIR_QUALITY.binding("", Mode::Flag)]).await;
    let m = AIR_QUALITY
        .mutations("urn:ngsi-ld:AirQualityObserved:mqtt-flag")
        .remove(1);
    let mut e = m.entity.clone();
    e["@context"] = json!(ENV);
    peer.publish(&topic, e.to_string()).await;
    let path = format!("/entities/{}", m.entity["id"].as_str().unwrap());
    let stored =
        crate::mqtt_ingest::eventually(&s, &path, &[], |e| e.get(FINDINGS).is_some()).await;
    let expected = (m.attr.to_string(), m.rule.to_string());
    assert_eq!(findings_of(&stored), [expected], "{stored}");
}

/// The Madrid territory of the space-time tests, with a clock skew and the unit codes checked.
fn madrid_territory(mode: &str) -> twinlink::model::conformance::spacetime::TerritoryConfig {
    toml::from_str(&format!(
        r#"bbox = [-3.9, 40.3, -3.5, 40.6]
           max-future-seconds = 300
           unit-codes = true
           mode = "{mode}""#
    ))
    .expect("a territory")
}

const LOCATION: &str = "https://uri.etsi.org/ngsi-ld/location";
const NO2: &str = "https://smartdatamodels.org/dataModel.Environment/no2";

/// The Madrid example moved outside the territory, and with a unit that is no UN/CEFACT code:
/// each entity with the attribute and rule its refusal names.
fn outside_the_twin(prefix: &str) -> Vec<(Value, &'static str, &'static str)> {
    let mut barcelona = madrid(&format!("{prefix}-territory"));
    barcelona["location"]["value"]["coordinates"] = json!([2.17, 41.38]);
    let mut unit = madrid(&format!("{prefix}-unit"));
    unit["no2"]["unitCode"] = json!("ug/m3");
    vec![(barcelona, LOCATION, "territory"), (unit, NO2, "unitCode")]
}

fn assert_named_by_territory(problem: &Value, attr: &str, rule: &str) {
    let expected = format!("attribute '{attr}' breaks the '{rule}' rule of the territory check");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&expected), "{expected} in {problem}");
}

#[actix_web::test]
async fn space_time_checks_run_in_a_batch_and_over_mqtt() {
    let (s, mut peer, topic) = over_mqtt(|s| s.territory = vec![madrid_territory("reject")]).await;
    let good = "urn:ngsi-ld:AirQualityObserved:st-good";
    let cases = outside_the_twin("urn:ngsi-ld:AirQualityObserved:st-batch");
    let mut body = vec![madrid(good)];
    body.extend(cases.iter().map(|(e, _, _)| e.clone()));
    let errors = batch_errors(&s, "create", body).await;
    assert_eq!(errors.len(), cases.len(), "{errors:?}");
    for (e, attr, rule) in &cases {
        let id = e["id"].as_str().unwrap();
        assert_named_by_territory(&errors[id], attr, rule);
        s.assert_absent(id).await;
    }
    s.entity(good, "").await;
    let cases = outside_the_twin("urn:ngsi-ld:AirQualityObserved:st-mqtt");
    let published: Vec<Value> = cases.iter().map(|(e, _, _)| e.clone()).collect();
    let reports = mqtt_errors(&mut peer, &topic, ENV, &published, cases.len()).await;
    for (e, attr, rule) in &cases {
        let id = e["id"].as_str().unwrap();
        assert_named_by_territory(&reports[id], attr, rule);
        s.assert_absent(id).await;
    }
}

#[actix_web::test]
async fn space_time_checks_refuse_what_lies_outside_the_twin() {
    let s = TestServer::start_with(|s| s.territory = vec![madrid_territory("reject")]).await;
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
            LOCATION,
            "territory",
        ),
        (
            json!({"no2": {"type": "Property", "value": 70, "observedAt": future}}),
            NO2,
            "observedAt",
        ),
        (
            json!({"no2": {"type": "Property", "value": 70, "unitCode": "ug/m3"}}),
            NO2,
            "unitCode",
        ),
    ];
    for (patch, attr, rule) in cases {
        let r = s
            .send_linked(Method::PATCH, &format!("/entities/{id}/attrs"), ENV, &patch)
            .await;
        let problem = assert_problem(r, 400, "BadRequestData").await;
        assert_named_by_territory(&problem, attr, rule);
    }
    let stored = s.entity(id, "").await;
    assert_eq!(stored[NO2]["value"], 69, "{stored}");
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
        let mut b = AIR_QUALITY.binding("", Mode::Reject);
        b.schema = Some(twinlink::model::conformance::schema::Source::File(file));
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

/// POSTs a binding to the admin API for a tenant.
async fn post_binding(s: &TestServer, tenant: &str, body: &Value) -> reqwest::Response {
    s.client
        .post(format!("{}/ngsi-ld/ex/dataModels", s.root()))
        .header("Content-Type", "application/json")
        .header("NGSILD-Tenant", tenant)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// Creates an entity in a tenant with a @context in the Link header.
async fn create_in(s: &TestServer, tenant: &str, context: &str, e: &Value) -> reqwest::Response {
    s.req(Method::POST, "/entities")
        .header("Content-Type", "application/json")
        .header("Link", common::link(context))
        .header("NGSILD-Tenant", tenant)
        .body(e.to_string())
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn bindings_set_through_the_admin_api_apply_to_their_tenant_until_deleted() {
    let s = TestServer::start().await;
    let r = post_binding(
        &s,
        "city",
        &json!({"model": "NoSuchModel", "mode": "reject"}),
    )
    .await;
    assert_problem(r, 400, "BadRequestData").await;
    let r = post_binding(
        &s,
        "city",
        &json!({"model": "AirQualityObserved", "mode": "reject"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["Location"].to_str().unwrap().to_string();
    let listed: Value = s
        .client
        .get(format!("{}/ngsi-ld/ex/dataModels", s.root()))
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
    let bad = AIR_QUALITY
        .mutations("urn:ngsi-ld:AirQualityObserved:api")
        .remove(0)
        .entity;
    let r = create_in(&s, "city", ENV, &bad).await;
    AIR_QUALITY.assert_refused(r, "no2", "type").await;
    assert_eq!(create_in(&s, "elsewhere", ENV, &bad).await.status(), 201);
    let r = s
        .client
        .delete(format!("{}{location}", s.root()))
        .header("NGSILD-Tenant", "city")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(create_in(&s, "city", ENV, &bad).await.status(), 201);
}

/// A territory set through the admin API checks its tenant's entities (of every type when the
/// binding names none), is kept by the store across a restart, and a bad one is refused.
#[actix_web::test]
async fn a_territory_set_through_the_admin_api_applies_and_persists() {
    let s = TestServer::start().await;
    let area = json!({"bbox": [-3.9, 40.3, -3.5, 40.6], "unit-codes": true});
    let r = post_binding(&s, "city", &json!({"mode": "reject", "territory": area})).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let bad = json!({"mode": "reject", "territory": {"bbox": [1.0, 1.0, 0.0, 0.0]}});
    let problem = assert_problem(post_binding(&s, "city", &bad).await, 400, "BadRequestData").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("bbox"),
        "{problem}"
    );
    let nothing = json!({"mode": "reject"});
    assert_problem(
        post_binding(&s, "city", &nothing).await,
        400,
        "BadRequestData",
    )
    .await;
    let s = s.restart().await;
    // The restarted instance reads the stored bindings with its first housekeeping chores.
    let mut status = 0;
    for i in 0..50 {
        let probe = outside_the_twin(&format!("urn:ngsi-ld:AirQualityObserved:probe-{i}"))
            .remove(0)
            .0;
        status = create_in(&s, "city", ENV, &probe).await.status().as_u16();
        if status == 400 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 400, "the stored territory applies after a restart");
    for (i, (e, attr, rule)) in outside_the_twin("urn:ngsi-ld:AirQualityObserved:api-st")
        .into_iter()
        .enumerate()
    {
        let problem =
            assert_problem(create_in(&s, "city", ENV, &e).await, 400, "BadRequestData").await;
        assert_named_by_territory(&problem, attr, rule);
        // Another tenant is not checked; nor is another type spared in this one.
        assert_eq!(create_in(&s, "elsewhere", ENV, &e).await.status(), 201);
        let mut thing = e.clone();
        thing["id"] = json!(format!("urn:ngsi-ld:Thing:api-st-{i}"));
        thing["type"] = json!("Thing");
        let r = create_in(&s, "city", ENV, &thing).await;
        assert_problem(r, 400, "BadRequestData").await;
    }
    let inside = madrid("urn:ngsi-ld:AirQualityObserved:api-st-good");
    assert_eq!(create_in(&s, "city", ENV, &inside).await.status(), 201);
}

/// A user's JSON Schema set through the admin API for a type no bundled model describes: the
/// entity in keyValues form with expanded names must satisfy it. A schema that is no usable
/// JSON Schema, refers to another document, is too large or names a file is refused with the
/// reason.
#[actix_web::test]
async fn a_users_schema_set_through_the_admin_api_checks_a_type_without_a_model() {
    let s = TestServer::start().await;
    let ctx = json!({"Pump": "https://example.org/Pump", "flow": "https://example.org/flow"});
    let (server, context) = (ContextServer::start(), "/pump.jsonld");
    server.serve(context, &json!({ "@context": ctx }));
    let context = server.url(context);
    let schema = json!({
        "type": "object",
        "required": ["https://example.org/flow"],
        "properties": {"https://example.org/flow": {"type": "number", "minimum": 0}}
    });
    let binding = json!({"type": "https://example.org/Pump", "mode": "reject", "schema": schema});
    let r = post_binding(&s, "pumps", &binding).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let pump = |id: &str, flow: Value| json!({"id": id, "type": "Pump", "flow": {"type": "Property", "value": flow}});
    let r = create_in(
        &s,
        "pumps",
        &context,
        &pump("urn:ngsi-ld:Pump:bad", json!(-1)),
    )
    .await;
    let problem = assert_problem(r, 400, "BadRequestData").await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    let named = "breaks the 'schema' rule of the schema urn:ngsi-ld:DataModelBinding:";
    assert!(detail.contains(named), "{problem}");
    assert!(detail.contains("-1"), "{problem}");
    let r = s
        .req(Method::GET, "/entities/urn:ngsi-ld:Pump:bad")
        .header("NGSILD-Tenant", "pumps")
        .send()
        .await
        .unwrap();
    // Nothing was written: the tenant does not even exist yet.
    assert_problem(r, 404, "NonexistentTenant").await;
    let r = create_in(
        &s,
        "pumps",
        &context,
        &pump("urn:ngsi-ld:Pump:good", json!(3)),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let big: serde_json::Map<String, Value> = (0..20_000)
        .map(|i| (format!("p{i}"), json!({"type": "number"})))
        .collect();
    let pump = json!("https://example.org/Pump");
    let refused = [
        (json!({"type": 12}), &pump, "not a usable JSON Schema"),
        (
            json!({"$ref": "https://example.org/other.schema.json"}),
            &pump,
            "not a usable JSON Schema",
        ),
        (json!({"properties": big}), &pump, "bytes, more than"),
        (
            json!("pump.schema.json"),
            &pump,
            "schema files are named in the configuration file",
        ),
        (
            json!({"type": "object"}),
            &Value::Null,
            "names the type it checks",
        ),
    ];
    for (schema, type_iri, reason) in refused {
        let mut body = json!({"mode": "reject", "schema": schema});
        if !type_iri.is_null() {
            body["type"] = type_iri.clone();
        }
        let problem = assert_problem(
            post_binding(&s, "pumps", &body).await,
            400,
            "BadRequestData",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(reason),
            "{reason}: {problem}"
        );
    }
}

/// Two instances on one PostgreSQL database (whatever the store under test): a binding added
/// through one is applied by the other within its reload period.
#[actix_web::test]
async fn a_binding_added_through_one_instance_applies_on_the_other() {
    let a = TestServer::start_on_postgres().await;
    let url = a.database_url.clone().expect("a PostgreSQL server");
    let b = TestServer::start_with(|s| s.database_url = Some(url.clone())).await;
    let r = post_binding(
        &a,
        "city",
        &json!({"model": "AirQualityObserved", "mode": "reject"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let mut status = 0;
    for i in 0..50 {
        let e = AIR_QUALITY
            .mutations(&format!("urn:ngsi-ld:AirQualityObserved:other-{i}"))
            .remove(0)
            .entity;
        let r = create_in(&b, "city", ENV, &e).await;
        status = r.status().as_u16();
        if status == 400 {
            AIR_QUALITY.assert_refused(r, "no2", "type").await;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 400,
        "the other instance applies the binding within seconds"
    );
}

/// `twinlink models` lists the bundled models and shows one model's rules, as the checks read
/// them.
#[test]
fn the_models_command_lists_and_shows_the_bundled_models() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_twinlink"))
            .args(args)
            .output()
            .expect("twinlink runs")
    };
    let listed = run(&["models"]);
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8(listed.stdout).unwrap();
    assert!(
        text.starts_with("model\tversion\tattributes\trequired\n"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("dataModel.Environment/AirQualityObserved\t0.1.4\t")),
        "AirQualityObserved listed"
    );
    assert!(text.lines().count() > 1000, "every bundled model");
    let shown = run(&["models", "WeatherObserved"]);
    assert!(shown.status.success(), "{shown:?}");
    let rules: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(rules["model"], "dataModel.Weather/WeatherObserved");
    let pressure = &rules["rules"]["attributes"]
        ["https://smartdatamodels.org/dataModel.Weather/atmosphericPressure"];
    assert_eq!(pressure["unitCodes"], json!(["A97"]), "{rules}");
    let unknown = run(&["models", "NoSuchModel"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("NoSuchModel"));
}
