//! The alert webhook: a signed JSON POST when reuse detection revokes a session, queued in
//! the database's outbox and retried until a 2xx (across restarts), delivered to a local
//! receiver started inside the test.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use reqwest::Client;
use serde_json::Value;
use tessera::config::Config;
use tokio::sync::mpsc;

use crate::admin_cli;
use crate::helpers::*;

const SECRET: &str = "s3cret";
const USER_AGENT: &str = "stolen-device/1.0";

/// One POST the receiver got.
struct Delivery {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct ReceiverState {
    deliveries: mpsc::UnboundedSender<Delivery>,
    /// Statuses to answer with, in order; 200 once they run out.
    script: Arc<Mutex<VecDeque<StatusCode>>>,
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let _ = state.deliveries.send(Delivery { headers, body });
    let mut script = state.script.lock().unwrap_or_else(|p| p.into_inner());
    script.pop_front().unwrap_or(StatusCode::OK)
}

/// A webhook receiver on 127.0.0.1, served for the rest of the test.
struct Receiver {
    url: String,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
}

impl Receiver {
    /// Starts a receiver that answers its POSTs with `script`, then 200.
    async fn start(script: &[StatusCode]) -> Receiver {
        let (tx, deliveries) = mpsc::unbounded_channel();
        let state = ReceiverState {
            deliveries: tx,
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let router = Router::new().route("/alerts", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { url, deliveries }
    }

    /// The next delivery, which must arrive within `within`.
    async fn next(&mut self, within: Duration) -> Delivery {
        tokio::time::timeout(within, self.deliveries.recv())
            .await
            .unwrap_or_else(|_| panic!("no alert within {within:?}"))
            .expect("receiver running")
    }

    /// Asserts nothing more arrives for `period`.
    async fn assert_quiet(&mut self, period: Duration) {
        if let Ok(Some(d)) = tokio::time::timeout(period, self.deliveries.recv()).await {
            panic!("unexpected delivery: {}", String::from_utf8_lossy(&d.body));
        }
    }
}

/// A server with grace 0 whose `refresh_token_reused` alerts (only: reuse detection also
/// raises `session_revoked`) go to `url`, signed with [`SECRET`], and whose client sends
/// [`USER_AGENT`].
async fn spawn_alerting_to(url: &str) -> TestApp {
    spawn_alerting_with(url, only_reuse).await
}

fn only_reuse(c: &mut Config) {
    c.alert_events = vec!["refresh_token_reused".into()];
}

/// [`spawn_alerting_to`], with more settings.
async fn spawn_alerting_with(url: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let app = spawn_app_with(|c| {
        c.alert_webhook_url = Some(url.to_owned());
        c.alert_webhook_secret = Some(SECRET.into());
        c.reuse_grace = Duration::ZERO;
        tweak(c);
    })
    .await;
    with_user_agent(app)
}

/// `app` with a client that sends [`USER_AGENT`].
fn with_user_agent(mut app: TestApp) -> TestApp {
    app.client = Client::builder()
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    app
}

/// Signs up, logs in and triggers reuse detection; returns the token response.
async fn trigger_reuse(app: &TestApp) -> Value {
    let t = app.signup_and_login(EMAIL).await;
    app.reuse_refresh_token(&s(&t, "refresh_token")).await;
    t
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under [`SECRET`].
fn expected_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn header<'a>(d: &'a Delivery, name: &str) -> &'a str {
    d.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn reuse_detection_posts_one_signed_alert() {
    let mut receiver = Receiver::start(&[]).await;
    let app = spawn_alerting_to(&receiver.url).await;
    let t = trigger_reuse(&app).await;

    let alert = receiver.next(Duration::from_secs(3)).await;
    let content_type = header(&alert, "content-type");
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert_eq!(
        header(&alert, "x-tessera-signature"),
        expected_signature(&alert.body)
    );
    // The timestamped signature: over "<timestamp>.<body>", with a current timestamp.
    let timestamp = header(&alert, "x-tessera-timestamp");
    let signed_at: i64 = timestamp.parse().expect("Unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    assert!((now - signed_at).abs() <= 5, "signed at {signed_at}, now {now}");
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&alert.body);
    assert_eq!(
        header(&alert, "x-tessera-timestamp-signature"),
        expected_signature(&signed)
    );
    assert_ne!(
        header(&alert, "x-tessera-timestamp-signature"),
        expected_signature(&alert.body),
        "the timestamp is part of what is signed"
    );
    let body: Value = serde_json::from_slice(&alert.body).expect("JSON alert");
    assert_uuid(&body["id"]);
    assert_eq!(body["event"], "refresh_token_reused");
    assert_rfc3339(&body["at"]);
    assert_eq!(body["user_id"], t["user"]["id"]);
    assert_eq!(body["session_id"], t["session_id"]);
    assert_eq!(body["ip"], "127.0.0.1");
    assert_eq!(body["user_agent"], USER_AGENT);
    // Answered 200: no retry (the first would come 1 s later).
    receiver.assert_quiet(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_refused_alert_is_retried_until_a_2xx() {
    let mut receiver = Receiver::start(&[StatusCode::INTERNAL_SERVER_ERROR]).await;
    let app = spawn_alerting_to(&receiver.url).await;
    trigger_reuse(&app).await;

    let first = receiver.next(Duration::from_secs(3)).await;
    let retry = receiver.next(Duration::from_secs(3)).await;
    assert_eq!(retry.body, first.body, "the same alert");
    assert_eq!(
        header(&retry, "x-tessera-signature"),
        expected_signature(&retry.body)
    );
    // Accepted the second time: no third attempt (it would come 2 s later).
    receiver.assert_quiet(Duration::from_millis(2500)).await;
}

#[tokio::test]
async fn reuse_detection_works_without_a_webhook_or_with_an_unreachable_one() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/alerts", listener.local_addr().expect("addr"))
    };
    for url in [None, Some(closed)] {
        let app = spawn_app_with(|c| {
            c.alert_webhook_url = url;
            c.alert_webhook_secret = Some(SECRET.into());
            c.reuse_grace = Duration::ZERO;
        })
        .await;
        trigger_reuse(&app).await;
        app.login_ok(EMAIL).await;
    }
}

#[tokio::test]
async fn an_https_webhook_gets_a_tls_handshake() {
    // Built without a TLS stack, the client never even connected to an https URL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}/alerts", listener.local_addr().expect("addr"));
    let app = spawn_alerting_to(&url).await;
    trigger_reuse(&app).await;
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(3), listener.accept())
        .await
        .expect("the alert connects within 3 s")
        .expect("accept");
    let mut first = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut socket, &mut first)
        .await
        .expect("a first byte");
    assert_eq!(first[0], 0x16, "a TLS handshake record");
}

#[tokio::test]
async fn logging_out_with_a_stolen_ancestor_is_reported_as_reuse() {
    let mut receiver = Receiver::start(&[]).await;
    let app = spawn_alerting_to(&receiver.url).await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.refresh_ok(&s(&a, "refresh_token")).await;
    let c = app.refresh_ok(&s(&b, "refresh_token")).await;
    // A, two rotations old, comes back at logout: 204 as ever, but it is theft, not a logout.
    assert_status(app.logout_with_refresh_token(&s(&a, "refresh_token")).await, 204).await;
    let alert = receiver.next(Duration::from_secs(3)).await;
    let body: Value = serde_json::from_slice(&alert.body).expect("JSON alert");
    assert_eq!(body["event"], "refresh_token_reused");
    assert_eq!(body["session_id"], c["session_id"]);
    assert_problem(app.me(&s(&c, "access_token")).await, 401, "session_revoked").await;
}

#[tokio::test]
async fn an_ordinary_logout_raises_no_alert() {
    let mut receiver = Receiver::start(&[]).await;
    let app = spawn_alerting_with(&receiver.url, |_| {}).await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.refresh_ok(&s(&a, "refresh_token")).await;
    assert_status(app.logout_with_refresh_token(&s(&b, "refresh_token")).await, 204).await;
    receiver.assert_quiet(Duration::from_millis(500)).await;
    assert_problem(app.me(&s(&b, "access_token")).await, 401, "session_revoked").await;
}

#[tokio::test]
async fn an_undelivered_alert_survives_a_restart_and_arrives_once() {
    let failed = StatusCode::SERVICE_UNAVAILABLE;
    let mut receiver = Receiver::start(&[failed, failed, failed]).await;
    let fast_retries = |c: &mut Config| {
        c.alert_retry_min = Duration::from_millis(200);
        c.alert_retry_max = Duration::from_millis(400);
        only_reuse(c);
    };
    let app = spawn_alerting_with(&receiver.url, fast_retries).await;
    trigger_reuse(&app).await;
    let first = receiver.next(Duration::from_secs(3)).await;
    let second = receiver.next(Duration::from_secs(3)).await;
    assert_eq!(second.body, first.body);
    // Queued, not delivered, as the operator sees it.
    let pending = admin_cli::tessera(&app, &["alerts", "list", "--pending", "--json"], None)
        .await
        .json_lines();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["event"], "refresh_token_reused");
    // Let the failure be recorded, then stop before the next attempt (due 400 ms later).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (config, storage) = app.stop().await;
    receiver.assert_quiet(Duration::from_millis(800)).await;

