//! Context source registrations (5.2.9) as stored, read and rendered. A registration is stored as
//! its [`Record`]: the members the registrant gave (entity types, attribute names and the names of
//! extra registration properties expanded to IRIs), the @context they came with, system times and
//! the counters of requests forwarded to its endpoint. [`normalize`] checks a body or a PATCH
//! fragment member by member (every invalid member is a BadRequestData naming it), [`check`]
//! checks the rules between members of the whole registration, and [`render`] gives it back
//! compacted with the caller's context.

use super::ops::Operation;
use crate::error::{NgsiError, NgsiResult};
use crate::ld::ActiveContext;
use crate::model::{format_time, validate};
use crate::query;
use crate::subscription::model::bad;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// The type every registration has.
pub const TYPE: &str = "ContextSourceRegistration";

/// What a registration keeps in the store: the record subscriptions keep too (its `stats` count
/// the requests forwarded to the endpoint: timesSent, timesFailed, lastSuccess, lastFailure,
/// status of Table 5.2.9-1).
pub use crate::subscription::model::Record;

/// How a registration shares the entities it names with the broker (4.3.6.2, Table 5.2.9-1 mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The source holds some of the data; the broker and other sources may hold the rest.
    Inclusive,
    /// Only the source holds the registered attributes of the registered entities.
    Exclusive,
    /// The broker holds nothing of it: requests are passed on to the source.
    Redirect,
    /// The source holds extra data, consulted for reads only and never preferred.
    Auxiliary,
}

impl Mode {
    /// The mode of a stored document (inclusive when absent).
    pub fn of(doc: &Map<String, Value>) -> Mode {
        match doc.get("mode").and_then(Value::as_str) {
            Some("exclusive") => Mode::Exclusive,
            Some("redirect") => Mode::Redirect,
            Some("auxiliary") => Mode::Auxiliary,
            _ => Mode::Inclusive,
        }
    }

    /// The name of the mode in a registration.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Inclusive => "inclusive",
            Mode::Exclusive => "exclusive",
            Mode::Redirect => "redirect",
            Mode::Auxiliary => "auxiliary",
        }
    }
}

/// Members of Table 5.2.9-1 that a registrant may give and that have a meaning of their own;
/// any other member (but the read-only ones) is a registration property, kept with its name
/// expanded.
const MEMBERS: &[&str] = &[
    "registrationName",
    "description",
    "information",
    "tenant",
    "observationInterval",
    "managementInterval",
    "location",
    "observationSpace",
    "operationSpace",
    "expiresAt",
    "endpoint",
    "contextSourceInfo",
    "scope",
    "mode",
    "operations",
    "refreshRate",
    "management",
];

/// Read-only members (Table 5.2.9-1) and JSON-LD keywords: dropped from what a registrant sends.
const READ_ONLY: &[&str] = &[
    "id",
    "type",
    "@context",
    "createdAt",
    "modifiedAt",
    "status",
    "timesSent",
    "timesFailed",
    "lastSuccess",
    "lastFailure",
];

/// What a RegistrationManagementInfo member (5.2.34) holds.
#[derive(Clone, Copy, PartialEq)]
enum Held {
    /// true or false.
    Boolean,
    /// A positive number (milliseconds).
    Positive,
    /// A positive number of seconds or an ISO 8601 duration such as PT5M.
    Duration,
}

/// RegistrationManagementInfo members (5.2.34).
const MANAGEMENT_MEMBERS: &[(&str, Held)] = &[
    ("localOnly", Held::Boolean),
    ("cacheDuration", Held::Duration),
    ("timeout", Held::Positive),
    ("cooldown", Held::Positive),
];

