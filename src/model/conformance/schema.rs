//! Users' own JSON Schemas for an entity type, with or without a bundled model: the entity, in
//! the keyValues form Smart Data Models schemas describe (terms of the model for its attributes
//! and type, expanded names where there is no model), must satisfy the schema. Checked with the
//! `jsonschema` crate, built without its remote resolvers: a schema must be self-contained, a
//! `$ref` to another document makes it unusable (twinlink fetches nothing for it).

use super::rules::ModelRules;
use super::{Finding, Rule};
use crate::model::Entity;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The largest schema accepted, serialized: it is compiled on every instance and kept in memory.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// Where a binding's schema comes from: a file named in the configuration file, or the schema
/// itself (in the configuration file or a binding set through the admin API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// A JSON file, read at start.
    File(PathBuf),
    /// The schema, a JSON object.
    Inline(Map<String, Value>),
}

/// A compiled user schema and where it came from (named in findings).
pub struct UserSchema {
    origin: String,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for UserSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserSchema({})", self.origin)
    }
}

impl UserSchema {
    /// Reads (for a file) and compiles a schema; the error says why it cannot be used. `owner`
    /// names an inline schema in findings (the binding that holds it).
    pub fn load(source: &Source, owner: &str) -> Result<UserSchema, String> {
        let (origin, schema) = match source {
            Source::File(path) => {
                let file = path.display().to_string();
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("schema {file}: {e}"))?;
                let schema: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("schema {file} is not JSON: {e}"))?;
                (file, schema)
            }
            Source::Inline(schema) => (owner.to_string(), Value::Object(schema.clone())),
        };
        let size = schema.to_string().len();
        if size > MAX_SCHEMA_BYTES {
            return Err(format!(
                "schema {origin} has {size} bytes, more than the {MAX_SCHEMA_BYTES} accepted"
            ));
        }
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("schema {origin} is not a usable JSON Schema: {e}"))?;
        Ok(UserSchema { origin, validator })
    }

    /// The findings of the schema on an entity, of the bundled model `model` (its name and
    /// rules) when the binding has one.
    pub fn check(
        &self,
        model: Option<(&str, &ModelRules)>,
        entity: &Entity,
        out: &mut Vec<Finding>,
    ) {
        let doc = key_values(model, entity);
        out.extend(self.validator.iter_errors(&doc).map(|e| {
            let path = e.instance_path().to_string();
            Finding {
                rule: Rule::Schema,
                attribute: path.trim_start_matches('/').to_string(),
                model: format!("schema {}", self.origin),
                version: String::new(),
                detail: e.to_string(),
            }
        }));
    }
}

/// The entity in keyValues form: `id`, `type` (the model's name when the entity has the model's
/// type), and every attribute's default instance by its term in the model (its expanded name
/// when the model has no rule for it, or there is no model).
fn key_values(model: Option<(&str, &ModelRules)>, entity: &Entity) -> Value {
    let mut doc = Map::new();
    doc.insert("id".into(), Value::from(entity.id.as_str()));
    let types: Vec<Value> = entity
        .types
        .iter()
        .map(|t| {
            Value::from(match model {
                Some((name, rules)) if *t == rules.type_iri => {
                    name.rsplit('/').next().unwrap_or(name)
                }
                _ => t.as_str(),
            })
        })
        .collect();
    doc.insert(
        "type".into(),
        match <[Value; 1]>::try_from(types) {
            Ok([one]) => one,
            Err(many) => Value::Array(many),
        },
    );
    for (iri, instances) in &entity.attrs {
        let Some(a) = instances
            .iter()
            .find(|a| a.dataset_id.is_none())
            .or(instances.first())
        else {
            continue;
        };
        let term = model
            .and_then(|(_, rules)| rules.attributes.get(iri))
            .map_or(iri.as_str(), |r| r.term.as_str());
        // The kind's value member (value, object, languageMap, ...), as keyValues shows it.
        doc.insert(term.to_string(), a.value.clone());
    }
    Value::Object(doc)
}
