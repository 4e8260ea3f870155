//! Handlers of /entityMaps, /entityMaps/{id} and /temporal/entityMaps (5.14; 6.32, 6.34, 6.35),
//! and what every read says about entity maps (5.5.14): the `entityMap` and
//! `entityMapLifetime` parameters and the `NGSILD-EntityMap` header, read into a map request
//! and answered with the location of the map the read used.

use super::entities::{record_id, SEGMENT};
use super::negotiate::{read_record, Accepted, Body, RequestInfo};
use super::response::json_body;
use super::BASE;
use crate::error::{NgsiError, NgsiResult};
use crate::service::entity_maps::{MapRequest, MapUsed};
use crate::service::AppState;
use crate::store::entity_maps::EntityMap;
use crate::temporal::TemporalQuery;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use std::ops::Bound;

type Data = web::Data<AppState>;

/// The header that references a map in a request and names the map used in the answer.
const HEADER: &str = "NGSILD-EntityMap";

/// Media types of the answers about maps.
const OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];

/// The resource path of a map (6.32): its location in the `NGSILD-EntityMap` header.
fn location(id: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(id, SEGMENT);
    format!("{BASE}/entityMaps/{encoded}")
}

/// The map id a `NGSILD-EntityMap` header references: the last segment of a location
/// (`/ngsi-ld/v1/entityMaps/{id}`, relative or absolute), or the value itself taken as an id.
fn referenced_id(value: &str) -> String {
    let value = value.trim();
    match value.rsplit_once("/entityMaps/") {
        Some((_, id)) => percent_encoding::percent_decode_str(id)
            .decode_utf8_lossy()
            .into_owned(),
        None => value.to_string(),
    }
}

/// Reads what a read asks of entity maps: the map its `NGSILD-EntityMap` header references,
/// `entityMap` (true or false) and `entityMapLifetime` (an ISO 8601 duration).
pub fn map_request(req: &HttpRequest, info: &RequestInfo) -> NgsiResult<MapRequest> {
    let wanted = info.flag("entityMap")?;
    let lifetime = info
        .param("entityMapLifetime")
        .map(|text| crate::temporal::lifetime("entityMapLifetime", text))
        .transpose()?;
    let reference = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(referenced_id)
        .filter(|id| !id.is_empty());
    Ok(MapRequest {
        reference,
        wanted,
        lifetime,
    })
}

/// Names the map a read used in its answer (`NGSILD-EntityMap`, its location).
pub fn name_map(response: &mut HttpResponse, used: Option<&MapUsed>) {
    let Some(used) = used else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&location(&used.id)) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("ngsild-entitymap"), value);
    }
}

/// Names the map a query used in its answer, which is 201 Created when the query created the
/// map (Table 6.4.3.2-3).
pub fn name_query_map(response: &mut HttpResponse, used: Option<&MapUsed>) {
    name_map(response, used);
    if used.is_some_and(|u| u.created) && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::CREATED;
    }
}

/// An EntityMap (5.2.39) as JSON. Maps record no maps of their sources (linkedMaps): sources
/// are re-asked for the entities the map names.
fn render(map: &EntityMap) -> Value {
    let entries: Map<String, Value> = map
        .entries
        .iter()
        .map(|e| (e.id().to_string(), json!(e.places())))
        .collect();
    json!({
        "id": map.id,
        "type": "EntityMap",
        "expiresAt": crate::model::format_time(&map.expires_at),
        "entityMap": entries,
    })
}

/// 201 Created with a new map: its location in `NGSILD-EntityMap` and the map in the body
/// (6.34.3.1, 6.35.3.1).
fn created(info: &RequestInfo, map: &EntityMap, warnings: &[String]) -> HttpResponse {
    let mut response = json_body(info, render(map));
    *response.status_mut() = StatusCode::CREATED;
    name_map(
        &mut response,
        Some(&MapUsed {
            id: map.id.clone(),
            created: true,
        }),
    );
    super::response::add_warnings(&mut response, warnings);
    response
}

