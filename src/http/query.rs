//! Handlers of GET /entities and POST /entityOperations/query (5.7.2): read the selectors, the
//! projection and the page, run the query service, render the page with its headers.

use super::entities::{render_options, READ_OFFERS};
use super::negotiate::{read_body, Accepted, Body, RequestInfo};
use super::response::json_body;
use crate::error::{NgsiError, NgsiResult};
use crate::federation::forward::Reach;
use crate::ld::ActiveContext;
use crate::model::render::{self, RenderOptions};
use crate::query::order::OrderingText;
use crate::query::{self, EntityQuery, Selector};
use crate::service::query::{Page, QueryResult};
use crate::service::AppState;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use std::sync::Arc;

type Data = web::Data<AppState>;

/// The parameters of GET /entities (Table 6.4.3.2-1), also those of GET /entityMaps (6.34.3.1).
pub const QUERY_PARAMS: &[&str] = &[
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
    "geometryProperty",
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
    "join",
    "joinLevel",
    "containedBy",
    "entityMap",
    "entityMapLifetime",
    "orderBy",
    "orderFrom",
    "orderGeometry",
    "collation",
    "expandValues",
    "splitEntities",
];

/// The parameters of POST /entityOperations/query, also those of POST /entityMaps (6.34.3.2).
pub const POST_QUERY_PARAMS: &[&str] = &[
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "local",
    "lang",
    "geometryProperty",
    "splitEntities",
    "entityMap",
    "entityMapLifetime",
];

/// How far a query reaches (local, Via, context) with its `splitEntities` flag (5.7.2.4)
/// checked (true or false) and its `csf`, the query on registrations that picks the context
/// sources consulted (5.7.2.4).
fn query_reach(info: &RequestInfo, ctx: &ActiveContext) -> NgsiResult<Reach> {
    let mut reach = match info.param("splitEntities") {
        None | Some("true") | Some("false") => info.reach(),
        Some(other) => {
            return Err(NgsiError::bad_data(format!(
                "splitEntities must be true or false, not '{other}'"
            )))
        }
    };
    if let Some(csf) = info.param("csf") {
        let parsed = crate::query::q::parse(csf, ctx).map_err(|e| e.for_input("csf"))?;
        reach.csf = Some(std::sync::Arc::new(parsed));
    }
    Ok(reach)
}

/// Reads `limit`, `offset` and `count` (5.5.9): limit within the configured maximum, limit=0 only
/// with count=true.
pub fn page(info: &RequestInfo, broker: &AppState) -> NgsiResult<(Page, bool)> {
    let number = |name: &str| -> NgsiResult<Option<usize>> {
        info.param(name)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    NgsiError::bad_data(format!("{name}={v} is not a non-negative integer"))
                })
            })
            .transpose()
    };
    let count = info.flag("count")?;
    let limit = number("limit")?.unwrap_or(broker.settings().default_page_size);
    let max = broker.settings().max_page_size;
    if limit > max {
        return Err(NgsiError::bad_data(format!(
            "limit={limit} is larger than this broker's maximum page size {max}"
        )));
    }
    if limit == 0 && !count {
        return Err(NgsiError::bad_data(
            "limit=0 only makes sense with count=true",
        ));
    }
    Ok((
        Page {
            limit,
            offset: number("offset")?.unwrap_or(0),
        },
        count,
    ))
}

/// Builds the geoQ of a request from its parameters, if any is given.
fn geo_from_params(
    info: &RequestInfo,
    ctx: &ActiveContext,
) -> NgsiResult<Option<query::geo::GeoQuery>> {
    let (georel, geometry, coordinates) = (
        info.param("georel"),
        info.param("geometry"),
        info.param("coordinates"),
    );
    match (georel, geometry, coordinates) {
        (None, None, None) => Ok(None),
        (Some(r), Some(g), Some(c)) => Ok(Some(query::geo::parse(
            r,
            g,
            c,
            info.param("geoproperty"),
            ctx,
        )?)),
        _ => Err(NgsiError::bad_data(
            "a geo-query needs georel, geometry and coordinates together",
        )),
    }
}

