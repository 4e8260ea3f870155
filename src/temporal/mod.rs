//! The temporal query language of the temporal API (clauses 4.5.7–4.5.9, 4.5.19, 5.2.21, 6.3.x):
//! timerel / timeAt / endTimeAt / timeproperty / lastN and the aggregation parameters, read from
//! text (query parameters or the temporalQ member of a POST query body) into a [`TemporalQuery`]
//! with the clear 400 BadRequestData messages the API promises for bad input. `render` turns
//! history records and aggregation buckets into the temporal representations.

pub mod render;
pub mod scope;

use crate::model::validate::date_time;
use crate::store::aggregate::{AggrMethod, AggregateQuery};
use crate::store::history::{HistoryQuery, TimeProperty};
use crate::syntax::{ParseError, ParseResult};
use std::collections::HashSet;
use std::ops::Bound;

/// How the temporal evolution is represented (4.5.7, 4.5.9, 4.5.19).
#[derive(Debug, Clone, PartialEq)]
pub enum Representation {
    /// Every instance in full (the default).
    Normalized,
    /// `temporalValues`: per instance set, `[value, time]` pairs.
    TemporalValues,
    /// `aggregatedValues`: per instance set and method, `[value, start, end]` triples.
    Aggregated {
        /// The methods asked for, in the order given.
        methods: Vec<AggrMethod>,
        /// The period length in microseconds (0: the whole range).
        period_micros: i64,
    },
}

/// A temporal query: which records, of which attributes and datasets, in which representation.
#[derive(Debug, Clone)]
pub struct TemporalQuery {
    /// Time property, bounds and lastN (its `attr` is unused: see `attrs`).
    pub history: HistoryQuery,
    /// Only these attributes (expanded); empty for all.
    pub attrs: Vec<String>,
    /// Only instances with these datasetIds (`None` stands for the default instance).
    pub dataset_ids: Option<HashSet<Option<String>>>,
    /// The representation.
    pub representation: Representation,
}

impl TemporalQuery {
    /// The aggregation request of an aggregated query.
    pub fn aggregate_query(&self) -> Option<AggregateQuery> {
        match &self.representation {
            Representation::Aggregated {
                period_micros,
                methods,
            } => Some(AggregateQuery {
                history: self.history.clone(),
                attrs: self.attrs.clone(),
                period_micros: *period_micros,
                methods: methods.clone(),
            }),
            _ => None,
        }
    }
}

/// The temporal parameters of a request, as text.
#[derive(Debug, Clone, Default)]
pub struct TemporalParams<'a> {
    /// `timerel`: before, after or between.
    pub timerel: Option<&'a str>,
    /// `timeAt`.
    pub time_at: Option<&'a str>,
    /// `endTimeAt`.
    pub end_time_at: Option<&'a str>,
    /// `timeproperty`.
    pub time_property: Option<&'a str>,
    /// `lastN`.
    pub last_n: Option<&'a str>,
    /// `aggrMethods` (comma-separated).
    pub aggr_methods: Option<&'a str>,
    /// `aggrPeriodDuration`.
    pub aggr_period: Option<&'a str>,
}

/// Reads timerel, timeAt, endTimeAt, timeproperty and lastN (5.2.21, 4.11): after is inclusive,
/// before exclusive, between is [timeAt, endTimeAt).
pub fn history_query(p: &TemporalParams) -> ParseResult<HistoryQuery> {
    let time = |name: &'static str, v: Option<&str>| -> ParseResult<Option<_>> {
        v.map(|t| {
            date_time(name, t).map_err(|_| {
                ParseError::whole(
                    name,
                    t,
                    format!("'{t}' is not an ISO 8601 DateTime such as 2024-05-01T12:00:00Z"),
                )
            })
        })
        .transpose()
    };
    let at = time("timeAt", p.time_at)?;
    let end = time("endTimeAt", p.end_time_at)?;
    let (from, to) = match (p.timerel, at, end) {
        (None, None, None) => (Bound::Unbounded, Bound::Unbounded),
        (None, _, _) => {
            return Err(ParseError::whole(
                "timerel",
                "",
                "missing; timeAt and endTimeAt need timerel (before, after or between)",
            ))
        }
        (Some(rel), None, _) => {
            return Err(ParseError::whole(
                "timeAt",
                "",
                format!("missing; timerel={rel} needs timeAt, the DateTime it relates to"),
            ))
        }
        (Some("after"), Some(t), _) => (Bound::Included(t), Bound::Unbounded),
        (Some("before"), Some(t), _) => (Bound::Unbounded, Bound::Excluded(t)),
        (Some("between"), Some(_), None) => {
            return Err(ParseError::whole(
                "endTimeAt",
                "",
                "missing; timerel=between needs endTimeAt as well as timeAt",
            ))
        }
        (Some("between"), Some(t), Some(e)) => {
            if e <= t {
                let end_text = p.end_time_at.unwrap_or_default();
                return Err(ParseError::whole(
                    "endTimeAt",
                    end_text,
                    format!(
                        "'{end_text}' must be later than timeAt {}",
                        p.time_at.unwrap_or_default()
                    ),
                ));
            }
            (Bound::Included(t), Bound::Excluded(e))
        }
        (Some(other), _, _) => {
            return Err(ParseError::whole(
                "timerel",
                other,
                format!("'{other}' is unknown; use before, after or between"),
            ))
        }
    };
    let time_property = match p.time_property {
        None | Some("observedAt") => TimeProperty::ObservedAt,
        Some("createdAt") => TimeProperty::CreatedAt,
        Some("modifiedAt") => TimeProperty::ModifiedAt,
        Some("deletedAt") => TimeProperty::DeletedAt,
        Some(other) => {
            return Err(ParseError::whole(
                "timeproperty",
                other,
                format!("'{other}' is unknown; use observedAt, createdAt, modifiedAt or deletedAt"),
            ))
        }
    };
    let last_n = p
        .last_n
        .map(|n| {
            n.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ParseError::whole("lastN", n, format!("'{n}' must be a positive integer"))
                })
        })
        .transpose()?;
    Ok(HistoryQuery {
        attr: None,
        time_property,
        from,
        to,
        last_n,
    })
}

