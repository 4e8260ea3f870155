//! Reading subscriptions: the request body (or PATCH fragment) checked member by member into the
//! stored document ([`normalize`]), the whole document checked and compiled for matching
//! ([`compile`]), and the stored record rendered back for a client ([`render`]). Every invalid
//! member is a BadRequestData naming it.

use super::model::{
    bad, map_type_names, status, Endpoint, NotificationSpec, NotifyAs, Record, Subscription,
    Trigger,
};
use crate::error::NgsiResult;
use crate::ld::ActiveContext;
use crate::model::render::Format;
use crate::model::{format_time, validate};
use crate::query;
use crate::store::Collection;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The members a subscriber may give (Table 5.2.12-1); others (read-only or unknown) are dropped.
const MEMBERS: &[&str] = &[
    "subscriptionName",
    "description",
    "entities",
    "watchedAttributes",
    "notificationTrigger",
    "timeInterval",
    "q",
    "geoQ",
    "csf",
    "isActive",
    "notification",
    "expiresAt",
    "throttling",
    "temporalQ",
    "scopeQ",
    "lang",
    "jsonldContext",
    "datasetId",
    "localOnly",
    "splitEntities",
];

/// NotificationParams members a subscriber may give (Table 5.2.14-1).
const NOTIFICATION_MEMBERS: &[&str] = &[
    "attributes",
    "sysAttrs",
    "pick",
    "omit",
    "format",
    "showChanges",
    "endpoint",
    "join",
    "joinLevel",
];

/// Endpoint members a subscriber may give (Table 5.2.15-1).
const ENDPOINT_MEMBERS: &[&str] = &[
    "uri",
    "accept",
    "timeout",
    "cooldown",
    "receiverInfo",
    "notifierInfo",
];

/// Checks the members of a subscription body (all of it, or a PATCH fragment when `partial`) and
/// returns them as stored: read-only and unknown members dropped, entity types and attribute names
/// expanded with `ctx`. A member set to null in a fragment is returned as null (removal).
pub fn normalize(
    body: &Value,
    ctx: &ActiveContext,
    partial: bool,
) -> NgsiResult<Map<String, Value>> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("body", "must be a JSON object"))?;
    if let Some(t) = obj.get("type") {
        if t != "Subscription" {
            return Err(bad("type", format!("must be \"Subscription\", not {t}")));
        }
    } else if !partial {
        return Err(bad("type", "is required and must be \"Subscription\""));
    }
    let mut doc = Map::new();
    for (name, value) in obj {
        if !MEMBERS.contains(&name.as_str()) {
            continue;
        }
        if value.is_null() {
            if partial {
                doc.insert(name.clone(), Value::Null);
                continue;
            }
            return Err(bad(name, "must not be null"));
        }
        let value = match name.as_str() {
            "entities" => entities(value, ctx)?,
            "watchedAttributes" => names(value, name, ctx)?,
            "notificationTrigger" => triggers(value)?,
            "timeInterval" | "throttling" => positive(value, name)?,
            "isActive" | "localOnly" | "splitEntities" => boolean_member(value, name)?,
            "expiresAt" => expires_at(value)?,
            "notification" => notification(value, ctx)?,
            "jsonldContext" => {
                let text = string(value, name)?;
                validate::uri("subscription jsonldContext", text)?;
                value.clone()
            }
            "q" | "csf" | "scopeQ" | "lang" | "subscriptionName" | "description" => {
                string(value, name)?;
                value.clone()
            }
            "datasetId" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| bad(name, "must be an array"))?;
                for item in list {
                    let id = string(item, name)?;
                    if id != "@none" {
                        validate::uri("subscription datasetId", id)?;
                    }
                }
                value.clone()
            }
            _ => value.clone(),
        };
        doc.insert(name.clone(), value);
    }
    Ok(doc)
}

fn string<'a>(value: &'a Value, member: &str) -> NgsiResult<&'a str> {
    value
        .as_str()
        .ok_or_else(|| bad(member, format!("must be a string, not {value}")))
}

fn boolean_member(value: &Value, member: &str) -> NgsiResult<Value> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        other => Err(bad(member, format!("must be true or false, not {other}"))),
    }
}

