//! Delivery across failover on PostgreSQL (issue 20, docs/reliability.md): real `twinlink`
//! binaries share one test database and its subscriptions. The instance that owns some is killed
//! with SIGKILL, or stopped with SIGTERM, while updates keep being committed through another; every
//! committed change must still reach the receivers: at least once after a crash, with no more
//! duplicates than docs/subscriptions.md allows, and exactly once after a clean stop or when an
//! instance joins and takes its share. Ownership is spread evenly and follows instances as they
//! join and leave; the change feed keeps what the watermarks need, for an hour at most. The
//! instances run only with `TWINLINK_TEST_STORE=postgres` (the embedded store is one instance by
//! construction); the pruning test runs on a PostgreSQL database of its own whatever the store
//! under test.

use crate::common;
use common::process::Broker;
use common::receiver::Receiver;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A database of this test's own, dropped at the end (declared first, so dropped last).
struct Database(String);

impl Drop for Database {
    fn drop(&mut self) {
        common::drop_database(&self.0);
    }
}

/// The advisory lock keys of docs/subscriptions.md: a subscription's owner, an instance.
const OWNER_LOCK: u32 = 0x7473_7562;
const INSTANCE_LOCK: u32 = 0x7469_6e73;

/// How many subscriptions each running instance owns, smallest first.
async fn shares(sql: &tokio_postgres::Client) -> Vec<i64> {
    let rows = sql
        .query(
            "WITH l AS (SELECT classid, pid FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND objsubid = 2
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
             SELECT (SELECT count(*) FROM l s WHERE s.classid = $1::text::oid AND s.pid = i.pid)
             FROM l i WHERE i.classid = $2::text::oid ORDER BY 1",
            &[&OWNER_LOCK.to_string(), &INSTANCE_LOCK.to_string()],
        )
        .await
        .expect("pg_locks");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Waits (20 s at most) until the instances own these numbers of subscriptions.
async fn wait_for_shares(sql: &tokio_postgres::Client, expected: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = shares(sql).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shares {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(dir: &Path, name: &str, db: &Database) -> Broker {
    Broker::start(&dir.join(name), &Some(db.0.clone())).await
}

fn subscription(n: usize, uri: &str) -> Value {
    json!({
        "id": format!("urn:ngsi-ld:Subscription:failover{n}"),
        "type": "Subscription",
        "entities": [{"type": "Meter"}],
        // Kept here: no internal registration subscription is made beside it (which would be
        // shared among the instances too).
        "localOnly": true,
        "notification": {"endpoint": {"uri": uri, "accept": "application/json"}}
    })
}

const METER: &str = "urn:ngsi-ld:Meter:failover";

/// What happens to the instances while updates are committed.
#[derive(Clone, Copy, PartialEq)]
enum Event {
    /// A, the owner of half the subscriptions, is killed with SIGKILL.
    Kill,
    /// A is stopped with SIGTERM.
    Terminate,
    /// A third instance, C, starts and takes its share.
    Join,
}

/// What the receivers got: per subscription, how many times each value arrived; the values
/// written (1..=written); how many writes were acknowledged in the second before the event.
struct Outcome {
    got: Vec<HashMap<i64, usize>>,
    written: i64,
    last_second: usize,
}

/// Two instances A and B, `subs` subscriptions (each with its own receiver) spread over them; B
/// commits an update every few milliseconds while `event` happens; returns what arrived once every
/// receiver has every value (or 20 s passed).
async fn fail_over(event: Event, subs: usize) -> Option<Outcome> {
    let db = Database(common::fresh_database_url().await?);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = start(dir.path(), "a", &db).await;
    let b = Arc::new(start(dir.path(), "b", &db).await);
    let sql = common::sql_client(&db.0).await;
    let meter = json!({"id": METER, "type": "Meter", "count": {"type": "Property", "value": 0}});
    b.write(Method::POST, "/entities", None, &meter, 201).await;
    let mut receivers = Vec::new();
    for n in 0..subs {
        let rx = Receiver::ok().await;
        let body = subscription(n, &rx.url);
        a.write(Method::POST, "/subscriptions", None, &body, 201)
            .await;
        receivers.push(rx);
    }
    let half = (subs / 2) as i64;
    wait_for_shares(&sql, &[half, half]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let writer = {
        let (b, stop, acked) = (b.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut v = 0;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                let patch = json!({"count": {"type": "Property", "value": v}});
                let path = format!("/entities/{METER}/attrs");
                b.write(Method::PATCH, &path, None, &patch, 204).await;
                acked.lock().unwrap().push(Instant::now());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            v
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at = Instant::now();
    let mut c = None;
    match event {
        Event::Kill => drop(a),
        Event::Terminate => {
            let exit = a.terminate(Duration::from_secs(20)).await;
            assert_eq!(exit.code(), Some(0), "SIGTERM is a clean stop: {exit}");
        }
        Event::Join => c = Some(start(dir.path(), "c", &db).await),
    }
    // The subscriptions move while the updates go on.
    let third = (subs / 3) as i64;
    let after = match event {
        Event::Join => vec![third, third, third],
        _ => vec![subs as i64],
    };
    wait_for_shares(&sql, &after).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("the writer ends");
    let last_second = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t <= at && at.duration_since(**t) <= Duration::from_secs(1))
        .count();

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = vec![HashMap::new(); receivers.len()];
    for (rx, got) in receivers.iter_mut().zip(got.iter_mut()) {
        while got.len() < written as usize && Instant::now() < deadline {
            if let Some(n) = rx.within(200).await {
                let v = n.entity()["count"]["value"].as_i64().expect("a count");
                *got.entry(v).or_insert(0) += 1;
            }
        }
        // Whatever else is on its way (duplicates) arrives within a moment.
        while let Some(n) = rx.within(300).await {
            let v = n.entity()["count"]["value"].as_i64().expect("a count");
            *got.entry(v).or_insert(0) += 1;
        }
    }
    drop(c);
    eprintln!(
        "written {written}, last second {last_second}, duplicates {:?}",
        got.iter().map(duplicates).collect::<Vec<_>>()
    );
    Some(Outcome {
        got,
        written,
        last_second,
    })
}

/// The values a subscription never received.
fn missing(got: &HashMap<i64, usize>, written: i64) -> Vec<i64> {
    (1..=written).filter(|v| !got.contains_key(v)).collect()
}

fn duplicates(got: &HashMap<i64, usize>) -> usize {
    got.values().map(|n| n - 1).sum()
}

#[actix_web::test]
async fn after_sigkill_of_the_owner_every_committed_change_is_notified() {
    let Some(out) = fail_over(Event::Kill, 4).await else {
        return;
    };
    assert!(out.written > 100, "updates went on: {}", out.written);
    for (n, got) in out.got.iter().enumerate() {
        assert_eq!(
            missing(got, out.written),
            Vec::<i64>::new(),
            "subscription {n}"
        );
        // The bound of docs/subscriptions.md: what the owner notified after its last saved
        // watermark, i.e. the changes of one save interval (0.5 s) before the crash and those it
        // was still delivering; checked against the writes of the whole second before it.
        assert!(
            duplicates(got) <= out.last_second,
            "subscription {n}: {} duplicates, {} writes in the last second",
            duplicates(got),
            out.last_second
        );
    }
}

#[actix_web::test]
async fn a_clean_stop_hands_over_without_loss_or_duplicate() {
    let Some(out) = fail_over(Event::Terminate, 4).await else {
        return;
    };
    assert!(out.written > 100, "updates went on: {}", out.written);
    for (n, got) in out.got.iter().enumerate() {
        assert_eq!(
            missing(got, out.written),
            Vec::<i64>::new(),
            "subscription {n}"
        );
        assert_eq!(duplicates(got), 0, "subscription {n}");
    }
}

#[actix_web::test]
async fn an_instance_joining_under_load_takes_its_share_without_loss_or_duplicate() {
    let Some(out) = fail_over(Event::Join, 6).await else {
        return;
    };
    assert!(out.written > 100, "updates went on: {}", out.written);
    for (n, got) in out.got.iter().enumerate() {
        assert_eq!(
            missing(got, out.written),
            Vec::<i64>::new(),
            "subscription {n}"
        );
        assert_eq!(duplicates(got), 0, "subscription {n}");
    }
}

#[actix_web::test]
async fn subscriptions_are_spread_evenly_and_follow_instances_that_join_and_leave() {
    let Some(url) = common::fresh_database_url().await else {
        return;
    };
    let db = Database(url);
    let dir = tempfile::tempdir().expect("temp dir");
    let a = start(dir.path(), "a", &db).await;
    let _b = start(dir.path(), "b", &db).await;
    let sql = common::sql_client(&db.0).await;
    let rx = Receiver::ok().await;
    for n in 0..12 {
        let body = subscription(n, &rx.url);
        a.write(Method::POST, "/subscriptions", None, &body, 201)
            .await;
    }
    wait_for_shares(&sql, &[6, 6]).await;
    let c = start(dir.path(), "c", &db).await;
    wait_for_shares(&sql, &[4, 4, 4]).await;
    drop(c); // SIGKILL
    wait_for_shares(&sql, &[6, 6]).await;
}

#[actix_web::test]
async fn the_change_feed_keeps_what_watermarks_need_for_an_hour_at_most() {
    let server = common::TestServer::start_on_postgres().await;
    let url = server.database_url.clone().expect("a database");
    let rx = Receiver::ok().await;
    let sql = common::sql_client(&url).await;
    // Rows no watermark needs (a transaction finished before the subscription's watermark was taken: a fixed small number would not
    // do, a fresh cluster may not have reached it) and rows every watermark still needs (a
    // transaction no snapshot sees yet), of several ages.
    let finished: String = sql
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .expect("a transaction id")
        .get(0);
    let (status, _, body) = common::read(
        server
            .send(
                Method::POST,
                "/subscriptions",
                "application/json",
                &subscription(0, &rx.url),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (passed, needed) = (finished.as_str(), "1000000000000");
    for (id, age, xid) in [
        ("passed, 10 minutes old", "10 minutes", passed),
        ("needed, 10 minutes old", "10 minutes", needed),
        ("needed, 2 hours old", "2 hours", needed),
        ("passed, 1 minute old", "1 minute", passed),
    ] {
        sql.execute(
            "INSERT INTO entity_changes (tenant, id, at, xid)
             VALUES ('', $1, now() - $2::text::interval, $3::text::xid8)",
            &[&id, &age, &xid],
        )
        .await
        .expect("a change row");
    }
    // A restarted instance prunes at once.
    let _server = server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let rows = sql
            .query(
                "SELECT id FROM entity_changes WHERE id LIKE '%old' ORDER BY id",
                &[],
            )
            .await
            .expect("change rows");
        let kept: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if kept.len() == 2 || Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kept, ["needed, 10 minutes old", "passed, 1 minute old"]);
}
