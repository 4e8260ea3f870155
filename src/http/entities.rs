//! Handlers of /entities and /entities/{id}/attrs: read the request, call the entity service,
//! render the answer.

use super::negotiate::{read_body, Accepted, Body, RequestInfo};
use super::response::json_body;
use super::BASE;
use crate::error::{NgsiError, NgsiResult};
use crate::federation::forward::Reach;
use crate::federation::ops::Operation;
use crate::ld::ActiveContext;
use crate::model::parse::{scopes, EntityInput, Nulls, Reader};
use crate::model::render::{self, Projection, RenderOptions};
use crate::model::ENTITY_MEMBERS;
use crate::model::SCOPE_IRI;
use crate::service::distributed::Retrieved;
use crate::service::entities::{Purged, Target, UpdateResult};
use crate::service::forwarding::Spread;
use crate::service::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Media types of writes' (error) responses.
pub const WRITE_OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];
/// Media types of reads (entities can be GeoJSON too).
pub const READ_OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd, Accepted::GeoJson];

type Data = web::Data<AppState>;

/// A write request read and resolved: its info, body and active context.
pub struct Write {
    /// Headers and query.
    pub info: RequestInfo,
    /// The JSON body without its @context.
    pub body: Value,
    /// The active context of the body.
    pub ctx: Arc<ActiveContext>,
    /// How far the write reaches: its sources get the caller's @context as a Link, the body's
    /// own when it is one URL (otherwise full IRIs, read under the core context).
    pub reach: Reach,
}

/// Characters an id cannot carry unescaped in a path segment (RFC 3986 3.3); `:` stays readable.
pub const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Query parameters of reads of one entity (5.7.1 and 6.5.3.1).
const READ_PARAMS: &[&str] = &[
    "attrs",
    "pick",
    "omit",
    "options",
    "format",
    "lang",
    "geometryProperty",
    "local",
    "via",
    "join",
    "joinLevel",
    "containedBy",
    "datasetId",
    "entityMap",
    "entityMapLifetime",
    "type",
];

/// Reads a write request: headers, query (`params` known), body and its active context.
pub async fn read_write(
    req: &HttpRequest,
    payload: web::Payload,
    broker: &AppState,
    merge_patch: bool,
    params: &[&str],
) -> NgsiResult<Write> {
    let info = RequestInfo::read(req, WRITE_OFFERS, params)?;
    let Body { json, context } = read_body(
        req,
        payload,
        &info,
        broker.settings().max_body_bytes,
        merge_patch,
    )
    .await?;
    let ctx = broker.contexts().active(context.as_ref()).await?;
    let mut reach = info.reach();
    reach.context = super::negotiate::single_url(context.as_ref());
    Ok(Write {
        info,
        body: json,
        ctx,
        reach,
    })
}

