//! Roll-ups of attribute history, so that aggregating a long history reads a few summary rows
//! instead of every record (GS CIM 009 clause 4.5.19 aggregations; issue 20 item 3).
//!
//! For each entity, attribute instance set (attribute + datasetId) and UTC hour, a
//! [`Rollup`] summarises the records an aggregation by observedAt counts (with a value, an
//! attribute and an observedAt; see [`super::aggregate`]): their number, the number, sum, sum of
//! squares, squared deviation from the mean (M2) and extremes of their numeric values, and their
//! first and last observedAt. Records that will expire (`expiresAt`, 4.22) are only counted in
//! `expiring`: whether they are served depends on the time of the request, so a period holding
//! one is computed from the records.
//!
//! Both stores keep the roll-ups in the transaction that writes the history: new records are
//! merged into their rows ([`deltas`], [`Rollup::merge`]), and the rows of periods that lost a
//! record are computed again from the records left ([`summarise`]). Entity writes hold the
//! entity's lock, so no two transactions change one entity's rows at once.
//!
//! An aggregation is answered from roll-ups when its request allows it ([`plan`]): by observedAt,
//! without distinctCount (not decomposable), with a period that is a whole number of hours, a lower
//! bound on an hour boundary (or none, for one period over everything) and an upper bound that
//! excludes an hour boundary (or none). One grain only: every roll-up row costs the write that
//! makes it (a day grain would double that for entities observed about once an hour, the usual
//! sensor), and a year by days reads 8,760 hourly rows, still a small fraction of the records. Otherwise, and for an entity whose
//! periods hold a record that will expire, the records are aggregated. Both answers are the same
//! up to the rounding of floating-point sums (the order of additions differs); counts, extremes,
//! times and periods are equal.

use super::aggregate::{period_start, AggrMethod, AggregateQuery, Bucket};
use super::history::{InstanceChange, TimeProperty};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// An hour, in microseconds.
pub const HOUR: i64 = 3_600_000_000;
/// The period lengths roll-ups are kept for, longest first (the order [`plan`] tries them in).
pub const GRAINS: [i64; 1] = [HOUR];

/// The summary of the records of one attribute instance set in one period of one grain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Records counted (those that will expire are not).
    pub n: i64,
    /// Records with a numeric value.
    pub n_num: i64,
    /// Sum of the numeric values (0 without any).
    pub sum: f64,
    /// Sum of their squares.
    pub sumsq: f64,
    /// Sum of squared deviations from their mean (Chan et al.'s M2; merged without cancellation).
    pub m2: f64,
    /// Smallest numeric value.
    pub min: Option<f64>,
    /// Largest numeric value.
    pub max: Option<f64>,
    /// Earliest observedAt counted.
    pub first: Option<DateTime<Utc>>,
    /// Latest observedAt counted.
    pub last: Option<DateTime<Utc>>,
    /// Records in the period that will expire, which make the period unanswerable from here.
    pub expiring: i64,
}

/// Where a roll-up row belongs within one entity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RollupKey {
    /// The attribute (expanded).
    pub attr: String,
    /// The datasetId; `None` for the default instance.
    pub dataset_id: Option<String>,
    /// The grain (one of [`GRAINS`]), in microseconds.
    pub grain: i64,
    /// Where the period starts (a multiple of the grain since the Unix epoch).
    pub start: DateTime<Utc>,
}

/// A stored roll-up row of one entity.
pub type RollupRow = (RollupKey, Rollup);

impl Rollup {
    /// The summary of one record, if aggregations by observedAt count it.
    pub fn of(r: &InstanceChange) -> Option<Rollup> {
        let (Some(_), Some(_), Some(t)) = (&r.attr, &r.value, r.observed_at) else {
            return None;
        };
        if r.expires_at.is_some() {
            return Some(Rollup {
                expiring: 1,
                ..Rollup::EMPTY
            });
        }
        Some(Rollup {
            n: 1,
            n_num: i64::from(r.num.is_some()),
            sum: r.num.unwrap_or(0.0),
            sumsq: r.num.map_or(0.0, |x| x * x),
            m2: 0.0,
            min: r.num,
            max: r.num,
            first: Some(t),
            last: Some(t),
            expiring: 0,
        })
    }

