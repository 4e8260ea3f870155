//! Memory (issue 20, item 7): twinlink's resident set idle, and while 1,000,000 entities are
//! loaded, on the embedded store and on PostgreSQL + PostGIS.
//!
//! The bench runs the release `twinlink` binary as a child process (`benches/child`), so that the
//! resident set read from `/proc/<pid>/status` (VmRSS; VmHWM the peak; RssAnon/RssFile/RssShmem
//! its parts) is the broker's alone. Per store:
//!
//! 1. idle: RSS 5 s after /ready, then after a few requests (create one entity, read it, a query,
//!    GET /types, delete it);
//! 2. load: `entities` `Sensor` entities (temperature with unitCode and observedAt, humidity,
//!    status, a GeoProperty `location` Point, a Relationship `controlledAsset`), POST
//!    /entityOperations/upsert in batches of `batch`, `inflight` batches in flight; RSS sampled at
//!    0, 1/4, 1/2, 3/4 and all of them; growth per entity is the slope of a least-squares line
//!    through those five points;
//! 3. queries: `gets` GETs by random id, `pages` q pages
//!    (`type=Sensor&q=temperature>20;status=="on"&limit=100`) and `pages` near pages
//!    (`type=Sensor&georel=near;maxDistance==500&geometry=Point&coordinates=[random]&limit=100`),
//!    8 in flight; RSS and peak after them;
//! 4. the size of the data: the embedded store's files, or `pg_database_size`.
//!
//! Run: `cargo bench --bench memory`; MEMORY_DATABASE_URL=postgres://... adds PostgreSQL (a fresh
//! database with PostGIS, of its own: the bench writes twinlink's tables there). Environment
//! overrides (defaults in brackets): MEMORY_ENTITIES [1000000], MEMORY_BATCH [1000],
//! MEMORY_INFLIGHT [4], MEMORY_STORES [embedded,postgres], MEMORY_WORKERS [2] (twinlink's HTTP
//! workers), MEMORY_GETS [2000], MEMORY_PAGES [200], MEMORY_IDLE_SECONDS [5],
//! MEMORY_DATA_PARENT [/dev/shm when it has room, else TMPDIR], MEMORY_EXTRA_FLAGS [none]
//! (more twinlink flags, space-separated, e.g. `--entity-cache 0`).

#[allow(dead_code)]
mod child;
// `env_or` only: twinlink runs as a child process here.
#[allow(dead_code)]
mod support;

use child::{quantile_ms, Rng, Twinlink};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::env_or;

const BASE: &str = "/ngsi-ld/v1";

struct Config {
    entities: usize,
    batch: usize,
    inflight: usize,
    stores: Vec<String>,
    workers: usize,
    gets: usize,
    pages: usize,
    idle_seconds: u64,
    database_url: Option<String>,
    extra: Vec<String>,
}

impl Config {
    fn from_env() -> Config {
        Config {
            entities: env_or("MEMORY_ENTITIES", 1_000_000),
            batch: env_or("MEMORY_BATCH", 1_000usize).max(1),
            inflight: env_or("MEMORY_INFLIGHT", 4usize).max(1),
            stores: env_or("MEMORY_STORES", "embedded,postgres".to_string())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            workers: env_or("MEMORY_WORKERS", 2),
            gets: env_or("MEMORY_GETS", 2_000),
            pages: env_or("MEMORY_PAGES", 200),
            idle_seconds: env_or("MEMORY_IDLE_SECONDS", 5),
            database_url: std::env::var("MEMORY_DATABASE_URL").ok(),
            extra: env_or("MEMORY_EXTRA_FLAGS", String::new())
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }
}

fn sensor_id(i: usize) -> String {
    format!("urn:ngsi-ld:Sensor:{i:07}")
}

/// One realistic sensor: five attributes, one of them a location.
fn sensor(i: usize, rng: &mut Rng) -> Value {
    let (lon, lat) = rng.point();
    json!({
        "id": sensor_id(i),
        "type": "Sensor",
        "temperature": {"type": "Property", "value": (rng.unit() * 400.0).floor() / 10.0,
                        "unitCode": "CEL", "observedAt": "2026-12-07T12:00:00Z"},
        "humidity": {"type": "Property", "value": (rng.unit() * 1000.0).floor() / 10.0,
                     "unitCode": "P1"},
        "status": {"type": "Property", "value": if rng.next_u64() & 1 == 1 { "on" } else { "off" }},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
        "controlledAsset": {"type": "Relationship",
                            "object": format!("urn:ngsi-ld:Building:{:04}", i % 5000)}
    })
}

/// One RSS sample.
struct Sample {
    label: String,
    entities: usize,
    rss: f64,
    hwm: f64,
    anon: f64,
    file: f64,
}

fn sample(t: &Twinlink, label: &str, entities: usize) -> Sample {
    let s = Sample {
        label: label.to_string(),
        entities,
        rss: t.memory_mib("VmRSS"),
        hwm: t.memory_mib("VmHWM"),
        anon: t.memory_mib("RssAnon"),
        file: t.memory_mib("RssFile") + t.memory_mib("RssShmem"),
    };
    println!(
        "  {:<34} entities {:>9}  RSS {:>8.1} MiB  (anon {:>7.1}, file+shmem {:>6.1})  peak {:>8.1} MiB  load {}",
        s.label,
        s.entities,
        s.rss,
        s.anon,
        s.file,
        s.hwm,
        child::load_average()
    );
    s
}

/// Slope and intercept of the least-squares line through (x, y).
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
    (slope, my - slope * mx)
}

