//! The per-account limit on failed logins: a lock after too many failures (for unknown emails
//! exactly as for real ones), its cool-down doubling when locks come in a row, at most
//! `threshold` passwords checked per lock however many guesses come at once, and the owner
//! getting through from a device that proves a live session with its refresh token.

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

/// A login with the right password by a device holding `refresh_token`.
async fn login_holding(app: &TestApp, refresh_token: &str) -> Response {
    login_holding_with(app, refresh_token, PASSWORD).await
}

async fn login_holding_with(app: &TestApp, refresh_token: &str, password: &str) -> Response {
    app.post_json(
        "/v1/auth/login",
        &json!({"email": ATTACKED, "password": password, "refresh_token": refresh_token}),
    )
    .await
}

/// A login with the right password carrying a bearer access token, as devices did before.
async fn login_with_bearer(app: &TestApp, access_token: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .bearer_auth(access_token)
        .json(&json!({"email": ATTACKED, "password": PASSWORD}))
        .send()
        .await
        .expect("request")
}

fn retry_after(r: &Response) -> u64 {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds")
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
    let rotated = app.login_ok(ATTACKED).await;
    let rotated_next = app.refresh_ok(&s(&rotated, "refresh_token")).await;
    fail(&app, ATTACKED, 3).await;
    assert_locked(app.login(ATTACKED).await, 1..=2).await;

    // Not through a revoked session's token, another account's, a rotated-out one, or garbage.
    for held in [
        s(&revoked, "refresh_token"),
        s(&stranger, "refresh_token"),
        s(&rotated, "refresh_token"),
        "garbage".to_owned(),
    ] {
        assert_locked(login_holding(&app, &held).await, 1..=2).await;
    }
    // The owner's device, with its live session's refresh token, gets in (with the right
    // password only).
    assert_problem(
        login_holding_with(&app, &s(&owner, "refresh_token"), "wrong password").await,
        401,
        "invalid_credentials",
    )
    .await;
    let t = json_ok(login_holding(&app, &s(&owner, "refresh_token")).await).await;
    json_ok(app.me(&s(&t, "access_token")).await).await;
    json_ok(login_holding(&app, &s(&rotated_next, "refresh_token")).await).await;
    // The owner's sessions worked throughout.
    json_ok(app.me(&s(&owner, "access_token")).await).await;
    app.refresh_ok(&s(&owner, "refresh_token")).await;
    // The owner getting in does not lift the lock others' guesses caused.
    assert_locked(app.login(ATTACKED).await, 1..=2).await;
}

#[tokio::test]
async fn an_access_token_does_not_pass_a_lock_even_a_live_one() {
    // Access tokens are shown to every resource server, proxy and log: an old one must not
    // be the owner's proof for the rest of its session.
    let app = spawn_app_with(|c| {
        c.lockout_threshold = 3;
        c.lockout_window = Duration::from_secs(60);
        c.lockout_cooldown = Duration::from_secs(30);
        c.access_ttl = Duration::from_secs(2);
    })
    .await;
    let owner = app.signup_and_login(ATTACKED).await;
    let access = s(&owner, "access_token");
    fail(&app, ATTACKED, 3).await;
    assert_locked(login_with_bearer(&app, &access).await, 29..=30).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    // Expired now: 25 guesses with it are refused before any password is checked.
    for _ in 0..25 {
        let r = app
            .client
            .post(app.url("/v1/auth/login"))
            .bearer_auth(&access)
            .json(&json!({"email": ATTACKED, "password": "a guess"}))
            .send()
            .await
            .expect("request");
        assert_locked(r, 1..=30).await;
    }
    assert_locked(login_with_bearer(&app, &access).await, 1..=30).await;
}

