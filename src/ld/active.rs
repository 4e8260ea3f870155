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
/// How many context entries and term definitions one @context may take to process. Remote
/// documents are fetched once each, but a document may name another many times, each naming the
/// next many times again: without a bound, a few small documents would take years to process. The
/// largest real context bundled (all Smart Data Models) takes about 8,000.
const MAX_STEPS: usize = 100_000;
/// How long a chain of terms each defined with the next (`"a": "b:x"`, `"b": "c:x"`, ...) may be,
/// so that the recursion through such a chain cannot exhaust the stack.
const MAX_CHAIN: usize = 32;

/// Takes `n` from the `steps` left of [`MAX_STEPS`], or refuses the @context once they run out.
fn charge(steps: &mut usize, n: usize) -> NgsiResult<()> {
    *steps = steps.checked_sub(n).ok_or_else(|| {
        NgsiError::bad_data(format!(
            "the @context takes more than {MAX_STEPS} context entries and term definitions to \
             process (a remote context named many times over?)"
        ))
    })?;
    Ok(())
}

impl ActiveContext {
    /// Processes `local` on top of an empty context, fetching nothing: every URL it names must be in
    /// `docs`.
    pub fn build(contexts: &[&Value], docs: &dyn DocumentSource) -> NgsiResult<ActiveContext> {
        let mut ctx = ActiveContext::default();
        let mut steps = MAX_STEPS;
        for local in contexts {
            ctx.apply(local, docs, 0, &mut steps)?;
        }
        ctx.finish();
        Ok(ctx)
    }

    /// Applies one context entry; `steps` is what is left of [`MAX_STEPS`].
    fn apply(
        &mut self,
        local: &Value,
        docs: &dyn DocumentSource,
        depth: usize,
        steps: &mut usize,
    ) -> NgsiResult<()> {
        if depth > MAX_DEPTH {
            return Err(NgsiError::bad_data(
                "the @context nests more than 32 levels of remote contexts (a cycle?)",
            ));
        }
        charge(
            steps,
            match local {
                Value::Object(map) => map.len().max(1),
                _ => 1,
            },
        )?;
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
                self.apply(inner, docs, depth + 1, steps)
            }
            Value::Array(items) => items
                .iter()
                .try_for_each(|i| self.apply(i, docs, depth + 1, steps)),
            Value::Object(map) => self.apply_object(map, docs, steps),
            other => Err(NgsiError::bad_data(format!(
                "an @context entry must be a URL string, an object or an array, not {other}"
            ))),
        }
    }

    fn apply_object(
        &mut self,
        map: &Map<String, Value>,
        docs: &dyn DocumentSource,
        steps: &mut usize,
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
                charge(steps, inner.len())?;
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
        if let Some(v) = map.get("@vocab") {
            self.vocab = match v {
                Value::Null => None,
                Value::String(s) => {
                    Some(self.expand_in_definition(s, map, &mut HashMap::new(), "@vocab", 0)?)
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
                self.define(term, map, &mut state, 0)?;
            }
        }
        Ok(())
    }

    /// Defines `term` of `local`, first the terms its definition uses: `chain` of them are being
    /// defined around it.
    fn define(
        &mut self,
        term: &str,
        local: &Map<String, Value>,
        state: &mut HashMap<String, bool>,
        chain: usize,
    ) -> NgsiResult<()> {
        if chain > MAX_CHAIN {
            return Err(NgsiError::bad_data(format!(
                "the definition of '{term}' depends on a chain of more than {MAX_CHAIN} other terms"
            )));
        }
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
                            self.expand_in_definition(other, local, state, term, chain)?,
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
            Some(id) => self.expand_in_definition(id, local, state, term, chain)?,
            None if term.contains(':') => {
                self.expand_in_definition(term, local, state, term, chain)?
            }
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
        chain: usize,
    ) -> NgsiResult<String> {
        if value.starts_with('@') {
            return Ok(value.to_string());
        }
        if let Some((prefix, suffix)) = value.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return Ok(value.to_string());
            }
            if local.contains_key(prefix) && prefix != current {
                self.define(prefix, local, state, chain + 1)?;
            }
            return Ok(match self.terms.get(prefix) {
                Some(t) if t.prefix => format!("{}{suffix}", t.iri),
                _ => value.to_string(),
            });
        }
        if local.contains_key(value) && value != current {
            self.define(value, local, state, chain + 1)?;
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

    /// Found in review for the fuzzing of issue 20: documents that each name the next 50 times
    /// took 50^4 passes over the last one (minutes); now the work is bounded.
    #[test]
    fn contexts_named_many_times_over_are_refused_not_processed() {
        let url = |i: usize| format!("https://ctx.example/{i}");
        let names = |i: usize| Value::Array(vec![Value::String(url(i)); 50]);
        let terms: Map<String, Value> = (0..10)
            .map(|t| (format!("t{t}"), json!(format!("urn:t:{t}"))))
            .collect();
        let mut docs: HashMap<String, Arc<Value>> = (0..3)
            .map(|i| (url(i), Arc::new(json!({"@context": names(i + 1)}))))
            .collect();
        docs.insert(url(3), Arc::new(json!({ "@context": terms })));
        let started = std::time::Instant::now();
        let e = ActiveContext::build(&[&names(0)], &docs).unwrap_err();
        assert!(e.detail.contains("more than 100000"), "{}", e.detail);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The same documents named a few times each are processed.
        let docs: HashMap<String, Arc<Value>> = (0..3)
            .map(|i| {
                (
                    url(i),
                    Arc::new(json!({"@context": [url(i + 1), url(i + 1)]})),
                )
            })
            .chain([(url(3), Arc::new(json!({ "@context": {"t": "urn:t"} })))])
            .collect();
        let a = ActiveContext::build(&[&json!([url(0), url(0)])], &docs).unwrap();
        assert_eq!(a.expand("t"), "urn:t");
    }

    /// Found in review for the fuzzing of issue 20: a chain of terms each defined with the next
    /// recursed once per term, and a long one overflowed the stack.
    #[test]
    fn long_chains_of_term_definitions_are_refused_not_recursed() {
        let chain = |n: usize| -> Value {
            let mut map: Map<String, Value> = (0..n)
                .map(|i| (format!("t{i}"), json!(format!("t{}:x/", i + 1))))
                .collect();
            map.insert(format!("t{n}"), json!("urn:end:"));
            Value::Object(map)
        };
        let a = ActiveContext::build(&[&chain(MAX_CHAIN)], &NoDocs).unwrap();
        assert_eq!(
            a.expand("t0"),
            format!("urn:end:{}", "x/".repeat(MAX_CHAIN))
        );
        assert!(ActiveContext::build(&[&chain(MAX_CHAIN + 1)], &NoDocs).is_err());
        let long = chain(20_000);
        let e = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || ActiveContext::build(&[&long], &NoDocs).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(e.detail.contains("chain of more than 32"), "{}", e.detail);
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
