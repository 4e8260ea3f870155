//! Writes: a batch of read-modify-write steps in one transaction (advisory locks, one read, set-based
//! upsert and delete, history by binary COPY, the change feed), pipelined in two round trips.

use super::statements;
use super::*;

/// The `location` column value of an entity: the EWKB of its only (or default) instance, and
/// whether the attribute has several instances.
pub(super) fn location_of(e: &Entity) -> (Option<Vec<u8>>, bool) {
    let instances: Vec<_> = e
        .attrs
        .get(LOCATION)
        .into_iter()
        .flatten()
        .filter(|a| a.kind == AttrKind::GeoProperty)
        .collect();
    match instances.as_slice() {
        [] => (None, false),
        [one] => (ewkb::from_geojson(&one.value), false),
        _ => (None, true),
    }
}

/// Writes history records with binary COPY, the fastest way into a table that PostgreSQL has (one
/// WAL record per page of rows instead of one per row, no parameter arrays to build and unnest).
pub(super) const COPY_HISTORY: &str = "COPY attribute_instances
    (tenant, entity_id, attr, dataset_id, instance_id, kind, observed_at, created_at, modified_at,
     deleted_at, value, num, location, expires_at)
  FROM STDIN (FORMAT binary)";

/// A statement whose one column is of the PostGIS `geometry` type, prepared (and cached) per
/// connection to learn the type's OID, which differs between databases: binary COPY needs the type
/// of every column.
pub(super) const GEOMETRY_PROBE: &str = "SELECT NULL::geometry";

/// The `value` member of a stored attribute instance (a GeoProperty's geometry).
#[derive(serde::Deserialize)]
pub(super) struct ValueMember {
    value: Value,
}

/// Copies the history records (entity id, record) of one tenant into `attribute_instances` with
/// [`COPY_HISTORY`] (`copy`), on a connection inside a transaction; `probe` is the connection's
/// [`GEOMETRY_PROBE`].
pub(super) async fn copy_history(
    client: &tokio_postgres::Client,
    copy: &tokio_postgres::Statement,
    probe: &tokio_postgres::Statement,
    tenant: &str,
    history: &[(String, InstanceChange)],
) -> Result<u64, tokio_postgres::Error> {
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::JSONB,
        Type::FLOAT8,
        probe.columns()[0].type_().clone(),
        Type::TIMESTAMPTZ,
    ];
    let sink = client.copy_in(copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    for (id, r) in history {
        // The geometry column holds the value of GeoProperty instances.
        let location = match (r.kind, &r.value) {
            (Some(AttrKind::GeoProperty), Some(v)) => v
                .parse::<ValueMember>()
                .and_then(|m| ewkb::from_geojson(&m.value))
                .map(ewkb::Ewkb),
            _ => None,
        };
        let kind = r.kind.map(AttrKind::name);
        writer
            .as_mut()
            .write(&[
                &tenant,
                id,
                &r.attr,
                &r.dataset_id,
                &r.instance_id,
                &kind,
                &r.observed_at,
                &r.created_at,
                &r.modified_at,
                &r.deleted_at,
                &r.value,
                &r.num,
                &location,
                &r.expires_at,
            ])
            .await?;
    }
    writer.finish().await
}

/// The statement that deletes the history records a removal selects from those of entity `$2` of
/// tenant `$1`, and its parameters after those two.
pub(super) fn removal_statement(
    removal: &HistoryRemoval,
) -> (&'static str, Vec<Box<dyn ToSql + Sync + Send>>) {
    match removal.clone() {
        HistoryRemoval::Entity => (
            "DELETE FROM attribute_instances WHERE tenant = $1 AND entity_id = $2",
            Vec::new(),
        ),
        HistoryRemoval::Attribute {
            attr,
            dataset_id: None,
        } => (
            "DELETE FROM attribute_instances WHERE tenant = $1 AND entity_id = $2 AND attr = $3",
            vec![Box::new(attr)],
        ),
        HistoryRemoval::Attribute {
            attr,
            dataset_id: Some(d),
        } => (
            "DELETE FROM attribute_instances WHERE tenant = $1 AND entity_id = $2 AND attr = $3
               AND dataset_id IS NOT DISTINCT FROM $4",
            vec![Box::new(attr), Box::new(d)],
        ),
        HistoryRemoval::Observations(items) => {
            let mut attrs = Vec::with_capacity(items.len());
            let mut datasets = Vec::with_capacity(items.len());
            let mut times = Vec::with_capacity(items.len());
            for (attr, dataset_id, t) in items {
                attrs.push(attr);
                datasets.push(dataset_id);
                times.push(t);
            }
            (
                "DELETE FROM attribute_instances WHERE tenant = $1 AND entity_id = $2 AND EXISTS (
                   SELECT 1 FROM unnest($3::text[], $4::text[], $5::timestamptz[]) AS o(a, d, t)
                   WHERE attr = o.a AND dataset_id IS NOT DISTINCT FROM o.d AND observed_at = o.t)",
                vec![Box::new(attrs), Box::new(datasets), Box::new(times)],
            )
        }
        HistoryRemoval::Instance { attr, instance_id } => (
            "DELETE FROM attribute_instances WHERE tenant = $1 AND entity_id = $2 AND attr = $3
               AND instance_id = $4",
            vec![Box::new(attr), Box::new(instance_id)],
        ),
    }
}

