//! Notification latency (issue 20, item 1): from a committed update to the receipt of its
//! notification, with 1,000 subscriptions, at fixed update rates, to HTTP and to MQTT receivers,
//! on the embedded store and (with NOTIFY_LATENCY_DATABASE_URL) on PostgreSQL.
//!
//! twinlink runs in-process (`support::Server`). N `Sensor` entities are created, and one
//! subscription per entity (`entities: [{id}]`, `watchedAttributes: [temperature]`, keyValues),
//! each to its own receiver path (HTTP: `http://127.0.0.1:<port>/notify/<i>` served by an actix
//! server of the bench; MQTT: `mqtt://<broker>/<prefix>/<i>` read by a subscriber of the bench).
//! The load is open-loop: every `tick` a batch update (`POST /entityOperations/update`) changes
//! `temperature` of `rate × tick` entities, round robin, the value being a sequence number; so
//! every update is one notification, and the rate does not bend to the broker's speed. For each
//! sequence number the bench keeps when its batch was sent and when the broker acknowledged it
//! (the commit is between the two), and the receivers note when its notification arrived.
//! Latency is arrival minus acknowledgement (commit to receipt, to within the time the
//! acknowledgement takes to reach the client; negative values, a notification arriving before
//! the acknowledgement, count as 0) and, as an upper bound, arrival minus sending. Reported: p50,
//! p99, max, and how many notifications arrived (all must, or the run says how many did not).
//!
//! Beside them: how busy the host's CPUs were over each run (from `/proc/stat`) and how many cores
//! this process (twinlink, load generator and receivers) used: a run whose host was busy all the
//! time measured queueing for CPU, not twinlink's own path.
//!
//! Target (issue 20): p99 < 10 ms at 5,000 updates/s.
//!
//! Run: `cargo bench --bench notification_latency`, with TWINLINK_TEST_MQTT_URL (or
//! NOTIFY_LATENCY_MQTT_URL) for MQTT receivers and NOTIFY_LATENCY_DATABASE_URL for PostgreSQL (the
//! bench empties twinlink's tables there: give it a database of its own). Environment overrides
//! (defaults in brackets): NOTIFY_LATENCY_SUBSCRIPTIONS [1000], NOTIFY_LATENCY_RATES [2000,5000]
//! (updates/s), NOTIFY_LATENCY_SECONDS [10] per rate, NOTIFY_LATENCY_TICK_MS [10],
//! NOTIFY_LATENCY_RECEIVERS [http,mqtt], NOTIFY_LATENCY_STORES [embedded,postgres],
//! NOTIFY_LATENCY_WORKERS [2] (twinlink's HTTP workers), NOTIFY_LATENCY_CONCURRENCY [8] (`--notification-concurrency`; several, e.g. `8,32`, run one after the other).
//! With NOTIFY_LATENCY_TRACE=<dir>, each run's notifications (sent, acknowledged, arrived, in ms
//! since the run began) are written to `<dir>/<store>-<receiver>-<in flight>-<rate>.csv`.

mod support;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{env_or, post_json, Server};
use twinlink::config::Settings;

/// When each notification arrived, by sequence number (the value it carries).
type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

/// The sequence number a notification carries: `data[0].temperature` in keyValues.
fn sequence_of(notification: &Value) -> Option<u64> {
    notification["data"][0]["temperature"].as_u64()
}

/// Serves `POST /notify/{i}` on a port of its own until the process ends; returns the port.
fn http_receiver(arrivals: Arrivals) -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("listen");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let arrivals = arrivals.clone();
                App::new().route(
                    "/notify/{i}",
                    web::post().to(move |body: web::Bytes| {
                        let arrivals = arrivals.clone();
                        async move {
                            let at = Instant::now();
                            if let Ok(n) = serde_json::from_slice::<Value>(&body) {
                                if let Some(seq) = sequence_of(&n) {
                                    arrivals.lock().unwrap().insert(seq, at);
                                }
                            }
                            HttpResponse::NoContent().finish()
                        }
                    }),
                )
            })
            .workers(1)
            .listen(listener)
            .expect("receiver listens")
            .run()
            .await
        })
    });
    port
}

/// Subscribes to `<prefix>/#` on the MQTT broker and notes each notification's arrival.
async fn mqtt_receiver(url: &str, prefix: &str, arrivals: Arrivals) {
    let url = url::Url::parse(url).expect("an MQTT URL");
    let mut options = rumqttc::MqttOptions::new(
        format!("latency-bench-{}", std::process::id()),
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(1883),
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10_000);
    events.set_network_options(twinlink::subscription::mqtt::socket_options());
    client
        .subscribe(format!("{prefix}/#"), rumqttc::QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let at = Instant::now();
                    if let Ok(m) = serde_json::from_slice::<Value>(&p.payload) {
                        if let Some(seq) = sequence_of(&m["body"]) {
                            arrivals.lock().unwrap().insert(seq, at);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the bench's MQTT subscriber failed: {e}"),
            }
        }
    });
    subscribed.await.expect("subscribed");
}

