//! Temporal API operations (5.6.11–5.6.16, 5.7.3–5.7.4) over the history both stores record.
//!
//! Provision writes instances with their own observedAt straight into the history and keeps the
//! current entity in step: an instance set (attribute + datasetId) takes the given instance with
//! the latest observedAt unless the current one was observed later. So the temporal and the current
//! representation are one entity, as the history of ordinary writes already assumes. Given
//! instances replace recorded ones of the same attribute, datasetId and observedAt, so posting a
//! representation again is idempotent. The current entity, its history and its change-feed entry
//! are written in one store transaction (a [`Decision`] with a history [`Removal`]), as every
//! entity write is. A given NGSI-LD Null instance is deletion history: recorded with deletedAt, it
//! removes the current instance it is later than. Deleting a temporal entity removes both;
//! deleting temporal attributes or instances edits the history only.

use super::entities::Target;
use super::query::{Page, QueryResult};
use super::AppState;
use crate::error::{NgsiError, NgsiResult};
use crate::federation::forward::Reach;
use crate::model::parse::EntityInput;
use crate::model::{Attribute, Entity};
use crate::query::EntityQuery;
use crate::store::entity_maps::EntityMap;
use crate::store::history::{self, HistoryQuery, HistoryRemoval, InstanceChange, TimeProperty};
use crate::store::{Decision, Removal, Write};
use crate::temporal::render::{Content, TemporalEntity};
use crate::temporal::scope::{ScopeTimeline, Span};
use crate::temporal::{Representation, TemporalQuery};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

/// Where a temporal response was cut because an attribute had more instances than the broker
/// returns at once (6.3.10 Content-Range `date-time <first>-<last>/<size>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// Where the returned range starts (the query's bound on the side the instances come from).
    pub first: DateTime<Utc>,
    /// Where it ends: the last returned instance.
    pub last: DateTime<Utc>,
    /// The number of instances asked for with lastN, if any.
    pub size: Option<usize>,
}

/// A page of temporal query results.
#[derive(Debug)]
pub struct TemporalPage {
    /// The entities, in id order.
    pub entities: Vec<TemporalEntity>,
    /// Entities matched: the total when counted, else enough to tell whether a next page exists.
    pub seen: usize,
    /// Set when instances were left out.
    pub cut: Option<Cut>,
}

fn missing(id: &str) -> NgsiError {
    NgsiError::not_found(format!("there is no temporal entity with id '{id}'"))
}

fn no_instance(target: &Target, attr: &str, instance_id: &str) -> NgsiError {
    NgsiError::not_found(format!(
        "attribute '{attr}' of temporal entity '{}' has no instance '{instance_id}'",
        target.id
    ))
}

fn observed(a: &Attribute) -> Option<DateTime<Utc>> {
    a.observed_at
        .as_deref()
        .and_then(|t| crate::model::validate::date_time("observedAt", t).ok())
}

/// Brings the current entity up to date with temporal instances: per instance set, the latest
/// observed of the given instances replaces the current one unless that was observed later.
fn apply_latest(entity: &mut Entity, attrs: &crate::service::entities::Attrs) {
    for (name, instances) in attrs {
        let mut latest: Vec<&Attribute> = Vec::new();
        for a in instances {
            match latest.iter_mut().find(|l| l.dataset_id == a.dataset_id) {
                Some(l) if observed(a) >= observed(l) => *l = a,
                Some(_) => {}
                None => latest.push(a),
            }
        }
        let list = entity.attrs.entry(name.clone()).or_default();
        for a in latest {
            let at = list.iter().position(|c| c.dataset_id == a.dataset_id);
            match at.map(|i| (i, &mut list[i])) {
                Some((_, current)) if observed(current) > observed(a) => {}
                Some((i, _)) if a.is_null() => {
                    list.remove(i);
                }
                Some((_, current)) => {
                    let created = current.created_at;
                    *current = a.clone();
                    current.created_at = created;
                }
                None if a.is_null() => {}
                None => list.push(a.clone()),
            }
        }
        if list.is_empty() {
            entity.attrs.shift_remove(name);
        }
    }
}