/// Writes entities given as one array per column ($1 tenant): inserts new ones, replaces stored
/// ones (createdAt stays as the entity carries it).
pub(super) const UPSERT_ENTITIES: &str = "INSERT INTO entities
    (tenant, id, types, scopes, attr_names, location, location_multi, created_at, modified_at, body,
     expires_next)
  SELECT $1, e.id, ARRAY(SELECT jsonb_array_elements_text(e.body -> 'types')),
         CASE WHEN e.body ? 'scope' THEN ARRAY(SELECT jsonb_array_elements_text(e.body -> 'scope')) END,
         ARRAY(SELECT jsonb_object_keys(e.body -> 'attrs')),
         ST_GeomFromEWKB(e.geo), e.multi, e.created_at, e.modified_at, e.body, e.expires_next
  FROM unnest($2::text[], $3::bytea[], $4::bool[], $5::timestamptz[], $6::timestamptz[], $7::jsonb[],
              $8::timestamptz[])
    AS e(id, geo, multi, created_at, modified_at, body, expires_next)
  ON CONFLICT (tenant, id) DO UPDATE SET
    types = EXCLUDED.types, scopes = EXCLUDED.scopes, attr_names = EXCLUDED.attr_names,
    location = EXCLUDED.location,
    location_multi = EXCLUDED.location_multi, modified_at = EXCLUDED.modified_at,
    body = EXCLUDED.body, expires_next = EXCLUDED.expires_next";

/// The columns of [`UPSERT_ENTITIES`], one array each.
pub(super) struct EntityColumns<'a> {
    id: Vec<&'a str>,
    geo: Vec<Option<Vec<u8>>>,
    multi: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    modified_at: Vec<DateTime<Utc>>,
    body: Vec<JsonText>,
    expires_next: Vec<Option<DateTime<Utc>>>,
}

/// JSON text goes to PostgreSQL as it is: as `jsonb` (its binary form is a version byte and the
/// text) or as `text` (the change record, which parses the body only when it records it).
/// PostgreSQL parses each written body and record once; the broker serializes each once.
impl ToSql for JsonText {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.text().as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSONB | Type::TEXT)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A `jsonb` column read back as its text, checked to be JSON but not parsed into a tree.
impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<JsonText, Box<dyn std::error::Error + Sync + Send>> {
        let text = match *ty {
            Type::JSONB => raw
                .strip_prefix(&[1])
                .ok_or("a jsonb value of an unknown binary version")?,
            _ => raw,
        };
        Ok(JsonText::from_text(std::str::from_utf8(text)?.to_owned())?)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSONB | Type::JSON)
    }
}

impl<'a> EntityColumns<'a> {
    fn new(entities: impl Iterator<Item = &'a Entity>) -> NgsiResult<EntityColumns<'a>> {
        let mut c = EntityColumns {
            id: Vec::new(),
            geo: Vec::new(),
            multi: Vec::new(),
            created_at: Vec::new(),
            modified_at: Vec::new(),
            body: Vec::new(),
            expires_next: Vec::new(),
        };
        for e in entities {
            let (geo, multi) = location_of(e);
            c.id.push(&e.id);
            c.geo.push(geo);
            c.multi.push(multi);
            c.created_at.push(e.created_at);
            c.modified_at.push(e.modified_at);
            c.body.push(JsonText::of(e));
            c.expires_next.push(e.next_expiry());
        }
        Ok(c)
    }

    fn params<'p>(&'p self, tenant: &'p &str) -> [&'p (dyn ToSql + Sync); 8] {
        [
            tenant,
            &self.id,
            &self.geo,
            &self.multi,
            &self.created_at,
            &self.modified_at,
            &self.body,
            &self.expires_next,
        ]
    }
}

