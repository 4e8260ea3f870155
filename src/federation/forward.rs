//! Requests to registered context sources (4.3.6.4–4.3.6.6): one outbound HTTP client for every
//! distributed operation, with the registration's timeout (or the configured one), a cap on the
//! size of an answer, the headers a source expects (the caller's @context as a Link, the tenant
//! at the source, contextSourceInfo, Via) and a cooldown after a failure. A source that is down,
//! slow, lying or huge costs at most its timeout and yields an error for this source only.

use super::Registration;
use crate::config::Settings;
use crate::subscription::model::Stats;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far a request reaches (4.3.6.4): whether it stays on this broker, the @context its caller
/// gave (forwarded to sources so that they read and answer with the same terms), and the Via
/// chain it arrived with (6.3.18).
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// `local=true`: registrations are not consulted.
    pub local: bool,
    /// The caller's @context URL (Link header); None: the core context.
    pub context: Option<String>,
    /// The Via header the request arrived with.
    pub via: Option<String>,
    /// The tenant the request addresses here (its alias is this broker's name in Via).
    pub tenant: String,
    /// The query's `splitEntities` parameter (5.7.2.4); None: the deployment's default.
    pub split_entities: Option<bool>,
    /// The query's `csf` (5.7.2.4): only registrations it matches are consulted.
    pub csf: Option<std::sync::Arc<crate::query::q::QExpr>>,
    /// The headers of the request (names in lower case), whose values contextSourceInfo pairs
    /// may ask to pass on (`urn:ngsi-ld:request`, 4.3.6.5).
    pub headers: std::sync::Arc<Vec<(String, String)>>,
}

impl Reach {
    /// A request that stays on this broker.
    pub fn local() -> Reach {
        Reach {
            local: true,
            ..Reach::default()
        }
    }
}

/// Header names a registration's contextSourceInfo may not set: the broker sets them itself.
const RESERVED_HEADERS: &[&str] = &[
    "ngsild-tenant",
    "via",
    "link",
    "accept",
    "content-type",
    "content-length",
    "host",
];

/// contextSourceInfo keys that tell how to talk to the source (4.3.6.6) rather than being
/// headers to send: the media type of request bodies, the media type to ask answers in, and the
/// @context the source works with.
const DIRECTIVES: &[&str] = &["contentType", "accept", "jsonldContext"];

/// The contextSourceInfo value that stands for the triggering request's own header (4.3.6.5).
const FROM_REQUEST: &str = "urn:ngsi-ld:request";

const JSON: &str = "application/json";
const LD_JSON: &str = "application/ld+json";

/// What a source answered.
#[derive(Debug)]
pub enum Answer {
    /// 404: the source does not hold what was asked.
    NotFound,
    /// A JSON body (null for 201 and 204), with the @context URL of its Link header if it had
    /// one, and its NGSILD-Results-Count (asked with count=true) if it gave one.
    Json {
        /// The body.
        body: Value,
        /// The @context of the Link header.
        link: Option<String>,
        /// NGSILD-Results-Count.
        count: Option<usize>,
    },
}

/// Why a source contributed nothing, with the NGSILD-Warning code (6.3.17, the warn-codes of
/// IETF RFC 7234) the caller is told it under: 299 for an error answer, 111 for an answer that
/// could not be used (not JSON, not NGSI-LD, too large), 199 for a source that could not be
/// reached or did not answer in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The warn-code.
    pub code: u16,
    /// What happened, for the warning text and the log.
    pub text: String,
    /// The HTTP status the source answered with, if it answered.
    pub status: Option<u16>,
    /// The JSON body of a 207 answer (what succeeded and what failed of a batch).
    pub partial: Option<Value>,
}

