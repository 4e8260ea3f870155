//! Ingestion load test on both stores, each beside the physical limit of the same writes measured
//! in the same run (issue 7, part 3).
//!
//! For each store (embedded; PostgreSQL + PostGIS when INGEST_LOAD_DATABASE_URL is set) the bench
//! starts twinlink in-process (its own actix system, `workers` HTTP workers, 127.0.0.1 port 0,
//! MQTT ingestion on a unique topic prefix and client id) and measures, history always on:
//!
//! 1. batch upsert: `Sensor` entities (4 attributes) with POST /entityOperations/upsert in batches,
//!    first creating them, then replacing every attribute value in each of `rounds` rounds
//!    (entities/s, attribute instances/s: one history row per attribute, verified; the median
//!    round is reported, as is the median of `rounds` timings of the create step's raw COPY);
//! 2. PATCH /entities/{id}/attrs of one attribute on a random entity with a fixed number of
//!    requests in flight for a fixed time (req/s, p50/p99 latency);
//! 3. MQTT ingest: a publisher sends QoS 1 attribute updates to `<prefix>/entities/<id>/attrs`
//!    (rounds over a set of entities, each message a new value); the clock stops when the last
//!    message's value is readable (messages are written in arrival order), and the history then
//!    holds one record per message (verified).
//!
//! The physical limits, on the same machine, database and filesystem:
//! - PostgreSQL: the rows twinlink wrote in step 1 (read back with `COPY ... TO STDOUT`, so the
//!   column values are exactly twinlink's) are written again with `COPY ... FROM STDIN` (text
//!   format, tokio-postgres `copy_in`) into empty copies of `entities` and `attribute_instances`
//!   (same columns, indexes and constraints, schema `ingest_raw`), one transaction per batch of the
//!   same size. The replace step is also set beside the same replacement done raw: its rows
//!   (twinlink's again, read back the same way) written into those raw tables, which then hold the
//!   create step's rows as twinlink's tables did, one transaction per batch that deletes the entity
//!   rows being replaced and COPYs the new entity and history rows. For step 2: single-row
//!   transactions (one UPDATE of an entity row with a stored body, one INSERT of a history row,
//!   commit) on as many connections as twinlink's pool.
//! - embedded: the same key/value bytes as twinlink's redb tables (entities serialized as twinlink
//!   does, history keys built as twinlink builds them) written into a fresh redb file in the same
//!   directory, one write transaction (durable commit) per batch with the same inserts; and for
//!   step 2, one transaction per request (entity, tenant and history insert), back to back.
//!
//! Run: `cargo bench --bench ingest_load`, with `INGEST_LOAD_DATABASE_URL=postgres://...` to add
//! PostgreSQL (the bench empties twinlink's tables there first: give it a database of its own) and
//! TWINLINK_TEST_MQTT_URL (or INGEST_LOAD_MQTT_URL) for the MQTT step (skipped without one).
//! Environment overrides (defaults in brackets): INGEST_LOAD_ENTITIES [20000], INGEST_LOAD_BATCH
//! [1000], INGEST_LOAD_BATCH_CONCURRENCY [1] (batches in flight, for twinlink's upserts and the
//! raw PostgreSQL COPY alike, each raw batch on a connection of its own; raw redb has one writer),
//! INGEST_LOAD_ROUNDS [3] (replace rounds, and timings of the create step's raw COPY),
//! INGEST_LOAD_SECONDS [10] (PATCH measuring time), INGEST_LOAD_WARMUP [1],
//! INGEST_LOAD_CONCURRENCY [32], INGEST_LOAD_WORKERS [2], INGEST_LOAD_POOL [16] (twinlink's
//! database pool, also the raw PATCH connections), INGEST_LOAD_MQTT_MESSAGES [20000],
//! INGEST_LOAD_MQTT_ENTITIES [50] (entities per round), INGEST_LOAD_MQTT_WINDOW [500] (messages the
//! publisher keeps ahead of what twinlink has written, checked once per round: Mosquitto drops
//! messages for a subscriber beyond its queue limit; with its defaults 800 ahead already lost
//! some; against a Mosquitto with a large `max_queued_messages` set it above the message count to
//! publish flat out), INGEST_LOAD_STORES [embedded,postgres],
//! INGEST_LOAD_DATA_PARENT [TMPDIR]: where the embedded store's directory is made (a real disk by
//! default: the embedded store's commits fsync).

mod support;

use support::env_or;

use bytes::Bytes;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twinlink::config::Settings;
use twinlink::service::AppState;
use twinlink::store::embedded::EmbeddedStore;
use twinlink::store::history::{HistoryQuery, InstanceChange};

const BASE: &str = "/ngsi-ld/v1";
/// Attributes of every generated entity; every upsert changes each, so each gets a history row.
const ATTRS: usize = 4;
const TEMPERATURE: &str = "https://uri.etsi.org/ngsi-ld/default-context/temperature";

// ---------------------------------------------------------------------------------------------
// Settings

