//! Handlers of the temporal API (/temporal/entities..., /temporal/entityOperations/query): read the
//! request with the same helpers as the entity API (negotiation, ids, attrs/pick/omit, entity
//! selection, paging), add the temporal parameters, call the temporal service, render.

use super::entities::{
    deletion_params, path_attr, projection, read_write, segment, target, Write, READ_OFFERS,
    SEGMENT, WRITE_OFFERS,
};
use super::negotiate::{read_body, Body, RequestInfo};
use super::query::{
    entity_query, page, page_headers, query_from_body, require_restriction, LinkOrder,
};
use super::response::{add_warnings, json_body};
use super::BASE;
use crate::error::{NgsiError, NgsiResult};
use crate::ld::ActiveContext;
use crate::model::parse::{scopes, EntityInput, Nulls, Reader};
use crate::model::render::{Format, RenderOptions};
use crate::model::AttrKind;
use crate::model::ENTITY_MEMBERS;
use crate::model::SCOPE_IRI;
use crate::query::q::QExpr;
use crate::query::EntityQuery;
use crate::service::entities::Target;
use crate::service::temporal::Cut;
use crate::service::AppState;
use crate::syntax::body::BodyError;
use crate::syntax::pointer::JsonPointer;
use crate::temporal::render::{self, instant, Content, TemporalEntity};
use crate::temporal::{self as tq, Representation, TemporalParams, TemporalQuery};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::{Map, Value};
use std::sync::Arc;

type Data = web::Data<AppState>;

/// The temporal parameters every read takes (5.7.3).
const TEMPORAL_PARAMS: &[&str] = &[
    "timerel",
    "timeAt",
    "endTimeAt",
    "timeproperty",
    "lastN",
    "aggrMethods",
    "aggrPeriodDuration",
];

/// Parameters of GET /temporal/entities/{id} besides the temporal ones.
const RETRIEVE_PARAMS: &[&str] = &[
    "attrs",
    "pick",
    "omit",
    "options",
    "format",
    "lang",
    "datasetId",
    "local",
    "via",
    "type",
    "entityMap",
    "entityMapLifetime",
];

/// Parameters of GET /temporal/entities besides the temporal ones.
const QUERY_PARAMS: &[&str] = &[
    "id",
    "idPattern",
    "type",
    "attrs",
    "pick",
    "omit",
    "q",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "scopeQ",
    "lang",
    "options",
    "format",
    "limit",
    "offset",
    "count",
    "csf",
    "local",
    "via",
    "datasetId",
    "orderBy",
    "expandValues",
    "entityMap",
    "entityMapLifetime",
];

/// Parameters of POST /temporal/entityOperations/query.
const POST_QUERY_PARAMS: &[&str] = &[
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "local",
    "lang",
    "entityMap",
    "entityMapLifetime",
];

