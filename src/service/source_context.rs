//! The @context a context source is spoken to with (4.3.6.6). A registration whose
//! contextSourceInfo names a `jsonldContext` gets every name of a forwarded request re-compacted
//! from the caller's @context to that one (query parameters, attribute and type names in paths,
//! and the members of bodies, never inside values), with that @context as the request's Link.
//! Every request to a source goes through [`AppState::send_to_source`].

use super::AppState;
use crate::federation::forward::{Answer, Call, Failure, Reach};
use crate::federation::Registration;
use crate::ld::ActiveContext;
use serde_json::{Map, Value};

/// Members whose values are data, not names: they are copied as they are.
const DATA_MEMBERS: &[&str] = &[
    "@context",
    "id",
    "value",
    "object",
    "languageMap",
    "vocab",
    "valueList",
    "objectList",
    "json",
    "datasetId",
    "instanceId",
    "observedAt",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "expiresAt",
    "unitCode",
    "coordinates",
    "uri",
    "endpoint",
];

/// Members and parameters whose values are lists of attribute names.
const NAME_LISTS: &[&str] = &[
    "attrs",
    "attributes",
    "watchedAttributes",
    "pick",
    "omit",
    "propertyNames",
    "relationshipNames",
];

impl AppState {
    /// Sends a request to a registration's source in the @context the registration asks for
    /// (`jsonldContext`), or as it is when it asks for none or for the caller's own.
    pub(crate) async fn send_to_source(
        &self,
        registration: &Registration,
        call: Call<'_>,
        reach: &Reach,
    ) -> Result<Answer, Failure> {
        let Some(wanted) = registration
            .info("jsonldContext")
            .filter(|w| reach.context.as_deref() != Some(*w))
        else {
            return self.sources.send(registration, call, reach).await;
        };
        let caller = reach.context.clone().map(Value::String);
        let target = Value::String(wanted.to_string());
        let (from, to) = match (
            self.contexts.active(caller.as_ref()).await,
            self.contexts.active(Some(&target)).await,
        ) {
            (Ok(from), Ok(to)) => (from, to),
            (Err(e), _) | (_, Err(e)) => {
                return Err(Failure::refused(format!(
                    "the jsonldContext {wanted} of registration {} cannot be used: {}",
                    registration.record.id, e.detail
                )))
            }
        };
        let path: Vec<String> = call
            .path
            .iter()
            .enumerate()
            .map(|(i, segment)| {
                let names_a_term =
                    i > 0 && matches!(call.path[i - 1], "attrs" | "types" | "attributes");
                if names_a_term {
                    term(segment, &from, &to)
                } else {
                    segment.to_string()
                }
            })
            .collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let params: Vec<(String, String)> = call
            .params
            .iter()
            .map(|(k, v)| (k.clone(), parameter(k, v, &from, &to)))
            .collect();
        let body = call.body.map(|b| members(b, &from, &to));
        let reach = Reach {
            context: Some(wanted.to_string()),
            ..reach.clone()
        };
        let call = Call {
            method: call.method,
            path: &path,
            params: &params,
            body: body.as_ref(),
        };
        self.sources.send(registration, call, &reach).await
    }
}

/// One name, from the caller's terms to the source's (a JSON-LD keyword stays as it is).
fn term(name: &str, from: &ActiveContext, to: &ActiveContext) -> String {
    let iri = from.expand(name);
    if iri.starts_with('@') {
        return name.to_string();
    }
    to.compact(&iri).into_owned()
}

/// A query parameter with its names in the source's terms: lists of attribute names, type
/// expressions (every name between the operators), q and the geoproperty.
fn parameter(key: &str, value: &str, from: &ActiveContext, to: &ActiveContext) -> String {
    match key {
        "type" => {
            let mut out = String::new();
            let mut name = String::new();
            for c in value.chars() {
                if ",;|()".contains(c) {
                    if !name.is_empty() {
                        out.push_str(&term(&std::mem::take(&mut name), from, to));
                    }
                    out.push(c);
                } else {
                    name.push(c);
                }
            }
            if !name.is_empty() {
                out.push_str(&term(&name, from, to));
            }
            out
        }
        "q" => crate::query::q::parse(value, from)
            .map(|q| q.compacted(to).to_string())
            .unwrap_or_else(|_| value.to_string()),
        "geoproperty" => term(value, from, to),
        k if NAME_LISTS.contains(&k) => value
            .split(',')
            .map(|n| term(n, from, to))
            .collect::<Vec<_>>()
            .join(","),
        _ => value.to_string(),
    }
}

/// A body with its names in the source's terms: member names (attributes, sub-attributes), the
/// values of `type`, lists of attribute names and q; values of data members stay as they are.
fn members(body: &Value, from: &ActiveContext, to: &ActiveContext) -> Value {
    match body {
        Value::Array(items) => Value::Array(items.iter().map(|i| members(i, from, to)).collect()),
        Value::Object(object) => {
            let mut out = Map::new();
            for (k, v) in object {
                let value = match (k.as_str(), v) {
                    (k, v) if DATA_MEMBERS.contains(&k) => v.clone(),
                    ("type", Value::String(t)) => Value::String(term(t, from, to)),
                    ("type", Value::Array(list)) => Value::Array(
                        list.iter()
                            .map(|t| match t {
                                Value::String(t) => Value::String(term(t, from, to)),
                                other => other.clone(),
                            })
                            .collect(),
                    ),
                    ("q", Value::String(q)) => Value::String(parameter("q", q, from, to)),
                    ("geoproperty", Value::String(g)) => Value::String(term(g, from, to)),
                    (k, Value::Array(list)) if NAME_LISTS.contains(&k) => Value::Array(
                        list.iter()
                            .map(|n| match n {
                                Value::String(n) => Value::String(term(n, from, to)),
                                other => other.clone(),
                            })
                            .collect(),
                    ),
                    (_, v) => members(v, from, to),
                };
                out.insert(term(k, from, to), value);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}
