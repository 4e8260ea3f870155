//! Black-box tests of concurrent single-entity writes, which the store combines into shared
//! commits under load (group commit, `src/store/combine.rs`): every request still gets its own
//! answer, no concurrent change of one entity is lost, a failing request fails alone, and on
//! PostgreSQL the writes really share transactions.

use crate::common;

use common::{read, writing_transactions, TestServer};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

fn id(n: usize) -> String {
    format!("urn:ngsi-ld:Meter:{n}")
}

/// Creates `n` meters with a reading of 0 in one batch.
async fn meters(s: &TestServer, n: usize) {
    let batch: Vec<Value> = (0..n)
        .map(|i| json!({"id": id(i), "type": "Meter", "reading": {"type": "Property", "value": 0}}))
        .collect();
    let r = s
        .send(
            Method::POST,
            "/entityOperations/create",
            "application/json",
            &json!(batch),
        )
        .await;
    assert_eq!(r.status(), 201);
}

async fn patch(s: &TestServer, entity: &str, fragment: Value) -> u16 {
    s.send(
        Method::PATCH,
        &format!("/entities/{entity}/attrs"),
        "application/json",
        &fragment,
    )
    .await
    .status()
    .as_u16()
}

/// Connects to the test database and makes it refuse every history row with the number 666
/// (the constraint `refuse_666`): a write the database refuses in the middle.
async fn refuse_666(url: &str) -> tokio_postgres::Client {
    let client = common::sql_client(url).await;
    client
        .batch_execute(
            "ALTER TABLE attribute_instances ADD CONSTRAINT refuse_666 CHECK (num IS DISTINCT FROM 666)",
        )
        .await
        .expect("add the constraint");
    client
}

/// Sends a batch operation that some entities fail, and returns its BatchOperationResult.
async fn partly_failing(s: &TestServer, path: &str, batch: &Value) -> Value {
    let r = s.send(Method::POST, path, "application/json", batch).await;
    assert_eq!(r.status(), 207);
    r.json().await.expect("BatchOperationResult")
}

#[actix_web::test]
async fn concurrent_updates_of_many_entities_each_land_and_share_commits() {
    let s = TestServer::start().await;
    let n = 200;
    meters(&s, n).await;
    let statuses = join_all((0..n).map(|i| {
        let s = &s;
        async move {
            patch(
                s,
                &id(i),
                json!({"reading": {"type": "Property", "value": i * 10 + 7}}),
            )
            .await
        }
    }))
    .await;
    assert!(statuses.iter().all(|&st| st == 204), "{statuses:?}");
    for i in (0..n).step_by(17) {
        assert_eq!(
            s.entity(&id(i), "").await["reading"]["value"],
            json!(i * 10 + 7),
            "{}",
            id(i)
        );
    }
    if let Some(url) = &s.database_url {
        // The creating batch was one transaction; the 200 updates took fewer than 200.
        let commits = writing_transactions(url, "entities").await;
        assert!(
            commits < n as i64,
            "{n} concurrent updates were written in {commits} transactions"
        );
    }
}

#[actix_web::test]
async fn concurrent_appends_to_one_entity_are_all_kept() {
    let s = TestServer::start().await;
    meters(&s, 1).await;
    let n = 60;
    let statuses = join_all((0..n).map(|i| {
        let s = &s;
        async move {
            s.send(
                Method::POST,
                &format!("/entities/{}/attrs", id(0)),
                "application/json",
                &json!({ format!("channel{i}"): {"type": "Property", "value": i} }),
            )
            .await
            .status()
            .as_u16()
        }
    }))
    .await;
    assert!(statuses.iter().all(|&st| st == 204), "{statuses:?}");
    let e = s.entity(&id(0), "").await;
    for i in 0..n {
        assert_eq!(e[format!("channel{i}")]["value"], json!(i), "{e}");
    }
    // Every append is in the history too.
    let (status, _, temporal) = read(
        s.req(
            Method::GET,
            &format!(
                "/temporal/entities/{}?attrs=channel0,channel59&timeproperty=createdAt",
                id(0)
            ),
        )
        .send()
        .await
        .expect("request"),
    )
    .await;
    assert_eq!(status, 200, "{temporal}");
    for (attr, value) in [("channel0", 0), ("channel59", 59)] {
        let instances = temporal[attr].as_array().expect("instances");
        assert_eq!(instances.len(), 1, "{temporal}");
        assert_eq!(instances[0]["value"], json!(value), "{temporal}");
    }
}

