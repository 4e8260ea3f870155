//! What one committed change means for one subscription: whether it matches (the query engine's
//! evaluator on the committed entity), which trigger it raises, and the entity as the notification
//! shows it (format, attributes/pick/omit, sysAttrs, lang, deleted attributes as NGSI-LD Null,
//! previous values with showChanges). Also the Notification envelope (5.2.14).

use super::model::{NotifyAs, Subscription, Trigger};
use crate::ld::ActiveContext;
use crate::model::render::{self, Format, Projection, RenderOptions};
use crate::model::{format_time, AttrKind, Attribute, Entity, NGSI_LD_NULL};
use crate::query::EntityQuery;
use crate::store::changes::Change;
use crate::store::history::{HistoryQuery, TimeProperty};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// Attribute names a write created, changed and removed (by comparing every instance).
#[derive(Debug, Default)]
struct Delta {
    created: Vec<String>,
    updated: Vec<String>,
    deleted: Vec<String>,
    /// Types or scope changed.
    entity: bool,
}

/// The instances of `old` whose datasetId `new` no longer has.
fn removed<'a>(old: &'a [Attribute], new: Option<&[Attribute]>) -> Vec<&'a Attribute> {
    old.iter()
        .filter(|o| !new.is_some_and(|n| n.iter().any(|a| a.dataset_id == o.dataset_id)))
        .collect()
}

/// An attribute was deleted when any of its instances was; updated when a remaining instance
/// changed or one was added.
fn delta(before: &Entity, after: &Entity) -> Delta {
    let mut d = Delta {
        entity: before.types != after.types || before.scope != after.scope,
        ..Delta::default()
    };
    for (name, instances) in &after.attrs {
        let Some(old) = before.attrs.get(name) else {
            d.created.push(name.clone());
            continue;
        };
        let gone = removed(old, Some(instances));
        let kept: Vec<&Attribute> = old.iter().filter(|o| !gone.contains(o)).collect();
        if !gone.is_empty() {
            d.deleted.push(name.clone());
        }
        if kept.len() != instances.len() || kept.iter().zip(instances).any(|(k, a)| *k != a) {
            d.updated.push(name.clone());
        }
    }
    d.deleted.extend(
        before
            .attrs
            .keys()
            .filter(|n| !after.attrs.contains_key(*n))
            .cloned(),
    );
    d
}

/// What a subscription is notified of for one change: the trigger it answers and the attributes
/// shown as deleted or with their previous values. Rendering the entity ([`Notified::show`]) is
/// left to whoever sends the notification.
#[derive(Debug, Clone)]
pub struct Notified {
    /// The trigger the change answers.
    pub trigger: Trigger,
    nulled: Vec<String>,
    changed: Vec<String>,
}

impl Notified {
    /// The notified entity of `change` as `sub` shows it.
    pub fn show(&self, sub: &Subscription, change: &Change) -> Map<String, Value> {
        match change.after.as_deref().or(change.before.as_deref()) {
            Some(current) => show(
                sub,
                change,
                current,
                self.trigger,
                &self.nulled,
                &self.changed,
            ),
            None => Map::new(),
        }
    }
}

/// What a notification for `change` holds, with the trigger it answers, or None when the change
/// does not concern the subscription.
/// `query` is the subscription's query, its linked entity paths resolved (see
/// [`crate::service::AppState::resolve_links`]).
pub fn entity_for(sub: &Subscription, query: &EntityQuery, change: &Change) -> Option<Notified> {
    let current = change.after.as_deref().or(change.before.as_deref())?;
    if !query.matches(current) {
        return None;
    }
    if let Some(range) = &sub.temporal {
        if !in_time_range(range, current, change) {
            return None;
        }
    }
    let watched = |name: &String| sub.watched.is_empty() || sub.watched.contains(name);
    let has = |set: &[Trigger], t: Trigger| set.contains(&t);
    let (trigger, nulled, changed): (Trigger, Vec<String>, Vec<String>) =
        match (change.before.as_deref(), change.after.as_deref()) {
            (None, Some(after)) => {
                if !has(&sub.triggers, Trigger::EntityCreated)
                    || !(sub.watched.is_empty() || after.attrs.keys().any(watched))
                {
                    return None;
                }
                (Trigger::EntityCreated, Vec::new(), Vec::new())
            }
            (Some(before), None) => {
                let all: Vec<String> = before.attrs.keys().cloned().collect();
                let relevant: Vec<String> = all.iter().filter(|n| watched(n)).cloned().collect();
                if has(&sub.triggers, Trigger::EntityDeleted)
                    && (sub.watched.is_empty() || !relevant.is_empty())
                {
                    // The deleted attributes are shown only to give their previous values.
                    let shown = if sub.notification.show_changes {
                        all
                    } else {
                        Vec::new()
                    };
                    (Trigger::EntityDeleted, shown.clone(), shown)
                } else if has(&sub.triggers, Trigger::AttributeDeleted) && !relevant.is_empty() {
                    (Trigger::AttributeDeleted, relevant.clone(), relevant)
                } else {
                    return None;
                }
            }
            (Some(before), Some(after)) => {
                let d = delta(before, after);
                let pick = |names: &[String]| -> Vec<String> {
                    names.iter().filter(|n| watched(n)).cloned().collect()
                };
                let (created, updated, deleted) =
                    (pick(&d.created), pick(&d.updated), pick(&d.deleted));
                let any = !created.is_empty()
                    || !updated.is_empty()
                    || !deleted.is_empty()
                    || (d.entity && sub.watched.is_empty());
                let trigger = [
                    (Trigger::AttributeCreated, !created.is_empty()),
                    (Trigger::AttributeUpdated, !updated.is_empty()),
                    (Trigger::AttributeDeleted, !deleted.is_empty()),
                    (Trigger::EntityUpdated, any),
                ]
                .into_iter()
                .find(|(t, raised)| *raised && has(&sub.triggers, *t))
                .map(|(t, _)| t)?;
                let mut changed = updated;
                changed.extend(deleted.iter().cloned());
                (trigger, deleted, changed)
            }
            (None, None) => return None,
        };
    Some(Notified {
        trigger,
        nulled,
        changed,
    })
}

