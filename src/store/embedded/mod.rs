//! The embedded store: redb on disk for durability (every write is committed and fsynced before it
//! is acknowledged), an in-memory index for reads. One writer at a time, as redb itself requires.

mod backend;
mod file;
mod index;
mod maps;
mod rollups;

use super::aggregate::{self, AggregateQuery, Bucket};
use super::changes::{Change, ChangeFeed};
use super::history::{HistoryQuery, InstanceChange, TimeProperty};
use super::{run_steps, undecodable, Collection, PlannedRemoval, Step};
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::model::Entity;
use crate::query::EntityQuery;
use chrono::DateTime;
use chrono::Utc;
use index::TenantIndex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");
const TENANTS: TableDefinition<&str, ()> = TableDefinition::new("tenants");
/// History records (JSON) keyed by tenant, entity id, attribute (empty for entity-level records;
/// each length-prefixed), modifiedAt (order-preserving microseconds) and instance id, so that one
/// attribute's records scan in time order.
const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");

type Tenants = HashMap<String, TenantIndex>;

/// Entities of every tenant, persisted in one redb file.
pub struct EmbeddedStore {
    file: Arc<file::StoreFile>,
    memory: Arc<RwLock<Tenants>>,
    writer: Arc<Mutex<()>>,
    feed: ChangeFeed,
}

fn key(tenant: &str, id: &str) -> String {
    format!("{tenant}\u{0}{id}")
}

fn push_part(key: &mut Vec<u8>, part: &str) {
    key.extend_from_slice(&(part.len() as u32).to_be_bytes());
    key.extend_from_slice(part.as_bytes());
}

/// The key prefix of an entity's history, or of one attribute's (`""`: entity-level records).
fn history_prefix(tenant: &str, id: &str, attr: Option<&str>) -> Vec<u8> {
    let mut key = Vec::new();
    push_part(&mut key, tenant);
    push_part(&mut key, id);
    if let Some(attr) = attr {
        push_part(&mut key, attr);
    }
    key
}

