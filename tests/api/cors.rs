//! CORS: nothing cross-origin unless listed in `cors_origins`; listed origins get preflights
//! answered and every response readable, with credentials, by name (never `*`).

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use reqwest::{Method, Response};
use serde_json::json;

use crate::helpers::*;

const APP: &str = "https://app.example.com";
const OTHER_APP: &str = "http://localhost:5173";
const STRANGER: &str = "https://evil.example";

async fn with_origins() -> TestApp {
    spawn_app_with(|c| c.cors_origins = vec![APP.into(), OTHER_APP.into()]).await
}

async fn preflight(app: &TestApp, origin: &str, method: &str, headers: &str) -> Response {
    app.client
        .request(Method::OPTIONS, app.url("/v1/auth/login"))
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .send()
        .await
        .expect("preflight sent")
}

async fn login_from(app: &TestApp, origin: &str, password: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .header(ORIGIN, origin)
        .json(&json!({ "email": EMAIL, "password": password, "transport": "cookie" }))
        .send()
        .await
        .expect("login sent")
}

fn header<'a>(r: &'a Response, name: &reqwest::header::HeaderName) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Every CORS response header a browser would act on is absent.
fn assert_no_cors(r: &Response) {
    for name in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_EXPOSE_HEADERS,
    ] {
        assert!(r.headers().get(&name).is_none(), "{name} sent: {:?}", r.headers());
    }
}

#[tokio::test]
async fn nothing_is_allowed_by_default() {
    let app = spawn_app().await;
    app.register(EMAIL).await;
    let r = preflight(&app, APP, "POST", "content-type").await;
    assert_no_cors(&r);
    assert!(
        !r.status().is_success(),
        "a preflight without CORS must not pass: {}",
        r.status()
    );
    let r = login_from(&app, APP, PASSWORD).await;
    assert_eq!(
        r.status(),
        200,
        "same request without CORS still served (browsers block reading)"
    );
    assert_no_cors(&r);
}

#[tokio::test]
async fn a_listed_origin_gets_its_preflight_answered() {
    let app = with_origins().await;
    for origin in [APP, OTHER_APP] {
        let r = preflight(&app, origin, "POST", "content-type,x-csrf-token,authorization").await;
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(header(&r, &ACCESS_CONTROL_ALLOW_ORIGIN), Some(origin));
        assert_eq!(header(&r, &ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        let methods = header(&r, &ACCESS_CONTROL_ALLOW_METHODS)
            .unwrap_or_default()
            .to_ascii_lowercase();
        for m in ["get", "post", "delete"] {
            assert!(methods.contains(m), "{m} missing from {methods}");
        }
        let allowed = header(&r, &ACCESS_CONTROL_ALLOW_HEADERS)
            .unwrap_or_default()
            .to_ascii_lowercase();
        for h in ["content-type", "x-csrf-token", "authorization"] {
            assert!(allowed.contains(h), "{h} missing from {allowed}");
        }
    }
}

#[tokio::test]
async fn a_listed_origin_reads_answers_and_errors_with_credentials() {
    let app = with_origins().await;
    app.register(EMAIL).await;
    let ok = login_from(&app, APP, PASSWORD).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, &ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
    assert_eq!(header(&ok, &ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
    // Caches must keep one answer per origin, or one origin's answer would reach another.
    let vary: Vec<String> = ok
        .headers()
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    assert!(vary.iter().any(|v| v.contains("origin")), "Vary: {vary:?}");

    let wrong = login_from(&app, APP, "not the password at all").await;
    assert_eq!(header(&wrong, &ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
    let exposed = header(&wrong, &ACCESS_CONTROL_EXPOSE_HEADERS)
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "exposed: {exposed}");
    assert_problem(wrong, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn an_unlisted_origin_gets_nothing_even_when_others_are_listed() {
    let app = with_origins().await;
    app.register(EMAIL).await;
    let r = preflight(&app, STRANGER, "POST", "content-type").await;
    assert_no_cors(&r);
    // A listed origin's prefix, suffix or other scheme is another origin.
    for origin in [
        STRANGER,
        "https://app.example.com.evil.example",
        "http://app.example.com",
    ] {
        let r = login_from(&app, origin, PASSWORD).await;
        assert_no_cors(&r);
    }
}
