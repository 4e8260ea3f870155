//! Admission of writes under overload: at most `--max-inflight-writes` write requests (every
//! class but read, as `access::classify` names them) are served at once. One more is refused at
//! once with 503 ServiceUnavailable and `Retry-After`, before its body is read, so that a burst
//! far above what the store sustains neither queues without bound in memory nor slows the
//! writes already admitted; the client retries later. The middleware is the outermost: a refusal
//! skips request ids, metrics by route (`twinlink_http_writes_refused_total` counts it), authentication
//! and audit, which made it cost 1.9 to 2.1 times what a bare actix-web refusal costs
//! (`benches/overload.rs`); it still names the request's tenant (6.3.14). Reads are not limited here: they hold no
//! store lock and their cost is bounded by the page size. MQTT ingestion is not an HTTP client
//! to refuse: it acknowledges a message only after its write committed, so the MQTT broker holds
//! what twinlink has not taken yet.

use super::access::{classify, Route};
use crate::auth::grants::Operation;
use crate::error::{ErrorKind, NgsiError};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Seconds a refused client is asked to wait: the store drains a full set of in-flight writes
/// in well under a second.
const RETRY_AFTER_SECONDS: u64 = 1;

/// A refused request whose body declares at most this many bytes has it read and dropped before
/// the answer: actix-web closes a connection whose request body was left unread, and a client
/// refused under overload would otherwise open a new connection (a TCP handshake on both sides)
/// for every retry. Larger or chunked bodies are not read (memory stays bounded) and their
/// connection closes.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// The count of write requests being served, and the most allowed.
pub struct Admission {
    inflight: AtomicUsize,
    limit: usize,
}

/// One admitted write; leaving makes room for the next.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// At most `limit` writes at once; 0 admits every write.
    pub fn new(limit: usize) -> Admission {
        Admission {
            inflight: AtomicUsize::new(0),
            limit,
        }
    }

    /// A place for one more write, unless every place is taken.
    fn enter(&self) -> Option<Admitted<'_>> {
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(&self.inflight);
        (self.limit == 0 || before < self.limit).then_some(admitted)
    }
}

/// The middleware: writes take a place or are refused; other requests pass.
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let admission = req.app_data::<web::Data<Admission>>().cloned();
    let writes =
        matches!(classify(req.method(), req.path()), Route::Guarded(op) if op != Operation::Read);
    let Some(admission) = admission.filter(|_| writes) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let Some(_admitted) = admission.enter() else {
        crate::telemetry::metrics::write_refused();
        let mut req = req;
        drain_small_body(&mut req).await;
        let mut response = NgsiError::new(
            ErrorKind::ServiceUnavailable,
            format!(
                "twinlink is serving {} writes already, its limit (--max-inflight-writes); \
                 retry after {RETRY_AFTER_SECONDS} s",
                admission.limit
            ),
        )
        .error_response();
        response.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(RETRY_AFTER_SECONDS),
        );
        // 6.3.14: a tenant named in the request is named in the response, errors included.
        if let Some(tenant) = req.headers().get("NGSILD-Tenant").cloned() {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("ngsild-tenant"),
                tenant,
            );
        }
        return Ok(req.into_response(response));
    };
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Reads and drops the body of a refused request when it declares at most [`DRAIN_LIMIT`] bytes.
async fn drain_small_body(req: &mut ServiceRequest) {
    use actix_web::HttpMessage;
    use futures_util::StreamExt;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_none_or(|n| n > DRAIN_LIMIT) {
        return;
    }
    let mut payload = req.take_payload();
    while let Some(chunk) = payload.next().await {
        if chunk.is_err() {
            return;
        }
    }
}