/// The entity selection of a query's parameters: id, idPattern, type, attrs, q, geoQ, scopeQ.
pub fn entity_query(info: &RequestInfo, ctx: &ActiveContext) -> NgsiResult<EntityQuery> {
    let ids = info.list("id")?.unwrap_or_default();
    for id in &ids {
        crate::model::validate::uri("id", id)?;
    }
    let selector = Selector {
        ids,
        id_pattern: info
            .param("idPattern")
            .map(query::parse_id_pattern)
            .transpose()?,
        types: info
            .param("type")
            .map(|t| query::parse_types(t, ctx))
            .transpose()?
            .flatten(),
    };
    if let Some(csf) = info.param("csf") {
        // Context source filters share the q grammar (4.9); this broker has no sources to
        // filter, but a malformed filter is still refused.
        query::q::parse(csf, ctx).map_err(|e| e.for_input("csf"))?;
    }
    if let Some(level) = info.param("joinLevel") {
        if !level.parse::<u32>().is_ok_and(|l| l > 0) {
            return Err(NgsiError::bad_data(format!(
                "joinLevel={level} must be a positive integer"
            )));
        }
    }
    Ok(EntityQuery {
        selectors: if selector.is_restricted() {
            vec![selector]
        } else {
            Vec::new()
        },
        attrs: attribute_names("attrs", info.list("attrs")?, ctx)?,
        q: match info.param("q") {
            None => None,
            Some(q) => Some(query::json::parse_q(q, info.list("expandValues")?, ctx)?),
        },
        geo: geo_from_params(info, ctx)?,
        scope: info.param("scopeQ").map(query::parse_scope).transpose()?,
        order: order_from_params(info, ctx)?,
    })
}

/// Reads the ordering parameters of a GET query (4.23.3): orderBy, orderFrom, orderGeometry and
/// collation.
fn order_from_params(
    info: &RequestInfo,
    ctx: &ActiveContext,
) -> NgsiResult<Option<query::order::Ordering>> {
    let order_by = info.param("orderBy").unwrap_or("");
    let text = OrderingText {
        order_by: order_by
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .collect(),
        coordinates: info.param("orderFrom").map(|c| Value::String(c.into())),
        geometry: info.param("orderGeometry"),
        collation: info.param("collation"),
    };
    Ok(query::order::parse(&text, ctx)?)
}

/// Reads the `ordering` member (OrderingParams, 5.2.43) of a POST query body.
fn order_from_body(
    ordering: Option<&Value>,
    ctx: &ActiveContext,
) -> NgsiResult<Option<query::order::Ordering>> {
    let Some(ordering) = ordering else {
        return Ok(None);
    };
    let obj = ordering
        .as_object()
        .ok_or_else(|| NgsiError::bad_data("the query's ordering must be a JSON object"))?;
    let string = |name: &str| -> NgsiResult<Option<&str>> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(NgsiError::bad_data(format!(
                "the ordering's {name} must be a string, not {other}"
            ))),
        }
    };
    let order_by: Vec<&str> = match obj.get("orderBy") {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(',').collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().ok_or_else(|| {
                    NgsiError::bad_data(format!(
                        "the ordering's orderBy items must be strings, not {i}"
                    ))
                })
            })
            .collect::<NgsiResult<_>>()?,
        Some(other) => {
            return Err(NgsiError::bad_data(format!(
                "the ordering's orderBy must be an array of strings, not {other}"
            )))
        }
    };
    let coordinates = match obj.get("coordinates") {
        None => None,
        Some(c @ Value::Array(_)) => Some(c.clone()),
        Some(other) => {
            return Err(NgsiError::bad_data(format!(
                "the ordering's coordinates must be a JSON array such as [8.0,40.0], not {other}"
            )))
        }
    };
    let text = OrderingText {
        order_by,
        coordinates,
        geometry: string("geometry")?,
        collation: string("collation")?,
    };
    Ok(query::order::parse(&text, ctx)?)
}