/// The scopes of the latest observed of given Scope instances (their values were checked when
/// read).
fn latest_scope(instances: &[Attribute]) -> Option<Vec<String>> {
    let latest = instances.iter().max_by_key(|a| observed(a))?;
    crate::model::parse::scopes(&latest.value).ok()
}

/// The history records of given instances; an NGSI-LD Null instance is a deletion record (no
/// value) deleted at its observedAt, or when it was given.
fn records(attrs: &crate::service::entities::Attrs) -> Vec<InstanceChange> {
    attrs
        .iter()
        .flat_map(|(name, instances)| {
            instances.iter().map(|a| {
                let mut r = history::written(name, a);
                if a.is_null() {
                    r.value = None;
                    r.deleted_at = Some(r.observed_at.unwrap_or(r.modified_at));
                }
                r
            })
        })
        .collect()
}

/// The decision of a temporal provision: `write`, with `extra` and the records of the given
/// instances as history, replacing the recorded instances of the same attribute, datasetId and
/// observedAt (posting a temporal representation again is idempotent).
fn instances_recorded<R>(
    write: Write,
    extra: Vec<InstanceChange>,
    attrs: &crate::service::entities::Attrs,
    result: R,
) -> Decision<R> {
    let mut add = extra;
    let given = records(attrs);
    let same = given
        .iter()
        .filter_map(|r| Some((r.attr.clone()?, r.dataset_id.clone(), r.observed_at?)))
        .collect();
    add.extend(given);
    Decision {
        write,
        records: Some(add),
        removal: Some(Removal {
            which: HistoryRemoval::Observations(same),
            if_none: None,
        }),
        result,
    }
}

/// Merges a patch into a stored instance (5.6.15): given members replace, the rest stays.
fn patched(old: &Attribute, patch: Attribute, now: DateTime<Utc>) -> NgsiResult<Attribute> {
    if patch.kind != old.kind {
        return Err(NgsiError::bad_data(format!(
            "the instance is a {}; a patch cannot make it a {}",
            old.kind.name(),
            patch.kind.name()
        )));
    }
    let mut a = old.clone();
    if !patch.value.is_null() {
        a.value = patch.value;
    }
    a.observed_at = patch.observed_at.or(a.observed_at);
    a.unit_code = patch.unit_code.or(a.unit_code);
    a.object_type = patch.object_type.or(a.object_type);
    a.sub.extend(patch.sub);
    a.modified_at = now;
    Ok(a)
}

impl AppState {
    /// Creates a temporal entity or adds instances to it (5.6.11); true when it was created.
    pub async fn upsert_temporal(
        &self,
        tenant: &str,
        input: EntityInput,
        now: DateTime<Utc>,
    ) -> NgsiResult<bool> {
        let id = input
            .id
            .ok_or_else(|| NgsiError::bad_data("the temporal entity has no id"))?;
        let (types, scope, mut attrs) = (input.types, input.scope, input.attrs);
        let attrs_for_history = attrs.clone();
        let scope_instances = attrs.shift_remove(history::SCOPE_IRI);
        let id_owned = id.clone();
        self.write_one(tenant, &id, move |current| {
            let created = current.is_none();
            let mut entity = match current {
                Some(e) => e.clone(),
                None if types.is_empty() => {
                    return Err(NgsiError::bad_data(
                        "the temporal entity has no type (needed to create it)",
                    ))
                }
                None => Entity {
                    id: id_owned,
                    types: Vec::new(),
                    scope: None,
                    attrs: Default::default(),
                    created_at: now,
                    modified_at: now,
                    expires_at: None,
                },
            };
            for t in types {
                if !entity.types.contains(&t) {
                    entity.types.push(t);
                }
            }
            apply_latest(&mut entity, &attrs);
            entity.modified_at = now;
            // Scope instances are recorded as given (below); a plain scope is a change
            // made now, recorded like one from the Core API.
            let records = match (scope_instances.as_deref(), scope) {
                (Some(given), _) => {
                    entity.scope = latest_scope(given).or(entity.scope);
                    Vec::new()
                }
                (None, Some(scope)) => {
                    entity.scope = Some(scope);
                    history::scope_changes(current, Some(&entity), now)
                }
                (None, None) => Vec::new(),
            };
            Ok(instances_recorded(
                Write::Put(entity),
                records,
                &attrs_for_history,
                created,
            ))
        })
        .await
    }

