//! The PostgreSQL + PostGIS store: entities in one table per database with a tenant column, the
//! `location` geometry in a GiST-indexed column, types and scopes in GIN-indexed arrays and the
//! expanded entity as jsonb. Every write is one transaction (read with FOR UPDATE, decide, write).

pub mod migrate;
pub mod sql;

use super::Write;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::model::{AttrKind, Entity};
use crate::query::geo::LOCATION;
use crate::query::EntityQuery;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

/// Entities in PostgreSQL.
pub struct PgStore {
    pool: Pool,
}

/// Connection failures are the database being away (503); anything else is a bug (500).
fn db_error(e: tokio_postgres::Error) -> NgsiError {
    if e.is_closed() || e.as_db_error().is_none() {
        NgsiError::new(
            ErrorKind::ServiceUnavailable,
            format!("the database is unavailable: {e}"),
        )
    } else {
        NgsiError::internal(format!("the database refused a statement: {e}"))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> NgsiError {
    NgsiError::new(
        ErrorKind::ServiceUnavailable,
        format!("the database is unavailable: {e}"),
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

impl PgStore {
    /// Connects (retrying with backoff while the database is unreachable, logging each attempt) and
    /// applies pending migrations.
    pub async fn connect(url: &str, max_size: usize) -> Result<PgStore, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("invalid database URL: {e}"))?;
        let manager = Manager::from_config(
            config,
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
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            match migrate::run(&pool).await {
                Ok(applied) => {
                    if !applied.is_empty() {
                        tracing::info!(?applied, "database migrations applied");
                    }
                    break;
                }
                Err(e) if attempt < 30 => {
                    tracing::warn!(attempt, error = %e, "PostgreSQL not ready; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(format!("PostgreSQL stayed unreachable: {e}")),
            }
        }
        Ok(PgStore { pool })
    }

    /// Whether the database answers (for /ready).
    pub async fn ready(&self) -> bool {
        match self.pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// The entity with this id.
    pub async fn get(&self, tenant: &str, id: &str) -> NgsiResult<Option<Arc<Entity>>> {
        let client = self.pool.get().await.map_err(pool_error)?;
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
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt("SELECT 1 FROM tenants WHERE tenant = $1", &[&tenant])
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    /// Read-modify-write of one entity in one transaction. A concurrent create of the same id (no
    /// row to lock yet) is detected by the insert and reported as AlreadyExists.
    pub async fn modify<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<(Write, R)> + Send + 'static,
    {
        {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(db_error)?;
            let row = tx
                .query_opt(
                    "SELECT body FROM entities WHERE tenant = $1 AND id = $2 FOR UPDATE",
                    &[&tenant, &id],
                )
                .await
                .map_err(db_error)?;
            let current = row.map(|r| decode(r.get(0))).transpose()?;
            let existed = current.is_some();
            let (write, result) = decide(current.as_ref())?;
            match write {
                Write::Keep => return Ok(result),
                Write::Delete => {
                    tx.execute(
                        "DELETE FROM entities WHERE tenant = $1 AND id = $2",
                        &[&tenant, &id],
                    )
                    .await
                    .map_err(db_error)?;
                }
                Write::Put(entity) => {
                    let body = serde_json::to_value(&entity)
                        .map_err(|e| NgsiError::internal(e.to_string()))?;
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
                    let written = tx
                        .execute(
                            "INSERT INTO entities (tenant, id, types, scopes, location, location_multi, created_at, modified_at, body)
                             VALUES ($1, $2, $3, $4, ST_SetSRID(ST_GeomFromGeoJSON($5), 4326), $6, $7, $8, $9)
                             ON CONFLICT (tenant, id) DO UPDATE SET
                               types = EXCLUDED.types, scopes = EXCLUDED.scopes, location = EXCLUDED.location,
                               location_multi = EXCLUDED.location_multi, modified_at = EXCLUDED.modified_at,
                               body = EXCLUDED.body
                             WHERE $10",
                            &params,
                        )
                        .await
                        .map_err(db_error)?;
                    if written == 0 {
                        // Created by a concurrent request since our read (there was no row to lock).
                        return Err(NgsiError::new(
                            ErrorKind::AlreadyExists,
                            format!("an entity with id '{id}' was created concurrently"),
                        ));
                    }
                    tx.execute(
                        "INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING",
                        &[&tenant],
                    )
                    .await
                    .map_err(db_error)?;
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
        let client = self.pool.get().await.map_err(pool_error)?;
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

    /// Every entity of the tenant in id order.
    pub async fn entities(&self, tenant: &str) -> NgsiResult<Vec<Arc<Entity>>> {
        let client = self.pool.get().await.map_err(pool_error)?;
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
}