/// A path segment, fully percent-decoded (the router leaves reserved characters such as `%2F` and
/// `%23` encoded, but ids and attribute IRIs may contain them).
pub fn segment(req: &HttpRequest, name: &str) -> String {
    let raw = req.match_info().get(name).unwrap_or_default();
    url::form_urlencoded::parse(format!("x={}", raw.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| raw.to_string(), |(_, v)| v.into_owned())
}

/// The `{id}` of a subscription or registration path: a URI, else BadRequestData naming `what`.
pub fn record_id(req: &HttpRequest, what: &str) -> NgsiResult<String> {
    let id = segment(req, "id");
    crate::model::validate::uri(&format!("the {what} id in the URL"), &id)?;
    Ok(id)
}

fn path_id(req: &HttpRequest) -> NgsiResult<String> {
    let id = segment(req, "id");
    crate::model::validate::entity_id("the entity id in the URL", &id)?;
    Ok(id)
}

/// The addressed entity: tenant, id from the path and the `type` selector (expanded).
pub fn target(req: &HttpRequest, info: &RequestInfo, ctx: &ActiveContext) -> NgsiResult<Target> {
    let id = path_id(req)?;
    let types = match info.list("type")? {
        Some(names) => names.iter().map(|n| ctx.expand(n).into_owned()).collect(),
        None => Vec::new(),
    };
    Ok(Target {
        tenant: info.tenant.clone(),
        id,
        types,
    })
}

/// The attribute named in the path: as given and expanded.
pub fn path_attr(req: &HttpRequest, ctx: &ActiveContext) -> NgsiResult<(String, String)> {
    let name = segment(req, "attr");
    if name == "scope" {
        return Err(NgsiError::bad_data(
            "scope is not an attribute: change it with PATCH or POST /entities/{id}/attrs, or DELETE .../attrs/scope",
        ));
    }
    crate::model::validate::name("attribute name in the URL", &name)?;
    if is_dot_segment(&name) {
        return Err(NgsiError::bad_data(format!(
            "'{name}' is a relative path segment ('.' or '..'), not an attribute name"
        )));
    }
    let iri = ctx.expand(&name).into_owned();
    Ok((name, iri))
}

/// Whether a path segment (already decoded once) is `.` or `..`, also when still percent-encoded.
fn is_dot_segment(name: &str) -> bool {
    let mut text = name.to_string();
    for _ in 0..3 {
        if text == "." || text == ".." {
            return true;
        }
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    false
}

fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

fn update_result(ctx: &ActiveContext, result: UpdateResult) -> HttpResponse {
    if result.not_updated.is_empty() {
        return no_content();
    }
    let body = json!({
        "updated": result.updated.iter().map(|n| ctx.compact(n).into_owned()).collect::<Vec<_>>(),
        "notUpdated": result.not_updated.iter().map(|(n, reason)| json!({
            "attributeName": ctx.compact(n),
            "reason": reason,
        })).collect::<Vec<_>>(),
    });
    HttpResponse::MultiStatus()
        .content_type("application/json")
        .body(body.to_string())
}

/// The answer to a distributed write of the entity `id` (None: of the entities a purge selects):
/// `ok` when every part succeeded; the error itself when no part could even be tried; otherwise
/// 207 with the entity when some part of its write succeeded and each failed part (the
/// registration it went to, its attributes and the ProblemDetails).
fn spread_response<T>(
    spread: Spread<T>,
    ok: HttpResponse,
    id: Option<&str>,
    ctx: &ActiveContext,
) -> NgsiResult<HttpResponse> {
    if spread.failures.is_empty() {
        return Ok(ok);
    }
    if let Some(e) = spread.refusal() {
        return Err(e);
    }
    let succeeded = spread.local.is_some() || spread.reached;
    let errors: Vec<Value> = spread
        .failures
        .iter()
        .map(|f| {
            let mut e = json!({"error": f.problem()});
            if let Some(id) = id {
                e["entityId"] = json!(id);
            }
            if let Some(r) = &f.registration {
                e["registrationId"] = json!(r);
            }
            if !f.attrs.is_empty() {
                e["attributes"] = json!(f
                    .attrs
                    .iter()
                    .map(|a| ctx.compact(a).into_owned())
                    .collect::<Vec<_>>());
            }
            e
        })
        .collect();
    let body = json!({
        "success": id.filter(|_| succeeded).into_iter().collect::<Vec<_>>(),
        "errors": errors,
    });
    Ok(HttpResponse::MultiStatus()
        .content_type("application/json")
        .body(body.to_string()))
}

/// POST /entities (5.6.1).
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let w = read_write(&req, payload, &broker, false, &["local"]).await?;
    let now = Utc::now();
    let input = Reader::new(&w.ctx, now, Nulls::Forbidden).entity(&w.body, true)?;
    let id = input.id.clone().unwrap_or_default();
    let spread = broker
        .create_entity_distributed(&w.info.tenant, input, now, &w.reach)
        .await?;
    let mut r = HttpResponse::Created();
    let encoded = percent_encoding::utf8_percent_encode(&id, SEGMENT);
    r.insert_header(("Location", format!("{BASE}/entities/{encoded}")));
    spread_response(spread, r.finish(), Some(&id), &w.ctx)
}

/// One member of a pick or omit list: a name and, for `rel{a,b}`, the members of the entities
/// joined through it.
struct Member {
    name: String,
    linked: Option<Vec<Member>>,
}

/// Splits a pick/omit list at the commas (or `|`) outside braces: `id,locatedAt{id,name}`.
fn members(param: &str, text: &str) -> NgsiResult<Vec<Member>> {
    let empty = || NgsiError::bad_data(format!("{param}={text} has an empty item"));
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find([',', '|', '{', '}']).unwrap_or(rest.len());
        let name = rest[..end].trim();
        if name.is_empty() {
            return Err(empty());
        }
        rest = &rest[end..];
        let mut linked = None;
        if rest.starts_with('{') {
            let mut depth = 0usize;
            let close = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth = match c {
                        '{' => depth + 1,
                        '}' => depth - 1,
                        _ => depth,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .ok_or_else(|| NgsiError::bad_data(format!("{param}={text}: unclosed '{{'")))?;
            let inner = &rest[1..close];
            if inner.trim().is_empty() {
                return Err(NgsiError::bad_data(format!(
                    "{param}={text}: '{name}{{}}' selects no member of the linked entity"
                )));
            }
            linked = Some(members(param, inner)?);
            rest = &rest[close + 1..];
        }
        out.push(Member {
            name: name.to_string(),
            linked,
        });
        match rest.chars().next() {
            None => {}
            Some(',' | '|') if rest.len() > 1 => rest = &rest[1..],
            Some(',' | '|') => return Err(empty()),
            Some(c) => {
                return Err(NgsiError::bad_data(format!(
                    "{param}={text}: unexpected '{c}'"
                )))
            }
        }
    }
    Ok(out)
}

/// Expands the names of pick/omit members, the linked members into the projections of the
/// entities joined through them (`pick`: the Relationship itself is kept; `omit`: only its
/// linked members are omitted).
fn expand_members(
    list: Vec<Member>,
    pick: bool,
    ctx: &ActiveContext,
    linked: &mut HashMap<String, Projection>,
) -> NgsiResult<HashSet<String>> {
    let mut names = HashSet::new();
    for m in list {
        let name = expand_member(m.name, ctx)?;
        if let Some(inner) = m.linked {
            let mut nested = HashMap::new();
            let inner_names = expand_members(inner, pick, ctx, &mut nested)?;
            let projection = Projection {
                pick: pick.then(|| inner_names.clone()),
                omit: if pick { HashSet::new() } else { inner_names },
                linked: nested,
                ..Projection::default()
            };
            linked.insert(name.clone(), projection);
            if !pick {
                continue;
            }
        }
        names.insert(name);
    }
    Ok(names)
}

fn expand_member(n: String, ctx: &ActiveContext) -> NgsiResult<String> {
    if n == "id" || n == "type" {
        return Ok(n);
    }
    crate::model::validate::name("attribute name", &n)?;
    Ok(ctx.expand(&n).into_owned())
}

/// 5.7.1.4 / 5.7.2.4: selecting members of linked entities needs Linked Entity retrieval (`join`)
/// at least as deep as the selection reaches (`joinLevel`).
fn check_linked_depth(linked: &HashMap<String, Projection>, info: &RequestInfo) -> NgsiResult<()> {
    fn depth(linked: &HashMap<String, Projection>) -> u32 {
        linked
            .values()
            .map(|p| 1 + depth(&p.linked))
            .max()
            .unwrap_or(0)
    }
    let depth = depth(linked);
    if depth == 0 {
        return Ok(());
    }
    match super::join::parse(info)? {
        None => Err(NgsiError::bad_data(
            "pick/omit select members of linked entities ('{'), which needs join=inline or join=flat",
        )),
        Some(join) if depth > join.level => Err(NgsiError::bad_data(format!(
            "pick/omit reach {depth} linked entities deep, deeper than joinLevel={}",
            join.level
        ))),
        Some(_) => Ok(()),
    }
}

/// Reads `attrs`, `pick` and `omit` (compact names expanded with the request's context).
pub fn projection(info: &RequestInfo, ctx: &ActiveContext) -> NgsiResult<Projection> {
    let expand = |names: Vec<String>| -> NgsiResult<HashSet<String>> {
        names.into_iter().map(|n| expand_member(n, ctx)).collect()
    };
    let mut linked = HashMap::new();
    let pick = info
        .param("pick")
        .map(|p| expand_members(members("pick", p)?, true, ctx, &mut linked))
        .transpose()?;
    let attrs = info.list("attrs")?.map(expand).transpose()?;
    let omit = info
        .param("omit")
        .map(|o| expand_members(members("omit", o)?, false, ctx, &mut linked))
        .transpose()?
        .unwrap_or_default();
    check_linked_depth(&linked, info)?;
    if pick.is_some() && info.param("omit").is_some() {
        return Err(NgsiError::bad_data("pick and omit cannot be used together"));
    }
    if attrs.is_some() && (pick.is_some() || !omit.is_empty()) {
        return Err(NgsiError::bad_data(
            "attrs cannot be combined with pick or omit; use pick alone",
        ));
    }
    let dataset_ids = info.list("datasetId")?.map(|ids| {
        ids.into_iter()
            .map(|d| if d == "@none" { None } else { Some(d) })
            .collect()
    });
    Ok(Projection {
        attrs,
        pick,
        omit,
        dataset_ids,
        linked,
    })
}

/// The render options of a read request.
pub fn render_options(info: &RequestInfo, ctx: &ActiveContext) -> NgsiResult<RenderOptions> {
    if info.param("geometryProperty").is_some() && info.accepted != Accepted::GeoJson {
        return Err(NgsiError::bad_data(
            "geometryProperty only applies when the client accepts application/geo+json",
        ));
    }
    let options = info.options(&[
        "keyValues",
        "simplified",
        "normalized",
        "concise",
        "sysAttrs",
    ])?;
    Ok(RenderOptions {
        format: info.format()?,
        sys_attrs: options.iter().any(|o| o == "sysAttrs"),
        lang: info.param("lang").map(str::to_string),
        projection: projection(info, ctx)?,
    })
}

/// GET /entities/{id} (5.7.1).
pub async fn retrieve(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, READ_OFFERS, READ_PARAMS)?;
    let ctx = info.context(&broker).await?;
    let target = target(&req, &info, &ctx)?;
    let opts = render_options(&info, &ctx)?;
    let attrs: Vec<String> = opts.projection.attrs.iter().flatten().cloned().collect();
    let maps = super::entity_maps::map_request(&req, &info)?;
    let (retrieved, used) = broker
        .retrieve_mapped(&target, &attrs, &info.reach(), &maps)
        .await?;
    let Retrieved {
        entity, warnings, ..
    } = retrieved;
    let p = &opts.projection;
    let projected = p.attrs.is_some() || p.pick.is_some() || !p.omit.is_empty();
    if projected
        && !entity.attrs.keys().any(|k| p.keeps(k))
        && !p
            .pick
            .as_ref()
            .is_some_and(|k| k.contains("id") || k.contains("type"))
    {
        return Err(NgsiError::not_found(format!(
            "entity '{}' has none of the attributes asked for",
            entity.id
        ))
        .with_warnings(warnings));
    }
    let join = super::join::parse(&info)?;
    let body = match (info.accepted, join) {
        (Accepted::GeoJson, _) => {
            let geo = info.param("geometryProperty").unwrap_or("location");
            let geo_iri = ctx.expand(geo).into_owned();
            Value::Object(render::feature(&entity, &ctx, &opts, &geo_iri))
        }
        (_, Some(join)) => {
            let mut rendered =
                super::join::render(&broker, &info.tenant, &[entity], join, &ctx, &opts).await?;
            // Flat: the entity and the entities it links to; with none found, the entity alone.
            if join.flat && rendered.len() > 1 {
                Value::Array(rendered)
            } else {
                rendered.swap_remove(0)
            }
        }
        (_, None) => Value::Object(render::entity(&entity, &ctx, &opts)),
    };
    let mut response = json_body(&info, body);
    super::response::add_warnings(&mut response, &warnings);
    super::entity_maps::name_map(&mut response, used.as_ref());
    Ok(response)
}

