//! Persistence behind one interface: the embedded store (default, zero setup) and, later, PostgreSQL.
//! Every write is a read-modify-write of one entity, done atomically inside the store, so that the
//! services can decide on the current state without races and nothing is half-applied.

pub mod changes;
pub mod embedded;
pub mod history;
pub mod postgres;

use crate::error::{NgsiError, NgsiResult};
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

    /// Every entity of a tenant, in id order (for discovery).
    pub async fn entities(&self, tenant: &str) -> NgsiResult<Vec<Arc<Entity>>> {
        match self {
            Store::Embedded(s) => Ok(s.entities(tenant)),
            Store::Postgres(s) => s.entities(tenant).await,
        }
    }

    /// The feed of committed entity changes (see [`changes`]).
    pub fn feed(&self) -> &changes::ChangeFeed {
        match self {
            Store::Embedded(s) => s.feed(),
            Store::Postgres(s) => s.feed(),
        }
    }

    /// Stores a subscription record (JSON); with `create`, only when the id is new (false
    /// otherwise).
    pub async fn put_subscription(
        &self,
        tenant: &str,
        id: &str,
        record: &serde_json::Value,
        create: bool,
    ) -> NgsiResult<bool> {
        match self {
            Store::Embedded(s) => {
                let bytes = serde_json::to_vec(record).map_err(undecodable)?;
                s.put_subscription(tenant, id, bytes, create).await
            }
            Store::Postgres(s) => s.put_subscription(tenant, id, record, create).await,
        }
    }

    /// Replaces the delivery statistics (`stats` member) of a subscription record.
    pub async fn save_subscription_stats(
        &self,
        tenant: &str,
        id: &str,
        stats: serde_json::Value,
    ) -> NgsiResult<()> {
        match self {
            Store::Embedded(s) => s.save_subscription_stats(tenant, id, stats).await,
            Store::Postgres(s) => s.save_subscription_stats(tenant, id, &stats).await,
        }
    }

    /// Removes a subscription record; false when there was none.
    pub async fn delete_subscription(&self, tenant: &str, id: &str) -> NgsiResult<bool> {
        match self {
            Store::Embedded(s) => s.delete_subscription(tenant, id).await,
            Store::Postgres(s) => s.delete_subscription(tenant, id).await,
        }
    }

    /// One subscription record.
    pub async fn subscription(
        &self,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<Option<serde_json::Value>> {
        match self {
            Store::Embedded(s) => s
                .subscription(tenant, id)
                .await?
                .map(|b| serde_json::from_slice(&b).map_err(undecodable))
                .transpose(),
            Store::Postgres(s) => s.subscription(tenant, id).await,
        }
    }

    /// Every subscription record of every tenant, as (tenant, record).
    pub async fn subscriptions(&self) -> NgsiResult<Vec<(String, serde_json::Value)>> {
        match self {
            Store::Embedded(s) => s
                .subscriptions()
                .await?
                .into_iter()
                .map(|(t, b)| Ok((t, serde_json::from_slice(&b).map_err(undecodable)?)))
                .collect(),
            Store::Postgres(s) => s.subscriptions().await,
        }
    }
}

fn undecodable(e: serde_json::Error) -> NgsiError {
    NgsiError::internal(format!("a subscription record does not (de)serialize: {e}"))
}
