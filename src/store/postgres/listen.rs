//! The PostgreSQL side of the change feed and of subscription replication: one dedicated
//! connection per instance LISTENs on `twinlink_changes` (a committed entity write, by sequence
//! number) and `twinlink_subscriptions` (a subscription created, changed or deleted by any
//! instance). Changes are read back by sequence number and published to the local feed in the order
//! the notifications arrive, which is commit order. On a lost connection the listener reconnects
//! with backoff and catches up from the last sequence number it saw.
//!
//! The same connection holds this instance's subscriptions: a session advisory lock per
//! subscription, taken with pg_try_advisory_lock, so that exactly one live instance notifies for
//! each. Locks go with the session, so the subscriptions of an instance that stops, crashes or loses
//! the database are taken over by another within one claim round.

use super::with_causes;
use crate::store::changes::{Change, ChangeFeed};
use crate::store::coordination::Event;
use crate::store::Collection;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, NoTls};

/// First key of the advisory locks that say which instance owns a subscription (the second is a
/// hash of tenant and id; a collision only puts two subscriptions with the same owner).
const OWNER_LOCK: i32 = 0x7473_7562; // "tsub"

/// How often unowned subscriptions are claimed (and whether the store still lives is checked).
const CLAIM_EVERY: Duration = Duration::from_secs(2);

/// How long change rows are kept for catching up after a reconnect.
const KEEP_CHANGES: &str = "5 minutes";

/// A request to claim subscriptions now; answered with the subscriptions this instance holds.
pub type ClaimRequest = oneshot::Sender<HashSet<(String, String)>>;

