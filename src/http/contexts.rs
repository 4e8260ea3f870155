//! Handlers of /jsonldContexts and /jsonldContexts/{contextId} (5.13, 6.30 and 6.31): read the
//! request, call the @context service (`service::contexts`), answer plain JSON (the documents and
//! their metadata are not compacted with any @context).

use super::entities::segment;
use super::negotiate::{read_json, Accepted, RequestInfo};
use super::response::created;
use crate::error::NgsiResult;
use crate::service::contexts::Kind;
use crate::service::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

type Data = web::Data<AppState>;

const OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];

fn answer(info: &RequestInfo, body: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(info.accepted.media_type())
        .body(body.to_string())
}

/// POST /jsonldContexts (5.13.2): adds a user @context, answered with its Location.
pub async fn add(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &[])?;
    let (document, _) = read_json(&req, payload, broker.settings().max_body_bytes, false).await?;
    let id = broker.add_context(&info.tenant, document).await?;
    Ok(created("jsonldContexts", &id))
}

/// GET /jsonldContexts (5.13.3): the URLs of the tenant's @contexts, or their metadata with
/// `details=true`, of one `kind` when given.
pub async fn list(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["details", "kind"])?;
    let details = info.flag("details")?;
    let kind = info.param("kind").map(Kind::parse).transpose()?;
    let entries = broker.list_contexts(&info.tenant, kind).await?;
    let body: Vec<Value> = entries
        .iter()
        .map(|e| {
            if details {
                e.details()
            } else {
                Value::String(e.url.clone())
            }
        })
        .collect();
    Ok(answer(&info, &Value::Array(body)))
}

/// GET /jsonldContexts/{contextId} (5.13.4): the document, or its metadata with `details=true`.
pub async fn serve(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["details"])?;
    let details = info.flag("details")?;
    let entry = broker
        .context_entry(&info.tenant, &segment(&req, "id"))
        .await?;
    Ok(if details {
        answer(&info, &entry.details())
    } else {
        answer(&info, &entry.document)
    })
}

/// DELETE /jsonldContexts/{contextId} (5.13.5): deletes a stored @context or drops a cached one;
/// `reload=true` fetches a cached one anew.
pub async fn delete(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["reload"])?;
    let reload = info.flag("reload")?;
    broker
        .delete_context(&info.tenant, &segment(&req, "id"), reload)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
