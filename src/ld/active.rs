//! The active context: JSON-LD context processing reduced to what NGSI-LD needs (term definitions,
//! compact IRIs, `@vocab`, type coercion, nested and imported contexts), computed once per distinct
//! @context and cached, so that per-request expansion and compaction are plain map look-ups.

use crate::error::{NgsiError, NgsiResult};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// How a term's values are to be read (the term definition's `@type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coercion {
    /// No coercion.
    None,
    /// Values are IRIs (`@id`).
    Id,
    /// Values are vocabulary terms, expanded like property names (`@vocab`).
    Vocab,
    /// Values are opaque JSON (`@json`).
    Json,
    /// Any other datatype IRI (e.g. DateTime).
    Datatype(String),
}

/// One term definition of the active context.
#[derive(Debug, Clone)]
pub struct Term {
    /// The IRI (or keyword, for aliases such as `id` -> `@id`) the term stands for.
    pub iri: String,
    /// Value coercion.
    pub coercion: Coercion,
    /// Whether the term may be used as the prefix of a compact IRI.
    pub prefix: bool,
}

/// A fully processed @context: expansion and compaction tables for one request context.
#[derive(Debug, Clone, Default)]
pub struct ActiveContext {
    terms: HashMap<String, Term, foldhash::fast::RandomState>,
    vocab: Option<String>,
    reverse: HashMap<String, String, foldhash::fast::RandomState>,
    prefixes: Vec<(String, String)>,
}

/// Source of the remote documents a context refers to, already retrieved by the loader.
pub trait DocumentSource {
    /// The parsed document behind a context URL.
    fn document(&self, url: &str) -> NgsiResult<Arc<Value>>;
}

const MAX_DEPTH: usize = 32;

impl ActiveContext {
    /// Processes `local` on top of an empty context, fetching nothing: every URL it names must be in
    /// `docs`.
    pub fn build(contexts: &[&Value], docs: &dyn DocumentSource) -> NgsiResult<ActiveContext> {
        let mut ctx = ActiveContext::default();
        for local in contexts {
            ctx.apply(local, docs, 0)?;
        }
        ctx.finish();
        Ok(ctx)
    }

    fn apply(&mut self, local: &Value, docs: &dyn DocumentSource, depth: usize) -> NgsiResult<()> {
        if depth > MAX_DEPTH {
            return Err(NgsiError::bad_data(
                "the @context nests more than 32 levels of remote contexts (a cycle?)",
            ));
        }
        match local {
            Value::Null => {
                self.terms.clear();
                self.vocab = None;
                Ok(())
            }
            Value::String(url) => {
                let doc = docs.document(url)?;
                let inner = doc.get("@context").ok_or_else(|| {
                    NgsiError::bad_data(format!("the document at {url} has no @context member"))
                })?;
                self.apply(inner, docs, depth + 1)
            }
            Value::Array(items) => items
                .iter()
                .try_for_each(|i| self.apply(i, docs, depth + 1)),
            Value::Object(map) => self.apply_object(map, docs, depth),
            other => Err(NgsiError::bad_data(format!(
                "an @context entry must be a URL string, an object or an array, not {other}"
            ))),
        }
    }