/// Checks the members of a registration body (all of it, or a PATCH fragment when `partial`) and
/// returns them as stored: read-only members dropped, entity types, attribute names and the names
/// of registration properties expanded with `ctx`. A member set to null in a fragment is returned
/// as null (removal).
pub fn normalize(
    body: &Value,
    ctx: &ActiveContext,
    partial: bool,
) -> NgsiResult<Map<String, Value>> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("body", "must be a JSON object"))?;
    match obj.get("type") {
        Some(Value::String(t)) if t == TYPE => {}
        Some(t) => return Err(bad("type", format!("must be \"{TYPE}\", not {t}"))),
        None if partial => {}
        None => return Err(bad("type", format!("is required and must be \"{TYPE}\""))),
    }
    let mut doc = Map::new();
    for (name, value) in obj {
        if READ_ONLY.contains(&name.as_str()) {
            continue;
        }
        if value.is_null() {
            if partial {
                doc.insert(expanded_name(name, ctx), Value::Null);
                continue;
            }
            return Err(bad(name, "must not be null"));
        }
        let value = match name.as_str() {
            "information" => information(value, ctx)?,
            "registrationName" | "description" | "tenant" | "refreshRate" => {
                string(value, name)?;
                value.clone()
            }
            "observationInterval" | "managementInterval" => interval(value, name)?,
            "location" | "observationSpace" | "operationSpace" => {
                validate::geometry(&format!("the registration's {name}"), value)
                    .map_err(|e| NgsiError::from(e.under(name)))?;
                value.clone()
            }
            "expiresAt" => {
                validate::date_time("registration expiresAt", string(value, name)?)
                    .map_err(|e| bad(name, e.detail))?;
                value.clone()
            }
            "endpoint" => {
                endpoint(string(value, name)?)?;
                value.clone()
            }
            "contextSourceInfo" => key_values(value, name)?,
            "scope" => scope(value)?,
            "mode" => {
                let text = string(value, name)?;
                if !["inclusive", "exclusive", "redirect", "auxiliary"].contains(&text) {
                    return Err(bad(
                        name,
                        format!("'{text}' is not inclusive, exclusive, redirect or auxiliary"),
                    ));
                }
                value.clone()
            }
            "operations" => operations(value)?,
            "management" => management(value)?,
            _ => {
                validate::name("registration property name", name)
                    .map_err(|e| bad(name, e.detail))?;
                value.clone()
            }
        };
        doc.insert(expanded_name(name, ctx), value);
    }
    Ok(doc)
}

/// The stored name of a member: the members of Table 5.2.9-1 as they are, any other (a
/// registration property) expanded.
fn expanded_name(name: &str, ctx: &ActiveContext) -> String {
    if MEMBERS.contains(&name) {
        name.to_string()
    } else {
        ctx.expand(name).into_owned()
    }
}

