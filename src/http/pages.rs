//! The built-in pages: `/` (what this server is, with links), `/docs` (the API reference,
//! rendered from `/openapi.json` in the browser), `/login` (sign in, create an account) and
//! `/account` (who am I, my devices, sign out). The files are compiled into the binary, so serving them needs nothing
//! at run time; one static script drives both through the public API with the cookie
//! transport, exactly as any browser app would. `pages = false` leaves them unmounted (404).

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("pages/index.html");
const DOCS_HTML: &str = include_str!("pages/docs.html");
const DOCS_SCRIPT: &str = include_str!("pages/docs.js");
const DOCS_STYLES: &str = include_str!("pages/docs.css");
const LOGIN_HTML: &str = include_str!("pages/login.html");
const ACCOUNT_HTML: &str = include_str!("pages/account.html");
const SCRIPT: &str = include_str!("pages/tessera.js");
const STYLES: &str = include_str!("pages/tessera.css");

/// Scripts and styles only from our own files (no inline script, so an injected `<script>`
/// cannot run), requests only to ourselves, and no framing anywhere (clickjacking a
/// "sign out everywhere" button).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

type Headers = [(HeaderName, HeaderValue); 7];

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { page(INDEX_HTML) }))
        .route("/docs", get(|| async { page(DOCS_HTML) }))
        .route(
            "/pages/docs.js",
            get(|| async { asset("text/javascript; charset=utf-8", DOCS_SCRIPT) }),
        )
        .route(
            "/pages/docs.css",
            get(|| async { asset("text/css; charset=utf-8", DOCS_STYLES) }),
        )
        .route("/login", get(|| async { page(LOGIN_HTML) }))
        .route("/account", get(|| async { page(ACCOUNT_HTML) }))
        .route(
            "/pages/tessera.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/pages/tessera.css",
            get(|| async { asset("text/css; charset=utf-8", STYLES) }),
        )
}

fn page(html: &'static str) -> impl IntoResponse {
    let headers: Headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        // The pages' URLs may carry why someone was signed out; no other site needs them.
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // For browsers older than `frame-ancestors`.
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // A page is cheap; a stale one after an upgrade would run with a stale script.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, html)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // Revalidated each time: the binary may have been upgraded under the same URL.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}
