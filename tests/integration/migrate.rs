//! `twinlink migrate` against a real PostgreSQL: every migration of `migrations/` is applied once,
//! concurrent runs (several instances starting together) are safe, and re-runs change nothing.

use crate::common;
use std::process::{Command, Output};

/// The test cluster's URL for database `name`.
fn database_url(name: &str) -> String {
    let url = common::services::database_url();
    format!(
        "{}/{name}",
        url.rsplit_once('/').expect("URL ends in /db").0
    )
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let client = common::sql_client(url).await;
    client
}

fn migrate(url: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_twinlink"))
        .args(["migrate", "--database-url", url])
        .env_remove("TWINLINK_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start twinlink migrate")
}

fn succeeded(out: Output) {
    assert!(
        out.status.success(),
        "twinlink migrate failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The versions of the files in `migrations/` (NNNN_name.sql), read from the repository.
fn versions_in_repo() -> Vec<i32> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut versions: Vec<i32> = std::fs::read_dir(dir)
        .expect("migrations/")
        .map(|f| {
            f.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .filter(|n| n.ends_with(".sql"))
        .map(|n| n[..4].parse().expect("NNNN_ prefix"))
        .collect();
    versions.sort();
    versions
}

#[actix_web::test]
async fn concurrent_migrations_apply_each_version_once_and_reruns_are_no_ops() {
    let name = format!("tl_{}", uuid::Uuid::new_v4().simple());
    let admin = database_url("postgres");
    let url = database_url(&name);
    sql(&admin)
        .await
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
        .await
        .expect("create an empty database");

    // Three instances migrating at once.
    let runs: Vec<_> = (0..3).map(|_| migrate(&url)).collect();
    for run in runs {
        succeeded(run.wait_with_output().expect("wait for migrate"));
    }
    let db = sql(&url).await;
    let applied: Vec<i32> = db
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations exists")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(applied, versions_in_repo());
    for table in ["entities", "tenants", "attribute_instances"] {
        let found: Option<String> = db
            .query_one("SELECT to_regclass($1)::text", &[&table])
            .await
            .expect("to_regclass")
            .get(0);
        assert_eq!(found.as_deref(), Some(table), "table {table} after migrate");
    }
    let stamps = "SELECT array_agg(applied_at ORDER BY version)::text FROM schema_migrations";
    let before: String = db.query_one(stamps, &[]).await.expect("stamps").get(0);

    // Again: nothing to do, nothing changes.
    succeeded(migrate(&url).wait_with_output().expect("wait for migrate"));
    let after: String = db.query_one(stamps, &[]).await.expect("stamps").get(0);
    assert_eq!(before, after, "a re-run must not re-apply migrations");
    drop(db);
    sql(&admin)
        .await
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop the test database");
}

#[test]
fn migrate_without_a_database_url_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_twinlink"))
        .arg("migrate")
        .env_remove("TWINLINK_DATABASE_URL")
        .output()
        .expect("run twinlink migrate");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--database-url"), "{stderr}");
}
