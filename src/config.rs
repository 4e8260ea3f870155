//! Configuration: one struct, layered from defaults < optional TOML file < environment < flags,
//! so that the same setting can be given wherever a deployment finds it easiest.

use crate::auth::{AuthMode, AuthSettings};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Command line of the `twinlink` binary.
#[derive(Debug, Parser)]
#[command(
    name = "twinlink",
    version,
    about = "ETSI NGSI-LD context broker for local digital twins"
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub options: Options,
}

/// The subcommands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (the default).
    Serve,
    /// Apply pending PostgreSQL migrations and exit (needs --database-url).
    Migrate,
    /// Print the version and exit.
    Version,
    /// List the bundled Smart Data Models (name, version, attributes with rules, required
    /// attributes), or print the rules of one model as the checks read them.
    Models {
        /// A model, as `<subject>/<model>` or by its name alone when that is unambiguous.
        model: Option<String>,
    },
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Who may read `/metrics` when authentication is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Anyone who reaches the port (a Prometheus in the same network scrapes without a token).
    #[default]
    Open,
    /// Tokens granted the admin class (on any tenant).
    Admin,
}

/// Every setting as given on the command line or in the environment; `None` means "not given here".
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// TOML configuration file; its keys are the long flag names (e.g. `port = 1026`).
    #[arg(long, env = "TWINLINK_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "TWINLINK_BIND", global = true)]
    pub bind: Option<String>,
    /// TCP port to listen on.
    #[arg(long, env = "TWINLINK_PORT", global = true)]
    pub port: Option<u16>,
    /// Directory of the embedded store.
    #[arg(long, env = "TWINLINK_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (e.g. postgres://user:pass@host:5432/db); when set, entities live in
    /// PostgreSQL + PostGIS instead of the embedded store.
    #[arg(long, env = "TWINLINK_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Largest number of PostgreSQL connections in the pool.
    #[arg(long, env = "TWINLINK_DB_POOL_SIZE", global = true)]
    pub db_pool_size: Option<usize>,
    /// Decoded entities kept per instance (PostgreSQL store), checked against the row version on
    /// every query; 0 turns the cache off.
    #[arg(long, env = "TWINLINK_ENTITY_CACHE", global = true)]
    pub entity_cache: Option<usize>,
    /// How often at most the PostgreSQL store counts the entities of each tenant for /metrics
    /// (`twinlink_entities`), in milliseconds; counted in the background when scraped.
    #[arg(long, env = "TWINLINK_ENTITY_COUNT_EVERY_MS", global = true)]
    pub entity_count_every_ms: Option<u64>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "TWINLINK_MAX_BODY_BYTES", global = true)]
    pub max_body_bytes: Option<usize>,
    /// Largest number of entities in one batch operation.
    #[arg(long, env = "TWINLINK_MAX_BATCH", global = true)]
    pub max_batch: Option<usize>,
    /// Write requests served at once over HTTP; more are refused at once with 503 and
    /// Retry-After (0: no limit).
    #[arg(long, env = "TWINLINK_MAX_INFLIGHT_WRITES", global = true)]
    pub max_inflight_writes: Option<usize>,
    /// Notifications in flight at once to one receiver (host and port, or MQTT broker).
    #[arg(long, env = "TWINLINK_NOTIFICATION_CONCURRENCY", global = true)]
    pub notification_concurrency: Option<usize>,
    /// Page size when a query gives no `limit`.
    #[arg(long, env = "TWINLINK_DEFAULT_PAGE_SIZE", global = true)]
    pub default_page_size: Option<usize>,
    /// Largest `limit` a query may ask for.
    #[arg(long, env = "TWINLINK_MAX_PAGE_SIZE", global = true)]
    pub max_page_size: Option<usize>,
    /// Most attribute instances a temporal response carries per attribute before it is cut (206
    /// with Content-Range).
    #[arg(long, env = "TWINLINK_MAX_TEMPORAL_INSTANCES", global = true)]
    pub max_temporal_instances: Option<usize>,
    /// Log format: text or json.
    #[arg(long, env = "TWINLINK_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `twinlink=debug`).
    #[arg(long, env = "TWINLINK_LOG", global = true)]
    pub log: Option<String>,
    /// Offline context store: a directory of preloaded @context documents, keyed by URL through its
    /// `index.json` (`{"<url>": "<file>"}`).
    #[arg(long, env = "TWINLINK_CONTEXT_DIR", global = true)]
    pub context_dir: Option<PathBuf>,
    /// URL-prefix rewrite applied before fetching a remote @context, as PREFIX=REPLACEMENT
    /// (repeatable; in the environment a comma-separated list).
    #[arg(
        long = "context-rewrite",
        env = "TWINLINK_CONTEXT_REWRITES",
        global = true,
        value_delimiter = ','
    )]
    #[serde(default)]
    pub context_rewrites: Vec<String>,
    /// Timeout for fetching a remote @context, in milliseconds.
    #[arg(long, env = "TWINLINK_CONTEXT_TIMEOUT_MS", global = true)]
    pub context_timeout_ms: Option<u64>,
    /// Largest remote @context document accepted, in bytes.
    #[arg(long, env = "TWINLINK_CONTEXT_MAX_BYTES", global = true)]
    pub context_max_bytes: Option<usize>,
    /// How many fetched @context documents are kept (the least recently used go first).
    #[arg(long, env = "TWINLINK_CONTEXT_CACHE", global = true)]
    pub context_cache: Option<usize>,
    /// How long a request to a registered context source may take, in milliseconds, unless its
    /// registration sets management.timeout.
    #[arg(long, env = "TWINLINK_SOURCE_TIMEOUT_MS", global = true)]
    pub source_timeout_ms: Option<u64>,
    /// Largest answer accepted from a registered context source, in bytes.
    #[arg(long, env = "TWINLINK_SOURCE_MAX_BYTES", global = true)]
    pub source_max_bytes: Option<usize>,
    /// The name this broker gives itself in the Via header of the requests it forwards
    /// (6.3.18), by which it recognises a request that has looped back to it.
    #[arg(long, env = "TWINLINK_ALIAS", global = true)]
    pub alias: Option<String>,
    /// The base URL (scheme, host, port) under which context sources reach this broker: the
    /// copies of subscriptions it gives its sources (5.8.1.4) have their notifications sent to
    /// `<public-url>/ngsi-ld/ex/remote-notify`. Default: http:// and the bound address and port,
    /// 127.0.0.1 when bound to 0.0.0.0 (only sources on this machine can then reach it).
    #[arg(long, env = "TWINLINK_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Whether the entities of registered context sources that name no attributes may be split
    /// across sources (5.7.2.4): when true, a query forwards only its selectors to every source
    /// and filters the assembled entities; when false (the default), such sources are taken to
    /// hold whole entities and get the query's filters, attrs and page size. A query's
    /// `splitEntities` parameter overrides it.
    #[arg(long, env = "TWINLINK_SPLIT_ENTITIES", global = true)]
    pub split_entities: Option<bool>,
    /// Whether the audit log also goes into the PostgreSQL table `audit_log` (PostgreSQL store
    /// only), to be queried by time and subject.
    #[arg(long, env = "TWINLINK_AUDIT_TABLE", global = true)]
    pub audit_table: Option<bool>,
    /// How long an entity map (5.14) lives when its request suggests no lifetime
    /// (`entityMapLifetime`), as an ISO 8601 duration such as PT1H.
    #[arg(long, env = "TWINLINK_ENTITY_MAP_LIFETIME", global = true)]
    pub entity_map_lifetime: Option<String>,
    /// The longest an entity map lives, whatever its request suggests or a later update sets, as
    /// an ISO 8601 duration such as P1D.
    #[arg(long, env = "TWINLINK_ENTITY_MAP_MAX_LIFETIME", global = true)]
    pub entity_map_max_lifetime: Option<String>,
    /// How often what transient entities and attributes (4.22) leave behind after their expiry
    /// is removed from the current state, in milliseconds (reads never serve it meanwhile).
    #[arg(long, env = "TWINLINK_REAP_EVERY_MS", global = true)]
    pub reap_every_ms: Option<u64>,
    /// Number of HTTP worker threads (default: one per core).
    #[arg(long, env = "TWINLINK_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// MQTT broker to ingest entities from (mqtt://[user:pass@]host[:port] or mqtts://...);
    /// no MQTT ingestion when unset.
    #[arg(long, env = "TWINLINK_MQTT_URL", global = true)]
    pub mqtt_url: Option<String>,
    /// Topic prefix of MQTT ingestion (`<prefix>/entities`, `<prefix>/entities/<id>/attrs`,
    /// `<prefix>/tenants/<tenant>/...`).
    #[arg(long, env = "TWINLINK_MQTT_TOPIC_PREFIX", global = true)]
    pub mqtt_topic_prefix: Option<String>,
    /// More topic prefixes, each with the @context its payloads get when they carry none, as
    /// PREFIX=CONTEXT_URL (repeatable; in the environment a comma-separated list).
    #[arg(
        long = "mqtt-context",
        env = "TWINLINK_MQTT_CONTEXTS",
        global = true,
        value_delimiter = ','
    )]
    #[serde(default)]
    pub mqtt_contexts: Vec<String>,
    /// Topic that rejected MQTT payloads are published to with their ProblemDetails (default
    /// `<prefix>/errors`).
    #[arg(long, env = "TWINLINK_MQTT_ERROR_TOPIC", global = true)]
    pub mqtt_error_topic: Option<String>,
    /// MQTT client id; instances sharing an MQTT broker need distinct ones. The session is kept
    /// by the MQTT broker across reconnects, so QoS 1 messages wait for twinlink.
    #[arg(long, env = "TWINLINK_MQTT_CLIENT_ID", global = true)]
    pub mqtt_client_id: Option<String>,
    /// Authentication of API requests: `none` (the default, for a zero-setup local broker) or
    /// `jwt` (a bearer JSON Web Token on every request but /health and /ready).
    #[arg(long, env = "TWINLINK_AUTH", global = true, value_enum)]
    pub auth: Option<AuthMode>,
    /// The key tokens are verified with: a PEM public key (RS256, ES256 or EdDSA, told by the
    /// key) or a file holding the HS256 secret.
    #[arg(long, env = "TWINLINK_JWT_KEY_FILE", global = true)]
    pub jwt_key_file: Option<PathBuf>,
    /// A JSON Web Key Set to verify tokens with instead of a key file, fetched when first needed,
    /// cached and fetched again for a key id it lacks.
    #[arg(long, env = "TWINLINK_JWKS_URL", global = true)]
    pub jwks_url: Option<String>,
    /// The issuer (`iss`) tokens must name.
    #[arg(long, env = "TWINLINK_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// The audience (`aud`) tokens must name.
    #[arg(long, env = "TWINLINK_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, env = "TWINLINK_JWT_LEEWAY_SECONDS", global = true)]
    pub jwt_leeway_seconds: Option<u64>,
    /// Who may do what with `--auth jwt`: `[[grants]]` tables of the configuration file only.
    #[arg(skip)]
    #[serde(default)]
    pub grants: Vec<crate::auth::grants::Grant>,
    /// Which entities are checked against which data model: `[[data-models]]` tables of the
    /// configuration file only.
    #[arg(skip)]
    #[serde(default)]
    pub data_models: Vec<crate::model::conformance::Binding>,
    /// The space-time checks (territory, clock skew, unit codes): `[[territory]]` tables of the
    /// configuration file only.
    #[arg(skip)]
    #[serde(default)]
    pub territory: Vec<crate::model::conformance::spacetime::TerritoryConfig>,
    /// Who may read /metrics under `--auth jwt`: `open` (anyone) or `admin`.
    #[arg(long, env = "TWINLINK_METRICS_ACCESS", global = true, value_enum)]
    pub metrics_access: Option<MetricsAccess>,
    /// Outbound requests (notifications, contexts, context sources, JWKS) to loopback and
    /// private addresses: `private=allow` (the default) or `private=deny` (production).
    /// Link-local and cloud metadata addresses are always refused.
    #[arg(long, env = "TWINLINK_OUTBOUND", global = true)]
    pub outbound: Option<String>,
    /// Exceptions to `private=deny`: addresses or CIDR blocks (repeatable; in the environment a
    /// comma-separated list).
    #[arg(
        long = "outbound-allow",
        env = "TWINLINK_OUTBOUND_ALLOW",
        global = true,
        value_delimiter = ','
    )]
    #[serde(default)]
    pub outbound_allow: Vec<String>,
}

