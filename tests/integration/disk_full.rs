//! The embedded store on a full disk (issue 20, fault injection): a file size limit put on the
//! running process (`prlimit --fsize`, with SIGXFSZ ignored) makes its store's writes fail as a
//! full disk does. Writes are then refused with 503 and a message saying what to do, nothing is
//! half-written, reads go on, and after a restart with space everything acknowledged is there and
//! writes work again. On PostgreSQL a full disk is the database server's own, out of scope here.

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
    limit_file_size(b.pid(), &size.to_string());
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
    // Later writes are refused the same way, reads go on, and the refused entity is absent.
    let (status, _) = b
        .send(
            Method::POST,
            "/entities",
            None,
            Some(&sensor(1000, "small")),
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(b.get("urn:ngsi-ld:Sensor:full0", None, "").await.0, 200);
    assert_eq!(
        b.get(&format!("urn:ngsi-ld:Sensor:full{n}"), None, "")
            .await
            .0,
        404
    );
    // Space is back and twinlink restarted: everything acknowledged is there, writes work.
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
