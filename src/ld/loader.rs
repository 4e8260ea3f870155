//! Where @context documents come from: the bundled core contexts and Smart Data Models, an offline
//! directory for air-gapped sites, URL-prefix rewrites to local mirrors, and remote HTTP(S) fetches
//! with a timeout, a size cap and a bounded cache (the kind Cached of 5.13, with its usage counts),
//! and the @contexts this broker stores itself (`hosted`). Processed contexts are cached too
//! (bounded), so a request whose @context was seen before costs one map look-up.

use super::active::{ActiveContext, DocumentSource};
use super::hosted::{self, HostedIndex};
use super::{CORE_CONTEXT_ALIAS, CORE_CONTEXT_V1_6, CORE_CONTEXT_V1_8, CORE_CONTEXT_V1_9};
use crate::config::Settings;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use quick_cache::sync::Cache;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const CORE_V1_9_DOC: &str = include_str!("../../context/ngsi-ld-core-context-v1.9.jsonld");
const CORE_V1_8_DOC: &str = include_str!("../../context/ngsi-ld-core-context-v1.8.jsonld");
const CORE_V1_6_DOC: &str = include_str!("../../context/ngsi-ld-core-context-v1.6.jsonld");
const SMART_DATA_MODELS: &str = include_str!("../../smart-data-models/contexts.json");

/// At most this many processed contexts are kept (the least recently used go first).
const ACTIVE_CACHE_LIMIT: usize = 4096;

/// A document fetched from its URL and kept (5.13.1 kind Cached), with how it has been used.
pub struct CachedContext {
    /// The URL the document was asked for (before any rewrite).
    pub url: String,
    /// The broker's own id of it (5.13.3 `localId`).
    pub local_id: String,
    /// The document, with its `@context` member.
    pub document: Arc<Value>,
    /// When it was retrieved (or, for a bundled core context, when the broker started).
    pub created_at: DateTime<Utc>,
    /// Whether it is bundled with the broker rather than fetched (the core contexts).
    pub bundled: bool,
    /// Uses so far, and the time of the last one in milliseconds since the epoch (0: none):
    /// atomics, as every request resolved with the document counts.
    hits: AtomicU64,
    last_used_ms: AtomicI64,
}

impl CachedContext {
    fn new(url: &str, document: Arc<Value>, bundled: bool) -> CachedContext {
        CachedContext {
            url: url.to_string(),
            local_id: format!("urn:ngsi-ld:CachedContext:{}", uuid::Uuid::new_v4()),
            document,
            created_at: Utc::now(),
            bundled,
            hits: AtomicU64::new(0),
            last_used_ms: AtomicI64::new(0),
        }
    }

    /// Counts one use of the cached copy (a request resolved with it, or it was served).
    pub fn touch(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.last_used_ms
            .fetch_max(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// How often the cached copy was used (`numberOfHits`) and when last (`lastUsage`).
    pub fn usage(&self) -> (u64, Option<DateTime<Utc>>) {
        let last = match self.last_used_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        };
        (self.hits.load(Ordering::Relaxed), last)
    }
}

/// A processed context with the cached documents it was built from, whose use it counts.
struct Built {
    ctx: Arc<ActiveContext>,
    cached: Vec<Arc<CachedContext>>,
}

/// Resolves @context values to active contexts, fetching what is needed once.
pub struct ContextLoader {
    preloaded: HashMap<String, Arc<Value>>,
    rewrites: Vec<(String, String)>,
    client: crate::outbound::Client,
    outbound: crate::outbound::Policy,
    max_bytes: usize,
    remote: Cache<String, Arc<CachedContext>>,
    active: Cache<String, Arc<Built>>,
    core: Arc<ActiveContext>,
    core_entries: Vec<Arc<CachedContext>>,
    /// The @contexts stored by this broker (Hosted, ImplicitlyCreated), resolved without a fetch.
    pub hosted: HostedIndex,
}

fn parse_bundled(text: &str) -> Arc<Value> {
    Arc::new(
        serde_json::from_str(text).expect("bundled contexts are valid JSON (checked by tests)"),
    )
}

fn smart_data_models() -> &'static HashMap<String, Arc<Value>> {
    static SDM: OnceLock<HashMap<String, Arc<Value>>> = OnceLock::new();
    SDM.get_or_init(|| {
        let all: HashMap<String, Value> = serde_json::from_str(SMART_DATA_MODELS)
            .expect("bundled Smart Data Models contexts are valid JSON");
        all.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
    })
}