/// DELETE /entities/{id} (5.6.6).
pub async fn delete(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, WRITE_OFFERS, &["local", "type"])?;
    let ctx = info.context(&broker).await?;
    let target = target(&req, &info, &ctx)?;
    let spread = broker
        .delete_entity_distributed(&target, &info.reach())
        .await?;
    spread_response(spread, no_content(), Some(&target.id), &ctx)
}

/// Query parameters of a purge (5.6.21, 6.4.3.3): the entity selection of a query, `local`,
/// and `drop` or `keep`.
const PURGE_PARAMS: &[&str] = &[
    "id",
    "idPattern",
    "type",
    "attrs",
    "q",
    "csf",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "scopeQ",
    "local",
    "drop",
    "keep",
];

/// DELETE /entities (purge, 5.6.21): the entities the query selects, or the attributes `drop`
/// names (or all but those `keep` names) of each, here and at the sources registered for them.
pub async fn purge(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, WRITE_OFFERS, PURGE_PARAMS)?;
    let ctx = info.context(&broker).await?;
    // 5.6.21.4: a purge does not follow Relationships (no Linked Entity retrieval).
    if info.param("attrs").is_some_and(|a| a.contains('{')) {
        return Err(NgsiError::bad_data(
            "attrs of a purge name attributes; Linked Entity retrieval ('{') is not available for a purge",
        ));
    }
    let query = super::query::entity_query(&info, &ctx)?;
    if query.q.as_ref().is_some_and(|q| q.link_depth() > 0) {
        return Err(NgsiError::bad_data(
            "q of a purge cannot follow linked entity paths ('{')",
        ));
    }
    super::query::require_narrowing(
        query.is_restricted_without_scope(),
        &info,
        "a purge needs at least one of type, attrs or q naming an attribute other than a system one, or a geoQ (or local=true); ids, idPattern and scopeQ alone select too widely",
    )?;
    let names = |param: &str, list| super::query::attribute_names(param, Some(list), &ctx);
    let purged = match (info.list("drop")?, info.list("keep")?) {
        (Some(_), Some(_)) => {
            return Err(NgsiError::bad_data(
                "drop and keep cannot be combined: drop names the attributes to delete, keep the only ones to leave",
            ))
        }
        (Some(drop), None) => Purged::Attrs(names("drop", drop)?),
        (None, Some(keep)) => Purged::AllBut(names("keep", keep)?),
        (None, None) => Purged::Entity,
    };
    let mut reach = info.reach();
    reach.local |= super::query::every_type(&info);
    let forwarded: Vec<(String, String)> = info
        .query
        .iter()
        .filter(|(k, _)| k != "local")
        .cloned()
        .collect();
    let spread = broker
        .purge_distributed(&info.tenant, query, purged, forwarded, &reach)
        .await?;
    spread_response(spread, no_content(), None, &ctx)
}

