//! kill -9 in the middle of sustained ingest (issue 20, item 5): the real `twinlink` binary takes
//! writes over HTTP (several concurrent writers) and over MQTT (QoS 1) at once, is killed with
//! SIGKILL while they flow, and is restarted on the same data directory or database. Then every
//! acknowledged write must be there, in the current state and as a row of the temporal history.
//!
//! What each transport acknowledges, and so what is counted:
//! - HTTP: a write is acknowledged by its 2xx answer. Every 2xx write must read back (current
//!   state, history row), and nothing is written twice: each history value appears once.
//! - MQTT: the publisher's PUBACK comes from the MQTT broker, not from twinlink; twinlink holds a
//!   persistent session there (clean session off, one client id across restarts) and acknowledges
//!   a message to the MQTT broker only after the write holding it committed
//!   (`src/ingest/mqtt.rs`). So every message the MQTT broker PUBACKed to the publisher, including
//!   those published while twinlink is down, must be written once twinlink is back. Messages
//!   written but not yet acknowledged when twinlink died are delivered again (at least once):
//!   their history rows may be doubled, which the test counts and prints.
//!
//! Each write carries a value of its own (a sequence number per writer) and a unique
//! `observedAt`, so history rows are counted one by one. The load lasts
//! `TWINLINK_CRASH_LOAD_SECONDS` (3 by default, for the suite; docs/reliability.md gives the long
//! form) before the kill.

use crate::common;

use common::process::Broker;
use reqwest::Method;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent HTTP writers, each on an entity of its own.
const WRITERS: usize = 4;
/// Every this many writes, a writer creates a new entity instead of updating its own.
const CREATE_EVERY: i64 = 8;
/// Pause between two MQTT publishes (about 200 messages a second).
const MQTT_PACE: Duration = Duration::from_millis(5);
/// How long twinlink stays down before it is started again.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Most messages published while twinlink is down: the MQTT broker queues them for twinlink's
/// session, up to its `max_queued_messages` (1000 by default in Mosquitto, beyond which it drops
/// them, which would be the MQTT broker's loss and not twinlink's).
const MQTT_WHILE_DOWN: usize = 400;

/// How long the load runs before the kill.
fn load_seconds() -> f64 {
    std::env::var("TWINLINK_CRASH_LOAD_SECONDS")
        .ok()
        .map(|v| v.parse().expect("TWINLINK_CRASH_LOAD_SECONDS is a number"))
        .unwrap_or(3.0)
}

