//! `POST /v1/auth/logout` and `POST /v1/auth/logout-all`.

use serde_json::{json, Value};

use crate::helpers::*;

/// Registers and logs in twice: two sessions (devices) of one user.
async fn two_devices(app: &TestApp) -> (Value, Value) {
    let first = app.signup_and_login(EMAIL).await;
    let second = app.login_ok(EMAIL).await;
    (first, second)
}

async fn assert_revoked(app: &TestApp, t: &Value) {
    assert_problem(app.refresh(&s(t, "refresh_token")).await, 401, "session_revoked").await;
    assert_problem(app.me(&s(t, "access_token")).await, 401, "session_revoked").await;
}

async fn assert_alive(app: &TestApp, t: &Value) {
    json_ok(app.me(&s(t, "access_token")).await).await;
}

#[tokio::test]
async fn logout_with_a_refresh_token_revokes_its_session() {
    let app = spawn_app().await;
    let (t, other) = two_devices(&app).await;
    assert_status(app.logout_with_refresh_token(&s(&t, "refresh_token")).await, 204).await;
    assert_revoked(&app, &t).await;
    assert_alive(&app, &other).await;
}

#[tokio::test]
async fn logout_with_a_bearer_token_revokes_its_session() {
    let app = spawn_app().await;
    let (t, other) = two_devices(&app).await;
    assert_status(app.logout_with_bearer(&s(&t, "access_token")).await, 204).await;
    assert_revoked(&app, &t).await;
    assert_alive(&app, &other).await;
}

#[tokio::test]
async fn after_logout_even_a_grace_window_replay_is_refused() {
    let app = spawn_app().await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.refresh_ok(&s(&a, "refresh_token")).await;
    assert_status(app.logout_with_refresh_token(&s(&b, "refresh_token")).await, 204).await;
    assert_problem(app.refresh(&s(&a, "refresh_token")).await, 401, "session_revoked").await;
    assert_revoked(&app, &b).await;
}

#[tokio::test]
async fn logout_is_idempotent() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    for _ in 0..2 {
        assert_status(app.logout_with_refresh_token(&s(&t, "refresh_token")).await, 204).await;
        assert_status(app.logout_with_bearer(&s(&t, "access_token")).await, 204).await;
    }
    assert_revoked(&app, &t).await;
}

#[tokio::test]
async fn logout_with_unknown_or_invalid_tokens_answers_204() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    for rt in ["tsr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "garbage"] {
        assert_status(app.logout_with_refresh_token(rt).await, 204).await;
    }
    for at in ["garbage", "a.b.c"] {
        assert_status(app.logout_with_bearer(at).await, 204).await;
    }
    assert_alive(&app, &t).await;
}

#[tokio::test]
async fn logout_all_revokes_every_session_including_the_current_one() {
    let app = spawn_app().await;
    let (first, second) = two_devices(&app).await;
    let r = app.logout_all(&s(&first, "access_token"), Some("all")).await;
    assert_status(r, 204).await;
    assert_revoked(&app, &first).await;
    assert_revoked(&app, &second).await;
}

#[tokio::test]
async fn logout_all_scope_others_keeps_the_current_session() {
    let app = spawn_app().await;
    let (first, second) = two_devices(&app).await;
    let r = app.logout_all(&s(&first, "access_token"), Some("others")).await;
    assert_status(r, 204).await;
    assert_revoked(&app, &second).await;
    assert_alive(&app, &first).await;
    let refreshed = app.refresh_ok(&s(&first, "refresh_token")).await;
    assert_eq!(
        app.session_ids(&s(&refreshed, "access_token")).await,
        vec![s(&first, "session_id")]
    );
}

#[tokio::test]
async fn logout_all_defaults_to_all_with_an_empty_object() {
    let app = spawn_app().await;
    let (first, second) = two_devices(&app).await;
    let r = app
        .post_authed(
            "/v1/auth/logout-all",
            &s(&first, "access_token"),
            Some(&json!({})),
        )
        .await;
    assert_status(r, 204).await;
    assert_revoked(&app, &first).await;
    assert_revoked(&app, &second).await;
}

#[tokio::test]
async fn logout_all_accepts_an_empty_body_without_content_type() {
    let app = spawn_app().await;
    let (first, second) = two_devices(&app).await;
    assert_status(app.logout_all(&s(&first, "access_token"), None).await, 204).await;
    assert_revoked(&app, &first).await;
    assert_revoked(&app, &second).await;
}

#[tokio::test]
async fn logout_all_with_an_unknown_scope_is_422_and_revokes_nothing() {
    let app = spawn_app().await;
    let (first, second) = two_devices(&app).await;
    let r = app.logout_all(&s(&first, "access_token"), Some("everyone")).await;
    assert_validation(r, &["scope"]).await;
    assert_alive(&app, &first).await;
    assert_alive(&app, &second).await;
}

#[tokio::test]
async fn logout_all_requires_a_valid_token() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let r = app.post_raw("/v1/auth/logout-all", None, "").await;
    assert_problem(r, 401, "invalid_token").await;
    let r = app.logout_all("garbage", None).await;
    assert_problem(r, 401, "invalid_token").await;
    assert_alive(&app, &t).await;
}
