//! Entity maps in the embedded store: one redb table keyed like entities (tenant, id), each value
//! the map's expiry and entries as JSON. Every change is one write transaction, so that a read,
//! an expiry update and a removal of entries never undo each other.

use super::{key, storage, EmbeddedStore};
use crate::error::NgsiResult;
use crate::store::entity_maps::{EntityMap, MapEntry};
use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// The table of entity maps.
pub(super) const ENTITY_MAPS: TableDefinition<&str, &[u8]> = TableDefinition::new("entity_maps");

/// A map's value in the table (its id is the key).
#[derive(Serialize, Deserialize)]
struct Stored {
    expires_at: DateTime<Utc>,
    entries: Vec<MapEntry>,
}

fn decode(bytes: &[u8]) -> NgsiResult<Stored> {
    serde_json::from_slice(bytes).map_err(crate::store::undecodable)
}

fn encode(stored: &Stored) -> NgsiResult<Vec<u8>> {
    serde_json::to_vec(stored).map_err(crate::store::undecodable)
}

/// What a change does to the stored map it is shown (None: there is none): the new value to
/// store (None: remove the map) and the change's result.
type Change<R> = Box<dyn FnOnce(Option<Stored>) -> NgsiResult<(Option<Stored>, R)> + Send>;

impl EmbeddedStore {
    /// Runs `change` on one map in a write transaction.
    async fn change_map<R: Send + 'static>(
        &self,
        tenant: &str,
        id: &str,
        change: Change<R>,
    ) -> NgsiResult<R> {
        let k = key(tenant, id);
        self.on_file(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let result = {
                let mut table = txn.open_table(ENTITY_MAPS).map_err(storage)?;
                let current = table
                    .get(k.as_str())
                    .map_err(storage)?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                let existed = current.is_some();
                let (next, result) = change(current)?;
                match next {
                    Some(stored) => {
                        table
                            .insert(k.as_str(), encode(&stored)?.as_slice())
                            .map_err(storage)?;
                    }
                    None if existed => {
                        table.remove(k.as_str()).map_err(storage)?;
                    }
                    None => {}
                }
                result
            };
            txn.commit().map_err(storage)?;
            Ok(result)
        })
        .await
    }

    /// Stores a new entity map.
    pub async fn create_entity_map(&self, tenant: &str, map: &EntityMap) -> NgsiResult<()> {
        let stored = Stored {
            expires_at: map.expires_at,
            entries: map.entries.clone(),
        };
        self.change_map(tenant, &map.id, Box::new(|_| Ok((Some(stored), ()))))
            .await
    }

    /// The map with this id, unless it has expired at `now` (an expired map is removed). Read in
    /// a read transaction: pages of a query read their map, and only an expired one is written.
    pub async fn entity_map(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> NgsiResult<Option<EntityMap>> {
        let k = key(tenant, id);
        let found = self
            .on_file(move |db| {
                let txn = db.begin_read().map_err(storage)?;
                let table = txn.open_table(ENTITY_MAPS).map_err(storage)?;
                let row = table.get(k.as_str()).map_err(storage)?;
                row.map(|v| decode(v.value())).transpose()
            })
            .await?;
        match found {
            Some(s) if s.expires_at > now => Ok(Some(EntityMap {
                id: id.to_string(),
                expires_at: s.expires_at,
                entries: s.entries,
            })),
            Some(_) => {
                // Removed unless it was extended meanwhile.
                self.change_map(
                    tenant,
                    id,
                    Box::new(move |current| Ok((current.filter(|s| s.expires_at > now), ()))),
                )
                .await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Sets the expiry of a map that has not expired at `now`; false when there is none.
    pub async fn set_entity_map_expiry(
        &self,
        tenant: &str,
        id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> NgsiResult<bool> {
        self.change_map(
            tenant,
            id,
            Box::new(move |current| match current {
                Some(s) if s.expires_at > now => Ok((
                    Some(Stored {
                        expires_at,
                        entries: s.entries,
                    }),
                    true,
                )),
                _ => Ok((None, false)),
            }),
        )
        .await
    }

    /// Removes a map; false when there was none that had not expired at `now`.
    pub async fn delete_entity_map(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> NgsiResult<bool> {
        self.change_map(
            tenant,
            id,
            Box::new(move |current| Ok((None, current.is_some_and(|s| s.expires_at > now)))),
        )
        .await
    }

    /// Removes the entries of these entity ids from a map (nothing when the map is gone).
    pub async fn prune_entity_map(
        &self,
        tenant: &str,
        id: &str,
        gone: Vec<String>,
    ) -> NgsiResult<()> {
        self.change_map(
            tenant,
            id,
            Box::new(move |current| {
                Ok((
                    current.map(|mut s| {
                        s.entries.retain(|e| !gone.iter().any(|g| g == e.id()));
                        s
                    }),
                    (),
                ))
            }),
        )
        .await
    }

    /// Removes every map that has expired at `now`; returns how many.
    pub async fn sweep_entity_maps(&self, now: DateTime<Utc>) -> NgsiResult<usize> {
        self.on_file(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let removed = {
                let mut table = txn.open_table(ENTITY_MAPS).map_err(storage)?;
                let mut expired = Vec::new();
                for row in table.iter().map_err(storage)? {
                    let (k, v) = row.map_err(storage)?;
                    if decode(v.value())?.expires_at <= now {
                        expired.push(k.value().to_string());
                    }
                }
                for k in &expired {
                    table.remove(k.as_str()).map_err(storage)?;
                }
                expired.len()
            };
            txn.commit().map_err(storage)?;
            Ok(removed)
        })
        .await
    }
}
