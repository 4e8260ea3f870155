//! Context source registration operations of clauses 5.9 and 5.10 (register, update, retrieve,
//! delete, discover), transport agnostic: they take the body and its @context, keep the store and
//! the registry of this instance in step, and return stored records.

use super::notifier;
use super::AppState;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::federation::registration::{self, Mode, Record};
use crate::federation::{Discovery, Registration};
use crate::query::EntityQuery;
use crate::store::Collection;
use chrono::Utc;
use serde_json::Value;
use std::sync::Arc;

fn missing(id: &str) -> NgsiError {
    NgsiError::not_found(format!(
        "there is no context source registration with id '{id}'"
    ))
}

fn decode(id: &str, value: Value) -> NgsiResult<Record> {
    serde_json::from_value(value)
        .map_err(|e| NgsiError::internal(format!("registration {id} does not decode: {e}")))
}

fn encode(record: &Record) -> NgsiResult<Value> {
    serde_json::to_value(record).map_err(|e| NgsiError::internal(e.to_string()))
}

impl AppState {
    /// Registers a context source (5.9.2) from its body and @context; returns its id.
    pub async fn create_registration(
        self: &Arc<Self>,
        tenant: &str,
        body: &Value,
        context: Option<Value>,
    ) -> NgsiResult<String> {
        let ctx = self.contexts.active(context.as_ref()).await?;
        let doc = registration::normalize(body, &ctx, false)?;
        let id = Record::id_from_body(body, registration::TYPE)?;
        let now = Utc::now();
        registration::check(&doc, now, true)?;
        let record = Record {
            id: id.clone(),
            doc,
            context,
            created_at: now,
            modified_at: now,
            stats: Default::default(),
        };
        let compiled = Registration::compile(record.clone());
        self.settings.outbound.admit(compiled.endpoint()).await?;
        let _writing = self.registry.write_lock().await;
        self.check_conflicts(tenant, &compiled).await?;
        if !self
            .store
            .put_record(
                Collection::Registrations,
                tenant,
                &id,
                &encode(&record)?,
                true,
            )
            .await?
        {
            return Err(NgsiError::new(
                ErrorKind::AlreadyExists,
                format!("a context source registration with id '{id}' exists already"),
            ));
        }
        self.registry
            .put(tenant, Registration::compile(record.clone()));
        notifier::registration_changed(self, tenant, None, Some(Registration::compile(record)))
            .await;
        Ok(id)
    }

    /// Refuses a proxied registration over data that is held elsewhere already (4.3.6.3,
    /// 5.9.2.4): an exclusive registration of an attribute that a local entity has or that
    /// another exclusive or redirect registration covers, and a redirect registration of entities
    /// that exist locally or of attributes that an exclusive registration holds.
    async fn check_conflicts(&self, tenant: &str, new: &Registration) -> NgsiResult<()> {
        let conflict = |why: String| NgsiError::new(ErrorKind::Conflict, why);
        let now = Utc::now();
        let others: Vec<_> = self
            .registry
            .of(tenant)
            .iter()
            .filter(|r| r.record.id != new.record.id && r.is_live(now))
            .cloned()
            .collect();
        match new.mode {
            Mode::Exclusive => {
                for named in new.named_attributes() {
                    if let Some(other) = others.iter().find(|r| {
                        matches!(r.mode, Mode::Exclusive | Mode::Redirect)
                            && r.covers(&named.id, &named.types, &named.attr)
                    }) {
                        return Err(conflict(format!(
                            "attribute {} of entity {} is registered already by the {} registration {}",
                            named.attr,
                            named.id,
                            other.mode.name(),
                            other.record.id
                        )));
                    }
                    let local = self.store.get(tenant, &named.id).await?;
                    if local.is_some_and(|e| e.attrs.contains_key(&named.attr)) {
                        return Err(conflict(format!(
                            "entity {} has attribute {} here already; an exclusive registration may only name attributes this broker does not hold",
                            named.id, named.attr
                        )));
                    }
                }
            }
            Mode::Redirect => {
                for other in others.iter().filter(|r| r.mode == Mode::Exclusive) {
                    if let Some(named) = other
                        .named_attributes()
                        .into_iter()
                        .find(|n| new.covers(&n.id, &n.types, &n.attr))
                    {
                        return Err(conflict(format!(
                            "attribute {} of entity {} is registered already by the exclusive registration {}",
                            named.attr, named.id, other.record.id
                        )));
                    }
                }
                let query = EntityQuery {
                    selectors: new.selectors(),
                    ..Default::default()
                };
                let (found, _) = self.store.query(tenant, &query, 0, 1, false).await?;
                if let Some(e) = found.first() {
                    return Err(conflict(format!(
                        "entity {} exists here; a redirect registration may only name entities this broker does not hold",
                        e.id
                    )));
                }
            }
            Mode::Inclusive | Mode::Auxiliary => {}
        }
        Ok(())
    }