fn fragment(w: &Write, nulls: Nulls) -> NgsiResult<EntityInput> {
    Ok(Reader::new(&w.ctx, Utc::now(), nulls).entity(&w.body, false)?)
}

/// PATCH /entities/{id} (merge, 5.6.17).
pub async fn merge(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let w = read_write(
        &req,
        payload,
        &broker,
        true,
        &["local", "options", "format", "type"],
    )
    .await?;
    let target = target(&req, &w.info, &w.ctx)?;
    let input = fragment(&w, Nulls::Merge)?;
    let spread = broker
        .rewrite_entity_distributed(&target, input, true, Utc::now(), &w.reach)
        .await?;
    spread_response(spread, no_content(), Some(&target.id), &w.ctx)
}

/// PUT /entities/{id} (replace, 5.6.18).
pub async fn replace(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let w = read_write(&req, payload, &broker, false, &["local", "type"]).await?;
    let target = target(&req, &w.info, &w.ctx)?;
    let input = fragment(&w, Nulls::Forbidden)?;
    let spread = broker
        .rewrite_entity_distributed(&target, input, false, Utc::now(), &w.reach)
        .await?;
    spread_response(spread, no_content(), Some(&target.id), &w.ctx)
}

fn attrs_body(w: &Write, nulls: Nulls) -> NgsiResult<EntityInput> {
    let obj = w
        .body
        .as_object()
        .ok_or_else(|| NgsiError::invalid("the body must be a JSON object of attributes"))?;
    let reader = Reader::new(&w.ctx, Utc::now(), nulls);
    let types = match obj.get("type") {
        Some(t) => reader.types(t).map_err(|e| e.under("type"))?,
        None => Vec::new(),
    };
    let scope = obj
        .get("scope")
        .map(scopes)
        .transpose()
        .map_err(|e| e.under("scope"))?;
    let expires_at = reader.entity_expiry(obj)?;
    Ok(EntityInput {
        id: None,
        types,
        scope,
        attrs: reader.attributes(obj, &ENTITY_MEMBERS)?,
        expires_at,
    })
}

