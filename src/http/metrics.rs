//! The HTTP side of the metrics: the middleware that counts and times every request by its route
//! pattern, and the `/metrics` endpoint that serves them in Prometheus' text format.

use crate::service::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

/// The path metrics are served at.
pub const PATH: &str = "/metrics";

/// The middleware: counts and times the request under its route pattern (`unmatched` for paths
/// no route matches, so that scanners cannot grow the label set).
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let response = next.call(req).await;
    let status = match &response {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    crate::telemetry::metrics::http_request(
        &route,
        method.as_str(),
        status,
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub async fn serve(broker: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::metrics::render(
            broker.store().pool_status(),
            broker.store().entity_counts(),
        ))
}
