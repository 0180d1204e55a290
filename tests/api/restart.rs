//! Restarting on the same database keeps the signing key, sessions and tokens.

use crate::helpers::*;

#[tokio::test]
async fn a_restart_keeps_the_key_and_every_token_working() {
    let app = spawn_app().await;
    let kid = app.kid().await;
    let t = app.signup_and_login(EMAIL).await;
    let (config, storage) = app.stop().await;

    let app = start(config, storage).await;
    assert_eq!(app.kid().await, kid, "the signing key survives a restart");
    let me = json_ok(app.me(&s(&t, "access_token")).await).await;
    assert_eq!(me["session_id"], t["session_id"]);
    let r = app.refresh_ok(&s(&t, "refresh_token")).await;
    assert_eq!(r["session_id"], t["session_id"]);
    assert_problem(app.register(EMAIL).await, 409, "email_taken").await;
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    assert_status(app.logout_with_refresh_token(&s(&t, "refresh_token")).await, 204).await;
    let (config, storage) = app.stop().await;

    let app = start(config, storage).await;
    assert_problem(app.refresh(&s(&t, "refresh_token")).await, 401, "session_revoked").await;
    assert_problem(app.me(&s(&t, "access_token")).await, 401, "session_revoked").await;
}

#[tokio::test]
async fn a_restart_with_another_issuer_refuses_old_tokens() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let (mut config, storage) = app.stop().await;
    config.issuer = "https://new-issuer.example".into();

    let app = start(config, storage).await;
    assert_problem(app.me(&s(&t, "access_token")).await, 401, "invalid_token").await;
    // The session itself is fine: its refresh token gets a token for the new issuer.
    let r = app.refresh_ok(&s(&t, "refresh_token")).await;
    json_ok(app.me(&s(&r, "access_token")).await).await;
}

#[tokio::test]
async fn a_restart_with_another_audience_refuses_old_tokens() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let (mut config, storage) = app.stop().await;
    config.audience = "another-audience".into();

    let app = start(config, storage).await;
    assert_problem(app.me(&s(&t, "access_token")).await, 401, "invalid_token").await;
}
