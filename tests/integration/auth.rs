//! Authentication with bearer JSON Web Tokens (`--auth jwt`): each signature algorithm with a key
//! file, the time, issuer and audience checks, the JWKS with key rotation, and the 401 answer.

use crate::common::jwt::{self, claims, now_plus, Signer};
use crate::common::{ContextServer, TestServer};
use jsonwebtoken::Algorithm;
use serde_json::json;

/// A GET of the entities with this token (none when None): status, headers and body text.
async fn get_entities(
    server: &TestServer,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = server.req(reqwest::Method::GET, "/entities?type=Building");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.expect("request");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.expect("body"))
}

/// Asserts a 401 with a ProblemDetails body and a Bearer challenge (`invalid_token` when a token
/// was sent), and that the body tells nothing of why.
async fn assert_unauthorized(server: &TestServer, token: Option<&str>) {
    let (status, headers, body) = get_entities(server, token).await;
    assert_eq!(status, 401, "{body}");
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"twinlink\""),
        "{challenge}"
    );
    assert_eq!(
        challenge.contains("error=\"invalid_token\""),
        token.is_some(),
        "{challenge}"
    );
    let problem: serde_json::Value = serde_json::from_str(&body).expect("ProblemDetails");
    assert_eq!(problem["type"], "about:blank");
    assert_eq!(problem["status"], 401);
    assert_eq!(problem["title"], "Unauthorized");
    for leak in [
        "expired",
        "audience",
        "issuer",
        "signature",
        "nbf",
        "Immature",
        "kid",
    ] {
        assert!(!body.contains(leak), "the 401 body tells why: {body}");
    }
}

async fn server_with_key(signer: &Signer) -> TestServer {
    let auth = jwt::key_file_auth(signer.public_file.clone());
    TestServer::start_with(move |s| s.auth = auth).await
}

#[actix_web::test]
async fn every_algorithm_verifies_with_its_key_file() {
    for algorithm in [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        let signer = Signer::of(algorithm);
        let server = server_with_key(&signer).await;
        let token = signer.sign(&claims("alice"));
        let (status, _, body) = get_entities(&server, Some(&token)).await;
        assert_eq!(status, 200, "{algorithm:?}: {body}");
        assert_unauthorized(&server, None).await;
        // A token of another algorithm is refused, whatever its claims.
        let other = if algorithm == Algorithm::RS256 {
            Algorithm::ES256
        } else {
            Algorithm::RS256
        };
        assert_unauthorized(&server, Some(&Signer::of(other).sign(&claims("alice")))).await;
    }
}

