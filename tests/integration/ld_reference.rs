//! Checks twinlink's fast JSON-LD term expansion and compaction (`ld::ActiveContext`, used through
//! `model::parse::Reader` and `model::render`) against the `json-ld` crate (0.21) as the reference
//! JSON-LD 1.1 processor.
//!
//! Both sides get the same contexts: the user @context followed by the core context v1.9, as the
//! broker applies it. Our side goes through the real `ContextLoader` (bundled core and Smart Data
//! Models contexts, plus an offline context directory for the test's own URL contexts); the
//! reference side uses json-ld's whole-document expansion with an in-memory loader serving the same
//! documents. Nothing touches the network.
//!
//! How the reference IRI of one particular key is found: json-ld expands a *probe* document that
//! has the same @context and the same keys, each carrying a unique marker value (`urn:probe:…`); the
//! expanded key whose value holds a key's marker is that key's IRI. Whole realistic documents are
//! expanded too, and their sets of attribute / sub-attribute IRIs compared.
//!
//! One document in the reference loader is a stand-in: the core context's `ngsildproof` term has a
//! scoped context that refers to `https://w3id.org/security/data-integrity/v2`, which JSON-LD 1.1
//! processes (and so loads) when the term is defined. It is served here as an empty context; it only
//! matters inside `ngsildproof` values, which no test uses.

use json_ld::syntax::{IntoJsonWithContext, Parse};
use json_ld::{IriBuf, JsonLdProcessor, RemoteDocument};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::OnceLock;
use twinlink::config::Settings;
use twinlink::ld::{ActiveContext, ContextLoader, CORE_CONTEXT_ALIAS, CORE_CONTEXT_V1_9};
use twinlink::model::parse::{EntityInput, Nulls, Reader};
use twinlink::model::render::{self, RenderOptions};
use twinlink::model::{AttrKind, Entity, ATTRIBUTE_MEMBERS, ENTITY_MEMBERS};

const CORE_V1_9_DOC: &str = include_str!("../../context/ngsi-ld-core-context-v1.9.jsonld");
const CORE_V1_8_DOC: &str = include_str!("../../context/ngsi-ld-core-context-v1.8.jsonld");
const CORE_V1_6_DOC: &str = include_str!("../../context/ngsi-ld-core-context-v1.6.jsonld");
const CORE_CONTEXT_V1_8: &str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";
const CORE_CONTEXT_V1_6: &str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld";
const SMART_DATA_MODELS: &str = include_str!("../../smart-data-models/contexts.json");
const DATA_INTEGRITY_V2: &str = "https://w3id.org/security/data-integrity/v2";

const SDM_WEATHER: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Weather/master/context.jsonld";
const SDM_PARKING: &str = "https://smart-data-models.github.io/dataModel.Parking/context.jsonld";
const SDM_ENVIRONMENT: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld";
const SDM_DEVICE: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Device/master/context.jsonld";
const SDM_AGRIFOOD: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Agrifood/master/context.jsonld";
const SDM_ISSUE_TRACKING: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.IssueTracking/master/context.jsonld";
/// The Smart Data Models contexts the tests use (the reference loader serves exactly these).
const SDM_CHOSEN: [&str; 6] = [
    SDM_WEATHER,
    SDM_PARKING,
    SDM_ENVIRONMENT,
    SDM_DEVICE,
    SDM_AGRIFOOD,
    SDM_ISSUE_TRACKING,
];

/// A context document that only the test knows, served by URL to both sides.
const FARM_CONTEXT_URL: &str = "https://contexts.twinlink.test/farm.jsonld";

/// A byte copy of the core context v1.9 under another URL.
const CORE_COPY_URL: &str = "https://contexts.twinlink.test/core-copy.jsonld";

fn test_documents() -> Vec<(&'static str, Value)> {
    vec![
        (
            CORE_COPY_URL,
            serde_json::from_str(CORE_V1_9_DOC).expect("core context parses"),
        ),
        (
            FARM_CONTEXT_URL,
            json!({"@context": [
                SDM_AGRIFOOD,
                {
                    "farm": "https://farm.twinlink.test/ns#",
                    "farmCode": "farm:code",
                    "irrigated": {"@id": "farm:irrigated", "@type": "http://www.w3.org/2001/XMLSchema#boolean"},
                    "managedBy": {"@id": "farm:managedBy", "@type": "@id"}
                }
            ]}),
        ),
    ]
}

// ------------------------------------------------------------------------------------------------
// Plumbing: one runtime, our loader and the reference loader, shared by all tests.

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// Our side: the broker's own context loader, with the test documents in an offline directory.
fn ours() -> &'static ContextLoader {
    static LOADER: OnceLock<ContextLoader> = OnceLock::new();
    LOADER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut index = Map::new();
        for (i, (url, doc)) in test_documents().into_iter().enumerate() {
            let file = format!("doc{i}.jsonld");
            std::fs::write(dir.path().join(&file), doc.to_string()).expect("write test context");
            index.insert(url.to_string(), Value::String(file));
        }
        std::fs::write(
            dir.path().join("index.json"),
            Value::Object(index).to_string(),
        )
        .expect("write index");
        let settings = Settings {
            context_dir: Some(dir.path().to_path_buf()),
            ..Settings::default()
        };
        // The offline directory is read when the loader is built; the temp dir may go afterwards.
        ContextLoader::new(&settings).expect("context loader")
    })
}

fn active(user: &Value) -> std::sync::Arc<ActiveContext> {
    block_on(ours().active(Some(user)))
        .unwrap_or_else(|e| panic!("our context processing failed for {user}: {e}"))
}

/// The reference side: json-ld with an in-memory loader.
struct Reference {
    docs: HashMap<IriBuf, RemoteDocument>,
}

