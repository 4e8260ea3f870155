//! Subscription operations of clause 5.8 (create, update, retrieve, query, delete), transport
//! agnostic: they take the body and its @context, keep the store and the notifier's registry in
//! step, and return stored records.

use super::Broker;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::store::Collection;
use crate::subscription::model::Record;
use crate::subscription::{self, parse};
use chrono::Utc;
use serde_json::Value;
use std::sync::Arc;

fn missing(id: &str) -> NgsiError {
    NgsiError::not_found(format!("there is no subscription with id '{id}'"))
}

fn decode(id: &str, value: Value) -> NgsiResult<Record> {
    serde_json::from_value(value)
        .map_err(|e| NgsiError::internal(format!("subscription {id} does not decode: {e}")))
}

impl Broker {
    /// Creates a subscription (5.8.1) from its body and @context; returns its id.
    pub async fn create_subscription(
        self: &Arc<Self>,
        tenant: &str,
        body: &Value,
        context: Option<Value>,
    ) -> NgsiResult<String> {
        let ctx = self.contexts.active(context.as_ref()).await?;
        let doc = parse::normalize(body, &ctx, false)?;
        let id = Record::id_from_body(body, "Subscription")?;
        let now = Utc::now();
        let record = Record {
            id: id.clone(),
            doc,
            context,
            created_at: now,
            modified_at: now,
            stats: Default::default(),
        };
        let sub = subscription::compile(self, tenant, record.clone()).await?;
        let value =
            serde_json::to_value(&record).map_err(|e| NgsiError::internal(e.to_string()))?;
        if !self
            .store
            .put_record(Collection::Subscriptions, tenant, &id, &value, true)
            .await?
        {
            return Err(NgsiError::new(
                ErrorKind::AlreadyExists,
                format!("a subscription with id '{id}' exists already"),
            ));
        }
        self.notifier.register(self, sub);
        subscription::claim_now(self).await;
        Ok(id)
    }

    /// The stored subscription with up-to-date delivery statistics (5.8.3).
    pub async fn subscription(&self, tenant: &str, id: &str) -> NgsiResult<Record> {
        let value = self
            .store
            .record(Collection::Subscriptions, tenant, id)
            .await?
            .ok_or_else(|| missing(id))?;
        let mut record = decode(id, value)?;
        self.fresh_stats(tenant, &mut record);
        Ok(record)
    }

    /// Uses this instance's statistics when they are newer than the stored ones.
    fn fresh_stats(&self, tenant: &str, record: &mut Record) {
        if let Some(stats) = self.notifier.stats(tenant, &record.id) {
            if stats.events() > record.stats.events() {
                record.stats = stats;
            }
        }
    }

    /// Every subscription of the tenant, oldest first (5.8.4).
    pub async fn subscriptions(&self, tenant: &str) -> NgsiResult<Vec<Record>> {
        let mut records = Vec::new();
        for (t, value) in self.store.records(Collection::Subscriptions).await? {
            if t != tenant {
                continue;
            }
            let mut record = decode("?", value)?;
            self.fresh_stats(tenant, &mut record);
            records.push(record);
        }
        records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(records)
    }

    /// Updates a subscription with a fragment (5.8.2): each given member replaces the stored one,
    /// null removes it; the result must be a valid subscription.
    pub async fn update_subscription(
        self: &Arc<Self>,
        tenant: &str,
        id: &str,
        fragment: &Value,
        context: Option<Value>,
    ) -> NgsiResult<()> {
        let ctx = self.contexts.active(context.as_ref()).await?;
        let changes = parse::normalize(fragment, &ctx, true)?;
        if changes.is_empty() {
            return Err(NgsiError::bad_data(
                "the fragment changes no member of the subscription",
            ));
        }
        let mut record = self.subscription(tenant, id).await?;
        record.apply(changes, context, Utc::now());
        let sub = subscription::compile(self, tenant, record.clone()).await?;
        let value =
            serde_json::to_value(&record).map_err(|e| NgsiError::internal(e.to_string()))?;
        self.store
            .put_record(Collection::Subscriptions, tenant, id, &value, false)
            .await?;
        self.notifier.register(self, sub);
        Ok(())
    }

    /// Deletes a subscription (5.8.5).
    pub async fn delete_subscription(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        if !self
            .store
            .delete_record(Collection::Subscriptions, tenant, id)
            .await?
        {
            return Err(missing(id));
        }
        self.notifier.remove(tenant, id);
        Ok(())
    }
}
