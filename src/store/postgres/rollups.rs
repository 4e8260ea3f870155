//! The roll-ups of history in PostgreSQL (see [`crate::store::rollup`] and migration 19): what a
//! write's new records add, merged in by one upsert of the write's transaction, and the rows an
//! aggregation reads. Deletions are followed by the table's trigger.

use super::*;
use crate::store::backend::Rollups;
use crate::store::rollup::{self, Plan, Rollup, RollupKey};
use std::collections::HashMap;

/// Merges summaries (one array per column, `$1` the tenant, each row at most once) into their
/// rows: counts and sums add, extremes widen, and M2 combines as Chan et al. do, from the two
/// means.
pub(super) const UPSERT_ROLLUPS: &str = "INSERT INTO history_rollups AS r
    (tenant, entity_id, grain, attr, dataset_id, start, n, n_num, sum, sumsq, m2, min, max, first,
     last, expiring)
  SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[], $6::timestamptz[],
                           $7::int8[], $8::int8[], $9::float8[], $10::float8[], $11::float8[],
                           $12::float8[], $13::float8[], $14::timestamptz[], $15::timestamptz[],
                           $16::int8[])
  ON CONFLICT (tenant, entity_id, grain, attr, dataset_id, start) DO UPDATE SET
    m2 = r.m2 + EXCLUDED.m2 + CASE WHEN r.n_num > 0 AND EXCLUDED.n_num > 0
           THEN power(EXCLUDED.sum / EXCLUDED.n_num - r.sum / r.n_num, 2)
                * r.n_num * EXCLUDED.n_num / (r.n_num + EXCLUDED.n_num)
           ELSE 0 END,
    n = r.n + EXCLUDED.n, n_num = r.n_num + EXCLUDED.n_num, sum = r.sum + EXCLUDED.sum,
    sumsq = r.sumsq + EXCLUDED.sumsq, min = least(r.min, EXCLUDED.min),
    max = greatest(r.max, EXCLUDED.max), first = least(r.first, EXCLUDED.first),
    last = greatest(r.last, EXCLUDED.last), expiring = r.expiring + EXCLUDED.expiring";

/// What the history records of a write add to the roll-ups, as the columns of
/// [`UPSERT_ROLLUPS`].
#[derive(Default)]
pub(super) struct RollupColumns {
    entity: Vec<String>,
    grain: Vec<i64>,
    attr: Vec<String>,
    dataset: Vec<String>,
    start: Vec<DateTime<Utc>>,
    n: Vec<i64>,
    n_num: Vec<i64>,
    sum: Vec<f64>,
    sumsq: Vec<f64>,
    m2: Vec<f64>,
    min: Vec<Option<f64>>,
    max: Vec<Option<f64>>,
    first: Vec<Option<DateTime<Utc>>>,
    last: Vec<Option<DateTime<Utc>>>,
    expiring: Vec<i64>,
}

impl RollupColumns {
    /// The summaries of `history` (entity id, record), merged per row.
    pub(super) fn of(history: &[(String, InstanceChange)]) -> RollupColumns {
        let mut c = RollupColumns::default();
        for ((id, key), r) in rollup::deltas(history) {
            c.entity.push(id);
            c.grain.push(key.grain);
            c.attr.push(key.attr);
            c.dataset.push(key.dataset_id.unwrap_or_default());
            c.start.push(key.start);
            c.n.push(r.n);
            c.n_num.push(r.n_num);
            c.sum.push(r.sum);
            c.sumsq.push(r.sumsq);
            c.m2.push(r.m2);
            c.min.push(r.min);
            c.max.push(r.max);
            c.first.push(r.first);
            c.last.push(r.last);
            c.expiring.push(r.expiring);
        }
        c
    }

    /// Whether there is nothing to merge.
    pub(super) fn is_empty(&self) -> bool {
        self.entity.is_empty()
    }

    /// The parameters of [`UPSERT_ROLLUPS`].
    pub(super) fn params<'p>(&'p self, tenant: &'p &str) -> [&'p (dyn ToSql + Sync); 16] {
        [
            tenant,
            &self.entity,
            &self.grain,
            &self.attr,
            &self.dataset,
            &self.start,
            &self.n,
            &self.n_num,
            &self.sum,
            &self.sumsq,
            &self.m2,
            &self.min,
            &self.max,
            &self.first,
            &self.last,
            &self.expiring,
        ]
    }
}

impl PgStore {
    /// The roll-up rows of each of `ids`, in order, of the plan's grain and bounds, for `attrs`
    /// (all when empty).
    pub async fn rollups(
        &self,
        tenant: &str,
        ids: &[String],
        attrs: &[String],
        plan: &Plan,
    ) -> NgsiResult<Rollups> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT entity_id, attr, dataset_id, start, n, n_num, sum, sumsq, m2, min, max,
                        first, last, expiring
                 FROM history_rollups
                 WHERE tenant = $1 AND entity_id = ANY($2) AND grain = $3
                   AND ($4::timestamptz IS NULL OR start >= $4)
                   AND ($5::timestamptz IS NULL OR start < $5)
                   AND (cardinality($6::text[]) = 0 OR attr = ANY($6))",
            )
            .await
            .map_err(db_error)?;
        let rows = client
            .query(
                &statement,
                &[&tenant, &ids, &plan.grain, &plan.from, &plan.to, &attrs],
            )
            .await
            .map_err(db_error)?;
        let mut by_id: HashMap<String, Vec<(RollupKey, Rollup)>> = HashMap::new();
        for r in &rows {
            let dataset: String = r.get(2);
            let key = RollupKey {
                attr: r.get(1),
                dataset_id: (!dataset.is_empty()).then_some(dataset),
                grain: plan.grain,
                start: r.get(3),
            };
            let rollup = Rollup {
                n: r.get(4),
                n_num: r.get(5),
                sum: r.get(6),
                sumsq: r.get(7),
                m2: r.get(8),
                min: r.get(9),
                max: r.get(10),
                first: r.get(11),
                last: r.get(12),
                expiring: r.get(13),
            };
            by_id.entry(r.get(0)).or_default().push((key, rollup));
        }
        Ok(ids
            .iter()
            .map(|id| (id.clone(), by_id.remove(id).unwrap_or_default()))
            .collect())
    }
}
