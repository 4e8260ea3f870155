//! Black-box test harness: starts the real twinlink server on a random loopback port with a fresh
//! data directory, and gives a small HTTP client around it.
#![allow(dead_code)]

pub mod jwt;
pub mod logs;
pub mod process;
pub mod receiver;
pub mod rng;
pub mod services;

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
    /// The server's PostgreSQL database, when it runs on the PostgreSQL store.
    pub database_url: Option<String>,
    /// The database made for this server by [`fresh_database_url`], dropped with the server so
    /// that a test run does not leave a PostGIS database per test behind (about 20 MB each).
    own_database: Option<String>,
    handle: actix_web::dev::ServerHandle,
    _dir: TempDir,
    /// Directories of earlier servers whose store this one reopened.
    keep: Vec<TempDir>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(url) = self.own_database.take() {
            drop_database(&url);
        }
    }
}

/// With `TWINLINK_TEST_STORE=postgres`, a new empty database for one test server, copied from the
/// database of `TWINLINK_TEST_DATABASE_URL` (which has PostGIS installed and nobody connected), so
/// that every test runs against its own PostgreSQL store. None means the embedded store.
pub async fn fresh_database_url() -> Option<String> {
    if std::env::var("TWINLINK_TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    Some(new_database().await)
}

/// A new empty PostGIS database copied from the test database ([`services::database_url`]),
/// whatever the store under test: for tests of what only PostgreSQL does (several instances on one
/// database). The caller drops it ([`drop_database`]).
pub async fn new_database() -> String {
    let template_url = services::database_url();
    let (base, template) = template_url
        .rsplit_once('/')
        .expect("database URL ends in /<db>");
    let name = format!("tl_{}", uuid::Uuid::new_v4().simple());
    let client = sql_client(&format!("{base}/postgres")).await;
    client
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("create a test database");
    format!("{base}/{name}")
}

/// A client of the PostgreSQL database at `url` (its connection runs as a task of the test's
/// runtime), for tests that look at or change the database beside the server.
pub async fn sql_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Drops a database made by [`fresh_database_url`], ending the connections still open to it (the
/// server's pool). Cleanup is best effort: a failure is reported and the next `scripts/test.sh`
/// run drops what is left. Runs on a thread of its own because it is called from `Drop` inside the
/// test's runtime, which must not be blocked on.
pub fn drop_database(url: &str) {
    let (base, name) = url.rsplit_once('/').expect("database URL ends in /<db>");
    let (admin, name) = (format!("{base}/postgres"), name.to_owned());
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .map_err(|e| e.to_string())
        })
    })
    .join();
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("could not drop the test database {url}: {e}"),
        Err(_) => eprintln!("could not drop the test database {url}: the cleanup thread panicked"),
    }
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server on a new PostgreSQL database of its own (see [`new_database`]), whatever
    /// the store under test, which it drops when dropped.
    pub async fn start_on_postgres() -> TestServer {
        Self::start_on_postgres_with(|_| {}).await
    }

    /// As [`Self::start_on_postgres`], after letting the test adjust the settings.
    pub async fn start_on_postgres_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let url = new_database().await;
        let given = url.clone();
        let mut server = Self::start_with(move |s| {
            s.database_url = Some(given);
            adjust(s);
        })
        .await;
        server.own_database = Some(url);
        server
    }

    /// Starts a server after letting the test adjust the settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        Self::start_with_broker(adjust).await.0
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

    /// Sends a request without a body and asserts a ProblemDetails error of this status and
    /// NGSI-LD type, returning the body.
    pub async fn problem_of(
        &self,
        method: reqwest::Method,
        path: &str,
        status: u16,
        kind: &str,
    ) -> Value {
        let r = self.req(method, path).send().await.expect("request");
        assert_problem(r, status, kind).await
    }

    /// GETs a path and returns status and JSON body (Null when empty).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a request with a JSON body and the given method and content type.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> reqwest::Response {
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

    /// Stops the server and starts a new one on the same store (data directory or database),
    /// which it then owns: what was acknowledged before must be there after.
    pub async fn restart(self) -> TestServer {
        self.restart_with(|_| {}).await
    }

    /// As [`Self::restart`], the new server's settings adjusted by `adjust` (e.g. another
    /// outbound policy over the same subscriptions).
    pub async fn restart_with(mut self, adjust: impl Fn(&mut Settings) + Clone) -> TestServer {
        self.stop().await;
        let (data_dir, database_url) = (self.data_dir.clone(), self.database_url.clone());
        let own_database = self.own_database.take();
        // The stopped server's store is released when its last task ends; the embedded store's
        // file stays locked until then.
        let mut next = None;
        for _ in 0..50 {
            let dir = data_dir.clone();
            let url = database_url.clone();
            let adjust = adjust.clone();
            let attempt = std::panic::AssertUnwindSafe(Self::start_with_broker(move |s| {
                s.data_dir = dir;
                s.database_url = url;
                adjust(s);
            }));
            match futures_util::FutureExt::catch_unwind(attempt).await {
                Ok((server, _)) => {
                    next = Some(server);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        let mut next = next.expect("the store reopens after a restart");
        next.own_database = own_database;
        // The data directory lives in the first server's temporary directory.
        next.keep.push(std::mem::replace(
            &mut self._dir,
            tempfile::tempdir().expect("temp dir"),
        ));
        next
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
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail present"
    );
    body
}

// ---------------------------------------------------------------------------------------------
// Helpers added for the black-box suites (entities_lifecycle, attribute_kinds, bad_input,
// tenancy, contexts, durability).
// ---------------------------------------------------------------------------------------------

/// Reads a response into status, headers and JSON body (Null when empty or not JSON).
pub async fn read(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Asserts the status of a response and returns its JSON body (Null when empty).
pub async fn assert_status(r: reqwest::Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Asserts a 204 No Content with an empty body.
pub async fn assert_no_content(r: reqwest::Response) {
    let got = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(got, 204, "status; body: {text}");
    assert!(text.is_empty(), "204 carries no body, got: {text}");
}

/// Asserts a ProblemDetails error of this status whose NGSI-LD type is one of `kinds` (for the few
/// cases where the spec leaves InvalidRequest vs BadRequestData open).
pub async fn assert_problem_one_of(r: reqwest::Response, status: u16, kinds: &[&str]) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    let body: Value = serde_json::from_str(&text).expect("ProblemDetails is JSON");
    let allowed: Vec<String> = kinds
        .iter()
        .map(|k| format!("https://uri.etsi.org/ngsi-ld/errors/{k}"))
        .collect();
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| allowed.iter().any(|a| a == t)),
        "error type is one of {allowed:?}; body: {text}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail present"
    );
    body
}

/// Asserts an HTTP-level error (406, 413, 415...) for which GS CIM 009 names no NGSI-LD error type:
/// the status, and that any body is a ProblemDetails object.
pub async fn assert_http_error(r: reqwest::Response, status: u16) {
    let got = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    if !text.is_empty() {
        let body: Value =
            serde_json::from_str(&text).expect("an error body is ProblemDetails JSON");
        assert!(
            body["type"].is_string(),
            "ProblemDetails has a type: {text}"
        );
    }
}

impl TestServer {
    /// A request builder for an API path.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends a JSON body as application/json with a Link header to `context`.
    pub async fn send_linked(
        &self,
        method: reqwest::Method,
        path: &str,
        context: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.req(method, path)
            .header("Content-Type", "application/json")
            .header("Link", link(context))
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    /// Sends an application/ld+json body (which carries its own @context).
    pub async fn send_ld(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.send(method, path, "application/ld+json", body).await
    }

    /// GETs a path with extra headers; returns status, headers and JSON body.
    pub async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut b = self.req(reqwest::Method::GET, path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        read(b.send().await.expect("request")).await
    }

    /// GETs `/entities/{id}{query}` (query includes its `?`), asserting 200; returns the body.
    pub async fn entity(&self, id: &str, query: &str) -> Value {
        let (status, body) = self.get_json(&format!("/entities/{id}{query}")).await;
        assert_eq!(status, 200, "retrieving {id}{query}: {body}");
        body
    }

    /// Asserts that `/entities/{id}` does not exist (404 ResourceNotFound).
    pub async fn assert_absent(&self, id: &str) {
        let r = self
            .req(reqwest::Method::GET, &format!("/entities/{id}"))
            .send()
            .await
            .expect("request");
        assert_problem(r, 404, "ResourceNotFound").await;
    }
}

/// A free TCP port on the loopback interface (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One document a [`ContextServer`] serves.
#[derive(Clone)]
struct Served {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    delay: std::time::Duration,
    /// The `Location` header of a redirect.
    location: Option<String>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that serves fixed documents (JSON-LD contexts) by path and
/// counts the requests each path gets. Every connection is answered once and closed.
pub struct ContextServer {
    /// The port it listens on.
    pub port: u16,
    routes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Served>>>,
    hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ContextServer {
    /// Starts the server on a random port (it runs until the test process ends).
    pub fn start() -> ContextServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind context server");
        let port = listener.local_addr().expect("addr").port();
        let routes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Served>>> =
            Default::default();
        let hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
            Default::default();
        let heads: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (r, h, seen) = (routes.clone(), hits.clone(), heads.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (r, h, seen) = (r.clone(), h.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    // The body, as long as Content-Length says, is recorded with the head.
                    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let length = String::from_utf8_lossy(&buf[..head_end])
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    *h.lock().unwrap().entry(path.clone()).or_default() += 1;
                    seen.lock().unwrap().push(head.clone());
                    let served = r.lock().unwrap().get(&path).cloned().unwrap_or(Served {
                        status: 404,
                        content_type: "text/plain".into(),
                        body: b"not found".to_vec(),
                        delay: std::time::Duration::ZERO,
                        location: None,
                    });
                    std::thread::sleep(served.delay);
                    let location = served
                        .location
                        .map(|l| format!("Location: {l}\r\n"))
                        .unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n",
                        served.status,
                        served.content_type,
                        served.body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&served.body);
                    let _ = stream.flush();
                });
            }
        });
        ContextServer {
            port,
            routes,
            hits,
            heads,
        }
    }

    /// Serves `body` at `path` with this status, media type and delay before answering.
    pub fn serve_raw(
        &self,
        path: &str,
        status: u16,
        content_type: &str,
        body: impl Into<Vec<u8>>,
        delay_ms: u64,
    ) {
        self.routes.lock().unwrap().insert(
            path.to_string(),
            Served {
                status,
                content_type: content_type.to_string(),
                body: body.into(),
                delay: std::time::Duration::from_millis(delay_ms),
                location: None,
            },
        );
    }

    /// Answers `path` with a 302 redirect to `location`.
    pub fn redirect(&self, path: &str, location: &str) {
        self.routes.lock().unwrap().insert(
            path.to_string(),
            Served {
                status: 302,
                content_type: "text/plain".into(),
                body: Vec::new(),
                delay: std::time::Duration::ZERO,
                location: Some(location.to_string()),
            },
        );
    }

    /// Serves a JSON-LD document at `path`.
    pub fn serve(&self, path: &str, doc: &Value) {
        self.serve_raw(path, 200, "application/ld+json", doc.to_string(), 0);
    }

    /// The URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The request line, headers and body of every request received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// How many requests this path has received.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Access to the broker behind a test server (history.rs reads the store directly).
