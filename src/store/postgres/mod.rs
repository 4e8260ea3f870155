//! The PostgreSQL + PostGIS store: entities in one table per database with a tenant column, the
//! `location` geometry in a GiST-indexed column, types and scopes in GIN-indexed arrays and the
//! expanded entity as jsonb. Every write, of one entity or of a batch, is one transaction (lock the
//! ids, read, decide, write set-based).

pub mod cache;
pub mod ewkb;
pub mod listen;
mod maps;
pub mod migrate;
pub mod sql;

use super::aggregate::{AggrMethod, AggregateQuery, Bucket};
use super::changes::{ChangeFeed, RECORD_SQL};
use super::history::{HistoryQuery, HistoryRemoval, InstanceChange, TimeProperty};
use super::json_text::JsonText;
use super::{run_steps, Collection, Step};
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::model::{expiry, AttrKind, Entity};
use crate::query::geo::LOCATION;
use crate::query::EntityQuery;
use crate::retry::Backoff;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::{try_join, try_join3, try_join4, try_join_all};
use serde_json::Value;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::NoTls;

/// Entities in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    /// Where the listener connects (its own connection, outside the pool).
    config: Arc<tokio_postgres::Config>,
    /// Where the listener delivers committed changes.
    feed: ChangeFeed,
    /// Alive as long as the store: the listener ends (and its locks go) when the store is dropped.
    alive: Arc<()>,
    /// Claim requests to the listener (set by [`Self::listen`]).
    claims: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<listen::ClaimRequest>>,
    /// Set once the schema is migrated; until then every operation is 503.
    migrated: Arc<AtomicBool>,
    /// Tenants this instance has seen in the `tenants` table (rows are never removed), so that a
    /// write to a known tenant does not insert it again.
    known_tenants: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Decoded entities by row version, for query pages.
    cache: cache::EntityCache,
}

/// Applies migrations, retrying with backoff ([`Backoff::reconnect`]) while the database is
/// unreachable; gives up after `max_attempts` when given.
async fn migrate_with_retry(pool: &Pool, max_attempts: Option<u32>) -> Result<(), String> {
    let mut backoff = Backoff::reconnect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match migrate::run(pool).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "database migrations applied");
                }
                return Ok(());
            }
            Err(e) if max_attempts.is_none_or(|max| attempt < max) => {
                let delay = backoff.next_delay();
                tracing::warn!(attempt, error = %e, "PostgreSQL not ready; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(format!("PostgreSQL stayed unreachable: {e}")),
        }
    }
}