#[tokio::test]
async fn a_device_through_the_lock_has_a_small_budget_and_cannot_lengthen_the_lock() {
    let app = spawn_app_with(|c| {
        c.lockout_threshold = 5;
        c.lockout_window = Duration::from_secs(60);
        c.lockout_cooldown = Duration::from_secs(3);
    })
    .await;
    let owner = app.signup_and_login(ATTACKED).await;
    let held = s(&owner, "refresh_token");
    fail(&app, ATTACKED, 5).await;
    let locked = app.login(ATTACKED).await;
    let first = retry_after(&locked);
    assert_locked(locked, 2..=3).await;
    // Three wrong guesses through the lock are checked; the fourth is not.
    for _ in 0..3 {
        assert_problem(
            login_holding_with(&app, &held, "wrong password").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    assert_locked(login_holding_with(&app, &held, "wrong password").await, 1..=3).await;
    assert_locked(login_holding(&app, &held).await, 1..=3).await;
    // The account's lock is as it was: those failures did not count against it.
    let r = app.login(ATTACKED).await;
    assert!(retry_after(&r) <= first);
    assert_locked(r, 1..=3).await;
    // Once it ends, another device gets in at once (no further lock was added).
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    app.login_ok(ATTACKED).await;
}

#[tokio::test]
async fn the_refresh_cookie_passes_a_lock_in_cookie_transport() {
    let app = locked_app().await;
    assert_status(app.register(ATTACKED).await, 201).await;
    let signed_in = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": ATTACKED, "password": PASSWORD, "transport": "cookie"}),
        )
        .await;
    assert_eq!(signed_in.status().as_u16(), 200);
    let refresh_cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("tessera_rt="))
        .and_then(|c| c.split(';').next())
        .expect("refresh cookie")
        .to_owned();
    fail(&app, ATTACKED, 3).await;
    assert_locked(app.login(ATTACKED).await, 1..=2).await;
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("cookie", &refresh_cookie)
        .json(&json!({"email": ATTACKED, "password": PASSWORD, "transport": "cookie"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
}

/// Many wrong guesses at once: at most `threshold` passwords are checked (the rest are
/// refused before hashing), and the burst locks once, for one cool-down. Several trials, one
/// account each.
#[tokio::test]
async fn a_burst_of_concurrent_guesses_checks_at_most_the_threshold_and_locks_once() {
    let app = spawn_app_with(|c| {
        c.lockout_threshold = 3;
        c.lockout_window = Duration::from_secs(60);
        c.lockout_cooldown = Duration::from_secs(60);
    })
    .await;
    for trial in 0..4 {
        let email = format!("burst{trial}@example.com");
        assert_status(app.register(&email).await, 201).await;
        let guesses: Vec<_> = (0..59)
            .map(|i| {
                let (client, url, email) = (app.client.clone(), app.url("/v1/auth/login"), email.clone());
                tokio::spawn(async move {
                    client
                        .post(url)
                        .json(&json!({"email": email, "password": format!("guess {i}")}))
                        .send()
                        .await
                        .expect("request")
                })
            })
            .collect();
        let (mut checked, mut refused) = (0, 0);
        for g in guesses {
            let r = g.await.expect("join");
            match r.status().as_u16() {
                401 => checked += 1,
                429 => {
                    // One cool-down (60 s; a second lock in a row would be 120 s), in whole
                    // seconds rounded up from a clock read a moment before the lock's.
                    assert!(retry_after(&r) <= 61, "one cool-down at most");
                    refused += 1;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        assert!(
            checked <= 3,
            "trial {trial}: {checked} passwords checked (threshold 3)"
        );
        assert_eq!(checked + refused, 59);
        // Locked, for one cool-down: not 64 of them.
        let r = app.login(&email).await;
        let wait = retry_after(&r);
        assert!((1..=61).contains(&wait), "trial {trial}: Retry-After {wait}");
        assert_problem(r, 429, "rate_limited").await;
        // Exactly one lock on record.
        let locks = app
            .audit_events(&email)
            .await
            .iter()
            .filter(|e| e.event == "account_locked")
            .count();
        assert_eq!(locks, 1, "trial {trial}");
    }
}

#[tokio::test]
async fn a_zero_threshold_never_locks() {
    let app = spawn_app_with(|c| c.lockout_threshold = 0).await;
    assert_status(app.register(ATTACKED).await, 201).await;
    fail(&app, ATTACKED, 12).await;
    app.login_ok(ATTACKED).await;
}
