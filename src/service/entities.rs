//! Entity lifecycle operations of clauses 5.6 (create, retrieve, delete, append, update, partial
//! update, replace, merge) as read-modify-writes of one entity, with the per-attribute results that
//! 207 responses report.

use super::AppState;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::ld::ActiveContext;
use crate::model::parse::{EntityInput, Nulls, Reader};
use crate::model::{AttrKind, Attribute, Entity, SCOPE_IRI};
use crate::query::EntityQuery;
use crate::store::{Decide, Decision, Step, Write};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;

/// Outcome of an operation on several attributes: which were changed and which not (and why).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UpdateResult {
    /// Expanded names of the attributes changed.
    pub updated: Vec<String>,
    /// Expanded names of the attributes left alone, with the reason.
    pub not_updated: Vec<(String, String)>,
}

/// Attribute instances by expanded name, as parsed from a request.
pub type Attrs = crate::model::NameMap<Vec<Attribute>>;

/// The entity an operation addresses: tenant, id and the optional `type` selector (any of these
/// expanded types must be among the entity's, else the entity counts as not found).
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Tenant ("" for the default).
    pub tenant: String,
    /// Entity id.
    pub id: String,
    /// Expanded types of the `type` selector; empty when none was given.
    pub types: Vec<String>,
}

impl Target {
    /// A target without type selector.
    pub fn new(tenant: &str, id: &str) -> Target {
        Target {
            tenant: tenant.to_string(),
            id: id.to_string(),
            types: Vec::new(),
        }
    }

    fn matches(&self, entity: &Entity) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| entity.types.contains(t))
    }
}

/// What a purge (5.6.21) removes from each entity it selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Purged {
    /// The whole entity.
    Entity,
    /// These attributes (`drop`, expanded names); the entity stays.
    Attrs(Vec<String>),
    /// Every attribute but these (`keep`, expanded names); the entity stays.
    AllBut(Vec<String>),
}

/// How many entities one store write of a purge takes on: one transaction each, whose deletions
/// are one statement on PostgreSQL, so that a purge of any size holds neither all its entities in
/// memory nor one long transaction.
const PURGE_CHUNK: usize = 1000;

fn missing(id: &str) -> NgsiError {
    NgsiError::not_found(format!("there is no entity with id '{id}'"))
}

fn no_attribute(id: &str, name: &str) -> NgsiError {
    NgsiError::not_found(format!("entity '{id}' has no attribute '{name}'"))
}

fn no_instance(id: &str, name: &str, dataset_id: Option<&str>) -> NgsiError {
    match dataset_id {
        Some(d) => NgsiError::not_found(format!(
            "attribute '{name}' of entity '{id}' has no instance with datasetId '{d}'"
        )),
        None => NgsiError::not_found(format!(
            "attribute '{name}' of entity '{id}' has no default instance (without datasetId)"
        )),
    }
}

/// Puts an instance in place of the one with the same datasetId (keeping its createdAt) or adds it.
fn put_instance(list: &mut Vec<Attribute>, mut new: Attribute) {
    match list.iter_mut().find(|a| a.dataset_id == new.dataset_id) {
        Some(old) => {
            new.created_at = old.created_at;
            *old = new;
        }
        None => list.push(new),
    }
}

/// Removes the instance with this datasetId; false when there was none.
fn remove_instance(attrs: &mut Attrs, name: &str, dataset_id: Option<&str>) -> bool {
    let Some(list) = attrs.get_mut(name) else {
        return false;
    };
    let before = list.len();
    list.retain(|a| a.dataset_id.as_deref() != dataset_id);
    let removed = list.len() != before;
    if list.is_empty() {
        attrs.shift_remove(name);
    }
    removed
}

