//! The access token's format (header and claims) and the published JWKS.

use crate::helpers::*;
use crate::jose::{now_secs, unb64, Jwt};

#[tokio::test]
async fn access_token_header_is_eddsa_at_jwt_with_a_published_kid() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let jwt = Jwt::parse(&s(&t, "access_token"));
    assert_eq!(jwt.header["alg"], "EdDSA");
    assert_eq!(jwt.header["typ"], "at+jwt");
    assert_eq!(s(&jwt.header, "kid"), app.kid().await);
    assert_eq!(unb64(&jwt.signature).len(), 64, "an Ed25519 signature");
}

#[tokio::test]
async fn access_token_claims_name_user_session_issuer_and_audience() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let claims = Jwt::parse(&s(&t, "access_token")).claims;
    assert_eq!(claims["iss"], app.config.issuer.as_str());
    assert_eq!(claims["aud"], app.config.audience.as_str(), "aud is one string");
    assert_eq!(claims["sub"], t["user"]["id"]);
    assert_eq!(claims["sid"], t["session_id"]);
    let iat = claims["iat"].as_i64().expect("iat");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!((iat - now_secs()).abs() <= 5, "iat {iat} is now");
    assert_eq!(exp - iat, 900, "default lifetime 15 minutes");
    assert!(!s(&claims, "jti").is_empty());
    assert!(claims["roles"].is_array(), "roles {claims}");
}

#[tokio::test]
async fn every_access_token_has_its_own_jti() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let refreshed = app.refresh_ok(&s(&t, "refresh_token")).await;
    let jti = |t: &serde_json::Value| s(&Jwt::parse(&s(t, "access_token")).claims, "jti");
    assert_ne!(jti(&t), jti(&refreshed));
}

#[tokio::test]
async fn jwks_publishes_public_ed25519_keys_only() {
    let app = spawn_app().await;
    let r = app.get("/.well-known/jwks.json").await;
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let jwks = json_ok(r).await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty());
    for k in keys {
        assert!(!s(k, "kid").is_empty());
        assert_eq!(k["alg"], "EdDSA");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kty"], "OKP");
        assert_eq!(k["crv"], "Ed25519");
        assert_eq!(unb64(&s(k, "x")).len(), 32, "an Ed25519 public key");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(k.get(private).is_none(), "private member {private} in {k}");
        }
    }
}
