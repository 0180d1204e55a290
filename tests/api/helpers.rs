//! `spawn_app()`: a real Tessera on 127.0.0.1:0 with its own temporary SQLite database.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use tessera::config::Config;
use tessera::startup::Application;
use tokio::sync::oneshot;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: Client,
    pub config: Config,
    /// Keeps the database directory alive for the test's duration.
    pub dir: std::sync::Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// A config for tests: a fresh database file, port 0, rate limits off.
pub fn test_config(dir: &tempfile::TempDir) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}", dir.path().join("tessera.db").display()),
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
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&dir);
    tweak(&mut config);
    start(config, std::sync::Arc::new(dir)).await
}

/// Starts a server on an existing config/database (restart tests).
pub async fn start(config: Config, dir: std::sync::Arc<tempfile::TempDir>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        tessera::telemetry::init();
    }
    let app = Application::build(&config).await.expect("build app");
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
        dir,
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> (Config, std::sync::Arc<tempfile::TempDir>) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        (self.config.clone(), self.dir.clone())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn register(&self, email: &str) -> Response {
        self.post_json(
            "/v1/auth/register",
            &json!({ "email": email, "password": PASSWORD }),
        )
        .await
    }

    pub async fn login(&self, email: &str) -> Response {
        self.post_json("/v1/auth/login", &json!({ "email": email, "password": PASSWORD }))
            .await
    }

    /// Registers `email` and logs in once; returns the token response.
    pub async fn signup_and_login(&self, email: &str) -> Value {
        assert_eq!(self.register(email).await.status(), StatusCode::CREATED);
        let r = self.login(email).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("token response")
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/auth/refresh", &json!({ "refresh_token": refresh_token }))
            .await
    }

    pub async fn get_authed(&self, path: &str, access_token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request")
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.get_authed("/v1/auth/me", access_token).await
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("tessera.db")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts a problem+json response with `status` and `code`; returns the body.
pub async fn assert_problem(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status for expected code {code}");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/problem+json"), "content-type {ct}");
    let body: Value = r.json().await.expect("problem body");
    assert_eq!(body["code"], code, "body {body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    body
}

pub fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .to_owned()
}
