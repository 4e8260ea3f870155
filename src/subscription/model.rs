//! Subscriptions (5.2.12) as stored and as compiled for matching. A subscription is stored as its
//! [`Record`]: the members the subscriber gave (only those of 5.2.12, with entity types and
//! attribute names expanded to IRIs), the @context they came with, system times and delivery
//! statistics. [`Subscription`] is the record compiled once (queries parsed, options decided) so
//! that matching a change costs no parsing.

use crate::error::NgsiError;
use crate::ld::ActiveContext;
use crate::model::render::Format;
use crate::query::EntityQuery;
use crate::store::Collection;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// What a subscription (and a context source registration, see
/// `crate::federation::registration`) keeps in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The id (a URI).
    pub id: String,
    /// The members as given (5.2.12 for a subscription, 5.2.9 for a registration; names
    /// expanded), without id, type and read-only members.
    pub doc: Map<String, Value>,
    /// The @context of the request that created (or last updated) it; None for the core context.
    pub context: Option<Value>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last updated.
    pub modified_at: DateTime<Utc>,
    /// Delivery statistics (5.2.15 NotificationParams read-only members; for a registration,
    /// the requests forwarded to its endpoint).
    #[serde(default)]
    pub stats: Stats,
}

impl Record {
    /// The id a create body gives (a URI), or a new `urn:ngsi-ld:<kind>:<uuid>`.
    pub fn id_from_body(body: &Value, kind: &str) -> Result<String, NgsiError> {
        match body.get("id") {
            None => Ok(format!("urn:ngsi-ld:{kind}:{}", uuid::Uuid::new_v4())),
            Some(Value::String(id)) => {
                crate::model::validate::uri(&format!("the {kind} id"), id)?;
                Ok(id.clone())
            }
            Some(other) => Err(NgsiError::bad_data(format!(
                "the {kind} id must be a URI string, not {other}"
            ))),
        }
    }

    /// Applies an update fragment (5.8.2, 5.9.3): each member replaces the stored one, null
    /// removes it; a new @context replaces the stored one.
    pub fn apply(
        &mut self,
        changes: Map<String, Value>,
        context: Option<Value>,
        now: DateTime<Utc>,
    ) {
        for (name, value) in changes {
            if value.is_null() {
                self.doc.shift_remove(&name);
            } else {
                self.doc.insert(name, value);
            }
        }
        if context.is_some() {
            self.context = context;
        }
        self.modified_at = now;
    }
}

/// The read-only delivery members of NotificationParams (Table 5.2.14-2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Notifications attempted.
    pub times_sent: u64,
    /// Notifications that could not be delivered (after retries).
    pub times_failed: u64,
    /// When the last notification was attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification: Option<DateTime<Utc>>,
    /// When the last notification was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
    /// When the last notification failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<DateTime<Utc>>,
    /// "ok" or "failed": the outcome of the last notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl Stats {
    /// Writes the statistics as the read-only members of a representation (timesSent and
    /// timesFailed when not zero, the times when known, status): the NotificationParams of a
    /// subscription (5.2.14) and a registration's own members (Table 5.2.9-1).
    pub fn render_into(&self, out: &mut Map<String, Value>) {
        for (k, count) in [
            ("timesSent", self.times_sent),
            ("timesFailed", self.times_failed),
        ] {
            if count > 0 {
                out.insert(k.into(), Value::from(count));
            }
        }
        for (k, t) in [
            ("lastNotification", self.last_notification),
            ("lastSuccess", self.last_success),
            ("lastFailure", self.last_failure),
        ] {
            if let Some(t) = t {
                out.insert(k.into(), Value::String(crate::model::format_time(&t)));
            }
        }
        if let Some(status) = &self.status {
            out.insert("status".into(), Value::String(status.clone()));
        }
    }

    /// How many delivery outcomes these statistics have seen (the larger copy is the newer one).
    pub fn events(&self) -> u64 {
        self.times_sent + self.times_failed
    }
}

