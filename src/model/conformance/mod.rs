//! Checks of entities against the data models they claim to follow (Smart Data Models rules
//! bundled with the binary, users' JSON Schemas) and against the twin's space and time (its
//! territory, its clock, the UN/CEFACT unit codes). Each check turns an entity into
//! [`Finding`]s; what a finding does (refuse the write or be recorded) is the services' choice
//! ([`Mode`]).

pub mod rules;
pub mod schema;
pub mod spacetime;
pub mod value;

use crate::model::{Attribute, Entity};
use rules::ModelRules;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What a finding does to the write that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The write fails with 400 BadRequestData; nothing is written.
    Reject,
    /// The write goes through; the findings are recorded on the entity and counted.
    Flag,
}

/// One `[[data-models]]` table of the configuration, or one binding set through the admin API:
/// the entities of a tenant (and of a type) that are checked, against what, and what a finding
/// does. A binding checks at least one of: a bundled model, a user's JSON Schema, a territory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Binding {
    /// The tenant ("" the default one, "*" every tenant).
    #[serde(default)]
    pub tenant: String,
    /// The bundled model, as `<subject>/<model>` or by its name alone when unambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The expanded entity type checked; the model's own type when not given (every type for a
    /// binding of a territory alone).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_iri: Option<String>,
    /// Refuse or flag what breaks the rules.
    pub mode: Mode,
    /// A JSON Schema the entity (in keyValues form) must also satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<schema::Source>,
    /// Space-time checks of the entities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub territory: Option<spacetime::Area>,
}

/// The rule a finding is about, named in messages, in the recorded findings and in the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A required attribute is missing.
    Required,
    /// The attribute is of another NGSI-LD kind than the model's.
    Kind,
    /// The value is of another JSON type than the model's.
    Type,
    /// A string value is not in the model's format.
    Format,
    /// The value is not one the model allows.
    Enum,
    /// The unitCode is not a code of the model's unit.
    Unit,
    /// The user's JSON Schema refuses the entity.
    Schema,
    /// A GeoProperty lies outside the twin's territory.
    Territory,
    /// An observedAt lies further in the future than the clock skew allows.
    ObservedAt,
    /// A unitCode is not a UN/CEFACT Recommendation 20 code.
    UnitCode,
}

impl Rule {
    /// The rule's name in messages and records.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Required => "required",
            Rule::Kind => "kind",
            Rule::Type => "type",
            Rule::Format => "format",
            Rule::Enum => "enum",
            Rule::Unit => "unit",
            Rule::Schema => "schema",
            Rule::Territory => "territory",
            Rule::ObservedAt => "observedAt",
            Rule::UnitCode => "unitCode",
        }
    }
}

/// One rule an entity breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// The attribute, by its name in the model (the term a client of the model's @context
    /// writes), or its expanded IRI when the rule has no model.
    pub attribute: String,
    /// Where the rule comes from: the model (`<subject>/<model>`), or the check's name
    /// (`schema`, `territory`).
    pub model: String,
    /// The model's version; empty for a check without one.
    pub version: String,
    /// What is wrong.
    pub detail: String,
}

impl Finding {
    /// The sentence a ProblemDetails `detail` carries for it.
    pub fn message(&self) -> String {
        let source = match self.version.as_str() {
            "" => format!("the {} check", self.model),
            v => format!("data model {} {v}", self.model),
        };
        format!(
            "attribute '{}' breaks the '{}' rule of {source}: {}",
            self.attribute,
            self.rule.name(),
            self.detail
        )
    }

    /// The finding as recorded on a flagged entity.
    pub fn record(&self) -> Value {
        json!({"rule": self.rule.name(), "attribute": self.attribute, "model": self.model,
               "version": self.version, "detail": self.detail})
    }
}

/// Which attributes of an entity a check looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// All of them (a new entity, or a flagged one whose record describes it whole).
    Whole,
    /// Those a write changed from this stored state, so that a write is refused only for what it
    /// brings, never for what an entity held before the rules were turned on.
    ChangedSince(&'a Entity),
}

impl Scope<'_> {
    /// Whether the check looks at the attribute `iri`, whose instances are now `instances`
    /// (`None`: the entity has none).
    pub fn covers(&self, iri: &str, instances: Option<&[Attribute]>) -> bool {
        match self {
            Scope::Whole => true,
            Scope::ChangedSince(before) => before.attrs.get(iri).map(Vec::as_slice) != instances,
        }
    }
}

