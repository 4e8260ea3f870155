//! The PostgreSQL side of the change feed and of subscription replication: one dedicated
//! connection per instance LISTENs on `twinlink_changes` (an entity write committed) and
//! `twinlink_subscriptions` (a subscription created, changed or deleted by any instance). A
//! notification only wakes the listener up: it reads every change committed since its position (a
//! snapshot, see [`Position`]) and not before, in one statement that also takes the next position,
//! and publishes them to the local feed followed by that position. Nothing is read twice or skipped,
//! whatever the order of commits and notifications; on a lost connection the listener reconnects
//! with backoff and continues from the same position.
//!
//! The same connection holds this instance's share of the subscriptions (`ownership`), so that
//! exactly one live instance notifies for each, and saves their watermarks. Locks go with the
//! session, so the subscriptions of an instance that crashes or loses the database are taken over
//! by another within one claim round, which first notifies the changes after their watermarks.
//! What a periodic claim round reads (every subscription and every lock) is read on a pooled
//! connection while the listener goes on reading changes: read on the listener's own connection,
//! it held every notification back for 20 to 200 ms every two seconds.

use super::ownership::{self, Owner, Survey};
use super::with_causes;
use crate::store::changes::{Change, ChangeFeed};
use crate::store::coordination::{Event, News, Position};
use crate::store::Collection;
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, Client, NoTls};

pub use ownership::Mark;

/// How often subscriptions are balanced among instances (and whether the store still lives is
/// checked, and changes whose notification was missed are read).
const CLAIM_EVERY: Duration = Duration::from_secs(2);

/// What the rest of the instance asks of the listener, which holds the subscriptions.
pub enum Request {
    /// Claim new subscriptions now; answered once the claim is in the change feed.
    Claim(oneshot::Sender<()>),
    /// Save these watermarks (of subscriptions still held).
    Save(Vec<Mark>, oneshot::Sender<Result<(), String>>),
    /// Save the final watermarks of subscriptions announced as releasing, then unlock them.
    Release(Vec<Mark>),
}