impl Failure {
    /// The source answered with an error (or cannot be addressed at all).
    pub fn refused(text: String) -> Failure {
        Failure {
            code: 299,
            text,
            status: None,
            partial: None,
        }
    }
    /// The source's answer is not something this broker can use.
    pub fn invalid(text: String) -> Failure {
        Failure {
            code: 111,
            text,
            status: None,
            partial: None,
        }
    }
    /// The source could not be reached, or did not answer within its timeout.
    pub fn unreachable(text: String) -> Failure {
        Failure {
            code: 199,
            text,
            status: None,
            partial: None,
        }
    }

    /// The NGSILD-Warning value (`code agent "text"`) for a failure of the registration's source:
    /// the agent is the endpoint's host, the text reduced to what a header can carry.
    pub fn warning(&self, registration: &Registration) -> String {
        let endpoint = registration.endpoint();
        let agent = url::Url::parse(endpoint)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            })
            .unwrap_or_else(|| "-".to_string());
        let text: String = self
            .text
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
            .take(200)
            .collect();
        format!("{} {agent} \"{text}\"", self.code)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The outbound side of federation: the HTTP client and each source's cooldown.
pub struct Sources {
    client: crate::outbound::Client,
    alias: String,
    started: Instant,
    timeout: Duration,
    max_bytes: usize,
    /// Until when each failed endpoint is left alone.
    resting: Mutex<HashMap<String, Instant>>,
    /// The requests sent to each registration's source, by tenant and registration id
    /// (timesSent, timesFailed, lastSuccess, lastFailure and status of Table 5.2.9-1).
    sent: Mutex<HashMap<(String, String), Stats>>,
}

impl Sources {
    /// The client the settings describe.
    pub fn new(settings: &Settings) -> Sources {
        let timeout = Duration::from_millis(settings.source_timeout_ms);
        Sources {
            // Header names as the spec writes them (Via, Link, NGSILD-Tenant): sources that look
            // them up in a plain map, such as the ETSI suite's mock source, find them.
            client: crate::outbound::Client::new(
                &settings.outbound,
                reqwest::Client::builder()
                    .http1_title_case_headers()
                    .connect_timeout(timeout),
                false,
            )
            .expect("the client of context sources builds"),
            alias: settings.alias.clone(),
            started: Instant::now(),
            timeout,
            max_bytes: settings.source_max_bytes,
            resting: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// This broker's name for a tenant (contextSourceAlias, 5.2.40): the configured alias for
    /// the default tenant, the alias and a stable digest of the tenant's name for the others, so
    /// that federating two tenants of one broker is not taken for a loop.
    pub fn alias(&self, tenant: &str) -> String {
        if tenant.is_empty() {
            return self.alias.clone();
        }
        // FNV-1a: stable across runs and builds, unlike the standard hasher.
        let digest = tenant.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{}-{digest:016x}", self.alias)
    }

    /// The identity of this broker as a context source for a tenant (5.15, 5.2.40).
    pub fn identity(&self, tenant: &str) -> Value {
        let alias = self.alias(tenant);
        serde_json::json!({
            "id": format!("urn:ngsi-ld:ContextSourceIdentity:{alias}"),
            "type": "ContextSourceIdentity",
            "contextSourceAlias": alias,
            "contextSourceUptime": format!("PT{}S", self.started.elapsed().as_secs()),
            "contextSourceTimeAt": crate::model::format_time(&chrono::Utc::now()),
            "contextSourceExtras": {
                "software": "twinlink",
                "version": env!("CARGO_PKG_VERSION"),
            },
        })
    }

    /// Whether a request that arrived with this Via chain has passed through this broker (for
    /// its tenant) already: forwarding it again would make a loop.
    pub fn looped(&self, reach: &Reach) -> bool {
        let me = self.alias(&reach.tenant);
        reach.via.as_deref().is_some_and(|v| {
            v.split(',')
                .any(|hop| hop.split_whitespace().nth(1) == Some(me.as_str()))
        })
    }

    /// Whether the registration's endpoint is cooling down after a failure.
    pub fn resting(&self, registration: &Registration) -> bool {
        let endpoint = registration.endpoint();
        self.resting
            .lock()
            .ok()
            .and_then(|r| r.get(endpoint).copied())
            .is_some_and(|until| until > Instant::now())
    }

    /// The requests this instance has sent to a registration's source (zero counts when none).
    pub fn stats(&self, tenant: &str, id: &str) -> Stats {
        self.sent
            .lock()
            .ok()
            .and_then(|sent| sent.get(&(tenant.to_string(), id.to_string())).cloned())
            .unwrap_or_default()
    }

    /// Drops the counts of a deleted registration.
    pub fn forget(&self, tenant: &str, id: &str) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.remove(&(tenant.to_string(), id.to_string()));
        }
    }

