//! Every signing algorithm (`TESSERA_SIGNING_ALG`) end to end: the JWKS carries the right key
//! type, tokens verify on our endpoints, the algorithm is pinned to the key, rotation works,
//! and changing the algorithm is a rotation that old tokens survive.

use std::sync::Arc;

use serde_json::{json, Value};
use tessera::config::SigningAlg;
use tessera::domain::{Clock, SystemClock};

use crate::helpers::*;
use crate::jose;

/// `kty` and `crv` each algorithm's key must be published with.
fn key_type(alg: SigningAlg) -> (&'static str, Option<&'static str>) {
    match alg {
        SigningAlg::EdDSA | SigningAlg::Ed25519 => ("OKP", Some("Ed25519")),
        SigningAlg::ES256 => ("EC", Some("P-256")),
        SigningAlg::RS256 => ("RSA", None),
    }
}

fn published(jwks: &Value) -> Vec<(String, String)> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| (s(k, "kid"), s(k, "alg")))
        .collect()
}

#[tokio::test]
async fn every_algorithm_signs_publishes_verifies_and_rotates() {
    for alg in SigningAlg::ALL {
        let app = spawn_app_with(|c| c.signing_alg = alg).await;
        let jwks = app.jwks().await;
        let key = &jwks["keys"][0];
        let (kty, crv) = key_type(alg);
        assert_eq!(key["kty"], kty, "{alg}: {jwks}");
        assert_eq!(key["crv"].as_str(), crv, "{alg}: {jwks}");
        assert_eq!(key["alg"], alg.as_str());
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none(), "{alg}: never a private part");

        let tokens = app.signup_and_login(EMAIL).await;
        let access = s(&tokens, "access_token");
        let jwt = jose::Jwt::parse(&access);
        assert_eq!(jwt.header["alg"], alg.as_str());
        assert_eq!(jwt.header["kid"], key["kid"]);
        assert_eq!(app.me(&access).await.status(), 200, "{alg}");

        // The same token claiming each other algorithm: refused, whatever the signature.
        for other in SigningAlg::ALL.into_iter().filter(|o| *o != alg) {
            let mut forged = jwt.clone();
            forged.header["alg"] = json!(other.as_str());
            assert_problem(app.me(&forged.encode()).await, 401, "invalid_token").await;
        }

        // Rotation: a new key of the same algorithm signs; the old one's token still works.
        let store = tessera::store::connect(&app.config.database_url, 1)
            .await
            .expect("store");
        let new_kid = tessera::service::KeyOps {
            store: store.as_ref(),
            alerts: &tessera::alerts::NoAlerts,
            master: &Default::default(),
            admin: None,
        }
        .rotate(alg, SystemClock.now(), SystemClock.now(), "test")
        .await
        .expect("rotate")
        .kid;
        let after = start(app.config.clone(), Arc::clone(&app.storage)).await;
        let keys = published(&after.jwks().await);
        assert_eq!(keys.len(), 2, "{alg}: {keys:?}");
        assert!(keys.iter().all(|(_, a)| a == alg.as_str()), "{keys:?}");
        assert_eq!(after.me(&access).await.status(), 200, "{alg}: old key verifies");
        let fresh = s(&after.login_ok(EMAIL).await, "access_token");
        assert_eq!(jose::Jwt::parse(&fresh).header["kid"], new_kid.as_str());
        assert_eq!(after.me(&fresh).await.status(), 200, "{alg}");
    }
}

#[tokio::test]
async fn changing_the_algorithm_rotates_and_old_tokens_keep_working() {
    let first = spawn_app().await;
    let eddsa = s(&first.signup_and_login(EMAIL).await, "access_token");
    let (config, storage) = first.stop().await;
    let mut held = vec![(SigningAlg::EdDSA, eddsa)];
    let mut config = config;
    for alg in [SigningAlg::ES256, SigningAlg::RS256, SigningAlg::Ed25519] {
        config.signing_alg = alg;
        let app = start(config.clone(), Arc::clone(&storage)).await;
        let keys = published(&app.jwks().await);
        assert_eq!(keys.len(), held.len() + 1, "{alg}: {keys:?}");
        assert_eq!(
            keys.last().map(|(_, a)| a.as_str()),
            Some(alg.as_str()),
            "{keys:?}"
        );
        let token = s(&app.login_ok(EMAIL).await, "access_token");
        assert_eq!(jose::Jwt::parse(&token).header["alg"], alg.as_str());
        held.push((alg, token));
        for (signed_by, token) in &held {
            assert_eq!(app.me(token).await.status(), 200, "{signed_by} token under {alg}");
        }
        // Discovery lists every algorithm a verifier must accept now.
        let metadata = json_ok(app.get("/.well-known/oauth-authorization-server").await).await;
        let mut expected: Vec<&str> = held.iter().map(|(a, _)| a.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(
            metadata["tessera_access_token_signing_alg_values_supported"],
            json!(expected)
        );
        app.stop().await;
    }
    // Same algorithm again: no rotation.
    let app = start(config, storage).await;
    assert_eq!(published(&app.jwks().await).len(), held.len());
}
