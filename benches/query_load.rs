//! Load test of GET /entities over 100,000 entities, on the embedded store or (with
//! QUERY_LOAD_DATABASE_URL) on PostgreSQL + PostGIS.
//!
//! Starts twinlink in-process (its own actix system, `workers` HTTP workers, 127.0.0.1 port 0, a
//! temporary data directory), loads `Sensor` entities with POST /entityOperations/upsert in
//! batches, then drives each query mix with a fixed number of in-flight requests over keep-alive
//! connections (reqwest on one client thread) for a fixed time after a warm-up. Every response must
//! be 200; a sample is parsed and checked against the generated data (the page is exactly the first
//! `limit` matches in id order). For orientation it then times the same work without HTTP: the
//! store query and the JSON rendering through the library (on the broker's own store, after the
//! server stopped), and the same filter as a plain loop over the generated structs.
//!
//! Raw floors (issue 20, item 6): right after each mix, in the same run, the same requests are
//! answered without twinlink. On PostgreSQL the statements twinlink's store sends for them
//! (`twinlink::store::postgres::statements`, the same texts and parameters) go straight through
//! tokio-postgres, as many in flight as the mix had, over as many connections as twinlink's pool
//! holds, and nothing is decoded; on the embedded store, whose reads are answered from memory, the
//! store's own read calls run on as many threads as twinlink has HTTP workers. twinlink is then
//! reported as a ratio of its floor, a figure that moves far less with the host's load than
//! requests per second do.
//!
//! Targets from the issue (2 cores, broker and load generator on the same machine): the q mix and
//! the near-geoQ mix each >= 1,000 req/s with limit=100 over 100,000 entities.
//!
//! Run: `cargo bench --bench query_load`. Environment overrides (defaults in brackets):
//! QUERY_LOAD_ENTITIES [100000], QUERY_LOAD_BATCH [1000], QUERY_LOAD_SECONDS [20],
//! QUERY_LOAD_WARMUP [2], QUERY_LOAD_CONCURRENCY [32], QUERY_LOAD_WORKERS [2],
//! QUERY_LOAD_CLIENT_THREADS [1], QUERY_LOAD_MAX_DISTANCE [500],
//! QUERY_LOAD_MIXES [all: q-type,q,near-type,near,get] (comma-separated names),
//! QUERY_LOAD_DATA_PARENT [/dev/shm when it exists, else TMPDIR]: where the temporary data directory
//! is made. QUERY_LOAD_DATABASE_URL [unset]: run the broker on this PostgreSQL database instead of
//! the embedded store; the bench empties its twinlink tables first, so give it a database of its
//! own (e.g. `createdb twinlink_bench` on the test cluster of `scripts/services.sh`).
//! The default data parent is a tmpfs because the embedded store commits and fsyncs every entity of a
//! batch on its own: on a virtual disk that loads ~400 entities/s, four minutes for 100,000, while
//! the queries measured here read only the in-memory indexes, wherever the file is.

mod support;

use support::env_or;

use serde_json::{json, Value};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::{ToSql, Type};
use twinlink::config::Settings;
use twinlink::ld::ActiveContext;
use twinlink::model::render::{self, RenderOptions};
use twinlink::query::{self, EntityQuery, Selector};
use twinlink::store::embedded::EmbeddedStore;
use twinlink::store::postgres::statements::{self, PageColumns};
use twinlink::store::DEFAULT_TENANT;

const BASE: &str = "/ngsi-ld/v1";
const EARTH_RADIUS_M: f64 = 6_371_008.8;
const LIMIT: usize = 100;
const Q: &str = r#"temperature>20;status=="on""#;
/// The box the sensors are spread over (about 22 km x 11 km, a city).
const LON: (f64, f64) = (2.2, 2.5);
const LAT: (f64, f64) = (48.8, 48.9);

// ---------------------------------------------------------------------------------------------
// Settings

#[derive(Clone)]
struct Config {
    entities: usize,
    batch: usize,
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    workers: usize,
    client_threads: usize,
    max_distance: f64,
    mixes: Vec<String>,
    data_parent: PathBuf,
    database_url: Option<String>,
}

