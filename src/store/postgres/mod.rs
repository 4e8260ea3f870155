//! The PostgreSQL + PostGIS store: entities in one table per database with a tenant column, the
//! `location` geometry in a GiST-indexed column, types and scopes in GIN-indexed arrays and the
//! expanded entity as jsonb. Every write, of one entity or of a batch, is one transaction (lock the
//! ids, read, decide, write set-based).
//!
//! By job: this file holds the connection (pool, migrations, errors, tenants, listener); `writes`
//! the one write path; `reads` entities by id and queries; `history` and `aggregate` the temporal
//! reads; `transient` what expired (4.22); `records` the collections (subscriptions,
//! registrations); `maps` entity maps; `sql` the translation of queries. The submodules are
//! `impl PgStore` blocks that share this file's imports and helpers (`use super::*`).

mod aggregate;
mod backend;
pub mod cache;
mod counts;
pub mod ewkb;
mod history;
pub mod listen;
mod maps;
pub mod migrate;
mod ownership;
mod reads;
mod records;
mod rollups;
pub mod sql;
pub mod statements;
mod transient;
mod writes;

use history::{time_column, time_conditions};
use transient::tenant_due;

use super::aggregate::{AggrMethod, AggregateQuery, Bucket};
use super::changes::{ChangeFeed, RECORD_SQL};
use super::history::{HistoryQuery, HistoryRemoval, InstanceChange, TimeProperty};
use super::json_text::JsonText;
use super::{run_steps, Collection, Step};
use crate::error::{with_causes, ErrorKind, NgsiError, NgsiResult};
use crate::model::{expiry, AttrKind, Entity};
use crate::query::geo::LOCATION;
use crate::query::EntityQuery;
use crate::retry::Backoff;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::{try_join, try_join3, try_join4, try_join_all};
use serde_json::Value;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::NoTls;

/// Entities in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    /// Where the listener connects (its own connection, outside the pool).
    config: Arc<tokio_postgres::Config>,
    /// Where the listener delivers committed changes.
    feed: ChangeFeed,
    /// Alive as long as the store: the listener ends (and its locks go) when the store is dropped.
    alive: Arc<()>,
    /// Requests to the listener, which holds the subscriptions (set by [`Self::listen`]).
    requests: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<listen::Request>>,
    /// Set once the schema is migrated; until then every operation is 503.
    migrated: Arc<AtomicBool>,
    /// Tenants this instance has seen in the `tenants` table (rows are never removed), so that a
    /// write to a known tenant does not insert it again.
    known_tenants: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Decoded entities by row version, for query pages.
    cache: cache::EntityCache,
    /// Entities per tenant for /metrics, counted in the background.
    entity_counts: counts::EntityCounts,
}

/// Applies migrations, retrying with backoff ([`Backoff::reconnect`]) while the database is
/// unreachable; gives up after `max_attempts` when given.
async fn migrate_with_retry(pool: &Pool, max_attempts: Option<u32>) -> Result<(), String> {
    let mut backoff = Backoff::reconnect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match migrate::run(pool).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "database migrations applied");
                }
                return Ok(());
            }
            Err(e) if max_attempts.is_none_or(|max| attempt < max) => {
                let delay = backoff.next_delay();
                tracing::warn!(attempt, error = %e, "PostgreSQL not ready; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(format!("PostgreSQL stayed unreachable: {e}")),
        }
    }
}

