//! Soak (issue 20, item 7): twinlink under a steady mixed load for an hour, its resident set and
//! its latencies sampled every minute, to show whether they stay flat.
//!
//! The release `twinlink` binary runs as a child process (`benches/child`), on PostgreSQL with
//! SOAK_DATABASE_URL (a fresh database with PostGIS, of its own) or else on the embedded store.
//! Before the clock starts the bench creates `entities` `Sensor` entities (temperature, humidity,
//! status, a location Point) and `subscriptions` subscriptions, one per entity of the first
//! `subscriptions` (`entities: [{id}]`, `watchedAttributes: [temperature]`, keyValues), each to
//! its own path of an HTTP receiver of the bench (`/notify/<i>`), and says how long that took.
//! Then, for `seconds`:
//!
//! - updates, open loop: every `tick` a batch update (`POST /entityOperations/update`) changes
//!   `temperature` of `rate × tick` subscribed entities, round robin, the value a sequence number;
//!   so every update is one notification;
//! - queries, open loop at `query_rate` a second: half GET by random id, a quarter a q page
//!   (`type=Sensor&q=status=="on";humidity>50&limit=100`), a quarter a near page
//!   (`georel=near;maxDistance==500`, random point, limit 100);
//! - every `sample_seconds`: twinlink's RSS (VmRSS) and peak (VmHWM), updates acknowledged and
//!   their latency (send to 204, p50/p99), queries and their p99, notifications received, their
//!   commit-to-receipt latency (arrival minus acknowledgement of the update's batch, negative as
//!   0; p50/p99/max) and how many did not arrive within `lost_after` of their acknowledgement.
//!
//! Each sample is a row of `<out>/soak.csv` (and the sequence numbers found missing in it lines of
//! `<out>/missing.csv`, with when their batch was acknowledged) and the plot `<out>/soak.svg` (RSS in MiB, and the
//! p99s in ms on a log scale, over time) is rewritten after each, so a run stopped early keeps
//! what it measured. Creating `<out>/stop` ends the run at the next sample.
//!
//! Run: `cargo bench --bench soak`. Environment overrides (defaults in brackets):
//! SOAK_SECONDS [3600], SOAK_SAMPLE_SECONDS [60], SOAK_RATE [2000] (updates/s), SOAK_TICK_MS [10],
//! SOAK_QUERY_RATE [50] (queries/s), SOAK_SUBSCRIPTIONS [1000], SOAK_ENTITIES [10000],
//! SOAK_WORKERS [2] (twinlink's HTTP workers), SOAK_MAX_OUTSTANDING [500] (requests of each kind
//! in flight in the client; one due beyond it is counted as not sent), SOAK_LOST_AFTER [30] (s),
//! SOAK_OUT [target/soak], SOAK_DATABASE_URL [unset: embedded store], SOAK_DATA_PARENT [/dev/shm
//! when it has room, else TMPDIR]; BENCH_TWINLINK_LOG [error] is twinlink's log level (its log goes
//! to the bench's standard error).

#[allow(dead_code)]
mod child;
// `env_or` and `run_by_cargo_bench` only: twinlink runs as a child process here.
#[allow(dead_code)]
mod support;

use actix_web::{web, App, HttpResponse, HttpServer};
use child::{quantile_ms, Rng, Twinlink};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::env_or;

const BASE: &str = "/ngsi-ld/v1";

struct Config {
    seconds: f64,
    sample_seconds: f64,
    rate: f64,
    tick: Duration,
    query_rate: f64,
    subscriptions: usize,
    entities: usize,
    workers: usize,
    max_outstanding: usize,
    lost_after: Duration,
    out: PathBuf,
    database_url: Option<String>,
}