/// The notification triggers of Table 5.2.12-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// An entity matching the subscription was created.
    EntityCreated,
    /// A matching entity was changed.
    EntityUpdated,
    /// A matching entity was deleted.
    EntityDeleted,
    /// An attribute was added to an existing matching entity.
    AttributeCreated,
    /// An attribute of a matching entity was changed.
    AttributeUpdated,
    /// An attribute of a matching entity was removed (or the entity was deleted).
    AttributeDeleted,
}

impl Trigger {
    /// Every trigger with its name.
    pub const ALL: [(Trigger, &'static str); 6] = [
        (Trigger::EntityCreated, "entityCreated"),
        (Trigger::EntityUpdated, "entityUpdated"),
        (Trigger::EntityDeleted, "entityDeleted"),
        (Trigger::AttributeCreated, "attributeCreated"),
        (Trigger::AttributeUpdated, "attributeUpdated"),
        (Trigger::AttributeDeleted, "attributeDeleted"),
    ];

    /// The trigger's name (the notification's triggerReason).
    pub fn name(self) -> &'static str {
        Trigger::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("", |(_, n)| n)
    }

    /// The trigger of a name.
    pub fn from_name(name: &str) -> Option<Trigger> {
        Trigger::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(t, _)| *t)
    }

    /// The triggers when none are given (5.2.12).
    pub const DEFAULT: [Trigger; 2] = [Trigger::AttributeCreated, Trigger::AttributeUpdated];
}

/// Media type of the notifications to an HTTP endpoint (endpoint `accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyAs {
    /// application/json, @context in a Link header.
    Json,
    /// application/ld+json, @context in the body.
    JsonLd,
    /// application/geo+json: entities as GeoJSON Features.
    GeoJson,
}

impl NotifyAs {
    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            NotifyAs::Json => "application/json",
            NotifyAs::JsonLd => "application/ld+json",
            NotifyAs::GeoJson => "application/geo+json",
        }
    }
}

/// MQTT protocol versions an endpoint may ask for in notifierInfo (`MQTT-Version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (the default).
    V311,
    /// MQTT 5.0.
    V5,
}

/// Where and how notifications go (Endpoint, 5.2.15).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The endpoint URI (http, https, mqtt or mqtts).
    pub uri: url::Url,
    /// The notification media type.
    pub accept: NotifyAs,
    /// Extra headers (HTTP) or metadata (MQTT) to send with each notification.
    pub receiver_info: Vec<(String, String)>,
    /// Settings of the notifier (MQTT-Version, MQTT-QoS).
    pub notifier_info: Vec<(String, String)>,
    /// Per-notification timeout in milliseconds (endpoint `timeout`), when given.
    pub timeout_ms: Option<u64>,
}

impl Endpoint {
    /// Whether notifications go over MQTT.
    pub fn is_mqtt(&self) -> bool {
        matches!(self.uri.scheme(), "mqtt" | "mqtts")
    }

