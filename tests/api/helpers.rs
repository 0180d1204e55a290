//! `spawn_app()`: a real Tessera on 127.0.0.1:0 with its own fresh database, plus the
//! requests and assertions the tests share.
//!
//! The database is a temporary SQLite file, or, with `TESSERA_TEST_BACKEND=postgres`, a fresh
//! PostgreSQL database (see `tests/support/postgres.rs`), so the whole suite runs on both.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tessera::config::Config;
use tessera::startup::Application;
use tokio::sync::oneshot;

use crate::postgres_support::TestDatabase;

pub const PASSWORD: &str = "correct horse battery staple";
pub const EMAIL: &str = "alice@example.com";

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: Client,
    pub config: Config,
    /// Keeps the database alive for the test's duration (across restarts too).
    pub storage: Arc<TestStorage>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// Where a test's data lives; dropped (file deleted, PostgreSQL database dropped) when the
/// last server using it is gone.
pub struct TestStorage {
    pub dir: tempfile::TempDir,
    postgres: Option<TestDatabase>,
}

impl Drop for TestStorage {
    fn drop(&mut self) {
        if let Some(db) = self.postgres.take() {
            // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(db.drop_database());
                }
            })
            .join();
        }
    }
}

/// A fresh database for one test, on the backend `TESSERA_TEST_BACKEND` names.
pub async fn test_storage() -> TestStorage {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = match std::env::var("TESSERA_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(
            TestDatabase::create("api")
                .await
                .expect("TESSERA_TEST_BACKEND=postgres needs a reachable PostgreSQL"),
        ),
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("unknown TESSERA_TEST_BACKEND {other:?} (sqlite or postgres)"),
    };
    TestStorage { dir, postgres }
}

/// A config for tests: the storage's database, port 0, rate limits off.
pub fn test_config(storage: &TestStorage) -> Config {
    let database_url = match &storage.postgres {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", storage.dir.path().join("tessera.db").display()),
    };
    Config {
        listen: "127.0.0.1:0".into(),
        database_url,
        login_rate: 0,
        refresh_rate: 0,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns with the default test config changed by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let storage = test_storage().await;
    let mut config = test_config(&storage);
    tweak(&mut config);
    start(config, Arc::new(storage)).await
}

/// Starts a server on an existing config/database (restart tests).
pub async fn start(config: Config, storage: Arc<TestStorage>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        tessera::telemetry::init(tessera::config::LogFormat::Text);
    }
    let app = Application::build(&config).await.expect("build app");
    serve(app, config, storage)
}