impl ContextLoader {
    /// Builds the loader: bundled contexts, the offline directory (read now, so a broken one fails at
    /// start-up rather than on a request) and the HTTP client for remote contexts.
    pub fn new(settings: &Settings) -> Result<ContextLoader, String> {
        let mut preloaded = HashMap::new();
        let v19 = parse_bundled(CORE_V1_9_DOC);
        preloaded.insert(CORE_CONTEXT_V1_9.to_string(), v19.clone());
        preloaded.insert(CORE_CONTEXT_ALIAS.to_string(), v19.clone());
        preloaded.insert(CORE_CONTEXT_V1_8.to_string(), parse_bundled(CORE_V1_8_DOC));
        preloaded.insert(CORE_CONTEXT_V1_6.to_string(), parse_bundled(CORE_V1_6_DOC));
        if let Some(dir) = &settings.context_dir {
            preloaded.extend(read_offline_dir(dir)?);
        }
        let client = crate::outbound::Client::new(
            &settings.outbound,
            reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.context_timeout_ms))
                .connect_timeout(Duration::from_millis(settings.context_timeout_ms)),
            true,
        )
        .map_err(|e| format!("the HTTP client for remote contexts: {e}"))?;
        let core_doc = v19.get("@context").cloned().unwrap_or(Value::Null);
        let core = Arc::new(
            ActiveContext::build(&[&core_doc], &HashMap::<String, Arc<Value>>::new())
                .map_err(|e| format!("the bundled core context does not process: {e}"))?,
        );
        let core_entries = [
            CORE_CONTEXT_V1_9,
            CORE_CONTEXT_ALIAS,
            CORE_CONTEXT_V1_8,
            CORE_CONTEXT_V1_6,
        ]
        .iter()
        .map(|url| Arc::new(CachedContext::new(url, preloaded[*url].clone(), true)))
        .collect();
        Ok(ContextLoader {
            preloaded,
            rewrites: settings.context_rewrites.clone(),
            client,
            outbound: settings.outbound.clone(),
            max_bytes: settings.context_max_bytes,
            remote: Cache::new(settings.context_cache.max(1)),
            active: Cache::new(ACTIVE_CACHE_LIMIT),
            core,
            core_entries,
            hosted: HostedIndex::default(),
        })
    }

    /// The cached documents (5.13 kind Cached): the core context in force, then every fetched
    /// document still in the cache.
    pub fn cached(&self) -> Vec<Arc<CachedContext>> {
        let mut all = vec![self.core_entries[0].clone()];
        let mut fetched: Vec<_> = self.remote.iter().map(|(_, c)| c).collect();
        fetched.sort_by_key(|a| a.created_at);
        all.extend(fetched);
        all
    }

    /// The cached document named by its URL or its local id: a fetched one or a bundled core
    /// context.
    pub fn cached_entry(&self, id: &str) -> Option<Arc<CachedContext>> {
        self.core_entries
            .iter()
            .find(|c| c.url == id || c.local_id == id)
            .cloned()
            .or_else(|| self.remote.get(&self.rewrite(id)))
            .or_else(|| {
                self.remote
                    .iter()
                    .find(|(_, c)| c.local_id == id)
                    .map(|(_, c)| c)
            })
    }

    /// Drops a fetched document from the cache, and every processed context built from it.
    pub fn forget(&self, entry: &CachedContext) {
        self.remote.remove(&self.rewrite(&entry.url));
        self.stored_contexts_changed();
    }

    /// Fetches a cached document anew (5.13.5 `reload`); on failure the cached copy stays.
    pub async fn reload(&self, entry: &CachedContext) -> NgsiResult<()> {
        if entry.bundled {
            // Bundled with the broker: there is nothing to fetch, and nothing can have changed.
            return Ok(());
        }
        let target = self.rewrite(&entry.url);
        let doc = self.fetch_document(&entry.url, &target).await?;
        self.remote
            .insert(target, Arc::new(CachedContext::new(&entry.url, doc, false)));
        self.stored_contexts_changed();
        Ok(())
    }

    /// Forgets every processed context, after a document they may have been built from changed
    /// or went away (a rare administrative act).
    pub fn stored_contexts_changed(&self) {
        self.active.clear();
    }

    /// The active context of a request that gives no @context: the core context alone.
    pub fn core(&self) -> Arc<ActiveContext> {
        self.core.clone()
    }

    /// The active context for a request's @context (from the Link header or the body), with the core
    /// context applied last as NGSI-LD requires.
    pub async fn active(&self, local: Option<&Value>) -> NgsiResult<Arc<ActiveContext>> {
        let Some(local) = local else {
            return Ok(self.core());
        };
        let key = match local {
            Value::String(url) => url.clone(),
            other => other.to_string(),
        };
        if let Some(hit) = self.active.get(&key) {
            crate::telemetry::metrics::context_lookup(true);
            hit.cached.iter().for_each(|c| c.touch());
            return Ok(hit.ctx.clone());
        }
        crate::telemetry::metrics::context_lookup(false);
        refuse_scoped_contexts(local)?;
        let (docs, cached) = self.collect(local).await?;
        let core = self.preloaded[CORE_CONTEXT_V1_9].clone();
        let core_ctx = core.get("@context").unwrap_or(&Value::Null);
        let ctx = Arc::new(ActiveContext::build(&[local, core_ctx], &docs)?);
        self.active.insert(
            key,
            Arc::new(Built {
                ctx: ctx.clone(),
                cached,
            }),
        );
        Ok(ctx)
    }

    /// Retrieves every document a context refers to, transitively, with the cached documents
    /// among them.
    async fn collect(
        &self,
        local: &Value,
    ) -> NgsiResult<(HashMap<String, Arc<Value>>, Vec<Arc<CachedContext>>)> {
        let mut docs = HashMap::new();
        let mut cached = Vec::new();
        let mut pending = Vec::new();
        referenced_urls(local, &mut pending)?;
        while let Some(url) = pending.pop() {
            if docs.contains_key(&url) {
                continue;
            }
            if docs.len() > 64 {
                return Err(NgsiError::bad_data(
                    "the @context refers to more than 64 remote documents",
                ));
            }
            let (doc, entry) = self.document(&url).await?;
            if let Some(inner) = doc.get("@context") {
                referenced_urls(inner, &mut pending)?;
            }
            cached.extend(entry);
            docs.insert(url, doc);
        }
        Ok((docs, cached))
    }

    /// One context document by URL: bundled or offline first, then one this broker stores (of
    /// any tenant: its URL is as public as the document it serves), then
    /// rewritten, then fetched (and cached). A document taken from the cache counts as a use of
    /// it; a fetched one is returned with its new cache entry.
    async fn document(&self, url: &str) -> NgsiResult<(Arc<Value>, Option<Arc<CachedContext>>)> {
        if let Some(doc) = self.known(url) {
            return Ok((doc, None));
        }
        if let Some(stored) = hosted::local_id(url).and_then(|id| self.hosted.get(&id)) {
            return Ok((stored.document, None));
        }
        let target = self.rewrite(url);
        if let Some(doc) = self.known(&target) {
            return Ok((doc, None));
        }
        if let Some(entry) = self.remote.get(&target) {
            entry.touch();
            return Ok((entry.document.clone(), Some(entry)));
        }
        let doc = self.fetch_document(url, &target).await?;
        let entry = Arc::new(CachedContext::new(url, doc.clone(), false));
        self.remote.insert(target, entry.clone());
        Ok((doc, Some(entry)))
    }

    /// Fetches the document at `target` (`url` rewritten), which must be a context document.
    async fn fetch_document(&self, url: &str, target: &str) -> NgsiResult<Arc<Value>> {
        let doc = self.fetch(url, target).await?;
        if doc.get("@context").is_none() {
            return Err(NgsiError::bad_data(format!(
                "the document at {url} has no @context member"
            )));
        }
        Ok(Arc::new(doc))
    }

    fn known(&self, url: &str) -> Option<Arc<Value>> {
        self.preloaded
            .get(url)
            .or_else(|| smart_data_models().get(url))
            .cloned()
    }

    fn rewrite(&self, url: &str) -> String {
        for (prefix, replacement) in &self.rewrites {
            if let Some(rest) = url.strip_prefix(prefix.as_str()) {
                return format!("{replacement}{rest}");
            }
        }
        url.to_string()
    }

    /// Reads or fetches the document at `target` (`url` rewritten), counting remote fetches.
    async fn fetch(&self, url: &str, target: &str) -> NgsiResult<Value> {
        let fetched = self.retrieve(url, target).await;
        if target.starts_with("http") {
            crate::telemetry::metrics::context_fetch(fetched.is_ok());
        }
        fetched
    }

    async fn retrieve(&self, url: &str, target: &str) -> NgsiResult<Value> {
        let unavailable = |why: String| NgsiError::new(ErrorKind::LdContextNotAvailable, why);
        if let Some(path) = target.strip_prefix("file://") {
            let bytes = tokio::fs::read(path).await.map_err(|e| {
                unavailable(format!(
                    "the @context {url} (mirrored at {target}) cannot be read: {e}"
                ))
            })?;
            return parse_document(url, &bytes);
        }
        if !(target.starts_with("http://") || target.starts_with("https://")) {
            return Err(NgsiError::bad_data(format!(
                "the @context reference '{url}' is not an http(s) URL and is not a known context"
            )));
        }
        // A refused address is the client's mistake (400), said before any connection.
        self.outbound.admit(target).await?;
        let target_url = url::Url::parse(target).map_err(|e| {
            NgsiError::bad_data(format!("the @context reference '{url}' is not a URL: {e}"))
        })?;
        let response = self
            .client
            .request(reqwest::Method::GET, target_url)
            .map_err(|why| NgsiError::bad_data(format!("the @context {url}: {why}")))?
            .header("Accept", "application/ld+json, application/json;q=0.9")
            .send()
            .await
            .map_err(|e| match crate::outbound::RedirectRefused::of(&e) {
                // Where the client's URL leads is the client's mistake, like the URL itself.
                Some(refused) => NgsiError::bad_data(format!("the @context {url}: {refused}")),
                None => unavailable(format!("the @context {url} could not be retrieved: {e}")),
            })?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "the @context {url} could not be retrieved: its server answered {}",
                response.status()
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n as usize > self.max_bytes)
        {
            return Err(unavailable(format!(
                "the @context {url} is larger than the {} bytes this broker accepts",
                self.max_bytes
            )));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| unavailable(format!("the @context {url} broke off: {e}")))?;
            body.extend_from_slice(&chunk);
            if body.len() > self.max_bytes {
                return Err(unavailable(format!(
                    "the @context {url} is larger than the {} bytes this broker accepts",
                    self.max_bytes
                )));
            }
        }
        parse_document(url, &body)
    }
}

