//! Reading a request: tenant, @context (Link header or body), Accept and Content-Type negotiation,
//! body size limit and JSON parsing, query parameters. Each failure is the NGSI-LD error the
//! binding (clause 6.3) prescribes.

use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::ld::{ActiveContext, CORE_CONTEXT_V1_9};
use crate::model::render::Format;
use crate::service::AppState;
use crate::store::DEFAULT_TENANT;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;

const JSON_LD_CONTEXT_REL: &str = "http://www.w3.org/ns/json-ld#context";

/// The response media types the API offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// application/json, the @context in a Link header.
    Json,
    /// application/ld+json, the @context in the body.
    JsonLd,
    /// application/geo+json (GeoJSON Features).
    GeoJson,
}

impl Accepted {
    /// The media type string.
    pub fn media_type(self) -> &'static str {
        match self {
            Accepted::Json => "application/json",
            Accepted::JsonLd => "application/ld+json",
            Accepted::GeoJson => "application/geo+json",
        }
    }
}

/// What every handler needs to know about a request before it touches a service.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The tenant (`NGSILD-Tenant`), `""` for the default tenant.
    pub tenant: String,
    /// The @context URL from the Link header, if any.
    pub link_context: Option<String>,
    /// The negotiated response media type.
    pub accepted: Accepted,
    /// Query parameters in order.
    pub query: Vec<(String, String)>,
    /// The API version the client prefers (`Prefer: ngsi-ld=…`, 4.3.6.8).
    pub prefer: Option<super::version::Preferred>,
    /// `Prefer: body=json` (6.3.6): a GeoJSON answer carries its @context in a Link header
    /// rather than in the body.
    pub body_json: bool,
    /// The Via header (6.3.18): the brokers the request has passed through.
    pub via: Option<String>,
    /// The request's headers (names in lower case), for contextSourceInfo pairs whose value
    /// is `urn:ngsi-ld:request` (4.3.6.5).
    pub headers: Arc<Vec<(String, String)>>,
}

impl RequestInfo {
    /// Reads headers and query; `offers` are the media types this resource can answer with and
    /// `params` the query parameters it knows (any other is an InvalidRequest, clause 6.3.x).
    pub fn read(
        req: &HttpRequest,
        offers: &[Accepted],
        params: &[&str],
    ) -> NgsiResult<RequestInfo> {
        let accepted = negotiate_accept(req, offers)?;
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(req.query_string().as_bytes())
                .into_owned()
                .collect();
        if let Some((unknown, _)) = query.iter().find(|(k, _)| !params.contains(&k.as_str())) {
            return Err(NgsiError::invalid(format!(
                "the query parameter '{unknown}' is not supported here; known parameters: {}",
                if params.is_empty() {
                    "none".to_string()
                } else {
                    params.join(", ")
                }
            )));
        }
        Ok(RequestInfo {
            tenant: tenant(req)?,
            link_context: link_context(req)?,
            accepted,
            query,
            prefer: super::version::preferred(req),
            body_json: req
                .headers()
                .get_all("Prefer")
                .filter_map(|h| h.to_str().ok())
                .flat_map(|h| h.split([',', ';']))
                .any(|p| p.trim().eq_ignore_ascii_case("body=json")),
            via: req
                .headers()
                .get_all("Via")
                .filter_map(|v| v.to_str().ok())
                .reduce(|a, _| a)
                .map(str::to_string),
            headers: Arc::new(
                req.headers()
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                    })
                    .collect(),
            ),
        })
    }

    /// A boolean query parameter: absent or `false` is false, `true` is true, anything else a
    /// BadRequestData naming it.
    pub fn flag(&self, name: &str) -> NgsiResult<bool> {
        match self.param(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(NgsiError::bad_data(format!(
                "{name}={other} must be true or false"
            ))),
        }
    }

    /// How far the request reaches: `local=true`, its @context and its Via chain.
    pub fn reach(&self) -> crate::federation::forward::Reach {
        crate::federation::forward::Reach {
            local: self.param("local") == Some("true"),
            context: self.link_context.clone(),
            via: self.via.clone(),
            tenant: self.tenant.clone(),
            headers: self.headers.clone(),
            csf: None,
            split_entities: match self.param("splitEntities") {
                Some("true") => Some(true),
                Some("false") => Some(false),
                _ => None,
            },
        }
    }

    /// The @context to give back: the one the client sent by Link, else the core context.
    pub fn response_context(&self) -> Value {
        Value::String(
            self.link_context
                .clone()
                .unwrap_or_else(|| CORE_CONTEXT_V1_9.to_string()),
        )
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A list query parameter (items separated by `,` or `|`); an empty item is an error.
    pub fn list(&self, name: &str) -> NgsiResult<Option<Vec<String>>> {
        let Some(v) = self.param(name) else {
            return Ok(None);
        };
        let items: Vec<String> = v.split([',', '|']).map(|s| s.trim().to_string()).collect();
        if items.iter().any(String::is_empty) {
            return Err(NgsiError::bad_data(format!("{name}={v} has an empty item")));
        }
        Ok(Some(items))
    }

    /// The `options` tokens, checked against those the operation knows.
    pub fn options(&self, known: &[&str]) -> NgsiResult<Vec<String>> {
        let options = self
            .list("options")
            .map_err(|e| NgsiError::invalid(e.detail))?
            .unwrap_or_default();
        if let Some(bad) = options.iter().find(|o| !known.contains(&o.as_str())) {
            return Err(NgsiError::invalid(format!(
                "options={bad} is not known here; use one of {}",
                known.join(", ")
            )));
        }
        Ok(options)
    }

    /// Whether `options=sysAttrs` is given, the only option a subscription or registration takes.
    pub fn sys_attrs_only(&self) -> NgsiResult<bool> {
        Ok(self.options(&["sysAttrs"])?.iter().any(|o| o == "sysAttrs"))
    }

    /// The representation asked for by `format` or `options` (clause 6.3.7).
    pub fn format(&self) -> NgsiResult<Format> {
        let from_name = |name: &str| match name {
            "normalized" => Some(Format::Normalized),
            "concise" => Some(Format::Concise),
            "keyValues" | "simplified" => Some(Format::KeyValues),
            _ => None,
        };
        if let Some(f) = self.param("format") {
            return from_name(f).ok_or_else(|| {
                NgsiError::invalid(format!(
                    "format={f} is unknown; use normalized, concise or keyValues"
                ))
            });
        }
        let options = self
            .list("options")
            .map_err(|e| NgsiError::invalid(e.detail))?
            .unwrap_or_default();
        Ok(options
            .iter()
            .rev()
            .find_map(|o| from_name(o))
            .unwrap_or_default())
    }

    /// The active context of the request's Link header (or the core context).
    pub async fn context(&self, broker: &AppState) -> NgsiResult<Arc<ActiveContext>> {
        let link = self.link_context.clone().map(Value::String);
        broker.contexts().active(link.as_ref()).await
    }
}

