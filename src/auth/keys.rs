//! The keys tokens are verified with: one key from a file, or the keys of a JSON Web Key Set
//! fetched from the identity provider, cached, and fetched again when a token names a key id the
//! cached set lacks (the provider rotated its keys) or the set is old.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fetched key set is fetched again after this long.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// A token with an unknown key id fetches the set again at most this often, so that made-up key
/// ids cannot make the broker hammer the identity provider.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(1);
/// Largest key set accepted.
const JWKS_MAX_BYTES: usize = 1024 * 1024;
/// Timeout of a key set fetch.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// One verification key and the one algorithm tokens signed with it must name (an RSA key only
/// verifies RS256, never HS256 with the public key as secret).
pub struct VerifyKey {
    /// The key.
    pub key: DecodingKey,
    /// Its algorithm.
    pub algorithm: Algorithm,
}

impl VerifyKey {
    /// Reads a key file: a PEM public key (RSA: RS256, P-256: ES256, Ed25519: EdDSA), or else the
    /// HS256 secret, its trailing line break removed.
    pub fn from_file(path: &Path) -> Result<VerifyKey, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the JWT key file {}: {e}", path.display()))?;
        if !bytes.starts_with(b"-----BEGIN") {
            let secret = bytes.trim_ascii_end();
            if secret.is_empty() {
                return Err(format!("the JWT key file {} is empty", path.display()));
            }
            return Ok(VerifyKey {
                key: DecodingKey::from_secret(secret).map_err(|e| {
                    format!(
                        "the JWT key file {} is no HS256 secret: {e}",
                        path.display()
                    )
                })?,
                algorithm: Algorithm::HS256,
            });
        }
        let attempts: [(ReadPem, Algorithm); 3] = [
            (DecodingKey::from_rsa_pem, Algorithm::RS256),
            (DecodingKey::from_ec_pem, Algorithm::ES256),
            (DecodingKey::from_ed_pem, Algorithm::EdDSA),
        ];
        attempts
            .into_iter()
            .find_map(|(read, algorithm)| read(&bytes).ok().map(|key| VerifyKey { key, algorithm }))
            .ok_or_else(|| {
                format!(
                    "the JWT key file {} is not an RSA, P-256 or Ed25519 public key in PEM",
                    path.display()
                )
            })
    }
}

/// A reader of a PEM public key of one type.
type ReadPem = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// Where verification keys come from.
pub enum KeySource {
    /// One configured key, whatever the token's key id.
    File(Arc<VerifyKey>),
    /// The keys of a JWKS, by key id.
    Jwks(Box<Jwks>),
}

impl KeySource {
    /// The key for a token with this key id (`kid` header).
    pub async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, String> {
        match self {
            KeySource::File(key) => Ok(key.clone()),
            KeySource::Jwks(jwks) => jwks.key_for(kid).await,
        }
    }
}

/// The cached keys of a key set and when they were fetched.
#[derive(Default)]
struct Cached {
    keys: HashMap<String, Arc<VerifyKey>>,
    /// The key of a set that holds a single key, for tokens that name no key id.
    only: Option<Arc<VerifyKey>>,
    fetched: Option<Instant>,
}

/// A JSON Web Key Set at a URL, cached.
pub struct Jwks {
    url: url::Url,
    http: crate::outbound::Client,
    cached: tokio::sync::RwLock<Cached>,
    /// Held while fetching, so that concurrent misses fetch once.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// The key set at `url`, fetched with `http` when first needed.
    pub fn new(url: &str, http: crate::outbound::Client) -> Result<Jwks, String> {
        let url = url::Url::parse(url).map_err(|e| format!("--jwks-url {url}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("--jwks-url {url}: not an http(s) URL"));
        }
        // A literal address the policy refuses would fail every fetch, so every token: stop
        // the start-up instead. A name is checked when it is resolved, at each fetch.
        http.check_literal(&url)
            .map_err(|why| format!("--jwks-url {url}: {why}"))?;
        Ok(Jwks {
            url,
            http,
            cached: Default::default(),
            fetching: Default::default(),
        })
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, String> {
        if let Some(key) = self.cached.read().await.fresh(kid) {
            return Ok(key);
        }
        let _fetching = self.fetching.lock().await;
        {
            let cached = self.cached.read().await;
            if let Some(key) = cached.fresh(kid) {
                return Ok(key);
            }
            if cached
                .fetched
                .is_some_and(|at| at.elapsed() < JWKS_MIN_REFETCH)
            {
                return cached.lookup(kid);
            }
        }
        match self.fetch().await {
            Ok(fetched) => *self.cached.write().await = fetched,
            Err(e) => tracing::warn!(url = %self.url, "cannot fetch the JWKS: {e}"),
        }
        self.cached.read().await.lookup(kid)
    }

    async fn fetch(&self) -> Result<Cached, String> {
        let response = self
            .http
            .request(reqwest::Method::GET, self.url.clone())?
            .timeout(JWKS_TIMEOUT)
            .send()
            .await
            .map_err(|e| crate::error::with_causes(&e))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n as usize > JWKS_MAX_BYTES)
        {
            return Err("the key set is too large".into());
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > JWKS_MAX_BYTES {
            return Err("the key set is too large".into());
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let mut usable: Vec<(Option<String>, Arc<VerifyKey>)> = Vec::new();
        for jwk in &set.keys {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let algorithm = match jwk.common.key_algorithm {
                Some(alg) => Algorithm::from_str(&alg.to_string()).ok(),
                None => default_algorithm(&jwk.algorithm),
            };
            let Some(algorithm) = algorithm.filter(|a| ACCEPTED.contains(a)) else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => usable.push((
                    jwk.common.key_id.clone(),
                    Arc::new(VerifyKey { key, algorithm }),
                )),
                Err(e) => {
                    tracing::warn!(url = %self.url, kid = ?jwk.common.key_id, "unusable key in the JWKS: {e}")
                }
            }
        }
        Ok(Cached {
            only: (usable.len() == 1).then(|| usable[0].1.clone()),
            keys: usable
                .into_iter()
                .filter_map(|(kid, key)| Some((kid?, key)))
                .collect(),
            fetched: Some(Instant::now()),
        })
    }
}

/// The algorithms a key set's keys may verify: public-key signatures only (a shared secret has no
/// business in a published key set).
const ACCEPTED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// The algorithm of a key that names none, by its type.
fn default_algorithm(params: &AlgorithmParameters) -> Option<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

impl Cached {
    /// The key, when the set is young enough to be trusted without fetching.
    fn fresh(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        self.fetched
            .filter(|at| at.elapsed() < JWKS_MAX_AGE)
            .and_then(|_| self.lookup(kid).ok())
    }

    fn lookup(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, String> {
        match kid {
            Some(kid) => self
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| format!("no key with id {kid:?} in the JWKS")),
            None => self
                .only
                .clone()
                .ok_or_else(|| "the token names no key id and the JWKS has several keys".into()),
        }
    }
}