/// Executes `statement` when `needed`; otherwise nothing is sent and no row counts. The write
/// pipeline joins one of these per statement, each sent only when the write has rows for it.
pub(super) async fn execute_if(
    client: &deadpool_postgres::Object,
    needed: bool,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    if !needed {
        return Ok(0);
    }
    client.execute(statement, params).await
}

impl PgStore {
    /// Runs the steps of a batch (see [`crate::store::run_steps`]) in one transaction: the addressed ids
    /// are locked (transaction-level advisory locks in one hash order, so that concurrent batches
    /// cannot deadlock and a create cannot race a create), read in one statement, decided in
    /// Rust, and written set-based: one upsert and one delete over arrays, one insert of every
    /// history record, whatever the number of entities and attributes. Two round trips: BEGIN is
    /// pipelined with the lock and the read, COMMIT with the writes.
    pub async fn modify_many<R: Send + 'static>(
        &self,
        tenant: &str,
        steps: Vec<Step<R>>,
        announce: crate::store::Announce,
    ) -> NgsiResult<Vec<NgsiResult<R>>> {
        let client = self.client().await?;
        let outcome = self
            .modify_in_transaction(&client, tenant, steps, announce)
            .await;
        if outcome.is_err() {
            // A statement failed, or was never sent: the transaction may still be open.
            abandon_transaction(client).await;
        }
        outcome
    }

    /// The body of [`PgStore::modify_many`]; on success the transaction is ended, on error it may
    /// be open (the caller rolls back).
    pub(super) async fn modify_in_transaction<R: Send + 'static>(
        &self,
        client: &deadpool_postgres::Object,
        tenant: &str,
        steps: Vec<Step<R>>,
        announce: crate::store::Announce,
    ) -> NgsiResult<Vec<NgsiResult<R>>> {
        let mut ids: Vec<&str> = steps.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let (lock, read, watch) = try_join3(
            client.prepare_cached(
                "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT
                   hashtextextended($1 || chr(1) || i, 0) AS k FROM unnest($2::text[]) AS i) l
                 ORDER BY k",
            ),
            client.prepare_cached(statements::BODIES_BY_IDS),
            client.prepare_cached("SELECT EXISTS (SELECT 1 FROM subscriptions WHERE tenant = $1)"),
        )
        .await
        .map_err(db_error)?;
        // Statements are pipelined: each future sends its statement when first polled, and the
        // joins poll in order. The read is a statement of its own, so that its snapshot is taken
        // after the locks are held. Whether the tenant has subscriptions decides whether the
        // changes are recorded (see RECORD_SQL).
        let (_, _, rows, watched) = try_join4(
            client.batch_execute("BEGIN"),
            client.execute(&lock, &[&tenant, &ids]),
            client.query(&read, &[&tenant, &ids]),
            client.query_one(&watch, &[&tenant]),
        )
        .await
        .map_err(db_error)?;
        let watched = watched.get::<_, bool>(0) && announce == crate::store::Announce::Changes;
        let mut stored = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            stored.insert(row.get::<_, String>(0), Arc::new(decode(&row, 1)?));
        }
        let planned = run_steps(steps, |id| stored.get(id).cloned());
        if planned.is_empty() {
            client.batch_execute("COMMIT").await.map_err(db_error)?;
            return Ok(planned.results);
        }
        let puts = EntityColumns::new(planned.writes.iter().filter_map(|(_, e)| e.as_deref()))?;
        let deleted: Vec<&str> = planned
            .writes
            .iter()
            .filter(|(_, e)| e.is_none())
            .map(|(id, _)| id.as_str())
            .collect();
        // The change feed's records, when the tenant has subscriptions: every write with its body
        // after, in step order. The body before an entity's first write is read by the statement
        // itself (it is sent first); before a later write of the same entity it is the body the
        // write before left, sent along. The last write of an entity reuses the upsert's text.
        let mut bodies = puts.body.iter();
        let last: std::collections::HashMap<&str, &JsonText> = planned
            .writes
            .iter()
            .filter(|(_, e)| e.is_some())
            .filter_map(|(id, _)| Some((id.as_str(), bodies.next()?)))
            .collect();
        let mut final_change: std::collections::HashMap<&str, usize> = Default::default();
        for (i, c) in planned.changes.iter().enumerate() {
            final_change.insert(c.id.as_str(), i);
        }
        let mut seen: std::collections::HashSet<&str> = Default::default();
        let mut chained = Vec::with_capacity(planned.changes.len());
        let mut before_given: Vec<Option<JsonText>> = Vec::with_capacity(planned.changes.len());
        let mut after_owned: Vec<Option<JsonText>> = Vec::with_capacity(planned.changes.len());
        for (i, c) in planned.changes.iter().enumerate() {
            let later = !seen.insert(c.id.as_str());
            chained.push(later);
            before_given.push(
                later
                    .then(|| c.before.as_deref().map(JsonText::of))
                    .flatten(),
            );
            let intermediate = final_change.get(c.id.as_str()) != Some(&i);
            after_owned.push(
                intermediate
                    .then(|| c.after.as_deref().map(JsonText::of))
                    .flatten(),
            );
        }
        let changed: Vec<&str> = planned.changes.iter().map(|c| c.id.as_str()).collect();
        let after: Vec<Option<&JsonText>> = planned
            .changes
            .iter()
            .zip(&after_owned)
            .map(|(c, owned)| match owned {
                Some(text) => Some(text),
                None if c.after.is_some() => last.get(c.id.as_str()).copied(),
                None => None,
            })
            .collect();
        // Every statement is prepared before any is sent: a statement sent while another is still
        // being prepared would go out of order (COMMIT before the COPY).
        let (record, upsert, add_tenant, delete, copy, probe) = try_join(
            try_join3(
                client.prepare_cached(RECORD_SQL),
                client.prepare_cached(UPSERT_ENTITIES),
                client.prepare_cached(
                    "INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING",
                ),
            ),
            try_join3(
                client.prepare_cached("DELETE FROM entities WHERE tenant = $1 AND id = ANY($2)"),
                client.prepare_cached(COPY_HISTORY),
                client.prepare_cached(GEOMETRY_PROBE),
            ),
        )
        .await
        .map(|((r, u, t), (d, c, p))| (r, u, t, d, c, p))
        .map_err(db_error)?;
        let removals: Vec<_> = planned
            .removals
            .iter()
            .map(|r| removal_statement(&r.which))
            .collect();
        let rollups = super::rollups::RollupColumns::of(&planned.history);
        let upsert_rollups = client
            .prepare_cached(super::rollups::UPSERT_ROLLUPS)
            .await
            .map_err(db_error)?;
        let removal_statements =
            try_join_all(removals.iter().map(|(sql, _)| client.prepare_cached(sql)))
                .await
                .map_err(db_error)?;
        // Every statement of the write, then COMMIT, pipelined in this order. A statement that
        // fails in the database aborts the transaction (COMMIT then rolls back); one that fails
        // before it is sent (encoding) ends the join before COMMIT is sent.
        let change_params: [&(dyn ToSql + Sync); 5] =
            [&tenant, &changed, &after, &before_given, &chained];
        let new_tenant = !puts.id.is_empty() && !self.knows_tenant(tenant);
        let tenant_param: [&(dyn ToSql + Sync); 1] = [&tenant];
        let delete_params: [&(dyn ToSql + Sync); 2] = [&tenant, &deleted];
        let put_params = puts.params(&tenant);
        let record_changes = execute_if(
            client,
            watched && !changed.is_empty(),
            &record,
            &change_params,
        );
        let write = execute_if(client, !puts.id.is_empty(), &upsert, &put_params);
        let register_tenant = execute_if(client, new_tenant, &add_tenant, &tenant_param);
        let delete = execute_if(client, !deleted.is_empty(), &delete, &delete_params);
        // Before the new records are copied in, so that a removal never takes one of them.
        let remove_history = try_join_all(
            planned
                .removals
                .iter()
                .zip(&removals)
                .zip(&removal_statements)
                .map(|((r, (_, args)), statement)| {
                    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &r.id];
                    params.extend(args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)));
                    async move { client.execute(statement, &params).await }
                }),
        );
        let record_history = async {
            if planned.history.is_empty() {
                return Ok(0);
            }
            copy_history(client, &copy, &probe, tenant, &planned.history).await
        };
        // After the copy: the removals' trigger computes the periods that lost records from
        // the records left, and the new records' summaries are then merged in.
        let rollup_params = rollups.params(&tenant);
        let merge_rollups =
            execute_if(client, !rollups.is_empty(), &upsert_rollups, &rollup_params);
        let (_, (_, removed, _, _), _) = try_join3(
            try_join3(record_changes, write, register_tenant),
            try_join4(delete, remove_history, record_history, merge_rollups),
            client.batch_execute("COMMIT"),
        )
        .await
        .map_err(db_error)?;
        if new_tenant {
            self.remember_tenant(tenant);
        }
        crate::telemetry::metrics::history_rows(planned.history.len());
        let removed: Vec<usize> = removed.into_iter().map(|n| n as usize).collect();
        Ok(planned.settle(&removed))
    }
}