/// The attribute names of a list parameter (`param`, for the error), expanded; `id` and `type`
/// are no attributes.
pub fn attribute_names(
    param: &str,
    names: Option<Vec<String>>,
    ctx: &ActiveContext,
) -> NgsiResult<Vec<String>> {
    names
        .unwrap_or_default()
        .iter()
        .map(|n| {
            crate::model::validate::name("attribute name", n)?;
            if n == "id" || n == "type" {
                let hint = if param == "attrs" {
                    " (use pick to choose id or type)"
                } else {
                    ""
                };
                return Err(NgsiError::bad_data(format!(
                    "{param} names attributes; '{n}' is not one{hint}"
                )));
            }
            Ok(ctx.expand(n).into_owned())
        })
        .collect()
}

/// 5.7.2: a query names a type, attrs, q, geoQ or scopeQ, unless it asks for `local=true`.
pub fn require_restriction(query: &EntityQuery, info: &RequestInfo) -> NgsiResult<()> {
    require_narrowing(
        query.is_restricted(),
        info,
        "a query needs at least one of type, attrs, q, geoQ or scopeQ (or local=true)",
    )
}

/// Whether the request selects every type (`type=*`), which implies `local=true` (5.7.2).
pub fn every_type(info: &RequestInfo) -> bool {
    info.param("type").is_some_and(|t| t.trim() == "*")
}

/// BadRequestData (`needs` says what is missing) unless the request's selection is `narrowed`,
/// names every type (`type=*`) or asks for `local=true`; `type=*` contradicts an explicit
/// `local=false`.
pub fn require_narrowing(narrowed: bool, info: &RequestInfo, needs: &str) -> NgsiResult<()> {
    let every_type = every_type(info);
    if every_type && info.param("local") == Some("false") {
        return Err(NgsiError::bad_data(
            "type=* implies local=true and cannot be combined with local=false",
        ));
    }
    if narrowed || every_type || info.param("local") == Some("true") {
        return Ok(());
    }
    Err(NgsiError::bad_data(needs))
}

/// 5.7.2.4: a q on linked entity paths needs Linked Entity retrieval (`join`) at least as deep as
/// the paths reach (`joinLevel`, default 1).
fn check_link_depth(query: &EntityQuery, info: &RequestInfo) -> NgsiResult<()> {
    let depth = query.q.as_ref().map_or(0, |q| q.link_depth());
    if depth == 0 {
        return Ok(());
    }
    let Some(join) = super::join::parse(info)? else {
        return Err(NgsiError::bad_data(
            "q follows a linked entity path ('{'), which needs join=inline or join=flat",
        ));
    };
    if depth > join.level {
        return Err(NgsiError::bad_data(format!(
            "q follows linked entity paths {depth} levels deep, deeper than joinLevel={}",
            join.level
        )));
    }
    Ok(())
}

/// A query of entities as a request gives it: its request info, active context, checked entity
/// selection and how far it reaches.
pub type ReadQuery = (RequestInfo, Arc<ActiveContext>, EntityQuery, Reach);

/// Reads a GET query of entities (GET /entities, GET /entityMaps) with the parameters `params`.
pub async fn read_query(
    req: &HttpRequest,
    broker: &AppState,
    params: &[&str],
) -> NgsiResult<ReadQuery> {
    let info = RequestInfo::read(req, READ_OFFERS, params)?;
    let ctx = info.context(broker).await?;
    let query = entity_query(&info, &ctx)?;
    require_restriction(&query, &info)?;
    check_link_depth(&query, &info)?;
    let reach = query_reach(&info, &ctx)?;
    Ok((info, ctx, query, reach))
}

