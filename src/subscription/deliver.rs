//! Delivery of notifications over HTTP(S) and MQTT. Each destination (an HTTP host:port, or an
//! MQTT broker with its credentials and version) has its own lanes, each a bounded queue and a
//! worker, so a slow or unreachable receiver only delays its own notifications; a full queue
//! refuses new notifications (counted as failures) instead of blocking the matcher, which never
//! waits on the network. The notifications of one subscription always take the same lane, so
//! they arrive in order; different subscriptions to one destination are sent concurrently (one
//! request at a time per destination would cap it at one notification per round trip).
//! HTTP notifications are retried with backoff; MQTT connections are shared per broker and
//! reconnect by themselves.

use super::model::{Endpoint, NotifyAs};
use crate::ld::CORE_CONTEXT_V1_9;
use crate::retry::Backoff;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{channel, error::TrySendError, Sender, UnboundedSender};

/// Notifications waiting per lane before new ones are refused.
const QUEUE: usize = 1_000;
/// HTTP attempts per notification (the first and the retries).
const ATTEMPTS: u32 = 3;
/// Timeout of one HTTP attempt when the endpoint gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One notification to send.
pub struct Job {
    /// (tenant, subscription id) whose statistics the outcome updates.
    pub subscription: (String, String),
    /// Where to.
    pub endpoint: Endpoint,
    /// The Notification, or how to render it.
    pub body: Body,
    /// The @context of the notification (for the Link header of application/json).
    pub context: Value,
    /// The tenant (NGSILD-Tenant header), "" for the default.
    pub tenant: String,
    /// Set when the subscription is deleted: a notification still queued or being retried is then
    /// dropped, so that a receiver hears nothing from a subscription after its deletion.
    pub cancelled: Arc<AtomicBool>,
    /// The batch of the change feed this notification belongs to, for the subscription's
    /// watermark (see `service::watermarks`); None for notifications not driven by the feed.
    pub batch: Option<u64>,
}

/// A notification's body. Rendering (compacting the entity, projecting its attributes) is the
/// costly part of a notification: a deferred body is rendered by the lane that sends it, so that
/// the lanes render side by side while the matcher goes on, each subscription's notifications
/// still in order.
pub enum Body {
    /// Already rendered.
    Ready(Value),
    /// Rendered when its lane takes it.
    Later(Box<dyn FnOnce() -> Value + Send + Sync>),
}

impl From<Value> for Body {
    fn from(v: Value) -> Body {
        Body::Ready(v)
    }
}

impl Body {
    /// The rendered body.
    fn render(self) -> Value {
        match self {
            Body::Ready(v) => v,
            Body::Later(render) => render(),
        }
    }
}

/// How a notification ended, for the subscription's statistics.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// (tenant, subscription id).
    pub subscription: (String, String),
    /// When it was attempted.
    pub at: DateTime<Utc>,
    /// None when delivered, else why not.
    pub error: Option<String>,
    /// The job's batch of the change feed.
    pub batch: Option<u64>,
}

/// The queues and connections of every destination.
pub struct Delivery {
    http: crate::outbound::Client,
    policy: crate::outbound::Policy,
    queues: Mutex<HashMap<String, Arc<[Sender<Job>]>>>,
    /// Lanes per destination: notifications in flight at once to one receiver.
    lanes: usize,
    mqtt: Arc<super::mqtt::Connections>,
    outcomes: UnboundedSender<Outcome>,
}

