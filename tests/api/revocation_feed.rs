//! The revocation feed for resource servers, `GET /v1/revocations`: off without a
//! credential, refused without the right one, every revocation listed once and in order with
//! whose session it was and why, and a waiting reader woken within a second of a revocation
//! made here or by another process.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera::domain::{Clock, SessionId, SystemClock};

use crate::helpers::*;

const CREDENTIAL: &str = "resource-server-credential-0123456789abcdef";

async fn spawn_with_feed() -> TestApp {
    spawn_app_with(|c| {
        c.revocation_feed_credentials = vec![CREDENTIAL.into()];
        // Reuse is detected at once, and logins never revoke older devices by themselves.
        c.reuse_grace = Duration::ZERO;
        c.max_sessions = 100;
    })
    .await
}

async fn feed(app: &TestApp, query: &str) -> Value {
    json_ok(
        app.get_authed(&format!("/v1/revocations?{query}"), CREDENTIAL)
            .await,
    )
    .await
}

fn entries(page: &Value) -> &Vec<Value> {
    page["revocations"].as_array().expect("revocations array")
}

fn seqs(page: &Value) -> Vec<i64> {
    entries(page)
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn the_feed_is_off_without_a_credential() {
    let app = spawn_app().await;
    assert_problem(
        app.get_authed("/v1/revocations", CREDENTIAL).await,
        404,
        "not_found",
    )
    .await;
    let discovery = json_ok(app.get("/.well-known/oauth-authorization-server").await).await;
    assert!(discovery["tessera_endpoints"].get("revocations").is_none());
}

#[tokio::test]
async fn only_a_configured_credential_reads_the_feed() {
    let app = spawn_with_feed().await;
    assert_problem(app.get("/v1/revocations").await, 401, "invalid_token").await;
    let wrong = format!("{CREDENTIAL}x");
    assert_problem(
        app.get_authed("/v1/revocations", &wrong).await,
        401,
        "invalid_token",
    )
    .await;
    // A user's access token is not a resource-server credential.
    let user = app.signup_and_login(EMAIL).await;
    assert_problem(
        app.get_authed("/v1/revocations", &s(&user, "access_token")).await,
        401,
        "invalid_token",
    )
    .await;
    let page = feed(&app, "").await;
    assert_eq!(page, serde_json::json!({"revocations": [], "next": 0}));
    let discovery = json_ok(app.get("/.well-known/openid-configuration").await).await;
    assert_eq!(
        discovery["tessera_endpoints"]["revocations"],
        app.config.issuer.trim_end_matches('/').to_owned() + "/v1/revocations"
    );
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let app = spawn_with_feed().await;
    let r = app
        .get_authed("/v1/revocations?after=-1&limit=0&wait=99", CREDENTIAL)
        .await;
    assert_validation(r, &["after", "limit", "wait"]).await;
}

#[tokio::test]
async fn every_revocation_is_listed_once_in_order_with_whose_and_why() {
    let app = spawn_with_feed().await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.login_ok(EMAIL).await;
    let c = app.login_ok(EMAIL).await;
    let user_id = s(&a["user"], "id");

    assert_status(app.logout_with_refresh_token(&s(&a, "refresh_token")).await, 204).await;
    assert_status(
        app.revoke_session(&s(&c, "access_token"), &s(&b, "session_id"))
            .await,
        204,
    )
    .await;
    // Rotated, then presented again (no grace window here): reuse, the session revoked.
    app.reuse_refresh_token(&s(&c, "refresh_token")).await;

    let page = feed(&app, "").await;
    let listed = entries(&page);
    assert_eq!(listed.len(), 3, "{page}");
    let sessions: Vec<String> = listed.iter().map(|e| s(e, "session_id")).collect();
    assert_eq!(
        sessions,
        [s(&a, "session_id"), s(&b, "session_id"), s(&c, "session_id")]
    );
    for entry in listed {
        assert_eq!(s(entry, "user_id"), user_id);
        assert_rfc3339(&entry["at"]);
    }
    let reasons: Vec<&str> = listed
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reasons[0], "logout");
    assert_eq!(reasons[2], "refresh_token_reused");
    let seq = seqs(&page);
    assert!(seq.windows(2).all(|w| w[0] < w[1]), "{seq:?}");
    assert_eq!(page["next"], seq[2]);

    // Resuming after an entry lists what follows it; paging by one walks the same list.
    let rest = feed(&app, &format!("after={}", seq[0])).await;
    assert_eq!(seqs(&rest), seq[1..]);
    let mut walked = Vec::new();
    let mut after = 0;
    loop {
        let page = feed(&app, &format!("after={after}&limit=1")).await;
        if entries(&page).is_empty() {
            assert_eq!(page["next"], after);
            break;
        }
        walked.extend(seqs(&page));
        after = page["next"].as_i64().expect("next");
    }
    assert_eq!(walked, seq);
}

