//! Entities per tenant for `/metrics` (`twinlink_entities`) on PostgreSQL. Counting is a walk of
//! the primary key's index (`tenant, id`; index-only where the visibility map allows), so it is
//! not done by the scrape: a scrape serves the last count at once and, when that count is older
//! than the period (`--entity-count-every-ms`), starts a new one in the background. The database
//! thus counts at most once per period and only while someone scrapes; a scrape never waits on
//! it and never fails because of it (a failed count is logged and the last one kept).

use deadpool_postgres::Pool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a count may run; past it the database cancels it (the last count stays).
const STATEMENT_TIMEOUT: &str = "30s";

/// Every tenant the `tenants` table knows (its rows are never removed), with its entities: 0 for
/// a tenant whose entities are all gone, as the embedded store counts them.
const COUNT: &str = "SELECT t.tenant, (SELECT count(*) FROM entities e WHERE e.tenant = t.tenant) \
                     FROM tenants t";

/// The last count and when the next may start.
pub struct EntityCounts {
    every: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    counts: Option<Vec<(String, usize)>>,
    started: Option<Instant>,
    running: bool,
}

impl EntityCounts {
    /// Counts at most once per `every`.
    pub fn new(every: Duration) -> EntityCounts {
        EntityCounts {
            every,
            state: Arc::default(),
        }
    }

    /// The last count (None before the first has finished); starts a new one on `pool` in the
    /// background when the last started a period ago or more and none is running. Needs a Tokio
    /// runtime (the scrape's).
    pub fn get(&self, pool: &Pool) -> Option<Vec<(String, usize)>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = state.started.is_none_or(|t| t.elapsed() >= self.every);
        if due && !state.running {
            state.running = true;
            state.started = Some(Instant::now());
            let (shared, pool) = (self.state.clone(), pool.clone());
            tokio::spawn(async move {
                let counted = count(&pool).await;
                let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                state.running = false;
                match counted {
                    Ok(counts) => state.counts = Some(counts),
                    Err(error) => {
                        tracing::warn!(%error, "entities per tenant not counted for /metrics")
                    }
                }
            });
        }
        state.counts.clone()
    }
}

async fn count(pool: &Pool) -> Result<Vec<(String, usize)>, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"
    ))
    .await
    .map_err(|e| e.to_string())?;
    let rows = tx.query(COUNT, &[]).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as usize))
        .collect())
}