fn parse_document(url: &str, bytes: &[u8]) -> NgsiResult<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| NgsiError::bad_data(format!("the @context at {url} is not valid JSON: {e}")))
}

impl DocumentSource for HashMap<String, Arc<Value>> {
    fn document(&self, url: &str) -> NgsiResult<Arc<Value>> {
        self.get(url).cloned().ok_or_else(|| {
            NgsiError::new(
                ErrorKind::LdContextNotAvailable,
                format!("the @context {url} was not retrieved"),
            )
        })
    }
}

fn referenced_urls(ctx: &Value, out: &mut Vec<String>) -> NgsiResult<()> {
    match ctx {
        Value::String(url) => out.push(url.clone()),
        Value::Array(items) => {
            for i in items {
                referenced_urls(i, out)?;
            }
        }
        Value::Object(map) => {
            if let Some(Value::String(url)) = map.get("@import") {
                out.push(url.clone());
            }
        }
        _ => {}
    }
    Ok(())
}

fn read_offline_dir(dir: &Path) -> Result<HashMap<String, Arc<Value>>, String> {
    let index_path = dir.join("index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|e| {
        format!(
            "the offline context directory needs {}: {e}",
            index_path.display()
        )
    })?;
    let index: HashMap<String, String> = serde_json::from_str(&text)
        .map_err(|e| format!("{} must map URLs to file names: {e}", index_path.display()))?;
    let mut out = HashMap::new();
    for (url, file) in index {
        let path = dir.join(&file);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("offline context {}: {e}", path.display()))?;
        let doc = parse_document(&url, &bytes)
            .map_err(|e| format!("offline context {}: {}", path.display(), e.detail))?;
        out.insert(url, Arc::new(doc));
    }
    Ok(out)
}

