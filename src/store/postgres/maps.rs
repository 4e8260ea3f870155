//! Entity maps in PostgreSQL (table `entity_maps`, migration 12): one row per map with its expiry
//! and its entries as a jsonb array. Each operation is one statement, so that instances sharing the
//! database change a map without undoing each other's changes (a removal of entries keeps the
//! order of the rest and leaves the expiry alone; an expiry update leaves the entries alone).

use super::{db_error, PgStore};
use crate::error::NgsiResult;
use crate::store::entity_maps::{EntityMap, MapEntry};
use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

impl PgStore {
    /// Stores a new entity map.
    pub async fn create_entity_map(&self, tenant: &str, map: &EntityMap) -> NgsiResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO entity_maps (tenant, id, expires_at, entries) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, id) DO UPDATE
                 SET expires_at = EXCLUDED.expires_at, entries = EXCLUDED.entries",
                &[&tenant, &map.id, &map.expires_at, &Json(&map.entries)],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The map with this id, unless it has expired at `now` (an expired map is removed).
    pub async fn entity_map(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> NgsiResult<Option<EntityMap>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT expires_at, entries FROM entity_maps WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires_at: DateTime<Utc> = row.get(0);
        if expires_at <= now {
            // Removed unless another instance extended it meanwhile.
            client
                .execute(
                    "DELETE FROM entity_maps WHERE tenant = $1 AND id = $2 AND expires_at <= $3",
                    &[&tenant, &id, &now],
                )
                .await
                .map_err(db_error)?;
            return Ok(None);
        }
        let Json(entries): Json<Vec<MapEntry>> = row.try_get(1).map_err(db_error)?;
        Ok(Some(EntityMap {
            id: id.to_string(),
            expires_at,
            entries,
        }))
    }

    /// Sets the expiry of a map that has not expired at `now`; false when there is none.
    pub async fn set_entity_map_expiry(
        &self,
        tenant: &str,
        id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> NgsiResult<bool> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE entity_maps SET expires_at = $3
                 WHERE tenant = $1 AND id = $2 AND expires_at > $4",
                &[&tenant, &id, &expires_at, &now],
            )
            .await
            .map_err(db_error)?;
        Ok(changed > 0)
    }

    /// Removes a map; false when there was none that had not expired at `now`.
    pub async fn delete_entity_map(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> NgsiResult<bool> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "DELETE FROM entity_maps WHERE tenant = $1 AND id = $2 RETURNING expires_at > $3",
                &[&tenant, &id, &now],
            )
            .await
            .map_err(db_error)?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    /// Removes the entries of these entity ids from a map (nothing when the map is gone).
    pub async fn prune_entity_map(
        &self,
        tenant: &str,
        id: &str,
        gone: Vec<String>,
    ) -> NgsiResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE entity_maps SET entries = (
                     SELECT coalesce(jsonb_agg(entry ORDER BY n), '[]'::jsonb)
                     FROM jsonb_array_elements(entries) WITH ORDINALITY AS e(entry, n)
                     WHERE NOT (entry->>0 = ANY($3)))
                 WHERE tenant = $1 AND id = $2",
                &[&tenant, &id, &gone],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Removes every map that has expired at `now`; returns how many.
    pub async fn sweep_entity_maps(&self, now: DateTime<Utc>) -> NgsiResult<usize> {
        let client = self.client().await?;
        let removed = client
            .execute("DELETE FROM entity_maps WHERE expires_at <= $1", &[&now])
            .await
            .map_err(db_error)?;
        Ok(removed as usize)
    }
}