fn params(extra: &[&'static str]) -> Vec<&'static str> {
    extra.iter().chain(TEMPORAL_PARAMS).copied().collect()
}

/// Reads the representation (`format` wins over `options`, 6.3.7) and the render options.
fn representation(
    info: &RequestInfo,
    ctx: &ActiveContext,
    temporal: &TemporalParams,
) -> NgsiResult<(Representation, RenderOptions)> {
    let options = info.options(&[
        "temporalValues",
        "aggregatedValues",
        "sysAttrs",
        "normalized",
        "concise",
        "keyValues",
        "simplified",
    ])?;
    let from_name = |name: &str| -> NgsiResult<Option<Representation>> {
        Ok(match name {
            "normalized" | "concise" => Some(Representation::Normalized),
            "temporalValues" | "keyValues" | "simplified" => Some(Representation::TemporalValues),
            "aggregatedValues" => Some(tq::aggregation(temporal)?),
            _ => None,
        })
    };
    let chosen = match info.param("format") {
        Some(f) => from_name(f)?.ok_or_else(|| {
            NgsiError::invalid(format!(
                "format={f} is unknown here; use normalized, temporalValues or aggregatedValues"
            ))
        })?,
        None => {
            let mut chosen = Representation::Normalized;
            for o in &options {
                if let Some(r) = from_name(o)? {
                    chosen = r;
                }
            }
            chosen
        }
    };
    let opts = RenderOptions {
        format: Format::Normalized,
        sys_attrs: options.iter().any(|o| o == "sysAttrs"),
        lang: info.param("lang").map(str::to_string),
        projection: projection(info, ctx)?,
    };
    Ok((chosen, opts))
}

/// Reads the temporal query of a request whose temporal parameters are `temporal`.
fn temporal_query(
    info: &RequestInfo,
    ctx: &ActiveContext,
    temporal: &TemporalParams,
) -> NgsiResult<(TemporalQuery, RenderOptions)> {
    let history = tq::history_query(temporal)?;
    let (representation, opts) = representation(info, ctx, temporal)?;
    let p = &opts.projection;
    if let (Some(pick), false) = (&p.pick, p.omit.is_empty()) {
        if let Some(both) = pick.iter().find(|m| p.omit.contains(*m)) {
            return Err(NgsiError::bad_data(format!(
                "'{}' is both in pick and in omit",
                ctx.compact(both)
            )));
        }
    }
    let attrs: Vec<String> = p.attrs.iter().flatten().cloned().collect();
    Ok((
        TemporalQuery {
            history,
            attrs,
            dataset_ids: p.dataset_ids.clone(),
            representation,
        },
        opts,
    ))
}

fn params_of(info: &RequestInfo) -> TemporalParams<'_> {
    TemporalParams {
        timerel: info.param("timerel"),
        time_at: info.param("timeAt"),
        end_time_at: info.param("endTimeAt"),
        time_property: info.param("timeproperty"),
        last_n: info.param("lastN"),
        aggr_methods: info.param("aggrMethods"),
        aggr_period: info.param("aggrPeriodDuration"),
    }
}

/// The Content-Range header of a cut response (6.3.10).
fn content_range(response: &mut HttpResponse, cut: &Option<Cut>) {
    let Some(cut) = cut else {
        return;
    };
    *response.status_mut() = actix_web::http::StatusCode::PARTIAL_CONTENT;
    let size = cut.size.map_or("*".to_string(), |n| n.to_string());
    let value = format!(
        "date-time {}-{}/{size}",
        instant(cut.first),
        instant(cut.last)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("content-range"), v);
    }
}

fn render_all(
    entities: &[TemporalEntity],
    query: &TemporalQuery,
    ctx: &ActiveContext,
    opts: &RenderOptions,
) -> Value {
    Value::Array(
        entities
            .iter()
            .map(|te| Value::Object(render::entity(te, query, ctx, opts)))
            .collect(),
    )
}

/// GET /temporal/entities/{id} (5.7.3).
pub async fn retrieve(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, &READ_OFFERS[..2], &params(RETRIEVE_PARAMS))?;
    let ctx = info.context(&broker).await?;
    let target = target(&req, &info, &ctx)?;
    let (query, opts) = temporal_query(&info, &ctx, &params_of(&info))?;
    let maps = super::entity_maps::map_request(&req, &info)?;
    let (te, cut, warnings) = broker
        .retrieve_temporal_distributed(&target, &query, &forwarded(&info), &info.reach())
        .await?;
    let empty = match &te.content {
        Content::Instances(r) => r.is_empty(),
        Content::Buckets(b) => b.is_empty(),
    };
    if empty
        && !query.attrs.is_empty()
        && !query.attrs.iter().any(|a| te.entity.attrs.contains_key(a))
    {
        return Err(NgsiError::not_found(format!(
            "temporal entity '{}' has none of the attributes asked for",
            target.id
        )));
    }
    let rendered = render::entity(&te, &query, &ctx, &opts);
    if rendered.is_empty() {
        return Err(NgsiError::not_found(format!(
            "temporal entity '{}' has no member left after pick and omit",
            target.id
        )));
    }
    let used = broker.temporal_retrieval_map(&target, &maps).await?;
    let mut response = json_body(&info, Value::Object(rendered));
    content_range(&mut response, &cut);
    add_warnings(&mut response, &warnings);
    super::entity_maps::name_map(&mut response, used.as_ref());
    Ok(response)
}

