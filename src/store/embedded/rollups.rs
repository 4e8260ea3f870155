//! The embedded store's roll-ups of history (see [`crate::store::rollup`]): a redb table written
//! in the transaction of the history it summarises, and read by aggregations.

use super::{history_prefix, push_part, storage, time_bytes, EmbeddedStore};
use crate::error::{NgsiError, NgsiResult};
use crate::store::backend::Rollups;
use crate::store::history::InstanceChange;
use crate::store::rollup::{self, Plan, Rollup, RollupKey, RollupRow};
use crate::store::undecodable;
use chrono::DateTime;
use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition};
use std::collections::{BTreeMap, BTreeSet};

/// Roll-up rows (JSON) keyed by tenant, entity id, grain, attribute, datasetId and period start,
/// so that one entity's rows of one grain (and attribute) scan in time order.
pub(super) const ROLLUPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history_rollups");

/// The key prefix of an entity's rows of one grain, or of one attribute's.
fn prefix(tenant: &str, id: &str, grain: i64, attr: Option<&str>) -> Vec<u8> {
    let mut key = history_prefix(tenant, id, None);
    key.extend_from_slice(&grain.to_be_bytes());
    if let Some(attr) = attr {
        push_part(&mut key, attr);
    }
    key
}

fn row_key(tenant: &str, id: &str, k: &RollupKey) -> Vec<u8> {
    let mut key = prefix(tenant, id, k.grain, Some(&k.attr));
    match &k.dataset_id {
        None => key.push(0),
        Some(d) => {
            key.push(1);
            push_part(&mut key, d);
        }
    }
    key.extend_from_slice(&time_bytes(k.start));
    key
}

/// A stored row: its key's parts (the key itself only orders) and its summary.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    key: RollupKey,
    rollup: Rollup,
}

fn decode(bytes: &[u8]) -> NgsiResult<Stored> {
    serde_json::from_slice(bytes).map_err(undecodable)
}

fn put(table: &mut Table<&[u8], &[u8]>, tenant: &str, id: &str, row: RollupRow) -> NgsiResult<()> {
    let k = row_key(tenant, id, &row.0);
    let bytes = serde_json::to_vec(&Stored {
        key: row.0,
        rollup: row.1,
    })
    .map_err(undecodable)?;
    table
        .insert(k.as_slice(), bytes.as_slice())
        .map_err(storage)?;
    Ok(())
}

/// Computes again, from the records left in `history`, the rows of the periods that lost the
/// records `removed` (entity id, record); call it after the removals and before new records are
/// written.
pub(super) fn recompute(
    rollups: &mut Table<&[u8], &[u8]>,
    history: &Table<&[u8], &[u8]>,
    tenant: &str,
    removed: &[(String, InstanceChange)],
) -> NgsiResult<()> {
    let mut affected: BTreeMap<(&str, &str), BTreeSet<RollupKey>> = BTreeMap::new();
    for (id, r) in removed {
        for (key, _) in rollup::rows_of(r) {
            let attr = r.attr.as_deref().unwrap_or_default();
            affected.entry((id, attr)).or_default().insert(key);
        }
    }
    for ((id, attr), keys) in affected {
        let p = history_prefix(tenant, id, Some(attr));
        let mut records = Vec::new();
        for row in history.range(p.as_slice()..).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if !k.value().starts_with(&p) {
                break;
            }
            records.push(serde_json::from_slice::<InstanceChange>(v.value()).map_err(undecodable)?);
        }
        let mut fresh = rollup::summarise(&records, &keys);
        for key in keys {
            match fresh.remove(&key) {
                Some(r) => put(rollups, tenant, id, (key, r))?,
                None => {
                    rollups
                        .remove(row_key(tenant, id, &key).as_slice())
                        .map_err(storage)?;
                }
            }
        }
    }
    Ok(())
}

/// Merges what the new records `added` (entity id, record) add into their rows.
pub(super) fn add(
    rollups: &mut Table<&[u8], &[u8]>,
    tenant: &str,
    added: &[(String, InstanceChange)],
) -> NgsiResult<()> {
    for ((id, key), delta) in rollup::deltas(added) {
        let k = row_key(tenant, &id, &key);
        let mut merged = match rollups.get(k.as_slice()).map_err(storage)? {
            Some(v) => decode(v.value())?.rollup,
            None => Rollup::EMPTY,
        };
        merged.merge(&delta);
        put(rollups, tenant, &id, (key, merged))?;
    }
    Ok(())
}

/// Builds the rows of every record in `history` (a store written before roll-ups existed).
pub(super) fn build_all(
    rollups: &mut Table<&[u8], &[u8]>,
    history: &Table<&[u8], &[u8]>,
) -> NgsiResult<()> {
    let mut by_tenant: BTreeMap<String, Vec<(String, InstanceChange)>> = BTreeMap::new();
    for row in history.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let (tenant, id) = tenant_and_id(k.value())?;
        let r: InstanceChange = serde_json::from_slice(v.value()).map_err(undecodable)?;
        if rollup::Rollup::of(&r).is_some() {
            by_tenant.entry(tenant).or_default().push((id, r));
        }
    }
    for (tenant, records) in by_tenant {
        add(rollups, &tenant, &records)?;
    }
    Ok(())
}

/// The tenant and entity id a history key starts with (two length-prefixed parts).
fn tenant_and_id(key: &[u8]) -> NgsiResult<(String, String)> {
    let mut rest = key;
    let mut part = || -> Option<String> {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let text = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_string();
        rest = &rest[4 + len..];
        Some(text)
    };
    match (part(), part()) {
        (Some(tenant), Some(id)) => Ok((tenant, id)),
        _ => Err(NgsiError::internal(
            "a history key of the embedded store is malformed",
        )),
    }
}

impl EmbeddedStore {
    /// The roll-up rows of each of `ids` of the plan's grain and bounds, for `attrs` (all when
    /// empty).
    pub async fn rollups(
        &self,
        tenant: &str,
        ids: &[String],
        attrs: &[String],
        plan: &Plan,
    ) -> NgsiResult<Rollups> {
        let (tenant, ids, attrs, plan) = (tenant.to_string(), ids.to_vec(), attrs.to_vec(), *plan);
        self.on_file(move |db| {
            let table = db
                .begin_read()
                .map_err(storage)?
                .open_table(ROLLUPS)
                .map_err(storage)?;
            let attrs: Vec<Option<&str>> = match attrs.as_slice() {
                [] => vec![None],
                some => some.iter().map(|a| Some(a.as_str())).collect(),
            };
            let within = |t: DateTime<chrono::Utc>| {
                plan.from.is_none_or(|f| t >= f) && plan.to.is_none_or(|to| t < to)
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let mut rows = Vec::new();
                for attr in &attrs {
                    let p = prefix(&tenant, &id, plan.grain, *attr);
                    for row in table.range(p.as_slice()..).map_err(storage)? {
                        let (k, v) = row.map_err(storage)?;
                        if !k.value().starts_with(&p) {
                            break;
                        }
                        let stored = decode(v.value())?;
                        if within(stored.key.start) {
                            rows.push((stored.key, stored.rollup));
                        }
                    }
                }
                out.push((id, rows));
            }
            Ok(out)
        })
        .await
    }
}
