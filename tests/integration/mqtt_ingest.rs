//! MQTT ingestion against a real Mosquitto: entities and attribute fragments published on the topic
//! scheme are written (default and named tenants, normalized/concise/keyValues payloads, a default
//! @context per topic prefix), bad payloads are reported on the error topic without stopping
//! ingestion, and QoS 1 messages published while the MQTT broker restarts are not lost.
//!
//! Every test uses its own topic prefix and client ids on the shared test Mosquitto
//! (TWINLINK_TEST_MQTT_URL, started by scripts/test.sh); the restart test runs a Mosquitto of its own.

use crate::common;

use common::{free_port, link, metric, ContextServer, TestServer};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub(crate) fn unique(what: &str) -> String {
    format!("{what}{}", uuid::Uuid::new_v4().simple())
}

/// A test-side MQTT client: publishes, and collects what arrives on its subscriptions.
pub(crate) struct Peer {
    client: AsyncClient,
    received: tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
}

impl Peer {
    pub(crate) async fn connect(url: &str) -> Peer {
        let parsed = url::Url::parse(url).expect("MQTT URL");
        let mut options = MqttOptions::new(
            unique("peer"),
            parsed.host_str().expect("host"),
            parsed.port().unwrap_or(1883),
        );
        options.set_keep_alive(Duration::from_secs(5));
        let (client, eventloop) = AsyncClient::new(options, 1000);
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(drive(eventloop, tx));
        Peer { client, received }
    }

    pub(crate) async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }

    pub(crate) async fn subscribe(&self, topic: &str) {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }

    /// The next message received, within 10 s.
    pub(crate) async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(10), self.received.recv())
            .await
            .expect("a message on the error topic within 10 s")
            .expect("the peer is connected")
    }
}

