//! Persistence behind one interface: the embedded store (default, zero setup) and, later, PostgreSQL.
//! Every write is a read-modify-write of one entity, done atomically inside the store, so that the
//! services can decide on the current state without races and nothing is half-applied.

pub mod aggregate;
pub mod backend;
pub mod changes;
pub mod combine;
pub mod coordination;
pub mod embedded;
pub mod entity_maps;
pub mod history;
pub mod json_text;
pub mod postgres;
pub mod rollup;

use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::model::{expiry, Entity};
pub use backend::Backend;
use combine::Combiner;
use coordination::Coordination;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The tenant of requests without an `NGSILD-Tenant` header.
pub const DEFAULT_TENANT: &str = "";

/// What a modification decides to do with the entity it was shown.
#[derive(Debug)]
pub enum Write {
    /// Store this entity (create or replace).
    Put(Entity),
    /// Remove the entity.
    Delete,
    /// Change nothing.
    Keep,
}

/// What a read-modify-write decided: the write, its result and, when the caller chooses them (the
/// temporal API records instances with their own times), the history records; otherwise they
/// are derived from the change (`history::records_of`). The temporal API also removes history
/// records (`removal`), in the same transaction as the rest of the decision.
pub struct Decision<R> {
    /// The write.
    pub write: Write,
    /// The history records to keep instead of the derived ones.
    pub records: Option<Vec<history::InstanceChange>>,
    /// History records of the entity to remove before `records` are added.
    pub removal: Option<Removal>,
    /// What the caller gets back.
    pub result: R,
}

/// History records a decision removes (temporal instances replaced or deleted), and what the
/// step answers when there were none: a temporal deletion of nothing is ResourceNotFound, known
/// only once the store has looked, inside the transaction.
pub struct Removal {
    /// Which records.
    pub which: history::HistoryRemoval,
    /// The step's result instead of the decision's when no record was removed (what the step
    /// wrote is committed all the same).
    pub if_none: Option<NgsiError>,
}

impl<R> From<(Write, R)> for Decision<R> {
    fn from((write, result): (Write, R)) -> Decision<R> {
        Decision {
            write,
            records: None,
            removal: None,
            result,
        }
    }
}

/// One entity's read-modify-write decision: shown the entity (or `None`), it chooses a write and
/// a result, or fails and changes nothing.
pub type Decide<R> = Box<dyn FnOnce(Option<&Entity>) -> NgsiResult<Decision<R>> + Send>;

/// The id of an entity and the decision to run on it, one element of [`Store::modify_many`].
pub type Step<R> = (String, Decide<R>);

/// Runs the steps of a batch in order against a working copy of the entities they address
/// (`load` gives the stored state of an id), and returns each step's result, the final state of
/// every id that a step wrote (`None`: deleted), the history records of every step and the
/// history removals. A removal also takes the records of earlier steps of the batch that it
/// selects, so the stores apply the removals to the stored records before adding the new ones.
/// Both stores commit what this returns in one transaction.
pub fn run_steps<R>(
    steps: Vec<Step<R>>,
    mut load: impl FnMut(&str) -> Option<Arc<Entity>>,
) -> Planned<R> {
    let mut working: indexmap::IndexMap<String, Option<Arc<Entity>>> = indexmap::IndexMap::new();
    let mut planned = Planned {
        results: Vec::with_capacity(steps.len()),
        writes: indexmap::IndexMap::new(),
        changes: Vec::new(),
        history: Vec::new(),
        removals: Vec::new(),
    };
    let now = chrono::Utc::now();
    for (id, decide) in steps {
        // Decisions see the entity as it stands now: what has expired is gone (and a write of
        // the entity drops it from the stored state too).
        let current = working
            .entry(id.clone())
            .or_insert_with(|| load(&id).and_then(|e| expiry::live(&e, now)));
        let Decision {
            write,
            records,
            removal,
            result,
        } = match decide(current.as_deref()) {
            Ok(decision) => decision,
            Err(e) => {
                planned.results.push(Err(e));
                continue;
            }
        };
        if let Some(Removal { which, if_none }) = removal {
            let kept = planned.history.len();
            planned
                .history
                .retain(|(of, r)| *of != id || !which.matches(r));
            planned.removals.push(PlannedRemoval {
                step: planned.results.len(),
                id: id.clone(),
                earlier: kept - planned.history.len(),
                which,
                if_none,
            });
        }
        let records = records.unwrap_or_else(|| history::records_of(current.as_deref(), &write));
        planned
            .history
            .extend(records.into_iter().map(|record| (id.clone(), record)));
        let after = match write {
            Write::Keep => None,
            Write::Put(e) => Some(Some(Arc::new(e))),
            Write::Delete => Some(None),
        };
        if let Some(after) = after {
            planned.changes.push(PlannedChange {
                id: id.clone(),
                before: std::mem::replace(current, after.clone()),
                after: after.clone(),
            });
            planned.writes.insert(id, after);
        }
        planned.results.push(Ok(result));
    }
    planned
}