/// Checks the rules between the members of a whole registration (create, and the result of an
/// update): what is required, and what a mode allows (4.3.6.2).
pub fn check(doc: &Map<String, Value>, now: DateTime<Utc>, creating: bool) -> NgsiResult<()> {
    for required in ["information", "endpoint"] {
        if !doc.contains_key(required) {
            return Err(bad(required, "is required"));
        }
    }
    if creating {
        if let Some(text) = doc.get("expiresAt").and_then(Value::as_str) {
            let t = validate::date_time("registration expiresAt", text)?;
            if t <= now {
                return Err(bad("expiresAt", format!("{text} is in the past")));
            }
        }
    }
    let mode = Mode::of(doc);
    if matches!(mode, Mode::Exclusive | Mode::Redirect) {
        // A proxied registration must say exactly which entities it takes over: an exclusive or
        // redirect registration over every entity of a type would leave the broker unable to
        // tell what it may still store itself.
        for info in doc
            .get("information")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let entities = info.get("entities").and_then(Value::as_array);
            let Some(entities) = entities else {
                if mode == Mode::Exclusive {
                    return Err(bad(
                        "information",
                        "an exclusive registration must name its entities (with id)",
                    ));
                }
                continue;
            };
            if mode == Mode::Exclusive {
                if entities.iter().any(|e| e.get("id").is_none()) {
                    return Err(bad(
                        "information",
                        "an exclusive registration must name each entity by id (not by idPattern or type alone)",
                    ));
                }
                let names = |k: &str| info.get(k).and_then(Value::as_array).map_or(0, Vec::len);
                if names("propertyNames") + names("relationshipNames") == 0 {
                    return Err(bad(
                        "information",
                        "an exclusive registration must name the attributes it holds (propertyNames or relationshipNames)",
                    ));
                }
            }
        }
    }
    if let (Some(ops), Mode::Auxiliary) = (doc.get("operations").and_then(Value::as_array), mode) {
        for op in ops.iter().filter_map(Value::as_str) {
            let writes = Operation::expand(op)
                .into_iter()
                .flatten()
                .any(|o| !o.is_read());
            if writes {
                return Err(bad(
                    "operations",
                    format!(
                        "an auxiliary registration serves reads only, and '{op}' includes writes"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn string<'a>(value: &'a Value, member: &str) -> NgsiResult<&'a str> {
    value
        .as_str()
        .ok_or_else(|| bad(member, format!("must be a string, not {value}")))
}

/// A non-empty array of attribute names, expanded.
fn names(value: &Value, member: &str, ctx: &ActiveContext) -> NgsiResult<Value> {
    let list = value
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad(member, "must be a non-empty array of attribute names"))?;
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let name = string(item, member)?;
        validate::name("attribute name", name).map_err(|e| bad(member, e.detail))?;
        out.push(Value::String(ctx.expand(name).into_owned()));
    }
    Ok(Value::Array(out))
}

/// The RegistrationInfo array (5.2.10): each names entities (EntityInfo, 5.2.8), attributes, or
/// both.
fn information(value: &Value, ctx: &ActiveContext) -> NgsiResult<Value> {
    let list = value.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
        bad(
            "information",
            "must be a non-empty array of RegistrationInfo",
        )
    })?;
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let obj = item.as_object().ok_or_else(|| {
            bad(
                "information",
                format!("{item} is not a RegistrationInfo object"),
            )
        })?;
        let mut info = Map::new();
        for (name, v) in obj {
            let member = format!("information.{name}");
            let v = match name.as_str() {
                "entities" => entities(v, ctx)?,
                "propertyNames" | "relationshipNames" => names(v, &member, ctx)?,
                _ => {
                    return Err(bad(
                        &member,
                        "is not a member of RegistrationInfo (entities, propertyNames, relationshipNames)",
                    ))
                }
            };
            info.insert(name.clone(), v);
        }
        if info.is_empty() {
            return Err(bad(
                "information",
                "every RegistrationInfo needs entities, propertyNames or relationshipNames",
            ));
        }
        out.push(Value::Object(info));
    }
    Ok(Value::Array(out))
}

/// EntityInfo (5.2.8): a type (or types), and optionally an id or an idPattern.
fn entities(value: &Value, ctx: &ActiveContext) -> NgsiResult<Value> {
    let member = "information.entities";
    let list = value
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad(member, "must be a non-empty array of EntityInfo"))?;
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let obj = item
            .as_object()
            .ok_or_else(|| bad(member, format!("{item} is not an EntityInfo object")))?;
        let mut info = Map::new();
        let types = obj
            .get("type")
            .ok_or_else(|| bad(member, "every EntityInfo needs a type"))?;
        // An EntityInfo names types, not type expressions (5.2.8).
        let expand_type = |t: &Value| -> NgsiResult<Value> {
            let text = string(t, "information.entities type")?;
            validate::name("entity type", text).map_err(|e| bad(member, e.detail))?;
            Ok(Value::String(ctx.expand(text).into_owned()))
        };
        let types = match types {
            Value::Array(list) if !list.is_empty() => {
                Value::Array(list.iter().map(expand_type).collect::<NgsiResult<_>>()?)
            }
            Value::String(_) => expand_type(types)?,
            other => {
                return Err(bad(
                    member,
                    format!(
                        "an EntityInfo type must be a type name or a list of them, not {other}"
                    ),
                ))
            }
        };
        info.insert("type".into(), types);
        for (name, v) in obj {
            match name.as_str() {
                "type" => {}
                "id" => {
                    validate::uri("the EntityInfo id", string(v, "information.entities id")?)
                        .map_err(|e| bad(member, e.detail))?;
                    info.insert("id".into(), v.clone());
                }
                "idPattern" => {
                    query::parse_id_pattern(string(v, "information.entities idPattern")?)
                        .map_err(|e| bad(member, e.to_string()))?;
                    info.insert("idPattern".into(), v.clone());
                }
                other => {
                    return Err(bad(
                        member,
                        format!("'{other}' is not a member of EntityInfo (id, idPattern, type)"),
                    ))
                }
            }
        }
        out.push(Value::Object(info));
    }
    Ok(Value::Array(out))
}

