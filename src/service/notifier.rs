//! The notifier of subscriptions (clause 5.8): the registry of compiled subscriptions of every
//! tenant, the consumer of the store's change feed that matches each committed change against them
//! and hands notifications to delivery, periodic (timeInterval) notifications, delivery statistics
//! and, on PostgreSQL, which instance notifies for which subscription (advisory locks held by the
//! change listener). Context source registration subscriptions (5.11) live in the same registry
//! and share its delivery, statistics, throttling, periodic notifications and ownership; they are
//! notified of registration changes by the instance that committed the change
//! ([`registration_changed`]). On PostgreSQL it also keeps the watermarks of the subscriptions it
//! owns (`super::watermarks`), notifies what a subscription it takes over missed, and hands its
//! subscriptions over on a clean stop ([`hand_over`]). See docs/subscriptions.md.

use super::AppState;
use crate::error::NgsiResult;
use crate::federation::Registration;
use crate::store::changes::{Change, Item};
use crate::store::coordination::{Event, News, Position};
use crate::store::Collection;
use crate::subscription::index::{anchors, Index};
use crate::subscription::{deliver, model, notify, parse, remote};
use chrono::Utc;
use deliver::{Body, Delivery, Job, Outcome};
use model::{Record, Stats, Subscription};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// A registered subscription and its run-time state.
pub struct Live {
    /// The compiled subscription.
    pub sub: Subscription,
    /// When it was registered: a reload forgets only what was registered before it read the
    /// store (see [`unseen_before`]).
    registered: Instant,
    /// Delivery statistics, updated by every outcome.
    stats: Mutex<Stats>,
    /// When the last notification was queued (throttling).
    last_sent: Mutex<Option<Instant>>,
    /// The periodic notification task of a timeInterval subscription.
    periodic: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when the subscription is deleted (kept across updates): cancels its pending
    /// notifications (see [`deliver::Job::cancelled`]).
    deleted: Arc<AtomicBool>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(task) = self.periodic.lock().ok().and_then(|mut p| p.take()) {
            task.abort();
        }
    }
}

type Key = (String, String);

/// How often changed delivery statistics and watermarks are saved to the store (the watermark
/// save interval that bounds the duplicates after a crash, see docs/subscriptions.md).
const STATS_FLUSH: Duration = Duration::from_millis(500);

/// The subscriptions of this broker instance and their notification machinery.
pub struct Notifier {
    /// The live subscriptions by tenant, indexed by the entities they can concern.
    subs: RwLock<HashMap<String, Index<Arc<Live>>>>,
    /// The subscriptions this instance notifies for; None: all of them (one instance, embedded).
    owned: RwLock<Option<HashSet<Key>>>,
    delivery: Delivery,
    outcomes: Mutex<Option<UnboundedReceiver<Outcome>>>,
    /// Subscriptions whose statistics changed since the last flush.
    dirty: Mutex<HashSet<Key>>,
    /// Up to where the owned subscriptions' notifications are done.
    marks: Mutex<super::watermarks::Watermarks>,
    /// Set by [`hand_over`]: the change feed is no longer processed.
    stopping: AtomicBool,
}

impl Notifier {
    /// The notifier of a broker whose notifications obey this outbound policy, with `lanes`
    /// notifications in flight at once per receiver.
    pub fn new(policy: &crate::outbound::Policy, lanes: usize) -> Self {
        let (tx, rx) = unbounded_channel();
        Notifier {
            subs: RwLock::new(HashMap::new()),
            owned: RwLock::new(None),
            delivery: Delivery::new(tx, policy, lanes),
            outcomes: Mutex::new(Some(rx)),
            dirty: Mutex::new(HashSet::new()),
            marks: Mutex::new(Default::default()),
            stopping: AtomicBool::new(false),
        }
    }
}

impl Notifier {
    fn owns(&self, key: &Key) -> bool {
        self.owned
            .read()
            .map(|o| o.as_ref().is_none_or(|set| set.contains(key)))
            .unwrap_or(true)
    }

    fn get(&self, tenant: &str, id: &str) -> Option<Arc<Live>> {
        self.subs.read().ok()?.get(tenant)?.get(id).cloned()
    }

