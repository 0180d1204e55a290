//! Routing errors, body limits and malformed input: always a problem document, never a 500.

use serde_json::{json, Value};

use crate::helpers::*;

const REGISTER: &str = "/v1/auth/register";

#[tokio::test]
async fn an_unknown_route_is_404_not_found() {
    let app = spawn_app().await;
    assert_problem(app.get("/nope").await, 404, "not_found").await;
    assert_problem(app.get("/v1/auth/unknown").await, 404, "not_found").await;
    let r = app.post_json("/v1/auth/nope", &json!({})).await;
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn a_wrong_method_is_405_method_not_allowed() {
    let app = spawn_app().await;
    assert_problem(app.get("/v1/auth/login").await, 405, "method_not_allowed").await;
    let r = app.post_json("/v1/auth/me", &json!({})).await;
    assert_problem(r, 405, "method_not_allowed").await;
    let r = app
        .client
        .delete(app.url("/v1/auth/sessions"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let app = spawn_app().await;
    let padding = "x".repeat(64 * 1024);
    let r = app
        .post_json(
            REGISTER,
            &json!({ "email": EMAIL, "password": PASSWORD, "pad": padding }),
        )
        .await;
    assert_problem(r, 413, "payload_too_large").await;
    // Without a Content-Type as well: the size is checked whatever the body claims to be.
    let r = app
        .post_raw("/v1/auth/refresh", None, vec![b'x'; 65 * 1024])
        .await;
    assert_problem(r, 413, "payload_too_large").await;
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let app = spawn_app_with(|c| c.body_limit = 1024).await;
    let r = app
        .post_json(REGISTER, &json!({ "email": EMAIL, "password": "x".repeat(1000) }))
        .await;
    assert_problem(r, 413, "payload_too_large").await;
    assert_status(app.register(EMAIL).await, 201).await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let bodies: [&[u8]; 6] = [
        b"{",
        b"{\"email\": }",
        b"not json",
        b"{\"email\": \"a@example.com\",}",
        b"\xff\xfe{}",
        b"{\"a\":1} trailing",
    ];
    for body in bodies {
        let r = app
            .post_raw(REGISTER, Some("application/json"), body.to_vec())
            .await;
        assert_problem(r, 400, "malformed_request").await;
    }
}

#[tokio::test]
async fn json_that_is_not_an_object_is_400() {
    let app = spawn_app().await;
    for body in [
        json!([]),
        json!([{ "email": EMAIL, "password": PASSWORD }]),
        json!("x"),
        json!(1),
        Value::Null,
    ] {
        let r = app.post_json(REGISTER, &body).await;
        assert_problem(r, 400, "malformed_request").await;
    }
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_crash() {
    let app = spawn_app().await;
    let depth = 20_000;
    let body = format!("{{\"email\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
    let r = app.post_raw(REGISTER, Some("application/json"), body).await;
    assert_problem(r, 400, "malformed_request").await;
    // Still serving.
    assert_status(app.register(EMAIL).await, 201).await;
}

#[tokio::test]
async fn problems_carry_every_rfc_9457_member() {
    let app = spawn_app().await;
    let body = assert_problem(app.get("/nope").await, 404, "not_found").await;
    assert_eq!(body["title"], "Not Found");
    let r = app.post_raw(REGISTER, Some("text/plain"), "hello").await;
    let body = assert_problem(r, 400, "malformed_request").await;
    assert_eq!(body["title"], "Bad Request");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let body = json_ok(app.get("/healthz").await).await;
    assert_eq!(body, json!({ "status": "ok" }));
}