/// The findings of a model's rules on an entity: required attributes missing (within `scope`:
/// missing now and present before) and attribute instances breaking their attribute's rule.
pub fn check_model(
    name: &str,
    model: &ModelRules,
    entity: &Entity,
    scope: Scope,
    out: &mut Vec<Finding>,
) {
    let term = |iri: &str| {
        model
            .attributes
            .get(iri)
            .map_or(iri.to_string(), |r| r.term.clone())
    };
    for iri in &model.required {
        if !entity.attrs.contains_key(iri) && scope.covers(iri, None) {
            out.push(Finding {
                rule: Rule::Required,
                attribute: term(iri),
                model: name.to_string(),
                version: model.version.clone(),
                detail: "the model requires it and the entity has none".into(),
            });
        }
    }
    for (iri, instances) in &entity.attrs {
        if scope.covers(iri, Some(instances)) {
            out.extend(check_instances(name, model, iri, instances));
        }
    }
}

/// The finding of the first of an attribute's instances that breaks the attribute's rule in a
/// model (none when the model has no rule for it): for the instances of an entity, and for the
/// instances temporal provision records in the history.
pub fn check_instances(
    name: &str,
    model: &ModelRules,
    iri: &str,
    instances: &[Attribute],
) -> Option<Finding> {
    let rule = model.attributes.get(iri)?;
    let (broken, detail) = instances.iter().find_map(|a| value::check(rule, a))?;
    Some(Finding {
        rule: broken,
        attribute: rule.term.clone(),
        model: name.to_string(),
        version: model.version.clone(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttrKind;
    use serde_json::json;

    const AQO: &str = "dataModel.Environment/AirQualityObserved";

    fn entity(attrs: &[(&str, Attribute)]) -> Entity {
        let now = chrono::Utc::now();
        Entity {
            id: "urn:ngsi-ld:AirQualityObserved:1".into(),
            types: vec![rules::find(AQO).unwrap().1.type_iri.clone()],
            scope: None,
            attrs: attrs
                .iter()
                .map(|(n, a)| (n.to_string(), vec![a.clone()]))
                .collect(),
            created_at: now,
            modified_at: now,
            expires_at: None,
        }
    }

    fn p(v: Value) -> Attribute {
        Attribute::bare(AttrKind::Property, v, chrono::Utc::now())
    }

    fn findings(e: &Entity, scope: Scope) -> Vec<Finding> {
        let mut out = Vec::new();
        check_model(AQO, rules::find(AQO).unwrap().1, e, scope, &mut out);
        out
    }

    const OBSERVED: &str = "https://smartdatamodels.org/dateObserved";
    const NO2: &str = "https://smartdatamodels.org/dataModel.Environment/no2";

    #[test]
    fn a_missing_required_attribute_is_named_with_the_model_and_its_version() {
        let mut geo = p(json!({"type": "Point", "coordinates": [1.0, 2.0]}));
        geo.kind = AttrKind::GeoProperty;
        let e = entity(&[("https://uri.etsi.org/ngsi-ld/location", geo)]);
        let found = findings(&e, Scope::Whole);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].message(),
            "attribute 'dateObserved' breaks the 'required' rule of data model \
             dataModel.Environment/AirQualityObserved 0.1.4: the model requires it and the entity has none"
        );
    }

    #[test]
    fn a_change_is_judged_on_what_it_changes() {
        let before = entity(&[(NO2, p(json!("high")))]);
        let mut after = before.clone();
        after
            .attrs
            .insert(OBSERVED.into(), vec![p(json!("2024-01-01T00:00:00Z"))]);
        // The bad no2 and the missing location were there before: not this write's doing.
        assert_eq!(findings(&after, Scope::ChangedSince(&before)), vec![]);
        let whole: Vec<Rule> = findings(&after, Scope::Whole)
            .iter()
            .map(|f| f.rule)
            .collect();
        assert_eq!(whole, [Rule::Required, Rule::Type]);
        // Dropping a required attribute is this write's doing.
        let mut dropped = after.clone();
        dropped.attrs.shift_remove(OBSERVED);
        let found = findings(&dropped, Scope::ChangedSince(&after));
        assert_eq!(found[0].attribute, "dateObserved");
    }
}