    /// The statistics this instance holds for a subscription of a collection, if it notified
    /// for it.
    pub fn stats(&self, collection: Collection, tenant: &str, id: &str) -> Option<Stats> {
        let live = self.get(tenant, &collection.owner_key(id))?;
        let stats = live.stats.lock().ok()?.clone();
        Some(stats)
    }

    /// An entity subscription of a tenant as registered here, by id.
    pub fn entity_subscription(&self, tenant: &str, id: &str) -> Option<Arc<Live>> {
        self.get(tenant, &Collection::Subscriptions.owner_key(id))
    }

    /// Queues a notification of a subscription for delivery (its endpoint, statistics and
    /// cancellation as for every other notification): for the notifications that context sources
    /// send for the subscription's copies (5.8.6).
    pub fn deliver(&self, live: &Live, body: serde_json::Value) {
        self.delivery.send(job(live, body));
    }

    /// Registers (or replaces) a compiled subscription; starts its periodic task if it has a
    /// timeInterval.
    pub fn register(&self, broker: &Arc<AppState>, sub: Subscription) -> Arc<Live> {
        let key = sub.key();
        let previous = self.get(&key.0, &key.1);
        let deleted = previous
            .as_ref()
            .map_or_else(Default::default, |live| live.deleted.clone());
        let stats = previous
            .and_then(|live| live.stats.lock().ok().map(|s| s.clone()))
            .filter(|s| s.events() >= sub.record.stats.events())
            .unwrap_or_else(|| sub.record.stats.clone());
        let live = Arc::new(Live {
            registered: Instant::now(),
            stats: Mutex::new(stats),
            last_sent: Mutex::new(None),
            periodic: Mutex::new(None),
            deleted,
            sub,
        });
        if let Some(seconds) = live.sub.time_interval {
            let task = tokio::spawn(periodic(
                Arc::downgrade(broker),
                Arc::downgrade(&live),
                seconds,
            ));
            if let Ok(mut p) = live.periodic.lock() {
                *p = Some(task);
            }
        }
        // A context source subscription is notified of registrations, never of entity changes:
        // without anchors it is never a candidate for one (its emptied query would otherwise make
        // it a candidate for every change of its tenant: with an internal one beside each
        // subscription, a thousand subscriptions weighed two thousand candidates per change).
        let anchored = match live.sub.csource {
            Some(_) => Vec::new(),
            None => anchors(&live.sub.query),
        };
        if let Ok(mut subs) = self.subs.write() {
            subs.entry(key.0)
                .or_default()
                .insert(key.1, anchored, live.clone());
        }
        live
    }

    /// Forgets a subscription of a collection.
    pub fn remove(&self, collection: Collection, tenant: &str, id: &str) {
        self.forget(&[(tenant.to_string(), collection.owner_key(id))]);
    }

