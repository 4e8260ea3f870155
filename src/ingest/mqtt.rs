//! MQTT ingestion: twinlink subscribes (QoS 1, persistent session) to the topic scheme of
//! [`super::topics`] on a configured MQTT broker and writes what arrives through the batch service.
//!
//! Messages are taken in groups — whatever has arrived while the previous group was written, up to
//! [`GROUP`] — and each tenant's part of a group is one store write (one transaction, one fsync),
//! in arrival order; a QoS 1 message is acknowledged only after the write that holds it has
//! committed. While the store is unavailable the group is retried, not acknowledged, so nothing
//! acknowledged is lost and nothing is dropped. A bad payload is logged, counted and published with
//! its ProblemDetails to the error topic; it never stops the messages around it.

use super::topics::{Route, Scheme, Target};
use crate::error::{ErrorKind, NgsiError};
use crate::retry::Backoff;
use crate::service::batch::{BatchItem, BatchOp, UpsertMode};
use crate::service::AppState;
use crate::telemetry::audit;
use chrono::Utc;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, Transport};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Most messages written in one store write.
pub const GROUP: usize = 2_000;

/// Counters of MQTT ingestion, for logs and metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Messages received on ingestion topics.
    pub received: AtomicU64,
    /// Entities and attribute fragments written.
    pub applied: AtomicU64,
    /// Entities, fragments or whole messages rejected (published to the error topic).
    pub rejected: AtomicU64,
}

/// The MQTT connection options of a `mqtt://` or `mqtts://` URL.
pub fn options(url: &str, client_id: &str) -> Result<MqttOptions, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid MQTT URL '{url}': {e}"))?;
    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(format!(
                "MQTT URL '{url}': unknown scheme '{other}' (use mqtt:// or mqtts://)"
            ))
        }
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("MQTT URL '{url}' has no host"))?;
    let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
    if !parsed.username().is_empty() {
        let password = parsed.password().unwrap_or_default();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        options.set_credentials(decode(parsed.username()), decode(password));
    }
    if tls {
        options.set_transport(Transport::tls_with_default_config());
    }
    Ok(options)
}

