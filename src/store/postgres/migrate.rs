//! Versioned schema migrations from `migrations/`, applied at start-up and by `twinlink migrate`.
//! An advisory lock makes it safe for several instances to start at once.

use deadpool_postgres::Pool;

/// The migrations, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../../migrations/0001_entities.sql")),
    (2, include_str!("../../../migrations/0002_history.sql")),
    (
        3,
        include_str!("../../../migrations/0003_order_and_multi_location.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/0004_temporal_instances.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/0005_subscriptions.sql"),
    ),
    (8, include_str!("../../../migrations/0008_attr_names.sql")),
    (9, include_str!("../../../migrations/0009_hot_updates.sql")),
    (
        10,
        include_str!("../../../migrations/0010_registrations.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/0011_csource_subscriptions.sql"),
    ),
    (12, include_str!("../../../migrations/0012_entity_maps.sql")),
    (
        13,
        include_str!("../../../migrations/0013_remote_subscriptions.sql"),
    ),
    (14, include_str!("../../../migrations/0014_expiry.sql")),
    (15, include_str!("../../../migrations/0015_audit_log.sql")),
    (
        16,
        include_str!("../../../migrations/0016_jsonld_contexts.sql"),
    ),
    (
        17,
        include_str!("../../../migrations/0017_delivery_watermarks.sql"),
    ),
    (18, include_str!("../../../migrations/0018_data_models.sql")),
    (
        19,
        include_str!("../../../migrations/0019_history_rollups.sql"),
    ),
];

/// Arbitrary key of the advisory lock that serialises migrations across instances.
const LOCK_KEY: i64 = 0x7477_696e_6c69_6e6b; // "twinlink"

/// Applies every migration not applied yet, each in its own transaction.
pub async fn run(pool: &Pool) -> Result<Vec<i32>, String> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", super::with_causes(&e)))?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| e.to_string())?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(|e| e.to_string())?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| format!("migration {version} failed: {e}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(|e| e.to_string())?;
        applied.push(*version);
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(applied)
}
