//! Discovery: RFC 8414 metadata at `/.well-known/oauth-authorization-server`, the same document
//! at `/.well-known/openid-configuration`, pointing at the JWKS that verifies our tokens.

use serde_json::Value;

use crate::helpers::*;
use crate::jose;

const PATHS: [&str; 2] = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
];

#[tokio::test]
async fn both_documents_name_the_issuer_and_the_jwks_that_verifies_our_tokens() {
    let app = spawn_app_with(|c| c.issuer = "https://auth.example.com".into()).await;
    let r = app.get(PATHS[0]).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        r.headers()
    );
    assert!(r.headers().contains_key("cache-control"));
    let metadata = json_ok(r).await;
    assert_eq!(
        json_ok(app.get(PATHS[1]).await).await,
        metadata,
        "the same document"
    );

    assert_eq!(metadata["issuer"], "https://auth.example.com");
    assert_eq!(
        metadata["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(metadata["response_types_supported"], serde_json::json!([]));
    assert_eq!(metadata["grant_types_supported"], serde_json::json!([]));
    // No OAuth endpoint Tessera does not have.
    for absent in [
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "userinfo_endpoint",
    ] {
        assert!(metadata.get(absent).is_none(), "{absent} in {metadata}");
    }
    let endpoints = &metadata["tessera_endpoints"];
    assert_eq!(endpoints["login"], "https://auth.example.com/v1/auth/login");
    assert_eq!(endpoints["refresh"], "https://auth.example.com/v1/auth/refresh");
    assert_eq!(endpoints["logout"], "https://auth.example.com/v1/auth/logout");

    // The JWKS it points to (on our own address here) verifies a token's key, whose `alg` is
    // among those the document lists, and the token's `iss` is the document's `issuer`.
    let tokens = app.signup_and_login(EMAIL).await;
    let jwt = jose::Jwt::parse(&s(&tokens, "access_token"));
    assert_eq!(jwt.claims["iss"], metadata["issuer"]);
    // A verifier given the issuer alone learns the audience here.
    assert_eq!(jwt.claims["aud"], metadata["tessera_audience"]);
    let jwks = app.jwks().await;
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == jwt.header["kid"])
        .expect("the token's key is published");
    let algs: Vec<&Value> = metadata["tessera_access_token_signing_alg_values_supported"]
        .as_array()
        .expect("algorithms")
        .iter()
        .collect();
    assert_eq!(algs, vec![&key["alg"]]);
    assert_eq!(jwt.header["alg"], key["alg"]);
}

#[tokio::test]
async fn the_metadata_is_read_only() {
    let app = spawn_app().await;
    for path in PATHS {
        let r = app.post_json(path, &serde_json::json!({})).await;
        assert_problem(r, 405, "method_not_allowed").await;
    }
}
