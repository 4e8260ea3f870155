//! Version negotiation with `Prefer: ngsi-ld=<version>` (4.3.6.8): a client that prefers an
//! earlier version of the API gets entities with the attribute kinds introduced later reformatted
//! as the kinds that version knows (203 with `Preference-Applied` when anything changed, 200 with
//! `Preference-Applied` when nothing had to).

use actix_web::HttpRequest;
use serde_json::{Map, Value};

/// The API version a client prefers, as written and as (major, minor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferred {
    /// The version as the client wrote it (echoed in `Preference-Applied`).
    pub text: String,
    /// Major and minor version numbers.
    pub version: (u32, u32),
}

/// Reads `ngsi-ld=<major>.<minor>` from the `Prefer` headers; other preferences are not this
/// module's, and an unreadable version is ignored (a preference is never an error).
pub fn preferred(req: &HttpRequest) -> Option<Preferred> {
    req.headers()
        .get_all("Prefer")
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split([',', ';']))
        .find_map(|p| {
            let text = p
                .trim()
                .strip_prefix("ngsi-ld=")?
                .trim_matches('"')
                .to_string();
            let (major, minor) = text.split_once('.').unwrap_or((&text, "0"));
            let version = (major.parse().ok()?, minor.parse().ok()?);
            Some(Preferred { text, version })
        })
}

/// An attribute kind introduced after some version, and how to render it for earlier ones.
struct LaterKind {
    /// The kind (`type` member).
    kind: &'static str,
    /// The first version that has it.
    since: (u32, u32),
    /// The member holding its value.
    member: &'static str,
    /// The kind it becomes for earlier versions.
    old_kind: &'static str,
    /// That kind's value member.
    old_member: &'static str,
}

const LATER_KINDS: [LaterKind; 5] = [
    LaterKind {
        kind: "LanguageProperty",
        since: (1, 4),
        member: "languageMap",
        old_kind: "Property",
        old_member: "value",
    },
    LaterKind {
        kind: "VocabProperty",
        since: (1, 8),
        member: "vocab",
        old_kind: "Property",
        old_member: "value",
    },
    LaterKind {
        kind: "JsonProperty",
        since: (1, 8),
        member: "json",
        old_kind: "Property",
        old_member: "value",
    },
    LaterKind {
        kind: "ListProperty",
        since: (1, 8),
        member: "valueList",
        old_kind: "Property",
        old_member: "value",
    },
    LaterKind {
        kind: "ListRelationship",
        since: (1, 8),
        member: "objectList",
        old_kind: "Relationship",
        old_member: "object",
    },
];

/// Reformats a response body (an entity, or an array of entities) for `version`; whether anything
/// changed.
pub fn downgrade(body: &mut Value, version: (u32, u32)) -> bool {
    match body {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| downgrade(item, version) | changed),
        Value::Object(entity) => entity
            .iter_mut()
            .filter(|(k, _)| !matches!(k.as_str(), "id" | "type" | "@context" | "scope"))
            .fold(false, |changed, (_, v)| attribute(v, version) | changed),
        _ => false,
    }
}

/// Reformats one attribute (or its array of instances), with its sub-attributes and any linked
/// entity inlined in it.
fn attribute(value: &mut Value, version: (u32, u32)) -> bool {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| attribute(item, version) | changed),
        Value::Object(attr) => {
            let mut changed = reformat(attr, version);
            for (k, v) in attr.iter_mut() {
                changed |= match k.as_str() {
                    "entity" => downgrade(v, version),
                    "type" | "value" | "object" | "languageMap" | "vocab" | "json"
                    | "valueList" | "objectList" => false,
                    _ => attribute(v, version),
                };
            }
            changed
        }
        _ => false,
    }
}

fn reformat(attr: &mut Map<String, Value>, version: (u32, u32)) -> bool {
    let kind = attr.get("type").and_then(Value::as_str).unwrap_or("");
    let Some(later) = LATER_KINDS
        .iter()
        .find(|l| l.kind == kind && version < l.since)
    else {
        return false;
    };
    if let Some(v) = attr.remove(later.member) {
        attr.insert(later.old_member.into(), v);
    }
    attr.insert("type".into(), Value::String(later.old_kind.into()));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn later_kinds_become_the_kinds_an_earlier_version_knows() {
        let mut body = json!([{
            "id": "urn:x:1", "type": "Building",
            "category": {"type": "VocabProperty", "vocab": "commercial",
                         "note": {"type": "JsonProperty", "json": {"a": 1}}},
            "name": {"type": "Property", "value": "x"}
        }]);
        assert!(!downgrade(&mut body.clone(), (1, 9)));
        assert!(downgrade(&mut body, (1, 5)));
        assert_eq!(
            body[0]["category"],
            json!({"type": "Property", "value": "commercial",
                   "note": {"type": "Property", "value": {"a": 1}}})
        );
        assert_eq!(body[0]["name"], json!({"type": "Property", "value": "x"}));
    }
}
