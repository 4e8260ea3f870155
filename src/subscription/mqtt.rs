//! MQTT notification endpoints (mqtt:// and mqtts://host[:port]/topic, user and password in the
//! URL): one client per broker, credentials and protocol version (3.1.1 or 5, notifierInfo
//! `MQTT-Version`), shared by every subscription that notifies there. Its event loop runs in its
//! own task and reconnects by itself; a notification published while the broker is unreachable
//! counts as failed.

use super::model::{Endpoint, MqttVersion};
use crate::retry::Backoff;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// A client of one protocol version.
#[derive(Clone)]
enum Client {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A connection and whether its event loop is currently connected.
#[derive(Clone)]
struct Connection {
    client: Client,
    connected: Arc<AtomicBool>,
}

/// The MQTT connections of this broker instance, by broker, credentials and version.
#[derive(Default)]
pub struct Connections {
    by_key: Mutex<HashMap<String, Connection>>,
}

fn key(e: &Endpoint) -> String {
    let u = &e.uri;
    format!(
        "{}://{}:{}@{}:{}/{:?}",
        u.scheme(),
        u.username(),
        u.password().unwrap_or(""),
        u.host_str().unwrap_or(""),
        port(e),
        e.mqtt_version()
    )
}

fn port(e: &Endpoint) -> u16 {
    e.uri.port().unwrap_or(if e.uri.scheme() == "mqtts" {
        8883
    } else {
        1883
    })
}

/// Percent-decoded URL user information.
fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

impl Connections {
    /// Publishes to the endpoint's topic with its QoS, connecting first if needed.
    pub async fn publish(&self, e: &Endpoint, payload: Vec<u8>) -> Result<(), String> {
        let connection = self.connection(e).await;
        if !connection.connected.load(Ordering::Acquire) {
            // Give a fresh connection a moment to come up before calling the broker unreachable.
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if connection.connected.load(Ordering::Acquire) {
                    break;
                }
            }
            if !connection.connected.load(Ordering::Acquire) {
                return Err(format!("the MQTT broker of {} is unreachable", e.uri));
            }
        }
        let topic = e.uri.path().trim_start_matches('/').to_string();
        let result = match &connection.client {
            Client::V3(c) => {
                let qos = match e.mqtt_qos() {
                    0 => rumqttc::QoS::AtMostOnce,
                    1 => rumqttc::QoS::AtLeastOnce,
                    _ => rumqttc::QoS::ExactlyOnce,
                };
                c.publish(topic, qos, false, payload)
                    .await
                    .map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let qos = match e.mqtt_qos() {
                    0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                };
                c.publish(topic, qos, false, payload)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        result.map_err(|err| format!("publishing to {} failed: {err}", e.uri))
    }

    async fn connection(&self, e: &Endpoint) -> Connection {
        let mut by_key = self.by_key.lock().await;
        by_key.entry(key(e)).or_insert_with(|| connect(e)).clone()
    }
}

/// The socket options of every MQTT connection: no Nagle delay, since a notification is one
/// small write that should leave at once rather than wait for the previous one's ACK (with
/// delayed ACKs on the other side, tens of milliseconds).
pub fn socket_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}

/// Creates the client and spawns its event loop.
fn connect(e: &Endpoint) -> Connection {
    let id = format!("twinlink-{}", uuid::Uuid::new_v4().simple());
    let host = e.uri.host_str().unwrap_or("localhost").to_string();
    let user = decoded(e.uri.username());
    let password = e.uri.password().map(decoded);
    let tls = e.uri.scheme() == "mqtts";
    let connected = Arc::new(AtomicBool::new(false));
    let flag = connected.clone();
    let client = match e.mqtt_version() {
        MqttVersion::V311 => {
            let mut options = rumqttc::MqttOptions::new(id, host, port(e));
            options.set_keep_alive(Duration::from_secs(30));
            if !user.is_empty() {
                options.set_credentials(user, password.unwrap_or_default());
            }
            if tls {
                options.set_transport(rumqttc::Transport::tls_with_default_config());
            }
            let (client, mut events) = rumqttc::AsyncClient::new(options, 1_000);
            events.set_network_options(socket_options());
            tokio::spawn(async move {
                let mut backoff = Backoff::reconnect();
                loop {
                    match events.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            flag.store(true, Ordering::Release);
                            backoff.reset();
                        }
                        Ok(_) => {}
                        Err(err) => {
                            flag.store(false, Ordering::Release);
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %err, "MQTT connection failed; retrying in {delay:?}");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            });
            Client::V3(client)
        }
        MqttVersion::V5 => {
            let mut options = rumqttc::v5::MqttOptions::new(id, host, port(e));
            options.set_keep_alive(Duration::from_secs(30));
            if !user.is_empty() {
                options.set_credentials(user, password.unwrap_or_default());
            }
            if tls {
                options.set_transport(rumqttc::Transport::tls_with_default_config());
            }
            options.set_network_options(socket_options());
            let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 1_000);
            tokio::spawn(async move {
                let mut backoff = Backoff::reconnect();
                loop {
                    match events.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::ConnAck(_))) => {
                            flag.store(true, Ordering::Release);
                            backoff.reset();
                        }
                        Ok(_) => {}
                        Err(err) => {
                            flag.store(false, Ordering::Release);
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %err, "MQTT connection failed; retrying in {delay:?}");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            });
            Client::V5(client)
        }
    };
    Connection { client, connected }
}
