//! Per owned subscription, up to where in the shared change feed its notifications are done: the
//! watermark that another instance continues from when it takes the subscription over. The change
//! feed is cut into batches by the positions the coordination publishes ([`News::Position`]); each
//! notification queued for a subscription is counted as pending under the current batch, with the
//! position its subscription was done up to before it. A subscription's watermark is that
//! position of its oldest pending notification, or, with none pending, the last position the
//! notifier has processed. A notification is done when delivered or failed for good (a receiver
//! that never answers cannot hold a watermark back for ever). Only subscriptions claimed through
//! the coordination are tracked: on the embedded store nothing is.
//!
//! [`News::Position`]: crate::store::coordination::News::Position

use crate::store::coordination::{Key, Position};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One tracked subscription.
struct Tracked {
    /// Its watermark when it was claimed, while the notifier's position has not passed it (then a
    /// change it covers was notified already); once released, where it stopped.
    since: Option<Arc<Position>>,
    /// Pending notifications per batch: (how many, the watermark before them).
    pending: BTreeMap<u64, (usize, Arc<Position>)>,
    /// The watermark last saved.
    saved: Option<Arc<Position>>,
    /// Released: it no longer follows the notifier's position.
    frozen: bool,
}

/// The watermarks of the subscriptions this instance owns.
#[derive(Default)]
pub struct Watermarks {
    position: Option<Arc<Position>>,
    batch: u64,
    subs: HashMap<Key, Tracked>,
}

impl Watermarks {
    /// Every change up to `position` has been processed.
    pub fn advance(&mut self, position: Arc<Position>) {
        self.batch += 1;
        for t in self.subs.values_mut().filter(|t| !t.frozen) {
            if t.since.as_ref().is_some_and(|s| position.passed(s)) {
                t.since = None;
            }
        }
        self.position = Some(position);
    }

    /// Starts tracking a subscription just claimed, done up to `since` (None: up to the current
    /// position).
    pub fn claim(&mut self, key: Key, since: Option<Arc<Position>>) {
        let since = since.filter(|s| !self.position.as_ref().is_some_and(|p| p.passed(s)));
        self.subs.insert(
            key,
            Tracked {
                saved: since.clone(),
                since,
                pending: BTreeMap::new(),
                frozen: false,
            },
        );
    }

    /// Stops following the position for these subscriptions (they are being released).
    pub fn freeze(&mut self, keys: &[Key]) {
        for key in keys {
            let base = self.base(key);
            if let Some(t) = self.subs.get_mut(key) {
                t.since = base;
                t.frozen = true;
            }
        }
    }

    /// Stops tracking these subscriptions; returns their watermarks.
    pub fn remove(&mut self, keys: &[Key]) -> Vec<(Key, Arc<Position>)> {
        let marks = keys
            .iter()
            .filter_map(|k| Some((k.clone(), self.mark(k)?)))
            .collect();
        for key in keys {
            self.subs.remove(key);
        }
        marks
    }

    /// Stops tracking those of these subscriptions that are still released (not claimed again
    /// since); returns their watermarks, where processing stopped.
    pub fn released(&mut self, keys: &[Key]) -> Vec<(Key, Arc<Position>)> {
        let frozen: Vec<Key> = keys
            .iter()
            .filter(|k| self.subs.get(*k).is_some_and(|t| t.frozen))
            .cloned()
            .collect();
        self.remove(&frozen)
    }

    /// Stops tracking everything (ownership was lost).
    pub fn clear(&mut self) {
        self.subs.clear();
    }

    /// Whether the change of transaction `xid` was notified for the subscription before it was
    /// claimed here.
    pub fn covered(&self, key: &Key, xid: Option<u64>) -> bool {
        let since = self.subs.get(key).and_then(|t| t.since.as_ref());
        matches!((since, xid), (Some(s), Some(x)) if s.covers(x))
    }

    /// Counts a notification queued for the subscription, which before it was done up to
    /// `before` (None: its current watermark); returns its batch, None when it is not tracked.
    pub fn queued(&mut self, key: &Key, before: Option<Arc<Position>>) -> Option<u64> {
        let before = before.or_else(|| self.base(key))?;
        let batch = self.batch;
        let t = self.subs.get_mut(key)?;
        t.pending.entry(batch).or_insert((0, before)).0 += 1;
        Some(batch)
    }

