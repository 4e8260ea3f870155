//! The texts of the statements that serve entity reads, in one place: the store sends them, and
//! the raw floors of `benches/query_load.rs` send the very same ones straight through
//! tokio-postgres, so that a read's cost can be stated as a ratio of what PostgreSQL itself takes.

use super::sql::Translation;
use tokio_postgres::types::{ToSql, Type};

/// The row version columns of an entity (see [`super::cache::Version`]) as a macro, so that the
/// constant statements below can spell them out at compile time.
macro_rules! version_columns {
    () => {
        "xmin::text::bigint, modified_at"
    };
}

/// The row version of an entity: the transaction that wrote it, as a bigint, and the
/// modification time; two columns.
pub const VERSION: &str = version_columns!();

/// The entities of tenant `$1` whose ids are in `$2`, as (id, body): reads by id, combined into
/// one statement (see `store::combine`).
pub const BODIES_BY_IDS: &str = "SELECT id, body FROM entities WHERE tenant = $1 AND id = ANY($2)";

/// The same with the row versions between id and body (id, xmin, modified_at, body): the bodies
/// of a page that the entity cache lacks.
pub const VERSIONED_BODIES_BY_IDS: &str = concat!(
    "SELECT id, ",
    version_columns!(),
    ", body FROM entities WHERE tenant = $1 AND id = ANY($2)"
);

/// Whether tenant `$1` has stored entities with something expired at `$2` (the reaper has not
/// removed it yet): SQL cannot decide a query for that tenant until they are reaped. Sent
/// unnamed, planned with its values, never as a prepared statement: a generic plan takes a third
/// of the table for `expires_next <= $2` and scans it whole (0.3 s at 100,000 entities, on every
/// query page), where the values show the partial index on expiries holds almost nothing.
pub const DUE_PROBE: &str =
    "SELECT EXISTS (SELECT 1 FROM entities WHERE expires_next <= $2 AND tenant = $1)";

/// The WHERE clause of a translated query over the entities of `tenant` (`$1`), and the
/// parameters it is sent with, typed.
pub fn where_clause<'a>(
    tenant: &'a String,
    t: &'a Translation,
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

/// What a page of an exactly translated query selects: ids and row versions (the bodies come
/// from the entity cache), or ids, versions and bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageColumns {
    /// id, xmin, modified_at.
    Versions,
    /// id, xmin, modified_at, body.
    Bodies,
}

/// A page of the entities `where_sql` selects, in id order; `params` is the number of the WHERE
/// clause's parameters, the LIMIT and OFFSET being the two after them.
pub fn page(where_sql: &str, columns: PageColumns, params: usize) -> String {
    let body = match columns {
        PageColumns::Versions => "",
        PageColumns::Bodies => ", body",
    };
    format!(
        "SELECT id, {VERSION}{body} FROM entities WHERE {where_sql} ORDER BY id LIMIT ${} OFFSET ${}",
        params + 1,
        params + 2
    )
}

/// The number of entities `where_sql` selects.
pub fn count(where_sql: &str) -> String {
    format!("SELECT count(*) FROM entities WHERE {where_sql}")
}

/// The candidates of a query that SQL selects as a superset (the evaluator decides), in id order;
/// read through a portal in chunks of [`candidate_chunk`] rows.
pub fn candidates(where_sql: &str) -> String {
    format!("SELECT body FROM entities WHERE {where_sql} ORDER BY id")
}

/// Sent first in the transaction of a portal: a portal needs a prepared statement, which must
/// still be planned with its values (a generic plan cannot see how selective the conditions are).
pub const CUSTOM_PLANS: &str = "SET LOCAL plan_cache_mode = force_custom_plan";

/// The rows read from a portal at a time: a page and one more match when not counting, at least
/// 50 and at most 1,000.
pub fn candidate_chunk(offset: usize, limit: usize, count: bool) -> usize {
    if count {
        1000
    } else {
        (offset + limit + 1).clamp(50, 1000)
    }
}