    /// Nothing summarised.
    pub const EMPTY: Rollup = Rollup {
        n: 0,
        n_num: 0,
        sum: 0.0,
        sumsq: 0.0,
        m2: 0.0,
        min: None,
        max: None,
        first: None,
        last: None,
        expiring: 0,
    };

    /// Adds the records another summary counts to this one's.
    pub fn merge(&mut self, o: &Rollup) {
        if o.n_num > 0 {
            self.m2 = if self.n_num == 0 {
                o.m2
            } else {
                let (a, b) = (self.n_num as f64, o.n_num as f64);
                let delta = o.sum / b - self.sum / a;
                self.m2 + o.m2 + delta * delta * a * b / (a + b)
            };
        }
        self.n += o.n;
        self.n_num += o.n_num;
        self.sum += o.sum;
        self.sumsq += o.sumsq;
        self.min = extreme(self.min, o.min, f64::min);
        self.max = extreme(self.max, o.max, f64::max);
        self.first = extreme(self.first, o.first, std::cmp::min);
        self.last = extreme(self.last, o.last, std::cmp::max);
        self.expiring += o.expiring;
    }

    /// The aggregated values of these records as one period (`distinctCount` excepted, which
    /// roll-ups cannot give).
    fn bucket(&self, attr: String, dataset_id: Option<String>, start: DateTime<Utc>) -> Bucket {
        let nums = self.n_num > 0;
        let mean = self.sum / self.n_num as f64;
        Bucket {
            attr,
            dataset_id,
            start,
            first: self.first.unwrap_or(start),
            last: self.last.unwrap_or(start),
            total_count: self.n,
            distinct_count: 0,
            sum: nums.then_some(self.sum),
            avg: nums.then_some(mean),
            min: self.min,
            max: self.max,
            stddev: nums.then(|| (self.m2.max(0.0) / self.n_num as f64).sqrt()),
            sumsq: nums.then_some(self.sumsq),
        }
    }
}

fn extreme<T: Copy>(a: Option<T>, b: Option<T>, pick: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The rows (one per grain) a record counts in, with its summary.
pub fn rows_of(r: &InstanceChange) -> impl Iterator<Item = RollupRow> + '_ {
    let one = Rollup::of(r);
    GRAINS.into_iter().filter_map(move |grain| {
        let (one, t) = (one?, r.observed_at?);
        let key = RollupKey {
            attr: r.attr.clone()?,
            dataset_id: r.dataset_id.clone(),
            grain,
            start: grain_start(grain, t),
        };
        Some((key, one))
    })
}

/// The start of the period of `grain` that holds `t`.
pub fn grain_start(grain: i64, t: DateTime<Utc>) -> DateTime<Utc> {
    period_start(DateTime::UNIX_EPOCH, grain, t)
}

/// What the new history records of a write add to the roll-ups, merged per entity and row.
pub fn deltas(history: &[(String, InstanceChange)]) -> BTreeMap<(String, RollupKey), Rollup> {
    let mut out: BTreeMap<(String, RollupKey), Rollup> = BTreeMap::new();
    for (id, r) in history {
        for (key, one) in rows_of(r) {
            out.entry((id.clone(), key))
                .or_insert(Rollup::EMPTY)
                .merge(&one);
        }
    }
    out
}

/// The rows `keys` of one entity computed from its records (`records`: at least all those in
/// the keys' periods); a key whose period holds no record is absent.
pub fn summarise<'a>(
    records: impl IntoIterator<Item = &'a InstanceChange>,
    keys: &std::collections::BTreeSet<RollupKey>,
) -> BTreeMap<RollupKey, Rollup> {
    let mut out: BTreeMap<RollupKey, Rollup> = BTreeMap::new();
    for r in records {
        for (key, one) in rows_of(r) {
            if keys.contains(&key) {
                out.entry(key).or_insert(Rollup::EMPTY).merge(&one);
            }
        }
    }
    out
}

