//! The change feed: one record per committed entity write (the entity before and after it), handed
//! to whoever consumes it (the subscription notifier) in commit order per entity. Every write path
//! of every store ends in [`ChangeFeed::publish`] (embedded, while the writer lock is still held)
//! or in [`RECORD_SQL`] inside the write transaction (PostgreSQL, read by every instance's
//! listener once committed), so that every transport that writes entities triggers notifications
//! the same way.

use super::coordination;
use crate::model::Entity;
use chrono::{DateTime, Utc};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// One committed write of one entity.
#[derive(Debug, Clone)]
pub struct Change {
    /// The tenant written to.
    pub tenant: String,
    /// The entity id.
    pub id: String,
    /// The entity as it was before the write (`None`: it was created).
    pub before: Option<Arc<Entity>>,
    /// The entity as the write committed it (`None`: it was deleted).
    pub after: Option<Arc<Entity>>,
    /// When the write happened (the deletion time for deletions).
    pub at: DateTime<Utc>,
    /// The PostgreSQL transaction that wrote it (see [`coordination::Position`]); None on the
    /// embedded store.
    pub xid: Option<u64>,
}

/// What the change feed carries, in order: committed changes and, where instances share the
/// subscriptions, the news of ownership between them.
#[derive(Debug, Clone)]
pub enum Item {
    /// One committed change.
    Change(Change),
    /// Ownership news (PostgreSQL).
    News(coordination::News),
}

/// Where stores publish committed changes. Publishing never blocks (an unbounded channel whose
/// consumer only matches and enqueues); before anyone consumes the feed, changes are dropped.
#[derive(Debug, Clone, Default)]
pub struct ChangeFeed {
    sender: Arc<OnceLock<UnboundedSender<Item>>>,
}

impl ChangeFeed {
    /// Publishes one committed change.
    pub fn publish(&self, change: Change) {
        self.send(Item::Change(change));
    }

    /// Publishes ownership news, ordered with the changes.
    pub fn tell(&self, news: coordination::News) {
        self.send(Item::News(news));
    }

    fn send(&self, item: Item) {
        if let Some(sender) = self.sender.get() {
            // A closed receiver means the broker is shutting down: nothing left to notify.
            let _ = sender.send(item);
        }
    }

    /// The receiving end; there is one consumer, so only the first call gets one.
    pub fn consume(&self) -> Option<UnboundedReceiver<Item>> {
        let (tx, rx) = unbounded_channel();
        self.sender.set(tx).ok().map(|_| rx)
    }
}

/// The PostgreSQL statement that records the changes of a write inside its transaction (each row
/// with its transaction, `xid`, by which listeners read what committed after their position) and
/// wakes every listening instance with one notification on the `twinlink_changes` channel,
/// delivered at commit. A write sends it only when its tenant has subscriptions, as read
/// in the write's first round trip (so a subscription committed by any instance counts from the
/// next write that starts). It must run before the write's own statements: the bodies before are
/// read from `entities`. Parameters, one entry per write in the order of the write: $1 tenant, $2
/// ids, $3 bodies after as JSON text (NULL for a deletion), $4 the bodies before as JSON text
/// where $5 is true (a later write of an entity the same write changed already: its body before is
/// what the earlier one left, NULL when that deleted it); where $5 is false the body before is
/// read from `entities`.
pub const RECORD_SQL: &str = "WITH c AS (
    INSERT INTO entity_changes (tenant, id, before, after)
    SELECT $1, u.id, CASE WHEN u.chained THEN u.before::jsonb ELSE e.body END, u.after::jsonb
    FROM unnest($2::text[], $3::text[], $4::text[], $5::bool[])
        WITH ORDINALITY AS u(id, after, before, chained, n)
      LEFT JOIN entities e ON e.tenant = $1 AND e.id = u.id
    ORDER BY u.n
    RETURNING seq)
  SELECT pg_notify('twinlink_changes', max(seq)::text) FROM c";