impl Config {
    fn from_env() -> Config {
        let mixes: String = env_or(
            "QUERY_LOAD_MIXES",
            "q-type,q,near-type,near,get".to_string(),
        );
        Config {
            entities: env_or("QUERY_LOAD_ENTITIES", 100_000),
            batch: env_or("QUERY_LOAD_BATCH", 1_000),
            seconds: env_or("QUERY_LOAD_SECONDS", 20.0),
            warmup: env_or("QUERY_LOAD_WARMUP", 2.0),
            concurrency: env_or("QUERY_LOAD_CONCURRENCY", 32),
            workers: env_or("QUERY_LOAD_WORKERS", 2),
            client_threads: env_or("QUERY_LOAD_CLIENT_THREADS", 1),
            max_distance: env_or("QUERY_LOAD_MAX_DISTANCE", 500.0),
            mixes: mixes
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            database_url: std::env::var("QUERY_LOAD_DATABASE_URL").ok(),
            data_parent: std::env::var_os("QUERY_LOAD_DATA_PARENT")
                .map(PathBuf::from)
                .or_else(|| {
                    let shm = PathBuf::from("/dev/shm");
                    shm.is_dir().then_some(shm)
                })
                .unwrap_or_else(std::env::temp_dir),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic data

/// SplitMix64: small, deterministic, good enough to spread test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn point(&mut self) -> (f64, f64) {
        (
            LON.0 + (LON.1 - LON.0) * self.unit(),
            LAT.0 + (LAT.1 - LAT.0) * self.unit(),
        )
    }
}

/// One generated sensor, as the plain-loop reference sees it. Index i has id `sensor_id(i)`, and
/// ids sort as indexes do (zero-padded), so "first matches in id order" is "first in index order".
struct Sensor {
    id: String,
    temperature: f64,
    on: bool,
    lon: f64,
    lat: f64,
}

fn sensor_id(i: usize) -> String {
    format!("urn:ngsi-ld:Sensor:{i:06}")
}

fn generate(n: usize) -> Vec<Sensor> {
    let mut rng = Rng(0x7715_11EC);
    (0..n)
        .map(|i| {
            // One decimal, 0.0..=39.9.
            let temperature = (rng.unit() * 400.0).floor() / 10.0;
            let on = rng.next_u64() & 1 == 1;
            let (lon, lat) = rng.point();
            // Rounded to 1e-6 degrees (~0.1 m) so the JSON text is the exact value.
            let round = |x: f64| (x * 1e6).round() / 1e6;
            Sensor {
                id: sensor_id(i),
                temperature,
                on,
                lon: round(lon),
                lat: round(lat),
            }
        })
        .collect()
}

fn entity_json(s: &Sensor) -> Value {
    json!({
        "id": s.id,
        "type": "Sensor",
        "temperature": {"type": "Property", "value": s.temperature, "unitCode": "CEL"},
        "status": {"type": "Property", "value": if s.on { "on" } else { "off" }},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [s.lon, s.lat]}}
    })
}

fn haversine_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lon1, lat1) = (a.0.to_radians(), a.1.to_radians());
    let (lon2, lat2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

fn q_match(s: &Sensor) -> bool {
    s.temperature > 20.0 && s.on
}

// ---------------------------------------------------------------------------------------------
// Query mixes

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `type=Sensor&q=...&limit=100`
    QType,
    /// `q=...&limit=100`
    Q,
    /// `type=Sensor&georel=near;maxDistance==M&geometry=Point&coordinates=[..]&limit=100`
    NearType,
    /// The same near query without `type`.
    Near,
    /// `GET /entities/{id}`
    Get,
}

impl Kind {
    fn parse(name: &str) -> Kind {
        match name {
            "q-type" => Kind::QType,
            "q" => Kind::Q,
            "near-type" => Kind::NearType,
            "near" => Kind::Near,
            "get" => Kind::Get,
            other => panic!("unknown mix {other}; known: q-type, q, near-type, near, get"),
        }
    }

    fn label(self, max_distance: f64) -> String {
        match self {
            Kind::QType => format!("(1) `type=Sensor&q={Q}&limit=100`"),
            Kind::Q => format!("(2) `q={Q}&limit=100` (no type)"),
            Kind::NearType => format!(
                "(3) `type=Sensor&georel=near;maxDistance=={max_distance}&geometry=Point&coordinates=[random]&limit=100`"
            ),
            Kind::Near => "(3b) the near query of (3) without `type`".to_string(),
            Kind::Get => "(4) `GET /entities/{id}`, random id".to_string(),
        }
    }
}

/// One request of a mix: its path and query, and what the generator says it must return.
enum Expect {
    /// The first `LIMIT` matches of q, in id order.
    QPage,
    /// Entities within `max` metres of the point.
    Near { point: (f64, f64), max: f64 },
    /// This one entity.
    One(usize),
}

fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn request(kind: Kind, rng: &mut Rng, n: usize, max_distance: f64) -> (String, Expect) {
    let limit = LIMIT.to_string();
    match kind {
        Kind::QType => (
            format!(
                "{BASE}/entities?{}",
                encode(&[("type", "Sensor"), ("q", Q), ("limit", &limit)])
            ),
            Expect::QPage,
        ),
        Kind::Q => (
            format!("{BASE}/entities?{}", encode(&[("q", Q), ("limit", &limit)])),
            Expect::QPage,
        ),
        Kind::NearType | Kind::Near => {
            let point = rng.point();
            let (lon, lat) = ((point.0 * 1e6).round() / 1e6, (point.1 * 1e6).round() / 1e6);
            let georel = format!("near;maxDistance=={max_distance}");
            let coords = format!("[{lon:.6},{lat:.6}]");
            let mut pairs = vec![
                ("georel", georel.as_str()),
                ("geometry", "Point"),
                ("coordinates", coords.as_str()),
                ("limit", limit.as_str()),
            ];
            if kind == Kind::NearType {
                pairs.insert(0, ("type", "Sensor"));
            }
            (
                format!("{BASE}/entities?{}", encode(&pairs)),
                Expect::Near {
                    point: (lon, lat),
                    max: max_distance,
                },
            )
        }
        Kind::Get => {
            let i = rng.below(n);
            let id = sensor_id(i);
            (
                format!(
                    "{BASE}/entities/{}",
                    percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
                ),
                Expect::One(i),
            )
        }
    }
}