fn entity_id(i: usize) -> String {
    format!("urn:ngsi-ld:Sensor:{i:05}")
}

/// The latencies of one rate, in microseconds, sorted; and how many notifications never came.
struct Run {
    after_ack: Vec<u64>,
    after_send: Vec<u64>,
    missing: usize,
    sent: usize,
    achieved_rate: f64,
    /// The host's CPUs, busy share over the run (1.0: every core busy all the time).
    host_busy: f64,
    /// The CPU time of this process (twinlink, the load and the receivers) over the run, in cores.
    process_cores: f64,
    /// Per notification: sequence number, then sent, acknowledged and arrived, in ms since the
    /// run began (for NOTIFY_LATENCY_TRACE).
    trace: Vec<(u64, f64, f64, f64)>,
}

/// The host's CPU time (all CPUs together, in clock ticks) busy and in all so far, from the first
/// line of `/proc/stat`, and this process's own (`/proc/self/stat`): read before and after a run,
/// they tell whether the run had CPU left, and how much of it twinlink's process took (the rest
/// is the database, the MQTT broker and whatever else the host runs).
struct Cpu {
    busy: u64,
    total: u64,
    process: u64,
}

impl Cpu {
    fn now() -> Cpu {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .expect("the cpu line")
            .split_whitespace()
            .skip(1)
            .map(|t| t.parse().expect("a tick count"))
            .collect();
        // user nice system idle iowait irq softirq steal (guest times are within user and nice).
        let total: u64 = ticks.iter().take(8).sum();
        let own = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        let fields: Vec<&str> = own[own.rfind(')').expect("stat") + 2..]
            .split_whitespace()
            .collect();
        Cpu {
            busy: total - ticks[3] - ticks[4],
            total,
            process: fields[11].parse::<u64>().expect("utime")
                + fields[12].parse::<u64>().expect("stime"),
        }
    }