#[actix_web::test]
async fn a_failing_request_among_concurrent_ones_fails_alone() {
    let s = TestServer::start().await;
    let n = 80;
    meters(&s, n).await;
    // Every fourth request addresses a meter that does not exist; every seventh sends an
    // attribute that is not valid; the others are good.
    let requests = (0..n).map(|i| {
        let s = &s;
        async move {
            let (entity, fragment) = if i % 4 == 0 {
                (
                    format!("urn:ngsi-ld:Meter:missing{i}"),
                    json!({"reading": {"type": "Property", "value": 1}}),
                )
            } else if i % 7 == 0 {
                (id(i), json!({"reading": {"type": "Property"}}))
            } else {
                (
                    id(i),
                    json!({"reading": {"type": "Property", "value": 1000 + i}}),
                )
            };
            (i, patch(s, &entity, fragment).await)
        }
    });
    for (i, status) in join_all(requests).await {
        let reading = &s.entity(&id(i), "").await["reading"]["value"];
        if i % 4 == 0 {
            assert_eq!(status, 404, "request {i}");
            assert_eq!(reading, &json!(0), "{}", id(i));
        } else if i % 7 == 0 {
            assert_eq!(status, 400, "request {i}");
            assert_eq!(reading, &json!(0), "{}", id(i));
        } else {
            assert_eq!(status, 204, "request {i}");
            assert_eq!(reading, &json!(1000 + i), "{}", id(i));
        }
    }
}