struct Config {
    entities: usize,
    batch: usize,
    batch_concurrency: usize,
    /// Measured rounds of the batch steps: the create step's raw COPY is timed this many times,
    /// and this many replace rounds follow the create, each beside its raw replace; medians are
    /// reported (one short run on a shared host can be off by a third).
    rounds: usize,
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    workers: usize,
    pool: usize,
    mqtt_messages: usize,
    mqtt_entities: usize,
    mqtt_window: usize,
    mqtt_url: Option<String>,
    database_url: Option<String>,
    stores: Vec<String>,
    data_parent: PathBuf,
}

impl Config {
    fn from_env() -> Config {
        let stores: String = env_or("INGEST_LOAD_STORES", "embedded,postgres".to_string());
        let entities = env_or("INGEST_LOAD_ENTITIES", 20_000);
        Config {
            entities,
            batch: env_or("INGEST_LOAD_BATCH", 1_000),
            batch_concurrency: env_or("INGEST_LOAD_BATCH_CONCURRENCY", 1usize).max(1),
            rounds: env_or("INGEST_LOAD_ROUNDS", 3usize).max(1),
            seconds: env_or("INGEST_LOAD_SECONDS", 10.0),
            warmup: env_or("INGEST_LOAD_WARMUP", 1.0),
            concurrency: env_or("INGEST_LOAD_CONCURRENCY", 32),
            workers: env_or("INGEST_LOAD_WORKERS", 2),
            pool: env_or("INGEST_LOAD_POOL", 16),
            mqtt_messages: env_or("INGEST_LOAD_MQTT_MESSAGES", 20_000),
            mqtt_entities: env_or("INGEST_LOAD_MQTT_ENTITIES", 50usize).min(entities),
            mqtt_window: env_or("INGEST_LOAD_MQTT_WINDOW", 500),
            mqtt_url: std::env::var("INGEST_LOAD_MQTT_URL")
                .or_else(|_| std::env::var("TWINLINK_TEST_MQTT_URL"))
                .ok(),
            database_url: std::env::var("INGEST_LOAD_DATABASE_URL").ok(),
            stores: stores
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            data_parent: std::env::var_os("INGEST_LOAD_DATA_PARENT")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic data

fn sensor_id(i: usize) -> String {
    format!("urn:ngsi-ld:Sensor:{i:06}")
}

/// Sensor `i` as written in upsert round `round`: every attribute differs from the round before.
fn entity_json(i: usize, round: usize) -> Value {
    let r = round as f64;
    json!({
        "id": sensor_id(i),
        "type": "Sensor",
        "temperature": {"type": "Property", "value": (i % 400) as f64 / 10.0 + 100.0 * r, "unitCode": "CEL",
                        "observedAt": observed_at(i, round)},
        "humidity": {"type": "Property", "value": (i % 100) as f64 + 100.0 * r,
                     "observedAt": observed_at(i, round)},
        "status": {"type": "Property", "value": if (i + round).is_multiple_of(2) { "on" } else { "off" }},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [
            2.2 + (i % 1000) as f64 * 1e-4 + r * 1e-5,
            48.8 + (i / 1000) as f64 * 1e-4
        ]}}
    })
}

/// When sensor `i` observed the values of round `round`: rounds an hour apart, the sensors
/// spread over the hour (the numbers carry observedAt, as sensors' readings do, so that their
/// history is rolled up, src/store/rollup.rs).
fn observed_at(i: usize, round: usize) -> String {
    let t = chrono::DateTime::UNIX_EPOCH
        + chrono::Duration::days(20_000)
        + chrono::Duration::hours(round as i64)
        + chrono::Duration::milliseconds((i % 3_600_000) as i64);
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Now, as an observedAt.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn percent(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The value at quantile `p` of sorted microseconds, in milliseconds.
fn quantile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Results

/// A batch write: twinlink's or the raw one.
struct Batched {
    seconds: f64,
    entities: usize,
    instances: usize,
}

impl Batched {
    /// The run of median time (the upper one of an even number).
    fn median(mut runs: Vec<Batched>) -> Batched {
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let middle = runs.len() / 2;
        runs.swap_remove(middle)
    }

    fn rows_per_s(&self) -> f64 {
        (self.entities + self.instances) as f64 / self.seconds
    }

    /// Prints a raw write of twinlink's rows, after checking that they are as many as twinlink
    /// wrote: one entity row per entity and one history row per attribute.
    fn print_beside(&self, label: &str, twinlink: &Batched) {
        assert_eq!(
            (self.entities, self.instances),
            (twinlink.entities, twinlink.instances),
            "{label}: twinlink wrote one entity row and one history row per attribute"
        );
        println!(
            "{label}: {} + {} rows in {:.2} s = {:.0} rows/s",
            self.entities,
            self.instances,
            self.seconds,
            self.rows_per_s()
        );
    }
}

/// Requests (or raw transactions) for a fixed time.
struct Timed {
    seconds: f64,
    ok: usize,
    /// Successful writes including the warm-up's (each recorded history).
    writes: usize,
    failed: usize,
    first_failure: Option<String>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Timed {
    fn from(
        seconds: f64,
        mut latencies: Vec<u32>,
        writes: usize,
        failed: usize,
        first: Option<String>,
    ) -> Timed {
        latencies.sort_unstable();
        Timed {
            seconds,
            ok: latencies.len(),
            writes,
            failed,
            first_failure: first,
            p50_ms: quantile_ms(&latencies, 0.5),
            p99_ms: quantile_ms(&latencies, 0.99),
            max_ms: quantile_ms(&latencies, 1.0),
        }
    }
    fn per_s(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
}

struct MqttResult {
    messages: usize,
    seconds: f64,
    recorded: usize,
    complete: bool,
}

struct StoreReport {
    name: String,
    create: Batched,
    replace: Batched,
    raw_batches: Batched,
    /// PostgreSQL only: the replace step's rows written again over the create step's.
    raw_replace: Option<Batched>,
    patch: Timed,
    raw_patch: Timed,
    mqtt: Option<MqttResult>,
    history_rows: (usize, usize),
}

// ---------------------------------------------------------------------------------------------
// Load generator (HTTP)

async fn upsert_round(client: &reqwest::Client, base: &str, cfg: &Config, round: usize) -> Batched {
    let url = format!("{base}{BASE}/entityOperations/upsert");
    let bodies: Vec<Vec<u8>> = (0..cfg.entities)
        .collect::<Vec<_>>()
        .chunks(cfg.batch)
        .map(|chunk| {
            serde_json::to_vec(&Value::Array(
                chunk.iter().map(|&i| entity_json(i, round)).collect(),
            ))
            .expect("JSON")
        })
        .collect();
    let started = Instant::now();
    let (expected, url) = (if round == 0 { 201 } else { 204 }, &url);
    futures_util::stream::iter(bodies)
        .for_each_concurrent(cfg.batch_concurrency, |body| async move {
            let response = support::post_json(client, url, body).await;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert_eq!(
                status.as_u16(),
                expected,
                "upsert answered {status}: {text}"
            );
        })
        .await;
    Batched {
        seconds: started.elapsed().as_secs_f64(),
        entities: cfg.entities,
        instances: cfg.entities * ATTRS,
    }
}

async fn patch_load(client: &reqwest::Client, base: &str, cfg: &Config) -> Timed {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup);
    let until = measure_from + Duration::from_secs_f64(cfg.seconds);
    let n = cfg.entities;
    let tasks = (0..cfg.concurrency).map(|t| {
        let client = client.clone();
        async move {
            let mut latencies = Vec::new();
            let (mut writes, mut failed, mut first) = (0, 0, None);
            let (mut k, mut seq) = (t, 0);
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                // A pseudo-random entity; values never repeat, so every PATCH changes the
                // attribute and records history.
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (k >> 33) % n;
                let url = format!("{base}{BASE}/entities/{}/attrs", percent(&sensor_id(i)));
                // Unique per request (task, sequence), below the MQTT step's values.
                let body = json!({"temperature": {"type": "Property", "value": (t * 10_000_000 + seq) as f64,
                                                   "observedAt": now()}});
                seq += 1;
                let outcome = client.patch(url).json(&body).send().await;
                let ok = match outcome {
                    Ok(r) if r.status() == 204 => true,
                    Ok(r) => {
                        let s = r.status();
                        first.get_or_insert(format!("{s}: {}", r.text().await.unwrap_or_default()));
                        false
                    }
                    Err(e) => {
                        first.get_or_insert(e.to_string());
                        false
                    }
                };
                writes += usize::from(ok);
                if sent >= measure_from {
                    if ok {
                        latencies.push(sent.elapsed().as_micros() as u32);
                    } else {
                        failed += 1;
                    }
                }
            }
            (latencies, writes, failed, first)
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let seconds = until.duration_since(measure_from).as_secs_f64();
    let mut all = Vec::new();
    let (mut writes, mut failed, mut first) = (0, 0, None);
    for (l, w, f, fst) in results {
        all.extend(l);
        writes += w;
        failed += f;
        first = first.or(fst);
    }
    Timed::from(seconds, all, writes, failed, first)
}

// ---------------------------------------------------------------------------------------------
// MQTT

fn mqtt_options(url: &str, client_id: &str) -> rumqttc::MqttOptions {
    let parsed = url::Url::parse(url).expect("MQTT URL");
    let mut o = rumqttc::MqttOptions::new(
        client_id,
        parsed.host_str().expect("MQTT host"),
        parsed.port().unwrap_or(1883),
    );
    o.set_keep_alive(Duration::from_secs(30)).set_inflight(1000);
    o
}

async fn entity_value(client: &reqwest::Client, base: &str, id: &str, attr: &str) -> Option<Value> {
    let url = format!("{base}{BASE}/entities/{}?options=keyValues", percent(id));
    let r = client.get(url).send().await.ok()?;
    let v: Value = r.json().await.ok()?;
    v.get(attr).cloned()
}

/// Polls (every 2 ms) until entity `id` shows a temperature of at least `value`; false when the
/// deadline passes first.
async fn written(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    value: f64,
    deadline: Instant,
) -> bool {
    loop {
        let seen = entity_value(client, base, id, "temperature").await;
        if seen.and_then(|v| v.as_f64()).is_some_and(|v| v >= value) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn mqtt_load(
    client: &reqwest::Client,
    base: &str,
    cfg: &Config,
    url: &str,
    prefix: &str,
    broker: &AppState,
) -> MqttResult {
    let (publisher, mut eventloop) =
        rumqttc::AsyncClient::new(mqtt_options(url, &format!("{prefix}-pub")), 10_000);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let topic = |i: usize| format!("{prefix}/entities/{}/attrs", sensor_id(i));
    // Until twinlink is subscribed: a probe (on another attribute) is written.
    let probe = Instant::now();
    loop {
        publisher
            .publish(
                topic(0),
                rumqttc::QoS::AtLeastOnce,
                false,
                json!({"humidity": {"type": "Property", "value": -1.5}}).to_string(),
            )
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if entity_value(client, base, &sensor_id(0), "humidity").await == Some(json!(-1.5)) {
            break;
        }
        assert!(
            probe.elapsed() < Duration::from_secs(20),
            "twinlink never ingested the probe"
        );
    }
    let m = cfg.mqtt_entities;
    let rounds = cfg.mqtt_messages.div_ceil(m);
    let messages = rounds * m;
    // Above every value the PATCH step wrote.
    let value = |r: usize| 1e9 + r as f64;
    let payloads: Vec<(String, String)> = (0..rounds)
        .flat_map(|r| {
            (0..m).map(move |i| {
                (
                    i,
                    json!({"temperature": {"type": "Property", "value": value(r), "observedAt": now()}})
                        .to_string(),
                )
            })
        })
        .map(|(i, p)| (topic(i), p))
        .collect();
    // Mosquitto queues at most `max_queued_messages` (1000 by default) for a subscriber and drops
    // the rest (800 ahead already lost some with the defaults): the publisher keeps at most `window` messages ahead of what twinlink has written
    // (round r waits until the last entity shows round r - window/m).
    let window_rounds = (cfg.mqtt_window / m).max(1);
    let last = sensor_id(m - 1);
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(messages as u64);
    let from = Utc::now();
    let started = Instant::now();
    let mut complete = true;
    for (n, (t, p)) in payloads.into_iter().enumerate() {
        if n.is_multiple_of(m) && n / m >= window_rounds {
            let done = value(n / m - window_rounds);
            if !written(client, base, &last, done, deadline).await {
                complete = false;
                break;
            }
        }
        publisher
            .publish(t, rumqttc::QoS::AtLeastOnce, false, p)
            .await
            .expect("publish");
    }
    complete = complete && written(client, base, &last, value(rounds - 1), deadline).await;
    let seconds = started.elapsed().as_secs_f64();
    let ids: Vec<String> = (0..m).map(sensor_id).collect();
    let query = HistoryQuery {
        attr: Some(TEMPERATURE.into()),
        from: Bound::Included(from),
        ..HistoryQuery::default()
    };
    let recorded = broker
        .store()
        .history_many("", &ids, &query)
        .await
        .expect("history")
        .iter()
        .map(|(_, h)| h.len())
        .sum();
    publisher.disconnect().await.ok();
    // Lost messages (dropped by the MQTT broker) leave no history record.
    let complete = complete && recorded == messages;
    MqttResult {
        messages,
        seconds,
        recorded,
        complete,
    }
}

// ---------------------------------------------------------------------------------------------
// Physical limit: PostgreSQL

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the bench database");
    tokio::spawn(connection);
    client
}

async fn copy_out(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<u8>> {
    let stream = client.copy_out(sql).await.expect("COPY TO");
    let mut stream = std::pin::pin!(stream);
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.expect("COPY data"));
    }
    all.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// A tab-separated field of a COPY text line (0: the tenant and 1: the entity id in both tables;
/// 4: a history row's instance id).
fn field(line: &[u8], n: usize) -> &[u8] {
    line.split(|&b| b == b'\t').nth(n).unwrap_or_default()
}

/// One batch of raw rows: COPY text lines of `entities` and `attribute_instances`.
struct PgBatch {
    entities: Vec<u8>,
    history: Vec<u8>,
    rows: (usize, usize),
}

/// Twinlink's rows as COPY text, grouped in the batches twinlink wrote them in: every entity row,
/// and the history rows whose instance ids are not in `seen` (which then holds them all).
async fn pg_snapshot(url: &str, batch: usize, seen: &mut HashSet<Vec<u8>>) -> Vec<PgBatch> {
    let client = pg_connect(url).await;
    let entities = copy_out(
        &client,
        "COPY (SELECT * FROM entities ORDER BY id) TO STDOUT",
    )
    .await;
    let history = copy_out(&client, "COPY attribute_instances TO STDOUT").await;
    let mut batches: Vec<PgBatch> = Vec::new();
    let mut batch_of: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, line) in entities.iter().enumerate() {
        if i.is_multiple_of(batch) {
            batches.push(PgBatch {
                entities: Vec::new(),
                history: Vec::new(),
                rows: (0, 0),
            });
        }
        let b = batches.last_mut().expect("a batch");
        b.entities.extend_from_slice(line);
        b.rows.0 += 1;
        batch_of.insert(field(line, 1).to_vec(), i / batch);
    }
    for line in &history {
        if !seen.insert(field(line, 4).to_vec()) {
            continue;
        }
        let b = &mut batches[batch_of[field(line, 1)]];
        b.history.extend_from_slice(line);
        b.rows.1 += 1;
    }
    batches
}

async fn pg_raw_tables(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "DROP SCHEMA IF EXISTS ingest_raw CASCADE; CREATE SCHEMA ingest_raw;
             CREATE TABLE ingest_raw.entities (LIKE public.entities INCLUDING ALL);
             CREATE TABLE ingest_raw.attribute_instances (LIKE public.attribute_instances INCLUDING ALL);",
        )
        .await
        .expect("raw tables");
}

async fn copy_in(tx: &tokio_postgres::Transaction<'_>, sql: &str, data: &[u8]) {
    let sink = tx.copy_in(sql).await.expect("COPY FROM");
    let mut sink = std::pin::pin!(sink);
    sink.as_mut()
        .send(Bytes::copy_from_slice(data))
        .await
        .expect("COPY data");
    sink.as_mut().finish().await.expect("COPY end");
}

/// Writes the batches raw, one transaction of two COPYs (entities, history) per batch. Without
/// `replace`, into fresh empty tables (the create step's limit); with it, into the raw tables as
/// the create batches left them, each transaction first deleting the entity rows it replaces (the
/// replace step's limit: the same rows written over the create step's, as twinlink's were).
async fn pg_raw_copy(url: &str, batches: &[PgBatch], replace: bool, connections: usize) -> Batched {
    if !replace {
        pg_raw_tables(&pg_connect(url).await).await;
    }
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = pg_connect(url).await;
        let delete = client
            .prepare("DELETE FROM ingest_raw.entities WHERE tenant = $1 AND id = ANY($2)")
            .await
            .expect("prepare the delete");
        clients.push((client, delete));
    }
    // Each connection takes the next batch not yet taken, as twinlink's clients do.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    futures_util::future::join_all(clients.iter_mut().map(|(client, delete)| {
        let next = &next;
        async move {
            while let Some(b) = batches.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            {
                pg_raw_batch(client, delete, b, replace).await;
            }
        }
    }))
    .await;
    Batched {
        seconds: started.elapsed().as_secs_f64(),
        entities: batches.iter().map(|b| b.rows.0).sum(),
        instances: batches.iter().map(|b| b.rows.1).sum(),
    }
}

/// One raw batch: a transaction of two COPYs, after the delete of the replaced rows (`replace`).
async fn pg_raw_batch(
    client: &mut tokio_postgres::Client,
    delete: &tokio_postgres::Statement,
    b: &PgBatch,
    replace: bool,
) {
    let tx = client.transaction().await.expect("begin");
    if replace {
        let lines: Vec<&[u8]> = b.entities.split_inclusive(|&c| c == b'\n').collect();
        let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
        let tenant = lines.first().map(|l| text(field(l, 0))).unwrap_or_default();
        let ids: Vec<String> = lines.iter().map(|l| text(field(l, 1))).collect();
        let deleted = tx.execute(delete, &[&tenant, &ids]).await.expect("delete");
        assert_eq!(deleted as usize, b.rows.0, "every replaced row was there");
    }
    copy_in(&tx, "COPY ingest_raw.entities FROM STDIN", &b.entities).await;
    copy_in(
        &tx,
        "COPY ingest_raw.attribute_instances FROM STDIN",
        &b.history,
    )
    .await;
    tx.commit().await.expect("commit");
}

/// Single-row write transactions on `connections` connections for the PATCH time, on the raw
/// tables: the entity row gets a stored body back, one history row is inserted.
async fn pg_raw_patch(url: &str, cfg: &Config) -> Timed {
    let sample = pg_connect(url).await;
    let bodies: Arc<Vec<(String, String)>> = Arc::new(
        sample
            .query(
                "SELECT id, body::text FROM ingest_raw.entities ORDER BY id LIMIT 1000",
                &[],
            )
            .await
            .expect("bodies")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    );
    let value: String = sample
        .query_one(
            "SELECT value::text FROM ingest_raw.attribute_instances WHERE attr = $1 LIMIT 1",
            &[&TEMPERATURE],
        )
        .await
        .expect("a temperature instance")
        .get(0);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup);
    let until = measure_from + Duration::from_secs_f64(cfg.seconds);
    let tasks = (0..cfg.pool).map(|t| {
        let (bodies, value, url) = (bodies.clone(), value.clone(), url.to_string());
        tokio::spawn(async move {
            let mut client = pg_connect(&url).await;
            let update = client
                .prepare("UPDATE ingest_raw.entities SET body = $2::text::jsonb, modified_at = now() WHERE tenant = '' AND id = $1")
                .await
                .expect("prepare");
            let insert = client
                .prepare(
                    "INSERT INTO ingest_raw.attribute_instances (tenant, entity_id, attr, instance_id, kind,
                       created_at, modified_at, value, num)
                     VALUES ('', $1, $2, $3, 'Property', now(), now(), $4::text::jsonb, $5)",
                )
                .await
                .expect("prepare");
            let mut latencies = Vec::new();
            let mut k = t;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                k = (k + 7919) % bodies.len();
                let (id, body) = &bodies[k];
                let instance = format!("urn:ngsi-ld:{}", uuid::Uuid::new_v4());
                let tx = client.transaction().await.expect("begin");
                tx.execute(&update, &[id, body]).await.expect("update");
                tx.execute(&insert, &[id, &TEMPERATURE, &instance, &value, &21.5f64])
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
                if sent >= measure_from {
                    latencies.push(sent.elapsed().as_micros() as u32);
                }
            }
            latencies
        })
    });
    let mut all = Vec::new();
    for l in futures_util::future::join_all(tasks).await {
        all.extend(l.expect("raw task"));
    }
    let writes = all.len();
    Timed::from(
        until.duration_since(measure_from).as_secs_f64(),
        all,
        writes,
        0,
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// Physical limit: redb

const ENTITIES: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("entities");
const TENANTS: redb::TableDefinition<&str, ()> = redb::TableDefinition::new("tenants");
const HISTORY: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("history");

type Kv = (Vec<u8>, Vec<u8>);

/// A history key as the embedded store builds it: length-prefixed tenant, entity id and attribute,
/// then the order-preserving modifiedAt microseconds and the instance id.
fn history_key(id: &str, r: &InstanceChange) -> Vec<u8> {
    let mut key = Vec::new();
    for part in ["", id, r.attr.as_deref().unwrap_or("")] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key.extend_from_slice(&((r.modified_at.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(r.instance_id.as_bytes());
    key
}

/// Twinlink's embedded rows as key/value bytes, grouped in the batches twinlink wrote them in.
async fn redb_snapshot(store: &EmbeddedStore, batch: usize) -> Vec<(Vec<Kv>, Vec<Kv>)> {
    let entities = store.entities("");
    let mut batches = Vec::new();
    for chunk in entities.chunks(batch) {
        let mut e = Vec::new();
        let mut h = Vec::new();
        for entity in chunk {
            e.push((
                format!("\u{0}{}", entity.id).into_bytes(),
                serde_json::to_vec(entity.as_ref()).expect("entity JSON"),
            ));
            for r in store
                .history("", &entity.id, &HistoryQuery::default())
                .await
                .expect("history")
            {
                h.push((
                    history_key(&entity.id, &r),
                    serde_json::to_vec(&r).expect("JSON"),
                ));
            }
        }
        batches.push((e, h));
    }
    batches
}

fn redb_write(db: &redb::Database, entities: &[Kv], history: &[Kv]) {
    let txn = db.begin_write().expect("begin");
    {
        let mut t = txn.open_table(ENTITIES).expect("entities");
        for (k, v) in entities {
            t.insert(std::str::from_utf8(k).expect("key"), v.as_slice())
                .expect("insert");
        }
        txn.open_table(TENANTS)
            .expect("tenants")
            .insert("", ())
            .expect("insert");
        let mut t = txn.open_table(HISTORY).expect("history");
        for (k, v) in history {
            t.insert(k.as_slice(), v.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

/// The raw redb file: twinlink's batches written again, kept open for the single writes.
struct RawRedb {
    db: redb::Database,
    entities: Vec<Kv>,
    record: Vec<u8>,
}

fn redb_raw_batches(dir: &Path, batches: Vec<(Vec<Kv>, Vec<Kv>)>) -> (Batched, RawRedb) {
    let db = redb::Database::create(dir.join("raw.redb")).expect("raw redb");
    let started = Instant::now();
    for (e, h) in &batches {
        redb_write(&db, e, h);
    }
    let batched = Batched {
        seconds: started.elapsed().as_secs_f64(),
        entities: batches.iter().map(|b| b.0.len()).sum(),
        instances: batches.iter().map(|b| b.1.len()).sum(),
    };
    let record = batches[0].1[0].1.clone();
    let entities = batches.into_iter().flat_map(|b| b.0).collect();
    (
        batched,
        RawRedb {
            db,
            entities,
            record,
        },
    )
}

/// One request's write, back to back for the PATCH time: the entity, the tenant and one history
/// record, then commit.
fn redb_raw_single(raw: &RawRedb, cfg: &Config) -> Timed {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup);
    let until = measure_from + Duration::from_secs_f64(cfg.seconds);
    let mut latencies = Vec::new();
    let mut k = 0usize;
    loop {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        k = (k + 7919) % raw.entities.len();
        let mut hk = raw.entities[k].0.clone();
        hk.extend_from_slice(&(k as u64).to_be_bytes());
        hk.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        redb_write(
            &raw.db,
            std::slice::from_ref(&raw.entities[k]),
            &[(hk, raw.record.clone())],
        );
        if sent >= measure_from {
            latencies.push(sent.elapsed().as_micros() as u32);
        }
    }
    let writes = latencies.len();
    Timed::from(
        until.duration_since(measure_from).as_secs_f64(),
        latencies,
        writes,
        0,
        None,
    )
}

// ---------------------------------------------------------------------------------------------

/// Migrates the bench database and empties twinlink's tables, so that every run starts alike.
async fn empty_database(url: &str) {
    drop(
        twinlink::store::postgres::PgStore::connect(url, 2)
            .await
            .expect("the bench database is reachable"),
    );
    pg_connect(url)
        .await
        .batch_execute("TRUNCATE entities, attribute_instances, tenants; DROP SCHEMA IF EXISTS ingest_raw CASCADE")
        .await
        .expect("empty the bench database");
}

fn run_store(cfg: &Config, postgres: bool) -> StoreReport {
    let dir = tempfile::Builder::new()
        .prefix("twinlink-ingest-load")
        .tempdir_in(&cfg.data_parent)
        .expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let database_url = postgres.then(|| cfg.database_url.clone().expect("a database URL"));
    if let Some(url) = &database_url {
        rt.block_on(empty_database(url));
    }
    let prefix = format!("ingest-load-{}", uuid::Uuid::new_v4().simple());
    let settings = Settings {
        bind: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.path().to_path_buf(),
        database_url: database_url.clone(),
        db_pool_size: cfg.pool,
        workers: cfg.workers,
        max_batch: cfg.batch.max(1000),
        mqtt_url: cfg.mqtt_url.clone(),
        mqtt_topic_prefix: prefix.clone(),
        mqtt_error_topic: format!("{prefix}/errors"),
        mqtt_client_id: format!("{prefix}-twinlink"),
        ..Settings::default()
    };
    let name = if postgres {
        "PostgreSQL + PostGIS".to_string()
    } else {
        format!("embedded (data on {})", cfg.data_parent.display())
    };
    println!("\n## {name}\n");

    let (server, broker) = support::Server::start(settings);
    let (handle, addr) = (server.handle.clone(), server.addr);
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency.max(1))
        // Below actix's keep-alive (5 s): a connection idle through a raw phase is not reused
        // after the server closed it.
        .pool_idle_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");

    let report = rt.block_on(async {
        let create = upsert_round(&client, &base, cfg, 0).await;
        println!(
            "create: {} entities in {:.2} s = {:.0} entities/s, {:.0} instances/s",
            create.entities,
            create.seconds,
            create.entities as f64 / create.seconds,
            create.instances as f64 / create.seconds
        );
        // The physical limit of the same rows, in batches of the same size.
        // (The raw redb file stays open for the single writes after the PATCH step.)
        let mut seen = HashSet::new();
        let embedded = broker.store().backend_as::<EmbeddedStore>();
        let (raw_batches, raw_redb) = match (embedded, &database_url) {
            (None, Some(url)) => {
                let batches = pg_snapshot(url, cfg.batch, &mut seen).await;
                let mut runs = Vec::with_capacity(cfg.rounds);
                for _ in 0..cfg.rounds {
                    let run = pg_raw_copy(url, &batches, false, cfg.batch_concurrency).await;
                    run.print_beside("raw", &create);
                    runs.push(run);
                }
                (Batched::median(runs), None)
            }
            (Some(store), _) => {
                let batches = redb_snapshot(store, cfg.batch).await;
                let (b, raw) = redb_raw_batches(dir.path(), batches);
                b.print_beside("raw", &create);
                (b, Some(raw))
            }
            _ => unreachable!("a database URL goes with the PostgreSQL store"),
        };
        let (mut replaces, mut raw_replaces) = (Vec::new(), Vec::new());
        for round in 1..=cfg.rounds {
            let replace = upsert_round(&client, &base, cfg, round).await;
            println!(
                "replace {round}: {:.2} s = {:.0} entities/s",
                replace.seconds,
                replace.entities as f64 / replace.seconds
            );
            if let (Some(url), None) = (&database_url, &raw_redb) {
                let batches = pg_snapshot(url, cfg.batch, &mut seen).await;
                let raw = pg_raw_copy(url, &batches, true, cfg.batch_concurrency).await;
                raw.print_beside(&format!("raw replace {round}"), &replace);
                raw_replaces.push(raw);
            }
            replaces.push(replace);
        }
        let replace = Batched::median(replaces);
        let raw_replace = (!raw_replaces.is_empty()).then(|| Batched::median(raw_replaces));
        let patch = patch_load(&client, &base, cfg).await;
        println!(
            "PATCH: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} failed {:?}",
            patch.per_s(),
            patch.p50_ms,
            patch.p99_ms,
            patch.failed,
            patch.first_failure
        );
        let raw_patch = match (&raw_redb, &database_url) {
            (Some(raw), _) => redb_raw_single(raw, cfg),
            (None, Some(url)) => pg_raw_patch(url, cfg).await,
            (None, None) => unreachable!("the embedded store times its raw single writes"),
        };
        println!(
            "raw single writes: {:.0} tx/s, p50 {:.2} ms, p99 {:.2} ms",
            raw_patch.per_s(),
            raw_patch.p50_ms,
            raw_patch.p99_ms
        );
        let mqtt = match &cfg.mqtt_url {
            Some(url) => {
                let r = mqtt_load(&client, &base, cfg, url, &prefix, &broker).await;
                println!(
                    "MQTT: {} messages written in {:.2} s = {:.0} updates/s, {} recorded, complete: {}",
                    r.messages,
                    r.seconds,
                    r.messages as f64 / r.seconds,
                    r.recorded,
                    r.complete
                );
                Some(r)
            }
            None => {
                println!("MQTT: skipped (no TWINLINK_TEST_MQTT_URL / INGEST_LOAD_MQTT_URL)");
                None
            }
        };
        // Every write recorded its history: count it all.
        let ids: Vec<String> = (0..cfg.entities).map(sensor_id).collect();
        let found: usize = broker
            .store()
            .history_many("", &ids, &HistoryQuery::default())
            .await
            .expect("history")
            .iter()
            .map(|(_, h)| h.len())
            .sum();
        // The upsert rounds, every PATCH (warm-up included), the MQTT probe and messages.
        let expected = (1 + cfg.rounds) * cfg.entities * ATTRS
            + patch.writes
            + mqtt.as_ref().map_or(0, |m| 1 + m.recorded);
        handle.stop(true).await;
        StoreReport {
            name,
            create,
            replace,
            raw_batches,
            raw_replace,
            patch,
            raw_patch,
            mqtt,
            history_rows: (expected, found),
        }
    });
    server.join();
    report
}

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let cfg = Config::from_env();
    println!(
        "ingest_load: {} entities x {ATTRS} attributes, batches of {} ({} in flight; medians of {} rounds), PATCH {} s after {} s warm-up with {} in flight, {} workers, pool {}, MQTT {} messages over {} entities; {} cores; load {}",
        cfg.entities, cfg.batch, cfg.batch_concurrency, cfg.rounds, cfg.seconds, cfg.warmup, cfg.concurrency, cfg.workers, cfg.pool,
        cfg.mqtt_messages, cfg.mqtt_entities,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let mut reports = Vec::new();
    for store in &cfg.stores {
        match store.as_str() {
            "embedded" => reports.push(run_store(&cfg, false)),
            "postgres" if cfg.database_url.is_some() => reports.push(run_store(&cfg, true)),
            "postgres" => println!("\nPostgreSQL: skipped (INGEST_LOAD_DATABASE_URL is not set)"),
            other => panic!("unknown store {other}; known: embedded, postgres"),
        }
    }
    print_tables(&reports, cfg.mqtt_window);
}

fn print_tables(reports: &[StoreReport], window: usize) {
    println!();
    println!("| store | workload | twinlink | physical limit (same run) | ratio |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for r in reports {
        let limit = |b: &Batched| b.rows_per_s();
        // PostgreSQL's raw writes are COPYs; the embedded store's go into a fresh redb file.
        let (raw_create, raw_empty) = match r.raw_replace {
            Some(_) => ("COPY", "COPY into empty tables"),
            None => ("raw redb", "raw redb into a fresh file"),
        };
        let mut rows = vec![
            (
                "batch upsert, create",
                &r.create,
                &r.raw_batches,
                raw_create,
            ),
            (
                "batch upsert, replace",
                &r.replace,
                &r.raw_batches,
                raw_empty,
            ),
        ];
        if let Some(raw) = &r.raw_replace {
            rows.push((
                "batch upsert, replace",
                &r.replace,
                raw,
                "DELETE + COPY over the create rows",
            ));
        }
        for (what, b, raw, how) in rows {
            println!(
                "| {} | {what}: entities/s; attribute instances/s; rows/s | {:.0}; {:.0}; {:.0} | {:.0} rows/s ({how}) | {:.0} % |",
                r.name,
                b.entities as f64 / b.seconds,
                b.instances as f64 / b.seconds,
                b.rows_per_s(),
                limit(raw),
                100.0 * b.rows_per_s() / limit(raw)
            );
        }
        println!(
            "| {} | PATCH /attrs: req/s (p50 / p99 ms) | {:.0} ({:.2} / {:.2}) | {:.0} tx/s ({:.2} / {:.2}) | {:.0} % |",
            r.name,
            r.patch.per_s(),
            r.patch.p50_ms,
            r.patch.p99_ms,
            r.raw_patch.per_s(),
            r.raw_patch.p50_ms,
            r.raw_patch.p99_ms,
            100.0 * r.patch.per_s() / r.raw_patch.per_s()
        );
        if let Some(m) = &r.mqtt {
            println!(
                "| {} | MQTT ingest (QoS 1, at most {} ahead): attribute updates/s | {:.0}{} | | |",
                r.name,
                window,
                m.messages as f64 / m.seconds,
                if m.complete {
                    ""
                } else {
                    " (INCOMPLETE: lost or timed out)"
                },
            );
        }
    }
    println!();
    for r in reports {
        println!(
            "{}: PATCH max {:.1} ms, {} failed{}; history rows expected {}, found {}",
            r.name,
            r.patch.max_ms,
            r.patch.failed,
            r.patch
                .first_failure
                .as_deref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default(),
            r.history_rows.0,
            r.history_rows.1
        );
        if let Some(m) = &r.mqtt {
            println!(
                "{}: MQTT {} messages, {} history records of them",
                r.name, m.messages, m.recorded
            );
        }
    }
}
