//! Cookie transport: the three cookies and their attributes, the double-submit CSRF check on
//! every cookie-authenticated unsafe request (bound to the session), and clearing on logout.
//!
//! The client keeps no cookie store: tests send the `Cookie` header a browser would send and
//! parse the `Set-Cookie` headers themselves.

use cookie::{Cookie, SameSite};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::*;

const ACCESS: &str = "tessera_at";
const REFRESH: &str = "tessera_rt";
const CSRF: &str = "tessera_csrf";
const CSRF_HEADER: &str = "x-csrf-token";

const ME: &str = "/v1/auth/me";
const REFRESH_PATH: &str = "/v1/auth/refresh";
const LOGOUT: &str = "/v1/auth/logout";
const LOGOUT_ALL: &str = "/v1/auth/logout-all";

/// What the contract fixes for each cookie, in the order the tests expect them.
struct CookieSpec {
    name: &'static str,
    path: &'static str,
    http_only: bool,
    same_site: SameSite,
}

const SPECS: [CookieSpec; 3] = [
    CookieSpec {
        name: ACCESS,
        path: "/",
        http_only: true,
        same_site: SameSite::Lax,
    },
    CookieSpec {
        name: REFRESH,
        path: "/v1/auth",
        http_only: true,
        same_site: SameSite::Strict,
    },
    CookieSpec {
        name: CSRF,
        path: "/",
        http_only: false,
        same_site: SameSite::Lax,
    },
];

/// The response's `Set-Cookie` headers, parsed, one per contract cookie in [`SPECS`] order
/// (asserts there are exactly those three).
fn set_cookies(r: &Response) -> Vec<Cookie<'static>> {
    let mut cookies: Vec<Cookie<'static>> = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| {
            let text = v.to_str().expect("ASCII Set-Cookie").to_owned();
            Cookie::parse(text.clone()).unwrap_or_else(|e| panic!("bad Set-Cookie {text:?}: {e}"))
        })
        .collect();
    let position = |c: &Cookie| SPECS.iter().position(|spec| spec.name == c.name());
    cookies.sort_by_key(position);
    let names: Vec<_> = cookies.iter().map(|c| c.name().to_owned()).collect();
    assert_eq!(
        names,
        SPECS.map(|spec| spec.name.to_owned()),
        "Set-Cookie headers"
    );
    cookies
}

/// Asserts each cookie carries exactly the attributes of its [`CookieSpec`], with `Secure`
/// as configured.
fn assert_attributes(cookies: &[Cookie], secure: bool) {
    for (c, spec) in cookies.iter().zip(&SPECS) {
        assert_eq!(c.path(), Some(spec.path), "{c}");
        assert_eq!(c.http_only().unwrap_or(false), spec.http_only, "{c}");
        assert_eq!(c.same_site(), Some(spec.same_site), "{c}");
        assert_eq!(c.secure().unwrap_or(false), secure, "{c}");
        assert_eq!(c.domain(), None, "{c}");
    }
}

/// Asserts the response clears the three cookies: each sent again with an empty value, its
/// original path and `Max-Age=0`.
fn assert_cleared(r: &Response) {
    let cookies = set_cookies(r);
    for (c, spec) in cookies.iter().zip(&SPECS) {
        assert_eq!(c.value(), "", "{c}");
        assert_eq!(c.path(), Some(spec.path), "{c}");
        assert_eq!(c.max_age(), Some(cookie::time::Duration::ZERO), "{c}");
    }
}

/// The cookies a browser holds for one cookie-transport session, and the body that set them.
#[derive(Clone)]
struct CookieSession {
    access: String,
    refresh: String,
    csrf: String,
    body: Value,
}