/// How an aggregation is answered from roll-ups: rows of `grain` from `from` (included) to `to`
/// (excluded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The grain of the rows to read.
    pub grain: i64,
    /// The lower bound (the origin of the periods), if any.
    pub from: Option<DateTime<Utc>>,
    /// The upper bound, if any.
    pub to: Option<DateTime<Utc>>,
}

/// Whether, and how, an aggregation can be answered from roll-ups (see the module text).
pub fn plan(query: &AggregateQuery) -> Option<Plan> {
    if query.history.time_property != TimeProperty::ObservedAt
        || query.methods.contains(&AggrMethod::DistinctCount)
    {
        return None;
    }
    let from = match query.history.from {
        Bound::Included(t) => Some(t),
        Bound::Unbounded if query.period_micros == 0 => None,
        _ => return None,
    };
    let to = match query.history.to {
        Bound::Excluded(t) => Some(t),
        Bound::Unbounded => None,
        Bound::Included(_) => return None,
    };
    let aligned = |grain: i64, t: Option<DateTime<Utc>>| {
        t.is_none_or(|t| t.timestamp_micros().rem_euclid(grain) == 0)
    };
    GRAINS
        .into_iter()
        .find(|&g| query.period_micros % g == 0 && aligned(g, from) && aligned(g, to))
        .map(|grain| Plan { grain, from, to })
}

