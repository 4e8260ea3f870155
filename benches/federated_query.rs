//! Federated query bench (issue 21): a query at a broker ("hub") that federates two peers through
//! inclusive registrations, against the same query sent to each peer alone, in one run. The
//! physical limit of a federated query is the slower peer answering its own part: the hub's p50
//! is reported beside it. Then the same hub query with a peer that refuses connections and with
//! one that hangs (management.timeout) registered beside the two.
//!
//! Run: `cargo bench --bench federated_query` (embedded stores; FED_ENTITIES entities per peer,
//! default 10000; FED_REQUESTS sequential requests per measurement, default 200; FED_TIMEOUT_MS
//! the hanging peer's registration timeout, default 200).

mod support;

use serde_json::{json, Value};
use std::time::Instant;
use support::{env_or, post_json, Server};
use twinlink::config::Settings;

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        bind: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.to_path_buf(),
        workers: 1,
        ..Settings::default()
    }
}

fn base(s: &Server) -> String {
    format!("http://{}/ngsi-ld/v1", s.addr)
}

/// p50 and p99 of `requests` sequential GETs of `url`, in milliseconds; every answer must be 200
/// with `expect` entities.
async fn measure(
    client: &reqwest::Client,
    url: &str,
    requests: usize,
    expect: usize,
) -> (f64, f64) {
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let r = client.get(url).send().await.expect("request");
        assert_eq!(r.status(), 200, "{url}");
        let body: Value = r.json().await.expect("json");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(body.as_array().map(Vec::len), Some(expect), "{url}: {body}");
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (pct(0.50), pct(0.99))
}

async fn load(client: &reqwest::Client, server: &Server, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"id": format!("urn:ngsi-ld:Vehicle:{prefix}-{i:06}"), "type": "Vehicle",
                       "speed": {"type": "Property", "value": (i % 100) as i64}})
            })
            .collect();
        let r = post_json(
            client,
            &format!("{}/entityOperations/upsert", base(server)),
            Value::Array(batch).to_string(),
        )
        .await;
        assert!(r.status().is_success(), "load {prefix}: {}", r.status());
    }
}

async fn register(
    client: &reqwest::Client,
    hub: &Server,
    name: &str,
    endpoint: &str,
    timeout_ms: u64,
) {
    let body = json!({"id": format!("urn:ngsi-ld:ContextSourceRegistration:{name}"),
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Vehicle"}]}],
        "endpoint": endpoint, "management": {"timeout": timeout_ms}});
    let r = post_json(
        client,
        &format!("{}/csourceRegistrations", base(hub)),
        body.to_string(),
    )
    .await;
    assert_eq!(r.status(), 201, "register {name}");
}

fn main() {
    if !support::run_by_cargo_bench() {
        return;
    }
    let entities: usize = env_or("FED_ENTITIES", 10_000);
    let requests: usize = env_or("FED_REQUESTS", 200);
    let timeout_ms: u64 = env_or("FED_TIMEOUT_MS", 200);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (hub, _) = Server::start(settings(dirs[0].path()));
    let (a, _) = Server::start(settings(dirs[1].path()));
    let (b, _) = Server::start(settings(dirs[2].path()));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        load(&client, &a, "a", entities).await;
        load(&client, &b, "b", entities).await;
        for (name, peer) in [("a", &a), ("b", &b)] {
            register(&client, &hub, name, &format!("http://{}", peer.addr), 5_000).await;
        }
        // Selective (q matches 1 % of each peer's entities) and a plain first page.
        let queries = [
            ("q, 1 % of entities", "type=Vehicle&q=speed==42&limit=20", 20),
            ("first page", "type=Vehicle&limit=20", 20),
        ];
        println!("federated_query: {entities} entities per peer, {requests} sequential requests per row");
        println!("| query | peer A p50 / p99 ms | peer B p50 / p99 ms | hub p50 / p99 ms | hub p50 - slower peer p50 |");
        println!("|---|---|---|---|---|");
        for (label, q, n) in queries {
            // Warm up every path once.
            for s in [&a, &b, &hub] {
                let _ = client.get(format!("{}/entities?{q}", base(s))).send().await;
            }
            let (a50, a99) = measure(&client, &format!("{}/entities?{q}", base(&a)), requests, n).await;
            let (b50, b99) = measure(&client, &format!("{}/entities?{q}", base(&b)), requests, n).await;
            let (h50, h99) = measure(&client, &format!("{}/entities?{q}", base(&hub)), requests, n).await;
            println!(
                "| {label} | {a50:.2} / {a99:.2} | {b50:.2} / {b99:.2} | {h50:.2} / {h99:.2} | {:+.2} |",
                h50 - a50.max(b50)
            );
        }
        // Faulty peers beside the two: one refusing connections, one that never answers.
        let (h50, _) = measure(
            &client,
            &format!("{}/entities?type=Vehicle&q=speed==42&limit=20", base(&hub)),
            requests,
            20,
        )
        .await;
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let refused = format!("http://{}", refusing.local_addr().expect("addr"));
        drop(refusing);
        register(&client, &hub, "refusing", &refused, timeout_ms).await;
        let (r50, r99) = measure(
            &client,
            &format!("{}/entities?type=Vehicle&q=speed==42&limit=20", base(&hub)),
            requests,
            20,
        )
        .await;
        let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let hung = format!("http://{}", hanging.local_addr().expect("addr"));
        register(&client, &hub, "hanging", &hung, timeout_ms).await;
        let hang_requests = requests.min(20);
        let (g50, g99) = measure(
            &client,
            &format!("{}/entities?type=Vehicle&q=speed==42&limit=20", base(&hub)),
            hang_requests,
            20,
        )
        .await;
        drop(hanging);
        println!();
        println!("| hub with | p50 / p99 ms | added to the hub's p50 |");
        println!("|---|---|---|");
        println!("| two peers | {h50:.2} | |");
        println!("| + a peer refusing connections | {r50:.2} / {r99:.2} | {:+.2} |", r50 - h50);
        println!(
            "| + a hanging peer (timeout {timeout_ms} ms, {hang_requests} requests) | {g50:.2} / {g99:.2} | {:+.2} |",
            g50 - r50
        );
    });
    for s in [hub, a, b] {
        runtime.block_on(s.handle.stop(true));
        s.join();
    }
}