fn index_of(id: &str) -> Result<usize, String> {
    id.strip_prefix("urn:ngsi-ld:Sensor:")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unexpected id {id}"))
}

fn value_of<'a>(e: &'a Value, attr: &str) -> Option<&'a Value> {
    e.get(attr)?.get("value")
}

/// Checks one response body against the generated data; returns the number of entities.
fn check(body: &[u8], expect: &Expect, data: &[Sensor]) -> Result<usize, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let as_entity = |e: &Value| -> Result<(usize, &Sensor), String> {
        let id = e["id"].as_str().ok_or("no id")?;
        let i = index_of(id)?;
        let s = data.get(i).ok_or_else(|| format!("unknown id {id}"))?;
        if e["type"] != "Sensor" {
            return Err(format!("{id}: type {}", e["type"]));
        }
        // The rendered values are the generated ones.
        let t = value_of(e, "temperature").and_then(Value::as_f64);
        let st = value_of(e, "status").and_then(Value::as_str);
        let c = value_of(e, "location").map(|l| &l["coordinates"]);
        if t != Some(s.temperature)
            || st != Some(if s.on { "on" } else { "off" })
            || c.and_then(|c| c[0].as_f64()) != Some(s.lon)
            || c.and_then(|c| c[1].as_f64()) != Some(s.lat)
        {
            return Err(format!(
                "{id}: values differ from the generated entity: {e}"
            ));
        }
        Ok((i, s))
    };
    match expect {
        Expect::One(i) => {
            let (got, _) = as_entity(&v)?;
            if got != *i {
                return Err(format!("asked for {i}, got {got}"));
            }
            Ok(1)
        }
        Expect::QPage => {
            let list = v.as_array().ok_or("not an array")?;
            let got: Vec<usize> = list
                .iter()
                .map(|e| as_entity(e).map(|(i, _)| i))
                .collect::<Result<_, _>>()?;
            for &i in &got {
                if !q_match(&data[i]) {
                    return Err(format!("{} does not satisfy q", data[i].id));
                }
            }
            let expected: Vec<usize> = (0..data.len())
                .filter(|&i| q_match(&data[i]))
                .take(LIMIT)
                .collect();
            if got != expected {
                return Err(format!(
                    "page differs from the first {LIMIT} matches in id order"
                ));
            }
            Ok(got.len())
        }
        Expect::Near { point, max } => {
            let list = v.as_array().ok_or("not an array")?;
            let got: Vec<usize> = list
                .iter()
                .map(|e| as_entity(e).map(|(i, _)| i))
                .collect::<Result<_, _>>()?;
            // Boundary cases within 1 cm may differ by rounding; everything else must agree.
            let eps = 0.01;
            for &i in &got {
                let d = haversine_m(*point, (data[i].lon, data[i].lat));
                if d > max + eps {
                    return Err(format!("{} is {d:.2} m away (> {max})", data[i].id));
                }
            }
            if got.windows(2).any(|w| w[0] >= w[1]) || got.len() > LIMIT {
                return Err("not a page in id order".into());
            }
            let horizon = if got.len() == LIMIT {
                *got.last().unwrap()
            } else {
                data.len()
            };
            // A degree of latitude is more than 110 km, of longitude at these latitudes more than
            // 70 km: a cheap box first, the haversine inside it.
            let (dlat, dlon) = (max / 110_000.0, max / 70_000.0);
            let missing = (0..horizon.min(data.len())).find(|&i| {
                let s = &data[i];
                (s.lat - point.1).abs() <= dlat
                    && (s.lon - point.0).abs() <= dlon
                    && haversine_m(*point, (s.lon, s.lat)) <= max - eps
                    && got.binary_search(&i).is_err()
            });
            if let Some(i) = missing {
                return Err(format!("{} is within {max} m but missing", data[i].id));
            }
            Ok(got.len())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Load generator

#[derive(Default)]
struct TaskStats {
    latencies_us: Vec<u32>,
    bytes: u64,
    checked: u64,
    checked_entities: u64,
    failed: u64,
    first_failure: Option<String>,
}

struct MixResult {
    kind: Kind,
    seconds: f64,
    requests: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    bytes_per_response: f64,
    entities_per_response: f64,
    checked: u64,
    failed: u64,
    first_failure: Option<String>,
}

async fn run_mix(
    client: &reqwest::Client,
    base: &str,
    kind: Kind,
    cfg: &Config,
    data: &Arc<Vec<Sensor>>,
) -> MixResult {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup);
    let until = measure_from + Duration::from_secs_f64(cfg.seconds);
    let mut tasks = Vec::new();
    for t in 0..cfg.concurrency {
        let client = client.clone();
        let base = base.to_string();
        let data = data.clone();
        let (n, max_distance) = (data.len(), cfg.max_distance);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xC0FF_EE00 + t as u64 * 7919 + kind as u64);
            let mut stats = TaskStats::default();
            let mut done = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let (path, expect) = request(kind, &mut rng, n, max_distance);
                // A failed request (transport error or a status other than 200) is counted and
                // reported, not retried; the next request opens a new connection if needed.
                let outcome = match client.get(format!("{base}{path}")).send().await {
                    Ok(response) => {
                        let status = response.status();
                        match response.bytes().await {
                            Ok(body) if status == reqwest::StatusCode::OK => Ok(body),
                            Ok(body) => Err(format!(
                                "status {status}: {}",
                                String::from_utf8_lossy(&body)
                            )),
                            Err(e) => Err(format!("reading the body: {e:?}")),
                        }
                    }
                    Err(e) => Err(format!("{e:?}")),
                };
                let finished = Instant::now();
                let body = match outcome {
                    Ok(body) => body,
                    Err(e) => {
                        if finished >= measure_from && finished <= until {
                            stats.failed += 1;
                        }
                        stats.first_failure.get_or_insert(format!("{path}: {e}"));
                        continue;
                    }
                };
                // Check the first response of every task and every 64th after it.
                if done.is_multiple_of(64) {
                    match check(&body, &expect, &data) {
                        Ok(entities) => {
                            stats.checked += 1;
                            stats.checked_entities += entities as u64;
                        }
                        Err(e) => panic!("{kind:?} {path}: wrong answer: {e}"),
                    }
                }
                done += 1;
                // Completions inside the window count (whenever they were sent), so that
                // throughput is right even when latency is a good part of the window.
                if finished >= measure_from && finished <= until {
                    stats
                        .latencies_us
                        .push((finished - sent).as_micros().min(u32::MAX as u128) as u32);
                    stats.bytes += body.len() as u64;
                }
            }
            stats
        }));
    }
    let mut latencies = Vec::new();
    let (mut bytes, mut checked, mut checked_entities, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut first_failure = None;
    for t in tasks {
        let s = t.await.expect("load task");
        latencies.extend(s.latencies_us);
        bytes += s.bytes;
        checked += s.checked;
        checked_entities += s.checked_entities;
        failed += s.failed;
        first_failure = first_failure.or(s.first_failure);
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let requests = latencies.len();
    MixResult {
        kind,
        seconds: cfg.seconds,
        requests,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        bytes_per_response: bytes as f64 / requests.max(1) as f64,
        entities_per_response: checked_entities as f64 / checked.max(1) as f64,
        checked,
        failed,
        first_failure,
    }
}

async fn load(
    client: &reqwest::Client,
    base: &str,
    data: &[Sensor],
    batch: usize,
) -> (Duration, usize) {
    let url = format!("{base}{BASE}/entityOperations/upsert");
    let started = Instant::now();
    let mut bytes = 0;
    for chunk in data.chunks(batch) {
        let body = serde_json::to_vec(&Value::Array(chunk.iter().map(entity_json).collect()))
            .expect("JSON");
        bytes += body.len();
        let response = support::post_json(client, &url, body).await;
        let status = response.status();
        if status != reqwest::StatusCode::CREATED && status != reqwest::StatusCode::NO_CONTENT {
            let text = response.text().await.unwrap_or_default();
            panic!("upsert answered {status}: {text}");
        }
        response.bytes().await.expect("upsert body");
    }
    (started.elapsed(), bytes)
}

// ---------------------------------------------------------------------------------------------
// Raw floors

/// A column as PostgreSQL sent it, whatever its type: its length, nothing decoded.
struct Raw(usize);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.len()))
    }
    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