    let app = start(config, storage).await;
    let third = receiver.next(Duration::from_secs(5)).await;
    let fourth = receiver.next(Duration::from_secs(5)).await;
    let id = |d: &Delivery| {
        let body: Value = serde_json::from_slice(&d.body).expect("JSON alert");
        body["id"].clone()
    };
    assert_uuid(&id(&first));
    for later in [&second, &third, &fourth] {
        assert_eq!(id(later), id(&first), "one alert, one stable id");
        assert_eq!(
            header(later, "x-tessera-signature"),
            expected_signature(&later.body)
        );
    }
    assert_eq!(pending[0]["id"], id(&first));
    assert_eq!(pending[0]["payload"]["id"], id(&first));
    // The fourth was answered 200: it is never sent again, and the outbox says so.
    receiver.assert_quiet(Duration::from_millis(1500)).await;
    let pending = admin_cli::tessera(&app, &["alerts", "list", "--pending"], None).await;
    assert_eq!(
        pending.out().lines().count(),
        1,
        "only the header: {}",
        pending.out()
    );
    let all = admin_cli::tessera(&app, &["alerts", "list", "--json"], None)
        .await
        .json_lines();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["attempts"], 4);
    assert_rfc3339(&all[0]["delivered_at"]);
}

#[tokio::test]
async fn a_plain_http_webhook_to_another_host_is_refused_at_start() {
    let storage = test_storage().await;
    let mut config = test_config(&storage);
    config.alert_webhook_url = Some("http://alerts.example/services/s3cretpath".into());
    config.alert_webhook_secret = Some(SECRET.into());
    let Err(e) = tessera::startup::Application::build(&config).await else {
        panic!("a plain http webhook to a remote host must be refused");
    };
    let said = e.to_string();
    assert!(said.contains("https"), "{said}");
    assert!(
        !said.contains("s3cretpath"),
        "the URL's path may be a secret: {said}"
    );
}

