//! JSON-LD for NGSI-LD: where @context documents come from (`loader`) and how a context turns
//! short terms into IRIs and back (`active`). Entities are stored with full IRIs; terms are expanded
//! on the way in and compacted on the way out with the caller's context.

pub mod active;
pub mod hosted;
pub mod loader;

pub use active::ActiveContext;
pub use loader::ContextLoader;

/// The URI of the NGSI-LD core context this broker applies by default (v1.9).
pub const CORE_CONTEXT_V1_9: &str =
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld";
/// The version-less alias of the core context, which this broker serves as v1.9.
pub const CORE_CONTEXT_ALIAS: &str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld";
/// The v1.8 core context URI.
pub const CORE_CONTEXT_V1_8: &str =
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";
/// The v1.6 core context URI.
pub const CORE_CONTEXT_V1_6: &str =
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld";
/// The IRI prefix of NGSI-LD core terms.
pub const NGSI_LD: &str = "https://uri.etsi.org/ngsi-ld/";
/// The IRI prefix the core context gives terms that no context defines (`@vocab`).
pub const DEFAULT_VOCAB: &str = "https://uri.etsi.org/ngsi-ld/default-context/";

/// The value of a Link header that points at an @context (6.3.5), as requests and responses
/// carry it.
pub fn link_header(url: &str) -> String {
    format!("<{url}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"")
}

/// The @context URL of a Link header value, if it names one (lenient: other links are skipped).
pub fn context_of_link(text: &str) -> Option<String> {
    text.split(',').find_map(|link| {
        let mut parts = link.split(';').map(str::trim);
        let target = parts.next()?;
        let is_context = parts.any(|p| {
            p.strip_prefix("rel=")
                .is_some_and(|r| r.trim_matches('"') == "http://www.w3.org/ns/json-ld#context")
        });
        is_context
            .then(|| {
                target
                    .strip_prefix('<')?
                    .strip_suffix('>')
                    .map(str::to_string)
            })
            .flatten()
    })
}