    /// A notification of the subscription in `batch` is done.
    pub fn done(&mut self, key: &Key, batch: u64) {
        if let Some(t) = self.subs.get_mut(key) {
            if let Some(entry) = t.pending.get_mut(&batch) {
                entry.0 = entry.0.saturating_sub(1);
                if entry.0 == 0 {
                    t.pending.remove(&batch);
                }
            }
        }
    }

    /// Whether any of these subscriptions has notifications pending.
    pub fn pending(&self, keys: &[Key]) -> bool {
        keys.iter()
            .filter_map(|k| self.subs.get(k))
            .any(|t| !t.pending.is_empty())
    }

    /// Whether any subscription has notifications pending.
    pub fn any_pending(&self) -> bool {
        self.subs.values().any(|t| !t.pending.is_empty())
    }

    /// The watermarks that changed since they were last saved (now counted as saved).
    pub fn unsaved(&mut self) -> Vec<(Key, Arc<Position>)> {
        let keys: Vec<Key> = self.subs.keys().cloned().collect();
        let mut out = Vec::new();
        for key in keys {
            let Some(mark) = self.mark(&key) else {
                continue;
            };
            if let Some(t) = self.subs.get_mut(&key) {
                if t.saved.as_ref() != Some(&mark) {
                    t.saved = Some(mark.clone());
                    out.push((key, mark));
                }
            }
        }
        out
    }

    /// These watermarks could not be saved: they count as unsaved again.
    pub fn unsave(&mut self, keys: impl IntoIterator<Item = Key>) {
        for key in keys {
            if let Some(t) = self.subs.get_mut(&key) {
                t.saved = None;
            }
        }
    }

    /// Where the subscription is done up to, not counting pending notifications.
    fn base(&self, key: &Key) -> Option<Arc<Position>> {
        let t = self.subs.get(key)?;
        t.since.clone().or_else(|| self.position.clone())
    }

    /// The subscription's watermark.
    fn mark(&self, key: &Key) -> Option<Arc<Position>> {
        let t = self.subs.get(key)?;
        match t.pending.values().next() {
            Some((_, before)) => Some(before.clone()),
            None => self.base(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Arc<Position> {
        Arc::new(Position::parse(text).expect("a snapshot"))
    }

    fn key() -> Key {
        ("t".into(), "s".into())
    }

    #[test]
    fn a_watermark_waits_for_the_oldest_pending_notification() {
        let mut w = Watermarks::default();
        w.advance(at("10:10:"));
        w.claim(key(), None);
        let first = w.queued(&key(), None).expect("tracked");
        w.advance(at("12:12:"));
        let second = w.queued(&key(), None).expect("tracked");
        w.advance(at("14:14:"));
        assert_eq!(w.unsaved(), vec![(key(), at("10:10:"))]);
        w.done(&key(), second);
        assert_eq!(w.unsaved(), vec![], "the first is still pending");
        w.done(&key(), first);
        assert_eq!(w.unsaved(), vec![(key(), at("14:14:"))]);
        assert!(!w.any_pending());
    }

    #[test]
    fn a_claimed_watermark_ahead_of_the_position_skips_what_it_covers() {
        let mut w = Watermarks::default();
        w.advance(at("10:10:"));
        w.claim(key(), Some(at("12:15:13")));
        assert!(w.covered(&key(), Some(12)) && !w.covered(&key(), Some(13)));
        assert_eq!(w.unsaved(), vec![], "saved as claimed");
        w.advance(at("15:16:"));
        assert!(!w.covered(&key(), Some(12)), "passed");
        assert_eq!(w.unsaved(), vec![(key(), at("15:16:"))]);
    }

    #[test]
    fn a_released_watermark_stays_where_processing_stopped() {
        let mut w = Watermarks::default();
        w.advance(at("10:10:"));
        w.claim(key(), None);
        w.freeze(&[key()]);
        w.advance(at("20:20:"));
        assert_eq!(w.released(&[key()]), vec![(key(), at("10:10:"))]);
        w.claim(key(), None);
        w.freeze(&[key()]);
        w.claim(key(), None);
        assert_eq!(w.released(&[key()]), vec![], "claimed again meanwhile");
    }
}