    fn apply_object(
        &mut self,
        map: &Map<String, Value>,
        docs: &dyn DocumentSource,
        depth: usize,
    ) -> NgsiResult<()> {
        let imported;
        let map = match map.get("@import") {
            Some(Value::String(url)) => {
                let doc = docs.document(url)?;
                let Some(Value::Object(inner)) = doc.get("@context") else {
                    return Err(NgsiError::bad_data(format!(
                        "@import {url} is not a context object"
                    )));
                };
                let mut merged = inner.clone();
                merged.extend(
                    map.iter()
                        .filter(|(k, _)| *k != "@import")
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                imported = merged;
                &imported
            }
            Some(other) => {
                return Err(NgsiError::bad_data(format!(
                    "@import must be a URL, not {other}"
                )))
            }
            None => map,
        };
        let _ = depth;
        if let Some(v) = map.get("@vocab") {
            self.vocab = match v {
                Value::Null => None,
                Value::String(s) => {
                    Some(self.expand_in_definition(s, map, &mut HashMap::new(), "@vocab")?)
                }
                other => {
                    return Err(NgsiError::bad_data(format!(
                        "@vocab must be a string or null, not {other}"
                    )))
                }
            };
        }
        let mut state: HashMap<String, bool> = HashMap::new();
        for term in map.keys() {
            if !term.starts_with('@') {
                self.define(term, map, &mut state)?;
            }
        }
        Ok(())
    }

    fn define(
        &mut self,
        term: &str,
        local: &Map<String, Value>,
        state: &mut HashMap<String, bool>,
    ) -> NgsiResult<()> {
        match state.get(term) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(NgsiError::bad_data(format!(
                    "the @context defines '{term}' in a cycle"
                )))
            }
            None => {}
        }
        state.insert(term.to_string(), false);
        let definition = &local[term];
        let (id, coercion, explicit_prefix) = match definition {
            Value::Null => {
                self.terms.remove(term);
                state.insert(term.to_string(), true);
                return Ok(());
            }
            Value::String(s) => (Some(s.as_str()), Coercion::None, None),
            Value::Object(def) => {
                let id = match def.get("@id") {
                    None => None,
                    Some(Value::Null) => {
                        self.terms.remove(term);
                        state.insert(term.to_string(), true);
                        return Ok(());
                    }
                    Some(Value::String(s)) => Some(s.as_str()),
                    Some(other) => {
                        return Err(NgsiError::bad_data(format!(
                            "'{term}': @id must be a string, not {other}"
                        )))
                    }
                };
                let coercion = match def.get("@type") {
                    None => Coercion::None,
                    Some(Value::String(t)) => match t.as_str() {
                        "@id" => Coercion::Id,
                        "@vocab" => Coercion::Vocab,
                        "@json" => Coercion::Json,
                        "@none" => Coercion::None,
                        other => Coercion::Datatype(
                            self.expand_in_definition(other, local, state, term)?,
                        ),
                    },
                    Some(other) => {
                        return Err(NgsiError::bad_data(format!(
                            "'{term}': @type must be a string, not {other}"
                        )))
                    }
                };
                let explicit_prefix = def.get("@prefix").and_then(Value::as_bool);
                (id, coercion, Some(explicit_prefix.unwrap_or(false)))
            }
            other => {
                return Err(NgsiError::bad_data(format!(
                    "the definition of '{term}' must be a string, an object or null, not {other}"
                )))
            }
        };
        let iri = match id {
            Some(id) if id.starts_with('@') => id.to_string(),
            Some(id) => self.expand_in_definition(id, local, state, term)?,
            None if term.contains(':') => self.expand_in_definition(term, local, state, term)?,
            None => match &self.vocab {
                Some(v) => format!("{v}{term}"),
                None => {
                    return Err(NgsiError::bad_data(format!(
                        "the @context gives '{term}' no @id and there is no @vocab to derive one"
                    )))
                }
            },
        };
        // The prefix flag (JSON-LD 1.1): explicit `@prefix`, or a simple definition whose IRI ends
        // in a gen-delim.
        let prefix = !term.contains(':')
            && explicit_prefix
                .unwrap_or_else(|| iri.ends_with(['/', '#', ':', '?', '[', ']', '@']));
        self.terms.insert(
            term.to_string(),
            Term {
                iri,
                coercion,
                prefix,
            },
        );
        state.insert(term.to_string(), true);
        Ok(())
    }

    /// IRI-expands `value` inside the definition of `current`. `"t": "t"` (as the v1.8 core context
    /// has) reads as a vocabulary-relative IRI rather than a cycle.
    fn expand_in_definition(
        &mut self,
        value: &str,
        local: &Map<String, Value>,
        state: &mut HashMap<String, bool>,
        current: &str,
    ) -> NgsiResult<String> {
        if value.starts_with('@') {
            return Ok(value.to_string());
        }
        if let Some((prefix, suffix)) = value.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return Ok(value.to_string());
            }
            if local.contains_key(prefix) && prefix != current {
                self.define(prefix, local, state)?;
            }
            return Ok(match self.terms.get(prefix) {
                Some(t) if t.prefix => format!("{}{suffix}", t.iri),
                _ => value.to_string(),
            });
        }
        if local.contains_key(value) && value != current {
            self.define(value, local, state)?;
        }
        if let Some(t) = self.terms.get(value) {
            return Ok(t.iri.clone());
        }
        Ok(match &self.vocab {
            Some(v) => format!("{v}{value}"),
            None => value.to_string(),
        })
    }

    fn finish(&mut self) {
        self.reverse.clear();
        self.prefixes.clear();
        for (term, def) in &self.terms {
            if def.iri.starts_with('@') {
                continue;
            }
            let better = match self.reverse.get(&def.iri) {
                None => true,
                Some(current) => (term.len(), term.as_str()) < (current.len(), current.as_str()),
            };
            if better {
                self.reverse.insert(def.iri.clone(), term.clone());
            }
            if def.prefix {
                self.prefixes.push((def.iri.clone(), term.clone()));
            }
        }
        self.prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.1.cmp(&b.1)));
    }

    /// Expands a property name or type name to its IRI (vocabulary-relative IRI expansion).
    pub fn expand<'a>(&'a self, term: &'a str) -> Cow<'a, str> {
        if let Some(t) = self.terms.get(term) {
            return Cow::Borrowed(&t.iri);
        }
        if let Some((prefix, suffix)) = term.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return Cow::Borrowed(term);
            }
            // JSON-LD 1.1: only a term with the prefix flag expands as a compact-IRI prefix.
            return match self.terms.get(prefix) {
                Some(t) if t.prefix => Cow::Owned(format!("{}{suffix}", t.iri)),
                _ => Cow::Borrowed(term),
            };
        }
        match &self.vocab {
            Some(v) => Cow::Owned(format!("{v}{term}")),
            None => Cow::Borrowed(term),
        }
    }

    /// Compacts an IRI to the shortest term or compact IRI this context offers, else returns it whole.
    pub fn compact<'a>(&'a self, iri: &'a str) -> Cow<'a, str> {
        if let Some(t) = self.reverse.get(iri) {
            return Cow::Borrowed(t);
        }
        if let Some(v) = &self.vocab {
            if let Some(suffix) = iri.strip_prefix(v.as_str()) {
                if !suffix.is_empty() && !self.terms.contains_key(suffix) && !suffix.contains(':') {
                    return Cow::Borrowed(suffix);
                }
            }
        }
        let mut best: Option<String> = None;
        for (prefix_iri, term) in &self.prefixes {
            if let Some(suffix) = iri.strip_prefix(prefix_iri.as_str()) {
                if suffix.is_empty() {
                    continue;
                }
                let candidate = format!("{term}:{suffix}");
                if self.terms.contains_key(&candidate) {
                    continue;
                }
                if best
                    .as_ref()
                    .is_none_or(|b| (candidate.len(), &candidate) < (b.len(), b))
                {
                    best = Some(candidate);
                }
            }
        }
        best.map_or(Cow::Borrowed(iri), Cow::Owned)
    }

    /// The definition of a term, when the context has one.
    pub fn term(&self, term: &str) -> Option<&Term> {
        self.terms.get(term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct NoDocs;
    impl DocumentSource for NoDocs {
        fn document(&self, url: &str) -> NgsiResult<Arc<Value>> {
            Err(NgsiError::new(
                crate::error::ErrorKind::LdContextNotAvailable,
                url.to_string(),
            ))
        }
    }

    #[test]
    fn terms_prefixes_and_vocab_expand_and_compact_back() {
        let ctx = json!({
            "ex": "https://example.org/ns#",
            "Building": "ex:Building",
            "name": {"@id": "https://schema.org/name"},
            "rel": {"@id": "ex:rel", "@type": "@id"},
            "@vocab": "https://vocab.example/"
        });
        let a = ActiveContext::build(&[&ctx], &NoDocs).unwrap();
        assert_eq!(a.expand("Building"), "https://example.org/ns#Building");
        assert_eq!(a.expand("ex:other"), "https://example.org/ns#other");
        assert_eq!(a.expand("name"), "https://schema.org/name");
        assert_eq!(a.expand("free"), "https://vocab.example/free");
        assert_eq!(a.expand("urn:x:y"), "urn:x:y");
        assert_eq!(a.expand("http://a.b/c"), "http://a.b/c");
        assert_eq!(a.compact("https://example.org/ns#Building"), "Building");
        assert_eq!(a.compact("https://example.org/ns#other"), "ex:other");
        assert_eq!(a.compact("https://vocab.example/free"), "free");
        assert_eq!(a.compact("http://nowhere/x"), "http://nowhere/x");
        assert_eq!(a.term("rel").unwrap().coercion, Coercion::Id);
    }

    #[test]
    fn later_contexts_override_earlier_and_null_resets() {
        let first = json!({"t": "http://one/t"});
        let second = json!({"t": "http://two/t"});
        let a = ActiveContext::build(&[&first, &second], &NoDocs).unwrap();
        assert_eq!(a.expand("t"), "http://two/t");
        let reset = json!([{"t": "http://one/t"}, null]);
        let b = ActiveContext::build(&[&reset], &NoDocs).unwrap();
        assert_eq!(b.expand("t"), "t");
    }

    #[test]
    fn cycles_and_bad_shapes_are_rejected() {
        let selfref = json!({"@vocab": "http://v/", "t": "t"});
        assert_eq!(
            ActiveContext::build(&[&selfref], &NoDocs)
                .unwrap()
                .expand("t"),
            "http://v/t"
        );
        let cyc = json!({"a": "b:x", "b": "a:y"});
        assert!(ActiveContext::build(&[&cyc], &NoDocs).is_err());
        assert!(ActiveContext::build(&[&json!(42)], &NoDocs).is_err());
        assert!(ActiveContext::build(&[&json!({"t": 5})], &NoDocs).is_err());
        let missing = json!("http://unreachable.example/ctx.jsonld");
        let err = ActiveContext::build(&[&missing], &NoDocs).unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::LdContextNotAvailable);
    }
}