fn to_syntax(v: &Value) -> json_ld::syntax::Value {
    json_ld::syntax::Value::parse_str(&v.to_string())
        .expect("JSON re-parses")
        .0
}

fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let sdm: HashMap<String, Value> =
            serde_json::from_str(SMART_DATA_MODELS).expect("SDM contexts parse");
        let mut served: Vec<(String, Value)> = vec![
            (
                CORE_CONTEXT_V1_9.into(),
                serde_json::from_str(CORE_V1_9_DOC).unwrap(),
            ),
            // The broker serves the alias as v1.9; a copy of the document under another URL would
            // make json-ld reject the pair [alias, v1.9] (see `core_copy_under_another_url...`).
            (
                CORE_CONTEXT_ALIAS.into(),
                json!({"@context": CORE_CONTEXT_V1_9}),
            ),
            (
                CORE_CONTEXT_V1_8.into(),
                serde_json::from_str(CORE_V1_8_DOC).unwrap(),
            ),
            (
                CORE_CONTEXT_V1_6.into(),
                serde_json::from_str(CORE_V1_6_DOC).unwrap(),
            ),
            (DATA_INTEGRITY_V2.into(), json!({"@context": {}})),
        ];
        for url in SDM_CHOSEN {
            served.push((
                url.into(),
                sdm.get(url)
                    .unwrap_or_else(|| panic!("{url} is bundled"))
                    .clone(),
            ));
        }
        for (url, doc) in test_documents() {
            served.push((url.into(), doc));
        }
        let docs = served
            .into_iter()
            .map(|(url, doc)| {
                let iri = IriBuf::new(url.clone()).expect("context URL is an IRI");
                let remote = RemoteDocument::new(
                    Some(iri.clone()),
                    Some("application/ld+json".parse().expect("mime")),
                    to_syntax(&doc),
                );
                (iri, remote)
            })
            .collect();
        Reference { docs }
    })
}

impl Reference {
    /// json-ld's expansion of a whole document, as JSON (an array of node objects).
    fn expand(&self, doc: &Value) -> Result<Vec<Value>, String> {
        let input = RemoteDocument::new(
            None,
            Some("application/ld+json".parse().expect("mime")),
            to_syntax(doc),
        );
        let expanded = block_on(input.expand(&self.docs)).map_err(|e| format!("{e:?}"))?;
        Ok(expanded
            .into_iter()
            .map(|o| {
                serde_json::from_str(&o.into_json_with(&()).to_string())
                    .expect("json-ld prints JSON")
            })
            .collect())
    }

    /// json-ld's expansion of a document that must give exactly one node object.
    fn expand_node(&self, doc: &Value) -> Map<String, Value> {
        let mut nodes = self
            .expand(doc)
            .unwrap_or_else(|e| panic!("json-ld cannot expand {doc}: {e}"));
        assert_eq!(nodes.len(), 1, "json-ld expands {doc} to {nodes:?}");
        match nodes.pop() {
            Some(Value::Object(node)) => node,
            other => panic!("json-ld expands {doc} to {other:?}"),
        }
    }
}

/// The @context both sides apply for a user context: the user's entries, then the core context.
fn with_core(user: &Value) -> Value {
    let mut items = match user {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    items.push(Value::String(CORE_CONTEXT_V1_9.into()));
    Value::Array(items)
}

/// Whether a JSON value holds the string `needle` anywhere.
fn holds(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s == needle,
        Value::Array(items) => items.iter().any(|i| holds(i, needle)),
        Value::Object(map) => map.values().any(|i| holds(i, needle)),
        _ => false,
    }
}

/// The key of `node` (not a keyword) whose value holds `marker`.
fn key_holding(node: &Map<String, Value>, marker: &str) -> Option<String> {
    let found: Vec<&String> = node
        .iter()
        .filter(|(k, v)| !k.starts_with('@') && holds(v, marker))
        .map(|(k, _)| k)
        .collect();
    assert!(
        found.len() <= 1,
        "marker {marker} under several keys: {found:?}"
    );
    found.first().map(|k| (*k).clone())
}

fn non_keyword_keys(node: &Map<String, Value>) -> BTreeSet<String> {
    node.keys()
        .filter(|k| !k.starts_with('@'))
        .cloned()
        .collect()
}

/// A name to expand: a top-level key with its sub-attribute keys.
#[derive(Debug, Clone)]
struct Name {
    key: String,
    subs: Vec<String>,
}

/// json-ld's IRI for every key and sub-key (None: json-ld drops the key), from one probe document
/// with the same @context and the same keys, each holding a unique marker.
fn reference_names(user: &Value, names: &[Name]) -> Vec<(Option<String>, Vec<Option<String>>)> {
    let mut doc = Map::new();
    doc.insert("@context".into(), with_core(user));
    doc.insert("id".into(), json!("urn:ngsi-ld:Probe:1"));
    // A node with a type survives expansion even when json-ld drops every key.
    doc.insert("type".into(), json!("urn:probe:Type"));
    for (i, n) in names.iter().enumerate() {
        let value = if n.subs.is_empty() {
            json!(format!("urn:probe:{i}"))
        } else {
            let mut attr = Map::new();
            attr.insert("type".into(), json!("Property"));
            attr.insert("value".into(), json!(format!("urn:probe:{i}")));
            for (j, s) in n.subs.iter().enumerate() {
                attr.insert(
                    s.clone(),
                    json!({"type": "Property", "value": format!("urn:probe:{i}:{j}")}),
                );
            }
            Value::Object(attr)
        };
        assert!(
            doc.insert(n.key.clone(), value).is_none(),
            "duplicate probe key {}",
            n.key
        );
    }
    let node = reference().expand_node(&Value::Object(doc));
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let iri = key_holding(&node, &format!("urn:probe:{i}"));
            let subs = n
                .subs
                .iter()
                .enumerate()
                .map(|(j, _)| {
                    let attr = iri
                        .as_ref()
                        .and_then(|k| node[k].as_array())
                        .and_then(|a| a.first());
                    attr.and_then(Value::as_object)
                        .and_then(|a| key_holding(a, &format!("urn:probe:{i}:{j}")))
                })
                .collect();
            (iri, subs)
        })
        .collect()
}

