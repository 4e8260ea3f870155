//! Temporal representations of an entity (4.5.7 normalized, 4.5.9 simplified `temporalValues`,
//! 4.5.19 `aggregatedValues`) from history records or aggregation buckets, compacted with the
//! caller's context and projected by attrs/pick/omit/datasetId like the entity representations.
//! The Scope is rendered from its history records, as a temporal Property (4.5.6).

use super::{Representation, TemporalQuery};
use crate::ld::ActiveContext;
use crate::model::render::{self, Format, RenderOptions};
use crate::model::{format_time, AttrKind, Attribute, Entity, NGSI_LD_NULL};
use crate::store::aggregate::Bucket;
use crate::store::history::{InstanceChange, TimeProperty, SCOPE_IRI};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use std::ops::Bound;

/// The temporal evolution of one entity as read from a store.
#[derive(Debug, Clone)]
pub struct TemporalEntity {
    /// The entity (id, types, scope; its attributes name the kinds of aggregated attributes).
    pub entity: std::sync::Arc<Entity>,
    /// What the store returned.
    pub content: Content,
    /// Attributes that have instances, but none in the time range returned (a cut response):
    /// rendered with an empty list.
    pub emptied: Vec<String>,
}

/// History records or aggregation buckets.
#[derive(Debug, Clone)]
pub enum Content {
    /// Records in time order.
    Instances(Vec<InstanceChange>),
    /// Buckets by attribute, datasetId and period.
    Buckets(Vec<Bucket>),
}

/// An instant in the shortest exact form (`2020-08-01T12:03:00Z`, sub-seconds only when present).
pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The instance a record holds: the stored attribute, or for a deletion the NGSI-LD Null of its
/// kind (for the Scope, no scopes: an empty list), observed when a temporal representation said
/// so.
fn stored_instance(r: &InstanceChange) -> Option<Attribute> {
    if let Some(v) = &r.value {
        return v.parse();
    }
    let kind = r.kind?;
    let null = Value::String(NGSI_LD_NULL.into());
    let value = match kind {
        _ if r.attr.as_deref() == Some(SCOPE_IRI) => json!([]),
        AttrKind::LanguageProperty => json!({ "@none": NGSI_LD_NULL }),
        AttrKind::ListProperty | AttrKind::ListRelationship => json!([null]),
        _ => null,
    };
    Some(Attribute {
        kind,
        value,
        dataset_id: r.dataset_id.clone(),
        observed_at: r.observed_at.map(instant),
        unit_code: None,
        object_type: None,
        created_at: r.created_at,
        modified_at: r.modified_at,
        expires_at: None,
        sub: crate::model::NameMap::default(),
    })
}

/// The record's time by the query's time property, as a client sees it (observedAt as given).
fn time_of(r: &InstanceChange, a: &Attribute, tp: TimeProperty) -> Value {
    match tp {
        TimeProperty::ObservedAt => a
            .observed_at
            .clone()
            .map(Value::String)
            .or_else(|| r.observed_at.map(|t| Value::String(instant(t))))
            .unwrap_or(Value::Null),
        other => other
            .of(r)
            .map_or(Value::Null, |t| Value::String(format_time(&t))),
    }
}