    /// The watermarks, whatever a panicking holder left them as.
    fn marks(&self) -> std::sync::MutexGuard<'_, super::watermarks::Watermarks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets subscriptions by key, cancelling their pending notifications.
    fn forget(&self, keys: &[Key]) {
        self.marks().remove(keys);
        if let Ok(mut subs) = self.subs.write() {
            for (tenant, key) in keys {
                if let Some(live) = subs.get_mut(tenant).and_then(|t| t.remove(key)) {
                    live.deleted.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Matches one committed change against the tenant's subscriptions and queues the
    /// notifications. Never waits on the network; a subscription whose q follows linked entity
    /// paths (4.9) has them resolved in the store first, change by change, so that it sees the
    /// linked entities as they stand when the change is matched. A change `missed` by
    /// subscriptions just claimed (with their watermarks) is matched against those only, the ones
    /// whose watermark does not cover it.
    async fn on_change(
        &self,
        broker: &AppState,
        change: &Change,
        missed: Option<&HashMap<Key, Arc<Position>>>,
    ) {
        let Some(current) = change.after.as_deref().or(change.before.as_deref()) else {
            return;
        };
        let candidates: Vec<Arc<Live>> = match self.subs.read() {
            Ok(subs) => subs
                .get(&change.tenant)
                .map(|t| t.candidates(&current.id, &current.types))
                .unwrap_or_default(),
            Err(_) => return,
        };
        let now = Utc::now();
        for live in candidates {
            let sub = &live.sub;
            let key = sub.key();
            let before = match missed {
                None => None,
                Some(missed) => match missed.get(&key) {
                    Some(mark) if !change.xid.is_some_and(|x| mark.covers(x)) => Some(mark.clone()),
                    _ => continue,
                },
            };
            if sub.time_interval.is_some() || !sub.is_live(now) || !self.owns(&key) {
                continue;
            }
            let linked = match sub.query.q.as_ref().filter(|q| q.link_depth() > 0) {
                None => None,
                Some(q) => {
                    let mut q = q.clone();
                    if let Err(e) = broker.resolve_links(&change.tenant, &mut q).await {
                        tracing::warn!(subscription = %sub.record.id, error = %e,
                            "the linked entities of a subscription's q could not be read");
                        continue;
                    }
                    Some(crate::query::EntityQuery {
                        q: Some(q),
                        ..sub.query.clone()
                    })
                }
            };
            let query = linked.as_ref().unwrap_or(&sub.query);
            let Some(notified) = notify::entity_for(sub, query, change) else {
                continue;
            };
            // Notified by the previous owner before this instance took the subscription over.
            if self.marks().covered(&key, change.xid) || !live.throttle() {
                continue;
            }
            let trigger = Some(notified.trigger.name());
            let body = match sub.notification.join {
                // Rendered by the delivery lane (see `deliver::Body`).
                None => {
                    let (live, change) = (live.clone(), change.clone());
                    Body::Later(Box::new(move || {
                        let entity = notified.show(&live.sub, &change);
                        notify::envelope(&live.sub, trigger, vec![entity.into()], now)
                    }))
                }
                Some(join) => {
                    let entity = notified.show(sub, change);
                    let data = joined(broker, sub, change, entity, join).await;
                    Body::Ready(notify::envelope(sub, trigger, data, now))
                }
            };
            let mut job = job(&live, body);
            job.batch = self.marks().queued(&key, before);
            self.delivery.send(job);
        }
    }

    /// Applies ownership news from the change feed.
    async fn on_news(&self, broker: &Arc<AppState>, news: News) {
        self.apply_news(broker, news).await;
        if let Ok(owned) = self.owned.read() {
            crate::telemetry::metrics::subscriptions_owned(owned.as_ref().map_or(0, |o| o.len()));
        }
    }

    /// The change each piece of news makes.
    async fn apply_news(&self, broker: &Arc<AppState>, news: News) {
        match news {
            News::Position(position) => self.marks().advance(position),
            News::Claimed { subs, missed } => {
                if let Ok(mut owned) = self.owned.write() {
                    owned
                        .get_or_insert_with(HashSet::new)
                        .extend(subs.iter().map(|(k, _)| k.clone()));
                }
                let mut marks: HashMap<Key, Arc<Position>> = HashMap::new();
                for (key, mark) in subs {
                    // One created a moment ago on another instance may not be loaded yet (its
                    // reload runs beside the feed): the changes that follow need it.
                    if self.get(&key.0, &key.1).is_none() {
                        let (collection, id) = Collection::of_owner_key(&key.1);
                        if let Err(e) = reload(broker, collection, &key.0, id).await {
                            tracing::warn!(error = %e, subscription = %id, "loading a claimed subscription failed");
                        }
                    }
                    self.marks().claim(key.clone(), mark.clone());
                    marks.extend(mark.map(|m| (key, m)));
                }
                for change in &missed {
                    self.on_change(broker, change, Some(&marks)).await;
                }
            }
            News::Releasing(keys) => {
                if let Ok(mut owned) = self.owned.write() {
                    if let Some(owned) = owned.as_mut() {
                        for key in &keys {
                            owned.remove(key);
                        }
                    }
                }
                self.marks().freeze(&keys);
                tokio::spawn(release(Arc::downgrade(broker), keys));
            }
            News::Lost => {
                if let Ok(mut owned) = self.owned.write() {
                    *owned = Some(HashSet::new());
                }
                self.marks().clear();
            }
        }
    }

    /// Saves the watermarks that changed since the last save.
    async fn save_marks(&self, broker: &AppState) {
        let marks = self.marks().unsaved();
        if marks.is_empty() {
            return;
        }
        let keys: Vec<Key> = marks.iter().map(|(k, _)| k.clone()).collect();
        if let Err(e) = broker.store().coordination().save(marks).await {
            tracing::warn!(error = %e, "saving delivery watermarks failed");
            self.marks().unsave(keys);
        }
    }

    /// Applies a delivery outcome to the statistics; they are saved by the next flush.
    fn on_outcome(&self, outcome: Outcome) {
        if let Some(batch) = outcome.batch {
            self.marks().done(&outcome.subscription, batch);
        }
        let (tenant, id) = &outcome.subscription;
        let Some(live) = self.get(tenant, id) else {
            return;
        };
        {
            let Ok(mut s) = live.stats.lock() else {
                return;
            };
            s.times_sent += 1;
            s.last_notification = Some(outcome.at);
            match &outcome.error {
                None => {
                    s.last_success = Some(outcome.at);
                    s.status = Some("ok".into());
                }
                Some(_) => {
                    s.times_failed += 1;
                    s.last_failure = Some(outcome.at);
                    s.status = Some("failed".into());
                }
            }
        }
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.insert(outcome.subscription);
        }
    }

    /// Saves the statistics changed since the last flush: one store write per collection for
    /// every subscription that sent meanwhile, however many notifications each sent.
    async fn flush_stats(&self, broker: &AppState) {
        let keys: Vec<Key> = match self.dirty.lock() {
            Ok(mut dirty) => dirty.drain().collect(),
            Err(_) => return,
        };
        let mut by_collection: HashMap<Collection, Vec<(String, String, Value)>> = HashMap::new();
        for (tenant, key) in keys {
            let Some(live) = self.get(&tenant, &key) else {
                continue;
            };
            let Some(stats) = live.stats.lock().ok().map(|s| s.clone()) else {
                continue;
            };
            let value = serde_json::to_value(&stats).unwrap_or_default();
            by_collection
                .entry(live.sub.collection())
                .or_default()
                .push((tenant, live.sub.record.id.clone(), value));
        }
        for (collection, values) in by_collection {
            let count = values.len();
            if let Err(e) = broker
                .store()
                .save_record_members(collection, "stats", values)
                .await
            {
                tracing::warn!(error = %e, subscriptions = count, "saving notification statistics failed");
            }
        }
    }
}

impl Live {
    /// Whether a notification may go now (throttling); records it when so.
    fn throttle(&self) -> bool {
        let Ok(mut last) = self.last_sent.lock() else {
            return true;
        };
        if let (Some(seconds), Some(t)) = (self.sub.throttling, *last) {
            if t.elapsed() < Duration::from_secs_f64(seconds) {
                return false;
            }
        }
        *last = Some(Instant::now());
        true
    }
}

fn job(live: &Live, body: impl Into<Body>) -> Job {
    let sub = &live.sub;
    Job {
        subscription: sub.key(),
        endpoint: sub.notification.endpoint.clone(),
        body: body.into(),
        context: sub.notify_context.clone(),
        tenant: sub.tenant.clone(),
        cancelled: live.deleted.clone(),
        batch: None,
    }
}

/// How long a released subscription's notifications may take to finish before its watermark is
/// handed over anyway (the next owner then notifies those still pending again).
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Waits (at most `wait`) until none of `keys` (all when None) has notifications pending.
async fn drained(broker: &Weak<AppState>, keys: Option<&[Key]>, wait: Duration) {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let pending = broker.upgrade().is_some_and(|b| {
            let marks = b.notifier().marks();
            keys.map_or_else(|| marks.any_pending(), |keys| marks.pending(keys))
        });
        if !pending {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hands released subscriptions back to the coordination once their pending notifications are
/// done, with their final watermarks.
async fn release(broker: Weak<AppState>, keys: Vec<Key>) {
    drained(&broker, Some(&keys), RELEASE_WAIT).await;
    if let Some(b) = broker.upgrade() {
        let marks = b.notifier().marks().released(&keys);
        b.store().coordination().release(marks);
    }
}

/// Stops notifying for the change feed, waits (a few seconds at most) for the pending
/// notifications and saves the final watermarks, so that the instances taking the subscriptions
/// over after this one stops continue exactly from there: called on a clean stop, before the
/// process ends (and with it the session that holds the subscriptions).
pub async fn hand_over(broker: &Arc<AppState>) {
    broker.notifier().stopping.store(true, Ordering::Relaxed);
    drained(&Arc::downgrade(broker), None, RELEASE_WAIT).await;
    broker.notifier().save_marks(broker).await;
}

/// The data of a notification whose subscription joins linked entities (4.5.23): the notified
/// entity with its linked ones inline, or followed by them (flat). When the linked entities cannot
/// be read, the entity goes alone (and the failure is logged).
async fn joined(
    broker: &AppState,
    sub: &model::Subscription,
    change: &Change,
    mut entity: serde_json::Map<String, serde_json::Value>,
    join: crate::service::join::Join,
) -> Vec<serde_json::Value> {
    use crate::service::join;
    let Some(current) = change.after.clone().or_else(|| change.before.clone()) else {
        return vec![entity.into()];
    };
    let opts = notify::options(sub);
    let roots = [current];
    let linked = match join::linked(broker, &change.tenant, &roots, join, &opts.projection).await {
        Ok(linked) => linked,
        Err(e) => {
            tracing::warn!(subscription = %sub.record.id, error = %e,
                "the linked entities of a notification could not be read");
            return vec![entity.into()];
        }
    };
    if join.flat {
        let mut data = vec![entity.into()];
        data.extend(join::flat_rest(&roots, &linked, &sub.ctx, &opts));
        return data;
    }
    join::attach_inline(&mut entity, &roots[0], &linked, join.level, &sub.ctx, &opts);
    vec![entity.into()]
}

/// Every `seconds`, notifies every entity (for a registration subscription, every registration)
/// the subscription selects (timeInterval). Holds the broker and the subscription weakly: it ends
/// with either.
async fn periodic(broker: Weak<AppState>, live: Weak<Live>, seconds: f64) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(seconds));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let (Some(broker), Some(live)) = (broker.upgrade(), live.upgrade()) else {
            return;
        };
        let sub = &live.sub;
        if !sub.is_live(Utc::now()) || !broker.notifier().owns(&sub.key()) {
            continue;
        }
        if sub.csource.is_some() {
            notify_matching(&broker, &live).await;
            continue;
        }
        let limit = broker.settings().max_page_size;
        let entities = match broker
            .store()
            .query(&sub.tenant, &sub.query, 0, limit, false)
            .await
        {
            Ok((page, _)) => page,
            Err(e) => {
                tracing::warn!(error = %e, subscription = %sub.record.id, "periodic query failed");
                continue;
            }
        };
        if entities.is_empty() {
            continue;
        }
        let opts = notify::options(sub);
        let data = entities
            .iter()
            .map(|e| crate::model::render::entity(e, &sub.ctx, &opts).into())
            .collect();
        let body = notify::envelope(sub, None, data, Utc::now());
        broker.notifier().delivery.send(job(&live, body));
    }
}

/// The triggerReason of a notification that lists every registration a registration subscription
/// currently selects (on its creation or update, and periodically with a timeInterval): they are
/// all matching, as far as the subscriber knows, for the first time.
const NEWLY_MATCHING: &str = "newlyMatching";

/// The triggerReason of a registration that a registration subscription no longer selects.
const NO_LONGER_MATCHING: &str = "noLongerMatching";

/// A registration as a registration subscription's notification shows it (5.11.7): only its
/// RegistrationInfo elements the subscription selects, compacted with the subscription's context.
fn registration_data(sub: &Subscription, registration: &Registration) -> serde_json::Value {
    let record = match &sub.csource {
        Some(discovery) => registration.relevant(discovery),
        None => registration.record.clone(),
    };
    crate::federation::registration::render(&record, &sub.ctx, false)
}

/// Sends a registration subscription every registration it currently selects (newlyMatching),
/// when it is active and some registration matches: the notification that follows its creation
/// or update (5.11.2, 5.11.3) and each periodic one.
pub async fn notify_matching(broker: &AppState, live: &Live) {
    let sub = &live.sub;
    let Some(discovery) = &sub.csource else {
        return;
    };
    let now = Utc::now();
    // The internal registration subscription of a subscription at sources is not notified of the
    // registrations it selects already: creating the subscription gave them their copies.
    if !sub.is_live(now) || remote::subscription_of(&sub.record.id).is_some() {
        return;
    }
    let found = match broker.discover_registrations(&sub.tenant, discovery).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, subscription = %sub.record.id, "reading the matching registrations failed");
            return;
        }
    };
    if found.is_empty() || !live.throttle() {
        return;
    }
    let data = found
        .into_iter()
        .map(|r| registration_data(sub, &Registration::compile(r)))
        .collect();
    let body = notify::envelope(sub, Some(NEWLY_MATCHING), data, now);
    broker.notifier().delivery.send(job(live, body));
}