async fn expect_ok(r: reqwest::Result<reqwest::Response>, what: &str) -> reqwest::Response {
    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(r.status().is_success(), "{what}: {}", r.status());
    r
}

/// A few requests of each kind on an empty broker.
async fn a_few_requests(client: &reqwest::Client, base: &str) {
    let mut rng = Rng(1);
    let e = sensor(9_999_999, &mut rng);
    let id = sensor_id(9_999_999);
    expect_ok(
        client
            .post(format!("{base}{BASE}/entities"))
            .header("Content-Type", "application/json")
            .body(e.to_string())
            .send()
            .await,
        "create one entity",
    )
    .await;
    for path in [
        format!("{BASE}/entities/{id}"),
        format!("{BASE}/entities?type=Sensor&q=status==%22on%22&limit=10"),
        format!("{BASE}/types"),
    ] {
        expect_ok(client.get(format!("{base}{path}")).send().await, &path).await;
    }
    expect_ok(
        client
            .delete(format!("{base}{BASE}/entities/{id}"))
            .send()
            .await,
        "delete it",
    )
    .await;
}

/// Upserts entities `from..to` in batches, `inflight` at once.
async fn load(cfg: &Config, client: &reqwest::Client, base: &str, from: usize, to: usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.inflight));
    let url = format!("{base}{BASE}/entityOperations/upsert");
    let mut tasks = Vec::new();
    for first in (from..to).step_by(cfg.batch) {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let last = (first + cfg.batch).min(to);
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(first as u64);
            let body: Vec<Value> = (first..last).map(|i| sensor(i, &mut rng)).collect();
            let r = client
                .post(&url)
                .header("Content-Type", "application/json")
                .body(Value::Array(body).to_string())
                .send()
                .await;
            expect_ok(r, "upsert batch").await;
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("a load task");
    }
}