/// json-ld's IRI for an entity type name.
fn reference_type(user: &Value, name: &str) -> Vec<String> {
    let doc = json!({"@context": with_core(user), "id": "urn:ngsi-ld:Probe:1", "type": name});
    let node = reference().expand_node(&doc);
    strings(node.get("@type"))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(String::from))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![],
    }
}

// ------------------------------------------------------------------------------------------------
// The realistic entities.

struct Case {
    label: &'static str,
    /// The user @context, as a client sends it.
    context: Value,
    /// The entity, without @context.
    entity: Value,
}

fn cases() -> Vec<Case> {
    let point = |lon: f64, lat: f64| json!({"type": "Point", "coordinates": [lon, lat]});
    vec![
        Case {
            label: "inline object with prefixes and @vocab",
            context: json!({
                "@vocab": "https://example.org/vocab/",
                "ex": "https://example.org/ns#",
                "schema": "https://schema.org/",
                "Building": "ex:Building",
                "temperature": "ex:temperature",
                "accuracy": "ex:accuracy",
                "floors": {"@id": "ex:floorsAboveGround", "@type": "http://www.w3.org/2001/XMLSchema#integer"},
                "owner": {"@id": "schema:owner", "@type": "@id"},
                "openingHours": "schema:openingHours",
                "sensorKind": {"@type": "@vocab"}
            }),
            entity: json!({
                "id": "urn:ngsi-ld:Building:store-1",
                "type": ["Building", "schema:Store"],
                "scope": "/Madrid/Centro",
                "name": {"type": "LanguageProperty", "languageMap": {"en": "Corner store", "es": "Tienda de la esquina"}},
                "temperature": {
                    "type": "Property", "value": 21.5, "unitCode": "CEL", "observedAt": "2024-05-01T12:00:00Z",
                    "accuracy": {"type": "Property", "value": 0.2},
                    "ex:calibratedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:tech-7"}
                },
                "floors": {"type": "Property", "value": 3},
                "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Company:acme", "objectType": "schema:Organization"},
                "location": {"type": "GeoProperty", "value": point(-3.7038, 40.4168)},
                "openingHours": "Mo-Sa 09:00-21:00",
                "schema:telephone": {"type": "Property", "value": "+34 910 000 000"},
                "sensorKind": {"type": "VocabProperty", "vocab": "ex:Thermometer"},
                "notInAnyContext": {"type": "Property", "value": true},
                "https://other.example.org/terms#explicitIri": {"type": "Property", "value": "full IRI as name"},
                "description": {"type": "Property", "value": "a shop"}
            }),
        },
        Case {
            label: "array of SDM URL + object",
            context: json!([SDM_WEATHER, {"stationCode": "https://weather.twinlink.test/stationCode", "aemet": "https://aemet.twinlink.test/"}]),
            entity: json!({
                "id": "urn:ngsi-ld:WeatherObserved:Madrid-Retiro",
                "type": "WeatherObserved",
                "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": "2024-05-01T12:00:00Z"}},
                "temperature": {"type": "Property", "value": 18.2, "unitCode": "CEL", "observedAt": "2024-05-01T12:00:00Z",
                    "aemet:quality": {"type": "Property", "value": "validated"}},
                "relativeHumidity": {"type": "Property", "value": 0.43},
                "atmosphericPressure": {"type": "Property", "value": 938.9, "unitCode": "A97"},
                "windSpeed": {"type": "Property", "value": 2.5, "unitCode": "MTS",
                    "measurementHeight": {"type": "Property", "value": 10, "unitCode": "MTR"}},
                "address": {"type": "Property", "value": {"addressLocality": "Madrid", "addressCountry": "ES"}},
                "location": {"type": "GeoProperty", "value": point(-3.6823, 40.4153)},
                "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:station-3195"},
                "stationCode": "3195",
                "name": {"type": "Property", "value": "Madrid, Retiro"},
                "source": {"type": "Property", "value": "https://aemet.es"}
            }),
        },
        Case {
            label: "core context v1.9 alone",
            context: json!(CORE_CONTEXT_V1_9),
            entity: json!({
                "id": "urn:ngsi-ld:Sensor:core-only",
                "type": "Sensor",
                "temperature": {"type": "Property", "value": 20, "observedAt": "2024-05-01T12:00:00Z",
                    "providedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"},
                    "title": {"type": "Property", "value": "sub-attribute named like a core term"}},
                "location": {"type": "GeoProperty", "value": point(2.35, 48.85)},
                "observationSpace": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [[[2.3, 48.8], [2.4, 48.8], [2.4, 48.9], [2.3, 48.8]]]}},
                "title": "a core term as attribute name",
                "label": {"type": "LanguageProperty", "languageMap": {"fr": "capteur", "@none": "sensor"}},
                "readings": {"type": "ListProperty", "valueList": [1, 2, 3]},
                "config": {"type": "JsonProperty", "json": {"rate": 10, "unit": "s"}},
                "ngsi-ld:customCoreish": {"type": "Property", "value": 1},
                "urn:x-twinlink:attr": {"type": "Property", "value": 2}
            }),
        },
        Case {
            label: "Smart Data Models Parking + core alias URL",
            context: json!([SDM_PARKING, CORE_CONTEXT_ALIAS]),
            entity: json!({
                "id": "urn:ngsi-ld:OffStreetParking:Downtown1",
                "type": "OffStreetParking",
                "name": {"type": "Property", "value": "Downtown One"},
                "availableSpotNumber": {"type": "Property", "value": 121, "observedAt": "2024-05-01T12:00:00Z",
                    "reliability": {"type": "Property", "value": 0.7},
                    "providedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Camera:C1"}},
                "totalSpotNumber": {"type": "Property", "value": 200},
                "category": {"type": "Property", "value": ["public", "underground"]},
                "allowedVehicleType": {"type": "Property", "value": ["car"]},
                "status": {"type": "Property", "value": "open"},
                "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Organization:city"},
                "location": {"type": "GeoProperty", "value": point(-8.60961, 41.15079)},
                "description": {"type": "Property", "value": "Municipal car park"}
            }),
        },
        Case {
            label: "two SDM contexts (Environment then Device)",
            context: json!([SDM_ENVIRONMENT, SDM_DEVICE, CORE_CONTEXT_V1_9]),
            entity: json!({
                "id": "urn:ngsi-ld:AirQualityObserved:Madrid-Escuelas-Aguirre",
                "type": "AirQualityObserved",
                "dateObserved": {"type": "Property", "value": "2024-05-01T12:00:00Z"},
                "temperature": {"type": "Property", "value": 12.2, "unitCode": "CEL"},
                "airQualityIndex": {"type": "Property", "value": 65,
                    "dataProvider": {"type": "Property", "value": "Ayuntamiento de Madrid"}},
                "NO2": {"type": "Property", "value": 22, "unitCode": "GQ", "observedAt": "2024-05-01T12:00:00Z",
                    "accuracy": {"type": "Property", "value": 1.5}},
                "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:aq-28079008"},
                "batteryLevel": {"type": "Property", "value": 0.8},
                "controlledProperty": {"type": "Property", "value": ["NO2", "temperature"]},
                "location": {"type": "GeoProperty", "value": point(-3.6822, 40.4214)}
            }),
        },
        Case {
            label: "a term redefined later in the array",
            context: json!([
                {"temperature": "https://first.twinlink.test/temperature", "ex": "https://first.twinlink.test/", "Kiosk": "ex:Kiosk"},
                SDM_WEATHER,
                {"temperature": "https://second.twinlink.test/temperature", "ex": "https://second.twinlink.test/"}
            ]),
            entity: json!({
                "id": "urn:ngsi-ld:Kiosk:k1",
                "type": "Kiosk",
                "temperature": {"type": "Property", "value": 25, "ex:sensorId": {"type": "Property", "value": "t-1"}},
                "ex:humidity": {"type": "Property", "value": 0.5},
                "name": {"type": "Property", "value": "kiosk"},
                "windSpeed": {"type": "Property", "value": 1.1}
            }),
        },
        Case {
            label: "a test context served by URL that itself refers to an SDM context",
            context: json!(FARM_CONTEXT_URL),
            entity: json!({
                "id": "urn:ngsi-ld:AgriParcel:p-17",
                "type": ["AgriParcel", "farm:OrganicParcel"],
                "area": {"type": "Property", "value": 12.5, "unitCode": "HAR",
                    "surveyedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:surveyor-1"}},
                "farmCode": "ES-28-0017",
                "irrigated": {"type": "Property", "value": true},
                "managedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:farmer-2"},
                "belongsTo": {"type": "Relationship", "object": "urn:ngsi-ld:AgriFarm:f-3"},
                "temperature": [
                    {"type": "Property", "value": 17, "datasetId": "urn:ngsi-ld:Dataset:north",
                        "farm:probeDepth": {"type": "Property", "value": 0.3}},
                    {"type": "Property", "value": 18, "datasetId": "urn:ngsi-ld:Dataset:south"}
                ],
                "location": {"type": "GeoProperty", "value": point(-3.9, 40.1)}
            }),
        },
        Case {
            label: "@vocab-derived term definitions and terms built from other terms",
            context: json!({
                "@vocab": "https://vocab.twinlink.test/",
                "level": {"@type": "http://www.w3.org/2001/XMLSchema#double"},
                "feeds": {"@type": "@id"},
                "tank": "https://tanks.twinlink.test/",
                "capacity": "tank:capacity",
                "volume": {"@id": "capacity"},
                "Tank": "tank:Tank"
            }),
            entity: json!({
                "id": "urn:ngsi-ld:Tank:t1",
                "type": "Tank",
                "level": {"type": "Property", "value": 0.75, "tank:sensor": {"type": "Property", "value": "s1"}},
                "feeds": {"type": "Relationship", "object": "urn:ngsi-ld:Pipe:p1"},
                "volume": {"type": "Property", "value": 1000, "unitCode": "LTR",
                    "capacity": {"type": "Property", "value": 1200}},
                "unknownThing": 4
            }),
        },
    ]
}

