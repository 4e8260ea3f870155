//! Builds the broker and its HTTP server on a listener, so that `main` and the black-box tests
//! start exactly the same thing (tests bind port 0 and read the port back).

use crate::config::Settings;
use crate::ld::ContextLoader;
use crate::service::AppState;
use crate::store::{embedded::EmbeddedStore, postgres::PgStore, Store};
use actix_web::http::header::HeaderName;
use actix_web::{web, App, HttpServer};
use std::net::{SocketAddr, TcpListener};

/// Whether start-up waits for the database before serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseWait {
    /// Connect and migrate first (tests, `twinlink migrate`).
    Wait,
    /// Serve at once (liveness answers; requests are 503 until the database is reached).
    Background,
}

/// Opens the store the settings select: PostgreSQL when a database URL is given, the embedded
/// store otherwise.
pub async fn store(settings: &Settings, wait: DatabaseWait) -> Result<Store, String> {
    Ok(match (&settings.database_url, wait) {
        (Some(url), DatabaseWait::Wait) => Store::new(
            PgStore::connect(url, settings.db_pool_size)
                .await?
                .with_entity_cache(settings.entity_cache)
                .with_entity_count_every(settings.entity_count_every),
        ),
        (Some(url), DatabaseWait::Background) => Store::new(
            PgStore::connect_in_background(url, settings.db_pool_size)?
                .with_entity_cache(settings.entity_cache)
                .with_entity_count_every(settings.entity_count_every),
        ),
        (None, _) => Store::new(EmbeddedStore::open(&settings.data_dir)?),
    })
}

/// The application state the settings describe (store, context loader, audit table), built here
/// and only here at start-up.
pub async fn app_state(settings: Settings, wait: DatabaseWait) -> Result<AppState, String> {
    let store = store(&settings, wait).await?;
    let contexts = ContextLoader::new(&settings)?;
    let audit_table = match (settings.audit_table, store.postgres_pool()) {
        (false, _) => None,
        (true, Some(pool)) => Some(crate::telemetry::audit::Table::start(pool)),
        (true, None) => {
            return Err("--audit-table needs the PostgreSQL store (--database-url)".into())
        }
    };
    let checks = std::sync::Arc::new(crate::service::conformance::Checks::new(&settings)?);
    Ok(AppState::new(
        store,
        contexts,
        settings,
        audit_table,
        checks,
    ))
}

/// Binds the listener and builds the server (not yet awaited), the store ready. Returns the
/// bound address.
pub async fn start(
    settings: Settings,
) -> Result<
    (
        impl std::future::Future<Output = std::io::Result<()>>,
        SocketAddr,
    ),
    String,
> {
    start_with(settings, DatabaseWait::Wait).await
}

/// As `start`, choosing whether to wait for the database. The server, once stopped (SIGTERM,
/// SIGINT), hands the subscriptions this instance notifies for over to the other instances (see
/// `notifier::hand_over`) before it resolves.
pub async fn start_with(
    settings: Settings,
    wait: DatabaseWait,
) -> Result<
    (
        impl std::future::Future<Output = std::io::Result<()>>,
        SocketAddr,
    ),
    String,