impl CookieSession {
    /// Reads a cookie-transport token response: asserts `200`, the three cookies with the
    /// contract's attributes, and a body without tokens but with the CSRF token.
    async fn from_grant(app: &TestApp, r: Response) -> CookieSession {
        let cookies = set_cookies(&r);
        assert_attributes(&cookies, app.config.cookie_secure);
        let body = json_ok(r).await;
        for absent in ["access_token", "refresh_token"] {
            assert!(
                body.get(absent).is_none(),
                "{absent} in a cookie response: {body}"
            );
        }
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 900);
        // 30 days from the rotation; a grace replay answers a moment later.
        let refresh_expires_in = body["refresh_token_expires_in"].as_i64().unwrap_or_default();
        assert!(
            (2_592_000 - 60..=2_592_000).contains(&refresh_expires_in),
            "{body}"
        );
        assert_uuid(&body["session_id"]);
        assert_user(&body["user"], EMAIL);
        // The access cookie outlives its token (the session's lifetime), so an expired token
        // still reaches the server and is answered `token_expired`.
        for c in &cookies {
            assert_eq!(
                c.max_age().map(|d| d.whole_seconds()),
                Some(refresh_expires_in),
                "{c}"
            );
        }
        let [access, refresh, csrf] = [0, 1, 2].map(|i| cookies[i].value().to_owned());
        assert!(!access.is_empty() && !refresh.is_empty(), "empty token cookie");
        assert_eq!(body["csrf_token"], csrf, "body csrf_token equals the CSRF cookie");
        CookieSession {
            access,
            refresh,
            csrf,
            body,
        }
    }

    fn session_id(&self) -> String {
        s(&self.body, "session_id")
    }

    /// The same cookies with another CSRF cookie.
    fn with_csrf(&self, csrf: &str) -> CookieSession {
        CookieSession {
            csrf: csrf.to_owned(),
            ..self.clone()
        }
    }

    fn cookie_header(&self) -> String {
        format!(
            "{ACCESS}={}; {REFRESH}={}; {CSRF}={}",
            self.access, self.refresh, self.csrf
        )
    }

    /// A request without a body carrying all three cookies and, if given, `X-CSRF-Token`.
    async fn send(&self, app: &TestApp, method: Method, path: &str, csrf: Option<&str>) -> Response {
        send_with_cookies(app, method, path, &self.cookie_header(), csrf).await
    }

    async fn post(&self, app: &TestApp, path: &str, csrf: Option<&str>) -> Response {
        self.send(app, Method::POST, path, csrf).await
    }

    /// A POST with the session's own CSRF token.
    async fn post_with_csrf(&self, app: &TestApp, path: &str) -> Response {
        self.post(app, path, Some(&self.csrf)).await
    }

    /// Refreshes with the session's own CSRF token; returns the rotated session.
    async fn refresh_ok(&self, app: &TestApp) -> CookieSession {
        let r = self.post_with_csrf(app, REFRESH_PATH).await;
        CookieSession::from_grant(app, r).await
    }

    async fn me(&self, app: &TestApp) -> Response {
        self.send(app, Method::GET, ME, None).await
    }
}

async fn send_with_cookies(
    app: &TestApp,
    method: Method,
    path: &str,
    cookies: &str,
    csrf: Option<&str>,
) -> Response {
    let mut req = app.client.request(method, app.url(path)).header(COOKIE, cookies);
    if let Some(csrf) = csrf {
        req = req.header(CSRF_HEADER, csrf);
    }
    req.send().await.expect("request")
}

/// Logs `EMAIL` in (the account must exist) with cookie transport.
async fn cookie_login(app: &TestApp) -> CookieSession {
    let body = json!({ "email": EMAIL, "password": PASSWORD, "transport": "cookie" });
    let r = app.post_json("/v1/auth/login", &body).await;
    CookieSession::from_grant(app, r).await
}

/// Registers `EMAIL` and logs in with cookie transport.
async fn cookie_signup(app: &TestApp) -> CookieSession {
    assert_status(app.register(EMAIL).await, 201).await;
    cookie_login(app).await
}

async fn assert_alive(app: &TestApp, c: &CookieSession) {
    json_ok(c.me(app).await).await;
}

