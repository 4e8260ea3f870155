//! Load test of temporal aggregation on PostgreSQL + PostGIS: GET /temporal/entities/{id} with
//! options=aggregatedValues, aggrMethods=avg,max, aggrPeriodDuration=PT1H over one day.
//!
//! Makes a fresh database (a copy of the template database of `TWINLINK_TEST_DATABASE_URL`, as the
//! tests do; dropped at the end), starts twinlink in-process on it (its own actix system, 2 HTTP
//! workers, 127.0.0.1 port 0), loads the history with POST /temporal/entities and drives two mixes
//! with a fixed number of requests in flight for a fixed time after a warm-up:
//!
//! - `day-100k`: one sensor with 100,000 instances in one day; each request aggregates all of them.
//! - `day-of-many`: 100 sensors with 1,000 instances each in the same day (100,000 in the table);
//!   each request aggregates the day of one sensor picked at random.
//! - `day-100k from the records`: as `day-100k` with the bounds a microsecond after the hour,
//!   which the roll-ups cannot answer (src/store/rollup.rs): the same work done from the 100,000
//!   records, in the same run, for the ratio.
//!
//! Every response must be 200 with 24 hourly periods; the first response of each mix is checked
//! against averages and maxima computed from the generated data.
//!
//! Run: `eval "$(scripts/services.sh env)" && cargo bench --bench temporal_aggregation`.
//! Environment overrides (defaults in brackets): TEMPORAL_BENCH_SECONDS [10],
//! TEMPORAL_BENCH_WARMUP [2], TEMPORAL_BENCH_CONCURRENCY [16], TEMPORAL_BENCH_WORKERS [2].

mod support;

use support::env_or;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use std::time::Instant;
use twinlink::config::Settings;

const BASE: &str = "/ngsi-ld/v1";
const INSTANCES: usize = 100_000;
const CHUNK: usize = 5_000;

fn day() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// `n` instances of one sensor spread evenly over the day, with values from a fixed sequence.
fn series(sensor: usize, n: usize) -> Vec<(DateTime<Utc>, f64)> {
    let step = 86_400_000_000 / n as i64;
    (0..n)
        .map(|i| {
            let v = ((i * 7919 + sensor * 104_729) % 4000) as f64 / 100.0;
            (day() + Duration::microseconds(i as i64 * step), v)
        })
        .collect()
}

fn sensor_id(s: usize) -> String {
    format!("urn:ngsi-ld:Sensor:bench{s}")
}

async fn load(client: &reqwest::Client, base: &str, sensor: usize, data: &[(DateTime<Utc>, f64)]) {
    for chunk in data.chunks(CHUNK) {
        let body = json!({
            "id": sensor_id(sensor),
            "type": "Sensor",
            "temperature": chunk.iter().map(|(t, v)| json!({
                "type": "Property", "value": v, "observedAt": iso(*t)
            })).collect::<Vec<_>>(),
        });
        let url = format!("{base}{BASE}/temporal/entities");
        let r = support::post_json(client, &url, body.to_string()).await;
        assert!(r.status().is_success(), "load: {}", r.status());
    }
}

/// The request of a mix: the day of `sensor`, its bounds `off` microseconds after midnight (0:
/// on the hour, which roll-ups answer; 1: off the hour, which the records answer).
fn path(sensor: usize, off: i64) -> String {
    let from = day() + Duration::microseconds(off);
    format!(
        "{BASE}/temporal/entities/{}?options=aggregatedValues&aggrMethods=avg,max&aggrPeriodDuration=PT1H\
         &timerel=between&timeAt={}&endTimeAt={}",
        sensor_id(sensor),
        iso(from),
        iso(from + Duration::days(1))
    )
}

/// Checks the hourly averages and maxima of a response against the generated data.
fn check(body: &Value, data: &[(DateTime<Utc>, f64)]) {
    let t = &body["temperature"];
    for h in 0..24 {
        let start = day() + Duration::hours(h);
        let values: Vec<f64> = data
            .iter()
            .filter(|(t, _)| *t >= start && *t < start + Duration::hours(1))
            .map(|(_, v)| *v)
            .collect();
        let avg = values.iter().sum::<f64>() / values.len() as f64;
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let got_avg = t["avg"][h as usize][0].as_f64().expect("avg");
        let got_max = t["max"][h as usize][0].as_f64().expect("max");
        assert!(
            (got_avg - avg).abs() < 1e-9 * avg.abs().max(1.0),
            "avg hour {h}: {got_avg} != {avg}"
        );
        assert_eq!(got_max, max, "max hour {h}");
        assert_eq!(t["avg"][h as usize][1], iso(start));
    }
}