/// An error with its causes ("error connecting to server: Connection refused ...").
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Connection failures are the database being away (503); anything else is a bug (500).
fn db_error(e: tokio_postgres::Error) -> NgsiError {
    if e.is_closed() || e.as_db_error().is_none() {
        NgsiError::new(
            ErrorKind::ServiceUnavailable,
            format!("the database is unavailable: {}", with_causes(&e)),
        )
    } else {
        NgsiError::internal(format!(
            "the database refused a statement: {}",
            with_causes(&e)
        ))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> NgsiError {
    NgsiError::new(
        ErrorKind::ServiceUnavailable,
        format!("the database is unavailable: {}", with_causes(&e)),
    )
}

/// Ends whatever transaction a failed write left open on this connection before it goes back to
/// the pool; a connection where even that fails is dropped from the pool instead.
async fn abandon_transaction(client: deadpool_postgres::Object) {
    if client.batch_execute("ROLLBACK").await.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
}

/// The entity in column `col` of a row (jsonb deserialized straight into the model).
fn decode(row: &tokio_postgres::Row, col: usize) -> NgsiResult<Entity> {
    row.try_get::<_, Json<Entity>>(col)
        .map(|Json(e)| e)
        .map_err(|e| NgsiError::internal(format!("a stored entity does not decode: {e}")))
}

/// A stored entity as it stands at `now` (see [`expiry::live`]).
fn live(e: Entity, now: DateTime<Utc>) -> Option<Arc<Entity>> {
    expiry::live(&Arc::new(e), now)
}

/// Whether the tenant has stored entities with something expired at `now` (see [`DUE_PROBE`]).
async fn tenant_due(
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

/// What one attempt of a query found: a page and the matches seen, or that the tenant has
/// entities with something expired that SQL would still see (they are reaped, and the query
/// runs again).
enum Paged {
    Page(Vec<Arc<Entity>>, usize),
    Due,
}

/// The `location` column value of an entity: the EWKB of its only (or default) instance, and
/// whether the attribute has several instances.
fn location_of(e: &Entity) -> (Option<Vec<u8>>, bool) {
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

/// The column of a time property.
fn time_column(tp: TimeProperty) -> &'static str {
    match tp {
        TimeProperty::ObservedAt => "observed_at",
        TimeProperty::CreatedAt => "created_at",
        TimeProperty::ModifiedAt => "modified_at",
        TimeProperty::DeletedAt => "deleted_at",
    }
}

/// The conditions of a history read of the entities `$2` in tenant `$1` by time property and
/// bounds (bound values are pushed onto `params`).
fn time_conditions<'a>(
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

/// Writes history records with binary COPY, the fastest way into a table that PostgreSQL has (one
/// WAL record per page of rows instead of one per row, no parameter arrays to build and unnest).
const COPY_HISTORY: &str = "COPY attribute_instances
    (tenant, entity_id, attr, dataset_id, instance_id, kind, observed_at, created_at, modified_at,
     deleted_at, value, num, location, expires_at)
  FROM STDIN (FORMAT binary)";

/// A statement whose one column is of the PostGIS `geometry` type, prepared (and cached) per
/// connection to learn the type's OID, which differs between databases: binary COPY needs the type
/// of every column.
const GEOMETRY_PROBE: &str = "SELECT NULL::geometry";

/// The `value` member of a stored attribute instance (a GeoProperty's geometry).
#[derive(serde::Deserialize)]
struct ValueMember {
    value: Value,
}

/// Copies the history records (entity id, record) of one tenant into `attribute_instances` with
/// [`COPY_HISTORY`] (`copy`), on a connection inside a transaction; `probe` is the connection's
/// [`GEOMETRY_PROBE`].
async fn copy_history(
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
fn removal_statement(
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

/// The row version of an entity (see [`cache::Version`]): the transaction that wrote it, as a
/// bigint, and the modification time; two columns.
const VERSION: &str = "xmin::text::bigint, modified_at";

/// The entities one reaping transaction takes on.
const REAP_CHUNK: usize = 500;

/// Whether a tenant has stored entities with something expired at `$2` (the reaper has not
/// removed it yet); `$1` the tenant.
const DUE_PROBE: &str =
    "SELECT EXISTS (SELECT 1 FROM entities WHERE expires_next <= $2 AND tenant = $1)";

/// Prepared statements kept per connection before the cache is emptied (query texts vary with the
/// shape of the query, not with its values, but shapes are open-ended).
const STATEMENT_CACHE_LIMIT: usize = 512;

/// Writes entities given as one array per column ($1 tenant): inserts new ones, replaces stored
/// ones (createdAt stays as the entity carries it).
const UPSERT_ENTITIES: &str = "INSERT INTO entities
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
struct EntityColumns<'a> {
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

/// The WHERE clause of a translated query over the entities of `tenant` (`$1`), and the
/// parameters it is sent with, typed.
fn where_clause<'a>(
    tenant: &'a String,
    t: &'a sql::Translation,
) -> (String, Vec<(&'a (dyn ToSql + Sync), Type)>) {
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(tenant, Type::TEXT)];
    params.extend(
        t.params
            .iter()
            .map(|(p, ty)| (p.as_ref() as &(dyn ToSql + Sync), ty.clone())),
    );
    let mut where_sql = String::from("tenant = $1");
    for c in &t.conditions {
        where_sql.push_str(" AND ");
        where_sql.push_str(c);
    }
    (where_sql, params)
}

/// Executes `statement` when `needed`; otherwise nothing is sent and no row counts. The write
/// pipeline joins one of these per statement, each sent only when the write has rows for it.
async fn execute_if(
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
    /// Connects and migrates, retrying with backoff (a log line per attempt) for two to four
    /// minutes while the database is unreachable; used where the caller needs the database now.
    pub async fn connect(url: &str, max_size: usize) -> Result<PgStore, String> {
        let store = Self::with_pool(url, max_size)?;
        migrate_with_retry(&store.pool, Some(30)).await?;
        store.migrated.store(true, Ordering::Release);
        Ok(store)
    }

    /// Returns at once and connects in the background, retrying forever: the HTTP server can
    /// answer /health (and /ready with 503) while the database is still away at start-up.
    pub fn connect_in_background(url: &str, max_size: usize) -> Result<PgStore, String> {
        let store = Self::with_pool(url, max_size)?;
        let (pool, migrated) = (store.pool.clone(), store.migrated.clone());
        tokio::spawn(async move {
            if migrate_with_retry(&pool, None).await.is_ok() {
                migrated.store(true, Ordering::Release);
            }
        });
        Ok(store)
    }

    fn with_pool(url: &str, max_size: usize) -> Result<PgStore, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("invalid database URL: {e}"))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| format!("cannot build the connection pool: {e}"))?;
        Ok(PgStore {
            pool,
            config: Arc::new(config),
            feed: ChangeFeed::default(),
            alive: Arc::new(()),
            claims: std::sync::OnceLock::new(),
            migrated: Arc::new(AtomicBool::new(false)),
            known_tenants: Default::default(),
            cache: cache::EntityCache::new(cache::DEFAULT_CAPACITY),
        })
    }

    /// The same store keeping at most `capacity` decoded entities (0: none), see [`cache`].
    pub fn with_entity_cache(mut self, capacity: usize) -> PgStore {
        self.cache = cache::EntityCache::new(capacity);
        self
    }

    /// A pooled connection, or 503 while the database is away or not yet migrated.
    async fn client(&self) -> NgsiResult<deadpool_postgres::Object> {
        if !self.migrated.load(Ordering::Acquire) {
            return Err(NgsiError::new(
                ErrorKind::ServiceUnavailable,
                "the database has not been reached yet since start-up; retrying",
            ));
        }
        self.pool.get().await.map_err(pool_error)
    }

    /// The connection pool, shared with writers outside the store (the audit table).
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// The connection pool's size, idle connections and waiting callers (for /metrics).
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// Whether the database answers a trivial query (for /ready).
    pub async fn ready(&self) -> bool {
        match self.client().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// The entities of one tenant with these ids, in one statement (reads by id are combined,
    /// see `store::combine`); ids not found are absent.
    pub async fn get_many(
        &self,
        tenant: &str,
        ids: &[&str],
    ) -> NgsiResult<std::collections::HashMap<String, Arc<Entity>>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT id, body FROM entities WHERE tenant = $1 AND id = ANY($2)")
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

    /// Whether the tenant exists.
    pub async fn tenant_exists(&self, tenant: &str) -> NgsiResult<bool> {
        if self.knows_tenant(tenant) {
            return Ok(true);
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT 1 FROM tenants WHERE tenant = $1")
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&tenant])
            .await
            .map_err(db_error)?;
        if row.is_some() {
            self.remember_tenant(tenant);
        }
        Ok(row.is_some())
    }

    /// Runs the steps of a batch (see [`super::run_steps`]) in one transaction: the addressed ids
    /// are locked (transaction-level advisory locks in one hash order, so that concurrent batches
    /// cannot deadlock and a create cannot race a create), read in one statement, decided in
    /// Rust, and written set-based: one upsert and one delete over arrays, one insert of every
    /// history record, whatever the number of entities and attributes. Two round trips: BEGIN is
    /// pipelined with the lock and the read, COMMIT with the writes.
    pub async fn modify_many<R: Send + 'static>(
        &self,
        tenant: &str,
        steps: Vec<Step<R>>,
        announce: super::Announce,
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
    async fn modify_in_transaction<R: Send + 'static>(
        &self,
        client: &deadpool_postgres::Object,
        tenant: &str,
        steps: Vec<Step<R>>,
        announce: super::Announce,
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
            client
                .prepare_cached("SELECT id, body FROM entities WHERE tenant = $1 AND id = ANY($2)"),
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
        let watched = watched.get::<_, bool>(0) && announce == super::Announce::Changes;
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
        // The change feed's records, when the tenant has subscriptions: every written id with its
        // body after (the bodies before are read by the statement itself, which is sent first).
        let mut bodies = puts.body.iter();
        let (changed, after): (Vec<&str>, Vec<Option<&JsonText>>) = planned
            .writes
            .iter()
            .map(|(id, e)| (id.as_str(), e.as_ref().and_then(|_| bodies.next())))
            .unzip();
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
        let removal_statements =
            try_join_all(removals.iter().map(|(sql, _)| client.prepare_cached(sql)))
                .await
                .map_err(db_error)?;
        // Every statement of the write, then COMMIT, pipelined in this order. A statement that
        // fails in the database aborts the transaction (COMMIT then rolls back); one that fails
        // before it is sent (encoding) ends the join before COMMIT is sent.
        let change_params: [&(dyn ToSql + Sync); 3] = [&tenant, &changed, &after];
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
        let (_, (_, removed, _), _) = try_join3(
            try_join3(record_changes, write, register_tenant),
            try_join3(delete, remove_history, record_history),
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

    /// The tenants and ids of at most `limit` entities (of `tenant`, or of every tenant) with
    /// something expired at `now`, earliest first (see [`super::Store::reap`]).
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
    /// [`super::Store::reap`]), so that a query decided in SQL sees only what stands now.
    async fn reap_tenant(&self, tenant: &str, now: DateTime<Utc>) -> NgsiResult<()> {
        loop {
            let due = self.due(Some(tenant), now, REAP_CHUNK).await?;
            let Some((_, ids)) = due.into_iter().next() else {
                return Ok(());
            };
            let last = ids.len() < REAP_CHUNK;
            self.modify_many(tenant, super::reap_steps(ids), super::Announce::Nothing)
                .await?;
            if last {
                return Ok(());
            }
        }
    }

    /// Whether the tenant is known to be in the `tenants` table.
    fn knows_tenant(&self, tenant: &str) -> bool {
        self.known_tenants
            .read()
            .is_ok_and(|known| known.contains(tenant))
    }

    /// Notes a tenant found in, or committed to, the `tenants` table.
    fn remember_tenant(&self, tenant: &str) {
        if let Ok(mut known) = self.known_tenants.write() {
            known.insert(tenant.to_string());
        }
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
    async fn query_once(
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
            let sql = format!("SELECT body FROM entities WHERE {where_sql} ORDER BY id");
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
            let page_sql = |columns: &str| {
                format!(
                    "SELECT {columns} FROM entities WHERE {where_sql} ORDER BY id LIMIT ${} OFFSET ${}",
                    params.len() + 1,
                    params.len() + 2
                )
            };
            let count_sql = format!("SELECT count(*) FROM entities WHERE {where_sql}");
            // The count, and whether anything in the tenant is due (then SQL cannot decide until
            // it is reaped), sent with the page.
            let due_probe = client.prepare_cached(DUE_PROBE).await.map_err(db_error)?;
            let due_params: [&(dyn ToSql + Sync); 2] = [&tenant, &now];
            let counted = || async {
                let due = client.query_one(&due_probe, &due_params);
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
            let with_bodies = page_sql(&format!("id, {VERSION}, body"));
            let cached = if self.cache.enabled() {
                let versions = page_sql(&format!("id, {VERSION}"));
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
            tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan"),
            tx.prepare_typed_cached(
                &format!("SELECT body FROM entities WHERE {where_sql} ORDER BY id"),
                &types,
            ),
        )
        .await
        .map_err(db_error)?;
        let portal = tx.bind(&statement, &values).await.map_err(db_error)?;
        let chunk = if count {
            1000
        } else {
            (offset + limit + 1).clamp(50, 1000)
        };
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
    /// otherwise); see [`super::Store::matching_ids`].
    pub async fn matching_ids(
        &self,
        tenant: &str,
        query: &EntityQuery,
        after: Option<&str>,
        limit: usize,
    ) -> NgsiResult<super::IdPage> {
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
        Ok(super::IdPage { ids, next })
    }

    /// The entities of a page selected as (id, version) rows, from the cache, reading the ones
    /// it lacks by id in one statement. None when one of them has been written (or deleted) since
    /// the page was selected.
    async fn cached_page(
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
                .prepare_cached(&format!(
                    "SELECT id, {VERSION}, body FROM entities WHERE tenant = $1 AND id = ANY($2)"
                ))
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
    fn remember(&self, tenant: &str, row: &tokio_postgres::Row) -> NgsiResult<Arc<Entity>> {
        let entity = Arc::new(decode(row, 3)?);
        self.cache.put(
            tenant,
            &entity.id,
            cache::Version::of(row, 1),
            entity.clone(),
        );
        Ok(entity)
    }

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

    /// The feed of committed changes (delivered by the listener, see [`listen`]).
    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// Starts the listener that feeds committed changes of every instance into [`Self::feed`],
    /// reports subscriptions changed by any instance and which ones this instance owns. It ends
    /// when the store is dropped.
    pub fn listen(&self, events: tokio::sync::mpsc::UnboundedSender<listen::Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if self.claims.set(tx).is_err() {
            return;
        }
        tokio::spawn(listen::run(
            self.config.clone(),
            self.feed.clone(),
            events,
            rx,
            Arc::downgrade(&self.alive),
        ));
    }

    /// Asks the listener to claim unowned subscriptions at once (after this instance created
    /// one); returns those this instance now holds, or None when the listener does not answer
    /// within two seconds.
    pub async fn claim_now(&self) -> Option<std::collections::HashSet<(String, String)>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.claims.get()?.send(reply).ok()?;
        tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .ok()?
            .ok()
    }

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

    /// Replaces one top-level member of a record (no announcement: used for delivery statistics,
    /// which only the delivering instance writes and readers read from the row).
    pub async fn save_record_member(
        &self,
        collection: Collection,
        tenant: &str,
        id: &str,
        member: &'static str,
        value: &Value,
    ) -> NgsiResult<()> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {} SET record = jsonb_set(record, ARRAY[$4::text], $3) WHERE tenant = $1 AND id = $2",
            collection.table()
        );
        client
            .execute(&sql, &[&tenant, &id, value, &member])
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

/// Tells every instance (at commit) that a record of a collection changed: the payload on the
/// collection's channel is `[tenant, id]`.
async fn announce(
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
