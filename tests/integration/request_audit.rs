//! Request ids (`X-Request-Id` taken or made, echoed, on the request's log lines) and the audit
//! log (one `twinlink::audit` event per accepted write, MQTT ingestion's with the subject `mqtt`,
//! and with `--audit-table true` one row of the PostgreSQL table `audit_log`).

use crate::common::jwt::{self, claims, Signer};
use crate::common::logs::{capture, Logged};
use crate::common::{services, sql_client, TestServer};
use crate::mqtt_ingest::{broker_with, unique, until_ingesting, Peer};
use jsonwebtoken::Algorithm;
use serde_json::json;

#[actix_web::test]
async fn a_request_id_is_taken_or_made_and_echoed() {
    let s = TestServer::start().await;
    let id_of = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .expect("X-Request-Id in the response")
            .to_str()
            .unwrap()
            .to_string()
    };
    let r = s
        .req(reqwest::Method::GET, "/entities?type=Building")
        .header("X-Request-Id", "lb-7f3a:42")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&r), "lb-7f3a:42");
    // Errors carry it too.
    let r = s
        .req(reqwest::Method::GET, "/entities/urn:ngsi-ld:Building:none")
        .header("X-Request-Id", "lb-7f3a:43")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(id_of(&r), "lb-7f3a:43");
    // Without one, or with one that could forge log lines, a fresh UUID.
    let mut made = Vec::new();
    for given in [None, Some("two words"), Some(&*"x".repeat(200))] {
        let mut request = s.req(reqwest::Method::GET, "/types");
        if let Some(given) = given {
            request = request.header("X-Request-Id", given);
        }
        let id = id_of(&request.send().await.unwrap());
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        made.push(id);
    }
    made.dedup();
    assert_eq!(made.len(), 3, "each request gets its own id");
}

/// The audit events logged so far.
fn audit_events(log: &std::sync::Mutex<Vec<Logged>>) -> Vec<Logged> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|e| e.target == "twinlink::audit")
        .cloned()
        .collect()
}

