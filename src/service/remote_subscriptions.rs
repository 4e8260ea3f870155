//! Subscriptions at context sources (5.8.1.4, 5.8.5.4, 5.8.6 with 4.3.6), transport agnostic:
//! giving a subscription's reduced copy to each registered source that offers createSubscription
//! and may hold what it watches (at its creation, and later through its internal registration
//! subscription), forwarding its update and deletion to them, and turning their notifications into
//! notifications of the subscription. The requests to sources go out in the background, so that a
//! source answering slowly (or only once the subscriber has its answer) never holds the
//! subscriber's request. See docs/federation.md.

use super::AppState;
use crate::error::{NgsiError, NgsiResult};
use crate::federation::forward::{Answer, Call, Reach};
use crate::federation::ops::Operation;
use crate::federation::registration::Mode;
use crate::federation::Registration;
use crate::store::Collection;
use crate::subscription::model::{Record, Subscription};
use crate::subscription::notify;
use crate::subscription::remote::{self, Link, LINKS, NOTIFY_PATH};
use chrono::Utc;
use serde_json::Value;
use std::sync::Arc;

impl AppState {
    /// Where sources send the notifications of the copies.
    fn remote_notify_uri(&self) -> String {
        let base = self.public_url().unwrap_or("");
        format!("{base}{NOTIFY_PATH}")
    }

    /// After an entity subscription was created by a request reaching this far (5.8.1.4):
    /// creates its internal registration subscription and gives a copy to every live
    /// registration of the tenant that offers createSubscription and names what the subscription
    /// watches. The copies carry the request's Via, so that brokers registered as each other's
    /// sources do not pass one subscription around.
    pub(crate) async fn subscribe_at_sources(
        self: &Arc<Self>,
        tenant: &str,
        sub: &Subscription,
        reach: &Reach,
    ) -> NgsiResult<()> {
        let body = remote::csource_body(&sub.record, &self.remote_notify_uri());
        Box::pin(self.create_subscription(
            Collection::CsourceSubscriptions,
            tenant,
            &body,
            None,
            &Reach::local(),
        ))
        .await?;
        let now = Utc::now();
        for registration in self.registry.of(tenant).iter() {
            if registration.is_live(now) && registration.names(&sub.query.selectors, &sub.watched) {
                self.give_copy(tenant, &sub.record, registration, reach.via.clone())
                    .await?;
            }
        }
        Ok(())
    }

    /// What the internal registration subscription of `subscription` reports (the committing
    /// instance calls it once per registration change): a registration that matches (`matching`)
    /// gets a copy unless it has one; the copy of one that no longer matches is deleted at its
    /// source when that is still registered, and forgotten.
    pub async fn sources_changed(
        self: &Arc<Self>,
        tenant: &str,
        subscription: &str,
        matching: bool,
        registration: &Registration,
    ) {
        let outcome = async {
            let links = self.links_of(tenant, subscription).await?;
            let linked = links
                .iter()
                .any(|l| l.registration == registration.record.id);
            if !matching {
                self.drop_copies(links, Some(&registration.record.id))
                    .await?;
            } else if !linked {
                let Some(value) = self
                    .store
                    .record(Collection::Subscriptions, tenant, subscription)
                    .await?
                else {
                    return Ok(());
                };
                let record: Record = serde_json::from_value(value)
                    .map_err(|e| NgsiError::internal(e.to_string()))?;
                if !remote::local_only(&record) {
                    self.give_copy(tenant, &record, registration, None).await?;
                }
            }
            Ok::<(), NgsiError>(())
        };
        if let Err(e) = outcome.await {
            tracing::warn!(error = %e, subscription, registration = %registration.record.id, "updating the copies at sources failed");
        }
    }

