//! The entity selection of a JSON body, read one way for every body that carries one: the Query
//! of POST /entityOperations/query and of the temporal query (5.2.23), and the Subscription
//! (5.2.12, checked when given and compiled when stored): `entities` (EntitySelectors, 5.2.33),
//! `q`, `geoQ` and `scopeQ`.

use super::{geo, parse_id_pattern, parse_scope, parse_types, q, EntityQuery, Selector};
use crate::error::{NgsiError, NgsiResult};
use crate::ld::ActiveContext;
use crate::syntax::ParseResult;
use serde_json::{Map, Value};

/// The string member `name` of `obj`, if given; `whose` starts the error's sentence.
fn string_member<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    whose: &str,
) -> NgsiResult<Option<&'a str>> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(NgsiError::bad_data(format!(
            "{whose}{name} must be a string, not {other}"
        ))),
    }
}

/// Reads one EntitySelector (5.2.33): `type` is required; `id` a URI or an array of URIs.
pub fn selector(item: &Value, ctx: &ActiveContext) -> NgsiResult<Selector> {
    let Value::Object(obj) = item else {
        return Err(NgsiError::bad_data(format!(
            "an EntitySelector must be a JSON object, not {item}"
        )));
    };
    let string = |k: &str| string_member(obj, k, "an EntitySelector's ");
    let ids: Vec<String> = match obj.get("id") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    NgsiError::bad_data(format!(
                        "an EntitySelector id must be a URI string, not {i}"
                    ))
                })
            })
            .collect::<NgsiResult<_>>()?,
        Some(other) => {
            return Err(NgsiError::bad_data(format!(
                "an EntitySelector's id must be a URI or an array of URIs, not {other}"
            )))
        }
    };
    for id in &ids {
        crate::model::validate::uri("id", id)?;
    }
    let types =
        string("type")?.ok_or_else(|| NgsiError::bad_data("an EntitySelector needs a type"))?;
    Ok(Selector {
        ids,
        id_pattern: string("idPattern")?.map(parse_id_pattern).transpose()?,
        types: parse_types(types, ctx)?,
    })
}

/// Reads `entities`: a non-empty array of EntitySelectors.
pub fn selectors(value: &Value, ctx: &ActiveContext) -> NgsiResult<Vec<Selector>> {
    value
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| NgsiError::bad_data("must be a non-empty array of EntitySelectors"))?
        .iter()
        .map(|item| selector(item, ctx))
        .collect()
}

/// Parses q with the attributes `expand_values` names (4.9, 6.4.3.2), which are compared with
/// the expanded form of the values given.
pub fn parse_q(
    text: &str,
    expand_values: Option<Vec<String>>,
    ctx: &ActiveContext,
) -> ParseResult<q::QExpr> {
    let mut q = q::parse(text, ctx)?;
    let attrs: Vec<String> = expand_values
        .unwrap_or_default()
        .iter()
        .map(|a| ctx.expand(a).into_owned())
        .collect();
    q.expand_values(&attrs);
    Ok(q)
}

/// A body member that is a comma-separated string or an array of strings.
pub fn string_list(value: Option<&Value>) -> NgsiResult<Option<Vec<String>>> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.split(',').map(str::to_string).collect())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    NgsiError::bad_data(format!("expected a list of strings, found {i}"))
                })
            })
            .collect::<NgsiResult<_>>()
            .map(Some),
        Some(other) => Err(NgsiError::bad_data(format!(
            "expected a string or a list of strings, found {other}"
        ))),
    }
}

/// Reads the selection of a body: `entities`, `q` (with the attributes `expandValues` names),
/// `geoQ` and `scopeQ`; what to return (attrs, ordering) is the caller's. q travels in JSON, yet
/// is often written percent-encoded as in a query string (`%20` for a space): it is decoded as
/// one would be. An error names the member.
pub fn selection(obj: &Map<String, Value>, ctx: &ActiveContext) -> NgsiResult<EntityQuery> {
    let text = |name: &str| string_member(obj, name, "");
    let named = |name: &'static str| {
        move |mut e: NgsiError| {
            e.detail = format!("{name}: {}", e.detail);
            e
        }
    };
    let q = match text("q")? {
        None => None,
        Some(q) => {
            let q = percent_encoding::percent_decode_str(q).decode_utf8_lossy();
            Some(parse_q(&q, string_list(obj.get("expandValues"))?, ctx)?)
        }
    };
    Ok(EntityQuery {
        selectors: match obj.get("entities") {
            None => Vec::new(),
            Some(entities) => selectors(entities, ctx).map_err(named("entities"))?,
        },
        attrs: Vec::new(),
        q,
        geo: obj
            .get("geoQ")
            .map(|g| geo::from_json(g, ctx))
            .transpose()
            .map_err(|e| NgsiError::from(e.under("geoQ")))?,
        scope: text("scopeQ")?.map(parse_scope).transpose()?,
        order: None,
    })
}