/// The temporal parameters of a GET request, which its sources are given as they came.
fn forwarded(info: &RequestInfo) -> Vec<(String, String)> {
    info.query
        .iter()
        .filter(|(k, _)| crate::service::temporal_sources::TEMPORAL_PARAMS.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// A temporal query as a request gives it: the request, its active context, the entity
/// selection, the temporal query, how to render its answer and the temporal parameters its
/// sources are given.
pub struct ReadQuery {
    /// Headers and parameters.
    pub info: RequestInfo,
    /// The active context.
    pub ctx: Arc<ActiveContext>,
    /// Which entities.
    pub selection: EntityQuery,
    /// Which part of their evolution.
    pub query: TemporalQuery,
    /// How to render it.
    pub opts: RenderOptions,
    /// The temporal parameters for the sources (timerel, timeAt, lastN, attrs, ...).
    pub forwarded: Vec<(String, String)>,
}

/// Reads a GET temporal query (GET /temporal/entities, GET /temporal/entityMaps).
pub async fn read_query(req: &HttpRequest, broker: &AppState) -> NgsiResult<ReadQuery> {
    let info = RequestInfo::read(req, &READ_OFFERS[..2], &params(QUERY_PARAMS))?;
    let ctx = info.context(broker).await?;
    let selection = entity_query(&info, &ctx)?;
    require_restriction(&selection, &info)?;
    refuse_links(&selection)?;
    check_order_and_csf(&info, &ctx)?;
    let (query, opts) = temporal_query(&info, &ctx, &params_of(&info))?;
    let forwarded = forwarded(&info);
    Ok(ReadQuery {
        info,
        ctx,
        selection,
        query,
        opts,
        forwarded,
    })
}

/// GET /temporal/entities (5.7.4).
pub async fn query(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let read = read_query(&req, &broker).await?;
    answer_query(&req, &broker, read).await
}

/// Runs a temporal query (GET or POST) here and at its sources, with the entity map it
/// references or asks for, and answers with the page, its paging headers, the Content-Range of
/// instances cut short and the map's location (201 when the query created the map).
async fn answer_query(
    req: &HttpRequest,
    broker: &AppState,
    read: ReadQuery,
) -> NgsiResult<HttpResponse> {
    let ReadQuery {
        info,
        ctx,
        selection,
        query,
        opts,
        forwarded,
    } = read;
    let (page, count) = page(&info, broker)?;
    let maps = super::entity_maps::map_request(req, &info)?;
    let sources = (forwarded.as_slice(), &info.reach());
    let (result, used, warnings) = broker
        .query_temporal_mapped(
            &info.tenant,
            selection,
            &query,
            (page, count),
            &maps,
            sources,
        )
        .await?;
    let mut response = json_body(&info, render_all(&result.entities, &query, &ctx, &opts));
    add_warnings(&mut response, &warnings);
    page_headers(
        &mut response,
        req,
        &info,
        (page, LinkOrder::Sorted),
        result.seen,
        count,
    );
    content_range(&mut response, &result.cut);
    super::entity_maps::name_query_map(&mut response, used.as_ref());
    Ok(response)
}

/// 5.7.4.4: conditions on linked entities (`rel{Type:attr}`) are not possible in a temporal query.
fn refuse_links(selection: &EntityQuery) -> NgsiResult<()> {
    fn linked(q: &QExpr) -> bool {
        match q {
            QExpr::And(items) | QExpr::Or(items) => items.iter().any(linked),
            QExpr::Exists(path) | QExpr::NotExists(path) | QExpr::Compare { path, .. } => {
                path.link.is_some()
            }
        }
    }
    if selection.q.as_ref().is_some_and(linked) {
        return Err(NgsiError::bad_data(
            "q: a temporal query cannot filter on linked entities (rel{Type:attr}); query their history separately",
        ));
    }
    Ok(())
}

/// 5.7.4.4: entities of a temporal query can only be ordered by id (ascending, the order
/// they come in); `csf` must be a valid query even though this broker has no context sources
/// to apply it to.
fn check_order_and_csf(info: &RequestInfo, ctx: &ActiveContext) -> NgsiResult<()> {
    if let Some(order) = info.param("orderBy") {
        for member in order.split(',') {
            if !matches!(member.trim(), "id" | "id;asc") {
                return Err(NgsiError::bad_data(format!(
                    "orderBy={order}: temporal entities can only be ordered by id (ascending); '{member}' is not possible"
                )));
            }
        }
    }
    if let Some(csf) = info.param("csf") {
        crate::query::q::parse(csf, ctx).map_err(|e| e.for_input("csf"))?;
    }
    Ok(())
}

/// Text of a temporalQ member: strings as they are, numbers as written.
fn member_text(obj: &Map<String, Value>, name: &str) -> NgsiResult<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Array(items)) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            names.map(|n| Some(n.join(","))).ok_or_else(|| {
                NgsiError::bad_data(format!("{name} must be a string or an array of strings"))
            })
        }
        Some(other) => Err(NgsiError::bad_data(format!(
            "{name} must be a string, not {other}"
        ))),
    }
}

