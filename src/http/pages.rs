//! The built-in pages: `/` (what this server is, with links), `/docs` (the API reference,
//! rendered from `/openapi.json` in the browser), `/login` (sign in, create an account) and
//! `/account` (who am I, my devices, sign out), and those of the mailed links: `/forgot`,
//! `/reset#token=`, `/verify#token=` (or `#change=`); `/login#link=` signs in by link. The files are compiled into the binary, so serving them needs nothing
//! at run time; one static script drives both through the public API with the cookie
//! transport, exactly as any browser app would. `pages = false` leaves them unmounted (404).
//! `/admin` (`admin_page = true`, off by default) drives the admin API the same way.

use std::sync::Arc;

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::config::Config;

const INDEX_HTML: &str = include_str!("pages/index.html");
const DOCS_HTML: &str = include_str!("pages/docs.html");
const DOCS_SCRIPT: &str = include_str!("pages/docs.js");
const DOCS_STYLES: &str = include_str!("pages/docs.css");
const LOGIN_HTML: &str = include_str!("pages/login.html");
const ACCOUNT_HTML: &str = include_str!("pages/account.html");
const ADMIN_HTML: &str = include_str!("pages/admin.html");
const FORGOT_HTML: &str = include_str!("pages/forgot.html");
const RESET_HTML: &str = include_str!("pages/reset.html");
const VERIFY_HTML: &str = include_str!("pages/verify.html");
const SCRIPT: &str = include_str!("pages/tessera.js");
const STYLES: &str = include_str!("pages/tessera.css");

/// Scripts and styles only from our own files (no inline script, so an injected `<script>`
/// cannot run), requests only to ourselves, and no framing anywhere (clickjacking a
/// "sign out everywhere" button). Images from ourselves, and from the logo's origin if one is
/// configured.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'{logo}; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the pages show and allow, from the configuration: read by their script from
/// `/pages/config.json` (and the accent colour from `/pages/brand.css`).
#[derive(Clone, Serialize)]
pub struct PageSettings {
    product_name: String,
    logo_url: Option<String>,
    /// Origins `/login?return_to=` may send a user to, besides this server's own paths.
    return_to_origins: Vec<String>,
    /// Whether the passkey routes are on (a usable WebAuthn relying party).
    passkeys: bool,
    #[serde(skip)]
    accent_color: Option<String>,
}

impl PageSettings {
    pub fn new(config: &Config) -> PageSettings {
        PageSettings {
            product_name: config
                .product_name
                .clone()
                .unwrap_or_else(|| "Tessera".to_owned()),
            logo_url: config.logo_url.clone(),
            return_to_origins: config.return_to_origins.clone(),
            passkeys: matches!(config.passkeys(), Ok(crate::config::Passkeys::On(_))),
            accent_color: config.accent_color.clone(),
        }
    }

    fn csp(&self) -> HeaderValue {
        let logo = self
            .logo_url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .map(|u| format!(" {}", u.origin().ascii_serialization()))
            .unwrap_or_default();
        // The origin of a parsed http(s) URL is printable ASCII with no `;`.
        HeaderValue::try_from(CSP.replace("{logo}", &logo))
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
    }

    fn brand_css(&self) -> String {
        match &self.accent_color {
            Some(colour) => format!(":root {{ --accent: {colour}; --mark-2: {colour}; }}\n"),
            None => "/* TESSERA_ACCENT_COLOR is not set: the default colours */\n".to_owned(),
        }
    }
}

type Headers = [(HeaderName, HeaderValue); 7];

/// The pages; `/admin` too with `admin` (`admin_page`, off by default).
pub fn router<S: Clone + Send + Sync + 'static>(settings: PageSettings, admin: bool) -> Router<S> {
    let csp = settings.csp();
    let html = move |body: &'static str| {
        let csp = csp.clone();
        get(move || async move { page(body, csp) })
    };
    let brand_css = Arc::new(settings.brand_css());
    let settings = Arc::new(settings);
    let mut router = Router::new();
    if admin {
        router = router.route("/admin", html(ADMIN_HTML));
    }
    router
        .route("/", html(INDEX_HTML))
        .route("/docs", html(DOCS_HTML))
        .route("/login", html(LOGIN_HTML))
        .route("/account", html(ACCOUNT_HTML))
        // The pages mailed links open (their token in the fragment, read by the script).
        .route("/forgot", html(FORGOT_HTML))
        .route("/reset", html(RESET_HTML))
        .route("/verify", html(VERIFY_HTML))
        .route(
            "/pages/config.json",
            get(move || {
                let settings = Arc::clone(&settings);
                async move { Json(settings.as_ref().clone()) }
            }),
        )
        .route(
            "/pages/brand.css",
            get(move || {
                let css = Arc::clone(&brand_css);
                async move { asset_owned("text/css; charset=utf-8", css.as_ref().clone()) }
            }),
        )
        .route(
            "/pages/docs.js",
            get(|| async { asset("text/javascript; charset=utf-8", DOCS_SCRIPT) }),
        )
        .route(
            "/pages/docs.css",
            get(|| async { asset("text/css; charset=utf-8", DOCS_STYLES) }),
        )
        .route(
            "/pages/tessera.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/pages/tessera.css",
            get(|| async { asset("text/css; charset=utf-8", STYLES) }),
        )
}

/// With the pages off, `/` still says what this server is and where its documents are, as JSON.
pub fn without_pages<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/",
        get(|| async {
            Json(serde_json::json!({
                "service": "tessera",
                "version": env!("CARGO_PKG_VERSION"),
                "links": {
                    "openapi": "/openapi.json",
                    "health": "/healthz",
                    "jwks": "/.well-known/jwks.json",
                    "discovery": "/.well-known/oauth-authorization-server",
                },
            }))
        }),
    )
}

fn page(html: &'static str, csp: HeaderValue) -> impl IntoResponse {
    let headers: Headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CONTENT_SECURITY_POLICY, csp),
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

fn asset_owned(content_type: &'static str, body: String) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
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