/// POST /entities/{id}/attrs (append, 5.6.3).
pub async fn append_attrs(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let w = read_write(&req, payload, &broker, false, &["options", "local", "type"]).await?;
    let target = target(&req, &w.info, &w.ctx)?;
    let no_overwrite = w
        .info
        .options(&["noOverwrite"])?
        .iter()
        .any(|o| o == "noOverwrite");
    let input = attrs_body(&w, Nulls::Delete)?;
    let result = broker
        .change_attrs_distributed(&target, input, Some(no_overwrite), Utc::now(), &w.reach)
        .await?;
    Ok(update_result(&w.ctx, result))
}

/// PATCH /entities/{id}/attrs (update, 5.6.2).
pub async fn update_attrs(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let w = read_write(&req, payload, &broker, false, &["local", "type"]).await?;
    let target = target(&req, &w.info, &w.ctx)?;
    let input = attrs_body(&w, Nulls::Delete)?;
    let result = broker
        .change_attrs_distributed(&target, input, None, Utc::now(), &w.reach)
        .await?;
    Ok(update_result(&w.ctx, result))
}

/// PATCH /entities/{id}/attrs/{attrId} (partial attribute update, 5.6.4).
pub async fn partial_update_attr(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    // A PATCH: its body may come as application/merge-patch+json (6.3.4).
    let w = read_write(&req, payload, &broker, true, &["local", "type"]).await?;
    let target = target(&req, &w.info, &w.ctx)?;
    let (name, iri) = path_attr(&req, &w.ctx)?;
    let local = broker.partial_update_attr(
        &target,
        (&name, &iri),
        w.body.clone(),
        w.ctx.clone(),
        Utc::now(),
    );
    let spread = broker
        .attribute_write_distributed(
            &target,
            Operation::UpdateAttrs,
            (&iri, &name),
            reqwest::Method::PATCH,
            Vec::new(),
            Some(&w.body),
            &w.reach,
            local,
        )
        .await?;
    spread_response(spread, no_content(), Some(&target.id), &w.ctx)
}

