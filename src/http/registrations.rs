//! Handlers of /csourceRegistrations and /csourceRegistrations/{id} (5.9, 5.10, 6.8 and 6.9):
//! read the request, call the registration service, render registrations with the caller's
//! context.

use super::entities::record_id;
use super::negotiate::{read_record, Accepted, Body, RequestInfo};
use super::query::{entity_query, page, page_headers, LinkOrder};
use super::response::{created, json_body};
use crate::error::{NgsiError, NgsiResult};
use crate::federation::{registration, Discovery};
use crate::ld::ActiveContext;
use crate::query::q;
use crate::service::AppState;
use crate::temporal::{self, TemporalParams};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

type Data = web::Data<AppState>;

const WRITE_OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];
const READ_OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];

/// The query parameters of discovery (6.8.3.2).
const DISCOVERY_PARAMS: &[&str] = &[
    "id",
    "type",
    "idPattern",
    "attrs",
    "q",
    "csf",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "timeproperty",
    "timerel",
    "timeAt",
    "endTimeAt",
    "scopeQ",
    "limit",
    "offset",
    "count",
    "options",
];

fn path_id(req: &HttpRequest) -> NgsiResult<String> {
    record_id(req, "registration")
}

/// POST /csourceRegistrations (5.9.2).
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let (info, Body { json, context }) =
        read_record(&req, payload, broker.settings().max_body_bytes, false).await?;
    let id = broker
        .clone()
        .into_inner()
        .create_registration(&info.tenant, &json, context)
        .await?;
    Ok(created("csourceRegistrations", &id))
}

/// GET /csourceRegistrations/{id} (5.10.1).
pub async fn retrieve(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, READ_OFFERS, &["options"])?;
    let id = path_id(&req)?;
    let ctx = info.context(&broker).await?;
    let record = broker.registration(&info.tenant, &id).await?;
    Ok(json_body(
        &info,
        registration::render(&record, &ctx, info.sys_attrs_only()?),
    ))
}

/// GET /csourceRegistrations (5.10.2): the registrations that match the query, paginated.
pub async fn query(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, READ_OFFERS, DISCOVERY_PARAMS)?;
    let ctx = info.context(&broker).await?;
    let (page, count) = page(&info, &broker)?;
    let sys = info.sys_attrs_only()?;
    let discovery = discovery(&info, &ctx)?;
    let found = broker
        .discover_registrations(&info.tenant, &discovery)
        .await?;
    let seen = found.len();
    let body: Vec<Value> = found
        .iter()
        .skip(page.offset)
        .take(page.limit)
        .map(|r| registration::render(r, &ctx, sys))
        .collect();
    let mut response = json_body(&info, Value::Array(body));
    page_headers(
        &mut response,
        &req,
        &info,
        (page, LinkOrder::AsGiven),
        seen,
        count,
    );
    Ok(response)
}

/// Reads what discovery selects registrations by: entity selectors and attrs, q, csf, geoQ,
/// scopeQ and a time range; at least one of them.
fn discovery(info: &RequestInfo, ctx: &ActiveContext) -> NgsiResult<Discovery> {
    let query = entity_query(info, ctx)?;
    let csf = info
        .param("csf")
        .map(|text| q::parse(text, ctx).map_err(|e| NgsiError::from(e.for_input("csf"))))
        .transpose()?;
    let time = temporal::history_query(&TemporalParams {
        timerel: info.param("timerel"),
        time_at: info.param("timeAt"),
        end_time_at: info.param("endTimeAt"),
        time_property: info.param("timeproperty"),
        ..Default::default()
    })?;
    let time = info.param("timerel").is_some().then_some(time);
    let restricted = !query.selectors.is_empty()
        || !query.attrs.is_empty()
        || query.q.is_some()
        || query.geo.is_some()
        || query.scope.is_some()
        || csf.is_some()
        || time.is_some();
    if !restricted {
        return Err(NgsiError::bad_data(
            "discovery needs something to match registrations on: type, id, idPattern, attrs, q, csf, a geo-query, scopeQ or a time range",
        ));
    }
    Ok(Discovery { query, csf, time })
}

/// PATCH /csourceRegistrations/{id} (5.9.3).
pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let id = path_id(&req)?;
    let (info, Body { json, context }) =
        read_record(&req, payload, broker.settings().max_body_bytes, true).await?;
    broker
        .clone()
        .into_inner()
        .update_registration(&info.tenant, &id, &json, context)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// DELETE /csourceRegistrations/{id} (5.9.4).
pub async fn delete(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, WRITE_OFFERS, &[])?;
    let id = path_id(&req)?;
    broker
        .clone()
        .into_inner()
        .delete_registration(&info.tenant, &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
