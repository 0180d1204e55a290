//! Extractors: the JSON body (so bad input gets problem+json, never axum's plain text), the
//! caller's identity from a bearer token, and the client's IP and user agent.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use super::cookies::RequestCookies;
use super::error::ApiError;
use super::AppState;
use crate::domain::FieldError;
use crate::service::{AuthContext, AuthError, ClientInfo};

/// Authorization headers longer than this are refused outright.
const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;
const MAX_USER_AGENT_LEN: usize = 512;

/// A request body that is either absent (empty) or a JSON object declared as
/// `application/json`. Endpoints decide whether absence is acceptable.
pub struct JsonBody(pub Option<Map<String, Value>>);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_content_type);
        // A body trickled in byte by byte would hold the connection and this task forever.
        let bytes = tokio::time::timeout(state.client_timeout, Bytes::from_request(req, state))
            .await
            .map_err(|_| ApiError::RequestTimeout)?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::Malformed("The request body could not be read.")
                }
            })?;
        if bytes.is_empty() {
            return Ok(JsonBody(None));
        }
        if !is_json {
            return Err(ApiError::Malformed("The body must be sent as application/json."));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonBody(Some(map))),
            Ok(_) => Err(ApiError::Malformed("The body must be a JSON object.")),
            Err(_) => Err(ApiError::Malformed("The body is not valid JSON.")),
        }
    }
}

fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Typed access to a JSON object's fields, collecting every problem before answering.
pub struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a JsonBody) -> Self {
        Fields {
            map: body.0.as_ref(),
            errors: Vec::new(),
        }
    }

    /// A string field that must be present.
    pub fn required_str(&mut self, name: &str) -> &'a str {
        match self.map.and_then(|m| m.get(name)) {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(name, "is required"));
                ""
            }
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a string"));
                ""
            }
        }
    }

    /// A string field that may be absent (or null).
    pub fn optional_str(&mut self, name: &str) -> Option<&'a str> {
        match self.map.and_then(|m| m.get(name)) {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a string"));
                None
            }
        }
    }

    pub fn invalid(&mut self, name: &str, message: &str) {
        self.errors.push(FieldError::new(name, message));
    }

    /// `Err(422)` naming every field that was wrong.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors.into())
        }
    }
}

/// What the `Authorization` header says about bearer authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No header, or another scheme (such as a staging proxy's Basic credentials).
    Absent,
    /// `Bearer <token>`.
    Token(&'a str),
    /// A bearer attempt we refuse outright: empty, not text, or over 8 KiB.
    Unusable,
}

impl<'a> Bearer<'a> {
    pub fn token(&self) -> Option<&'a str> {
        match self {
            Bearer::Token(t) => Some(t),
            Bearer::Absent | Bearer::Unusable => None,
        }
    }
}

/// Reads the `Authorization` header once, for every caller that cares about bearer tokens.
pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Bearer::Unusable;
    }
    let bytes = value.as_bytes();
    let scheme_end = bytes.iter().position(|b| *b == b' ').unwrap_or(bytes.len());
    if !bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return Bearer::Absent;
    }
    match value.to_str().map(|v| v[scheme_end..].trim()) {
        Ok(token) if !token.is_empty() => Bearer::Token(token),
        _ => Bearer::Unusable,
    }
}

/// A caller with a valid access token of a live session: a bearer header, or else the
/// access cookie, in which case unsafe methods also need the session's CSRF token.
pub struct Authenticated(pub AuthContext);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let cookies = RequestCookies::from_headers(&parts.headers);
        // A bearer attempt (even an unusable one) is judged as such; another scheme leaves
        // the cookie to speak.
        let token = match (bearer(&parts.headers), cookies.access.as_deref()) {
            (Bearer::Token(token), _) => {
                return Ok(Authenticated(state.service.authenticate(token).await?));
            }
            (Bearer::Unusable, _) | (Bearer::Absent, None) => return Err(AuthError::InvalidToken.into()),
            (Bearer::Absent, Some(cookie)) => cookie,
        };
        let csrf = match parts.method {
            Method::GET | Method::HEAD | Method::OPTIONS => None,
            _ => Some(cookies.require_csrf(&parts.headers)?),
        };
        let ctx = state.service.authenticate(token).await?;
        if csrf.is_some_and(|c| !ctx.session.csrf_matches(c)) {
            return Err(AuthError::CsrfFailed.into());
        }
        Ok(Authenticated(ctx))
    }
}

/// The client's IP (the socket peer, or the rightmost `X-Forwarded-For` entry when the
/// deployment says a trusted proxy sets it) and user agent.
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let forwarded = state
            .trust_proxy_headers
            .then(|| rightmost_forwarded_for(&parts.headers))
            .flatten();
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT_LEN).collect());
        Ok(Client(ClientInfo {
            ip: forwarded.or(peer),
            user_agent,
        }))
    }
}

fn rightmost_forwarded_for(headers: &HeaderMap) -> Option<String> {
    // With several headers the last one was added by the proxy nearest to us.
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
    entry.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/jsonx"));
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Bearer::Absent);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Bearer::Token("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Bearer::Token("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), Bearer::Absent);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), Bearer::Unusable);
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", "a".repeat(9000)).parse().unwrap(),
        );
        assert_eq!(bearer(&h), Bearer::Unusable);
        assert_eq!(bearer(&h).token(), None);
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_address() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        assert_eq!(rightmost_forwarded_for(&h).as_deref(), Some("2.2.2.2"));
        h.append("x-forwarded-for", "3.3.3.3".parse().unwrap());
        assert_eq!(rightmost_forwarded_for(&h).as_deref(), Some("3.3.3.3"));
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(rightmost_forwarded_for(&bad), None);
    }
}
