//! Per-client-IP rate limits on login and refresh: every attempt counts, `429 rate_limited`
//! with `Retry-After` beyond the limit, `0` means unlimited, and the client IP taken from
//! `X-Forwarded-For` only when the deployment trusts proxy headers.

use reqwest::header::RETRY_AFTER;
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::*;

const WRONG_PASSWORD: &str = "not the password";

/// Asserts `429 rate_limited` with a `Retry-After` of whole seconds within the minute.
pub async fn assert_rate_limited(r: Response) {
    let retry_after = r
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let seconds: u64 = retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After is not whole seconds: {retry_after:?}"));
    assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
    assert_problem(r, 429, "rate_limited").await;
}

/// Logs `EMAIL` in with `X-Forwarded-For: forwarded_for`.
async fn login_forwarded_for(app: &TestApp, forwarded_for: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .expect("request")
}

/// The `(session id, ip)` of each of the caller's live sessions, sorted.
async fn session_ips(app: &TestApp, access_token: &str) -> Vec<(String, String)> {
    let sessions = app.sessions(access_token).await;
    sorted(
        sessions
            .iter()
            .map(|session| (s(session, "id"), s(session, "ip"))),
    )
}

/// The `(session id, ip)` pairs expected for token responses, sorted.
fn expected_ips(logins: &[(&Value, &str)]) -> Vec<(String, String)> {
    sorted(logins.iter().map(|(t, ip)| (s(t, "session_id"), ip.to_string())))
}

fn sorted(pairs: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = pairs.collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn login_attempts_beyond_the_limit_are_429_with_retry_after() {
    let app = spawn_app_with(|c| c.login_rate = 3).await;
    assert_status(app.register(EMAIL).await, 201).await;
    app.login_ok(EMAIL).await;
    let r = app.login_with(EMAIL, WRONG_PASSWORD).await;
    assert_problem(r, 401, "invalid_credentials").await;
    app.login_ok(EMAIL).await;
    assert_rate_limited(app.login(EMAIL).await).await;
    assert_rate_limited(app.login_with(EMAIL, WRONG_PASSWORD).await).await;
    // Registration (it hashes a password too) has a limit of its own, at the login rate: the
    // one registration above leaves two.
    for i in 0..2 {
        assert_status(app.register(&format!("user{i}@example.com")).await, 201).await;
    }
    assert_rate_limited(app.register("one-too-many@example.com").await).await;
}

#[tokio::test]
async fn refresh_attempts_beyond_the_limit_are_429_with_retry_after() {
    let app = spawn_app_with(|c| c.refresh_rate = 2).await;
    let t = app.signup_and_login(EMAIL).await;
    let next = app.refresh_ok(&s(&t, "refresh_token")).await;
    let r = app.refresh("tsr_unknown").await;
    assert_problem(r, 401, "invalid_refresh_token").await;
    assert_rate_limited(app.refresh(&s(&next, "refresh_token")).await).await;
    // Logins have a limit of their own.
    app.login_ok(EMAIL).await;
}

#[tokio::test]
async fn a_rate_of_zero_is_unlimited() {
    let app = spawn_app_with(|c| {
        c.login_rate = 0;
        c.refresh_rate = 0;
        // The per-account lock (tests/api/lockout.rs) would stop these failures at 10.
        c.lockout_threshold = 0;
    })
    .await;
    for _ in 0..40 {
        let r = app.login_with(EMAIL, WRONG_PASSWORD).await;
        assert_problem(r, 401, "invalid_credentials").await;
        assert_problem(app.refresh("tsr_unknown").await, 401, "invalid_refresh_token").await;
    }
}

#[tokio::test]
async fn trusted_proxy_headers_make_the_rightmost_forwarded_address_the_client() {
    let app = spawn_app_with(|c| {
        c.trust_proxy_headers = true;
        c.login_rate = 2;
    })
    .await;
    assert_status(app.register(EMAIL).await, 201).await;
    let a = json_ok(login_forwarded_for(&app, "1.1.1.1, 2.2.2.2").await).await;
    let b = json_ok(login_forwarded_for(&app, "3.3.3.3").await).await;
    let c = json_ok(login_forwarded_for(&app, "9.9.9.9, 2.2.2.2").await).await;
    // 2.2.2.2 has used its two attempts, whatever the addresses to its left; 3.3.3.3 has not.
    assert_rate_limited(login_forwarded_for(&app, "2.2.2.2").await).await;
    let d = json_ok(login_forwarded_for(&app, "3.3.3.3").await).await;
    assert_eq!(
        session_ips(&app, &s(&a, "access_token")).await,
        expected_ips(&[(&a, "2.2.2.2"), (&b, "3.3.3.3"), (&c, "2.2.2.2"), (&d, "3.3.3.3")])
    );
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_proxy_headers_are_trusted() {
    let app = spawn_app_with(|c| c.login_rate = 2).await;
    assert_status(app.register(EMAIL).await, 201).await;
    let first = json_ok(login_forwarded_for(&app, "1.1.1.1, 2.2.2.2").await).await;
    let second = json_ok(login_forwarded_for(&app, "3.3.3.3").await).await;
    // Both attempts came from 127.0.0.1, which is now at its limit.
    assert_rate_limited(login_forwarded_for(&app, "4.4.4.4").await).await;
    assert_eq!(
        session_ips(&app, &s(&first, "access_token")).await,
        expected_ips(&[(&first, "127.0.0.1"), (&second, "127.0.0.1")])
    );
}