/// Fails on a scoped context (a term definition with its own `@context`) written in a user
/// @context, which 5.5.7 forbids: the broker keeps one meaning per term, whatever it is nested in.
/// Remote documents are not inspected: they are shared vocabularies the caller does not control.
fn refuse_scoped_contexts(local: &Value) -> NgsiResult<()> {
    match local {
        Value::Array(items) => items.iter().try_for_each(refuse_scoped_contexts),
        Value::Object(map) => {
            let scoped = map.iter().find(|(term, definition)| {
                !term.starts_with('@')
                    && definition
                        .as_object()
                        .is_some_and(|d| d.contains_key("@context"))
            });
            match scoped {
                Some((term, _)) => Err(NgsiError::bad_data(format!(
                    "the @context gives '{term}' a scoped @context of its own; a user @context \
                     shall not contain scoped contexts (5.5.7): define the inner terms at the top level"
                ))),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_document_counts_its_uses_and_the_last_one() {
        let entry = CachedContext::new("https://a.example/c", Arc::new(Value::Null), false);
        assert_eq!(entry.usage(), (0, None));
        let before = Utc::now();
        entry.touch();
        entry.touch();
        let (hits, last) = entry.usage();
        assert_eq!(hits, 2);
        assert!(last.is_some_and(|t| t.timestamp_millis() >= before.timestamp_millis()));
        assert!(entry.local_id.starts_with("urn:ngsi-ld:CachedContext:"));
    }
}
