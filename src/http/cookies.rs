//! Cookie transport for browsers: the three cookies of the contract, and the double-submit
//! CSRF check (`X-CSRF-Token` header equal to the `tessera_csrf` cookie). The service then
//! checks the token is the one bound to the session.

use axum::http::{header, HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};

use super::error::ApiError;
use crate::crypto::secrets_equal;
use crate::service::{AuthError, TokenGrant};

pub const ACCESS_COOKIE: &str = "tessera_at";
pub const REFRESH_COOKIE: &str = "tessera_rt";
pub const CSRF_COOKIE: &str = "tessera_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// What the browser that asked for a sign-in link keeps, so the link signs in there only.
pub const LINK_COOKIE: &str = "tessera_link";
const LINK_COOKIE_PATH: &str = "/v1/auth/email-link";
/// A login's second step in cookie transport: the browser that started it.
pub const MFA_COOKIE: &str = "tessera_mfa";
const MFA_COOKIE_PATH: &str = "/v1/auth/mfa";
const REFRESH_COOKIE_PATH: &str = "/v1/auth";

/// The Tessera cookies a request carried.
#[derive(Default)]
pub struct RequestCookies {
    pub access: Option<String>,
    pub refresh: Option<String>,
    pub csrf: Option<String>,
    pub link: Option<String>,
    pub mfa: Option<String>,
}

impl RequestCookies {
    pub fn from_headers(headers: &HeaderMap) -> RequestCookies {
        let mut found = RequestCookies::default();
        for value in headers.get_all(header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for cookie in Cookie::split_parse(value).flatten() {
                let slot = match cookie.name() {
                    ACCESS_COOKIE => &mut found.access,
                    REFRESH_COOKIE => &mut found.refresh,
                    CSRF_COOKIE => &mut found.csrf,
                    LINK_COOKIE => &mut found.link,
                    MFA_COOKIE => &mut found.mfa,
                    _ => continue,
                };
                if !cookie.value().is_empty() {
                    *slot = Some(cookie.value().to_owned());
                }
            }
        }
        found
    }

    pub fn any(&self) -> bool {
        self.access.is_some() || self.refresh.is_some() || self.csrf.is_some()
    }

    /// The double-submit check for a cookie-authenticated unsafe request; returns the CSRF
    /// token so the service can check it is the session's own.
    pub fn require_csrf<'a>(&'a self, headers: &HeaderMap) -> Result<&'a str, ApiError> {
        let header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        match (header, self.csrf.as_deref()) {
            (Some(h), Some(c)) if !h.is_empty() && secrets_equal(h, c) => Ok(c),
            _ => Err(AuthError::CsrfFailed.into()),
        }
    }
}

fn cookie(
    name: &'static str,
    value: String,
    path: &'static str,
    secure: bool,
) -> cookie::CookieBuilder<'static> {
    Cookie::build((name, value)).path(path).secure(secure)
}

fn max_age(seconds: i64) -> cookie::time::Duration {
    cookie::time::Duration::seconds(seconds.max(0))
}

