//! A notification receiver down for a long time while updates flow (issue 20, item 5): two
//! subscriptions on one entity type, each with a receiver of its own on loopback; one receiver
//! goes down (every connection closed at once) for `TWINLINK_RECEIVER_OUTAGE_SECONDS` (5 by
//! default, for the suite; 60 in the long form of docs/reliability.md) and comes back, while the
//! entity is updated 20 times a second throughout.
//!
//! What docs/subscriptions.md ("Delivery") promises, and so what is asserted:
//! - each destination has queues of its own: the other receiver gets every notification, each
//!   within a second of the update's acknowledgement;
//! - a failing notification is retried twice, after 250 ms and 1 s (each stretched by up to as
//!   much again); while the receiver is down, later notifications get one attempt each: the
//!   connections the receiver sees are exactly one per failed notification plus those two
//!   retries, however long the outage (no retry storm, no queue growing behind the retries);
//! - the subscription shows the failure (NGSI-LD 5.2.14: `status` failed, `lastFailure`,
//!   `timesFailed`) while it lasts, and `status` ok with a later `lastSuccess` after;
//! - a notification that failed is not sent again: after the receiver is back it gets the
//!   notifications of every update made from then on, and `timesSent` / `timesFailed` account
//!   for every notification, delivered or not.

use crate::common;
use crate::subscriptions::{create, patch_attrs, room, sub, subscribe};

use common::receiver::{Received, Receiver};
use common::TestServer;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Pause between two updates.
const PACE: Duration = Duration::from_millis(50);
/// Most a notification of the receiver that stays up may lag behind the acknowledgement of its
/// update: the other receiver's first retries alone take 1.25 s, so a shared queue would show.
const MAX_LAG: Duration = Duration::from_secs(1);

/// How long the receiver stays down.
fn outage() -> Duration {
    let seconds: f64 = std::env::var("TWINLINK_RECEIVER_OUTAGE_SECONDS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("TWINLINK_RECEIVER_OUTAGE_SECONDS is a number")
        })
        .unwrap_or(5.0);
    Duration::from_secs_f64(seconds)
}

/// One update: its temperature value, when it was sent and when its 204 came back.
struct Update {
    value: i64,
    sent: Instant,
    acked: Instant,
}