// ---------------------------------------------------------------------------------------------

impl TestServer {
    /// Starts a server like [`TestServer::start_with`] and also returns its broker, whose store
    /// the test can read while the server runs.
    pub async fn start_with_broker(
        adjust: impl FnOnce(&mut Settings),
    ) -> (
        TestServer,
        actix_web::web::Data<twinlink::service::AppState>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings {
            bind: "127.0.0.1".into(),
            port: 0,
            data_dir: dir.path().join("data"),
            workers: 2,
            ..Settings::default()
        };
        let fresh = fresh_database_url().await;
        settings.database_url = fresh.clone();
        adjust(&mut settings);
        // The server owns the fresh database unless the test gave it another one (or none).
        let own_database = match fresh {
            Some(url) if settings.database_url.as_deref() != Some(url.as_str()) => {
                drop_database(&url);
                None
            }
            fresh => fresh,
        };
        let data_dir = settings.data_dir.clone();
        let database_url = settings.database_url.clone();
        let listener =
            std::net::TcpListener::bind((settings.bind.as_str(), settings.port)).expect("bind");
        let broker = actix_web::web::Data::new(
            twinlink::server::app_state(settings, twinlink::server::DatabaseWait::Wait)
                .await
                .expect("the broker opens its store"),
        );
        let (server, addr) =
            twinlink::server::serve(listener, broker.clone()).expect("server starts");
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let server = TestServer {
            base: format!("http://{addr}/ngsi-ld/v1"),
            client: reqwest::Client::new(),
            data_dir,
            database_url,
            own_database,
            handle,
            _dir: dir,
            keep: Vec::new(),
        };
        (server, broker)
    }
}

