//! Tokens for the authentication tests: signers over the test-only keys in `tests/fixtures/jwt`
//! (made with openssl for these tests; they protect nothing) and the claims tests start from.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;
use twinlink::auth::{AuthMode, AuthSettings};

/// The issuer the test servers expect.
pub const ISSUER: &str = "https://idp.test/realms/city";
/// The audience the test servers expect.
pub const AUDIENCE: &str = "twinlink";

/// A file of `tests/fixtures/jwt`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// Seconds since the epoch, shifted by `delta`.
pub fn now_plus(delta: i64) -> i64 {
    chrono::Utc::now().timestamp() + delta
}

/// Claims a test server accepts: this subject, the expected issuer and audience, five minutes left.
pub fn claims(subject: &str) -> Value {
    json!({"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "exp": now_plus(300)})
}

/// Signs tokens with one of the test keys.
pub struct Signer {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: Option<String>,
    /// The file of the matching verification key (the secret itself for HS256).
    pub public_file: PathBuf,
}

impl Signer {
    /// The signer of an algorithm: RS256, ES256, EdDSA or HS256.
    pub fn of(algorithm: Algorithm) -> Signer {
        let read = |name: &str| std::fs::read(fixture(name)).expect("test key");
        let (key, public) = match algorithm {
            Algorithm::RS256 => (
                EncodingKey::from_rsa_pem(&read("rsa-private.pem")).unwrap(),
                "rsa-public.pem",
            ),
            Algorithm::ES256 => (
                EncodingKey::from_ec_pem(&read("ec-private.pem")).unwrap(),
                "ec-public.pem",
            ),
            Algorithm::EdDSA => (
                EncodingKey::from_ed_pem(&read("ed-private.pem")).unwrap(),
                "ed-public.pem",
            ),
            Algorithm::HS256 => (
                EncodingKey::from_secret(read("hs256.secret").trim_ascii_end()).unwrap(),
                "hs256.secret",
            ),
            other => panic!("no test key for {other:?}"),
        };
        Signer {
            key,
            algorithm,
            kid: None,
            public_file: fixture(public),
        }
    }

    /// The same signer naming this key id in its tokens.
    pub fn with_kid(mut self, kid: &str) -> Signer {
        self.kid = Some(kid.to_string());
        self
    }

    /// A token with these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }

    /// The public key as a JWK (with the key id and algorithm), for a test JWKS.
    pub fn jwk(&self) -> Value {
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, self.algorithm)
            .expect("JWK of the test key");
        jwk.common.key_id = self.kid.clone();
        serde_json::to_value(jwk).unwrap()
    }
}

/// Authentication settings that verify with this key file and expect [`ISSUER`] and [`AUDIENCE`].
pub fn key_file_auth(file: PathBuf) -> AuthSettings {
    AuthSettings {
        mode: AuthMode::Jwt,
        key_file: Some(file),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..AuthSettings::default()
    }
}