/// The floor of one mix: operations per second and their latency percentiles.
struct Floor {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn floor_of(mut latencies_us: Vec<u32>, seconds: f64) -> Floor {
    latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies_us.len() as f64 * p).ceil() as usize).clamp(1, latencies_us.len()) - 1;
        latencies_us[i] as f64 / 1000.0
    };
    Floor {
        ops_per_sec: latencies_us.len() as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}

/// The ids a raw page answered, in order (column 0 of every row).
fn ids_of(rows: &[tokio_postgres::Row]) -> Vec<usize> {
    rows.iter()
        .map(|r| index_of(r.get::<_, &str>(0)).expect("a generated id"))
        .collect()
}

/// The statements twinlink's PostgreSQL store sends for one request of `kind`, sent straight
/// through tokio-postgres on a connection of the floor's pool (prepared statements cached per
/// connection, as the store does): a read by id; the page of an exactly translated query with its
/// bodies, pipelined with the tenant's expiry probe (what the store sends for the entities its
/// cache lacks; for cached ones it selects ids and versions only); or, for a query SQL selects as
/// a superset, its candidates through a portal in the store's chunks, in a transaction, until a
/// chunk comes back short or a page and one more row were read (the store reads on until it has
/// a page and one more match; nothing is evaluated here). Checked like the HTTP answers: the q page
/// is the first matches in id order, every near candidate is within reach, a read by id finds its
/// entity. Returns the bytes of the bodies received.
async fn pg_request(
    client: &mut deadpool_postgres::Object,
    kind: Kind,
    expect: &Expect,
    ctx: &ActiveContext,
    cfg: &Config,
    data: &[Sensor],
    check_it: bool,
) -> usize {
    let tenant = DEFAULT_TENANT.to_string();
    if let Expect::One(i) = expect {
        let statement = client
            .prepare_cached(statements::BODIES_BY_IDS)
            .await
            .expect("prepare");
        let ids = [data[*i].id.as_str()];
        let rows = client
            .query(&statement, &[&tenant, &&ids[..]])
            .await
            .expect("read by id");
        assert_eq!(ids_of(&rows), vec![*i], "the floor's read by id");
        return rows.iter().map(|r| r.get::<_, Raw>(1).0).sum();
    }
    let point = match expect {
        Expect::Near { point, .. } => *point,
        _ => (0.0, 0.0),
    };
    let query = entity_query(kind, ctx, point, cfg.max_distance);
    let t = twinlink::store::postgres::sql::translate(&query);
    let (where_sql, mut params) = statements::where_clause(&tenant, &t);
    let (rows, body_column) = if t.exact {
        let page = statements::page(&where_sql, PageColumns::Bodies, params.len());
        let (rows_wanted, skip) = (LIMIT as i64 + 1, 0i64);
        params.extend([
            (&rows_wanted as &(dyn ToSql + Sync), Type::INT8),
            (&skip, Type::INT8),
        ]);
        let now = chrono::Utc::now();
        let (rows, due) = futures_util::future::try_join(
            client.query_typed(&page, &params),
            client.query_typed_one(
                statements::DUE_PROBE,
                &[(&tenant, Type::TEXT), (&now, Type::TIMESTAMPTZ)],
            ),
        )
        .await
        .expect("the page and the probe");
        assert!(!due.get::<_, bool>(0), "nothing expires in this bench");
        (rows, 3)
    } else {
        let tx = client.transaction().await.expect("begin");
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(p, _)| *p).collect();
        let (_, statement) = futures_util::future::try_join(
            tx.batch_execute(statements::CUSTOM_PLANS),
            tx.prepare_typed_cached(&statements::candidates(&where_sql), &types),
        )
        .await
        .expect("prepare the candidates");
        let portal = tx.bind(&statement, &values).await.expect("bind");
        let chunk = statements::candidate_chunk(0, LIMIT, false);
        let mut rows = Vec::new();
        loop {
            let got = tx
                .query_portal(&portal, chunk as i32)
                .await
                .expect("a chunk");
            let short = got.len() < chunk;
            rows.extend(got);
            if short || rows.len() > LIMIT {
                break;
            }
        }
        (rows, 0)
    };
    if check_it {
        match expect {
            Expect::QPage => {
                let got: Vec<usize> = ids_of(&rows).into_iter().take(LIMIT).collect();
                let expected: Vec<usize> = (0..data.len())
                    .filter(|&i| q_match(&data[i]))
                    .take(LIMIT)
                    .collect();
                assert_eq!(got, expected, "the floor's q page");
            }
            Expect::Near { point, max } => {
                // The candidates are a superset: the floor checks that they hold every entity
                // within reach of the point, as the broker's evaluator needs.
                let bodies: Vec<Value> = rows
                    .iter()
                    .map(|r| r.get::<_, Value>(body_column))
                    .collect();
                let got: Vec<usize> = if body_column == 0 {
                    bodies
                        .iter()
                        .map(|b| {
                            index_of(b["@id"].as_str().or(b["id"].as_str()).expect("an id"))
                                .expect("a generated id")
                        })
                        .collect()
                } else {
                    ids_of(&rows)
                };
                if got.len() <= LIMIT {
                    let (dlat, dlon) = (max / 110_000.0, max / 70_000.0);
                    let missing = (0..data.len()).find(|&i| {
                        let s = &data[i];
                        (s.lat - point.1).abs() <= dlat
                            && (s.lon - point.0).abs() <= dlon
                            && haversine_m(*point, (s.lon, s.lat)) <= max - 0.01
                            && !got.contains(&i)
                    });
                    assert!(
                        missing.is_none(),
                        "the floor's near candidates miss {missing:?}"
                    );
                }
            }
            Expect::One(_) => unreachable!("answered above"),
        }
    }
    rows.iter().map(|r| r.get::<_, Raw>(body_column).0).sum()
}