/// Reads a POST temporal query (POST /temporal/entityOperations/query, POST
/// /temporal/entityMaps): a Query body with its temporalQ.
pub async fn read_post_query(
    req: &HttpRequest,
    payload: web::Payload,
    broker: &AppState,
) -> NgsiResult<ReadQuery> {
    let mut info = RequestInfo::read(req, &READ_OFFERS[..2], POST_QUERY_PARAMS)?;
    let Body { mut json, context } =
        read_body(req, payload, &info, broker.settings().max_body_bytes, false).await?;
    let ctx = broker.contexts().active(context.as_ref()).await?;
    let temporal_q = json
        .as_object_mut()
        .and_then(|o| o.remove("temporalQ"))
        .unwrap_or(Value::Object(Map::new()));
    let temporal_q = temporal_q
        .as_object()
        .ok_or_else(|| NgsiError::bad_data("temporalQ must be a JSON object"))?;
    let (selection, body) = query_from_body(&json, &ctx)?;
    require_restriction(&selection, &info)?;
    refuse_links(&selection)?;
    // Members that shape the answer are read like their parameters.
    let mut members: Vec<(&str, Option<String>)> = Vec::new();
    for (name, from) in [
        ("lang", &body),
        ("pick", &body),
        ("omit", &body),
        ("attrs", &body),
        ("datasetId", &body),
        ("aggrMethods", &body),
        ("aggrPeriodDuration", &body),
    ] {
        members.push((name, member_text(from, name)?));
    }
    if let Some(aggr) = body.get("aggrParams").and_then(Value::as_object) {
        for name in ["aggrMethods", "aggrPeriodDuration"] {
            members.push((name, member_text(aggr, name)?));
        }
    }
    for name in ["aggrMethods", "aggrPeriodDuration"] {
        members.push((name, member_text(temporal_q, name)?));
    }
    for (name, value) in members {
        if let Some(v) = value {
            info.query.retain(|(k, _)| k != name);
            info.query.push((name.to_string(), v));
        }
    }
    // Aggregation parameters in the body ask for the aggregated representation unless the
    // request names another one.
    if info.param("aggrMethods").is_some()
        && info.param("format").is_none()
        && info.param("options").is_none()
    {
        info.query
            .push(("options".to_string(), "aggregatedValues".to_string()));
    }
    let texts: Vec<Option<String>> = ["timerel", "timeAt", "endTimeAt", "timeproperty", "lastN"]
        .iter()
        .map(|n| member_text(temporal_q, n))
        .collect::<NgsiResult<_>>()?;
    let temporal = TemporalParams {
        timerel: texts[0].as_deref(),
        time_at: texts[1].as_deref(),
        end_time_at: texts[2].as_deref(),
        time_property: texts[3].as_deref(),
        last_n: texts[4].as_deref(),
        aggr_methods: info.param("aggrMethods"),
        aggr_period: info.param("aggrPeriodDuration"),
    };
    let (query, opts) = temporal_query(&info, &ctx, &temporal)?;
    let mut forwarded = forwarded(&info);
    for (name, text) in ["timerel", "timeAt", "endTimeAt", "timeproperty", "lastN"]
        .into_iter()
        .zip(texts)
    {
        if let Some(text) = text {
            forwarded.push((name.to_string(), text));
        }
    }
    Ok(ReadQuery {
        info,
        ctx,
        selection,
        query,
        opts,
        forwarded,
    })
}

