//! Handlers of `/ngsi-ld/ex/dataModels` and `/ngsi-ld/ex/dataModels/{id}`: the data-model
//! bindings of a tenant (`service::data_models`), plain JSON.

use super::entities::segment;
use super::negotiate::{read_json, Accepted, RequestInfo};
use crate::error::NgsiResult;
use crate::service::data_models::PATH;
use crate::service::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

type Data = web::Data<AppState>;

const OFFERS: &[Accepted] = &[Accepted::Json];

/// POST: adds a binding, answered 201 with its Location.
pub async fn add(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &[])?;
    let (body, _) = read_json(&req, payload, broker.settings().max_body_bytes, false).await?;
    let id = broker.add_data_model_binding(&info.tenant, body).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("{PATH}/{id}")))
        .finish())
}

/// GET: the bindings that apply to the tenant.
pub async fn list(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &[])?;
    let bindings = broker.data_model_bindings(&info.tenant).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(Value::Array(bindings).to_string()))
}

/// DELETE /{id}: removes a binding set through the API.
pub async fn delete(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &[])?;
    broker
        .delete_data_model_binding(&info.tenant, &segment(&req, "id"))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
