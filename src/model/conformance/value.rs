//! The checks of one attribute instance against the rule a model gives for the attribute: its
//! NGSI-LD kind, the JSON type, format and allowed values of its value, and its unit code.

use super::rules::AttrRule;
use super::Rule;
use crate::model::{AttrKind, Attribute};
use serde_json::Value;

/// The first rule the instance breaks, with what is wrong, or `None`.
pub fn check(rule: &AttrRule, a: &Attribute) -> Option<(Rule, String)> {
    if let Some(expected) = rule.kind.as_deref() {
        if !kind_fits(expected, a.kind) {
            return Some((
                Rule::Kind,
                format!("it must be a {expected}, not a {}", a.kind.name()),
            ));
        }
    }
    if let (Some(codes), Some(code)) = (&rule.unit_codes, &a.unit_code) {
        if !codes.contains(code) {
            return Some((
                Rule::Unit,
                format!(
                    "its unitCode '{code}' is not a code of the model's unit '{}' ({})",
                    rule.units.as_deref().unwrap_or_default(),
                    codes.join(", ")
                ),
            ));
        }
    }
    // The value rules describe a plain value: Property subtypes and links carry other members.
    if a.kind != AttrKind::Property {
        return None;
    }
    let value = plain(&a.value);
    if let Some(types) = &rule.json {
        if !types.names().iter().any(|t| json_type_fits(t, value)) {
            return Some((
                Rule::Type,
                format!(
                    "its value must be of JSON type {}, not {}",
                    types.names().join(" or "),
                    json_type_of(value)
                ),
            ));
        }
    }
    if let Some(format) = rule.format.as_deref() {
        if let Some(bad) = first_bad(value, |v| format_fits(format, v)) {
            return Some((
                Rule::Format,
                format!("its value {bad} is not in the format {format}"),
            ));
        }
    }
    if let Some(allowed) = &rule.r#enum {
        if let Some(bad) = first_bad(value, |v| allowed.contains(v)) {
            let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Some((
                Rule::Enum,
                format!("its value {bad} is not one of {}", listed.join(", ")),
            ));
        }
    }
    None
}

/// The value (or, for an array, the first element) that `ok` refuses.
fn first_bad(value: &Value, ok: impl Fn(&Value) -> bool) -> Option<&Value> {
    match value {
        Value::Array(items) => items.iter().find(|v| !ok(v)),
        v => (!ok(v)).then_some(v),
    }
}

/// Whether an attribute of `kind` is what the model's `typeNGSI` names: the Property subtypes
/// count as Property and a ListRelationship as Relationship, so that NGSI-LD 1.8 forms of the
/// same data pass.
fn kind_fits(expected: &str, kind: AttrKind) -> bool {
    use AttrKind::*;
    match expected {
        "Property" => matches!(
            kind,
            Property | LanguageProperty | VocabProperty | ListProperty | JsonProperty
        ),
        "Relationship" => matches!(kind, Relationship | ListRelationship),
        "GeoProperty" => kind == GeoProperty,
        _ => true,
    }
}

/// The value a typed JSON-LD literal (`{"@type": "DateTime", "@value": "..."}`, as Smart Data
/// Models examples write dates) stands for; any other value as it is.
fn plain(value: &Value) -> &Value {
    match value {
        Value::Object(o) if o.contains_key("@value") => &o["@value"],
        v => v,
    }
}

fn json_type_fits(name: &str, v: &Value) -> bool {
    match name {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn json_type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value is in a JSON Schema format; formats not listed here are not checked, and
/// a value that is not a string is the type rule's business.
fn format_fits(format: &str, v: &Value) -> bool {
    let Some(s) = v.as_str() else {
        return true;
    };
    match format {
        "date-time" => crate::model::validate::date_time("", s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "time" => ["%H:%M:%S%.f", "%H:%M:%S%.f%:z", "%H:%M:%SZ", "%H:%M:%S%.fZ"]
            .iter()
            .any(|f| chrono::NaiveTime::parse_from_str(s, f).is_ok()),
        "uri" => crate::model::validate::uri("", s).is_ok(),
        "email" | "idn-email" => s
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.')),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conformance::rules::find;
    use serde_json::json;

    fn rule(model: &str, iri: &str) -> AttrRule {
        find(model).unwrap().1.attributes[iri].clone()
    }

    fn property(value: Value) -> Attribute {
        Attribute::bare(AttrKind::Property, value, chrono::Utc::now())
    }

    const AQO: &str = "dataModel.Environment/AirQualityObserved";
    const SDM_ENV: &str = "https://smartdatamodels.org/dataModel.Environment/";

    #[test]
    fn a_number_attribute_takes_numbers_only() {
        let no2 = rule(AQO, &format!("{SDM_ENV}no2"));
        assert_eq!(check(&no2, &property(json!(22.5))), None);
        let (r, why) = check(&no2, &property(json!("22.5"))).unwrap();
        assert_eq!(r, Rule::Type);
        assert_eq!(why, "its value must be of JSON type number, not string");
    }

    #[test]
    fn the_kind_of_the_model_is_required() {
        let no2 = rule(AQO, &format!("{SDM_ENV}no2"));
        let mut rel = property(json!("urn:a"));
        rel.kind = AttrKind::Relationship;
        assert_eq!(check(&no2, &rel).unwrap().0, Rule::Kind);
        let device = rule(AQO, &format!("{SDM_ENV}refDevice"));
        assert_eq!(check(&device, &rel), None);
        assert_eq!(
            check(&device, &property(json!("urn:a"))).unwrap().0,
            Rule::Kind
        );
    }

    #[test]
    fn enums_and_formats_are_checked_on_plain_and_typed_values() {
        let place = rule(AQO, &format!("{SDM_ENV}typeofLocation"));
        assert_eq!(check(&place, &property(json!("outdoor"))), None);
        let (r, why) = check(&place, &property(json!("outside"))).unwrap();
        assert_eq!(
            (r, why.as_str()),
            (
                Rule::Enum,
                "its value \"outside\" is not one of \"indoor\", \"outdoor\""
            )
        );
        let observed = rule(AQO, "https://smartdatamodels.org/dateObserved");
        let typed = json!({"@type": "DateTime", "@value": "2016-03-15T11:00:00Z"});
        assert_eq!(check(&observed, &property(typed)), None);
        assert_eq!(
            check(&observed, &property(json!("yesterday"))).unwrap().0,
            Rule::Format
        );
    }

    #[test]
    fn unit_codes_are_checked_where_the_model_names_units() {
        let pressure = rule(
            "dataModel.Weather/WeatherObserved",
            "https://smartdatamodels.org/dataModel.Weather/atmosphericPressure",
        );
        let mut a = property(json!(1013.2));
        a.unit_code = Some("A97".into());
        assert_eq!(check(&pressure, &a), None);
        a.unit_code = Some("KGM".into());
        assert_eq!(check(&pressure, &a).unwrap().0, Rule::Unit);
    }
}
