//! q (4.9): any text through `query::q::parse`; an error must span characters of the text, a
//! parsed query must print back and evaluate against an entity.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use twinlink::query::q;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match q::parse(text, common::ctx()) {
        Ok(expr) => {
            let _ = expr.compacted(common::ctx()).to_string();
            let _ = expr.attributes();
            let _ = expr.link_depth();
            let _ = expr.matches(common::entity());
        }
        Err(e) => common::check_span(&e, text),
    }
});