/// Decoded entities the PostgreSQL store keeps when the configuration does not say (about 3 KB
/// each in memory for a sensor with a handful of attributes).
pub const DEFAULT_ENTITY_CACHE: usize = 50_000;

/// The default of `--entity-count-every-ms`: a minute, so that a database of millions of
/// entities walks its primary key index for the metric at most once a minute however often it
/// is scraped.
pub const ENTITY_COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The effective configuration, every value decided.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub bind: String,
    /// Listen port (0 picks a free one, as tests do).
    pub port: u16,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; None selects the embedded store.
    pub database_url: Option<String>,
    /// PostgreSQL pool size.
    pub db_pool_size: usize,
    /// Entities the PostgreSQL store keeps decoded (0: none).
    pub entity_cache: usize,
    /// The shortest period between two counts of entities per tenant on PostgreSQL.
    pub entity_count_every: std::time::Duration,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Batch size limit.
    pub max_batch: usize,
    /// Write requests served at once over HTTP (0: no limit), see `http::admission`.
    pub max_inflight_writes: usize,
    /// Notifications in flight at once to one receiver, see `subscription::deliver`.
    pub notification_concurrency: usize,
    /// Default page size.
    pub default_page_size: usize,
    /// Maximum page size.
    pub max_page_size: usize,
    /// Most instances per attribute in one temporal response.
    pub max_temporal_instances: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
    /// Offline context directory.
    pub context_dir: Option<PathBuf>,
    /// Context URL-prefix rewrites, in order.
    pub context_rewrites: Vec<(String, String)>,
    /// Remote context fetch timeout in milliseconds.
    pub context_timeout_ms: u64,
    /// Remote context size cap in bytes.
    pub context_max_bytes: usize,
    /// How many fetched @context documents are cached (kind Cached of 5.13): bounded, so that a
    /// client sending ever new @context URLs cannot make the cache grow without end.
    pub context_cache: usize,
    /// Timeout of a request to a context source, in milliseconds.
    pub source_timeout_ms: u64,
    /// Size cap of a context source's answer, in bytes.
    pub source_max_bytes: usize,
    /// This broker's name in Via headers (default: twinlink-<random>, new at every start).
    pub alias: String,
    /// The deployment's split-entities default (5.7.2.4).
    pub split_entities: bool,
    /// The base URL sources reach this broker at, when given (see [`Settings::public_url_for`]).
    pub public_url: Option<String>,
    /// Lifetime of an entity map whose request suggests none.
    pub entity_map_lifetime: chrono::TimeDelta,
    /// Longest lifetime of an entity map.
    pub entity_map_max_lifetime: chrono::TimeDelta,
    /// Period of the reaper of expired entities and attributes.
    pub reap_every: std::time::Duration,
    /// HTTP workers.
    pub workers: usize,
    /// MQTT ingestion broker URL.
    pub mqtt_url: Option<String>,
    /// MQTT ingestion topic prefix.
    pub mqtt_topic_prefix: String,
    /// Further MQTT topic prefixes with their default @context URL.
    pub mqtt_contexts: Vec<(String, String)>,
    /// Topic for rejected MQTT payloads.
    pub mqtt_error_topic: String,
    /// MQTT client id.
    pub mqtt_client_id: String,
    /// Authentication and authorization of API requests.
    pub auth: AuthSettings,
    /// Who may read /metrics under authentication.
    pub metrics_access: MetricsAccess,
    /// Whether audit events also go into the `audit_log` table (PostgreSQL store).
    pub audit_table: bool,
    /// What outbound requests may reach.
    pub outbound: crate::outbound::Policy,
    /// The data-model checks: which entities are checked against which model.
    pub data_models: Vec<crate::model::conformance::Binding>,
    /// The space-time checks.
    pub territory: Vec<crate::model::conformance::spacetime::TerritoryConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: "0.0.0.0".into(),
            port: 1026,
            data_dir: PathBuf::from("data"),
            database_url: None,
            db_pool_size: 16,
            entity_cache: DEFAULT_ENTITY_CACHE,
            entity_count_every: ENTITY_COUNT_EVERY,
            max_body_bytes: 8 * 1024 * 1024,
            max_batch: 100_000,
            max_inflight_writes: 256,
            notification_concurrency: 8,
            default_page_size: 20,
            max_page_size: 10_000,
            max_temporal_instances: 10_000,
            log_format: LogFormat::Text,
            log: "info".into(),
            context_dir: None,
            context_rewrites: Vec::new(),
            context_timeout_ms: 5_000,
            context_max_bytes: 2 * 1024 * 1024,
            context_cache: 1024,
            source_timeout_ms: 3_000,
            source_max_bytes: 16 * 1024 * 1024,
            alias: format!(
                "twinlink-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            split_entities: false,
            public_url: None,
            entity_map_lifetime: chrono::TimeDelta::hours(1),
            entity_map_max_lifetime: chrono::TimeDelta::days(1),
            reap_every: std::time::Duration::from_secs(1),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            mqtt_url: None,
            mqtt_topic_prefix: "ngsi-ld".into(),
            mqtt_contexts: Vec::new(),
            mqtt_error_topic: "ngsi-ld/errors".into(),
            mqtt_client_id: "twinlink".into(),
            auth: AuthSettings::default(),
            metrics_access: MetricsAccess::Open,
            audit_table: false,
            outbound: crate::outbound::Policy::default(),
            data_models: Vec::new(),
            territory: Vec::new(),
        }
    }
}

