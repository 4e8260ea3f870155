//! Batch operations (5.6.7–5.6.10, 5.6.20): each entity goes through the same decision as the
//! single-entity operation over /entities, all of them in one store write (one transaction), and
//! the outcome is reported per entity, so one bad entity never blocks or half-applies another.

use super::entities::{append, change_existing, create, merge, new_entity, replace, Target};
use super::AppState;
use crate::error::{NgsiError, NgsiResult};
use crate::model::parse::{EntityInput, Nulls, Reader};
use crate::model::Entity;
use crate::store::{Decide, Decision, Step, Write};
use crate::syntax::body::BodyError;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Per-entity outcome of a batch: the ids that succeeded and the errors of the others.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Ids of the entities the operation succeeded for.
    pub success: Vec<String>,
    /// Ids (when known) and errors of the others.
    pub errors: Vec<(String, NgsiError)>,
    /// For upsert: the ids that were created (not updated).
    pub created: Vec<String>,
}

/// How an upsert treats an entity that exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertMode {
    /// Replace the whole entity (default).
    Replace,
    /// Append its attributes, overwriting.
    Update,
}

/// What a batch does with each entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    /// Create (5.6.7).
    Create,
    /// Create or replace/update (5.6.8).
    Upsert(UpsertMode),
    /// Append attributes (5.6.9), optionally without overwriting.
    Update { no_overwrite: bool },
    /// Merge (5.6.20).
    Merge,
}

/// What a batch step did to its entity.
#[derive(Debug)]
pub enum Done {
    /// Created it.
    Created,
    /// Changed (or deleted) it.
    Changed,
    /// Wrote what it could but reports the entity as failed (update with attributes left alone).
    Reported(NgsiError),
}

/// One parsed element of a batch body: its id (when readable) and the parsed entity or the error.
pub type BatchItem = (String, NgsiResult<EntityInput>);

impl BatchOp {
    /// How the operation reads NGSI-LD Null, and whether an entity must carry id and type.
    fn reading(self) -> (Nulls, bool) {
        match self {
            BatchOp::Create | BatchOp::Upsert(_) => (Nulls::Forbidden, true),
            BatchOp::Update { .. } => (Nulls::Delete, false),
            BatchOp::Merge => (Nulls::Merge, false),
        }
    }
}

impl AppState {
    /// Reads one entity of a batch (or of a message) for `op` with its @context (`None`: the
    /// core context): the parsed entity, which must have an id.
    pub async fn read_batch_entity(
        &self,
        entity: &Value,
        context: Option<&Value>,
        op: BatchOp,
        now: DateTime<Utc>,
    ) -> NgsiResult<EntityInput> {
        let ctx = self.contexts.active(context).await?;
        let (nulls, full) = op.reading();
        let input = Reader::new(&ctx, now, nulls).entity(entity, full)?;
        match &input.id {
            Some(_) => Ok(input),
            None => Err(BodyError::member("id", "the entity has no id").into()),
        }
    }

    /// Applies `op` to every entity of the batch, in order, in one atomic store write: each entity
    /// succeeds or fails on its own (nothing is half-applied within an entity), and what succeeded
    /// is committed together.
    pub async fn batch(
        &self,
        tenant: &str,
        op: BatchOp,
        items: Vec<BatchItem>,
        now: DateTime<Utc>,
    ) -> BatchResult {
        let items = items.into_iter().map(|item| (op, item)).collect();
        self.batch_ops(tenant, items, now).await
    }

