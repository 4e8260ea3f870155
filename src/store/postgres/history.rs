//! Temporal history reads: the records of entities a `HistoryQuery` selects, bounds, order and lastN
//! in SQL.

use super::*;

/// The column of a time property.
pub(super) fn time_column(tp: TimeProperty) -> &'static str {
    match tp {
        TimeProperty::ObservedAt => "observed_at",
        TimeProperty::CreatedAt => "created_at",
        TimeProperty::ModifiedAt => "modified_at",
        TimeProperty::DeletedAt => "deleted_at",
    }
}

/// The conditions of a history read of the entities `$2` in tenant `$1` by time property and
/// bounds (bound values are pushed onto `params`).
pub(super) fn time_conditions<'a>(
    query: &'a HistoryQuery,
    params: &mut Vec<&'a (dyn ToSql + Sync)>,
) -> Vec<String> {
    let col = time_column(query.time_property);
    // Records of instances whose storage has ended (4.22) are not served.
    let mut conditions = vec![format!(
        "tenant = $1 AND entity_id = ANY($2) AND {col} IS NOT NULL \
         AND (expires_at IS NULL OR expires_at > now())"
    )];
    for (bound, included, excluded) in [(&query.from, ">=", ">"), (&query.to, "<=", "<")] {
        let (t, op) = match bound {
            Bound::Included(t) => (t, included),
            Bound::Excluded(t) => (t, excluded),
            Bound::Unbounded => continue,
        };
        params.push(t);
        conditions.push(format!("{col} {op} ${}", params.len()));
    }
    conditions
}

impl PgStore {
    /// The history records of one entity that `query` selects, in the order of
    /// [`HistoryQuery::select`]; bounds, ordering and lastN (a window per attribute) are SQL.
    pub async fn history(
        &self,
        tenant: &str,
        id: &str,
        query: &HistoryQuery,
    ) -> NgsiResult<Vec<InstanceChange>> {
        let mut all = self.history_many(tenant, &[id.to_string()], query).await?;
        Ok(all.pop().map(|(_, records)| records).unwrap_or_default())
    }

    /// The history of several entities in one statement: for each of `ids`, in that order, the
    /// records `query` selects (as [`PgStore::history`]).
    pub async fn history_many(
        &self,
        tenant: &str,
        ids: &[String],
        query: &HistoryQuery,
    ) -> NgsiResult<Vec<(String, Vec<InstanceChange>)>> {
        let col = time_column(query.time_property);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &ids];
        let mut conditions = time_conditions(query, &mut params);
        if let Some(attr) = &query.attr {
            params.push(attr);
            conditions.push(format!("attr = ${}", params.len()));
        }
        let columns =
            "entity_id, attr, dataset_id, instance_id, kind, observed_at, created_at, modified_at, deleted_at, value, num, expires_at";
        let from = format!("attribute_instances WHERE {}", conditions.join(" AND "));
        let order = format!(
            "entity_id COLLATE \"C\", {col}, attr COLLATE \"C\" NULLS FIRST, dataset_id COLLATE \"C\" NULLS FIRST, instance_id COLLATE \"C\""
        );
        let sql = match query.last_n {
            None => format!("SELECT {columns} FROM {from} ORDER BY {order}"),
            Some(n) => format!(
                "SELECT {columns} FROM (SELECT {columns}, row_number() OVER (PARTITION BY entity_id, attr ORDER BY {col} DESC,
                   dataset_id COLLATE \"C\" DESC NULLS LAST, instance_id COLLATE \"C\" DESC) AS rn FROM {from}) h
                 WHERE rn <= {n} ORDER BY {order}"
            ),
        };
        let client = self.client().await?;
        let rows = client.query(&sql, &params).await.map_err(db_error)?;
        let mut by_id: std::collections::HashMap<String, Vec<InstanceChange>> =
            std::collections::HashMap::new();
        for r in &rows {
            by_id.entry(r.get(0)).or_default().push(InstanceChange {
                attr: r.get(1),
                dataset_id: r.get(2),
                instance_id: r.get(3),
                kind: r.get::<_, Option<&str>>(4).and_then(AttrKind::from_name),
                observed_at: r.get(5),
                created_at: r.get(6),
                modified_at: r.get(7),
                deleted_at: r.get(8),
                value: r.get(9),
                num: r.get(10),
                expires_at: r.get(11),
            });
        }
        Ok(ids
            .iter()
            .map(|id| (id.clone(), by_id.remove(id).unwrap_or_default()))
            .collect())
    }
}