/// Receives deliveries until every event of `expected` has come (or the time is up); returns
/// the bodies by event.
async fn collect(receiver: &mut Receiver, expected: &[&str], within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut bodies: Vec<Value> = Vec::new();
    while !expected.iter().all(|e| bodies.iter().any(|b| b["event"] == *e)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(d)) = tokio::time::timeout(left, receiver.deliveries.recv()).await else {
            let seen: Vec<_> = bodies.iter().map(|b| b["event"].clone()).collect();
            panic!("expected {expected:?}, got {seen:?}");
        };
        assert_eq!(header(&d, "x-tessera-signature"), expected_signature(&d.body));
        bodies.push(serde_json::from_slice(&d.body).expect("JSON alert"));
    }
    bodies
}

fn the<'a>(bodies: &'a [Value], event: &str) -> Vec<&'a Value> {
    bodies.iter().filter(|b| b["event"] == event).collect()
}

#[tokio::test]
async fn each_security_event_reaches_the_receiver() {
    let mut receiver = Receiver::start(&[]).await;
    let app = spawn_alerting_with(&receiver.url, |c| c.lockout_threshold = 4).await;
    // The account's first login is no news; a second device is.
    let home = app.signup_and_login(EMAIL).await;
    let body = serde_json::json!({ "email": EMAIL, "password": PASSWORD });
    let other = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("user-agent", "other-device/2.0")
        .json(&body)
        .send()
        .await
        .expect("login");
    let other = json_ok(other).await;
    let bodies = collect(&mut receiver, &["login_new_device"], Duration::from_secs(3)).await;
    assert_eq!(
        the(&bodies, "login_new_device")[0]["session_id"],
        other["session_id"]
    );
    assert_eq!(
        the(&bodies, "login_new_device")[0]["user_agent"],
        "other-device/2.0"
    );
    // The same device again: nothing new.
    app.login_ok(EMAIL).await;

    // Revoking another of one's sessions.
    let access = s(&home, "access_token");
    assert_status(app.revoke_session(&access, &s(&other, "session_id")).await, 204).await;
    let bodies = collect(&mut receiver, &["session_revoked"], Duration::from_secs(3)).await;
    let revoked = the(&bodies, "session_revoked")[0];
    assert_eq!(revoked["session_id"], other["session_id"]);
    assert_eq!(revoked["detail"]["by"], "user");

    // A password change, which ends the other sessions.
    let change =
        serde_json::json!({"current_password": PASSWORD, "new_password": "a much better passphrase"});
    let changed = json_ok(app.post_authed("/v1/auth/password", &access, Some(&change)).await).await;
    let bodies = collect(
        &mut receiver,
        &["password_changed", "session_revoked"],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        the(&bodies, "session_revoked")[0]["detail"]["by"],
        "password_change"
    );

    // Reuse detection.
    app.reuse_refresh_token(&s(&changed, "refresh_token")).await;
    let bodies = collect(
        &mut receiver,
        &["refresh_token_reused", "session_revoked"],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        the(&bodies, "session_revoked")[0]["detail"]["by"],
        "reuse_detection"
    );

    // Failed logins: half the threshold is a burst, the threshold locks.
    for _ in 0..2 {
        assert_problem(
            app.login_with(EMAIL, "wrong password!").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    collect(&mut receiver, &["login_failed_burst"], Duration::from_secs(3)).await;
    for _ in 0..2 {
        app.login_with(EMAIL, "wrong password!").await;
    }
    collect(&mut receiver, &["account_locked"], Duration::from_secs(3)).await;

    // A new signing algorithm at start rotates the key.
    let (mut config, storage) = app.stop().await;
    config.signing_alg = tessera::tokens::SigningAlg::ES256;
    let _app = start(config, storage).await;
    let bodies = collect(&mut receiver, &["signing_key_rotated"], Duration::from_secs(3)).await;
    let rotated = the(&bodies, "signing_key_rotated")[0];
    assert_eq!(rotated["detail"]["alg"], "ES256");
    assert_eq!(rotated["detail"]["by"], "algorithm_change");
}

#[tokio::test]
async fn alert_events_selects_what_reaches_the_webhook() {
    let mut receiver = Receiver::start(&[]).await;
    let app = spawn_alerting_with(&receiver.url, |c| {
        c.alert_events = vec!["password_changed".into()];
    })
    .await;
    let t = trigger_reuse(&app).await;
    let fresh = app.login_ok(EMAIL).await;
    let change =
        serde_json::json!({"current_password": PASSWORD, "new_password": "a much better passphrase"});
    json_ok(
        app.post_authed("/v1/auth/password", &s(&fresh, "access_token"), Some(&change))
            .await,
    )
    .await;
    let alert = receiver.next(Duration::from_secs(3)).await;
    let body: Value = serde_json::from_slice(&alert.body).expect("JSON alert");
    assert_eq!(body["event"], "password_changed");
    assert_eq!(body["user_id"], t["user"]["id"]);
    // Not the reuse, nor the revocations: only what was asked for.
    receiver.assert_quiet(Duration::from_millis(1500)).await;
}

/// Runs `tessera ARGS` on `app`'s database with its webhook settings, off the test's runtime.
async fn tessera_with_webhook(app: &TestApp, url: &str, args: &[&str]) -> String {
    let db = app.config.database_url.clone();
    let dir = app.storage.dir.path().to_owned();
    let (url, args): (String, Vec<String>) = (url.to_owned(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("TESSERA_")) {
            cmd.env_remove(name);
        }
        let out = cmd
            .args(&args)
            .current_dir(dir)
            .env("TESSERA_DATABASE_URL", db)
            .env("TESSERA_ALERT_WEBHOOK_URL", url)
            .env("TESSERA_ALERT_WEBHOOK_SECRET", SECRET)
            .env("USER", "test-operator")
            .env_remove("SUDO_USER")
            .output()
            .expect("run tessera");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn command_line_revocations_and_rotations_are_delivered_by_the_server() {
    let mut receiver = Receiver::start(&[]).await;
    let app = spawn_alerting_with(&receiver.url, |_| {}).await;
    let t = app.signup_and_login(EMAIL).await;
    tessera_with_webhook(&app, &receiver.url, &["sessions", "revoke", "--user", EMAIL]).await;
    let bodies = collect(&mut receiver, &["session_revoked"], Duration::from_secs(5)).await;
    let revoked = the(&bodies, "session_revoked")[0];
    assert_eq!(revoked["user_id"], t["user"]["id"]);
    assert_eq!(revoked["detail"]["by"], "admin");
    assert_eq!(revoked["detail"]["admin"], "test-operator");
    assert_eq!(revoked["detail"]["sessions"], 1);

    let said = tessera_with_webhook(&app, &receiver.url, &["rotate-key"]).await;
    let bodies = collect(&mut receiver, &["signing_key_rotated"], Duration::from_secs(5)).await;
    let rotated = the(&bodies, "signing_key_rotated")[0];
    let kid = rotated["detail"]["kid"].as_str().expect("kid");
    assert!(said.contains(kid), "{said}");
    assert_eq!(rotated["detail"]["by"], "rotate_key_command");

    // An emergency revocation of the key just rotated in: alerted, naming its replacement.
    tessera_with_webhook(&app, &receiver.url, &["keys", "revoke", kid]).await;
    let bodies = collect(&mut receiver, &["signing_key_revoked"], Duration::from_secs(5)).await;
    let revoked = the(&bodies, "signing_key_revoked")[0];
    assert_eq!(revoked["detail"]["kid"], kid);
    assert_eq!(revoked["detail"]["admin"], "test-operator");
    assert!(revoked["detail"]["signing"].as_str().is_some_and(|k| k != kid));
}