    /// Counts a request to a registration's source and its outcome.
    fn count(&self, tenant: &str, id: &str, ok: bool) {
        let Ok(mut sent) = self.sent.lock() else {
            return;
        };
        let stats = sent
            .entry((tenant.to_string(), id.to_string()))
            .or_default();
        let now = chrono::Utc::now();
        stats.times_sent += 1;
        if ok {
            stats.last_success = Some(now);
        } else {
            stats.times_failed += 1;
            stats.last_failure = Some(now);
        }
        stats.status = Some(if ok { "ok" } else { "failed" }.to_string());
    }

    /// Sends a request to the registration's source, in cooldown after a failure when the
    /// registration asks for one.
    pub async fn send(
        &self,
        registration: &Registration,
        call: Call<'_>,
        reach: &Reach,
    ) -> Result<Answer, Failure> {
        let result = self.try_send(registration, call, reach).await;
        self.count(&reach.tenant, &registration.record.id, result.is_ok());
        if result.is_err() {
            if let Some(cooldown) = registration.management_ms("cooldown") {
                if let Ok(mut resting) = self.resting.lock() {
                    resting.insert(
                        registration.endpoint().to_string(),
                        Instant::now()
                            .checked_add(Duration::from_millis(cooldown))
                            .unwrap_or_else(far_future),
                    );
                }
            }
        }
        result
    }

