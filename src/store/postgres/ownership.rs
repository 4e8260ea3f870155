//! Which instance notifies for which subscription, and the watermarks that let another continue
//! where it stopped. The listener's connection (`listen`) holds a session advisory lock per owned
//! subscription and one per instance, by which instances count each other. Each claim round aims
//! at an even share, ceil(subscriptions / instances): an instance above it releases the surplus
//! (after saving its watermarks), one below it takes unowned subscriptions, first notifying the
//! changes committed since their watermarks (`News::Claimed`). A new subscription (without a
//! watermark yet) is taken by the first instance that sees it whatever its share, and starts at
//! that instance's position. See docs/subscriptions.md.

use super::with_causes;
use crate::store::changes::ChangeFeed;
use crate::store::coordination::{Key, News, Position};
use crate::store::Collection;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio_postgres::Client;

/// First key of the advisory locks that say which instance owns a subscription (the second is a
/// hash of tenant and owner key; a collision only puts two subscriptions with the same owner).
const OWNER_LOCK: i32 = 0x7473_7562; // "tsub"

/// First key of the advisory lock each instance's listener holds (the second is its process id),
/// so that instances can count each other.
const INSTANCE_LOCK: i32 = 0x7469_6e73; // "tins"

/// How long change rows are kept at least (for listeners catching up after a reconnect).
const KEEP_CHANGES: &str = "5 minutes";

/// How long change rows are kept at most, however far behind a watermark is: the bound on what a
/// subscription that nobody advances (every instance stopped) can keep.
const KEEP_CHANGES_AT_MOST: &str = "1 hour";

/// A watermark to save: the subscription and the position up to which it is done.
pub type Mark = (Key, Arc<Position>);

/// The subscriptions this session holds.
#[derive(Default)]
pub struct Owner {
    held: HashSet<Key>,
    /// Announced as released, waiting for their final watermarks.
    releasing: HashSet<Key>,
}

/// What a claim round reads: the instances, the owner locks held by any session and every
/// subscription. Reading it takes tens of milliseconds at a thousand subscriptions (more while the
/// subscriptions table is bloated by statistics updates), so the periodic round reads it on a
/// pooled connection, not on the listener's, whose change reading would wait meanwhile.
pub struct Survey {
    instances: i64,
    /// The second keys of the owner locks granted to any session.
    locked: HashSet<i64>,
    /// Every subscription: its key, whether it is new (an entity subscription without a
    /// watermark) and the second key of its owner lock.
    subscriptions: Vec<(Key, bool, i64)>,
    /// What this session held when the survey began.
    held_before: HashSet<Key>,
}

impl Survey {
    /// Reads the survey on `client` (any session: none of it depends on the session's locks).
    /// The locks and subscriptions are matched in a hash set, not joined in SQL: the planner (which
    /// sees no statistics for pg_locks) compared every lock with every subscription, 0.1 s at 600
    /// subscriptions, paid twice per subscription created.
    pub async fn read(client: &Client, held_before: HashSet<Key>) -> Result<Survey, String> {
        let (instances, locked, rows) = futures_util::future::try_join3(
            client.query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND classid = $1::int4::oid AND objsubid = 2
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&INSTANCE_LOCK],
            ),
            client.query(
                "SELECT objid::int8 FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND classid = $1::int4::oid AND objsubid = 2
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&OWNER_LOCK],
            ),
            client.query(
                "WITH subs AS (
                   SELECT tenant, id AS key, NOT EXISTS (SELECT 1 FROM subscription_watermarks w
                     WHERE w.tenant = s.tenant AND w.id = s.id) AS new FROM subscriptions s
                   UNION ALL
                   SELECT tenant, 'csource ' || id, false FROM csource_subscriptions)
                 SELECT tenant, key, new, hashtext(tenant || '/' || key)::oid::int8 FROM subs
                 ORDER BY random()",
                &[],
            ),
        )
        .await
        .map_err(|e| with_causes(&e))?;
        Ok(Survey {
            instances: instances.get(0),
            locked: locked.iter().map(|r| r.get(0)).collect(),
            subscriptions: rows
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2), r.get(3)))
                .collect(),
            held_before,
        })
    }
}

/// The decision of a claim round ([`Owner::plan`]).
#[derive(Debug, PartialEq)]
struct Plan {
    /// Locks to give up: their subscriptions are gone.
    gone: Vec<Key>,
    /// Held subscriptions above the share, to announce as releasing.
    release: Vec<Key>,
    /// Subscriptions to try to lock.
    claim: Vec<Key>,
}

