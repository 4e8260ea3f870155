//! The @contexts this broker serves itself (5.13: kinds Hosted and ImplicitlyCreated), as the
//! loader sees them: a map from local id to document and owning tenant, so that a request naming
//! one of them by its URL (`…/ngsi-ld/v1/jsonldContexts/{localId}`) is resolved here without any
//! fetch, whatever host the URL names (the broker may be reached through proxies under several
//! names) and whatever tenant the request is for, and so that a GET of that URL without the
//! tenant's header finds the document (the URL carries no tenant; local ids are random URNs,
//! unique across tenants). The map is kept by `service::contexts` from the store: written on add
//! and delete, and reloaded periodically so that every instance on one database sees the others'
//! contexts.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The path under which stored @contexts are served (6.30, 6.31), after the API base.
pub const PATH: &str = "/ngsi-ld/v1/jsonldContexts/";

/// Local id to document of every Hosted and ImplicitlyCreated @context, of every tenant.
#[derive(Default)]
pub struct HostedIndex {
    inner: RwLock<Indexed>,
}

/// One stored @context as the index keeps it.
#[derive(Clone)]
pub struct Hosted {
    /// The tenant that added it (or whose subscription made the broker create it).
    pub tenant: String,
    /// The document served at its URL: `{"@context": ...}`.
    pub document: Arc<Value>,
}

/// The map, and how many local changes (an add, a delete) it has seen: a reload read before a
/// local change must not overwrite it.
#[derive(Default)]
struct Indexed {
    documents: HashMap<String, Hosted>,
    changes: u64,
}

impl HostedIndex {
    /// The @context with this local id, of whichever tenant.
    pub fn get(&self, local_id: &str) -> Option<Hosted> {
        self.inner
            .read()
            .expect("index lock")
            .documents
            .get(local_id)
            .cloned()
    }

    /// Adds or replaces one @context (an add through the API, or an implicit creation).
    pub fn insert(&self, local_id: String, hosted: Hosted) {
        let mut inner = self.inner.write().expect("index lock");
        inner.documents.insert(local_id, hosted);
        inner.changes += 1;
    }

    /// Removes one document; whether there was one.
    pub fn remove(&self, local_id: &str) -> bool {
        let mut inner = self.inner.write().expect("index lock");
        inner.changes += 1;
        inner.documents.remove(local_id).is_some()
    }

    /// How many local changes the index has seen: taken before a reload reads the store, and
    /// given back to [`HostedIndex::replace`].
    pub fn changes(&self) -> u64 {
        self.inner.read().expect("index lock").changes
    }

    /// Replaces the whole map with a reload from the store read when the index had seen
    /// `changes_before` local changes; a reload that a local change overtook is dropped (the next
    /// one reads it). Whether the set of ids changed.
    pub fn replace(&self, documents: HashMap<String, Hosted>, changes_before: u64) -> bool {
        let mut inner = self.inner.write().expect("index lock");
        if inner.changes != changes_before {
            return false;
        }
        let changed = inner.documents.len() != documents.len()
            || documents.keys().any(|k| !inner.documents.contains_key(k));
        inner.documents = documents;
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

    fn hosted(tenant: &str) -> Hosted {
        Hosted {
            tenant: tenant.to_string(),
            document: Arc::new(serde_json::json!({"@context": {}})),
        }
    }

    #[test]
    fn a_reload_says_whether_the_set_of_contexts_changed() {
        let index = HostedIndex::default();
        let doc = hosted("");
        assert!(index.replace(HashMap::from([("a".to_string(), doc.clone())]), 0));
        assert!(!index.replace(HashMap::from([("a".to_string(), doc.clone())]), 0));
        assert!(index.replace(HashMap::from([("b".to_string(), doc)]), 0));
        assert!(index.get("b").is_some() && index.get("a").is_none());
    }

    #[test]
    fn a_reload_read_before_an_add_does_not_undo_it() {
        let index = HostedIndex::default();
        let doc = hosted("t");
        // The reload reads the store, an add lands meanwhile, then the reload would replace.
        let before = index.changes();
        index.insert("new".to_string(), doc.clone());
        assert!(!index.replace(HashMap::new(), before));
        assert!(index.get("new").is_some());
        // The next reload, read after the add, applies.
        let before = index.changes();
        let stored = HashMap::from([("new".to_string(), doc.clone()), ("other".to_string(), doc)]);
        assert!(index.replace(stored, before));
        assert_eq!(index.get("other").map(|h| h.tenant).as_deref(), Some("t"));
    }
}