async fn drive(mut eventloop: EventLoop, tx: tokio::sync::mpsc::UnboundedSender<(String, Value)>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                if tx.send((p.topic.clone(), body)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A broker ingesting `prefix` from the MQTT broker at `url`.
async fn broker(url: &str, prefix: &str, contexts: Vec<(String, String)>) -> TestServer {
    broker_with(url, prefix, move |s| s.mqtt_contexts = contexts).await
}

/// A broker ingesting `prefix` from the MQTT broker at `url`, its settings adjusted.
pub(crate) async fn broker_with(
    url: &str,
    prefix: &str,
    adjust: impl FnOnce(&mut twinlink::config::Settings),
) -> TestServer {
    let (url, prefix) = (url.to_string(), prefix.to_string());
    TestServer::start_with(move |s| {
        s.mqtt_url = Some(url);
        s.mqtt_client_id = unique("twinlink");
        s.mqtt_error_topic = format!("{prefix}/errors");
        s.mqtt_topic_prefix = prefix;
        adjust(s);
    })
    .await
}

/// GETs the entity until `ready` holds for it (10 s at most); publishing goes on in the background.
pub(crate) async fn eventually(
    s: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let mut req = s.client.get(s.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("GET");
        if r.status() == 200 {
            let body: Value = r.json().await.expect("JSON");
            if ready(&body) {
                return body;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} never became as expected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes a probe entity until the broker has written it: then twinlink is subscribed.
pub(crate) async fn until_ingesting(s: &TestServer, peer: &Peer, prefix: &str) {
    let id = unique("urn:ngsi-ld:Probe:");
    let started = Instant::now();
    loop {
        peer.publish(
            &format!("{prefix}/entities"),
            json!({"id": id, "type": "Probe"}).to_string(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = s
            .client
            .get(s.url(&format!("/entities/{id}")))
            .send()
            .await
            .expect("GET");
        if r.status() == 200 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "twinlink never subscribed"
        );
    }
}

#[actix_web::test]
async fn entities_and_attribute_fragments_published_over_mqtt_are_written() {
    let url = common::services::mqtt_url();
    let prefix = unique("t");
    let s = broker(&url, &prefix, Vec::new()).await;
    let peer = Peer::connect(&url).await;
    until_ingesting(&s, &peer, &prefix).await;
    let before = s.metrics().await;

    // An array of normalized entities on the default tenant.
    peer.publish(
        &format!("{prefix}/entities"),
        json!([
            {"id": "urn:ngsi-ld:Meter:1", "type": "Meter", "power": {"type": "Property", "value": 3.5, "unitCode": "KWT"}},
            {"id": "urn:ngsi-ld:Meter:2", "type": "Meter", "feeds": {"type": "Relationship", "object": "urn:ngsi-ld:Meter:1"}}
        ])
        .to_string(),
    )
    .await;
    let m1 = eventually(&s, "/entities/urn:ngsi-ld:Meter:1", &[], |_| true).await;
    assert_eq!(
        m1["power"],
        json!({"type": "Property", "value": 3.5, "unitCode": "KWT"})
    );
    let m2 = eventually(&s, "/entities/urn:ngsi-ld:Meter:2", &[], |_| true).await;
    assert_eq!(m2["feeds"]["object"], "urn:ngsi-ld:Meter:1");

    // A keyValues (concise) entity on a named tenant.
    peer.publish(
        &format!("{prefix}/tenants/harbour/entities"),
        json!({"id": "urn:ngsi-ld:Crane:7", "type": "Crane", "load": 12, "status": "lifting"})
            .to_string(),
    )
    .await;
    let crane = eventually(
        &s,
        "/entities/urn:ngsi-ld:Crane:7",
        &[("NGSILD-Tenant", "harbour")],
        |_| true,
    )
    .await;
    assert_eq!(crane["load"], json!({"type": "Property", "value": 12}));
    assert_eq!(
        crane["status"],
        json!({"type": "Property", "value": "lifting"})
    );
    let r = s
        .client
        .get(s.url("/entities/urn:ngsi-ld:Crane:7"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "the default tenant does not see the harbour's crane"
    );

    // An attribute fragment: one new attribute appended, one existing updated, the rest kept.
    peer.publish(
        &format!("{prefix}/entities/urn:ngsi-ld:Meter:1/attrs"),
        json!({"power": {"type": "Property", "value": 4.0}, "phase": {"type": "Property", "value": "L2"}}).to_string(),
    )
    .await;
    let m1 = eventually(&s, "/entities/urn:ngsi-ld:Meter:1", &[], |e| {
        e.get("phase").is_some()
    })
    .await;
    assert_eq!(m1["power"]["value"], 4.0);
    assert_eq!(m1["phase"]["value"], "L2");
    assert_eq!(m1["type"], "Meter");

    // An entity published again with fewer attributes keeps the others (upsert, update mode).
    peer.publish(
        &format!("{prefix}/entities"),
        json!({"id": "urn:ngsi-ld:Meter:1", "type": "Meter", "power": 5}).to_string(),
    )
    .await;
    let m1 = eventually(&s, "/entities/urn:ngsi-ld:Meter:1", &[], |e| {
        e["power"]["value"] == 5
    })
    .await;
    assert_eq!(m1["phase"]["value"], "L2");

    // Each of the four messages is acknowledged after its write, its wait measured (the lag of
    // ingestion); the last acknowledgement may follow the entity's visibility by a moment.
    let waited = |scrape: &str, series: &str| {
        let name = format!("twinlink_mqtt_message_wait_seconds_{series}");
        metric(scrape, &name, &[]) - metric(&before, &name, &[])
    };
    let mut after = s.metrics().await;
    for _ in 0..50 {
        if waited(&after, "count") >= 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = s.metrics().await;
    }
    assert!(waited(&after, "count") >= 4.0, "{after}");
    assert!(waited(&after, "sum") > 0.0, "{after}");
}

#[actix_web::test]
async fn a_bad_payload_goes_to_the_error_topic_and_ingestion_goes_on() {
    let url = common::services::mqtt_url();
    let prefix = unique("t");
    let s = broker(&url, &prefix, Vec::new()).await;
    let mut peer = Peer::connect(&url).await;
    peer.subscribe(&format!("{prefix}/errors")).await;
    until_ingesting(&s, &peer, &prefix).await;
    let before = s.metrics().await;

    let entities = format!("{prefix}/entities");
    peer.publish(&entities, "{not json").await;
    peer.publish(
        &entities,
        json!({"id": "urn:ngsi-ld:Thing:untyped", "x": 1}).to_string(),
    )
    .await;
    peer.publish(
        &format!("{prefix}/entities/urn:ngsi-ld:Thing:nobody/attrs"),
        json!({"x": 1}).to_string(),
    )
    .await;
    peer.publish(
        &entities,
        json!({"id": "urn:ngsi-ld:Thing:good", "type": "Thing", "x": 2}).to_string(),
    )
    .await;

    let mut reports = Vec::new();
    for _ in 0..3 {
        reports.push(peer.next().await);
    }
    let kinds: Vec<(&str, &str)> = reports
        .iter()
        .map(|(topic, r)| {
            assert_eq!(topic, &format!("{prefix}/errors"));
            let kind = r["error"]["type"].as_str().expect("ProblemDetails type");
            (
                r["topic"].as_str().expect("topic"),
                kind.rsplit('/').next().unwrap(),
            )
        })
        .collect();
    let attrs_topic = format!("{prefix}/entities/urn:ngsi-ld:Thing:nobody/attrs");
    assert_eq!(
        kinds,
        vec![
            (entities.as_str(), "InvalidRequest"),
            (entities.as_str(), "BadRequestData"),
            (attrs_topic.as_str(), "ResourceNotFound"),
        ],
        "{reports:?}"
    );
    assert_eq!(reports[1].1["entityId"], "urn:ngsi-ld:Thing:untyped");
    // The ProblemDetails point at the member at fault, as over HTTP.
    assert_eq!(reports[1].1["error"]["pointer"], "/type", "{reports:?}");
    assert!(reports[1].1["error"]["detail"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    let good = eventually(&s, "/entities/urn:ngsi-ld:Thing:good", &[], |_| true).await;
    assert_eq!(good["x"]["value"], 2);
    let r = s
        .client
        .get(s.url("/entities/urn:ngsi-ld:Thing:untyped"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The metrics count what was written and what was refused since: the three refusals, and
    // the good entity (a probe of `until_ingesting` still in flight may add one).
    let delta = |after: &str, name| metric(after, name, &[]) - metric(&before, name, &[]);
    let (ingested, rejected) = (
        "twinlink_mqtt_messages_ingested_total",
        "twinlink_mqtt_messages_rejected_total",
    );
    let mut after = s.metrics().await;
    for _ in 0..50 {
        if delta(&after, ingested) >= 1.0 && delta(&after, rejected) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = s.metrics().await;
    }
    assert!((1.0..=2.0).contains(&delta(&after, ingested)), "{after}");
    assert_eq!(delta(&after, rejected), 3.0, "{after}");
}

#[actix_web::test]
async fn a_topic_prefix_with_its_own_context_expands_terms_with_it() {
    let url = common::services::mqtt_url();
    let ctx = ContextServer::start();
    ctx.serve(
        "/city.jsonld",
        &json!({"@context": {"level": "https://city.example/vocab/waterLevel"}}),
    );
    let (prefix, city) = (unique("t"), unique("c"));
    let s = broker(&url, &prefix, vec![(city.clone(), ctx.url("/city.jsonld"))]).await;
    let peer = Peer::connect(&url).await;
    until_ingesting(&s, &peer, &prefix).await;
    peer.publish(
        &format!("{city}/entities"),
        json!({"id": "urn:ngsi-ld:Gauge:1", "type": "Gauge", "level": 2.25}).to_string(),
    )
    .await;
    let expanded = eventually(&s, "/entities/urn:ngsi-ld:Gauge:1", &[], |_| true).await;
    assert_eq!(
        expanded["https://city.example/vocab/waterLevel"]["value"],
        2.25
    );
    let compacted = eventually(
        &s,
        "/entities/urn:ngsi-ld:Gauge:1",
        &[("Link", &link(&ctx.url("/city.jsonld")))],
        |_| true,
    )
    .await;
    assert_eq!(compacted["level"]["value"], 2.25);
}

/// A Mosquitto of the test's own, with persistence, that can be stopped and started again.
struct OwnMosquitto {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl OwnMosquitto {
    fn start() -> OwnMosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nuser root\n",
                dir.path().display()
            ),
        )
        .expect("write mosquitto.conf");
        let mut m = OwnMosquitto {
            dir,
            port,
            child: None,
        };
        m.run();
        m
    }

    fn run(&mut self) {
        let child = Command::new(common::services::mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM (it saves its persistent sessions) and waits for the exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnMosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[actix_web::test]
async fn qos1_messages_published_across_an_mqtt_broker_restart_are_all_written() {
    let mut mosquitto = OwnMosquitto::start();
    let prefix = unique("t");
    let s = broker(&mosquitto.url(), &prefix, Vec::new()).await;
    let peer = Peer::connect(&mosquitto.url()).await;
    until_ingesting(&s, &peer, &prefix).await;
    drop(peer);

    // The MQTT broker restarts; twinlink is disconnected. Messages published as soon as it is back
    // wait in twinlink's persistent session until twinlink has reconnected.
    mosquitto.stop();
    mosquitto.run();
    let peer = Peer::connect(&mosquitto.url()).await;
    let n = 200;
    for i in 0..n {
        peer.publish(
            &format!("{prefix}/entities/urn:ngsi-ld:Counter:1/attrs"),
            json!({"count": i}).to_string(),
        )
        .await;
        if i == 0 {
            peer.publish(
                &format!("{prefix}/entities"),
                json!({"id": "urn:ngsi-ld:Counter:1", "type": "Counter"}).to_string(),
            )
            .await;
        }
    }
    for i in 0..n {
        peer.publish(
            &format!("{prefix}/entities"),
            json!({"id": format!("urn:ngsi-ld:Counter:b{i}"), "type": "Counter"}).to_string(),
        )
        .await;
    }
    let started = Instant::now();
    loop {
        let r = s
            .client
            .get(s.url("/entities?type=Counter&count=true&limit=0"))
            .send()
            .await
            .expect("GET");
        let count: usize = r
            .headers()
            .get("NGSILD-Results-Count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if count == n + 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {count} of {} entities arrived after the restart",
            n + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The attribute messages arrived in order: the last value published is the value kept (the
    // first one, published before the entity existed, was rejected as not found).
    let counter = eventually(&s, "/entities/urn:ngsi-ld:Counter:1", &[], |e| {
        e["count"]["value"] == n - 1
    })
    .await;
    assert_eq!(counter["count"]["value"], n - 1);
}
