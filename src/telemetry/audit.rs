//! The audit log: one structured event per accepted write, on its own target
//! (`twinlink::audit`), so that a log pipeline can route it apart from the operational logs. The
//! ids of the entities a write changed are gathered where every entity write passes (the store's
//! `modify_many`) while the request or MQTT group that caused them runs. With `--audit-table true`
//! the events also go into the PostgreSQL table `audit_log` ([`Table`]).

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

/// Emits the audit event of an accepted write, and queues its row for the audit table when
/// there is one.
pub fn record(entry: &Entry, table: Option<&Table>) {
    let at = chrono::Utc::now();
    tracing::info!(
        target: TARGET,
        subject = entry.subject,
        tenant = entry.tenant,
        operation = entry.operation,
        entity_ids = ?entry.entity_ids,
        request_id = entry.request_id.unwrap_or(""),
        at = %at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "write accepted"
    );
    if let Some(table) = table {
        table.push(Row {
            at,
            subject: entry.subject.replace('\0', ""),
            tenant: entry.tenant.to_string(),
            operation: entry.operation.to_string(),
            entity_ids: entry.entity_ids.into(),
            request_id: entry.request_id.map(str::to_string),
        });
    }
}

/// Rows waiting for the audit table at most; past that (the database away for long), rows are
/// dropped and said so in the log, where every event is anyway.
const TABLE_QUEUE: usize = 10_000;

/// Rows inserted by one statement at most.
const TABLE_GROUP: usize = 500;

/// Attempts to insert one group of rows before it is given up (logged).
const TABLE_ATTEMPTS: u32 = 5;

/// One row of `audit_log`.
struct Row {
    at: chrono::DateTime<chrono::Utc>,
    subject: String,
    tenant: String,
    operation: String,
    entity_ids: Vec<String>,
    request_id: Option<String>,
}

/// The audit table (`--audit-table true`, PostgreSQL store): every audit event also becomes a
/// row of `audit_log`, for queries by time and subject that a log pipeline may not offer. Rows
/// are written asynchronously, by one task inserting what has arrived in groups, after the
/// write they record has committed: the writes themselves do not wait for the audit (the store
/// combines the writes of concurrent requests into one transaction, which has no one subject),
/// at the price that a crash between a commit and its row loses the row (the log event is
/// written before).
#[derive(Clone)]
pub struct Table {
    rows: tokio::sync::mpsc::Sender<Row>,
}

impl Table {
    /// Starts the task that writes the rows with connections of `pool` (on the current Tokio
    /// runtime).
    pub fn start(pool: deadpool_postgres::Pool) -> Table {
        let (rows, mut rx) = tokio::sync::mpsc::channel::<Row>(TABLE_QUEUE);
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(TABLE_GROUP);
            while rx.recv_many(&mut group, TABLE_GROUP).await > 0 {
                let mut backoff = crate::retry::Backoff::reconnect();
                for attempt in 1..=TABLE_ATTEMPTS {
                    match insert(&pool, &group).await {
                        Ok(()) => break,
                        Err(e) if attempt == TABLE_ATTEMPTS => tracing::error!(
                            rows = group.len(), error = %e,
                            "audit rows could not be written to audit_log; they are in the log only"
                        ),
                        Err(e) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %e, "audit_log insert failed; retrying in {delay:?}");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
                group.clear();
            }
        });
        Table { rows }
    }

    fn push(&self, row: Row) {
        if self.rows.try_send(row).is_err() {
            tracing::warn!("the audit table's queue is full; an audit row is in the log only");
        }
    }
}

/// Inserts a group of rows in one statement.
async fn insert(pool: &deadpool_postgres::Pool, rows: &[Row]) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let column = |f: fn(&Row) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let at: Vec<_> = rows.iter().map(|r| r.at).collect();
    // An array per row: unnest would flatten a two-dimensional array, so each goes as JSON.
    let ids: Vec<_> = rows
        .iter()
        .map(|r| serde_json::json!(r.entity_ids))
        .collect();
    let request_ids: Vec<_> = rows.iter().map(|r| r.request_id.clone()).collect();
    client
        .execute(
            "INSERT INTO audit_log (at, subject, tenant, operation, entity_ids, request_id)
             SELECT a, s, t, o, ARRAY(SELECT jsonb_array_elements_text(e)), r
             FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::jsonb[],
                         $6::text[]) AS u(a, s, t, o, e, r)",
            &[
                &at,
                &column(|r| &r.subject),
                &column(|r| &r.tenant),
                &column(|r| &r.operation),
                &ids,
                &request_ids,
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
