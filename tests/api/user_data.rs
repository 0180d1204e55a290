//! User data: `user_metadata` (register, `PATCH /v1/auth/me`), `app_metadata` (the admin API),
//! both in the user view; unknown register fields refused; custom claims in access tokens.

use reqwest::Method;
use serde_json::{json, Value};

use crate::admin_api::{admin_credentials, call, ok, WRITE_SECRET};
use crate::helpers::*;
use crate::jose::Jwt;

async fn patch_me(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    call(app, Method::PATCH, "/v1/auth/me", token, Some(body)).await
}

#[tokio::test]
async fn register_takes_user_metadata_and_refuses_unknown_fields() {
    let app = spawn_app().await;
    let r = app
        .post_json(
            "/v1/auth/register",
            &json!({ "email": EMAIL, "password": PASSWORD, "name": "Alice", "plan": "pro" }),
        )
        .await;
    assert_validation(r, &["name", "plan"]).await;
    for bad in [json!("Alice"), json!([1]), json!({ "bio": "x".repeat(5000) })] {
        let r = app
            .post_json(
                "/v1/auth/register",
                &json!({ "email": EMAIL, "password": PASSWORD, "user_metadata": bad }),
            )
            .await;
        assert_validation(r, &["user_metadata"]).await;
    }
    let r = app
        .post_json(
            "/v1/auth/register",
            &json!({ "email": EMAIL, "password": PASSWORD, "user_metadata": {"name": "Alice"} }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["user_metadata"], json!({"name": "Alice"}));
    assert_eq!(body["user"]["app_metadata"], json!({}));
    let login = app.login_ok(EMAIL).await;
    assert_eq!(login["user"]["user_metadata"], json!({"name": "Alice"}));
}

#[tokio::test]
async fn a_user_edits_its_own_metadata_within_bounds() {
    let app = spawn_app().await;
    let session = app.signup_and_login(EMAIL).await;
    let token = s(&session, "access_token");
    let r = json_ok(
        patch_me(
            &app,
            &token,
            json!({ "user_metadata": {"theme": "dark", "n": [1, 2]} }),
        )
        .await,
    )
    .await;
    assert_eq!(r["user"]["user_metadata"], json!({"theme": "dark", "n": [1, 2]}));
    // Plain `GET /me` answers from memory, without metadata; asked for, it reads them.
    let me = json_ok(app.me(&token).await).await;
    assert!(me["user"].get("user_metadata").is_none(), "{me}");
    let me = json_ok(app.get_authed("/v1/auth/me?include=metadata", &token).await).await;
    assert_eq!(me["user"]["user_metadata"]["theme"], "dark");
    // The next token response carries them too.
    let refreshed = app.refresh_ok(&s(&session, "refresh_token")).await;
    assert_eq!(refreshed["user"]["user_metadata"]["theme"], "dark");

    let deep = json!({"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":1}}}}}}}}});
    for bad in [
        json!({ "user_metadata": "x" }),
        json!({ "user_metadata": {"k": "x".repeat(4100)} }),
        json!({ "user_metadata": deep }),
        json!({}),
    ] {
        assert_validation(patch_me(&app, &token, bad).await, &["user_metadata"]).await;
    }
    assert_validation(
        patch_me(&app, &token, json!({ "user_metadata": {}, "app_metadata": {} })).await,
        &["app_metadata"],
    )
    .await;
    let r = app
        .client
        .patch(app.url("/v1/auth/me"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"user_metadata\": {")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "malformed_request").await;
    let r = app
        .client
        .patch(app.url("/v1/auth/me"))
        .json(&json!({ "user_metadata": {} }))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "invalid_token").await;
}

#[tokio::test]
async fn configured_app_metadata_keys_become_access_token_claims() {
    let app = spawn_app_with(|c| {
        c.admin_credentials = admin_credentials();
        c.custom_claims = vec!["tenant_id".into(), "plan".into()];
    })
    .await;
    let session = app.signup_and_login(EMAIL).await;
    let before = Jwt::parse(&s(&session, "access_token")).claims;
    assert!(before.get("tenant_id").is_none());
    let listed = ok(&app, Method::GET, "/v1/admin/users", WRITE_SECRET, None).await;
    let id = s(&listed["users"][0], "id");
    ok(
        &app,
        Method::PATCH,
        &format!("/v1/admin/users/{id}"),
        WRITE_SECRET,
        Some(json!({ "app_metadata": {"tenant_id": "t-42", "plan": {"tier": 2}, "internal": "no"} })),
    )
    .await;
    // The user cannot set it.
    let r = patch_me(
        &app,
        &s(&session, "access_token"),
        json!({ "app_metadata": {"tenant_id": "mine"} }),
    )
    .await;
    assert_validation(r, &["app_metadata", "user_metadata"]).await;
    for tokens in [
        app.refresh_ok(&s(&session, "refresh_token")).await,
        app.login_ok(EMAIL).await,
    ] {
        assert_eq!(tokens["user"]["app_metadata"]["tenant_id"], "t-42");
        let claims = Jwt::parse(&s(&tokens, "access_token")).claims;
        assert_eq!(claims["tenant_id"], "t-42");
        assert_eq!(claims["plan"], json!({"tier": 2}));
        assert!(claims.get("internal").is_none());
        assert_eq!(claims["sub"], id.as_str());
        // Still a token the server accepts.
        json_ok(app.me(&s(&tokens, "access_token")).await).await;
    }
}

#[test]
fn reserved_claim_names_are_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["config"])
        .env("TESSERA_CUSTOM_CLAIMS", "tenant_id,sub")
        .output()
        .expect("run tessera");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("custom_claims") && stderr.contains("reserved"),
        "{stderr}"
    );
}
