//! `X-Forwarded-For` behind a trusted proxy: ports, brackets, several header lines and bytes
//! that are not text all record the right client, and a rightmost entry that is not an
//! address is refused instead of silently becoming the proxy's address.

use reqwest::header::HeaderValue;
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::rate_limits::assert_rate_limited;

/// Logs `EMAIL` in with one `X-Forwarded-For` header line per entry of `lines`.
async fn login_with_forwarded_lines(app: &TestApp, lines: &[&[u8]]) -> Response {
    let mut request = app.client.post(app.url("/v1/auth/login"));
    for line in lines {
        request = request.header(
            "x-forwarded-for",
            HeaderValue::from_bytes(line).expect("a header value"),
        );
    }
    request
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .expect("request")
}

/// The IP recorded on the session of token response `t`.
async fn recorded_ip(app: &TestApp, t: &Value) -> String {
    let id = s(t, "session_id");
    let sessions = app.sessions(&s(t, "access_token")).await;
    let session = sessions
        .iter()
        .find(|session| session["id"] == id.as_str())
        .unwrap_or_else(|| panic!("session {id} not listed"));
    s(session, "ip")
}

async fn spawn_behind_a_proxy() -> TestApp {
    let app = spawn_app_with(|c| {
        c.trust_proxy_headers = true;
        c.max_sessions = 50;
    })
    .await;
    assert_status(app.register(EMAIL).await, 201).await;
    app
}

#[tokio::test]
async fn every_forwarded_shape_records_the_right_client() {
    let app = spawn_behind_a_proxy().await;
    let cases: [(&[&[u8]], &str); 7] = [
        (&[b"9.9.9.9:4711"], "9.9.9.9"),
        (&[b"[2001:db8::1]:443"], "2001:db8::1"),
        (&[b"[2001:db8::2]"], "2001:db8::2"),
        (&[b"2001:db8::3"], "2001:db8::3"),
        (&[b"\x80, 9.9.9.8"], "9.9.9.8"),
        (&[b"1.1.1.1", b"5.5.5.5, 3.3.3.3"], "3.3.3.3"),
        (&[b"\xff\xfe", b"7.7.7.7:80"], "7.7.7.7"),
    ];
    for (lines, expected) in cases {
        let t = json_ok(login_with_forwarded_lines(&app, lines).await).await;
        let shown: Vec<_> = lines.iter().map(|l| String::from_utf8_lossy(l)).collect();
        assert_eq!(recorded_ip(&app, &t).await, expected, "{shown:?}");
    }
}

#[tokio::test]
async fn an_unparsable_rightmost_entry_is_400_not_the_proxy_address() {
    let app = spawn_behind_a_proxy().await;
    for lines in [
        &[&b"not-an-ip"[..]][..],
        &[b"9.9.9.9, \x80"],
        &[b"9.9.9.9", b"unknown"],
        &[b"9.9.9.9:http"],
    ] {
        let r = login_with_forwarded_lines(&app, lines).await;
        assert_problem(r, 400, "malformed_request").await;
    }
}

#[tokio::test]
async fn clients_behind_a_port_appending_proxy_have_buckets_of_their_own() {
    let app = spawn_app_with(|c| {
        c.trust_proxy_headers = true;
        c.login_rate = 1;
    })
    .await;
    assert_status(app.register(EMAIL).await, 201).await;
    json_ok(login_with_forwarded_lines(&app, &[b"9.9.9.9:1111"]).await).await;
    json_ok(login_with_forwarded_lines(&app, &[b"8.8.8.8:2222"]).await).await;
    // The same client from another source port is the same client.
    assert_rate_limited(login_with_forwarded_lines(&app, &[b"9.9.9.9:3333"]).await).await;
}
