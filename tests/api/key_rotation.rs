//! Signing-key rotation: `tessera rotate-key` (here: the function behind it) retires the active
//! key; tokens it signed keep working until they expire, and an instance that has not reloaded
//! yet accepts tokens signed with the new key the first time it sees one.

use std::collections::HashSet;

use serde_json::Value;
use tessera::domain::{Clock, SystemClock};

use crate::helpers::*;
use crate::jose;

async fn rotate_key(app: &TestApp) -> String {
    let store = tessera::store::connect(&app.config.database_url, 1)
        .await
        .expect("store");
    tessera::service::KeyOps {
        store: store.as_ref(),
        alerts: &tessera::alerts::NoAlerts,
        master: &Default::default(),
        admin: None,
    }
    .rotate(
        app.config.signing_alg,
        SystemClock.now(),
        SystemClock.now(),
        "test",
    )
    .await
    .expect("rotate")
    .kid
}

fn kids(jwks: &Value) -> HashSet<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| s(k, "kid"))
        .collect()
}

#[tokio::test]
async fn a_rotated_key_keeps_verifying_and_every_instance_learns_the_new_one() {
    // `before` loaded the keys before the rotation and has not reloaded since.
    let before = spawn_app().await;
    let old_kid = before.kid().await;
    let old_tokens = before.signup_and_login(EMAIL).await;

    let new_kid = rotate_key(&before).await;
    assert_ne!(new_kid, old_kid);

    // `after` starts now: it signs with the new key and still verifies the old one.
    let after = start(before.config.clone(), std::sync::Arc::clone(&before.storage)).await;
    assert_eq!(
        kids(&after.jwks().await),
        HashSet::from([old_kid.clone(), new_kid.clone()])
    );
    let new_tokens = json_ok(after.login(EMAIL).await).await;
    assert_eq!(
        jose::Jwt::parse(&s(&new_tokens, "access_token")).header["kid"],
        new_kid.as_str()
    );
    assert_status(after.me(&s(&old_tokens, "access_token")).await, 200).await;

    // `before` meets the new kid for the first time: it reloads and accepts it.
    assert_status(before.me(&s(&new_tokens, "access_token")).await, 200).await;
    assert_eq!(
        kids(&before.jwks().await),
        HashSet::from([old_kid, new_kid.clone()])
    );
    // ... and from then on signs with the new key too.
    let refreshed = before.refresh_ok(&s(&old_tokens, "refresh_token")).await;
    assert_eq!(
        jose::Jwt::parse(&s(&refreshed, "access_token")).header["kid"],
        new_kid.as_str()
    );
}

#[tokio::test]
async fn unknown_kids_are_still_refused_after_the_reload() {
    let app = spawn_app().await;
    let tokens = app.signup_and_login(EMAIL).await;
    let mut jwt = jose::Jwt::parse(&s(&tokens, "access_token"));
    jwt.header["kid"] = "no-such-key".into();
    let forged = jwt.encode();
    assert_problem(app.me(&forged).await, 401, "invalid_token").await;
    assert_problem(app.me(&forged).await, 401, "invalid_token").await;
}
