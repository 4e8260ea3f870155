//! The cost of the data-model checks (issue 18): batch upsert of `AirQualityObserved` entities
//! with the Smart Data Models rules of the model in `reject` mode, against the rules off, in one
//! run.
//!
//! Two brokers are started in-process on the embedded store, alike but for one `[[data-models]]`
//! binding (dataModel.Environment/AirQualityObserved, mode `reject`) on the checked one. Then, in
//! rounds that alternate off and on (so that a change of the shared machine's load falls on
//! both), C concurrent clients send B batch upserts of E entities each: every entity is the
//! model's Madrid example (16 attributes, every one with a rule) with new values, so that every
//! entity is checked and passes; every answer must be 204 (all written). The median of the rounds
//! is reported, and the cost of the checks as the relative change of the throughput (the target
//! is below 10 %).
//!
//! Run: `cargo bench --bench data_model_checks`. Environment overrides (defaults in brackets):
//! DMC_ENTITIES [500] distinct ids, DMC_BATCH [100] entities per upsert, DMC_BATCHES [60] upserts
//! per round, DMC_CLIENTS [4], DMC_ROUNDS [5], DMC_WORKERS [2] (each broker's HTTP workers).

mod support;

use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Instant;
use support::{env_or, post_json, Server};
use twinlink::config::Settings;
use twinlink::model::conformance::{Binding, Mode};

const ENV: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld";

/// The broker's settings, with or without the rules.
fn settings(dir: &std::path::Path, checked: bool) -> Settings {
    let binding = Binding {
        tenant: String::new(),
        model: Some("dataModel.Environment/AirQualityObserved".into()),
        type_iri: None,
        mode: Mode::Reject,
        schema: None,
        territory: None,
    };
    Settings {
        bind: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.to_path_buf(),
        workers: env_or("DMC_WORKERS", 2),
        data_models: if checked { vec![binding] } else { Vec::new() },
        ..Settings::default()
    }
}

