//! The @context management of clause 5.13: @contexts added by users (kind Hosted) or created by
//! the broker for a subscription whose @context is not one URL (kind ImplicitlyCreated) are kept
//! in the store per tenant and served back at their own URL; the documents the loader fetched
//! (kind Cached) are listed, served, dropped and reloaded from its cache. Transport agnostic: the
//! HTTP binding is `http::contexts`.
//!
//! Tenants: a stored @context belongs to its tenant (the `NGSILD-Tenant` header the OpenAPI of
//! GS CIM 009 gives every /jsonldContexts operation; 5.5.10 makes the tenant the boundary of an
//! operation): a request naming another tenant neither lists, serves nor deletes it. But its URL
//! carries no tenant, and the parties it is meant for (a notification receiver reading the Link
//! header, another broker) send none: so a GET of the URL without a tenant (the default tenant's)
//! finds it whichever tenant holds it, and a request of any tenant naming the URL resolves it, as
//! a fetch of the URL would. Local ids are random URNs, unique across tenants and not guessable.

use super::AppState;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::ld::hosted::{self, Hosted};
use crate::ld::loader::CachedContext;
use crate::model::format_time;
use crate::store::Collection;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The kinds of @contexts a broker holds (5.13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Added by a user with POST /jsonldContexts.
    Hosted,
    /// A copy of a document fetched from its URL.
    Cached,
    /// Created by the broker, so that a @context that is not one URL has a URL of its own.
    ImplicitlyCreated,
}