fn split(keys: &[Key]) -> (Vec<&str>, Vec<&str>) {
    keys.iter().map(|(t, k)| (t.as_str(), k.as_str())).unzip()
}

/// Whether an owner key names an entity subscription (those have watermarks; registration
/// subscriptions are not notified of entity changes).
fn is_entity(key: &Key) -> bool {
    Collection::of_owner_key(&key.1).0 == Collection::Subscriptions
}

impl Owner {
    /// Announces this session as an instance (its lock goes with the session).
    pub async fn start(client: &Client) -> Result<(), String> {
        client
            .execute(
                "SELECT pg_advisory_lock($1, pg_backend_pid())",
                &[&INSTANCE_LOCK],
            )
            .await
            .map_err(|e| with_causes(&e))?;
        Ok(())
    }

    /// One claim round at `position` (everything up to it is published): gives up the locks of
    /// deleted subscriptions, announces the surplus above an even share as releasing, and claims
    /// new subscriptions and, up to the share, unowned ones.
    pub async fn balance(
        &mut self,
        client: &Client,
        position: &Arc<Position>,
        feed: &ChangeFeed,
    ) -> Result<(), String> {
        let survey = Survey::read(client, self.held.clone()).await?;
        self.settle(client, position, feed, survey).await
    }

    /// The subscriptions held now, for a [`Survey`] read elsewhere.
    pub fn held(&self) -> HashSet<Key> {
        self.held.clone()
    }

    /// What a claim round does with `survey`, decided without the database: which locks to give
    /// up (held when the survey began and no longer a subscription), then either the surplus
    /// above an even share to release or the subscriptions to try to lock (new ones whatever the
    /// share, unowned ones up to it). Not those this session locked since the survey began: a
    /// second lock of an advisory key this session holds would succeed (they stack), and the
    /// subscription would be claimed twice, its missed changes notified again.
    fn plan(&self, survey: &Survey) -> Plan {
        let present: HashSet<&Key> = survey.subscriptions.iter().map(|(key, _, _)| key).collect();
        let gone: Vec<Key> = self
            .held
            .iter()
            .filter(|k| survey.held_before.contains(*k) && !present.contains(k))
            .cloned()
            .collect();
        let kept = |k: &&Key| !gone.contains(k);
        let share = present
            .len()
            .div_ceil(usize::try_from(survey.instances).unwrap_or(1).max(1));
        let held: Vec<&Key> = self.held.iter().filter(kept).collect();
        let keeping = held.len() - held.iter().filter(|k| self.releasing.contains(**k)).count();
        if keeping > share {
            let mut surplus: Vec<Key> = held
                .into_iter()
                .filter(|k| !self.releasing.contains(*k))
                .cloned()
                .collect();
            surplus.sort();
            let release = surplus.split_off(share);
            return Plan {
                gone,
                release,
                claim: Vec::new(),
            };
        }
        let mut room = share - keeping;
        let mut claim = Vec::new();
        for (key, new, lock) in &survey.subscriptions {
            if survey.locked.contains(lock) || self.held.contains(key) {
                continue;
            }
            if *new || room > 0 {
                room = room.saturating_sub(usize::from(!new));
                claim.push(key.clone());
            }
        }
        Plan {
            gone,
            release: Vec::new(),
            claim,
        }
    }