/// GET /entities (5.7.2).
pub async fn query(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    answer(
        &req,
        &broker,
        read_query(&req, &broker, QUERY_PARAMS).await?,
    )
    .await
}

/// Runs a query (GET or POST) with the entity map it references or asks for, and answers with
/// the page, its paging headers and the map's location (201 when the query created the map).
async fn answer(
    req: &HttpRequest,
    broker: &AppState,
    (info, ctx, query, reach): ReadQuery,
) -> NgsiResult<HttpResponse> {
    let opts = render_options(&info, &ctx)?;
    let (page, count) = page(&info, broker)?;
    let maps = super::entity_maps::map_request(req, &info)?;
    let (result, used) = broker
        .query_mapped(&info.tenant, query, page, count, &reach, &maps)
        .await?;
    let mut response = respond(req, broker, &info, &ctx, &opts, result, page, count).await?;
    super::entity_maps::name_query_map(&mut response, used.as_ref());
    Ok(response)
}

/// Reads the Query body of POST /entityOperations/query (5.2.23).
pub fn query_from_body(
    body: &Value,
    ctx: &ActiveContext,
) -> NgsiResult<(EntityQuery, Map<String, Value>)> {
    let obj = body
        .as_object()
        .ok_or_else(|| NgsiError::bad_data("the query body must be a JSON object"))?;
    if let Some(t) = obj.get("type") {
        if t != "Query" {
            return Err(NgsiError::bad_data(format!(
                "the query body's type must be \"Query\", not {t}"
            )));
        }
    }
    if obj.contains_key("temporalQ") {
        return Err(NgsiError::bad_data(
            "temporalQ belongs to the temporal query (/temporal/entityOperations/query)",
        ));
    }
    let attrs = match obj.get("attrs") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect();
            let names = names.ok_or_else(|| {
                NgsiError::bad_data("the query's attrs must be an array of strings")
            })?;
            attribute_names("attrs", Some(names), ctx)?
        }
        Some(other) => {
            return Err(NgsiError::bad_data(format!(
                "the query's attrs must be an array, not {other}"
            )))
        }
    };
    let query = EntityQuery {
        attrs,
        order: order_from_body(obj.get("ordering"), ctx)?,
        ..query::json::selection(obj, ctx)?
    };
    Ok((query, obj.clone()))
}

/// Reads a POST query of entities (POST /entityOperations/query, POST /entityMaps) with the
/// parameters `params`; the body members that shape the answer, and its csf, are read like
/// their parameters, and its sources get the body's @context.
pub async fn read_post_query(
    req: &HttpRequest,
    payload: web::Payload,
    broker: &AppState,
    params: &[&str],
) -> NgsiResult<ReadQuery> {
    let mut info = RequestInfo::read(req, READ_OFFERS, params)?;
    let Body { json, context } =
        read_body(req, payload, &info, broker.settings().max_body_bytes, false).await?;
    let ctx = broker.contexts().active(context.as_ref()).await?;
    let (query, body) = query_from_body(&json, &ctx)?;
    require_restriction(&query, &info)?;
    // Members that shape the answer rather than select entities are read like their parameters.
    for member in ["lang", "pick", "omit", "attrs", "join", "joinLevel"] {
        let value = match body.get(member) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            _ => continue,
        };
        info.query.push((member.into(), value));
    }
    check_link_depth(&query, &info)?;
    if let Some(Value::String(csf)) = body.get("csf") {
        info.query.push(("csf".into(), csf.clone()));
    }
    let mut reach = query_reach(&info, &ctx)?;
    reach.context = super::negotiate::single_url(context.as_ref());
    Ok((info, ctx, query, reach))
}

/// POST /entityOperations/query (5.7.2 with a Query body).
pub async fn post_query(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let read = read_post_query(&req, payload, &broker, POST_QUERY_PARAMS).await?;
    answer(&req, &broker, read).await
}