/// Whether the entity of a change has an attribute instance whose time property lies in the
/// range of a subscription's temporalQ (for deletedAt: the time of a deletion).
fn in_time_range(range: &HistoryQuery, e: &Entity, change: &Change) -> bool {
    let time_of = |a: &Attribute| match range.time_property {
        TimeProperty::ObservedAt => a
            .observed_at
            .as_deref()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok()),
        TimeProperty::CreatedAt => Some(a.created_at),
        TimeProperty::ModifiedAt => Some(a.modified_at),
        TimeProperty::DeletedAt => None,
    };
    if range.time_property == TimeProperty::DeletedAt {
        return change.after.is_none() && range.contains(change.at);
    }
    e.attrs
        .values()
        .flatten()
        .filter_map(time_of)
        .any(|t| range.contains(t))
}

/// The NGSI-LD Null in the value member of an attribute kind.
fn null_value(kind: AttrKind) -> Value {
    match kind {
        AttrKind::LanguageProperty => json!({ "@none": NGSI_LD_NULL }),
        AttrKind::ListProperty | AttrKind::ListRelationship => json!([NGSI_LD_NULL]),
        _ => Value::String(NGSI_LD_NULL.into()),
    }
}

/// The render options of a subscription's notifications.
pub fn options(sub: &Subscription) -> RenderOptions {
    let n = &sub.notification;
    RenderOptions {
        format: n.format,
        sys_attrs: n.sys_attrs,
        lang: sub.lang.clone(),
        projection: Projection {
            attrs: n.attributes.clone(),
            pick: n.pick.clone(),
            omit: n.omit.clone(),
            dataset_ids: n.dataset_ids.clone(),
            linked: Default::default(),
        },
    }
}

