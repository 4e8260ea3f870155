//! Subscription operations of clauses 5.8 (entity subscriptions) and 5.11 (context source
//! registration subscriptions): create, update, retrieve, query, delete, transport agnostic. Both
//! kinds share these operations and differ by the collection they are kept in: they take the body
//! and its @context, keep the store and the notifier's registry in step, and return stored
//! records.

use super::notifier;
use super::AppState;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::federation::forward::Reach;
use crate::store::Collection;
use crate::subscription::model::Record;
use crate::subscription::{parse, remote};
use chrono::Utc;
use serde_json::Value;
use std::sync::Arc;

/// How the subscriptions of a collection are named in errors.
fn noun(collection: Collection) -> &'static str {
    match collection {
        Collection::CsourceSubscriptions => "context source registration subscription",
        _ => "subscription",
    }
}

fn missing(collection: Collection, id: &str) -> NgsiError {
    NgsiError::not_found(format!("there is no {} with id '{id}'", noun(collection)))
}

/// Whether a subscription's @context needs an ImplicitlyCreated one (5.13.1) for its
/// notifications to name in their Link header: it is not one URL (alone, or as the one member
/// of an array).
fn needs_implicit(context: &Value) -> bool {
    !match context {
        Value::String(_) => true,
        Value::Array(items) => matches!(items.as_slice(), [Value::String(_)]),
        _ => false,
    }
}