/// GET /entityMaps (5.14.4 via 6.34.3.1): a map of the entities a query matches.
pub async fn create(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let read = super::query::read_query(&req, &broker, super::query::QUERY_PARAMS).await?;
    create_query_map(&req, &broker, read).await
}

/// POST /entityMaps (5.14.4 via 6.34.3.2): as GET, with the query in a Query body.
pub async fn create_from_body(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let read =
        super::query::read_post_query(&req, payload, &broker, super::query::POST_QUERY_PARAMS)
            .await?;
    create_query_map(&req, &broker, read).await
}

/// Answers the creation of a map of an entity query read from a request.
async fn create_query_map(
    req: &HttpRequest,
    broker: &AppState,
    (info, _, query, reach): super::query::ReadQuery,
) -> NgsiResult<HttpResponse> {
    let lifetime = map_request(req, &info)?.lifetime;
    let (map, warnings) = broker
        .create_query_map(&info.tenant, query, lifetime, &reach)
        .await?;
    Ok(created(&info, &map, &warnings))
}

/// 5.14.5.4: a map of a temporal query needs a temporal query (a time range).
fn require_range(query: &TemporalQuery) -> NgsiResult<()> {
    let h = &query.history;
    if matches!((&h.from, &h.to), (Bound::Unbounded, Bound::Unbounded)) {
        return Err(NgsiError::bad_data(
            "an entity map of a temporal query needs a temporal query: timerel and timeAt (and endTimeAt for between)",
        ));
    }
    Ok(())
}

/// Answers the creation of a map of a temporal query read from a request.
async fn create_temporal_map(
    req: &HttpRequest,
    broker: &AppState,
    read: super::temporal::ReadQuery,
) -> NgsiResult<HttpResponse> {
    require_range(&read.query)?;
    let lifetime = map_request(req, &read.info)?.lifetime;
    let map = broker
        .create_temporal_map(&read.info.tenant, read.selection, &read.query, lifetime)
        .await?;
    Ok(created(&read.info, &map, &[]))
}

/// GET /temporal/entityMaps (5.14.5 via 6.35.3.1): a map of the entities a temporal query
/// matches.
pub async fn create_temporal(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let read = super::temporal::read_query(&req, &broker).await?;
    create_temporal_map(&req, &broker, read).await
}

/// POST /temporal/entityMaps (5.14.5 via 6.35.3.2): as GET, with the query in a Query body.
pub async fn create_temporal_from_body(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let read = super::temporal::read_post_query(&req, payload, &broker).await?;
    create_temporal_map(&req, &broker, read).await
}

fn path_id(req: &HttpRequest) -> NgsiResult<String> {
    record_id(req, "entity map")
}

/// GET /entityMaps/{id} (5.14.1).
pub async fn retrieve(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &[])?;
    let id = path_id(&req)?;
    let map = broker.entity_map(&info.tenant, &id).await?;
    Ok(json_body(&info, render(&map)))
}

/// PATCH /entityMaps/{id} (5.14.2).
pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    broker: Data,
) -> NgsiResult<HttpResponse> {
    let id = path_id(&req)?;
    let (info, Body { json, .. }) =
        read_record(&req, payload, broker.settings().max_body_bytes, true).await?;
    broker.update_entity_map(&info.tenant, &id, &json).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// DELETE /entityMaps/{id} (5.14.3).
pub async fn delete(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &[])?;
    let id = path_id(&req)?;
    broker.delete_entity_map(&info.tenant, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_a_location_or_an_id() {
        let id = "urn:ngsi-ld:EntityMap:1";
        assert_eq!(referenced_id(&location(id)), id);
        assert_eq!(
            referenced_id("http://broker:1026/ngsi-ld/v1/entityMaps/urn%3Angsi-ld%3AEntityMap%3A1"),
            id
        );
        assert_eq!(referenced_id(" urn:ngsi-ld:EntityMap:1 "), id);
    }
}
