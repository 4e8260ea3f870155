//! The audit middleware: a request that writes (any method but GET and HEAD on a route of the
//! write, subscribe or admin class) and succeeds is recorded in the audit log with who sent it,
//! the tenant, the route and the entities it wrote (`telemetry::audit`).

use super::access::{classify, tenant, Route};
use super::request_id::RequestId;
use crate::auth::grants::Operation;
use crate::auth::Principal;
use crate::service::AppState;
use crate::telemetry::audit;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

/// The middleware.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD)
        && !matches!(
            classify(req.method(), req.path()),
            Route::Open | Route::Metrics | Route::Unrouted | Route::Guarded(Operation::Read)
        );
    if !writes {
        return next.call(req).await;
    }
    let operation = format!(
        "{} {}",
        req.method(),
        req.match_pattern()
            .unwrap_or_else(|| req.path().to_string())
    );
    let table = req
        .app_data::<web::Data<AppState>>()
        .and_then(|b| b.audit_table().cloned());
    let (response, entity_ids) = audit::collect(next.call(req)).await;
    let response = response?;
    if response.status().is_success() {
        let request = response.request();
        let extensions = request.extensions();
        let subject = extensions
            .get::<Principal>()
            .map_or("anonymous", |p| p.subject.as_str());
        let entry = audit::Entry {
            subject,
            tenant: tenant(request.headers()),
            operation: &operation,
            entity_ids: &entity_ids,
            request_id: extensions.get::<RequestId>().map(|r| r.0.as_str()),
        };
        audit::record(&entry, table.as_ref());
    }
    Ok(response)
}