#[actix_web::test]
async fn the_probes_stay_open_and_the_api_is_closed() {
    let signer = Signer::of(Algorithm::ES256);
    let server = server_with_key(&signer).await;
    let root = server.base.trim_end_matches("/ngsi-ld/v1").to_string();
    for probe in ["/health", "/ready"] {
        let r = server
            .client
            .get(format!("{root}{probe}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{probe}");
    }
    assert_unauthorized(&server, None).await;
    assert_unauthorized(&server, Some("not-a-jwt")).await;
    let r = server
        .req(reqwest::Method::GET, "/entities?type=Building")
        .header("Authorization", "Basic YWxpY2U6c2VjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A write without a token changes nothing.
    let r = server
        .create(&json!({"id": "urn:ngsi-ld:Building:b1", "type": "Building"}))
        .await;
    assert_eq!(r.status(), 401);
}

#[actix_web::test]
async fn a_token_accepted_before_is_refused_once_it_expires() {
    let signer = Signer::of(Algorithm::RS256);
    let mut auth = jwt::key_file_auth(signer.public_file.clone());
    auth.leeway_seconds = 0;
    let server = TestServer::start_with(move |s| s.auth = auth).await;
    let mut c = claims("alice");
    c["exp"] = json!(now_plus(2));
    let token = signer.sign(&c);
    // Accepted twice (the second time from what the first verification remembered)...
    assert_eq!(get_entities(&server, Some(&token)).await.0, 200);
    assert_eq!(get_entities(&server, Some(&token)).await.0, 200);
    // ... and refused, the same text, once its exp has passed.
    let exp = c["exp"].as_i64().unwrap();
    while now_plus(0) <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_unauthorized(&server, Some(&token)).await;
}

#[actix_web::test]
async fn expired_early_and_foreign_tokens_are_refused() {
    let signer = Signer::of(Algorithm::RS256);
    let mut auth = jwt::key_file_auth(signer.public_file.clone());
    auth.leeway_seconds = 10;
    let server = TestServer::start_with(move |s| s.auth = auth).await;
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("alice");
        change(&mut c);
        signer.sign(&c)
    };
    // Within the skew: accepted.
    let late = with(&|c| c["exp"] = json!(now_plus(-5)));
    assert_eq!(get_entities(&server, Some(&late)).await.0, 200);
    let soon = with(&|c| c["nbf"] = json!(now_plus(5)));
    assert_eq!(get_entities(&server, Some(&soon)).await.0, 200);
    let refused = [
        with(&|c| c["exp"] = json!(now_plus(-60))),
        with(&|c| c["nbf"] = json!(now_plus(3600))),
        with(&|c| c["nbf"] = json!(now_plus(3600).to_string())),
        with(&|c| c["aud"] = json!("another-service")),
        with(&|c| c["iss"] = json!("https://elsewhere.test/")),
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        with(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        with(&|c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
    ];
    for token in refused {
        assert_unauthorized(&server, Some(&token)).await;
    }
    // HS256 signed with the RSA public key as the secret (algorithm confusion).
    let public = std::fs::read(&signer.public_file).unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims("mallory"),
        &jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    assert_unauthorized(&server, Some(&forged)).await;
}

#[actix_web::test]
async fn a_jwks_is_fetched_and_fetched_again_when_the_keys_rotate() {
    let idp = ContextServer::start();
    let first = Signer::of(Algorithm::ES256).with_kid("k1");
    let second = Signer::of(Algorithm::EdDSA).with_kid("k2");
    let serve = |signers: &[&Signer]| {
        let keys: Vec<_> = signers.iter().map(|s| s.jwk()).collect();
        idp.serve_raw(
            "/jwks.json",
            200,
            "application/json",
            json!({ "keys": keys }).to_string(),
            0,
        );
    };
    serve(&[&first]);
    // One token used throughout, so that its verification is remembered: a removed key must
    // still stop it.
    let kept = first.sign(&claims("a"));
    let url = idp.url("/jwks.json");
    let server = TestServer::start_with(move |s| {
        s.auth = twinlink::auth::AuthSettings {
            jwks_url: Some(url),
            key_file: None,
            ..jwt::key_file_auth(Default::default())
        }
    })
    .await;
    assert_eq!(get_entities(&server, Some(&kept)).await.0, 200);
    assert_eq!(get_entities(&server, Some(&kept)).await.0, 200);
    assert_eq!(
        get_entities(&server, Some(&first.sign(&claims("a"))))
            .await
            .0,
        200
    );
    assert_eq!(idp.hits("/jwks.json"), 1, "the key set is cached");
    // The provider rotates: k2 replaces k1. A token naming k2 makes the broker fetch again (once
    // the short refetch interval has passed), after which k1 is gone.
    serve(&[&second]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        get_entities(&server, Some(&second.sign(&claims("a"))))
            .await
            .0,
        200
    );
    assert_eq!(idp.hits("/jwks.json"), 2);
    assert_unauthorized(&server, Some(&first.sign(&claims("a")))).await;
    assert_unauthorized(&server, Some(&kept)).await;
    // A made-up key id does not make the broker fetch at every request.
    let hits = idp.hits("/jwks.json");
    for kid in ["x1", "x2", "x3"] {
        let token = Signer::of(Algorithm::ES256)
            .with_kid(kid)
            .sign(&claims("a"));
        assert_unauthorized(&server, Some(&token)).await;
    }
    assert!(
        idp.hits("/jwks.json") <= hits + 1,
        "refetches are rate-limited"
    );
}
