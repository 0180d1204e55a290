//! The admin API, `/v1/admin/`: back-office credentials with their scopes, administrators by
//! role (bearer and cookie transport), what non-administrators get, and each operation's
//! effect on what the server then does. On SQLite, or PostgreSQL with TESSERA_TEST_BACKEND.

use std::collections::BTreeSet;

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::*;

pub const WRITE_SECRET: &str = "write-secret-write-secret-write-secret-0001";
pub const READ_SECRET: &str = "read-secret-read-secret-read-secret-0000001";

pub fn admin_credentials() -> Vec<tessera::config::Secret> {
    vec![
        format!("desk:admin:write:{WRITE_SECRET}").into(),
        format!("viewer:admin:read:{READ_SECRET}").into(),
    ]
}

pub async fn admin_app() -> TestApp {
    spawn_app_with(|c| c.admin_credentials = admin_credentials()).await
}

pub async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("request")
}

pub async fn ok(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    json_ok(call(app, method, path, token, body).await).await
}

/// Creates an account through the API; returns its id.
pub async fn create(app: &TestApp, email: &str, roles: &[&str]) -> String {
    let r = call(
        app,
        Method::POST,
        "/v1/admin/users",
        WRITE_SECRET,
        Some(json!({ "email": email, "password": PASSWORD, "roles": roles })),
    )
    .await;
    assert_eq!(r.status(), 201);
    s(&r.json::<Value>().await.unwrap(), "id")
}