/// Reads `aggrMethods` (required, comma-separated) and `aggrPeriodDuration` (default PT0S); an
/// unknown method is the span.
pub fn aggregation(p: &TemporalParams) -> ParseResult<Representation> {
    let names = p.aggr_methods.ok_or_else(|| {
        ParseError::whole(
            "aggrMethods",
            "",
            "missing; options=aggregatedValues needs aggrMethods (e.g. aggrMethods=avg,max)",
        )
    })?;
    let mut methods = Vec::new();
    let mut from = 0;
    for item in names.split(',') {
        let name = item.trim();
        let start = from + item.len() - item.trim_start().len();
        from += item.len() + 1;
        let method = AggrMethod::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = AggrMethod::ALL.iter().map(|m| m.name()).collect();
            ParseError::at(
                "aggrMethods",
                names,
                start..start + name.len(),
                format!(
                    "'{name}' is not an aggregation method; use {}",
                    known.join(", ")
                ),
            )
        })?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    let period_micros = match p.aggr_period {
        None => 0,
        Some(d) => duration_micros(d)?,
    };
    Ok(Representation::Aggregated {
        methods,
        period_micros,
    })
}

/// Parses an ISO 8601 duration of fixed length (`P[nW][nD][T[nH][nM][n[.n]S]]`) to microseconds.
/// Years and months have no fixed length and are refused.
pub fn duration_micros(text: &str) -> ParseResult<i64> {
    parse_duration("aggrPeriodDuration", text, false)
}

/// Parses an ISO 8601 duration that only bounds how long something lives (`entityMapLifetime`
/// and the settings of entity map lifetimes), which the broker caps anyway: years and months
/// count as 365 and 30 days. `name` names it in errors.
pub fn lifetime(name: &'static str, text: &str) -> ParseResult<chrono::TimeDelta> {
    parse_duration(name, text, true).map(chrono::TimeDelta::microseconds)
}