#[actix_web::test]
async fn value_updates_add_no_index_entries_on_postgresql() {
    let s = TestServer::start().await;
    let Some(url) = s.database_url.clone() else {
        return; // The embedded store has no secondary indexes to spare.
    };
    let n = 20;
    meters(&s, n).await;
    for round in 1..=3 {
        for i in 0..n {
            let fragment = json!({"reading": {"type": "Property", "value": round * 100 + i}});
            assert_eq!(patch(&s, &id(i), fragment).await, 204);
        }
    }
    // An update that keeps types, scopes, attribute names and location is heap-only (HOT): no
    // index covers what it changes and the page has room (migration 0009). PostgreSQL publishes
    // its table statistics shortly after the writing connections go idle.
    let client = common::sql_client(&url).await;
    let mut counts = (0i64, 0i64);
    for _ in 0..100 {
        let row = client
            .query_one(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'entities'",
                &[],
            )
            .await
            .expect("table statistics");
        counts = (row.get(0), row.get(1));
        if counts.0 >= 3 * n as i64 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (updates, hot) = counts;
    assert!(updates >= 3 * n as i64, "only {updates} updates counted");
    // How many are heap-only depends on the room left on each page when an update comes, which
    // pruning of old versions makes vary under load (90 % or more in local runs, 63 % seen in
    // a loaded CI run); an index over a column every write changes makes it exactly 0.
    assert!(hot > 0, "none of {updates} entity updates was heap-only");
}

#[actix_web::test]
async fn a_write_the_database_refuses_changes_nothing_and_its_connection_serves_on_on_postgresql() {
    // One pooled connection, so that the write after the refused one runs on the same connection.
    let s = TestServer::start_with(|settings| settings.db_pool_size = 1).await;
    let Some(url) = s.database_url.clone() else {
        return; // A database-side refusal in the middle of a write exists on PostgreSQL only.
    };
    meters(&s, 2).await;
    // The entity update is sent before the history insert, in the same pipeline as COMMIT: a
    // refused history row must take the update (and the commit) down with it.
    let client = refuse_666(&url).await;
    let value = |s: &TestServer, entity: &str| {
        let path = format!("/entities/{entity}");
        let s = s.client.get(s.url(&path));
        async move {
            let body: Value = s.send().await.expect("request").json().await.expect("JSON");
            body["reading"]["value"].clone()
        }
    };
    let reading = |v: i64| json!({"reading": {"type": "Property", "value": v}});
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{}/attrs", id(0)),
            "application/json",
            &reading(666),
        )
        .await;
    let refused = common::assert_problem(r, 500, "InternalError").await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or("")
            .contains("refuse_666"),
        "the refusal names its cause: {refused}"
    );
    let batch = json!([
        {"id": id(1), "type": "Meter", "reading": {"type": "Property", "value": 7}},
        {"id": id(0), "type": "Meter", "reading": {"type": "Property", "value": 666}},
    ]);
    // The batch's one transaction is refused whole: every entity of it is reported failed.
    let result = partly_failing(&s, "/entityOperations/upsert", &batch).await;
    assert_eq!(result["success"], json!([]), "{result}");
    assert_eq!(
        result["errors"].as_array().map(Vec::len),
        Some(2),
        "{result}"
    );
    for i in 0..2 {
        assert_eq!(value(&s, &id(i)).await, 0, "{} unchanged", id(i));
    }
    // The same (only) connection is usable: no transaction was left open or aborted on it.
    assert_eq!(patch(&s, &id(0), reading(5)).await, 204);
    assert_eq!(value(&s, &id(0)).await, 5);
    let history: i64 = client
        .query_one(
            "SELECT count(*) FROM attribute_instances WHERE num IN (666, 7)",
            &[],
        )
        .await
        .expect("count history")
        .get(0);
    assert_eq!(history, 0, "no history row of a refused write");
    // A write that fails before its COMMIT is sent (a stored body that does not decode, found
    // by the read that follows BEGIN and the locks) must not leave its transaction open on the
    // connection that goes back to the pool.
    client
        .execute(
            "UPDATE entities SET body = '{\"not\": \"an entity\"}' WHERE id = $1",
            &[&id(1)],
        )
        .await
        .expect("spoil a stored body");
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{}/attrs", id(1)),
            "application/json",
            &reading(8),
        )
        .await;
    common::assert_problem(r, 500, "InternalError").await;
    let open: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .expect("count open transactions")
        .get(0);
    assert_eq!(open, 0, "a failed write left its transaction open");
    assert_eq!(patch(&s, &id(0), reading(9)).await, 204);
    assert_eq!(value(&s, &id(0)).await, 9);
}

#[actix_web::test]
async fn a_batch_of_hundreds_of_entities_lands_whole_and_is_refused_whole() {
    let s = TestServer::start().await;
    // Hundreds of entities in one request are one transaction on PostgreSQL, one result each.
    let n = 700;
    meters(&s, n).await;
    let update = |value: i64, odd: Option<(usize, Value)>| -> Value {
        (0..n)
            .map(|i| match &odd {
                Some((at, entity)) if *at == i => entity.clone(),
                _ => json!({"id": id(i), "type": "Meter", "reading": {"type": "Property", "value": value}}),
            })
            .collect()
    };
    let count = |v: i64| {
        let request = s.client.get(s.url(&format!(
            "/entities?type=Meter&q=reading=={v}&count=true&limit=1"
        )));
        async move {
            let r = request.send().await.expect("request");
            assert_eq!(r.status(), 200);
            r.headers()["NGSILD-Results-Count"]
                .to_str()
                .expect("count")
                .parse::<usize>()
                .expect("a number")
        }
    };
    // An entity near the end that does not exist fails alone; every other one is updated,
    // and the results keep the request's order.
    let missing =
        json!({"id": id(n + 5), "type": "Meter", "reading": {"type": "Property", "value": 1}});
    let result = partly_failing(
        &s,
        "/entityOperations/update",
        &update(1, Some((600, missing))),
    )
    .await;
    let success = result["success"].as_array().expect("success");
    let expected: Vec<Value> = (0..n).filter(|i| *i != 600).map(|i| json!(id(i))).collect();
    assert_eq!(success, &expected);
    assert_eq!(
        result["errors"].as_array().map(Vec::len),
        Some(1),
        "{result}"
    );
    assert_eq!(result["errors"][0]["entityId"], json!(id(n + 5)));
    assert_eq!(count(1).await, n - 1);
    assert_eq!(count(0).await, 1, "{} keeps its reading", id(600));
    let Some(url) = s.database_url.clone() else {
        return; // A refusal by the database in the middle of a write exists on PostgreSQL only.
    };
    // A row the database refuses near the end takes every row written before it down too.
    let client = refuse_666(&url).await;
    let refused =
        json!({"id": id(650), "type": "Meter", "reading": {"type": "Property", "value": 666}});
    let result = partly_failing(
        &s,
        "/entityOperations/upsert",
        &update(2, Some((650, refused))),
    )
    .await;
    assert_eq!(result["success"], json!([]), "{result}");
    assert_eq!(result["errors"].as_array().map(Vec::len), Some(n));
    assert_eq!(
        count(2).await,
        0,
        "no entity of the refused batch was written"
    );
    assert_eq!(count(1).await, n - 1);
    let history: i64 = client
        .query_one(
            "SELECT count(*) FROM attribute_instances WHERE num = 2",
            &[],
        )
        .await
        .expect("count history")
        .get(0);
    assert_eq!(history, 0, "no history row of the refused batch");
}

