//! Responses: ProblemDetails for every error, JSON bodies with the @context as a Link header or a
//! body member depending on the negotiated media type.

use super::negotiate::{Accepted, RequestInfo};
use crate::error::{ErrorKind, NgsiError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::{Map, Value};

impl ResponseError for NgsiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if self.kind.status() >= 500 {
            tracing::warn!(error = %self, "request failed");
        }
        if self.kind == ErrorKind::LengthRequired {
            return HttpResponse::build(self.status_code()).finish();
        }
        let mut response = HttpResponse::build(self.status_code())
            .content_type("application/json")
            .body(self.problem_details().to_string());
        add_warnings(&mut response, &self.warnings);
        response
    }
}

/// Adds an NGSILD-Warning header (6.3.17) for each context source that failed during the
/// operation.
pub fn add_warnings(response: &mut HttpResponse, warnings: &[String]) {
    for w in warnings {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(w) {
            response.headers_mut().append(
                actix_web::http::header::HeaderName::from_static("ngsild-warning"),
                v,
            );
        }
    }
}

/// 201 Created with the Location of a new resource below the API base (`collection` is e.g.
/// `subscriptions`), its id percent-encoded as a path segment.
pub fn created(collection: &str, id: &str) -> HttpResponse {
    let encoded = percent_encoding::utf8_percent_encode(id, super::entities::SEGMENT);
    HttpResponse::Created()
        .insert_header((
            "Location",
            format!("{}/{collection}/{encoded}", super::BASE),
        ))
        .finish()
}

/// A 200 response with a JSON body in the negotiated media type: the @context goes in the body for
/// application/ld+json and application/geo+json (unless `Prefer: body=json` asks for a plain
/// JSON body, 6.3.6), and in a Link header otherwise.
pub fn json_body(info: &RequestInfo, mut body: Value) -> HttpResponse {
    let context = info.response_context();
    let mut response = HttpResponse::Ok();
    match info.accepted {
        Accepted::JsonLd | Accepted::GeoJson
            if !(info.body_json && info.accepted == Accepted::GeoJson) =>
        {
            if let Value::Object(map) = &mut body {
                insert_context(map, context);
            } else if let Value::Array(items) = &mut body {
                for item in items.iter_mut() {
                    if let Value::Object(map) = item {
                        insert_context(map, context.clone());
                    }
                }
            }
        }
        _ => {
            if let Value::String(url) = &context {
                response.insert_header(("Link", crate::ld::link_header(url)));
            }
        }
    }
    if let Some(p) = &info.prefer {
        if super::version::downgrade(&mut body, p.version) {
            response.status(actix_web::http::StatusCode::NON_AUTHORITATIVE_INFORMATION);
        }
        response.insert_header(("Preference-Applied", format!("ngsi-ld={}", p.text)));
    }
    response
        .content_type(info.accepted.media_type())
        .body(body.to_string())
}

fn insert_context(map: &mut Map<String, Value>, context: Value) {
    map.insert("@context".into(), context);
}

/// 404 for paths outside the API.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, NgsiError> {
    Err(no_resource(req.path()))
}

/// The error of a path no route matches: 404, or 400 when an empty segment stands where an id or
/// name belongs. The router's default answer, and the authorization middleware's for such paths.
pub fn no_resource(path: &str) -> NgsiError {
    if super::empty_segment(path) {
        return NgsiError::bad_data(format!(
            "{path} has an empty segment where an id or name belongs"
        ));
    }
    NgsiError::not_found(format!("there is no resource at {path}"))
}

/// 405 for methods a resource does not offer; 400 when the method would be valid one path segment
/// further, i.e. the URL lacks the entity id or attribute name it needs. The temporal API's
/// collection answers 405 (its conformance tests ask for the plain HTTP answer there).
pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let path = req.path().trim_end_matches('/');
    let method = req.method().as_str();
    let temporal = path.ends_with("/temporal/entities");
    let lacks =
        if path.ends_with("/entities") && !temporal && matches!(method, "PATCH" | "PUT" | "DELETE")
        {
            Some("an entity id")
        } else {
            None
        };
    if let Some(what) = lacks {
        return NgsiError::bad_data(format!(
            "{method} {} needs {what} at the end of the URL",
            req.path()
        ))
        .error_response();
    }
    let e = NgsiError::new(
        ErrorKind::InvalidRequest,
        format!("{} is not allowed on {}", req.method(), req.path()),
    );
    HttpResponse::MethodNotAllowed()
        .content_type("application/json")
        .body(e.problem_details().to_string())
}

/// Liveness probe: the process serves requests.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness probe: the store (the database) answers.
pub async fn ready(broker: actix_web::web::Data<crate::service::AppState>) -> HttpResponse {
    if broker.store().ready().await {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        NgsiError::new(
            ErrorKind::ServiceUnavailable,
            "the database does not answer",
        )
        .error_response()
    }
}
