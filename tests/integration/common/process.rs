//! The real `twinlink` binary as a child process, for the tests of what only a process shows:
//! durability across SIGKILL and SIGTERM (also in the middle of sustained ingest), and several
//! instances on one database taking each other's subscriptions over.

use super::free_port;
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running broker process; killed when dropped so that a failing test leaves nothing behind.
pub struct Broker {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// Starts the binary on `data_dir`, or on the PostgreSQL database `database` when the tests
    /// run against that store (the same database across restarts).
    pub async fn start(data_dir: &Path, database: &Option<String>) -> Broker {
        Broker::start_with_args(data_dir, database, &[]).await
    }

    /// As [`Broker::start`], with more command-line options (`--mqtt-url ...`,
    /// `--max-temporal-instances ...`) for the tests that need a setting the default run lacks.
    pub async fn start_with_args(
        data_dir: &Path,
        database: &Option<String>,
        extra: &[String],
    ) -> Broker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_twinlink"));
        command.args(extra);
        Broker::launch(command, data_dir, database).await
    }

    /// Starts the binary on the embedded store at `data_dir` with SIGXFSZ ignored (through a
    /// shell that ignores it and execs the binary), so that a file size limit set later on the
    /// process (`prlimit --fsize`) makes its writes fail as on a full disk, instead of killing it.
    pub async fn start_without_file_size_signal(data_dir: &Path) -> Broker {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "trap '' XFSZ; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_twinlink"),
        ]);
        Broker::launch(command, data_dir, &None).await
    }

    async fn launch(mut command: Command, data_dir: &Path, database: &Option<String>) -> Broker {
        let port = free_port();
        if let Some(url) = database {
            command.args(["--database-url", url]);
        }
        let child = command
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--data-dir",
            ])
            .arg(data_dir)
            .args(["--workers", "2", "--log", "warn"])
            .env_remove("TWINLINK_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the twinlink binary starts");
        let mut broker = Broker {
            child,
            base: format!("http://127.0.0.1:{port}/ngsi-ld/v1"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = broker.child.try_wait().unwrap() {
                panic!("twinlink exited before answering: {status}");
            }
            let ready = broker
                .client
                .get(format!("http://127.0.0.1:{port}/ready"))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return broker;
            }
            assert!(
                Instant::now() < deadline,
                "twinlink did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a request (with a JSON body when given); returns status and JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        tenant: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut b = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = tenant {
            b = b.header("NGSILD-Tenant", t);
        }
        if let Some(body) = body {
            b = b
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let r = b.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a write and asserts its status.
    pub async fn write(
        &self,
        method: Method,
        path: &str,
        tenant: Option<&str>,
        body: &Value,
        expected: u16,
    ) {
        let (status, answer) = self.send(method.clone(), path, tenant, Some(body)).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }

    /// GETs an entity, with a query string such as `?options=sysAttrs`.
    pub async fn get(&self, id: &str, tenant: Option<&str>, query: &str) -> (u16, Value) {
        self.send(Method::GET, &format!("/entities/{id}{query}"), tenant, None)
            .await
    }

    /// The full URL of an API path such as `/entities`, for load generators that send from tasks
    /// of their own (with their own client) while the process is killed under them.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the process with SIGKILL (no chance to flush or close anything) and waits for it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL reaches twinlink");
        self.child.wait().expect("twinlink is reaped");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (at most `within`) for the process to exit; returns how it exited.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "twinlink did not stop within {within:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
