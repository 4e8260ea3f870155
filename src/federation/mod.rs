//! Federation (4.3.6, 5.9, 5.10): context source registrations, kept in the store like
//! subscriptions and held compiled in memory by every instance ([`Registry`]), so that an entity
//! operation can ask at no cost which sources hold data it must consult, and discovery
//! (`GET /csourceRegistrations`) can match registrations against a query.

pub mod forward;
pub mod merge;
pub mod ops;
pub mod registration;

use crate::model::{AttrKind, Attribute, Entity, NameMap};
use crate::query::{EntityQuery, Selector};
use crate::store::history::{HistoryQuery, TimeProperty};
use chrono::{DateTime, Utc};
use ops::Operation;
use regex::Regex;
use registration::{Mode, Record};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// The namespace of the NGSI-LD core terms, under which the members of a registration are
/// addressed by csf and geoproperty.
const CORE: &str = "https://uri.etsi.org/ngsi-ld/";

/// One EntityInfo of a registration, compiled.
#[derive(Debug)]
struct EntityInfo {
    /// Expanded types, any of which the entity has.
    types: Vec<String>,
    id: Option<String>,
    id_pattern: Option<Regex>,
}

/// One RegistrationInfo, compiled.
#[derive(Debug)]
struct Info {
    /// None: any entity (the info names attributes only).
    entities: Option<Vec<EntityInfo>>,
    /// Expanded attribute names (propertyNames and relationshipNames); None: every attribute.
    attrs: Option<HashSet<String>>,
}

/// A registration compiled for matching.
#[derive(Debug)]
pub struct Registration {
    /// The stored record.
    pub record: Record,
    /// How it shares entities with the broker.
    pub mode: Mode,
    operations: HashSet<Operation>,
    information: Vec<Info>,
    expires_at: Option<DateTime<Utc>>,
    /// The registration seen as an entity whose attributes are its registration properties,
    /// location, observationSpace and operationSpace, and whose scope is its scope: what q, csf,
    /// geoQ and scopeQ of discovery are evaluated on, with the query engine of entities.
    as_entity: Entity,
}