impl Settings {
    /// Layers defaults, the optional file and the given options (environment and flags).
    pub fn load(options: Options) -> Result<Settings, String> {
        let file = match &options.config {
            Some(path) => read_file(path)?,
            None => Options::default(),
        };
        let d = Settings::default();
        let rewrites = if options.context_rewrites.is_empty() {
            file.context_rewrites
        } else {
            options.context_rewrites
        };
        let mqtt_contexts = if options.mqtt_contexts.is_empty() {
            file.mqtt_contexts
        } else {
            options.mqtt_contexts
        };
        let mqtt_topic_prefix = options
            .mqtt_topic_prefix
            .or(file.mqtt_topic_prefix)
            .unwrap_or(d.mqtt_topic_prefix);
        Ok(Settings {
            mqtt_url: options.mqtt_url.or(file.mqtt_url),
            mqtt_error_topic: options
                .mqtt_error_topic
                .or(file.mqtt_error_topic)
                .unwrap_or_else(|| format!("{mqtt_topic_prefix}/errors")),
            mqtt_topic_prefix,
            mqtt_contexts: parse_pairs(&mqtt_contexts, "MQTT context")?,
            mqtt_client_id: options
                .mqtt_client_id
                .or(file.mqtt_client_id)
                .unwrap_or(d.mqtt_client_id),
            bind: options.bind.or(file.bind).unwrap_or(d.bind),
            port: options.port.or(file.port).unwrap_or(d.port),
            data_dir: options.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            database_url: options.database_url.or(file.database_url),
            db_pool_size: options
                .db_pool_size
                .or(file.db_pool_size)
                .unwrap_or(d.db_pool_size),
            entity_cache: options
                .entity_cache
                .or(file.entity_cache)
                .unwrap_or(d.entity_cache),
            entity_count_every: options
                .entity_count_every_ms
                .or(file.entity_count_every_ms)
                .map_or(d.entity_count_every, std::time::Duration::from_millis),
            max_body_bytes: options
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(d.max_body_bytes),
            max_batch: options.max_batch.or(file.max_batch).unwrap_or(d.max_batch),
            max_inflight_writes: options
                .max_inflight_writes
                .or(file.max_inflight_writes)
                .unwrap_or(d.max_inflight_writes),
            notification_concurrency: options
                .notification_concurrency
                .or(file.notification_concurrency)
                .unwrap_or(d.notification_concurrency)
                .max(1),
            default_page_size: options
                .default_page_size
                .or(file.default_page_size)
                .unwrap_or(d.default_page_size),
            max_page_size: options
                .max_page_size
                .or(file.max_page_size)
                .unwrap_or(d.max_page_size),
            max_temporal_instances: options
                .max_temporal_instances
                .or(file.max_temporal_instances)
                .unwrap_or(d.max_temporal_instances),
            log_format: options
                .log_format
                .or(file.log_format)
                .unwrap_or(d.log_format),
            log: options.log.or(file.log).unwrap_or(d.log),
            context_dir: options.context_dir.or(file.context_dir),
            context_rewrites: parse_pairs(&rewrites, "context rewrite")?,
            context_timeout_ms: options
                .context_timeout_ms
                .or(file.context_timeout_ms)
                .unwrap_or(d.context_timeout_ms),
            context_max_bytes: options
                .context_max_bytes
                .or(file.context_max_bytes)
                .unwrap_or(d.context_max_bytes),
            context_cache: options
                .context_cache
                .or(file.context_cache)
                .unwrap_or(d.context_cache),
            source_timeout_ms: options
                .source_timeout_ms
                .or(file.source_timeout_ms)
                .unwrap_or(d.source_timeout_ms),
            source_max_bytes: options
                .source_max_bytes
                .or(file.source_max_bytes)
                .unwrap_or(d.source_max_bytes),
            alias: options.alias.or(file.alias).unwrap_or(d.alias),
            split_entities: options
                .split_entities
                .or(file.split_entities)
                .unwrap_or(d.split_entities),
            public_url: options.public_url.or(file.public_url),
            entity_map_lifetime: setting_lifetime(
                "entity-map-lifetime",
                options.entity_map_lifetime.or(file.entity_map_lifetime),
                d.entity_map_lifetime,
            )?,
            entity_map_max_lifetime: setting_lifetime(
                "entity-map-max-lifetime",
                options
                    .entity_map_max_lifetime
                    .or(file.entity_map_max_lifetime),
                d.entity_map_max_lifetime,
            )?,
            reap_every: options
                .reap_every_ms
                .or(file.reap_every_ms)
                .map_or(d.reap_every, |ms| {
                    std::time::Duration::from_millis(ms.max(1))
                }),
            workers: options.workers.or(file.workers).unwrap_or(d.workers).max(1),
            auth: AuthSettings {
                mode: options.auth.or(file.auth).unwrap_or(d.auth.mode),
                key_file: options.jwt_key_file.or(file.jwt_key_file),
                jwks_url: options.jwks_url.or(file.jwks_url),
                issuer: options.jwt_issuer.or(file.jwt_issuer),
                audience: options.jwt_audience.or(file.jwt_audience),
                leeway_seconds: options
                    .jwt_leeway_seconds
                    .or(file.jwt_leeway_seconds)
                    .unwrap_or(d.auth.leeway_seconds),
                grants: file.grants,
            },
            metrics_access: options
                .metrics_access
                .or(file.metrics_access)
                .unwrap_or(d.metrics_access),
            audit_table: options
                .audit_table
                .or(file.audit_table)
                .unwrap_or(d.audit_table),
            outbound: crate::outbound::Policy::new(
                options.outbound.or(file.outbound).as_deref(),
                if options.outbound_allow.is_empty() {
                    &file.outbound_allow
                } else {
                    &options.outbound_allow
                },
            )?,
            data_models: file.data_models,
            territory: file.territory,
        })
    }
}