/// The triggerReason of a registration change for a subscription (5.11.7) that selected the
/// registration before it (`was`) or selects it after it (`is`): newlyMatching when it starts to
/// match (a created registration included), updated when it still matches, noLongerMatching when
/// it stops (a deleted one included); None when it matched neither before nor after.
fn trigger_reason(was: bool, is: bool) -> Option<&'static str> {
    match (was, is) {
        (false, true) => Some(NEWLY_MATCHING),
        (true, true) => Some("updated"),
        (true, false) => Some(NO_LONGER_MATCHING),
        (false, false) => None,
    }
}

/// Notifies the registration subscriptions of a tenant of a registration change this instance
/// committed (`before` and `after` the change; None for a created or deleted registration). The
/// committing instance notifies, so each change is notified once however many instances share
/// the store; it first brings its registry in step with the stored subscriptions of the tenant,
/// so that one just created on another instance is not missed.
pub async fn registration_changed(
    broker: &Arc<AppState>,
    tenant: &str,
    before: Option<Registration>,
    after: Option<Registration>,
) {
    let subs = match sync_csource(broker, tenant).await {
        Ok(subs) => subs,
        Err(e) => {
            tracing::warn!(error = %e, "reading the registration subscriptions failed; their notifications are lost");
            return;
        }
    };
    let now = Utc::now();
    let selects = |r: &Option<Registration>, d: &crate::federation::Discovery| {
        r.as_ref().is_some_and(|r| r.is_live(now) && r.matches(d))
    };
    for live in subs {
        let sub = &live.sub;
        let Some(discovery) = &sub.csource else {
            continue;
        };
        if !sub.is_live(now) {
            continue;
        }
        let Some(reason) = trigger_reason(selects(&before, discovery), selects(&after, discovery))
        else {
            continue;
        };
        let Some(shown) = after.as_ref().or(before.as_ref()) else {
            continue;
        };
        if let Some(subscription) = remote::subscription_of(&sub.record.id) {
            broker
                .sources_changed(tenant, subscription, reason != NO_LONGER_MATCHING, shown)
                .await;
            continue;
        }
        if !live.throttle() {
            continue;
        }
        let body = notify::envelope(sub, Some(reason), vec![registration_data(sub, shown)], now);
        broker.notifier().delivery.send(job(&live, body));
    }
}