/// The PostgreSQL floor of a mix: the same requests (same generator, same seeds) as
/// [`run_mix`], as many in flight, over a pool as large as twinlink's.
async fn pg_floor(
    url: &str,
    pool_size: usize,
    kind: Kind,
    cfg: &Config,
    ctx: &Arc<ActiveContext>,
    data: &Arc<Vec<Sensor>>,
) -> Floor {
    let manager = deadpool_postgres::Manager::new(
        url.parse().expect("the bench database URL"),
        tokio_postgres::NoTls,
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(pool_size.max(1))
        .build()
        .expect("the floor's pool");
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup);
    let until = measure_from + Duration::from_secs_f64(cfg.seconds);
    let mut tasks = Vec::new();
    for t in 0..cfg.concurrency {
        let (pool, data, ctx, cfg) = (pool.clone(), data.clone(), ctx.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xC0FF_EE00 + t as u64 * 7919 + kind as u64);
            let mut latencies = Vec::new();
            let mut done = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let (_, expect) = request(kind, &mut rng, data.len(), cfg.max_distance);
                let mut client = pool.get().await.expect("a connection of the floor");
                let check_it = done.is_multiple_of(64);
                black_box(
                    pg_request(&mut client, kind, &expect, &ctx, &cfg, &data, check_it).await,
                );
                drop(client);
                done += 1;
                let finished = Instant::now();
                if finished >= measure_from && finished <= until {
                    latencies.push((finished - sent).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("floor task"));
    }
    floor_of(latencies, cfg.seconds)
}

/// The embedded store's floor of a mix: its own read calls for the same requests, on as many
/// threads as twinlink has HTTP workers (its reads are answered from memory: the redb file is
/// read when the store opens).
fn embedded_floor(
    store: &EmbeddedStore,
    kind: Kind,
    cfg: &Config,
    ctx: &ActiveContext,
    n: usize,
) -> Floor {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup);
    let until = measure_from + Duration::from_secs_f64(cfg.seconds);
    let latencies = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..cfg.workers.max(1))
            .map(|t| {
                scope.spawn(move || {
                    let mut rng = Rng(0xC0FF_EE00 + t as u64 * 7919 + kind as u64);
                    let mut latencies = Vec::new();
                    loop {
                        let sent = Instant::now();
                        if sent >= until {
                            break;
                        }
                        let (_, expect) = request(kind, &mut rng, n, cfg.max_distance);
                        let found = match expect {
                            Expect::One(i) => store
                                .get(DEFAULT_TENANT, &sensor_id(i))
                                .map_or(0, |e| e.attrs.len()),
                            Expect::QPage => {
                                let q = entity_query(kind, ctx, (0.0, 0.0), cfg.max_distance);
                                store.query(DEFAULT_TENANT, &q, 0, LIMIT, false).0.len()
                            }
                            Expect::Near { point, .. } => {
                                let q = entity_query(kind, ctx, point, cfg.max_distance);
                                store.query(DEFAULT_TENANT, &q, 0, LIMIT, false).0.len()
                            }
                        };
                        black_box(found);
                        let finished = Instant::now();
                        if finished >= measure_from && finished <= until {
                            latencies
                                .push((finished - sent).as_micros().min(u32::MAX as u128) as u32);
                        }
                    }
                    latencies
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("floor thread"))
            .collect()
    });
    floor_of(latencies, cfg.seconds)
}

