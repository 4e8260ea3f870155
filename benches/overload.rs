//! Overload at 10× the sustainable write rate (issue 20, item 5): what admission control
//! (`--max-inflight-writes`, src/http/admission.rs) keeps when far more writes arrive than the
//! store takes.
//!
//! The bench starts the release `twinlink` binary as a child process (so that its memory is its
//! own: the peak resident set is read from `/proc/<pid>/status` VmHWM), creates `entities` Meter
//! entities, then:
//!
//! 1. sustainable rate: `concurrency` writers in a closed loop (each sends its next write when the
//!    last one is answered), PATCH /entities/{id}/attrs of one attribute on a random entity, for
//!    `seconds` after a warm-up; the rate of 204 answers is the sustainable rate R;
//! 2. overload: writes offered open-loop at `factor` × R for `seconds` (each sent at its scheduled
//!    instant, whether or not earlier ones were answered), against `--max-inflight-writes`
//!    `limit`. Reported: admitted throughput (204/s) and its ratio to R, the refused share, the
//!    latency of refusals and of admitted writes (p50/p99, from sending to the answer), that
//!    every refusal is a 503 with Retry-After, anything else (errors, timeouts, other statuses),
//!    and the peak RSS of twinlink beside its RSS after phase 1.
//!
//! The client runs on `client_threads` tokio threads of the bench process; with its sends at most
//! `max_outstanding` at once (a send beyond that is counted as not sent: the client, not
//! twinlink, was the limit). Retry-After is not followed: an overloaded client that retried at
//! once would only add offered load.
//!
//! Run: `cargo bench --bench overload`; OVERLOAD_DATABASE_URL=postgres://... for PostgreSQL
//! instead of the embedded store (a database of its own: twinlink's tables there are written
//! to). Environment overrides (defaults in brackets): OVERLOAD_SECONDS [10], OVERLOAD_WARMUP [2],
//! OVERLOAD_CONCURRENCY [32], OVERLOAD_FACTOR [10], OVERLOAD_LIMIT [64] (--max-inflight-writes),
//! OVERLOAD_ENTITIES [1000], OVERLOAD_WORKERS [2] (twinlink's HTTP workers),
//! OVERLOAD_CLIENT_THREADS [2], OVERLOAD_MAX_OUTSTANDING [20000], OVERLOAD_DATA_PARENT [TMPDIR],
//! OVERLOAD_BROKER_CPUS [unset: anywhere] (a `taskset -c` list for twinlink, e.g. `0`; run the
//! bench itself under `taskset -c` with the other CPUs so that client and broker never share one).

// twinlink runs as a child process here (`child`), so that its peak memory is its own; of
// `support`, only `env_or` is used, and of `child` only the process.
#[allow(dead_code)]
mod child;
#[allow(dead_code)]
mod support;

use child::Twinlink;
use support::env_or;

use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Config {
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    factor: f64,
    limit: usize,
    entities: usize,
    workers: usize,
    client_threads: usize,
    max_outstanding: usize,
    database_url: Option<String>,
    data_parent: PathBuf,
    broker_cpus: Option<String>,
}

impl Config {
    fn from_env() -> Config {
        Config {
            seconds: env_or("OVERLOAD_SECONDS", 10.0),
            warmup: env_or("OVERLOAD_WARMUP", 2.0),
            concurrency: env_or("OVERLOAD_CONCURRENCY", 32usize).max(1),
            factor: env_or("OVERLOAD_FACTOR", 10.0),
            limit: env_or("OVERLOAD_LIMIT", 64usize).max(1),
            entities: env_or("OVERLOAD_ENTITIES", 1000usize).max(1),
            workers: env_or("OVERLOAD_WORKERS", 2),
            client_threads: env_or("OVERLOAD_CLIENT_THREADS", 2usize).max(1),
            max_outstanding: env_or("OVERLOAD_MAX_OUTSTANDING", 20_000),
            database_url: std::env::var("OVERLOAD_DATABASE_URL").ok(),
            data_parent: std::env::var_os("OVERLOAD_DATA_PARENT")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            broker_cpus: std::env::var("OVERLOAD_BROKER_CPUS").ok(),
        }
    }
}

fn meter_id(i: usize) -> String {
    format!("urn:ngsi-ld:Meter:{i:06}")
}

