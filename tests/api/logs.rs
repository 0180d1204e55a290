//! Logs of the real binary: one line per request (`access_log = "all"`; by default, per
//! request answered 4xx or 5xx) with its route template and request id, `X-Request-Id`
//! honoured or replaced and echoed, no colour codes in a file, and never a secret, even at the
//! most verbose level.

use std::collections::HashMap;
use std::path::Path;

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, RequestBuilder, Response};
use serde_json::{json, Value};

use crate::binary::Served;
use crate::helpers::{s, EMAIL, PASSWORD};

const WRONG_PASSWORD: &str = "not the password at all, surely";
/// The resource-server credential the served process accepts for the revocation feed.
const FEED_CREDENTIAL: &str = "logs-test-feed-credential-0123456789abcdef";

/// Starts `tessera serve` in `dir` logging everything (`RUST_LOG=trace`, an access line for
/// every request) as `format`.
fn serve_logging(dir: &Path, format: &str) -> Served {
    Served::start_with(
        dir,
        &[],
        &[
            ("RUST_LOG", "trace".to_owned()),
            ("TESSERA_ACCESS_LOG", "all".to_owned()),
            ("TESSERA_LOG_FORMAT", format.to_owned()),
            ("TESSERA_REUSE_GRACE", "0".to_owned()),
            ("TESSERA_REVOCATION_FEED_CREDENTIALS", FEED_CREDENTIAL.to_owned()),
        ],
    )
}

/// Name → value of a response's `Set-Cookie` headers (the non-empty ones).
fn cookies(r: &Response) -> HashMap<String, String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .filter(|(_, value)| !value.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn cookie_header(jar: &HashMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn send(req: RequestBuilder) -> Response {
    req.send().await.expect("request")
}

async fn json_of(r: Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status);
    r.json().await.expect("JSON")
}

/// Every secret a full flow handles, from registration to a failed login.
async fn full_flow(client: &Client, base: &str) -> Vec<String> {
    let url = |path: &str| format!("{base}{path}");
    let credentials = json!({ "email": EMAIL, "password": PASSWORD });
    let mut secrets = vec![PASSWORD.to_owned(), WRONG_PASSWORD.to_owned()];

    let r = send(client.post(url("/v1/auth/register")).json(&credentials)).await;
    assert_eq!(r.status(), 201);

    // Bearer transport: login, refresh, an authenticated call, logout by refresh token.
    let login = json_of(
        send(client.post(url("/v1/auth/login")).json(&credentials)).await,
        200,
    )
    .await;
    let refreshed = json_of(
        send(
            client
                .post(url("/v1/auth/refresh"))
                .json(&json!({ "refresh_token": s(&login, "refresh_token") })),
        )
        .await,
        200,
    )
    .await;
    let r = send(
        client
            .get(url("/v1/auth/me"))
            .bearer_auth(s(&refreshed, "access_token")),
    )
    .await;
    assert_eq!(r.status(), 200);
    // The rotated-out token again: reuse, so the session is revoked (an error path).
    let r = send(
        client
            .post(url("/v1/auth/refresh"))
            .json(&json!({ "refresh_token": s(&login, "refresh_token") })),
    )
    .await;
    assert_eq!(r.status(), 401);
    for token in [&login, &refreshed] {
        secrets.push(s(token, "access_token"));
        secrets.push(s(token, "refresh_token"));
    }
    let again = json_of(
        send(client.post(url("/v1/auth/login")).json(&credentials)).await,
        200,
    )
    .await;
    secrets.push(s(&again, "access_token"));
    secrets.push(s(&again, "refresh_token"));
    let r = send(
        client
            .post(url("/v1/auth/logout"))
            .bearer_auth(s(&again, "access_token")),
    )
    .await;
    assert_eq!(r.status(), 204);

    // Cookie transport: login, refresh with the CSRF header, an authenticated call, logout.
    let r = send(
        client
            .post(url("/v1/auth/login"))
            .json(&json!({ "email": EMAIL, "password": PASSWORD, "transport": "cookie" })),
    )
    .await;
    let mut jar = cookies(&r);
    let body = json_of(r, 200).await;
    let csrf = s(&body, "csrf_token");
    secrets.push(csrf.clone());
    let r = send(
        client
            .post(url("/v1/auth/refresh"))
            .header(COOKIE, cookie_header(&jar))
            .header("x-csrf-token", &csrf),
    )
    .await;
    let rotated = cookies(&r);
    assert_eq!(r.status(), 200);
    secrets.extend(jar.values().cloned());
    jar.extend(rotated);
    let r = send(client.get(url("/v1/auth/me")).header(COOKIE, cookie_header(&jar))).await;
    assert_eq!(r.status(), 200);
    let r = send(
        client
            .post(url("/v1/auth/logout"))
            .header(COOKIE, cookie_header(&jar))
            .header("x-csrf-token", &csrf),
    )
    .await;
    assert_eq!(r.status(), 204);
    secrets.extend(jar.values().cloned());

    // A failed login.
    let r = send(
        client
            .post(url("/v1/auth/login"))
            .json(&json!({ "email": EMAIL, "password": WRONG_PASSWORD })),
    )
    .await;
    assert_eq!(r.status(), 401);

    // A resource server reading the revocation feed (the logouts above are in it).
    let r = send(client.get(url("/v1/revocations")).bearer_auth(FEED_CREDENTIAL)).await;
    let feed = json_of(r, 200).await;
    assert!(
        !feed["revocations"].as_array().expect("entries").is_empty(),
        "{feed}"
    );
    secrets.push(FEED_CREDENTIAL.to_owned());

    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() >= 11, "{secrets:?}");
    secrets
}