> {
    let listener = TcpListener::bind((settings.bind.as_str(), settings.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", settings.bind, settings.port))?;
    let broker = web::Data::new(app_state(settings, wait).await?);
    let (server, addr) = serve(listener, broker.clone())?;
    let run = async move {
        let stopped = server.await;
        crate::service::notifier::hand_over(&broker.into_inner()).await;
        stopped
    };
    Ok((run, addr))
}

/// Builds the server for a broker on a bound listener (not yet awaited), for callers that keep a
/// handle on the broker (tests read its store), starts the broker's notification machinery and,
/// when configured, MQTT ingestion (both need a running Tokio runtime). Returns the bound address.
pub fn serve(
    listener: TcpListener,
    broker: web::Data<AppState>,
) -> Result<(actix_web::dev::Server, SocketAddr), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let workers = broker.settings().workers;
    let gate = web::Data::new(crate::http::auth::Gate {
        authenticator: crate::auth::Authenticator::new(
            &broker.settings().auth,
            jwks_client(&broker.settings().outbound)?,
        )?,
        grants: crate::auth::grants::Grants::new(broker.settings().auth.grants.clone()),
        metrics_open: broker.settings().metrics_access == crate::config::MetricsAccess::Open,
    });
    match (&gate.authenticator, gate.grants.is_empty()) {
        (Some(_), true) => tracing::warn!(
            "--auth jwt without [[grants]]: every valid token may do everything on every tenant"
        ),
        (None, false) => tracing::warn!("[[grants]] are configured but ignored without --auth jwt"),
        _ => {}
    }
    broker.set_public_url(broker.settings().public_url_for(addr));
    crate::service::notifier::start(broker.clone().into_inner());
    crate::service::housekeeping::start(&broker.clone().into_inner());
    if broker.settings().mqtt_url.is_some() {
        crate::ingest::mqtt::start(broker.clone().into_inner())?;
    }
    let admission = web::Data::new(crate::http::admission::Admission::new(
        broker.settings().max_inflight_writes,
    ));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(broker.clone())
            .app_data(gate.clone())
            .app_data(admission.clone())
            .wrap(actix_web::middleware::from_fn(crate::http::audit::record))
            .wrap(actix_web::middleware::from_fn(
                crate::http::auth::authenticate,
            ))
            .wrap(actix_web::middleware::from_fn(crate::http::metrics::record))
            // Outermost: the path is normalized before it is classified and counted, and the
            // tenant is named in every response, refusals included.
            .wrap_fn(|mut req, srv| {
                // One trailing slash is tolerated (`POST /entities/`); double slashes are kept so
                // that an empty id segment is reported, not silently merged away.
                let path = req.path();
                if path.len() > 1 && path.ends_with('/') && !path.ends_with("//") {
                    let trimmed = path.trim_end_matches('/').to_string();
                    let uri = match req.uri().query() {
                        Some(q) => format!("{trimmed}?{q}"),
                        None => trimmed,
                    };
                    if let Ok(uri) = uri.parse() {
                        req.match_info_mut().get_mut().update(&uri);
                        req.head_mut().uri = uri;
                    }
                }
                let tenant = req.headers().get("NGSILD-Tenant").cloned();
                let call = actix_web::dev::Service::call(srv, req);
                async move {
                    // 6.3.14: a tenant named in the request is named in the response, errors included.
                    let mut response = call.await?;
                    // Header names are case-insensitive, but clients that look them up in a
                    // plain map (the ETSI suite reads Location so) expect them as written in the
                    // spec: Location, Link, NGSILD-Results-Count.
                    response
                        .response_mut()
                        .head_mut()
                        .set_camel_case_headers(true);
                    if let Some(t) = tenant {
                        response
                            .headers_mut()
                            .insert(HeaderName::from_static("ngsild-tenant"), t);
                    }
                    Ok(response)
                }
            })
            // Every log line of the request names its id.
            .wrap(actix_web::middleware::from_fn(
                crate::http::request_id::trace,
            ))
            // Outermost of all: under overload a refusal must cost as little as it can, since
            // refusing ten times the writes the store takes is most of what the instance does
            // (see the admission module).
            .wrap(actix_web::middleware::from_fn(
                crate::http::admission::admit,
            ))
            .configure(crate::http::routes)
    })
    .workers(workers)
    .shutdown_timeout(30)
    .listen(listener)
    .map_err(|e| format!("cannot start the HTTP server: {e}"))?
    .run();
    Ok((server, addr))
}

/// The HTTP client that fetches the JWKS, under the outbound policy: no redirects (the identity
/// provider's URL is configured, not discovered).
fn jwks_client(policy: &crate::outbound::Policy) -> Result<crate::outbound::Client, String> {
    let builder = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5));
    crate::outbound::Client::new(policy, builder, false)
}
