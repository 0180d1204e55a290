//! `POST /v1/auth/refresh`: rotation within the same session, and the errors of bad input.

use serde_json::json;

use crate::helpers::*;
use crate::login::assert_token_response;

const UNKNOWN_TOKEN: &str = "tsr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[tokio::test]
async fn refresh_rotates_the_token_within_the_same_session() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let r = app.refresh_ok(&s(&t, "refresh_token")).await;
    assert_token_response(&r, EMAIL);
    assert_eq!(r["session_id"], t["session_id"]);
    assert_ne!(r["refresh_token"], t["refresh_token"]);
    assert_ne!(r["access_token"], t["access_token"]);
    let me = json_ok(app.me(&s(&r, "access_token")).await).await;
    assert_eq!(me["session_id"], t["session_id"]);
}

#[tokio::test]
async fn the_successor_keeps_rotating() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let mut seen = vec![s(&t, "refresh_token")];
    for _ in 0..3 {
        let r = app.refresh_ok(seen.last().unwrap()).await;
        assert_eq!(r["session_id"], t["session_id"]);
        let next = s(&r, "refresh_token");
        assert!(!seen.contains(&next), "a fresh token every time");
        seen.push(next);
    }
}

#[tokio::test]
async fn unknown_or_malformed_refresh_tokens_are_invalid() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let access_token = s(&t, "access_token");
    let wrong_prefix = s(&t, "refresh_token").replacen("tsr_", "tsx_", 1);
    let truncated = s(&t, "refresh_token")[..20].to_owned();
    for bad in [
        UNKNOWN_TOKEN,
        "garbage",
        "tsr_",
        "tsr_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        wrong_prefix.as_str(),
        truncated.as_str(),
        access_token.as_str(),
    ] {
        assert_problem(app.refresh(bad).await, 401, "invalid_refresh_token").await;
    }
    // None of that disturbed the real session.
    app.refresh_ok(&s(&t, "refresh_token")).await;
}

#[tokio::test]
async fn missing_or_mistyped_refresh_token_is_a_validation_error() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({ "refresh_token": null }),
        json!({ "refresh_token": 7 }),
    ] {
        assert_validation(app.post_json("/v1/auth/refresh", &body).await, &["refresh_token"]).await;
    }
}

#[tokio::test]
async fn an_empty_body_is_a_validation_error() {
    let app = spawn_app().await;
    for content_type in [Some("application/json"), None] {
        let r = app.post_raw("/v1/auth/refresh", content_type, "").await;
        assert_validation(r, &["refresh_token"]).await;
    }
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_malformed() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let body = json!({ "refresh_token": s(&t, "refresh_token") }).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = app.post_raw("/v1/auth/refresh", content_type, body.clone()).await;
        assert_problem(r, 400, "malformed_request").await;
    }
}

#[tokio::test]
async fn json_with_a_charset_is_accepted() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let body = json!({ "refresh_token": s(&t, "refresh_token") }).to_string();
    let r = app
        .post_raw("/v1/auth/refresh", Some("application/json; charset=utf-8"), body)
        .await;
    assert_eq!(json_ok(r).await["session_id"], t["session_id"]);
}