fn positive(value: &Value, member: &str) -> NgsiResult<Value> {
    match value.as_f64() {
        Some(n) if n > 0.0 => Ok(value.clone()),
        _ => Err(bad(
            member,
            format!("must be a positive number of seconds, not {value}"),
        )),
    }
}

fn expires_at(value: &Value) -> NgsiResult<Value> {
    let text = string(value, "expiresAt")?;
    let t = validate::date_time("subscription expiresAt", text)?;
    if t <= Utc::now() {
        return Err(bad("expiresAt", format!("{text} is in the past")));
    }
    Ok(value.clone())
}

/// A non-empty array of attribute names, expanded.
fn names(value: &Value, member: &str, ctx: &ActiveContext) -> NgsiResult<Value> {
    let list = value
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad(member, "must be a non-empty array of attribute names"))?;
    let mut out = Vec::new();
    for item in list {
        let name = string(item, member)?;
        validate::name("attribute name", name).map_err(|e| bad(member, e.detail))?;
        out.push(Value::String(ctx.expand(name).into_owned()));
    }
    Ok(Value::Array(out))
}

/// pick/omit: member names, where `id` and `type` stand for themselves.
fn members(value: &Value, member: &str, ctx: &ActiveContext) -> NgsiResult<Value> {
    let list = value
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad(member, "must be a non-empty array of member names"))?;
    let mut out = Vec::new();
    for item in list {
        let name = string(item, member)?;
        validate::name("member name", name).map_err(|e| bad(member, e.detail))?;
        out.push(Value::String(match name {
            "id" | "type" => name.to_string(),
            _ => ctx.expand(name).into_owned(),
        }));
    }
    Ok(Value::Array(out))
}

fn entities(value: &Value, ctx: &ActiveContext) -> NgsiResult<Value> {
    let list = value
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("entities", "must be a non-empty array of EntitySelectors"))?;
    let mut out = Vec::new();
    for item in list {
        // Checked with the request's context as any EntitySelector is, then kept with the type
        // names expanded (compile reads it back with the same reader).
        query::json::selector(item, ctx).map_err(|e| bad("entities", e.detail))?;
        let mut selector = Map::new();
        for member in ["id", "idPattern"] {
            if let Some(v) = item.get(member) {
                selector.insert(member.into(), v.clone());
            }
        }
        let types = item.get("type").and_then(Value::as_str).unwrap_or_default();
        selector.insert(
            "type".into(),
            Value::String(map_type_names(types, &|n| ctx.expand(n).into_owned())),
        );
        out.push(Value::Object(selector));
    }
    Ok(Value::Array(out))
}

fn triggers(value: &Value) -> NgsiResult<Value> {
    let list = value.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
        bad(
            "notificationTrigger",
            "must be a non-empty array of trigger names",
        )
    })?;
    for item in list {
        let name = string(item, "notificationTrigger")?;
        if Trigger::from_name(name).is_none() {
            let known: Vec<&str> = Trigger::ALL.iter().map(|(_, n)| *n).collect();
            return Err(bad(
                "notificationTrigger",
                format!("'{name}' is not one of {}", known.join(", ")),
            ));
        }
    }
    Ok(value.clone())
}

fn key_values(value: &Value, member: &str) -> NgsiResult<Vec<(String, String)>> {
    let list = value
        .as_array()
        .ok_or_else(|| bad(member, "must be an array of {\"key\", \"value\"} objects"))?;
    list.iter()
        .map(|pair| {
            let text = |k: &str| -> NgsiResult<String> {
                pair.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(member, format!("{pair} needs a string {k}")))
            };
            Ok((text("key")?, text("value")?))
        })
        .collect()
}

