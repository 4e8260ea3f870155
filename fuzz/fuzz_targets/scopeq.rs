//! scopeQ (4.19): any text through `query::parse_scope`; an error must span characters of the
//! text, a parsed scopeQ must evaluate against an entity's scopes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use twinlink::query::parse_scope;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_scope(text) {
        Ok(expr) => {
            let scopes = common::entity().scope.clone().unwrap_or_default();
            let _ = expr.eval(&|pattern| scopes.iter().any(|s| pattern.matches(s)));
        }
        // The parser reads a space as '+', one byte for another: the spans are the text's.
        Err(e) => common::check_span(&e, text),
    }
});