/// What a parameter of a pagination link escapes: only what would end or change the parameter, so
/// that ids and patterns (`urn:ngsi-ld:Building:1.*`) read as the client wrote them.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'=')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^');

/// How the parameters of a pagination link are ordered. The spec leaves it open; clients that
/// compare links as strings (the ETSI suite among them) expect entity queries sorted by name and
/// registration discovery in the request's order with limit and offset last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOrder {
    /// Every parameter sorted by name.
    Sorted,
    /// The request's parameters as given, then limit and offset.
    AsGiven,
}

/// A pagination link (4.12 / 6.3.10): the request's parameters with the new offset.
fn page_link(
    req: &HttpRequest,
    info: &RequestInfo,
    (page, order): (Page, LinkOrder),
    offset: usize,
    rel: &str,
) -> String {
    let mut params: Vec<(String, String)> = info
        .query
        .iter()
        .filter(|(k, _)| k != "offset" && k != "limit")
        .cloned()
        .collect();
    params.push(("limit".into(), page.limit.to_string()));
    params.push(("offset".into(), offset.to_string()));
    if order == LinkOrder::Sorted {
        params.sort();
    }
    let encode = |text: &str| percent_encoding::utf8_percent_encode(text, QUERY_VALUE).to_string();
    let query = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "<{}?{query}>; rel=\"{rel}\";type=\"{}\"",
        req.path(),
        info.accepted.media_type()
    )
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    req: &HttpRequest,
    broker: &AppState,
    info: &RequestInfo,
    ctx: &ActiveContext,
    opts: &RenderOptions,
    result: QueryResult,
    page: Page,
    count: bool,
) -> NgsiResult<HttpResponse> {
    let join = super::join::parse(info)?;
    let body = match (info.accepted, join) {
        (Accepted::GeoJson, _) => {
            let geo = ctx
                .expand(info.param("geometryProperty").unwrap_or("location"))
                .into_owned();
            let features: Vec<Value> = result
                .entities
                .iter()
                .map(|e| Value::Object(render::feature(e, ctx, opts, &geo)))
                .collect();
            json!({"type": "FeatureCollection", "features": features})
        }
        (_, Some(join)) => Value::Array(
            super::join::render(broker, &info.tenant, &result.entities, join, ctx, opts).await?,
        ),
        // An entity that pick/omit leaves without any member is not an answer.
        (_, None) => Value::Array(
            result
                .entities
                .iter()
                .map(|e| render::entity(e, ctx, opts))
                .filter(|e| !e.is_empty())
                .map(Value::Object)
                .collect(),
        ),
    };
    let mut response = json_body(info, body);
    page_headers(
        &mut response,
        req,
        info,
        (page, LinkOrder::Sorted),
        result.seen,
        count,
    );
    super::response::add_warnings(&mut response, &result.warnings);
    Ok(response)
}

/// Adds the paging headers of a query response: NGSILD-Results-Count when counted, and Link
/// headers to the previous and next pages.
pub fn page_headers(
    response: &mut HttpResponse,
    req: &HttpRequest,
    info: &RequestInfo,
    (page, order): (Page, LinkOrder),
    seen: usize,
    count: bool,
) {
    let headers = response.headers_mut();
    if count {
        headers.insert(
            HeaderName::from_static("ngsild-results-count"),
            HeaderValue::from(seen),
        );
    }
    let mut links = Vec::new();
    if page.offset > 0 {
        links.push(page_link(
            req,
            info,
            (page, order),
            page.offset.saturating_sub(page.limit),
            "prev",
        ));
    }
    if page.limit > 0 && page.offset + page.limit < seen {
        links.push(page_link(
            req,
            info,
            (page, order),
            page.offset + page.limit,
            "next",
        ));
    }
    for link in links {
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(HeaderName::from_static("link"), v);
        }
    }
}
