//! GET /info/sourceIdentity (5.15, 6.33): who this broker is as a context source, so that peers
//! can name it in their registrations and recognise it in Via chains.

use super::negotiate::{Accepted, RequestInfo};
use super::response::json_body;
use crate::error::NgsiResult;
use crate::service::AppState;
use actix_web::{web, HttpRequest, HttpResponse};

/// GET /info/sourceIdentity.
pub async fn source_identity(
    req: HttpRequest,
    broker: web::Data<AppState>,
) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, &[Accepted::Json, Accepted::JsonLd], &[])?;
    Ok(json_body(&info, broker.sources().identity(&info.tenant)))
}
