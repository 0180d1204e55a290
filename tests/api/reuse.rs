//! Reuse detection: the grace window for the immediate predecessor, and revocation of the
//! whole session for anything else.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// Sleeps just past a 1 s grace window.
async fn outlast_one_second_grace() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

async fn spawn_with_grace(grace: Duration) -> TestApp {
    spawn_app_with(|c| c.reuse_grace = grace).await
}

/// Asserts that every token of the session is dead: refresh tokens and access tokens alike.
async fn assert_session_revoked(app: &TestApp, refresh_tokens: &[&str], access_tokens: &[&str]) {
    for rt in refresh_tokens {
        assert_problem(app.refresh(rt).await, 401, "session_revoked").await;
    }
    for at in access_tokens {
        assert_problem(app.me(at).await, 401, "session_revoked").await;
    }
}

#[tokio::test]
async fn replaying_the_predecessor_within_grace_returns_the_identical_successor() {
    let app = spawn_app().await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.refresh_ok(&s(&a, "refresh_token")).await;
    for _ in 0..2 {
        let replay = app.refresh_ok(&s(&a, "refresh_token")).await;
        assert_eq!(
            replay["refresh_token"], b["refresh_token"],
            "byte-identical successor"
        );
        assert_eq!(replay["session_id"], a["session_id"]);
        json_ok(app.me(&s(&replay, "access_token")).await).await;
    }
    // The chain did not fork: the successor is still the live token.
    let c = app.refresh_ok(&s(&b, "refresh_token")).await;
    assert_eq!(c["session_id"], a["session_id"]);
}

#[tokio::test]
async fn replaying_the_predecessor_after_grace_is_reuse_and_revokes_the_session() {
    let app = spawn_with_grace(Duration::from_secs(1)).await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.refresh_ok(&s(&a, "refresh_token")).await;
    outlast_one_second_grace().await;
    assert_problem(
        app.refresh(&s(&a, "refresh_token")).await,
        401,
        "refresh_token_reused",
    )
    .await;
    assert_session_revoked(
        &app,
        &[&s(&b, "refresh_token"), &s(&a, "refresh_token")],
        &[&s(&a, "access_token"), &s(&b, "access_token")],
    )
    .await;
}

#[tokio::test]
async fn replaying_an_older_ancestor_is_reuse_even_inside_the_window() {
    let app = spawn_app().await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.refresh_ok(&s(&a, "refresh_token")).await;
    let c = app.refresh_ok(&s(&b, "refresh_token")).await;
    assert_problem(
        app.refresh(&s(&a, "refresh_token")).await,
        401,
        "refresh_token_reused",
    )
    .await;
    assert_session_revoked(
        &app,
        &[&s(&c, "refresh_token"), &s(&b, "refresh_token")],
        &[&s(&c, "access_token")],
    )
    .await;
}

#[tokio::test]
async fn grace_zero_treats_any_second_presentation_as_reuse() {
    let app = spawn_with_grace(Duration::ZERO).await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.refresh_ok(&s(&a, "refresh_token")).await;
    assert_problem(
        app.refresh(&s(&a, "refresh_token")).await,
        401,
        "refresh_token_reused",
    )
    .await;
    assert_session_revoked(&app, &[&s(&b, "refresh_token")], &[&s(&b, "access_token")]).await;
}

#[tokio::test]
async fn reuse_revokes_only_the_affected_session() {
    let app = spawn_with_grace(Duration::ZERO).await;
    let stolen = app.signup_and_login(EMAIL).await;
    let other: Value = app.login_ok(EMAIL).await;
    app.refresh_ok(&s(&stolen, "refresh_token")).await;
    assert_problem(
        app.refresh(&s(&stolen, "refresh_token")).await,
        401,
        "refresh_token_reused",
    )
    .await;
    // The user's other device is untouched.
    json_ok(app.me(&s(&other, "access_token")).await).await;
    let rotated = app.refresh_ok(&s(&other, "refresh_token")).await;
    assert_eq!(
        app.session_ids(&s(&rotated, "access_token")).await,
        vec![s(&other, "session_id")]
    );
}