/// Merges a patch into an attribute instance (clause 5.5.11 merge): given members replace, absent
/// members stay, NGSI-LD Null sub-attributes are removed. The kind may not change.
/// `patch_values` (merge entity) also merges compound values key by key; otherwise a given value
/// replaces the old one.
fn merge_instance(
    old: &Attribute,
    patch: Attribute,
    name: &str,
    now: DateTime<Utc>,
    patch_values: bool,
) -> NgsiResult<Attribute> {
    if !patch.value.is_null() && patch.kind != old.kind {
        return Err(NgsiError::bad_data(format!(
            "attribute '{name}' is a {}; a partial update cannot make it a {} (replace the attribute instead)",
            old.kind.name(),
            patch.kind.name()
        )));
    }
    let mut merged = old.clone();
    if !patch.value.is_null() {
        merged.value = match (&old.value, patch.value) {
            (Value::Object(_), Value::Object(p))
                if patch_values && old.kind == AttrKind::Property =>
            {
                let mut value = old.value.clone();
                merge_patch(&mut value, p);
                value
            }
            (_, p) => p,
        };
    }
    merged.observed_at = patch.observed_at.or(merged.observed_at);
    merged.unit_code = patch.unit_code.or(merged.unit_code);
    merged.object_type = patch.object_type.or(merged.object_type);
    merged.expires_at = patch.expires_at.or(merged.expires_at);
    for (sub_name, sub) in patch.sub {
        if sub.is_null() {
            merged.sub.shift_remove(&sub_name);
        } else if let Some(existing) = merged.sub.get(&sub_name) {
            let m = merge_instance(existing, sub, &sub_name, now, patch_values)?;
            merged.sub.insert(sub_name, m);
        } else {
            merged.sub.insert(sub_name, sub);
        }
    }
    merged.modified_at = now;
    Ok(merged)
}

/// JSON merge patch (RFC 7396) of a compound value, NGSI-LD Null counting as null.
fn merge_patch(target: &mut Value, patch: serde_json::Map<String, Value>) {
    let Value::Object(map) = target else {
        *target = Value::Object(patch);
        return;
    };
    for (k, v) in patch {
        let is_null = v.is_null() || v.as_str() == Some(crate::model::NGSI_LD_NULL);
        match v {
            _ if is_null => {
                map.shift_remove(&k);
            }
            Value::Object(inner) => merge_patch(map.entry(k).or_insert(Value::Null), inner),
            other => {
                map.insert(k, other);
            }
        }
    }
}

/// Applies attribute instances to an entity for append and update: `allowed(exists, datasetId)`
/// says whether an instance may be written (or why not); NGSI-LD Null deletes; the outcome per
/// attribute goes into `result`.
fn apply_instances(
    entity: &mut Entity,
    attrs: Attrs,
    result: &mut UpdateResult,
    allowed: impl Fn(bool, &Attribute) -> Result<(), String>,
) {
    for (name, instances) in attrs {
        let mut changed = false;
        for instance in instances {
            let dataset_id = instance.dataset_id.clone();
            let exists = entity.instance(&name, dataset_id.as_deref()).is_some();
            if let Err(reason) = allowed(exists, &instance) {
                result.not_updated.push((name.clone(), reason));
            } else if instance.is_null() {
                changed |= remove_instance(&mut entity.attrs, &name, dataset_id.as_deref());
            } else {
                put_instance(entity.attrs.entry(name.clone()).or_default(), instance);
                changed = true;
            }
        }
        if changed {
            result.updated.push(name);
        }
    }
}

fn add_types(entity: &mut Entity, types: Vec<String>) {
    for t in types {
        if !entity.types.contains(&t) {
            entity.types.push(t);
        }
    }
}

impl AppState {
    /// Creates an entity (5.6.1); AlreadyExists if the id is taken in the tenant.
    pub async fn create_entity(
        &self,
        tenant: &str,
        input: EntityInput,
        now: DateTime<Utc>,
    ) -> NgsiResult<String> {
        let entity = new_entity(input, now)?;
        let id = entity.id.clone();
        self.write_one(tenant, &id, move |current| {
            create(current, entity).map(Decision::from)
        })
        .await?;
        Ok(id)
    }

