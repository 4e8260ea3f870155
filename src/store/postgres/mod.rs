//! The PostgreSQL + PostGIS store: entities in one table per database with a tenant column, the
//! `location` geometry in a GiST-indexed column, types and scopes in GIN-indexed arrays and the
//! expanded entity as jsonb. Every write is one transaction (read with FOR UPDATE, decide, write).

pub mod listen;
pub mod migrate;
pub mod sql;

use super::changes::{ChangeFeed, RECORD_SQL};
use super::history::{self, HistoryQuery, InstanceChange, TimeProperty};
use super::Write;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::model::{AttrKind, Entity};
use crate::query::geo::LOCATION;
use crate::query::EntityQuery;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::{try_join, try_join3};
use serde_json::Value;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
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
    /// Claim requests to the listener (set by [`Self::listen`]).
    claims: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<listen::ClaimRequest>>,
    /// Set once the schema is migrated; until then every operation is 503.
    migrated: Arc<AtomicBool>,
}

/// Applies migrations, retrying with exponential backoff (capped at 5 s) while the database is
/// unreachable; gives up after `max_attempts` when given.
async fn migrate_with_retry(pool: &Pool, max_attempts: Option<u32>) -> Result<(), String> {
    let mut delay = Duration::from_millis(200);
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
                tracing::warn!(attempt, error = %e, "PostgreSQL not ready; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(format!("PostgreSQL stayed unreachable: {e}")),
        }
    }
}

/// An error with its causes ("error connecting to server: Connection refused ...").
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Connection failures are the database being away (503); anything else is a bug (500).
fn db_error(e: tokio_postgres::Error) -> NgsiError {
    if e.is_closed() || e.as_db_error().is_none() {
        NgsiError::new(
            ErrorKind::ServiceUnavailable,
            format!("the database is unavailable: {}", with_causes(&e)),
        )
    } else {
        NgsiError::internal(format!("the database refused a statement: {e}"))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> NgsiError {
    NgsiError::new(
        ErrorKind::ServiceUnavailable,
        format!("the database is unavailable: {}", with_causes(&e)),
    )
}

fn decode(body: serde_json::Value) -> NgsiResult<Entity> {
    serde_json::from_value(body)
        .map_err(|e| NgsiError::internal(format!("a stored entity does not decode: {e}")))
}

/// The `location` column value of an entity: the GeoJSON of its only (or default) instance, and
/// whether the attribute has several instances.
fn location_of(e: &Entity) -> (Option<String>, bool) {
    let instances: Vec<_> = e
        .attrs
        .get(LOCATION)
        .into_iter()
        .flatten()
        .filter(|a| a.kind == AttrKind::GeoProperty)
        .collect();
    match instances.as_slice() {
        [] => (None, false),
        [one] => (Some(one.value.to_string()), false),
        _ => (None, true),
    }
}

/// Inserts every history record of a request at once: $1 tenant, $2 entity id, then one array per
/// column (all of the same length).
const INSERT_HISTORY: &str = "INSERT INTO attribute_instances
    (tenant, entity_id, attr, dataset_id, instance_id, kind, observed_at, created_at, modified_at,
     deleted_at, value, num, location)
  SELECT $1, $2, h.attr, h.dataset_id, h.instance_id, h.kind, h.observed_at, h.created_at,
         h.modified_at, h.deleted_at, h.value, h.num, ST_SetSRID(ST_GeomFromGeoJSON(h.geo), 4326)
  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[],
              $9::timestamptz[], $10::timestamptz[], $11::jsonb[], $12::float8[], $13::text[])
    AS h(attr, dataset_id, instance_id, kind, observed_at, created_at, modified_at, deleted_at,
         value, num, geo)";

/// The columns of [`INSERT_HISTORY`], one array each.
struct HistoryColumns<'a> {
    attr: Vec<Option<&'a str>>,
    dataset_id: Vec<Option<&'a str>>,
    instance_id: Vec<&'a str>,
    kind: Vec<Option<&'static str>>,
    observed_at: Vec<Option<DateTime<Utc>>>,
    created_at: Vec<DateTime<Utc>>,
    modified_at: Vec<DateTime<Utc>>,
    deleted_at: Vec<Option<DateTime<Utc>>>,
    value: Vec<Option<&'a Value>>,
    num: Vec<Option<f64>>,
    geo: Vec<Option<String>>,
}

