//! How the instances that share a database share the subscriptions: which instance notifies for
//! which subscription, and what other instances changed. The notifier (`crate::subscription`)
//! sees only this interface; PostgreSQL implements it with a listening connection and advisory
//! locks (`postgres::listen`), the embedded store, which one process owns, with [`Alone`].

use futures_util::future::BoxFuture;
use std::collections::HashSet;
use tokio::sync::mpsc::UnboundedSender;

/// A subscription among those an instance owns: (tenant, owner key, see
/// `Collection::owner_key`).
pub type Owned = HashSet<(String, String)>;

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
    /// The subscriptions this instance now notifies for.
    Owned(Owned),
}

/// The sharing of subscriptions among instances of one database.
pub trait Coordination: Send + Sync {
    /// Whether other instances may share the database: then each subscription is notified for
    /// by the instance that owns it only, and the others' changes arrive as [`Event`]s.
    fn shared(&self) -> bool;

    /// Starts telling `events` what other instances change and which subscriptions this
    /// instance owns (once; later calls do nothing).
    fn listen(&self, events: UnboundedSender<Event>);

    /// Claims unowned subscriptions at once (after this instance stored one), and returns those
    /// this instance now owns; None when there is nothing to claim or no answer came in time.
    fn claim_now(&self) -> BoxFuture<'_, Option<Owned>>;
}

/// The coordination of a store that one process owns: it owns every subscription and nobody
/// else changes anything.
pub struct Alone;

impl Coordination for Alone {
    fn shared(&self) -> bool {
        false
    }

    fn listen(&self, _events: UnboundedSender<Event>) {}

    fn claim_now(&self) -> BoxFuture<'_, Option<Owned>> {
        Box::pin(async { None })
    }
}
