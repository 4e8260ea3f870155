//! Records of collections (subscriptions, registrations, ...) as JSON rows, announced to every
//! instance at commit.

use super::*;

/// Tells every instance (at commit) that a record of a collection changed: the payload on the
/// collection's channel is `[tenant, id]`.
pub(super) async fn announce(
    tx: &deadpool_postgres::Transaction<'_>,
    collection: Collection,
    tenant: &str,
    id: &str,
) -> NgsiResult<()> {
    let payload = serde_json::json!([tenant, id]).to_string();
    tx.execute(
        "SELECT pg_notify($2, $1)",
        &[&payload, &collection.channel()],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

impl PgStore {
    /// Stores a record of a collection (with `create`, only if the id is new: false otherwise)
    /// and tells every instance.
    pub async fn put_record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
        record: &Value,
        create: bool,
    ) -> NgsiResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let table = collection.table();
        let sql = if create {
            format!(
                "INSERT INTO {table} (tenant, id, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            )
        } else {
            format!(
                "INSERT INTO {table} (tenant, id, record) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant, id) DO UPDATE SET record = EXCLUDED.record"
            )
        };
        let written = tx
            .execute(&sql, &[&tenant, &id, record])
            .await
            .map_err(db_error)?;
        if written == 0 {
            return Ok(false);
        }
        announce(&tx, collection, tenant, id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Replaces one top-level member of each of several records, `(tenant, id, value)`, in one
    /// statement (no announcement: used for delivery statistics, which only the delivering
    /// instance writes and readers read from the row). The rows are locked in key order, so that
    /// two such updates never wait on each other in a cycle.
    pub async fn save_record_members(
        &self,
        collection: Collection,
        member: &'static str,
        mut values: Vec<(String, String, Value)>,
    ) -> NgsiResult<()> {
        values.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let tenants: Vec<&str> = values.iter().map(|(t, _, _)| t.as_str()).collect();
        let ids: Vec<&str> = values.iter().map(|(_, i, _)| i.as_str()).collect();
        let bodies: Vec<&Value> = values.iter().map(|(_, _, v)| v).collect();
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {} r SET record = jsonb_set(r.record, ARRAY[$4::text], u.v)
             FROM (SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[]) WITH ORDINALITY
                   AS u(t, i, v, n) ORDER BY n) u
             WHERE r.tenant = u.t AND r.id = u.i",
            collection.table()
        );
        client
            .execute(&sql, &[&tenants, &ids, &bodies, &member])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Removes a record of a collection and tells every instance; false when there was none.
    pub async fn delete_record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let sql = format!(
            "DELETE FROM {} WHERE tenant = $1 AND id = $2",
            collection.table()
        );
        let removed = tx.execute(&sql, &[&tenant, &id]).await.map_err(db_error)?;
        if collection == Collection::Subscriptions {
            // A subscription made again with this id starts afresh, not from this watermark.
            tx.execute(
                "DELETE FROM subscription_watermarks WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(db_error)?;
        }
        announce(&tx, collection, tenant, id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(removed > 0)
    }

    /// One record of a collection.
    pub async fn record(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
    ) -> NgsiResult<Option<Value>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT record FROM {} WHERE tenant = $1 AND id = $2",
            collection.table()
        );
        let row = client
            .query_opt(&sql, &[&tenant, &id])
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every record of a collection, of every tenant, as (tenant, record), in tenant and id order.
    pub async fn records(&self, collection: Collection) -> NgsiResult<Vec<(String, Value)>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT tenant, record FROM {} ORDER BY tenant, id",
            collection.table()
        );
        let rows = client.query(&sql, &[]).await.map_err(db_error)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
