//! Prometheus metrics of the broker, served at `/metrics`. One registry per process, fed from a
//! few central places only (the HTTP middleware, the store's write path, the notifier, MQTT
//! ingestion and the context loader), so that what is measured is found here.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::LazyLock;

/// Every metric of the broker and the registry that exposes them.
struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    store_commits: IntCounterVec,
    store_commit_duration: Histogram,
    store_batch_size: Histogram,
    history_rows: IntCounter,
    aggregations: IntCounterVec,
    writes_refused: IntCounter,
    notifications_sent: IntCounterVec,
    notifications_failed: IntCounterVec,
    notifications_queued: IntGaugeVec,
    subscriptions_owned: IntGauge,
    mqtt_ingested: IntCounter,
    mqtt_wait: Histogram,
    mqtt_rejected: IntCounter,
    context_cache: IntCounterVec,
    context_fetches: IntCounterVec,
    data_model_findings: IntCounterVec,
    db_pool: IntGaugeVec,
    entities: IntGaugeVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Registers a metric, which cannot fail for the distinct names below.
fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are distinct");
    m
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str| {
            registered(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            registered(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        Metrics {
            http_requests: counters(
                "twinlink_http_requests_total",
                "HTTP requests answered, by route pattern, method and status",
                &["route", "method", "status"],
            ),
            http_duration: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "twinlink_http_request_duration_seconds",
                        "Time to answer an HTTP request, by route pattern and method",
                    ),
                    &["route", "method"],
                )
                .expect("valid metric"),
            ),
            store_commits: counters(
                "twinlink_store_commits_total",
                "Store write transactions, by outcome (ok, error)",
                &["outcome"],
            ),
            store_commit_duration: histogram(
                "twinlink_store_commit_duration_seconds",
                "Time of a store write transaction, from the decisions to the durable commit",
                prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"),
            ),
            store_batch_size: histogram(
                "twinlink_store_commit_entities",
                "Entity writes (steps) per store write transaction",
                prometheus::exponential_buckets(1.0, 4.0, 10).expect("valid buckets"),
            ),
            history_rows: counter(
                "twinlink_history_rows_written_total",
                "Attribute history records committed",
            ),
            aggregations: counters(
                "twinlink_history_aggregations_total",
                "Entity histories aggregated, by source: the roll-ups, or the records when the \
                 request or an expiring record does not allow roll-ups",
                &["source"],
            ),
            writes_refused: counter(
                "twinlink_http_writes_refused_total",
                "Write requests refused with 503 because --max-inflight-writes were being served",
            ),
            notifications_sent: counters(
                "twinlink_notifications_sent_total",
                "Notifications delivered, by endpoint host",
                &["host"],
            ),
            notifications_failed: counters(
                "twinlink_notifications_failed_total",
                "Notifications that failed after their retries or were dropped, by endpoint host",
                &["host"],
            ),
            notifications_queued: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "twinlink_notifications_queued",
                        "Notifications waiting in their destination's queue, by endpoint host",
                    ),
                    &["host"],
                )
                .expect("valid metric"),
            ),
            subscriptions_owned: registered(
                &r,
                IntGauge::new(
                    "twinlink_subscriptions_owned",
                    "Subscriptions this instance notifies for, among those instances on one \
                     PostgreSQL database share",
                )
                .expect("valid metric"),
            ),
            mqtt_wait: histogram(
                "twinlink_mqtt_message_wait_seconds",
                "Time from an MQTT message's arrival to its acknowledgement, after its write \
                 committed (the lag of ingestion)",
                prometheus::exponential_buckets(0.0005, 2.0, 18).expect("valid buckets"),
            ),
            mqtt_ingested: counter(
                "twinlink_mqtt_messages_ingested_total",
                "Entities and attribute fragments written from MQTT messages",
            ),
            mqtt_rejected: counter(
                "twinlink_mqtt_messages_rejected_total",
                "MQTT messages, entities or fragments rejected (published to the error topic)",
            ),
            context_cache: counters(
                "twinlink_context_cache_lookups_total",
                "Look-ups of a request's @context in the cache of processed contexts (hit, miss)",
                &["result"],
            ),
            data_model_findings: counters(
                "twinlink_data_model_findings_total",
                "Rules broken by written entities, by the model or check they come from, the rule and what the write did (reject or flag)",
                &["model", "rule", "mode"],
            ),
            context_fetches: counters(
                "twinlink_context_fetches_total",
                "Remote @context documents fetched over HTTP, by outcome (ok, error)",
                &["outcome"],
            ),
            db_pool: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "twinlink_db_pool_connections",
                        "PostgreSQL pool: max (its limit), size (open), available (idle), \
                         waiting (callers waiting for a connection)",
                    ),
                    &["state"],
                )
                .expect("valid metric"),
            ),
            entities: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "twinlink_entities",
                        "Entities per tenant (\"\" is the default tenant); on PostgreSQL the last background count",
                    ),
                    &["tenant"],
                )
                .expect("valid metric"),
            ),
            registry: r,
        }
    }
}

