//! The temporal parameters (timerel, timeAt, endTimeAt, timeproperty, lastN, aggrMethods,
//! aggrPeriodDuration): the input's first byte says which of the seven are present (one bit
//! each), the rest holds their texts in that order, split at 0xFF. They go through
//! `temporal::history_query` and `temporal::aggregation`, and each text through the duration
//! parsers; an error must span characters of the parameter it names.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use twinlink::syntax::ParseError;
use twinlink::temporal::{self, TemporalParams};

fuzz_target!(|data: &[u8]| {
    let Some((&present, rest)) = data.split_first() else {
        return;
    };
    let Some(parts) = common::split(rest) else {
        return;
    };
    let mut texts = parts.iter().copied();
    let mut next = |bit: u8| {
        if present & (1 << bit) != 0 {
            Some(texts.next().unwrap_or_default())
        } else {
            None
        }
    };
    let p = TemporalParams {
        timerel: next(0),
        time_at: next(1),
        end_time_at: next(2),
        time_property: next(3),
        last_n: next(4),
        aggr_methods: next(5),
        aggr_period: next(6),
    };
    let check = |e: &ParseError| {
        let text = match e.input {
            "timerel" => p.timerel,
            "timeAt" => p.time_at,
            "endTimeAt" => p.end_time_at,
            "timeproperty" => p.time_property,
            "lastN" => p.last_n,
            "aggrMethods" => p.aggr_methods,
            "aggrPeriodDuration" => p.aggr_period,
            other => panic!("an error of an unknown input {other}: {e}"),
        };
        // A missing parameter is reported with an empty text.
        common::check_span(e, text.unwrap_or_default());
    };
    if let Err(e) = temporal::history_query(&p) {
        check(&e);
    }
    if let Err(e) = temporal::aggregation(&p) {
        check(&e);
    }
    for text in &parts {
        match temporal::duration_micros(text) {
            Ok(micros) => assert!(micros >= 0, "{text:?} is {micros} µs"),
            Err(e) => common::check_span(&e, text),
        }
        if let Err(e) = temporal::lifetime("entityMapLifetime", text) {
            common::check_span(&e, text);
        }
    }
});