/// Runs the listener until the store (`alive`) is gone: publishes changes to `feed` and
/// subscription events to `events`, and answers claim requests.
pub async fn run(
    config: Arc<tokio_postgres::Config>,
    feed: ChangeFeed,
    events: UnboundedSender<Event>,
    mut claims: UnboundedReceiver<ClaimRequest>,
    alive: Weak<()>,
) {
    let mut last_seq: Option<i64> = None;
    let mut backoff = crate::retry::Backoff::reconnect();
    loop {
        let result = session(&config, &feed, &events, &mut claims, &mut last_seq, &alive).await;
        // Whatever happened, the session's locks are gone.
        let _ = events.send(Event::Owned(HashSet::new()));
        match result {
            Ok(()) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, "change listener lost its connection; reconnecting in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Sequence numbers already published (bounded), so that a catch-up after a reconnect and a late
/// notification never publish a change twice.
#[derive(Default)]
struct Seen {
    order: BTreeSet<i64>,
}

impl Seen {
    fn insert(&mut self, seq: i64) -> bool {
        let fresh = self.order.insert(seq);
        while self.order.len() > 100_000 {
            self.order.pop_first();
        }
        fresh
    }
}

/// Claims every subscription (entity and context source registration subscriptions) not owned by
/// a live instance; returns those this session holds, each named by its
/// [`Collection::owner_key`].
async fn claim(
    client: &tokio_postgres::Client,
    held: &HashSet<(String, String)>,
) -> Result<HashSet<(String, String)>, String> {
    let keys: Vec<String> = held.iter().map(|(t, i)| format!("{t}/{i}")).collect();
    let rows = client
        .query(
            "SELECT tenant, id FROM subscriptions WHERE CASE
               WHEN (tenant || '/' || id) = ANY($1) THEN true
               ELSE pg_try_advisory_lock($2, hashtext(tenant || '/' || id)) END
             UNION ALL
             SELECT tenant, 'csource ' || id FROM csource_subscriptions WHERE CASE
               WHEN (tenant || '/csource ' || id) = ANY($1) THEN true
               ELSE pg_try_advisory_lock($2, hashtext(tenant || '/csource ' || id)) END",
            &[&keys, &OWNER_LOCK],
        )
        .await
        .map_err(|e| with_causes(&e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn session(
    config: &tokio_postgres::Config,
    feed: &ChangeFeed,
    events: &UnboundedSender<Event>,
    requests: &mut UnboundedReceiver<ClaimRequest>,
    last_seq: &mut Option<i64>,
    alive: &Weak<()>,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| with_causes(&e))?;
    let (tx, mut rx) = unbounded_channel();
    // The connection is driven here; notifications go to the loop below, which queries through
    // the client (served by this same driver).
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx
                        .send(Some((n.channel().to_string(), n.payload().to_string())))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "change listener connection failed");
                    let _ = tx.send(None);
                    return;
                }
            }
        }
        let _ = tx.send(None);
    });
    client
        .batch_execute(
            "LISTEN twinlink_changes; LISTEN twinlink_subscriptions; LISTEN twinlink_registrations; LISTEN twinlink_csource_subscriptions",
        )
        .await
        .map_err(|e| with_causes(&e))?;
    let fetch = client
        .prepare(
            "SELECT seq, tenant, id, before, after, at FROM entity_changes WHERE seq = ANY($1) ORDER BY seq",
        )
        .await
        .map_err(|e| with_causes(&e))?;
    let mut seen = Seen::default();
    match *last_seq {
        None => {
            let max: i64 = client
                .query_one("SELECT coalesce(max(seq), 0) FROM entity_changes", &[])
                .await
                .map_err(|e| with_causes(&e))?
                .get(0);
            *last_seq = Some(max);
        }
        Some(last) => {
            // Catch up on what was committed while the connection was away.
            let rows = client
                .query(
                    "SELECT seq, tenant, id, before, after, at FROM entity_changes WHERE seq > $1 ORDER BY seq",
                    &[&last],
                )
                .await
                .map_err(|e| with_causes(&e))?;
            publish(rows, feed, &mut seen, last_seq);
            // Subscriptions may have changed too: ask for a full reload.
            let _ = events.send(Event::ReloadAll);
        }
    }
    let mut held = claim(&client, &HashSet::new()).await?;
    let _ = events.send(Event::Owned(held.clone()));
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    let mut claims = tokio::time::interval(CLAIM_EVERY);
    loop {
        tokio::select! {
            message = rx.recv() => {
                let Some(Some((channel, payload))) = message else {
                    return Err("the listening connection closed".into());
                };
                let mut wanted: Vec<i64> = Vec::new();
                let mut changed_subscriptions = false;
                // Gather every notification already waiting, then read their rows at once.
                let mut next = Some((channel, payload));
                while let Some((channel, payload)) = next.take() {
                    if channel == "twinlink_changes" {
                        wanted.extend(payload.parse::<i64>());
                    } else if let Ok(Value::Array(pair)) = serde_json::from_str::<Value>(&payload) {
                        let text = |i: usize| pair.get(i).and_then(Value::as_str).unwrap_or("").to_string();
                        if channel == Collection::Registrations.channel() {
                            let _ = events.send(Event::RegistrationChanged(text(0), text(1)));
                        } else if channel == Collection::CsourceSubscriptions.channel() {
                            let _ = events.send(Event::CsourceSubscriptionChanged(text(0), text(1)));
                            changed_subscriptions = true;
                        } else {
                            let _ = events.send(Event::Changed(text(0), text(1)));
                            changed_subscriptions = true;
                        }
                    }
                    next = rx.try_recv().ok().flatten();
                }
                if changed_subscriptions {
                    // A new subscription gets an owner at once, not at the next round.
                    let now = claim(&client, &held).await?;
                    if now != held {
                        held = now;
                        let _ = events.send(Event::Owned(held.clone()));
                    }
                }
                if wanted.is_empty() {
                    continue;
                }
                let order: Vec<i64> = wanted.clone();
                let rows = client.query(&fetch, &[&wanted]).await.map_err(|e| with_causes(&e))?;
                // Publish in notification (commit) order, not sequence order.
                let mut by_seq: std::collections::HashMap<i64, tokio_postgres::Row> =
                    rows.into_iter().map(|r| (r.get::<_, i64>(0), r)).collect();
                let ordered: Vec<_> = order.iter().filter_map(|s| by_seq.remove(s)).collect();
                publish(ordered, feed, &mut seen, last_seq);
            }
            request = requests.recv() => {
                let Some(reply) = request else {
                    return Ok(());
                };
                held = claim(&client, &held).await?;
                let _ = events.send(Event::Owned(held.clone()));
                let _ = reply.send(held.clone());
            }
            _ = claims.tick() => {
                if alive.upgrade().is_none() {
                    return Ok(());
                }
                let now = claim(&client, &held).await?;
                if now != held {
                    held = now;
                    let _ = events.send(Event::Owned(held.clone()));
                }
            }
            _ = prune.tick() => {
                let sql = format!("DELETE FROM entity_changes WHERE at < now() - interval '{KEEP_CHANGES}'");
                if let Err(e) = client.execute(sql.as_str(), &[]).await {
                    tracing::warn!(error = %e, "pruning entity_changes failed");
                }
            }
        }
    }
}

fn publish(
    rows: Vec<tokio_postgres::Row>,
    feed: &ChangeFeed,
    seen: &mut Seen,
    last_seq: &mut Option<i64>,
) {
    let mut skipped: HashSet<i64> = HashSet::new();
    for row in rows {
        let seq: i64 = row.get(0);
        *last_seq = Some(last_seq.map_or(seq, |l| l.max(seq)));
        if !seen.insert(seq) {
            continue;
        }
        let entity = |i: usize| -> Option<Arc<crate::model::Entity>> {
            row.try_get::<_, Option<tokio_postgres::types::Json<crate::model::Entity>>>(i)
                .ok()
                .flatten()
                .map(|b| Arc::new(b.0))
        };
        let (before, after) = (entity(3), entity(4));
        if before.is_none() && after.is_none() {
            skipped.insert(seq);
            continue;
        }
        feed.publish(Change {
            tenant: row.get(1),
            id: row.get(2),
            before,
            after,
            at: row.get(5),
        });
    }
    if !skipped.is_empty() {
        tracing::warn!(
            ?skipped,
            "change rows without a decodable entity were skipped"
        );
    }
}
