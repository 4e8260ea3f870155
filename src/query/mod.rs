//! The NGSI-LD query language, once: parsers for q (4.9), geoQ (4.10), scopeQ (4.19) and type
//! expressions (4.17) into ASTs, and an in-memory evaluator over expanded entities. The evaluator
//! serves the embedded store and subscription matching, and is the reference the PostgreSQL
//! translation is checked against.

pub mod geo;
pub mod q;
