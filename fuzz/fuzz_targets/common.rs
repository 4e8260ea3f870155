//! What the targets share: the active context they parse with, the split of one input into
//! several parameters, and the check every parse error must pass.

// Each target uses a part of this module.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use twinlink::ld::ActiveContext;
use twinlink::model::parse::{Nulls, Reader};
use twinlink::model::Entity;
use twinlink::syntax::ParseError;

/// The bundled NGSI-LD core context document (v1.9).
pub const CORE: &str = include_str!("../../context/ngsi-ld-core-context-v1.9.jsonld");

/// The separator of the parameters in one input: 0xFF never occurs in UTF-8, so every parameter
/// can still hold any text.
pub const SEPARATOR: u8 = 0xFF;

/// The core context's `@context` member.
pub fn core_context() -> &'static Value {
    static CORE_CONTEXT: OnceLock<Value> = OnceLock::new();
    CORE_CONTEXT.get_or_init(|| {
        let doc: Value = serde_json::from_str(CORE).expect("the core context is JSON");
        doc["@context"].clone()
    })
}

/// A user context (a few terms, a compact-IRI prefix) with the core context applied last, as the
/// broker builds one for a request.
pub fn ctx() -> &'static ActiveContext {
    static CTX: OnceLock<ActiveContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let user = json!({
            "ex": "https://example.org/",
            "temperature": "https://example.org/temperature",
            "Building": "https://example.org/Building",
            "observedBy": {"@id": "https://example.org/observedBy", "@type": "@id"},
            "category": {"@id": "https://example.org/category", "@type": "@vocab"},
        });
        ActiveContext::build(
            &[&user, core_context()],
            &HashMap::<String, Arc<Value>>::new(),
        )
        .expect("the fuzz context processes")
    })
}

/// The parameters of one input, split at [`SEPARATOR`]; `None` when one is not UTF-8.
pub fn split(data: &[u8]) -> Option<Vec<&str>> {
    data.split(|b| *b == SEPARATOR)
        .map(|part| std::str::from_utf8(part).ok())
        .collect()
}

/// A parse error of `text` must span characters of it (a range of char boundaries), and print.
pub fn check_span(e: &ParseError, text: &str) {
    let span = &e.span;
    assert!(
        span.start <= span.end && span.end <= text.len(),
        "{}: span {span:?} outside the input of {} bytes: {e}",
        e.input,
        text.len()
    );
    assert!(
        text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
        "{}: span {span:?} is not on char boundaries of {text:?}: {e}",
        e.input
    );
    if let Some(position) = e.position() {
        assert_eq!(position, text[..span.start].chars().count() + 1, "{e}");
    }
    let _ = e.to_string();
}

/// A time fixed for every run, so that a finding reproduces.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_714_564_800, 0).expect("a valid timestamp")
}

/// An entity to evaluate parsed queries against: a Property, a Relationship, a GeoProperty, a
/// compound value, an observedAt and scopes, read through the request reader.
pub fn entity() -> &'static Entity {
    static ENTITY: OnceLock<Entity> = OnceLock::new();
    ENTITY.get_or_init(|| {
        let body = json!({
            "id": "urn:ngsi-ld:Building:1",
            "type": "Building",
            "scope": ["/Madrid/Gardens", "/Sevilla"],
            "temperature": {"type": "Property", "value": 21.5, "observedAt": "2024-05-01T12:00:00Z",
                "unitCode": "CEL", "accuracy": {"type": "Property", "value": 0.1}},
            "name": {"type": "Property", "value": "Town hall"},
            "address": {"type": "Property", "value": {"streetAddress": "Plaza 1", "floors": [1, 2]}},
            "observedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Device:7"},
            "category": {"type": "VocabProperty", "vocab": "commercial"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [8.0, 40.0]}},
        });
        let input = Reader::new(ctx(), now(), Nulls::Forbidden)
            .entity(&body, true)
            .expect("the fuzz entity is valid");
        Entity {
            id: input.id.expect("an id"),
            types: input.types,
            scope: input.scope,
            attrs: input.attrs,
            created_at: now(),
            modified_at: now(),
            expires_at: None,
        }
    })
}