// ---------------------------------------------------------------------------------------------
// In-process references

/// Runs `f` repeatedly for about `budget`, returning the operations per second.
fn ops_per_sec(budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    let mut n = 0u64;
    let mut sink = 0usize;
    // A short warm-up.
    let warm = Instant::now();
    while warm.elapsed() < budget / 10 {
        sink = sink.wrapping_add(f());
    }
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..8 {
            sink = sink.wrapping_add(f());
            n += 1;
        }
    }
    black_box(sink);
    n as f64 / start.elapsed().as_secs_f64()
}

struct Reference {
    what: String,
    ops: f64,
}

/// The plain loops: the same filter over the generated structs, no store, no JSON.
fn plain_loops(data: &[Sensor], cfg: &Config) -> Vec<Reference> {
    let budget = Duration::from_millis(1000);
    let mut out = Vec::new();
    out.push(Reference {
        what: format!("q page: first {LIMIT} of `temperature > 20 && on` in id order"),
        ops: ops_per_sec(budget, || {
            data.iter()
                .filter(|s| q_match(s))
                .take(LIMIT)
                .map(|s| s.id.len())
                .sum()
        }),
    });
    out.push(Reference {
        what: format!("q full scan: count all matches of {}", data.len()),
        ops: ops_per_sec(budget, || data.iter().filter(|s| q_match(s)).count()),
    });
    let mut rng = Rng(42);
    let max = cfg.max_distance;
    out.push(Reference {
        what: format!(
            "near page: haversine over all {}, first {LIMIT} within {max} m",
            data.len()
        ),
        ops: ops_per_sec(budget, || {
            let p = rng.point();
            data.iter()
                .filter(|s| haversine_m(p, (s.lon, s.lat)) <= max)
                .take(LIMIT)
                .count()
        }),
    });
    out
}