/// Connection failures are the database being away (503); anything else is a bug (500).
fn db_error(e: tokio_postgres::Error) -> NgsiError {
    if e.is_closed() || e.as_db_error().is_none() {
        NgsiError::new(
            ErrorKind::ServiceUnavailable,
            format!("the database is unavailable: {}", with_causes(&e)),
        )
    } else {
        NgsiError::internal(format!(
            "the database refused a statement: {}",
            with_causes(&e)
        ))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> NgsiError {
    NgsiError::new(
        ErrorKind::ServiceUnavailable,
        format!("the database is unavailable: {}", with_causes(&e)),
    )
}

/// Ends whatever transaction a failed write left open on this connection before it goes back to
/// the pool; a connection where even that fails is dropped from the pool instead.
async fn abandon_transaction(client: deadpool_postgres::Object) {
    if client.batch_execute("ROLLBACK").await.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
}

/// The entity in column `col` of a row (jsonb deserialized straight into the model).
fn decode(row: &tokio_postgres::Row, col: usize) -> NgsiResult<Entity> {
    row.try_get::<_, Json<Entity>>(col)
        .map(|Json(e)| e)
        .map_err(|e| NgsiError::internal(format!("a stored entity does not decode: {e}")))
}

/// A stored entity as it stands at `now` (see [`expiry::live`]).
fn live(e: Entity, now: DateTime<Utc>) -> Option<Arc<Entity>> {
    expiry::live(&Arc::new(e), now)
}

impl PgStore {
    /// Connects and migrates, retrying with backoff (a log line per attempt) for two to four
    /// minutes while the database is unreachable; used where the caller needs the database now.
    pub async fn connect(url: &str, max_size: usize) -> Result<PgStore, String> {
        let store = Self::with_pool(url, max_size)?;
        migrate_with_retry(&store.pool, Some(30)).await?;
        store.migrated.store(true, Ordering::Release);
        Ok(store)
    }

    /// Returns at once and connects in the background, retrying forever: the HTTP server can
    /// answer /health (and /ready with 503) while the database is still away at start-up.
    pub fn connect_in_background(url: &str, max_size: usize) -> Result<PgStore, String> {
        let store = Self::with_pool(url, max_size)?;
        let (pool, migrated) = (store.pool.clone(), store.migrated.clone());
        tokio::spawn(async move {
            if migrate_with_retry(&pool, None).await.is_ok() {
                migrated.store(true, Ordering::Release);
            }
        });
        Ok(store)
    }

    fn with_pool(url: &str, max_size: usize) -> Result<PgStore, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("invalid database URL: {e}"))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| format!("cannot build the connection pool: {e}"))?;
        Ok(PgStore {
            pool,
            config: Arc::new(config),
            feed: ChangeFeed::default(),
            alive: Arc::new(()),
            requests: std::sync::OnceLock::new(),
            migrated: Arc::new(AtomicBool::new(false)),
            known_tenants: Default::default(),
            cache: cache::EntityCache::new(0),
            entity_counts: counts::EntityCounts::new(crate::config::ENTITY_COUNT_EVERY),
        })
    }

    /// The same store counting entities per tenant for /metrics at most once per `every`
    /// (as connected: [`crate::config::ENTITY_COUNT_EVERY`]), see [`counts`].
    pub fn with_entity_count_every(mut self, every: Duration) -> PgStore {
        self.entity_counts = counts::EntityCounts::new(every);
        self
    }

    /// The same store keeping at most `capacity` decoded entities (0, as connected: none), see
    /// [`cache`].
    pub fn with_entity_cache(mut self, capacity: usize) -> PgStore {
        self.cache = cache::EntityCache::new(capacity);
        self
    }

    /// A pooled connection, or 503 while the database is away or not yet migrated.
    async fn client(&self) -> NgsiResult<deadpool_postgres::Object> {
        if !self.migrated.load(Ordering::Acquire) {
            return Err(NgsiError::new(
                ErrorKind::ServiceUnavailable,
                "the database has not been reached yet since start-up; retrying",
            ));
        }
        self.pool.get().await.map_err(pool_error)
    }

    /// Whether the database answers a trivial query (for /ready).
    pub async fn ready(&self) -> bool {
        match self.client().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// Whether the tenant exists.
    pub async fn tenant_exists(&self, tenant: &str) -> NgsiResult<bool> {
        if self.knows_tenant(tenant) {
            return Ok(true);
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT 1 FROM tenants WHERE tenant = $1")
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&tenant])
            .await
            .map_err(db_error)?;
        if row.is_some() {
            self.remember_tenant(tenant);
        }
        Ok(row.is_some())
    }

    /// Whether the tenant is known to be in the `tenants` table.
    fn knows_tenant(&self, tenant: &str) -> bool {
        self.known_tenants
            .read()
            .is_ok_and(|known| known.contains(tenant))
    }

    /// Notes a tenant found in, or committed to, the `tenants` table.
    fn remember_tenant(&self, tenant: &str) {
        if let Ok(mut known) = self.known_tenants.write() {
            known.insert(tenant.to_string());
        }
    }

    /// The feed of committed changes (delivered by the listener, see [`listen`]).
    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// Starts the listener that feeds committed changes of every instance into [`Self::feed`],
    /// reports subscriptions changed by any instance and holds this instance's share of them. It
    /// ends when the store is dropped.
    pub fn listen(&self, events: tokio::sync::mpsc::UnboundedSender<super::coordination::Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if self.requests.set(tx).is_err() {
            return;
        }
        let (alive, migrated) = (Arc::downgrade(&self.alive), self.migrated.clone());
        let (config, feed, pool) = (self.config.clone(), self.feed.clone(), self.pool.clone());
        tokio::spawn(async move {
            // Before the schema exists there is no change feed to read.
            while !migrated.load(Ordering::Acquire) {
                if alive.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            listen::run(config, pool, feed, events, rx, alive).await
        });
        tokio::spawn(ownership::prune_every(
            self.pool.clone(),
            self.migrated.clone(),
            Arc::downgrade(&self.alive),
        ));
    }

    /// Sends a request to the listener and waits (two seconds at most) for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> listen::Request,
    ) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.get()?.send(request(reply)).ok()?;
        tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .ok()?
            .ok()
    }

    /// Asks the listener to claim new subscriptions at once (after this instance created one).
    pub async fn claim_now(&self) {
        self.ask(listen::Request::Claim).await;
    }

    /// Asks the listener to save watermarks of subscriptions it holds.
    pub async fn save_marks(&self, marks: Vec<listen::Mark>) -> Result<(), String> {
        self.ask(|reply| listen::Request::Save(marks, reply))
            .await
            .unwrap_or_else(|| Err("the change listener did not answer".into()))
    }

    /// Asks the listener to save the final watermarks of subscriptions it releases, then unlock
    /// them.
    pub fn release_marks(&self, marks: Vec<listen::Mark>) {
        if let Some(requests) = self.requests.get() {
            let _ = requests.send(listen::Request::Release(marks));
        }
    }
}