/// POST /temporal/entityOperations/query (5.7.4 with a Query body and its temporalQ).
pub async fn post_query(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let read = read_post_query(&req, payload, &broker).await?;
    answer_query(&req, &broker, read).await
}

fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// POST /temporal/entities (5.6.11): 201 when created, 204 when instances were added.
pub async fn upsert(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let w = read_write(&req, payload, &broker, false, &["local"]).await?;
    if w.body.as_object().is_some_and(Map::is_empty) {
        return Err(NgsiError::invalid(
            "the body is an empty object; a temporal entity needs at least an id and a type",
        ));
    }
    let now = Utc::now();
    let mut body = w.body;
    let scope = body.as_object_mut().and_then(|o| o.remove("scope"));
    let reader = Reader::new(&w.ctx, now, Nulls::Forbidden).temporal();
    let mut input = reader.entity(&body, true)?;
    if let Some(scope) = scope {
        temporal_scope(&reader, &scope, &mut input)?;
    }
    let id = input.id.clone().unwrap_or_default();
    if broker.upsert_temporal(&w.info.tenant, input, now).await? {
        let encoded = percent_encoding::utf8_percent_encode(&id, SEGMENT);
        Ok(HttpResponse::Created()
            .insert_header(("Location", format!("{BASE}/temporal/entities/{encoded}")))
            .finish())
    } else {
        Ok(no_content())
    }
}

/// Reads the `scope` member of a temporal representation: the scopes (a change made now), or
/// their temporal evolution (4.5.6): Property instances whose values are scopes, kept under the
/// reserved Scope attribute with their values as lists.
fn temporal_scope(reader: &Reader, scope: &Value, input: &mut EntityInput) -> NgsiResult<()> {
    let plain = match scope {
        Value::Array(items) => items.iter().all(Value::is_string),
        other => other.is_string(),
    };
    if plain {
        input.scope = Some(scopes(scope).map_err(|e| e.under("scope"))?);
        return Ok(());
    }
    let mut instances = reader
        .attribute("scope", SCOPE_IRI, scope)
        .map_err(|e| e.under("scope"))?;
    // Instance `i`: an element of the array, or the one instance given alone.
    let at = |i: usize| match scope {
        Value::Array(_) => JsonPointer::to("scope").child(i),
        _ => JsonPointer::to("scope"),
    };
    for (i, a) in instances.iter_mut().enumerate() {
        if a.kind != AttrKind::Property || a.dataset_id.is_some() {
            let why =
                "the scope instances of a temporal representation are Properties without datasetId";
            return Err(BodyError::at(at(i), why).into());
        }
        let values = scopes(&a.value).map_err(|e| e.within(&at(i).child("value")))?;
        a.value = Value::from(values);
    }
    input.attrs.insert(SCOPE_IRI.to_string(), instances);
    Ok(())
}

