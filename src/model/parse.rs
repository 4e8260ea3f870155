//! Request JSON (normalized or concise, with the caller's context) to expanded entities and
//! attributes. Everything is checked here, before any store is touched, so that a bad request
//! changes nothing.

use super::{proof, validate};
use super::{AttrKind, Attribute, ATTRIBUTE_MEMBERS, ENTITY_MEMBERS, NGSI_LD_NULL};
use crate::error::{NgsiError, NgsiResult};
use crate::ld::ActiveContext;
use crate::model::NameMap;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// The core attributes that are GeoProperties by definition.
const GEO_ATTRIBUTES: [&str; 3] = [
    "https://uri.etsi.org/ngsi-ld/location",
    "https://uri.etsi.org/ngsi-ld/observationSpace",
    "https://uri.etsi.org/ngsi-ld/operationSpace",
];

/// Core member names that may not name an attribute (they are not reified as attributes).
fn is_reserved_name(name: &str) -> bool {
    matches!(
        name,
        "datasetId"
            | "instanceId"
            | "observedAt"
            | "expiresAt"
            | "unitCode"
            | "objectType"
            | "value"
            | "object"
            | "languageMap"
            | "vocab"
            | "valueList"
            | "objectList"
            | "json"
            | "lang"
            | "entityIdSealed"
            | "entityTypeSealed"
            | "@context"
            | "@value"
    )
}

/// The names of the one valueType a LanguageProperty may declare (rdf:langString).
const LANG_STRING: [&str; 3] = [
    "langString",
    "rdf:langString",
    "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString",
];

/// Members only the broker writes (in notifications with showChanges); never accepted as input.
const OUTPUT_ONLY: [&str; 7] = [
    "previousValue",
    "previousObject",
    "previousLanguageMap",
    "previousVocab",
    "previousValueList",
    "previousObjectList",
    "previousJson",
];

/// Whether NGSI-LD Null (a deletion) is allowed in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    /// Creation and replacement: a null value is an error.
    Forbidden,
    /// Updates and appends: a null attribute deletes it.
    Delete,
    /// Merges: as Delete, and a null inside a compound value removes that key (JSON merge patch).
    Merge,
}

/// An entity or entity fragment from a request body, expanded.
#[derive(Debug, Clone, Default)]
pub struct EntityInput {
    /// The `id` member, when present.
    pub id: Option<String>,
    /// The types, expanded (empty when absent).
    pub types: Vec<String>,
    /// The scopes, when present.
    pub scope: Option<Vec<String>>,
    /// The attributes by expanded name.
    pub attrs: NameMap<Vec<Attribute>>,
    /// The entity's `expiresAt` (4.22), when present: `Some(None)` is its removal (the NGSI-LD
    /// Null, in an update or merge).
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// Reads request JSON with one active context and one timestamp for everything it creates.
pub struct Reader<'a> {
    ctx: &'a ActiveContext,
    now: DateTime<Utc>,
    nulls: Nulls,
    partial_of: Option<AttrKind>,
    /// Temporal input (5.6.11): an attribute may carry several instances of one datasetId.
    temporal: bool,
}

impl<'a> Reader<'a> {
    /// A reader for one request.
    pub fn new(ctx: &'a ActiveContext, now: DateTime<Utc>, nulls: Nulls) -> Self {
        Reader {
            ctx,
            now,
            nulls,
            partial_of: None,
            temporal: false,
        }
    }

    /// A reader of temporal representations, whose attributes list instances over time: several
    /// instances may share a datasetId.
    pub fn temporal(mut self) -> Self {
        self.temporal = true;
        self
    }

    /// Parses a partial update of an existing attribute of kind `kind` (clause 5.6.4): the fragment
    /// may leave out the value member, which then comes back as JSON null meaning "unchanged".
    pub fn attribute_fragment(
        mut self,
        kind: AttrKind,
        name: &str,
        iri: &str,
        value: &Value,
    ) -> NgsiResult<Vec<Attribute>> {
        self.partial_of = Some(kind);
        self.attribute(name, iri, value)
    }