impl<'a> HistoryColumns<'a> {
    fn new(records: &'a [InstanceChange]) -> HistoryColumns<'a> {
        HistoryColumns {
            attr: records.iter().map(|r| r.attr.as_deref()).collect(),
            dataset_id: records.iter().map(|r| r.dataset_id.as_deref()).collect(),
            instance_id: records.iter().map(|r| r.instance_id.as_str()).collect(),
            kind: records.iter().map(|r| r.kind.map(AttrKind::name)).collect(),
            observed_at: records.iter().map(|r| r.observed_at).collect(),
            created_at: records.iter().map(|r| r.created_at).collect(),
            modified_at: records.iter().map(|r| r.modified_at).collect(),
            deleted_at: records.iter().map(|r| r.deleted_at).collect(),
            value: records.iter().map(|r| r.value.as_ref()).collect(),
            num: records.iter().map(|r| r.num).collect(),
            // The GeoJSON of GeoProperty values, for the geometry column.
            geo: records
                .iter()
                .map(|r| match (r.kind, &r.value) {
                    (Some(AttrKind::GeoProperty), Some(v)) => v.get("value").map(Value::to_string),
                    _ => None,
                })
                .collect(),
        }
    }

    fn params<'p>(&'p self, tenant: &'p &str, id: &'p &str) -> [&'p (dyn ToSql + Sync); 13] {
        [
            tenant,
            id,
            &self.attr,
            &self.dataset_id,
            &self.instance_id,
            &self.kind,
            &self.observed_at,
            &self.created_at,
            &self.modified_at,
            &self.deleted_at,
            &self.value,
            &self.num,
            &self.geo,
        ]
    }
}

