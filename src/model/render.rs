//! Expanded entities to the representation a client asked for: normalized, concise or keyValues
//! (clause 4.5), compacted with the caller's context, projected by attrs/pick/omit and lang, as JSON
//! objects or GeoJSON Features.

use super::{expiry, format_time, proof, AttrKind, Attribute, Entity};
use crate::ld::ActiveContext;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// The entity representations of clause 4.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Every member of every attribute.
    #[default]
    Normalized,
    /// Lossless but shorter: no redundant `type`, bare values where possible.
    Concise,
    /// Values only (a.k.a. simplified).
    KeyValues,
}

/// Which members of an entity a client wants (`attrs`, `pick`, `omit`), by expanded name;
/// `id` and `type` stand for themselves.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// `attrs`: only these attributes (id and type always kept).
    pub attrs: Option<HashSet<String>>,
    /// `pick`: only these members (may include id and type).
    pub pick: Option<HashSet<String>>,
    /// `omit`: never these members.
    pub omit: HashSet<String>,
    /// `datasetId`: only instances with these datasetIds (`None` stands for the default instance).
    pub dataset_ids: Option<HashSet<Option<String>>>,
    /// `pick=rel{…}` / `omit=rel{…}` (4.21 with 4.5.23): the projection of the entities joined
    /// through the Relationship `rel` (expanded); without one they are shown whole.
    pub linked: HashMap<String, Projection>,
}

impl Projection {
    /// The projection of the entities joined through the Relationship `rel`.
    pub fn of_linked(&self, rel: &str) -> Projection {
        self.linked.get(rel).cloned().unwrap_or_default()
    }

    /// Whether the member (expanded attribute name, or `id` / `type`) is to be shown.
    pub fn keeps(&self, member: &str) -> bool {
        let core = member == "id" || member == "type";
        if !core && self.attrs.as_ref().is_some_and(|a| !a.contains(member)) {
            return false;
        }
        if self.pick.as_ref().is_some_and(|p| !p.contains(member)) {
            return false;
        }
        !self.omit.contains(member)
    }
}

/// How to render: representation, system attributes, language.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// The representation.
    pub format: Format,
    /// Include createdAt/modifiedAt.
    pub sys_attrs: bool,
    /// `lang`: preferred languages for LanguageProperties (`*` keeps them all).
    pub lang: Option<String>,
    /// Which members to show.
    pub projection: Projection,
}

/// Renders an entity as a JSON object.
pub fn entity(e: &Entity, ctx: &ActiveContext, opts: &RenderOptions) -> Map<String, Value> {
    let mut out = Map::new();
    let p = &opts.projection;
    if p.keeps("id") {
        out.insert("id".into(), Value::String(e.id.clone()));
    }
    if p.keeps("type") {
        out.insert("type".into(), types(&e.types, ctx));
    }
    if let Some(scope) = &e.scope {
        if p.keeps("https://uri.etsi.org/ngsi-ld/scope") {
            out.insert(
                "scope".into(),
                one_or_many(scope.iter().map(|s| Value::String(s.clone())).collect()),
            );
        }
    }
    if opts.sys_attrs && opts.format != Format::KeyValues {
        out.insert(
            "createdAt".into(),
            Value::String(format_time(&e.created_at)),
        );
        out.insert(
            "modifiedAt".into(),
            Value::String(format_time(&e.modified_at)),
        );
        // expiresAt is shown like the system timestamps: only with options=sysAttrs (6.3.11).
        if let Some(t) = &e.expires_at {
            out.insert("expiresAt".into(), Value::String(expiry::format(t)));
        }
    }
    for (iri, instances) in &e.attrs {
        if !p.keeps(iri) {
            continue;
        }
        match &p.dataset_ids {
            None => {
                out.insert(
                    ctx.compact(iri).into_owned(),
                    attribute(instances, ctx, opts),
                );
            }
            Some(wanted) => {
                let kept: Vec<Attribute> = instances
                    .iter()
                    .filter(|a| wanted.contains(&a.dataset_id))
                    .cloned()
                    .collect();
                if !kept.is_empty() {
                    out.insert(ctx.compact(iri).into_owned(), attribute(&kept, ctx, opts));
                }
            }
        }
    }
    out
}

/// Renders an entity as a GeoJSON Feature whose geometry is the value of `geometry_property`.
pub fn feature(
    e: &Entity,
    ctx: &ActiveContext,
    opts: &RenderOptions,
    geometry_property: &str,
) -> Map<String, Value> {
    let geometry = e
        .attrs
        .get(geometry_property)
        .and_then(|i| {
            i.iter()
                .find(|a| a.dataset_id.is_none())
                .or_else(|| i.first())
        })
        .filter(|a| a.kind == AttrKind::GeoProperty)
        .map_or(Value::Null, |a| a.value.clone());
    let mut properties = entity(e, ctx, opts);
    properties.shift_remove("id");
    let mut out = Map::new();
    out.insert("id".into(), Value::String(e.id.clone()));
    out.insert("type".into(), Value::String("Feature".into()));
    out.insert("geometry".into(), geometry);
    out.insert("properties".into(), Value::Object(properties));
    out
}