#[tokio::test]
async fn a_write_credential_manages_an_account_from_creation_to_deletion() {
    let app = admin_app().await;
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/users",
        WRITE_SECRET,
        Some(
            json!({ "email": " Bob@Example.com ", "password": PASSWORD, "roles": ["support"],
                     "app_metadata": {"tenant": "t1"}, "user_metadata": {"name": "Bob"} }),
        ),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["email"], "bob@example.com");
    assert_eq!(created["roles"], json!(["support"]));
    assert_eq!(created["app_metadata"], json!({"tenant": "t1"}));
    assert_eq!(created["user_metadata"], json!({"name": "Bob"}));
    let id = s(&created, "id");
    let user = format!("/v1/admin/users/{id}");

    // Signed in twice: the detail shows both sessions and the last login.
    let first = app.login_ok("bob@example.com").await;
    app.login_ok("bob@example.com").await;
    let detail = ok(&app, Method::GET, &user, READ_SECRET, None).await;
    assert_eq!(detail["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(detail["user"]["live_sessions"], 2);
    assert_eq!(detail["factors"], json!([]));
    assert_rfc3339(&detail["last_login_at"]);

    // Roles and app_metadata: the next refresh's access token carries the new roles.
    let updated = ok(
        &app,
        Method::PATCH,
        &user,
        WRITE_SECRET,
        Some(json!({ "roles": ["support", "billing"], "app_metadata": {"tenant": "t2"} })),
    )
    .await;
    assert_eq!(updated["roles"], json!(["support", "billing"]));
    assert_eq!(updated["app_metadata"], json!({"tenant": "t2"}));
    let refreshed = app.refresh_ok(&s(&first, "refresh_token")).await;
    let claims = crate::jose::Jwt::parse(&s(&refreshed, "access_token")).claims;
    assert_eq!(claims["roles"], json!(["support", "billing"]));

    // Disable: sessions revoked, logins refused; enable: logins work again.
    let r = ok(&app, Method::POST, &format!("{user}/disable"), WRITE_SECRET, None).await;
    assert_eq!(r["sessions_revoked"], 2);
    assert_problem(
        app.me(&s(&refreshed, "access_token")).await,
        401,
        "session_revoked",
    )
    .await;
    assert_problem(app.login("bob@example.com").await, 401, "invalid_credentials").await;
    let listed = ok(
        &app,
        Method::GET,
        "/v1/admin/users?disabled=true",
        READ_SECRET,
        None,
    )
    .await;
    assert_eq!(listed["users"][0]["id"], id.as_str());
    assert_status(
        call(&app, Method::POST, &format!("{user}/enable"), WRITE_SECRET, None).await,
        204,
    )
    .await;
    let session = app.login_ok("bob@example.com").await;

    // A new password: every session goes, the old password no longer works.
    let r = ok(
        &app,
        Method::POST,
        &format!("{user}/password"),
        WRITE_SECRET,
        Some(json!({ "password": "a brand new password" })),
    )
    .await;
    assert_eq!(r["sessions_revoked"], 1);
    assert_problem(
        app.refresh(&s(&session, "refresh_token")).await,
        401,
        "session_revoked",
    )
    .await;
    assert_problem(app.login("bob@example.com").await, 401, "invalid_credentials").await;
    let session = json_ok(app.login_with("bob@example.com", "a brand new password").await).await;

    // Delete: no session survives, the audit trail keeps the id without the email.
    assert_status(call(&app, Method::DELETE, &user, WRITE_SECRET, None).await, 204).await;
    assert_problem(
        app.refresh(&s(&session, "refresh_token")).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(app.me(&s(&session, "access_token")).await.status(), 401);
    assert_problem(
        call(&app, Method::GET, &user, READ_SECRET, None).await,
        404,
        "not_found",
    )
    .await;
    let audit = ok(
        &app,
        Method::GET,
        &format!("/v1/admin/audit?user_id={id}&limit=200"),
        READ_SECRET,
        None,
    )
    .await;
    let events = audit["events"].as_array().unwrap();
    assert!(events.len() >= 8, "{audit}");
    for e in events {
        assert_eq!(e["user_id"], id.as_str());
        assert!(e["email"].is_null(), "{e}");
        assert!(!e.to_string().contains("bob@example.com"), "{e}");
    }
    let kinds: BTreeSet<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for kind in [
        "admin_user_added",
        "admin_roles_set",
        "admin_user_updated",
        "admin_user_disabled",
        "admin_user_enabled",
        "admin_password_set",
        "admin_user_deleted",
        "login_succeeded",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    // Each admin event names who did it.
    let deleted = events
        .iter()
        .find(|e| e["event"] == "admin_user_deleted")
        .unwrap();
    assert_eq!(deleted["detail"]["by"], "desk");
    assert_eq!(deleted["detail"]["actor"], "credential");
}

#[tokio::test]
async fn who_may_call_it_and_what_the_others_get() {
    let app = admin_app().await;
    let target = create(&app, "target@example.com", &[]).await;
    let paths = [
        (Method::GET, "/v1/admin/users".to_owned()),
        (Method::GET, format!("/v1/admin/users/{target}")),
        (
            Method::GET,
            "/v1/admin/users/01930000-0000-7000-8000-000000000000".to_owned(),
        ),
        (Method::POST, format!("/v1/admin/users/{target}/disable")),
        (Method::GET, "/v1/admin/audit".to_owned()),
        (Method::GET, "/v1/admin/keys".to_owned()),
        (Method::GET, "/v1/admin/alerts".to_owned()),
    ];
    // Nobody, and a credential that is not configured: 401.
    for (method, path) in &paths {
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_problem(r, 401, "invalid_token").await;
        let unknown = "x".repeat(43);
        assert_problem(
            call(&app, method.clone(), path, &unknown, None).await,
            401,
            "invalid_token",
        )
        .await;
    }
    // A signed-in user without the role: 403 everywhere, an unknown id included.
    let user = app.signup_and_login("plain@example.com").await;
    for (method, path) in &paths {
        let r = call(&app, method.clone(), path, &s(&user, "access_token"), None).await;
        let body = assert_problem(r, 403, "forbidden").await;
        assert!(!body.to_string().contains("target"), "{body}");
    }
    // A read credential reads, and may change nothing.
    ok(&app, Method::GET, "/v1/admin/users", READ_SECRET, None).await;
    let r = call(
        &app,
        Method::POST,
        &format!("/v1/admin/users/{target}/disable"),
        READ_SECRET,
        None,
    )
    .await;
    assert_problem(r, 403, "forbidden").await;
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/admin/users/{target}"),
        READ_SECRET,
        None,
    )
    .await;
    assert_problem(r, 403, "forbidden").await;

    // An administrator by role: allowed, until its session is revoked (at once) ...
    create(&app, "boss@example.com", &["admin"]).await;
    let boss = app.login_ok("boss@example.com").await;
    let token = s(&boss, "access_token");
    ok(&app, Method::GET, "/v1/admin/users", &token, None).await;
    assert_status(app.revoke_session(&token, &s(&boss, "session_id")).await, 204).await;
    assert_problem(
        call(&app, Method::GET, "/v1/admin/users", &token, None).await,
        401,
        "session_revoked",
    )
    .await;
    // ... or its role is taken away (at once too, whatever its token says).
    let boss = app.login_ok("boss@example.com").await;
    let token = s(&boss, "access_token");
    let listed = ok(&app, Method::GET, "/v1/admin/users?email=boss", &token, None).await;
    let boss_id = s(&listed["users"][0], "id");
    ok(
        &app,
        Method::PATCH,
        &format!("/v1/admin/users/{boss_id}"),
        WRITE_SECRET,
        Some(json!({"roles": []})),
    )
    .await;
    assert_problem(
        call(&app, Method::GET, "/v1/admin/users", &token, None).await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn an_administrator_in_a_browser_uses_cookies_and_csrf() {
    let app = admin_app().await;
    create(&app, "boss@example.com", &["admin"]).await;
    let target = create(&app, "target@example.com", &[]).await;
    let r = app
        .post_json(
            "/v1/auth/login",
            &json!({ "email": "boss@example.com", "password": PASSWORD, "transport": "cookie" }),
        )
        .await;
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let body: Value = r.json().await.unwrap();
    let csrf = s(&body, "csrf_token");
    let cookie = cookies.join("; ");
    let send = |method: Method, path: String, csrf: Option<&str>| {
        let mut req = app
            .client
            .request(method, app.url(&path))
            .header("cookie", &cookie);
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        async move { req.send().await.unwrap() }
    };
    json_ok(send(Method::GET, "/v1/admin/users".into(), None).await).await;
    let disable = format!("/v1/admin/users/{target}/disable");
    assert_problem(
        send(Method::POST, disable.clone(), None).await,
        403,
        "csrf_failed",
    )
    .await;
    assert_problem(
        send(Method::POST, disable.clone(), Some("wrong")).await,
        403,
        "csrf_failed",
    )
    .await;
    json_ok(send(Method::POST, disable, Some(&csrf)).await).await;
    let audit = ok(
        &app,
        Method::GET,
        &format!("/v1/admin/audit?user_id={target}&kind=admin_user_disabled"),
        READ_SECRET,
        None,
    )
    .await;
    assert_eq!(audit["events"][0]["detail"]["actor"], "user");
}

#[tokio::test]
async fn listing_pages_stay_stable_while_accounts_are_added() {
    let app = admin_app().await;
    let mut before = Vec::new();
    for i in 0..12 {
        before.push(
            create(
                &app,
                &format!("user{i:02}@example.com"),
                if i % 3 == 0 { &["ops"] } else { &[] },
            )
            .await,
        );
    }
    // Pages of 5 while another task inserts accounts between the pages.
    let inserter = {
        let client = app.client.clone();
        let url = app.url("/v1/admin/users");
        tokio::spawn(async move {
            for i in 0..10 {
                let r = client
                    .post(&url)
                    .bearer_auth(WRITE_SECRET)
                    .json(&json!({ "email": format!("late{i:02}@example.com"), "password": PASSWORD }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/users?limit=5&cursor={c}"),
            None => "/v1/admin/users?limit=5".to_owned(),
        };
        let page = ok(&app, Method::GET, &path, READ_SECRET, None).await;
        seen.extend(page["users"].as_array().unwrap().iter().map(|u| s(u, "id")));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    inserter.await.unwrap();
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no account twice: {seen:?}");
    for id in &before {
        assert!(seen.contains(id), "{id} skipped");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "creation order");

    // Search and filters.
    let found = ok(
        &app,
        Method::GET,
        "/v1/admin/users?email=USER0",
        READ_SECRET,
        None,
    )
    .await;
    assert_eq!(found["users"].as_array().unwrap().len(), 10);
    let found = ok(&app, Method::GET, "/v1/admin/users?role=ops", READ_SECRET, None).await;
    assert_eq!(found["users"].as_array().unwrap().len(), 4);
    let found = ok(
        &app,
        Method::GET,
        "/v1/admin/users?created_before=2000-01-01T00:00:00Z",
        READ_SECRET,
        None,
    )
    .await;
    assert_eq!(found["users"], json!([]));
    let found = ok(
        &app,
        Method::GET,
        "/v1/admin/users?created_after=2000-01-01T00:00:00Z&email=late",
        READ_SECRET,
        None,
    )
    .await;
    assert_eq!(found["users"].as_array().unwrap().len(), 10);
    let r = call(
        &app,
        Method::GET,
        "/v1/admin/users?limit=0&disabled=maybe&created_after=yesterday&cursor=x",
        READ_SECRET,
        None,
    )
    .await;
    assert_validation(r, &["limit", "disabled", "created_after", "cursor"]).await;
}

#[tokio::test]
async fn audit_pages_keys_alerts_and_session_revocation() {
    let app = spawn_app_with(|c| {
        c.admin_credentials = admin_credentials();
        // Nobody listens there: the alerts stay in the outbox, where the API shows them.
        c.alert_webhook_url = Some("http://127.0.0.1:9/hook".into());
        c.alert_webhook_secret = Some("webhook-secret".into());
    })
    .await;
    let id = create(&app, "carol@example.com", &[]).await;
    let a = app.login_ok("carol@example.com").await;
    let b = app.login_ok("carol@example.com").await;
    let sessions = ok(
        &app,
        Method::GET,
        &format!("/v1/admin/users/{id}/sessions"),
        READ_SECRET,
        None,
    )
    .await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 2);

    // One session, then the rest.
    let one = format!("/v1/admin/sessions/{}", s(&a, "session_id"));
    assert_status(call(&app, Method::DELETE, &one, WRITE_SECRET, None).await, 204).await;
    assert_problem(app.me(&s(&a, "access_token")).await, 401, "session_revoked").await;
    assert_problem(
        call(&app, Method::DELETE, &one, WRITE_SECRET, None).await,
        404,
        "session_not_found",
    )
    .await;
    assert_problem(
        call(
            &app,
            Method::DELETE,
            "/v1/admin/sessions/nope",
            WRITE_SECRET,
            None,
        )
        .await,
        404,
        "session_not_found",
    )
    .await;
    let r = ok(
        &app,
        Method::DELETE,
        &format!("/v1/admin/users/{id}/sessions"),
        WRITE_SECRET,
        None,
    )
    .await;
    assert_eq!(r["sessions_revoked"], 1);
    assert_problem(app.refresh(&s(&b, "refresh_token")).await, 401, "session_revoked").await;

    // The audit trail, two at a time, newest first, without repeats.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = ok(
            &app,
            Method::GET,
            &format!("/v1/admin/audit?user_id={id}&limit=2{cursor}"),
            READ_SECRET,
            None,
        )
        .await;
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 2);
        seen.extend(events.iter().map(|e| (s(e, "at"), s(e, "id"))));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert!(seen.len() >= 5, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(sorted, seen, "newest first");
    let kind = ok(
        &app,
        Method::GET,
        &format!("/v1/admin/audit?user_id={id}&kind=admin_session_revoked"),
        READ_SECRET,
        None,
    )
    .await;
    assert_eq!(kind["events"].as_array().unwrap().len(), 1);
    let none = ok(
        &app,
        Method::GET,
        "/v1/admin/audit?until=2000-01-01T00:00:00Z",
        READ_SECRET,
        None,
    )
    .await;
    assert_eq!(none["events"], json!([]));

    // Keys: the one signing key; alerts: the admin actions reached the webhook's outbox.
    let keys = ok(&app, Method::GET, "/v1/admin/keys", READ_SECRET, None).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys["keys"][0]["kid"], app.kid().await.as_str());
    let alerts = ok(&app, Method::GET, "/v1/admin/alerts?limit=200", READ_SECRET, None).await;
    let events: BTreeSet<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["event"].as_str())
        .collect();
    for e in [
        "admin_user_added",
        "admin_session_revoked",
        "admin_sessions_revoked",
        "session_revoked",
    ] {
        assert!(events.contains(e), "{e} not alerted: {events:?}");
    }
}

#[tokio::test]
async fn bodies_are_checked_field_by_field() {
    let app = admin_app().await;
    let id = create(&app, "dora@example.com", &[]).await;
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/users",
        WRITE_SECRET,
        Some(json!({ "email": "nope", "password": "short", "roles": ["has space"], "app_metadata": [1] })),
    )
    .await;
    assert_validation(r, &["email", "password", "app_metadata"]).await;
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/users",
        WRITE_SECRET,
        Some(json!({ "email": "dora@example.com", "password": PASSWORD })),
    )
    .await;
    assert_problem(r, 409, "email_taken").await;
    let user = format!("/v1/admin/users/{id}");
    let too_big = json!({ "app_metadata": { "blob": "x".repeat(5000) } });
    assert_validation(
        call(&app, Method::PATCH, &user, WRITE_SECRET, Some(too_big)).await,
        &["app_metadata"],
    )
    .await;
    assert_validation(
        call(
            &app,
            Method::PATCH,
            &user,
            WRITE_SECRET,
            Some(json!({ "roles": "admin" })),
        )
        .await,
        &["roles"],
    )
    .await;
    assert_validation(
        call(
            &app,
            Method::PATCH,
            &user,
            WRITE_SECRET,
            Some(json!({ "roles": ["bad role"] })),
        )
        .await,
        &["role"],
    )
    .await;
    let r = app
        .client
        .patch(app.url(&user))
        .bearer_auth(WRITE_SECRET)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "malformed_request").await;
    let r = call(
        &app,
        Method::PATCH,
        "/v1/admin/users/01930000-0000-7000-8000-000000000000",
        WRITE_SECRET,
        Some(json!({})),
    )
    .await;
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn the_admin_api_has_its_own_rate_limit() {
    let app = spawn_app_with(|c| {
        c.admin_credentials = admin_credentials();
        c.admin_rate = 3;
    })
    .await;
    for _ in 0..3 {
        ok(&app, Method::GET, "/v1/admin/keys", READ_SECRET, None).await;
    }
    let r = call(&app, Method::GET, "/v1/admin/keys", READ_SECRET, None).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_problem(r, 429, "rate_limited").await;
    // Not the others'.
    app.signup_and_login("eve@example.com").await;
}

#[tokio::test]
async fn an_administrator_marks_an_address_verified_or_not_and_tokens_follow() {
    let app = admin_app().await;
    let id = create(&app, "checked@example.com", &[]).await;
    let user = format!("/v1/admin/users/{id}");
    let shown = ok(&app, Method::GET, &user, READ_SECRET, None).await;
    assert_eq!(shown["user"]["email_verified"], false);
    let updated = ok(
        &app,
        Method::PATCH,
        &user,
        WRITE_SECRET,
        Some(json!({ "email_verified": true })),
    )
    .await;
    assert_eq!(updated["email_verified"], true);
    let t = json_ok(app.login_with("checked@example.com", PASSWORD).await).await;
    let claims = crate::jose::Jwt::parse(&s(&t, "access_token")).claims;
    assert_eq!(claims["email_verified"], true);
    // And back: the next login's token says so.
    let updated = ok(
        &app,
        Method::PATCH,
        &user,
        WRITE_SECRET,
        Some(json!({ "email_verified": false })),
    )
    .await;
    assert_eq!(updated["email_verified"], false);
    let t = json_ok(app.login_with("checked@example.com", PASSWORD).await).await;
    let claims = crate::jose::Jwt::parse(&s(&t, "access_token")).claims;
    assert_eq!(claims["email_verified"], false);
    // Not a boolean: refused by name; a read credential may not.
    assert_problem(
        call(
            &app,
            Method::PATCH,
            &user,
            WRITE_SECRET,
            Some(json!({ "email_verified": "yes" })),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        call(
            &app,
            Method::PATCH,
            &user,
            READ_SECRET,
            Some(json!({ "email_verified": true })),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    let audited = ok(
        &app,
        Method::GET,
        "/v1/admin/audit?kind=admin_user_updated",
        READ_SECRET,
        None,
    )
    .await;
    assert!(
        audited.to_string().contains("\"email_verified\":true"),
        "the change is audited: {audited}"
    );
}

#[tokio::test]
async fn an_empty_password_is_a_validation_error_not_a_server_error() {
    let app = admin_app().await;
    let id = create(&app, "empty@example.com", &[]).await;
    // Schemathesis found these answering 500.
    let r = call(
        &app,
        Method::POST,
        &format!("/v1/admin/users/{id}/password"),
        WRITE_SECRET,
        Some(json!({ "password": "" })),
    )
    .await;
    assert_problem(r, 422, "validation_failed").await;
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/users",
        WRITE_SECRET,
        Some(json!({ "email": "another@example.com", "password": "" })),
    )
    .await;
    assert_problem(r, 422, "validation_failed").await;
}
