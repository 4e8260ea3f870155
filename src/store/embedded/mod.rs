//! The embedded store: redb on disk for durability (every write is committed and fsynced before it
//! is acknowledged), an in-memory index for reads. One writer at a time, as redb itself requires.

mod index;

use super::Write;
use crate::error::{NgsiError, NgsiResult};
use crate::model::Entity;
use crate::query::EntityQuery;
use index::TenantIndex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");
const TENANTS: TableDefinition<&str, ()> = TableDefinition::new("tenants");

type Tenants = HashMap<String, TenantIndex>;

/// Entities of every tenant, persisted in one redb file.
pub struct EmbeddedStore {
    db: Arc<Database>,
    memory: Arc<RwLock<Tenants>>,
    writer: Arc<Mutex<()>>,
}

fn key(tenant: &str, id: &str) -> String {
    format!("{tenant}\u{0}{id}")
}

fn storage(e: impl std::fmt::Display) -> NgsiError {
    NgsiError::internal(format!("the embedded store failed: {e}"))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` and loads it into memory.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        let path = dir.join("twinlink.redb");
        let db =
            Database::create(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let init = || -> Result<Tenants, redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(ENTITIES)?;
            txn.open_table(TENANTS)?;
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
        };
        let tenants = init().map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            memory: Arc::new(RwLock::new(tenants)),
            writer: Arc::new(Mutex::new(())),
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

    /// Read-modify-write of one entity; the commit is durable before this returns.
    pub async fn modify<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<(Write, R)> + Send + 'static,
    {
        let (db, memory, writer) = (self.db.clone(), self.memory.clone(), self.writer.clone());
        let (tenant, id) = (tenant.to_string(), id.to_string());
        tokio::task::spawn_blocking(move || {
            let _guard = writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let current = memory
                .read()
                .map_err(storage)?
                .get(&tenant)
                .and_then(|m| m.get(&id))
                .cloned();
            let (write, result) = decide(current.as_deref())?;
            let k = key(&tenant, &id);
            match write {
                Write::Keep => return Ok(result),
                Write::Put(entity) => {
                    let bytes = serde_json::to_vec(&entity).map_err(storage)?;
                    let txn = db.begin_write().map_err(storage)?;
                    {
                        txn.open_table(ENTITIES)
                            .map_err(storage)?
                            .insert(k.as_str(), bytes.as_slice())
                            .map_err(storage)?;
                        txn.open_table(TENANTS)
                            .map_err(storage)?
                            .insert(tenant.as_str(), ())
                            .map_err(storage)?;
                    }
                    txn.commit().map_err(storage)?;
                    memory
                        .write()
                        .map_err(storage)?
                        .entry(tenant)
                        .or_default()
                        .put(Arc::new(entity));
                }
                Write::Delete => {
                    let txn = db.begin_write().map_err(storage)?;
                    txn.open_table(ENTITIES)
                        .map_err(storage)?
                        .remove(k.as_str())
                        .map_err(storage)?;
                    txn.commit().map_err(storage)?;
                    if let Some(m) = memory.write().map_err(storage)?.get_mut(&tenant) {
                        m.remove(&id);
                    }
                }
            }
            Ok(result)
        })
        .await
        .map_err(|e| NgsiError::internal(format!("a store task failed: {e}")))?
    }
}