impl Registration {
    /// Compiles a stored record.
    pub fn compile(record: Record) -> Registration {
        let doc = &record.doc;
        let strings = |v: Option<&Value>| -> Vec<String> {
            match v {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let information = doc
            .get("information")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|info| {
                let entities = info.get("entities").and_then(Value::as_array).map(|list| {
                    list.iter()
                        .map(|e| EntityInfo {
                            types: strings(e.get("type")),
                            id: e.get("id").and_then(Value::as_str).map(str::to_string),
                            id_pattern: e
                                .get("idPattern")
                                .and_then(Value::as_str)
                                .and_then(|p| crate::query::parse_id_pattern(p).ok()),
                        })
                        .collect()
                });
                let mut names: Option<HashSet<String>> = None;
                for member in ["propertyNames", "relationshipNames"] {
                    if let Some(list) = info.get(member) {
                        names
                            .get_or_insert_with(HashSet::new)
                            .extend(strings(Some(list)));
                    }
                }
                Info {
                    entities,
                    attrs: names,
                }
            })
            .collect();
        let operations = match doc.get("operations") {
            Some(list) => strings(Some(list))
                .iter()
                .filter_map(|n| Operation::expand(n))
                .flatten()
                .collect(),
            None => Operation::default_set().into_iter().collect(),
        };
        let expires_at = doc
            .get("expiresAt")
            .and_then(Value::as_str)
            .and_then(|t| crate::model::validate::date_time("expiresAt", t).ok());
        let as_entity = as_entity(&record);
        Registration {
            mode: Mode::of(doc),
            operations,
            information,
            expires_at,
            as_entity,
            record,
        }
    }

    /// Whether the registration has not expired.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }

    /// Whether the registration offers this operation.
    pub fn serves(&self, op: Operation) -> bool {
        self.operations.contains(&op)
    }

    /// The source's endpoint (checked to be an http(s) URL when registered).
    pub fn endpoint(&self) -> &str {
        self.record
            .doc
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// A number of milliseconds of the registration's management member (timeout, cooldown).
    pub fn management_ms(&self, member: &str) -> Option<u64> {
        self.record
            .doc
            .get("management")?
            .get(member)?
            .as_f64()
            .map(|ms| ms as u64)
    }

    /// Whether the registration asks to be consulted with local=true only (management.localOnly):
    /// a source that must not forward the request further.
    pub fn local_only(&self) -> bool {
        self.record
            .doc
            .get("management")
            .and_then(|m| m.get("localOnly"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The contextSourceInfo pairs, sent to the source as headers.
    pub fn context_source_info(&self) -> Vec<(&str, &str)> {
        self.record
            .doc
            .get("contextSourceInfo")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.get("key")?.as_str()?, p.get("value")?.as_str()?)))
            .collect()
    }

    /// The value of a contextSourceInfo key, e.g. `contentType` or `accept` (4.3.6.6).
    pub fn info(&self, key: &str) -> Option<&str> {
        self.context_source_info()
            .into_iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// Whether the registration may hold (part of) the entity with this id and, when known,
    /// one of these types.
    pub fn may_hold(&self, id: &str, types: &[String]) -> bool {
        self.information.iter().any(|info| {
            info.entities
                .as_ref()
                .is_none_or(|list| list.iter().any(|e| names_entity(e, id, types)))
        })
    }

    /// The ids of the entities the registration names for what the selectors select, when it
    /// names each of them by id (None when some are named by type or pattern only): a source
    /// holding fragments of known entities is asked for those entities only.
    pub fn ids_for(&self, selectors: &[Selector]) -> Option<Vec<String>> {
        let mut ids = Vec::new();
        for e in self
            .information
            .iter()
            .map(|info| info.entities.as_ref())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .flatten()
            .filter(|e| selectors.iter().any(|s| entity_info_matches(e, s)))
        {
            let id = e.id.as_ref()?;
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        (!ids.is_empty()).then_some(ids)
    }

    /// The types the registration gives the entity with this id (expanded): a source asked by
    /// query rather than by id needs a type to select by.
    pub fn types_of(&self, id: &str) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for e in self
            .information
            .iter()
            .filter_map(|info| info.entities.as_ref())
            .flatten()
            .filter(|e| names_entity(e, id, &[]))
        {
            for t in &e.types {
                if !types.contains(t) {
                    types.push(t.clone());
                }
            }
        }
        types
    }

    /// The attributes the registration names for entities the selectors select (None: every
    /// attribute, as some RegistrationInfo names no attributes); empty when it names none of
    /// those entities.
    pub fn attributes_for(&self, selectors: &[Selector]) -> Option<HashSet<String>> {
        let mut names = HashSet::new();
        for info in self.information.iter().filter(|info| {
            selectors.is_empty()
                || info.entities.as_ref().is_none_or(|list| {
                    selectors
                        .iter()
                        .any(|s| list.iter().any(|e| entity_info_matches(e, s)))
                })
        }) {
            match &info.attrs {
                None => return None,
                Some(a) => names.extend(a.iter().cloned()),
            }
        }
        Some(names)
    }

    /// Whether the registration's members and properties satisfy a `csf` query (5.7.2.4, 5.10).
    pub fn satisfies(&self, csf: &crate::query::q::QExpr) -> bool {
        csf.matches(&self.as_entity)
    }

    /// Whether the registration can hold data that a discovery query selects (5.10): some
    /// RegistrationInfo names entities the query's selectors can match and attributes among the
    /// query's `attrs`, the registration's properties, geometry and scope satisfy the query's
    /// q, csf, geoQ and scopeQ, and its interval overlaps the query's time range.
    pub fn matches(&self, discovery: &Discovery) -> bool {
        let Discovery { query, csf, time } = discovery;
        self.names(&query.selectors, &query.attrs)
            && query.q.as_ref().is_none_or(|q| q.matches(&self.as_entity))
            && csf.as_ref().is_none_or(|q| self.satisfies(q))
            && time.as_ref().is_none_or(|t| self.overlaps(t))
            && query
                .geo
                .as_ref()
                .is_none_or(|g| g.matches(&self.as_entity))
            && query.scope.as_ref().is_none_or(|s| {
                self.as_entity.scope.as_ref().is_some_and(|scopes| {
                    s.eval(&|p: &crate::query::ScopePattern| scopes.iter().any(|sc| p.matches(sc)))
                })
            })
    }
}

impl Registration {
    /// Whether some RegistrationInfo names entities that the selectors can select (any, when
    /// there are no selectors) and one of `attrs` (any, when empty).
    pub fn names(&self, selectors: &[Selector], attrs: &[String]) -> bool {
        self.information
            .iter()
            .any(|info| info_names(info, selectors, attrs))
    }

    /// The stored record with only the RegistrationInfo elements that the discovery's selectors
    /// and attrs name (what a registration subscription's notification shows, 5.11.7); the whole
    /// record when none does (a registration that no longer matches).
    pub fn relevant(&self, discovery: &Discovery) -> Record {
        let mut record = self.record.clone();
        let keep: Vec<bool> = self
            .information
            .iter()
            .map(|info| info_names(info, &discovery.query.selectors, &discovery.query.attrs))
            .collect();
        if keep.iter().any(|k| *k) {
            if let Some(Value::Array(infos)) = record.doc.get_mut("information") {
                let mut flags = keep.iter();
                infos.retain(|_| flags.next().copied().unwrap_or(true));
            }
        }
        record
    }

    /// Whether the registration's interval for the query's time property (observationInterval
    /// for observedAt, managementInterval for the system times) overlaps the query's range; a
    /// registration without that interval does not answer a temporal query.
    fn overlaps(&self, time: &HistoryQuery) -> bool {
        let member = match time.time_property {
            TimeProperty::ObservedAt => "observationInterval",
            _ => "managementInterval",
        };
        let Some(interval) = self.record.doc.get(member) else {
            return false;
        };
        let at = |k: &str| {
            interval
                .get(k)
                .and_then(Value::as_str)
                .and_then(|t| crate::model::validate::date_time(k, t).ok())
        };
        let Some(start) = at("startAt") else {
            return false;
        };
        let end = at("endAt");
        let starts_before_range_ends = match time.to {
            Bound::Included(t) => start <= t,
            Bound::Excluded(t) => start < t,
            Bound::Unbounded => true,
        };
        let ends_after_range_starts = match (end, time.from) {
            (None, _) | (_, Bound::Unbounded) => true,
            (Some(end), Bound::Included(t) | Bound::Excluded(t)) => end > t,
        };
        starts_before_range_ends && ends_after_range_starts
    }
}

/// One entity attribute that a registration names exactly (an exclusive registration names only
/// such): the entity's id and types and the attribute's expanded name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedAttribute {
    /// Entity id.
    pub id: String,
    /// Entity types (expanded).
    pub types: Vec<String>,
    /// Attribute name (expanded).
    pub attr: String,
}

impl Registration {
    /// The entity attributes the registration names by entity id and attribute name.
    pub fn named_attributes(&self) -> Vec<NamedAttribute> {
        let mut out = Vec::new();
        for info in &self.information {
            let (Some(entities), Some(attrs)) = (&info.entities, &info.attrs) else {
                continue;
            };
            for e in entities {
                let Some(id) = &e.id else { continue };
                for attr in attrs {
                    out.push(NamedAttribute {
                        id: id.clone(),
                        types: e.types.clone(),
                        attr: attr.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether the registration covers an attribute of an entity: some RegistrationInfo names
    /// the entity (by id, by a matching idPattern, or by one of its types alone) and the
    /// attribute (or every attribute).
    pub fn covers(&self, id: &str, types: &[String], attr: &str) -> bool {
        self.information.iter().any(|info| {
            let entity = info
                .entities
                .as_ref()
                .is_none_or(|list| list.iter().any(|e| names_entity(e, id, types)));
            entity && info.attrs.as_ref().is_none_or(|a| a.contains(attr))
        })
    }

    /// Whether some RegistrationInfo names the entity by its id (or an id pattern it matches),
    /// not by its type alone.
    pub fn names_id(&self, id: &str) -> bool {
        self.information.iter().any(|info| {
            info.entities.as_ref().is_some_and(|list| {
                list.iter().any(|e| match (&e.id, &e.id_pattern) {
                    (Some(own), _) => own == id,
                    (None, Some(p)) => p.is_match(id),
                    (None, None) => false,
                })
            })
        })
    }

    /// Whether the registration holds whole entities like this one: some RegistrationInfo names
    /// the entity and no attributes (so every attribute of it).
    pub fn holds_whole(&self, id: &str, types: &[String]) -> bool {
        self.information.iter().any(|info| {
            info.attrs.is_none()
                && info
                    .entities
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|e| names_entity(e, id, types)))
        })
    }

    /// The entity selectors of the registration's information (what entities it names, whatever
    /// the attributes): used to find local entities that a redirect registration would hide.
    pub fn selectors(&self) -> Vec<Selector> {
        let mut out = Vec::new();
        for info in &self.information {
            let Some(entities) = &info.entities else {
                out.push(Selector::default());
                continue;
            };
            for e in entities {
                out.push(Selector {
                    ids: e.id.iter().cloned().collect(),
                    id_pattern: e.id_pattern.clone(),
                    types: Some(crate::query::boolean::BoolExpr::Or(
                        e.types
                            .iter()
                            .cloned()
                            .map(crate::query::boolean::BoolExpr::Atom)
                            .collect(),
                    )),
                });
            }
        }
        out
    }
}

/// What discovery (5.10.2) and registration subscriptions select registrations by.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Entity selectors and attrs (matched against the registration's information), q, geoQ and
    /// scopeQ (matched against the registration's own members).
    pub query: EntityQuery,
    /// The context source filter (csf), over the registration's members.
    pub csf: Option<crate::query::q::QExpr>,
    /// A time range that the registration's observation or management interval must overlap.
    pub time: Option<HistoryQuery>,
}

/// Whether a RegistrationInfo names entities that the selectors can select (any, when there are
/// no selectors) and one of `attrs` (any, when empty).
fn info_names(info: &Info, selectors: &[Selector], attrs: &[String]) -> bool {
    let entities = selectors.is_empty()
        || info.entities.as_ref().is_none_or(|list| {
            selectors
                .iter()
                .any(|s| list.iter().any(|e| entity_info_matches(e, s)))
        });
    let names = attrs.is_empty()
        || info
            .attrs
            .as_ref()
            .is_none_or(|names| attrs.iter().any(|a| names.contains(a)));
    entities && names
}

/// Whether an EntityInfo names the entity with this id and one of these types (any type when
/// none is known).
fn names_entity(e: &EntityInfo, id: &str, types: &[String]) -> bool {
    (types.is_empty() || e.types.iter().any(|t| types.contains(t)))
        && match (&e.id, &e.id_pattern) {
            (Some(own), _) => own == id,
            (None, Some(p)) => p.is_match(id),
            (None, None) => true,
        }
}

/// Whether an EntityInfo can name entities an entity selector selects. An id pattern cannot be
/// intersected with another exactly, so it is taken to match whatever the other side allows.
fn entity_info_matches(info: &EntityInfo, s: &Selector) -> bool {
    let types = s
        .types
        .as_ref()
        .is_none_or(|t| t.eval(&|ty: &String| info.types.contains(ty)));
    let ids = if !s.ids.is_empty() {
        match (&info.id, &info.id_pattern) {
            (Some(id), _) => s.ids.contains(id),
            (None, Some(p)) => s.ids.iter().any(|id| p.is_match(id)),
            (None, None) => true,
        }
    } else if let Some(pattern) = &s.id_pattern {
        info.id.as_ref().is_none_or(|id| pattern.is_match(id))
    } else {
        true
    };
    types && ids
}

/// The registration as an entity for the query engine (see [`Registration::as_entity`]).
fn as_entity(record: &Record) -> Entity {
    let mut attrs: NameMap<Vec<Attribute>> = NameMap::default();
    let attribute = |kind: AttrKind, value: Value| Attribute {
        modified_at: record.modified_at,
        ..Attribute::bare(kind, value, record.created_at)
    };
    for (name, value) in &record.doc {
        if ["location", "observationSpace", "operationSpace"].contains(&name.as_str()) {
            attrs.insert(
                format!("{CORE}{name}"),
                vec![attribute(AttrKind::GeoProperty, value.clone())],
            );
        } else if registration::is_member(name) {
            if name == "information" {
                continue;
            }
            // Members such as endpoint, mode or registrationName, for csf (core terms).
            attrs.insert(
                format!("{CORE}{name}"),
                vec![attribute(AttrKind::Property, value.clone())],
            );
        } else {
            // A registration property given as a Property object counts by its value.
            let value = match value {
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("Property") => {
                    o.get("value").cloned().unwrap_or(Value::Null)
                }
                other => other.clone(),
            };
            attrs.insert(name.clone(), vec![attribute(AttrKind::Property, value)]);
        }
    }
    let scope = match record.doc.get("scope") {
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(list)) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        _ => None,
    };
    Entity {
        id: record.id.clone(),
        types: vec![registration::TYPE.to_string()],
        scope,
        attrs,
        created_at: record.created_at,
        modified_at: record.modified_at,
        expires_at: None,
    }
}

/// The registrations of every tenant, compiled, in id order: what this instance knows of the
/// sources it federates. Kept in step with the store by the operations of this instance and, on
/// PostgreSQL, by the announcements of the others.
#[derive(Default)]
pub struct Registry {
    tenants: RwLock<HashMap<String, Arc<Vec<Arc<Registration>>>>>,
    /// When each registration was last put or removed here: a reload keeps what changed after
    /// it read the store (see [`Registry::replace_all`]).
    touched: Mutex<HashMap<(String, String), Instant>>,
    /// Held while a registration is checked against the others and written, so that two
    /// conflicting registrations made at once on this instance cannot both pass the check.
    writes: tokio::sync::Mutex<()>,
}

impl Registry {
    /// The tenants and ids of the registrations that have expired at `now` (5.9.2.4: they are
    /// to be deleted then).
    pub fn expired(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        let tenants = self.tenants.read().expect("registry lock");
        tenants
            .iter()
            .flat_map(|(tenant, list)| {
                list.iter()
                    .filter(|r| !r.is_live(now))
                    .map(|r| (tenant.clone(), r.record.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Serializes the check-and-write of registrations on this instance (4.3.6.3 consistency).
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// The registrations of a tenant, in id order.
    pub fn of(&self, tenant: &str) -> Arc<Vec<Arc<Registration>>> {
        self.tenants
            .read()
            .ok()
            .and_then(|t| t.get(tenant).cloned())
            .unwrap_or_default()
    }

    /// Whether any tenant has registrations.
    pub fn is_empty(&self) -> bool {
        self.tenants
            .read()
            .map(|t| t.values().all(|list| list.is_empty()))
            .unwrap_or(true)
    }

    /// Adds or replaces a registration.
    pub fn put(&self, tenant: &str, registration: Registration) {
        self.touch(tenant, &registration.record.id);
        let registration = Arc::new(registration);
        self.edit(tenant, |list| {
            match list.binary_search_by(|r| r.record.id.cmp(&registration.record.id)) {
                Ok(i) => list[i] = registration,
                Err(i) => list.insert(i, registration),
            }
        });
    }

    /// Forgets a registration.
    pub fn remove(&self, tenant: &str, id: &str) {
        self.touch(tenant, id);
        self.edit(tenant, |list| list.retain(|r| r.record.id != id));
    }

    /// Replaces every registration of every tenant with `all`, read from the store at
    /// `read_at`; a registration put or removed here after that keeps its state here.
    pub fn replace_all(&self, read_at: Instant, all: Vec<(String, Registration)>) {
        let newer: HashSet<(String, String)> = match self.touched.lock() {
            Ok(mut touched) => {
                touched.retain(|_, at| *at >= read_at);
                touched.keys().cloned().collect()
            }
            Err(_) => HashSet::new(),
        };
        let mut tenants: HashMap<String, Vec<Arc<Registration>>> = HashMap::new();
        for (tenant, r) in all {
            if !newer.contains(&(tenant.clone(), r.record.id.clone())) {
                tenants.entry(tenant).or_default().push(Arc::new(r));
            }
        }
        for (tenant, id) in &newer {
            if let Some(r) = self.of(tenant).iter().find(|r| &r.record.id == id) {
                tenants.entry(tenant.clone()).or_default().push(r.clone());
            }
        }
        let tenants = tenants
            .into_iter()
            .map(|(t, mut list)| {
                list.sort_by(|a, b| a.record.id.cmp(&b.record.id));
                (t, Arc::new(list))
            })
            .collect();
        if let Ok(mut t) = self.tenants.write() {
            *t = tenants;
        }
    }

    fn touch(&self, tenant: &str, id: &str) {
        if let Ok(mut touched) = self.touched.lock() {
            touched.insert((tenant.to_string(), id.to_string()), Instant::now());
        }
    }

    fn edit(&self, tenant: &str, f: impl FnOnce(&mut Vec<Arc<Registration>>)) {
        if let Ok(mut tenants) = self.tenants.write() {
            let entry = tenants.entry(tenant.to_string()).or_default();
            f(Arc::make_mut(entry));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registration(id: &str) -> Registration {
        let now = chrono::Utc::now();
        Registration::compile(Record {
            id: id.into(),
            doc: json!({"information": [{"entities": [{"type": "T"}]}], "endpoint": "http://x"})
                .as_object()
                .cloned()
                .unwrap(),
            context: None,
            created_at: now,
            modified_at: now,
            stats: Default::default(),
        })
    }

    fn ids(registry: &Registry, tenant: &str) -> Vec<String> {
        registry
            .of(tenant)
            .iter()
            .map(|r| r.record.id.clone())
            .collect()
    }

    #[test]
    fn a_reload_keeps_what_changed_after_it_read_the_store() {
        let registry = Registry::default();
        registry.put("t", registration("old"));
        registry.put("t", registration("gone-later"));
        let read_at = Instant::now();
        // After the store was read: one registration made, one deleted, here.
        registry.put("t", registration("new"));
        registry.remove("t", "gone-later");
        // The store as read then: "old" and "gone-later".
        let loaded = vec![
            ("t".to_string(), registration("gone-later")),
            ("t".to_string(), registration("old")),
        ];
        registry.replace_all(read_at, loaded);
        assert_eq!(ids(&registry, "t"), ["new", "old"]);
        // A later reload that sees neither forgets them: nothing changed here after it read.
        registry.replace_all(Instant::now(), vec![("t".to_string(), registration("old"))]);
        assert_eq!(ids(&registry, "t"), ["old"]);
    }
}