/// The kind a request attribute object has, as `Reader` decides it.
fn attr_kind(obj: &Map<String, Value>) -> Option<AttrKind> {
    match obj
        .get("type")
        .and_then(Value::as_str)
        .and_then(AttrKind::from_name)
    {
        Some(k) => Some(k),
        None => AttrKind::ALL
            .iter()
            .copied()
            .find(|k| obj.contains_key(k.value_member())),
    }
}

/// The sub-attribute keys of one attribute (all its instances), in order.
fn sub_keys(value: &Value) -> Vec<String> {
    let instances: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    let mut out: Vec<String> = Vec::new();
    for i in instances {
        let Some(obj) = i.as_object() else { continue };
        let Some(kind) = attr_kind(obj) else { continue };
        for k in obj.keys() {
            if k != kind.value_member()
                && !ATTRIBUTE_MEMBERS.contains(&k.as_str())
                && !out.contains(k)
            {
                out.push(k.clone());
            }
        }
    }
    out
}

/// The attribute names of a request entity with their sub-attribute names, in order.
fn names_of(entity: &Value) -> Vec<Name> {
    entity
        .as_object()
        .expect("entity object")
        .iter()
        .filter(|(k, _)| !ENTITY_MEMBERS.contains(&k.as_str()) && *k != "@id" && *k != "@type")
        .map(|(k, v)| Name {
            key: k.clone(),
            subs: sub_keys(v),
        })
        .collect()
}

