//! `POST /v1/auth/login`: the token response, credential errors, one session per login.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::jose::unb64;

/// Asserts the contract's token response shape with default lifetimes.
pub fn assert_token_response(t: &Value, email: &str) {
    assert!(
        t["access_token"]
            .as_str()
            .is_some_and(|a| a.split('.').count() == 3),
        "{t}"
    );
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 900);
    assert_refresh_token_format(&s(t, "refresh_token"));
    assert_eq!(t["refresh_token_expires_in"], 2_592_000);
    assert_uuid(&t["session_id"]);
    assert_user(&t["user"], email);
}

/// `tsr_` then at least 256 bits of URL-safe base64.
pub fn assert_refresh_token_format(token: &str) {
    let body = token
        .strip_prefix("tsr_")
        .unwrap_or_else(|| panic!("no tsr_ prefix: {token}"));
    assert!(body.len() >= 43, "too short: {token}");
    assert!(
        body.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "not base64url: {token}"
    );
    assert!(unb64(body).len() >= 32, "under 256 bits: {token}");
}

#[tokio::test]
async fn login_answers_the_token_response() {
    let app = spawn_app().await;
    let registered: Value = {
        let r = app.register(EMAIL).await;
        assert_eq!(r.status().as_u16(), 201);
        r.json().await.unwrap()
    };
    let t = app.login_ok(EMAIL).await;
    assert_token_response(&t, EMAIL);
    assert_eq!(t["user"], registered["user"]);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_are_indistinguishable() {
    let app = spawn_app().await;
    assert_status(app.register(EMAIL).await, 201).await;
    let wrong_password = assert_problem(
        app.login_with(EMAIL, "wrong password!").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown_email =
        assert_problem(app.login("nobody@example.com").await, 401, "invalid_credentials").await;
    assert_eq!(wrong_password, unknown_email);
}

#[tokio::test]
async fn login_fields_are_validated() {
    let app = spawn_app().await;
    let r = app.post_json("/v1/auth/login", &json!({})).await;
    assert_validation(r, &["email", "password"]).await;
    let r = app
        .post_json("/v1/auth/login", &json!({ "email": EMAIL, "password": 5 }))
        .await;
    assert_validation(r, &["password"]).await;
}

#[tokio::test]
async fn each_login_creates_a_new_session() {
    let app = spawn_app().await;
    let first = app.signup_and_login(EMAIL).await;
    let second = app.login_ok(EMAIL).await;
    assert_ne!(first["session_id"], second["session_id"]);
    assert_ne!(first["refresh_token"], second["refresh_token"]);
    let mut listed = app.session_ids(&s(&second, "access_token")).await;
    listed.sort();
    let mut expected = vec![s(&first, "session_id"), s(&second, "session_id")];
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn login_records_user_agent_and_ip_on_the_session() {
    let app = spawn_app().await;
    assert_status(app.register(EMAIL).await, 201).await;
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("user-agent", "TesseraTest/1.0 (phone)")
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let t = json_ok(r).await;
    let sessions = app.sessions(&s(&t, "access_token")).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["id"], t["session_id"]);
    assert_eq!(sessions[0]["user_agent"], "TesseraTest/1.0 (phone)");
    assert_eq!(sessions[0]["ip"], "127.0.0.1");
}