    /// Parses an entity (or entity fragment) object. `require_id_and_type` is for creation.
    pub fn entity(&self, body: &Value, require_id_and_type: bool) -> NgsiResult<EntityInput> {
        let obj = body
            .as_object()
            .ok_or_else(|| NgsiError::invalid("the entity must be a JSON object"))?;
        let mut input = EntityInput::default();
        match obj.get("id").or_else(|| obj.get("@id")) {
            Some(Value::String(id)) => {
                validate::entity_id("the entity id", id)?;
                input.id = Some(id.clone());
            }
            Some(other) => {
                return Err(NgsiError::bad_data(format!(
                    "the entity id must be a string, not {other}"
                )))
            }
            None if require_id_and_type => return Err(NgsiError::bad_data("the entity has no id")),
            None => {}
        }
        match obj.get("type").or_else(|| obj.get("@type")) {
            Some(t) => input.types = self.types(t)?,
            None if require_id_and_type => {
                return Err(NgsiError::bad_data("the entity has no type"))
            }
            None => {}
        }
        if let Some(scope) = obj.get("scope") {
            input.scope = Some(scopes(scope)?);
        }
        input.expires_at = self.entity_expiry(obj)?;
        input.attrs = self.attributes(obj, &ENTITY_MEMBERS)?;
        Ok(input)
    }

    /// The `expiresAt` member of an entity or fragment object, if it has one: a DateTime, or in an
    /// update or merge the NGSI-LD Null, which removes the expiry.
    pub fn entity_expiry(
        &self,
        obj: &Map<String, Value>,
    ) -> NgsiResult<Option<Option<DateTime<Utc>>>> {
        match obj.get("expiresAt") {
            None => Ok(None),
            Some(Value::String(s)) if s == NGSI_LD_NULL && self.nulls != Nulls::Forbidden => {
                Ok(Some(None))
            }
            Some(t) => Ok(Some(Some(expires_at("the entity's expiresAt", t)?))),
        }
    }

    /// Parses the attributes of an object, skipping the given non-attribute members.
    pub fn attributes(
        &self,
        obj: &Map<String, Value>,
        skip: &[&str],
    ) -> NgsiResult<NameMap<Vec<Attribute>>> {
        let mut attrs = NameMap::default();
        for (name, value) in obj {
            if skip.contains(&name.as_str()) || name == "@id" || name == "@type" {
                continue;
            }
            let iri = self.name(name)?;
            let instances = self.attribute(name, &iri, value)?;
            match attrs.get_mut(&iri) {
                // Two names for one IRI (e.g. a term and its full IRI): keep both sets of instances.
                Some(existing) => {
                    let existing: &mut Vec<Attribute> = existing;
                    for a in instances {
                        if !self.temporal && existing.iter().any(|b| b.dataset_id == a.dataset_id) {
                            return Err(NgsiError::bad_data(format!(
                                "attribute '{name}' is given twice (under two names) for the same datasetId"
                            )));
                        }
                        existing.push(a);
                    }
                }
                None => {
                    attrs.insert(iri, instances);
                }
            }
        }
        Ok(attrs)
    }

    /// Validates and expands an attribute name.
    pub fn name(&self, name: &str) -> NgsiResult<String> {
        validate::name("attribute name", name)?;
        if is_reserved_name(name) {
            return Err(NgsiError::bad_data(format!(
                "'{name}' is an NGSI-LD core member and cannot be used as an attribute name"
            )));
        }
        let iri = self.ctx.expand(name).into_owned();
        if iri.starts_with('@') {
            return Err(NgsiError::bad_data(format!(
                "'{name}' is a JSON-LD keyword alias, not an attribute name"
            )));
        }
        Ok(iri)
    }