/// Distinct PostgreSQL transaction ids (xmin) among the rows of `table` (PostgreSQL store only).
pub async fn writing_transactions(database_url: &str, table: &str) -> i64 {
    let client = sql_client(database_url).await;
    client
        .query_one(
            &format!("SELECT count(DISTINCT xmin::text) FROM {table}"),
            &[],
        )
        .await
        .expect("count transactions")
        .get(0)
}

/// A user @context served by a [`ContextServer`] that maps each of `terms` to `vocab` + term;
/// returns the server (keep it alive) and the context's URL.
pub fn vocab_context(vocab: &str, terms: &[&str]) -> (ContextServer, String) {
    let server = ContextServer::start();
    let map: serde_json::Map<String, Value> = terms
        .iter()
        .map(|t| (t.to_string(), Value::String(format!("{vocab}{t}"))))
        .collect();
    server.serve("/ctx.jsonld", &serde_json::json!({ "@context": map }));
    let url = server.url("/ctx.jsonld");
    (server, url)
}

impl TestServer {
    /// The server's root URL (without the API base), e.g. `http://127.0.0.1:43210`.
    pub fn root(&self) -> String {
        self.base.trim_end_matches(twinlink::http::BASE).to_string()
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.root()))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.expect("body")
    }
}

/// The value of the series of metric `name` whose labels include `labels`, summed over the
/// series that match (0 when none does), from Prometheus' text format.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().expect("a metric value"))
        .sum()
}