impl Config {
    fn from_env() -> Config {
        let subscriptions = env_or("SOAK_SUBSCRIPTIONS", 1_000usize).max(1);
        Config {
            seconds: env_or("SOAK_SECONDS", 3600.0),
            sample_seconds: env_or("SOAK_SAMPLE_SECONDS", 60.0),
            rate: env_or("SOAK_RATE", 2000.0),
            tick: Duration::from_millis(env_or("SOAK_TICK_MS", 10)),
            query_rate: env_or("SOAK_QUERY_RATE", 50.0),
            subscriptions,
            entities: env_or("SOAK_ENTITIES", 10_000usize).max(subscriptions),
            workers: env_or("SOAK_WORKERS", 2),
            max_outstanding: env_or("SOAK_MAX_OUTSTANDING", 500),
            lost_after: Duration::from_secs(env_or("SOAK_LOST_AFTER", 30)),
            out: PathBuf::from(env_or("SOAK_OUT", "target/soak".to_string())),
            database_url: std::env::var("SOAK_DATABASE_URL").ok(),
        }
    }
}

fn sensor_id(i: usize) -> String {
    format!("urn:ngsi-ld:Sensor:{i:06}")
}

// ---------------------------------------------------------------------------------------------
// What a sample window collects

/// Per sequence number: when its batch was acknowledged and when its notification arrived.
#[derive(Default)]
struct Pending {
    acked: Option<Instant>,
    arrived: Option<Instant>,
}

#[derive(Default)]
struct Window {
    update_us: Vec<u64>,
    updates_sent: u64,
    update_errors: u64,
    updates_not_sent: u64,
    query_us: Vec<u64>,
    query_errors: u64,
    queries_not_sent: u64,
    notify_us: Vec<u64>,
    missing: u64,
    unmatched: u64,
    /// The missing ones: sequence number and when its batch was acknowledged.
    lost: Vec<(u64, Instant)>,
}

#[derive(Default)]
struct Tracker {
    pending: HashMap<u64, Pending>,
    window: Window,
}

type Shared = Arc<Mutex<Tracker>>;

impl Tracker {
    fn complete(&mut self, seq: u64) {
        if let Some(Pending {
            acked: Some(a),
            arrived: Some(r),
        }) = self.pending.get(&seq)
        {
            let us = r.saturating_duration_since(*a).as_micros() as u64;
            self.window.notify_us.push(us);
            self.pending.remove(&seq);
        }
    }

    fn acked(&mut self, seqs: &[u64], at: Instant) {
        for &s in seqs {
            self.pending.entry(s).or_default().acked = Some(at);
            self.complete(s);
        }
    }

    fn arrived(&mut self, seq: u64, at: Instant) {
        self.pending.entry(seq).or_default().arrived = Some(at);
        self.complete(seq);
    }

    /// Counts and forgets what waited longer than `lost_after`: acknowledged updates whose
    /// notification never came (missing), and notifications no acknowledged update explains
    /// (duplicates, or of a batch that failed).
    fn sweep(&mut self, lost_after: Duration) {
        let now = Instant::now();
        let (mut missing, mut unmatched) = (0, 0);
        let lost = &mut self.window.lost;
        self.pending.retain(|&seq, p| match (p.acked, p.arrived) {
            (Some(a), None) if now.duration_since(a) > lost_after => {
                missing += 1;
                lost.push((seq, a));
                false
            }
            (None, Some(r)) if now.duration_since(r) > lost_after => {
                unmatched += 1;
                false
            }
            _ => true,
        });
        self.window.missing += missing;
        self.window.unmatched += unmatched;
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver

/// Serves `POST /notify/{i}` on a port of its own until the process ends; returns the port.
fn http_receiver(tracker: Shared) -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("listen");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let tracker = tracker.clone();
                App::new().route(
                    "/notify/{i}",
                    web::post().to(move |body: web::Bytes| {
                        let tracker = tracker.clone();
                        async move {
                            let at = Instant::now();
                            if let Ok(n) = serde_json::from_slice::<Value>(&body) {
                                // Sequence numbers start at 1; 0 is the value the entities were
                                // created with (the notification every new subscription sends).
                                match n["data"][0]["temperature"].as_u64() {
                                    Some(seq) if seq > 0 => {
                                        tracker.lock().unwrap().arrived(seq, at)
                                    }
                                    _ => {}
                                }
                            }
                            HttpResponse::NoContent().finish()
                        }
                    }),
                )
            })
            .workers(2)
            .listen(listener)
            .expect("receiver listens")
            .run()
            .await
        })
    });
    port
}

