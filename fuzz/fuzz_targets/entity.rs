//! Entity bodies: the input's first byte chooses how the body is read (NGSI-LD Null forbidden,
//! a deletion or a merge; creation, which needs id and type, or not; temporal or not), the rest
//! is any JSON, read by `model::parse::Reader::entity` with the core context.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use twinlink::model::parse::{Nulls, Reader};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, json)) = data.split_first() else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let nulls = match mode % 3 {
        0 => Nulls::Forbidden,
        1 => Nulls::Delete,
        _ => Nulls::Merge,
    };
    let mut reader = Reader::new(common::ctx(), common::now(), nulls);
    if mode & 0x80 != 0 {
        reader = reader.temporal();
    }
    let _ = reader.entity(&body, mode & 0x40 != 0);
});
