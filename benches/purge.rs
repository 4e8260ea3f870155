//! Purge bench (issue 19): `DELETE /entities?type=Sensor` of N entities on PostgreSQL, beside the
//! physical limit of the same deletion measured in the same run.
//!
//! twinlink is started in-process on the database of PURGE_DATABASE_URL (the bench empties
//! twinlink's tables there: give it a database of its own), N `Sensor` entities of 4 attributes
//! are written through POST /entityOperations/upsert, and their rows are kept aside
//! (`purge_bench_snapshot`). Each round then restores exactly those rows (history emptied, both
//! tables vacuumed and analyzed) before each of:
//!
//! 1. twinlink: `DELETE /entities?type=Sensor` over HTTP, which selects the matching ids a chunk
//!    at a time and deletes each chunk in one transaction, writing one history row per attribute
//!    instance and one per entity (what a delete records);
//! 2. raw DELETE: `DELETE FROM entities WHERE tenant = '' AND types @> ARRAY[<Sensor>]`, one
//!    statement: the rows gone, nothing else written;
//! 3. raw DELETE with history: the same statement, its deleted rows turned into as many history
//!    rows as twinlink writes by one `INSERT ... SELECT` in the same statement.
//!
//! Every step is checked to leave no entity and (1, 3) the same number of history rows. The
//! median of the rounds is reported, with twinlink's time as a multiple of each limit.
//!
//! Run: `PURGE_DATABASE_URL=postgres://... cargo bench --bench purge`. Environment overrides
//! (defaults in brackets): PURGE_ENTITIES [100000], PURGE_ROUNDS [3], PURGE_WORKERS [2],
//! PURGE_POOL [16] (twinlink's database pool).

mod support;

use serde_json::{json, Value};
use std::time::Instant;
use support::{env_or, post_json, Server};
use twinlink::config::Settings;

/// The expanded type of the purged entities.
const SENSOR: &str = "https://uri.etsi.org/ngsi-ld/default-context/Sensor";
/// Attributes of every entity: each purged entity leaves this many history rows, and one more.
const ATTRS: usize = 4;
/// Entities per upsert request while loading.
const BATCH: usize = 1000;

fn sensor(i: usize) -> Value {
    json!({
        "id": format!("urn:ngsi-ld:Sensor:{i:07}"),
        "type": "Sensor",
        "temperature": {"type": "Property", "value": (i % 400) as f64 / 10.0, "unitCode": "CEL"},
        "humidity": {"type": "Property", "value": (i % 100) as f64},
        "status": {"type": "Property", "value": if i.is_multiple_of(2) { "on" } else { "off" }},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [
            2.2 + (i % 1000) as f64 * 1e-4, 48.8 + (i / 1000) as f64 * 1e-4]}}
    })
}

/// The raw deletion with its history rows: one per attribute instance and one per entity, as
/// twinlink records a delete (the columns a deletion record has that matter to the table's size
/// and indexes: tenant, entity, attribute, instance id, times).
const RAW_WITH_HISTORY: &str = "WITH d AS (
    DELETE FROM entities WHERE tenant = $1 AND types @> ARRAY[$2::text] RETURNING id, created_at, body)
  INSERT INTO attribute_instances (tenant, entity_id, attr, instance_id, created_at, modified_at, deleted_at)
  SELECT $1, d.id, a.attr, 'urn:ngsi-ld:' || gen_random_uuid(), d.created_at, now(), now()
  FROM d CROSS JOIN LATERAL (
    SELECT k.key AS attr FROM jsonb_each(d.body -> 'attrs') k, jsonb_array_elements(k.value)
    UNION ALL SELECT NULL) a";

/// Puts the loaded entities back and empties the history, then vacuums and analyzes both tables,
/// so that every measured step starts from the same tables.
async fn restore(db: &tokio_postgres::Client) {
    db.batch_execute(
        "TRUNCATE entities, attribute_instances;
         INSERT INTO entities SELECT * FROM purge_bench_snapshot;",
    )
    .await
    .expect("restore the entities");
    // One statement each: a VACUUM cannot run in the transaction of a multi-statement batch.
    for table in ["entities", "attribute_instances"] {
        db.batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .expect("vacuum");
    }
}