    /// Adds attribute instances to an existing temporal entity (5.6.12).
    pub async fn append_temporal(
        &self,
        target: &Target,
        attrs: crate::service::entities::Attrs,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        self.require_tenant(&target.tenant).await?;
        let id = target.id.clone();
        self.write_one(&target.tenant, &target.id, move |current| {
            let mut entity = current.cloned().ok_or_else(|| missing(&id))?;
            apply_latest(&mut entity, &attrs);
            entity.modified_at = now;
            Ok(instances_recorded(
                Write::Put(entity),
                Vec::new(),
                &attrs,
                (),
            ))
        })
        .await
    }

    /// Deletes a temporal entity (5.6.16): its history and its current representation.
    pub async fn delete_temporal(&self, target: &Target) -> NgsiResult<()> {
        self.require_tenant(&target.tenant).await?;
        let id = target.id.clone();
        self.write_one(&target.tenant, &target.id, move |current| {
            // Without a current entity, it exists as a temporal entity if it has a history.
            let (write, if_none) = match current {
                Some(_) => (Write::Delete, None),
                None => (Write::Keep, Some(missing(&id))),
            };
            Ok(Decision {
                write,
                records: Some(Vec::new()),
                removal: Some(Removal {
                    which: HistoryRemoval::Entity,
                    if_none,
                }),
                result: (),
            })
        })
        .await
    }

    /// Edits the history of one entity only (temporal attribute and instance deletion and
    /// instance modification): removes what `which` selects, or answers `if_none` when that is
    /// nothing, and adds `add`, in one transaction with the entity locked.
    async fn edit_history(
        &self,
        target: &Target,
        which: HistoryRemoval,
        add: Vec<InstanceChange>,
        if_none: NgsiError,
    ) -> NgsiResult<()> {
        self.write_one(&target.tenant, &target.id, move |_| {
            Ok(Decision {
                write: Write::Keep,
                records: Some(add),
                removal: Some(Removal {
                    which,
                    if_none: Some(if_none),
                }),
                result: (),
            })
        })
        .await
    }

    /// Deletes the history of an attribute (5.6.13): of one datasetId (`None`: the default
    /// instance) or of all with `delete_all`.
    pub async fn delete_temporal_attr(
        &self,
        target: &Target,
        attr: &str,
        dataset_id: Option<String>,
        delete_all: bool,
    ) -> NgsiResult<()> {
        self.require_tenant(&target.tenant).await?;
        let removal = HistoryRemoval::Attribute {
            attr: attr.to_string(),
            dataset_id: (!delete_all).then(|| dataset_id.clone()),
        };
        let none = NgsiError::not_found(format!(
            "temporal entity '{}' has no instances of attribute '{attr}'{}",
            target.id,
            match (&dataset_id, delete_all) {
                (_, true) => String::new(),
                (Some(d), _) => format!(" with datasetId '{d}'"),
                (None, _) => " without datasetId".to_string(),
            }
        ));
        self.edit_history(target, removal, Vec::new(), none).await
    }

    /// The stored record of one attribute instance.
    async fn instance_record(
        &self,
        target: &Target,
        attr: &str,
        instance_id: &str,
    ) -> NgsiResult<InstanceChange> {
        let query = HistoryQuery {
            attr: Some(attr.to_string()),
            time_property: TimeProperty::ModifiedAt,
            ..HistoryQuery::default()
        };
        self.store
            .history(&target.tenant, &target.id, &query)
            .await?
            .into_iter()
            .find(|r| r.instance_id == instance_id && r.value.is_some())
            .ok_or_else(|| no_instance(target, attr, instance_id))
    }