#[tokio::test]
async fn a_waiting_reader_learns_of_a_revocation_here_within_a_second() {
    let app = Arc::new(spawn_with_feed().await);
    let d = app.signup_and_login(EMAIL).await;
    // With nothing new, the wait ends empty.
    let started = Instant::now();
    let page = feed(&app, "wait=1").await;
    assert!(entries(&page).is_empty() && started.elapsed() >= Duration::from_millis(900));

    let reader = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { (feed(&app, "wait=20").await, Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked_at = Instant::now();
    assert_status(app.logout_with_bearer(&s(&d, "access_token")).await, 204).await;
    let (page, answered_at) = reader.await.expect("reader");
    assert_eq!(seqs(&page).len(), 1, "{page}");
    assert_eq!(s(&entries(&page)[0], "session_id"), s(&d, "session_id"));
    let took = answered_at.duration_since(revoked_at);
    assert!(
        took < Duration::from_secs(1),
        "answered {took:?} after the revocation"
    );
}

#[tokio::test]
async fn a_waiting_reader_learns_of_a_revocation_by_another_process_within_a_second() {
    let app = Arc::new(spawn_with_feed().await);
    let d = app.signup_and_login(EMAIL).await;
    let reader = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { (feed(&app, "wait=20").await, Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Straight in the database, as the CLI or another instance would.
    let store = tessera::store::connect(&app.config.database_url, 1)
        .await
        .expect("open the store");
    let id = SessionId::parse(&s(&d, "session_id")).expect("session id");
    let revoked_at = Instant::now();
    assert!(store
        .revoke_session(id, SystemClock.now(), "admin")
        .await
        .expect("revoke"));
    let (page, answered_at) = reader.await.expect("reader");
    assert_eq!(s(&entries(&page)[0], "reason"), "admin");
    let took = answered_at.duration_since(revoked_at);
    assert!(
        took < Duration::from_secs(1),
        "answered {took:?} after the revocation"
    );
}

/// Sequence numbers must never let a reader skip an entry: one that commits after a reader
/// has moved past its number would be lost. Revocations race from many tasks (and, on
/// PostgreSQL, from two instances) while a reader follows the feed; at the end the reader
/// has seen exactly every entry.
#[tokio::test]
async fn a_reader_following_racing_revocations_misses_none_and_sees_none_twice() {
    let first = spawn_with_feed().await;
    let (config, storage) = (first.config.clone(), Arc::clone(&first.storage));
    let second = start(config, storage).await;
    let user = first.signup_and_login(EMAIL).await;
    let token = s(&user, "access_token");
    let mut devices = Vec::new();
    for i in 0..24 {
        let app = if i % 2 == 0 { &first } else { &second };
        devices.push(app.login_ok(EMAIL).await);
    }
    let first = Arc::new(first);
    let second = Arc::new(second);
    let stop = Arc::new(tokio::sync::Notify::new());
    let reader = {
        let app = Arc::clone(&first);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            let mut done = false;
            loop {
                let page = feed(&app, &format!("after={after}&limit=5")).await;
                seen.extend(seqs(&page));
                after = page["next"].as_i64().expect("next");
                if done && entries(&page).is_empty() {
                    return seen;
                }
                tokio::select! {
                    _ = stop.notified() => done = true,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        })
    };
    let mut revokers = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let app = Arc::clone(if i % 2 == 0 { &first } else { &second });
        let (token, id) = (token.clone(), s(d, "session_id"));
        revokers.push(tokio::spawn(async move {
            assert_status(app.revoke_session(&token, &id).await, 204).await;
        }));
    }
    for r in revokers {
        r.await.expect("revoker");
    }
    // Wake the reader until it has taken the stop (notify_waiters only reaches a waiter).
    let seen = loop {
        stop.notify_waiters();
        if reader.is_finished() {
            break reader.await.expect("reader");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let all = seqs(&feed(&first, "limit=1000").await);
    assert_eq!(all.len(), devices.len());
    assert_eq!(seen, all, "the reader saw every entry once, in order");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());
}