/// The query phase: GETs by id, q pages and near pages, 8 in flight; returns a line of latencies.
async fn queries(cfg: &Config, client: &reqwest::Client, base: &str, n: usize) -> String {
    let mut rng = Rng(42);
    let mut paths: Vec<(usize, String)> = Vec::new();
    for _ in 0..cfg.gets {
        paths.push((
            0,
            format!("{BASE}/entities/{}", sensor_id(rng.below(n.max(1)))),
        ));
    }
    for _ in 0..cfg.pages {
        paths.push((
            1,
            format!(
                "{BASE}/entities?type=Sensor&q=temperature%3E20%3Bstatus%3D%3D%22on%22&limit=100"
            ),
        ));
        let (lon, lat) = rng.point();
        paths.push((
            2,
            format!(
                "{BASE}/entities?type=Sensor&georel=near%3BmaxDistance%3D%3D500&geometry=Point&coordinates=%5B{lon}%2C{lat}%5D&limit=100"
            ),
        ));
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for (kind, path) in paths {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let (client, url) = (client.clone(), format!("{base}{path}"));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = client.get(&url).send().await;
            let r = expect_ok(r, &url).await;
            r.bytes().await.expect("body");
            drop(permit);
            (kind, started.elapsed().as_micros() as u64)
        }));
    }
    let mut took: [Vec<u64>; 3] = Default::default();
    for t in tasks {
        let (kind, us) = t.await.expect("a query task");
        took[kind].push(us);
    }
    let names = ["GET by id", "q page", "near page"];
    took.iter_mut()
        .zip(names)
        .map(|(t, name)| {
            t.sort_unstable();
            format!(
                "{name} ×{}: p50 {:.1} ms, p99 {:.1} ms",
                t.len(),
                quantile_ms(t, 0.5),
                quantile_ms(t, 0.99)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let cfg = Config::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(cfg));
}

async fn run(cfg: Config) {
    println!(
        "memory: {} entities in batches of {}, {} in flight; twinlink --workers {} {}; {} cores; \
         load {}",
        cfg.entities,
        cfg.batch,
        cfg.inflight,
        cfg.workers,
        cfg.extra.join(" "),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        child::load_average()
    );
    let mut table = Vec::new();
    for store in &cfg.stores {
        let database = match store.as_str() {
            "embedded" => None,
            "postgres" => match &cfg.database_url {
                Some(url) => Some(url.as_str()),
                None => {
                    println!("(PostgreSQL skipped: MEMORY_DATABASE_URL is not set)");
                    continue;
                }
            },
            other => panic!("MEMORY_STORES: unknown store {other}"),
        };
        // About 2.5 KB a stored entity, with room.
        let parent = child::data_parent("MEMORY_DATA_PARENT", 4_000 * cfg.entities as u64);
        let dir = tempfile::tempdir_in(&parent).expect("data directory");
        println!(
            "\n{store}{}",
            if database.is_none() {
                format!(" (data under {})", parent.display())
            } else {
                String::new()
            }
        );
        let extra: Vec<&str> = cfg.extra.iter().map(String::as_str).collect();
        let mut twinlink = Twinlink::start(database, dir.path(), cfg.workers, &extra, None).await;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .timeout(Duration::from_secs(600))
            .build()
            .expect("client");
        tokio::time::sleep(Duration::from_secs(cfg.idle_seconds)).await;
        let idle = sample(&twinlink, "idle after start", 0);
        a_few_requests(&client, &twinlink.base).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut points = vec![sample(&twinlink, "after a few requests", 0)];
        let started = Instant::now();
        for quarter in 1..=4 {
            let (from, to) = (cfg.entities * (quarter - 1) / 4, cfg.entities * quarter / 4);
            load(&cfg, &client, &twinlink.base, from, to).await;
            twinlink.check_alive();
            points.push(sample(
                &twinlink,
                &format!(
                    "loaded {quarter}/4 ({:.0} s)",
                    started.elapsed().as_secs_f64()
                ),
                to,
            ));
        }
        let load_seconds = started.elapsed().as_secs_f64();
        let latencies = queries(&cfg, &client, &twinlink.base, cfg.entities).await;
        let after_queries = sample(&twinlink, "after the queries", cfg.entities);
        println!("  queries: {latencies}");
        let (slope, intercept) = fit(&points
            .iter()
            .map(|s| (s.entities as f64, s.rss * 1024.0 * 1024.0))
            .collect::<Vec<_>>());
        // The growth over the second half alone: on the embedded store the first part also
        // fills redb's page cache (1 GiB at most), the second is the entities themselves.
        let (half_slope, _) = fit(&points[2..]
            .iter()
            .map(|s| (s.entities as f64, s.rss * 1024.0 * 1024.0))
            .collect::<Vec<_>>());
        let data = match database {
            Some(url) => child::database_bytes(url).await,
            None => child::dir_bytes(dir.path()),
        };
        println!(
            "  loaded at {:.0} entities/s; growth {slope:.0} bytes/entity (least squares over the \
             five samples, intercept {:.1} MiB), {half_slope:.0} bytes/entity over the second \
             half; data {:.0} MiB ({:.0} bytes/entity)",
            cfg.entities as f64 / load_seconds,
            intercept / 1048576.0,
            data as f64 / 1048576.0,
            data as f64 / cfg.entities.max(1) as f64,
        );
        table.push((
            store.clone(),
            idle.rss,
            points.iter().map(|s| s.rss).collect::<Vec<_>>(),
            after_queries.rss,
            after_queries.hwm,
            slope,
            half_slope,
            data,
        ));
        drop(twinlink);
    }
    println!();
    println!(
        "| store | idle MiB | after a few requests | 1/4 | 1/2 | 3/4 | all | after queries | peak | growth bytes/entity (fit; second half) | data MiB |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (store, idle, points, after, peak, slope, half, data) in table {
        println!(
            "| {store} | {idle:.1} | {} | {after:.1} | {peak:.1} | {slope:.0}; {half:.0} | {:.0} |",
            points
                .iter()
                .map(|p| format!("{p:.1}"))
                .collect::<Vec<_>>()
                .join(" | "),
            data as f64 / 1048576.0
        );
    }
}