    /// Parses entity types (a string or an array of strings) to IRIs.
    pub fn types(&self, value: &Value) -> NgsiResult<Vec<String>> {
        let names: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|i| {
                    i.as_str().ok_or_else(|| {
                        NgsiError::bad_data(format!("an entity type must be a string, not {i}"))
                    })
                })
                .collect::<NgsiResult<_>>()?,
            other => {
                return Err(NgsiError::bad_data(format!(
                    "the entity type must be a string or a non-empty array of strings, not {other}"
                )))
            }
        };
        let mut out: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            validate::name("entity type", n)?;
            if n.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(NgsiError::bad_data(format!(
                    "the entity type '{n}' starts with a digit; type names start with a letter"
                )));
            }
            let iri = self.ctx.expand(n).into_owned();
            if iri.starts_with('@') {
                return Err(NgsiError::bad_data(format!(
                    "the entity type '{n}' is a JSON-LD keyword alias, not a type name"
                )));
            }
            if !out.contains(&iri) {
                out.push(iri);
            }
        }
        Ok(out)
    }

    /// Parses one attribute: an object, an array of instances (datasetIds) or a concise value.
    pub fn attribute(&self, name: &str, iri: &str, value: &Value) -> NgsiResult<Vec<Attribute>> {
        let instances = match value {
            Value::Array(items) if !items.is_empty() && items.iter().all(looks_like_attribute) => {
                items
                    .iter()
                    .map(|i| self.instance(name, iri, i))
                    .collect::<NgsiResult<Vec<_>>>()?
            }
            _ => vec![self.instance(name, iri, value)?],
        };
        for (i, a) in instances.iter().enumerate() {
            if !self.temporal && instances[..i].iter().any(|b| b.dataset_id == a.dataset_id) {
                return Err(NgsiError::bad_data(format!(
                    "attribute '{name}' has two instances with the same datasetId ({})",
                    a.dataset_id.as_deref().unwrap_or("default")
                )));
            }
        }
        Ok(instances)
    }

    fn instance(&self, name: &str, iri: &str, value: &Value) -> NgsiResult<Attribute> {
        let mut attr = match value {
            Value::Object(obj) => self.object_attribute(name, obj)?,
            Value::Null if self.nulls != Nulls::Forbidden => {
                self.bare(AttrKind::Property, Value::String(NGSI_LD_NULL.into()))
            }
            Value::Null => {
                return Err(NgsiError::bad_data(format!(
                    "attribute '{name}' is null; give it a value"
                )))
            }
            other => self.bare(AttrKind::Property, other.clone()),
        };
        if GEO_ATTRIBUTES.contains(&iri) && attr.kind != AttrKind::GeoProperty && !attr.is_null() {
            return Err(NgsiError::bad_data(format!(
                "attribute '{name}' must be a GeoProperty, not a {}",
                attr.kind.name()
            )));
        }
        // A temporal representation may hold deleted instances (4.5.7: NGSI-LD Null with the
        // time of the deletion), in full form only.
        let deleted_instance = self.temporal && value.is_object();
        if attr.is_null() && self.nulls == Nulls::Forbidden && !deleted_instance {
            return Err(NgsiError::bad_data(format!(
                "attribute '{name}' is NGSI-LD Null, which only updates accept (as a deletion)"
            )));
        }
        if !attr.is_null() && !attr.value.is_null() {
            attr.value = self.checked_value(name, attr.kind, std::mem::take(&mut attr.value))?;
        }
        proof::check(name, iri, &attr)?;
        Ok(attr)
    }

    fn bare(&self, kind: AttrKind, value: Value) -> Attribute {
        Attribute::bare(kind, value, self.now)
    }

    fn object_attribute(&self, name: &str, obj: &Map<String, Value>) -> NgsiResult<Attribute> {
        let found = Members::scan(obj);
        let kind = match found.type_member {
            Some(Value::String(t)) => match AttrKind::from_name(t) {
                Some(kind) => kind,
                None if is_geometry(obj) => {
                    return Ok(self.bare(AttrKind::GeoProperty, Value::Object(obj.clone())))
                }
                None => {
                    return Err(NgsiError::bad_data(format!(
                        "attribute '{name}' has type '{t}', which is not an NGSI-LD attribute type \
                         (Property, Relationship, GeoProperty, LanguageProperty, VocabProperty, \
                         ListProperty, ListRelationship or JsonProperty)"
                    )))
                }
            },
            Some(other) => {
                return Err(NgsiError::bad_data(format!(
                    "attribute '{name}' has a type that is not a string: {other}"
                )))
            }
            None => match AttrKind::ALL.iter().find(|k| found.value_of(**k).is_some()) {
                Some(AttrKind::Property)
                    if obj
                        .get("value")
                        .is_some_and(|v| v.as_object().is_some_and(is_geometry)) =>
                {
                    AttrKind::GeoProperty
                }
                Some(kind) => *kind,
                None => match self.partial_of {
                    Some(kind) => return self.members(name, kind, Value::Null, obj),
                    None => return Ok(self.bare(AttrKind::Property, Value::Object(obj.clone()))),
                },
            },
        };
        let member = kind.value_member();
        let value = match found.value_of(kind) {
            None if self.partial_of == Some(kind) => {
                return self.members(name, kind, Value::Null, obj)
            }
            // JSON null is dropped by JSON-LD expansion: it never stands for the NGSI-LD Null
            // (5.2.1), which a deletion spells out.
            Some(Value::Null) if self.nulls != Nulls::Forbidden => {
                return Err(NgsiError::bad_data(format!(
                    "attribute '{name}' has a null '{member}'; JSON null is not a value, and an \
                     update deletes with the NGSI-LD Null: \"{member}\": \"{NGSI_LD_NULL}\""
                )))
            }
            Some(Value::Null) | None => {
                return Err(NgsiError::bad_data(format!(
                    "attribute '{name}' is a {} and needs a non-null '{member}' member",
                    kind.name()
                )))
            }
            Some(v) => v.clone(),
        };
        self.members(name, kind, value, obj)
    }

    /// Builds an attribute of `kind` with `value` from the other members of its object.
    fn members(
        &self,
        name: &str,
        kind: AttrKind,
        value: Value,
        obj: &Map<String, Value>,
    ) -> NgsiResult<Attribute> {
        let member = kind.value_member();
        let mut attr = self.bare(kind, value);
        for (key, v) in obj {
            if key == member {
                continue;
            }
            match key.as_str() {
                "datasetId" => {
                    let id = v.as_str().ok_or_else(|| {
                        NgsiError::bad_data(format!("the datasetId of '{name}' must be a string"))
                    })?;
                    if id == NGSI_LD_NULL {
                        return Err(NgsiError::bad_data(format!(
                            "the datasetId of '{name}' cannot be NGSI-LD Null; delete the instance with DELETE .../attrs/{{attrId}}?datasetId=..."
                        )));
                    }
                    if id != "@none" {
                        validate::uri(&format!("the datasetId of '{name}'"), id)?;
                        attr.dataset_id = Some(id.to_string());
                    }
                }
                "observedAt" => {
                    let t = v.as_str().ok_or_else(|| {
                        NgsiError::bad_data(format!("the observedAt of '{name}' must be a string"))
                    })?;
                    validate::utc_date_time(&format!("the observedAt of '{name}'"), t)?;
                    attr.observed_at = Some(t.to_string());
                }
                "expiresAt" => {
                    attr.expires_at = Some(expires_at(&format!("the expiresAt of '{name}'"), v)?);
                }
                "unitCode" if !matches!(kind, AttrKind::Property | AttrKind::ListProperty) => {
                    return Err(NgsiError::bad_data(format!(
                        "attribute '{name}' is a {}, which cannot have a unitCode",
                        kind.name()
                    )))
                }
                "unitCode" => {
                    let u = v.as_str().ok_or_else(|| {
                        NgsiError::bad_data(format!("the unitCode of '{name}' must be a string"))
                    })?;
                    attr.unit_code = Some(u.to_string());
                }
                "objectType"
                    if kind == AttrKind::Relationship || kind == AttrKind::ListRelationship =>
                {
                    attr.object_type = Some(self.vocab_terms(name, v)?);
                }
                "valueType"
                    if kind == AttrKind::LanguageProperty
                        && !v.as_str().is_some_and(|t| LANG_STRING.contains(&t)) =>
                {
                    return Err(NgsiError::bad_data(format!(
                        "attribute '{name}' is a LanguageProperty, whose valueType can only be langString (Table 5.2.32-1), not {v}"
                    )))
                }
                k if AttrKind::ALL.iter().any(|other| other.value_member() == k) => {
                    return Err(NgsiError::bad_data(format!(
                        "attribute '{name}' is a {} and cannot have a '{k}' member",
                        kind.name()
                    )))
                }
                "entityIdSealed" | "entityTypeSealed" => {
                    let sealed = v.as_str().ok_or_else(|| {
                        NgsiError::bad_data(format!(
                            "the {key} of '{name}' must be a string, not {v}"
                        ))
                    })?;
                    let (iri, sealed) = if key == "entityIdSealed" {
                        validate::uri(&format!("the entityIdSealed of '{name}'"), sealed)?;
                        (proof::ENTITY_ID_SEALED, sealed.to_string())
                    } else {
                        (proof::ENTITY_TYPE_SEALED, self.ctx.expand(sealed).into_owned())
                    };
                    attr.sub.insert(
                        iri.to_string(),
                        self.bare(AttrKind::Property, Value::String(sealed)),
                    );
                }
                k if OUTPUT_ONLY.contains(&k) || k == "@context" => {
                    return Err(NgsiError::bad_data(format!(
                        "attribute '{name}' has a '{k}' member, which is not accepted in requests"
                    )))
                }
                k if ATTRIBUTE_MEMBERS.contains(&k) => {}
                sub_name => {
                    let sub_iri = self.name(sub_name)?;
                    let sub = self.instance(sub_name, &sub_iri, v)?;
                    attr.sub.insert(sub_iri, sub);
                }
            }
        }
        Ok(attr)
    }

    /// The value member checked against the kind (`value` as given, or in the form the broker
    /// keeps: a GeoJSON string read as its object, objectList members as `{"object": URI}`,
    /// vocabulary terms expanded).
    fn checked_value(&self, name: &str, kind: AttrKind, value: Value) -> NgsiResult<Value> {
        let bad = |why: &str| -> NgsiResult<()> {
            Err(NgsiError::bad_data(format!("attribute '{name}': {why}")))
        };
        let checked = match kind {
            AttrKind::Property if self.nulls != Nulls::Merge && contains_null(&value) => {
                bad("a null inside a value is not allowed (NGSI-LD Null deletes whole attributes)")
            }
            AttrKind::Property => Ok(()),
            AttrKind::JsonProperty => match &value {
                Value::Object(_) | Value::Array(_) => Ok(()),
                _ => bad("a JsonProperty's json must be a JSON object or array"),
            },
            AttrKind::GeoProperty => {
                let value = match value {
                    Value::String(text) => serde_json::from_str(&text).map_err(|_| {
                        NgsiError::bad_data(format!("attribute '{name}': the string value is not a GeoJSON geometry"))
                    })?,
                    value => value,
                };
                if value.get("type").and_then(Value::as_str) == Some("GeometryCollection") {
                    bad("a GeometryCollection is not an NGSI-LD geometry; use a Multi* geometry")?;
                }
                validate::geometry(&format!("the value of '{name}'"), &value)?;
                return Ok(value);
            }
            AttrKind::Relationship => match &value {
                Value::String(s) => validate::uri(&format!("the object of '{name}'"), s),
                Value::Array(items) if !items.is_empty() => items.iter().try_for_each(|i| match i.as_str() {
                    Some(s) => validate::uri(&format!("the object of '{name}'"), s),
                    None => bad("a Relationship object must be a URI or an array of URIs"),
                }),
                _ => bad("a Relationship object must be a URI or an array of URIs"),
            },
            AttrKind::ListRelationship => match &value {
                Value::Array(items) => {
                    let mut normalized = Vec::with_capacity(items.len());
                    for i in items {
                        let target = i.as_str().or_else(|| i.get("object").and_then(Value::as_str));
                        match target {
                            Some(s) => {
                                validate::uri(&format!("an object in the objectList of '{name}'"), s)?;
                                normalized.push(serde_json::json!({ "object": s }));
                            }
                            None => bad("an objectList holds URIs or {\"object\": URI} members")?,
                        }
                    }
                    return Ok(Value::Array(normalized));
                }
                _ => bad("a ListRelationship's objectList must be an array"),
            },
            AttrKind::ListProperty => match &value {
                Value::Array(_) => Ok(()),
                _ => bad("a ListProperty's valueList must be an array"),
            },
            AttrKind::LanguageProperty => match &value {
                Value::Object(map) if !map.is_empty() => map.iter().try_for_each(|(lang, text)| {
                    let ok_text = text.is_string()
                        || text.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                    if !ok_text {
                        return bad(&format!("the text for language '{lang}' must be a string"));
                    }
                    if lang != "@none" && !is_language_tag(lang) {
                        return bad(&format!("'{lang}' is not a language tag (BCP 47, e.g. en or fr-CA)"));
                    }
                    Ok(())
                }),
                _ => bad("a LanguageProperty's languageMap must be a non-empty object of language tags to strings"),
            },
            AttrKind::VocabProperty => return self.vocab_terms(name, &value),
        };
        checked.map(|()| value)
    }

    /// Expands vocabulary terms (a string or an array of strings).
    fn vocab_terms(&self, name: &str, value: &Value) -> NgsiResult<Value> {
        let expand = |v: &Value| match v.as_str() {
            Some(s) => Ok(Value::String(self.ctx.expand(s).into_owned())),
            None => Err(NgsiError::bad_data(format!(
                "attribute '{name}': a vocabulary term must be a string, not {v}"
            ))),
        };
        match value {
            Value::Array(items) => Ok(Value::Array(
                items.iter().map(expand).collect::<NgsiResult<_>>()?,
            )),
            v => expand(v),
        }
    }
}