/// DELETE /temporal/entities/{id} (5.6.16).
pub async fn delete(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, WRITE_OFFERS, &["local", "type"])?;
    let ctx = info.context(&broker).await?;
    broker.delete_temporal(&target(&req, &info, &ctx)?).await?;
    Ok(no_content())
}

/// POST /temporal/entities/{id}/attrs (5.6.12).
pub async fn append_attrs(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let w = read_write(&req, payload, &broker, false, &["local", "type"]).await?;
    let target = target(&req, &w.info, &w.ctx)?;
    let obj = w
        .body
        .as_object()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| {
            NgsiError::invalid("the body must be a non-empty JSON object of attributes")
        })?;
    let attrs = Reader::new(&w.ctx, Utc::now(), Nulls::Forbidden)
        .temporal()
        .attributes(obj, &ENTITY_MEMBERS)?;
    broker.append_temporal(&target, attrs, Utc::now()).await?;
    Ok(no_content())
}

/// DELETE /temporal/entities/{id}/attrs/{attrId} (5.6.13), with `datasetId` or `deleteAll=true`.
pub async fn delete_attr(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(
        &req,
        WRITE_OFFERS,
        &["datasetId", "deleteAll", "local", "type"],
    )?;
    let ctx = info.context(&broker).await?;
    let target = target(&req, &info, &ctx)?;
    let (_, iri) = path_attr(&req, &ctx)?;
    let (dataset_id, delete_all) = deletion_params(&info)?;
    broker
        .delete_temporal_attr(&target, &iri, dataset_id, delete_all)
        .await?;
    Ok(no_content())
}

/// The attribute and instance of an instance path, and the target.
fn instance_path(
    req: &HttpRequest,
    info: &RequestInfo,
    ctx: &ActiveContext,
) -> NgsiResult<(Target, String, String, String)> {
    let target = target(req, info, ctx)?;
    let (name, iri) = path_attr(req, ctx)?;
    let instance_id = segment(req, "instanceId");
    crate::model::validate::uri("the instanceId in the URL", &instance_id)?;
    Ok((target, name, iri, instance_id))
}

/// PATCH /temporal/entities/{id}/attrs/{attrId}/{instanceId} (5.6.15): the body is the instance
/// (or an object naming the attribute with it).
pub async fn patch_instance(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let Write {
        info, body, ctx, ..
    } = read_write(&req, payload, &broker, false, &["local", "type"]).await?;
    let (target, name, iri, instance_id) = instance_path(&req, &info, &ctx)?;
    // The instance alone, or under its attribute's name (then errors point under the name).
    let (fragment, under) = match body.as_object().and_then(|o| o.get(&name)) {
        Some(fragment) => (fragment, Some(name.as_str())),
        None => (&body, None),
    };
    let mut instances = Reader::new(&ctx, Utc::now(), Nulls::Forbidden)
        .attribute(&name, &iri, fragment)
        .map_err(|e| match under {
            Some(name) => e.under(name),
            None => e,
        })?;
    let patch = match (instances.pop(), instances.is_empty()) {
        (Some(p), true) => p,
        _ => {
            return Err(NgsiError::bad_data(
                "the body must hold exactly one attribute instance",
            ))
        }
    };
    broker
        .patch_temporal_instance(&target, &iri, &instance_id, patch, Utc::now())
        .await?;
    Ok(no_content())
}

/// DELETE /temporal/entities/{id}/attrs/{attrId}/{instanceId} (5.6.14).
pub async fn delete_instance(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, WRITE_OFFERS, &["local", "type"])?;
    let ctx = info.context(&broker).await?;
    let (target, _, iri, instance_id) = instance_path(&req, &info, &ctx)?;
    broker
        .delete_temporal_instance(&target, &iri, &instance_id)
        .await?;
    Ok(no_content())
}