/// Parses an ISO 8601 duration (`P[nY][nM][nW][nD][T[nH][nM][n[.n]S]]`) to microseconds, `name`
/// naming it in errors, which span the offending character. Years and months have no fixed
/// length: with `nominal` they count as 365 and 30 days, otherwise they are refused.
fn parse_duration(name: &'static str, text: &str, nominal: bool) -> ParseResult<i64> {
    let bad = |span: std::ops::Range<usize>, why: &str| {
        ParseError::at(
            name,
            text,
            span,
            format!("'{text}' is not a valid ISO 8601 duration such as PT1H, P1D or PT30M: {why}"),
        )
    };
    let Some(rest) = text.strip_prefix('P') else {
        return Err(bad(
            0..text.chars().next().map_or(0, char::len_utf8),
            "it must start with P",
        ));
    };
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(bad(text.len() - 1..text.len(), "nothing follows T")),
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return Err(bad(0..1, "it has no components"));
    }
    let mut total: f64 = 0.0;
    // One part (the date, or the time after T) starting at byte `offset` of the text.
    let mut parse = |part: &str, offset: usize, units: &[(char, f64)], in_time: bool| {
        let mut number = String::new();
        let mut last_unit = None;
        for (i, c) in part.char_indices() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let span = offset + i..offset + i + c.len_utf8();
            let pos =
                units
                    .iter()
                    .position(|(u, _)| *u == c)
                    .ok_or_else(|| match (c, in_time) {
                        ('Y', false) | ('M', false) if !nominal => bad(
                            span.clone(),
                            "years and months have no fixed length; use weeks, days or hours",
                        ),
                        _ => bad(span.clone(), &format!("'{c}' is not a unit here")),
                    })?;
            if last_unit.is_some_and(|l| l >= pos) {
                return Err(bad(span, "units are out of order or repeated"));
            }
            last_unit = Some(pos);
            let n: f64 = number
                .parse()
                .map_err(|_| bad(span, &format!("'{number}' before {c} is not a number")))?;
            total += n * units[pos].1;
            number.clear();
        }
        if !number.is_empty() {
            let end = offset + part.len();
            return Err(bad(end - number.len()..end, "a number has no unit"));
        }
        Ok(())
    };
    const SECOND: f64 = 1_000_000.0;
    const DAY: f64 = 86_400.0 * SECOND;
    let fixed = [('W', 7.0 * DAY), ('D', DAY)];
    let with_nominal = [
        ('Y', 365.0 * DAY),
        ('M', 30.0 * DAY),
        ('W', 7.0 * DAY),
        ('D', DAY),
    ];
    parse(date, 1, if nominal { &with_nominal } else { &fixed }, false)?;
    if let Some(t) = time {
        parse(
            t,
            date.len() + 2,
            &[('H', 3_600.0 * SECOND), ('M', 60.0 * SECOND), ('S', SECOND)],
            true,
        )?;
    }
    if !total.is_finite() || total > 1e17 {
        return Err(bad(0..text.len(), "it is too long"));
    }
    Ok(total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let hour = 3_600_000_000;
        assert_eq!(duration_micros("PT1H").unwrap(), hour);
        assert_eq!(duration_micros("P1D").unwrap(), 24 * hour);
        assert_eq!(duration_micros("P1W").unwrap(), 7 * 24 * hour);
        assert_eq!(duration_micros("P1DT1H30M").unwrap(), 25 * hour + hour / 2);
        assert_eq!(duration_micros("PT0.5S").unwrap(), 500_000);
        assert_eq!(duration_micros("PT0S").unwrap(), 0);
        for bad in [
            "", "P", "PT", "1H", "PT1", "PTH", "P1H", "PT1M1H", "P1Y", "P1M", "Pxyz",
        ] {
            assert!(duration_micros(bad).is_err(), "{bad}");
        }
        // The error spans the offending character.
        let span = |text: &str| duration_micros(text).unwrap_err().span;
        assert_eq!(span("PT1M1H"), 5..6);
        assert_eq!(span("P1Y"), 2..3);
        assert_eq!(span("PT1"), 2..3);
        assert_eq!(span("P1DT5X"), 5..6);
        assert_eq!(span("1H"), 0..1);
        assert_eq!(span(""), 0..0);
    }

    #[test]
    fn lifetimes_count_years_and_months_nominally() {
        let day = chrono::TimeDelta::days(1);
        assert_eq!(lifetime("l", "P1Y").unwrap(), day * 365);
        assert_eq!(lifetime("l", "P1Y2M").unwrap(), day * 425);
        assert_eq!(
            lifetime("l", "PT1M").unwrap(),
            chrono::TimeDelta::minutes(1)
        );
        assert_eq!(lifetime("l", "P3650D").unwrap(), day * 3650);
        for bad in ["1hour", "P1M1Y", "PT1Y", ""] {
            let e = lifetime("entityMapLifetime", bad).unwrap_err();
            assert!(e.to_string().starts_with("entityMapLifetime: "), "{e}");
        }
    }

    #[test]
    fn timerel_bounds_and_errors() {
        let q = history_query(&TemporalParams {
            timerel: Some("between"),
            time_at: Some("2024-01-01T00:00:00Z"),
            end_time_at: Some("2024-01-02T00:00:00Z"),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(q.from, Bound::Included(_)));
        assert!(matches!(q.to, Bound::Excluded(_)));
        assert_eq!(q.time_property, TimeProperty::ObservedAt);
        let err = |p: TemporalParams| history_query(&p).unwrap_err().to_string();
        assert!(err(TemporalParams {
            timerel: Some("after"),
            ..Default::default()
        })
        .contains("needs timeAt"));
        assert!(err(TemporalParams {
            timerel: Some("between"),
            time_at: Some("2024-01-01T00:00:00Z"),
            ..Default::default()
        })
        .contains("endTimeAt"));
        assert!(err(TemporalParams {
            timerel: Some("after"),
            time_at: Some("yesterday"),
            ..Default::default()
        })
        .contains("ISO 8601"));
        for n in ["0", "-1", "1.5", "x"] {
            assert!(err(TemporalParams {
                last_n: Some(n),
                ..Default::default()
            })
            .contains("positive integer"));
        }
        let e = aggregation(&TemporalParams {
            aggr_methods: Some("avg, median"),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!((e.input, e.span), ("aggrMethods", 5..11));
        let e = history_query(&TemporalParams {
            timerel: Some("during"),
            time_at: Some("2024-01-01T00:00:00Z"),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "timerel: 'during' is unknown; use before, after or between"
        );
    }
}
