//! Black-box test harness: starts the real twinlink server on a random loopback port with a fresh
//! data directory, and gives a small HTTP client around it.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use tempfile::TempDir;
use twinlink::config::Settings;

/// The default `Link` header value tests use to point at a context.
pub fn link(url: &str) -> String {
    format!("<{url}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"")
}

/// A running server and its data directory (removed when dropped).
pub struct TestServer {
    /// e.g. `http://127.0.0.1:43210/ngsi-ld/v1`
    pub base: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Data directory of the embedded store.
    pub data_dir: PathBuf,
    handle: actix_web::dev::ServerHandle,
    _dir: TempDir,
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after letting the test adjust the settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings {
            bind: "127.0.0.1".into(),
            port: 0,
            data_dir: dir.path().join("data"),
            workers: 2,
            ..Settings::default()
        };
        adjust(&mut settings);
        let data_dir = settings.data_dir.clone();
        let (server, addr) = twinlink::server::start(settings).expect("server starts");
        let handle = server.handle();
        actix_web::rt::spawn(server);
        TestServer {
            base: format!("http://{addr}/ngsi-ld/v1"),
            client: reqwest::Client::new(),
            data_dir,
            handle,
            _dir: dir,
        }
    }

    /// Full URL of an API path such as `/entities`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs an entity as application/json (no Link header).
    pub async fn create(&self, entity: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/entities"))
            .header("Content-Type", "application/json")
            .body(entity.to_string())
            .send()
            .await
            .expect("request")
    }

    /// GETs a path and returns status and JSON body (Null when empty).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a request with a JSON body and the given method and content type.
    pub async fn send(&self, method: reqwest::Method, path: &str, content_type: &str, body: &Value) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .header("Content-Type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    /// Stops the server gracefully.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// Asserts a ProblemDetails error of this status and NGSI-LD type, returning the body.
pub async fn assert_problem(r: reqwest::Response, status: u16, kind: &str) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    let body: Value = serde_json::from_str(&text).expect("ProblemDetails is JSON");
    assert_eq!(
        body["type"],
        format!("https://uri.etsi.org/ngsi-ld/errors/{kind}"),
        "error type; body: {text}"
    );
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "detail present");
    body
}