    /// The claim round of a `survey` (read on this or another connection): what [`balance`]
    /// does after reading. Only subscriptions held when the survey began are given up as gone, so
    /// that one claimed since (and absent from the survey) is kept.
    ///
    /// [`balance`]: Owner::balance
    pub async fn settle(
        &mut self,
        client: &Client,
        position: &Arc<Position>,
        feed: &ChangeFeed,
        survey: Survey,
    ) -> Result<(), String> {
        let Plan {
            gone,
            release,
            claim: wanted,
        } = self.plan(&survey);
        if !gone.is_empty() {
            self.unlock(client, &gone).await?;
        }
        if !release.is_empty() {
            self.releasing.extend(release.iter().cloned());
            feed.tell(News::Releasing(release));
            return Ok(());
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let (tenants, keys) = split(&wanted);
        let got: Vec<Key> = client
            .query(
                "SELECT t, k FROM unnest($2::text[], $3::text[]) AS u(t, k)
                 WHERE pg_try_advisory_lock($1, hashtext(t || '/' || k))",
                &[&OWNER_LOCK, &tenants, &keys],
            )
            .await
            .map_err(|e| with_causes(&e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if got.is_empty() {
            return Ok(());
        }
        self.held.extend(got.iter().cloned());
        let news = claimed(client, position, got).await?;
        feed.tell(news);
        Ok(())
    }

    /// Saves watermarks of the subscriptions this session holds.
    pub async fn save(&self, client: &Client, marks: &[Mark]) -> Result<(), String> {
        let mine: Vec<&Mark> = marks
            .iter()
            .filter(|(key, _)| self.held.contains(key) && is_entity(key))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        let (tenants, ids): (Vec<&str>, Vec<&str>) = mine
            .iter()
            .map(|((t, i), _)| (t.as_str(), i.as_str()))
            .unzip();
        let positions: Vec<&str> = mine.iter().map(|(_, p)| p.text()).collect();
        client
            .execute(
                "INSERT INTO subscription_watermarks (tenant, id, position, saved_at)
                 SELECT t, i, p::pg_snapshot, now()
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(t, i, p)
                 ON CONFLICT (tenant, id) DO UPDATE
                   SET position = excluded.position, saved_at = excluded.saved_at",
                &[&tenants, &ids, &positions],
            )
            .await
            .map_err(|e| with_causes(&e))?;
        Ok(())
    }

    /// Saves the final watermarks of released subscriptions, then gives them up.
    pub async fn release(&mut self, client: &Client, marks: &[Mark]) -> Result<(), String> {
        self.save(client, marks).await?;
        let keys: Vec<Key> = marks
            .iter()
            .map(|(key, _)| key.clone())
            .filter(|key| self.releasing.contains(key))
            .collect();
        self.unlock(client, &keys).await
    }

    async fn unlock(&mut self, client: &Client, keys: &[Key]) -> Result<(), String> {
        let (tenants, ids) = split(keys);
        client
            .execute(
                "SELECT pg_advisory_unlock($1, hashtext(t || '/' || k))
                 FROM unnest($2::text[], $3::text[]) AS u(t, k)",
                &[&OWNER_LOCK, &tenants, &ids],
            )
            .await
            .map_err(|e| with_causes(&e))?;
        for key in keys {
            self.held.remove(key);
            self.releasing.remove(key);
        }
        Ok(())
    }
}

/// The news of subscriptions just locked at `position`: their watermarks (a new subscription's
/// is set to `position`) and the changes committed after the oldest of them up to `position`.
async fn claimed(client: &Client, position: &Arc<Position>, got: Vec<Key>) -> Result<News, String> {
    let entity: Vec<Key> = got.iter().filter(|k| is_entity(k)).cloned().collect();
    let (tenants, ids) = split(&entity);
    let marks: Vec<(Key, Arc<Position>)> = client
        .query(
            "SELECT w.tenant, w.id, w.position::text FROM subscription_watermarks w
             JOIN unnest($1::text[], $2::text[]) AS u(t, i) ON w.tenant = u.t AND w.id = u.i",
            &[&tenants, &ids],
        )
        .await
        .map_err(|e| with_causes(&e))?
        .iter()
        .filter_map(|r| Some(((r.get(0), r.get(1)), Arc::new(Position::parse(r.get(2))?))))
        .collect();
    // A subscription without a watermark starts here.
    client
        .execute(
            "INSERT INTO subscription_watermarks (tenant, id, position)
             SELECT t, i, $3::text::pg_snapshot FROM unnest($1::text[], $2::text[]) AS u(t, i)
             ON CONFLICT DO NOTHING",
            &[&tenants, &ids, &position.text()],
        )
        .await
        .map_err(|e| with_causes(&e))?;
    let oldest = marks.iter().map(|(_, p)| p.oldest()).min();
    let missed = match oldest {
        None => Vec::new(),
        Some(oldest) => {
            let tenants: Vec<&str> = marks.iter().map(|((t, _), _)| t.as_str()).collect();
            let rows = client
                .query(
                    "SELECT seq, tenant, id, before, after, at, xid::text FROM entity_changes
                     WHERE tenant = ANY($1) AND xid >= $2::text::xid8
                       AND pg_visible_in_snapshot(xid, $3::text::pg_snapshot)
                     ORDER BY seq",
                    &[&tenants, &oldest.to_string(), &position.text()],
                )
                .await
                .map_err(|e| with_causes(&e))?;
            super::listen::changes(rows)
        }
    };
    let mut marked: std::collections::HashMap<Key, Arc<Position>> = marks.into_iter().collect();
    let subs = got
        .into_iter()
        .map(|key| {
            let mark = marked.remove(&key);
            (key, mark)
        })
        .collect();
    Ok(News::Claimed { subs, missed })
}

/// How often change rows are pruned: often enough that each round deletes a few seconds' worth
/// (at 2,000 changes a second a round a minute deleted 120,000 rows, about 400 MB of bodies).
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// Prunes ([`prune`]) every [`PRUNE_EVERY`] on a pooled connection, once the schema is migrated,
/// until the store (`alive`) is gone. Not on the listener's connection: a round that deletes many
/// rows would hold back the reading of changes, and so every notification, while it runs.
pub async fn prune_every(
    pool: deadpool_postgres::Pool,
    migrated: Arc<AtomicBool>,
    alive: Weak<()>,
) {
    let mut rounds = tokio::time::interval(PRUNE_EVERY);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        if !migrated.load(Ordering::Acquire) {
            continue;
        }
        match pool.get().await {
            Ok(client) => prune(&client).await,
            Err(e) => {
                tracing::warn!(error = %with_causes(&e), "pruning entity_changes: no connection")
            }
        }
    }
}

/// Deletes the watermarks of deleted subscriptions, and the change rows no watermark needs any
/// more: older than [`KEEP_CHANGES`] and either before every watermark or older than
/// [`KEEP_CHANGES_AT_MOST`].
async fn prune(client: &Client) {
    let sql = format!(
        "DELETE FROM subscription_watermarks w WHERE NOT EXISTS
           (SELECT 1 FROM subscriptions s WHERE s.tenant = w.tenant AND s.id = w.id);
         DELETE FROM entity_changes WHERE at < now() - interval '{KEEP_CHANGES}'
           AND (at < now() - interval '{KEEP_CHANGES_AT_MOST}'
             OR NOT EXISTS (SELECT 1 FROM subscription_watermarks)
             OR xid < (SELECT min(pg_snapshot_xmin(position)) FROM subscription_watermarks))"
    );
    if let Err(e) = client.batch_execute(&sql).await {
        tracing::warn!(error = %with_causes(&e), "pruning entity_changes failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        (String::new(), id.to_string())
    }

    /// A survey of `subs` (id, new, lock) with `locked` lock keys granted and `instances` instances,
    /// begun while this session held `held_before`.
    fn survey(
        instances: i64,
        subs: &[(&str, bool, i64)],
        locked: &[i64],
        held_before: &[&str],
    ) -> Survey {
        Survey {
            instances,
            locked: locked.iter().copied().collect(),
            subscriptions: subs
                .iter()
                .map(|(id, new, l)| (key(id), *new, *l))
                .collect(),
            held_before: held_before.iter().map(|id| key(id)).collect(),
        }
    }

    fn owner(held: &[&str]) -> Owner {
        Owner {
            held: held.iter().map(|id| key(id)).collect(),
            releasing: HashSet::new(),
        }
    }

    #[test]
    fn a_subscription_locked_after_the_survey_began_is_neither_given_up_nor_locked_again() {
        // "b" was locked by this session (a subscription just created) after the survey began:
        // the survey neither lists it nor, had it listed it, knew its lock.
        let o = owner(&["a", "b"]);
        let absent = o.plan(&survey(1, &[("a", false, 1)], &[1], &["a"]));
        assert!(absent.gone.is_empty(), "{absent:?}");
        let stale = o.plan(&survey(1, &[("a", false, 1), ("b", true, 2)], &[1], &["a"]));
        assert!(stale.claim.is_empty(), "{stale:?}");
    }

    #[test]
    fn a_deleted_subscription_is_given_up_and_unowned_ones_are_claimed_up_to_the_share() {
        // Two instances, four subscriptions: a share of two. "x" was deleted; "c" is locked by
        // the other instance; "d" and "e" are unowned, "f" new.
        let o = owner(&["a", "x"]);
        let plan = o.plan(&survey(
            2,
            &[
                ("a", false, 1),
                ("c", false, 3),
                ("d", false, 4),
                ("f", true, 6),
            ],
            &[1, 3],
            &["a", "x"],
        ));
        assert_eq!(plan.gone, vec![key("x")]);
        // Keeping "a", one more up to the share ("d"), and the new one whatever the share.
        assert_eq!(plan.claim, vec![key("d"), key("f")]);
        assert!(plan.release.is_empty());
    }

    #[test]
    fn above_the_share_the_surplus_is_released() {
        let o = owner(&["a", "b", "c", "d"]);
        let plan = o.plan(&survey(
            2,
            &[
                ("a", false, 1),
                ("b", false, 2),
                ("c", false, 3),
                ("d", false, 4),
            ],
            &[1, 2, 3, 4],
            &["a", "b", "c", "d"],
        ));
        assert_eq!(plan.release, vec![key("c"), key("d")]);
        assert!(plan.claim.is_empty() && plan.gone.is_empty());
    }
}
