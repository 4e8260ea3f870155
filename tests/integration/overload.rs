//! Admission control (`http::admission`): writes beyond `--max-inflight-writes` are refused at
//! once with 503 and Retry-After, change nothing, and leave the admitted writes and every read
//! alone.

use crate::common::TestServer;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

const ID: &str = "urn:ngsi-ld:Sensor:overload";

#[actix_web::test]
async fn writes_beyond_the_limit_are_refused_at_once_and_change_nothing() {
    let s = TestServer::start_with(|settings| settings.max_inflight_writes = 1).await;
    let created = s.create(&json!({"id": ID, "type": "Sensor"})).await;
    assert_eq!(created.status(), 201);
    // A burst of writes, each adding an attribute of its own, with reads among them.
    let writes = (0..100).map(|i| {
        let request = s
            .req(Method::POST, &format!("/entities/{ID}/attrs"))
            .header("Content-Type", "application/json")
            .body(json!({ format!("a{i}"): {"type": "Property", "value": i} }).to_string());
        async move { (i, request.send().await.expect("a response")) }
    });
    let reads = (0..50).map(|_| {
        let request = s.req(Method::GET, &format!("/entities/{ID}"));
        async move { request.send().await.expect("a response").status().as_u16() }
    });
    let (writes, reads) = futures_util::join!(join_all(writes), join_all(reads));
    assert!(
        reads.iter().all(|&s| s == 200),
        "reads are never refused: {reads:?}"
    );
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for (i, r) in writes {
        match r.status().as_u16() {
            204 => admitted.push(format!("a{i}")),
            503 => {
                refused += 1;
                assert_eq!(r.headers()["retry-after"], "1");
                let body: Value = r.json().await.unwrap();
                assert_eq!(
                    body["type"], "https://uri.etsi.org/ngsi-ld/errors/InternalError",
                    "{body}"
                );
                assert!(
                    body["detail"]
                        .as_str()
                        .unwrap()
                        .contains("--max-inflight-writes"),
                    "{body}"
                );
            }
            other => panic!("write a{i} answered {other}"),
        }
    }
    assert!(
        refused > 0,
        "a burst of 100 writes against a limit of 1 refused none"
    );
    assert!(!admitted.is_empty(), "every write was refused");
    // Exactly the admitted writes are in the entity.
    let entity = s.entity(ID, "").await;
    let mut written: Vec<String> = entity
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with('a'))
        .cloned()
        .collect();
    written.sort();
    admitted.sort();
    assert_eq!(written, admitted);
}