/// The registration subscriptions of a tenant as stored, each registered in this instance's
/// registry (compiled again only when it changed since it was registered); forgets those no
/// longer stored.
async fn sync_csource(broker: &Arc<AppState>, tenant: &str) -> NgsiResult<Vec<Arc<Live>>> {
    let collection = Collection::CsourceSubscriptions;
    let mut out = Vec::new();
    let mut stored = HashSet::new();
    for (t, value) in broker.store().records(collection).await? {
        if t != tenant {
            continue;
        }
        let record: Record = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "a stored registration subscription does not decode; skipped");
                continue;
            }
        };
        stored.insert(collection.owner_key(&record.id));
        let known = broker
            .notifier()
            .get(tenant, &collection.owner_key(&record.id))
            .filter(|live| live.sub.record.modified_at == record.modified_at);
        let live = match known {
            Some(live) => live,
            None => match compile(broker, collection, tenant, record).await {
                Ok(sub) => broker.notifier().register(broker, sub),
                Err(e) => {
                    tracing::warn!(error = %e, "a stored registration subscription does not compile; skipped");
                    continue;
                }
            },
        };
        out.push(live);
    }
    let gone: Vec<String> = match broker.notifier().subs.read() {
        Ok(subs) => subs
            .get(tenant)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(key, live)| live.sub.csource.is_some() && !stored.contains(*key))
            .map(|(_, live)| live.sub.record.id.clone())
            .collect(),
        Err(_) => Vec::new(),
    };
    for id in gone {
        broker.notifier().remove(collection, tenant, &id);
    }
    Ok(out)
}

