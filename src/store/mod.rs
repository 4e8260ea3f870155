//! Persistence behind one interface: the embedded store (default, zero setup) and, later, PostgreSQL.
//! Every write is a read-modify-write of one entity, done atomically inside the store, so that the
//! services can decide on the current state without races and nothing is half-applied.

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

/// One entity's read-modify-write decision: shown the entity (or `None`), it chooses a write and
/// a result, or fails and changes nothing.
pub type Decide<R> = Box<dyn FnOnce(Option<&Entity>) -> NgsiResult<(Write, R)> + Send>;

/// The id of an entity and the decision to run on it, one element of [`Store::modify_many`].
pub type Step<R> = (String, Decide<R>);

/// Runs the steps of a batch in order against a working copy of the entities they address
/// (`load` gives the stored state of an id), and returns each step's result, the final state of
/// every id that a step wrote (`None`: deleted) and the history records of every step. Both
/// stores commit what this returns in one transaction.
pub fn run_steps<R>(
    steps: Vec<Step<R>>,
    mut load: impl FnMut(&str) -> Option<Arc<Entity>>,
) -> Planned<R> {
    let mut working: indexmap::IndexMap<String, Option<Arc<Entity>>> = indexmap::IndexMap::new();
    let mut planned = Planned {
        results: Vec::with_capacity(steps.len()),
        writes: indexmap::IndexMap::new(),
        history: Vec::new(),
    };
    for (id, decide) in steps {
        let current = working.entry(id.clone()).or_insert_with(|| load(&id));
        match decide(current.as_deref()) {
            Err(e) => planned.results.push(Err(e)),
            Ok((Write::Keep, r)) => planned.results.push(Ok(r)),
            Ok((write, r)) => {
                let after = match write {
                    Write::Put(e) => Some(Arc::new(e)),
                    _ => None,
                };
                let at = after
                    .as_ref()
                    .map_or_else(chrono::Utc::now, |e| e.modified_at);
                for record in history::changes(current.as_deref(), after.as_deref(), at) {
                    planned.history.push((id.clone(), record));
                }
                *current = after.clone();
                planned.writes.insert(id, after);
                planned.results.push(Ok(r));
            }
        }
    }
    planned
}

/// What a batch of steps decided (see [`run_steps`]).
pub struct Planned<R> {
    /// Each step's result, in step order.
    pub results: Vec<NgsiResult<R>>,
    /// The final state of every written id, in first-write order (`None`: deleted).
    pub writes: indexmap::IndexMap<String, Option<Arc<Entity>>>,
    /// The history records of every step, with the entity id they belong to.
    pub history: Vec<(String, history::InstanceChange)>,
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
    /// result. A batch of one (see [`Store::modify_many`]).
    pub async fn modify<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<(Write, R)> + Send + 'static,
    {
        let step: Step<R> = (id.to_string(), Box::new(decide));
        let mut results = self.modify_many(tenant, vec![step]).await?;
        results.pop().unwrap_or_else(|| {
            Err(crate::error::NgsiError::internal(
                "the store answered a write without a result",
            ))
        })
    }

    /// Read-modify-writes of several entities in one atomic, durable commit (a batch). The steps
    /// run in order, each shown the entity as the steps before it left it; a step that fails
    /// changes nothing and yields its error, the others are written. The outer error means nothing
    /// was committed (the store failed).
    pub async fn modify_many<R: Send + 'static>(
        &self,
        tenant: &str,
        steps: Vec<Step<R>>,
    ) -> NgsiResult<Vec<NgsiResult<R>>> {
        match self {
            Store::Embedded(s) => s.modify_many(tenant, steps).await,
            Store::Postgres(s) => s.modify_many(tenant, steps).await,
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
}
