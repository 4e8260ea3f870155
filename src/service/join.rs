//! Linked entity retrieval (4.5.23): `join=inline` puts the entity a Relationship points to inside
//! the Relationship (`entity` member; in keyValues the entity replaces the target id), `join=flat`
//! appends the linked entities after the requested ones; `joinLevel` follows links that deep. One
//! implementation for retrievals and queries (the `join` parameters) and for notifications (the
//! `join` members of a subscription's notification parameters).

use super::AppState;
use crate::error::NgsiResult;
use crate::ld::ActiveContext;
use crate::model::render::{self, Format, Projection, RenderOptions};
use crate::model::{AttrKind, Entity};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub use crate::model::join::Join;

/// The entities reachable from some roots within a join's level, by id, each with the projection
/// of the first link that reached it (`pick=rel{…}`; whole entities otherwise).
pub type Linked = HashMap<String, (Arc<Entity>, Projection)>;

/// The ids a Relationship or ListRelationship instance points to.
fn targets(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| {
                i.as_str()
                    .or_else(|| i.get("object").and_then(Value::as_str))
            })
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Renders `roots` with their linked entities joined as asked.
pub async fn render(
    broker: &AppState,
    tenant: &str,
    roots: &[Arc<Entity>],
    join: Join,
    ctx: &ActiveContext,
    opts: &RenderOptions,
) -> NgsiResult<Vec<Value>> {
    let linked = linked(broker, tenant, roots, join, &opts.projection).await?;
    if join.flat {
        let mut out: Vec<Value> = roots
            .iter()
            .map(|e| Value::Object(render::entity(e, ctx, opts)))
            .collect();
        out.extend(flat_rest(roots, &linked, ctx, opts));
        return Ok(out);
    }
    Ok(roots
        .iter()
        .map(|e| {
            let mut out = render::entity(e, ctx, opts);
            attach_inline(&mut out, e, &linked, join.level, ctx, opts);
            Value::Object(out)
        })
        .collect())
}

/// Fetches every entity reachable from `roots` within `join.level` links, breadth first.
pub async fn linked(
    broker: &AppState,
    tenant: &str,
    roots: &[Arc<Entity>],
    join: Join,
    projection: &Projection,
) -> NgsiResult<Linked> {
    let mut linked: Linked = HashMap::new();
    let mut frontier: Vec<(Arc<Entity>, Projection)> = roots
        .iter()
        .map(|e| (e.clone(), projection.clone()))
        .collect();
    for _ in 0..join.level {
        let mut next = Vec::new();
        for (e, projection) in &frontier {
            for (rel, id) in relationship_targets(e, projection) {
                if linked.contains_key(&id) {
                    continue;
                }
                if let Some(target) = broker.linked_entity(tenant, &id).await? {
                    let p = projection.of_linked(&rel);
                    linked.insert(id, (target.clone(), p.clone()));
                    next.push((target, p));
                }
            }
        }
        frontier = next;
    }
    Ok(linked)
}

/// The linked entities that a flat join appends after the roots, rendered, in id order.
pub fn flat_rest(
    roots: &[Arc<Entity>],
    linked: &Linked,
    ctx: &ActiveContext,
    opts: &RenderOptions,
) -> Vec<Value> {
    let root_ids: HashSet<&str> = roots.iter().map(|e| e.id.as_str()).collect();
    let mut order: Vec<&(Arc<Entity>, Projection)> = linked
        .values()
        .filter(|(e, _)| !root_ids.contains(e.id.as_str()))
        .collect();
    order.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    order
        .into_iter()
        .map(|(e, projection)| {
            let with = RenderOptions {
                projection: projection.clone(),
                ..opts.clone()
            };
            Value::Object(render::entity(e, ctx, &with))
        })
        .collect()
}

/// The Relationships (expanded names) the projection keeps and the ids they point to.
fn relationship_targets(e: &Entity, projection: &Projection) -> Vec<(String, String)> {
    e.attrs
        .iter()
        .filter(|(iri, _)| projection.keeps(iri))
        .flat_map(|(iri, instances)| instances.iter().map(move |a| (iri, a)))
        .filter(|(_, a)| matches!(a.kind, AttrKind::Relationship | AttrKind::ListRelationship))
        .flat_map(|(iri, a)| targets(&a.value).into_iter().map(|id| (iri.clone(), id)))
        .collect()
}

/// Puts into `out` (the rendering of `e`) the linked entities of its Relationships, `level`
/// links deep: an `entity` member of each Relationship object (in keyValues the entity replaces
/// the target id).
pub fn attach_inline(
    out: &mut Map<String, Value>,
    e: &Entity,
    linked: &Linked,
    level: u32,
    ctx: &ActiveContext,
    opts: &RenderOptions,
) {
    if level == 0 {
        return;
    }
    for (iri, instances) in &e.attrs {
        let Some(rendered) = out.get_mut(ctx.compact(iri).as_ref()) else {
            continue;
        };
        let target_opts = RenderOptions {
            projection: opts.projection.of_linked(iri),
            ..opts.clone()
        };
        for (i, a) in instances.iter().enumerate() {
            if a.kind != AttrKind::Relationship {
                continue;
            }
            let Some((target, _)) = a.value.as_str().and_then(|id| linked.get(id)) else {
                continue;
            };
            let mut joined = render::entity(target, ctx, &target_opts);
            attach_inline(&mut joined, target, linked, level - 1, ctx, &target_opts);
            let joined = Value::Object(joined);
            let slot = match &mut *rendered {
                Value::Array(items) if instances.len() > 1 => items.get_mut(i),
                other => Some(other),
            };
            match (slot, opts.format) {
                (Some(v), Format::KeyValues) => *v = joined,
                (Some(Value::Object(map)), _) => {
                    map.insert("entity".into(), joined);
                }
                _ => {}
            }
        }
    }
}