/// An HTTP request answered: `route` is the matched pattern (bounded), never the raw path.
pub fn http_request(route: &str, method: &str, status: u16, seconds: f64) {
    let m = &*METRICS;
    m.http_requests
        .with_label_values(&[route, method, &status.to_string()])
        .inc();
    m.http_duration
        .with_label_values(&[route, method])
        .observe(seconds);
}

/// A store write transaction of `steps` entity writes that took `seconds`.
pub fn store_commit(steps: usize, seconds: f64, ok: bool) {
    let m = &*METRICS;
    m.store_commits
        .with_label_values(&[if ok { "ok" } else { "error" }])
        .inc();
    m.store_commit_duration.observe(seconds);
    m.store_batch_size.observe(steps as f64);
}

/// A write request refused by admission control (`http::admission`).
pub fn write_refused() {
    METRICS.writes_refused.inc();
}

/// History records committed.
pub fn history_rows(n: usize) {
    METRICS.history_rows.inc_by(n as u64);
}

/// `n` entity histories aggregated from `source` (`rollups` or `records`).
pub fn aggregations(source: &str, n: usize) {
    if n > 0 {
        METRICS
            .aggregations
            .with_label_values(&[source])
            .inc_by(n as u64);
    }
}

/// A notification to an endpoint at `host` delivered (`ok`) or failed.
pub fn notification(host: &str, ok: bool) {
    let m = &*METRICS;
    if ok {
        &m.notifications_sent
    } else {
        &m.notifications_failed
    }
    .with_label_values(&[host])
    .inc();
}

/// A notification to an endpoint at `host` entered its queue (`true`) or left it for delivery.
pub fn notification_queued(host: &str, entered: bool) {
    let gauge = METRICS.notifications_queued.with_label_values(&[host]);
    if entered {
        gauge.inc()
    } else {
        gauge.dec()
    }
}

/// An MQTT message acknowledged `seconds` after it arrived.
pub fn mqtt_acknowledged(seconds: f64) {
    METRICS.mqtt_wait.observe(seconds);
}

/// Entities and fragments written from MQTT.
pub fn mqtt_ingested(n: usize) {
    METRICS.mqtt_ingested.inc_by(n as u64);
}

/// An MQTT message, entity or fragment rejected.
pub fn mqtt_rejected() {
    METRICS.mqtt_rejected.inc();
}

/// A rule broken by an entity a write brought (`mode`: whether the write was refused or flagged).
pub fn data_model_finding(model: &str, rule: &str, mode: &str) {
    METRICS
        .data_model_findings
        .with_label_values(&[model, rule, mode])
        .inc();
}

/// A look-up of a request's @context among the processed ones.
pub fn context_lookup(hit: bool) {
    METRICS
        .context_cache
        .with_label_values(&[if hit { "hit" } else { "miss" }])
        .inc();
}

/// A remote @context fetched over HTTP.
pub fn context_fetch(ok: bool) {
    METRICS
        .context_fetches
        .with_label_values(&[if ok { "ok" } else { "error" }])
        .inc();
}

/// This instance now owns `n` subscriptions (PostgreSQL, where instances share them).
pub fn subscriptions_owned(n: usize) {
    METRICS.subscriptions_owned.set(n as i64);
}

/// The metrics in Prometheus' text format, with the state of the PostgreSQL pool when there is
/// one and the entities per tenant when the store counts them without a scan (read now: gauges
/// of the moment of the scrape).
pub fn render(
    pool: Option<deadpool_postgres::Status>,
    entities: Option<Vec<(String, usize)>>,
) -> String {
    let m = &*METRICS;
    for (tenant, count) in entities.into_iter().flatten() {
        m.entities.with_label_values(&[&tenant]).set(count as i64);
    }
    if let Some(pool) = pool {
        for (state, value) in [
            ("max", pool.max_size),
            ("size", pool.size),
            ("available", pool.available),
            ("waiting", pool.waiting),
        ] {
            m.db_pool.with_label_values(&[state]).set(value as i64);
        }
    }
    TextEncoder::new()
        .encode_to_string(&m.registry.gather())
        .unwrap_or_else(|e| format!("# the metrics could not be encoded: {e}\n"))
}