/// PUT /entities/{id}/attrs/{attrId} (replace attribute, 5.6.19).
pub async fn replace_attr(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let w = read_write(&req, payload, &broker, false, &["local", "type"]).await?;
    let target = target(&req, &w.info, &w.ctx)?;
    let (name, iri) = path_attr(&req, &w.ctx)?;
    let instances =
        Reader::new(&w.ctx, Utc::now(), Nulls::Forbidden).attribute(&name, &iri, &w.body)?;
    let spread = broker
        .attribute_write_distributed(
            &target,
            Operation::ReplaceAttrs,
            (&iri, &name),
            reqwest::Method::PUT,
            Vec::new(),
            Some(&w.body),
            &w.reach,
            broker.replace_attr(&target, &iri, instances, Utc::now()),
        )
        .await?;
    spread_response(spread, no_content(), Some(&target.id), &w.ctx)
}

/// DELETE /entities/{id}/attrs/{attrId} (5.6.5), with `datasetId` or `deleteAll=true`.
pub async fn delete_attr(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(
        &req,
        WRITE_OFFERS,
        &["datasetId", "deleteAll", "local", "type"],
    )?;
    let ctx = info.context(&broker).await?;
    let target = target(&req, &info, &ctx)?;
    let iri = match segment(&req, "attr").as_str() {
        "scope" => SCOPE_IRI.to_string(),
        _ => path_attr(&req, &ctx)?.1,
    };
    let (dataset_id, delete_all) = deletion_params(&info)?;
    let mut params = Vec::new();
    if let Some(d) = &dataset_id {
        params.push(("datasetId".to_string(), d.clone()));
    }
    if let Some(all) = info.param("deleteAll") {
        params.push(("deleteAll".to_string(), all.to_string()));
    }
    let name = segment(&req, "attr");
    let spread = broker
        .attribute_write_distributed(
            &target,
            Operation::DeleteAttrs,
            (&iri, &name),
            reqwest::Method::DELETE,
            params,
            None,
            &info.reach(),
            broker.delete_attr(&target, &iri, dataset_id, delete_all, Utc::now()),
        )
        .await?;
    spread_response(spread, no_content(), Some(&target.id), &ctx)
}

/// The `datasetId` and `deleteAll` parameters of an attribute deletion (5.6.5, 5.6.15).
pub fn deletion_params(info: &RequestInfo) -> NgsiResult<(Option<String>, bool)> {
    let dataset_id = info.param("datasetId").map(str::to_string);
    if let Some(d) = &dataset_id {
        crate::model::validate::uri("datasetId", d)?;
    }
    let delete_all = info.flag("deleteAll")?;
    Ok((dataset_id, delete_all))
}