fn contains_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s == NGSI_LD_NULL,
        Value::Array(items) => items.iter().any(contains_null),
        Value::Object(map) => map.values().any(contains_null),
        _ => false,
    }
}

fn looks_like_attribute(v: &Value) -> bool {
    match v {
        Value::Object(obj) => {
            obj.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| AttrKind::from_name(t).is_some())
                || AttrKind::ALL
                    .iter()
                    .any(|k| obj.contains_key(k.value_member()))
        }
        _ => false,
    }
}

/// The members of an attribute object that decide its kind, found in one pass over the object
/// (each map lookup would hash the key).
struct Members<'v> {
    type_member: Option<&'v Value>,
    /// By the position in [`AttrKind::ALL`] of the first kind with that value member.
    values: [Option<&'v Value>; 8],
}

impl<'v> Members<'v> {
    fn scan(obj: &'v Map<String, Value>) -> Members<'v> {
        let mut found = Members {
            type_member: None,
            values: [None; 8],
        };
        for (k, v) in obj {
            if k == "type" {
                found.type_member = Some(v);
            } else if let Some(i) = AttrKind::ALL
                .iter()
                .position(|kind| kind.value_member() == k)
            {
                found.values[i] = Some(v);
            }
        }
        found
    }

    /// The value member of `kind`, when present.
    fn value_of(&self, kind: AttrKind) -> Option<&'v Value> {
        let member = kind.value_member();
        let i = AttrKind::ALL
            .iter()
            .position(|k| k.value_member() == member)?;
        self.values[i]
    }
}