fn entity_query(
    kind: Kind,
    ctx: &ActiveContext,
    point: (f64, f64),
    max_distance: f64,
) -> EntityQuery {
    let typed = matches!(kind, Kind::QType | Kind::NearType);
    let selectors = if typed {
        vec![Selector {
            types: query::parse_types("Sensor", ctx).expect("type"),
            ..Selector::default()
        }]
    } else {
        Vec::new()
    };
    let (q, geo) = match kind {
        Kind::QType | Kind::Q => (Some(query::q::parse(Q, ctx).expect("q")), None),
        _ => (
            None,
            Some(
                query::geo::parse(
                    &format!("near;maxDistance=={max_distance}"),
                    "Point",
                    &format!("[{:.6},{:.6}]", point.0, point.1),
                    None,
                    ctx,
                )
                .expect("geoQ"),
            ),
        ),
    };
    EntityQuery {
        selectors,
        q,
        geo,
        ..EntityQuery::default()
    }
}

/// The broker's own query and rendering, called directly (no HTTP): store query (indexes + the
/// evaluator), then rendering the page and serializing it, each timed alone.
fn library_breakdown(
    store: &EmbeddedStore,
    ctx: &ActiveContext,
    kinds: &[Kind],
    cfg: &Config,
    n: usize,
) -> Vec<(Kind, f64, f64, f64)> {
    let budget = Duration::from_millis(1000);
    let opts = RenderOptions::default();
    let render_page = |page: &[Arc<twinlink::model::Entity>]| -> usize {
        let body = Value::Array(
            page.iter()
                .map(|e| Value::Object(render::entity(e, ctx, &opts)))
                .collect(),
        );
        body.to_string().len()
    };
    let mut out = Vec::new();
    for &kind in kinds {
        let mut rng = Rng(7);
        let (query_ops, page) = if kind == Kind::Get {
            let ops = ops_per_sec(budget, || {
                let id = sensor_id(rng.below(n));
                store.get("", &id).map_or(0, |e| e.attrs.len())
            });
            (ops, vec![store.get("", &sensor_id(0)).expect("entity 0")])
        } else {
            let ops = ops_per_sec(budget, || {
                let q = entity_query(kind, ctx, rng.point(), cfg.max_distance);
                store.query("", &q, 0, LIMIT, false).0.len()
            });
            let q = entity_query(kind, ctx, (2.35, 48.85), cfg.max_distance);
            (ops, store.query("", &q, 0, LIMIT, false).0)
        };
        let render_ops = ops_per_sec(budget, || render_page(&page));
        let render_only_ops = ops_per_sec(budget, || {
            page.iter()
                .map(|e| render::entity(e, ctx, &opts).len())
                .sum()
        });
        out.push((kind, query_ops, render_only_ops, render_ops));
    }
    out
}

/// Refreshes the planner statistics of the bench database.
async fn analyze(url: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the bench database");
    tokio::spawn(connection);
    client.batch_execute("ANALYZE").await.expect("ANALYZE");
}