/// The @context of a request (its Link, or its body's `@context`) as sources are given it: a
/// Link to one URL; None when it is not one URL (sources then get full IRIs).
pub fn single_url(context: Option<&Value>) -> Option<String> {
    match context? {
        Value::String(url) => Some(url.clone()),
        Value::Array(items) => match items.as_slice() {
            [Value::String(url)] => Some(url.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn tenant(req: &HttpRequest) -> NgsiResult<String> {
    let Some(value) = req.headers().get("NGSILD-Tenant") else {
        return Ok(DEFAULT_TENANT.to_string());
    };
    let t = value
        .to_str()
        .map_err(|_| NgsiError::bad_data("the NGSILD-Tenant header is not text"))?
        .trim();
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !ok {
        return Err(NgsiError::bad_data(format!(
            "the tenant '{t}' is not valid: use 1 to 64 letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(t.to_string())
}

fn link_context(req: &HttpRequest) -> NgsiResult<Option<String>> {
    for value in req.headers().get_all("Link") {
        let text = value
            .to_str()
            .map_err(|_| NgsiError::bad_data("the Link header is not text"))?;
        for link in text.split(',') {
            let mut parts = link.split(';').map(str::trim);
            let target = parts.next().unwrap_or("");
            let is_context = parts.any(|p| {
                p.strip_prefix("rel=")
                    .is_some_and(|r| r.trim_matches('"') == JSON_LD_CONTEXT_REL)
            });
            if !is_context {
                continue;
            }
            let url = target
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    NgsiError::bad_data(format!("the Link header '{link}' does not hold a <URL>"))
                })?;
            crate::model::validate::uri("the @context URL in the Link header", url)?;
            return Ok(Some(url.to_string()));
        }
    }
    Ok(None)
}

/// Picks the offer the Accept header prefers. The header (every Accept line of the request) is
/// parsed by actix-web's typed `Accept` header; which offer it prefers is ours to say, since
/// actix-web ranks the client's ranges but does not match them against offers.
fn negotiate_accept(req: &HttpRequest, offers: &[Accepted]) -> NgsiResult<Accepted> {
    use actix_web::http::header::{Quality, ACCEPT};
    use actix_web::mime;
    let not_text = || NgsiError::invalid("the Accept header is not text");
    let lines: Vec<&str> = req
        .headers()
        .get_all(ACCEPT)
        .map(|h| h.to_str())
        .collect::<Result<_, _>>()
        .map_err(|_| not_text())?;
    if lines.iter().all(|l| l.trim().is_empty()) {
        return Ok(offers[0]);
    }
    let header = lines.join(", ");
    let ranges = media_ranges(&header);
    // Each offer takes the quality of the most specific range matching it (RFC 9110 12.5.1); ties
    // go to the order of `offers`, which lists the spec's preference.
    let quality = |offer: Accepted| -> Quality {
        let media = offer.media_type();
        let exact = ranges.iter().find(|r| r.item.essence_str() == media);
        let sub = ranges
            .iter()
            .find(|r| r.item.type_() == mime::APPLICATION && r.item.subtype() == mime::STAR);
        let any = ranges.iter().find(|r| r.item.type_() == mime::STAR);
        exact.or(sub).or(any).map_or(Quality::ZERO, |r| r.quality)
    };
    let mut best: Option<(Accepted, Quality)> = None;
    for offer in offers {
        let q = quality(*offer);
        if q > Quality::ZERO && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((*offer, q));
        }
    }
    best.map(|(o, _)| o).ok_or_else(|| {
        let offered: Vec<&str> = offers.iter().map(|o| o.media_type()).collect();
        NgsiError::new(
            ErrorKind::NotAcceptable,
            format!(
                "the Accept header '{header}' names no media type offered here ({})",
                offered.join(", ")
            ),
        )
    })
}

/// The media ranges of an Accept header, each parsed by actix-web's `QualityItem`. A range whose
/// parameters do not parse (a `q` that is not a number) keeps its media type with the default
/// weight: RFC 9110 gives no rule that ranks it last or drops it, and a client's typo should not
/// turn a request it could be answered into a 406.
fn media_ranges(header: &str) -> Vec<actix_web::http::header::QualityItem<actix_web::mime::Mime>> {
    use actix_web::http::header::QualityItem;
    header
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            r.parse::<QualityItem<actix_web::mime::Mime>>()
                .ok()
                .or_else(|| {
                    let essence = r.split(';').next().unwrap_or_default().trim();
                    essence.parse().ok().map(QualityItem::max)
                })
        })
        .collect()
}

/// A parsed request body and the @context that applies to it.
pub struct Body {
    /// The JSON body, its @context member taken out.
    pub json: Value,
    /// The @context: the body's (application/ld+json) or the Link header's (application/json).
    pub context: Option<Value>,
}

/// Reads a subscription's or registration's request (a whole body, or a PATCH `fragment`, which
/// may also come as application/merge-patch+json): headers without query parameters, and the
/// checked JSON body with its @context.
pub async fn read_record(
    req: &HttpRequest,
    payload: web::Payload,
    max_bytes: usize,
    fragment: bool,
) -> NgsiResult<(RequestInfo, Body)> {
    let info = RequestInfo::read(req, &[Accepted::Json, Accepted::JsonLd], &[])?;
    let body = read_body(req, payload, &info, max_bytes, fragment).await?;
    Ok((info, body))
}

/// Reads and checks a JSON body: media type (`merge_patch` also allows application/merge-patch+json),
/// size limit, JSON syntax and where the @context may be.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    info: &RequestInfo,
    limit: usize,
    merge_patch: bool,
) -> NgsiResult<Body> {
    let (mut json, is_ld) = read_json(req, payload, limit, merge_patch).await?;
    let body_context = json.as_object_mut().and_then(|o| o.remove("@context"));
    if is_ld && info.link_context.is_some() {
        return Err(NgsiError::bad_data(
            "with Content-Type application/ld+json the @context belongs in the body, not in a Link header",
        ));
    }
    let context = if is_ld && !json.is_object() {
        // Not an entity or fragment (e.g. a batch delete's list of ids): nothing to expand.
        None
    } else if is_ld {
        Some(body_context.ok_or_else(|| {
            NgsiError::bad_data(
                "with Content-Type application/ld+json the body needs an @context member",
            )
        })?)
    } else {
        if body_context.is_some() {
            return Err(NgsiError::bad_data(
                "with Content-Type application/json the @context goes in a Link header; use application/ld+json to send it in the body",
            ));
        }
        info.link_context.clone().map(Value::String)
    };
    Ok(Body { json, context })
}

/// Reads a JSON body as it is: media type (`merge_patch` also allows
/// application/merge-patch+json), size limit and JSON syntax. Returns it and whether it came as
/// application/ld+json.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    merge_patch: bool,
) -> NgsiResult<(Value, bool)> {
    let content_type = req
        .headers()
        .get("Content-Type")
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let is_ld = match content_type.as_deref() {
        Some("application/json") => false,
        Some("application/merge-patch+json") if merge_patch => false,
        Some("application/ld+json") => true,
        other => {
            return Err(NgsiError::new(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "Content-Type {} is not supported here; send application/json or application/ld+json",
                    other.unwrap_or("(none)")
                ),
            ))
        }
    };
    let too_large = || {
        NgsiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than the {limit} bytes this broker accepts"),
        )
    };
    let declared = req
        .headers()
        .get("Content-Length")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<usize>().ok());
    let chunked = req.headers().contains_key("Transfer-Encoding");
    match declared {
        None if chunked => {
            return Err(NgsiError::new(
                ErrorKind::LengthRequired,
                "send the body with a Content-Length header",
            ))
        }
        Some(n) if n > limit => return Err(too_large()),
        _ => {}
    }
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| NgsiError::invalid(format!("the request body could not be read: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return Err(NgsiError::invalid("the request needs a JSON body"));
    }
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| NgsiError::invalid(format!("the request body is not valid JSON: {e}")))?;
    crate::model::validate::no_nul_character(&bytes)?;
    Ok((json, is_ld))
}