fn is_geometry(obj: &Map<String, Value>) -> bool {
    obj.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| validate::GEOMETRY_TYPES.contains(&t))
        && (obj.contains_key("coordinates") || obj.contains_key("geometries"))
}

fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let first = parts.next().unwrap_or("");
    (1..=8).contains(&first.len())
        && first.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Parses an `expiresAt` member: a DateTime (4.6.3), BadRequestData otherwise. A time in the past
/// is accepted for entities and attributes (nothing forbids it): what it names is then expired.
fn expires_at(what: &str, value: &Value) -> NgsiResult<DateTime<Utc>> {
    let text = value.as_str().ok_or_else(|| {
        NgsiError::bad_data(format!("{what} must be a DateTime string, not {value}"))
    })?;
    validate::date_time(what, text)
}

/// Parses the `scope` member: a scope path or an array of them (clause 4.18).
pub fn scopes(value: &Value) -> NgsiResult<Vec<String>> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    items
        .into_iter()
        .map(|v| match v.as_str() {
            Some(s)
                if s.starts_with('/')
                    && s.len() > 1
                    && !s.contains("//")
                    && !s.contains(char::is_whitespace) =>
            {
                Ok(s.to_string())
            }
            _ => Err(NgsiError::bad_data(format!(
                "scope {v} is not a scope path such as /Madrid/Gardens"
            ))),
        })
        .collect()
}
