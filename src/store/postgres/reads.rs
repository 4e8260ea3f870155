//! Reads: entities by id, query pages (decided in SQL when the translation is exact, by the
//! evaluator otherwise), matching ids, and the entity cache by row version.

use super::statements::{self, where_clause, PageColumns, DUE_PROBE};
use super::*;

/// What one attempt of a query found: a page and the matches seen, or that the tenant has
/// entities with something expired that SQL would still see (they are reaped, and the query
/// runs again).
pub(super) enum Paged {
    Page(Vec<Arc<Entity>>, usize),
    Due,
}

/// Prepared statements kept per connection before the cache is emptied (query texts vary with the
/// shape of the query, not with its values, but shapes are open-ended).
pub(super) const STATEMENT_CACHE_LIMIT: usize = 512;

impl PgStore {
    /// The entities of one tenant with these ids, in one statement (reads by id are combined,
    /// see `store::combine`); ids not found are absent.
    pub async fn get_many(
        &self,
        tenant: &str,
        ids: &[&str],
    ) -> NgsiResult<std::collections::HashMap<String, Arc<Entity>>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(statements::BODIES_BY_IDS)
            .await
            .map_err(db_error)?;
        let rows = client
            .query(&statement, &[&tenant, &ids])
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| Ok((r.get::<_, String>(0), Arc::new(decode(r, 1)?))))
            .collect()
    }

    /// A page of the entities matching `query`, in id order, and the number of matches seen.
    /// What has expired is never seen: the evaluator decides on entities as they stand now, and
    /// a query decided in SQL first has the tenant's due entities reaped (see [`Paged::Due`]).
    pub async fn query(
        &self,
        tenant: &str,
        query: &EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> NgsiResult<(Vec<Arc<Entity>>, usize)> {
        loop {
            match self.query_once(tenant, query, offset, limit, count).await? {
                Paged::Page(page, seen) => return Ok((page, seen)),
                Paged::Due => self.reap_tenant(tenant, Utc::now()).await?,
            }
        }
    }

    /// One attempt of [`PgStore::query`].
    pub(super) async fn query_once(
        &self,
        tenant: &str,
        query: &EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> NgsiResult<Paged> {
        let t = sql::translate(query);
        let now = Utc::now();
        let tenant = tenant.to_string();
        let (where_sql, params) = where_clause(&tenant, &t);
        let mut client = self.client().await?;
        // Entity queries are sent typed (unnamed statements, one round trip), so PostgreSQL plans
        // each with its values. A prepared statement would switch to a generic plan after five
        // executions; such a plan cannot see how selective the jsonpath and array tests are, and
        // scans the whole tenant (seconds instead of a millisecond, holding a pooled connection).
        if query.order.is_some() {
            // Another order than ids: the SQL selects (exactly or a superset), the evaluator decides
            // and the one comparator both stores share orders every match before paging.
            if t.exact && tenant_due(&client, &tenant, now).await? {
                return Ok(Paged::Due);
            }
            let sql = statements::candidates(&where_sql);
            let rows = client.query_typed(&sql, &params).await.map_err(db_error)?;
            let mut matches = Vec::with_capacity(rows.len());
            for row in rows {
                let Some(e) = live(decode(&row, 0)?, now) else {
                    continue;
                };
                if t.exact || query.matches(&e) {
                    matches.push(e);
                }
            }
            let (page, seen) = query.ordered_page(matches, offset, limit);
            return Ok(Paged::Page(page, seen));
        }
        if t.exact {
            let (rows_wanted, skip) = (if count { limit } else { limit + 1 } as i64, offset as i64);
            let mut page_params = params.clone();
            page_params.extend([
                (&rows_wanted as &(dyn ToSql + Sync), Type::INT8),
                (&skip, Type::INT8),
            ]);
            let page_sql = |columns| statements::page(&where_sql, columns, params.len());
            let count_sql = statements::count(&where_sql);
            // The count, and whether anything in the tenant is due (then SQL cannot decide until
            // it is reaped), sent with the page.
            let due_params: [(&(dyn ToSql + Sync), Type); 2] =
                [(&tenant, Type::TEXT), (&now, Type::TIMESTAMPTZ)];
            let counted = || async {
                let due = client.query_typed_one(DUE_PROBE, &due_params);
                if count {
                    let (row, due) =
                        try_join(client.query_typed_one(&count_sql, &params), due).await?;
                    Ok((Some(row.get::<_, i64>(0) as usize), due.get::<_, bool>(0)))
                } else {
                    Ok((None, due.await?.get::<_, bool>(0)))
                }
            };
            // With the cache, the page is selected as ids and row versions; the bodies the cache
            // lacks are read by id. A body found changed since the page was selected may no
            // longer match, so the page is then selected again, with the bodies.
            let with_bodies = page_sql(PageColumns::Bodies);
            let cached = if self.cache.enabled() {
                let versions = page_sql(PageColumns::Versions);
                // Both sent at once on the connection.
                let (rows, counted) =
                    try_join(client.query_typed(&versions, &page_params), counted())
                        .await
                        .map_err(db_error)?;
                let page = self.cached_page(&client, &tenant, &rows).await?;
                page.map(|page| (page, counted))
            } else {
                None
            };
            let (mut page, counted) = match cached {
                Some(found) => found,
                None => {
                    let (rows, counted) =
                        try_join(client.query_typed(&with_bodies, &page_params), counted())
                            .await
                            .map_err(db_error)?;
                    let page = rows
                        .iter()
                        .map(|row| self.remember(&tenant, row))
                        .collect::<NgsiResult<Vec<_>>>()?;
                    (page, counted)
                }
            };
            let (counted, due) = counted;
            if due {
                return Ok(Paged::Due);
            }
            let seen = counted.unwrap_or(offset + page.len());
            page.truncate(limit);
            return Ok(Paged::Page(page, seen));
        }
        // A superset: the evaluator decides, reading the candidates in chunks through a portal
        // and stopping once the page (and one more match) is found, unless counting.
        // A portal needs a prepared statement: this one is planned with its values too.
        if client.statement_cache.size() > STATEMENT_CACHE_LIMIT {
            client.statement_cache.clear();
        }
        let tx = client.transaction().await.map_err(db_error)?;
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(p, _)| *p).collect();
        let (_, statement) = try_join(
            tx.batch_execute(statements::CUSTOM_PLANS),
            tx.prepare_typed_cached(&statements::candidates(&where_sql), &types),
        )
        .await
        .map_err(db_error)?;
        let portal = tx.bind(&statement, &values).await.map_err(db_error)?;
        let chunk = statements::candidate_chunk(offset, limit, count);
        let mut page = Vec::new();
        let mut seen = 0usize;
        loop {
            let rows = tx
                .query_portal(&portal, chunk as i32)
                .await
                .map_err(db_error)?;
            let last_chunk = rows.len() < chunk;
            for row in rows {
                let Some(e) = live(decode(&row, 0)?, now) else {
                    continue;
                };
                if !query.matches(&e) {
                    continue;
                }
                if seen >= offset && page.len() < limit {
                    page.push(e);
                }
                seen += 1;
                if !count && seen > offset + limit {
                    return Ok(Paged::Page(page, seen));
                }
            }
            if last_chunk {
                return Ok(Paged::Page(page, seen));
            }
        }
    }

    /// The ids of at most `limit` entities matching `query` whose id sorts after `after`, in one
    /// statement that reads ids only when the translation is exact (bodies for the evaluator
    /// otherwise); see [`crate::store::Store::matching_ids`].
    pub async fn matching_ids(
        &self,
        tenant: &str,
        query: &EntityQuery,
        after: Option<&str>,
        limit: usize,
    ) -> NgsiResult<crate::store::IdPage> {
        let t = sql::translate(query);
        let now = Utc::now();
        if t.exact && tenant_due(&*self.client().await?, tenant, now).await? {
            self.reap_tenant(tenant, now).await?;
        }
        let (tenant, after, rows_wanted) =
            (tenant.to_string(), after.map(str::to_string), limit as i64);
        let (mut where_sql, mut params) = where_clause(&tenant, &t);
        if let Some(after) = &after {
            params.push((after, Type::TEXT));
            where_sql.push_str(&format!(" AND id > ${}", params.len()));
        }
        params.push((&rows_wanted, Type::INT8));
        let columns = if t.exact { "id" } else { "id, body" };
        let sql = format!(
            "SELECT {columns} FROM entities WHERE {where_sql} ORDER BY id LIMIT ${}",
            params.len()
        );
        let client = self.client().await?;
        let rows = client.query_typed(&sql, &params).await.map_err(db_error)?;
        let next = match rows.last() {
            Some(last) if rows.len() == limit => Some(last.get::<_, String>(0)),
            _ => None,
        };
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let hit = t.exact || live(decode(row, 1)?, now).is_some_and(|e| query.matches(&e));
            if hit {
                ids.push(row.get(0));
            }
        }
        Ok(crate::store::IdPage { ids, next })
    }

    /// The entities of a page selected as (id, version) rows, from the cache, reading the ones
    /// it lacks by id in one statement. None when one of them has been written (or deleted) since
    /// the page was selected.
    pub(super) async fn cached_page(
        &self,
        client: &deadpool_postgres::Object,
        tenant: &str,
        rows: &[tokio_postgres::Row],
    ) -> NgsiResult<Option<Vec<Arc<Entity>>>> {
        let mut page: Vec<(String, cache::Version, Option<Arc<Entity>>)> = rows
            .iter()
            .map(|row| {
                let (id, version): (String, _) = (row.get(0), cache::Version::of(row, 1));
                let cached = self.cache.get(tenant, &id, version);
                (id, version, cached)
            })
            .collect();
        let missing: Vec<&str> = page
            .iter()
            .filter(|(_, _, e)| e.is_none())
            .map(|(id, _, _)| id.as_str())
            .collect();
        if !missing.is_empty() {
            let read = client
                .prepare_cached(statements::VERSIONED_BODIES_BY_IDS)
                .await
                .map_err(db_error)?;
            let found = client
                .query(&read, &[&tenant, &missing])
                .await
                .map_err(db_error)?;
            let mut found: std::collections::HashMap<String, (cache::Version, Arc<Entity>)> = found
                .iter()
                .map(|row| {
                    let e = self.remember(tenant, row)?;
                    Ok((row.get(0), (cache::Version::of(row, 1), e)))
                })
                .collect::<NgsiResult<_>>()?;
            for (id, version, entity) in &mut page {
                if entity.is_none() {
                    match found.remove(id.as_str()) {
                        Some((v, e)) if v == *version => *entity = Some(e),
                        _ => return Ok(None),
                    }
                }
            }
        }
        Ok(Some(page.into_iter().filter_map(|(_, _, e)| e).collect()))
    }

    /// Decodes an (id, version, body) row and keeps the entity in the cache.
    pub(super) fn remember(
        &self,
        tenant: &str,
        row: &tokio_postgres::Row,
    ) -> NgsiResult<Arc<Entity>> {
        let entity = Arc::new(decode(row, 3)?);
        self.cache.put(
            tenant,
            &entity.id,
            cache::Version::of(row, 1),
            entity.clone(),
        );
        Ok(entity)
    }

    /// Every entity of the tenant in id order.
    pub async fn entities(&self, tenant: &str) -> NgsiResult<Vec<Arc<Entity>>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT body FROM entities WHERE tenant = $1 ORDER BY id",
                &[&tenant],
            )
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|r| decode(&r, 0).map(Arc::new))
            .collect()
    }
}