/// A TimeInterval (5.2.11): startAt, and optionally a later endAt.
fn interval(value: &Value, member: &str) -> NgsiResult<Value> {
    let obj = value.as_object().ok_or_else(|| {
        bad(
            member,
            "must be a TimeInterval object with startAt (and endAt)",
        )
    })?;
    let time = |k: &str| -> NgsiResult<Option<DateTime<Utc>>> {
        obj.get(k)
            .map(|v| {
                let text = string(v, &format!("{member}.{k}"))?;
                validate::date_time(&format!("{member}.{k}"), text)
                    .map_err(|e| bad(&format!("{member}.{k}"), e.detail))
            })
            .transpose()
    };
    let start = time("startAt")?.ok_or_else(|| bad(member, "needs startAt"))?;
    if let Some(end) = time("endAt")? {
        if end <= start {
            return Err(bad(member, "endAt must be later than startAt"));
        }
    }
    if let Some(other) = obj
        .keys()
        .find(|k| !["startAt", "endAt"].contains(&k.as_str()))
    {
        return Err(bad(
            member,
            format!("'{other}' is not a member of TimeInterval (startAt, endAt)"),
        ));
    }
    Ok(value.clone())
}

/// The endpoint: an absolute http(s) URL with a host.
fn endpoint(text: &str) -> NgsiResult<url::Url> {
    url::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
        .ok_or_else(|| {
            bad(
                "endpoint",
                format!("'{text}' is not an http or https URL with a host"),
            )
        })
}

/// An array of KeyValuePair (5.2.22).
fn key_values(value: &Value, member: &str) -> NgsiResult<Value> {
    let list = value
        .as_array()
        .ok_or_else(|| bad(member, "must be an array of {\"key\", \"value\"} objects"))?;
    for pair in list {
        let ok = pair.as_object().is_some_and(|o| {
            o.len() == 2
                && o.get("key").is_some_and(Value::is_string)
                && o.get("value").is_some_and(Value::is_string)
        });
        if !ok {
            return Err(bad(
                member,
                format!("{pair} is not a {{\"key\": string, \"value\": string}} object"),
            ));
        }
    }
    Ok(value.clone())
}

/// One scope or a non-empty array of them (4.18).
fn scope(value: &Value) -> NgsiResult<Value> {
    let check = |v: &Value| -> NgsiResult<()> {
        let text = string(v, "scope")?;
        let pattern = query::ScopePattern::parse(text).map_err(|why| bad("scope", why))?;
        if pattern.is_wildcard() {
            return Err(bad(
                "scope",
                format!("'{text}' is a pattern; a scope names one path such as /Madrid/Parks"),
            ));
        }
        Ok(())
    };
    match value {
        Value::Array(list) if !list.is_empty() => list.iter().try_for_each(check)?,
        Value::String(_) => check(value)?,
        other => {
            return Err(bad(
                "scope",
                format!("must be a scope or a non-empty array of scopes, not {other}"),
            ))
        }
    }
    Ok(value.clone())
}