impl PgStore {
    /// Connects and migrates, retrying with backoff (a log line per attempt) for up to about two
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
            claims: std::sync::OnceLock::new(),
            migrated: Arc::new(AtomicBool::new(false)),
        })
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

    /// Whether the database answers (for /ready).
    pub async fn ready(&self) -> bool {
        match self.client().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// The entity with this id.
    pub async fn get(&self, tenant: &str, id: &str) -> NgsiResult<Option<Arc<Entity>>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT body FROM entities WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(db_error)?;
        row.map(|r| decode(r.get(0)).map(Arc::new)).transpose()
    }

    /// Whether the tenant exists.
    pub async fn tenant_exists(&self, tenant: &str) -> NgsiResult<bool> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT 1 FROM tenants WHERE tenant = $1", &[&tenant])
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    /// Read-modify-write of one entity in one transaction, which also records the history of what
    /// changed (one statement for all records). A concurrent create of the same id (no
    /// row to lock yet) is detected by the insert and reported as AlreadyExists.
    pub async fn modify<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<(Write, R)> + Send + 'static,
    {
        {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let row = tx
                .query_opt(
                    "SELECT body FROM entities WHERE tenant = $1 AND id = $2 FOR UPDATE",
                    &[&tenant, &id],
                )
                .await
                .map_err(db_error)?;
            let before: Option<Value> = row.map(|r| r.get(0));
            let current = before.clone().map(decode).transpose()?;
            let existed = current.is_some();
            let (write, result) = decide(current.as_ref())?;
            let records = match &write {
                Write::Keep => return Ok(result),
                Write::Put(e) => history::changes(current.as_ref(), Some(e), e.modified_at),
                Write::Delete => history::changes(current.as_ref(), None, Utc::now()),
            };
            let after = match &write {
                Write::Put(entity) => Some(
                    serde_json::to_value(entity).map_err(|e| NgsiError::internal(e.to_string()))?,
                ),
                _ => None,
            };
            // The change feed's record, announced to every instance at commit.
            let record_change = record_change(&tx, tenant, id, &before, &after);
            // The entity, the tenant and every history record of the request, each one statement,
            // pipelined on the transaction's connection.
            let columns = HistoryColumns::new(&records);
            let record_history = async {
                if records.is_empty() {
                    return Ok(0);
                }
                tx.execute(INSERT_HISTORY, &columns.params(&tenant, &id))
                    .await
            };
            match write {
                Write::Keep => return Ok(result),
                Write::Delete => {
                    try_join3(
                        tx.execute(
                            "DELETE FROM entities WHERE tenant = $1 AND id = $2",
                            &[&tenant, &id],
                        ),
                        record_history,
                        record_change,
                    )
                    .await
                    .map_err(db_error)?;
                }
                Write::Put(entity) => {
                    let body = after.as_ref();
                    let (location, multi) = location_of(&entity);
                    let params: [&(dyn ToSql + Sync); 10] = [
                        &tenant,
                        &id,
                        &entity.types,
                        &entity.scope,
                        &location,
                        &multi,
                        &entity.created_at,
                        &entity.modified_at,
                        &body,
                        &existed,
                    ];
                    let ((written, _), (_, _)) = try_join(
                        try_join(
                        tx.execute(
                            "INSERT INTO entities (tenant, id, types, scopes, location, location_multi, created_at, modified_at, body)
                             VALUES ($1, $2, $3, $4, ST_SetSRID(ST_GeomFromGeoJSON($5), 4326), $6, $7, $8, $9)
                             ON CONFLICT (tenant, id) DO UPDATE SET
                               types = EXCLUDED.types, scopes = EXCLUDED.scopes, location = EXCLUDED.location,
                               location_multi = EXCLUDED.location_multi, modified_at = EXCLUDED.modified_at,
                               body = EXCLUDED.body
                             WHERE $10",
                            &params,
                        ),
                        tx.execute(
                            "INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING",
                            &[&tenant],
                        ),
                        ),
                        try_join(record_history, record_change),
                    )
                    .await
                    .map_err(db_error)?;
                    if written == 0 {
                        // Created by a concurrent request since our read (there was no row to
                        // lock); dropping the transaction rolls back the tenant and history rows.
                        return Err(NgsiError::new(
                            ErrorKind::AlreadyExists,
                            format!("an entity with id '{id}' was created concurrently"),
                        ));
                    }
                }
            }
            tx.commit().await.map_err(db_error)?;
            Ok(result)
        }
    }

    /// A page of the entities matching `query`, in id order, and the number of matches seen.
    pub async fn query(
        &self,
        tenant: &str,
        query: &EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> NgsiResult<(Vec<Arc<Entity>>, usize)> {
        let t = sql::translate(query);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
        params.extend(t.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)));
        let mut where_sql = String::from("tenant = $1");
        for c in &t.conditions {
            where_sql.push_str(" AND ");
            where_sql.push_str(c);
        }
        let client = self.client().await?;
        if t.exact {
            let page_sql = format!(
                "SELECT body FROM entities WHERE {where_sql} ORDER BY id LIMIT {} OFFSET {offset}",
                if count { limit } else { limit + 1 }
            );
            let rows = client.query(&page_sql, &params).await.map_err(db_error)?;
            let mut page: Vec<Arc<Entity>> = rows
                .into_iter()
                .map(|r| decode(r.get(0)).map(Arc::new))
                .collect::<NgsiResult<_>>()?;
            let seen = if count {
                let n: i64 = client
                    .query_one(
                        &format!("SELECT count(*) FROM entities WHERE {where_sql}"),
                        &params,
                    )
                    .await
                    .map_err(db_error)?
                    .get(0);
                n as usize
            } else {
                offset + page.len()
            };
            page.truncate(limit);
            return Ok((page, seen));
        }
        let rows = client
            .query(
                &format!("SELECT body FROM entities WHERE {where_sql} ORDER BY id"),
                &params,
            )
            .await
            .map_err(db_error)?;
        let mut page = Vec::new();
        let mut seen = 0usize;
        for row in rows {
            let e = decode(row.get(0))?;
            if !query.matches(&e) {
                continue;
            }
            if seen >= offset && page.len() < limit {
                page.push(Arc::new(e));
            }
            seen += 1;
            if !count && seen > offset + limit {
                break;
            }
        }
        Ok((page, seen))
    }

    /// The history records of one entity that `query` selects, in the order of
    /// [`HistoryQuery::select`]; bounds, ordering and lastN (a window per attribute) are SQL.
    pub async fn history(
        &self,
        tenant: &str,
        id: &str,
        query: &HistoryQuery,
    ) -> NgsiResult<Vec<InstanceChange>> {
        let col = match query.time_property {
            TimeProperty::ObservedAt => "observed_at",
            TimeProperty::CreatedAt => "created_at",
            TimeProperty::ModifiedAt => "modified_at",
            TimeProperty::DeletedAt => "deleted_at",
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &id];
        let mut conditions = vec![format!(
            "tenant = $1 AND entity_id = $2 AND {col} IS NOT NULL"
        )];
        if let Some(attr) = &query.attr {
            params.push(attr);
            conditions.push(format!("attr = ${}", params.len()));
        }
        for (bound, included, excluded) in [(&query.from, ">=", ">"), (&query.to, "<=", "<")] {
            let (t, op) = match bound {
                Bound::Included(t) => (t, included),
                Bound::Excluded(t) => (t, excluded),
                Bound::Unbounded => continue,
            };
            params.push(t);
            conditions.push(format!("{col} {op} ${}", params.len()));
        }
        let columns =
            "attr, dataset_id, instance_id, kind, observed_at, created_at, modified_at, deleted_at, value, num";
        let from = format!("attribute_instances WHERE {}", conditions.join(" AND "));
        let order = format!(
            "{col}, attr COLLATE \"C\" NULLS FIRST, dataset_id COLLATE \"C\" NULLS FIRST, instance_id COLLATE \"C\""
        );
        let sql = match query.last_n {
            None => format!("SELECT {columns} FROM {from} ORDER BY {order}"),
            Some(n) => format!(
                "SELECT {columns} FROM (SELECT {columns}, row_number() OVER (PARTITION BY attr ORDER BY {col} DESC,
                   dataset_id COLLATE \"C\" DESC NULLS LAST, instance_id COLLATE \"C\" DESC) AS rn FROM {from}) h
                 WHERE rn <= {n} ORDER BY {order}"
            ),
        };
        let client = self.client().await?;
        let rows = client.query(&sql, &params).await.map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| InstanceChange {
                attr: r.get(0),
                dataset_id: r.get(1),
                instance_id: r.get(2),
                kind: r.get::<_, Option<&str>>(3).and_then(AttrKind::from_name),
                observed_at: r.get(4),
                created_at: r.get(5),
                modified_at: r.get(6),
                deleted_at: r.get(7),
                value: r.get(8),
                num: r.get(9),
            })
            .collect())
    }

    /// Every entity of the tenant in id order.
    pub async fn entities(&self, tenant: &str) -> NgsiResult<Vec<Arc<Entity>>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT body FROM entities WHERE tenant = $1 ORDER BY id",
                &[&tenant],
            )
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|r| decode(r.get(0)).map(Arc::new))
            .collect()
    }

    /// The feed of committed changes (delivered by the listener, see [`listen`]).
    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// Starts the listener that feeds committed changes of every instance into [`Self::feed`],
    /// reports subscriptions changed by any instance and which ones this instance owns. It ends
    /// when the store is dropped.
    pub fn listen(&self, events: tokio::sync::mpsc::UnboundedSender<listen::Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if self.claims.set(tx).is_err() {
            return;
        }
        tokio::spawn(listen::run(
            self.config.clone(),
            self.feed.clone(),
            events,
            rx,
            Arc::downgrade(&self.alive),
        ));
    }

    /// Asks the listener to claim unowned subscriptions at once (after this instance created
    /// one); returns those this instance now holds, or None when the listener does not answer
    /// within two seconds.
    pub async fn claim_now(&self) -> Option<std::collections::HashSet<(String, String)>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.claims.get()?.send(reply).ok()?;
        tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .ok()?
            .ok()
    }

    /// Stores a subscription record (with `create`, only if the id is new: false otherwise) and
    /// tells every instance.
    pub async fn put_subscription(
        &self,
        tenant: &str,
        id: &str,
        record: &Value,
        create: bool,
    ) -> NgsiResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let sql = if create {
            "INSERT INTO subscriptions (tenant, id, record) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING"
        } else {
            "INSERT INTO subscriptions (tenant, id, record) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, id) DO UPDATE SET record = EXCLUDED.record"
        };
        let written = tx
            .execute(sql, &[&tenant, &id, record])
            .await
            .map_err(db_error)?;
        if written == 0 {
            return Ok(false);
        }
        announce(&tx, tenant, id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Replaces the delivery statistics of a subscription (no announcement: only its owner
    /// delivers, and readers read the row).
    pub async fn save_subscription_stats(
        &self,
        tenant: &str,
        id: &str,
        stats: &Value,
    ) -> NgsiResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE subscriptions SET record = jsonb_set(record, '{stats}', $3) WHERE tenant = $1 AND id = $2",
                &[&tenant, &id, stats],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Removes a subscription and tells every instance; false when there was none.
    pub async fn delete_subscription(&self, tenant: &str, id: &str) -> NgsiResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let removed = tx
            .execute(
                "DELETE FROM subscriptions WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(db_error)?;
        announce(&tx, tenant, id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(removed > 0)
    }

    /// One subscription record.
    pub async fn subscription(&self, tenant: &str, id: &str) -> NgsiResult<Option<Value>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT record FROM subscriptions WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every subscription record of every tenant, as (tenant, record).
    pub async fn subscriptions(&self) -> NgsiResult<Vec<(String, Value)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant, record FROM subscriptions ORDER BY tenant, id",
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// The change-feed hook of a PostgreSQL write: records one entity's committed change (its stored
/// body before and after, None for a creation or deletion) in the write transaction; every
/// instance's listener publishes it at commit. Every write path calls it once per entity written.
pub async fn record_change(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    id: &str,
    before: &Option<Value>,
    after: &Option<Value>,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(RECORD_SQL, &[&tenant, &id, before, after]).await
}

/// Tells every instance (at commit) that a subscription changed.
async fn announce(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    id: &str,
) -> NgsiResult<()> {
    let payload = serde_json::json!([tenant, id]).to_string();
    tx.execute(
        "SELECT pg_notify('twinlink_subscriptions', $1)",
        &[&payload],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}
