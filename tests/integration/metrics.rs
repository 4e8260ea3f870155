//! `/metrics`: the counters and histograms move with the requests, writes, notifications and
//! context fetches they measure; the pool gauges show on PostgreSQL; access is open or admin;
//! `promtool check metrics` accepts a scrape taken after that work.

use crate::common::jwt::{self, claims, Signer};
use crate::common::receiver::{dead_url, Receiver};
use crate::common::{metric, services, vocab_context, TestServer};
use jsonwebtoken::Algorithm;
use serde_json::json;

#[actix_web::test]
async fn requests_and_writes_move_their_counters() {
    let s = TestServer::start().await;
    let before = s.metrics().await;
    let created = [
        ("route", "/ngsi-ld/v1/entities"),
        ("method", "POST"),
        ("status", "201"),
    ];
    for i in 0..3 {
        let r = s
            .create(&json!({
                "id": format!("urn:ngsi-ld:Building:m{i}"), "type": "Building",
                "height": {"type": "Property", "value": i}
            }))
            .await;
        assert_eq!(r.status(), 201);
    }
    let (status, _) = s.get_json("/entities/urn:ngsi-ld:Building:m0").await;
    assert_eq!(status, 200);
    let (status, _) = s.get_json("/no/such/path").await;
    assert_eq!(status, 404);
    let after = s.metrics().await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(
        delta("twinlink_http_requests_total", &created),
        3.0,
        "{after}"
    );
    let by_pattern = [
        ("route", "/ngsi-ld/v1/entities/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(delta("twinlink_http_requests_total", &by_pattern), 1.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert!(delta("twinlink_http_requests_total", &unmatched) >= 1.0);
    let timed = [("route", "/ngsi-ld/v1/entities"), ("method", "POST")];
    assert_eq!(
        delta("twinlink_http_request_duration_seconds_count", &timed),
        3.0
    );
    assert!(delta("twinlink_store_commits_total", &[("outcome", "ok")]) >= 1.0);
    assert!(delta("twinlink_store_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(delta("twinlink_store_commit_entities_sum", &[]) >= 3.0);
    // One history record per attribute of each created entity.
    assert!(delta("twinlink_history_rows_written_total", &[]) >= 3.0);
    promtool_accepts(&after);
    let pool = metric(&after, "twinlink_db_pool_connections", &[("state", "max")]);
    if s.database_url.is_some() {
        assert_eq!(pool, 16.0, "the pool's size on PostgreSQL: {after}");
    } else {
        assert!(!after.contains("twinlink_db_pool_connections{"), "{after}");
    }
}

/// Scrapes until `twinlink_entities` shows these counts per tenant (PostgreSQL counts in the
/// background, after a scrape asked); fails with the last scrape after ten seconds.
async fn entities_counted(s: &TestServer, expected: &[(&str, f64)]) {
    let mut text = String::new();
    for _ in 0..100 {
        text = s.metrics().await;
        let counts = |t: &str| text.contains(&format!("twinlink_entities{{tenant=\"{t}\"}}"));
        if expected
            .iter()
            .all(|&(t, n)| counts(t) && metric(&text, "twinlink_entities", &[("tenant", t)]) == n)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("twinlink_entities never showed {expected:?}: {text}");
}

#[actix_web::test]
async fn entities_are_counted_per_tenant_on_both_stores() {
    let s = TestServer::start_with(|s| {
        s.entity_count_every = std::time::Duration::from_millis(50);
    })
    .await;
    let building =
        |i: usize| json!({"id": format!("urn:ngsi-ld:Building:c{i}"), "type": "Building"});
    let create = |tenant: &'static str, i: usize| {
        let r = s
            .req(reqwest::Method::POST, "/entities")
            .header("Content-Type", "application/json")
            .header("NGSILD-Tenant", tenant)
            .body(building(i).to_string());
        async move { assert_eq!(r.send().await.unwrap().status(), 201) }
    };
    create("city", 1).await;
    create("port", 1).await;
    create("port", 2).await;
    entities_counted(&s, &[("city", 1.0), ("port", 2.0)]).await;
    create("port", 3).await;
    let r = s
        .req(reqwest::Method::DELETE, "/entities/urn:ngsi-ld:Building:c1")
        .header("NGSILD-Tenant", "city");
    assert_eq!(r.send().await.unwrap().status(), 204);
    // The gauge moves with the writes; a tenant whose entities are gone shows 0.
    entities_counted(&s, &[("city", 0.0), ("port", 3.0)]).await;
}

#[actix_web::test]
async fn notifications_are_counted_per_host_and_contexts_per_fetch() {
    let s = TestServer::start().await;
    let mut receiver = Receiver::ok().await;
    for endpoint in [receiver.url.clone(), dead_url()] {
        let r = s
            .send(
                reqwest::Method::POST,
                "/subscriptions",
                "application/json",
                &json!({
                    "type": "Subscription", "entities": [{"type": "Sensor"}],
                    "notification": {"endpoint": {"uri": endpoint}}
                }),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let (_server, context) = vocab_context("https://vocab.test/", &["temperature"]);
    let before = s.metrics().await;
    for i in 0..2 {
        let r = s
            .send_linked(
                reqwest::Method::POST,
                "/entities",
                &context,
                &json!({"id": format!("urn:ngsi-ld:Sensor:s{i}"), "type": "Sensor",
                        "temperature": {"type": "Property", "value": 20}}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    // An update notifies both subscriptions (creation is not among their triggers).
    let r = s
        .send_linked(
            reqwest::Method::PATCH,
            "/entities/urn:ngsi-ld:Sensor:s0/attrs",
            &context,
            &json!({"temperature": {"type": "Property", "value": 21}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    receiver.next(5).await;
    // The counters move once each delivery has ended; the dead endpoint fails after its retries
    // (a few seconds of backoff).
    let host = [("host", "127.0.0.1")];
    let moved = |after: &str, name: &str| metric(after, name, &host) > metric(&before, name, &host);
    let mut after = s.metrics().await;
    for _ in 0..100 {
        if moved(&after, "twinlink_notifications_sent_total")
            && moved(&after, "twinlink_notifications_failed_total")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = s.metrics().await;
    }
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert!(
        delta("twinlink_notifications_sent_total", &host) >= 1.0,
        "{after}"
    );
    assert!(
        delta("twinlink_notifications_failed_total", &host) >= 1.0,
        "{after}"
    );
    assert_eq!(
        delta("twinlink_context_fetches_total", &[("outcome", "ok")]),
        1.0
    );
    assert!(delta("twinlink_context_cache_lookups_total", &[("result", "hit")]) >= 1.0);
    assert!(
        delta(
            "twinlink_context_cache_lookups_total",
            &[("result", "miss")]
        ) >= 1.0
    );
    promtool_accepts(&after);
}

#[actix_web::test]
async fn notifications_waiting_behind_a_failing_one_are_counted_as_queued() {
    let s = TestServer::start().await;
    let r = s
        .send(
            reqwest::Method::POST,
            "/subscriptions",
            "application/json",
            &json!({
                "type": "Subscription", "entities": [{"type": "Sensor"}],
                "notification": {"endpoint": {"uri": dead_url()}}
            }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .create(&json!({"id": "urn:ngsi-ld:Sensor:q", "type": "Sensor",
                        "temperature": {"type": "Property", "value": 0}}))
        .await;
    assert_eq!(r.status(), 201);
    // Three updates, three notifications to the dead endpoint: while the first is retried, the
    // others wait in its queue.
    for value in 1..=3 {
        let r = s
            .send(
                reqwest::Method::PATCH,
                "/entities/urn:ngsi-ld:Sensor:q/attrs",
                "application/json",
                &json!({"temperature": {"type": "Property", "value": value}}),
            )
            .await;
        assert_eq!(r.status(), 204);
    }
    let host = [("host", "127.0.0.1")];
    let queued = |scrape: &str| metric(scrape, "twinlink_notifications_queued", &host);
    let failed = |scrape: &str| metric(scrape, "twinlink_notifications_failed_total", &host);
    let mut seen = 0.0f64;
    let mut scrape = s.metrics().await;
    // Until every delivery has ended (each retry takes a moment).
    for _ in 0..200 {
        seen = seen.max(queued(&scrape));
        if failed(&scrape) >= 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        scrape = s.metrics().await;
    }
    assert!(seen >= 1.0, "no notification was seen waiting: {scrape}");
    assert_eq!(failed(&scrape), 3.0, "{scrape}");
    assert_eq!(queued(&scrape), 0.0, "the queue is empty again: {scrape}");
}

/// `promtool check metrics` finds nothing wrong in a scrape (format, names, help texts): it exits
/// non-zero on any problem, which fails the test with its report.
fn promtool_accepts(scrape: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(services::promtool_bin())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("promtool reads the scrape");
    let out = child.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n{scrape}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[actix_web::test]
async fn metrics_are_open_or_for_the_admin_class() {
    let signer = Signer::of(Algorithm::ES256);
    let operator_grant: twinlink::auth::grants::Grant = toml::from_str(
        r#"claim = "roles"
           value = "operator"
           tenants = ["*"]
           operations = ["admin"]"#,
    )
    .unwrap();
    for (access, anonymous) in [
        (twinlink::config::MetricsAccess::Open, 200),
        (twinlink::config::MetricsAccess::Admin, 401),
    ] {
        let mut auth = jwt::key_file_auth(signer.public_file.clone());
        auth.grants = vec![operator_grant.clone()];
        let s = TestServer::start_with(move |settings| {
            settings.auth = auth;
            settings.metrics_access = access;
        })
        .await;
        let url = format!("{}/metrics", s.root());
        let r = s.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), anonymous, "{access:?}");
        let mut operator = claims("prometheus");
        operator["roles"] = json!(["operator"]);
        let r = s
            .client
            .get(&url)
            .bearer_auth(signer.sign(&operator))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{access:?}");
        let r = s
            .client
            .get(&url)
            .bearer_auth(signer.sign(&claims("reader")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), if anonymous == 200 { 200 } else { 403 });
    }
}

/// An hourly aggregation from a bound on the hour is answered from the roll-ups, the same
/// request a microsecond off the hour from the records, with the same averages (both stores).
#[actix_web::test]
async fn aggregations_are_counted_by_source_and_rollups_answer_on_the_hour() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Sensor:agg";
    let r = s
        .create(&json!({
            "id": id, "type": "Sensor",
            "temperature": {"type": "Property", "value": 10, "observedAt": "2026-01-01T00:10:00Z"}
        }))
        .await;
    assert_eq!(r.status(), 201);
    let before = s.metrics().await;
    let ask = |from: &str| {
        format!(
            "/temporal/entities/{id}?options=aggregatedValues&aggrMethods=avg&aggrPeriodDuration=PT1H\
             &timerel=between&timeAt={from}&endTimeAt=2026-01-01T02:00:00Z"
        )
    };
    let (status, on_hour) = s.get_json(&ask("2026-01-01T00:00:00Z")).await;
    assert_eq!(status, 200, "{on_hour}");
    let (status, off_hour) = s.get_json(&ask("2026-01-01T00:00:00.000001Z")).await;
    assert_eq!(status, 200, "{off_hour}");
    let avg = |body: &serde_json::Value| body["temperature"]["avg"][0][0].clone();
    assert_eq!(avg(&on_hour), json!(10.0), "{on_hour}");
    assert_eq!(avg(&off_hour), json!(10.0), "{off_hour}");
    let after = s.metrics().await;
    let delta = |source: &str| {
        let labels = [("source", source)];
        metric(&after, "twinlink_history_aggregations_total", &labels)
            - metric(&before, "twinlink_history_aggregations_total", &labels)
    };
    assert_eq!(delta("rollups"), 1.0, "{after}");
    assert_eq!(delta("records"), 1.0, "{after}");
}