impl Settings {
    /// The base URL (no trailing slash) under which sources reach a broker listening on `addr`:
    /// the configured public URL, else http:// with the bound address, loopback for an
    /// unspecified one (0.0.0.0, ::).
    pub fn public_url_for(&self, addr: std::net::SocketAddr) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
            ip => ip,
        };
        format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
    }
}

fn read_file(path: &Path) -> Result<Options, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read configuration file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid configuration file {}: {e}", path.display()))
}

/// A lifetime setting given as an ISO 8601 duration (`name` is its flag), or the default.
fn setting_lifetime(
    name: &'static str,
    given: Option<String>,
    default: chrono::TimeDelta,
) -> Result<chrono::TimeDelta, String> {
    match given {
        None => Ok(default),
        Some(text) => crate::temporal::lifetime(name, &text).map_err(|e| e.to_string()),
    }
}

/// `A=B` items (context rewrites, MQTT contexts) as pairs; `what` names them in errors.
fn parse_pairs(items: &[String], what: &str) -> Result<Vec<(String, String)>, String> {
    items
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .ok_or_else(|| format!("{what} '{s}' is not of the form PREFIX=VALUE"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("twinlink.toml");
        std::fs::write(
            &file,
            "port = 2000\nbind = \"127.0.0.1\"\ncontext-rewrites = [\"a=b\"]\n",
        )
        .unwrap();
        let options = Options {
            config: Some(file),
            port: Some(3000),
            ..Options::default()
        };
        let s = Settings::load(options).unwrap();
        assert_eq!(s.port, 3000);
        assert_eq!(s.bind, "127.0.0.1");
        assert_eq!(s.context_rewrites, vec![("a".to_string(), "b".to_string())]);
        assert_eq!(s.default_page_size, 20);
        assert_eq!(s.entity_map_max_lifetime, chrono::TimeDelta::days(1));
    }

    #[test]
    fn entity_map_lifetimes_are_iso_8601_durations() {
        let s = Settings::load(Options {
            entity_map_lifetime: Some("PT10M".into()),
            entity_map_max_lifetime: Some("P7D".into()),
            ..Options::default()
        })
        .unwrap();
        assert_eq!(s.entity_map_lifetime, chrono::TimeDelta::minutes(10));
        assert_eq!(s.entity_map_max_lifetime, chrono::TimeDelta::days(7));
        let bad = Settings::load(Options {
            entity_map_max_lifetime: Some("1 day".into()),
            ..Options::default()
        })
        .unwrap_err();
        assert!(bad.starts_with("entity-map-max-lifetime: "), "{bad}");
    }

    #[test]
    fn the_public_url_is_the_given_one_or_the_bound_address_reachable_here() {
        let mut s = Settings::default();
        let any: std::net::SocketAddr = "0.0.0.0:1026".parse().unwrap();
        assert_eq!(s.public_url_for(any), "http://127.0.0.1:1026");
        let v6: std::net::SocketAddr = "[::]:80".parse().unwrap();
        assert_eq!(s.public_url_for(v6), "http://[::1]:80");
        s.public_url = Some("https://broker.example.org/".into());
        assert_eq!(s.public_url_for(any), "https://broker.example.org");
    }

    #[test]
    fn data_model_bindings_and_territories_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        let text = r#"
            [[data-models]]
            model = "AirQualityObserved"
            mode = "flag"

            [[territory]]
            tenant = "*"
            bbox = [-3.9, 40.3, -3.5, 40.6]
            max-future-seconds = 300
            mode = "reject"
        "#;
        std::fs::write(&file, text).unwrap();
        let s = Settings::load(Options {
            config: Some(file.clone()),
            ..Options::default()
        })
        .unwrap();
        assert_eq!(s.data_models.len(), 1);
        assert_eq!(s.data_models[0].tenant, "");
        assert_eq!(s.data_models[0].mode, crate::model::conformance::Mode::Flag);
        assert_eq!(s.territory[0].max_future_seconds, Some(300));
        std::fs::write(&file, "[[data-models]]\nmodel = \"X\"\nmode = \"warn\"\n").unwrap();
        assert!(Settings::load(Options {
            config: Some(file),
            ..Options::default()
        })
        .is_err());
    }

    #[test]
    fn a_bad_rewrite_or_unknown_key_is_refused() {
        assert!(parse_pairs(&["nothing".into()], "context rewrite").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "prot = 1\n").unwrap();
        assert!(Settings::load(Options {
            config: Some(file),
            ..Options::default()
        })
        .is_err());
    }
}