fn notification(value: &Value, ctx: &ActiveContext) -> NgsiResult<Value> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad("notification", "must be a NotificationParams object"))?;
    let mut out = Map::new();
    for (name, v) in obj {
        if !NOTIFICATION_MEMBERS.contains(&name.as_str()) {
            continue;
        }
        let member = format!("notification.{name}");
        let v = match name.as_str() {
            "attributes" => names(v, &member, ctx)?,
            "pick" | "omit" => members(v, &member, ctx)?,
            "sysAttrs" | "showChanges" => boolean_member(v, &member)?,
            "format" => {
                format_of(string(v, &member)?)?;
                v.clone()
            }
            "endpoint" => endpoint_member(v)?,
            _ => v.clone(),
        };
        out.insert(name.clone(), v);
    }
    Ok(Value::Object(out))
}

fn format_of(name: &str) -> NgsiResult<Format> {
    match name {
        "normalized" => Ok(Format::Normalized),
        "concise" => Ok(Format::Concise),
        "keyValues" | "simplified" => Ok(Format::KeyValues),
        other => Err(bad(
            "notification.format",
            format!("'{other}' is not normalized, concise or keyValues"),
        )),
    }
}

fn endpoint_member(value: &Value) -> NgsiResult<Value> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad("notification.endpoint", "must be an Endpoint object"))?;
    let mut out = Map::new();
    for (name, v) in obj {
        if ENDPOINT_MEMBERS.contains(&name.as_str()) {
            out.insert(name.clone(), v.clone());
        }
    }
    let out = Value::Object(out);
    endpoint(&out)?;
    Ok(out)
}

/// Reads a stored Endpoint.
fn endpoint(value: &Value) -> NgsiResult<Endpoint> {
    let uri = value
        .get("uri")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("notification.endpoint.uri", "is required"))?;
    let parsed = url::Url::parse(uri)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https" | "mqtt" | "mqtts"))
        .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
        .ok_or_else(|| {
            bad(
                "notification.endpoint.uri",
                format!("'{uri}' is not an http, https, mqtt or mqtts URL with a host"),
            )
        })?;
    let accept = match value
        .get("accept")
        .map(|a| string(a, "notification.endpoint.accept"))
    {
        None => NotifyAs::Json,
        Some(Ok("application/json")) => NotifyAs::Json,
        Some(Ok("application/ld+json")) => NotifyAs::JsonLd,
        Some(Ok("application/geo+json")) => NotifyAs::GeoJson,
        Some(Ok(other)) => {
            return Err(bad(
                "notification.endpoint.accept",
                format!(
                "'{other}' is not application/json, application/ld+json or application/geo+json"
            ),
            ))
        }
        Some(Err(e)) => return Err(e),
    };
    let timeout_ms = match value.get("timeout") {
        None => None,
        Some(t) => Some(
            t.as_f64()
                .filter(|t| *t > 0.0)
                .ok_or_else(|| bad("notification.endpoint.timeout", "must be a positive number"))?
                as u64,
        ),
    };
    let info = |k: &str| -> NgsiResult<Vec<(String, String)>> {
        value
            .get(k)
            .map(|v| key_values(v, &format!("notification.endpoint.{k}")))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let endpoint = Endpoint {
        uri: parsed,
        accept,
        receiver_info: info("receiverInfo")?,
        notifier_info: info("notifierInfo")?,
        timeout_ms,
    };
    if endpoint.is_mqtt() && endpoint.uri.path().trim_start_matches('/').is_empty() {
        return Err(bad(
            "notification.endpoint.uri",
            format!("'{uri}' names no MQTT topic (mqtt://host[:port]/topic)"),
        ));
    }
    Ok(endpoint)
}

