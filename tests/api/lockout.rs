//! The per-account limit on failed logins: a lock after too many failures (for unknown emails
//! exactly as for real ones), its cool-down doubling when locks come in a row, and the owner
//! getting through from a device that holds a live session.

use std::time::Duration;

use reqwest::Response;
use serde_json::json;

use crate::helpers::*;

const ATTACKED: &str = "attacked@example.com";

async fn locked_app() -> TestApp {
    spawn_app_with(|c| {
        c.lockout_threshold = 3;
        c.lockout_window = Duration::from_secs(60);
        c.lockout_cooldown = Duration::from_secs(2);
    })
    .await
}

async fn fail(app: &TestApp, email: &str, times: usize) {
    for _ in 0..times {
        assert_problem(
            app.login_with(email, "wrong password").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
}

/// Asserts `429 rate_limited` with a `Retry-After` within `seconds`.
async fn assert_locked(r: Response, seconds: std::ops::RangeInclusive<u64>) {
    let retry_after: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(seconds.contains(&retry_after), "Retry-After {retry_after}");
    assert_problem(r, 429, "rate_limited").await;
}

async fn login_holding(app: &TestApp, access_token: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .bearer_auth(access_token)
        .json(&json!({"email": ATTACKED, "password": PASSWORD}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn too_many_failures_lock_the_account_until_the_cool_down_ends() {
    let app = locked_app().await;
    assert_status(app.register(ATTACKED).await, 201).await;
    fail(&app, ATTACKED, 3).await;
    // Even the right password is refused now, before any hashing.
    assert_locked(app.login(ATTACKED).await, 1..=2).await;
    assert_locked(app.login_with(ATTACKED, "wrong password").await, 1..=2).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    app.login_ok(ATTACKED).await;
    // The successful login cleared the count: two more failures do not lock.
    fail(&app, ATTACKED, 2).await;
    app.login_ok(ATTACKED).await;
}

#[tokio::test]
async fn an_unknown_email_locks_exactly_like_a_real_one() {
    let app = locked_app().await;
    fail(&app, "nobody@example.com", 3).await;
    assert_locked(app.login("nobody@example.com").await, 1..=2).await;
    // Other accounts are not affected.
    app.signup_and_login("bystander@example.com").await;
}

#[tokio::test]
async fn locks_in_a_row_last_twice_as_long() {
    let app = locked_app().await;
    assert_status(app.register(ATTACKED).await, 201).await;
    fail(&app, ATTACKED, 3).await;
    assert_locked(app.login(ATTACKED).await, 1..=2).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    fail(&app, ATTACKED, 3).await;
    assert_locked(app.login(ATTACKED).await, 3..=4).await;
}

#[tokio::test]
async fn a_device_holding_a_live_session_signs_in_through_a_lock() {
    let app = locked_app().await;
    let owner = app.signup_and_login(ATTACKED).await;
    let stranger = app.signup_and_login("stranger@example.com").await;
    let revoked = app.login_ok(ATTACKED).await;
    assert_status(
        app.logout_with_refresh_token(&s(&revoked, "refresh_token")).await,
        204,
    )
    .await;
    fail(&app, ATTACKED, 3).await;
    assert_locked(app.login(ATTACKED).await, 1..=2).await;

    // Not through a revoked session's token, another account's, or garbage.
    for held in [
        s(&revoked, "access_token"),
        s(&stranger, "access_token"),
        "garbage".to_owned(),
    ] {
        assert_locked(login_holding(&app, &held).await, 1..=2).await;
    }
    // The owner's device, with its live session, gets in (with the right password only).
    let t = json_ok(login_holding(&app, &s(&owner, "access_token")).await).await;
    json_ok(app.me(&s(&t, "access_token")).await).await;
    // The owner's sessions worked throughout.
    json_ok(app.me(&s(&owner, "access_token")).await).await;
    app.refresh_ok(&s(&owner, "refresh_token")).await;
}

#[tokio::test]
async fn a_zero_threshold_never_locks() {
    let app = spawn_app_with(|c| c.lockout_threshold = 0).await;
    assert_status(app.register(ATTACKED).await, 201).await;
    fail(&app, ATTACKED, 12).await;
    app.login_ok(ATTACKED).await;
}
