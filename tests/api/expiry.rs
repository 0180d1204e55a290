//! Lifetimes: access tokens expire, refresh tokens expire and slide, sessions cap both.

use std::time::Duration;

use crate::helpers::*;
use crate::jose::Jwt;

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test]
async fn an_expired_access_token_answers_token_expired() {
    // Two seconds, not one: `exp` is in whole seconds, so a token issued late in a second
    // lives as little as the lifetime minus that second; with one, the `me` calls right after
    // login and refresh failed now and then on a busy machine.
    let app = spawn_app_with(|c| c.access_ttl = Duration::from_secs(2)).await;
    let t = app.signup_and_login(EMAIL).await;
    assert_eq!(t["expires_in"], 2);
    json_ok(app.me(&s(&t, "access_token")).await).await;
    sleep_ms(3050).await;
    assert_problem(app.me(&s(&t, "access_token")).await, 401, "token_expired").await;
    // A refresh helps, as the code promises.
    let r = app.refresh_ok(&s(&t, "refresh_token")).await;
    json_ok(app.me(&s(&r, "access_token")).await).await;
}

#[tokio::test]
async fn an_expired_refresh_token_answers_refresh_token_expired() {
    let app = spawn_app_with(|c| c.refresh_ttl = Duration::from_secs(1)).await;
    let t = app.signup_and_login(EMAIL).await;
    assert_eq!(t["refresh_token_expires_in"], 1);
    sleep_ms(1500).await;
    assert_problem(
        app.refresh(&s(&t, "refresh_token")).await,
        401,
        "refresh_token_expired",
    )
    .await;
}

#[tokio::test]
async fn the_refresh_lifetime_slides_on_each_rotation() {
    let app = spawn_app_with(|c| c.refresh_ttl = Duration::from_secs(2)).await;
    let t = app.signup_and_login(EMAIL).await;
    sleep_ms(1200).await;
    let r = app.refresh_ok(&s(&t, "refresh_token")).await;
    assert_eq!(r["refresh_token_expires_in"], 2);
    sleep_ms(1200).await;
    // 2.4 s after login, past the first token's lifetime, the rotated one is still good.
    app.refresh_ok(&s(&r, "refresh_token")).await;
}

#[tokio::test]
async fn the_session_lifetime_caps_refresh_token_expiry() {
    let app = spawn_app_with(|c| c.session_ttl = Duration::from_secs(100)).await;
    let t = app.signup_and_login(EMAIL).await;
    let at_login = t["refresh_token_expires_in"].as_i64().unwrap();
    assert!((99..=100).contains(&at_login), "capped at 100 s: {t}");
    let r = app.refresh_ok(&s(&t, "refresh_token")).await;
    let after_refresh = r["refresh_token_expires_in"].as_i64().unwrap();
    assert!(
        (98..=at_login).contains(&after_refresh),
        "never slides past the cap: {r}"
    );
    // The session's expires_at says the same.
    let sessions = app.sessions(&s(&r, "access_token")).await;
    let expires_at = time::OffsetDateTime::parse(
        &s(&sessions[0], "expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let remaining = (expires_at - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!((95..=100).contains(&remaining), "expires_at {expires_at}");
}

#[tokio::test]
async fn access_token_lifetime_is_as_configured() {
    let app = spawn_app_with(|c| c.access_ttl = Duration::from_secs(60)).await;
    let t = app.signup_and_login(EMAIL).await;
    assert_eq!(t["expires_in"], 60);
    let claims = Jwt::parse(&s(&t, "access_token")).claims;
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
}