/// Entity rows of the tenant and history rows: what a step left.
async fn left(db: &tokio_postgres::Client) -> (i64, i64) {
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM entities WHERE tenant = ''),
                    (SELECT count(*) FROM attribute_instances)",
            &[],
        )
        .await
        .expect("count rows");
    (row.get(0), row.get(1))
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let Ok(url) = std::env::var("PURGE_DATABASE_URL") else {
        println!("purge: skipped (set PURGE_DATABASE_URL to a PostgreSQL database of its own)");
        return;
    };
    let entities: usize = env_or("PURGE_ENTITIES", 100_000);
    let rounds: usize = env_or("PURGE_ROUNDS", 3usize).max(1);
    let dir = tempfile::tempdir().expect("data dir");
    let settings = Settings {
        bind: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.path().to_path_buf(),
        workers: env_or("PURGE_WORKERS", 2),
        database_url: Some(url.clone()),
        db_pool_size: env_or("PURGE_POOL", 16),
        ..Settings::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to PURGE_DATABASE_URL");
        tokio::spawn(connection);
        client
    });
    let (server, _) = Server::start(settings);
    let base = format!("http://{}/ngsi-ld/v1", server.addr);
    println!(
        "purge: {entities} entities x {ATTRS} attributes on PostgreSQL, medians of {rounds} rounds; {} cores; load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let (mut twinlink, mut raw, mut raw_history) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        let client = reqwest::Client::new();
        db.batch_execute(
            "TRUNCATE entities, attribute_instances, entity_changes;
             DROP TABLE IF EXISTS purge_bench_snapshot;",
        )
        .await
        .expect("empty twinlink's tables");
        let started = Instant::now();
        for first in (0..entities).step_by(BATCH) {
            let batch: Vec<Value> = (first..(first + BATCH).min(entities)).map(sensor).collect();
            let url = format!("{base}/entityOperations/upsert");
            let r = post_json(&client, &url, Value::Array(batch).to_string()).await;
            assert!(r.status().is_success(), "load: {}", r.status());
        }
        println!("loaded in {:.1} s", started.elapsed().as_secs_f64());
        db.batch_execute("CREATE TABLE purge_bench_snapshot AS SELECT * FROM entities")
            .await
            .expect("keep the loaded rows");
        let history = (entities * (ATTRS + 1)) as i64;
        for round in 1..=rounds {
            restore(&db).await;
            let started = Instant::now();
            let r = client
                .delete(format!("{base}/entities?type=Sensor"))
                .send()
                .await
                .expect("purge");
            assert_eq!(r.status(), 204, "purge: {}", r.text().await.unwrap_or_default());
            twinlink.push(started.elapsed().as_secs_f64());
            assert_eq!(left(&db).await, (0, history), "twinlink's purge");

            restore(&db).await;
            let started = Instant::now();
            db.execute(
                "DELETE FROM entities WHERE tenant = $1 AND types @> ARRAY[$2::text]",
                &[&"", &SENSOR],
            )
            .await
            .expect("raw delete");
            raw.push(started.elapsed().as_secs_f64());
            assert_eq!(left(&db).await, (0, 0), "raw delete");

            restore(&db).await;
            let started = Instant::now();
            db.execute(RAW_WITH_HISTORY, &[&"", &SENSOR])
                .await
                .expect("raw delete with history");
            raw_history.push(started.elapsed().as_secs_f64());
            assert_eq!(left(&db).await, (0, history), "raw delete with history");
            println!(
                "round {round}: twinlink {:.3} s, raw DELETE {:.3} s, raw DELETE with history {:.3} s",
                twinlink[round - 1],
                raw[round - 1],
                raw_history[round - 1]
            );
        }
        db.batch_execute("DROP TABLE purge_bench_snapshot")
            .await
            .expect("drop the snapshot");
    });
    let (t, r, h) = (median(twinlink), median(raw), median(raw_history));
    let per_s = |s: f64| entities as f64 / s;
    println!();
    println!(
        "| purge of {entities} entities (PostgreSQL) | seconds | entities/s | twinlink ÷ this |"
    );
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| twinlink `DELETE /entities?type=Sensor` (history: {} rows) | {t:.3} | {:.0} | 1.00× |",
        entities * (ATTRS + 1),
        per_s(t)
    );
    println!(
        "| raw `DELETE ... WHERE types @> ...`, one statement | {r:.3} | {:.0} | {:.2}× |",
        per_s(r),
        t / r
    );
    println!(
        "| raw DELETE with the same history rows, one statement | {h:.3} | {:.0} | {:.2}× |",
        per_s(h),
        t / h
    );
    runtime.block_on(server.handle.stop(true));
    server.join();
}