    /// Retrieves an entity (5.7.1).
    pub async fn retrieve_entity(&self, target: &Target) -> NgsiResult<Arc<Entity>> {
        self.require_tenant(&target.tenant).await?;
        self.store
            .get(&target.tenant, &target.id)
            .await?
            .filter(|e| target.matches(e))
            .ok_or_else(|| missing(&target.id))
    }

    /// The entity a Relationship points to, for Linked Entity Retrieval (4.5.23): read as is (no
    /// type to match), and `None` when there is none, which leaves the link unjoined.
    pub async fn linked_entity(&self, tenant: &str, id: &str) -> NgsiResult<Option<Arc<Entity>>> {
        self.store.get(tenant, id).await
    }

    /// Deletes an entity (5.6.6).
    pub async fn delete_entity(&self, target: &Target) -> NgsiResult<()> {
        self.decide(target, |t, current| match current {
            Some(e) if t.matches(e) => Ok((Write::Delete, ())),
            _ => Err(missing(&t.id)),
        })
        .await
    }

    /// Purges the entities of the tenant that `query` selects (5.6.21): deletes them, or the
    /// attributes `purged` names. The matches are taken on a chunk at a time in id order, each
    /// chunk in one store write that checks every entity still matches when it is locked, and
    /// records history and notifies like any delete or attribute deletion.
    pub async fn purge_entities(
        &self,
        tenant: &str,
        query: EntityQuery,
        purged: Purged,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        self.require_tenant(tenant).await?;
        let (query, purged) = (Arc::new(query), Arc::new(purged));
        let mut after: Option<String> = None;
        loop {
            let chunk = self
                .store
                .matching_ids(tenant, &query, after.as_deref(), PURGE_CHUNK)
                .await?;
            let steps: Vec<Step<()>> = chunk
                .ids
                .into_iter()
                .map(|id| {
                    let (query, purged) = (query.clone(), purged.clone());
                    let decide: Decide<()> = Box::new(move |current| {
                        Ok(Decision::from((purge(current, &query, &purged, now), ())))
                    });
                    (id, decide)
                })
                .collect();
            if !steps.is_empty() {
                // Every step decides Ok: only the store itself can fail.
                self.store.modify_many(tenant, steps).await?;
            }
            match chunk.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Runs `change` on the existing entity and stores the result (NotFound when it is missing).
    async fn change<R, F>(&self, target: &Target, change: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Entity) -> NgsiResult<R> + Send + 'static,
    {
        self.decide(target, move |t, current| {
            change_existing(t, current, change)
        })
        .await
    }

    /// Runs a decision on the stored state of the target entity (in a tenant that must exist),
    /// and writes what it decides.
    async fn decide<R, D>(&self, target: &Target, decide: D) -> NgsiResult<R>
    where
        R: Send + 'static,
        D: FnOnce(&Target, Option<&Entity>) -> NgsiResult<(Write, R)> + Send + 'static,
    {
        self.require_tenant(&target.tenant).await?;
        let t = target.clone();
        self.write_one(&target.tenant, &target.id, move |current| {
            decide(&t, current).map(Decision::from)
        })
        .await
    }

    /// Appends attributes (5.6.3): new ones are added, existing ones replaced unless `no_overwrite`,
    /// NGSI-LD Null ones deleted; body types are added to the entity.
    pub async fn append_attrs(
        &self,
        target: &Target,
        input: EntityInput,
        no_overwrite: bool,
        now: DateTime<Utc>,
    ) -> NgsiResult<UpdateResult> {
        self.change(target, append(input, no_overwrite, now)).await
    }

    /// Updates attributes (5.6.2): each given instance replaces the one with its datasetId, and
    /// is appended when the entity has none (5.6.2.4); the scope is replaced only when the entity
    /// has one, and the deletion of what the entity lacks is reported as not updated.
    pub async fn update_attrs(
        &self,
        target: &Target,
        input: EntityInput,
        now: DateTime<Utc>,
    ) -> NgsiResult<UpdateResult> {
        self.change(target, move |entity| {
            let mut result = UpdateResult::default();
            add_types(entity, input.types);
            if let Some(expiry) = input.expires_at {
                entity.expires_at = expiry;
            }
            if let Some(scope) = input.scope {
                if entity.scope.is_some() {
                    entity.scope = Some(scope);
                    result.updated.push(SCOPE_IRI.to_string());
                } else {
                    result
                        .not_updated
                        .push((SCOPE_IRI.to_string(), "the entity has no scope".into()));
                }
            }
            // 5.6.2.4: an attribute (or datasetId instance) the entity lacks is appended; only
            // the deletion of one it lacks is not done.
            apply_instances(entity, input.attrs, &mut result, |exists, instance| match (
                exists || !instance.is_null(),
                &instance.dataset_id,
            ) {
                (true, _) => Ok(()),
                (false, Some(d)) => Err(format!(
                    "the attribute has no instance with datasetId '{d}' to delete"
                )),
                (false, None) => Err("the attribute does not exist".to_string()),
            });
            entity.modified_at = now;
            Ok(result)
        })
        .await
    }

    /// Partially updates one attribute (5.6.4): the fragment, read with `ctx` as an update of the
    /// attribute's kind (it may leave out type and value), is merged into the existing instance
    /// with the same datasetId. The kind is that of the stored attribute as the write sees it, so
    /// reading, deciding and writing are one atomic step. `name` is the attribute as the request
    /// names it, `iri` expanded.
    pub async fn partial_update_attr(
        &self,
        target: &Target,
        (name, iri): (&str, &str),
        fragment: Value,
        ctx: Arc<ActiveContext>,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        let (id_owned, name, name_owned) = (target.id.clone(), name.to_string(), iri.to_string());
        self.change(target, move |entity| {
            let kind = entity
                .attrs
                .get(&name_owned)
                .and_then(|i| i.first())
                .map(|a| a.kind)
                .ok_or_else(|| no_attribute(&id_owned, &name))?;
            let instances = Reader::new(&ctx, now, Nulls::Delete).attribute_fragment(
                kind,
                &name,
                &name_owned,
                &fragment,
            )?;
            for patch in instances {
                let dataset_id = patch.dataset_id.clone();
                let old = entity
                    .instance(&name_owned, dataset_id.as_deref())
                    .ok_or_else(|| no_instance(&id_owned, &name_owned, dataset_id.as_deref()))?;
                if patch.is_null() {
                    remove_instance(&mut entity.attrs, &name_owned, dataset_id.as_deref());
                } else {
                    let merged = merge_instance(old, patch, &name_owned, now, false)?;
                    put_instance(entity.attrs.entry(name_owned.clone()).or_default(), merged);
                }
            }
            entity.modified_at = now;
            Ok(())
        })
        .await
    }

    /// Replaces one attribute instance (5.6.19); the attribute must exist.
    pub async fn replace_attr(
        &self,
        target: &Target,
        name: &str,
        instances: Vec<Attribute>,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        let (id_owned, name_owned) = (target.id.clone(), name.to_string());
        self.change(target, move |entity| {
            let held = entity.attrs.get(&name_owned);
            // The instance replaced is the one with the same datasetId (5.6.19.4).
            let missing = instances.iter().find(|new| {
                !held.is_some_and(|list| list.iter().any(|a| a.dataset_id == new.dataset_id))
            });
            match (held, missing) {
                (None, _) => return Err(no_attribute(&id_owned, &name_owned)),
                (Some(_), Some(new)) => {
                    return Err(NgsiError::not_found(format!(
                        "entity '{id_owned}' has no instance of attribute '{name_owned}' with {}; replacing an attribute replaces an existing instance",
                        new.dataset_id
                            .as_deref()
                            .map_or("no datasetId (the default instance)".to_string(), |d| format!("datasetId '{d}'"))
                    )))
                }
                (Some(_), None) => {}
            }
            for instance in instances {
                put_instance(
                    entity.attrs.entry(name_owned.clone()).or_default(),
                    instance,
                );
            }
            entity.modified_at = now;
            Ok(())
        })
        .await
    }

    /// Deletes one attribute instance, or every instance with `delete_all` (5.6.5).
    pub async fn delete_attr(
        &self,
        target: &Target,
        name: &str,
        dataset_id: Option<String>,
        delete_all: bool,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        let (id_owned, name_owned) = (target.id.clone(), name.to_string());
        self.change(target, move |entity| {
            if name_owned == SCOPE_IRI && entity.scope.is_some() {
                entity.scope = None;
                entity.modified_at = now;
                return Ok(());
            }
            if !entity.attrs.contains_key(&name_owned) {
                return Err(no_attribute(&id_owned, &name_owned));
            }
            if delete_all {
                entity.attrs.shift_remove(&name_owned);
            } else if !remove_instance(&mut entity.attrs, &name_owned, dataset_id.as_deref()) {
                return Err(no_instance(&id_owned, &name_owned, dataset_id.as_deref()));
            }
            entity.modified_at = now;
            Ok(())
        })
        .await
    }

    /// Merges a fragment into an entity (5.6.17): attributes are merged instance by instance,
    /// NGSI-LD Null removes, types are added, scope replaced when given.
    pub async fn merge_entity(
        &self,
        target: &Target,
        input: EntityInput,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        check_body_id(&target.id, input.id.as_deref())?;
        self.change(target, merge(input, now)).await
    }

    /// Replaces an entity (5.6.18): all attributes and, when given, the types; createdAt stays.
    pub async fn replace_entity(
        &self,
        target: &Target,
        input: EntityInput,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        check_body_id(&target.id, input.id.as_deref())?;
        self.decide(target, move |t, current| replace(t, current, input, now))
            .await
    }
}

/// The write a purge decides for one entity: none when it no longer matches the purge's query
/// (it changed since it was selected) or has none of the attributes to remove.
fn purge(
    current: Option<&Entity>,
    query: &EntityQuery,
    purged: &Purged,
    now: DateTime<Utc>,
) -> Write {
    let Some(entity) = current.filter(|e| query.matches(e)) else {
        return Write::Keep;
    };
    // The names listed, and whether those are the attributes that stay.
    let (names, listed_stay) = match purged {
        Purged::Entity => return Write::Delete,
        Purged::Attrs(names) => (names, false),
        Purged::AllBut(names) => (names, true),
    };
    let stays = |name: &String| names.contains(name) == listed_stay;
    if entity.attrs.keys().all(stays) {
        return Write::Keep;
    }
    let mut changed = entity.clone();
    changed.attrs.retain(|name, _| stays(name));
    changed.modified_at = now;
    Write::Put(changed)
}

/// Fails unless the id in a body is absent or the one in the URL.
fn check_body_id(path_id: &str, body_id: Option<&str>) -> NgsiResult<()> {
    match body_id {
        Some(b) if b != path_id => Err(NgsiError::bad_data(format!(
            "the body's id '{b}' differs from the id '{path_id}' in the URL"
        ))),
        _ => Ok(()),
    }
}

/// The entity a create writes, from its parsed input (which must have an id and a type).
pub(crate) fn new_entity(input: EntityInput, now: DateTime<Utc>) -> NgsiResult<Entity> {
    let id = input
        .id
        .ok_or_else(|| NgsiError::bad_data("the entity has no id"))?;
    if input.types.is_empty() {
        return Err(NgsiError::bad_data("the entity has no type"));
    }
    Ok(Entity {
        id,
        types: input.types,
        scope: input.scope,
        attrs: input.attrs,
        created_at: now,
        modified_at: now,
        expires_at: input.expires_at.flatten(),
    })
}

/// The decision of a create: write the entity unless its id is taken.
pub(crate) fn create(current: Option<&Entity>, entity: Entity) -> NgsiResult<(Write, ())> {
    match current {
        Some(_) => Err(NgsiError::new(
            ErrorKind::AlreadyExists,
            format!("an entity with id '{}' exists already", entity.id),
        )),
        None => Ok((Write::Put(entity), ())),
    }
}

/// The decision of a change of an existing entity: `change` runs on a copy of it, which is
/// written; NotFound when the entity is missing or not of the target's types.
pub(crate) fn change_existing<R>(
    target: &Target,
    current: Option<&Entity>,
    change: impl FnOnce(&mut Entity) -> NgsiResult<R>,
) -> NgsiResult<(Write, R)> {
    let mut entity = current
        .filter(|e| target.matches(e))
        .cloned()
        .ok_or_else(|| missing(&target.id))?;
    let result = change(&mut entity)?;
    Ok((Write::Put(entity), result))
}

/// The change of an append (5.6.3), see [`AppState::append_attrs`].
pub(crate) fn append(
    input: EntityInput,
    no_overwrite: bool,
    now: DateTime<Utc>,
) -> impl FnOnce(&mut Entity) -> NgsiResult<UpdateResult> + Send + 'static {
    move |entity| {
        let mut result = UpdateResult::default();
        add_types(entity, input.types);
        if let Some(expiry) = input.expires_at {
            entity.expires_at = expiry;
        }
        if let Some(scope) = input.scope {
            match &mut entity.scope {
                Some(existing) if no_overwrite => {
                    for s in scope {
                        if !existing.contains(&s) {
                            existing.push(s);
                        }
                    }
                }
                _ => entity.scope = Some(scope),
            }
            result.updated.push(SCOPE_IRI.to_string());
        }
        apply_instances(entity, input.attrs, &mut result, |exists, _| {
            if exists && no_overwrite {
                Err("the attribute exists and options=noOverwrite was given".into())
            } else {
                Ok(())
            }
        });
        entity.modified_at = now;
        Ok(result)
    }
}

/// The change of a merge (5.6.17), see [`AppState::merge_entity`].
pub(crate) fn merge(
    input: EntityInput,
    now: DateTime<Utc>,
) -> impl FnOnce(&mut Entity) -> NgsiResult<()> + Send + 'static {
    move |entity| {
        add_types(entity, input.types);
        if input.scope.is_some() {
            entity.scope = input.scope;
        }
        if let Some(expiry) = input.expires_at {
            entity.expires_at = expiry;
        }
        for (name, instances) in input.attrs {
            for patch in instances {
                let dataset_id = patch.dataset_id.clone();
                if patch.is_null() {
                    remove_instance(&mut entity.attrs, &name, dataset_id.as_deref());
                    continue;
                }
                let merged = match entity.instance(&name, dataset_id.as_deref()) {
                    Some(old) => merge_instance(old, patch, &name, now, true)?,
                    None => patch,
                };
                put_instance(entity.attrs.entry(name.clone()).or_default(), merged);
            }
        }
        entity.modified_at = now;
        Ok(())
    }
}

/// The decision of a replace (5.6.18, and batch upsert with options=replace), see
/// [`AppState::replace_entity`]: NotFound when the entity is missing or not of the target's types.
pub(crate) fn replace(
    target: &Target,
    current: Option<&Entity>,
    input: EntityInput,
    now: DateTime<Utc>,
) -> NgsiResult<(Write, ())> {
    // The stored attributes all go: only the identity, the creation time and (unless the input
    // names some) the types are taken over, so the stored entity is not copied whole.
    let stored = current
        .filter(|e| target.matches(e))
        .ok_or_else(|| missing(&target.id))?;
    let types = if input.types.is_empty() {
        stored.types.clone()
    } else {
        input.types
    };
    let entity = Entity {
        id: stored.id.clone(),
        types,
        scope: input.scope,
        attrs: input.attrs,
        created_at: stored.created_at,
        modified_at: now,
        expires_at: input.expires_at.flatten(),
    };
    Ok((Write::Put(entity), ()))
}