fn type_names(entity: &Value) -> Vec<String> {
    strings(entity.get("type"))
}

fn now() -> chrono::DateTime<chrono::Utc> {
    "2024-05-01T12:00:00Z".parse().expect("timestamp")
}

fn read(ctx: &ActiveContext, case: &Case) -> EntityInput {
    Reader::new(ctx, now(), Nulls::Forbidden)
        .entity(&case.entity, true)
        .unwrap_or_else(|e| panic!("[{}] our Reader rejects the entity: {e}", case.label))
}

/// Our IRIs per name, from `Reader::entity` (attrs and sub-attributes are kept in input order).
fn our_names(input: &EntityInput, names: &[Name], label: &str) -> Vec<(String, Vec<String>)> {
    assert_eq!(
        input.attrs.len(),
        names.len(),
        "[{label}] Reader gives {} attributes for {} names: {:?}",
        input.attrs.len(),
        names.len(),
        input.attrs.keys().collect::<Vec<_>>()
    );
    input
        .attrs
        .iter()
        .zip(names)
        .map(|((iri, instances), n)| {
            let mut subs: Vec<String> = Vec::new();
            for a in instances {
                for s in a.sub.keys() {
                    if !subs.contains(s) {
                        subs.push(s.clone());
                    }
                }
            }
            assert_eq!(
                subs.len(),
                n.subs.len(),
                "[{label}] '{}': Reader gives sub-attributes {subs:?} for {:?}",
                n.key,
                n.subs
            );
            (iri.clone(), subs)
        })
        .collect()
}

/// Collects mismatches as readable lines, so one run reports all of them.
#[derive(Default)]
struct Report(Vec<String>, usize);

impl Report {
    fn check(&mut self, what: String, ours: &str, reference: Option<&str>) {
        self.1 += 1;
        if Some(ours) != reference {
            self.0
                .push(format!("{what}: ours {ours:?}, json-ld {reference:?}"));
        }
    }

    /// Fails with every disagreement; `min_checks` guards against a vacuous pass.
    fn assert_checked(self, title: &str, min_checks: usize) {
        eprintln!("{title}: {} comparisons", self.1);
        assert!(self.1 >= min_checks, "{title}: only {} comparisons", self.1);
        self.assert_empty(title);
    }