/// A non-empty array of operation and operation group names (4.20).
fn operations(value: &Value) -> NgsiResult<Value> {
    let list = value
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("operations", "must be a non-empty array of operation names"))?;
    for item in list {
        let name = string(item, "operations")?;
        if Operation::expand(name).is_none() {
            return Err(bad(
                "operations",
                format!("'{name}' is neither an NGSI-LD operation nor an operation group"),
            ));
        }
    }
    Ok(value.clone())
}

/// RegistrationManagementInfo (5.2.34).
fn management(value: &Value) -> NgsiResult<Value> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad("management", "must be a RegistrationManagementInfo object"))?;
    for (name, v) in obj {
        let member = format!("management.{name}");
        match MANAGEMENT_MEMBERS.iter().find(|(n, _)| n == name) {
            None => {
                let known: Vec<&str> = MANAGEMENT_MEMBERS.iter().map(|(n, _)| *n).collect();
                return Err(bad(&member, format!("is not one of {}", known.join(", "))));
            }
            Some((_, held)) => {
                let positive = v.as_f64().is_some_and(|n| n > 0.0);
                let ok = match held {
                    Held::Boolean => v.is_boolean(),
                    Held::Positive => positive,
                    Held::Duration => {
                        positive
                            || v.as_str().is_some_and(|d| {
                                crate::temporal::duration_micros(d).is_ok_and(|us| us > 0)
                            })
                    }
                };
                if !ok {
                    let expected = match held {
                        Held::Boolean => "true or false",
                        Held::Positive => "a positive number",
                        Held::Duration => {
                            "a positive number of seconds or an ISO 8601 duration such as PT5M"
                        }
                    };
                    return Err(bad(&member, format!("must be {expected}, not {v}")));
                }
            }
        }
    }
    Ok(value.clone())
}

/// The registration as a client sees it: members compacted with `ctx`, system members when
/// `sys_attrs`. (The counters of forwarded requests are not kept yet: docs/federation.md.)
pub fn render(record: &Record, ctx: &ActiveContext, sys_attrs: bool) -> Value {
    let compact = |n: &str| ctx.compact(n).into_owned();
    let compact_list = |v: &Value| -> Value {
        match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.clone(), |s| compact(s).into()))
                    .collect(),
            ),
            other => other.clone(),
        }
    };
    let compact_types = |v: &Value| -> Value {
        match v {
            Value::String(t) => Value::String(compact(t)),
            other => compact_list(other),
        }
    };
    let mut out = Map::new();
    out.insert("id".into(), Value::String(record.id.clone()));
    out.insert("type".into(), Value::String(TYPE.into()));
    for (name, value) in &record.doc {
        if name == "information" {
            let infos = value
                .as_array()
                .into_iter()
                .flatten()
                .map(|info| {
                    let mut info = info.as_object().cloned().unwrap_or_default();
                    for (member, v) in info.iter_mut() {
                        *v = match member.as_str() {
                            "entities" => Value::Array(
                                v.as_array()
                                    .into_iter()
                                    .flatten()
                                    .map(|e| {
                                        let mut e = e.clone();
                                        if let Some(t) = e.get("type") {
                                            e["type"] = compact_types(t);
                                        }
                                        e
                                    })
                                    .collect(),
                            ),
                            _ => compact_list(v),
                        };
                    }
                    Value::Object(info)
                })
                .collect();
            out.insert(name.clone(), Value::Array(infos));
        } else if MEMBERS.contains(&name.as_str()) {
            out.insert(name.clone(), value.clone());
        } else {
            out.insert(compact(name), value.clone());
        }
    }
    record.stats.render_into(&mut out);
    if sys_attrs {
        out.insert(
            "createdAt".into(),
            Value::String(format_time(&record.created_at)),
        );
        out.insert(
            "modifiedAt".into(),
            Value::String(format_time(&record.modified_at)),
        );
    }
    out.into()
}

/// Whether `name` (as stored) is one of the members of Table 5.2.9-1 rather than a registration
/// property.
pub fn is_member(name: &str) -> bool {
    MEMBERS.contains(&name)
}