/// Migrates the bench database and empties twinlink's tables, so that every run starts alike.
fn empty_database(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = twinlink::store::postgres::PgStore::connect(url, 2)
            .await
            .expect("the bench database is reachable");
        drop(store);
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the bench database");
        tokio::spawn(connection);
        client
            .batch_execute("TRUNCATE entities, attribute_instances, tenants")
            .await
            .expect("empty the bench database");
    });
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let cfg = Config::from_env();
    let kinds: Vec<Kind> = cfg.mixes.iter().map(|m| Kind::parse(m)).collect();
    let dir = tempfile::Builder::new()
        .prefix("twinlink-query-load")
        .tempdir_in(&cfg.data_parent)
        .expect("temp dir");
    let settings = Settings {
        bind: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.path().to_path_buf(),
        database_url: cfg.database_url.clone(),
        workers: cfg.workers,
        ..Settings::default()
    };
    let (max_page_size, pool_size) = (settings.max_page_size, settings.db_pool_size);
    assert!(LIMIT <= max_page_size);

    let store_name = match &cfg.database_url {
        Some(_) => "PostgreSQL".to_string(),
        None => format!("embedded, data in {}", dir.path().display()),
    };
    println!(
        "query_load: {} entities, batches of {}, {} workers, {} in flight, {} s per mix after {} s warm-up, {} client thread(s), store: {store_name}",
        cfg.entities, cfg.batch, cfg.workers, cfg.concurrency, cfg.seconds, cfg.warmup, cfg.client_threads,
    );
    if let Some(url) = &cfg.database_url {
        empty_database(url);
    }
    let data = Arc::new(generate(cfg.entities));
    let matching = data.iter().filter(|s| q_match(s)).count();
    println!(
        "generated: {} match q ({:.1} %)",
        matching,
        100.0 * matching as f64 / data.len() as f64
    );

    // The broker, in its own actix system on its own thread; the bench keeps a handle on it to
    // time its store without HTTP afterwards.
    let (server, broker) = support::Server::start(settings);
    let (handle, addr) = (server.handle.clone(), server.addr);
    let base = format!("http://{addr}");

    let rt = if cfg.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.client_threads)
            .enable_all()
            .build()
    }
    .expect("client runtime");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");

    let ctx = broker.contexts().core();
    let results = rt.block_on(async {
        let (took, bytes) = load(&client, &base, &data, cfg.batch).await;
        println!(
            "loaded {} entities in {:.1} s: {:.0} entities/s ({:.1} MB of JSON, {} batches of {})",
            data.len(),
            took.as_secs_f64(),
            data.len() as f64 / took.as_secs_f64(),
            bytes as f64 / 1e6,
            data.len().div_ceil(cfg.batch),
            cfg.batch
        );
        // The broker holds them all.
        let r = client
            .get(format!("{base}{BASE}/entities?type=Sensor&count=true&limit=0"))
            .send()
            .await
            .expect("count");
        let count = r
            .headers()
            .get("NGSILD-Results-Count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        assert_eq!(count, Some(data.len()), "the broker counts every entity");
        if let Some(url) = &cfg.database_url {
            // What autovacuum does within a minute of a bulk load: without statistics the planner
            // takes the type filter for selective and sorts every Sensor instead of walking the
            // id index.
            analyze(url).await;
        }

        let mut results = Vec::new();
        for &kind in &kinds {
            let r = run_mix(&client, &base, kind, &cfg, &data).await;
            println!(
                "{:?}: {} requests in {} s = {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} responses checked, {} failed",
                r.kind,
                r.requests,
                r.seconds,
                r.requests as f64 / r.seconds,
                r.p50_ms,
                r.p99_ms,
                r.checked,
                r.failed
            );
            if let Some(f) = &r.first_failure {
                println!("  first failure: {f}");
            }
            let floor = match (&cfg.database_url, broker.store().backend_as::<EmbeddedStore>()) {
                (Some(url), _) => pg_floor(url, pool_size, kind, &cfg, &ctx, &data).await,
                (None, Some(store)) => embedded_floor(store, kind, &cfg, &ctx, data.len()),
                (None, None) => unreachable!("without a database URL the store is embedded"),
            };
            println!(
                "{:?} floor: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms; twinlink at {:.2} of it",
                r.kind,
                floor.ops_per_sec,
                floor.p50_ms,
                floor.p99_ms,
                r.requests as f64 / r.seconds / floor.ops_per_sec
            );
            results.push((r, floor));
        }
        handle.stop(true).await;
        results
    });
    server.join();
    drop(client);
    drop(rt);

    println!();
    let floor_name = if cfg.database_url.is_some() {
        "the store's statements through tokio-postgres"
    } else {
        "the store's reads in-process"
    };
    println!("Floor: {floor_name}, in the same run at the same concurrency.");
    println!();
    println!(
        "| mix | req/s | p50 ms | p90 ms | p99 ms | max ms | entities / response | bytes / response | failed | floor ops/s | floor p50 / p99 ms | twinlink / floor |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (r, floor) in &results {
        let rate = r.requests as f64 / r.seconds;
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0} | {} | {:.0} | {:.2} / {:.2} | {:.2} |",
            r.kind.label(cfg.max_distance),
            rate,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.entities_per_response,
            r.bytes_per_response,
            r.failed,
            floor.ops_per_sec,
            floor.p50_ms,
            floor.p99_ms,
            rate / floor.ops_per_sec
        );
    }

    // Without HTTP: the broker's store query and rendering through the library.
    println!();
    match broker.store().backend_as::<EmbeddedStore>() {
        Some(store) => {
            let ctx = broker.contexts().core();
            let rows = library_breakdown(store, &ctx, &kinds, &cfg, data.len());
            println!(
                "In-process, no HTTP (one thread, the broker's store after the server stopped):"
            );
            println!();
            println!("| mix | store query ops/s | µs | render page ops/s | µs | render + serialize page ops/s | µs |");
            println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
            for (kind, q, r, rs) in rows {
                println!(
                    "| {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} |",
                    kind.label(cfg.max_distance),
                    q,
                    1e6 / q,
                    r,
                    1e6 / r,
                    rs,
                    1e6 / rs
                );
            }
        }
        None => {
            println!("(the in-process breakdown is measured on the embedded store only)")
        }
    }

    println!();
    println!(
        "Plain loops over the {} generated structs (one thread):",
        data.len()
    );
    println!();
    println!("| reference | ops/s | µs |");
    println!("| --- | ---: | ---: |");
    for r in plain_loops(&data, &cfg) {
        println!("| {} | {:.0} | {:.2} |", r.what, r.ops, 1e6 / r.ops);
    }
}
