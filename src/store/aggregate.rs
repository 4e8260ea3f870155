//! Aggregation of attribute history over time periods (GS CIM 009 clause 4.5.19): what a request
//! asks for ([`AggregateQuery`]), what a store answers ([`Bucket`]), and the Rust implementation
//! the embedded store runs over its records. PostgreSQL computes the same buckets in SQL
//! (`date_bin` and aggregate functions); both agree on the definitions below.
//!
//! Definitions: only records with a value (not deletions) count. A period of length `p > 0` starts
//! at `origin + k·p`; the origin is the query's lower time bound when it has one, else the earliest
//! selected time of the entity. `p = 0` (PT0S) is one bucket per attribute instance set. Numeric
//! functions (sum, avg, min, max, stddev, sumsq) consider numeric values only and are `None` when a
//! bucket has none; `stddev` is the population standard deviation. `distinctCount` counts distinct
//! value members.

use super::history::{HistoryQuery, InstanceChange};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, HashSet};

/// The aggregation functions of clause 4.5.19.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggrMethod {
    /// Number of instances.
    TotalCount,
    /// Number of distinct values.
    DistinctCount,
    /// Sum of numeric values.
    Sum,
    /// Mean of numeric values.
    Avg,
    /// Minimum numeric value.
    Min,
    /// Maximum numeric value.
    Max,
    /// Population standard deviation of numeric values.
    Stddev,
    /// Sum of the squares of numeric values.
    Sumsq,
}

impl AggrMethod {
    /// Every method, in the order responses list them.
    pub const ALL: [AggrMethod; 8] = [
        AggrMethod::TotalCount,
        AggrMethod::DistinctCount,
        AggrMethod::Sum,
        AggrMethod::Avg,
        AggrMethod::Min,
        AggrMethod::Max,
        AggrMethod::Stddev,
        AggrMethod::Sumsq,
    ];

    /// The method's name in `aggrMethods` and in the aggregated representation.
    pub fn name(self) -> &'static str {
        match self {
            AggrMethod::TotalCount => "totalCount",
            AggrMethod::DistinctCount => "distinctCount",
            AggrMethod::Sum => "sum",
            AggrMethod::Avg => "avg",
            AggrMethod::Min => "min",
            AggrMethod::Max => "max",
            AggrMethod::Stddev => "stddev",
            AggrMethod::Sumsq => "sumsq",
        }
    }

    /// The method with this name.
    pub fn from_name(name: &str) -> Option<AggrMethod> {
        AggrMethod::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// An aggregation request over the history of some entities.
#[derive(Debug, Clone)]
pub struct AggregateQuery {
    /// Time property and bounds (its `attr` and `last_n` are not used).
    pub history: HistoryQuery,
    /// Only these attributes (expanded); empty for all.
    pub attrs: Vec<String>,
    /// The period length in microseconds; 0 aggregates the whole time range at once.
    pub period_micros: i64,
    /// The methods asked for (a store may leave the others out: 0 or `None`).
    pub methods: Vec<AggrMethod>,
}

impl AggregateQuery {
    /// The fixed origin of the periods: the lower time bound, if the query has one.
    pub fn fixed_origin(&self) -> Option<DateTime<Utc>> {
        match self.history.from {
            std::ops::Bound::Included(t) | std::ops::Bound::Excluded(t) => Some(t),
            std::ops::Bound::Unbounded => None,
        }
    }
}

/// The aggregated values of one attribute instance set (attribute + datasetId) in one period.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// The attribute (expanded).
    pub attr: String,
    /// The datasetId.
    pub dataset_id: Option<String>,
    /// Where the period starts (for a period of 0: the origin).
    pub start: DateTime<Utc>,
    /// The earliest and latest selected time inside the bucket.
    pub first: DateTime<Utc>,
    /// See `first`.
    pub last: DateTime<Utc>,
    /// Number of instances.
    pub total_count: i64,
    /// Number of distinct values.
    pub distinct_count: i64,
    /// Sum of numeric values.
    pub sum: Option<f64>,
    /// Mean of numeric values.
    pub avg: Option<f64>,
    /// Minimum numeric value.
    pub min: Option<f64>,
    /// Maximum numeric value.
    pub max: Option<f64>,
    /// Population standard deviation of numeric values.
    pub stddev: Option<f64>,
    /// Sum of squares of numeric values.
    pub sumsq: Option<f64>,
}

