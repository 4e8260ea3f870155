//! The temporal query language of the temporal API (clauses 4.5.7–4.5.9, 4.5.19, 5.2.21, 6.3.x):
//! timerel / timeAt / endTimeAt / timeproperty / lastN and the aggregation parameters, read from
//! text (query parameters or the temporalQ member of a POST query body) into a [`TemporalQuery`]
//! with the clear 400 BadRequestData messages the API promises for bad input. `render` turns
//! history records and aggregation buckets into the temporal representations.

pub mod render;
pub mod scope;

use crate::error::{NgsiError, NgsiResult};
use crate::model::validate::date_time;
use crate::store::aggregate::{AggrMethod, AggregateQuery};
use crate::store::history::{HistoryQuery, TimeProperty};
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
pub fn history_query(p: &TemporalParams) -> NgsiResult<HistoryQuery> {
    let time = |name: &str, v: Option<&str>| -> NgsiResult<Option<_>> {
        v.map(|t| {
            date_time(name, t).map_err(|_| {
                NgsiError::bad_data(format!(
                    "{name}={t} is not an ISO 8601 DateTime such as 2024-05-01T12:00:00Z"
                ))
            })
        })
        .transpose()
    };
    let at = time("timeAt", p.time_at)?;
    let end = time("endTimeAt", p.end_time_at)?;
    let (from, to) = match (p.timerel, at, end) {
        (None, None, None) => (Bound::Unbounded, Bound::Unbounded),
        (None, _, _) => {
            return Err(NgsiError::bad_data(
                "timeAt and endTimeAt need timerel (before, after or between)",
            ))
        }
        (Some(rel), None, _) => {
            return Err(NgsiError::bad_data(format!(
                "timerel={rel} needs timeAt, the DateTime it relates to"
            )))
        }
        (Some("after"), Some(t), _) => (Bound::Included(t), Bound::Unbounded),
        (Some("before"), Some(t), _) => (Bound::Unbounded, Bound::Excluded(t)),
        (Some("between"), Some(_), None) => {
            return Err(NgsiError::bad_data(
                "timerel=between needs endTimeAt as well as timeAt",
            ))
        }
        (Some("between"), Some(t), Some(e)) => {
            if e <= t {
                return Err(NgsiError::bad_data(format!(
                    "endTimeAt={} must be later than timeAt={}",
                    p.end_time_at.unwrap_or_default(),
                    p.time_at.unwrap_or_default()
                )));
            }
            (Bound::Included(t), Bound::Excluded(e))
        }
        (Some(other), _, _) => {
            return Err(NgsiError::bad_data(format!(
                "timerel={other} is unknown; use before, after or between"
            )))
        }
    };
    let time_property = match p.time_property {
        None | Some("observedAt") => TimeProperty::ObservedAt,
        Some("createdAt") => TimeProperty::CreatedAt,
        Some("modifiedAt") => TimeProperty::ModifiedAt,
        Some("deletedAt") => TimeProperty::DeletedAt,
        Some(other) => {
            return Err(NgsiError::bad_data(format!(
            "timeproperty={other} is unknown; use observedAt, createdAt, modifiedAt or deletedAt"
        )))
        }
    };
    let last_n = p
        .last_n
        .map(|n| {
            n.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| NgsiError::bad_data(format!("lastN={n} must be a positive integer")))
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

/// Reads `aggrMethods` (required, comma-separated) and `aggrPeriodDuration` (default PT0S).
pub fn aggregation(p: &TemporalParams) -> NgsiResult<Representation> {
    let names = p.aggr_methods.ok_or_else(|| {
        NgsiError::bad_data("options=aggregatedValues needs aggrMethods (e.g. aggrMethods=avg,max)")
    })?;
    let mut methods = Vec::new();
    for name in names.split(',').map(str::trim) {
        let method = AggrMethod::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = AggrMethod::ALL.iter().map(|m| m.name()).collect();
            NgsiError::bad_data(format!(
                "aggrMethods: '{name}' is not an aggregation method; use {}",
                known.join(", ")
            ))
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
pub fn duration_micros(text: &str) -> NgsiResult<i64> {
    parse_duration("aggrPeriodDuration", text, false)
}

/// Parses an ISO 8601 duration that only bounds how long something lives (`entityMapLifetime`
/// and the settings of entity map lifetimes), which the broker caps anyway: years and months
/// count as 365 and 30 days. `name` names it in errors.
pub fn lifetime(name: &str, text: &str) -> NgsiResult<chrono::TimeDelta> {
    parse_duration(name, text, true).map(chrono::TimeDelta::microseconds)
}

/// Parses an ISO 8601 duration (`P[nY][nM][nW][nD][T[nH][nM][n[.n]S]]`) to microseconds, `name`
/// naming it in errors. Years and months have no fixed length: with `nominal` they count as 365
/// and 30 days, otherwise they are refused.
fn parse_duration(name: &str, text: &str, nominal: bool) -> NgsiResult<i64> {
    let bad = |why: &str| {
        NgsiError::bad_data(format!(
            "{name}={text} is not a valid ISO 8601 duration such as PT1H, P1D or PT30M: {why}"
        ))
    };
    let rest = text
        .strip_prefix('P')
        .ok_or_else(|| bad("it must start with P"))?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(bad("nothing follows T")),
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return Err(bad("it has no components"));
    }
    let mut total: f64 = 0.0;
    let mut parse = |part: &str, units: &[(char, f64)], in_time: bool| -> NgsiResult<()> {
        let mut number = String::new();
        let mut last_unit = None;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let pos =
                units
                    .iter()
                    .position(|(u, _)| *u == c)
                    .ok_or_else(|| match (c, in_time) {
                        ('Y', false) | ('M', false) if !nominal => {
                            bad("years and months have no fixed length; use weeks, days or hours")
                        }
                        _ => bad(&format!("'{c}' is not a unit here")),
                    })?;
            if last_unit.is_some_and(|l| l >= pos) {
                return Err(bad("units are out of order or repeated"));
            }
            last_unit = Some(pos);
            let n: f64 = number
                .parse()
                .map_err(|_| bad(&format!("'{number}' before {c} is not a number")))?;
            total += n * units[pos].1;
            number.clear();
        }
        if !number.is_empty() {
            return Err(bad("a number has no unit"));
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
    parse(date, if nominal { &with_nominal } else { &fixed }, false)?;
    if let Some(t) = time {
        parse(
            t,
            &[('H', 3_600.0 * SECOND), ('M', 60.0 * SECOND), ('S', SECOND)],
            true,
        )?;
    }
    if !total.is_finite() || total > 1e17 {
        return Err(bad("it is too long"));
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
            assert!(e.detail.starts_with("entityMapLifetime="), "{}", e.detail);
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
        let err = |p: TemporalParams| history_query(&p).unwrap_err().detail;
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
        assert!(aggregation(&TemporalParams {
            aggr_methods: Some("avg,median"),
            ..Default::default()
        })
        .is_err());
    }
}