    /// Modifies one attribute instance (5.6.15), keeping its instanceId.
    pub async fn patch_temporal_instance(
        &self,
        target: &Target,
        attr: &str,
        instance_id: &str,
        patch: Attribute,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        self.require_tenant(&target.tenant).await?;
        let old = self.instance_record(target, attr, instance_id).await?;
        let stored: Attribute = old
            .value
            .as_ref()
            .and_then(|v| v.parse())
            .ok_or_else(|| NgsiError::internal("a stored instance does not decode"))?;
        let mut record = history::written(attr, &patched(&stored, patch, now)?);
        record.instance_id = old.instance_id.clone();
        record.created_at = old.created_at;
        let removal = HistoryRemoval::Instance {
            attr: attr.to_string(),
            instance_id: instance_id.to_string(),
        };
        // Patched concurrently or deleted since it was read: the record is replaced, or not found.
        self.edit_history(
            target,
            removal,
            vec![record],
            no_instance(target, attr, instance_id),
        )
        .await
    }

    /// Deletes one attribute instance (5.6.14).
    pub async fn delete_temporal_instance(
        &self,
        target: &Target,
        attr: &str,
        instance_id: &str,
    ) -> NgsiResult<()> {
        self.require_tenant(&target.tenant).await?;
        let removal = HistoryRemoval::Instance {
            attr: attr.to_string(),
            instance_id: instance_id.to_string(),
        };
        let none = no_instance(target, attr, instance_id);
        self.edit_history(target, removal, Vec::new(), none).await
    }

    /// Retrieves the temporal evolution of one entity (5.7.3).
    pub async fn retrieve_temporal(
        &self,
        target: &Target,
        query: &TemporalQuery,
    ) -> NgsiResult<(TemporalEntity, Option<Cut>)> {
        let entity = self.retrieve_entity(target).await?;
        let (mut entities, cut) = self
            .evolutions(&target.tenant, vec![entity], query, None)
            .await?;
        let te = entities.pop().ok_or_else(|| missing(&target.id))?;
        Ok((te, cut))
    }

    /// Queries the temporal evolution of entities (5.7.4): the entities `selection` matches, a
    /// page at a time in id order, each with its history. scopeQ is evaluated against the scopes
    /// valid within the time range (4.18, 5.7.4.4 step 4), and an entity it selects shows only the
    /// instances of the times when a matching scope was valid. With an entity map (5.14.5), the
    /// entities are the map's candidates that still match, in its order.
    pub async fn query_temporal(
        &self,
        tenant: &str,
        mut selection: EntityQuery,
        query: &TemporalQuery,
        page: Page,
        count: bool,
        map: Option<&EntityMap>,
    ) -> NgsiResult<TemporalPage> {
        let (found, seen, scoped) = match selection.scope.take() {
            None => {
                let result = self.select(tenant, selection, page, count, map).await?;
                (result.entities, result.seen, None)
            }
            Some(scope_q) => {
                // Every candidate is needed: the page is taken after the scope history decides.
                let every = Page {
                    offset: 0,
                    limit: usize::MAX >> 2,
                };
                let candidates = self.select(tenant, selection, every, true, map).await?;
                let mut timelines = self.scope_timelines(tenant, &candidates.entities).await?;
                let mut spans = HashMap::new();
                let mut matching = Vec::new();
                for e in candidates.entities {
                    let found = timelines
                        .remove(&e.id)
                        .map(|t| t.matching(&scope_q, &query.history))
                        .unwrap_or_default();
                    if !found.is_empty() {
                        spans.insert(e.id.clone(), found);
                        matching.push(e);
                    }
                }
                let seen = matching.len();
                let paged = matching
                    .into_iter()
                    .skip(page.offset)
                    .take(page.limit)
                    .collect();
                (paged, seen, Some(spans))
            }
        };
        let (mut entities, cut) = self
            .evolutions(tenant, found, query, scoped.as_ref())
            .await?;
        // With a time range, an entity none of whose evolution falls in it is left out.
        let bounded = !matches!(
            (&query.history.from, &query.history.to),
            (Bound::Unbounded, Bound::Unbounded)
        );
        if bounded {
            let tp = query.history.time_property;
            entities.retain(|te| match &te.content {
                Content::Instances(r) => {
                    r.iter()
                        .any(|r| tp.of(r).is_some_and(|t| query.history.contains(t)))
                        || !te.emptied.is_empty()
                }
                Content::Buckets(b) => !b.is_empty(),
            });
        }
        Ok(TemporalPage {
            entities,
            seen,
            cut,
        })
    }

