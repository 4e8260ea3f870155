//! Temporal aggregation in SQL (date_bin periods per entity, attribute and datasetId).

use super::*;

impl PgStore {
    /// Aggregates the history of each of `ids` in SQL: `date_bin` over the time property from the
    /// query's lower bound (or each entity's earliest selected time), grouped per attribute,
    /// datasetId and period (see [`crate::store::aggregate`] for the definitions).
    pub async fn aggregate(
        &self,
        tenant: &str,
        ids: &[String],
        query: &AggregateQuery,
    ) -> NgsiResult<Vec<(String, Vec<Bucket>)>> {
        let col = time_column(query.history.time_property);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &ids];
        let mut conditions = time_conditions(&query.history, &mut params);
        conditions.push("value IS NOT NULL AND attr IS NOT NULL".into());
        if !query.attrs.is_empty() {
            params.push(&query.attrs);
            conditions.push(format!("attr = ANY(${})", params.len()));
        }
        let fixed = query.fixed_origin();
        let origin = match &fixed {
            Some(t) => {
                params.push(t);
                format!("${}::timestamptz", params.len())
            }
            None => format!("min({col}) OVER (PARTITION BY entity_id)"),
        };
        params.push(&query.period_micros);
        let period = format!("${}::bigint", params.len());
        // Only the methods asked for are computed (count(DISTINCT) sorts every group).
        let wanted = |m: AggrMethod, expr: &str, none: &str| {
            if query.methods.contains(&m) {
                expr.to_string()
            } else {
                none.to_string()
            }
        };
        let functions = [
            wanted(AggrMethod::DistinctCount, "count(DISTINCT v)", "0::bigint"),
            wanted(AggrMethod::Sum, "sum(num)", "NULL::float8"),
            wanted(AggrMethod::Avg, "avg(num)", "NULL::float8"),
            wanted(AggrMethod::Min, "min(num)", "NULL::float8"),
            wanted(AggrMethod::Max, "max(num)", "NULL::float8"),
            wanted(AggrMethod::Stddev, "stddev_pop(num)", "NULL::float8"),
            wanted(AggrMethod::Sumsq, "sum(num * num)", "NULL::float8"),
        ]
        .join(", ");
        // The value member is read (from the jsonb) only to count distinct values.
        let v = wanted(AggrMethod::DistinctCount, "value -> 'value'", "NULL::jsonb");
        let sql = format!(
            "SELECT entity_id, attr, dataset_id, b, min(t), max(t), count(*), {functions}
             FROM (SELECT entity_id, attr, dataset_id, t, v, num,
                          CASE WHEN {period} > 0 THEN date_bin({period} * interval '1 microsecond', t, o)
                               ELSE o END AS b
                   FROM (SELECT entity_id, attr, dataset_id, {col} AS t, {v} AS v, num,
                                {origin} AS o
                         FROM attribute_instances WHERE {}) h) g
             GROUP BY entity_id, attr, dataset_id, b
             ORDER BY entity_id COLLATE \"C\", attr COLLATE \"C\", dataset_id COLLATE \"C\" NULLS FIRST, b",
            conditions.join(" AND ")
        );
        let client = self.client().await?;
        let rows = client.query(&sql, &params).await.map_err(db_error)?;
        let mut by_id: std::collections::HashMap<String, Vec<Bucket>> =
            std::collections::HashMap::new();
        for r in &rows {
            by_id.entry(r.get(0)).or_default().push(Bucket {
                attr: r.get(1),
                dataset_id: r.get(2),
                start: r.get(3),
                first: r.get(4),
                last: r.get(5),
                total_count: r.get(6),
                distinct_count: r.get(7),
                sum: r.get(8),
                avg: r.get(9),
                min: r.get(10),
                max: r.get(11),
                stddev: r.get(12),
                sumsq: r.get(13),
            });
        }
        Ok(ids
            .iter()
            .map(|id| (id.clone(), by_id.remove(id).unwrap_or_default()))
            .collect())
    }
}
