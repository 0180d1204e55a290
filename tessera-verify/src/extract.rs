//! axum extractors: [`AuthUser`] for any caller with a valid access token, [`RequireRole`]
//! for callers holding a role. Rejections are the problem+json documents Tessera itself
//! answers (API.md, "Errors"), so a client reacts to `token_expired` from a resource server
//! exactly as it does to Tessera's.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};

use crate::verifier::{Error, Verifier};

/// The access cookie of Tessera's cookie transport.
pub const ACCESS_COOKIE: &str = "tessera_at";
/// The double-submit CSRF cookie, readable by the page's scripts.
pub const CSRF_COOKIE: &str = "tessera_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Authorization headers longer than this are refused unread, as Tessera does.
const MAX_AUTHORIZATION_LEN: usize = 8192;

/// A caller with a valid Tessera access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: String,
    pub session_id: String,
    pub roles: Vec<String>,
    /// How the holder signed in (`amr`, RFC 8176); empty for tokens of older sessions.
    pub amr: Vec<String>,
    /// When the holder signed in or last reauthenticated (`auth_time`, seconds since the epoch).
    pub auth_time: Option<i64>,
}

impl AuthUser {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Did the holder prove a second factor (`amr` has `mfa`)?
    pub fn has_mfa(&self) -> bool {
        self.amr.iter().any(|a| a == "mfa")
    }

    /// Did the holder sign in (or reauthenticate) within `max_age` of now? For actions that
    /// want a recent sign-in: answer `403` otherwise and send the user through
    /// `POST /v1/auth/reauthenticate`.
    pub fn signed_in_within(&self, max_age: std::time::Duration) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        self.auth_time.is_some_and(|at| now.saturating_sub(at) <= max_age)
    }
}

/// Why a request was refused; answered as an RFC 9457 problem document.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 401 `invalid_token`: no token, or one that does not verify.
    InvalidToken(&'static str),
    /// 401 `token_expired`.
    TokenExpired,
    /// 401 `session_revoked`: the revocation feed says the token's session was revoked.
    SessionRevoked,
    /// 403 `csrf_failed`: a cookie-authenticated unsafe request without the matching header.
    CsrfFailed,
    /// 403 `forbidden`: authenticated, but without the role.
    Forbidden(&'static str),
    /// 403 `mfa_required`: authenticated, but the holder signed in without a second factor.
    MfaRequired,
    /// 503 `jwks_unavailable`: Tessera's keys could not be fetched for an unknown `kid`.
    KeysUnavailable,
    /// 503 `revocations_unavailable`: the revocation feed is out of step for longer than the
    /// verifier's `revocation_feed_max_lag`.
    RevocationsUnavailable,
}

impl Rejection {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Rejection::InvalidToken(detail) => (StatusCode::UNAUTHORIZED, "invalid_token", (*detail).into()),
            Rejection::TokenExpired => (
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "access token expired".into(),
            ),
            Rejection::SessionRevoked => (
                StatusCode::UNAUTHORIZED,
                "session_revoked",
                "this session was revoked or logged out".into(),
            ),
            Rejection::CsrfFailed => (
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "X-CSRF-Token must equal the tessera_csrf cookie".into(),
            ),
            Rejection::Forbidden(role) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("requires the role {role}"),
            ),
            Rejection::MfaRequired => (
                StatusCode::FORBIDDEN,
                "mfa_required",
                "sign in with a second factor to do this".into(),
            ),
            Rejection::KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "jwks_unavailable",
                "the signing keys could not be fetched".into(),
            ),
            Rejection::RevocationsUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "revocations_unavailable",
                "revoked sessions cannot be told apart right now".into(),
            ),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code, detail) = self.parts();
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "code": code,
            "detail": detail,
        });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 for a bearer-protected resource names the scheme.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The named cookie's value, if present and not empty.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, v)| n.trim() == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// Equal without an early exit, so the time taken does not reveal how much of a guess was
/// right.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Where a request's token is.
#[derive(Debug, PartialEq, Eq)]
enum Found<'a> {
    Bearer(&'a str),
    Cookie(&'a str),
}

/// The token of a request, as Tessera finds it: a bearer attempt (even an unusable one) is
/// judged as such; another scheme (a proxy's Basic credentials) leaves the cookie to speak.
fn find_token(headers: &HeaderMap) -> Result<Found<'_>, Rejection> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        if value.len() > MAX_AUTHORIZATION_LEN {
            return Err(Rejection::InvalidToken("authorization header too long"));
        }
        let bytes = value.as_bytes();
        let scheme_end = bytes.iter().position(|b| *b == b' ').unwrap_or(bytes.len());
        if bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
            return match value.to_str().map(|v| v[scheme_end..].trim()) {
                Ok(token) if !token.is_empty() => Ok(Found::Bearer(token)),
                _ => Err(Rejection::InvalidToken("malformed bearer token")),
            };
        }
    }
    cookie(headers, ACCESS_COOKIE)
        .map(Found::Cookie)
        .ok_or(Rejection::InvalidToken("no access token"))
}