    /// Gives a source a copy of a subscription when its registration offers createSubscription:
    /// the link is stored first (so that the source's first notification and a deletion find
    /// it), the copy is sent in the background and the link forgotten if the source refuses it.
    async fn give_copy(
        self: &Arc<Self>,
        tenant: &str,
        record: &Record,
        registration: &Registration,
        via: Option<String>,
    ) -> NgsiResult<()> {
        if !registration.serves(Operation::CreateSubscription) {
            return Ok(());
        }
        let Some(registration) = self.registered(tenant, &registration.record.id) else {
            return Ok(());
        };
        let link = Link {
            id: format!("urn:ngsi-ld:Subscription:{}", uuid::Uuid::new_v4()),
            tenant: tenant.to_string(),
            subscription: record.id.clone(),
            registration: registration.record.id.clone(),
        };
        let value = serde_json::to_value(&link).map_err(|e| NgsiError::internal(e.to_string()))?;
        self.store
            .put_record(
                Collection::RemoteSubscriptions,
                LINKS,
                &link.id,
                &value,
                true,
            )
            .await?;
        let body = remote::reduced_copy(record, &link.id, &self.remote_notify_uri());
        let reach = subscription_reach(tenant, record, via);
        let broker = self.clone();
        tokio::spawn(async move {
            let call = Call {
                method: reqwest::Method::POST,
                path: &["subscriptions"],
                params: &[],
                body: Some(&body),
            };
            if !broker.to_source(&registration, call, &reach).await {
                if let Err(e) = broker
                    .store
                    .delete_record(Collection::RemoteSubscriptions, LINKS, &link.id)
                    .await
                {
                    tracing::warn!(error = %e, copy = %link.id, "forgetting a refused copy failed");
                }
            }
        });
        Ok(())
    }

    /// Sends a request about a copy to its source; false (logged) when the source did not take
    /// it.
    async fn to_source(&self, registration: &Registration, call: Call<'_>, reach: &Reach) -> bool {
        let what = format!("{} {}", call.method, call.path.join("/"));
        match self.send_to_source(registration, call, reach).await {
            Ok(Answer::Json { .. }) => true,
            Ok(Answer::NotFound) => {
                tracing::warn!(registration = %registration.record.id, request = %what, "the source answered 404 to a request about a subscription copy");
                false
            }
            Err(failure) => {
                tracing::warn!(registration = %registration.record.id, request = %what, error = %failure.text, "a request about a subscription copy failed");
                false
            }
        }
    }

    /// The registration with this id as registered now.
    fn registered(&self, tenant: &str, id: &str) -> Option<Arc<Registration>> {
        self.registry
            .of(tenant)
            .iter()
            .find(|r| r.record.id == id)
            .cloned()
    }

    /// The copies of a subscription.
    async fn links_of(&self, tenant: &str, subscription: &str) -> NgsiResult<Vec<Link>> {
        let mut links = Vec::new();
        for (_, value) in self.store.records(Collection::RemoteSubscriptions).await? {
            match serde_json::from_value::<Link>(value) {
                Ok(link) if link.tenant == tenant && link.subscription == subscription => {
                    links.push(link)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "a stored subscription copy does not decode"),
            }
        }
        Ok(links)
    }

    /// Forgets copies (those of one registration, or all) and deletes them at their sources
    /// (5.8.5.4) in the background, where the source is still registered.
    async fn drop_copies(self: &Arc<Self>, links: Vec<Link>, only: Option<&str>) -> NgsiResult<()> {
        for link in links
            .into_iter()
            .filter(|l| only.is_none_or(|r| r == l.registration))
        {
            self.store
                .delete_record(Collection::RemoteSubscriptions, LINKS, &link.id)
                .await?;
            let Some(registration) = self.registered(&link.tenant, &link.registration) else {
                continue;
            };
            let broker = self.clone();
            tokio::spawn(async move {
                let reach = Reach {
                    tenant: link.tenant.clone(),
                    ..Reach::default()
                };
                let call = Call {
                    method: reqwest::Method::DELETE,
                    path: &["subscriptions", &link.id],
                    params: &[],
                    body: None,
                };
                broker.to_source(&registration, call, &reach).await;
            });
        }
        Ok(())
    }

    /// After an entity subscription was deleted (5.8.5.4): deletes its internal registration
    /// subscription and its copies at the sources.
    pub(crate) async fn unsubscribe_at_sources(
        self: &Arc<Self>,
        tenant: &str,
        subscription: &str,
    ) -> NgsiResult<()> {
        let csource = remote::csource_id(subscription);
        let collection = Collection::CsourceSubscriptions;
        if self
            .store
            .delete_record(collection, tenant, &csource)
            .await?
        {
            self.notifier.remove(collection, tenant, &csource);
        }
        let links = self.links_of(tenant, subscription).await?;
        self.drop_copies(links, None).await
    }