/// A unique observation time for sequence number `seq`.
fn observed_at(seq: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2021-01-01T00:00:00Z").unwrap();
    (base + chrono::Duration::milliseconds(seq))
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn reading(seq: i64) -> Value {
    json!({"type": "Property", "value": seq, "observedAt": observed_at(seq)})
}

fn meter(id: &str, seq: i64) -> Value {
    json!({"id": id, "type": "Meter", "reading": reading(seq)})
}

/// What one HTTP writer sent and what was acknowledged.
#[derive(Default)]
struct Ledger {
    /// Values of `reading` sent on the writer's own entity (acknowledged or not).
    sent: BTreeSet<i64>,
    /// Those answered with 2xx.
    acked: Vec<i64>,
    /// Entities created with a 2xx answer.
    created: Vec<String>,
    /// The write in flight when the connection broke (its outcome is unknown).
    in_flight: Option<i64>,
    /// Answers neither 2xx nor a broken connection.
    refused: Vec<String>,
}

/// One HTTP writer: updates its entity's `reading` (every [`CREATE_EVERY`] writes, creates an
/// entity instead) back to back until the connection breaks (the kill).
async fn http_writer(client: reqwest::Client, base: String, w: usize) -> Ledger {
    let id = format!("urn:ngsi-ld:Meter:http{w}");
    let mut ledger = Ledger::default();
    ledger.sent.insert(0);
    ledger.acked.push(0);
    let mut seq = 0;
    loop {
        seq += 1;
        let (request, created) = if seq % CREATE_EVERY == 0 {
            let new = format!("urn:ngsi-ld:Meter:http{w}-{seq}");
            let r = client
                .post(format!("{base}/entities"))
                .json(&meter(&new, seq));
            (r, Some(new))
        } else {
            ledger.sent.insert(seq);
            let r = client
                .patch(format!("{base}/entities/{id}/attrs"))
                .json(&json!({ "reading": reading(seq) }));
            (r, None)
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => match created {
                Some(new) => ledger.created.push(new),
                None => ledger.acked.push(seq),
            },
            Ok(r) => ledger.refused.push(format!(
                "{}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(_) => {
                ledger.in_flight = created.is_none().then_some(seq);
                break;
            }
        }
    }
    ledger
}

/// A QoS 1 publisher that counts the PUBACKs it gets from the MQTT broker.
struct Publisher {
    client: AsyncClient,
    pubacks: Arc<AtomicUsize>,
}

impl Publisher {
    async fn connect() -> Publisher {
        let (host, port) = common::services::mqtt_host_port();
        let mut options = MqttOptions::new(
            format!("crash-pub-{}", uuid::Uuid::new_v4().simple()),
            host,
            port,
        );
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(options, 1000);
        let pubacks = Arc::new(AtomicUsize::new(0));
        let count = pubacks.clone();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher { client, pubacks }
    }

    async fn publish(&self, topic: &str, payload: &Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .expect("publish");
    }
}

/// Publishes a probe entity until twinlink has written it (then its MQTT session subscribes);
/// returns how many probes were published.
async fn until_ingesting(b: &Broker, publisher: &Publisher, prefix: &str) -> usize {
    let id = format!("urn:ngsi-ld:Probe:{}", uuid::Uuid::new_v4().simple());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut probes = 0;
    loop {
        probes += 1;
        publisher
            .publish(
                &format!("{prefix}/entities"),
                &json!({"id": id, "type": "Probe"}),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if b.get(&id, None, "").await.0 == 200 {
            return probes;
        }
        assert!(
            Instant::now() < deadline,
            "twinlink never took MQTT messages"
        );
    }
}

/// The values of `reading` in the temporal history of an entity, one per history row.
async fn history(client: &reqwest::Client, b: &Broker, id: &str) -> Vec<i64> {
    let r = client
        .get(b.url(&format!("/temporal/entities/{id}?attrs=reading")))
        .send()
        .await
        .expect("temporal GET");
    assert_eq!(r.status(), 200, "temporal GET of {id}");
    assert!(
        r.headers().get("content-range").is_none(),
        "the history of {id} was cut; raise --max-temporal-instances"
    );
    let body: Value = r.json().await.expect("temporal JSON");
    let instances = match &body["reading"] {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    };
    instances
        .iter()
        .map(|i| {
            let v = i["value"].as_i64().expect("an integer value");
            assert_eq!(
                i["observedAt"].as_str(),
                Some(observed_at(v).as_str()),
                "each history row keeps its own observedAt: {i}"
            );
            v
        })
        .collect()
}

/// How often each value occurs.
fn counts(values: &[i64]) -> BTreeMap<i64, usize> {
    let mut c = BTreeMap::new();
    for v in values {
        *c.entry(*v).or_insert(0) += 1;
    }
    c
}

#[actix_web::test]
async fn sigkill_during_sustained_http_and_mqtt_ingest_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let database = common::fresh_database_url().await;
    let prefix = format!("crash{}", uuid::Uuid::new_v4().simple());
    let args = vec![
        "--mqtt-url".to_string(),
        common::services::mqtt_url(),
        "--mqtt-topic-prefix".into(),
        prefix.clone(),
        "--mqtt-client-id".into(),
        format!("twinlink-{prefix}"),
        // Long runs keep more history per attribute than one temporal answer holds by default.
        "--max-temporal-instances".into(),
        "10000000".into(),
    ];
    let mut b = Broker::start_with_args(&data, &database, &args).await;
    let publisher = Publisher::connect().await;
    let probes = until_ingesting(&b, &publisher, &prefix).await;

    for w in 0..WRITERS {
        let id = format!("urn:ngsi-ld:Meter:http{w}");
        b.write(Method::POST, "/entities", None, &meter(&id, 0), 201)
            .await;
    }
    let mqtt_id = "urn:ngsi-ld:Meter:mqtt";
    b.write(Method::POST, "/entities", None, &meter(mqtt_id, 0), 201)
        .await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(http_writer(client.clone(), b.url(""), w)))
        .collect();

    // MQTT: publishes go on while twinlink is down (they wait in its session), up to a cap.
    let killed = Arc::new(AtomicBool::new(false));
    let mqtt_stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(Vec::<i64>::new()));
    let mqtt = {
        let (killed, mqtt_stop, published) = (killed.clone(), mqtt_stop.clone(), published.clone());
        let client = publisher.client.clone();
        let topic = format!("{prefix}/entities/{mqtt_id}/attrs");
        tokio::spawn(async move {
            let (mut seq, mut while_down) = (0, 0);
            while !mqtt_stop.load(Ordering::Relaxed) && while_down < MQTT_WHILE_DOWN {
                seq += 1;
                let payload = json!({ "reading": reading(seq) }).to_string();
                client
                    .publish(&topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("publish");
                published.lock().unwrap().push(seq);
                if killed.load(Ordering::Relaxed) {
                    while_down += 1;
                }
                tokio::time::sleep(MQTT_PACE).await;
            }
            while_down
        })
    };

    tokio::time::sleep(Duration::from_secs_f64(load_seconds())).await;
    b.kill();
    killed.store(true, Ordering::Relaxed);
    let mut ledgers = Vec::new();
    for w in writers {
        ledgers.push(w.await.expect("writer"));
    }
    // twinlink stays down a while, as after a crash noticed by a supervisor: MQTT messages go on
    // arriving at the MQTT broker and wait in twinlink's session.
    tokio::time::sleep(DOWN_FOR).await;
    let down_since = Instant::now();
    let b = Broker::start_with_args(&data, &database, &args).await;
    let restart = down_since.elapsed();
    mqtt_stop.store(true, Ordering::Relaxed);
    let while_down = mqtt.await.expect("publisher");
    assert!(
        while_down > 0,
        "MQTT messages were published while twinlink was down"
    );
    let published: Vec<i64> = published.lock().unwrap().clone();

    // HTTP: every acknowledged write is in the current state and, once, in the history.
    let (mut acked_total, mut created_total) = (0, 0);
    for (w, ledger) in ledgers.iter().enumerate() {
        assert!(
            ledger.refused.is_empty(),
            "writer {w}: writes refused before the kill: {:?}",
            ledger.refused
        );
        let id = format!("urn:ngsi-ld:Meter:http{w}");
        let rows = history(&client, &b, &id).await;
        let rows_by_value = counts(&rows);
        let lost: Vec<i64> = ledger
            .acked
            .iter()
            .filter(|v| !rows_by_value.contains_key(v))
            .copied()
            .collect();
        assert!(
            lost.is_empty(),
            "{id}: acknowledged writes missing from the history: {lost:?}"
        );
        let doubled: Vec<_> = rows_by_value.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubled.is_empty(),
            "{id}: history rows written twice: {doubled:?}"
        );
        let invented: Vec<_> = rows.iter().filter(|v| !ledger.sent.contains(v)).collect();
        assert!(
            invented.is_empty(),
            "{id}: history rows never sent: {invented:?}"
        );
        let last_acked = *ledger.acked.last().unwrap();
        let (status, now) = b.get(&id, None, "").await;
        assert_eq!(status, 200);
        let current = now["reading"]["value"].as_i64().expect("reading");
        assert!(
            current == last_acked || Some(current) == ledger.in_flight,
            "{id}: current value {current}, last acknowledged {last_acked}, in flight {:?}",
            ledger.in_flight
        );
        for created in &ledger.created {
            assert_eq!(
                b.get(created, None, "").await.0,
                200,
                "{created} was acknowledged"
            );
        }
        acked_total += ledger.acked.len();
        created_total += ledger.created.len();
    }

    // MQTT: the MQTT broker acknowledged every message; each must be written once twinlink is
    // back (those still queued are written after the restart).
    let deadline = Instant::now() + Duration::from_secs(60);
    while publisher.pubacks.load(Ordering::Relaxed) < probes + published.len() {
        assert!(
            Instant::now() < deadline,
            "the MQTT broker did not PUBACK every message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected: BTreeSet<i64> = published.iter().copied().chain([0]).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = history(&client, &b, mqtt_id).await;
        let have: BTreeSet<i64> = rows.iter().copied().collect();
        if expected.is_subset(&have) {
            break rows;
        }
        let missing: Vec<_> = expected.difference(&have).take(20).collect();
        assert!(
            Instant::now() < deadline,
            "MQTT messages PUBACKed but never written, {} of {}: first {missing:?}",
            expected.difference(&have).count(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let invented: Vec<_> = rows.iter().filter(|v| !expected.contains(v)).collect();
    assert!(
        invented.is_empty(),
        "MQTT history rows never published: {invented:?}"
    );
    let duplicates = rows.len() - expected.len();
    let (_, now) = b.get(mqtt_id, None, "").await;
    assert_eq!(
        now["reading"]["value"].as_i64(),
        published.last().copied(),
        "the last message published is the current value (messages are written in order)"
    );
    // Writes work after the restart.
    b.write(
        Method::PATCH,
        "/entities/urn:ngsi-ld:Meter:http0/attrs",
        None,
        &json!({"reading": reading(1_000_000_000)}),
        204,
    )
    .await;
    println!(
        "crash under load ({:.1} s, then down {DOWN_FOR:?} and started in {restart:.1?}): HTTP {acked_total} updates and \
         {created_total} creations acknowledged, 0 lost; MQTT {} messages PUBACKed ({while_down} \
         while twinlink was down), 0 lost, {duplicates} history rows written again",
        load_seconds(),
        published.len(),
    );
    drop(b);
    if let Some(url) = database {
        common::drop_database(&url);
    }
}
