//! How the instances that share a database share the subscriptions: which instance notifies for
//! which subscription, what other instances changed, and up to where each subscription's
//! notifications were delivered (its watermark), so that an instance taking a subscription over
//! notifies what the previous owner had not. The notifier (`crate::service::notifier`) sees only
//! this interface; PostgreSQL implements it with a listening connection and advisory locks
//! (`postgres::listen`, `postgres::ownership`), the embedded store, which one process owns, with
//! [`Alone`].

use super::changes::Change;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// A subscription as the coordination names it: (tenant, owner key, see `Collection::owner_key`).
pub type Key = (String, String);

/// What other instances did, as the coordination tells the notifier.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Some instance created, changed or deleted this subscription: (tenant, id).
    Changed(String, String),
    /// Some instance created, changed or deleted this registration: (tenant, id).
    RegistrationChanged(String, String),
    /// Some instance created, changed or deleted this context source registration subscription:
    /// (tenant, id).
    CsourceSubscriptionChanged(String, String),
    /// Subscriptions may have changed while this instance was not listening: reload them all.
    ReloadAll,
}

/// A point of the shared change feed: a PostgreSQL snapshot (`xmin:xmax:xip,...`). A change is
/// at or before the point when the transaction that wrote it is visible in the snapshot. Points
/// are what watermarks are made of: unlike sequence numbers, which are taken before commit, they
/// say exactly which changes committed before them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    text: String,
    xmin: u64,
    xmax: u64,
    running: Vec<u64>,
}

impl Position {
    /// Reads a snapshot in PostgreSQL's text form; None when it is not one.
    pub fn parse(text: &str) -> Option<Position> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?,
        };
        parts.next().is_none().then(|| Position {
            text: text.to_string(),
            xmin,
            xmax,
            running,
        })
    }

    /// The text form, as PostgreSQL reads it back.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The oldest transaction whose change this point may not cover: every change it does not
    /// cover was written by this transaction or a later one.
    pub fn oldest(&self) -> u64 {
        self.xmin
    }

    /// Whether the change written by transaction `xid` is at or before this point.
    pub fn covers(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.running.contains(&xid))
    }

    /// Whether every change at or before `other` is also at or before this point, and so is every
    /// change that could still commit after `other` was taken and before this point.
    pub fn passed(&self, other: &Position) -> bool {
        self.xmin >= other.xmax
    }
}

/// Ownership news, which the coordination sends through the change feed so that they take effect
/// exactly between the changes before and after them.
#[derive(Debug, Clone)]
pub enum News {
    /// Every change up to this point has been published before this item.
    Position(Arc<Position>),
    /// From here on this instance owns these subscriptions, each with its watermark (None: it
    /// starts here). `missed` holds the changes of their tenants committed after the oldest of
    /// these watermarks and up to the last [`News::Position`]: each subscription is notified those
    /// its own watermark does not cover, before the changes that follow.
    Claimed {
        /// The subscriptions and their watermarks.
        subs: Vec<(Key, Option<Arc<Position>>)>,
        /// The changes committed since the watermarks, in commit order per entity.
        missed: Vec<Change>,
    },
    /// From here on this instance no longer notifies for these subscriptions; once their pending
    /// notifications are done, their watermarks are to be handed back with
    /// [`Coordination::release`].
    Releasing(Vec<Key>),
    /// This instance owns nothing any more (the coordination lost its connection).
    Lost,
}

/// The sharing of subscriptions among instances of one database.
pub trait Coordination: Send + Sync {
    /// Whether other instances may share the database: then each subscription is notified for
    /// by the instance that owns it only, the others' changes arrive as [`Event`]s, and ownership
    /// as [`News`] in the change feed.
    fn shared(&self) -> bool;

    /// Starts telling `events` what other instances change, and the change feed which
    /// subscriptions this instance owns (once; later calls do nothing).
    fn listen(&self, events: UnboundedSender<Event>);

    /// Claims new subscriptions at once (after this instance stored one), so that the changes
    /// after it are notified; returns when the claim is in the change feed or did not answer in
    /// time.
    fn claim_now(&self) -> BoxFuture<'_, ()>;

    /// Saves watermarks of subscriptions this instance owns (those it no longer owns are left
    /// alone, so that a late save never moves another owner's watermark).
    fn save(&self, marks: Vec<(Key, Arc<Position>)>) -> BoxFuture<'_, Result<(), String>>;

    /// Saves the final watermarks of subscriptions announced as [`News::Releasing`], then gives
    /// them up so that another instance may take them from there.
    fn release(&self, marks: Vec<(Key, Arc<Position>)>);
}

/// The coordination of a store that one process owns: it owns every subscription and nobody
/// else changes anything.
pub struct Alone;

impl Coordination for Alone {
    fn shared(&self) -> bool {
        false
    }

    fn listen(&self, _events: UnboundedSender<Event>) {}

    fn claim_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn save(&self, _marks: Vec<(Key, Arc<Position>)>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn release(&self, _marks: Vec<(Key, Arc<Position>)>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_covers_the_transactions_that_committed_before_it() {
        let p = Position::parse("10:20:12,15").expect("a snapshot");
        assert!(p.covers(9) && p.covers(11) && p.covers(19));
        assert!(!p.covers(12) && !p.covers(15) && !p.covers(20));
        assert_eq!(p.text(), "10:20:12,15");
        assert!(Position::parse("20:20:").expect("empty").passed(&p));
        assert!(!Position::parse("19:25:").expect("running").passed(&p));
        assert!(Position::parse("10:20").is_none() && Position::parse("a:b:").is_none());
    }
}