/// Renders an attribute's instances: one object, or an array when it has several datasetIds.
pub fn attribute(instances: &[Attribute], ctx: &ActiveContext, opts: &RenderOptions) -> Value {
    if opts.format == Format::KeyValues && instances.len() > 1 {
        // Simplified multi-instance attributes are a dataset map keyed by datasetId (4.5.4).
        let map: Map<String, Value> = instances
            .iter()
            .map(|a| {
                (
                    a.dataset_id.clone().unwrap_or_else(|| "@none".into()),
                    instance(a, ctx, opts),
                )
            })
            .collect();
        return serde_json::json!({ "dataset": map });
    }
    let mut rendered: Vec<Value> = instances.iter().map(|a| instance(a, ctx, opts)).collect();
    if rendered.len() == 1 {
        rendered.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(rendered)
    }
}

fn types(types: &[String], ctx: &ActiveContext) -> Value {
    one_or_many(
        types
            .iter()
            .map(|t| Value::String(ctx.compact(t).into_owned()))
            .collect(),
    )
}

fn one_or_many(mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        items.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(items)
    }
}

fn compact_vocab(value: &Value, ctx: &ActiveContext) -> Value {
    match value {
        Value::String(s) => Value::String(ctx.compact(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(|i| compact_vocab(i, ctx)).collect()),
        other => other.clone(),
    }
}

/// Picks the text of a language map for a `lang` preference (comma-separated tags with optional
/// q-weights, `*` for any): an exact tag, then a tag with the same primary language, then `@none`,
/// then any.
pub fn best_language(map: &Map<String, Value>, preference: &str) -> Option<(String, Value)> {
    let mut weighted: Vec<(f32, usize, &str)> = preference
        .split(',')
        .enumerate()
        .map(|(i, item)| {
            let mut parts = item.split(';').map(str::trim);
            let tag = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q, i, tag)
        })
        .filter(|(q, _, t)| !t.is_empty() && *t != "*" && *q > 0.0)
        .collect();
    weighted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let wanted: Vec<&str> = weighted.into_iter().map(|(_, _, t)| t).collect();
    let found = wanted
        .iter()
        .find_map(|w| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(w)))
        .or_else(|| {
            wanted.iter().find_map(|w| {
                let primary = w.split('-').next().unwrap_or(w);
                map.iter().find(|(k, _)| {
                    k.split('-')
                        .next()
                        .unwrap_or(k)
                        .eq_ignore_ascii_case(primary)
                })
            })
        })
        .or_else(|| map.get_key_value("@none"))
        .or_else(|| map.iter().next());
    found.map(|(k, v)| (k.clone(), v.clone()))
}

fn instance(a: &Attribute, ctx: &ActiveContext, opts: &RenderOptions) -> Value {
    let lang_choice = match (&opts.lang, a.kind, &a.value) {
        (Some(pref), AttrKind::LanguageProperty, Value::Object(map)) => best_language(map, pref),
        _ => None,
    };
    let value = match a.kind {
        AttrKind::VocabProperty => compact_vocab(&a.value, ctx),
        _ => a.value.clone(),
    };
    if opts.format == Format::KeyValues {
        // 4.5.4: bare values, except the kinds whose value could be mistaken for another's.
        return match (a.kind, lang_choice) {
            (_, Some((_, text))) => text,
            (
                AttrKind::LanguageProperty | AttrKind::JsonProperty | AttrKind::VocabProperty,
                None,
            ) => {
                serde_json::json!({ a.kind.value_member(): value })
            }
            (AttrKind::ListRelationship, None) => match value {
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .map(|i| i.get("object").cloned().unwrap_or(i))
                        .collect(),
                ),
                other => other,
            },
            _ => value,
        };
    }
    let mut out = Map::new();
    let (kind, member) = match &lang_choice {
        Some(_) => ("Property", "value"),
        None => (a.kind.name(), a.kind.value_member()),
    };
    let concise = opts.format == Format::Concise;
    if !concise {
        out.insert("type".into(), Value::String(kind.into()));
    }
    match lang_choice {
        Some((tag, text)) => {
            out.insert(member.into(), text);
            if tag != "@none" {
                out.insert("lang".into(), Value::String(tag));
            }
        }
        None => {
            out.insert(member.into(), value);
        }
    }
    if let Some(t) = &a.object_type {
        out.insert("objectType".into(), compact_vocab(t, ctx));
    }
    if let Some(d) = &a.dataset_id {
        out.insert("datasetId".into(), Value::String(d.clone()));
    }
    if let Some(t) = &a.observed_at {
        out.insert("observedAt".into(), Value::String(t.clone()));
    }
    if let Some(u) = &a.unit_code {
        out.insert("unitCode".into(), Value::String(u.clone()));
    }
    if opts.sys_attrs {
        out.insert(
            "createdAt".into(),
            Value::String(format_time(&a.created_at)),
        );
        out.insert(
            "modifiedAt".into(),
            Value::String(format_time(&a.modified_at)),
        );
        if let Some(t) = &a.expires_at {
            out.insert("expiresAt".into(), Value::String(expiry::format(t)));
        }
    }
    for (iri, sub) in &a.sub {
        // The sealed members of a proof are bare strings under their own names (4.5.2.2).
        let (name, shown) = match iri.as_str() {
            proof::ENTITY_ID_SEALED => ("entityIdSealed".into(), sub.value.clone()),
            proof::ENTITY_TYPE_SEALED => (
                "entityTypeSealed".into(),
                match sub.value.as_str() {
                    Some(t) => Value::String(ctx.compact(t).into_owned()),
                    None => sub.value.clone(),
                },
            ),
            _ => (ctx.compact(iri), instance(sub, ctx, opts)),
        };
        out.insert(name.into_owned(), shown);
    }
    if concise && out.len() == 1 && a.kind == AttrKind::Property && !out["value"].is_object() {
        return out.remove("value").unwrap_or(Value::Null);
    }
    Value::Object(out)
}
