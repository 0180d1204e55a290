//! `POST /v1/auth/register`: the created user, email normalisation, duplicates, validation.

use serde_json::{json, Value};

use crate::helpers::*;

async fn register_body(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/v1/auth/register", &body).await
}

#[tokio::test]
async fn register_answers_201_with_the_user() {
    let app = spawn_app().await;
    let r = app.register(EMAIL).await;
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.unwrap();
    assert_user(&body["user"], EMAIL);
    assert_eq!(body["user"]["email_verified"], false, "{body}");
    assert_eq!(
        body["user"].as_object().unwrap().len(),
        6,
        "only id, email, created_at, email_verified and the (empty) metadata: {body}"
    );
    assert_eq!(body["user"]["user_metadata"], serde_json::json!({}));
    assert_eq!(body["user"]["app_metadata"], serde_json::json!({}));
    assert!(body["user"].get("password_hash").is_none());
}

#[tokio::test]
async fn email_is_stored_trimmed_and_lowercased() {
    let app = spawn_app().await;
    let r = app.register("  Alice@Example.COM \t").await;
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["email"], EMAIL);
    // The normalised address logs in, however the client cases it.
    let tokens = app.login_ok("ALICE@example.com").await;
    assert_eq!(tokens["user"]["email"], EMAIL);
    assert_eq!(tokens["user"]["id"], body["user"]["id"]);
}

#[tokio::test]
async fn duplicate_email_is_409_email_taken_case_insensitively() {
    let app = spawn_app().await;
    assert_status(app.register(EMAIL).await, 201).await;
    assert_problem(app.register(EMAIL).await, 409, "email_taken").await;
    assert_problem(app.register(" ALICE@EXAMPLE.COM ").await, 409, "email_taken").await;
}

#[tokio::test]
async fn bad_email_is_a_validation_error_naming_email() {
    let app = spawn_app().await;
    for bad in [
        "",
        "   ",
        "not-an-email",
        "a@b",
        "@example.com",
        "alice@",
        "a b@example.com",
    ] {
        assert_validation(app.register(bad).await, &["email"]).await;
    }
}

#[tokio::test]
async fn password_must_be_8_to_1024_characters() {
    let app = spawn_app().await;
    assert_validation(app.register_with(EMAIL, "1234567").await, &["password"]).await;
    assert_validation(app.register_with(EMAIL, &"x".repeat(1025)).await, &["password"]).await;
    assert_status(app.register_with(EMAIL, "12345678").await, 201).await;
    assert_status(
        app.register_with("long@example.com", &"x".repeat(1024)).await,
        201,
    )
    .await;
}

#[tokio::test]
async fn password_length_counts_unicode_characters_not_bytes() {
    let app = spawn_app().await;
    // 7 characters but 14 bytes: too short.
    assert_validation(app.register_with(EMAIL, &"é".repeat(7)).await, &["password"]).await;
    // 8 characters: fine, and it logs in.
    assert_status(app.register_with(EMAIL, &"é".repeat(8)).await, 201).await;
    json_ok(app.login_with(EMAIL, &"é".repeat(8)).await).await;
    // 1024 characters but 2048 bytes: still fine.
    assert_status(
        app.register_with("long@example.com", &"é".repeat(1024)).await,
        201,
    )
    .await;
}

#[tokio::test]
async fn missing_fields_are_named() {
    let app = spawn_app().await;
    assert_validation(register_body(&app, json!({})).await, &["email", "password"]).await;
    assert_validation(
        register_body(&app, json!({ "email": EMAIL })).await,
        &["password"],
    )
    .await;
    assert_validation(
        register_body(&app, json!({ "password": PASSWORD })).await,
        &["email"],
    )
    .await;
    assert_validation(
        register_body(&app, json!({ "email": null, "password": PASSWORD })).await,
        &["email"],
    )
    .await;
}

#[tokio::test]
async fn wrong_types_are_named() {
    let app = spawn_app().await;
    let body = json!({ "email": 42, "password": ["not", "a", "string"] });
    assert_validation(register_body(&app, body).await, &["email", "password"]).await;
    let body = json!({ "email": EMAIL, "password": 12345678 });
    assert_validation(register_body(&app, body).await, &["password"]).await;
}

#[tokio::test]
async fn every_bad_field_is_reported_at_once() {
    let app = spawn_app().await;
    assert_validation(app.register_with("nope", "short").await, &["email", "password"]).await;
}

#[tokio::test]
async fn a_rejected_registration_creates_no_account() {
    let app = spawn_app().await;
    assert_validation(app.register_with(EMAIL, "short").await, &["password"]).await;
    assert_status(app.register(EMAIL).await, 201).await;
}