/// Starts MQTT ingestion for the broker's settings (`mqtt_url` must be set): connects in the
/// background, reconnecting with backoff, and writes messages as they come.
pub fn start(broker: Arc<AppState>) -> Result<Arc<IngestStats>, String> {
    let settings = &broker.settings();
    let url = settings
        .mqtt_url
        .as_deref()
        .ok_or("no MQTT URL configured")?;
    let options = options(url, &settings.mqtt_client_id)?;
    let scheme = Scheme::new(&settings.mqtt_topic_prefix, &settings.mqtt_contexts);
    let (client, mut eventloop) = AsyncClient::new(options, 4 * GROUP);
    // Acknowledgements leave at once (see `subscription::mqtt::socket_options`).
    eventloop.set_network_options(crate::subscription::mqtt::socket_options());
    let stats = Arc::new(IngestStats::default());
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Publish)>();
    let writer = Writer {
        broker: broker.clone(),
        client: client.clone(),
        scheme: scheme.clone(),
        stats: stats.clone(),
        error_topic: settings.mqtt_error_topic.clone(),
    };
    tokio::spawn(writer.run(rx));
    let subscriber = client.clone();
    let url = url.to_string();
    tokio::spawn(async move {
        let mut backoff = Backoff::reconnect();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff.reset();
                    tracing::info!(%url, session_present = ack.session_present, "MQTT ingestion connected");
                    for filter in scheme.filters() {
                        if let Err(e) = subscriber.subscribe(filter.clone(), QoS::AtLeastOnce).await
                        {
                            tracing::error!(%filter, error = %e, "MQTT subscribe failed");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((Instant::now(), p)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%url, error = %e, "MQTT ingestion disconnected; reconnecting in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    });
    Ok(stats)
}

/// What the writer needs: the broker, the MQTT client (acks, error reports) and the scheme.
struct Writer {
    broker: Arc<AppState>,
    client: AsyncClient,
    scheme: Scheme,
    stats: Arc<IngestStats>,
    error_topic: String,
}

/// One entity or fragment of a message, parsed, with where it came from.
struct Item {
    message: usize,
    op: BatchOp,
    item: BatchItem,
}

impl Writer {
    /// Takes the messages in groups and writes each group; acknowledges after the write.
    /// Each message's arrival time gives the lag metric at its acknowledgement.
    async fn run(self, mut rx: mpsc::UnboundedReceiver<(Instant, Publish)>) {
        let mut group = Vec::with_capacity(GROUP);
        while rx.recv_many(&mut group, GROUP).await > 0 {
            self.stats
                .received
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            self.write_group(&group).await;
            for (arrived, publish) in group.drain(..) {
                if publish.qos != QoS::AtMostOnce {
                    if let Err(e) = self.client.ack(&publish).await {
                        tracing::warn!(error = %e, "MQTT acknowledgement failed (the message will be redelivered)");
                    }
                }
                crate::telemetry::metrics::mqtt_acknowledged(arrived.elapsed().as_secs_f64());
            }
        }
    }

    /// Parses every message of the group and writes them, tenant by tenant, in arrival order.
    async fn write_group(&self, group: &[(Instant, Publish)]) {
        let now = Utc::now();
        let mut by_tenant: indexmap::IndexMap<String, Vec<Item>> = indexmap::IndexMap::new();
        for (i, (_, publish)) in group.iter().enumerate() {
            let Some(route) = self.scheme.route(&publish.topic) else {
                continue;
            };
            match read_message(&self.broker, &route, &publish.payload, now, i).await {
                Ok(items) => by_tenant.entry(route.tenant).or_default().extend(items),
                Err(e) => self.reject(&publish.topic, None, &e).await,
            }
        }
        for (tenant, items) in by_tenant {
            let places: Vec<(usize, String)> = items
                .iter()
                .map(|it| (it.message, it.item.0.clone()))
                .collect();
            let ops: Vec<(BatchOp, BatchItem)> =
                items.into_iter().map(|it| (it.op, it.item)).collect();
            let (result, written) = audit::collect(self.write(&tenant, &ops, now)).await;
            if !written.is_empty() {
                let entry = audit::Entry {
                    subject: "mqtt",
                    tenant: &tenant,
                    operation: "MQTT ingestion",
                    entity_ids: &written,
                    request_id: None,
                };
                audit::record(&entry, self.broker.audit_table());
            }
            self.stats
                .applied
                .fetch_add(result.success.len() as u64, Ordering::Relaxed);
            crate::telemetry::metrics::mqtt_ingested(result.success.len());
            for (id, e) in &result.errors {
                let topic = places
                    .iter()
                    .find(|(_, pid)| pid == id)
                    .map_or("", |(m, _)| group[*m].1.topic.as_str());
                self.reject(topic, Some(id), e).await;
            }
        }
    }

    /// Writes one tenant's items of a group, again and again while the store is unavailable
    /// (the messages stay unacknowledged meanwhile).
    async fn write(
        &self,
        tenant: &str,
        ops: &[(BatchOp, BatchItem)],
        now: chrono::DateTime<Utc>,
    ) -> crate::service::batch::BatchResult {
        let mut backoff = Backoff::reconnect();
        loop {
            let result = self.broker.batch_ops(tenant, ops_clone(ops), now).await;
            let unavailable = result
                .errors
                .iter()
                .any(|(_, e)| e.kind == ErrorKind::ServiceUnavailable);
            if !unavailable {
                return result;
            }
            let delay = backoff.next_delay();
            tracing::warn!(%tenant, "the store is unavailable; MQTT messages wait (not acknowledged), retrying in {delay:?}");
            tokio::time::sleep(delay).await;
        }
    }

    /// Logs, counts and publishes a rejection to the error topic.
    async fn reject(&self, topic: &str, id: Option<&str>, e: &NgsiError) {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::metrics::mqtt_rejected();
        tracing::warn!(%topic, entity = id.unwrap_or(""), error = %e.detail, "MQTT payload rejected");
        let mut report = json!({"topic": topic, "error": e.problem_details()});
        if let Some(id) = id {
            report["entityId"] = json!(id);
        }
        let published = self
            .client
            .publish(
                self.error_topic.as_str(),
                QoS::AtLeastOnce,
                false,
                report.to_string(),
            )
            .await;
        if let Err(err) = published {
            tracing::warn!(error = %err, "could not publish to the MQTT error topic");
        }
    }
}

/// The batch input again, for a retry (parse results are cheap to clone next to a store outage).
fn ops_clone(ops: &[(BatchOp, BatchItem)]) -> Vec<(BatchOp, BatchItem)> {
    ops.iter()
        .map(|(op, (id, parsed))| (*op, (id.clone(), parsed.clone())))
        .collect()
}

/// The entities or fragment of one message.
async fn read_message(
    broker: &AppState,
    route: &Route,
    payload: &[u8],
    now: chrono::DateTime<Utc>,
    message: usize,
) -> Result<Vec<Item>, NgsiError> {
    let json: Value = serde_json::from_slice(payload).map_err(|e| {
        NgsiError::new(
            ErrorKind::InvalidRequest,
            format!("the payload is not JSON: {e}"),
        )
    })?;
    crate::model::validate::no_nul_character(payload)?;
    let default_context = route.context.clone().map(Value::String);
    let mut entities = match (&route.target, json) {
        (Target::Entities, Value::Array(items)) => items,
        (Target::Entities, entity @ Value::Object(_)) => vec![entity],
        (Target::Attrs(id), Value::Object(mut attrs)) => {
            if attrs.get("id").is_some_and(|v| v.as_str() != Some(id)) {
                return Err(NgsiError::bad_data(format!(
                    "the payload's id differs from the entity id '{id}' in the topic"
                )));
            }
            attrs.insert("id".into(), Value::String(id.clone()));
            vec![Value::Object(attrs)]
        }
        (Target::Entities, _) => {
            return Err(NgsiError::bad_data(
                "an entities topic takes an entity object or an array of them",
            ))
        }
        (Target::Attrs(_), _) => {
            return Err(NgsiError::bad_data(
                "an attrs topic takes a JSON object of attributes",
            ))
        }
    };
    let op = match route.target {
        Target::Entities => BatchOp::Upsert(UpsertMode::Update),
        Target::Attrs(_) => BatchOp::Update {
            no_overwrite: false,
        },
    };
    let mut items = Vec::with_capacity(entities.len());
    for entity in &mut entities {
        let id = entity
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let context = entity
            .as_object_mut()
            .and_then(|o| o.remove("@context"))
            .or_else(|| default_context.clone());
        let parsed = broker
            .read_batch_entity(entity, context.as_ref(), op, now)
            .await;
        items.push(Item {
            message,
            op,
            item: (id, parsed),
        });
    }
    Ok(items)
}
