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

/// One HTTP/1.1 PATCH of an attribute of [`ID`], as raw bytes (its body separately).
fn patch_request(value: i64) -> (Vec<u8>, Vec<u8>) {
    let body = json!({"v": {"type": "Property", "value": value}}).to_string();
    let head = format!(
        "PATCH /ngsi-ld/v1/entities/{ID}/attrs HTTP/1.1\r\nHost: twinlink\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    (head.into_bytes(), body.into_bytes())
}

/// The status line and headers (lower-cased) of the next answer on a connection; None when the
/// connection was closed.
async fn answer(conn: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("an answer in time")
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let (status, _) = text.split_once("\r\n")?;
    Some((status.to_string(), text.to_lowercase()))
}

#[actix_web::test]
async fn a_refused_small_write_keeps_its_connection_open() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start_with(|settings| settings.max_inflight_writes = 1).await;
    assert_eq!(
        s.create(&json!({"id": ID, "type": "Sensor"}))
            .await
            .status(),
        201
    );
    let addr = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/ngsi-ld/v1")
        .to_string();
    // One write holds the only place: its head is sent, its body not yet.
    let mut holder = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (head, body) = patch_request(1);
    holder.write_all(&head).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Refused twice on one connection, which stays open (actix-web closes a connection whose
    // request body was left unread; the refusal reads small bodies first).
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for value in [2, 3] {
        let (head, body) = patch_request(value);
        // Refused before any other middleware, it still names its tenant (6.3.14).
        let head = String::from_utf8(head).unwrap().replace(
            "Host: twinlink\r\n",
            "Host: twinlink\r\nNGSILD-Tenant: harbour\r\n",
        );
        conn.write_all(&[head.into_bytes(), body].concat())
            .await
            .unwrap();
        let (status, text) = answer(&mut conn)
            .await
            .expect("an answer, not a closed connection");
        assert!(status.contains("503"), "{status}");
        assert!(!text.contains("connection: close"), "{text}");
        assert!(text.contains("ngsild-tenant: harbour"), "{text}");
    }
    // The holder finishes; the same connection's next write is admitted.
    holder.write_all(&body).await.unwrap();
    let (status, _) = answer(&mut holder).await.expect("the holder's answer");
    assert!(status.contains("204"), "{status}");
    let (head, body) = patch_request(4);
    conn.write_all(&[head, body].concat()).await.unwrap();
    let (status, _) = answer(&mut conn)
        .await
        .expect("an answer on the kept connection");
    assert!(status.contains("204"), "{status}");
}
