//! The Smart Data Models rules bundled in the binary (`smart-data-models/rules.json.gz`,
//! generated from the pinned `pysmartdatamodels` package): what each model requires of an
//! entity and of each of its attributes. Decompressed and parsed once, on first use.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::LazyLock;

/// The generated rules, gzipped (3 MB of JSON, 140 kB packed).
const BUNDLED: &[u8] = include_bytes!("../../../smart-data-models/rules.json.gz");

/// The rules of one data model, as generated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelRules {
    /// The model's version in the package (`0.1.4`), named in every finding.
    pub version: String,
    /// The expanded IRI of the entity type the model describes.
    #[serde(rename = "type")]
    pub type_iri: String,
    /// Expanded IRIs of the attributes an entity of the model must have (`id` and `type` aside).
    pub required: Vec<String>,
    /// The rules of the model's top-level attributes, by expanded IRI (in IRI order, as
    /// generated; hashed, since every checked attribute is looked up here).
    pub attributes: crate::model::NameMap<AttrRule>,
}

/// What a model says of one attribute; a member the package does not give is not checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttrRule {
    /// The attribute's name in the model (its term in the model's @context).
    pub term: String,
    /// The NGSI-LD kind: Property, Relationship or GeoProperty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The JSON Schema type (or types) of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonTypes>,
    /// The JSON Schema format of a string value (date-time, date, time, uri, email, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The values allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#enum: Option<Vec<Value>>,
    /// The unit as the model describes it, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// The UN/CEFACT codes a `unitCode` may carry for these units (`smart-data-models/units.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_codes: Option<Vec<String>>,
}

/// A JSON Schema `type`: one name, or a list (two records of the package give one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum JsonTypes {
    /// One type.
    One(String),
    /// Any of these.
    Any(Vec<String>),
}

impl JsonTypes {
    /// The type names.
    pub fn names(&self) -> &[String] {
        match self {
            JsonTypes::One(t) => std::slice::from_ref(t),
            JsonTypes::Any(ts) => ts,
        }
    }
}

/// Every bundled model by `<subject>/<model>`; empty (and logged) should the bundle not parse,
/// which the unit tests rule out.
static MODELS: LazyLock<BTreeMap<String, ModelRules>> = LazyLock::new(|| {
    let mut text = Vec::new();
    let parsed = flate2::read::GzDecoder::new(BUNDLED)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&text).map_err(|e| e.to_string()));
    parsed.unwrap_or_else(|e| {
        tracing::error!("the bundled Smart Data Models rules do not parse: {e}");
        BTreeMap::new()
    })
});

/// The bundled models, by `<subject>/<model>`, in name order.
pub fn bundled() -> &'static BTreeMap<String, ModelRules> {
    &MODELS
}

/// One bundled model by `<subject>/<model>`, or by its model name alone when a single subject
/// has a model of that name.
pub fn find(name: &str) -> Result<(&'static str, &'static ModelRules), String> {
    if let Some((key, rules)) = MODELS.get_key_value(name) {
        return Ok((key.as_str(), rules));
    }
    let suffix = format!("/{name}");
    let mut hits = MODELS.iter().filter(|(k, _)| k.ends_with(&suffix));
    match (hits.next(), hits.next()) {
        (Some((key, rules)), None) => Ok((key.as_str(), rules)),
        (Some((a, _)), Some((b, _))) => Err(format!(
            "the data model name '{name}' is ambiguous ({a}, {b}, ...): name it as <subject>/<model>"
        )),
        (None, _) => Err(format!(
            "there is no bundled data model '{name}' (see `twinlink models`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_parses_with_every_model_of_the_package() {
        assert_eq!(bundled().len(), 1102);
    }

    #[test]
    fn air_quality_observed_has_the_rules_of_its_model() {
        let (key, aqo) = find("AirQualityObserved").unwrap();
        assert_eq!(key, "dataModel.Environment/AirQualityObserved");
        assert_eq!(aqo.version, "0.1.4");
        assert_eq!(
            aqo.type_iri,
            "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved"
        );
        assert_eq!(
            aqo.required,
            [
                "https://smartdatamodels.org/dateObserved",
                "https://uri.etsi.org/ngsi-ld/location"
            ]
        );
        let level =
            &aqo.attributes["https://smartdatamodels.org/dataModel.Environment/typeofLocation"];
        assert_eq!(level.kind.as_deref(), Some("Property"));
        assert_eq!(
            level.r#enum,
            Some(vec![Value::from("indoor"), Value::from("outdoor")])
        );
    }

    #[test]
    fn ambiguous_and_unknown_names_are_refused() {
        assert!(find("NoSuchModel").unwrap_err().contains("no bundled"));
        let shared = bundled()
            .keys()
            .map(|k| k.rsplit('/').next().unwrap_or(k))
            .fold(BTreeMap::<&str, usize>::new(), |mut m, n| {
                *m.entry(n).or_default() += 1;
                m
            })
            .into_iter()
            .find(|(_, n)| *n > 1)
            .map(|(name, _)| name.to_string())
            .unwrap();
        assert!(find(&shared).unwrap_err().contains("ambiguous"));
    }
}