/// Drives requests for the sensors `first..first + count` (picked pseudo-randomly); returns the
/// number completed in the measured window and their latencies (µs, sorted).
async fn run_mix(
    client: &reqwest::Client,
    base: &str,
    (first, count, off): (usize, usize, i64),
    seconds: f64,
    warmup: f64,
    concurrency: usize,
) -> (usize, Vec<u32>) {
    let start = Instant::now();
    let from = start + std::time::Duration::from_secs_f64(warmup);
    let until = from + std::time::Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (client, base) = (client.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = t;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let r = client
                    .get(format!("{base}{}", path(first + i % count, off)))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200);
                let body: Value = r.json().await.expect("json");
                assert_eq!(
                    body["temperature"]["max"].as_array().map(Vec::len),
                    Some(24)
                );
                let done = Instant::now();
                if done >= from && done <= until {
                    latencies.push((done - sent).as_micros() as u32);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    (all.len(), all)
}

async fn fresh_database(template_url: &str) -> (String, String, String) {
    let (server, template) = template_url.rsplit_once('/').expect("URL ends in /<db>");
    let name = format!("tl_bench_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("create database");
    (format!("{server}/{name}"), server.to_string(), name)
}

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let template = std::env::var("TWINLINK_TEST_DATABASE_URL")
        .expect("set TWINLINK_TEST_DATABASE_URL (eval \"$(scripts/services.sh env)\")");
    let seconds: f64 = env_or("TEMPORAL_BENCH_SECONDS", 10.0);
    let warmup: f64 = env_or("TEMPORAL_BENCH_WARMUP", 2.0);
    let concurrency: usize = env_or("TEMPORAL_BENCH_CONCURRENCY", 16);
    let workers: usize = env_or("TEMPORAL_BENCH_WORKERS", 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (url, server, name) = rt.block_on(fresh_database(&template));
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        bind: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.path().to_path_buf(),
        database_url: Some(url),
        workers,
        ..Settings::default()
    };
    let (twinlink, _) = support::Server::start(settings);
    let (handle, addr) = (twinlink.handle.clone(), twinlink.addr);
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    println!(
        "temporal_aggregation: PostgreSQL, {workers} workers, {concurrency} in flight, {seconds} s per mix after {warmup} s warm-up"
    );
    rt.block_on(async {
        let big = series(0, INSTANCES);
        let t = Instant::now();
        load(&client, &base, 0, &big).await;
        let many: Vec<Vec<(DateTime<Utc>, f64)>> =
            (1..=100).map(|s| series(s, INSTANCES / 100)).collect();
        for (k, data) in many.iter().enumerate() {
            load(&client, &base, k + 1, data).await;
        }
        println!(
            "loaded {} instances in {:.1} s",
            2 * INSTANCES,
            t.elapsed().as_secs_f64()
        );
        let body: Value = client
            .get(format!("{base}{}", path(0, 0)))
            .send()
            .await
            .expect("check")
            .json()
            .await
            .expect("json");
        check(&body, &big);
        let body: Value = client
            .get(format!("{base}{}", path(7, 0)))
            .send()
            .await
            .expect("check")
            .json()
            .await
            .expect("json");
        check(&body, &many[6]);
        for (mix, sensors) in [
            ("day-100k", (0, 1, 0)),
            ("day-of-many", (1, 100, 0)),
            (
                "day-100k from the records (bounds 1 µs off the hour)",
                (0, 1, 1),
            ),
        ] {
            let (n, lat) = run_mix(&client, &base, sensors, seconds, warmup, concurrency).await;
            let pct =
                |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
            println!(
                "{mix}: {n} requests in {seconds} s = {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
                n as f64 / seconds,
                pct(0.5),
                pct(0.99)
            );
        }
    });
    rt.block_on(handle.stop(true));
    twinlink.join();
    rt.block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect");
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    });
}
