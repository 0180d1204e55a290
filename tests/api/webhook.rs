//! The alert webhook: a signed JSON POST when reuse detection revokes a session, retried
//! until a 2xx, delivered by a local receiver started inside the test.

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
use tokio::sync::mpsc;

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

/// A server with grace 0 whose alerts go to `url`, signed with [`SECRET`], and whose client
/// sends [`USER_AGENT`].
async fn spawn_alerting_to(url: &str) -> TestApp {
    let mut app = spawn_app_with(|c| {
        c.alert_webhook_url = Some(url.to_owned());
        c.alert_webhook_secret = Some(SECRET.into());
        c.reuse_grace = Duration::ZERO;
    })
    .await;
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
    let app = spawn_alerting_to(&receiver.url).await;
    let a = app.signup_and_login(EMAIL).await;
    let b = app.refresh_ok(&s(&a, "refresh_token")).await;
    assert_status(app.logout_with_refresh_token(&s(&b, "refresh_token")).await, 204).await;
    receiver.assert_quiet(Duration::from_millis(500)).await;
    assert_problem(app.me(&s(&b, "access_token")).await, 401, "session_revoked").await;
}
