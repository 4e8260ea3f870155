//! Type expressions (4.17): any text through `query::parse_types`; an error must span characters
//! of the text, a parsed expression must evaluate against an entity's types.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use twinlink::query::parse_types;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_types(text, common::ctx()) {
        Ok(Some(expr)) => {
            let types = &common::entity().types;
            let _ = expr.eval(&|t| types.contains(t));
            let _ = expr.to_string();
        }
        Ok(None) => {}
        Err(e) => common::check_span(&e, text),
    }
});