/// The Link header value of a JSON-LD context reference.
fn link(context: &Value) -> String {
    let url = match context {
        Value::String(s) => Some(s.as_str()),
        Value::Array(items) if items.len() == 1 => items[0].as_str(),
        _ => None,
    }
    .unwrap_or(CORE_CONTEXT_V1_9);
    format!("<{url}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"")
}

/// The headers of a notification: Content-Type, Link (JSON), tenant and receiverInfo.
fn headers(job: &Job) -> Vec<(String, String)> {
    let accept = job.endpoint.accept;
    let mut h = vec![("Content-Type".to_string(), accept.media_type().to_string())];
    if accept != NotifyAs::JsonLd {
        h.push(("Link".into(), link(&job.context)));
    }
    if !job.tenant.is_empty() {
        h.push(("NGSILD-Tenant".into(), job.tenant.clone()));
    }
    h.extend(job.endpoint.receiver_info.iter().cloned());
    h
}

impl Delivery {
    /// Builds the delivery side, every notification under the outbound `policy`, with `lanes`
    /// notifications in flight at once per destination; outcomes are reported on `outcomes`.
    pub fn new(
        outcomes: UnboundedSender<Outcome>,
        policy: &crate::outbound::Policy,
        lanes: usize,
    ) -> Delivery {
        // Title-case header names (Link, Content-Type, receiverInfo keys as given): receivers
        // that compare header names case-sensitively still find them.
        // Redirects are not followed: a receiver that moves is a failed delivery, rather than
        // the notification going to wherever a redirect points.
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .http1_title_case_headers();
        Delivery {
            http: crate::outbound::Client::new(policy, builder, false)
                .expect("the notification client builds"),
            policy: policy.clone(),
            queues: Mutex::new(HashMap::new()),
            lanes: lanes.max(1),
            mqtt: Arc::new(super::mqtt::Connections::default()),
            outcomes,
        }
    }

    /// Queues a notification without waiting; a full queue is reported as a failed delivery.
    pub fn send(&self, job: Job) {
        let key = destination(&job.endpoint);
        let lanes = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .entry(key.clone())
                .or_insert_with(|| (0..self.lanes).map(|_| self.worker()).collect())
                .clone()
        };
        let sender = &lanes[lane_of(&job.subscription, lanes.len())];
        // Counted before it is sent, so that the worker never takes it out of the gauge first.
        crate::telemetry::metrics::notification_queued(host(&job.endpoint), true);
        match sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) | Err(TrySendError::Closed(job)) => {
                crate::telemetry::metrics::notification_queued(host(&job.endpoint), false);
                tracing::warn!(destination = %key, "notification queue full; notification dropped");
                crate::telemetry::metrics::notification(host(&job.endpoint), false);
                let _ = self.outcomes.send(Outcome {
                    subscription: job.subscription,
                    at: Utc::now(),
                    error: Some(format!("the queue of {key} is full")),
                    batch: job.batch,
                });
            }
        }
    }

    /// Starts the worker of one lane of a destination: its jobs are sent one after the other, in
    /// order.
    fn worker(&self) -> Sender<Job> {
        let (tx, mut rx) = channel::<Job>(QUEUE);
        let (http, mqtt, outcomes) = (self.http.clone(), self.mqtt.clone(), self.outcomes.clone());
        let policy = self.policy.clone();
        tokio::spawn(async move {
            // While a receiver is down (its last notification failed after every retry), further
            // notifications get one attempt each, so that the queue behind it drains.
            let mut down = false;
            while let Some(mut job) = rx.recv().await {
                crate::telemetry::metrics::notification_queued(host(&job.endpoint), false);
                if job.cancelled.load(Ordering::Relaxed) {
                    continue;
                }
                let body = std::mem::replace(&mut job.body, Body::Ready(Value::Null)).render();
                let at = Utc::now();
                let result = if job.endpoint.is_mqtt() {
                    // The MQTT client resolves names itself: its literal addresses are checked
                    // here, its names when the subscription was made.
                    match policy.check_literal(&job.endpoint.uri) {
                        Ok(()) => mqtt.publish(&job.endpoint, mqtt_payload(&job, &body)).await,
                        Err(why) => Err(format!("refused by the outbound policy: {why}")),
                    }
                } else {
                    post(&http, &job, &body, if down { 1 } else { ATTEMPTS }).await
                };
                down = result.is_err();
                crate::telemetry::metrics::notification(host(&job.endpoint), result.is_ok());
                if let Err(e) = &result {
                    tracing::warn!(endpoint = %job.endpoint.uri, error = %e, "notification failed");
                }
                let _ = outcomes.send(Outcome {
                    subscription: job.subscription,
                    at,
                    error: result.err(),
                    batch: job.batch,
                });
            }
        });
        tx
    }
}

/// The lane of a destination that a subscription's notifications take.
fn lane_of(subscription: &(String, String), lanes: usize) -> usize {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::default().hash_one(subscription);
    (hash % lanes as u64) as usize
}

/// The host of an endpoint, the label of its notification metrics.
fn host(e: &Endpoint) -> &str {
    e.uri.host_str().unwrap_or("")
}

/// The queue a notification goes to: per HTTP origin, or per MQTT broker connection.
fn destination(e: &Endpoint) -> String {
    let u = &e.uri;
    let origin = format!(
        "{}://{}@{}:{}",
        u.scheme(),
        u.username(),
        u.host_str().unwrap_or(""),
        u.port_or_known_default().unwrap_or(0)
    );
    if e.is_mqtt() {
        format!("{origin}/{:?}", e.mqtt_version())
    } else {
        origin
    }
}

/// POSTs the notification in up to `attempts` attempts, retrying (with backoff) failures that
/// may pass: connection errors, timeouts and 5xx answers.
async fn post(
    http: &crate::outbound::Client,
    job: &Job,
    body: &Value,
    attempts: u32,
) -> Result<(), String> {
    let timeout = job
        .endpoint
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    let body = body.to_string();
    // 250 ms, 1 s, 4 s, ... (each with jitter).
    let mut backoff = Backoff::new(Duration::from_millis(250), 4.0, Duration::from_secs(60));
    let mut last = String::new();
    for attempt in 1..=attempts {
        if job.cancelled.load(Ordering::Relaxed) {
            return Err("the subscription was deleted".into());
        }
        let mut request = http
            .request(reqwest::Method::POST, job.endpoint.uri.clone())?
            .timeout(timeout)
            .body(body.clone());
        for (k, v) in headers(job) {
            request = request.header(k, v);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => {
                return Err(format!("the receiver answered {}", r.status()))
            }
            Ok(r) => last = format!("the receiver answered {}", r.status()),
            Err(e) => last = crate::error::with_causes(&e),
        }
        if attempt < attempts {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
    Err(last)
}

/// An MQTT notification: the headers as `metadata`, the Notification as `body` (5.8.6 / 7.2).
fn mqtt_payload(job: &Job, body: &Value) -> Vec<u8> {
    let metadata: Map<String, Value> = headers(job)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    json!({ "metadata": metadata, "body": body })
        .to_string()
        .into_bytes()
}