/// Microseconds with the sign bit flipped, big-endian: byte order is time order.
fn time_bytes(t: DateTime<Utc>) -> [u8; 8] {
    ((t.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

fn history_key(tenant: &str, id: &str, r: &InstanceChange) -> Vec<u8> {
    let mut key = history_prefix(tenant, id, Some(r.attr.as_deref().unwrap_or("")));
    key.extend_from_slice(&time_bytes(r.modified_at));
    key.extend_from_slice(r.instance_id.as_bytes());
    key
}

/// Removes the records a planned removal selects from the history table of a write transaction,
/// and adds them (with the entity id) to `removed`; returns how many.
fn remove_history(
    table: &mut redb::Table<&[u8], &[u8]>,
    tenant: &str,
    removal: &PlannedRemoval,
    removed: &mut Vec<(String, InstanceChange)>,
) -> NgsiResult<usize> {
    let prefix = history_prefix(tenant, &removal.id, removal.which.attr());
    let mut doomed = Vec::new();
    for row in table.range(prefix.as_slice()..).map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        let r: InstanceChange = serde_json::from_slice(v.value()).map_err(undecodable)?;
        if removal.which.matches(&r) {
            doomed.push((k.value().to_vec(), r));
        }
    }
    for (k, r) in doomed.iter() {
        table.remove(k.as_slice()).map_err(storage)?;
        removed.push((removal.id.clone(), r.clone()));
    }
    Ok(doomed.len())
}

fn storage(e: impl Into<redb::Error>) -> NgsiError {
    match e.into() {
        // A full disk (or quota, or file size limit): nothing was written; the client may retry
        // once space is freed. redb refuses every later write until the file is reopened, which
        // the store does by itself (see `file`).
        redb::Error::Io(e) => NgsiError::new(
            ErrorKind::ServiceUnavailable,
            format!(
                "the embedded store could not write its file ({e}); nothing of this request was \
                 written. Free space on the disk of the data directory: writes resume by themselves \
                 once the store can write its file again"
            ),
        ),
        redb::Error::PreviousIo => NgsiError::new(
            ErrorKind::ServiceUnavailable,
            "the embedded store stopped writing after an I/O error of its file (a full disk?); \
             reads go on and everything acknowledged is kept: free space on the disk of the data \
             directory; writes resume by themselves once the store can write its file again",
        ),
        e => NgsiError::internal(format!("the embedded store failed: {e}")),
    }
}

/// Creates the tables a store needs (and its roll-ups when it has none yet) and reads every
/// tenant and entity into memory: when the store opens, and again when it reopened its file after
/// an I/O error (memory then follows the file exactly, whatever the failed write left).
fn load(db: &Database) -> Result<Tenants, redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(ENTITIES)?;
    txn.open_table(TENANTS)?;
    txn.open_table(HISTORY)?;
    for collection in Collection::ALL {
        txn.open_table(table_of(collection))?;
    }
    txn.open_table(maps::ENTITY_MAPS)?;
    // A store written before roll-ups existed gets them built once.
    let had_rollups = txn
        .list_tables()?
        .any(|t| t.name() == rollups::ROLLUPS.name());
    if !had_rollups {
        let history = txn.open_table(HISTORY)?;
        rollups::build_all(&mut txn.open_table(rollups::ROLLUPS)?, &history)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    }
    txn.commit()?;
    let mut tenants: Tenants = HashMap::new();
    let read = db.begin_read()?;
    for row in read.open_table(TENANTS)?.iter()? {
        let (tenant, _) = row?;
        tenants.entry(tenant.value().to_string()).or_default();
    }
    for row in read.open_table(ENTITIES)?.iter()? {
        let (k, v) = row?;
        let (tenant, id) = k.value().split_once('\u{0}').unwrap_or(("", k.value()));
        let entity: Entity = serde_json::from_slice(v.value())
            .map_err(|e| redb::Error::Corrupted(format!("entity {id}: {e}")))?;
        tenants
            .entry(tenant.to_string())
            .or_default()
            .put(Arc::new(entity));
    }
    Ok(tenants)
}

impl EmbeddedStore {
    /// The entities of each tenant, counted in memory ("" is the default tenant).
    pub fn entity_counts(&self) -> Vec<(String, usize)> {
        let memory = self.memory.read().unwrap_or_else(|p| p.into_inner());
        memory
            .iter()
            .map(|(tenant, index)| (tenant.clone(), index.entity_count()))
            .collect()
    }

    /// Runs `work` on the store's file, off the async runtime's threads. A failure of the file
    /// (503, see [`storage`]) is noted, and the next use reopens the file and reloads memory
    /// from it, so that writes resume once space is back, without a restart.
    async fn on_file<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> NgsiResult<T> + Send + 'static,
    ) -> NgsiResult<T> {
        let (file, memory, writer) = (self.file.clone(), self.memory.clone(), self.writer.clone());
        tokio::task::spawn_blocking(move || {
            let (db, reopened) = file.get().map_err(|why| match why {
                file::Unavailable::NotYet => NgsiError::new(
                    ErrorKind::ServiceUnavailable,
                    "the embedded store is reopening its file after an I/O error (a full disk?); \
                     nothing of this request was written; retry in a second",
                ),
                file::Unavailable::Reopen(e) => NgsiError::new(
                    ErrorKind::ServiceUnavailable,
                    format!(
                        "the embedded store cannot reopen its file after an I/O error ({e}); \
                         nothing of this request was written. Free space on the disk of the data \
                         directory: writes resume by themselves once it can"
                    ),
                ),
            })?;
            if reopened {
                let _guard = writer.lock().unwrap_or_else(|p| p.into_inner());
                match load(&db) {
                    Ok(tenants) => *memory.write().unwrap_or_else(|p| p.into_inner()) = tenants,
                    Err(e) => {
                        file.failed();
                        return Err(storage(e));
                    }
                }
            }
            let result = work(&db);
            if matches!(&result, Err(e) if e.kind == ErrorKind::ServiceUnavailable) {
                file.failed();
            }
            result
        })
        .await
        .map_err(|e| NgsiError::internal(format!("a store task failed: {e}")))?
    }

    /// Opens (or creates) the store in `dir` and loads it into memory.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        let path = dir.join("twinlink.redb");
        let db =
            Database::create(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let tenants = load(&db).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        Ok(EmbeddedStore {
            file: Arc::new(file::StoreFile::new(path, db)),
            memory: Arc::new(RwLock::new(tenants)),
            writer: Arc::new(Mutex::new(())),
            feed: ChangeFeed::default(),
        })
    }

    /// The entity, from memory.
    pub fn get(&self, tenant: &str, id: &str) -> Option<Arc<Entity>> {
        self.memory
            .read()
            .expect("store lock")
            .get(tenant)?
            .get(id)
            .cloned()
    }

    /// The tenants and ids of at most `limit` entities with something expired at `now` (see
    /// [`super::Store::reap`]).
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<(String, Vec<String>)> {
        let memory = self.memory.read().expect("store lock");
        let mut out = Vec::new();
        let mut left = limit;
        for (tenant, index) in memory.iter() {
            let ids = index.due(now, left);
            left -= ids.len();
            if !ids.is_empty() {
                out.push((tenant.clone(), ids));
            }
            if left == 0 {
                break;
            }
        }
        out
    }

    /// Whether the tenant exists.
    pub fn tenant_exists(&self, tenant: &str) -> bool {
        self.memory.read().expect("store lock").contains_key(tenant)
    }

    /// Every entity of the tenant in id order.
    pub fn entities(&self, tenant: &str) -> Vec<Arc<Entity>> {
        self.memory
            .read()
            .expect("store lock")
            .get(tenant)
            .map(|m| m.all().cloned().collect())
            .unwrap_or_default()
    }

    /// A page of query results and the number of matches seen (see `TenantIndex::query`).
    pub fn query(
        &self,
        tenant: &str,
        query: &EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> (Vec<Arc<Entity>>, usize) {
        self.memory
            .read()
            .expect("store lock")
            .get(tenant)
            .map(|m| m.query(query, offset, limit, count))
            .unwrap_or_default()
    }

    /// The ids of at most `limit` matches past the id `after` (see [`super::IdPage`]).
    pub fn matching_ids(
        &self,
        tenant: &str,
        query: &EntityQuery,
        after: Option<&str>,
        limit: usize,
    ) -> super::IdPage {
        self.memory
            .read()
            .expect("store lock")
            .get(tenant)
            .map(|m| m.matching_ids(query, after, limit))
            .unwrap_or_default()
    }

    /// The history records of one entity that `query` selects (see [`HistoryQuery::select`]). With
    /// one attribute and modifiedAt as time property, only the bounded key range is read.
    pub async fn history(
        &self,
        tenant: &str,
        id: &str,
        query: &HistoryQuery,
    ) -> NgsiResult<Vec<InstanceChange>> {
        let prefix = history_prefix(tenant, id, query.attr.as_deref());
        let query = query.clone();
        self.on_file(move |db| {
            let ranged = query.attr.is_some() && query.time_property == TimeProperty::ModifiedAt;
            let mut start = prefix.clone();
            if let (true, Bound::Included(t) | Bound::Excluded(t)) = (ranged, query.from) {
                start.extend_from_slice(&time_bytes(t));
            }
            let table = db
                .begin_read()
                .map_err(storage)?
                .open_table(HISTORY)
                .map_err(storage)?;
            let mut records = Vec::new();
            for row in table.range(start.as_slice()..).map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let k = k.value();
                if !k.starts_with(&prefix) {
                    break;
                }
                // Past the upper bound (exactness is left to `select`).
                if let (true, Bound::Included(to) | Bound::Excluded(to)) = (ranged, query.to) {
                    if k[prefix.len()..prefix.len() + 8] > time_bytes(to)[..] {
                        break;
                    }
                }
                records.push(serde_json::from_slice(v.value()).map_err(undecodable)?);
            }
            Ok(query.select(records))
        })
        .await
    }

    /// Aggregates the history of each of `ids` (see [`aggregate::aggregate`]), in Rust over the
    /// records of the time range.
    pub async fn aggregate(
        &self,
        tenant: &str,
        ids: &[String],
        query: &AggregateQuery,
    ) -> NgsiResult<Vec<(String, Vec<Bucket>)>> {
        let mut out = Vec::with_capacity(ids.len());
        let attrs: Vec<Option<String>> = match query.attrs.as_slice() {
            [] => vec![None],
            some => some.iter().cloned().map(Some).collect(),
        };
        for id in ids {
            let mut records = Vec::new();
            for attr in &attrs {
                let h = HistoryQuery {
                    attr: attr.clone(),
                    last_n: None,
                    ..query.history.clone()
                };
                records.extend(self.history(tenant, id, &h).await?);
            }
            out.push((id.clone(), aggregate::aggregate(query, &records)));
        }
        Ok(out)
    }

    /// Runs the steps of a batch (see [`super::run_steps`]) and commits what they decided, with
    /// their history, in one redb transaction that is durable before this returns.
    pub async fn modify_many<R: Send + 'static>(
        &self,
        tenant: &str,
        steps: Vec<Step<R>>,
        announce: super::Announce,
    ) -> NgsiResult<Vec<NgsiResult<R>>> {
        let (memory, writer) = (self.memory.clone(), self.writer.clone());
        let feed = self.feed.clone();
        let tenant = tenant.to_string();
        self.on_file(move |db| {
            let _guard = writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let deleted_at = Utc::now();
            let mut planned = {
                let memory = memory.read().map_err(storage)?;
                let stored = memory.get(&tenant);
                run_steps(steps, |id| stored.and_then(|m| m.get(id)).cloned())
            };
            if planned.is_empty() {
                return Ok(planned.results);
            }
            let txn = db.begin_write().map_err(storage)?;
            let mut removed = Vec::with_capacity(planned.removals.len());
            {
                let mut entities = txn.open_table(ENTITIES).map_err(storage)?;
                for (id, state) in &planned.writes {
                    let k = key(&tenant, id);
                    match state {
                        Some(entity) => {
                            let bytes = serde_json::to_vec(entity.as_ref()).map_err(undecodable)?;
                            entities
                                .insert(k.as_str(), bytes.as_slice())
                                .map_err(storage)?;
                        }
                        None => {
                            entities.remove(k.as_str()).map_err(storage)?;
                        }
                    }
                }
                if planned.writes.values().any(Option::is_some) {
                    txn.open_table(TENANTS)
                        .map_err(storage)?
                        .insert(tenant.as_str(), ())
                        .map_err(storage)?;
                }
                let mut table = txn.open_table(HISTORY).map_err(storage)?;
                let mut summaries = txn.open_table(rollups::ROLLUPS).map_err(storage)?;
                let mut gone = Vec::new();
                for removal in &planned.removals {
                    removed.push(remove_history(&mut table, &tenant, removal, &mut gone)?);
                }
                // The roll-ups follow the history in the same transaction: the periods that lost
                // records are computed again before the new records are merged in.
                rollups::recompute(&mut summaries, &table, &tenant, &gone)?;
                for (id, r) in &planned.history {
                    let bytes = serde_json::to_vec(r).map_err(undecodable)?;
                    table
                        .insert(history_key(&tenant, id, r).as_slice(), bytes.as_slice())
                        .map_err(storage)?;
                }
                rollups::add(&mut summaries, &tenant, &planned.history)?;
            }
            txn.commit().map_err(storage)?;
            crate::telemetry::metrics::history_rows(planned.history.len());
            let mut memory = memory.write().map_err(storage)?;
            for (id, state) in &planned.writes {
                match state {
                    Some(entity) => memory
                        .entry(tenant.clone())
                        .or_default()
                        .put(entity.clone()),
                    None => {
                        if let Some(m) = memory.get_mut(&tenant) {
                            m.remove(id);
                        }
                    }
                }
            }
            drop(memory);
            if announce == super::Announce::Nothing {
                return Ok(planned.results);
            }
            // Still under the writer lock: the feed sees each entity's writes in commit order.
            for change in std::mem::take(&mut planned.changes) {
                let at = change.after.as_ref().map_or(deleted_at, |e| e.modified_at);
                feed.publish(Change {
                    tenant: tenant.clone(),
                    id: change.id,
                    before: change.before,
                    after: change.after,
                    at,
                    xid: None,
                });
            }
            Ok(planned.settle(&removed))
        })
        .await
    }

    /// The feed of committed changes of this store.
    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// Stores a record of a collection (JSON); with `create`, false (and nothing written) when one
    /// with this id exists already.
    pub async fn put_record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
        record: &serde_json::Value,
        create: bool,
    ) -> NgsiResult<bool> {
        let record = serde_json::to_vec(record).map_err(undecodable)?;
        let k = key(tenant, id);
        self.on_file(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(table_of(collection)).map_err(storage)?;
                if create && table.get(k.as_str()).map_err(storage)?.is_some() {
                    return Ok(false);
                }
                table
                    .insert(k.as_str(), record.as_slice())
                    .map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            Ok(true)
        })
        .await
    }

    /// Removes a record of a collection; false when there was none.
    pub async fn delete_record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<bool> {
        let k = key(tenant, id);
        self.on_file(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let removed = txn
                .open_table(table_of(collection))
                .map_err(storage)?
                .remove(k.as_str())
                .map_err(storage)?
                .is_some();
            txn.commit().map_err(storage)?;
            Ok(removed)
        })
        .await
    }

    /// Every record of a collection, of every tenant, as (tenant, record), in tenant and id order.
    pub async fn records(
        &self,
        collection: Collection,
    ) -> NgsiResult<Vec<(String, serde_json::Value)>> {
        self.on_file(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(table_of(collection)).map_err(storage)?;
            let mut all = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let tenant = k.value().split_once('\u{0}').map_or("", |(t, _)| t);
                let record = serde_json::from_slice(v.value()).map_err(undecodable)?;
                all.push((tenant.to_string(), record));
            }
            Ok(all)
        })
        .await
    }

    /// One record of a collection.
    pub async fn record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<Option<serde_json::Value>> {
        let k = key(tenant, id);
        self.on_file(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(table_of(collection)).map_err(storage)?;
            let row = table.get(k.as_str()).map_err(storage)?;
            row.map(|v| serde_json::from_slice(v.value()).map_err(undecodable))
                .transpose()
        })
        .await
    }

    /// Replaces one top-level member of each of several records, `(tenant, id, value)`, in one
    /// write transaction (a concurrent update of the rest of a record is never undone); records
    /// that are gone are skipped.
    pub async fn save_record_members(
        &self,
        collection: Collection,
        member: &'static str,
        values: Vec<(String, String, serde_json::Value)>,
    ) -> NgsiResult<()> {
        self.on_file(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(table_of(collection)).map_err(storage)?;
                for (tenant, id, value) in values {
                    let k = key(&tenant, &id);
                    let current = table
                        .get(k.as_str())
                        .map_err(storage)?
                        .map(|v| v.value().to_vec());
                    let Some(current) = current else {
                        continue;
                    };
                    let mut record: serde_json::Value =
                        serde_json::from_slice(&current).map_err(undecodable)?;
                    record[member] = value;
                    let bytes = serde_json::to_vec(&record).map_err(undecodable)?;
                    table
                        .insert(k.as_str(), bytes.as_slice())
                        .map_err(storage)?;
                }
            }
            txn.commit().map_err(storage)?;
            Ok(())
        })
        .await
    }
}

/// The redb table of a collection: records keyed by tenant and id, like entities.
fn table_of(collection: Collection) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(collection.table())
}
