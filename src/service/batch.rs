//! Batch operations (5.6.7–5.6.10, 5.6.20): each entity goes through the same single-entity
//! operation as over /entities, and the outcome is reported per entity, so one bad entity never
//! blocks or half-applies another.

use super::entities::Target;
use super::Broker;
use crate::error::{NgsiError, NgsiResult};
use crate::model::parse::EntityInput;
use chrono::{DateTime, Utc};

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

/// One parsed element of a batch body: its id (when readable) and the parsed entity or the error.
pub type BatchItem = (String, NgsiResult<EntityInput>);

impl Broker {
    /// Applies `op` to every entity of the batch, in order.
    pub async fn batch(
        &self,
        tenant: &str,
        op: BatchOp,
        items: Vec<BatchItem>,
        now: DateTime<Utc>,
    ) -> BatchResult {
        let mut result = BatchResult::default();
        for (id, parsed) in items {
            let outcome = match parsed {
                Ok(input) => {
                    self.batch_one(tenant, op, &id, input, now, &mut result.created)
                        .await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => result.success.push(id),
                Err(e) => result.errors.push((id, e)),
            }
        }
        result
    }

    async fn batch_one(
        &self,
        tenant: &str,
        op: BatchOp,
        id: &str,
        input: EntityInput,
        now: DateTime<Utc>,
        created: &mut Vec<String>,
    ) -> NgsiResult<()> {
        let target = Target::new(tenant, id);
        match op {
            BatchOp::Create => self.create_entity(tenant, input, now).await.map(|_| ()),
            BatchOp::Upsert(mode) => {
                let exists = self.store.tenant_exists(tenant).await?
                    && self.store.get(tenant, id).await?.is_some();
                if !exists {
                    let r = self.create_entity(tenant, input, now).await.map(|_| ());
                    if r.is_ok() {
                        created.push(id.to_string());
                    }
                    return r;
                }
                match mode {
                    UpsertMode::Replace => self.replace_entity(&target, input, now).await,
                    UpsertMode::Update => self
                        .append_attrs(&target, input, false, now)
                        .await
                        .map(|_| ()),
                }
            }
            BatchOp::Update { no_overwrite } => {
                let r = self.append_attrs(&target, input, no_overwrite, now).await?;
                match r.not_updated.first() {
                    Some((name, reason)) => Err(NgsiError::bad_data(format!(
                        "attribute {name} was not updated: {reason}"
                    ))),
                    _ => Ok(()),
                }
            }
            BatchOp::Merge => self.merge_entity(&target, input, now).await,
        }
    }

    /// Deletes every listed entity (5.6.10).
    pub async fn batch_delete(&self, tenant: &str, ids: Vec<String>) -> BatchResult {
        let mut result = BatchResult::default();
        for id in ids {
            match self.delete_entity(&Target::new(tenant, &id)).await {
                Ok(()) => result.success.push(id),
                Err(e) => result.errors.push((id, e)),
            }
        }
        result
    }
}