// ---------------------------------------------------------------------------------------------
// Set-up

async fn prepare(cfg: &Config, client: &reqwest::Client, base: &str, receiver: u16) -> f64 {
    let mut rng = Rng(0x50a6);
    for first in (0..cfg.entities).step_by(1000) {
        let batch: Vec<Value> = (first..(first + 1000).min(cfg.entities))
            .map(|i| {
                let (lon, lat) = rng.point();
                json!({"id": sensor_id(i), "type": "Sensor",
                       "temperature": {"type": "Property", "value": 0, "unitCode": "CEL"},
                       "humidity": {"type": "Property", "value": rng.below(1000) as f64 / 10.0},
                       "status": {"type": "Property", "value": if rng.next_u64() & 1 == 1 { "on" } else { "off" }},
                       "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}})
            })
            .collect();
        let status = client
            .post(format!("{base}{BASE}/entityOperations/upsert"))
            .header("Content-Type", "application/json")
            .body(Value::Array(batch).to_string())
            .send()
            .await
            .expect("upsert")
            .status();
        assert!(status.is_success(), "entities load: {status}");
    }
    let started = Instant::now();
    for i in 0..cfg.subscriptions {
        let sub = json!({
            "id": format!("urn:ngsi-ld:Subscription:soak:{i:05}"),
            "type": "Subscription",
            "entities": [{"id": sensor_id(i), "type": "Sensor"}],
            "watchedAttributes": ["temperature"],
            "notification": {"format": "keyValues", "attributes": ["temperature"],
                             "endpoint": {"uri": format!("http://127.0.0.1:{receiver}/notify/{i}"),
                                          "accept": "application/json"}}
        });
        let status = client
            .post(format!("{base}{BASE}/subscriptions"))
            .header("Content-Type", "application/json")
            .body(sub.to_string())
            .send()
            .await
            .expect("subscription")
            .status();
        assert_eq!(status.as_u16(), 201, "subscription {i}");
        if (i + 1) % 100 == 0 {
            println!(
                "  {} subscriptions after {:.1} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Load

/// Sends the updates until `end`, open loop.
async fn updates(
    cfg: Arc<Config>,
    client: reqwest::Client,
    base: String,
    tracker: Shared,
    end: Instant,
) {
    let per_tick = (cfg.rate * cfg.tick.as_secs_f64()).round().max(1.0) as u64;
    let url = format!("{base}{BASE}/entityOperations/update");
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut clock = tokio::time::interval(cfg.tick);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = 1u64;
    while Instant::now() < end {
        clock.tick().await;
        let seqs: Vec<u64> = (next..next + per_tick).collect();
        next += per_tick;
        if outstanding.load(Ordering::Relaxed) >= cfg.max_outstanding {
            tracker.lock().unwrap().window.updates_not_sent += per_tick;
            continue;
        }
        let body: Vec<Value> = seqs
            .iter()
            .map(|&s| {
                json!({"id": sensor_id((s as usize - 1) % cfg.subscriptions), "type": "Sensor",
                       "temperature": {"type": "Property", "value": s}})
            })
            .collect();
        outstanding.fetch_add(1, Ordering::Relaxed);
        let (client, url, tracker, outstanding) = (
            client.clone(),
            url.clone(),
            tracker.clone(),
            outstanding.clone(),
        );
        tokio::spawn(async move {
            let sent = Instant::now();
            let r = client
                .post(&url)
                .header("Content-Type", "application/json")
                .body(Value::Array(body).to_string())
                .send()
                .await;
            let acked = Instant::now();
            let mut t = tracker.lock().unwrap();
            t.window.updates_sent += seqs.len() as u64;
            match r {
                Ok(r) if r.status() == 204 => {
                    t.window
                        .update_us
                        .push(acked.duration_since(sent).as_micros() as u64);
                    t.acked(&seqs, acked);
                }
                _ => t.window.update_errors += seqs.len() as u64,
            }
            drop(t);
            outstanding.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Sends the queries until `end`, open loop.
async fn queries(
    cfg: Arc<Config>,
    client: reqwest::Client,
    base: String,
    tracker: Shared,
    end: Instant,
) {
    if cfg.query_rate <= 0.0 {
        return;
    }
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut clock = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.query_rate));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = Rng(0xc0ffee);
    let mut n = 0u64;
    while Instant::now() < end {
        clock.tick().await;
        n += 1;
        if outstanding.load(Ordering::Relaxed) >= cfg.max_outstanding {
            tracker.lock().unwrap().window.queries_not_sent += 1;
            continue;
        }
        let path = match n % 4 {
            0 => format!(
                "{BASE}/entities?type=Sensor&q=status%3D%3D%22on%22%3Bhumidity%3E50&limit=100"
            ),
            1 => {
                let (lon, lat) = rng.point();
                format!("{BASE}/entities?type=Sensor&georel=near%3BmaxDistance%3D%3D500&geometry=Point&coordinates=%5B{lon}%2C{lat}%5D&limit=100")
            }
            _ => format!("{BASE}/entities/{}", sensor_id(rng.below(cfg.entities))),
        };
        outstanding.fetch_add(1, Ordering::Relaxed);
        let (client, url, tracker, outstanding) = (
            client.clone(),
            format!("{base}{path}"),
            tracker.clone(),
            outstanding.clone(),
        );
        tokio::spawn(async move {
            let sent = Instant::now();
            let ok = match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                _ => false,
            };
            let took = sent.elapsed().as_micros() as u64;
            let mut t = tracker.lock().unwrap();
            if ok {
                t.window.query_us.push(took);
            } else {
                t.window.query_errors += 1;
            }
            drop(t);
            outstanding.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Samples, CSV and plot

struct Row {
    minutes: f64,
    rss: f64,
    hwm: f64,
    updates_sent: u64,
    updates_acked: u64,
    update_errors: u64,
    updates_not_sent: u64,
    update_p50: f64,
    update_p99: f64,
    queries: u64,
    query_errors: u64,
    query_p50: f64,
    query_p99: f64,
    notifications: u64,
    notify_p50: f64,
    notify_p99: f64,
    notify_max: f64,
    missing: u64,
    unmatched: u64,
    pending: usize,
    load: String,
}

const CSV_HEADER: &str = "minutes,rss_mib,peak_rss_mib,updates_sent,updates_acked,update_errors,\
updates_not_sent,update_p50_ms,update_p99_ms,queries,query_errors,query_p50_ms,query_p99_ms,\
notifications,notify_p50_ms,notify_p99_ms,notify_max_ms,missing,unmatched,pending,load1\n";

impl Row {
    fn csv(&self) -> String {
        format!(
            "{:.2},{:.1},{:.1},{},{},{},{},{:.2},{:.2},{},{},{:.2},{:.2},{},{:.2},{:.2},{:.2},{},{},{},{}\n",
            self.minutes,
            self.rss,
            self.hwm,
            self.updates_sent,
            self.updates_acked,
            self.update_errors,
            self.updates_not_sent,
            self.update_p50,
            self.update_p99,
            self.queries,
            self.query_errors,
            self.query_p50,
            self.query_p99,
            self.notifications,
            self.notify_p50,
            self.notify_p99,
            self.notify_max,
            self.missing,
            self.unmatched,
            self.pending,
            self.load.split_whitespace().next().unwrap_or(""),
        )
    }
}

/// Takes the window's figures as a row, and appends its missing sequence numbers to `lost_log`
/// (`seq,acked_s`: the number and when its batch was acknowledged, in seconds from `started`), so
/// that a loss can be traced to its batch and time in twinlink's log.
fn take_sample(
    tracker: &Shared,
    twinlink: &Twinlink,
    started: Instant,
    lost_after: Duration,
    lost_log: &mut std::fs::File,
) -> Row {
    let mut t = tracker.lock().unwrap();
    t.sweep(lost_after);
    let mut w = std::mem::take(&mut t.window);
    let pending = t.pending.len();
    drop(t);
    w.lost.sort_unstable();
    let lines: String = w
        .lost
        .iter()
        .map(|(seq, at)| {
            let acked = at.saturating_duration_since(started).as_secs_f64();
            format!("{seq},{acked:.3}\n")
        })
        .collect();
    lost_log.write_all(lines.as_bytes()).expect("write");
    w.update_us.sort_unstable();
    w.query_us.sort_unstable();
    w.notify_us.sort_unstable();
    Row {
        minutes: started.elapsed().as_secs_f64() / 60.0,
        rss: twinlink.memory_mib("VmRSS"),
        hwm: twinlink.memory_mib("VmHWM"),
        updates_sent: w.updates_sent,
        updates_acked: w.updates_sent - w.update_errors,
        update_errors: w.update_errors,
        updates_not_sent: w.updates_not_sent,
        update_p50: quantile_ms(&w.update_us, 0.5),
        update_p99: quantile_ms(&w.update_us, 0.99),
        queries: w.query_us.len() as u64,
        query_errors: w.query_errors + w.queries_not_sent,
        query_p50: quantile_ms(&w.query_us, 0.5),
        query_p99: quantile_ms(&w.query_us, 0.99),
        notifications: w.notify_us.len() as u64,
        notify_p50: quantile_ms(&w.notify_us, 0.5),
        notify_p99: quantile_ms(&w.notify_us, 0.99),
        notify_max: quantile_ms(&w.notify_us, 1.0),
        missing: w.missing,
        unmatched: w.unmatched,
        pending,
        load: child::load_average(),
    }
}

/// A polyline of `points` (x, y) in chart coordinates, dropping non-finite values.
fn polyline(points: &[(f64, f64)], colour: &str) -> String {
    let pts: Vec<String> = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    format!(
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
        pts.join(" ")
    )
}

/// The plot: RSS (MiB, linear) above, the p99s (ms, log scale) below, minutes across.
fn svg(rows: &[Row], title: &str) -> String {
    let (w, left, right, top_h, gap) = (860.0, 70.0, 20.0, 220.0, 70.0);
    let plot_w = w - left - right;
    let max_min = rows.iter().map(|r| r.minutes).fold(1.0, f64::max);
    let x = |m: f64| left + plot_w * m / max_min;
    let mut s = String::new();
    let h = 40.0 + top_h + gap + top_h + 50.0;
    s += &format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">{title}</text>\n"
    );
    // RSS chart.
    let y0 = 40.0;
    let rss_max = rows.iter().map(|r| r.hwm.max(r.rss)).fold(1.0, f64::max) * 1.15;
    let step = nice_step(rss_max / 5.0);
    let yr = |v: f64| y0 + top_h - top_h * v / rss_max;
    let mut v = 0.0;
    while v <= rss_max {
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>\n",
            left + plot_w,
            left - 6.0,
            yr(v) + 4.0,
            y = yr(v)
        );
        v += step;
    }
    s += &format!(
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">RSS MiB</text>\n",
        y0 + top_h / 2.0,
        y0 + top_h / 2.0
    );
    s += &polyline(
        &rows
            .iter()
            .map(|r| (x(r.minutes), yr(r.rss)))
            .collect::<Vec<_>>(),
        "#1f77b4",
    );
    s += &polyline(
        &rows
            .iter()
            .map(|r| (x(r.minutes), yr(r.hwm)))
            .collect::<Vec<_>>(),
        "#aec7e8",
    );
    s += &legend(
        left + 10.0,
        y0 + 14.0,
        &[("#1f77b4", "RSS"), ("#aec7e8", "peak RSS (VmHWM)")],
    );
    // p99 chart, log scale from 0.1 ms to the next power of ten above the largest value.
    let y1 = y0 + top_h + gap;
    let largest = rows
        .iter()
        .flat_map(|r| [r.update_p99, r.query_p99, r.notify_p99])
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let (lo, hi) = (-1.0f64, largest.log10().ceil().max(1.0));
    let yl = |v: f64| {
        let l = v.max(0.1).log10();
        y1 + top_h - top_h * (l - lo) / (hi - lo)
    };
    let mut e = lo;
    while e <= hi {
        let v = 10f64.powf(e);
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left + plot_w,
            left - 6.0,
            yl(v) + 4.0,
            if v < 1.0 { format!("{v:.1}") } else { format!("{v:.0}") },
            y = yl(v)
        );
        e += 1.0;
    }
    s += &format!(
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">p99 ms (log)</text>\n",
        y1 + top_h / 2.0,
        y1 + top_h / 2.0
    );
    for (colour, f) in [
        ("#d62728", (|r: &Row| r.notify_p99) as fn(&Row) -> f64),
        ("#2ca02c", |r: &Row| r.update_p99),
        ("#9467bd", |r: &Row| r.query_p99),
    ] {
        s += &polyline(
            &rows
                .iter()
                .map(|r| (x(r.minutes), yl(f(r))))
                .collect::<Vec<_>>(),
            colour,
        );
    }
    s += &legend(
        left + 10.0,
        y1 + 14.0,
        &[
            ("#d62728", "notification commit-to-receipt p99"),
            ("#2ca02c", "update ack p99"),
            ("#9467bd", "query p99"),
        ],
    );
    // Time axis under both charts.
    let base = y1 + top_h;
    let tstep = nice_step(max_min / 6.0);
    let mut m = 0.0;
    while m <= max_min + 1e-9 {
        for y in [y0 + top_h, base] {
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{m}</text>\n",
                x(m),
                y + 16.0
            );
        }
        m += tstep;
    }
    s += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">minutes</text>\n",
        left + plot_w / 2.0,
        base + 36.0
    );
    for y in [y0, y1] {
        s += &format!(
            "<rect x=\"{left}\" y=\"{y}\" width=\"{plot_w}\" height=\"{top_h}\" fill=\"none\" stroke=\"#888\"/>\n"
        );
    }
    s += "</svg>\n";
    s
}

fn legend(x: f64, y: f64, items: &[(&str, &str)]) -> String {
    let mut s = String::new();
    let mut at = x;
    for (colour, label) in items {
        s += &format!(
            "<line x1=\"{at}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{label}</text>\n",
            at + 18.0,
            y - 4.0,
            y - 4.0,
            at + 22.0,
            y
        );
        at += 40.0 + 6.5 * label.len() as f64;
    }
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

// ---------------------------------------------------------------------------------------------

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
    runtime.block_on(run(Arc::new(cfg)));
}

async fn run(cfg: Arc<Config>) {
    let store = if cfg.database_url.is_some() {
        "PostgreSQL"
    } else {
        "embedded"
    };
    println!(
        "soak ({store}): {} s, {} updates/s in batches every {} ms over {} subscribed entities, \
         {} queries/s over {} entities, a sample every {} s; {} cores; load {}",
        cfg.seconds,
        cfg.rate,
        cfg.tick.as_millis(),
        cfg.subscriptions,
        cfg.query_rate,
        cfg.entities,
        cfg.sample_seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        child::load_average()
    );
    std::fs::create_dir_all(&cfg.out).expect("the output directory");
    let stop_file = cfg.out.join("stop");
    let _ = std::fs::remove_file(&stop_file);
    let tracker: Shared = Default::default();
    let receiver = http_receiver(tracker.clone());
    // The embedded store's history of an hour at 2,000 updates/s: a few GB.
    let parent = child::data_parent("SOAK_DATA_PARENT", 8 << 30);
    let dir = tempfile::tempdir_in(&parent).expect("data directory");
    let mut twinlink = Twinlink::start(
        cfg.database_url.as_deref(),
        dir.path(),
        cfg.workers,
        &[],
        None,
    )
    .await;
    println!("twinlink pid {}", twinlink.pid());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let took = prepare(&cfg, &client, &twinlink.base, receiver).await;
    println!(
        "created {} entities and {} subscriptions; the subscriptions took {took:.1} s; RSS {:.1} MiB",
        cfg.entities,
        cfg.subscriptions,
        twinlink.memory_mib("VmRSS")
    );
    // Let the notifications of the current state, one per new subscription, pass.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let csv_path = cfg.out.join("soak.csv");
    let svg_path = cfg.out.join("soak.svg");
    let mut csv = std::fs::File::create(&csv_path).expect("soak.csv");
    csv.write_all(CSV_HEADER.as_bytes()).expect("write");
    let title = format!(
        "twinlink soak, {store}: {} updates/s, {} subscriptions, {} queries/s",
        cfg.rate, cfg.subscriptions, cfg.query_rate
    );
    let lost_path = cfg.out.join("missing.csv");
    let mut lost_log = std::fs::File::create(&lost_path).expect("missing.csv");
    lost_log.write_all(b"seq,acked_s\n").expect("write");
    let started = Instant::now();
    let mut rows = vec![take_sample(
        &tracker,
        &twinlink,
        started,
        cfg.lost_after,
        &mut lost_log,
    )];
    csv.write_all(rows[0].csv().as_bytes()).expect("write");
    println!(
        "| min | RSS MiB | peak | updates acked | errors | not sent | ack p50 / p99 ms | queries | q errors | query p50 / p99 ms | notifications | notify p50 / p99 / max ms | missing | unmatched | load |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let end = started + Duration::from_secs_f64(cfg.seconds);
    let load = tokio::spawn(updates(
        cfg.clone(),
        client.clone(),
        twinlink.base.clone(),
        tracker.clone(),
        end,
    ));
    let reads = tokio::spawn(queries(
        cfg.clone(),
        client.clone(),
        twinlink.base.clone(),
        tracker.clone(),
        end,
    ));
    let mut next = started;
    loop {
        next += Duration::from_secs_f64(cfg.sample_seconds);
        let stop = stop_file.exists();
        if next > end || stop {
            if stop {
                println!("(stopped early: {} exists)", stop_file.display());
            }
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        twinlink.check_alive();
        let r = take_sample(&tracker, &twinlink, started, cfg.lost_after, &mut lost_log);
        println!(
            "| {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.1} / {:.1} | {} | {} | {:.1} / {:.1} | {} | {:.1} / {:.1} / {:.1} | {} | {} | {} |",
            r.minutes,
            r.rss,
            r.hwm,
            r.updates_acked,
            r.update_errors,
            r.updates_not_sent,
            r.update_p50,
            r.update_p99,
            r.queries,
            r.query_errors,
            r.query_p50,
            r.query_p99,
            r.notifications,
            r.notify_p50,
            r.notify_p99,
            r.notify_max,
            r.missing,
            r.unmatched,
            r.load
        );
        csv.write_all(r.csv().as_bytes()).expect("write");
        rows.push(r);
        std::fs::write(&svg_path, svg(&rows, &title)).expect("soak.svg");
    }
    if stop_file.exists() {
        load.abort();
        reads.abort();
    } else {
        let _ = load.await;
        let _ = reads.await;
    }
    // Summary: first and last third of the samples after the first.
    let steady: Vec<&Row> = rows.iter().skip(1).collect();
    if steady.len() >= 2 {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for r in &steady {
            xs.push(r.minutes);
            ys.push(r.rss);
        }
        let n = xs.len() as f64;
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
        println!(
            "RSS slope over the samples: {:.3} MiB/min ({:.1} MiB/hour); first {:.1}, last {:.1}, \
             peak {:.1} MiB",
            sxy / sxx,
            60.0 * sxy / sxx,
            steady[0].rss,
            steady[steady.len() - 1].rss,
            steady[steady.len() - 1].hwm
        );
    }
    let total: u64 = rows.iter().map(|r| r.notifications).sum();
    let missing: u64 = rows.iter().map(|r| r.missing).sum();
    let acked: u64 = rows.iter().map(|r| r.updates_acked).sum();
    println!(
        "updates acknowledged {acked}, notifications received {total}, missing {missing}; csv {}, \
         plot {}",
        csv_path.display(),
        svg_path.display()
    );
    drop(twinlink);
}
