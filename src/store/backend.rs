//! The interface every database behind the [`Store`](super::Store) implements: the embedded store
//! (`embedded`) and PostgreSQL (`postgres`). The store adds what both share on top of it
//! (combining concurrent writes and reads, the live view of what expired, typed results, the
//! audit of written ids), so that a backend only says how its database does each job.
//!
//! Every write goes through [`Backend::modify_many`]: the entities, their history records and
//! their change-feed entries commit in one transaction. Results of a step are `()` here; the
//! store keeps the caller's typed result beside the step (see `Store::modify_many`).

use super::aggregate::{AggregateQuery, Bucket};
use super::changes::ChangeFeed;
use super::coordination::Coordination;
use super::entity_maps::EntityMap;
use super::history::{HistoryQuery, InstanceChange};
use super::rollup::{Plan, RollupRow};
use super::{Announce, Collection, IdPage, Step};
use crate::error::NgsiResult;
use crate::model::Entity;
use crate::query::EntityQuery;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

/// The entities with something expired, by tenant (see [`Backend::due`]).
pub type Due = Vec<(String, Vec<String>)>;

/// The history records of several entities, by id (see [`Backend::history_many`]).
pub type Histories = Vec<(String, Vec<InstanceChange>)>;

/// The aggregated history of several entities, by id (see [`Backend::aggregate`]).
pub type Aggregates = Vec<(String, Vec<Bucket>)>;

/// The roll-up rows of several entities, by id (see [`Backend::rollups`]).
pub type Rollups = Vec<(String, Vec<RollupRow>)>;

/// How a backend wants concurrent work combined (see `store::combine`).
#[derive(Debug, Clone, Copy)]
pub struct Lanes {
    /// Combined writes that may run at once (each one transaction).
    pub writes: usize,
    /// Whether reads by id are combined into one statement ([`Backend::get_many`]); when not,
    /// each read is a [`Backend::get`] of its own.
    pub combine_reads: bool,
}

/// A database behind the store. Entities are returned as stored, expired parts included: the
/// store applies the live view (`model::expiry::live`) where a backend does not.
pub trait Backend: Send + Sync + Any {
    /// How concurrent work is combined for this database.
    fn lanes(&self) -> Lanes;

    /// The entity with this id, as stored.
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<Option<Arc<Entity>>>>;

    /// The entities with these ids that exist, as stored, by id (the combined reads).
    fn get_many<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, NgsiResult<HashMap<String, Arc<Entity>>>>;

    /// Whether the tenant has ever been written to (the default tenant is the store's concern).
    fn tenant_exists<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, NgsiResult<bool>>;

    /// Runs the steps in order ([`super::run_steps`]) and commits their writes, history records
    /// and, when `announce` says so, change-feed entries in one durable transaction; each step's
    /// outcome in order, or the store's failure (nothing committed).
    fn modify_many<'a>(
        &'a self,
        tenant: &'a str,
        steps: Vec<Step<()>>,
        announce: Announce,
    ) -> BoxFuture<'a, NgsiResult<Vec<NgsiResult<()>>>>;

    /// A page of the entities matching `query` in id order and how many matches were seen (see
    /// `Store::query`). Expired entities and parts are not served.
    fn query<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> BoxFuture<'a, NgsiResult<(Vec<Arc<Entity>>, usize)>>;

    /// A chunk of the ids of the entities matching `query`, after `after` in id order.
    fn matching_ids<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a EntityQuery,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, NgsiResult<IdPage>>;

    /// Every entity of a tenant, as stored, in id order.
    fn entities<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, NgsiResult<Vec<Arc<Entity>>>>;

    /// The tenants and ids of at most `limit` entities with something expired at `now`.
    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, NgsiResult<Due>>;

    /// The history records of one entity that `query` selects, ordered by its time property.
    fn history<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, NgsiResult<Vec<InstanceChange>>>;

    /// The history of several entities, in order; one [`Backend::history`] each unless the
    /// database reads them together.
    fn history_many<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [String],
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, NgsiResult<Histories>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push((id.clone(), self.history(tenant, id, query).await?));
            }
            Ok(out)
        })
    }

    /// Aggregates the history of each of `ids`, in order, where the data is.
    fn aggregate<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [String],
        query: &'a AggregateQuery,
    ) -> BoxFuture<'a, NgsiResult<Aggregates>>;

    /// The roll-up rows of each of `ids`, in order, of the plan's grain and bounds, for the
    /// attributes `attrs` (all when empty); see [`super::rollup`].
    fn rollups<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [String],
        attrs: &'a [String],
        plan: &'a Plan,
    ) -> BoxFuture<'a, NgsiResult<Rollups>>;

    /// The feed of committed entity changes.
    fn feed(&self) -> &ChangeFeed;

    /// How instances sharing this database share the subscriptions.
    fn coordination(&self) -> &dyn Coordination;

    /// Stores a record; with `create`, only when the id is new (false otherwise).
    fn put_record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
        record: &'a Value,
        create: bool,
    ) -> BoxFuture<'a, NgsiResult<bool>>;

    /// Replaces one top-level member of each of several records, `(tenant, id, value)`, leaving
    /// the rest of each as stored and skipping records that are gone; one write for them all.
    fn save_record_members(
        &self,
        collection: Collection,
        member: &'static str,
        values: Vec<(String, String, Value)>,
    ) -> BoxFuture<'_, NgsiResult<()>>;

    /// Removes a record; false when there was none.
    fn delete_record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<bool>>;

    /// One record of a collection.
    fn record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<Option<Value>>>;

    /// Every record of a collection, as (tenant, record), in tenant and id order.
    fn records(&self, collection: Collection) -> BoxFuture<'_, NgsiResult<Vec<(String, Value)>>>;

    /// Stores a new entity map.
    fn create_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        map: &'a EntityMap,
    ) -> BoxFuture<'a, NgsiResult<()>>;

    /// The entity map with this id, unless it has expired at `now` (then it is removed).
    fn entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<Option<EntityMap>>>;

    /// Sets the expiry of an entity map that has not expired at `now`; false when there is none.
    fn set_entity_map_expiry<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<bool>>;

    /// Removes an entity map; false when there was none that had not expired at `now`.
    fn delete_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<bool>>;

    /// Removes these entity ids from an entity map, keeping the order of the rest.
    fn prune_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        gone: Vec<String>,
    ) -> BoxFuture<'a, NgsiResult<()>>;

    /// Removes every entity map of every tenant that has expired at `now`; returns how many.
    fn sweep_entity_maps(&self, now: DateTime<Utc>) -> BoxFuture<'_, NgsiResult<usize>>;

    /// Whether the database can serve requests (for /ready).
    fn ready(&self) -> BoxFuture<'_, bool>;

    /// The connection pool's state, where there is one (for /metrics).
    fn pool_status(&self) -> Option<deadpool_postgres::Status> {
        None
    }

    /// The PostgreSQL connection pool, where there is one (for the audit table).
    fn postgres_pool(&self) -> Option<deadpool_postgres::Pool> {
        None
    }

    /// The entities of each tenant, for /metrics: at once, never waiting on a scan (the
    /// embedded store counts its memory; PostgreSQL serves its last count, made in the
    /// background). None when there is no count yet.
    fn entity_counts(&self) -> Option<Vec<(String, usize)>> {
        None
    }

    /// The backend as its own type, for benchmarks and differential tests that compare it with
    /// its raw database.
    fn as_any(&self) -> &dyn Any;
}
