//! Typed NGSI-LD: entities and their attributes in expanded form (full IRIs), the one shape every
//! store keeps and every operation works on. `parse` turns request JSON into it, `render` turns it
//! back into the representation a client asked for, `validate` holds the rules both share.

pub mod conformance;
pub mod expiry;
pub mod join;
pub mod parse;
pub mod proof;
pub mod render;
pub mod stored_time;
pub mod validate;

use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A map keyed by expanded attribute names, in insertion order. Names are hashed on every parse,
/// lookup and render, so it uses a fast (seeded) hasher rather than SipHash.
pub type NameMap<V> = IndexMap<String, V, foldhash::fast::RandomState>;

/// The expanded IRI under which the `scope` member is addressed as an attribute (updates, the
/// temporal API and history records name it so).
pub const SCOPE_IRI: &str = "https://uri.etsi.org/ngsi-ld/scope";

/// The NGSI-LD Null: in an update, a value member equal to this deletes what it names.
pub const NGSI_LD_NULL: &str = "urn:ngsi-ld:null";

/// The kinds of attribute of GS CIM 009 clause 4.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrKind {
    /// A value (`value`).
    Property,
    /// A link to another entity (`object`).
    Relationship,
    /// A GeoJSON geometry (`value`).
    GeoProperty,
    /// Strings by language (`languageMap`).
    LanguageProperty,
    /// Vocabulary terms (`vocab`).
    VocabProperty,
    /// An ordered list of values (`valueList`).
    ListProperty,
    /// An ordered list of entity links (`objectList`).
    ListRelationship,
    /// Opaque JSON (`json`).
    JsonProperty,
}

impl AttrKind {
    /// The kind's name as it appears in the `type` member.
    pub fn name(self) -> &'static str {
        match self {
            AttrKind::Property => "Property",
            AttrKind::Relationship => "Relationship",
            AttrKind::GeoProperty => "GeoProperty",
            AttrKind::LanguageProperty => "LanguageProperty",
            AttrKind::VocabProperty => "VocabProperty",
            AttrKind::ListProperty => "ListProperty",
            AttrKind::ListRelationship => "ListRelationship",
            AttrKind::JsonProperty => "JsonProperty",
        }
    }

    /// The kind named by a `type` member, if it is one.
    pub fn from_name(name: &str) -> Option<AttrKind> {
        Some(match name {
            "Property" => AttrKind::Property,
            "Relationship" => AttrKind::Relationship,
            "GeoProperty" => AttrKind::GeoProperty,
            "LanguageProperty" => AttrKind::LanguageProperty,
            "VocabProperty" => AttrKind::VocabProperty,
            "ListProperty" => AttrKind::ListProperty,
            "ListRelationship" => AttrKind::ListRelationship,
            "JsonProperty" => AttrKind::JsonProperty,
            _ => return None,
        })
    }

    /// The member that carries the kind's value.
    pub fn value_member(self) -> &'static str {
        match self {
            AttrKind::Property | AttrKind::GeoProperty => "value",
            AttrKind::Relationship => "object",
            AttrKind::LanguageProperty => "languageMap",
            AttrKind::VocabProperty => "vocab",
            AttrKind::ListProperty => "valueList",
            AttrKind::ListRelationship => "objectList",
            AttrKind::JsonProperty => "json",
        }
    }

    /// Every kind, with its value member, for recognising concise attributes.
    pub const ALL: [AttrKind; 8] = [
        AttrKind::Property,
        AttrKind::Relationship,
        AttrKind::GeoProperty,
        AttrKind::LanguageProperty,
        AttrKind::VocabProperty,
        AttrKind::ListProperty,
        AttrKind::ListRelationship,
        AttrKind::JsonProperty,
    ];
}

/// One attribute instance (or sub-attribute), in expanded form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    /// The attribute kind.
    pub kind: AttrKind,
    /// The content of the kind's value member (vocab terms expanded to IRIs).
    pub value: Value,
    /// The datasetId; `None` is the default instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    /// When the value was observed, as given (validated DateTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// UN/CEFACT unit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_code: Option<String>,
    /// Relationship target entity type(s), expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<Value>,
    /// When the attribute instance was created (system-generated).
    #[serde(deserialize_with = "stored_time::deserialize")]
    pub created_at: DateTime<Utc>,
    /// When it was last modified (system-generated).
    #[serde(deserialize_with = "stored_time::deserialize")]
    pub modified_at: DateTime<Utc>,
    /// When the storage of this instance (or sub-attribute) ends (4.22): from then on it is not
    /// served, and the reaper removes it from the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Sub-attributes by expanded name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sub: NameMap<Attribute>,
}

impl Attribute {
    /// An attribute of a kind and value and nothing else (no datasetId, observedAt, unit or
    /// sub-attributes), created and modified at `at`.
    pub fn bare(kind: AttrKind, value: Value, at: DateTime<Utc>) -> Attribute {
        Attribute {
            kind,
            value,
            dataset_id: None,
            observed_at: None,
            unit_code: None,
            object_type: None,
            created_at: at,
            modified_at: at,
            expires_at: None,
            sub: NameMap::default(),
        }
    }

    /// Whether this attribute is the NGSI-LD Null of its kind (a deletion in an update).
    pub fn is_null(&self) -> bool {
        match &self.value {
            Value::String(s) => s == NGSI_LD_NULL,
            Value::Array(items) => items.len() == 1 && items[0].as_str() == Some(NGSI_LD_NULL),
            Value::Object(map) if self.kind == AttrKind::LanguageProperty => {
                map.get("@none").and_then(Value::as_str) == Some(NGSI_LD_NULL)
            }
            _ => false,
        }
    }
}

/// An entity in expanded form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// The entity id (a URI).
    pub id: String,
    /// Entity types, as IRIs.
    pub types: Vec<String>,
    /// Scopes (clause 4.18), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Vec<String>>,
    /// Attributes by expanded name; each a list of instances with distinct datasetIds.
    pub attrs: NameMap<Vec<Attribute>>,
    /// When the entity was created.
    #[serde(deserialize_with = "stored_time::deserialize")]
    pub created_at: DateTime<Utc>,
    /// When the entity was last modified.
    #[serde(deserialize_with = "stored_time::deserialize")]
    pub modified_at: DateTime<Utc>,
    /// When the storage of the whole entity ends (4.22, a transient entity): from then on it is
    /// not served, and the reaper deletes it (its history stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl Entity {
    /// The instance of attribute `name` with this datasetId, if any.
    pub fn instance(&self, name: &str, dataset_id: Option<&str>) -> Option<&Attribute> {
        self.attrs
            .get(name)?
            .iter()
            .find(|a| a.dataset_id.as_deref() == dataset_id)
    }
}

/// Formats a system timestamp the way NGSI-LD responses carry it (UTC, `Z`, microseconds).
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Entity members that are never attributes.
pub const ENTITY_MEMBERS: [&str; 8] = [
    "id",
    "type",
    "scope",
    "@context",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "expiresAt",
];

/// Attribute members that are never sub-attributes (besides the kinds' value members).
pub const ATTRIBUTE_MEMBERS: [&str; 12] = [
    "type",
    "expiresAt",
    "observedAt",
    "unitCode",
    "datasetId",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "instanceId",
    "objectType",
    "lang",
    "@context",
];
