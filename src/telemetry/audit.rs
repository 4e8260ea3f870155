//! The audit log: one structured event per accepted write, on its own target
//! (`twinlink::audit`), so that a log pipeline can route it apart from the operational logs. The
//! ids of the entities a write changed are gathered where every entity write passes (the store's
//! `modify_many`) while the request or MQTT group that caused them runs.

use std::cell::RefCell;
use std::future::Future;

/// The tracing target of audit events.
pub const TARGET: &str = "twinlink::audit";

tokio::task_local! {
    static WRITTEN: RefCell<Vec<String>>;
}

/// Runs `work`, gathering the ids of the entities written while it runs on this task (each
/// once, in the order first written).
pub async fn collect<F: Future>(work: F) -> (F::Output, Vec<String>) {
    WRITTEN
        .scope(RefCell::new(Vec::new()), async {
            let output = work.await;
            let mut ids = WRITTEN.with(|w| w.take());
            let mut seen = std::collections::HashSet::new();
            ids.retain(|id| seen.insert(id.clone()));
            (output, ids)
        })
        .await
}

/// Whether writes on this task are being gathered (so that the store copies ids only then).
pub fn collecting() -> bool {
    WRITTEN.try_with(|_| ()).is_ok()
}

/// Notes entity ids written on this task (nothing outside [`collect`]).
pub fn note(ids: impl IntoIterator<Item = String>) {
    let _ = WRITTEN.try_with(|w| w.borrow_mut().extend(ids));
}

/// One accepted write.
pub struct Entry<'a> {
    /// Who: the token's subject, `anonymous` without authentication, `mqtt` for ingestion.
    pub subject: &'a str,
    /// The tenant written ("" for the default tenant).
    pub tenant: &'a str,
    /// What: the method and route pattern, or the MQTT topic.
    pub operation: &'a str,
    /// The ids of the entities written.
    pub entity_ids: &'a [String],
    /// The request id, when the write came over HTTP.
    pub request_id: Option<&'a str>,
}

/// Emits the audit event of an accepted write.
pub fn record(entry: &Entry) {
    tracing::info!(
        target: TARGET,
        subject = entry.subject,
        tenant = entry.tenant,
        operation = entry.operation,
        entity_ids = ?entry.entity_ids,
        request_id = entry.request_id.unwrap_or(""),
        at = %chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "write accepted"
    );
}
