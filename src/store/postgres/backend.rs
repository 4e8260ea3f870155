//! PostgreSQL as a [`Backend`], and as the [`Coordination`] of the instances that share it (one
//! listening connection per instance, advisory locks for subscription ownership: `listen`).

use super::PgStore;
use crate::error::NgsiResult;
use crate::model::Entity;
use crate::query::EntityQuery;
use crate::store::aggregate::AggregateQuery;
use crate::store::backend::{Aggregates, Backend, Due, Histories, Lanes, Rollups};
use crate::store::changes::ChangeFeed;
use crate::store::coordination::{Coordination, Event, Key, Position};
use crate::store::entity_maps::EntityMap;
use crate::store::history::{HistoryQuery, InstanceChange};
use crate::store::rollup::Plan;
use crate::store::{Announce, Collection, IdPage, Step};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// Concurrent combined writes (each one transaction on its own connection).
const WRITE_LANES: usize = 4;

impl Backend for PgStore {
    fn lanes(&self) -> Lanes {
        Lanes {
            writes: WRITE_LANES,
            combine_reads: true,
        }
    }

    fn get<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<Option<Arc<Entity>>>> {
        Box::pin(async move {
            let mut found = PgStore::get_many(self, tenant, &[id]).await?;
            Ok(found.remove(id))
        })
    }

    fn get_many<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, NgsiResult<HashMap<String, Arc<Entity>>>> {
        Box::pin(PgStore::get_many(self, tenant, ids))
    }

    fn tenant_exists<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(PgStore::tenant_exists(self, tenant))
    }

    fn modify_many<'a>(
        &'a self,
        tenant: &'a str,
        steps: Vec<Step<()>>,
        announce: Announce,
    ) -> BoxFuture<'a, NgsiResult<Vec<NgsiResult<()>>>> {
        Box::pin(PgStore::modify_many(self, tenant, steps, announce))
    }

    fn query<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> BoxFuture<'a, NgsiResult<(Vec<Arc<Entity>>, usize)>> {
        Box::pin(PgStore::query(self, tenant, query, offset, limit, count))
    }

    fn matching_ids<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a EntityQuery,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, NgsiResult<IdPage>> {
        Box::pin(PgStore::matching_ids(self, tenant, query, after, limit))
    }

    fn entities<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, NgsiResult<Vec<Arc<Entity>>>> {
        Box::pin(PgStore::entities(self, tenant))
    }

    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, NgsiResult<Due>> {
        Box::pin(PgStore::due(self, None, now, limit))
    }

    fn history<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, NgsiResult<Vec<InstanceChange>>> {
        Box::pin(PgStore::history(self, tenant, id, query))
    }

    fn history_many<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [String],
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, NgsiResult<Histories>> {
        Box::pin(PgStore::history_many(self, tenant, ids, query))
    }

    fn aggregate<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [String],
        query: &'a AggregateQuery,
    ) -> BoxFuture<'a, NgsiResult<Aggregates>> {
        Box::pin(PgStore::aggregate(self, tenant, ids, query))
    }

    fn rollups<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [String],
        attrs: &'a [String],
        plan: &'a Plan,
    ) -> BoxFuture<'a, NgsiResult<Rollups>> {
        Box::pin(PgStore::rollups(self, tenant, ids, attrs, plan))
    }

    fn feed(&self) -> &ChangeFeed {
        PgStore::feed(self)
    }

    fn coordination(&self) -> &dyn Coordination {
        self
    }

    fn put_record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
        record: &'a Value,
        create: bool,
    ) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(PgStore::put_record(
            self, collection, tenant, id, record, create,
        ))
    }

    fn save_record_members(
        &self,
        collection: Collection,
        member: &'static str,
        values: Vec<(String, String, Value)>,
    ) -> BoxFuture<'_, NgsiResult<()>> {
        Box::pin(PgStore::save_record_members(
            self, collection, member, values,
        ))
    }

    fn delete_record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(PgStore::delete_record(self, collection, tenant, id))
    }

    fn record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<Option<Value>>> {
        Box::pin(PgStore::record(self, collection, tenant, id))
    }

    fn records(&self, collection: Collection) -> BoxFuture<'_, NgsiResult<Vec<(String, Value)>>> {
        Box::pin(PgStore::records(self, collection))
    }

    fn create_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        map: &'a EntityMap,
    ) -> BoxFuture<'a, NgsiResult<()>> {
        Box::pin(PgStore::create_entity_map(self, tenant, map))
    }

    fn entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<Option<EntityMap>>> {
        Box::pin(PgStore::entity_map(self, tenant, id, now))
    }

    fn set_entity_map_expiry<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(PgStore::set_entity_map_expiry(
            self, tenant, id, expires_at, now,
        ))
    }

    fn delete_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(PgStore::delete_entity_map(self, tenant, id, now))
    }

    fn prune_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        gone: Vec<String>,
    ) -> BoxFuture<'a, NgsiResult<()>> {
        Box::pin(PgStore::prune_entity_map(self, tenant, id, gone))
    }

    fn sweep_entity_maps(&self, now: DateTime<Utc>) -> BoxFuture<'_, NgsiResult<usize>> {
        Box::pin(PgStore::sweep_entity_maps(self, now))
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(PgStore::ready(self))
    }

    fn pool_status(&self) -> Option<deadpool_postgres::Status> {
        Some(self.pool.status())
    }

    fn postgres_pool(&self) -> Option<deadpool_postgres::Pool> {
        Some(self.pool.clone())
    }

    fn entity_counts(&self) -> Option<Vec<(String, usize)>> {
        // Before the schema is there, a count could only fail (and log so at every period).
        self.migrated
            .load(std::sync::atomic::Ordering::Acquire)
            .then(|| self.entity_counts.get(&self.pool))
            .flatten()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Coordination for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn listen(&self, events: UnboundedSender<Event>) {
        PgStore::listen(self, events)
    }

    fn claim_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(PgStore::claim_now(self))
    }

    fn save(&self, marks: Vec<(Key, Arc<Position>)>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.save_marks(marks))
    }

    fn release(&self, marks: Vec<(Key, Arc<Position>)>) {
        self.release_marks(marks)
    }
}