fn append(headers: &mut HeaderMap, c: Cookie<'_>) {
    // Names and values are our own base64url/JWT strings, always valid header text.
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Sets the access, refresh and CSRF cookies of a cookie-transport grant.
pub fn set_grant_cookies(headers: &mut HeaderMap, grant: &TokenGrant, csrf: &str, secure: bool) {
    // The access cookie lives as long as the session, not the token: a browser then still
    // sends an expired token, and hears `token_expired` (refresh!) rather than `invalid_token`.
    let access = cookie(ACCESS_COOKIE, grant.access_token.clone(), "/", secure)
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(max_age(grant.refresh_expires_in));
    let refresh = cookie(
        REFRESH_COOKIE,
        grant.refresh_token.expose().to_owned(),
        REFRESH_COOKIE_PATH,
        secure,
    )
    .http_only(true)
    .same_site(SameSite::Strict)
    .max_age(max_age(grant.refresh_expires_in));
    let csrf = cookie(CSRF_COOKIE, csrf.to_owned(), "/", secure)
        .same_site(SameSite::Lax)
        .max_age(max_age(grant.refresh_expires_in));
    for c in [access, refresh, csrf] {
        append(headers, c.build());
    }
}

/// Clears the three cookies: each sent again with its original path, empty, `Max-Age=0`.
pub fn clear_cookies(headers: &mut HeaderMap, secure: bool) {
    let cleared = [
        cookie(ACCESS_COOKIE, String::new(), "/", secure)
            .http_only(true)
            .same_site(SameSite::Lax),
        cookie(REFRESH_COOKIE, String::new(), REFRESH_COOKIE_PATH, secure)
            .http_only(true)
            .same_site(SameSite::Strict),
        cookie(CSRF_COOKIE, String::new(), "/", secure).same_site(SameSite::Lax),
    ];
    for c in cleared {
        append(headers, c.max_age(cookie::time::Duration::ZERO).build());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_cookies_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; tessera_at=AT; tessera_csrf=C".parse().unwrap(),
        );
        h.append(header::COOKIE, "tessera_rt=RT".parse().unwrap());
        let c = RequestCookies::from_headers(&h);
        assert_eq!(c.access.as_deref(), Some("AT"));
        assert_eq!(c.refresh.as_deref(), Some("RT"));
        assert_eq!(c.csrf.as_deref(), Some("C"));
    }

    #[test]
    fn csrf_header_must_equal_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "tessera_csrf=C1".parse().unwrap());
        let c = RequestCookies::from_headers(&h);
        assert!(c.require_csrf(&h).is_err());
        h.insert(CSRF_HEADER, "C2".parse().unwrap());
        assert!(c.require_csrf(&h).is_err());
        h.insert(CSRF_HEADER, "C1".parse().unwrap());
        assert_eq!(c.require_csrf(&h).ok(), Some("C1"));
    }

    #[test]
    fn cleared_cookies_keep_their_paths() {
        let mut h = HeaderMap::new();
        clear_cookies(&mut h, true);
        let all: Vec<_> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(all.len(), 3);
        assert!(all.iter().any(|c| c.starts_with("tessera_rt=;")
            && c.contains("Path=/v1/auth")
            && c.contains("Max-Age=0")));
        assert!(all
            .iter()
            .all(|c| c.contains("Secure") && c.contains("Max-Age=0")));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Cookie values as we issue them: base64url and JWT characters.
    fn value() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(b"ABCxyz019-_.".to_vec()), 1..60)
            .prop_map(|bytes| String::from_utf8(bytes).unwrap())
    }

    proptest! {
        /// Any header text at all: parsing answers, and never with an empty value.
        #[test]
        fn any_cookie_header_parses(raw in proptest::collection::vec(32u8..127, 0..200)) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                h.insert(header::COOKIE, v);
            }
            let c = RequestCookies::from_headers(&h);
            for found in [&c.access, &c.refresh, &c.csrf] {
                prop_assert!(found.as_ref().is_none_or(|v| !v.is_empty()));
            }
        }

        /// Our cookies are found among others, in any order, the last of a name winning.
        #[test]
        fn our_cookies_are_found_among_others(rt in value(), csrf in value(), other in value(), first in any::<bool>()) {
            let ours = format!("tessera_rt={rt}; tessera_csrf={csrf}");
            let theirs = format!("session={other}; tessera_rt_x={other}");
            let line = if first { format!("{ours}; {theirs}") } else { format!("{theirs}; {ours}") };
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(&line).unwrap());
            let c = RequestCookies::from_headers(&h);
            prop_assert_eq!(c.refresh, Some(rt));
            prop_assert_eq!(c.csrf, Some(csrf));
            prop_assert_eq!(c.access, None);
        }
    }
}

/// The sign-in link's browser cookie: HttpOnly, sent only to the link endpoints, and living
/// as long as a link does (`ttl`).
pub fn set_link_cookie(headers: &mut HeaderMap, value: String, ttl: std::time::Duration, secure: bool) {
    let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    append(
        headers,
        cookie(LINK_COOKIE, value, LINK_COOKIE_PATH, secure)
            .http_only(true)
            .same_site(SameSite::Strict)
            .max_age(max_age(seconds))
            .build(),
    );
}

/// The second step's browser cookie: HttpOnly, SameSite=Strict, sent only to
/// `/v1/auth/mfa/*`, living as long as the challenge (`ttl`).
pub fn set_mfa_cookie(headers: &mut HeaderMap, value: String, ttl: std::time::Duration, secure: bool) {
    let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    append(
        headers,
        cookie(MFA_COOKIE, value, MFA_COOKIE_PATH, secure)
            .http_only(true)
            .same_site(SameSite::Strict)
            .max_age(max_age(seconds))
            .build(),
    );
}