fn set_of(value: Option<&Value>) -> Option<HashSet<String>> {
    value.and_then(Value::as_array).map(|l| {
        l.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Checks the rules between members and compiles a stored record. `ctx` is the subscription's
/// context (for q and geoQ), `notify_ctx` the jsonldContext's when one is given.
pub fn compile(
    tenant: &str,
    record: Record,
    ctx: Arc<ActiveContext>,
    notify_ctx: Option<Arc<ActiveContext>>,
) -> NgsiResult<Subscription> {
    let doc = &record.doc;
    let text = |k: &str| doc.get(k).and_then(Value::as_str);
    let number = |k: &str| doc.get(k).and_then(Value::as_f64);
    if !doc.contains_key("entities") && !doc.contains_key("watchedAttributes") {
        return Err(bad(
            "entities",
            "a subscription needs entities or watchedAttributes (or both)",
        ));
    }
    if doc.contains_key("timeInterval") && doc.contains_key("watchedAttributes") {
        return Err(bad(
            "timeInterval",
            "cannot be combined with watchedAttributes (periodic or on change, not both)",
        ));
    }
    if doc.contains_key("timeInterval") && doc.contains_key("throttling") {
        return Err(bad("throttling", "cannot be combined with timeInterval"));
    }
    let notification = doc
        .get("notification")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("notification", "is required"))?;
    let endpoint_value = notification
        .get("endpoint")
        .ok_or_else(|| bad("notification.endpoint", "is required"))?;
    let attributes = set_of(notification.get("attributes"));
    let pick = set_of(notification.get("pick"));
    let omit = set_of(notification.get("omit")).unwrap_or_default();
    if attributes.is_some() && (pick.is_some() || !omit.is_empty()) {
        return Err(bad(
            "notification.attributes",
            "cannot be combined with pick or omit (use pick alone)",
        ));
    }
    if let Some(both) = pick.as_ref().and_then(|p| p.intersection(&omit).next()) {
        return Err(bad(
            "notification.pick",
            format!("'{both}' is in both pick and omit"),
        ));
    }
    let format = notification
        .get("format")
        .and_then(Value::as_str)
        .map(format_of)
        .transpose()?
        .unwrap_or_default();
    let flag = |k: &str| {
        notification
            .get(k)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    if flag("showChanges") && format == Format::KeyValues {
        return Err(bad(
            "notification.showChanges",
            "cannot be true with the keyValues format (it has no place for previous values)",
        ));
    }
    // The stored type names are IRIs already, which the context leaves as they are.
    let query = query::json::selection(doc, &ctx).map_err(|mut e| {
        e.detail = format!("subscription {}", e.detail);
        e
    })?;
    if let Some(csf) = text("csf") {
        query::q::parse(csf, &ctx).map_err(|e| e.for_input("csf"))?;
    }
    let triggers = match doc.get("notificationTrigger").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .filter_map(Trigger::from_name)
            .collect(),
        None => Trigger::DEFAULT.to_vec(),
    };
    let notify_context = match (text("jsonldContext"), &record.context) {
        (Some(url), _) => Value::String(url.to_string()),
        (None, Some(c)) => c.clone(),
        (None, None) => Value::String(crate::ld::CORE_CONTEXT_V1_9.to_string()),
    };
    let expires_at = text("expiresAt")
        .map(|t| validate::date_time("subscription expiresAt", t))
        .transpose()?;
    let temporal = doc.get("temporalQ").map(temporal_q).transpose()?;
    Ok(Subscription {
        tenant: tenant.to_string(),
        query,
        temporal,
        watched: set_of(doc.get("watchedAttributes"))
            .map(|s| s.into_iter().collect())
            .unwrap_or_default(),
        triggers,
        time_interval: number("timeInterval"),
        throttling: number("throttling"),
        expires_at,
        is_active: doc.get("isActive").and_then(Value::as_bool).unwrap_or(true),
        split_entities: doc
            .get("splitEntities")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        lang: text("lang").map(str::to_string),
        notification: NotificationSpec {
            attributes,
            pick,
            omit,
            format,
            show_changes: flag("showChanges"),
            sys_attrs: flag("sysAttrs"),
            dataset_ids: set_of(doc.get("datasetId")).map(|ids| {
                ids.into_iter()
                    .map(|d| (d != "@none").then_some(d))
                    .collect()
            }),
            endpoint: endpoint(endpoint_value)?,
            join: crate::model::join::Join::of(
                notification.get("join").and_then(Value::as_str),
                notification
                    .get("joinLevel")
                    .map(|l| l.to_string())
                    .as_deref(),
            )
            .map_err(|e| bad("notification.join", e.detail))?,
        },
        ctx: notify_ctx.unwrap_or(ctx),
        notify_context,
        record,
        csource: None,
    })
}

/// Compiles a stored context source registration subscription (5.11.2): the checks and options of
/// an entity subscription, and what it selects registrations by, as discovery (5.10.2) does:
/// entities and watchedAttributes against their information, q and csf on their members, geoQ on
/// their location, scopeQ on their scope, temporalQ on their observation or management interval.
pub fn compile_csource(
    tenant: &str,
    record: Record,
    ctx: Arc<ActiveContext>,
    notify_ctx: Option<Arc<ActiveContext>>,
) -> NgsiResult<Subscription> {
    let text = |k: &str| record.doc.get(k).and_then(Value::as_str);
    let csf = text("csf")
        .map(|csf| query::q::parse(&percent_decoded(csf), &ctx))
        .transpose()
        .map_err(|e| e.for_input("csf"))?;
    let mut sub = compile(tenant, record, ctx, notify_ctx)?;
    let mut query = std::mem::take(&mut sub.query);
    query.attrs = sub.watched.clone();
    let time = sub.temporal.take();
    sub.csource = Some(crate::federation::Discovery { query, csf, time });
    Ok(sub)
}

/// A subscription's temporalQ (TemporalQuery, 5.2.21) as the time range it selects.
fn temporal_q(value: &Value) -> NgsiResult<crate::store::history::HistoryQuery> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad("temporalQ", "must be a TemporalQuery object"))?;
    let member = |k: &str| -> NgsiResult<Option<&str>> {
        obj.get(k)
            .map(|v| string(v, &format!("temporalQ.{k}")))
            .transpose()
    };
    if member("timerel")?.is_none() {
        return Err(bad("temporalQ.timerel", "is required"));
    }
    crate::temporal::history_query(&crate::temporal::TemporalParams {
        timerel: member("timerel")?,
        time_at: member("timeAt")?,
        end_time_at: member("endTimeAt")?,
        time_property: member("timeproperty")?,
        ..Default::default()
    })
    .map_err(|e| bad("temporalQ", e))
}

