//! Transient entities (4.22) on PostgreSQL: what is due by the `expires_next` column, and its
//! removal from the current state (see `Store::reap`).

use super::statements::DUE_PROBE;
use super::*;

/// Whether the tenant has stored entities with something expired at `now` (see [`DUE_PROBE`]).
pub(super) async fn tenant_due(
    client: &tokio_postgres::Client,
    tenant: &str,
    now: DateTime<Utc>,
) -> NgsiResult<bool> {
    let row = client
        .query_one(DUE_PROBE, &[&tenant, &now])
        .await
        .map_err(db_error)?;
    Ok(row.get(0))
}

/// The entities one reaping transaction takes on.
pub(super) const REAP_CHUNK: usize = 500;

impl PgStore {
    /// The tenants and ids of at most `limit` entities (of `tenant`, or of every tenant) with
    /// something expired at `now`, earliest first (see [`crate::store::Store::reap`]).
    pub async fn due(
        &self,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> NgsiResult<Vec<(String, Vec<String>)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant, id FROM entities
                 WHERE expires_next <= $1 AND ($2::text IS NULL OR tenant = $2)
                 ORDER BY expires_next LIMIT $3",
                &[&now, &tenant, &(limit as i64)],
            )
            .await
            .map_err(db_error)?;
        let mut by_tenant: indexmap::IndexMap<String, Vec<String>> = indexmap::IndexMap::new();
        for row in rows {
            by_tenant.entry(row.get(0)).or_default().push(row.get(1));
        }
        Ok(by_tenant.into_iter().collect())
    }

    /// Removes what has expired from the stored entities of a tenant (see
    /// [`crate::store::Store::reap`]), so that a query decided in SQL sees only what stands now.
    pub(super) async fn reap_tenant(&self, tenant: &str, now: DateTime<Utc>) -> NgsiResult<()> {
        loop {
            let due = self.due(Some(tenant), now, REAP_CHUNK).await?;
            let Some((_, ids)) = due.into_iter().next() else {
                return Ok(());
            };
            let last = ids.len() < REAP_CHUNK;
            self.modify_many(
                tenant,
                crate::store::reap_steps(ids),
                crate::store::Announce::Nothing,
            )
            .await?;
            if last {
                return Ok(());
            }
        }
    }
}
