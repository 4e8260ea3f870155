//! Persistence behind one interface: the embedded store (default, zero setup) and, later, PostgreSQL.
//! Every write is a read-modify-write of one entity, done atomically inside the store, so that the
//! services can decide on the current state without races and nothing is half-applied.

pub mod aggregate;
pub mod embedded;
pub mod history;
pub mod postgres;

use crate::error::NgsiResult;
use crate::model::Entity;
use std::sync::Arc;

/// The tenant of requests without an `NGSILD-Tenant` header.
pub const DEFAULT_TENANT: &str = "";

/// What a modification decides to do with the entity it was shown.
#[derive(Debug)]
pub enum Write {
    /// Store this entity (create or replace).
    Put(Entity),
    /// Remove the entity.
    Delete,
    /// Change nothing.
    Keep,
}

/// The configured store.
pub enum Store {
    /// redb-backed store under the data directory.
    Embedded(embedded::EmbeddedStore),
    /// PostgreSQL + PostGIS.
    Postgres(postgres::PgStore),
}

impl Store {
    /// The entity with this id in this tenant.
    pub async fn get(&self, tenant: &str, id: &str) -> NgsiResult<Option<Arc<Entity>>> {
        match self {
            Store::Embedded(s) => Ok(s.get(tenant, id)),
            Store::Postgres(s) => s.get(tenant, id).await,
        }
    }

    /// Whether the tenant has ever been written to (the default tenant always exists).
    pub async fn tenant_exists(&self, tenant: &str) -> NgsiResult<bool> {
        match self {
            Store::Embedded(s) => Ok(tenant == DEFAULT_TENANT || s.tenant_exists(tenant)),
            Store::Postgres(s) => Ok(tenant == DEFAULT_TENANT || s.tenant_exists(tenant).await?),
        }
    }

    /// Atomically reads the entity, lets `decide` choose a write, and commits it durably, together
    /// with the history records of what changed (`history::changes`), before returning `decide`'s
    /// result.
    pub async fn modify<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<(Write, R)> + Send + 'static,
    {
        match self {
            Store::Embedded(s) => s.modify(tenant, id, decide).await,
            Store::Postgres(s) => s.modify(tenant, id, decide).await,
        }
    }

    /// A page of the entities matching `query` in id order, and how many matches were seen (all of
    /// them when `count`, else at least one past the page when there is a next page).
    pub async fn query(
        &self,
        tenant: &str,
        query: &crate::query::EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> NgsiResult<(Vec<Arc<Entity>>, usize)> {
        match self {
            Store::Embedded(s) => Ok(s.query(tenant, query, offset, limit, count)),
            Store::Postgres(s) => s.query(tenant, query, offset, limit, count).await,
        }
    }

    /// Whether the store can serve requests (for /ready).
    pub async fn ready(&self) -> bool {
        match self {
            Store::Embedded(_) => true,
            Store::Postgres(s) => s.ready().await,
        }
    }

    /// The temporal history of one entity that `query` selects, ordered by its time property.
    pub async fn history(
        &self,
        tenant: &str,
        id: &str,
        query: &history::HistoryQuery,
    ) -> NgsiResult<Vec<history::InstanceChange>> {
        match self {
            Store::Embedded(s) => s.history(tenant, id, query).await,
            Store::Postgres(s) => s.history(tenant, id, query).await,
        }
    }

    /// Like [`Store::modify`], with the history records chosen by `decide` instead of derived from
    /// the change (the temporal API records instances with their own times).
    pub async fn modify_recorded<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<(Write, Vec<history::InstanceChange>, R)>
            + Send
            + 'static,
    {
        match self {
            Store::Embedded(s) => s.modify_recorded(tenant, id, decide).await,
            Store::Postgres(s) => s.modify_recorded(tenant, id, decide).await,
        }
    }

    /// The history of several entities: for each of `ids`, in order, what `query` selects.
    pub async fn history_many(
        &self,
        tenant: &str,
        ids: &[String],
        query: &history::HistoryQuery,
    ) -> NgsiResult<Vec<(String, Vec<history::InstanceChange>)>> {
        match self {
            Store::Embedded(s) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.push((id.clone(), s.history(tenant, id, query).await?));
                }
                Ok(out)
            }
            Store::Postgres(s) => s.history_many(tenant, ids, query).await,
        }
    }

    /// Removes the history records of one entity that `removal` selects and adds `add`, atomically
    /// (temporal attribute and instance deletion and instance modification); returns how many
    /// records were removed.
    pub async fn edit_history(
        &self,
        tenant: &str,
        id: &str,
        removal: history::HistoryRemoval,
        add: Vec<history::InstanceChange>,
    ) -> NgsiResult<usize> {
        match self {
            Store::Embedded(s) => s.edit_history(tenant, id, removal, add).await,
            Store::Postgres(s) => s.edit_history(tenant, id, removal, add).await,
        }
    }

    /// Aggregates the history of each of `ids`, in order, where the data is: in SQL on
    /// PostgreSQL, in Rust on the embedded store.
    pub async fn aggregate(
        &self,
        tenant: &str,
        ids: &[String],
        query: &aggregate::AggregateQuery,
    ) -> NgsiResult<Vec<(String, Vec<aggregate::Bucket>)>> {
        match self {
            Store::Embedded(s) => s.aggregate(tenant, ids, query).await,
            Store::Postgres(s) => s.aggregate(tenant, ids, query).await,
        }
    }

    /// Every entity of a tenant, in id order (for discovery).
    pub async fn entities(&self, tenant: &str) -> NgsiResult<Vec<Arc<Entity>>> {
        match self {
            Store::Embedded(s) => Ok(s.entities(tenant)),
            Store::Postgres(s) => s.entities(tenant).await,
        }
    }
}