async fn assert_revoked(app: &TestApp, c: &CookieSession) {
    assert_problem(c.me(app).await, 401, "session_revoked").await;
    let r = c.post_with_csrf(app, REFRESH_PATH).await;
    assert_problem(r, 401, "session_revoked").await;
}

/// Asserts `r` is the `204` of a logout that cleared the cookies and revoked `c`.
async fn assert_logged_out(app: &TestApp, c: &CookieSession, r: Response) {
    assert_eq!(r.status(), 204);
    assert_cleared(&r);
    assert_revoked(app, c).await;
}

/// Asserts the unsafe request `method path` by `c` is refused `403 csrf_failed` without the
/// CSRF header, with a wrong one, and without the CSRF cookie, and leaves the session alive.
async fn assert_needs_csrf(app: &TestApp, c: &CookieSession, method: Method, path: &str) {
    let without_cookie = format!("{ACCESS}={}; {REFRESH}={}", c.access, c.refresh);
    let attempts = [
        c.send(app, method.clone(), path, None).await,
        c.send(app, method.clone(), path, Some("wrong")).await,
        send_with_cookies(app, method.clone(), path, &without_cookie, Some(&c.csrf)).await,
    ];
    for r in attempts {
        assert_problem(r, 403, "csrf_failed").await;
    }
    assert_alive(app, c).await;
}

#[tokio::test]
async fn cookie_login_sets_the_three_cookies_and_keeps_tokens_out_of_the_body() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    assert!(c.refresh.starts_with("tsr_"), "refresh cookie {}", c.refresh);
    assert_eq!(c.access.split('.').count(), 3, "access cookie {}", c.access);
}

#[tokio::test]
async fn cookie_secure_false_drops_the_secure_attribute() {
    let app = spawn_app_with(|c| c.cookie_secure = false).await;
    // `from_grant` asserts every attribute, `Secure` as configured.
    let c = cookie_signup(&app).await;
    let r = c.post_with_csrf(&app, LOGOUT).await;
    assert!(
        set_cookies(&r).iter().all(|c| c.secure().is_none()),
        "no Secure when clearing"
    );
}

#[tokio::test]
async fn the_access_cookie_alone_authenticates_a_get_without_csrf() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    let only_access = format!("{ACCESS}={}", c.access);
    let me = json_ok(send_with_cookies(&app, Method::GET, ME, &only_access, None).await).await;
    assert_eq!(me["session_id"], c.body["session_id"]);
    assert_user(&me["user"], EMAIL);
}

#[tokio::test]
async fn cookie_refresh_needs_the_csrf_header_and_rotates_the_refresh_cookie() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    assert_needs_csrf(&app, &c, Method::POST, REFRESH_PATH).await;
    let next = c.refresh_ok(&app).await;
    assert_ne!(next.refresh, c.refresh, "rotated");
    assert_eq!(next.session_id(), c.session_id());
    assert_alive(&app, &next).await;
}

#[tokio::test]
async fn a_grace_replay_of_the_old_refresh_cookie_returns_the_same_successor() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    let next = c.refresh_ok(&app).await;
    let replay = c.refresh_ok(&app).await;
    assert_eq!(replay.refresh, next.refresh, "byte-identical successor");
    assert_eq!(replay.session_id(), c.session_id());
}

#[tokio::test]
async fn the_csrf_token_of_another_session_is_refused() {
    let app = spawn_app().await;
    let mine = cookie_signup(&app).await;
    // Another session, even of the same user: its token matches its own cookie, not `mine`.
    let other = cookie_login(&app).await;
    assert_ne!(mine.csrf, other.csrf, "each session has its own CSRF token");
    let forged = mine.with_csrf(&other.csrf);
    for path in [REFRESH_PATH, LOGOUT, LOGOUT_ALL] {
        let r = forged.post(&app, path, Some(&other.csrf)).await;
        assert_problem(r, 403, "csrf_failed").await;
    }
    assert_alive(&app, &mine).await;
    assert_alive(&app, &other).await;
    mine.refresh_ok(&app).await;
}

