//! `GET /v1/auth/me` and how it reads the Authorization header.

use crate::helpers::*;

#[tokio::test]
async fn me_answers_the_user_and_session() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let me = json_ok(app.me(&s(&t, "access_token")).await).await;
    assert_user(&me["user"], EMAIL);
    // The same user; the metadata only where asked for (`?include=metadata`).
    for field in ["id", "email", "created_at"] {
        assert_eq!(me["user"][field], t["user"][field]);
    }
    assert!(me["user"].get("user_metadata").is_none());
    assert_eq!(me["session_id"], t["session_id"]);
}

#[tokio::test]
async fn me_without_a_token_is_invalid_token() {
    let app = spawn_app().await;
    assert_problem(app.get("/v1/auth/me").await, 401, "invalid_token").await;
}

#[tokio::test]
async fn me_with_a_non_bearer_scheme_is_invalid_token() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let basic = format!("Basic {}", s(&t, "access_token"));
    for value in [basic.as_str(), "Bearer", "Bearer  ", &s(&t, "access_token")] {
        let r = app.get_with_authorization("/v1/auth/me", value).await;
        assert_problem(r, 401, "invalid_token").await;
    }
}

#[tokio::test]
async fn an_authorization_header_over_8_kib_is_invalid_token() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    // A genuine token, with inner padding the parser would otherwise skip, past the limit.
    let padded = format!("Bearer {}{}", " ".repeat(8 * 1024), s(&t, "access_token"));
    let r = app.get_with_authorization("/v1/auth/me", &padded).await;
    assert_problem(r, 401, "invalid_token").await;
    assert_problem(app.me(&"a".repeat(9 * 1024)).await, 401, "invalid_token").await;
}

// The answer is rendered once per session snapshot and kept: asked again and again, from two
// sessions of one account in turn, each must keep answering its own session, as JSON no cache
// may keep.
#[tokio::test]
async fn each_session_keeps_answering_its_own_me() {
    let app = spawn_app().await;
    let first = app.signup_and_login(EMAIL).await;
    let second = json_ok(app.login(EMAIL).await).await;
    assert_ne!(first["session_id"], second["session_id"]);
    for _ in 0..3 {
        for t in [&first, &second] {
            let r = app.me(&s(t, "access_token")).await;
            assert_eq!(r.headers()["content-type"], "application/json");
            assert_eq!(r.headers()["cache-control"], "no-store");
            let me = json_ok(r).await;
            assert_eq!(me["session_id"], t["session_id"], "{me}");
            assert_eq!(me["user"]["id"], t["user"]["id"], "{me}");
        }
    }
}
