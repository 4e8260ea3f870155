//! Subscriptions at context sources (5.8.1.4, 5.8.5.4, 5.8.6): what an entity subscription here
//! gives the registered sources that offer createSubscription. Each such source gets a reduced
//! copy of the subscription under an id of its own ([`reduced_copy`]), whose notifications come
//! back to this broker at [`NOTIFY_PATH`]; a [`Link`] record maps that id to the subscription
//! here. An internal context source registration subscription, whose id names the subscription
//! ([`csource_id`]), tells the broker of matching sources registered later and of those that stop
//! matching; the broker handles its notifications itself instead of sending them (see
//! `crate::service::remote_subscriptions`). See docs/federation.md.

use super::model::Record;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Where sources send the notifications of the copies, below this broker's public URL: outside
/// `/ngsi-ld/v1`, as it is no NGSI-LD resource.
pub const NOTIFY_PATH: &str = "/ngsi-ld/ex/remote-notify";

/// The tenant key under which every [`Link`] is stored, whatever the tenant of its subscription
/// (the record names that): a source's notification names only the copy's id, and the tenant it
/// comes with is the source's own.
pub const LINKS: &str = "";

/// One copy of a subscription held by a source, stored by the copy's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The copy's id at the source (the subscriptionId of its notifications).
    pub id: String,
    /// The tenant of the subscription here.
    pub tenant: String,
    /// The id of the subscription here.
    pub subscription: String,
    /// The id of the registration of the source.
    pub registration: String,
}

/// What precedes a subscription's id in the id of its internal registration subscription.
const CSOURCE_PREFIX: &str = "urn:ngsi-ld:CsourceSubscription:sourcesOf:";

/// The id of the internal context source registration subscription of a subscription.
pub fn csource_id(subscription: &str) -> String {
    format!("{CSOURCE_PREFIX}{subscription}")
}

/// The subscription whose internal registration subscription has this id, if it is one.
pub fn subscription_of(csource_id: &str) -> Option<&str> {
    csource_id.strip_prefix(CSOURCE_PREFIX)
}

/// Whether the subscriber asked for a subscription of this broker's entities only
/// (`localOnly`).
pub fn local_only(record: &Record) -> bool {
    record.doc.get("localOnly") == Some(&Value::Bool(true))
}

/// Copies the members of `names` that the stored document has.
fn copy_members(doc: &Map<String, Value>, names: &[&str], into: &mut Map<String, Value>) {
    for name in names {
        if let Some(value) = doc.get(*name) {
            into.insert((*name).to_string(), value.clone());
        }
    }
}

/// The reduced copy a source gets (5.8.1.4), as a create body: the entities and attributes
/// watched (names expanded), when and how often to notify, the filters unless the subscription
/// splits entities (the fragments are then filtered here after merging, 5.8.6), normalized
/// entities sent as JSON to `notify_uri`. Never the subscriber's endpoint.
pub fn reduced_copy(record: &Record, id: &str, notify_uri: &str) -> Value {
    let doc = &record.doc;
    let mut copy = Map::new();
    copy.insert("id".into(), Value::String(id.to_string()));
    copy.insert("type".into(), Value::String("Subscription".into()));
    copy_members(
        doc,
        &[
            "entities",
            "watchedAttributes",
            "notificationTrigger",
            "timeInterval",
            "expiresAt",
            "throttling",
            "splitEntities",
        ],
        &mut copy,
    );
    if doc.get("splitEntities") != Some(&Value::Bool(true)) {
        copy_members(doc, &["q", "geoQ", "scopeQ"], &mut copy);
    }
    copy.insert(
        "notification".into(),
        json!({
            "format": "normalized",
            "endpoint": { "uri": notify_uri, "accept": "application/json" },
        }),
    );
    Value::Object(copy)
}

/// The create body of the internal registration subscription of a subscription: the same
/// entities and watched attributes (names expanded), so that it selects the registrations of
/// sources that may hold what the subscription watches. Its notifications are never sent, so its
/// endpoint only names this broker.
pub fn csource_body(record: &Record, notify_uri: &str) -> Value {
    let mut body = Map::new();
    body.insert("id".into(), Value::String(csource_id(&record.id)));
    body.insert("type".into(), Value::String("Subscription".into()));
    body.insert(
        "description".into(),
        Value::String(format!(
            "the sources of subscription {} (kept by the broker)",
            record.id
        )),
    );
    copy_members(&record.doc, &["entities", "watchedAttributes"], &mut body);
    body.insert(
        "notification".into(),
        json!({ "endpoint": { "uri": notify_uri } }),
    );
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn record(doc: Value) -> Record {
        Record {
            id: "urn:ngsi-ld:Subscription:s".into(),
            doc: doc.as_object().cloned().unwrap(),
            context: None,
            created_at: Utc::now(),
            modified_at: Utc::now(),
            stats: Default::default(),
        }
    }

    #[test]
    fn the_copy_notifies_this_broker_and_keeps_the_filters_unless_entities_are_split() {
        let doc = json!({
            "entities": [{"type": "https://example.org/Vehicle"}],
            "q": "speed>50",
            "throttling": 5,
            "notification": {"format": "keyValues", "endpoint": {"uri": "http://subscriber/n"}},
        });
        let copy = reduced_copy(
            &record(doc.clone()),
            "urn:x:1",
            "http://me/ngsi-ld/ex/remote-notify",
        );
        assert_eq!(copy["id"], "urn:x:1");
        assert_eq!(copy["q"], "speed>50");
        assert_eq!(copy["throttling"], 5);
        assert_eq!(copy["notification"]["format"], "normalized");
        assert_eq!(
            copy["notification"]["endpoint"]["uri"],
            "http://me/ngsi-ld/ex/remote-notify"
        );
        assert!(!copy.to_string().contains("subscriber"));
        let mut split = doc;
        split["splitEntities"] = Value::Bool(true);
        let copy = reduced_copy(&record(split), "urn:x:2", "http://me/n");
        assert!(copy.get("q").is_none());
        assert_eq!(copy["splitEntities"], true);
    }

    #[test]
    fn the_internal_registration_subscription_names_its_subscription() {
        let id = csource_id("urn:ngsi-ld:Subscription:s");
        assert_eq!(subscription_of(&id), Some("urn:ngsi-ld:Subscription:s"));
        assert_eq!(subscription_of("urn:ngsi-ld:Subscription:s"), None);
        let body = csource_body(
            &record(json!({"entities": [{"type": "T"}], "q": "a>1"})),
            "http://me/n",
        );
        assert_eq!(body["id"], Value::String(id));
        assert!(body.get("q").is_none());
        assert_eq!(body["entities"], json!([{"type": "T"}]));
    }
}
