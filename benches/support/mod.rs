//! What the load benches share: twinlink started in-process, serving HTTP in an actix system on a
//! thread of its own, so that the bench's load generator runs on other threads and can still reach
//! the broker (and its store) directly.

use actix_web::web;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use twinlink::config::Settings;
use twinlink::service::AppState;

/// A running twinlink on 127.0.0.1 and a random port.
pub struct Server {
    /// Stops the server (`handle.stop(true).await`), after which [`Server::join`] returns.
    pub handle: actix_web::dev::ServerHandle,
    /// Where it listens.
    pub addr: SocketAddr,
    thread: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Opens the broker on `settings` (waiting for its database) and starts serving; returns once
    /// it listens, with the broker behind it (for timing its store without HTTP).
    pub fn start(settings: Settings) -> (Server, web::Data<AppState>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let broker = web::Data::new(
                    twinlink::server::app_state(settings, twinlink::server::DatabaseWait::Wait)
                        .await
                        .expect("broker opens"),
                );
                let listener = TcpListener::bind(("127.0.0.1", 0)).expect("listen");
                let (server, addr) =
                    twinlink::server::serve(listener, broker.clone()).expect("server starts");
                tx.send((server.handle(), addr, broker))
                    .expect("send handle");
                server.await
            })
        });
        let (handle, addr, broker) = rx.recv().expect("server address");
        (
            Server {
                handle,
                addr,
                thread,
            },
            broker,
        )
    }

    /// Waits until the server has stopped (after `handle.stop`), panicking if it failed.
    pub fn join(self) {
        self.thread
            .join()
            .expect("server thread")
            .expect("server ran");
    }
}

/// A setting from the environment, or its default when unset; a value that does not parse stops
/// the bench with its name, rather than running with a setting nobody asked for.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

/// POSTs a JSON body (a batch of entities, a temporal entity) to the broker, as the benches load
/// it.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the request reaches twinlink")
}

/// Whether `cargo bench` runs this binary (it passes `--bench`). Test runners list and run every
/// target (`cargo test --all-targets`, nextest's `--list`) without it, and must not start a load
/// test: the benches then do nothing, an empty test list.
pub fn run_by_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}