/// The `jsonldContext` a subscription names for its notifications, if any.
fn notification_context(record: &Record) -> Option<String> {
    record
        .doc
        .get("jsonldContext")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn decode(id: &str, value: Value) -> NgsiResult<Record> {
    serde_json::from_value(value)
        .map_err(|e| NgsiError::internal(format!("subscription {id} does not decode: {e}")))
}

impl AppState {
    /// Creates a subscription of a collection (5.8.1, 5.11.2) from its body and @context; returns
    /// its id. A registration subscription is then sent the registrations it selects already; an
    /// entity subscription not kept local (by the request's reach or its `localOnly`) is given to
    /// the registered sources that offer createSubscription (5.8.1.4).
    pub async fn create_subscription(
        self: &Arc<Self>,
        collection: Collection,
        tenant: &str,
        body: &Value,
        context: Option<Value>,
        reach: &Reach,
    ) -> NgsiResult<String> {
        let ctx = self.contexts.active(context.as_ref()).await?;
        let mut doc = parse::normalize(body, &ctx, false)?;
        let id = Record::id_from_body(body, "Subscription")?;
        let implicit = match &context {
            Some(c) if needs_implicit(c) && !doc.contains_key("jsonldContext") => {
                let url = self.implicit_context(tenant, c, &id).await?;
                doc.insert("jsonldContext".into(), Value::String(url.clone()));
                Some(url)
            }
            _ => None,
        };
        let created = self
            .store_subscription(collection, tenant, &id, doc, context, reach)
            .await;
        if let (Err(_), Some(url)) = (&created, implicit) {
            self.release_implicit_context(tenant, &url, &id).await;
        }
        created.map(|()| id)
    }

    async fn store_subscription(
        self: &Arc<Self>,
        collection: Collection,
        tenant: &str,
        id: &str,
        doc: serde_json::Map<String, Value>,
        context: Option<Value>,
        reach: &Reach,
    ) -> NgsiResult<()> {
        let id = id.to_string();
        let now = Utc::now();
        let record = Record {
            id: id.clone(),
            doc,
            context,
            created_at: now,
            modified_at: now,
            stats: Default::default(),
        };
        let sub = notifier::compile(self, collection, tenant, record.clone()).await?;
        self.settings
            .outbound
            .admit(sub.notification.endpoint.uri.as_str())
            .await?;
        let value =
            serde_json::to_value(&record).map_err(|e| NgsiError::internal(e.to_string()))?;
        if !self
            .store
            .put_record(collection, tenant, &id, &value, true)
            .await?
        {
            return Err(NgsiError::new(
                ErrorKind::AlreadyExists,
                format!("a {} with id '{id}' exists already", noun(collection)),
            ));
        }
        let live = self.notifier.register(self, sub);
        notifier::claim_now(self).await;
        notifier::notify_matching(self, &live).await;
        let federated = collection == Collection::Subscriptions
            && !reach.local
            && !self.sources.looped(reach)
            && !remote::local_only(&live.sub.record);
        if federated {
            if let Err(e) = self.subscribe_at_sources(tenant, &live.sub, reach).await {
                tracing::warn!(error = %e, subscription = %id, "giving the subscription to the sources failed");
            }
        }
        Ok(())
    }

    /// The stored subscription with up-to-date delivery statistics (5.8.3, 5.11.4).
    pub async fn subscription(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<Record> {
        let value = self
            .store
            .record(collection, tenant, id)
            .await?
            .ok_or_else(|| missing(collection, id))?;
        let mut record = decode(id, value)?;
        self.fresh_stats(collection, tenant, &mut record);
        Ok(record)
    }

    /// Uses this instance's statistics when they are newer than the stored ones.
    fn fresh_stats(&self, collection: Collection, tenant: &str, record: &mut Record) {
        if let Some(stats) = self.notifier.stats(collection, tenant, &record.id) {
            if stats.events() > record.stats.events() {
                record.stats = stats;
            }
        }
    }

    /// Every subscription of a collection of the tenant, oldest first (5.8.4, 5.11.5).
    pub async fn subscriptions(
        &self,
        collection: Collection,
        tenant: &str,
    ) -> NgsiResult<Vec<Record>> {
        let mut records = Vec::new();
        for (t, value) in self.store.records(collection).await? {
            if t != tenant {
                continue;
            }
            let mut record = decode("?", value)?;
            self.fresh_stats(collection, tenant, &mut record);
            records.push(record);
        }
        records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(records)
    }

    /// Updates a subscription of a collection with a fragment (5.8.2, 5.11.3): each given member
    /// replaces the stored one, null removes it; the result must be a valid subscription. A
    /// registration subscription is then sent the registrations it selects now.
    pub async fn update_subscription(
        self: &Arc<Self>,
        collection: Collection,
        tenant: &str,
        id: &str,
        fragment: &Value,
        context: Option<Value>,
    ) -> NgsiResult<()> {
        let ctx = self.contexts.active(context.as_ref()).await?;
        let changes = parse::normalize(fragment, &ctx, true)?;
        if changes.is_empty() {
            return Err(NgsiError::bad_data(format!(
                "the fragment changes no member of the {}",
                noun(collection)
            )));
        }
        let mut record = self.subscription(collection, tenant, id).await?;
        let named_before = notification_context(&record);
        // A new @context replaces the ImplicitlyCreated one made from the old, and needs one of
        // its own if it is not one URL; unless the fragment names a jsonldContext, or the
        // subscription named one itself.
        let implicit_before = match &named_before {
            Some(url) => self.is_implicit_context_of(tenant, url, id).await,
            None => true,
        };
        let replaced = implicit_before
            && context.is_some()
            && context != record.context
            && !changes.contains_key("jsonldContext");
        record.apply(changes, context.clone(), Utc::now());
        let mut implicit = None;
        if replaced {
            record.doc.shift_remove("jsonldContext");
            if let Some(c) = context.as_ref().filter(|c| needs_implicit(c)) {
                let url = self.implicit_context(tenant, c, id).await?;
                record
                    .doc
                    .insert("jsonldContext".into(), Value::String(url.clone()));
                implicit = Some(url);
            }
        }
        let stored = self.store_update(collection, tenant, &record).await;
        let unused = match (&stored, implicit) {
            (Err(_), implicit) => implicit,
            (Ok(_), _) => {
                named_before.filter(|url| notification_context(&record) != Some(url.clone()))
            }
        };
        if let Some(url) = unused {
            self.release_implicit_context(tenant, &url, id).await;
        }
        let live = stored?;
        notifier::notify_matching(self, &live).await;
        if collection == Collection::Subscriptions {
            if let Err(e) = self.update_at_sources(tenant, &record).await {
                tracing::warn!(error = %e, subscription = %id, "updating the copies at the sources failed");
            }
        }
        Ok(())
    }

    /// Compiles an updated subscription, stores it and puts it in the registry.
    async fn store_update(
        self: &Arc<Self>,
        collection: Collection,
        tenant: &str,
        record: &Record,
    ) -> NgsiResult<Arc<notifier::Live>> {
        let sub = notifier::compile(self, collection, tenant, record.clone()).await?;
        self.settings
            .outbound
            .admit(sub.notification.endpoint.uri.as_str())
            .await?;
        let value = serde_json::to_value(record).map_err(|e| NgsiError::internal(e.to_string()))?;
        self.store
            .put_record(collection, tenant, &record.id, &value, false)
            .await?;
        Ok(self.notifier.register(self, sub))
    }

    /// Deletes a subscription of a collection (5.8.5, 5.11.6); an entity subscription's internal
    /// registration subscription and copies at sources go with it (5.8.5.4), and so does the
    /// ImplicitlyCreated @context made for it.
    pub async fn delete_subscription(
        self: &Arc<Self>,
        collection: Collection,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<()> {
        let named = self
            .store
            .record(collection, tenant, id)
            .await?
            .map(|value| decode(id, value))
            .transpose()?
            .and_then(|record| notification_context(&record));
        if !self.store.delete_record(collection, tenant, id).await? {
            return Err(missing(collection, id));
        }
        if let Some(url) = named {
            self.release_implicit_context(tenant, &url, id).await;
        }
        self.notifier.remove(collection, tenant, id);
        if collection == Collection::Subscriptions {
            if let Err(e) = self.unsubscribe_at_sources(tenant, id).await {
                tracing::warn!(error = %e, subscription = %id, "deleting the copies at the sources failed");
            }
        }
        Ok(())
    }
}
