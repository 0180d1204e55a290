//! `GET /v1/auth/sessions`, `DELETE /v1/auth/sessions/{id}` and the per-user session cap.

use serde_json::Value;

use crate::helpers::*;

const OTHER_EMAIL: &str = "bob@example.com";

/// Registers `EMAIL` and logs in `n` times; returns the token responses, oldest first.
async fn logins(app: &TestApp, n: usize) -> Vec<Value> {
    let mut out = vec![app.signup_and_login(EMAIL).await];
    for _ in 1..n {
        out.push(app.login_ok(EMAIL).await);
    }
    out
}

fn ids(tokens: &[&Value]) -> Vec<String> {
    tokens.iter().map(|t| s(t, "session_id")).collect()
}

#[tokio::test]
async fn sessions_lists_live_sessions_with_their_details() {
    let app = spawn_app().await;
    let t = logins(&app, 2).await;
    let sessions = app.sessions(&s(&t[1], "access_token")).await;
    assert_eq!(sessions.len(), 2);
    for session in &sessions {
        assert_uuid(&session["id"]);
        for time in ["created_at", "last_used_at", "expires_at"] {
            assert_rfc3339(&session[time]);
        }
        assert!(session["user_agent"].is_string() || session["user_agent"].is_null());
        assert_eq!(session["ip"], "127.0.0.1");
        assert!(session["current"].is_boolean());
    }
}

#[tokio::test]
async fn only_the_callers_session_is_current() {
    let app = spawn_app().await;
    let t = logins(&app, 3).await;
    for caller in &t {
        let sessions = app.sessions(&s(caller, "access_token")).await;
        let current: Vec<_> = sessions.iter().filter(|x| x["current"] == true).collect();
        assert_eq!(current.len(), 1, "{sessions:?}");
        assert_eq!(current[0]["id"], caller["session_id"]);
    }
}

#[tokio::test]
async fn sessions_are_listed_most_recently_used_first() {
    let app = spawn_app().await;
    let t = logins(&app, 3).await;
    assert_eq!(
        app.session_ids(&s(&t[0], "access_token")).await,
        ids(&[&t[2], &t[1], &t[0]])
    );
    // A refresh is a use: the oldest session moves to the front.
    let refreshed = app.refresh_ok(&s(&t[0], "refresh_token")).await;
    assert_eq!(
        app.session_ids(&s(&refreshed, "access_token")).await,
        ids(&[&t[0], &t[2], &t[1]])
    );
}

#[tokio::test]
async fn sessions_of_other_users_are_not_listed() {
    let app = spawn_app().await;
    let mine = app.signup_and_login(EMAIL).await;
    app.signup_and_login(OTHER_EMAIL).await;
    assert_eq!(app.session_ids(&s(&mine, "access_token")).await, ids(&[&mine]));
}

#[tokio::test]
async fn sessions_requires_a_token() {
    let app = spawn_app().await;
    assert_problem(app.get("/v1/auth/sessions").await, 401, "invalid_token").await;
}

#[tokio::test]
async fn deleting_a_session_revokes_it() {
    let app = spawn_app().await;
    let t = logins(&app, 2).await;
    let r = app
        .revoke_session(&s(&t[1], "access_token"), &s(&t[0], "session_id"))
        .await;
    assert_status(r, 204).await;
    assert_problem(
        app.refresh(&s(&t[0], "refresh_token")).await,
        401,
        "session_revoked",
    )
    .await;
    assert_problem(app.me(&s(&t[0], "access_token")).await, 401, "session_revoked").await;
    assert_eq!(app.session_ids(&s(&t[1], "access_token")).await, ids(&[&t[1]]));
}

#[tokio::test]
async fn deleting_the_current_session_revokes_the_caller() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let r = app
        .revoke_session(&s(&t, "access_token"), &s(&t, "session_id"))
        .await;
    assert_status(r, 204).await;
    assert_problem(app.me(&s(&t, "access_token")).await, 401, "session_revoked").await;
}

#[tokio::test]
async fn deleting_another_users_session_is_not_found_and_leaves_it_alive() {
    let app = spawn_app().await;
    let mine = app.signup_and_login(EMAIL).await;
    let theirs = app.signup_and_login(OTHER_EMAIL).await;
    let r = app
        .revoke_session(&s(&mine, "access_token"), &s(&theirs, "session_id"))
        .await;
    assert_problem(r, 404, "session_not_found").await;
    json_ok(app.me(&s(&theirs, "access_token")).await).await;
    app.refresh_ok(&s(&theirs, "refresh_token")).await;
}

#[tokio::test]
async fn deleting_an_unknown_or_non_uuid_session_is_not_found() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    // `%FF` does not even percent-decode to UTF-8 (it used to be a plain-text 400).
    for id in [unknown.as_str(), "not-a-uuid", "123", "%20", "%FF"] {
        let r = app.revoke_session(&s(&t, "access_token"), id).await;
        assert_problem(r, 404, "session_not_found").await;
    }
    json_ok(app.me(&s(&t, "access_token")).await).await;
}

#[tokio::test]
async fn the_session_cap_evicts_the_least_recently_used() {
    let app = spawn_app_with(|c| c.max_sessions = 3).await;
    let t = logins(&app, 4).await;
    assert_problem(
        app.refresh(&s(&t[0], "refresh_token")).await,
        401,
        "session_revoked",
    )
    .await;
    assert_problem(app.me(&s(&t[0], "access_token")).await, 401, "session_revoked").await;
    assert_eq!(
        app.session_ids(&s(&t[3], "access_token")).await,
        ids(&[&t[3], &t[2], &t[1]])
    );
}

#[tokio::test]
async fn refreshing_a_session_protects_it_from_eviction() {
    let app = spawn_app_with(|c| c.max_sessions = 3).await;
    let t = logins(&app, 3).await;
    let refreshed = app.refresh_ok(&s(&t[0], "refresh_token")).await;
    let newest = app.login_ok(EMAIL).await;
    // The second login is now the least recently used.
    assert_problem(
        app.refresh(&s(&t[1], "refresh_token")).await,
        401,
        "session_revoked",
    )
    .await;
    app.refresh_ok(&s(&refreshed, "refresh_token")).await;
    let listed = app.session_ids(&s(&newest, "access_token")).await;
    assert_eq!(listed, ids(&[&t[0], &newest, &t[2]]));
}