    async fn try_send(
        &self,
        registration: &Registration,
        Call {
            method,
            path,
            params,
            body,
        }: Call<'_>,
        reach: &Reach,
    ) -> Result<Answer, Failure> {
        let endpoint = registration.endpoint();
        let mut url = url::Url::parse(endpoint)
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .ok_or_else(|| {
                Failure::refused(format!("the endpoint {endpoint} is not a base URL"))
            })?;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["ngsi-ld", "v1"])
                .extend(path);
        }
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        let timeout = registration
            .management_ms("timeout")
            .map_or(self.timeout, Duration::from_millis);
        let ld_json = registration.info("contentType") == Some(LD_JSON);
        let mut request = self
            .client
            .request(method, url.clone())
            .map_err(|why| Failure::unreachable(format!("{url}: {why}")))?
            .timeout(timeout)
            .header("Accept", registration.info("accept").unwrap_or(JSON))
            .header("Via", self.via(reach));
        if let Some(body) = body {
            request = if ld_json {
                // application/ld+json: the @context travels in the body, never as a Link.
                let mut body = body.clone();
                if let Value::Object(members) = &mut body {
                    let context = reach
                        .context
                        .clone()
                        .unwrap_or_else(|| crate::ld::CORE_CONTEXT_V1_9.to_string());
                    members.insert("@context".to_string(), Value::String(context));
                }
                request
                    .header("Content-Type", LD_JSON)
                    .body(body.to_string())
            } else {
                request.header("Content-Type", JSON).body(body.to_string())
            };
        }
        if let Some(context) = reach
            .context
            .as_ref()
            .filter(|_| body.is_none() || !ld_json)
        {
            request = request.header("Link", crate::ld::link_header(context));
        }
        if let Some(tenant) = registration
            .record
            .doc
            .get("tenant")
            .and_then(Value::as_str)
        {
            request = request.header("NGSILD-Tenant", tenant);
        }
        for (key, value) in registration.context_source_info() {
            if DIRECTIVES.contains(&key) {
                continue;
            }
            // urn:ngsi-ld:request: the value of the same header of the triggering request, when
            // it had one (4.3.6.5).
            let value = if value == FROM_REQUEST {
                match reach
                    .headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(key))
                {
                    Some((_, v)) => v.as_str(),
                    None => continue,
                }
            } else {
                value
            };
            // A pair that cannot be a header (a name with spaces, a value with a line break)
            // is left out rather than failing every request to the source.
            let header = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                .ok()
                .zip(reqwest::header::HeaderValue::from_str(value).ok());
            if let Some((name, value)) = header {
                if !RESERVED_HEADERS.contains(&name.as_str()) {
                    request = request.header(name, value);
                }
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::unreachable(format!("{url}: {}", describe(&e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Answer::NotFound);
        }
        if !status.is_success() || status == reqwest::StatusCode::MULTI_STATUS {
            let text = response.text().await.unwrap_or_default();
            let detail: String = text.chars().take(300).collect();
            let partial = (status == reqwest::StatusCode::MULTI_STATUS)
                .then(|| serde_json::from_str(&text).ok())
                .flatten();
            return Err(Failure {
                status: Some(status.as_u16()),
                partial,
                ..Failure::refused(format!("{url} answered {status}: {detail}"))
            });
        }
        if body_less(status) {
            return Ok(Answer::Json {
                body: Value::Null,
                link: None,
                count: None,
            });
        }
        let count = response
            .headers()
            .get("NGSILD-Results-Count")
            .and_then(|v| v.to_str().ok()?.trim().parse().ok());
        let link = response
            .headers()
            .get_all("Link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(crate::ld::context_of_link);
        if response
            .content_length()
            .is_some_and(|n| n as usize > self.max_bytes)
        {
            return Err(Failure::invalid(format!(
                "{url} answered with more than the {} bytes accepted from a source",
                self.max_bytes
            )));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| Failure::unreachable(format!("{url}: the answer broke off: {e}")))?;
            body.extend_from_slice(&chunk);
            if body.len() > self.max_bytes {
                return Err(Failure::invalid(format!(
                    "{url} answered with more than the {} bytes accepted from a source",
                    self.max_bytes
                )));
            }
        }
        let json = serde_json::from_slice(&body).map_err(|e| {
            Failure::invalid(format!(
                "{url} answered with something that is not JSON: {e}"
            ))
        })?;
        Ok(Answer::Json {
            body: json,
            link,
            count,
        })
    }

    /// The Via header of a forwarded request: the chain it arrived with, then this broker.
    fn via(&self, reach: &Reach) -> String {
        let me = format!("1.1 {}", self.alias(&reach.tenant));
        match reach.via.as_deref() {
            Some(chain) if !chain.trim().is_empty() => format!("{chain}, {me}"),
            _ => me,
        }
    }
}

/// One request to a source: method, path segments below its NGSI-LD base, query parameters and
/// an optional JSON body (sent as application/json with the caller's @context as Link).
pub struct Call<'a> {
    /// The HTTP method.
    pub method: reqwest::Method,
    /// Path segments below `/ngsi-ld/v1`.
    pub path: &'a [&'a str],
    /// Query parameters.
    pub params: &'a [(String, String)],
    /// The body, if any.
    pub body: Option<&'a Value>,
}

/// A rest that never ends (a cooldown too long for the clock).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Whether a success status carries no body to read (201 and 204 of writes).
fn body_less(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::NO_CONTENT || status == reqwest::StatusCode::CREATED
}

/// A transport failure in a sentence: timeouts and refused connections named as such.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the timeout".into()
    } else if e.is_connect() {
        let causes = crate::error::with_causes(e);
        match causes.find("refused by the outbound policy") {
            Some(at) => causes[at..].to_string(),
            None => "the connection failed".into(),
        }
    } else {
        e.to_string()
    }
}
