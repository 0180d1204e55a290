//! The example service between a client and the real Tessera: sign in at Tessera, call the
//! example with the token it gave, and see what it lets through.

// The Tessera launcher of the verifier crate's own tests (it finds target/debug/tessera
// next to this test too: one workspace, one target directory).
#[path = "../../../tessera-verify/tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::Duration;

use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};
use support::{Tessera, AUDIENCE, ISSUER, PASSWORD};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The example binary, listening on a free port, trusting the keys at `jwks_url`.
async fn start_example(jwks_url: &str) -> (Child, String) {
    start_example_with(jwks_url, &[]).await
}

/// The example with more settings (`env`).
async fn start_example_with(jwks_url: &str, env: &[(&str, String)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum-api"))
        .env("TESSERA_ISSUER", ISSUER)
        .env("TESSERA_AUDIENCE", AUDIENCE)
        .env("TESSERA_JWKS_URL", jwks_url)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::null())
        .env("LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            if let Some(url) = line.strip_prefix("listening on ") {
                return url.trim().to_string();
            }
        }
        panic!("the example exited before listening");
    })
    .await
    .expect("the example did not start");
    (child, base)
}

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    (status, response.json().await.expect("problem body"))
}

#[tokio::test]
async fn routes_are_protected_by_token_role_and_csrf() {
    let tessera = Tessera::start(&[]).await;
    let (_example, base) = start_example(&tessera.jwks_url()).await;
    let client = Client::new();
    let email = "orders@example.com";
    let grant = tessera.login(email).await;
    let token = grant["access_token"].as_str().unwrap();

    let anonymous = client.get(format!("{base}/orders")).send().await.unwrap();
    assert!(anonymous.headers().contains_key(header::WWW_AUTHENTICATE));
    let (status, body) = problem(anonymous).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    let orders = client
        .get(format!("{base}/orders"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(orders.status(), StatusCode::OK);
    let orders: Value = orders.json().await.unwrap();
    assert_eq!(orders["user_id"], grant["user"]["id"]);
    assert_eq!(orders["session_id"], grant["session_id"]);

    let report = client
        .get(format!("{base}/admin/report"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(report).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );

    // Roles travel in the token: granted now, they show in the next token Tessera issues.
    tessera.cli(&[], &["users", "set-roles", email, "admin"]).await;
    let admin_token = tessera.login(email).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let report = client
        .get(format!("{base}/admin/report"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), StatusCode::OK);
    assert_eq!(report.json::<Value>().await.unwrap()["roles"], json!(["admin"]));
}

#[tokio::test]
async fn cookie_callers_need_the_csrf_header_on_unsafe_methods() {
    let tessera = Tessera::start(&[]).await;
    let (_example, base) = start_example(&tessera.jwks_url()).await;
    let client = Client::new();
    let email = "browser@example.com";
    tessera.login(email).await; // registers
    let login = client
        .post(format!("{}/v1/auth/login", tessera.base))
        .json(&json!({"email": email, "password": PASSWORD, "transport": "cookie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let mut access = None;
    let mut csrf = None;
    for set_cookie in login.headers().get_all(header::SET_COOKIE) {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        match pair.split_once('=') {
            Some(("tessera_at", v)) => access = Some(v.to_string()),
            Some(("tessera_csrf", v)) => csrf = Some(v.to_string()),
            _ => {}
        }
    }
    let (access, csrf) = (access.expect("access cookie"), csrf.expect("csrf cookie"));
    let cookies = format!("tessera_at={access}; tessera_csrf={csrf}");

    let read = client
        .get(format!("{base}/orders"))
        .header(header::COOKIE, &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK, "safe methods need no CSRF header");

    let forged = client
        .post(format!("{base}/orders"))
        .header(header::COOKIE, &cookies)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(forged).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf_failed"))
    );

    let honest = client
        .post(format!("{base}/orders"))
        .header(header::COOKIE, &cookies)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(honest.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_expired_token_gets_token_expired() {
    let tessera = Tessera::start(&[("TESSERA_ACCESS_TTL", "1")]).await;
    let (_example, base) = start_example(&tessera.jwks_url()).await;
    let token = tessera.login("late@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = Client::new()
        .get(format!("{base}/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(late.headers().contains_key(header::WWW_AUTHENTICATE));
    let (status, body) = problem(late).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
}

#[tokio::test]
async fn keys_that_cannot_be_fetched_answer_503_not_401() {
    let tessera = Tessera::start(&[]).await;
    // A port nothing listens on (bound, read, released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (_example, base) = start_example(&format!("http://127.0.0.1:{port}/jwks.json")).await;
    let token = tessera.login("outage@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let response = Client::new()
        .get(format!("{base}/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let (status, body) = problem(response).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("jwks_unavailable"))
    );
}

const FEED_CREDENTIAL: &str = "orders-api-feed-credential-0123456789abcdef";

/// Signs `email` in at Tessera; the example accepts the access token it gets.
async fn accepted_grant(tessera: &Tessera, client: &Client, base: &str, email: &str) -> Value {
    let grant = tessera.login(email).await;
    let orders = client
        .get(format!("{base}/orders"))
        .bearer_auth(grant["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(orders.status(), StatusCode::OK);
    grant
}

/// Calls `GET /orders` with `token` until the example refuses it, which must be as
/// `session_revoked` and within a second of `revoked_at`.
async fn refused_within_a_second(client: &Client, base: &str, token: &str, revoked_at: std::time::Instant) {
    loop {
        let response = client
            .get(format!("{base}/orders"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            let took = revoked_at.elapsed();
            let (status, body) = problem(response).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("session_revoked"))
            );
            assert!(
                took < Duration::from_secs(1),
                "refused {took:?} after the revocation"
            );
            return;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The issue's end-to-end check: a session revoked at Tessera (by its user, or by an operator
/// with the command line) is refused by the example service within a second, with no call to
/// Tessera per request.
#[tokio::test]
async fn a_revoked_session_is_refused_by_the_example_within_a_second() {
    let tessera = Tessera::start(&[("TESSERA_REVOCATION_FEED_CREDENTIALS", FEED_CREDENTIAL)]).await;
    let (_example, base) = start_example_with(
        &tessera.jwks_url(),
        &[
            ("TESSERA_REVOCATION_FEED_CREDENTIAL", FEED_CREDENTIAL.into()),
            (
                "TESSERA_REVOCATION_FEED_URL",
                format!("{}/v1/revocations", tessera.base),
            ),
        ],
    )
    .await;
    let client = Client::new();
    let email = "feed@example.com";

    // Logged out by its user.
    let grant = accepted_grant(&tessera, &client, &base, email).await;
    let token = grant["access_token"].as_str().unwrap();
    let logout = client
        .post(format!("{}/v1/auth/logout", tessera.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    refused_within_a_second(&client, &base, token, std::time::Instant::now()).await;

    // Revoked by an operator, from another process: the command line on the same database.
    let grant = accepted_grant(&tessera, &client, &base, email).await;
    let session = grant["session_id"].as_str().unwrap();
    tessera.cli(&[], &["sessions", "revoke", session]).await;
    let token = grant["access_token"].as_str().unwrap();
    refused_within_a_second(&client, &base, token, std::time::Instant::now()).await;
}