#[actix_web::test]
async fn a_write_builds_on_what_another_instance_wrote_since_on_postgresql() {
    let a = TestServer::start().await;
    let Some(url) = a.database_url.clone() else {
        return; // The embedded store is one instance's own.
    };
    let b = TestServer::start_with(|s| s.database_url = Some(url.clone())).await;
    meters(&a, 1).await;
    let reading = |v: i64| json!({"reading": {"type": "Property", "value": v}});
    // a writes the meter, so that a holds it, as written, in its cache.
    assert_eq!(patch(&a, &id(0), reading(1)).await, 204);
    // b adds an attribute: the stored row is no longer the version a holds.
    let r = b
        .send(
            Method::POST,
            &format!("/entities/{}/attrs", id(0)),
            "application/json",
            &json!({"note": {"type": "Property", "value": "from b"}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    // a's next write must start from b's version, not from the one it cached.
    assert_eq!(patch(&a, &id(0), reading(2)).await, 204);
    for s in [&a, &b] {
        let body: Value = s
            .client
            .get(s.url(&format!("/entities/{}", id(0))))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON");
        assert_eq!(body["reading"]["value"], 2, "{body}");
        assert_eq!(
            body["note"]["value"], "from b",
            "b's attribute kept: {body}"
        );
    }
}

#[actix_web::test]
async fn concurrent_updates_of_one_entity_are_each_notified() {
    // Group commit takes concurrent writes of one entity into one store operation; each is still
    // a change of its own, notified with its own value (and its own value before), not one
    // change from the first state to the last.
    let s = TestServer::start().await;
    meters(&s, 1).await;
    let mut rx = common::receiver::Receiver::ok().await;
    crate::subscriptions::subscribe(
        &s,
        json!({
            "type": "Subscription",
            "entities": [{"id": id(0), "type": "Meter"}],
            "watchedAttributes": ["reading"],
            "notification": {"endpoint": {"uri": rx.url, "accept": "application/json"}},
        }),
    )
    .await;
    let n = 60;
    let statuses = join_all((1..=n).map(|i| {
        let s = &s;
        async move {
            patch(
                s,
                &id(0),
                json!({"reading": {"type": "Property", "value": i}}),
            )
            .await
        }
    }))
    .await;
    assert!(statuses.iter().all(|&st| st == 204), "{statuses:?}");
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < n {
        let Some(got) = rx.within(10_000).await else {
            break;
        };
        let value = got.body["data"][0]["reading"]["value"].as_u64();
        // 0: the state when subscribing, if the subscription notifies it.
        if value != Some(0) {
            *seen.entry(value).or_insert(0) += 1;
        }
    }
    let expected: std::collections::BTreeMap<Option<u64>, i32> =
        (1..=n as u64).map(|i| (Some(i), 1)).collect();
    assert_eq!(
        seen, expected,
        "one notification per update, each with its value"
    );
    rx.nothing(500).await;
}