/// Renders the notified entity: the committed state, deleted attributes (`nulled`) as NGSI-LD
/// Null instances, previous values of `changed` attributes with showChanges.
fn show(
    sub: &Subscription,
    change: &Change,
    current: &Entity,
    trigger: Trigger,
    nulled: &[String],
    changed: &[String],
) -> Map<String, Value> {
    let before = change.before.as_deref();
    // A deleted entity shows only what the notification adds to it.
    let mut shown = match change.after.as_deref() {
        Some(after) => after.clone(),
        None => Entity {
            attrs: Default::default(),
            ..current.clone()
        },
    };
    for name in nulled {
        let Some(old) = before.and_then(|b| b.attrs.get(name)) else {
            continue;
        };
        let remaining = shown.attrs.get(name).map(Vec::as_slice);
        let mut gone = removed(old, remaining);
        if remaining.is_none() {
            // The whole attribute went: one NGSI-LD Null stands for it (the default instance's
            // when there was one).
            gone.sort_by_key(|a| a.dataset_id.is_some());
            gone.truncate(1);
        }
        let whole = remaining.is_none();
        let gone: Vec<Attribute> = gone
            .into_iter()
            .map(|a| Attribute {
                kind: a.kind,
                value: null_value(a.kind),
                dataset_id: if whole { None } else { a.dataset_id.clone() },
                observed_at: None,
                unit_code: None,
                object_type: None,
                created_at: a.created_at,
                modified_at: a.modified_at,
                expires_at: None,
                sub: Default::default(),
            })
            .collect();
        shown.attrs.entry(name.clone()).or_default().extend(gone);
    }
    let opts = options(sub);
    let ctx = &sub.ctx;
    let mut out = render::entity(&shown, ctx, &opts);
    let deleted_at = Value::String(format_time(&change.at));
    if trigger == Trigger::EntityDeleted || change.after.is_none() {
        out.insert("deletedAt".into(), deleted_at.clone());
    }
    if opts.format == Format::KeyValues {
        // keyValues drops system attributes of attributes, but sysAttrs still asks for the
        // entity's own.
        if opts.sys_attrs {
            out.insert(
                "createdAt".into(),
                Value::String(format_time(&shown.created_at)),
            );
            out.insert(
                "modifiedAt".into(),
                Value::String(format_time(&shown.modified_at)),
            );
        }
        return out;
    }
    for name in nulled.iter().chain(changed) {
        let key = ctx.compact(name).into_owned();
        let Some(rendered) = out.get_mut(&key) else {
            continue;
        };
        let is_nulled = nulled.contains(name);
        let previous = before.and_then(|b| b.attrs.get(name));
        let annotate = |item: &mut Value, dataset_id: Option<&str>| {
            if !item.is_object() {
                *item = json!({ "value": item.take() });
            }
            let Some(obj) = item.as_object_mut() else {
                return;
            };
            let is_null = obj.values().any(|v| {
                v.as_str() == Some(NGSI_LD_NULL)
                    || v.get("@none").and_then(Value::as_str) == Some(NGSI_LD_NULL)
                    || v.get(0).and_then(Value::as_str) == Some(NGSI_LD_NULL)
            });
            if is_nulled && is_null && opts.sys_attrs {
                obj.insert("deletedAt".into(), deleted_at.clone());
            }
            if !sub.notification.show_changes {
                return;
            }
            let old =
                previous.and_then(|p| p.iter().find(|a| a.dataset_id.as_deref() == dataset_id));
            if let Some(old) = old {
                let (member, value) = previous_member(old, ctx);
                obj.insert(member, value);
            }
        };
        match rendered {
            Value::Array(items) => {
                for item in items {
                    let d = item
                        .get("datasetId")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    annotate(item, d.as_deref());
                }
            }
            item => annotate(item, None),
        }
    }
    out
}

/// `previousValue` (or previousObject, previousLanguageMap...) of an instance, compacted as its
/// value member would be.
fn previous_member(old: &Attribute, ctx: &ActiveContext) -> (String, Value) {
    let member = old.kind.value_member();
    let rendered = render::attribute(std::slice::from_ref(old), ctx, &RenderOptions::default());
    let value = rendered.get(member).cloned().unwrap_or(Value::Null);
    let mut name = String::from("previous");
    let mut chars = member.chars();
    if let Some(first) = chars.next() {
        name.push(first.to_ascii_uppercase());
        name.push_str(chars.as_str());
    }
    (name, value)
}

/// The Notification (5.2.14) of `data` for a subscription, or the ContextSourceNotification
/// (5.2.19) of a registration subscription, with its @context in the body when the endpoint
/// accepts JSON-LD. `trigger` is the triggerReason.
pub fn envelope(
    sub: &Subscription,
    trigger: Option<&str>,
    data: Vec<Value>,
    now: DateTime<Utc>,
) -> Value {
    let mut n = Map::new();
    n.insert(
        "id".into(),
        Value::String(format!("urn:ngsi-ld:Notification:{}", uuid::Uuid::new_v4())),
    );
    let kind = if sub.csource.is_some() {
        "ContextSourceNotification"
    } else {
        "Notification"
    };
    n.insert("type".into(), Value::String(kind.into()));
    n.insert(
        "subscriptionId".into(),
        Value::String(sub.record.id.clone()),
    );
    n.insert("notifiedAt".into(), Value::String(format_time(&now)));
    let accept = sub.notification.endpoint.accept;
    let json_ld = accept == NotifyAs::JsonLd;
    let data = data
        .into_iter()
        .map(|mut e| match (accept, e.as_object_mut()) {
            (NotifyAs::JsonLd, Some(obj)) => {
                obj.insert("@context".into(), sub.notify_context.clone());
                e
            }
            (NotifyAs::GeoJson, Some(obj)) if sub.csource.is_none() => feature(std::mem::take(obj)),
            _ => e,
        })
        .collect();
    n.insert("data".into(), Value::Array(data));
    if let Some(t) = trigger {
        n.insert("triggerReason".into(), Value::String(t.into()));
    }
    if json_ld {
        n.insert("@context".into(), sub.notify_context.clone());
    }
    Value::Object(n)
}

/// A rendered entity as a GeoJSON Feature (endpoint accept application/geo+json) whose geometry
/// is its `location`, in any of the three formats.
fn feature(mut entity: Map<String, Value>) -> Value {
    let id = entity.remove("id").unwrap_or(Value::Null);
    let geometry = match entity.get("location") {
        Some(Value::Object(o)) if o.contains_key("value") => o["value"].clone(),
        Some(g @ Value::Object(_)) => g.clone(),
        _ => Value::Null,
    };
    json!({"id": id, "type": "Feature", "geometry": geometry, "properties": entity})
}
