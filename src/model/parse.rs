//! Request JSON (normalized or concise, with the caller's context) to expanded entities and
//! attributes. Everything is checked here, before any store is touched, so that a bad request
//! changes nothing. A refusal is a [`BodyError`] pointing at the member at fault, relative to the
//! JSON each reader was given (each puts its own member in front on the way out), with the member
//! names as the client wrote them.

use super::{proof, validate};
use super::{AttrKind, Attribute, ATTRIBUTE_MEMBERS, ENTITY_MEMBERS, NGSI_LD_NULL};
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::ld::ActiveContext;
use crate::model::NameMap;
use crate::syntax::body::{BodyError, BodyResult, Locate};
use crate::syntax::pointer::JsonPointer;
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
    ) -> BodyResult<Vec<Attribute>> {
        self.partial_of = Some(kind);
        self.attribute(name, iri, value)
    }

    /// Parses an entity (or entity fragment) object. `require_id_and_type` is for creation. An
    /// error points at the member at fault, relative to the entity (`/temperature/value`).
    pub fn entity(&self, body: &Value, require_id_and_type: bool) -> BodyResult<EntityInput> {
        let obj = body.as_object().ok_or_else(|| {
            BodyError::whole("the entity must be a JSON object").of_kind(ErrorKind::InvalidRequest)
        })?;
        let mut input = EntityInput::default();
        match core_member(obj, "id") {
            Some((key, Value::String(id))) => {
                validate::entity_id("the entity id", id).at(key)?;
                input.id = Some(id.clone());
            }
            Some((key, other)) => {
                return Err(BodyError::member(
                    key,
                    format!("the entity id must be a string, not {other}"),
                ))
            }
            None if require_id_and_type => {
                return Err(BodyError::member("id", "the entity has no id"))
            }
            None => {}
        }
        match core_member(obj, "type") {
            Some((key, t)) => input.types = self.types(t).map_err(|e| e.under(key))?,
            None if require_id_and_type => {
                return Err(BodyError::member("type", "the entity has no type"))
            }
            None => {}
        }
        if let Some(scope) = obj.get("scope") {
            input.scope = Some(scopes(scope).map_err(|e| e.under("scope"))?);
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
    ) -> BodyResult<Option<Option<DateTime<Utc>>>> {
        match obj.get("expiresAt") {
            None => Ok(None),
            Some(Value::String(s)) if s == NGSI_LD_NULL && self.nulls != Nulls::Forbidden => {
                Ok(Some(None))
            }
            Some(t) => Ok(Some(Some(
                expires_at("the entity's expiresAt", t).at("expiresAt")?,
            ))),
        }
    }

    /// Parses the attributes of an object, skipping the given non-attribute members; an error
    /// points into the object (`/temperature/1/datasetId`).
    pub fn attributes(
        &self,
        obj: &Map<String, Value>,
        skip: &[&str],
    ) -> BodyResult<NameMap<Vec<Attribute>>> {
        let mut attrs = NameMap::default();
        for (name, value) in obj {
            if skip.contains(&name.as_str()) || name == "@id" || name == "@type" {
                continue;
            }
            let iri = self.name(name).at(name)?;
            let instances = self
                .attribute(name, &iri, value)
                .map_err(|e| e.under(name))?;
            match attrs.get_mut(&iri) {
                // Two names for one IRI (e.g. a term and its full IRI): keep both sets of instances.
                Some(existing) => {
                    let existing: &mut Vec<Attribute> = existing;
                    for a in instances {
                        if !self.temporal && existing.iter().any(|b| b.dataset_id == a.dataset_id) {
                            return Err(BodyError::member(name, format!(
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

    /// Validates and expands an attribute name (the caller knows where the name was).
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

    /// Parses entity types (a string or an array of strings) to IRIs; an error points into the
    /// value (`/1` for the second type of an array).
    pub fn types(&self, value: &Value) -> BodyResult<Vec<String>> {
        let names: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.as_str().ok_or_else(|| {
                        BodyError::member(i, format!("an entity type must be a string, not {item}"))
                    })
                })
                .collect::<BodyResult<_>>()?,
            other => {
                return Err(BodyError::whole(format!(
                    "the entity type must be a string or a non-empty array of strings, not {other}"
                )))
            }
        };
        let at = |i: usize| match value {
            Value::Array(_) => JsonPointer::to(i),
            _ => JsonPointer::root(),
        };
        let mut out: Vec<String> = Vec::with_capacity(names.len());
        for (i, n) in names.into_iter().enumerate() {
            validate::name("entity type", n).at_pointer(|| at(i))?;
            if n.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(BodyError::at(
                    at(i),
                    format!(
                        "the entity type '{n}' starts with a digit; type names start with a letter"
                    ),
                ));
            }
            let iri = self.ctx.expand(n).into_owned();
            if iri.starts_with('@') {
                return Err(BodyError::at(
                    at(i),
                    format!("the entity type '{n}' is a JSON-LD keyword alias, not a type name"),
                ));
            }
            if !out.contains(&iri) {
                out.push(iri);
            }
        }
        Ok(out)
    }

    /// Parses one attribute: an object, an array of instances (datasetIds) or a concise value. An
    /// error points into `value` (`/1/datasetId` for the second instance's datasetId).
    pub fn attribute(&self, name: &str, iri: &str, value: &Value) -> BodyResult<Vec<Attribute>> {
        let instances = match value {
            Value::Array(items) if !items.is_empty() && items.iter().all(looks_like_attribute) => {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.instance(name, iri, item).map_err(|e| e.under(i)))
                    .collect::<BodyResult<Vec<_>>>()?
            }
            _ => vec![self.instance(name, iri, value)?],
        };
        for (i, a) in instances.iter().enumerate() {
            if !self.temporal && instances[..i].iter().any(|b| b.dataset_id == a.dataset_id) {
                return Err(BodyError::at(
                    JsonPointer::to(i).child("datasetId"),
                    format!(
                        "attribute '{name}' has two instances with the same datasetId ({})",
                        a.dataset_id.as_deref().unwrap_or("default")
                    ),
                ));
            }
        }
        Ok(instances)
    }

    /// One instance of an attribute; an error points into `value`.
    fn instance(&self, name: &str, iri: &str, value: &Value) -> BodyResult<Attribute> {
        let mut attr = match value {
            Value::Object(obj) => self.object_attribute(name, obj)?,
            Value::Null if self.nulls != Nulls::Forbidden => {
                self.bare(AttrKind::Property, Value::String(NGSI_LD_NULL.into()))
            }
            Value::Null => {
                return Err(BodyError::whole(format!(
                    "attribute '{name}' is null; give it a value"
                )))
            }
            other => self.bare(AttrKind::Property, other.clone()),
        };
        if GEO_ATTRIBUTES.contains(&iri) && attr.kind != AttrKind::GeoProperty && !attr.is_null() {
            return Err(BodyError::whole(format!(
                "attribute '{name}' must be a GeoProperty, not a {}",
                attr.kind.name()
            )));
        }
        // Where the value is: its member in the normalized form, the attribute in the concise.
        let kind = attr.kind;
        let value_at = || match value {
            Value::Object(obj) if obj.contains_key(kind.value_member()) => {
                JsonPointer::to(kind.value_member())
            }
            _ => JsonPointer::root(),
        };
        // A temporal representation may hold deleted instances (4.5.7: NGSI-LD Null with the
        // time of the deletion), in full form only.
        let deleted_instance = self.temporal && value.is_object();
        if attr.is_null() && self.nulls == Nulls::Forbidden && !deleted_instance {
            return Err(BodyError::at(
                value_at(),
                format!(
                    "attribute '{name}' is NGSI-LD Null, which only updates accept (as a deletion)"
                ),
            ));
        }
        if !attr.is_null() && !attr.value.is_null() {
            let checked = self.checked_value(name, kind, std::mem::take(&mut attr.value));
            attr.value = checked.map_err(|e| e.within(&value_at()))?;
        }
        proof::check(name, iri, &attr)?;
        Ok(attr)
    }

    fn bare(&self, kind: AttrKind, value: Value) -> Attribute {
        Attribute::bare(kind, value, self.now)
    }

    /// An attribute in normalized form (or a concise object value); an error points into `obj`.
    fn object_attribute(&self, name: &str, obj: &Map<String, Value>) -> BodyResult<Attribute> {
        let found = Members::scan(obj);
        let kind = match found.type_member {
            Some(Value::String(t)) => match AttrKind::from_name(t) {
                Some(kind) => kind,
                None if is_geometry(obj) => {
                    return Ok(self.bare(AttrKind::GeoProperty, Value::Object(obj.clone())))
                }
                None => {
                    return Err(BodyError::member(
                        "type",
                        format!(
                        "attribute '{name}' has type '{t}', which is not an NGSI-LD attribute type \
                         (Property, Relationship, GeoProperty, LanguageProperty, VocabProperty, \
                         ListProperty, ListRelationship or JsonProperty)"
                    ),
                    ))
                }
            },
            Some(other) => {
                return Err(BodyError::member(
                    "type",
                    format!("attribute '{name}' has a type that is not a string: {other}"),
                ))
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
                return Err(BodyError::member(
                    member,
                    format!(
                    "attribute '{name}' has a null '{member}'; JSON null is not a value, and an \
                     update deletes with the NGSI-LD Null: \"{member}\": \"{NGSI_LD_NULL}\""
                ),
                ))
            }
            Some(Value::Null) | None => {
                return Err(BodyError::member(
                    member,
                    format!(
                        "attribute '{name}' is a {} and needs a non-null '{member}' member",
                        kind.name()
                    ),
                ))
            }
            Some(v) => v.clone(),
        };
        self.members(name, kind, value, obj)
    }

    /// Builds an attribute of `kind` with `value` from the other members of its object; an error
    /// points at the member of `obj` at fault.
    fn members(
        &self,
        name: &str,
        kind: AttrKind,
        value: Value,
        obj: &Map<String, Value>,
    ) -> BodyResult<Attribute> {
        let member = kind.value_member();
        let mut attr = self.bare(kind, value);
        for (key, v) in obj {
            if key == member {
                continue;
            }
            self.member(name, kind, key, v, &mut attr)
                .map_err(|e| e.under(key))?;
        }
        Ok(attr)
    }

    /// Reads the member `key` (value `v`) of the attribute `name` into `attr`; an error points
    /// into `v`.
    fn member(
        &self,
        name: &str,
        kind: AttrKind,
        key: &str,
        v: &Value,
        attr: &mut Attribute,
    ) -> BodyResult<()> {
        let whole = |problem: String| Err(BodyError::whole(problem));
        match key {
            "datasetId" => {
                let Some(id) = v.as_str() else {
                    return whole(format!("the datasetId of '{name}' must be a string, not {v}"));
                };
                if id == NGSI_LD_NULL {
                    return whole(format!(
                        "the datasetId of '{name}' cannot be NGSI-LD Null; delete the instance with DELETE .../attrs/{{attrId}}?datasetId=..."
                    ));
                }
                if id != "@none" {
                    validate::uri(&format!("the datasetId of '{name}'"), id)
                        .at_pointer(JsonPointer::root)?;
                    attr.dataset_id = Some(id.to_string());
                }
            }
            "observedAt" => {
                let Some(t) = v.as_str() else {
                    return whole(format!("the observedAt of '{name}' must be a string, not {v}"));
                };
                validate::utc_date_time(&format!("the observedAt of '{name}'"), t)
                    .at_pointer(JsonPointer::root)?;
                attr.observed_at = Some(t.to_string());
            }
            "expiresAt" => {
                let what = format!("the expiresAt of '{name}'");
                attr.expires_at = Some(expires_at(&what, v).at_pointer(JsonPointer::root)?);
            }
            "unitCode" if !matches!(kind, AttrKind::Property | AttrKind::ListProperty) => {
                return whole(format!(
                    "attribute '{name}' is a {}, which cannot have a unitCode",
                    kind.name()
                ))
            }
            "unitCode" => {
                let Some(u) = v.as_str() else {
                    return whole(format!("the unitCode of '{name}' must be a string, not {v}"));
                };
                attr.unit_code = Some(u.to_string());
            }
            "objectType" if kind == AttrKind::Relationship || kind == AttrKind::ListRelationship => {
                attr.object_type = Some(self.vocab_terms(name, v)?);
            }
            "valueType"
                if kind == AttrKind::LanguageProperty
                    && !v.as_str().is_some_and(|t| LANG_STRING.contains(&t)) =>
            {
                return whole(format!(
                    "attribute '{name}' is a LanguageProperty, whose valueType can only be langString (Table 5.2.32-1), not {v}"
                ))
            }
            k if AttrKind::ALL.iter().any(|other| other.value_member() == k) => {
                return whole(format!(
                    "attribute '{name}' is a {} and cannot have a '{k}' member",
                    kind.name()
                ))
            }
            "entityIdSealed" | "entityTypeSealed" => {
                let Some(sealed) = v.as_str() else {
                    return whole(format!("the {key} of '{name}' must be a string, not {v}"));
                };
                let (iri, sealed) = if key == "entityIdSealed" {
                    validate::uri(&format!("the entityIdSealed of '{name}'"), sealed)
                        .at_pointer(JsonPointer::root)?;
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
                return whole(format!(
                    "attribute '{name}' has a '{k}' member, which is not accepted in requests"
                ))
            }
            k if ATTRIBUTE_MEMBERS.contains(&k) => {}
            sub_name => {
                let sub_iri = self.name(sub_name).at_pointer(JsonPointer::root)?;
                let sub = self.instance(sub_name, &sub_iri, v)?;
                attr.sub.insert(sub_iri, sub);
            }
        }
        Ok(())
    }

    /// The value member checked against the kind (`value` as given, or in the form the broker
    /// keeps: a GeoJSON string read as its object, objectList members as `{"object": URI}`,
    /// vocabulary terms expanded). An error points into the value (`/coordinates/0/1`, `/2`).
    fn checked_value(&self, name: &str, kind: AttrKind, value: Value) -> BodyResult<Value> {
        let bad = |why: &str| BodyError::whole(format!("attribute '{name}': {why}"));
        let uri = |what: &str, s: &str| validate::uri(&format!("{what} of '{name}'"), s);
        let checked = match kind {
            AttrKind::Property if self.nulls != Nulls::Merge => match first_null(&value) {
                Some(at) => Err(bad(
                    "a null inside a value is not allowed (NGSI-LD Null deletes whole attributes)",
                )
                .within(&at)),
                None => Ok(()),
            },
            AttrKind::Property => Ok(()),
            AttrKind::JsonProperty => match &value {
                Value::Object(_) | Value::Array(_) => Ok(()),
                _ => Err(bad("a JsonProperty's json must be a JSON object or array")),
            },
            AttrKind::GeoProperty => return self.geometry_value(name, value),
            AttrKind::Relationship => match &value {
                Value::String(s) => uri("the object", s).at_pointer(JsonPointer::root),
                Value::Array(items) if !items.is_empty() => {
                    items.iter().enumerate().try_for_each(|(i, item)| match item.as_str() {
                        Some(s) => uri("the object", s).at(i),
                        None => Err(bad("a Relationship object must be a URI or an array of URIs")
                            .under(i)),
                    })
                }
                _ => Err(bad("a Relationship object must be a URI or an array of URIs")),
            },
            AttrKind::ListRelationship => match &value {
                Value::Array(items) => {
                    let mut normalized = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let (target, at) = match item.as_str() {
                            Some(s) => (Some(s), JsonPointer::to(i)),
                            None => (
                                item.get("object").and_then(Value::as_str),
                                JsonPointer::to(i).child("object"),
                            ),
                        };
                        let Some(s) = target else {
                            return Err(bad(
                                "an objectList holds URIs or {\"object\": URI} members",
                            )
                            .under(i));
                        };
                        uri("an object in the objectList", s).at_pointer(|| at)?;
                        normalized.push(serde_json::json!({ "object": s }));
                    }
                    return Ok(Value::Array(normalized));
                }
                _ => Err(bad("a ListRelationship's objectList must be an array")),
            },
            AttrKind::ListProperty => match &value {
                Value::Array(_) => Ok(()),
                _ => Err(bad("a ListProperty's valueList must be an array")),
            },
            AttrKind::LanguageProperty => match &value {
                Value::Object(map) if !map.is_empty() => map.iter().try_for_each(|(lang, text)| {
                    let ok_text = text.is_string()
                        || text.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                    if !ok_text {
                        return Err(bad(&format!("the text for language '{lang}' must be a string")).under(lang));
                    }
                    if lang != "@none" && !is_language_tag(lang) {
                        return Err(bad(&format!("'{lang}' is not a language tag (BCP 47, e.g. en or fr-CA)")).under(lang));
                    }
                    Ok(())
                }),
                _ => Err(bad("a LanguageProperty's languageMap must be a non-empty object of language tags to strings")),
            },
            AttrKind::VocabProperty => return self.vocab_terms(name, &value),
        };
        checked.map(|()| value)
    }

    /// A GeoProperty's value: a GeoJSON geometry, or its text read as one. An error points into
    /// the geometry; inside a text no pointer reaches, and the problem says where in words.
    fn geometry_value(&self, name: &str, value: Value) -> BodyResult<Value> {
        let bad = |why: &str| BodyError::whole(format!("attribute '{name}': {why}"));
        let (value, text) = match value {
            Value::String(text) => match serde_json::from_str(&text) {
                Ok(value) => (value, true),
                Err(_) => return Err(bad("the string value is not a GeoJSON geometry")),
            },
            value => (value, false),
        };
        if value.get("type").and_then(Value::as_str) == Some("GeometryCollection") {
            let e = bad("a GeometryCollection is not an NGSI-LD geometry; use a Multi* geometry");
            return Err(if text { e } else { e.under("type") });
        }
        match validate::geometry(&format!("the value of '{name}'"), &value) {
            Ok(()) => Ok(value),
            Err(e) if text => Err(BodyError::whole(format!(
                "{} (at {} in the GeoJSON text)",
                e.problem, e.pointer
            ))),
            Err(e) => Err(e),
        }
    }

    /// Expands vocabulary terms (a string or an array of strings); an error points into `value`.
    fn vocab_terms(&self, name: &str, value: &Value) -> BodyResult<Value> {
        let expand = |v: &Value| match v.as_str() {
            Some(s) => Ok(Value::String(self.ctx.expand(s).into_owned())),
            None => Err(BodyError::whole(format!(
                "attribute '{name}': a vocabulary term must be a string, not {v}"
            ))),
        };
        match value {
            Value::Array(items) => Ok(Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| expand(item).map_err(|e| e.under(i)))
                    .collect::<BodyResult<_>>()?,
            )),
            v => expand(v),
        }
    }
}

/// The member `name` of an entity object, or its JSON-LD keyword `@name`, with the key as written.
fn core_member<'v>(
    obj: &'v Map<String, Value>,
    name: &'static str,
) -> Option<(&'v str, &'v Value)> {
    obj.get_key_value(name)
        .or_else(|| obj.get_key_value(&format!("@{name}")))
        .map(|(k, v)| (k.as_str(), v))
}

/// Where the first null (JSON null or the NGSI-LD Null) inside a value is, if it holds one.
fn first_null(v: &Value) -> Option<JsonPointer> {
    match v {
        Value::Null => Some(JsonPointer::root()),
        Value::String(s) if s == NGSI_LD_NULL => Some(JsonPointer::root()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_null(item).map(|p| p.under(i))),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, item)| first_null(item).map(|p| p.under(k))),
        _ => None,
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

/// Parses the `scope` member: a scope path or an array of them (clause 4.18); an error points
/// into the value (`/1` for the second scope of an array).
pub fn scopes(value: &Value) -> BodyResult<Vec<String>> {
    let items: Vec<(JsonPointer, &Value)> = match value {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (JsonPointer::to(i), v))
            .collect(),
        v => vec![(JsonPointer::root(), v)],
    };
    items
        .into_iter()
        .map(|(at, v)| match v.as_str() {
            Some(s)
                if s.starts_with('/')
                    && s.len() > 1
                    && !s.contains("//")
                    && !s.contains(char::is_whitespace) =>
            {
                Ok(s.to_string())
            }
            _ => Err(BodyError::at(
                at,
                format!("scope {v} is not a scope path such as /Madrid/Gardens"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests;