/// The buckets of one entity from its roll-up rows of the plan's grain and bounds (and the
/// query's attributes), ordered as [`super::aggregate::aggregate`] orders them; `None` when a
/// period holds a record that will expire (the records must be aggregated instead).
pub fn buckets(query: &AggregateQuery, plan: &Plan, rows: &[RollupRow]) -> Option<Vec<Bucket>> {
    if rows.iter().any(|(_, r)| r.expiring > 0) {
        return None;
    }
    let Some(origin) = plan
        .from
        .or_else(|| rows.iter().filter_map(|(_, r)| r.first).min())
    else {
        return Some(Vec::new());
    };
    let mut groups: BTreeMap<(String, Option<String>, DateTime<Utc>), Rollup> = BTreeMap::new();
    for (key, rollup) in rows {
        let start = if query.period_micros > 0 {
            period_start(origin, query.period_micros, key.start)
        } else {
            origin
        };
        groups
            .entry((key.attr.clone(), key.dataset_id.clone(), start))
            .or_insert(Rollup::EMPTY)
            .merge(rollup);
    }
    Some(
        groups
            .into_iter()
            .map(|((attr, dataset_id, start), r)| r.bucket(attr, dataset_id, start))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::aggregate::aggregate;
    use crate::store::history::HistoryQuery;
    use chrono::TimeZone;

    fn record(t: DateTime<Utc>, num: Option<f64>) -> InstanceChange {
        InstanceChange {
            attr: Some("https://example.org/temperature".into()),
            dataset_id: None,
            instance_id: format!("urn:ngsi-ld:{}", uuid::Uuid::new_v4()),
            kind: Some(crate::model::AttrKind::Property),
            value: Some(crate::store::history::JsonText::of(
                &serde_json::json!({ "value": num }),
            )),
            num,
            observed_at: Some(t),
            created_at: t,
            modified_at: t,
            deleted_at: None,
            expires_at: None,
        }
    }

    fn query(from: Bound<DateTime<Utc>>, to: Bound<DateTime<Utc>>, period: i64) -> AggregateQuery {
        AggregateQuery {
            history: HistoryQuery {
                time_property: TimeProperty::ObservedAt,
                from,
                to,
                ..HistoryQuery::default()
            },
            attrs: Vec::new(),
            period_micros: period,
            methods: vec![AggrMethod::Avg, AggrMethod::Stddev],
        }
    }

    #[test]
    fn only_aligned_bounds_and_whole_periods_by_observed_at_are_planned() {
        let midnight = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        let (incl, excl) = (Bound::Included(midnight), Bound::Excluded(midnight));
        let day_later = Bound::Excluded(midnight + chrono::Duration::days(1));
        let p = plan(&query(incl, day_later, HOUR)).expect("hourly over a day");
        assert_eq!((p.grain, p.from), (HOUR, Some(midnight)));
        assert_eq!(
            plan(&query(incl, day_later, 48 * HOUR)).unwrap().grain,
            HOUR
        );
        assert_eq!(
            plan(&query(Bound::Unbounded, Bound::Unbounded, 0))
                .unwrap()
                .grain,
            HOUR
        );
        // A bound off the hour, an excluded lower or included upper bound, a period of 90
        // minutes, no origin for periods, another time property, distinctCount: records.
        let off = Bound::Included(midnight + chrono::Duration::minutes(1));
        assert_eq!(plan(&query(off, day_later, HOUR)), None);
        assert_eq!(plan(&query(excl, day_later, HOUR)), None);
        assert_eq!(plan(&query(incl, Bound::Included(midnight), HOUR)), None);
        assert_eq!(plan(&query(incl, day_later, HOUR * 3 / 2)), None);
        assert_eq!(plan(&query(Bound::Unbounded, day_later, HOUR)), None);
        let mut q = query(incl, day_later, HOUR);
        q.history.time_property = TimeProperty::ModifiedAt;
        assert_eq!(plan(&q), None);
        let mut q = query(incl, day_later, HOUR);
        q.methods.push(AggrMethod::DistinctCount);
        assert_eq!(plan(&q), None);
    }

    #[test]
    fn merged_summaries_give_what_the_records_give() {
        let base = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        // Large values with a small spread: a sum of squares would lose the deviation.
        let records: Vec<InstanceChange> = (0..500)
            .map(|i| {
                let t = base + chrono::Duration::seconds(i * 97);
                let num = (i % 7 != 0).then(|| 1.0e6 + ((i * 31) % 13) as f64 / 10.0);
                record(t, num)
            })
            .collect();
        let history: Vec<(String, InstanceChange)> = records
            .iter()
            .map(|r| ("e".to_string(), r.clone()))
            .collect();
        for period in [HOUR, 3 * HOUR, 0] {
            let q = query(Bound::Included(base), Bound::Unbounded, period);
            let p = plan(&q).expect("a plan");
            let rows: Vec<RollupRow> = deltas(&history)
                .into_iter()
                .filter(|((_, k), _)| k.grain == p.grain)
                .map(|((_, k), r)| (k, r))
                .collect();
            let got = buckets(&q, &p, &rows).expect("no expiring record");
            let want = aggregate(&q, &records);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.start, g.first, g.last), (w.start, w.first, w.last));
                assert_eq!((g.total_count, g.min, g.max), (w.total_count, w.min, w.max));
                let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
                    (a, b) => a == b,
                };
                assert!(close(g.avg, w.avg), "{:?} {:?}", g.avg, w.avg);
                assert!(close(g.stddev, w.stddev), "{:?} {:?}", g.stddev, w.stddev);
                assert!(close(g.sumsq, w.sumsq), "{:?} {:?}", g.sumsq, w.sumsq);
            }
        }
    }

    #[test]
    fn a_record_that_will_expire_sends_the_entity_to_its_records() {
        let base = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        let mut expiring = record(base, Some(1.0));
        expiring.expires_at = Some(base + chrono::Duration::days(400));
        let history = vec![
            ("e".to_string(), record(base, Some(2.0))),
            ("e".to_string(), expiring),
        ];
        let q = query(Bound::Included(base), Bound::Unbounded, HOUR);
        let p = plan(&q).unwrap();
        let rows: Vec<RollupRow> = deltas(&history)
            .into_iter()
            .filter(|((_, k), _)| k.grain == HOUR)
            .map(|((_, k), r)| (k, r))
            .collect();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].1.n, rows[0].1.expiring), (1, 1));
        assert_eq!(buckets(&q, &p, &rows), None);
    }
}