/// The delivery statistics of a subscription (its `notification` member).
async fn stats(s: &TestServer, id: &str) -> Value {
    let (status, body) = s.get_json(&format!("/subscriptions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["notification"].clone()
}

/// Polls the statistics of a subscription until `done` holds for them (10 s at most).
async fn stats_until(s: &TestServer, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = stats(s, id).await;
        if done(&n) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: statistics never became as expected: {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes notifications from `receiver` until one carries every value of `wanted` (30 s at most).
async fn collect(receiver: &mut Receiver, wanted: &BTreeSet<i64>) -> Vec<(i64, Received)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have: BTreeSet<i64> = got.iter().map(|(v, _)| *v).collect();
        if wanted.is_subset(&have) {
            // Anything still on its way arrives within half a second.
            while let Some(n) = receiver.within(500).await {
                got.push((value_of(&n), n));
            }
            return got;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "notifications missing: {:?}",
            wanted.difference(&have).collect::<Vec<_>>()
        );
        if let Some(n) = receiver.within(left.as_millis() as u64).await {
            got.push((value_of(&n), n));
        }
    }
}

fn value_of(n: &Received) -> i64 {
    n.entity()["temperature"]["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("a temperature in {}", n.body))
}

#[actix_web::test]
async fn a_receiver_down_under_load_is_retried_recorded_and_notified_again_without_delaying_another(
) {
    let s = TestServer::start().await;
    let mut steady = Receiver::ok().await;
    let mut flaky = Receiver::ok().await;
    let watched = json!({"watchedAttributes": ["temperature"]});
    let steady_id = subscribe(
        &s,
        sub(
            "urn:ngsi-ld:Subscription:steady",
            &steady.url,
            watched.clone(),
        ),
    )
    .await;
    let flaky_id = subscribe(
        &s,
        sub("urn:ngsi-ld:Subscription:flaky", &flaky.url, watched),
    )
    .await;
    let entity = "urn:ngsi-ld:Room:outage";
    // Created before the load (not notified: the default triggers are attributeCreated and
    // attributeUpdated); each update below is one notification per subscription.
    create(&s, room(entity, 0.0)).await;

    // Updates 20 a second from here to the end; the receiver goes down after two seconds, stays
    // down for the outage and is back for two seconds more.
    let updates = RefCell::new(Vec::<Update>::new());
    let phases = RefCell::new((None::<Instant>, None::<Instant>, Value::Null));
    let writer = async {
        let mut value = 0;
        while phases
            .borrow()
            .1
            .is_none_or(|back| back.elapsed() < Duration::from_secs(2))
        {
            value += 1;
            let sent = Instant::now();
            patch_attrs(
                &s,
                entity,
                json!({"temperature": {"type": "Property", "value": value}}),
            )
            .await;
            updates.borrow_mut().push(Update {
                value,
                sent,
                acked: Instant::now(),
            });
            tokio::time::sleep(PACE).await;
        }
    };
    let controller = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        flaky.go_down();
        phases.borrow_mut().0 = Some(Instant::now());
        // While it is down (after the first failure's retries), the subscription shows it.
        let during = stats_until(&s, &flaky_id, |n| n["status"] == "failed").await;
        tokio::time::sleep(outage().saturating_sub(Duration::from_secs(2))).await;
        let later = stats(&s, &flaky_id).await;
        assert_eq!(later["status"], "failed", "still down: {later}");
        phases.borrow_mut().2 = json!({"first": during, "later": later});
        flaky.come_back();
        phases.borrow_mut().1 = Some(Instant::now());
    };
    futures_util::future::join(writer, controller).await;
    let updates = updates.into_inner();
    let (down, back, during) = phases.into_inner();
    let (down, back) = (down.unwrap(), back.unwrap());
    let all: BTreeSet<i64> = updates.iter().map(|u| u.value).collect();

    // The receiver that stayed up got every update, promptly.
    let got = collect(&mut steady, &all).await;
    let mut lags: Vec<Duration> = got
        .iter()
        .map(|(v, n)| {
            let u = &updates[*v as usize - 1];
            n.at.saturating_duration_since(u.acked)
        })
        .collect();
    lags.sort();
    let worst = *lags.last().unwrap();
    assert!(
        worst <= MAX_LAG,
        "a notification of the receiver that stayed up lagged {worst:?}"
    );
    assert_eq!(
        got.len(),
        all.len(),
        "each update notified once to the receiver that stayed up"
    );

    // The one that went down: everything acknowledged a second (MAX_LAG) before the outage, and
    // every update made after it came back (sent after that instant).
    let before: BTreeSet<i64> = updates
        .iter()
        .filter(|u| u.acked + MAX_LAG < down)
        .map(|u| u.value)
        .collect();
    let after: BTreeSet<i64> = updates
        .iter()
        .filter(|u| u.sent > back)
        .map(|u| u.value)
        .collect();
    assert!(
        !after.is_empty(),
        "updates were made after the receiver came back"
    );
    let wanted: BTreeSet<i64> = before.union(&after).copied().collect();
    let received = collect(&mut flaky, &wanted).await;
    let received_values: BTreeSet<i64> = received.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        received.len(),
        received_values.len(),
        "no notification twice"
    );

    // Statistics: while down, failed with lastFailure and timesFailed; after, ok, and every
    // notification (one per update) counted as sent, failed or not.
    for n in [&during["first"], &during["later"]] {
        assert_eq!(n["status"], "failed", "{n}");
        assert!(n["lastFailure"].is_string(), "{n}");
        assert!(n["timesFailed"].as_u64().unwrap_or(0) >= 1, "{n}");
    }
    assert!(
        during["later"]["timesFailed"].as_u64() > during["first"]["timesFailed"].as_u64(),
        "each failed notification is counted: {during}"
    );
    let notifications = updates.len() as u64;
    let delivered = received.len() as u64;
    let n = stats_until(&s, &flaky_id, |n| {
        n["timesSent"].as_u64() == Some(notifications)
    })
    .await;
    assert_eq!(n["status"], "ok", "{n}");
    assert!(n["lastSuccess"].as_str() > n["lastFailure"].as_str(), "{n}");
    let failed = n["timesFailed"].as_u64().unwrap();
    assert_eq!(
        failed,
        notifications - delivered,
        "timesFailed counts each lost notification: {n}"
    );
    let steady_stats = stats_until(&s, &steady_id, |n| {
        n["timesSent"].as_u64() == Some(notifications)
    })
    .await;
    assert!(steady_stats.get("timesFailed").is_none(), "{steady_stats}");
    assert_eq!(steady_stats["status"], "ok");

    // Attempts: the first failure is retried after ~250 ms and ~1 s, then one attempt per
    // notification: as many connections as failed notifications, plus two.
    let dropped = flaky.dropped();
    assert_eq!(
        dropped.len() as u64,
        failed + 2,
        "connections while down: one per failed notification plus the first one's two retries"
    );
    let (gap1, gap2) = (dropped[1] - dropped[0], dropped[2] - dropped[1]);
    assert!(
        gap1 >= Duration::from_millis(240) && gap1 < Duration::from_millis(1000),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(950) && gap2 < Duration::from_millis(3000),
        "second retry after {gap2:?}"
    );
    let outage_seconds = (back - down).as_secs_f64();
    println!(
        "receiver down {outage_seconds:.1} s under {} updates: the other receiver got all, lag \
         p50 {:?} max {worst:?}; the down one got {} (missed {failed}), {} connections while \
         down ({:.1}/s), retries after {gap1:?} and {gap2:?}",
        updates.len(),
        lags[lags.len() / 2],
        received.len(),
        dropped.len(),
        dropped.len() as f64 / outage_seconds,
    );
}