impl Kind {
    /// Reads the `kind` query parameter (6.30.3.2).
    pub fn parse(text: &str) -> NgsiResult<Kind> {
        match text {
            "Hosted" => Ok(Kind::Hosted),
            "Cached" => Ok(Kind::Cached),
            "ImplicitlyCreated" => Ok(Kind::ImplicitlyCreated),
            other => Err(NgsiError::bad_data(format!(
                "kind '{other}' is none of Hosted, Cached, ImplicitlyCreated"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Hosted => "Hosted",
            Kind::Cached => "Cached",
            Kind::ImplicitlyCreated => "ImplicitlyCreated",
        }
    }
}

/// A stored @context (Hosted or ImplicitlyCreated), as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    local_id: String,
    kind: Kind,
    created_at: DateTime<Utc>,
    /// The document served at the context's URL: `{"@context": ...}`.
    body: Value,
    /// For an ImplicitlyCreated @context, the id of the subscription it was created for, which
    /// takes it away again when it is deleted or no longer names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// A @context as the API shows it: its document and the metadata of 5.13.3 (`details=true`).
pub struct ContextEntry {
    /// Where it can be retrieved: this broker's URL for it, or the URL it was fetched from.
    pub url: String,
    /// The broker's own id of it.
    pub local_id: String,
    /// Its kind.
    pub kind: Kind,
    /// When it was added, created or fetched.
    pub created_at: DateTime<Utc>,
    /// For a Cached one: how often it was used and when last.
    pub usage: Option<(u64, Option<DateTime<Utc>>)>,
    /// The document itself.
    pub document: Arc<Value>,
}

impl ContextEntry {
    /// The JSON object of 5.13.3.4 (details): URL, localId, kind, createdAt and, for a Cached
    /// @context, lastUsage and numberOfHits.
    pub fn details(&self) -> Value {
        let mut out = Map::new();
        out.insert("URL".into(), json!(self.url));
        out.insert("localId".into(), json!(self.local_id));
        out.insert("kind".into(), json!(self.kind.name()));
        out.insert("createdAt".into(), json!(format_time(&self.created_at)));
        if let Some((hits, last)) = self.usage {
            if let Some(last) = last {
                out.insert("lastUsage".into(), json!(format_time(&last)));
            }
            out.insert("numberOfHits".into(), json!(hits));
        }
        Value::Object(out)
    }

    fn cached(entry: &CachedContext) -> ContextEntry {
        ContextEntry {
            url: entry.url.clone(),
            local_id: entry.local_id.clone(),
            kind: Kind::Cached,
            created_at: entry.created_at,
            usage: Some(entry.usage()),
            document: entry.document.clone(),
        }
    }
}

/// Fails unless `value` is a JSON-LD @context: a URL, a context object, or an array of those
/// (5.13.2.4 with 5.5.4).
fn check_context_value(value: &Value) -> NgsiResult<()> {
    let entry_ok = |v: &Value| v.is_string() || v.is_object();
    let ok = match value {
        Value::Array(items) => !items.is_empty() && items.iter().all(entry_ok),
        other => entry_ok(other),
    };
    if ok {
        Ok(())
    } else {
        Err(NgsiError::bad_data(format!(
            "an @context is a URL, an object or an array of those, not {value}"
        )))
    }
}

fn missing(id: &str) -> NgsiError {
    NgsiError::not_found(format!("there is no @context with id '{id}'"))
}

impl AppState {
    /// Adds a user @context (5.13.2): the body is a JSON-LD document with an `@context` member.
    /// The @context is processed first (the documents it refers to are fetched and cached), so
    /// that a broken one is refused rather than stored. Returns the new local id.
    pub async fn add_context(&self, tenant: &str, document: Value) -> NgsiResult<String> {
        let Some(context) = document.as_object().and_then(|o| o.get("@context")) else {
            return Err(NgsiError::invalid(
                "the body of a new @context is a JSON object with an @context member",
            ));
        };
        check_context_value(context)?;
        self.contexts.active(Some(context)).await?;
        self.store_context(tenant, Kind::Hosted, document, None)
            .await
    }

    /// The URL of an ImplicitlyCreated @context holding `context` (5.13.1), created for the
    /// subscription `subscription`: a subscription whose @context is not one URL gets one, so
    /// that its notifications can name their @context in a Link header.
    pub async fn implicit_context(
        &self,
        tenant: &str,
        context: &Value,
        subscription: &str,
    ) -> NgsiResult<String> {
        let id = self
            .store_context(
                tenant,
                Kind::ImplicitlyCreated,
                json!({ "@context": context }),
                Some(subscription.to_string()),
            )
            .await?;
        Ok(self.context_url(&id))
    }

    /// Whether `url` names the ImplicitlyCreated @context of the tenant created for
    /// `subscription` (a failure to read the store says no, with a warning).
    pub async fn is_implicit_context_of(
        &self,
        tenant: &str,
        url: &str,
        subscription: &str,
    ) -> bool {
        let Some(id) = hosted::local_id(url) else {
            return false;
        };
        let stored = self
            .store
            .record(Collection::JsonldContexts, tenant, &id)
            .await
            .and_then(|value| value.map(decode).transpose());
        match stored {
            Ok(stored) => stored.is_some_and(|s| {
                s.kind == Kind::ImplicitlyCreated && s.owner.as_deref() == Some(subscription)
            }),
            Err(e) => {
                tracing::warn!(error = %e, context = %id, "reading an implicit @context failed");
                false
            }
        }
    }

    /// Removes the ImplicitlyCreated @context at `url` if it was created for `subscription`,
    /// which was refused, deleted, or no longer names it: nothing else can need it, and the
    /// store would otherwise keep one per subscription ever made. Any other @context (a Hosted
    /// one, or one created for another subscription, that a subscription named itself) stays.
    pub async fn release_implicit_context(&self, tenant: &str, url: &str, subscription: &str) {
        if !self.is_implicit_context_of(tenant, url, subscription).await {
            return;
        }
        let Some(id) = hosted::local_id(url) else {
            return;
        };
        if let Err(e) = self.delete_context(tenant, &id, false).await {
            tracing::warn!(error = %e, context = %id, "removing an unused @context failed");
        }
    }

    async fn store_context(
        &self,
        tenant: &str,
        kind: Kind,
        body: Value,
        owner: Option<String>,
    ) -> NgsiResult<String> {
        let local_id = format!("urn:ngsi-ld:Context:{}", uuid::Uuid::new_v4());
        let stored = Stored {
            local_id: local_id.clone(),
            kind,
            created_at: Utc::now(),
            body,
            owner,
        };
        let record =
            serde_json::to_value(&stored).map_err(|e| NgsiError::internal(e.to_string()))?;
        self.store
            .put_record(Collection::JsonldContexts, tenant, &local_id, &record, true)
            .await?;
        let hosted = Hosted {
            tenant: tenant.to_string(),
            document: Arc::new(stored.body),
        };
        self.contexts.hosted.insert(local_id.clone(), hosted);
        Ok(local_id)
    }

    /// This broker's URL of a stored @context (local ids are URNs of characters a path segment
    /// may hold as they are).
    fn context_url(&self, local_id: &str) -> String {
        let base = self.public_url().unwrap_or("");
        format!("{base}{}{local_id}", hosted::PATH)
    }

    fn stored_entry(&self, stored: Stored) -> ContextEntry {
        ContextEntry {
            url: self.context_url(&stored.local_id),
            local_id: stored.local_id,
            kind: stored.kind,
            created_at: stored.created_at,
            usage: None,
            document: Arc::new(stored.body),
        }
    }

    /// The @contexts of a tenant (5.13.3): its stored ones, then the Cached ones (shared by every
    /// tenant), of one kind when `kind` is given.
    pub async fn list_contexts(
        &self,
        tenant: &str,
        kind: Option<Kind>,
    ) -> NgsiResult<Vec<ContextEntry>> {
        let mut out = Vec::new();
        if kind != Some(Kind::Cached) {
            for (t, value) in self.store.records(Collection::JsonldContexts).await? {
                if t == tenant {
                    let stored = decode(value)?;
                    if kind.is_none_or(|k| k == stored.kind) {
                        out.push(self.stored_entry(stored));
                    }
                }
            }
        }
        if kind.is_none_or(|k| k == Kind::Cached) {
            out.extend(
                self.contexts
                    .cached()
                    .iter()
                    .map(|c| ContextEntry::cached(c)),
            );
        }
        Ok(out)
    }

    /// One @context (5.13.4), by local id, or, for a Cached one, also by the URL it was
    /// fetched from: the tenant's, a Cached one, or, for a request of the default tenant (one
    /// without a tenant, as a party dereferencing the URL sends), the stored one of another
    /// tenant that has this local id (see the module's note on tenants). Serving a Cached
    /// @context counts as a use of it.
    pub async fn context_entry(&self, tenant: &str, id: &str) -> NgsiResult<ContextEntry> {
        if let Some(value) = self
            .store
            .record(Collection::JsonldContexts, tenant, id)
            .await?
        {
            return Ok(self.stored_entry(decode(value)?));
        }
        if let Some(cached) = self.contexts.cached_entry(id) {
            cached.touch();
            return Ok(ContextEntry::cached(&cached));
        }
        let owner = self
            .contexts
            .hosted
            .get(id)
            .filter(|_| tenant == crate::store::DEFAULT_TENANT)
            .ok_or_else(|| missing(id))?;
        let value = self
            .store
            .record(Collection::JsonldContexts, &owner.tenant, id)
            .await?
            .ok_or_else(|| missing(id))?;
        Ok(self.stored_entry(decode(value)?))
    }

    /// Deletes a @context (5.13.5): a stored one is removed, a Cached one dropped from the cache
    /// or, with `reload`, fetched anew (the cached copy stays when that fails). The core @context
    /// cannot be deleted; only Cached @contexts can be reloaded.
    pub async fn delete_context(&self, tenant: &str, id: &str, reload: bool) -> NgsiResult<()> {
        if let Some(value) = self
            .store
            .record(Collection::JsonldContexts, tenant, id)
            .await?
        {
            let stored = decode(value)?;
            if reload {
                return Err(NgsiError::bad_data(format!(
                    "the @context {id} is of kind {}: only Cached @contexts can be reloaded",
                    stored.kind.name()
                )));
            }
            if !self
                .store
                .delete_record(Collection::JsonldContexts, tenant, id)
                .await?
            {
                return Err(missing(id));
            }
            self.contexts.hosted.remove(id);
            self.contexts.stored_contexts_changed();
            return Ok(());
        }
        let cached = self.contexts.cached_entry(id).ok_or_else(|| missing(id))?;
        match (cached.bundled, reload) {
            (_, true) => self.contexts.reload(&cached).await,
            (true, false) => Err(NgsiError::bad_data(format!(
                "{} is the core @context, which cannot be deleted",
                cached.url
            ))),
            (false, false) => {
                self.contexts.forget(&cached);
                Ok(())
            }
        }
    }

    /// Reloads the stored @contexts of every tenant into the loader, so that a @context added or
    /// deleted by another instance on the same database resolves (or no longer does) here too.
    /// Returns 1 when the set changed, 0 otherwise.
    pub async fn reload_stored_contexts(&self) -> NgsiResult<usize> {
        let changes_before = self.contexts.hosted.changes();
        let mut documents = HashMap::new();
        for (tenant, value) in self.store.records(Collection::JsonldContexts).await? {
            let stored = decode(value)?;
            let hosted = Hosted {
                tenant,
                document: Arc::new(stored.body),
            };
            documents.insert(stored.local_id, hosted);
        }
        if self.contexts.hosted.replace(documents, changes_before) {
            self.contexts.stored_contexts_changed();
            return Ok(1);
        }
        Ok(0)
    }
}

fn decode(value: Value) -> NgsiResult<Stored> {
    serde_json::from_value(value).map_err(|e| {
        NgsiError::new(
            ErrorKind::InternalError,
            format!("a stored @context does not decode: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_objects_and_arrays_of_them_are_contexts() {
        for good in [
            json!("https://a.b/c"),
            json!({"a": "b"}),
            json!(["x", {"a": "b"}]),
        ] {
            assert!(check_context_value(&good).is_ok(), "{good}");
        }
        for bad in [
            json!(42),
            json!(true),
            json!(["x", 7]),
            json!([]),
            json!(null),
        ] {
            let e = check_context_value(&bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequestData, "{bad}");
        }
    }

    #[test]
    fn details_show_usage_only_for_cached_contexts() {
        let at = Utc::now();
        let mut entry = ContextEntry {
            url: "http://b/ngsi-ld/v1/jsonldContexts/urn:x".into(),
            local_id: "urn:x".into(),
            kind: Kind::Hosted,
            created_at: at,
            usage: None,
            document: Arc::new(json!({"@context": {}})),
        };
        let hosted = entry.details();
        assert_eq!(hosted["kind"], "Hosted");
        assert!(hosted.get("numberOfHits").is_none());
        entry.kind = Kind::Cached;
        entry.usage = Some((3, Some(at)));
        let cached = entry.details();
        assert_eq!(cached["numberOfHits"], 3);
        assert_eq!(cached["lastUsage"], format_time(&at));
    }
}
