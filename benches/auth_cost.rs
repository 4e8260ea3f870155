//! The cost of authentication (issue 17): GET by id and PATCH of an attribute, each with `--auth
//! jwt` on and off, in one run.
//!
//! Two brokers are started in-process on the embedded store, alike but for authentication: one
//! with none, one with `--auth jwt`, an RS256 key file (the test key of `tests/fixtures/jwt`), the
//! issuer and audience checks and one `[[grants]]` table the token passes (the path of every
//! request in production). Each gets the same N `Sensor` entities. Then, in rounds that alternate
//! off and on (so that a change of the shared machine's load falls on both), C concurrent clients
//! send R requests of one kind, each with a valid bearer token on the JWT broker; every answer is
//! checked (200 or 204). The median of the rounds is reported, and the cost of JWT as the
//! relative change of the throughput (the target is below 5 %).
//!
//! Run: `cargo bench --bench auth_cost`. Environment overrides (defaults in brackets):
//! AUTH_ENTITIES [1000], AUTH_REQUESTS [4000] per round and kind, AUTH_CLIENTS [8],
//! AUTH_ROUNDS [5], AUTH_WORKERS [2] (each broker's HTTP workers).

mod support;

use futures_util::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use support::{env_or, post_json, Server};
use twinlink::auth::{AuthMode, AuthSettings};
use twinlink::config::Settings;

const ISSUER: &str = "https://idp.bench/realms/city";
const AUDIENCE: &str = "twinlink";

/// A file of `tests/fixtures/jwt` (test-only keys).
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// The broker's settings, with or without authentication.
fn settings(dir: &std::path::Path, jwt: bool) -> Settings {
    let auth = if jwt {
        let grant: twinlink::auth::grants::Grant = toml::from_str(
            r#"claim = "realm_access.roles"
               value = "sensor-agent"
               tenants = [""]
               operations = ["read", "write"]"#,
        )
        .expect("a grant");
        AuthSettings {
            mode: AuthMode::Jwt,
            key_file: Some(fixture("rsa-public.pem")),
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            grants: vec![grant],
            ..AuthSettings::default()
        }
    } else {
        AuthSettings::default()
    };
    Settings {
        bind: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.to_path_buf(),
        workers: env_or("AUTH_WORKERS", 2),
        auth,
        ..Settings::default()
    }
}

/// A token the JWT broker accepts (valid for an hour: longer than any run).
fn token() -> String {
    let key = std::fs::read(fixture("rsa-private.pem")).expect("test key");
    let exp = chrono::Utc::now().timestamp() + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "bench", "iss": ISSUER, "aud": AUDIENCE, "exp": exp,
                "realm_access": {"roles": ["sensor-agent"]}}),
        &EncodingKey::from_rsa_pem(&key).expect("RSA key"),
    )
    .expect("token")
}

/// One broker under test, and the client that talks to it (sending the token, for the JWT one,
/// in every request).
struct Target {
    base: String,
    http: reqwest::Client,
}

impl Target {
    fn new(server: &Server, token: Option<String>) -> Target {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("a header value");
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Target {
            base: format!("http://{}/ngsi-ld/v1", server.addr),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("HTTP client"),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Get,
    Patch,
}

/// Sends `requests` requests of `kind` from `clients` concurrent clients; the seconds it took.
async fn round(t: &Target, kind: Kind, entities: usize, requests: usize, clients: usize) -> f64 {
    let started = Instant::now();
    join_all((0..clients).map(|c| async move {
        for i in (c..requests).step_by(clients) {
            let url = format!("{}/entities/urn:ngsi-ld:Sensor:{:05}", t.base, i % entities);
            let r = match kind {
                Kind::Get => t.http.get(url),
                Kind::Patch => t
                    .http
                    .patch(format!("{url}/attrs"))
                    .header("Content-Type", "application/json")
                    .body(format!(
                        r#"{{"temperature":{{"type":"Property","value":{i}}}}}"#
                    )),
            };
            let status = r
                .send()
                .await
                .expect("the request reaches twinlink")
                .status();
            let expected = if kind == Kind::Get { 200 } else { 204 };
            assert_eq!(status.as_u16(), expected, "{}", t.base);
        }
    }))
    .await;
    started.elapsed().as_secs_f64()
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let entities: usize = env_or("AUTH_ENTITIES", 1000);
    let requests: usize = env_or("AUTH_REQUESTS", 4000);
    let clients: usize = env_or("AUTH_CLIENTS", 8usize).max(1);
    let rounds: usize = env_or("AUTH_ROUNDS", 5usize).max(1);
    let (off_dir, on_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (off_server, _) = Server::start(settings(off_dir.path(), false));
    let (on_server, _) = Server::start(settings(on_dir.path(), true));
    let targets = [
        Target::new(&off_server, None),
        Target::new(&on_server, Some(token())),
    ];
    println!(
        "auth_cost: {entities} entities, {requests} requests per round from {clients} clients, \
         medians of {rounds} rounds; {} cores; load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // seconds[kind][jwt]
    let mut seconds = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    runtime.block_on(async {
        for t in &targets {
            for first in (0..entities).step_by(500) {
                let batch: Vec<_> = (first..(first + 500).min(entities))
                    .map(|i| {
                        json!({"id": format!("urn:ngsi-ld:Sensor:{i:05}"), "type": "Sensor",
                               "temperature": {"type": "Property", "value": 20.0},
                               "status": {"type": "Property", "value": "on"}})
                    })
                    .collect();
                let url = format!("{}/entityOperations/upsert", t.base);
                let body = serde_json::Value::Array(batch).to_string();
                let status = post_json(&t.http, &url, body).await.status();
                assert!(status.is_success(), "load: {status}");
            }
        }
        // Warm-up: one round of each kind on each broker, not counted.
        for (k, kind) in [Kind::Get, Kind::Patch].into_iter().enumerate() {
            for t in &targets {
                round(t, kind, entities, requests / 4, clients).await;
            }
            for n in 1..=rounds {
                // Alternate which broker goes first, so that neither always follows the other.
                let order: [usize; 2] = if n % 2 == 1 { [0, 1] } else { [1, 0] };
                for jwt in order {
                    let s = round(&targets[jwt], kind, entities, requests, clients).await;
                    seconds[k][jwt].push(s);
                }
            }
        }
    });
    println!();
    println!("| request | JWT off: req/s | JWT on: req/s | cost of JWT |");
    println!("| --- | ---: | ---: | ---: |");
    for (k, name) in ["GET /entities/{id}", "PATCH /entities/{id}/attrs"]
        .into_iter()
        .enumerate()
    {
        let off = requests as f64 / median(seconds[k][0].clone());
        let on = requests as f64 / median(seconds[k][1].clone());
        println!(
            "| {name} | {off:.0} | {on:.0} | {:+.1} % |",
            (off / on - 1.0) * 100.0
        );
        for (jwt, label) in [(0, "off"), (1, "on")] {
            let per_round: Vec<String> = seconds[k][jwt]
                .iter()
                .map(|s| format!("{:.0}", requests as f64 / s))
                .collect();
            println!(
                "  {name} JWT {label}, req/s per round: {}",
                per_round.join(", ")
            );
        }
    }
    for server in [off_server, on_server] {
        runtime.block_on(server.handle.stop(true));
        server.join();
    }
}
