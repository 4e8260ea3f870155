//! Handlers of /entityOperations/{create,upsert,update,merge,delete}: read the array, parse each
//! entity with its own @context, run the batch service, answer 201/204 or 207 with per-entity
//! results (BatchOperationResult, 5.2.16).

use super::negotiate::{read_body, Accepted, Body, RequestInfo};
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::federation::forward::Reach;
use crate::service::batch::{BatchItem, BatchOp, BatchResult, UpsertMode};
use crate::service::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::{json, Value};

type Data = web::Data<AppState>;

const OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];

async fn read_array(
    req: &HttpRequest,
    payload: web::Payload,
    broker: &AppState,
    params: &[&str],
) -> NgsiResult<(RequestInfo, Vec<Value>, bool)> {
    let info = RequestInfo::read(req, OFFERS, params)?;
    let is_ld = req
        .headers()
        .get("Content-Type")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.starts_with("application/ld+json"));
    let Body { json, .. } =
        read_body(req, payload, &info, broker.settings().max_body_bytes, false).await?;
    let Value::Array(items) = json else {
        return Err(NgsiError::bad_data("a batch operation takes a JSON array"));
    };
    if items.is_empty() {
        return Err(NgsiError::bad_data(
            "the batch is empty; send at least one entity",
        ));
    }
    if items.len() > broker.settings().max_batch {
        return Err(NgsiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the batch has {} entities; this broker takes at most {}",
                items.len(),
                broker.settings().max_batch
            ),
        ));
    }
    Ok((info, items, is_ld))
}

/// Parses each entity of a batch with its own context (body @context for JSON-LD, else the Link).
async fn parse_items(
    broker: &AppState,
    info: &RequestInfo,
    items: Vec<Value>,
    is_ld: bool,
    op: BatchOp,
) -> Vec<BatchItem> {
    let now = Utc::now();
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let context = match item.as_object_mut().and_then(|o| o.remove("@context")) {
            Some(c) if is_ld => Ok(Some(c)),
            Some(_) => Err(NgsiError::bad_data(
                "with Content-Type application/json an entity may not carry an @context; use a Link header",
            )),
            None if is_ld => Err(NgsiError::bad_data("with Content-Type application/ld+json every entity needs an @context")),
            None => Ok(info.link_context.clone().map(Value::String)),
        };
        let parsed = match context {
            Ok(c) => broker.read_batch_entity(&item, c.as_ref(), op, now).await,
            Err(e) => Err(e),
        };
        out.push((id, parsed));
    }
    out
}

/// How far a batch reaches; its sources get the caller's @context as a Link: the Link header's,
/// or the first entity's own when it is one URL.
fn batch_reach(info: &RequestInfo, items: &[Value]) -> Reach {
    let mut reach = info.reach();
    if reach.context.is_none() {
        reach.context = super::negotiate::single_url(items.first().and_then(|i| i.get("@context")));
    }
    reach
}

fn multi_status(result: &BatchResult) -> HttpResponse {
    let errors: Vec<Value> = result
        .errors
        .iter()
        .map(|(id, e)| json!({"entityId": id, "error": e.problem_details()}))
        .collect();
    HttpResponse::MultiStatus()
        .content_type("application/json")
        .body(json!({"success": result.success, "errors": errors}).to_string())
}

fn ids_created(ids: &[String]) -> HttpResponse {
    HttpResponse::Created()
        .content_type("application/json")
        .body(json!(ids).to_string())
}

async fn run(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
    op: BatchOp,
    params: &[&str],
) -> NgsiResult<HttpResponse> {
    let (info, items, is_ld) = read_array(&req, payload, &broker, params).await?;
    if let Some(i) = items.iter().position(|i| !i.is_object()) {
        return Err(NgsiError::bad_data(format!(
            "batch element {i} is not an entity object"
        )));
    }
    let reach = batch_reach(&info, &items);
    let parsed = parse_items(&broker, &info, items, is_ld, op).await;
    let options = match info.param("options") {
        Some(o) => vec![("options".to_string(), o.to_string())],
        None => Vec::new(),
    };
    let result = broker
        .batch_distributed(&info.tenant, op, parsed, options, Utc::now(), &reach)
        .await;
    if !result.errors.is_empty() {
        return Ok(multi_status(&result));
    }
    Ok(match op {
        BatchOp::Create => ids_created(&result.success),
        BatchOp::Upsert(_) if !result.created.is_empty() => ids_created(&result.created),
        _ => HttpResponse::NoContent().finish(),
    })
}

/// POST /entityOperations/create (5.6.7).
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    run(req, payload, broker, BatchOp::Create, &["local"]).await
}

/// POST /entityOperations/upsert (5.6.8), `options=replace` (default) or `update`.
pub async fn upsert(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["options", "local"])?;
    let options = info.options(&["replace", "update"])?;
    let mode = if options.iter().any(|o| o == "update") {
        UpsertMode::Update
    } else {
        UpsertMode::Replace
    };
    run(
        req,
        payload,
        broker,
        BatchOp::Upsert(mode),
        &["options", "local"],
    )
    .await
}

/// POST /entityOperations/update (5.6.9), `options=noOverwrite`.
pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["options", "local"])?;
    let no_overwrite = info
        .options(&["noOverwrite"])?
        .iter()
        .any(|o| o == "noOverwrite");
    run(
        req,
        payload,
        broker,
        BatchOp::Update { no_overwrite },
        &["options", "local"],
    )
    .await
}

/// POST /entityOperations/merge (5.6.20).
pub async fn merge(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    run(req, payload, broker, BatchOp::Merge, &["local"]).await
}

/// POST /entityOperations/delete (5.6.10): a JSON array of entity ids.
pub async fn delete(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let (info, items, _) = read_array(&req, payload, &broker, &["local"]).await?;
    if let Some(i) = items.iter().position(|i| !i.is_string()) {
        return Err(NgsiError::bad_data(format!(
            "batch delete element {i} is not an entity id string"
        )));
    }
    let mut ids = Vec::new();
    let mut bad = BatchResult::default();
    for id in items.iter().filter_map(Value::as_str) {
        match crate::model::validate::uri("the entity id", id) {
            Ok(()) => ids.push(id.to_string()),
            Err(e) => bad.errors.push((id.to_string(), e)),
        }
    }
    let mut result = broker
        .batch_delete_distributed(&info.tenant, ids, &info.reach())
        .await;
    result.errors.extend(bad.errors);
    if result.errors.is_empty() {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Ok(multi_status(&result))
    }
}
