//! Authentication of API requests with bearer JSON Web Tokens. Off by default, so that a broker
//! started with no settings serves at once; `--auth jwt` makes every request but the probes carry
//! a token signed with the configured key (a key file or a JWKS URL), from the configured issuer,
//! for the configured audience, and valid now (within the clock skew); the grants of the
//! configuration then decide what it may do (`grants`).

pub mod grants;
pub mod keys;

use clap::ValueEnum;
use jsonwebtoken::Validation;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

/// Whether API requests must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: every request is served (the zero-setup local default).
    #[default]
    None,
    /// A bearer JSON Web Token on every request but /health and /ready.
    Jwt,
}

/// The authentication settings, as configured.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Whether requests authenticate.
    pub mode: AuthMode,
    /// The verification key file (PEM public key, or the HS256 secret).
    pub key_file: Option<PathBuf>,
    /// The JWKS URL to verify with instead of a key file.
    pub jwks_url: Option<String>,
    /// The issuer tokens must name.
    pub issuer: Option<String>,
    /// The audience tokens must name.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Who may do what (`[[grants]]` of the configuration file).
    pub grants: Vec<grants::Grant>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            mode: AuthMode::None,
            key_file: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_seconds: 60,
            grants: Vec::new(),
        }
    }
}

/// Who made a request, as its verified token says.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's `sub` claim ("" when it has none), for the audit log.
    pub subject: String,
    /// Every claim of the token, for the authorization rules.
    pub claims: Value,
}

/// Why a request was not authenticated. The reason is for the log only: the client learns no more
/// than that its token was missing or not accepted.
#[derive(Debug)]
pub enum Rejection {
    /// No bearer token in the request.
    Missing,
    /// A token that was not accepted, and why.
    Invalid(String),
}

/// Tokens verified recently, by their text: a client sends the same token with every request
/// until it expires, and checking an RS256 or ES256 signature costs more than serving a read.
/// The most kept; least recently used go first.
const VERIFIED_TOKENS: usize = 10_000;

/// A token whose signature, issuer and audience were verified, with what its use still depends
/// on: the time (`exp`, `nbf`) and its key staying in the key set.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    key: std::sync::Arc<keys::VerifyKey>,
    kid: Option<String>,
    exp: i64,
    nbf: Option<i64>,
}

/// Verifies the bearer tokens of requests.
pub struct Authenticator {
    keys: keys::KeySource,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: u64,
    verified: quick_cache::sync::Cache<String, Verified>,
}

impl Authenticator {
    /// The authenticator the settings describe, None when authentication is off. A key file is
    /// read now, so that a missing or unusable key stops the start-up; a JWKS is fetched when the
    /// first token needs it (`http` fetches it).
    pub fn new(
        settings: &AuthSettings,
        http: crate::outbound::Client,
    ) -> Result<Option<Self>, String> {
        if settings.mode == AuthMode::None {
            return Ok(None);
        }
        let keys = match (&settings.key_file, &settings.jwks_url) {
            (Some(path), None) => {
                keys::KeySource::File(std::sync::Arc::new(keys::VerifyKey::from_file(path)?))
            }
            (None, Some(url)) => keys::KeySource::Jwks(Box::new(keys::Jwks::new(url, http)?)),
            _ => {
                return Err(
                    "--auth jwt needs exactly one of --jwt-key-file and --jwks-url".to_string(),
                )
            }
        };
        Ok(Some(Authenticator {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_seconds: settings.leeway_seconds,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        }))
    }

    /// The principal of a request with this `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, Rejection> {
        let token = authorization
            .and_then(|h| {
                h.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            })
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or(Rejection::Missing)?;
        if let Some(known) = self.verified.get(token) {
            if let Some(principal) = self.reuse(known).await? {
                return Ok(principal);
            }
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Rejection::Invalid(format!("unreadable token header: {e}")))?;
        let key = self
            .keys
            .key_for(header.kid.as_deref())
            .await
            .map_err(Rejection::Invalid)?;
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &self.validation(key.algorithm))
            .map_err(|e| Rejection::Invalid(format!("token not accepted: {e}")))?;
        let subject = data.claims["sub"].as_str().unwrap_or_default().to_string();
        let principal = Principal {
            subject,
            claims: data.claims,
        };
        // `exp` is required and was validated as a number; `nbf` is optional.
        let time = |claim: &str| principal.claims[claim].as_f64().map(|t| t as i64);
        if let Some(exp) = time("exp") {
            let verified = Verified {
                nbf: time("nbf"),
                exp,
                kid: header.kid,
                key,
                principal: principal.clone(),
            };
            self.verified.insert(token.to_string(), verified);
        }
        Ok(principal)
    }

    /// The principal of a token verified before, if it is still valid now (within the leeway)
    /// and the key that verified it is still the one the key set gives for its key id; None
    /// when the key set changed since (the token is verified again: a key removed from a JWKS
    /// stops its tokens at once).
    async fn reuse(&self, known: Verified) -> Result<Option<Principal>, Rejection> {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let leeway = self.leeway_seconds as i64;
        if now > known.exp + leeway {
            return Err(Rejection::Invalid(
                "token not accepted: ExpiredSignature".into(),
            ));
        }
        if known.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(Rejection::Invalid(
                "token not accepted: ImmatureSignature".into(),
            ));
        }
        let key = self
            .keys
            .key_for(known.kid.as_deref())
            .await
            .map_err(Rejection::Invalid)?;
        Ok(std::sync::Arc::ptr_eq(&key, &known.key).then_some(known.principal))
    }

    /// What a token verified with a key of this algorithm must satisfy: exp (required) and nbf
    /// within the leeway, and the configured issuer and audience (required when configured).
    fn validation(&self, algorithm: jsonwebtoken::Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = self.leeway_seconds;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            v.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                v.set_audience(&[audience]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }
}