    fn assert_empty(self, title: &str) {
        assert!(
            self.0.is_empty(),
            "{title}: {} disagreement(s)\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// json-ld's IRIs for the attribute members that are not sub-attributes (value, observedAt, ...),
/// and for `scope`.
fn structural_iris() -> &'static (BTreeSet<String>, Option<String>) {
    static IRIS: OnceLock<(BTreeSet<String>, Option<String>)> = OnceLock::new();
    IRIS.get_or_init(|| {
        let mut members: Vec<Name> = Vec::new();
        for m in ATTRIBUTE_MEMBERS
            .iter()
            .copied()
            .chain(AttrKind::ALL.iter().map(|k| k.value_member()))
        {
            if m != "type" && m != "@context" && !members.iter().any(|n| n.key == m) {
                members.push(Name {
                    key: m.into(),
                    subs: vec![],
                });
            }
        }
        let structural = reference_names(&json!({}), &members)
            .into_iter()
            .filter_map(|(iri, _)| iri)
            .collect();
        let scope = reference_names(
            &json!({}),
            &[Name {
                key: "scope".into(),
                subs: vec![],
            }],
        )[0]
        .0
        .clone();
        (structural, scope)
    })
}

/// The IRIs json-ld's expansion of the whole realistic document gives: top-level attribute IRIs
/// (scope excluded: `Reader` keeps it apart) each with its sub-attribute IRIs, and the types.
fn whole_document(
    user: &Value,
    entity: &Value,
) -> (HashMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut doc = entity.as_object().expect("entity object").clone();
    doc.insert("@context".into(), with_core(user));
    let node = reference().expand_node(&Value::Object(doc));
    let (structural, scope) = structural_iris();
    let mut attrs = HashMap::new();
    for (iri, values) in &node {
        if iri.starts_with('@') || Some(iri) == scope.as_ref() {
            continue;
        }
        let mut subs = BTreeSet::new();
        for v in values.as_array().into_iter().flatten() {
            if let Some(obj) = v.as_object() {
                subs.extend(
                    non_keyword_keys(obj)
                        .into_iter()
                        .filter(|k| !structural.contains(k)),
                );
            }
        }
        attrs.insert(iri.clone(), subs);
    }
    (attrs, strings(node.get("@type")).into_iter().collect())
}

// ------------------------------------------------------------------------------------------------
// (a) attribute names and entity types, (b) sub-attribute names.

#[test]
fn attribute_names_and_types_expand_like_json_ld() {
    let mut report = Report::default();
    for case in cases() {
        let ctx = active(&case.context);
        let input = read(&ctx, &case);
        let names = names_of(&case.entity);
        let ours = our_names(&input, &names, case.label);
        let reference = reference_names(&case.context, &names);
        for ((n, (our_iri, _)), (ref_iri, _)) in names.iter().zip(&ours).zip(&reference) {
            report.check(
                format!("[{}] attribute '{}'", case.label, n.key),
                our_iri,
                ref_iri.as_deref(),
            );
        }
        let tnames = type_names(&case.entity);
        assert_eq!(
            input.types.len(),
            tnames.len(),
            "[{}] types {:?}",
            case.label,
            input.types
        );
        for (t, our_iri) in tnames.iter().zip(&input.types) {
            let r = reference_type(&case.context, t);
            report.check(
                format!("[{}] type '{t}'", case.label),
                our_iri,
                r.first().map(String::as_str),
            );
        }
        // The whole realistic document, expanded by json-ld, has the same attribute IRIs and types.
        let (whole_attrs, whole_types) = whole_document(&case.context, &case.entity);
        let our_set: BTreeSet<String> = input.attrs.keys().cloned().collect();
        let ref_set: BTreeSet<String> = whole_attrs.keys().cloned().collect();
        if our_set != ref_set {
            report.0.push(format!(
                "[{}] whole document attribute IRIs: ours {our_set:?}, json-ld {ref_set:?}",
                case.label
            ));
        }
        let our_types: BTreeSet<String> = input.types.iter().cloned().collect();
        if our_types != whole_types {
            report.0.push(format!(
                "[{}] whole document types: ours {our_types:?}, json-ld {whole_types:?}",
                case.label
            ));
        }
    }
    report.assert_checked("attribute and type names", 70);
}

#[test]
fn sub_attribute_names_expand_like_json_ld() {
    let mut report = Report::default();
    for case in cases() {
        let ctx = active(&case.context);
        let input = read(&ctx, &case);
        let names = names_of(&case.entity);
        let ours = our_names(&input, &names, case.label);
        let reference = reference_names(&case.context, &names);
        let (whole_attrs, _) = whole_document(&case.context, &case.entity);
        for ((n, (our_iri, our_subs)), (_, ref_subs)) in names.iter().zip(&ours).zip(&reference) {
            for ((s, ours), r) in n.subs.iter().zip(our_subs).zip(ref_subs) {
                report.check(
                    format!("[{}] sub-attribute '{}' of '{}'", case.label, s, n.key),
                    ours,
                    r.as_deref(),
                );
            }
            let our_set: BTreeSet<String> = our_subs.iter().cloned().collect();
            let whole = whole_attrs.get(our_iri).cloned().unwrap_or_default();
            if our_set != whole {
                report.0.push(format!(
                    "[{}] whole document sub-attributes of '{}': ours {our_set:?}, json-ld {whole:?}",
                    case.label, n.key
                ));
            }
        }
    }
    report.assert_checked("sub-attribute names", 15);
}

// ------------------------------------------------------------------------------------------------
// (c) compaction.

/// Every IRI an entity holds (attributes, sub-attributes, types) compacts to a name that expands back
/// to the IRI, by our expansion and by json-ld's; a name the context defines compacts to itself
/// (or, when several terms share the IRI, to one of them).
#[test]
fn compaction_round_trips_through_json_ld() {
    let mut report = Report::default();
    for case in cases() {
        let ctx = active(&case.context);
        let input = read(&ctx, &case);
        let names = names_of(&case.entity);
        let ours = our_names(&input, &names, case.label);
        let mut iris: Vec<(String, String)> = Vec::new(); // (original name, IRI)
        for (n, (iri, subs)) in names.iter().zip(&ours) {
            iris.push((n.key.clone(), iri.clone()));
            iris.extend(n.subs.iter().cloned().zip(subs.iter().cloned()));
        }
        let mut probes: Vec<Name> = Vec::new();
        let mut expected: Vec<String> = Vec::new();
        for (name, iri) in &iris {
            let compacted = ctx.compact(iri).into_owned();
            report.check(
                format!("[{}] our expand(compact({iri}))", case.label),
                &ctx.expand(&compacted),
                Some(iri.as_str()),
            );
            if ctx.term(name).is_some() && compacted != *name {
                // Allowed only when another term of the context stands for the same IRI.
                if ctx.term(&compacted).is_none() || ctx.expand(&compacted) != ctx.expand(name) {
                    report.0.push(format!(
                        "[{}] term '{name}' ({iri}) compacts to {compacted:?}",
                        case.label
                    ));
                }
            }
            if !probes.iter().any(|p| p.key == compacted) {
                probes.push(Name {
                    key: compacted,
                    subs: vec![],
                });
                expected.push(iri.clone());
            }
        }
        for ((p, iri), (r, _)) in probes
            .iter()
            .zip(&expected)
            .zip(reference_names(&case.context, &probes))
        {
            report.check(
                format!(
                    "[{}] json-ld expansion of our compact '{}'",
                    case.label, p.key
                ),
                iri,
                r.as_deref(),
            );
        }
        for (t, iri) in type_names(&case.entity).iter().zip(&input.types) {
            let compacted = ctx.compact(iri).into_owned();
            if ctx.term(t).is_some() && compacted != *t && ctx.expand(&compacted) != ctx.expand(t) {
                report.0.push(format!(
                    "[{}] type term '{t}' ({iri}) compacts to {compacted:?}",
                    case.label
                ));
            }
            let r = reference_type(&case.context, &compacted);
            report.check(
                format!(
                    "[{}] json-ld expansion of our compact type '{compacted}'",
                    case.label
                ),
                iri,
                r.first().map(String::as_str),
            );
        }

        // The whole entity as `render::entity` compacts it, expanded again by json-ld.
        let entity = Entity {
            id: input.id.clone().expect("id"),
            types: input.types.clone(),
            scope: input.scope.clone(),
            attrs: input.attrs.clone(),
            created_at: now(),
            modified_at: now(),
            expires_at: None,
        };
        let rendered = render::entity(&entity, &ctx, &RenderOptions::default());
        let mut doc = rendered.clone();
        doc.insert("@context".into(), case.context.clone());
        let doc = Value::Object(doc);
        let (whole_attrs, whole_types) = whole_document(&case.context, &Value::Object(rendered));
        let (orig_attrs, orig_types) = whole_document(&case.context, &case.entity);
        if whole_attrs != orig_attrs {
            report.0.push(format!(
                "[{}] rendered entity expands to other attribute/sub-attribute IRIs: {whole_attrs:?} vs {orig_attrs:?}",
                case.label
            ));
        }
        if whole_types != orig_types {
            report.0.push(format!(
                "[{}] rendered entity types: {whole_types:?} vs {orig_types:?}",
                case.label
            ));
        }
        // And by our own Reader, with the same context.
        let again = Reader::new(&ctx, now(), Nulls::Forbidden)
            .entity(&doc, true)
            .unwrap_or_else(|e| {
                panic!(
                    "[{}] our Reader rejects the rendered entity {doc}: {e}",
                    case.label
                )
            });
        if again.attrs != input.attrs || again.types != input.types {
            report.0.push(format!(
                "[{}] rendered entity reads back differently: {doc}",
                case.label
            ));
        }
    }
    report.assert_checked("compaction round trips", 150);
}

// ------------------------------------------------------------------------------------------------
// Every term of the core context v1.9.

/// The terms of the core context v1.9 that map to an IRI (not `id`/`type`, which alias keywords).
fn core_terms() -> Vec<String> {
    let doc: Value = serde_json::from_str(CORE_V1_9_DOC).expect("core context parses");
    let ctx = doc["@context"].as_object().expect("core @context object");
    ctx.iter()
        .filter(|(k, _)| !k.starts_with('@'))
        .filter(|(_, v)| {
            let id = v
                .as_str()
                .or_else(|| v.get("@id").and_then(Value::as_str))
                .unwrap_or("");
            !id.starts_with('@')
        })
        .map(|(k, _)| k.clone())
        .collect()
}

fn check_core_terms(user: &Value, label: &str, report: &mut Report) {
    let ctx = active(user);
    let terms = core_terms();
    assert!(
        terms.len() > 200,
        "core context v1.9 has {} IRI terms",
        terms.len()
    );
    let probes: Vec<Name> = terms
        .iter()
        .map(|t| Name {
            key: t.clone(),
            subs: vec![],
        })
        .collect();
    let reference = reference_names(user, &probes);
    let mut compacted: Vec<Name> = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    for (t, (r, _)) in terms.iter().zip(&reference) {
        let ours = ctx.expand(t).into_owned();
        report.check(format!("[{label}] core term '{t}'"), &ours, r.as_deref());
        let c = ctx.compact(&ours).into_owned();
        report.check(format!("[{label}] compact(expand('{t}'))"), &c, Some(t));
        compacted.push(Name {
            key: c,
            subs: vec![],
        });
        expected.push(ours);
    }
    for ((c, iri), (r, _)) in compacted
        .iter()
        .zip(&expected)
        .zip(reference_names(user, &compacted))
    {
        report.check(
            format!("[{label}] json-ld expansion of our compact '{}'", c.key),
            iri,
            r.as_deref(),
        );
    }
}

#[test]
fn every_core_context_term_expands_and_compacts_like_json_ld() {
    let mut report = Report::default();
    check_core_terms(&json!(CORE_CONTEXT_V1_9), "core alone", &mut report);
    // ContextLoader::core() is what a request without @context gets: same answers.
    let core = ours().core();
    let active_core = active(&json!(CORE_CONTEXT_V1_9));
    for t in core_terms() {
        let via_active = active_core.expand(&t).into_owned();
        report.check(
            format!("[ContextLoader::core] core term '{t}'"),
            &core.expand(&t),
            Some(via_active.as_str()),
        );
    }
    report.assert_checked("core context v1.9 terms", 800);
}

#[test]
fn core_context_terms_win_over_user_contexts() {
    // The core context comes last and is protected: whatever the user context defines, core terms
    // keep their core IRIs (Smart Data Models contexts redefine many of them, some differently).
    let mut report = Report::default();
    check_core_terms(
        &json!([SDM_WEATHER, SDM_DEVICE]),
        "SDM Weather + Device",
        &mut report,
    );
    check_core_terms(
        &json!({"@vocab": "https://vocab.twinlink.test/", "value": "https://mine.twinlink.test/value", "location": "https://mine.twinlink.test/where"}),
        "inline redefinitions",
        &mut report,
    );
    report.assert_checked("core terms behind user contexts", 1200);
}

// ------------------------------------------------------------------------------------------------
// Edge cases of term definitions: one test per rule, so that each disagreement stands alone.

fn compare_names(user: &Value, keys: &[&str], title: &str) {
    let ctx = active(user);
    let names: Vec<Name> = keys
        .iter()
        .map(|k| Name {
            key: (*k).into(),
            subs: vec![],
        })
        .collect();
    let mut report = Report::default();
    for (k, (r, _)) in keys.iter().zip(reference_names(user, &names)) {
        let ours = Reader::new(&ctx, now(), Nulls::Forbidden)
            .name(k)
            .expect("valid name");
        report.check(format!("{user} '{k}'"), &ours, r.as_deref());
    }
    report.assert_empty(title);
}

#[test]
fn compact_iris_with_prefixes_ending_in_a_gen_delim() {
    compare_names(
        &json!({"ex": "https://example.org/ns#", "sl": "https://example.org/path/", "c": "urn:example:", "qq": "https://example.org/q?"}),
        &[
            "ex:a",
            "sl:b",
            "c:d",
            "qq:e",
            "sl:deeper/path",
            "undefined:x",
            "http://x.example/y",
            "urn:ngsi-ld:thing",
        ],
        "prefixes ending in a gen-delim",
    );
}

#[test]
fn compact_iris_whose_prefix_was_defined_by_an_earlier_context() {
    compare_names(
        &json!([{"ex": "https://example.org/ns#"}, {"temperature": "ex:temperature"}, {"ex": "https://example.org/other#"}]),
        &["temperature", "ex:temperature"],
        "prefix redefined after use",
    );
}

#[test]
fn compact_iri_prefix_not_ending_in_a_gen_delim() {
    // JSON-LD 1.1 (IRI Expansion 6.4, Create Term Definition 14.2.5): only a term whose prefix flag
    // is true expands `term:suffix`; a simple term gets the flag only when its IRI ends in one of
    // `:/?#[]@`. `ex:temperature` therefore stays the IRI `ex:temperature` for json-ld.
    compare_names(
        &json!({"ex": "https://example.org/ns", "temperature": "ex:temperature"}),
        &["ex:humidity", "temperature"],
        "prefix without gen-delim",
    );
}

#[test]
fn compact_iri_whose_prefix_is_a_core_term() {
    // Same rule as above, met without any user context: the core context's terms map to IRIs such
    // as https://uri.etsi.org/ngsi-ld/q that end in no gen-delim, so they are not prefixes; a name
    // like `q:e` or `data:x` is an absolute IRI for json-ld. A user context cannot change this:
    // the core context comes last and its `q` wins over a user's `q` prefix.
    compare_names(
        &json!(CORE_CONTEXT_V1_9),
        &["q:e", "data:x", "uri:y", "status:z"],
        "core terms as prefixes",
    );
    compare_names(
        &json!({"q": "https://example.org/q?"}),
        &["q:e"],
        "user prefix shadowed by a core term",
    );
}

#[test]
#[ignore = "reference rejects: json-ld 0.21 fails [copy of core v1.9 under another URL, core v1.9] with ProtectedTermRedefinition (ngsildproof's scoped context keeps its document's base URL); we accept it"]
fn core_copy_under_another_url_followed_by_core_v1_9() {
    // Clients commonly send the core context under its version-less URL; a processor that fetches
    // that URL gets the same document as v1.9, under another base URL. The broker appends v1.9.
    compare_names(
        &json!(CORE_COPY_URL),
        &["location", "temperature"],
        "core copy then core v1.9",
    );
}

#[test]
fn compact_iri_prefix_from_an_expanded_term_definition() {
    compare_names(
        &json!({"schema": {"@id": "https://schema.org/"}, "owner": {"@id": "schema:owner", "@type": "@id"}}),
        &["schema:name", "owner"],
        "prefix from an expanded term definition",
    );
}

#[test]
fn compact_iri_prefix_with_explicit_prefix_flag() {
    compare_names(
        &json!({"ex": {"@id": "https://example.org/ns", "@prefix": true}, "schema": {"@id": "https://schema.org/", "@prefix": true}}),
        &["ex:humidity", "schema:name"],
        "explicit @prefix: true",
    );
}

#[test]
#[ignore = "deliberate difference: JSON-LD 1.1 drops keys whose term is mapped to null; twinlink never drops a client's attribute silently and falls back to @vocab"]
fn term_defined_as_null() {
    compare_names(
        &json!([{"legacy": "https://old.twinlink.test/legacy"}, {"legacy": null, "gone": {"@id": null}}]),
        &["legacy", "gone"],
        "null term definitions",
    );
}

#[test]
fn user_vocab_and_context_reset() {
    // A user @vocab is replaced by the core context's; a null entry clears what came before it.
    compare_names(
        &json!({"@vocab": "https://vocab.twinlink.test/"}),
        &["anything", "Other"],
        "user @vocab",
    );
    compare_names(
        &json!([{"temperature": "https://first.twinlink.test/temperature"}, null, {"humidity": "https://second.twinlink.test/humidity"}]),
        &["temperature", "humidity"],
        "null context entry",
    );
}

#[test]
fn two_names_for_one_iri_in_one_entity() {
    // Not a term-expansion difference (both sides agree on the IRI) but what follows from it:
    // `attrs` is keyed by IRI, so the second attribute replaces the first without an error.
    let user =
        json!({"capacity": "https://tanks.twinlink.test/capacity", "volume": {"@id": "capacity"}});
    let entity = json!({
        "id": "urn:ngsi-ld:Tank:t2",
        "type": "Tank",
        "capacity": {"type": "Property", "value": 1000},
        "volume": {"type": "Property", "value": 1200}
    });
    let mut doc = entity.as_object().expect("object").clone();
    doc.insert("@context".into(), with_core(&user));
    let node = reference().expand_node(&Value::Object(doc));
    let values = node["https://tanks.twinlink.test/capacity"]
        .as_array()
        .expect("json-ld keeps the IRI");
    assert_eq!(values.len(), 2, "json-ld keeps both values: {values:?}");
    let ctx = active(&user);
    match Reader::new(&ctx, now(), Nulls::Forbidden).entity(&entity, true) {
        Err(_) => {} // rejecting the ambiguity would be fine too
        Ok(input) => {
            let ours = &input.attrs["https://tanks.twinlink.test/capacity"];
            let kept: Vec<&Value> = ours.iter().map(|a| &a.value).collect();
            assert_eq!(
                kept.len(),
                2,
                "our Reader keeps {kept:?} of the values 1000 and 1200"
            );
        }
    }
}

#[test]
#[ignore = "reference rejects: json-ld 0.21 refuses the SDM IssueTracking context (terms open311:metadata / open311:type map to IRIs other than themselves: invalid IRI mapping); we accept it"]
fn sdm_issue_tracking_context_with_colon_terms() {
    compare_names(
        &json!(SDM_ISSUE_TRACKING),
        &["open311:type", "status", "description"],
        "SDM IssueTracking",
    );
}