/// Runs an application the test built itself (its own clock, say) on `config` and `storage`.
pub fn serve(app: Application, config: Config, storage: Arc<TestStorage>) -> TestApp {
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = rx.await;
        })
        .await
        .expect("server ran");
    });
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        config,
        storage,
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    /// The audit events of the account with `email`, newest first, read from its database.
    pub async fn audit_events(&self, email: &str) -> Vec<tessera::store::StoredAuditEvent> {
        let store = tessera::store::connect(&self.config.database_url, 1)
            .await
            .expect("connect to the test database");
        let email = tessera::domain::Email::parse(email).expect("email");
        let user = store
            .find_user_by_email(&email)
            .await
            .expect("find user")
            .expect("the account exists");
        let filter = tessera::store::AuditFilter {
            user: Some(user.id),
            limit: 1000,
            ..Default::default()
        };
        store.find_audit_events(&filter).await.expect("audit events")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> (Config, Arc<TestStorage>) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        (self.config.clone(), Arc::clone(&self.storage))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        send(self.client.post(self.url(path)).json(body)).await
    }

    /// A POST with an arbitrary body and content type (`None`: no Content-Type header).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        send(req).await
    }

    /// A POST with a bearer token and an optional JSON body (no body: no Content-Type either).
    pub async fn post_authed(&self, path: &str, access_token: &str, body: Option<&Value>) -> Response {
        let mut req = self.client.post(self.url(path)).bearer_auth(access_token);
        if let Some(body) = body {
            req = req.json(body);
        }
        send(req).await
    }

    pub async fn get(&self, path: &str) -> Response {
        send(self.client.get(self.url(path))).await
    }

    pub async fn get_authed(&self, path: &str, access_token: &str) -> Response {
        send(self.client.get(self.url(path)).bearer_auth(access_token)).await
    }

    /// A GET with a raw `Authorization` header value.
    pub async fn get_with_authorization(&self, path: &str, authorization: &str) -> Response {
        send(
            self.client
                .get(self.url(path))
                .header(AUTHORIZATION, authorization),
        )
        .await
    }

    pub async fn delete_authed(&self, path: &str, access_token: &str) -> Response {
        send(self.client.delete(self.url(path)).bearer_auth(access_token)).await
    }

    pub async fn register(&self, email: &str) -> Response {
        self.register_with(email, PASSWORD).await
    }

    pub async fn register_with(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/auth/register",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn login(&self, email: &str) -> Response {
        self.login_with(email, PASSWORD).await
    }

    pub async fn login_with(&self, email: &str, password: &str) -> Response {
        self.post_json("/v1/auth/login", &json!({ "email": email, "password": password }))
            .await
    }

    /// Logs in (the account must exist); returns the token response.
    pub async fn login_ok(&self, email: &str) -> Value {
        json_ok(self.login(email).await).await
    }

    /// Registers `email` and logs in once; returns the token response.
    pub async fn signup_and_login(&self, email: &str) -> Value {
        assert_eq!(self.register(email).await.status(), StatusCode::CREATED);
        self.login_ok(email).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/auth/refresh", &json!({ "refresh_token": refresh_token }))
            .await
    }

    /// Refreshes and asserts success; returns the token response.
    pub async fn refresh_ok(&self, refresh_token: &str) -> Value {
        json_ok(self.refresh(refresh_token).await).await
    }

    /// Rotates `refresh_token`, then presents it again: with a grace window of 0, a reuse
    /// detection (asserted `401 refresh_token_reused`).
    pub async fn reuse_refresh_token(&self, refresh_token: &str) {
        self.refresh_ok(refresh_token).await;
        assert_problem(self.refresh(refresh_token).await, 401, "refresh_token_reused").await;
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.get_authed("/v1/auth/me", access_token).await
    }

    /// The caller's live sessions as listed by `GET /v1/auth/sessions`.
    pub async fn sessions(&self, access_token: &str) -> Vec<Value> {
        let body = json_ok(self.get_authed("/v1/auth/sessions", access_token).await).await;
        body["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("sessions array missing in {body}"))
            .clone()
    }

    /// The ids of the caller's live sessions, in the order listed.
    pub async fn session_ids(&self, access_token: &str) -> Vec<String> {
        self.sessions(access_token)
            .await
            .iter()
            .map(|session| s(session, "id"))
            .collect()
    }

    pub async fn revoke_session(&self, access_token: &str, session_id: &str) -> Response {
        self.delete_authed(&format!("/v1/auth/sessions/{session_id}"), access_token)
            .await
    }

    pub async fn logout_with_refresh_token(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/auth/logout", &json!({ "refresh_token": refresh_token }))
            .await
    }

    pub async fn logout_with_bearer(&self, access_token: &str) -> Response {
        self.post_authed("/v1/auth/logout", access_token, None).await
    }

    /// `POST /v1/auth/logout-all`, with `{"scope": scope}` or no body at all.
    pub async fn logout_all(&self, access_token: &str, scope: Option<&str>) -> Response {
        let body = scope.map(|scope| json!({ "scope": scope }));
        self.post_authed("/v1/auth/logout-all", access_token, body.as_ref())
            .await
    }

    pub async fn jwks(&self) -> Value {
        json_ok(self.get("/.well-known/jwks.json").await).await
    }

    /// The `kid` of the one key the server publishes.
    pub async fn kid(&self) -> String {
        let jwks = self.jwks().await;
        let keys = jwks["keys"].as_array().expect("keys array");
        assert_eq!(keys.len(), 1, "one signing key expected: {jwks}");
        s(&keys[0], "kid")
    }

    pub fn db_path(&self) -> PathBuf {
        self.storage.dir.path().join("tessera.db")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn send(req: RequestBuilder) -> Response {
    req.send().await.expect("request")
}

/// Asserts a `200` and returns the JSON body.
pub async fn json_ok(r: Response) -> Value {
    let status = r.status();
    let body = r.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "body {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Asserts the status (showing the body when it differs).
pub async fn assert_status(r: Response, status: u16) {
    let actual = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(actual, status, "body {body}");
}

/// Asserts a problem+json response with `status` and `code`, and the RFC 9457 members every
/// problem carries; returns the body.
pub async fn assert_problem(r: Response, status: u16, code: &str) -> Value {
    let actual = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await.expect("problem body");
    assert_eq!(actual, status, "status for expected code {code}; body {text}");
    assert!(ct.starts_with("application/problem+json"), "content-type {ct}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(body["code"], code, "body {body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    for member in ["title", "detail"] {
        assert!(
            body[member].as_str().is_some_and(|t| !t.is_empty()),
            "{member} missing in {body}"
        );
    }
    body
}

/// Asserts `422 validation_failed` whose `errors` name exactly `fields` (in any order).
pub async fn assert_validation(r: Response, fields: &[&str]) -> Value {
    let body = assert_problem(r, 422, "validation_failed").await;
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors array missing in {body}"));
    let mut named: Vec<String> = errors.iter().map(|e| s(e, "field")).collect();
    named.sort();
    named.dedup();
    let mut expected: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(named, expected, "errors {body}");
    for e in errors {
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    body
}

/// The string `key` of `v` (panics if it is missing or not a string).
pub fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .to_owned()
}

/// Asserts `v` is a UUID string.
pub fn assert_uuid(v: &Value) {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    assert!(uuid::Uuid::try_parse(text).is_ok(), "not a UUID: {text}");
}

/// Asserts `v` is an RFC 3339 UTC time string.
pub fn assert_rfc3339(v: &Value) {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"));
    assert_eq!(t.offset(), time::UtcOffset::UTC, "not UTC: {text}");
}

/// Asserts `v` is `{"id", "email", "created_at"}` for `email`.
pub fn assert_user(v: &Value, email: &str) {
    assert_uuid(&v["id"]);
    assert_eq!(v["email"], email, "{v}");
    assert_rfc3339(&v["created_at"]);
}