    /// After an entity subscription was updated: sends each copy the members of the updated
    /// reduced copy (PATCH, 5.8.2), in the background.
    pub(crate) async fn update_at_sources(
        self: &Arc<Self>,
        tenant: &str,
        record: &Record,
    ) -> NgsiResult<()> {
        for link in self.links_of(tenant, &record.id).await? {
            let Some(registration) = self.registered(tenant, &link.registration) else {
                continue;
            };
            let mut body = remote::reduced_copy(record, &link.id, &self.remote_notify_uri());
            if let Value::Object(members) = &mut body {
                members.remove("id");
            }
            let reach = subscription_reach(tenant, record, None);
            let broker = self.clone();
            tokio::spawn(async move {
                let call = Call {
                    method: reqwest::Method::PATCH,
                    path: &["subscriptions", &link.id],
                    params: &[],
                    body: Some(&body),
                };
                broker.to_source(&registration, call, &reach).await;
            });
        }
        Ok(())
    }

    /// A Notification a source sent for a copy (5.8.6), with the @context it came with: its
    /// entities become a notification of the subscription here, to the subscriber's endpoint,
    /// under the subscription's id and as the subscription renders entities. With splitEntities
    /// each notified fragment is first merged with what this broker holds of the entity, and the
    /// subscription's q, geoQ and scopeQ decide on the merged entity. Fails with NotFound for a
    /// copy (or subscription) unknown here.
    pub async fn remote_notification(
        &self,
        notification: &Value,
        context: Option<Value>,
    ) -> NgsiResult<()> {
        let id = notification
            .get("subscriptionId")
            .and_then(Value::as_str)
            .ok_or_else(|| NgsiError::bad_data("the notification has no subscriptionId"))?;
        let unknown =
            || NgsiError::not_found(format!("no subscription here has a copy with id '{id}'"));
        let value = self
            .store
            .record(Collection::RemoteSubscriptions, LINKS, id)
            .await?
            .ok_or_else(unknown)?;
        let link: Link =
            serde_json::from_value(value).map_err(|e| NgsiError::internal(e.to_string()))?;
        let live = self
            .notifier
            .entity_subscription(&link.tenant, &link.subscription)
            .ok_or_else(unknown)?;
        let sub = &live.sub;
        let now = Utc::now();
        if !sub.is_live(now) {
            return Ok(());
        }
        let data = notification
            .get("data")
            .cloned()
            .ok_or_else(|| NgsiError::bad_data("the notification has no data"))?;
        let fragments = self
            .read_entities(data, context)
            .await
            .map_err(NgsiError::bad_data)?;
        let mode = self
            .registered(&link.tenant, &link.registration)
            .map_or(Mode::Inclusive, |r| r.mode);
        let opts = notify::options(sub);
        let mut shown = Vec::new();
        for fragment in fragments {
            let entity = if sub.split_entities {
                let mut entity = match self.store.get(&link.tenant, &fragment.id).await? {
                    Some(held) => (*held).clone(),
                    None => fragment.clone(),
                };
                crate::federation::merge::merge(&mut entity, fragment, mode);
                if !sub.query.matches(&entity) {
                    continue;
                }
                entity
            } else {
                fragment
            };
            shown.push(crate::model::render::entity(&entity, &sub.ctx, &opts).into());
        }
        if shown.is_empty() {
            return Ok(());
        }
        let trigger = notification.get("triggerReason").and_then(Value::as_str);
        let body = notify::envelope(sub, trigger, shown, now);
        self.notifier.deliver(&live, body);
        Ok(())
    }
}

/// How a request about a subscription reaches a source: for its tenant, with the subscription's
/// @context (when it is one URL) and the Via chain it came with.
fn subscription_reach(tenant: &str, record: &Record, via: Option<String>) -> Reach {
    Reach {
        tenant: tenant.to_string(),
        via,
        context: record
            .context
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Reach::default()
    }
}
