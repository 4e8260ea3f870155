//! JSON-LD for NGSI-LD: where @context documents come from (`loader`) and how a context turns
//! short terms into IRIs and back (`active`). Entities are stored with full IRIs; terms are expanded
//! on the way in and compacted on the way out with the caller's context.

pub mod active;
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