/// Compiles a stored record of a collection (loading its contexts).
pub async fn compile(
    broker: &AppState,
    collection: Collection,
    tenant: &str,
    record: Record,
) -> NgsiResult<Subscription> {
    let ctx = broker.contexts().active(record.context.as_ref()).await?;
    let notify_ctx = match record.doc.get("jsonldContext") {
        Some(url) => Some(broker.contexts().active(Some(url)).await?),
        None => None,
    };
    match collection {
        Collection::CsourceSubscriptions => parse::compile_csource(tenant, record, ctx, notify_ctx),
        _ => parse::compile(tenant, record, ctx, notify_ctx),
    }
}

/// Loads one stored subscription of a collection into the registry (or forgets it when it is
/// gone).
async fn reload(
    broker: &Arc<AppState>,
    collection: Collection,
    tenant: &str,
    id: &str,
) -> NgsiResult<()> {
    match broker.store().record(collection, tenant, id).await? {
        None => broker.notifier().remove(collection, tenant, id),
        Some(value) => {
            let record: Record = serde_json::from_value(value).map_err(|e| {
                crate::error::NgsiError::internal(format!("subscription {id} does not decode: {e}"))
            })?;
            let sub = compile(broker, collection, tenant, record).await?;
            broker.notifier().register(broker, sub);
        }
    }
    Ok(())
}