/// What a batch of steps decided (see [`run_steps`]).
pub struct Planned<R> {
    /// Each step's result, in step order.
    pub results: Vec<NgsiResult<R>>,
    /// The final state of every written id, in first-write order (`None`: deleted).
    pub writes: indexmap::IndexMap<String, Option<Arc<Entity>>>,
    /// Every write, in step order, for the change feed: two steps that write one entity (two
    /// requests taken together by group commit, or two entries of one batch) are two changes,
    /// each notified as it would have been alone, not one from the first state to the last.
    pub changes: Vec<PlannedChange>,
    /// The history records of every step, with the entity id they belong to.
    pub history: Vec<(String, history::InstanceChange)>,
    /// The history removals of the steps, in step order: the stores apply them to the stored
    /// records before adding `history`.
    pub removals: Vec<PlannedRemoval>,
}

/// One write of one entity as planned by [`run_steps`]: the entity before and after it (`None`:
/// absent).
pub struct PlannedChange {
    /// The entity written.
    pub id: String,
    /// Before this write: as stored (less what had expired), or as the step before left it.
    pub before: Option<Arc<Entity>>,
    /// After this write (`None`: deleted).
    pub after: Option<Arc<Entity>>,
}

/// A [`Removal`] as planned by [`run_steps`].
pub struct PlannedRemoval {
    /// The index of the step that asked for it.
    pub step: usize,
    /// The entity whose records are removed.
    pub id: String,
    /// Which records.
    pub which: history::HistoryRemoval,
    /// How many records of earlier steps of the batch it took.
    pub earlier: usize,
    /// See [`Removal::if_none`].
    pub if_none: Option<NgsiError>,
}

impl<R> Planned<R> {
    /// Whether committing would change nothing (no write, no history record, no removal).
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.history.is_empty() && self.removals.is_empty()
    }

    /// The results of the steps once the store has applied the removals, `removed[i]` being how
    /// many stored records `removals[i]` removed.
    pub fn settle(self, removed: &[usize]) -> Vec<NgsiResult<R>> {
        let mut results = self.results;
        for (removal, stored) in self.removals.into_iter().zip(removed) {
            if let (Some(e), 0) = (removal.if_none, removal.earlier + stored) {
                results[removal.step] = Err(e);
            }
        }
        results
    }
}

/// A chunk of the ids of the entities that match a query, in the store's id order (see
/// [`Store::matching_ids`]).
#[derive(Debug, Default)]
pub struct IdPage {
    /// The matching ids.
    pub ids: Vec<String>,
    /// Where the next chunk starts (after this id); None when no entity is left to look at.
    pub next: Option<String>,
}

/// Whether a write's changes go to the change feed (and so to subscriptions): every write of a
/// client does; the reaper's removal of what expired does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Publish the changes.
    Changes,
    /// Publish nothing.
    Nothing,
}

/// The steps that remove what has expired from the stored state of each of `ids`: the decision
/// is shown the entity as it stands now (see [`run_steps`]), so it writes that back, or deletes
/// the entity when it has expired itself. History is derived from the live view, which is what
/// gets written: nothing is recorded.
pub fn reap_steps(ids: Vec<String>) -> Vec<Step<()>> {
    ids.into_iter()
        .map(|id| {
            let decide: Decide<()> = Box::new(|current| {
                let write = match current {
                    Some(live) => Write::Put(live.clone()),
                    None => Write::Delete,
                };
                Ok(Decision::from((write, ())))
            });
            (id, decide)
        })
        .collect()
}

