//! Decoded entities kept by row version, so that a query page of entities the broker has seen
//! needs from PostgreSQL only their ids and versions: turning 100 bodies into text, sending and
//! decoding them was about half of PostgreSQL's and 40 % of the broker's time on a q page.
//!
//! The version is the row's `xmin`, the id of the transaction that wrote that row version: every
//! write of an entity (by any instance sharing the database) makes a new row version with a new
//! `xmin`, and only committed versions are ever read, so an entry whose version equals the one a
//! query just selected is that exact committed state. `xmin` is 32 bits and wraps around after
//! about four billion transactions; an entry would have to stay cached across that many
//! transactions and meet a new version written by a transaction with the same number to be taken
//! for it.

use crate::model::Entity;
use std::sync::Arc;

/// Entities kept when the configuration does not say (about 3 KB each in memory for a sensor
/// with a handful of attributes).
pub const DEFAULT_CAPACITY: usize = 50_000;

/// Entities by tenant and id, each with the row version it was decoded from; bounded (least
/// recently and least frequently used entries go first).
pub struct EntityCache {
    entries: Option<quick_cache::sync::Cache<String, (i64, Arc<Entity>)>>,
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
    pub fn get(&self, tenant: &str, id: &str, version: i64) -> Option<Arc<Entity>> {
        let (v, e) = self.entries.as_ref()?.get(&Self::key(tenant, id))?;
        (v == version).then_some(e)
    }

    /// Keeps the entity as decoded from this row version.
    pub fn put(&self, tenant: &str, id: &str, version: i64, entity: Arc<Entity>) {
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

    #[test]
    fn an_entry_serves_only_its_own_version_tenant_and_id() {
        let cache = EntityCache::new(10);
        cache.put("", "urn:a", 7, entity("urn:a"));
        assert!(cache.get("", "urn:a", 7).is_some());
        assert!(cache.get("", "urn:a", 8).is_none(), "another version");
        assert!(cache.get("t1", "urn:a", 7).is_none(), "another tenant");
        assert!(cache.get("", "urn:b", 7).is_none(), "another id");
        cache.put("", "urn:a", 8, entity("urn:a"));
        assert!(
            cache.get("", "urn:a", 7).is_none(),
            "replaced by the newer version"
        );
        assert!(cache.get("", "urn:a", 8).is_some());
    }

    #[test]
    fn a_cache_of_zero_keeps_nothing() {
        let cache = EntityCache::new(0);
        assert!(!cache.enabled());
        cache.put("", "urn:a", 1, entity("urn:a"));
        assert!(cache.get("", "urn:a", 1).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = EntityCache::new(100);
        for i in 0..1000 {
            cache.put("", &format!("urn:{i}"), 1, entity(&format!("urn:{i}")));
        }
        let kept = (0..1000)
            .filter(|i| cache.get("", &format!("urn:{i}"), 1).is_some())
            .count();
        assert!(kept > 0 && kept <= 110, "{kept} kept");
    }
}
