//! The authentication and authorization middleware: every request but the probes shows a bearer
//! token the [`Authenticator`] accepts, or gets 401 with a ProblemDetails body and
//! `WWW-Authenticate`; then the grants decide whether the token may do the route's operation class
//! ([`super::access`]) on the request's tenant, or it gets 403. Why a token was refused is logged,
//! never told to the client.
//!
//! GS CIM 009 defines no error type for authentication or authorization failures, so these
//! ProblemDetails use the type `about:blank` of RFC 9457 (the problem is what the status code
//! says), with the status phrase as the title.

use super::access::{classify, tenant, Route};
use crate::auth::grants::{type_names, Grants, Operation, Request};
use crate::auth::{Authenticator, Rejection};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};

/// What the middleware checks requests with; None lets every request through.
pub struct Gate {
    /// The token verifier, when authentication is on.
    pub authenticator: Option<Authenticator>,
    /// What each token may do.
    pub grants: Grants,
    /// Whether /metrics is served without a token.
    pub metrics_open: bool,
}

/// The middleware: authenticates the request and records its [`Principal`] in the request's
/// extensions for what runs after.
///
/// [`Principal`]: crate::auth::Principal
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let gate = req
        .app_data::<web::Data<Gate>>()
        .cloned()
        .expect("the server registers the gate");
    let Some(authenticator) = gate.authenticator.as_ref() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // None: a path of no route, answered here once the token is checked (`Route::Unrouted`).
    let operation = match classify(req.method(), req.path()) {
        Route::Guarded(operation) => Some(operation),
        Route::Metrics if !gate.metrics_open => Some(Operation::Admin),
        Route::Unrouted => None,
        Route::Open | Route::Metrics => return Ok(next.call(req).await?.map_into_boxed_body()),
    };
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match authenticator.authenticate(header).await {
        Ok(principal) => principal,
        Err(rejection) => {
            let response = unauthorized(&rejection);
            match rejection {
                Rejection::Missing => tracing::info!("request without a bearer token refused"),
                Rejection::Invalid(reason) => {
                    tracing::info!(%reason, "request with a refused bearer token")
                }
            }
            return Ok(req.into_response(response));
        }
    };
    let Some(operation) = operation else {
        let response = super::response::no_resource(req.path()).error_response();
        return Ok(req.into_response(response));
    };
    let tenant = tenant(req.headers()).to_string();
    let query = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.into_owned());
    let request = Request {
        tenant: &tenant,
        operation,
        types: query.as_deref().map(type_names),
    };
    if !gate.grants.allow(&principal, &request) {
        tracing::info!(subject = %principal.subject, %tenant, operation = operation.name(), "request refused by the grants");
        let detail = format!(
            "the token grants no {} access to {}",
            operation.name(),
            if tenant.is_empty() {
                "the default tenant".to_string()
            } else {
                format!("tenant '{tenant}'")
            }
        );
        let mut response = problem(actix_web::http::StatusCode::FORBIDDEN, &detail);
        response.headers_mut().insert(
            actix_web::http::header::WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static(
                r#"Bearer realm="twinlink", error="insufficient_scope""#,
            ),
        );
        return Ok(req.into_response(response));
    }
    req.extensions_mut().insert(principal);
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A ProblemDetails response of this status for an authentication or authorization failure.
pub fn problem(status: actix_web::http::StatusCode, detail: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(
            serde_json::json!({
                "type": "about:blank",
                "title": status.canonical_reason().unwrap_or_default(),
                "status": status.as_u16(),
                "detail": detail,
            })
            .to_string(),
        )
}

/// 401 with the RFC 6750 challenge: `invalid_token` when a token came and was refused.
fn unauthorized(rejection: &Rejection) -> HttpResponse {
    let (challenge, detail) = match rejection {
        Rejection::Missing => (
            r#"Bearer realm="twinlink""#,
            "this request needs a bearer token (Authorization: Bearer <JWT>)",
        ),
        Rejection::Invalid(_) => (
            r#"Bearer realm="twinlink", error="invalid_token""#,
            "the bearer token was not accepted",
        ),
    };
    let mut response = problem(actix_web::http::StatusCode::UNAUTHORIZED, detail);
    response.headers_mut().insert(
        actix_web::http::header::WWW_AUTHENTICATE,
        actix_web::http::header::HeaderValue::from_static(challenge),
    );
    response
}