/// Writes with at most this many steps are combined with concurrent ones (see [`combine`]);
/// larger batches are one write on their own already.
const COMBINED_STEPS_MAX: usize = 64;

/// The most jobs one combined write or read takes.
const COMBINED_JOBS_MAX: usize = 256;

/// Concurrent combined reads by id, where the backend combines them.
const READ_LANES: usize = 4;

/// Where a combined write's outcomes go: one entry per step of the job, or the store's failure.
type WriteReply = oneshot::Sender<NgsiResult<Vec<NgsiResult<()>>>>;

/// One caller's write, waiting to be combined.
struct WriteJob {
    tenant: String,
    steps: Vec<Step<()>>,
    reply: WriteReply,
}

/// One caller's read of an entity by id, waiting to be combined.
struct ReadJob {
    tenant: String,
    id: String,
    reply: oneshot::Sender<NgsiResult<Option<Arc<Entity>>>>,
}

/// The configured store: a [`Backend`], with concurrent small writes (and, where the backend
/// wants it, reads by id) combined into one database operation each (see [`combine`]), the live
/// view of what expired, typed results and the audit of written ids.
pub struct Store {
    backend: Arc<dyn Backend>,
    writes: Combiner<WriteJob>,
    reads: Option<Combiner<ReadJob>>,
}

/// Commits a backend's write and records its size and latency for /metrics.
async fn commit(
    backend: &dyn Backend,
    tenant: &str,
    steps: Vec<Step<()>>,
    announce: Announce,
) -> NgsiResult<Vec<NgsiResult<()>>> {
    let (started, size) = (std::time::Instant::now(), steps.len());
    let outcome = backend.modify_many(tenant, steps, announce).await;
    crate::telemetry::metrics::store_commit(size, started.elapsed().as_secs_f64(), outcome.is_ok());
    outcome
}