#[actix_web::test]
async fn accepted_writes_are_audited_and_log_lines_name_their_request() {
    let log = capture();
    let signer = Signer::of(Algorithm::EdDSA);
    let auth = jwt::key_file_auth(signer.public_file.clone());
    let s = TestServer::start_with(move |settings| settings.auth = auth).await;
    let token = signer.sign(&claims("alice@city"));
    let post = |path: &str, body: serde_json::Value, request_id: &str| {
        s.req(reqwest::Method::POST, path)
            .bearer_auth(&token)
            .header("NGSILD-Tenant", "city")
            .header("X-Request-Id", request_id)
            .header("Content-Type", "application/json")
            .body(body.to_string())
    };
    let building = |n: u32| json!({"id": format!("urn:ngsi-ld:Building:a{n}"), "type": "Building"});
    let r = post("/entities", building(1), "req-create")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = post(
        "/entityOperations/upsert",
        json!([building(2), building(3)]),
        "req-batch",
    )
    .send()
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Not audited: a read, a query in a body, a write that fails, a request refused.
    let r = s
        .req(reqwest::Method::GET, "/entities?type=Building")
        .bearer_auth(&token)
        .header("NGSILD-Tenant", "city")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let query = json!({"type": "Query", "entities": [{"type": "Building"}]});
    let r = post("/entityOperations/query", query, "req-query")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post("/entities", building(1), "req-again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = s
        .req(reqwest::Method::POST, "/entities")
        .header("X-Request-Id", "req-anonymous")
        .header("Content-Type", "application/json")
        .body(building(4).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let events = audit_events(&log);
    assert_eq!(events.len(), 2, "{events:#?}");
    let create = &events[0].fields;
    assert_eq!(create["subject"], "alice@city");
    assert_eq!(create["tenant"], "city");
    assert_eq!(create["operation"], "POST /ngsi-ld/v1/entities");
    assert_eq!(create["entity_ids"], r#"["urn:ngsi-ld:Building:a1"]"#);
    assert_eq!(create["request_id"], "req-create");
    assert!(chrono::DateTime::parse_from_rfc3339(&create["at"]).is_ok());
    assert_eq!(events[0].spans["request_id"], "req-create");
    let batch = &events[1].fields;
    assert_eq!(
        batch["operation"],
        "POST /ngsi-ld/v1/entityOperations/upsert"
    );
    assert_eq!(
        batch["entity_ids"],
        r#"["urn:ngsi-ld:Building:a2", "urn:ngsi-ld:Building:a3"]"#
    );
    // The refusal's log line names its request.
    let logged = log.lock().unwrap().clone();
    let refusal = logged
        .iter()
        .find(|e| e.fields["message"].contains("without a bearer token"))
        .expect("the refusal is logged");
    assert_eq!(refusal.spans["request_id"], "req-anonymous");
    assert_eq!(refusal.spans["path"], "/ngsi-ld/v1/entities");
}

#[actix_web::test]
async fn mqtt_ingestion_is_audited_with_the_subject_mqtt() {
    let log = capture();
    let url = services::mqtt_url();
    let prefix = unique("t");
    let s = broker_with(&url, &prefix, |_| {}).await;
    let peer = Peer::connect(&url).await;
    until_ingesting(&s, &peer, &prefix).await;
    let cranes = json!([
        {"id": "urn:ngsi-ld:Crane:q1", "type": "Crane"},
        {"id": "urn:ngsi-ld:Crane:q2", "type": "Crane"}
    ]);
    let topic = format!("{prefix}/tenants/harbour/entities");
    peer.publish(&topic, cranes.to_string()).await;
    let mut harbour = Vec::new();
    for _ in 0..100 {
        harbour = audit_events(&log)
            .into_iter()
            .filter(|e| e.fields["tenant"] == "harbour")
            .collect();
        if !harbour.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let [event] = &harbour[..] else {
        panic!("one audit event of the harbour's write: {harbour:#?}");
    };
    assert_eq!(event.fields["subject"], "mqtt");
    assert_eq!(event.fields["operation"], "MQTT ingestion");
    assert_eq!(
        event.fields["entity_ids"],
        r#"["urn:ngsi-ld:Crane:q1", "urn:ngsi-ld:Crane:q2"]"#
    );
    assert_eq!(event.fields["request_id"], "");
    assert!(chrono::DateTime::parse_from_rfc3339(&event.fields["at"]).is_ok());
}

#[actix_web::test]
async fn the_audit_table_holds_accepted_writes_queryable_by_time_and_subject() {
    let signer = Signer::of(Algorithm::ES256);
    let auth = jwt::key_file_auth(signer.public_file.clone());
    let s = TestServer::start_on_postgres_with(move |settings| {
        settings.auth = auth;
        settings.audit_table = true;
    })
    .await;
    let db = sql_client(s.database_url.as_deref().expect("on PostgreSQL")).await;
    let started = chrono::Utc::now();
    let send = |subject: &str, method: reqwest::Method, path: &str, body: serde_json::Value| {
        s.req(method, path)
            .bearer_auth(signer.sign(&claims(subject)))
            .header("NGSILD-Tenant", "city")
            .header("X-Request-Id", format!("{subject}-{path}"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
    };
    let building = |n: u32| json!({"id": format!("urn:ngsi-ld:Building:t{n}"), "type": "Building"});
    for n in 1..=2 {
        let r = send("alice", reqwest::Method::POST, "/entities", building(n));
        assert_eq!(r.await.unwrap().status(), 201);
    }
    let r = send(
        "bob",
        reqwest::Method::PATCH,
        "/entities/urn:ngsi-ld:Building:t1/attrs",
        json!({"height": {"type": "Property", "value": 3}}),
    );
    assert_eq!(r.await.unwrap().status(), 204);
    // Neither a failed write nor a read is a row.
    let r = send("bob", reqwest::Method::POST, "/entities", building(1));
    assert_eq!(r.await.unwrap().status(), 409);
    let r = s
        .req(reqwest::Method::GET, "/entities?type=Building")
        .bearer_auth(signer.sign(&claims("bob")))
        .header("NGSILD-Tenant", "city")
        .send();
    assert_eq!(r.await.unwrap().status(), 200);

    // The rows are written after the writes, by a task of their own: three accepted writes.
    let count = "SELECT count(*) FROM audit_log WHERE at >= $1";
    for _ in 0..100 {
        let rows: i64 = db.query_one(count, &[&started]).await.unwrap().get(0);
        if rows >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let by_subject = "SELECT tenant, operation, entity_ids, request_id FROM audit_log
                      WHERE subject = $1 AND at >= $2 AND at <= now() ORDER BY at, id";
    let alice = db.query(by_subject, &[&"alice", &started]).await.unwrap();
    let row = |r: &tokio_postgres::Row| {
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, Vec<String>>(2),
            r.get::<_, Option<String>>(3),
        )
    };
    let alice: Vec<_> = alice.iter().map(row).collect();
    let created = |n: u32| {
        (
            "city".to_string(),
            "POST /ngsi-ld/v1/entities".to_string(),
            vec![format!("urn:ngsi-ld:Building:t{n}")],
            Some("alice-/entities".to_string()),
        )
    };
    assert_eq!(alice, vec![created(1), created(2)]);
    let bob: Vec<_> = db
        .query(by_subject, &[&"bob", &started])
        .await
        .unwrap()
        .iter()
        .map(row)
        .collect();
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(bob[0].1, "PATCH /ngsi-ld/v1/entities/{id}/attrs");
    assert_eq!(bob[0].2, vec!["urn:ngsi-ld:Building:t1".to_string()]);
    // A time window before the writes holds none of them.
    let before: i64 = db
        .query_one("SELECT count(*) FROM audit_log WHERE at < $1", &[&started])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, 0);
}

#[actix_web::test]
async fn the_audit_table_needs_the_postgresql_store() {
    let dir = tempfile::tempdir().unwrap();
    let settings = twinlink::config::Settings {
        data_dir: dir.path().to_path_buf(),
        audit_table: true,
        ..Default::default()
    };
    let refused = twinlink::server::app_state(settings, twinlink::server::DatabaseWait::Wait).await;
    let error = refused.err().expect("refused on the embedded store");
    assert!(error.contains("--audit-table"), "{error}");
}
