//! Handlers of /subscriptions and /subscriptions/{id} (5.8, 6.10 and 6.11) and of
//! /csourceSubscriptions and /csourceSubscriptions/{id} (5.11, 6.12 and 6.13): read the request,
//! call the subscription service, render subscriptions with the caller's context. The two kinds
//! share the handlers; a route says which it serves by its [`Collection`] app data.

use super::entities::record_id;
use super::negotiate::{read_body, read_record, Accepted, Body, RequestInfo};
use super::response::{created, json_body};
use super::BASE;
use crate::error::{NgsiError, NgsiResult};
use crate::service::AppState;
use crate::store::Collection;
use crate::subscription::parse;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::Value;

type Data = web::Data<AppState>;

const WRITE_OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];
const READ_OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];

/// The subscriptions a route serves: entity subscriptions unless the route says otherwise.
fn collection(req: &HttpRequest) -> Collection {
    req.app_data::<Collection>()
        .copied()
        .unwrap_or(Collection::Subscriptions)
}

/// The path segment of a collection's subscriptions.
fn path_of(collection: Collection) -> &'static str {
    match collection {
        Collection::CsourceSubscriptions => "csourceSubscriptions",
        _ => "subscriptions",
    }
}

fn path_id(req: &HttpRequest) -> NgsiResult<String> {
    let what = match collection(req) {
        Collection::CsourceSubscriptions => "context source registration subscription",
        _ => "subscription",
    };
    record_id(req, what)
}

/// POST /subscriptions (5.8.1; `local=true` keeps it off the context sources, 5.8.1.4), POST
/// /csourceSubscriptions (5.11.2).
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let kind = collection(&req);
    let params: &[&str] = match kind {
        Collection::Subscriptions => &["local"],
        _ => &[],
    };
    let info = RequestInfo::read(&req, WRITE_OFFERS, params)?;
    let Body { json, context } = read_body(
        &req,
        payload,
        &info,
        broker.settings().max_body_bytes,
        false,
    )
    .await?;
    let id = broker
        .clone()
        .into_inner()
        .create_subscription(kind, &info.tenant, &json, context, &info.reach())
        .await?;
    Ok(created(path_of(kind), &id))
}

/// POST /ngsi-ld/ex/remote-notify: a Notification a context source sent for the copy of a
/// subscription it was given (5.8.6), passed on to the subscription's subscriber.
pub async fn remote_notify(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let (_, Body { json, context }) =
        read_record(&req, payload, broker.settings().max_body_bytes, false).await?;
    broker.remote_notification(&json, context).await?;
    Ok(HttpResponse::Ok().finish())
}

/// GET /subscriptions/{id} (5.8.3), GET /csourceSubscriptions/{id} (5.11.4).
pub async fn retrieve(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, READ_OFFERS, &["options"])?;
    let id = path_id(&req)?;
    let ctx = info.context(&broker).await?;
    let kind = collection(&req);
    let record = broker.subscription(kind, &info.tenant, &id).await?;
    let body = parse::render(&record, kind, &ctx, info.sys_attrs_only()?, Utc::now());
    let mut response = json_body(&info, body);
    if let Some(applied) = version_preference(&req) {
        if let Ok(v) = HeaderValue::from_str(&applied) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("preference-applied"), v);
        }
    }
    Ok(response)
}

/// The `ngsi-ld` version preference of a Prefer header (6.3.6, RFC 7240: names are
/// case-insensitive, values may be quoted, preferences may carry parameters), as
/// Preference-Applied reports it. A subscription has no version fallbacks (4.3.6.8 covers entity
/// data), so it is returned unaltered whatever the version.
fn version_preference(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all("Prefer")
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .find_map(|pref| {
            let token = pref.split(';').next()?.trim();
            let (name, value) = token.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("ngsi-ld")
                .then(|| format!("ngsi-ld={}", value.trim().trim_matches('"')))
        })
}

/// GET /subscriptions (5.8.4), GET /csourceSubscriptions (5.11.5), paginated by limit and offset.
pub async fn query(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, READ_OFFERS, &["limit", "offset", "count", "options"])?;
    let ctx = info.context(&broker).await?;
    let number = |name: &str, default: usize| -> NgsiResult<usize> {
        info.param(name).map_or(Ok(default), |v| {
            v.parse::<usize>().map_err(|_| {
                NgsiError::bad_data(format!("{name}={v} is not a non-negative integer"))
            })
        })
    };
    let limit = number("limit", broker.settings().default_page_size)?;
    let offset = number("offset", 0)?;
    if limit > broker.settings().max_page_size {
        return Err(NgsiError::bad_data(format!(
            "limit={limit} is larger than this broker's maximum page size {}",
            broker.settings().max_page_size
        )));
    }
    let count = info.param("count") == Some("true");
    if limit == 0 && !count {
        return Err(NgsiError::bad_data(
            "limit=0 only makes sense with count=true",
        ));
    }
    let sys = info.sys_attrs_only()?;
    let kind = collection(&req);
    let records = broker.subscriptions(kind, &info.tenant).await?;
    let total = records.len();
    let now = Utc::now();
    let page: Vec<Value> = records
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| parse::render(r, kind, &ctx, sys, now))
        .collect();
    let mut response = json_body(&info, Value::Array(page));
    let headers = response.headers_mut();
    if count {
        headers.insert(
            HeaderName::from_static("ngsild-results-count"),
            HeaderValue::from(total),
        );
    }
    let mut links = Vec::new();
    if offset > 0 && limit > 0 {
        links.push((offset.saturating_sub(limit), "prev"));
    }
    if limit > 0 && offset + limit < total {
        links.push((offset + limit, "next"));
    }
    for (at, rel) in links {
        let link = format!(
            "<{BASE}/{}?limit={limit}&offset={at}>; rel=\"{rel}\";type=\"{}\"",
            path_of(kind),
            info.accepted.media_type()
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(HeaderName::from_static("link"), v);
        }
    }
    Ok(response)
}

/// PATCH /subscriptions/{id} (5.8.2), PATCH /csourceSubscriptions/{id} (5.11.3).
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
        .update_subscription(collection(&req), &info.tenant, &id, &json, context)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// DELETE /subscriptions/{id} (5.8.5), DELETE /csourceSubscriptions/{id} (5.11.6).
pub async fn delete(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, WRITE_OFFERS, &[])?;
    let id = path_id(&req)?;
    broker
        .clone()
        .into_inner()
        .delete_subscription(collection(&req), &info.tenant, &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