/// Runs a group of combined writes: per tenant, every job's steps in arrival order as one
/// commit, and each job gets the outcomes of its own steps.
async fn write_group(backend: &dyn Backend, jobs: Vec<WriteJob>) {
    let mut by_tenant: indexmap::IndexMap<String, Vec<WriteJob>> = indexmap::IndexMap::new();
    for job in jobs {
        by_tenant.entry(job.tenant.clone()).or_default().push(job);
    }
    for (tenant, jobs) in by_tenant {
        let mut steps = Vec::new();
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.steps.len(), job.reply));
            steps.extend(job.steps);
        }
        match commit(backend, &tenant, steps, Announce::Changes).await {
            Ok(results) => {
                let mut results = results.into_iter();
                for (n, reply) in replies {
                    let _ = reply.send(Ok(results.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Runs a group of combined reads by id: one read per tenant.
async fn read_group(backend: &dyn Backend, jobs: Vec<ReadJob>) {
    let mut by_tenant: indexmap::IndexMap<String, Vec<ReadJob>> = indexmap::IndexMap::new();
    for job in jobs {
        by_tenant.entry(job.tenant.clone()).or_default().push(job);
    }
    for (tenant, jobs) in by_tenant {
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        match backend.get_many(&tenant, &ids).await {
            Ok(found) => {
                for job in jobs {
                    let _ = job.reply.send(Ok(found.get(&job.id).cloned()));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The caller's error when its combined operation was dropped unanswered (the runtime running
/// the lanes stopped): nothing is acknowledged, the client may retry.
fn abandoned() -> NgsiError {
    NgsiError::new(
        ErrorKind::ServiceUnavailable,
        "the operation was abandoned because the store is shutting down; retry",
    )
}

/// Typed steps made into the backend's untyped ones: each step's result waits in its slot until
/// the commit says whether the step took effect (see [`Typed::settle`]).
struct Typed<R> {
    slots: Arc<std::sync::Mutex<Vec<Option<R>>>>,
}

impl<R: Send + 'static> Typed<R> {
    fn split(steps: Vec<Step<R>>) -> (Vec<Step<()>>, Typed<R>) {
        let slots = Arc::new(std::sync::Mutex::new(
            (0..steps.len()).map(|_| None).collect::<Vec<_>>(),
        ));
        let untyped = steps
            .into_iter()
            .enumerate()
            .map(|(i, (id, decide))| {
                let slots = slots.clone();
                let untyped: Decide<()> = Box::new(move |current| {
                    let d = decide(current)?;
                    if let Ok(mut slots) = slots.lock() {
                        slots[i] = Some(d.result);
                    }
                    Ok(Decision {
                        write: d.write,
                        records: d.records,
                        removal: d.removal,
                        result: (),
                    })
                });
                (id, untyped)
            })
            .collect();
        (untyped, Typed { slots })
    }

    /// Each step's result: its outcome, with the result its decision gave when it took effect.
    fn settle(self, outcomes: Vec<NgsiResult<()>>) -> Vec<NgsiResult<R>> {
        let mut slots = match self.slots.lock() {
            Ok(mut slots) => std::mem::take(&mut *slots),
            Err(_) => Vec::new(),
        };
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| {
                outcome.and_then(|()| {
                    slots.get_mut(i).and_then(Option::take).ok_or_else(|| {
                        NgsiError::internal("the store answered a step without its result")
                    })
                })
            })
            .collect()
    }
}

impl Store {
    /// The store over this backend.
    pub fn new(backend: impl Backend) -> Store {
        let backend: Arc<dyn Backend> = Arc::new(backend);
        let lanes = backend.lanes();
        let for_writes = backend.clone();
        let writes = Combiner::new(
            lanes.writes,
            COMBINED_JOBS_MAX,
            Arc::new(move |jobs| {
                let backend = for_writes.clone();
                Box::pin(async move { write_group(&*backend, jobs).await })
            }),
        );
        let reads = lanes.combine_reads.then(|| {
            let for_reads = backend.clone();
            Combiner::new(
                READ_LANES,
                COMBINED_JOBS_MAX,
                Arc::new(move |jobs| {
                    let backend = for_reads.clone();
                    Box::pin(async move { read_group(&*backend, jobs).await })
                }),
            )
        });
        Store {
            backend,
            writes,
            reads,
        }
    }

    /// The database behind the store, as its own type (for benchmarks and differential tests
    /// that compare it with its raw database).
    pub fn backend_as<B: Backend>(&self) -> Option<&B> {
        self.backend.as_any().downcast_ref()
    }

    /// How instances sharing the database share the subscriptions.
    pub fn coordination(&self) -> &dyn Coordination {
        self.backend.coordination()
    }

    /// The entity with this id in this tenant, as it stands now (see [`expiry::live`]).
    pub async fn get(&self, tenant: &str, id: &str) -> NgsiResult<Option<Arc<Entity>>> {
        let stored = match &self.reads {
            None => self.backend.get(tenant, id).await?,
            Some(reads) => {
                let (reply, answer) = oneshot::channel();
                reads.submit(ReadJob {
                    tenant: tenant.to_string(),
                    id: id.to_string(),
                    reply,
                });
                answer.await.map_err(|_| abandoned())??
            }
        };
        Ok(stored.and_then(|e| expiry::live(&e, chrono::Utc::now())))
    }

    /// Whether the tenant has ever been written to (the default tenant always exists).
    pub async fn tenant_exists(&self, tenant: &str) -> NgsiResult<bool> {
        Ok(tenant == DEFAULT_TENANT || self.backend.tenant_exists(tenant).await?)
    }

    /// Atomically reads the entity, lets `decide` choose a write, and commits it durably, together
    /// with the history records of what changed (`history::changes`), before returning `decide`'s
    /// result. A batch of one (see [`Store::modify_many`]).
    pub async fn modify<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<(Write, R)> + Send + 'static,
    {
        self.modify_recorded(tenant, id, move |current| {
            decide(current).map(Decision::from)
        })
        .await
    }

    /// Read-modify-writes of several entities in one atomic, durable commit (a batch). The steps
    /// run in order, each shown the entity as the steps before it left it; a step that fails
    /// changes nothing and yields its error, the others are written. The outer error means nothing
    /// was committed (the store failed).
    /// Small writes are combined with concurrent ones into one commit (see [`combine`]).
    /// The ids written are noted for the audit log of the request or message that wrote them.
    pub async fn modify_many<R: Send + 'static>(
        &self,
        tenant: &str,
        steps: Vec<Step<R>>,
    ) -> NgsiResult<Vec<NgsiResult<R>>> {
        let audited = crate::telemetry::audit::collecting()
            .then(|| steps.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
        let (steps, typed) = Typed::split(steps);
        let results = typed.settle(self.commit_steps(tenant, steps).await?);
        if let Some(ids) = audited {
            crate::telemetry::audit::note(
                ids.into_iter()
                    .zip(&results)
                    .filter(|(_, r)| r.is_ok())
                    .map(|(id, _)| id),
            );
        }
        Ok(results)
    }

    /// The commit of [`Store::modify_many`]: large batches on their own, small ones combined.
    async fn commit_steps(
        &self,
        tenant: &str,
        steps: Vec<Step<()>>,
    ) -> NgsiResult<Vec<NgsiResult<()>>> {
        if steps.len() > COMBINED_STEPS_MAX {
            return commit(&*self.backend, tenant, steps, Announce::Changes).await;
        }
        let (reply, answer) = oneshot::channel();
        self.writes.submit(WriteJob {
            tenant: tenant.to_string(),
            steps,
            reply,
        });
        answer.await.map_err(|_| abandoned())?
    }

    /// A page of the entities matching `query` in id order, and how many matches were seen (all of
    /// them when `count`, else at least one past the page when there is a next page).
    pub async fn query(
        &self,
        tenant: &str,
        query: &crate::query::EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> NgsiResult<(Vec<Arc<Entity>>, usize)> {
        self.backend
            .query(tenant, query, offset, limit, count)
            .await
    }

    /// The ids of at most `limit` entities matching `query` whose id comes after `after` in the
    /// store's id order (from the first without it): the entities an operation over every match
    /// (a purge) takes on one chunk at a time, however many match.
    pub async fn matching_ids(
        &self,
        tenant: &str,
        query: &crate::query::EntityQuery,
        after: Option<&str>,
        limit: usize,
    ) -> NgsiResult<IdPage> {
        self.backend.matching_ids(tenant, query, after, limit).await
    }

    /// The state of the connection pool, where there is one, for /metrics.
    pub fn pool_status(&self) -> Option<deadpool_postgres::Status> {
        self.backend.pool_status()
    }

    /// The PostgreSQL connection pool (None on the embedded store), for the audit table.
    pub fn postgres_pool(&self) -> Option<deadpool_postgres::Pool> {
        self.backend.postgres_pool()
    }

    /// The entities of each tenant for /metrics, at once: the embedded store's memory, or
    /// PostgreSQL's last background count (None before the first has finished).
    pub fn entity_counts(&self) -> Option<Vec<(String, usize)>> {
        self.backend.entity_counts()
    }

    /// Whether the store can serve requests (for /ready).
    pub async fn ready(&self) -> bool {
        self.backend.ready().await
    }

    /// The temporal history of one entity that `query` selects, ordered by its time property.
    pub async fn history(
        &self,
        tenant: &str,
        id: &str,
        query: &history::HistoryQuery,
    ) -> NgsiResult<Vec<history::InstanceChange>> {
        self.backend.history(tenant, id, query).await
    }

    /// Like [`Store::modify`], with the whole [`Decision`] taken by `decide`: the temporal API
    /// chooses the history records and removes some, with the entity, in one transaction.
    pub async fn modify_recorded<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<Decision<R>> + Send + 'static,
    {
        let mut results = self
            .modify_many(tenant, vec![(id.to_string(), Box::new(decide))])
            .await?;
        results.pop().unwrap_or_else(|| {
            Err(crate::error::NgsiError::internal(
                "the store answered a write without a result",
            ))
        })
    }

    /// The history of several entities: for each of `ids`, in order, what `query` selects.
    pub async fn history_many(
        &self,
        tenant: &str,
        ids: &[String],
        query: &history::HistoryQuery,
    ) -> NgsiResult<Vec<(String, Vec<history::InstanceChange>)>> {
        self.backend.history_many(tenant, ids, query).await
    }

    /// Aggregates the history of each of `ids`, in order: from the roll-ups where the request
    /// and the entity's records allow it ([`Store::aggregate_from_rollups`]), from the records
    /// otherwise, where the data is (in SQL on PostgreSQL, in Rust on the embedded store).
    pub async fn aggregate(
        &self,
        tenant: &str,
        ids: &[String],
        query: &aggregate::AggregateQuery,
    ) -> NgsiResult<Vec<(String, Vec<aggregate::Bucket>)>> {
        let Some(mut answered) = self.aggregate_from_rollups(tenant, ids, query).await? else {
            crate::telemetry::metrics::aggregations("records", ids.len());
            return self.backend.aggregate(tenant, ids, query).await;
        };
        let left: Vec<String> = answered
            .iter()
            .filter(|(_, b)| b.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        crate::telemetry::metrics::aggregations("rollups", ids.len() - left.len());
        crate::telemetry::metrics::aggregations("records", left.len());
        let mut computed = if left.is_empty() {
            Vec::new()
        } else {
            self.backend.aggregate(tenant, &left, query).await?
        }
        .into_iter();
        Ok(answered
            .iter_mut()
            .map(|(id, b)| {
                let buckets = match b.take() {
                    Some(b) => b,
                    None => computed.next().map(|(_, b)| b).unwrap_or_default(),
                };
                (std::mem::take(id), buckets)
            })
            .collect())
    }

    /// The aggregation of each of `ids`, in order, from the roll-ups: `None` when the request
    /// does not allow it ([`rollup::plan`]), and `None` for an entity whose periods hold a record
    /// that will expire. Exists apart from [`Store::aggregate`] so that a test can tell that the
    /// roll-ups answered, and compare their answer with the records'.
    pub async fn aggregate_from_rollups(
        &self,
        tenant: &str,
        ids: &[String],
        query: &aggregate::AggregateQuery,
    ) -> NgsiResult<Option<Vec<(String, Option<Vec<aggregate::Bucket>>)>>> {
        let Some(plan) = rollup::plan(query) else {
            return Ok(None);
        };
        let rows = self
            .backend
            .rollups(tenant, ids, &query.attrs, &plan)
            .await?;
        Ok(Some(
            rows.into_iter()
                .map(|(id, rows)| (id, rollup::buckets(query, &plan, &rows)))
                .collect(),
        ))
    }

    /// Removes from the current state what has expired (4.22), at most `limit` entities' worth:
    /// expired entities are deleted, expired instances and sub-attributes dropped. Nothing is
    /// announced and nothing recorded: what expired stays in the history, and subscribers are not
    /// told (reads stopped serving it at its expiry already). Returns how many entities it
    /// looked at; fewer than `limit` means nothing else is due.
    pub async fn reap(&self, limit: usize) -> NgsiResult<usize> {
        let due = self.backend.due(chrono::Utc::now(), limit).await?;
        let mut reaped = 0;
        for (tenant, ids) in due {
            reaped += ids.len();
            commit(&*self.backend, &tenant, reap_steps(ids), Announce::Nothing).await?;
        }
        Ok(reaped)
    }

    /// Every entity of a tenant as it stands now, in id order (for discovery).
    pub async fn entities(&self, tenant: &str) -> NgsiResult<Vec<Arc<Entity>>> {
        let stored = self.backend.entities(tenant).await?;
        let now = chrono::Utc::now();
        Ok(stored.iter().filter_map(|e| expiry::live(e, now)).collect())
    }

    /// The feed of committed entity changes (see [`changes`]).
    pub fn feed(&self) -> &changes::ChangeFeed {
        self.backend.feed()
    }

    /// Stores a record of a collection; with `create`, only when the id is new (false
    /// otherwise). On PostgreSQL every instance is told (see [`Collection::channel`]).
    pub async fn put_record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
        record: &serde_json::Value,
        create: bool,
    ) -> NgsiResult<bool> {
        self.backend
            .put_record(collection, tenant, id, record, create)
            .await
    }

    /// Replaces one top-level member of each of several records, `(tenant, id, value)` (delivery
    /// statistics), leaving the rest of each as a concurrent update left it: one store write
    /// however many records, so that a flush of a thousand subscriptions' statistics is one
    /// commit, not a thousand competing with entity writes.
    pub async fn save_record_members(
        &self,
        collection: Collection,
        member: &'static str,
        values: Vec<(String, String, serde_json::Value)>,
    ) -> NgsiResult<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.backend
            .save_record_members(collection, member, values)
            .await
    }

    /// Removes a record of a collection; false when there was none.
    pub async fn delete_record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<bool> {
        self.backend.delete_record(collection, tenant, id).await
    }

    /// One record of a collection.
    pub async fn record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<Option<serde_json::Value>> {
        self.backend.record(collection, tenant, id).await
    }

    /// Every record of a collection, of every tenant, as (tenant, record), in tenant and id order.
    pub async fn records(
        &self,
        collection: Collection,
    ) -> NgsiResult<Vec<(String, serde_json::Value)>> {
        self.backend.records(collection).await
    }

    /// Stores a new entity map.
    pub async fn create_entity_map(
        &self,
        tenant: &str,
        map: &entity_maps::EntityMap,
    ) -> NgsiResult<()> {
        self.backend.create_entity_map(tenant, map).await
    }

    /// The entity map with this id, unless it has expired at `now`: an expired map is never
    /// served, and is removed when found.
    pub async fn entity_map(
        &self,
        tenant: &str,
        id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> NgsiResult<Option<entity_maps::EntityMap>> {
        self.backend.entity_map(tenant, id, now).await
    }

    /// Sets the expiry of an entity map that has not expired at `now`; false when there is none.
    pub async fn set_entity_map_expiry(
        &self,
        tenant: &str,
        id: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> NgsiResult<bool> {
        self.backend
            .set_entity_map_expiry(tenant, id, expires_at, now)
            .await
    }

    /// Removes an entity map; false when there was none that had not expired at `now`.
    pub async fn delete_entity_map(
        &self,
        tenant: &str,
        id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> NgsiResult<bool> {
        self.backend.delete_entity_map(tenant, id, now).await
    }

    /// Removes the entries of these entity ids from an entity map, keeping the order of the rest.
    pub async fn prune_entity_map(
        &self,
        tenant: &str,
        id: &str,
        gone: Vec<String>,
    ) -> NgsiResult<()> {
        self.backend.prune_entity_map(tenant, id, gone).await
    }

    /// Removes every entity map, of every tenant, that has expired at `now`; returns how many.
    pub async fn sweep_entity_maps(&self, now: chrono::DateTime<chrono::Utc>) -> NgsiResult<usize> {
        self.backend.sweep_entity_maps(now).await
    }
}

/// The kinds of JSON records the broker keeps beside entities, per tenant and id: each is a table
/// on both stores, with the same operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// Entity subscriptions (5.8).
    Subscriptions,
    /// Context source registrations (5.9).
    Registrations,
    /// Context source registration subscriptions (5.11).
    CsourceSubscriptions,
    /// The copies of entity subscriptions held by context sources (5.8.1.4): one record per
    /// copy, by the id the copy has at its source (see `crate::subscription::remote::Link`).
    RemoteSubscriptions,
    /// The @contexts this broker stores (5.13, kinds Hosted and ImplicitlyCreated), by local id.
    JsonldContexts,
    /// The data-model bindings set through the admin API (`service::data_models`), by id.
    DataModels,
}

impl Collection {
    /// Every collection (the embedded store creates their tables at start).
    pub const ALL: [Collection; 6] = [
        Collection::Subscriptions,
        Collection::Registrations,
        Collection::CsourceSubscriptions,
        Collection::RemoteSubscriptions,
        Collection::JsonldContexts,
        Collection::DataModels,
    ];

    /// The table of the collection, in both stores.
    pub fn table(self) -> &'static str {
        match self {
            Collection::Subscriptions => "subscriptions",
            Collection::Registrations => "registrations",
            Collection::CsourceSubscriptions => "csource_subscriptions",
            Collection::RemoteSubscriptions => "remote_subscriptions",
            Collection::JsonldContexts => "jsonld_contexts",
            Collection::DataModels => "data_models",
        }
    }

    /// How a subscription of the collection is named among those an instance owns (the
    /// PostgreSQL claims, the notifier's registry): its id for an entity subscription,
    /// `csource <id>` for a context source registration subscription. A space cannot occur in a
    /// URI, so the two kinds never collide even when they share an id.
    pub fn owner_key(self, id: &str) -> String {
        match self {
            Collection::CsourceSubscriptions => format!("csource {id}"),
            _ => id.to_string(),
        }
    }

    /// The collection and the id that an owner key names (the inverse of [`Self::owner_key`]).
    pub fn of_owner_key(key: &str) -> (Collection, &str) {
        match key.strip_prefix("csource ") {
            Some(id) => (Collection::CsourceSubscriptions, id),
            None => (Collection::Subscriptions, key),
        }
    }

    /// The PostgreSQL notification channel on which a change of a record is announced to every
    /// instance, with `[tenant, id]` as payload.
    pub fn channel(self) -> &'static str {
        match self {
            Collection::Subscriptions => "twinlink_subscriptions",
            Collection::Registrations => "twinlink_registrations",
            Collection::CsourceSubscriptions => "twinlink_csource_subscriptions",
            // Nobody listens: every instance reads the copies from the table when it needs them.
            Collection::RemoteSubscriptions => "twinlink_remote_subscriptions",
            // Nobody listens: every instance reloads the stored @contexts periodically
            // (`service::contexts`), and the API reads them from the table.
            Collection::JsonldContexts => "twinlink_jsonld_contexts",
            // Nobody listens: every instance reloads the bindings periodically.
            Collection::DataModels => "twinlink_data_models",
        }
    }
}

/// A stored value that does not (de)serialize: a bug or a damaged store, never the client's fault.
pub(crate) fn undecodable(e: serde_json::Error) -> NgsiError {
    NgsiError::internal(format!("a stored record does not (de)serialize: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use history::{HistoryRemoval, InstanceChange};

    const TEMP: &str = "https://example.org/temperature";

    fn record(value: i64, minute: u32) -> InstanceChange {
        let at =
            chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2024, 5, 1, 12, minute, 0).unwrap();
        let a = crate::model::Attribute {
            kind: crate::model::AttrKind::Property,
            value: serde_json::json!(value),
            dataset_id: None,
            observed_at: Some(crate::model::format_time(&at)),
            unit_code: None,
            object_type: None,
            created_at: at,
            modified_at: at,
            expires_at: None,
            sub: Default::default(),
        };
        history::written(TEMP, &a)
    }

    /// A step that keeps the entity, replaces the records observed at `minute` with one of
    /// `value`, and answers `if_none` when there were none.
    fn replace(value: i64, minute: u32, if_none: Option<NgsiError>) -> Step<i64> {
        let r = record(value, minute);
        let which =
            HistoryRemoval::Observations(vec![(TEMP.to_string(), None, r.observed_at.unwrap())]);
        let step: Decide<i64> = Box::new(move |_| {
            Ok(Decision {
                write: Write::Keep,
                records: Some(vec![r]),
                removal: Some(Removal { which, if_none }),
                result: value,
            })
        });
        ("urn:ngsi-ld:Sensor:1".to_string(), step)
    }

    #[test]
    fn a_removal_takes_the_records_of_earlier_steps_it_selects() {
        let planned = run_steps(
            vec![
                replace(1, 0, None),
                replace(2, 1, None),
                replace(3, 0, None),
            ],
            |_| None,
        );
        let values: Vec<_> = planned
            .history
            .iter()
            .map(|(_, r)| r.num.unwrap())
            .collect();
        assert_eq!(values, vec![2.0, 3.0]);
        let earlier: Vec<_> = planned.removals.iter().map(|r| r.earlier).collect();
        assert_eq!(earlier, vec![0, 0, 1]);
        assert!(planned.writes.is_empty() && !planned.is_empty());
    }

    #[test]
    fn a_removal_of_nothing_answers_its_error_and_only_then() {
        let missing = || Some(NgsiError::not_found("none"));
        let planned = run_steps(
            vec![
                replace(1, 0, missing()),
                replace(2, 0, missing()),
                replace(3, 1, missing()),
                replace(4, 2, None),
            ],
            |_| None,
        );
        // The store removed one stored record for the third step, none for the others.
        let results: Vec<_> = planned
            .settle(&[0, 0, 1, 0])
            .into_iter()
            .map(|r| r.map_err(|e| e.kind))
            .collect();
        assert_eq!(
            results,
            vec![Err(ErrorKind::ResourceNotFound), Ok(2), Ok(3), Ok(4)]
        );
    }
}