/// Entity `i` of the load, its values moved by `n` so that every upsert changes it.
fn entity(i: usize, n: usize) -> Value {
    let v = (i + n) as f64;
    json!({
        "id": format!("urn:ngsi-ld:AirQualityObserved:{i:05}"),
        "type": "AirQualityObserved",
        "dateObserved": {"type": "Property", "value": "2016-03-15T11:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.71, 40.42]}},
        "address": {"type": "Property", "value": {"addressCountry": "ES", "addressLocality": "Madrid"}},
        "areaServed": {"type": "Property", "value": "Brooklands"},
        "airQualityIndex": {"type": "Property", "value": v},
        "airQualityLevel": {"type": "Property", "value": "moderate"},
        "co": {"type": "Property", "value": 500.0 + v, "unitCode": "GP"},
        "no2": {"type": "Property", "value": 69.0 + v, "unitCode": "GQ"},
        "so2": {"type": "Property", "value": 11.0 + v, "unitCode": "GQ"},
        "temperature": {"type": "Property", "value": 12.2},
        "precipitation": {"type": "Property", "value": 0},
        "typeofLocation": {"type": "Property", "value": "outdoor"},
        "reliability": {"type": "Property", "value": 0.7},
        "source": {"type": "Property", "value": "http://datos.madrid.es"},
        "refPointOfInterest": {"type": "Relationship", "object": "urn:ngsi-ld:PointOfInterest:1"},
        "relativeHumidity": {"type": "Property", "value": 0.54}
    })
}

/// The load's shape.
#[derive(Clone, Copy)]
struct Load {
    entities: usize,
    batch: usize,
    batches: usize,
    clients: usize,
}

/// Sends one batch upsert (with the client's Link to the Environment @context) and checks its
/// status.
async fn upsert(http: &reqwest::Client, base: &str, body: String, expected: u16) {
    let r = post_json(http, &format!("{base}/entityOperations/upsert"), body).await;
    let status = r.status().as_u16();
    assert_eq!(status, expected, "{}", r.text().await.unwrap_or_default());
}

/// Sends the round's upserts (bodies made beforehand) from the clients, each answered 204 (all
/// updated); the seconds it took.
async fn round(http: &reqwest::Client, base: &str, bodies: &[String], clients: usize) -> f64 {
    let started = Instant::now();
    join_all((0..clients).map(|c| async move {
        for body in bodies.iter().skip(c).step_by(clients) {
            upsert(http, base, body.clone(), 204).await;
        }
    }))
    .await;
    started.elapsed().as_secs_f64()
}

/// The bodies of round `n`: `batches` upserts, each of `batch` consecutive entities.
fn bodies(load: Load, n: usize) -> Vec<String> {
    (0..load.batches)
        .map(|b| {
            let first = b * load.batch;
            let batch: Vec<Value> = (first..first + load.batch)
                .map(|i| entity(i % load.entities, n))
                .collect();
            Value::Array(batch).to_string()
        })
        .collect()
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let load = Load {
        entities: env_or("DMC_ENTITIES", 500usize).max(1),
        batch: env_or("DMC_BATCH", 100usize).max(1),
        batches: env_or("DMC_BATCHES", 60usize).max(1),
        clients: env_or("DMC_CLIENTS", 4usize).max(1),
    };
    let rounds: usize = env_or("DMC_ROUNDS", 5usize).max(1);
    let (off_dir, on_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (off_server, _) = Server::start(settings(off_dir.path(), false));
    let (on_server, _) = Server::start(settings(on_dir.path(), true));
    let bases = [off_server.addr, on_server.addr].map(|a| format!("http://{a}/ngsi-ld/v1"));
    let per_round = load.batch * load.batches;
    println!(
        "data_model_checks: {} upserts of {} AirQualityObserved entities ({} ids) per round from {} \
         clients, medians of {rounds} rounds; {} cores; load {}",
        load.batches,
        load.batch,
        load.entities,
        load.clients,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut headers = reqwest::header::HeaderMap::new();
    let link = format!(
        r#"<{ENV}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json""#
    );
    headers.insert(reqwest::header::LINK, link.parse().expect("a header value"));
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // seconds[checked]
    let mut seconds = [Vec::new(), Vec::new()];
    runtime.block_on(async {
        // Every entity exists before the rounds (an upsert then replaces it), and a round of
        // each broker warms it up, not counted.
        for base in &bases {
            let ids = (0..load.entities).map(|i| entity(i, 0)).collect();
            upsert(&http, base, Value::Array(ids).to_string(), 201).await;
            round(&http, base, &bodies(load, 0), load.clients).await;
        }
        // The checks are on where they should be: a wrong no2 fails that entity there only.
        let mut bad = entity(load.entities, 0);
        bad["no2"] = json!({"type": "Property", "value": "high"});
        let body = Value::Array(vec![bad]).to_string();
        upsert(&http, &bases[0], body.clone(), 201).await;
        upsert(&http, &bases[1], body, 207).await;
        for n in 1..=rounds {
            let bodies = bodies(load, n);
            // Alternate which broker goes first, so that neither always follows the other.
            let order: [usize; 2] = if n % 2 == 1 { [0, 1] } else { [1, 0] };
            for checked in order {
                let s = round(&http, &bases[checked], &bodies, load.clients).await;
                seconds[checked].push(s);
            }
        }
    });
    let off = per_round as f64 / median(seconds[0].clone());
    let on = per_round as f64 / median(seconds[1].clone());
    println!();
    println!(
        "| batch upsert | rules off: entities/s | rules reject: entities/s | cost of the checks |"
    );
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| {} AirQualityObserved per request | {off:.0} | {on:.0} | {:+.1} % |",
        load.batch,
        (off / on - 1.0) * 100.0
    );
    for (checked, label) in [(0, "off"), (1, "reject")] {
        let rates: Vec<String> = seconds[checked]
            .iter()
            .map(|s| format!("{:.0}", per_round as f64 / s))
            .collect();
        println!(
            "  rules {label}, entities/s per round: {}",
            rates.join(", ")
        );
    }
    for server in [off_server, on_server] {
        runtime.block_on(server.handle.stop(true));
        server.join();
    }
}