/// Every stored subscription of both collections, retrying while the store is unavailable; with
/// when the reading began.
async fn read_all(broker: &AppState) -> (Instant, Vec<(Collection, String, serde_json::Value)>) {
    let mut delay = Duration::from_millis(200);
    loop {
        let read_at = Instant::now();
        let mut all = Vec::new();
        let mut failed = None;
        for collection in [Collection::Subscriptions, Collection::CsourceSubscriptions] {
            match broker.store().records(collection).await {
                Ok(records) => all.extend(records.into_iter().map(|(t, v)| (collection, t, v))),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            None => return (read_at, all),
            Some(e) => {
                tracing::debug!(error = %e, "subscriptions not loaded yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Loads every stored subscription, retrying while the store is unavailable.
async fn load_all(broker: &Arc<AppState>) {
    let (read_at, all) = read_all(broker).await;
    let mut seen: HashSet<Key> = HashSet::new();
    for (collection, tenant, value) in all {
        let record: Record = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "a stored subscription does not decode; skipped");
                continue;
            }
        };
        let id = record.id.clone();
        match compile(broker, collection, &tenant, record).await {
            Ok(sub) => {
                seen.insert((tenant, collection.owner_key(&id)));
                broker.notifier().register(broker, sub);
            }
            Err(e) => {
                tracing::warn!(error = %e, subscription = %id, "a stored subscription does not compile; skipped")
            }
        }
    }
    // Forget subscriptions deleted while this instance was not listening, but not one registered
    // (created on this instance) after the store was read: the read could not see it.
    let stale = match broker.notifier().subs.read() {
        Ok(subs) => unseen_before(
            subs.iter().flat_map(|(t, m)| {
                m.iter()
                    .map(move |(id, live)| ((t.clone(), id.clone()), live.registered))
            }),
            &seen,
            read_at,
        ),
        Err(_) => Vec::new(),
    };
    broker.notifier().forget(&stale);
}

/// The registered subscriptions (key, registration time) that a reload which read the store at
/// `read_at` and found `seen` there must forget: those it did not find and that were registered
/// before it read. One registered later was created after the read began, and stays.
fn unseen_before(
    registered: impl Iterator<Item = (Key, Instant)>,
    seen: &HashSet<Key>,
    read_at: Instant,
) -> Vec<Key> {
    registered
        .filter(|(k, at)| *at < read_at && !seen.contains(k))
        .map(|(k, _)| k)
        .collect()
}

/// Starts the notification machinery of a broker: loads the stored subscriptions, consumes the
/// change feed and delivery outcomes, and on PostgreSQL listens to other instances and keeps
/// subscription leases.
pub fn start(broker: Arc<AppState>) {
    let Some(mut changes) = broker.store().feed().consume() else {
        return;
    };
    let outcomes = broker
        .notifier()
        .outcomes
        .lock()
        .ok()
        .and_then(|mut o| o.take());
    // Background tasks hold the broker weakly, so that a stopped server releases its store.
    let weak = Arc::downgrade(&broker);
    let coordination = broker.store().coordination();
    if coordination.shared() {
        if let Ok(mut owned) = broker.notifier().owned.write() {
            *owned = Some(HashSet::new());
        }
        let (tx, mut events) = unbounded_channel();
        coordination.listen(tx);
        let w = weak.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(b) = w.upgrade() else {
                    return;
                };
                match event {
                    Event::ReloadAll => {
                        load_all(&b).await;
                        if let Err(e) = b.load_registrations().await {
                            tracing::warn!(error = %e, "reloading registrations failed");
                        }
                    }
                    Event::RegistrationChanged(tenant, id) => {
                        if let Err(e) = b.reload_registration(&tenant, &id).await {
                            tracing::warn!(error = %e, registration = %id, "reloading a registration failed");
                        }
                    }
                    Event::CsourceSubscriptionChanged(tenant, id) => {
                        if let Err(e) =
                            reload(&b, Collection::CsourceSubscriptions, &tenant, &id).await
                        {
                            tracing::warn!(error = %e, subscription = %id, "reloading a registration subscription failed");
                        }
                    }
                    Event::Changed(tenant, id) => {
                        if let Err(e) = reload(&b, Collection::Subscriptions, &tenant, &id).await {
                            tracing::warn!(error = %e, subscription = %id, "reloading a subscription failed");
                        }
                    }
                }
            }
        });
    }
    let w = weak.clone();
    tokio::spawn(async move {
        // Changes committed while the stored subscriptions load wait in the feed, so that none
        // is missed after a restart.
        match w.upgrade() {
            Some(b) => {
                load_all(&b).await;
                if let Err(e) = b.load_registrations().await {
                    tracing::warn!(error = %e, "loading registrations failed");
                }
                claim_now(&b).await;
            }
            None => return,
        }
        while let Some(item) = changes.recv().await {
            let Some(b) = w.upgrade() else {
                return;
            };
            if b.notifier().stopping.load(Ordering::Relaxed) {
                continue;
            }
            match item {
                Item::Change(change) => b.notifier().on_change(&b, &change, None).await,
                Item::News(news) => b.notifier().on_news(&b, news).await,
            }
        }
    });
    if let Some(mut outcomes) = outcomes {
        let w = weak.clone();
        tokio::spawn(async move {
            while let Some(outcome) = outcomes.recv().await {
                let Some(b) = w.upgrade() else {
                    return;
                };
                b.notifier().on_outcome(outcome);
            }
        });
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(STATS_FLUSH);
        loop {
            ticks.tick().await;
            let Some(b) = weak.upgrade() else {
                return;
            };
            b.notifier().flush_stats(&b).await;
            b.notifier().save_marks(&b).await;
        }
    });
}

/// Where instances share the subscriptions, claims a subscription this instance just stored, so
/// that it is notified for from the next write on (not only after the next claim round).
pub async fn claim_now(broker: &AppState) {
    broker.store().coordination().claim_now().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        ("".to_string(), id.to_string())
    }

    #[test]
    fn a_reload_forgets_only_what_it_missed_among_the_older_registrations() {
        let before = Instant::now();
        let read_at = before + Duration::from_millis(10);
        let after = read_at + Duration::from_millis(10);
        let registered = vec![
            (key("deleted elsewhere"), before),
            (key("still stored"), before),
            (key("created during the reload"), after),
        ];
        let seen: HashSet<Key> = [key("still stored")].into_iter().collect();
        assert_eq!(
            unseen_before(registered.into_iter(), &seen, read_at),
            vec![key("deleted elsewhere")]
        );
    }
}