/// The subscription as a client sees it (5.2.12): the stored members with names compacted by the
/// client's context, plus id, type, status, the default notificationTrigger (entity
/// subscriptions only: registration subscriptions have no triggers) and the delivery statistics;
/// system times with `sys_attrs`.
pub fn render(
    record: &Record,
    collection: Collection,
    ctx: &ActiveContext,
    sys_attrs: bool,
    now: DateTime<Utc>,
) -> Value {
    let compact = |n: &str| ctx.compact(n).into_owned();
    let compact_list = |v: &Value| -> Value {
        match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| match i.as_str() {
                        Some("id") | Some("type") => i.clone(),
                        Some(s) => Value::String(compact(s)),
                        None => i.clone(),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    };
    let mut out = Map::new();
    out.insert("id".into(), Value::String(record.id.clone()));
    out.insert("type".into(), Value::String("Subscription".into()));
    for (name, value) in &record.doc {
        let value = match name.as_str() {
            "entities" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        let mut s = s.clone();
                        if let Some(t) = s.get("type").and_then(Value::as_str) {
                            s["type"] = Value::String(map_type_names(t, &|n| compact(n)));
                        }
                        s
                    })
                    .collect(),
            ),
            "watchedAttributes" => compact_list(value),
            "notification" => {
                let mut n = value.as_object().cloned().unwrap_or_default();
                for member in ["attributes", "pick", "omit"] {
                    if let Some(v) = n.get(member) {
                        let v = compact_list(v);
                        n.insert(member.into(), v);
                    }
                }
                record.stats.render_into(&mut n);
                Value::Object(n)
            }
            _ => value.clone(),
        };
        out.insert(name.clone(), value);
    }
    if collection == Collection::Subscriptions && !out.contains_key("notificationTrigger") {
        out.insert(
            "notificationTrigger".into(),
            Value::Array(
                Trigger::DEFAULT
                    .iter()
                    .map(|t| Value::String(t.name().into()))
                    .collect(),
            ),
        );
    }
    let is_active = record
        .doc
        .get("isActive")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let expires = record
        .doc
        .get("expiresAt")
        .and_then(Value::as_str)
        .and_then(|t| validate::date_time("expiresAt", t).ok());
    out.insert(
        "status".into(),
        Value::String(status(is_active, expires, now).into()),
    );
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
    Value::Object(out)
}
