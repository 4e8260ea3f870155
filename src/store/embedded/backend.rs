//! The embedded store as a [`Backend`]: its entities and index are in memory, so reads answer at
//! once; writes, history and records are redb transactions on a blocking thread.

use super::EmbeddedStore;
use crate::error::NgsiResult;
use crate::model::Entity;
use crate::query::EntityQuery;
use crate::store::aggregate::AggregateQuery;
use crate::store::backend::{Aggregates, Backend, Due, Lanes, Rollups};
use crate::store::changes::ChangeFeed;
use crate::store::coordination::{Alone, Coordination};
use crate::store::entity_maps::EntityMap;
use crate::store::history::{HistoryQuery, InstanceChange};
use crate::store::rollup::Plan;
use crate::store::{Announce, Collection, IdPage, Step};
use chrono::{DateTime, Utc};
use futures_util::future::{ready, BoxFuture};
use serde_json::Value;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

impl Backend for EmbeddedStore {
    fn lanes(&self) -> Lanes {
        // One redb write transaction at a time anyway; reads are memory lookups.
        Lanes {
            writes: 1,
            combine_reads: false,
        }
    }

    fn get<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<Option<Arc<Entity>>>> {
        Box::pin(ready(Ok(EmbeddedStore::get(self, tenant, id))))
    }

    fn get_many<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, NgsiResult<HashMap<String, Arc<Entity>>>> {
        let found = ids
            .iter()
            .filter_map(|id| Some((id.to_string(), EmbeddedStore::get(self, tenant, id)?)))
            .collect();
        Box::pin(ready(Ok(found)))
    }

    fn tenant_exists<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(ready(Ok(EmbeddedStore::tenant_exists(self, tenant))))
    }

    fn modify_many<'a>(
        &'a self,
        tenant: &'a str,
        steps: Vec<Step<()>>,
        announce: Announce,
    ) -> BoxFuture<'a, NgsiResult<Vec<NgsiResult<()>>>> {
        Box::pin(EmbeddedStore::modify_many(self, tenant, steps, announce))
    }

    fn query<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> BoxFuture<'a, NgsiResult<(Vec<Arc<Entity>>, usize)>> {
        let page = EmbeddedStore::query(self, tenant, query, offset, limit, count);
        Box::pin(ready(Ok(page)))
    }

    fn matching_ids<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a EntityQuery,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, NgsiResult<IdPage>> {
        let page = EmbeddedStore::matching_ids(self, tenant, query, after, limit);
        Box::pin(ready(Ok(page)))
    }

    fn entities<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, NgsiResult<Vec<Arc<Entity>>>> {
        Box::pin(ready(Ok(EmbeddedStore::entities(self, tenant))))
    }

    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, NgsiResult<Due>> {
        Box::pin(ready(Ok(EmbeddedStore::due(self, now, limit))))
    }

    fn history<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, NgsiResult<Vec<InstanceChange>>> {
        Box::pin(EmbeddedStore::history(self, tenant, id, query))
    }

    fn aggregate<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [String],
        query: &'a AggregateQuery,
    ) -> BoxFuture<'a, NgsiResult<Aggregates>> {
        Box::pin(EmbeddedStore::aggregate(self, tenant, ids, query))
    }

    fn rollups<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [String],
        attrs: &'a [String],
        plan: &'a Plan,
    ) -> BoxFuture<'a, NgsiResult<Rollups>> {
        Box::pin(EmbeddedStore::rollups(self, tenant, ids, attrs, plan))
    }

    fn feed(&self) -> &ChangeFeed {
        EmbeddedStore::feed(self)
    }

    fn coordination(&self) -> &dyn Coordination {
        &Alone
    }

    fn put_record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
        record: &'a Value,
        create: bool,
    ) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(EmbeddedStore::put_record(
            self, collection, tenant, id, record, create,
        ))
    }

    fn save_record_members(
        &self,
        collection: Collection,
        member: &'static str,
        values: Vec<(String, String, Value)>,
    ) -> BoxFuture<'_, NgsiResult<()>> {
        Box::pin(EmbeddedStore::save_record_members(
            self, collection, member, values,
        ))
    }

    fn delete_record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(EmbeddedStore::delete_record(self, collection, tenant, id))
    }

    fn record<'a>(
        &'a self,
        collection: Collection,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, NgsiResult<Option<Value>>> {
        Box::pin(EmbeddedStore::record(self, collection, tenant, id))
    }

    fn records(&self, collection: Collection) -> BoxFuture<'_, NgsiResult<Vec<(String, Value)>>> {
        Box::pin(EmbeddedStore::records(self, collection))
    }

    fn create_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        map: &'a EntityMap,
    ) -> BoxFuture<'a, NgsiResult<()>> {
        Box::pin(EmbeddedStore::create_entity_map(self, tenant, map))
    }

    fn entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<Option<EntityMap>>> {
        Box::pin(EmbeddedStore::entity_map(self, tenant, id, now))
    }

    fn set_entity_map_expiry<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(EmbeddedStore::set_entity_map_expiry(
            self, tenant, id, expires_at, now,
        ))
    }

    fn delete_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, NgsiResult<bool>> {
        Box::pin(EmbeddedStore::delete_entity_map(self, tenant, id, now))
    }

    fn prune_entity_map<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        gone: Vec<String>,
    ) -> BoxFuture<'a, NgsiResult<()>> {
        Box::pin(EmbeddedStore::prune_entity_map(self, tenant, id, gone))
    }

    fn sweep_entity_maps(&self, now: DateTime<Utc>) -> BoxFuture<'_, NgsiResult<usize>> {
        Box::pin(EmbeddedStore::sweep_entity_maps(self, now))
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(ready(true))
    }

    fn entity_counts(&self) -> Option<Vec<(String, usize)>> {
        Some(EmbeddedStore::entity_counts(self))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