/// Renders one entity's temporal evolution.
pub fn entity(
    te: &TemporalEntity,
    query: &TemporalQuery,
    ctx: &ActiveContext,
    opts: &RenderOptions,
) -> Map<String, Value> {
    let e = &te.entity;
    let p = &opts.projection;
    let mut out = Map::new();
    if p.keeps("id") {
        out.insert("id".into(), Value::String(e.id.clone()));
    }
    if p.keeps("type") {
        let types: Vec<Value> = e
            .types
            .iter()
            .map(|t| Value::String(ctx.compact(t).into_owned()))
            .collect();
        out.insert(
            "type".into(),
            if types.len() == 1 {
                types[0].clone()
            } else {
                Value::Array(types)
            },
        );
    }
    let wanted = |attr: &str, dataset_id: &Option<String>| {
        p.keeps(attr)
            && p.dataset_ids
                .as_ref()
                .is_none_or(|d| d.contains(dataset_id))
    };
    match &te.content {
        Content::Instances(records) => {
            let mut by_attr: IndexMap<&str, Vec<(&InstanceChange, Attribute)>> = IndexMap::new();
            for r in records {
                let Some(attr) = r.attr.as_deref() else {
                    continue;
                };
                if !wanted(attr, &r.dataset_id) {
                    continue;
                }
                if let Some(a) = stored_instance(r) {
                    by_attr.entry(attr).or_default().push((r, a));
                }
            }
            for (attr, instances) in by_attr {
                let rendered = match query.representation {
                    Representation::TemporalValues => temporal_values(&instances, query, ctx, opts),
                    _ => Value::Array(
                        instances
                            .iter()
                            .map(|(r, a)| normalized_instance(r, a, query, ctx, opts))
                            .collect(),
                    ),
                };
                out.insert(ctx.compact(attr).into_owned(), rendered);
            }
            for attr in &te.emptied {
                if p.keeps(attr) {
                    out.insert(ctx.compact(attr).into_owned(), Value::Array(Vec::new()));
                }
            }
        }
        Content::Buckets(buckets) => {
            let Representation::Aggregated {
                methods,
                period_micros,
            } = &query.representation
            else {
                return out;
            };
            let mut by_attr: IndexMap<&str, IndexMap<&Option<String>, Vec<&Bucket>>> =
                IndexMap::new();
            for b in buckets {
                if wanted(&b.attr, &b.dataset_id) {
                    by_attr
                        .entry(&b.attr)
                        .or_default()
                        .entry(&b.dataset_id)
                        .or_default()
                        .push(b);
                }
            }
            for (attr, sets) in by_attr {
                let kind = e
                    .attrs
                    .get(attr)
                    .and_then(|i| i.first())
                    .map_or("Property", |a| a.kind.name());
                let objects: Vec<Value> = sets
                    .into_iter()
                    .map(|(dataset_id, buckets)| {
                        let mut o = Map::new();
                        o.insert("type".into(), Value::String(kind.into()));
                        if let Some(d) = dataset_id {
                            o.insert("datasetId".into(), Value::String(d.clone()));
                        }
                        for m in methods {
                            let triples: Vec<Value> = buckets
                                .iter()
                                .map(|b| {
                                    let (start, end) = bucket_range(b, *period_micros, query);
                                    json!([b.value(*m), instant(start), instant(end)])
                                })
                                .collect();
                            o.insert(m.name().into(), Value::Array(triples));
                        }
                        Value::Object(o)
                    })
                    .collect();
                out.insert(ctx.compact(attr).into_owned(), one_or_many(objects));
            }
        }
    }
    out
}

/// The period a bucket covers: `[start, start + period)`, or for a period of 0 from the origin to
/// the query's upper bound (else the last instance).
fn bucket_range(b: &Bucket, period: i64, query: &TemporalQuery) -> (DateTime<Utc>, DateTime<Utc>) {
    if period > 0 {
        return (b.start, b.start + Duration::microseconds(period));
    }
    let end = match query.history.to {
        Bound::Included(t) | Bound::Excluded(t) => t,
        Bound::Unbounded => b.last,
    };
    (b.start, end)
}

fn one_or_many(mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        items.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(items)
    }
}

fn normalized_instance(
    r: &InstanceChange,
    a: &Attribute,
    query: &TemporalQuery,
    ctx: &ActiveContext,
    opts: &RenderOptions,
) -> Value {
    let opts = RenderOptions {
        format: Format::Normalized,
        ..opts.clone()
    };
    let mut o = match render::attribute(std::slice::from_ref(a), ctx, &opts) {
        Value::Object(o) => o,
        other => {
            let mut o = Map::new();
            o.insert("value".into(), other);
            o
        }
    };
    o.insert("instanceId".into(), Value::String(r.instance_id.clone()));
    let tp = query.history.time_property;
    if matches!(tp, TimeProperty::CreatedAt | TimeProperty::ModifiedAt) {
        let name = if tp == TimeProperty::CreatedAt {
            "createdAt"
        } else {
            "modifiedAt"
        };
        o.insert(name.into(), time_of(r, a, tp));
    }
    if let Some(t) = r.deleted_at {
        o.insert("deletedAt".into(), Value::String(format_time(&t)));
    }
    Value::Object(o)
}

/// 4.5.9: per instance set (datasetId), `{type, datasetId?, <values>: [[value, time], ...]}`.
fn temporal_values(
    instances: &[(&InstanceChange, Attribute)],
    query: &TemporalQuery,
    ctx: &ActiveContext,
    opts: &RenderOptions,
) -> Value {
    let kv = RenderOptions {
        format: Format::KeyValues,
        ..opts.clone()
    };
    let tp = query.history.time_property;
    let mut sets: IndexMap<&Option<String>, (AttrKind, Vec<Value>)> = IndexMap::new();
    for (r, a) in instances {
        let value = render::attribute(std::slice::from_ref(a), ctx, &kv);
        sets.entry(&a.dataset_id)
            .or_insert_with(|| (a.kind, Vec::new()))
            .1
            .push(json!([value, time_of(r, a, tp)]));
    }
    let objects: Vec<Value> = sets
        .into_iter()
        .map(|(dataset_id, (kind, pairs))| {
            let mut o = Map::new();
            o.insert("type".into(), Value::String(kind.name().into()));
            if let Some(d) = dataset_id {
                o.insert("datasetId".into(), Value::String(d.clone()));
            }
            o.insert(format!("{}s", kind.value_member()), Value::Array(pairs));
            Value::Object(o)
        })
        .collect();
    one_or_many(objects)
}