#[tokio::test]
async fn cookie_logout_needs_csrf_then_clears_the_cookies_and_revokes() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    assert_needs_csrf(&app, &c, Method::POST, LOGOUT).await;
    let r = c.post_with_csrf(&app, LOGOUT).await;
    assert_logged_out(&app, &c, r).await;
}

#[tokio::test]
async fn cookie_logout_with_only_the_access_cookie_revokes_the_session() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    let cookies = format!("{ACCESS}={}; {CSRF}={}", c.access, c.csrf);
    let r = send_with_cookies(&app, Method::POST, LOGOUT, &cookies, Some(&c.csrf)).await;
    assert_logged_out(&app, &c, r).await;
}

#[tokio::test]
async fn cookie_logout_all_needs_csrf() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    let bearer = app.login_ok(EMAIL).await;
    assert_needs_csrf(&app, &c, Method::POST, LOGOUT_ALL).await;
    json_ok(app.me(&s(&bearer, "access_token")).await).await;
    let r = c.post_with_csrf(&app, LOGOUT_ALL).await;
    assert_logged_out(&app, &c, r).await;
    assert_problem(app.me(&s(&bearer, "access_token")).await, 401, "session_revoked").await;
}

#[tokio::test]
async fn deleting_a_session_by_cookie_needs_csrf() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    let bearer = app.login_ok(EMAIL).await;
    let path = format!("/v1/auth/sessions/{}", s(&bearer, "session_id"));
    assert_needs_csrf(&app, &c, Method::DELETE, &path).await;
    json_ok(app.me(&s(&bearer, "access_token")).await).await;
    let r = c.send(&app, Method::DELETE, &path, Some(&c.csrf)).await;
    assert_status(r, 204).await;
    assert_problem(app.me(&s(&bearer, "access_token")).await, 401, "session_revoked").await;
    assert_alive(&app, &c).await;
}

#[tokio::test]
async fn bearer_transport_never_needs_csrf() {
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    let t = app.login_ok(EMAIL).await;
    let t = app.refresh_ok(&s(&t, "refresh_token")).await;
    let at = s(&t, "access_token");
    assert_status(app.revoke_session(&at, &c.session_id()).await, 204).await;
    assert_revoked(&app, &c).await;
    assert_status(app.logout_all(&at, Some("others")).await, 204).await;
    assert_status(app.logout_with_bearer(&at).await, 204).await;
    assert_problem(app.me(&at).await, 401, "session_revoked").await;
}

#[tokio::test]
async fn another_authorization_scheme_does_not_hide_the_access_cookie() {
    // A staging proxy's Basic credentials used to turn a valid cookie into 401 invalid_token.
    let app = spawn_app().await;
    let c = cookie_signup(&app).await;
    let r = app
        .client
        .get(app.url(ME))
        .header(COOKIE, c.cookie_header())
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .expect("request");
    assert_eq!(json_ok(r).await["session_id"], c.session_id().as_str());
    // A bearer attempt is still judged as one, cookie or not.
    let r = app
        .client
        .get(app.url(ME))
        .header(COOKIE, c.cookie_header())
        .header("authorization", "Bearer not-a-jwt")
        .send()
        .await
        .expect("request");
    assert_problem(r, 401, "invalid_token").await;
}

#[tokio::test]
async fn an_expired_access_cookie_is_token_expired() {
    let app = spawn_app_with(|c| c.access_ttl = std::time::Duration::from_secs(1)).await;
    assert_status(app.register(EMAIL).await, 201).await;
    let body = json!({ "email": EMAIL, "password": PASSWORD, "transport": "cookie" });
    let r = app.post_json("/v1/auth/login", &body).await;
    let cookies = set_cookies(&r);
    let cookie_header = format!("{ACCESS}={}", cookies[0].value());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = send_with_cookies(&app, Method::GET, ME, &cookie_header, None).await;
    assert_problem(r, 401, "token_expired").await;
}