/// A small deterministic generator of entity indexes (xorshift), one per writer.
struct Pick(u64);

impl Pick {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One write: PATCH of the `reading` attribute of entity `i`.
fn write(client: &reqwest::Client, base: &str, i: usize, value: u64) -> reqwest::RequestBuilder {
    client
        .patch(format!("{base}/ngsi-ld/v1/entities/{}/attrs", meter_id(i)))
        .header("Content-Type", "application/json")
        .body(json!({"reading": {"type": "Property", "value": value}}).to_string())
}

/// The value at quantile `p` of sorted durations, in milliseconds.
fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// The answers of one phase.
#[derive(Default)]
struct Outcomes {
    admitted: Vec<Duration>,
    refused: Vec<Duration>,
    refused_without_retry_after: usize,
    other: Vec<String>,
}

/// Phase 1: `concurrency` writers in a closed loop; returns the rate of 204s and their latencies,
/// and how many writes the warm-up before them made.
async fn closed_loop(cfg: &Config, client: &reqwest::Client, base: &str) -> (f64, Outcomes, usize) {
    let run = |seconds: f64| {
        let writers: Vec<_> = (0..cfg.concurrency)
            .map(|w| {
                let (client, base, entities) = (client.clone(), base.to_string(), cfg.entities);
                tokio::spawn(async move {
                    let mut pick = Pick(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                    let mut out = Outcomes::default();
                    let end = Instant::now() + Duration::from_secs_f64(seconds);
                    let mut value = 0;
                    while Instant::now() < end {
                        value += 1;
                        let started = Instant::now();
                        let r = write(&client, &base, pick.next(entities), value)
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 204 => out.admitted.push(started.elapsed()),
                            Ok(r) => out.other.push(r.status().to_string()),
                            Err(e) => out.other.push(e.to_string()),
                        }
                    }
                    out
                })
            })
            .collect();
        async move {
            let mut all = Outcomes::default();
            for w in writers {
                let out = w.await.expect("writer");
                all.admitted.extend(out.admitted);
                all.other.extend(out.other);
            }
            all
        }
    };
    let warm_up = run(cfg.warmup).await.admitted.len();
    let started = Instant::now();
    let mut out = run(cfg.seconds).await;
    let elapsed = started.elapsed().as_secs_f64();
    out.admitted.sort();
    (out.admitted.len() as f64 / elapsed, out, warm_up)
}

/// Phase 2: writes offered at `rate` per second open-loop for the configured time.
async fn open_loop(
    cfg: &Config,
    client: &reqwest::Client,
    base: &str,
    rate: f64,
) -> (f64, usize, usize, Outcomes) {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut not_sent = 0;
    let mut pick = Pick(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    let total = (rate * cfg.seconds).round() as usize;
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        if outstanding.load(Ordering::Relaxed) >= cfg.max_outstanding {
            not_sent += 1;
            continue;
        }
        outstanding.fetch_add(1, Ordering::Relaxed);
        let request = write(client, base, pick.next(cfg.entities), n as u64);
        let (outcomes, outstanding) = (outcomes.clone(), outstanding.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = request.send().await;
            let took = sent.elapsed();
            let mut o = outcomes.lock().unwrap();
            match r {
                Ok(r) if r.status() == 204 => o.admitted.push(took),
                Ok(r) if r.status() == 503 => {
                    o.refused.push(took);
                    if r.headers().get("retry-after").is_none() {
                        o.refused_without_retry_after += 1;
                    }
                }
                Ok(r) => o.other.push(r.status().to_string()),
                Err(e) => o.other.push(e.to_string()),
            }
            drop(o);
            outstanding.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    let offered_for = started.elapsed().as_secs_f64();
    println!(
        "offered {total} writes in {offered_for:.1} s ({:.0}/s asked {rate:.0}/s)",
        total as f64 / offered_for
    );
    for t in tasks {
        t.await.expect("request task");
    }
    let answered_by = started.elapsed().as_secs_f64();
    let mut out = std::mem::take(&mut *outcomes.lock().unwrap());
    out.admitted.sort();
    out.refused.sort();
    // Admitted throughput over the time the load was offered and its answers came back.
    let admitted_rate = out.admitted.len() as f64 / answered_by.max(offered_for);
    (admitted_rate, total, not_sent, out)
}

/// The kinds of unexpected answers, counted.
fn summary(other: &[String]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for o in other {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .take(5)
        .map(|(k, n)| format!("{n}× {k}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

/// The environment variable that makes this executable the refusal floor (below) instead of the
/// bench: `<port>,<workers>`.
const FLOOR_SERVE: &str = "OVERLOAD_FLOOR_SERVE";

/// The refusal floor: an actix-web server doing nothing but refuse, as twinlink does under
/// overload (the request body read and dropped, 503 with Retry-After and a ProblemDetails body of
/// the same length), with as many workers. Its CPU time per answer is what refusing over HTTP/1.1
/// costs at the least; twinlink's own cost per refusal is compared with it.
fn serve_floor(spec: &str) {
    let (port, workers) = spec.split_once(',').expect("<port>,<workers>");
    let (port, workers): (u16, usize) = (
        port.parse().expect("a port"),
        workers.parse().expect("a worker count"),
    );
    let body = json!({
        "type": "https://uri.etsi.org/ngsi-ld/errors/ServiceUnavailable",
        "title": "ServiceUnavailable",
        "status": 503,
        "detail": "twinlink is serving 64 writes already, its limit (--max-inflight-writes); retry after 1 s",
    })
    .to_string();
    actix_web::rt::System::new().block_on(async move {
        actix_web::HttpServer::new(move || {
            let body = body.clone();
            actix_web::App::new().default_service(actix_web::web::to(
                move |_drained: actix_web::web::Bytes| {
                    let body = body.clone();
                    async move {
                        actix_web::HttpResponse::ServiceUnavailable()
                            .insert_header(("Retry-After", "1"))
                            .content_type("application/json")
                            .body(body)
                    }
                },
            ))
        })
        .workers(workers)
        .bind(("127.0.0.1", port))
        .expect("the floor's port")
        .run()
        .await
        .expect("the floor server");
    });
}

/// The refusal floor as a child process on twinlink's CPUs, killed when dropped.
struct Floor {
    child: std::process::Child,
    base: String,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Floor {
    async fn start(cfg: &Config) -> Floor {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let exe = std::env::current_exe().expect("this executable");
        let child = child::placed(&exe, cfg.broker_cpus.as_deref())
            .env(FLOOR_SERVE, format!("{port},{}", cfg.workers))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the floor server starts");
        let floor = Floor {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(&floor.base).send().await.is_ok() {
                return floor;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the floor server did not answer within 5 s");
    }
}

fn main() {
    if let Ok(spec) = std::env::var(FLOOR_SERVE) {
        return serve_floor(&spec);
    }
    if !support::run_by_cargo_bench() {
        return;
    }
    let cfg = Config::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.client_threads)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(cfg));
}

async fn run(cfg: Config) {
    let store = if cfg.database_url.is_some() {
        "postgres"
    } else {
        "embedded"
    };
    println!(
        "overload ({store}): {} entities, closed loop {} writers, then {}× that rate open-loop, \
         {} s each, --max-inflight-writes {}, twinlink --workers {} on CPUs {}, {} client threads; \
         {} cores for the bench; load {}",
        cfg.entities,
        cfg.concurrency,
        cfg.factor,
        cfg.seconds,
        cfg.limit,
        cfg.workers,
        cfg.broker_cpus.as_deref().unwrap_or("any"),
        cfg.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let dir = tempfile::tempdir_in(&cfg.data_parent).expect("data directory");
    let limit = cfg.limit.to_string();
    let twinlink = Twinlink::start(
        cfg.database_url.as_deref(),
        dir.path(),
        cfg.workers,
        &["--max-inflight-writes", &limit],
        cfg.broker_cpus.as_deref(),
    )
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency.max(256))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    for chunk in (0..cfg.entities).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|i| json!({"id": meter_id(*i), "type": "Meter", "reading": {"type": "Property", "value": 0}}))
            .collect();
        let r = support::post_json(
            &client,
            &format!("{}/ngsi-ld/v1/entityOperations/upsert", twinlink.base),
            serde_json::to_vec(&batch).unwrap(),
        )
        .await;
        assert!(r.status().is_success(), "entities created: {}", r.status());
    }

    let cpu_before = twinlink.cpu_seconds();
    let (sustainable, closed, warm_up) = closed_loop(&cfg, &client, &twinlink.base).await;
    let closed_cpu = twinlink.cpu_seconds() - cpu_before;
    let rss_after_closed = twinlink.memory_mib("VmRSS");
    let hwm_after_closed = twinlink.memory_mib("VmHWM");
    println!(
        "sustainable (closed loop): {sustainable:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms; \
         unexpected: {}; twinlink RSS {rss_after_closed:.0} MiB (peak {hwm_after_closed:.0})",
        quantile_ms(&closed.admitted, 0.5),
        quantile_ms(&closed.admitted, 0.99),
        summary(&closed.other),
    );
    assert!(sustainable > 0.0, "no write succeeded in the closed loop");

    let offered = sustainable * cfg.factor;
    let cpu_before = twinlink.cpu_seconds();
    let (admitted_rate, total, not_sent, out) =
        open_loop(&cfg, &client, &twinlink.base, offered).await;
    let open_cpu = twinlink.cpu_seconds() - cpu_before;
    let sent = total - not_sent;
    let peak = twinlink.memory_mib("VmHWM");
    let rss = twinlink.memory_mib("VmRSS");
    println!(
        "overload (open loop at {offered:.0}/s): {total} offered, {sent} sent ({not_sent} not \
         sent: the client's outstanding cap); admitted {} = {admitted_rate:.0}/s, {:.2}× the \
         sustainable rate; refused {} ({:.1} % of sent), all 503 with Retry-After: {}",
        out.admitted.len(),
        admitted_rate / sustainable,
        out.refused.len(),
        100.0 * out.refused.len() as f64 / sent.max(1) as f64,
        if out.refused_without_retry_after == 0 {
            "yes".to_string()
        } else {
            format!("no, {} without", out.refused_without_retry_after)
        },
    );
    println!(
        "latency: refusals p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; admitted p50 {:.2} ms, \
         p99 {:.2} ms; unexpected answers: {}",
        quantile_ms(&out.refused, 0.5),
        quantile_ms(&out.refused, 0.99),
        quantile_ms(&out.refused, 1.0),
        quantile_ms(&out.admitted, 0.5),
        quantile_ms(&out.admitted, 0.99),
        summary(&out.other),
    );
    println!(
        "memory: twinlink peak RSS (VmHWM) {peak:.0} MiB after the overload, {hwm_after_closed:.0} \
         MiB after the closed loop; RSS now {rss:.0} MiB"
    );
    drop(twinlink);

    // What refusing costs at the least: the floor server, same placement and workers, offered the
    // same rate by the same client.
    let floor = Floor::start(&cfg).await;
    let cpu_before = child::cpu_seconds(floor.child.id());
    let (_, floor_total, floor_not_sent, floor_out) =
        open_loop(&cfg, &client, &floor.base, offered).await;
    let floor_cpu = child::cpu_seconds(floor.child.id()) - cpu_before;
    drop(floor);
    let floor_answers = floor_out.refused.len();
    println!(
        "refusal floor (actix-web answering 503 to everything): {} sent, {floor_answers} refused, refusals p50 {:.2} ms, p99 {:.2} ms; unexpected answers: {}",
        floor_total - floor_not_sent,
        quantile_ms(&floor_out.refused, 0.5),
        quantile_ms(&floor_out.refused, 0.99),
        summary(&floor_out.other),
    );
    // Where twinlink's CPU went: a write's cost from the closed loop (warm-up included), a
    // refusal's from the overload once its admitted writes are taken out at that cost.
    let write_us = 1e6 * closed_cpu / (closed.admitted.len() + warm_up) as f64;
    let refusal_us = 1e6 * (open_cpu - out.admitted.len() as f64 * write_us / 1e6)
        / out.refused.len().max(1) as f64;
    let floor_us = 1e6 * floor_cpu / floor_answers.max(1) as f64;
    println!(
        "CPU: a write {write_us:.1} µs, a refusal {refusal_us:.1} µs in twinlink against {floor_us:.1} µs for the floor ({:.2}×); during the overload twinlink used {open_cpu:.1} CPU-s, {:.0} % of it refusing",
        refusal_us / floor_us,
        100.0 * refusal_us * out.refused.len() as f64 / 1e6 / open_cpu.max(f64::MIN_POSITIVE),
    );
}