    /// [`AppState::batch`] with an operation per entity (message ingestion mixes upserts and
    /// attribute appends in one write).
    pub async fn batch_ops(
        &self,
        tenant: &str,
        items: Vec<(BatchOp, BatchItem)>,
        now: DateTime<Utc>,
    ) -> BatchResult {
        let tenant_missing = self.require_tenant(tenant).await.err();
        let mut early = Vec::new();
        let mut steps: Vec<(usize, Step<Done>)> = Vec::with_capacity(items.len());
        for (i, (op, (id, parsed))) in items.into_iter().enumerate() {
            let creates = matches!(op, BatchOp::Create | BatchOp::Upsert(_));
            let step = match (parsed, &tenant_missing) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(e)) if !creates => Err(e.clone()),
                (Ok(input), _) => decide(tenant, op, &id, input, now),
            };
            match step {
                Ok(decide) => steps.push((i, (id, decide))),
                Err(e) => early.push((i, id, Err(e))),
            }
        }
        self.commit_steps(tenant, steps, early).await
    }

    /// Deletes every listed entity (5.6.10), in one atomic store write.
    pub async fn batch_delete(&self, tenant: &str, ids: Vec<String>) -> BatchResult {
        if let Err(e) = self.require_tenant(tenant).await {
            let early = ids.into_iter().enumerate();
            let early = early.map(|(i, id)| (i, id, Err(e.clone()))).collect();
            return self.commit_steps(tenant, Vec::new(), early).await;
        }
        let steps = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let target = Target::new(tenant, &id);
                let decide = decision(move |current| {
                    change_existing(&target, current, |_| Ok(()))?;
                    Ok((Write::Delete, Done::Changed))
                });
                (i, (id, decide))
            })
            .collect();
        self.commit_steps(tenant, steps, Vec::new()).await
    }

    /// Runs the steps (numbered by their place in the request) in one store write and reports
    /// every outcome, with the `early` ones (failed before reaching the store), in request order;
    /// when the store fails, every step fails with its error (nothing was committed).
    async fn commit_steps(
        &self,
        tenant: &str,
        steps: Vec<(usize, Step<Done>)>,
        mut outcomes: Vec<(usize, String, NgsiResult<Done>)>,
    ) -> BatchResult {
        let (places, steps): (Vec<(usize, String)>, Vec<Step<Done>>) = steps
            .into_iter()
            .map(|(i, (id, decide))| ((i, id.clone()), (id, decide)))
            .unzip();
        if !steps.is_empty() {
            let results = match self.write_many(tenant, steps).await {
                Ok(results) => results,
                Err(e) => places.iter().map(|_| Err(e.clone())).collect(),
            };
            outcomes.extend(
                places
                    .into_iter()
                    .zip(results)
                    .map(|((i, id), r)| (i, id, r)),
            );
        }
        outcomes.sort_by_key(|(i, _, _)| *i);
        let mut result = BatchResult::default();
        for (_, id, outcome) in outcomes {
            match outcome {
                Ok(Done::Created) => {
                    result.created.push(id.clone());
                    result.success.push(id);
                }
                Ok(Done::Changed) => result.success.push(id),
                Ok(Done::Reported(e)) | Err(e) => result.errors.push((id, e)),
            }
        }
        result
    }
}

/// A batch step's decision from a closure giving the write and its outcome.
fn decision(
    f: impl FnOnce(Option<&Entity>) -> NgsiResult<(Write, Done)> + Send + 'static,
) -> Decide<Done> {
    Box::new(move |current| f(current).map(Decision::from))
}

/// The store decision for one batch entity.
fn decide(
    tenant: &str,
    op: BatchOp,
    id: &str,
    input: EntityInput,
    now: DateTime<Utc>,
) -> NgsiResult<Decide<Done>> {
    let target = Target::new(tenant, id);
    Ok(match op {
        BatchOp::Create => {
            let entity = new_entity(input, now)?;
            decision(move |current| create(current, entity).map(|(w, ())| (w, Done::Created)))
        }
        BatchOp::Upsert(mode) => decision(move |current| match current {
            None => create(current, new_entity(input, now)?).map(|(w, ())| (w, Done::Created)),
            Some(_) => {
                let written = match mode {
                    UpsertMode::Replace => replace(&target, current, input, now),
                    UpsertMode::Update => {
                        change_existing(&target, current, append(input, false, now))
                            .map(|(w, _)| (w, ()))
                    }
                };
                written.map(|(w, ())| (w, Done::Changed))
            }
        }),
        BatchOp::Update { no_overwrite } => decision(move |current| {
            let (write, r) = change_existing(&target, current, append(input, no_overwrite, now))?;
            match r.not_updated.first() {
                Some((name, reason)) => Ok((
                    write,
                    Done::Reported(NgsiError::bad_data(format!(
                        "attribute {name} was not updated: {reason}"
                    ))),
                )),
                None => Ok((write, Done::Changed)),
            }
        }),
        BatchOp::Merge => decision(move |current| {
            change_existing(&target, current, merge(input, now)).map(|(w, ())| (w, Done::Changed))
        }),
    })
}
