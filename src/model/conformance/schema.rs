//! Users' own JSON Schemas for a bound model: the entity, in the keyValues form Smart Data
//! Models schemas describe (terms of the model for its attributes and type), must satisfy the
//! schema. Checked with the `jsonschema` crate; a schema must be self-contained (twinlink does
//! not fetch `$ref`s).

use super::rules::ModelRules;
use super::{Finding, Rule};
use crate::model::Entity;
use serde_json::{Map, Value};
use std::path::Path;

/// A compiled user schema and the file it came from (named in findings).
pub struct UserSchema {
    file: String,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for UserSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserSchema({})", self.file)
    }
}

impl UserSchema {
    /// Reads and compiles a schema file; the error says why it cannot be used.
    pub fn load(path: &Path) -> Result<UserSchema, String> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("schema {file}: {e}"))?;
        let schema: Value =
            serde_json::from_str(&text).map_err(|e| format!("schema {file} is not JSON: {e}"))?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("schema {file} is not a usable JSON Schema: {e}"))?;
        Ok(UserSchema { file, validator })
    }

    /// The findings of the schema on an entity of the model `name`.
    pub fn check(&self, name: &str, model: &ModelRules, entity: &Entity, out: &mut Vec<Finding>) {
        let doc = key_values(name, model, entity);
        out.extend(self.validator.iter_errors(&doc).map(|e| {
            let path = e.instance_path().to_string();
            Finding {
                rule: Rule::Schema,
                attribute: path.trim_start_matches('/').to_string(),
                model: format!("schema {}", self.file),
                version: String::new(),
                detail: e.to_string(),
            }
        }));
    }
}

/// The entity in keyValues form with the model's terms: `id`, `type` (the model's name when the
/// entity has the model's type), and every attribute's default instance by its term (its
/// expanded name when the model has no rule for it).
fn key_values(name: &str, model: &ModelRules, entity: &Entity) -> Value {
    let mut doc = Map::new();
    doc.insert("id".into(), Value::from(entity.id.as_str()));
    let type_name = name.rsplit('/').next().unwrap_or(name);
    let types: Vec<Value> = entity
        .types
        .iter()
        .map(|t| {
            Value::from(if *t == model.type_iri {
                type_name
            } else {
                t.as_str()
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
            .attributes
            .get(iri)
            .map_or(iri.as_str(), |r| r.term.as_str());
        // The kind's value member (value, object, languageMap, ...), as keyValues shows it.
        doc.insert(term.to_string(), a.value.clone());
    }
    Value::Object(doc)
}
