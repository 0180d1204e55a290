//! Session liveness from memory: every revocation made by this instance is refused at once,
//! one made by another process on the same database soon after, and `strict` mode reads the
//! database every time.

use std::time::{Duration, Instant};

use serde_json::Value;
use tessera::config::SessionCheck;
use tessera::domain::{Clock, SessionId, SystemClock};

use crate::helpers::*;

/// Logs in `n` devices of one user and uses each access token once, so the server has
/// every session in memory before the revocation under test.
async fn remembered_devices(app: &TestApp, n: usize) -> Vec<Value> {
    let mut devices = vec![app.signup_and_login(EMAIL).await];
    for _ in 1..n {
        devices.push(app.login_ok(EMAIL).await);
    }
    for d in &devices {
        json_ok(app.me(&s(d, "access_token")).await).await;
    }
    devices
}

async fn assert_refused(app: &TestApp, device: &Value) {
    assert_problem(app.me(&s(device, "access_token")).await, 401, "session_revoked").await;
}

/// Revokes a session the way another process would (the CLI, another instance): straight
/// in the database, behind this server's back.
async fn revoke_elsewhere(app: &TestApp, device: &Value) {
    let store = tessera::store::connect(&app.config.database_url, 1)
        .await
        .expect("open the store");
    let id = SessionId::parse(&s(device, "session_id")).expect("session id");
    assert!(store
        .revoke_session(id, SystemClock.now(), "revoked_elsewhere")
        .await
        .expect("revoke"));
}

#[tokio::test]
async fn every_revocation_this_instance_makes_is_refused_at_once() {
    let app = spawn_app_with(|c| c.max_sessions = 6).await;
    let d = remembered_devices(&app, 6).await;

    assert_status(
        app.logout_with_refresh_token(&s(&d[0], "refresh_token")).await,
        204,
    )
    .await;
    assert_refused(&app, &d[0]).await;

    assert_status(app.logout_with_bearer(&s(&d[1], "access_token")).await, 204).await;
    assert_refused(&app, &d[1]).await;

    assert_status(
        app.revoke_session(&s(&d[5], "access_token"), &s(&d[2], "session_id"))
            .await,
        204,
    )
    .await;
    assert_refused(&app, &d[2]).await;

    // Reuse detection: rotate, then present the rotated-out token after grace (grace 10 s:
    // present the grandparent instead, which is reuse at once).
    let first = s(&d[3], "refresh_token");
    let second = app.refresh_ok(&first).await;
    app.refresh_ok(&s(&second, "refresh_token")).await;
    assert_problem(app.refresh(&first).await, 401, "refresh_token_reused").await;
    assert_refused(&app, &d[3]).await;
    assert_refused(&app, &second).await;

    // Logout everywhere else: d[4] goes, d[5] (the caller) stays.
    assert_status(
        app.logout_all(&s(&d[5], "access_token"), Some("others")).await,
        204,
    )
    .await;
    assert_refused(&app, &d[4]).await;
    json_ok(app.me(&s(&d[5], "access_token")).await).await;
}

#[tokio::test]
async fn eviction_by_the_session_cap_is_refused_at_once() {
    let app = spawn_app_with(|c| c.max_sessions = 2).await;
    let d = remembered_devices(&app, 2).await;
    app.login_ok(EMAIL).await;
    assert_refused(&app, &d[0]).await;
    json_ok(app.me(&s(&d[1], "access_token")).await).await;
}

#[tokio::test]
async fn a_revocation_by_another_process_is_refused_within_a_second() {
    let app = spawn_app().await;
    let d = remembered_devices(&app, 2).await;
    revoke_elsewhere(&app, &d[0]).await;
    let start = Instant::now();
    loop {
        let r = app.me(&s(&d[0], "access_token")).await;
        if r.status() == 401 {
            assert_problem(r, 401, "session_revoked").await;
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    json_ok(app.me(&s(&d[1], "access_token")).await).await;
}

#[tokio::test]
async fn strict_mode_refuses_a_revocation_by_another_process_at_once() {
    let app = spawn_app_with(|c| c.session_check = SessionCheck::Strict).await;
    let d = remembered_devices(&app, 1).await;
    revoke_elsewhere(&app, &d[0]).await;
    assert_refused(&app, &d[0]).await;
}
