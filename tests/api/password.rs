//! `POST /v1/auth/password`: the current password is required, every other session ends, this
//! one goes on with fresh tokens, and the refresh token it replaced is never forgiven.

use std::time::Duration;

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::*;

const NEW_PASSWORD: &str = "a much better passphrase";

async fn change(app: &TestApp, access_token: &str, current: &str, new: &str) -> Response {
    let body = json!({"current_password": current, "new_password": new});
    app.post_authed("/v1/auth/password", access_token, Some(&body))
        .await
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_and_keeps_this_one() {
    let app = spawn_app().await;
    let here = app.signup_and_login(EMAIL).await;
    let elsewhere = app.login_ok(EMAIL).await;

    let t = json_ok(change(&app, &s(&here, "access_token"), PASSWORD, NEW_PASSWORD).await).await;
    assert_eq!(t["session_id"], here["session_id"], "the same session goes on");
    json_ok(app.me(&s(&t, "access_token")).await).await;
    let next = app.refresh_ok(&s(&t, "refresh_token")).await;
    assert_eq!(next["session_id"], here["session_id"]);

    // Every other session is over, at once.
    assert_problem(
        app.me(&s(&elsewhere, "access_token")).await,
        401,
        "session_revoked",
    )
    .await;
    assert_problem(
        app.refresh(&s(&elsewhere, "refresh_token")).await,
        401,
        "session_revoked",
    )
    .await;
    // The old password is gone, the new one works.
    assert_problem(app.login(EMAIL).await, 401, "invalid_credentials").await;
    json_ok(app.login_with(EMAIL, NEW_PASSWORD).await).await;
}

#[tokio::test]
async fn the_refresh_token_a_password_change_replaced_is_reuse_even_at_once() {
    let app = spawn_app().await;
    let here = app.signup_and_login(EMAIL).await;
    let t = json_ok(change(&app, &s(&here, "access_token"), PASSWORD, NEW_PASSWORD).await).await;
    // Inside the grace window a retry of a refresh would be forgiven; after a password
    // change, whoever presents the old token is not the one who changed it.
    assert_problem(
        app.refresh(&s(&here, "refresh_token")).await,
        401,
        "refresh_token_reused",
    )
    .await;
    assert_problem(app.me(&s(&t, "access_token")).await, 401, "session_revoked").await;
}

#[tokio::test]
async fn a_wrong_current_password_or_a_weak_new_one_changes_nothing() {
    let app = spawn_app().await;
    let here = app.signup_and_login(EMAIL).await;
    let access = s(&here, "access_token");
    assert_problem(
        change(&app, &access, "not my password", NEW_PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    let body: Value =
        assert_validation(change(&app, &access, PASSWORD, "short").await, &["new_password"]).await;
    assert_eq!(body["code"], "validation_failed");
    assert_validation(
        app.post_authed("/v1/auth/password", &access, Some(&json!({})))
            .await,
        &["current_password", "new_password"],
    )
    .await;
    // Nothing changed: the old password still signs in, the session still refreshes.
    app.login_ok(EMAIL).await;
    app.refresh_ok(&s(&here, "refresh_token")).await;
    // Without a valid access token there is nothing to change.
    assert_problem(
        change(&app, "not-a-token", PASSWORD, NEW_PASSWORD).await,
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn guessing_the_current_password_counts_towards_the_account_lock() {
    let app = spawn_app_with(|c| {
        c.lockout_threshold = 3;
        c.lockout_window = Duration::from_secs(60);
        c.lockout_cooldown = Duration::from_secs(30);
    })
    .await;
    let here = app.signup_and_login(EMAIL).await;
    let access = s(&here, "access_token");
    for _ in 0..3 {
        assert_problem(
            change(&app, &access, "guess", NEW_PASSWORD).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    // Locked, even for the right password through this session (it may be the stolen one).
    assert_problem(
        change(&app, &access, PASSWORD, NEW_PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    assert_problem(app.login(EMAIL).await, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_browser_changes_its_password_with_the_csrf_header_and_gets_new_cookies() {
    let app = spawn_app().await;
    assert_status(app.register(EMAIL).await, 201).await;
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": EMAIL, "password": PASSWORD, "transport": "cookie"}),
        )
        .await;
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next().map(str::to_owned))
        .collect();
    let grant = json_ok(login).await;
    let csrf = s(&grant, "csrf_token");
    let cookie_header = cookies.join("; ");
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let without_csrf = app
        .client
        .post(app.url("/v1/auth/password"))
        .header("cookie", &cookie_header)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_problem(without_csrf, 403, "csrf_failed").await;
    let changed = app
        .client
        .post(app.url("/v1/auth/password"))
        .header("cookie", &cookie_header)
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(changed.status(), 200);
    let set: Vec<&str> = changed
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(set.iter().any(|c| c.starts_with("tessera_rt=tsr_")), "{set:?}");
    assert!(set.iter().any(|c| c.starts_with("tessera_at=")), "{set:?}");
    json_ok(app.login_with(EMAIL, NEW_PASSWORD).await).await;
}

/// Logins with the old password that are still in flight while the password changes: each
/// either finished before the change (its session is ended by it) or is refused. None leaves a
/// live session behind, whenever it answers. Several trials, six logins at a time.
#[tokio::test]
async fn logins_racing_a_password_change_leave_no_session_for_the_old_password() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    // Every login is a session: room for them all, so none is ended by the session cap. The
    // logins of the old password refused between the change and the test seeing it are failures
    // of that account; on a slow machine they pass the lock threshold, and a 429 is not what
    // this test is about.
    let app = spawn_app_with(|c| {
        c.max_sessions = 10_000;
        c.lockout_threshold = 0;
    })
    .await;
    let mut granted = 0;
    for trial in 0..6 {
        let email = format!("race{trial}@example.com");
        let here = app.signup_and_login(&email).await;
        let changed = Arc::new(AtomicBool::new(false));
        let logins: Vec<_> = (0..6)
            .map(|_| {
                let (client, url, email, changed) = (
                    app.client.clone(),
                    app.url("/v1/auth/login"),
                    email.clone(),
                    Arc::clone(&changed),
                );
                tokio::spawn(async move {
                    let mut refresh_tokens = Vec::new();
                    // Until a login starts after the change was acknowledged.
                    loop {
                        let after_change = changed.load(Ordering::SeqCst);
                        let r = client
                            .post(&url)
                            .json(&json!({"email": email, "password": PASSWORD}))
                            .send()
                            .await
                            .expect("request");
                        match r.status().as_u16() {
                            200 => {
                                let t: Value = r.json().await.expect("json");
                                refresh_tokens.push(s(&t, "refresh_token"));
                            }
                            401 => {}
                            other => panic!("unexpected status {other}"),
                        }
                        if after_change {
                            return refresh_tokens;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20 * trial)).await;
        json_ok(change(&app, &s(&here, "access_token"), PASSWORD, NEW_PASSWORD).await).await;
        changed.store(true, Ordering::SeqCst);
        for login in logins {
            for refresh_token in login.await.expect("join") {
                granted += 1;
                let r = app.refresh(&refresh_token).await;
                assert_ne!(
                    r.status().as_u16(),
                    200,
                    "trial {trial}: a session of the old password outlived the change"
                );
            }
        }
    }
    assert!(
        granted > 0,
        "no login with the old password got in before a change"
    );
}