    /// The entities of a temporal query's selection (its scopeQ taken out): from the entity map
    /// it uses (5.14.5), or from the store.
    async fn select(
        &self,
        tenant: &str,
        selection: EntityQuery,
        page: Page,
        count: bool,
        map: Option<&EntityMap>,
    ) -> NgsiResult<QueryResult> {
        match map {
            Some(map) => {
                self.map_page(tenant, map, &selection, page, count, &Reach::local())
                    .await
            }
            None => self.query_entities(tenant, selection, page, count).await,
        }
    }

    /// The scope timelines of entities, from their Scope history records.
    async fn scope_timelines(
        &self,
        tenant: &str,
        entities: &[Arc<Entity>],
    ) -> NgsiResult<HashMap<String, ScopeTimeline>> {
        let ids: Vec<String> = entities.iter().map(|e| e.id.clone()).collect();
        let query = HistoryQuery {
            attr: Some(history::SCOPE_IRI.to_string()),
            ..HistoryQuery::default()
        };
        let histories = self.store.history_many(tenant, &ids, &query).await?;
        Ok(entities
            .iter()
            .zip(histories)
            .map(|(e, (id, records))| (id, ScopeTimeline::new(records, e.scope.as_deref())))
            .collect())
    }

    /// Reads the history (or aggregates) of some entities and cuts instance lists longer than the
    /// broker returns at once. With `scoped` (the spans in which each entity's scope matched a
    /// scopeQ), only the instances of those spans are kept. With a lower time bound, the Scope
    /// valid when the range starts is shown as well.
    async fn evolutions(
        &self,
        tenant: &str,
        entities: Vec<Arc<Entity>>,
        query: &TemporalQuery,
        scoped: Option<&HashMap<String, Vec<Span>>>,
    ) -> NgsiResult<(Vec<TemporalEntity>, Option<Cut>)> {
        let ids: Vec<String> = entities.iter().map(|e| e.id.clone()).collect();
        let by_id: Vec<(String, Content)> = match query.aggregate_query() {
            Some(aq) => self
                .store
                .aggregate(tenant, &ids, &aq)
                .await?
                .into_iter()
                .map(|(id, mut buckets)| {
                    if let Some(n) = query.history.last_n {
                        keep_last_buckets(&mut buckets, n);
                    }
                    (id, Content::Buckets(buckets))
                })
                .collect(),
            None => {
                let mut h = query.history.clone();
                if let [one] = query.attrs.as_slice() {
                    h.attr = Some(one.clone());
                }
                let wanted = |r: &InstanceChange| {
                    r.attr
                        .as_ref()
                        .is_some_and(|a| query.attrs.is_empty() || query.attrs.contains(a))
                        && query
                            .dataset_ids
                            .as_ref()
                            .is_none_or(|d| d.contains(&r.dataset_id))
                };
                let tp = query.history.time_property;
                let in_spans = |id: &str, r: &InstanceChange| {
                    r.attr.as_deref() == Some(history::SCOPE_IRI)
                        || scoped.is_none_or(|spans| {
                            tp.of(r).is_some_and(|t| {
                                spans
                                    .get(id)
                                    .is_some_and(|s| s.iter().any(|s| s.contains(t)))
                            })
                        })
                };
                let carry_scope = !matches!(query.history.from, Bound::Unbounded)
                    && tp != TimeProperty::DeletedAt
                    && (query.attrs.is_empty()
                        || query.attrs.iter().any(|a| a == history::SCOPE_IRI))
                    && query.history.last_n.is_none();
                let mut timelines = if carry_scope {
                    self.scope_timelines(tenant, &entities).await?
                } else {
                    HashMap::new()
                };
                self.store
                    .history_many(tenant, &ids, &h)
                    .await?
                    .into_iter()
                    .map(|(id, records)| {
                        let start = timelines
                            .remove(&id)
                            .and_then(|t| t.valid_at_start(&query.history).cloned())
                            .filter(&wanted);
                        let kept = start
                            .into_iter()
                            .chain(records)
                            .filter(|r| wanted(r) && in_spans(&id, r))
                            .collect();
                        (id, Content::Instances(kept))
                    })
                    .collect()
            }
        };
        let mut out: Vec<TemporalEntity> = entities
            .into_iter()
            .zip(by_id)
            .map(|(entity, (_, content))| TemporalEntity {
                entity,
                content,
                emptied: Vec::new(),
            })
            .collect();
        let cut = self.cut(&mut out, query);
        Ok((out, cut))
    }

