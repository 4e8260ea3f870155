//! The embedded store on a full disk (issue 20, fault injection): a file size limit put on the
//! running process (`prlimit --fsize`, with SIGXFSZ ignored) makes its store's writes fail as a
//! full disk does. Writes are then refused with 503 and a message saying what to do, nothing is
//! half-written, reads go on; once space is back writes resume by themselves (the store reopens its
//! file), and after a restart everything acknowledged is there too. On PostgreSQL a full disk is the database server's own, out of scope here.

use crate::common;

use common::process::Broker;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

fn sensor(n: usize, payload: &str) -> Value {
    json!({"id": format!("urn:ngsi-ld:Sensor:full{n}"), "type": "Sensor",
           "reading": {"type": "Property", "value": payload}})
}

fn limit_file_size(pid: u32, bytes: &str) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={bytes}")])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit --fsize={bytes}");
}

#[actix_web::test]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing_acknowledged() {
    if std::env::var("TWINLINK_TEST_STORE").as_deref() == Ok("postgres") {
        return; // the embedded store's own disk; see the module documentation
    }
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start_without_file_size_signal(dir.path()).await;
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        b.write(Method::POST, "/entities", None, &sensor(n, "small"), 201)
            .await;
        acknowledged.push(n);
    }
    // The disk is full: the store file may not grow any more.
    let file = dir.path().join("twinlink.redb");
    let size = std::fs::metadata(&file).expect("the store file").len();
    // The soft limit only, so that it can be lifted again when space is back.
    limit_file_size(b.pid(), &format!("{size}:unlimited"));
    let big = "x".repeat(50_000);
    let mut refused = None;
    for n in 100..400 {
        let (status, body) = b
            .send(Method::POST, "/entities", None, Some(&sensor(n, &big)))
            .await;
        match status {
            201 => acknowledged.push(n),
            503 => {
                refused = Some((n, body));
                break;
            }
            other => panic!("a write on a full disk answered {other}: {body}"),
        }
    }
    let (n, body) = refused.expect("writes kept succeeding on a full disk");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("Free space"), "{body}");
    assert!(!detail.contains("restart"), "no restart is needed: {body}");
    // Later writes that need the file to grow are refused the same way (once the store has
    // reopened its file, small ones may still fit in its free pages), reads go on, and the
    // refused entity is absent.
    for n in 1000..1003 {
        let (status, body) = b
            .send(Method::POST, "/entities", None, Some(&sensor(n, &big)))
            .await;
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(b.get("urn:ngsi-ld:Sensor:full0", None, "").await.0, 200);
    assert_eq!(
        b.get(&format!("urn:ngsi-ld:Sensor:full{n}"), None, "")
            .await
            .0,
        404
    );
    // Space is back: without a restart, writes resume within seconds (the store reopens its
    // file once a second at most), and everything acknowledged reads back.
    limit_file_size(b.pid(), "unlimited:unlimited");
    let resumed = std::time::Instant::now();
    loop {
        let (status, body) = b
            .send(
                Method::POST,
                "/entities",
                None,
                Some(&sensor(1500, "small")),
            )
            .await;
        match status {
            201 => break,
            503 if resumed.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("writes did not resume once space was back: {other} {body}"),
        }
    }
    acknowledged.push(1500);
    b.write(Method::POST, "/entities", None, &sensor(1501, &big), 201)
        .await;
    acknowledged.push(1501);
    for n in &acknowledged {
        let (status, _) = b
            .get(&format!("urn:ngsi-ld:Sensor:full{n}"), None, "")
            .await;
        assert_eq!(
            status, 200,
            "acknowledged write {n} is served after the reopening"
        );
    }
    assert_eq!(
        b.get(&format!("urn:ngsi-ld:Sensor:full{n}"), None, "")
            .await
            .0,
        404,
        "the refused write stays absent"
    );
    // And after a restart: everything acknowledged is there, writes work.
    b.terminate(Duration::from_secs(10)).await;
    let b = Broker::start(dir.path(), &None).await;
    for n in &acknowledged {
        let (status, entity) = b
            .get(&format!("urn:ngsi-ld:Sensor:full{n}"), None, "")
            .await;
        assert_eq!(status, 200, "acknowledged write {n} lost");
        assert!(entity["reading"]["value"].is_string(), "{entity}");
    }
    b.write(Method::POST, "/entities", None, &sensor(2000, "small"), 201)
        .await;
}