/// Runs the listener until the store (`alive`) is gone: publishes changes and ownership news to
/// `feed`, subscription events to `events`, and serves requests. The periodic claim rounds read
/// their survey on a connection of `pool`.
pub async fn run(
    config: Arc<tokio_postgres::Config>,
    pool: deadpool_postgres::Pool,
    feed: ChangeFeed,
    events: UnboundedSender<Event>,
    mut requests: UnboundedReceiver<Request>,
    alive: Weak<()>,
) {
    let mut position: Option<Arc<Position>> = None;
    let mut backoff = crate::retry::Backoff::reconnect();
    loop {
        let result = session(
            &config,
            &pool,
            &feed,
            &events,
            &mut requests,
            &mut position,
            &alive,
        )
        .await;
        // Whatever happened, the session's locks are gone.
        feed.tell(News::Lost);
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

/// The changes of rows read from `entity_changes` (seq, tenant, id, before, after, at, xid as text,
/// in this order; further columns are ignored); rows without a decodable entity are skipped (and
/// logged).
pub fn changes(rows: Vec<tokio_postgres::Row>) -> Vec<Change> {
    let mut skipped = Vec::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let entity = |i: usize| -> Option<Arc<crate::model::Entity>> {
            row.try_get::<_, Option<tokio_postgres::types::Json<crate::model::Entity>>>(i)
                .ok()
                .flatten()
                .map(|b| Arc::new(b.0))
        };
        let at: Result<chrono::DateTime<chrono::Utc>, _> = row.try_get(5);
        // The stored body before the write may still hold what had expired by then (the reaper
        // had not run): the change shows it as it was served, as on the embedded store.
        let before = entity(3).and_then(|b| match &at {
            Ok(at) => crate::model::expiry::live(&b, *at),
            Err(_) => Some(b),
        });
        let after = entity(4);
        let xid = row
            .try_get::<_, Option<&str>>(6)
            .ok()
            .flatten()
            .and_then(|x| x.parse().ok());
        let fields = (row.try_get(1), row.try_get(2), at);
        match (xid, fields, before.is_some() || after.is_some()) {
            (Some(xid), (Ok(tenant), Ok(id), Ok(at)), true) => out.push(Change {
                tenant,
                id,
                before,
                after,
                at,
                xid: Some(xid),
            }),
            _ => skipped.push(row.try_get::<_, Option<i64>>(0).ok().flatten()),
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            ?skipped,
            "change rows without a decodable entity were skipped"
        );
    }
    out
}

/// Reads the changes committed after `position`, publishes them followed by the new position
/// (when there were any), and moves `position` there.
async fn catch_up(
    client: &Client,
    feed: &ChangeFeed,
    position: &mut Arc<Position>,
) -> Result<(), String> {
    // Sent unnamed, planned with its position every time: a cached generic plan cannot know
    // how few rows lie past the position and scans the whole table (minutes of bodies, gigabytes
    // at thousands of changes a second), compiled by the JIT on top.
    let mut rows = client
        .query_typed(
            FETCH,
            &[(&position.text(), tokio_postgres::types::Type::TEXT)],
        )
        .await
        .map_err(|e| with_causes(&e))?;
    let next = rows
        .first()
        .and_then(|r| r.try_get::<_, &str>(7).ok())
        .and_then(Position::parse)
        .ok_or("the change query answered no position")?;
    // The row of the outer join when nothing changed.
    rows.retain(|r| r.try_get::<_, Option<i64>>(0).ok().flatten().is_some());
    let changed = !rows.is_empty();
    for change in changes(rows) {
        feed.publish(change);
    }
    *position = Arc::new(next);
    // A position without changes is not worth telling: nothing committed between the last one
    // told and this one (and every transaction, the saving of watermarks included, moves it).
    if changed {
        feed.tell(News::Position(position.clone()));
    }
    Ok(())
}

/// Reads the changes committed after the position $1 (and not before it) and, last, the position
/// they bring the reader to (one row without a change when there is none).
const FETCH: &str =
    "SELECT c.seq, c.tenant, c.id, c.before, c.after, c.at, c.xid::text, s.now::text
    FROM (SELECT pg_current_snapshot() AS now) s
    LEFT JOIN entity_changes c ON c.xid >= pg_snapshot_xmin($1::text::pg_snapshot)
      AND NOT pg_visible_in_snapshot(c.xid, $1::text::pg_snapshot)
    ORDER BY c.seq";

async fn session(
    config: &tokio_postgres::Config,
    pool: &deadpool_postgres::Pool,
    feed: &ChangeFeed,
    events: &UnboundedSender<Event>,
    requests: &mut UnboundedReceiver<Request>,
    position: &mut Option<Arc<Position>>,
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
    let mut at = match position.clone() {
        None => {
            let now: String = client
                .query_one("SELECT pg_current_snapshot()::text", &[])
                .await
                .map_err(|e| with_causes(&e))?
                .get(0);
            Arc::new(Position::parse(&now).ok_or_else(|| format!("not a snapshot: {now}"))?)
        }
        Some(mut at) => {
            // Catch up on what was committed while the connection was away; subscriptions may
            // have changed too: ask for a full reload.
            catch_up(&client, feed, &mut at).await?;
            let _ = events.send(Event::ReloadAll);
            at
        }
    };
    *position = Some(at.clone());
    feed.tell(News::Position(at.clone()));
    Owner::start(&client).await?;
    let mut owner = Owner::default();
    owner.balance(&client, &at, feed).await?;
    let mut claims = tokio::time::interval(CLAIM_EVERY);
    // The survey of the periodic claim round being read on a pooled connection.
    let mut survey: Option<tokio::task::JoinHandle<Result<Survey, String>>> = None;
    loop {
        tokio::select! {
            message = rx.recv() => {
                let Some(Some((channel, payload))) = message else {
                    return Err("the listening connection closed".into());
                };
                let mut changed = false;
                let mut changed_subscriptions = false;
                // Gather every notification already waiting, then read the changes at once.
                let mut next = Some((channel, payload));
                while let Some((channel, payload)) = next.take() {
                    if channel == "twinlink_changes" {
                        changed = true;
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
                if changed {
                    catch_up(&client, feed, &mut at).await?;
                    *position = Some(at.clone());
                }
                if changed_subscriptions {
                    // A new subscription gets an owner at once, not at the next round.
                    owner.balance(&client, &at, feed).await?;
                }
            }
            request = requests.recv() => {
                match request {
                    None => return Ok(()),
                    Some(Request::Claim(reply)) => {
                        owner.balance(&client, &at, feed).await?;
                        let _ = reply.send(());
                    }
                    Some(Request::Save(marks, reply)) => {
                        let _ = reply.send(owner.save(&client, &marks).await);
                    }
                    Some(Request::Release(marks)) => owner.release(&client, &marks).await?,
                }
            }
            _ = claims.tick() => {
                if alive.upgrade().is_none() {
                    return Ok(());
                }
                catch_up(&client, feed, &mut at).await?;
                *position = Some(at.clone());
                if survey.is_none() {
                    let (pool, held) = (pool.clone(), owner.held());
                    survey = Some(tokio::spawn(async move {
                        let client = pool.get().await.map_err(|e| with_causes(&e))?;
                        Survey::read(&client, held).await
                    }));
                }
            }
            read = async { survey.as_mut().expect("guarded by the condition").await }, if survey.is_some() => {
                survey = None;
                match read {
                    Ok(Ok(read)) => owner.settle(&client, &at, feed, read).await?,
                    Ok(Err(e)) => tracing::warn!(error = %e, "a claim round could not read the subscriptions"),
                    Err(e) => tracing::warn!(error = %e, "a claim round's survey failed"),
                }
            }
        }
    }
}