/// Access lines (target `tessera::access`) of a JSON log.
fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .filter(|v| v["target"] == "tessera::access")
        .collect()
}

#[tokio::test]
async fn a_full_flow_logs_one_json_line_per_request_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_logging(dir.path(), "json");
    let client = Client::new();
    let secrets = full_flow(&client, &served.base()).await;

    // A sane id is kept and echoed; anything else is replaced by one of ours.
    let r = send(
        client
            .get(format!("{}/healthz", served.base()))
            .header("x-request-id", "trace-4711.a"),
    )
    .await;
    assert_eq!(r.headers()["x-request-id"], "trace-4711.a");
    let r = send(
        client
            .delete(format!(
                "{}/v1/auth/sessions/0190f1e2-7c4b-7a3e-9f0e-3b1c2d4e5f60",
                served.base()
            ))
            .header("x-request-id", "forged\" status=200"),
    )
    .await;
    assert_eq!(r.status(), 401);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!generated.contains("forged"), "{generated}");
    served.terminate();

    let log = served.stderr();
    assert!(!log.contains('\u{1b}'), "no colour codes in a file");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "secret {secret:?} in the log:\n{log}"
        );
    }
    assert!(!log.contains("forged"), "a rejected request id is not logged");

    let lines = access_lines(&log);
    // register; login, refresh, me, reused refresh; login, logout; cookie login, refresh, me,
    // logout; failed login; revocation feed; healthz; delete session.
    assert_eq!(lines.len(), 15, "{lines:#?}");
    let kept = lines
        .iter()
        .find(|l| l["request_id"] == "trace-4711.a")
        .expect("kept id logged");
    assert_eq!(kept["route"], "/healthz");
    assert_eq!(kept["status"], 200);
    assert_eq!(kept["method"], "GET");
    assert!(kept["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{kept}");
    let templated = lines
        .iter()
        .find(|l| l["request_id"] == generated.as_str())
        .expect("generated id logged");
    assert_eq!(
        templated["route"], "/v1/auth/sessions/{id}",
        "the template, not the path"
    );
    assert_eq!(templated["status"], 401);
    let mut ids: Vec<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().expect("id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), lines.len(), "one id per request");
    let failed_login = lines
        .iter()
        .filter(|l| l["route"] == "/v1/auth/login" && l["status"] == 401)
        .count();
    assert_eq!(failed_login, 1);

    // An event logged while a request ran carries that request's id: the reuse warning, the
    // id of the refresh answered 401.
    let warning: Value = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|l| l["message"] == "refresh token reuse detected; session revoked")
        .unwrap_or_else(|| panic!("no reuse warning:\n{log}"));
    let reused = lines
        .iter()
        .find(|l| l["route"] == "/v1/auth/refresh" && l["status"] == 401)
        .expect("the reused refresh's line");
    assert_eq!(warning["request_id"], reused["request_id"], "{warning}");
    assert_eq!(warning["level"], "WARN");
}

#[tokio::test]
async fn by_default_only_failed_requests_get_an_access_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start_with(dir.path(), &[], &[("TESSERA_LOG_FORMAT", "json".to_owned())]);
    let client = Client::new();
    let base = served.base();
    let ok = send(
        client
            .get(format!("{base}/healthz"))
            .header("x-request-id", "fine-1"),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["x-request-id"],
        "fine-1",
        "the id is echoed either way"
    );
    let refused = send(
        client
            .get(format!("{base}/v1/auth/me"))
            .header("x-request-id", "refused-1"),
    )
    .await;
    assert_eq!(refused.status(), 401);
    let missing = send(
        client
            .get(format!("{base}/no/such/route"))
            .header("x-request-id", "missing-1"),
    )
    .await;
    assert_eq!(missing.status(), 404);
    served.terminate();
    let log = served.stderr();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["target"] == "tessera::access")
        .collect();
    let ids: Vec<&str> = lines.iter().filter_map(|l| l["request_id"].as_str()).collect();
    assert_eq!(ids, ["refused-1", "missing-1"], "{log}");
    assert_eq!(lines[0]["status"], 401);
    assert_eq!(lines[0]["route"], "/v1/auth/me");
}

#[test]
fn text_logs_have_no_colour_in_a_file_and_name_the_route() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_logging(dir.path(), "text");
    let (status, _) = served.request("GET", "/.well-known/jwks.json", None);
    assert_eq!(status, 200);
    served.terminate();
    let log = served.stderr();
    assert!(!log.contains('\u{1b}'), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("tessera::access"))
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    assert!(
        line.contains("route=\"/.well-known/jwks.json\"") || line.contains("route=/.well-known/jwks.json"),
        "{line}"
    );
    assert!(line.contains("status=200"), "{line}");
    assert!(
        line.contains(" INFO tessera::access: request method=\"GET\""),
        "{line}"
    );
    assert!(line.contains(" request_id=\""), "{line}");
    assert!(
        serde_json::from_str::<Value>(line).is_err(),
        "text, not JSON: {line}"
    );
}

#[test]
fn an_unknown_log_format_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (mut served, _) = Served::spawn(dir.path(), &[], &[("TESSERA_LOG_FORMAT", "xml".to_owned())]);
    assert!(!served.wait_for_exit().success());
    assert!(served.stderr().contains("log_format"), "{}", served.stderr());
}