    /// A notifierInfo value by key.
    pub fn notifier(&self, key: &str) -> Option<&str> {
        self.notifier_info
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The MQTT version (notifierInfo `MQTT-Version`: mqtt3.1.1 or mqtt5.0).
    pub fn mqtt_version(&self) -> MqttVersion {
        match self.notifier("MQTT-Version") {
            Some(v) if v.contains('5') => MqttVersion::V5,
            _ => MqttVersion::V311,
        }
    }

    /// The MQTT QoS (notifierInfo `MQTT-QoS`: 0 or 1; 0 by default).
    pub fn mqtt_qos(&self) -> u8 {
        match self.notifier("MQTT-QoS") {
            Some("1") => 1,
            Some("2") => 2,
            _ => 0,
        }
    }
}

/// The notification members of a subscription (NotificationParams, 5.2.14), decided.
#[derive(Debug, Clone)]
pub struct NotificationSpec {
    /// `attributes`: only these (expanded) attributes.
    pub attributes: Option<HashSet<String>>,
    /// `pick`: only these members.
    pub pick: Option<HashSet<String>>,
    /// `omit`: never these members.
    pub omit: HashSet<String>,
    /// The entity representation.
    pub format: Format,
    /// Include previous values of changed attributes.
    pub show_changes: bool,
    /// Include system attributes.
    pub sys_attrs: bool,
    /// The subscription's `datasetId`: only these instances (None: the default instance).
    pub dataset_ids: Option<HashSet<Option<String>>>,
    /// Where to send.
    pub endpoint: Endpoint,
    /// `join`/`joinLevel`: the linked entities that go with each notified entity (4.5.23).
    pub join: Option<crate::model::join::Join>,
}

/// A subscription compiled for matching and rendering.
pub struct Subscription {
    /// Its tenant.
    pub tenant: String,
    /// What is stored.
    pub record: Record,
    /// Entity selectors, q, geoQ and scopeQ (attrs stays empty: watchedAttributes are separate).
    pub query: EntityQuery,
    /// `watchedAttributes` (expanded); empty means every attribute.
    pub watched: Vec<String>,
    /// `temporalQ`: an entity is notified only while one of its attribute instances has its time
    /// property (observedAt unless `timeproperty` says otherwise) within the range, as a temporal
    /// query selects entities (for registration subscriptions it selects registrations).
    pub temporal: Option<crate::store::history::HistoryQuery>,
    /// The notification triggers.
    pub triggers: Vec<Trigger>,
    /// `timeInterval` in seconds: periodic notifications instead of change-driven ones.
    pub time_interval: Option<f64>,
    /// `throttling` in seconds: minimal time between two notifications.
    pub throttling: Option<f64>,
    /// `expiresAt`.
    pub expires_at: Option<DateTime<Utc>>,
    /// `isActive` (false: paused).
    pub is_active: bool,
    /// `splitEntities`: the entities notified by context sources (5.8.6) are fragments, merged
    /// with what is held here and filtered here rather than at the sources.
    pub split_entities: bool,
    /// `lang`.
    pub lang: Option<String>,
    /// The notification parameters.
    pub notification: NotificationSpec,
    /// The context notifications are compacted with (jsonldContext, else the subscription's).
    pub ctx: Arc<ActiveContext>,
    /// The @context value notifications carry (Link header or body member).
    pub notify_context: Value,
    /// For a context source registration subscription (5.11), what registrations it selects, by
    /// the matching of discovery (entities and watchedAttributes against their information, q
    /// and csf on their properties, geoQ, scopeQ, temporalQ); `query` is then empty. None for an
    /// entity subscription.
    pub csource: Option<crate::federation::Discovery>,
}

/// The status of a subscription (5.2.12): active, paused or expired.
pub fn status(
    is_active: bool,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> &'static str {
    if expires_at.is_some_and(|t| t <= now) {
        "expired"
    } else if is_active {
        "active"
    } else {
        "paused"
    }
}

impl Subscription {
    /// The collection the subscription is kept in.
    pub fn collection(&self) -> Collection {
        if self.csource.is_some() {
            Collection::CsourceSubscriptions
        } else {
            Collection::Subscriptions
        }
    }

    /// How the notifier and the PostgreSQL claims name it: (tenant, [`Collection::owner_key`]).
    pub fn key(&self) -> (String, String) {
        (
            self.tenant.clone(),
            self.collection().owner_key(&self.record.id),
        )
    }

    /// Whether notifications are due at `now` (active and not expired).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        status(self.is_active, self.expires_at, now) == "active"
    }
}

/// A BadRequestData naming the subscription member at fault.
pub fn bad(member: &str, detail: impl std::fmt::Display) -> NgsiError {
    NgsiError::bad_data(format!("subscription {member}: {detail}"))
}

/// Applies `f` to every name of a type expression (4.17), keeping its operators and parentheses.
pub fn map_type_names(expr: &str, f: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut name = String::new();
    for c in expr.chars() {
        if matches!(c, ',' | ';' | '|' | '(' | ')') {
            if !name.trim().is_empty() {
                out.push_str(&f(name.trim()));
            }
            name.clear();
            out.push(c);
        } else {
            name.push(c);
        }
    }
    if !name.trim().is_empty() {
        out.push_str(&f(name.trim()));
    }
    out
}
