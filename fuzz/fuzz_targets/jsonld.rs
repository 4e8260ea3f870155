//! JSON-LD context processing and term expansion with arbitrary contexts. The input's parts,
//! split at 0xFF: first the request's @context (any JSON), then up to four documents served at
//! `https://fuzz.example/0` to `/3` (any JSON, skipped when not JSON), last the terms to expand
//! and compact, one a line. `ld::ActiveContext::build` processes the @context with the core
//! context last, as the broker does, over an in-memory document source that also serves the
//! core context and a few fixed documents (one that imports another, one that names itself).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use twinlink::ld::{ActiveContext, CORE_CONTEXT_V1_9};

/// The fixed documents of the source.
fn fixed() -> HashMap<String, Arc<Value>> {
    let core: Value = serde_json::from_str(common::CORE).expect("the core context is JSON");
    [
        (CORE_CONTEXT_V1_9.to_string(), core),
        (
            "https://fuzz.example/terms".to_string(),
            json!({"@context": {"ex": "https://example.org/", "name": "ex:name",
                "Building": {"@id": "ex:Building", "@type": "@id"}, "@vocab": "https://example.org/v/"}}),
        ),
        (
            "https://fuzz.example/import".to_string(),
            json!({"@context": {"@import": "https://fuzz.example/terms", "height": "ex:height"}}),
        ),
        (
            "https://fuzz.example/self".to_string(),
            json!({"@context": ["https://fuzz.example/self", {"a": "ex:a"}]}),
        ),
    ]
    .into_iter()
    .map(|(url, doc)| (url, Arc::new(doc)))
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some(parts) = common::split(data) else {
        return;
    };
    let Ok(local) = serde_json::from_str::<Value>(parts[0]) else {
        return;
    };
    let (terms, documents) = match parts[1..].split_last() {
        Some((terms, documents)) => (*terms, documents),
        None => ("", &[][..]),
    };
    let mut docs = fixed();
    for (i, doc) in documents.iter().take(4).enumerate() {
        if let Ok(doc) = serde_json::from_str::<Value>(doc) {
            docs.insert(format!("https://fuzz.example/{i}"), Arc::new(doc));
        }
    }
    let Ok(ctx) = ActiveContext::build(&[&local, common::core_context()], &docs) else {
        return;
    };
    for term in terms.lines() {
        let iri = ctx.expand(term);
        let _ = ctx.compact(&iri);
        let _ = ctx.compact(term);
        let _ = ctx.term(term);
    }
});