impl Bucket {
    /// The value of one method, as JSON.
    pub fn value(&self, method: AggrMethod) -> serde_json::Value {
        use serde_json::Value;
        let num = |v: Option<f64>| v.map_or(Value::Null, Value::from);
        match method {
            AggrMethod::TotalCount => Value::from(self.total_count),
            AggrMethod::DistinctCount => Value::from(self.distinct_count),
            AggrMethod::Sum => num(self.sum),
            AggrMethod::Avg => num(self.avg),
            AggrMethod::Min => num(self.min),
            AggrMethod::Max => num(self.max),
            AggrMethod::Stddev => num(self.stddev),
            AggrMethod::Sumsq => num(self.sumsq),
        }
    }
}

/// The start of the period of length `period` (µs, > 0) from `origin` that holds `t`.
pub fn period_start(origin: DateTime<Utc>, period: i64, t: DateTime<Utc>) -> DateTime<Utc> {
    let offset = (t - origin).num_microseconds().unwrap_or(0);
    origin + Duration::microseconds(offset.div_euclid(period) * period)
}

/// The key a value is compared by for distinctCount: numbers by value, anything else as JSON text.
fn distinct_key(r: &InstanceChange) -> String {
    match r.num {
        Some(n) => format!("n{n}"),
        None => format!(
            "j{}",
            r.value
                .as_ref()
                .and_then(|v| v.json().get("value").map(serde_json::Value::to_string))
                .unwrap_or_default()
        ),
    }
}

/// Aggregates one entity's records (already selected by time property and bounds) into buckets,
/// ordered by attribute, datasetId (default first) and period start.
pub fn aggregate(query: &AggregateQuery, records: &[InstanceChange]) -> Vec<Bucket> {
    let tp = query.history.time_property;
    let timed: Vec<(DateTime<Utc>, &InstanceChange)> = records
        .iter()
        .filter(|r| r.value.is_some())
        .filter(|r| {
            r.attr
                .as_ref()
                .is_some_and(|a| query.attrs.is_empty() || query.attrs.contains(a))
        })
        .filter_map(|r| tp.of(r).map(|t| (t, r)))
        .collect();
    let Some(earliest) = timed.iter().map(|(t, _)| *t).min() else {
        return Vec::new();
    };
    let origin = query.fixed_origin().unwrap_or(earliest);
    type Key = (String, Option<String>, DateTime<Utc>);
    let mut groups: BTreeMap<Key, Vec<(DateTime<Utc>, &InstanceChange)>> = BTreeMap::new();
    for (t, r) in timed {
        let start = if query.period_micros > 0 {
            period_start(origin, query.period_micros, t)
        } else {
            origin
        };
        let key = (
            r.attr.clone().unwrap_or_default(),
            r.dataset_id.clone(),
            start,
        );
        groups.entry(key).or_default().push((t, r));
    }
    groups
        .into_iter()
        .map(|((attr, dataset_id, start), items)| {
            let nums: Vec<f64> = items.iter().filter_map(|(_, r)| r.num).collect();
            let n = nums.len() as f64;
            let sum = (!nums.is_empty()).then(|| nums.iter().sum::<f64>());
            let avg = sum.map(|s| s / n);
            let sumsq = (!nums.is_empty()).then(|| nums.iter().map(|x| x * x).sum::<f64>());
            let stddev =
                avg.map(|m| (nums.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt());
            let distinct: HashSet<String> = items.iter().map(|(_, r)| distinct_key(r)).collect();
            Bucket {
                attr,
                dataset_id,
                start,
                first: items.iter().map(|(t, _)| *t).min().unwrap_or(start),
                last: items.iter().map(|(t, _)| *t).max().unwrap_or(start),
                total_count: items.len() as i64,
                distinct_count: distinct.len() as i64,
                sum,
                avg,
                min: nums.iter().copied().reduce(f64::min),
                max: nums.iter().copied().reduce(f64::max),
                stddev,
                sumsq,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn periods_start_at_multiples_of_the_length_from_the_origin() {
        let origin = Utc.with_ymd_and_hms(2024, 1, 1, 0, 3, 0).unwrap();
        let hour = 3_600_000_000;
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 2, 0, 0).unwrap();
        assert_eq!(
            period_start(origin, hour, t),
            Utc.with_ymd_and_hms(2024, 1, 1, 1, 3, 0).unwrap()
        );
        assert_eq!(period_start(origin, hour, origin), origin);
        assert_eq!(AggrMethod::from_name("stddev"), Some(AggrMethod::Stddev));
        assert_eq!(AggrMethod::from_name("median"), None);
    }
}