    /// Limits every attribute to the broker's maximum number of instances: the oldest ones, or
    /// the newest with lastN (6.3.10: forwards, or backwards from the most recent). An entity's
    /// response covers one time range for all its attributes, so where one attribute is cut the
    /// others are cut at the same instant (an attribute left with no instance is kept, empty).
    /// Reports the range returned when anything was left out.
    fn cut(&self, entities: &mut [TemporalEntity], query: &TemporalQuery) -> Option<Cut> {
        if matches!(query.representation, Representation::Aggregated { .. }) {
            return None;
        }
        let max = self.settings.max_temporal_instances.max(1);
        let tp = query.history.time_property;
        let newest = query.history.last_n.is_some();
        let mut was_cut = false;
        let mut kept_times: Vec<DateTime<Utc>> = Vec::new();
        for te in entities.iter_mut() {
            let Content::Instances(records) = &mut te.content else {
                continue;
            };
            if let Some(limit) = entity_cut(records, max, tp, newest) {
                was_cut = true;
                let mut attrs: Vec<String> =
                    records.iter().filter_map(|r| r.attr.clone()).collect();
                attrs.sort();
                attrs.dedup();
                records.retain(|r| {
                    tp.of(r)
                        .is_none_or(|t| if newest { t >= limit } else { t <= limit })
                });
                attrs.retain(|a| !records.iter().any(|r| r.attr.as_ref() == Some(a)));
                te.emptied = attrs;
            }
            kept_times.extend(records.iter().filter_map(|r| tp.of(r)));
        }
        if !was_cut {
            return None;
        }
        let (earliest, latest) = (kept_times.iter().min()?, kept_times.iter().max()?);
        let bound = |b: Bound<DateTime<Utc>>| match b {
            Bound::Included(t) | Bound::Excluded(t) => Some(t),
            Bound::Unbounded => None,
        };
        Some(if newest {
            Cut {
                first: bound(query.history.to).unwrap_or(*latest),
                last: *earliest,
                size: query.history.last_n,
            }
        } else {
            Cut {
                first: bound(query.history.from).unwrap_or(*earliest),
                last: *latest,
                size: None,
            }
        })
    }
}

/// Where one entity's records (in time order per attribute) are cut so that no attribute has
/// more than `max`: the earliest last-kept instant of the attributes over the limit (forwards),
/// or the latest first-kept one (backwards, `newest`). `None` when every attribute fits.
fn entity_cut(
    records: &[InstanceChange],
    max: usize,
    tp: TimeProperty,
    newest: bool,
) -> Option<DateTime<Utc>> {
    let mut by_attr: HashMap<Option<&str>, Vec<DateTime<Utc>>> = HashMap::new();
    for r in records {
        if let Some(t) = tp.of(r) {
            by_attr.entry(r.attr.as_deref()).or_default().push(t);
        }
    }
    let limits = by_attr
        .into_values()
        .filter(|times| times.len() > max)
        .map(|mut times| {
            times.sort();
            if newest {
                times[times.len() - max]
            } else {
                times[max - 1]
            }
        });
    if newest {
        limits.max()
    } else {
        limits.min()
    }
}

/// lastN with aggregation: the last N periods of each instance set.
pub(crate) fn keep_last_buckets(buckets: &mut Vec<crate::store::aggregate::Bucket>, n: usize) {
    let mut per_set: HashMap<(String, Option<String>), usize> = HashMap::new();
    for b in buckets.iter() {
        *per_set
            .entry((b.attr.clone(), b.dataset_id.clone()))
            .or_default() += 1;
    }
    let mut seen: HashMap<(String, Option<String>), usize> = HashMap::new();
    buckets.retain(|b| {
        let key = (b.attr.clone(), b.dataset_id.clone());
        let i = seen.entry(key.clone()).or_default();
        *i += 1;
        *i + n > per_set[&key]
    });
}