    /// The stored registration (5.9.4 retrieve).
    pub async fn registration(&self, tenant: &str, id: &str) -> NgsiResult<Record> {
        let value = self
            .store
            .record(Collection::Registrations, tenant, id)
            .await?
            .ok_or_else(|| missing(id))?;
        let mut record = decode(id, value)?;
        // Expired (5.9.2.4) is gone, whether or not the housekeeping has deleted it yet.
        if !Registration::compile(record.clone()).is_live(Utc::now()) {
            return Err(missing(id));
        }
        record.stats = self.sources.stats(tenant, id);
        Ok(record)
    }

    /// Deletes the registrations that have expired (5.9.2.4), as a deletion by a client would
    /// (registration subscriptions are told); returns how many.
    pub async fn delete_expired_registrations(self: &Arc<Self>) -> NgsiResult<usize> {
        let mut deleted = 0;
        for (tenant, id) in self.registry.expired(Utc::now()) {
            match self.delete_registration(&tenant, &id).await {
                Ok(()) => deleted += 1,
                // Another instance deleted it first.
                Err(e) if e.kind == crate::error::ErrorKind::ResourceNotFound => {
                    self.registry.remove(&tenant, &id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Updates a registration with a fragment (5.9.3): each given member replaces the stored one,
    /// null removes it; the result must be a valid registration.
    pub async fn update_registration(
        self: &Arc<Self>,
        tenant: &str,
        id: &str,
        fragment: &Value,
        context: Option<Value>,
    ) -> NgsiResult<()> {
        let ctx = self.contexts.active(context.as_ref()).await?;
        let changes = registration::normalize(fragment, &ctx, true)?;
        if changes.is_empty() {
            return Err(NgsiError::bad_data(
                "the fragment changes no member of the registration",
            ));
        }
        let _writing = self.registry.write_lock().await;
        let mut record = self.registration(tenant, id).await?;
        let before = Registration::compile(record.clone());
        let now = Utc::now();
        record.apply(changes, context, now);
        registration::check(&record.doc, now, false)?;
        let compiled = Registration::compile(record.clone());
        self.settings.outbound.admit(compiled.endpoint()).await?;
        self.check_conflicts(tenant, &compiled).await?;
        self.store
            .put_record(
                Collection::Registrations,
                tenant,
                id,
                &encode(&record)?,
                false,
            )
            .await?;
        self.registry
            .put(tenant, Registration::compile(record.clone()));
        notifier::registration_changed(
            self,
            tenant,
            Some(before),
            Some(Registration::compile(record)),
        )
        .await;
        Ok(())
    }

    /// Deletes a registration (5.9.4).
    pub async fn delete_registration(self: &Arc<Self>, tenant: &str, id: &str) -> NgsiResult<()> {
        // What it was, for the registration subscriptions' noLongerMatching notifications.
        let before = self
            .store
            .record(Collection::Registrations, tenant, id)
            .await?
            .and_then(|value| decode(id, value).ok());
        if !self
            .store
            .delete_record(Collection::Registrations, tenant, id)
            .await?
        {
            return Err(missing(id));
        }
        self.registry.remove(tenant, id);
        self.sources.forget(tenant, id);
        notifier::registration_changed(self, tenant, before.map(Registration::compile), None).await;
        Ok(())
    }

    /// The live registrations of the tenant that match a discovery query (5.10.2), in id order.
    /// Read from the store, so that an instance answers with what any instance committed.
    pub async fn discover_registrations(
        &self,
        tenant: &str,
        discovery: &Discovery,
    ) -> NgsiResult<Vec<Record>> {
        let now = Utc::now();
        let mut found = Vec::new();
        for (t, value) in self.store.records(Collection::Registrations).await? {
            if t != tenant {
                continue;
            }
            let record = decode("?", value)?;
            let compiled = Registration::compile(record);
            if compiled.is_live(now) && compiled.matches(discovery) {
                let mut record = compiled.record;
                record.stats = self.sources.stats(tenant, &record.id);
                found.push(record);
            }
        }
        Ok(found)
    }

    /// Loads every stored registration into this instance's registry (at start, and when the
    /// PostgreSQL listener may have missed announcements).
    pub async fn load_registrations(&self) -> NgsiResult<()> {
        let read_at = std::time::Instant::now();
        let mut all = Vec::new();
        for (tenant, value) in self.store.records(Collection::Registrations).await? {
            let record = decode("?", value)?;
            all.push((tenant, Registration::compile(record)));
        }
        self.registry.replace_all(read_at, all);
        Ok(())
    }

    /// Loads one stored registration into the registry (or forgets it when it is gone), after
    /// another instance announced a change.
    pub async fn reload_registration(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        match self
            .store
            .record(Collection::Registrations, tenant, id)
            .await?
        {
            None => self.registry.remove(tenant, id),
            Some(value) => self
                .registry
                .put(tenant, Registration::compile(decode(id, value)?)),
        }
        Ok(())
    }
}
