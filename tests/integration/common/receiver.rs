//! Receivers of notifications for the subscription tests: an HTTP server on loopback that
//! records every POST, and a listener on the test Mosquitto.

use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// One notification as a receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request headers.
    pub headers: Vec<(String, String)>,
    /// The JSON body (Null when it is not JSON).
    pub body: Value,
    /// When the request had been read, for tests that bound how late a notification is.
    pub at: Instant,
}

impl Received {
    /// A header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first entity of the notification.
    pub fn entity(&self) -> &Value {
        &self.body["data"][0]
    }
}

/// An HTTP receiver of notifications on 127.0.0.1 that answers every POST with `status` after
/// `delay`.
pub struct Receiver {
    /// The URL notifications are to be POSTed to.
    pub url: String,
    rx: UnboundedReceiver<Received>,
    outage: Arc<Outage>,
}

/// Whether a receiver is down, and the connections it dropped meanwhile.
#[derive(Default)]
struct Outage {
    down: AtomicBool,
    dropped: Mutex<Vec<Instant>>,
}

impl Receiver {
    /// Starts a receiver that answers every POST with `status` after `delay`.
    pub async fn start(status: u16, delay: Duration) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = unbounded_channel();
        let outage = Arc::new(Outage::default());
        let state = outage.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                if state.down.load(Ordering::SeqCst) {
                    state.dropped.lock().unwrap().push(Instant::now());
                    drop(stream);
                    continue;
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = serde_json::from_slice(&buf[head_end..head_end + length])
                        .unwrap_or(Value::Null);
                    let at = Instant::now();
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Received { headers, body, at });
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/notify"),
            rx,
            outage,
        }
    }

    /// Takes the receiver down: from now on it closes every connection as soon as it is
    /// accepted, without reading or answering (to the notifier, a connection error as from a
    /// receiver that is away), and notes when, so that a test can count the notifier's attempts.
    pub fn go_down(&self) {
        self.outage.down.store(true, Ordering::SeqCst);
    }

    /// Brings the receiver back on the same URL after [`Receiver::go_down`].
    pub fn come_back(&self) {
        self.outage.down.store(false, Ordering::SeqCst);
    }

    /// When each connection was dropped while the receiver was down.
    pub fn dropped(&self) -> Vec<Instant> {
        self.outage.dropped.lock().unwrap().clone()
    }

    /// Starts a receiver that answers 200 at once.
    pub async fn ok() -> Receiver {
        Receiver::start(200, Duration::ZERO).await
    }

    /// The next notification, failing the test after `seconds`.
    pub async fn next(&mut self, seconds: u64) -> Received {
        tokio::time::timeout(Duration::from_secs(seconds), self.rx.recv())
            .await
            .expect("a notification arrives in time")
            .expect("receiver open")
    }

    /// The next notification if one arrives within `ms` milliseconds.
    pub async fn within(&mut self, ms: u64) -> Option<Received> {
        tokio::time::timeout(Duration::from_millis(ms), self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Asserts that nothing arrives for `ms` milliseconds.
    pub async fn nothing(&mut self, ms: u64) {
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await {
            panic!("unexpected notification: {}", n.body);
        }
    }
}

/// The URL of a port on which nothing listens.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/notify")
}

/// Subscribes to `topic` on the test Mosquitto and forwards every message.
pub async fn mqtt_listener(host: &str, port: u16, topic: &str) -> UnboundedReceiver<Value> {
    let mut options = rumqttc::MqttOptions::new(
        format!("test-{}", uuid::Uuid::new_v4().simple()),
        host,
        port,
    );
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
    client
        .subscribe(topic, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = unbounded_channel();
    let subscribed = Arc::new(Mutex::new(false));
    let flag = subscribed.clone();
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    *flag.lock().unwrap() = true
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send(serde_json::from_slice(&p.payload).unwrap_or(Value::Null));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    for _ in 0..50 {
        if *subscribed.lock().unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rx
}