    /// (host busy share, this process's CPU in cores) between `earlier` and now.
    fn since(earlier: &Cpu) -> (f64, f64) {
        let later = Cpu::now();
        let total = (later.total - earlier.total).max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (
            (later.busy - earlier.busy) as f64 / total,
            (later.process - earlier.process) as f64 / total * cores,
        )
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The load generator of one broker: where it sends updates and where the arrivals are noted.
struct Load<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    entities: usize,
    tick: Duration,
    arrivals: &'a Arrivals,
}

impl Load<'_> {
    /// Sends `rate` updates/s for `seconds`, open loop, numbered from `first_seq`, and collects
    /// the latencies.
    async fn drive(&self, rate: usize, seconds: u64, first_seq: u64) -> Run {
        let Load {
            client,
            base,
            entities,
            tick,
            arrivals,
        } = *self;
        let per_tick = ((rate as f64) * tick.as_secs_f64()).round().max(1.0) as usize;
        let ticks = (seconds as f64 / tick.as_secs_f64()).round() as usize;
        let times: Arc<Mutex<HashMap<u64, (Instant, Instant)>>> = Default::default();
        let url = format!("{base}/entityOperations/update");
        let started = Instant::now();
        let cpu = Cpu::now();
        let mut next = first_seq;
        let mut pending = Vec::with_capacity(ticks);
        let mut clock = tokio::time::interval(tick);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..ticks {
            clock.tick().await;
            let seqs: Vec<u64> = (next..next + per_tick as u64).collect();
            next += per_tick as u64;
            let body: Vec<Value> = seqs
                .iter()
                .map(|&s| {
                    json!({"id": entity_id(s as usize % entities), "type": "Sensor",
                       "temperature": {"type": "Property", "value": s}})
                })
                .collect();
            let (client, url, times) = (client.clone(), url.clone(), times.clone());
            pending.push(tokio::spawn(async move {
                let sent = Instant::now();
                let status = post_json(&client, &url, Value::Array(body).to_string())
                    .await
                    .status();
                let acked = Instant::now();
                assert_eq!(status.as_u16(), 204, "a batch update is acknowledged");
                let mut times = times.lock().unwrap();
                for s in seqs {
                    times.insert(s, (sent, acked));
                }
            }));
        }
        for p in pending {
            p.await.expect("an update task");
        }
        let elapsed = started.elapsed().as_secs_f64();
        // Give the last notifications time to arrive (at most two seconds past the last ack).
        let deadline = Instant::now() + Duration::from_secs(2);
        let expected: Vec<u64> = (first_seq..next).collect();
        while Instant::now() < deadline {
            let all_arrived = {
                let got = arrivals.lock().unwrap();
                expected.iter().all(|s| got.contains_key(s))
            };
            if all_arrived {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (host_busy, process_cores) = Cpu::since(&cpu);
        let (got, times) = (arrivals.lock().unwrap(), times.lock().unwrap());
        let (mut after_ack, mut after_send, mut missing) = (Vec::new(), Vec::new(), 0);
        let mut trace = Vec::new();
        let ms = |t: &Instant| t.saturating_duration_since(started).as_secs_f64() * 1000.0;
        for s in &expected {
            match (got.get(s), times.get(s)) {
                (Some(at), Some((sent, acked))) => {
                    after_ack.push(at.saturating_duration_since(*acked).as_micros() as u64);
                    after_send.push(at.saturating_duration_since(*sent).as_micros() as u64);
                    trace.push((*s, ms(sent), ms(acked), ms(at)));
                }
                _ => missing += 1,
            }
        }
        after_ack.sort_unstable();
        after_send.sort_unstable();
        Run {
            after_ack,
            after_send,
            missing,
            sent: expected.len(),
            achieved_rate: expected.len() as f64 / elapsed,
            host_busy,
            process_cores,
            trace,
        }
    }
}

/// Writes a run's per-notification times to `<dir>/<name>.csv` (NOTIFY_LATENCY_TRACE): where in
/// the run the slow notifications were, to tell a periodic stall from a queue.
fn write_trace(dir: &str, name: &str, trace: &[(u64, f64, f64, f64)]) {
    use std::fmt::Write;
    let mut csv = String::from("seq,sent_ms,acked_ms,arrived_ms\n");
    for (seq, sent, acked, arrived) in trace {
        let _ = writeln!(csv, "{seq},{sent:.3},{acked:.3},{arrived:.3}");
    }
    std::fs::create_dir_all(dir).expect("NOTIFY_LATENCY_TRACE: a directory");
    std::fs::write(format!("{dir}/{name}.csv"), csv).expect("the trace is written");
}

/// Creates the entities and one subscription per entity, each to `endpoint(i)`.
async fn prepare(
    client: &reqwest::Client,
    base: &str,
    entities: usize,
    endpoint: &dyn Fn(usize) -> String,
) {
    for first in (0..entities).step_by(500) {
        let batch: Vec<Value> = (first..(first + 500).min(entities))
            .map(|i| {
                json!({"id": entity_id(i), "type": "Sensor",
                       "temperature": {"type": "Property", "value": 0}})
            })
            .collect();
        let url = format!("{base}/entityOperations/upsert");
        let status = post_json(client, &url, Value::Array(batch).to_string())
            .await
            .status();
        assert!(status.is_success(), "entities load: {status}");
    }
    for i in 0..entities {
        let sub = json!({
            "id": format!("urn:ngsi-ld:Subscription:latency:{i:05}"),
            "type": "Subscription",
            "entities": [{"id": entity_id(i), "type": "Sensor"}],
            "watchedAttributes": ["temperature"],
            "notification": {"format": "keyValues", "attributes": ["temperature"],
                             "endpoint": {"uri": endpoint(i), "accept": "application/json"}}
        });
        let status = post_json(client, &format!("{base}/subscriptions"), sub.to_string())
            .await
            .status();
        assert_eq!(status.as_u16(), 201, "subscription {i}");
    }
}

fn settings(dir: &std::path::Path, database: Option<String>, lanes: usize) -> Settings {
    Settings {
        bind: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.to_path_buf(),
        database_url: database,
        workers: env_or("NOTIFY_LATENCY_WORKERS", 2),
        notification_concurrency: lanes,
        ..Settings::default()
    }
}

/// Empties twinlink's tables of the bench database (its own: the bench says so).
async fn empty_database(url: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the bench database");
    tokio::spawn(connection);
    for table in [
        "entities",
        "attribute_instances",
        "entity_changes",
        "subscriptions",
        "tenants",
    ] {
        // A table that does not exist yet (a fresh database) is fine: the broker makes it.
        let _ = client.batch_execute(&format!("TRUNCATE {table}")).await;
    }
}

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let entities: usize = env_or("NOTIFY_LATENCY_SUBSCRIPTIONS", 1000);
    let rates: Vec<usize> = env_or("NOTIFY_LATENCY_RATES", "2000,5000".to_string())
        .split(',')
        .map(|r| r.trim().parse().expect("NOTIFY_LATENCY_RATES: numbers"))
        .collect();
    let seconds: u64 = env_or("NOTIFY_LATENCY_SECONDS", 10);
    let tick = Duration::from_millis(env_or("NOTIFY_LATENCY_TICK_MS", 10));
    let receivers = env_or("NOTIFY_LATENCY_RECEIVERS", "http,mqtt".to_string());
    let stores = env_or("NOTIFY_LATENCY_STORES", "embedded,postgres".to_string());
    let mqtt_url = std::env::var("NOTIFY_LATENCY_MQTT_URL")
        .or_else(|_| std::env::var("TWINLINK_TEST_MQTT_URL"))
        .ok();
    let database_url = std::env::var("NOTIFY_LATENCY_DATABASE_URL").ok();
    // Notifications in flight per receiver (`--notification-concurrency`), each in its own run.
    let concurrencies: Vec<usize> = env_or("NOTIFY_LATENCY_CONCURRENCY", "8".to_string())
        .split(',')
        .map(|r| {
            r.trim()
                .parse()
                .expect("NOTIFY_LATENCY_CONCURRENCY: numbers")
        })
        .collect();
    println!(
        "notification_latency: {entities} subscriptions (one per entity), rates {rates:?} \
         updates/s for {seconds} s each, a batch every {} ms; {} cores; load {}",
        tick.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!();
    println!("| store | receiver | in flight | rate asked | rate sent | notifications | p50 ms | p99 ms | max ms | p99 after send ms | host CPU busy | bench process, cores |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let arrivals: Arrivals = Default::default();
    let http_port = http_receiver(arrivals.clone());
    let prefix = format!("latency-bench/{}", std::process::id());
    let mut seq = 1u64;
    // One MQTT subscriber for the whole run (a second one with its client id would make the
    // MQTT broker drop the first).
    let mut mqtt_listening = false;
    for store in stores.split(',').map(str::trim) {
        let database = match store {
            "embedded" => None,
            "postgres" => match &database_url {
                Some(url) => Some(url.clone()),
                None => {
                    println!("(PostgreSQL skipped: NOTIFY_LATENCY_DATABASE_URL is not set)");
                    continue;
                }
            },
            other => panic!("NOTIFY_LATENCY_STORES: unknown store {other}"),
        };
        for receiver in receivers.split(',').map(str::trim) {
            let endpoint: Box<dyn Fn(usize) -> String> = match receiver {
                "http" => Box::new(move |i| format!("http://127.0.0.1:{http_port}/notify/{i}")),
                "mqtt" => match &mqtt_url {
                    Some(url) => {
                        let (url, prefix) = (url.clone(), prefix.clone());
                        Box::new(move |i| format!("{}/{prefix}/{i}", url.trim_end_matches('/')))
                    }
                    None => {
                        println!("(MQTT skipped: no TWINLINK_TEST_MQTT_URL)");
                        continue;
                    }
                },
                other => panic!("NOTIFY_LATENCY_RECEIVERS: unknown receiver {other}"),
            };
            for &lanes in &concurrencies {
                if let Some(url) = &database {
                    runtime.block_on(empty_database(url));
                }
                let dir = tempfile::tempdir().expect("a data directory");
                let (server, _) = Server::start(settings(dir.path(), database.clone(), lanes));
                let base = format!("http://{}/ngsi-ld/v1", server.addr);
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(64)
                    .build()
                    .expect("HTTP client");
                runtime.block_on(async {
                if receiver == "mqtt" && !mqtt_listening {
                    let url = mqtt_url.as_deref().expect("checked above");
                    mqtt_receiver(url, &prefix, arrivals.clone()).await;
                    mqtt_listening = true;
                }
                prepare(&client, &base, entities, &*endpoint).await;
                // Creating a subscription notifies the current state (one per entity); let
                // those pass, then a short warm-up at the lowest rate.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let load = Load {
                    client: &client,
                    base: &base,
                    entities,
                    tick,
                    arrivals: &arrivals,
                };
                let warm = load.drive(rates[0], 1, seq).await;
                seq += warm.sent as u64;
                for &rate in &rates {
                    let run = load.drive(rate, seconds, seq).await;
                    seq += run.sent as u64;
                    if let Ok(dir) = std::env::var("NOTIFY_LATENCY_TRACE") {
                        write_trace(&dir, &format!("{store}-{receiver}-{lanes}-{rate}"), &run.trace);
                    }
                    println!(
                        "| {store} | {receiver} | {lanes} | {rate} | {:.0} | {} of {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} % | {:.2} |",
                        run.achieved_rate,
                        run.sent - run.missing,
                        run.sent,
                        percentile(&run.after_ack, 0.5),
                        percentile(&run.after_ack, 0.99),
                        percentile(&run.after_ack, 1.0),
                        percentile(&run.after_send, 0.99),
                        100.0 * run.host_busy,
                        run.process_cores,
                    );
                }
            });
                runtime.block_on(server.handle.stop(true));
                server.join();
            }
        }
    }
}
