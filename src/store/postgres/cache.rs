//! Decoded entities kept by row version, so that a query page of entities the broker has seen
//! needs from PostgreSQL only their ids and versions: turning 100 bodies into text, sending and
//! decoding them was about half of PostgreSQL's and 40 % of the broker's time on a q page.
//!
//! The version is the row's `xmin`, the id of the transaction that wrote that row version, with
//! the entity's `modified_at` column: every write of an entity (by any instance sharing the
//! database) makes a new row version with a new `xmin`, and only committed versions are ever
//! read, so an entry whose version equals the one a query just selected is that exact committed
//! state. `xmin` is 32 bits and wraps around after about four billion transactions (about ten
//! days at 5,000 writes a second); a later write that gets the same transaction number does not
//! also repeat the modification time to the microsecond, so a stale entry is never taken for it.

use crate::model::Entity;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// The version of a stored entity row (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The transaction that wrote the row version (`xmin`).
    pub xmin: i64,
    /// The row's `modified_at`.
    pub modified_at: DateTime<Utc>,
}

impl Version {
    /// The version in columns `col` (`xmin` as a bigint) and `col + 1` (`modified_at`) of a row.
    pub fn of(row: &tokio_postgres::Row, col: usize) -> Version {
        Version {
            xmin: row.get(col),
            modified_at: row.get(col + 1),
        }
    }
}

/// Entities by tenant and id, each with the row version it was decoded from; bounded (least
/// recently and least frequently used entries go first).
pub struct EntityCache {
    entries: Option<quick_cache::sync::Cache<String, (Version, Arc<Entity>)>>,
}

impl EntityCache {
    /// A cache of at most `capacity` entities; 0 keeps none.
    pub fn new(capacity: usize) -> EntityCache {
        EntityCache {
            entries: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// Whether entities are cached at all.
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    fn key(tenant: &str, id: &str) -> String {
        let mut key = String::with_capacity(tenant.len() + id.len() + 1);
        key.push_str(tenant);
        key.push('\u{0}');
        key.push_str(id);
        key
    }

    /// The entity in exactly this version, if cached.
    pub fn get(&self, tenant: &str, id: &str, version: Version) -> Option<Arc<Entity>> {
        let (v, e) = self.entries.as_ref()?.get(&Self::key(tenant, id))?;
        (v == version).then_some(e)
    }

    /// Keeps the entity as decoded from this row version.
    pub fn put(&self, tenant: &str, id: &str, version: Version, entity: Arc<Entity>) {
        if let Some(entries) = &self.entries {
            entries.insert(Self::key(tenant, id), (version, entity));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: &str) -> Arc<Entity> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "id": id, "types": ["https://example.org/T"],
                "created_at": "2024-01-01T00:00:00Z", "modified_at": "2024-01-01T00:00:00Z",
                "attrs": {}
            }))
            .expect("an entity"),
        )
    }

    /// Version `xmin`, modified `second` seconds into 2024.
    fn v(xmin: i64, second: i64) -> Version {
        Version {
            xmin,
            modified_at: DateTime::from_timestamp(1_704_067_200 + second, 0).expect("a time"),
        }
    }

    #[test]
    fn an_entry_serves_only_its_own_version_tenant_and_id() {
        let cache = EntityCache::new(10);
        cache.put("", "urn:a", v(7, 0), entity("urn:a"));
        assert!(cache.get("", "urn:a", v(7, 0)).is_some());
        assert!(cache.get("", "urn:a", v(8, 0)).is_none(), "another version");
        assert!(
            cache.get("", "urn:a", v(7, 1)).is_none(),
            "the same transaction number, wrapped around, at another time"
        );
        assert!(
            cache.get("t1", "urn:a", v(7, 0)).is_none(),
            "another tenant"
        );
        assert!(cache.get("", "urn:b", v(7, 0)).is_none(), "another id");
        cache.put("", "urn:a", v(8, 1), entity("urn:a"));
        assert!(
            cache.get("", "urn:a", v(7, 0)).is_none(),
            "replaced by the newer version"
        );
        assert!(cache.get("", "urn:a", v(8, 1)).is_some());
    }

    #[test]
    fn a_cache_of_zero_keeps_nothing() {
        let cache = EntityCache::new(0);
        assert!(!cache.enabled());
        cache.put("", "urn:a", v(1, 0), entity("urn:a"));
        assert!(cache.get("", "urn:a", v(1, 0)).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = EntityCache::new(100);
        for i in 0..1000 {
            cache.put(
                "",
                &format!("urn:{i}"),
                v(1, 0),
                entity(&format!("urn:{i}")),
            );
        }
        let kept = (0..1000)
            .filter(|i| cache.get("", &format!("urn:{i}"), v(1, 0)).is_some())
            .count();
        assert!(kept > 0 && kept <= 110, "{kept} kept");
    }
}