/// The double-submit rule: a cookie-authenticated request with an unsafe method must carry
/// `X-CSRF-Token` equal to the CSRF cookie. Another site can make the browser send the
/// cookies but cannot read the CSRF cookie to copy it into a header.
fn csrf_ok(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match (sent, cookie(headers, CSRF_COOKIE)) {
        (Some(sent), Some(expected)) => !sent.is_empty() && same_secret(sent, expected),
        _ => false,
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A handler taking both `AuthUser` and `RequireRole` verifies once.
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        let token = match find_token(&parts.headers)? {
            Found::Bearer(token) => token,
            Found::Cookie(token) => {
                if !csrf_ok(&parts.method, &parts.headers) {
                    return Err(Rejection::CsrfFailed);
                }
                token
            }
        };
        let claims = Verifier::from_ref(state)
            .verify(token)
            .await
            .map_err(|e| match e {
                Error::Invalid => Rejection::InvalidToken("access token not valid"),
                Error::Expired => Rejection::TokenExpired,
                Error::KeysUnavailable(_) => Rejection::KeysUnavailable,
                Error::Revoked => Rejection::SessionRevoked,
                Error::RevocationsUnavailable(_) => Rejection::RevocationsUnavailable,
            })?;
        let user = AuthUser {
            user_id: claims.user_id,
            session_id: claims.session_id,
            roles: claims.roles,
            amr: claims.amr,
            auth_time: claims.auth_time,
        };
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

/// A role, named at the type level for [`RequireRole`]:
///
/// ```
/// struct Admin;
/// impl tessera_verify::RoleName for Admin {
///     const NAME: &'static str = "admin";
/// }
/// ```
pub trait RoleName {
    const NAME: &'static str;
}

/// An [`AuthUser`] holding the role `R`; `403 forbidden` otherwise. Use as
/// `RequireRole(user, _): RequireRole<Admin>`.
pub struct RequireRole<R>(pub AuthUser, pub PhantomData<fn() -> R>);

impl<R> std::fmt::Debug for RequireRole<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequireRole").field(&self.0).finish()
    }
}

impl<S, R> FromRequestParts<S> for RequireRole<R>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
    R: RoleName,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.has_role(R::NAME) {
            return Err(Rejection::Forbidden(R::NAME));
        }
        Ok(RequireRole(user, PhantomData))
    }
}

/// An [`AuthUser`] who signed in with a second factor (`amr` has `mfa`); `403 mfa_required`
/// otherwise. Use as `RequireMfa(user): RequireMfa`.
#[derive(Debug)]
pub struct RequireMfa(pub AuthUser);

impl<S> FromRequestParts<S> for RequireMfa
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.has_mfa() {
            return Err(Rejection::MfaRequired);
        }
        Ok(RequireMfa(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn bearer_wins_and_other_schemes_leave_the_cookie_to_speak() {
        let both = headers(&[("authorization", "Bearer abc"), ("cookie", "tessera_at=xyz")]);
        assert_eq!(find_token(&both), Ok(Found::Bearer("abc")));
        let lower = headers(&[("authorization", "bearer   abc  ")]);
        assert_eq!(find_token(&lower), Ok(Found::Bearer("abc")));
        let basic = headers(&[("authorization", "Basic Zm9v"), ("cookie", "a=1; tessera_at=xyz")]);
        assert_eq!(find_token(&basic), Ok(Found::Cookie("xyz")));
        for unusable in ["Bearer", "Bearer    "] {
            let h = headers(&[("authorization", unusable), ("cookie", "tessera_at=xyz")]);
            assert!(find_token(&h).is_err(), "{unusable:?}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN));
        assert!(find_token(&headers(&[("authorization", &long)])).is_err());
        assert!(find_token(&headers(&[("cookie", "tessera_at=")])).is_err());
        assert!(find_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn unsafe_cookie_requests_need_the_matching_csrf_header() {
        let cookies = "tessera_at=t; tessera_csrf=secret";
        let good = headers(&[("cookie", cookies), ("x-csrf-token", "secret")]);
        let wrong = headers(&[("cookie", cookies), ("x-csrf-token", "secreT")]);
        let missing = headers(&[("cookie", cookies)]);
        let no_cookie = headers(&[("cookie", "tessera_at=t"), ("x-csrf-token", "secret")]);
        let empty = headers(&[("cookie", "tessera_at=t; tessera_csrf="), ("x-csrf-token", "")]);
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(csrf_ok(&method, &good));
            assert!(!csrf_ok(&method, &wrong));
            assert!(!csrf_ok(&method, &missing));
            assert!(!csrf_ok(&method, &no_cookie));
            assert!(!csrf_ok(&method, &empty));
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(csrf_ok(&method, &missing));
        }
    }

    #[test]
    fn rejections_are_problem_documents() {
        let response = Rejection::TokenExpired.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        let forbidden = Rejection::Forbidden("admin").into_response();
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert!(!forbidden.headers().contains_key(header::WWW_AUTHENTICATE));
        let unavailable = Rejection::KeysUnavailable.into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
    }
}
