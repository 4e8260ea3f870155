//! The @contexts this broker serves itself (5.13: kinds Hosted and ImplicitlyCreated), as the
//! loader sees them: a map from local id to document, so that a request naming one of them by its
//! URL (`…/ngsi-ld/v1/jsonldContexts/{localId}`) is resolved here without any fetch, whatever host
//! the URL names (the broker may be reached through proxies under several names). The map is kept
//! by `service::contexts` from the store: written on add and delete, and reloaded periodically so
//! that every instance on one database sees the others' contexts.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The path under which stored @contexts are served (6.30, 6.31), after the API base.
pub const PATH: &str = "/ngsi-ld/v1/jsonldContexts/";

/// Local id to document of every Hosted and ImplicitlyCreated @context, of every tenant.
#[derive(Default)]
pub struct HostedIndex {
    documents: RwLock<HashMap<String, Arc<Value>>>,
}

impl HostedIndex {
    /// The document with this local id.
    pub fn get(&self, local_id: &str) -> Option<Arc<Value>> {
        self.documents
            .read()
            .expect("index lock")
            .get(local_id)
            .cloned()
    }

    /// Adds or replaces one document.
    pub fn insert(&self, local_id: String, document: Arc<Value>) {
        self.documents
            .write()
            .expect("index lock")
            .insert(local_id, document);
    }

    /// Removes one document; whether there was one.
    pub fn remove(&self, local_id: &str) -> bool {
        self.documents
            .write()
            .expect("index lock")
            .remove(local_id)
            .is_some()
    }

    /// Replaces the whole map (a reload from the store); whether its set of ids changed.
    pub fn replace(&self, documents: HashMap<String, Arc<Value>>) -> bool {
        let mut current = self.documents.write().expect("index lock");
        let changed =
            current.len() != documents.len() || documents.keys().any(|k| !current.contains_key(k));
        *current = documents;
        changed
    }
}

/// The local id a URL names when it is the URL of a stored @context of this API
/// (`<any base>/ngsi-ld/v1/jsonldContexts/<localId>`, the id percent-decoded).
pub fn local_id(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let encoded = parsed.path().strip_prefix(PATH)?;
    if encoded.is_empty() || encoded.contains('/') {
        return None;
    }
    Some(
        percent_encoding::percent_decode_str(encoded)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_of_a_stored_context_names_its_local_id_on_any_host() {
        assert_eq!(
            local_id("http://localhost:9090/ngsi-ld/v1/jsonldContexts/urn:ngsi-ld:Context:1")
                .as_deref(),
            Some("urn:ngsi-ld:Context:1")
        );
        assert_eq!(
            local_id("https://b.example/ngsi-ld/v1/jsonldContexts/urn%3Ax%3A2").as_deref(),
            Some("urn:x:2")
        );
        assert_eq!(
            local_id("https://b.example/ngsi-ld/v1/jsonldContexts/"),
            None
        );
        assert_eq!(local_id("https://b.example/context.jsonld"), None);
        assert_eq!(local_id("urn:ngsi-ld:Context:1"), None);
    }

    #[test]
    fn a_reload_says_whether_the_set_of_contexts_changed() {
        let index = HostedIndex::default();
        let doc = Arc::new(serde_json::json!({"@context": {}}));
        assert!(index.replace(HashMap::from([("a".to_string(), doc.clone())])));
        assert!(!index.replace(HashMap::from([("a".to_string(), doc.clone())])));
        assert!(index.replace(HashMap::from([("b".to_string(), doc)])));
        assert!(index.get("b").is_some() && index.get("a").is_none());
    }
}
