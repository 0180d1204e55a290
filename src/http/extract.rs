//! Extractors: the JSON body (so bad input gets problem+json, never axum's plain text), the
//! caller's identity from a bearer token, and the client's IP and user agent.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use super::cookies::RequestCookies;
use super::error::ApiError;
use super::rate_limit::RateLimiter;
use super::AppState;
use crate::domain::{AdminScope, ClientNetwork, FieldError};
use crate::service::admin::{Actor, AdminService};
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

    /// A string field that must be present and not empty.
    pub fn required_nonempty_str(&mut self, name: &str) -> &'a str {
        let present = matches!(self.map.and_then(|m| m.get(name)), Some(Value::String(_)));
        let value = self.required_str(name);
        if present && value.is_empty() {
            self.errors.push(FieldError::new(name, "must not be empty"));
        }
        value
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

    /// A JSON object field that may be absent (or null); checked in full by the service.
    pub fn optional_object(&mut self, name: &str) -> Option<&'a Value> {
        match self.map.and_then(|m| m.get(name)) {
            Some(v @ Value::Object(_)) => Some(v),
            None | Some(Value::Null) => None,
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a JSON object"));
                None
            }
        }
    }

    /// Refuses every top-level field not in `known`, each by name: a misspelt or unsupported
    /// field is reported rather than silently dropped.
    pub fn only(&mut self, known: &[&str]) {
        if let Some(map) = self.map {
            for name in map.keys().filter(|k| !known.contains(&k.as_str())) {
                self.errors
                    .push(FieldError::new(name, "is not a field of this request"));
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
        // A bearer attempt (even an unusable one) is judged as such; another scheme leaves
        // the cookie to speak.
        let cookies = match bearer(&parts.headers) {
            Bearer::Token(token) => {
                return Ok(Authenticated(state.service.authenticate(token).await?));
            }
            Bearer::Unusable => return Err(AuthError::InvalidToken.into()),
            Bearer::Absent => RequestCookies::from_headers(&parts.headers),
        };
        let Some(token) = cookies.access.as_deref() else {
            return Err(AuthError::InvalidToken.into());
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

/// A caller of the admin API, checked in this order: the admin rate limit (per client IP,
/// before anything else, so guessing credentials is as slow as anything), a back-office
/// credential as the bearer token (its scope must cover the method: `GET` needs
/// `admin:read`, anything else `admin:write`), else an access token (bearer or cookie, with
/// CSRF for unsafe methods, as [`Authenticated`]) of an account holding the admin role.
pub struct AdminCaller {
    pub actor: Actor,
    pub client: ClientInfo,
}

impl AdminCaller {
    /// The administration service acting for this caller.
    pub fn service(&self, state: &AppState) -> AdminService {
        state.service.admin(self.actor.clone(), self.client.clone())
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Client(client) = Client::from_request_parts(parts, state).await?;
        rate_limit(state, &state.admin_limit, "admin", &client)?;
        let needs = match parts.method {
            Method::GET | Method::HEAD => AdminScope::Read,
            _ => AdminScope::Write,
        };
        if let Bearer::Token(token) = bearer(&parts.headers) {
            if let Some(actor) = state.service.admin_credential(token, needs)? {
                return Ok(AdminCaller { actor, client });
            }
        }
        let Authenticated(ctx) = Authenticated::from_request_parts(parts, state).await?;
        let actor = state.service.admin_user(&ctx).await?;
        Ok(AdminCaller { actor, client })
    }
}

/// The client's IP (the socket peer, or the rightmost `X-Forwarded-For` entry when the
/// deployment says a trusted proxy sets it) and user agent.
///
/// With trusted proxy headers, a rightmost entry that is not an IP address (with or without a
/// port) is answered `400 malformed_request`: our proxy wrote that entry, so garbage there is
/// a misconfiguration that must be loud, not every such client silently recorded as the
/// proxy's address and sharing one rate-limit bucket. A request with no `X-Forwarded-For` at
/// all did not come through the proxy, so its socket peer is the client.
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let ip = if state.trust_proxy_headers {
            match rightmost_forwarded_for(&parts.headers) {
                Forwarded::Absent => peer,
                Forwarded::Client(ip) => Some(ip.to_string()),
                Forwarded::Unparsable => {
                    return Err(ApiError::Malformed(
                        "The last X-Forwarded-For entry is not an IP address.",
                    ))
                }
            }
        } else {
            peer
        };
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT_LEN).collect());
        Ok(Client(ClientInfo { ip, user_agent }))
    }
}

/// What `X-Forwarded-For` says about the client.
#[derive(Debug, PartialEq, Eq)]
enum Forwarded {
    /// No such header.
    Absent,
    Client(IpAddr),
    /// The rightmost entry is not an address (not text, empty, `unknown`, a hostname...).
    Unparsable,
}

/// The rightmost entry across every `X-Forwarded-For` line: the one our proxy appended.
/// Entries to its left are whatever the client sent and are never looked at, so bytes that
/// are not text there do not matter.
fn rightmost_forwarded_for(headers: &HeaderMap) -> Forwarded {
    let Some(last_line) = headers.get_all("x-forwarded-for").iter().next_back() else {
        return Forwarded::Absent;
    };
    let entry = last_line
        .as_bytes()
        .rsplit(|b| *b == b',')
        .next()
        .unwrap_or_default();
    std::str::from_utf8(entry)
        .ok()
        .and_then(|entry| parse_forwarded_address(entry.trim()))
        .map_or(Forwarded::Unparsable, Forwarded::Client)
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    let is_port = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(bracketed) = entry.strip_prefix('[') {
        let (ip, rest) = bracketed.split_once(']')?;
        if !rest.is_empty() && !rest.strip_prefix(':').is_some_and(is_port) {
            return None;
        }
        return ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    // One colon: an IPv4 address with a port (a bare IPv6 address has several).
    let (ip, port) = entry.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

pub(super) fn rate_limit(
    state: &AppState,
    limiter: &RateLimiter,
    endpoint: &'static str,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    limiter
        .check(&rate_limit_key(client.ip.as_deref()))
        .map_err(|retry_after| {
            state.metrics.rate_limited(endpoint);
            ApiError::RateLimited(retry_after)
        })
}

/// Whom a rate limit counts: the client's [`ClientNetwork`] (text that is not an address
/// stands for itself).
fn rate_limit_key(ip: Option<&str>) -> String {
    match ip.and_then(|ip| ip.parse::<IpAddr>().ok()) {
        Some(ip) => ClientNetwork::of(ip).to_string(),
        None => ip.unwrap_or("unknown").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(rate_limit_key(Some("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(rate_limit_key(Some("2001:db8:1:2:bbbb::9")), "2001:db8:1:2::/64");
        assert_ne!(rate_limit_key(Some("2001:db8:1:3::1")), "2001:db8:1:2::/64");
        assert_eq!(rate_limit_key(Some("::ffff:192.0.2.7")), "192.0.2.7");
        assert_eq!(rate_limit_key(Some("192.0.2.7")), "192.0.2.7");
        assert_eq!(rate_limit_key(None), "unknown");
    }

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

    fn forwarded(lines: &[&[u8]]) -> Forwarded {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", header::HeaderValue::from_bytes(line).unwrap());
        }
        rightmost_forwarded_for(&h)
    }

    fn client(ip: &str) -> Forwarded {
        Forwarded::Client(ip.parse().unwrap())
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_address() {
        assert_eq!(forwarded(&[]), Forwarded::Absent);
        assert_eq!(forwarded(&[b"1.1.1.1, 2.2.2.2"]), client("2.2.2.2"));
        assert_eq!(forwarded(&[b"1.1.1.1, 2.2.2.2", b"3.3.3.3"]), client("3.3.3.3"));
        assert_eq!(forwarded(&[b"1.1.1.1", b"5.5.5.5, 3.3.3.3"]), client("3.3.3.3"));
        assert_eq!(forwarded(&[b" 2001:db8::1 "]), client("2001:db8::1"));
    }

    #[test]
    fn forwarded_for_entries_with_ports_and_brackets() {
        assert_eq!(forwarded(&[b"9.9.9.9:4711"]), client("9.9.9.9"));
        assert_eq!(forwarded(&[b"1.1.1.1, [2001:db8::1]:443"]), client("2001:db8::1"));
        assert_eq!(forwarded(&[b"[2001:db8::1]"]), client("2001:db8::1"));
        assert_eq!(forwarded(&[b"::ffff:9.9.9.9"]), client("::ffff:9.9.9.9"));
    }

    #[test]
    fn forwarded_for_ignores_what_the_client_wrote_to_the_left() {
        assert_eq!(forwarded(&[b"\x80, 9.9.9.9"]), client("9.9.9.9"));
        assert_eq!(forwarded(&[b"\xff\xfe", b"9.9.9.9"]), client("9.9.9.9"));
        assert_eq!(forwarded(&[b"garbage, [::1]:80"]), client("::1"));
    }

    #[test]
    fn an_unparsable_rightmost_entry_is_reported_not_replaced() {
        for bad in [
            &b"not-an-ip"[..],
            b"9.9.9.9, \x80",
            b"unknown",
            b"",
            b"1.1.1.1,",
            b"9.9.9.9:",
            b"9.9.9.9:port",
            b"[2001:db8::1]x",
            b"[2001:db8::1",
            b"[9.9.9.9]",
            b"2001:db8::1:99999999",
            b"_hidden",
        ] {
            assert_eq!(
                forwarded(&[bad]),
                Forwarded::Unparsable,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(forwarded(&[b"9.9.9.9", b"nonsense"]), Forwarded::Unparsable);
    }
}

#[cfg(test)]
mod properties {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any `Authorization` bytes: an answer, never a panic; a token is never empty.
        #[test]
        fn any_authorization_header_is_judged(raw in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                h.insert(header::AUTHORIZATION, v);
            }
            if let Bearer::Token(t) = bearer(&h) {
                prop_assert!(!t.is_empty());
            }
        }

        /// Any `X-Forwarded-For` entry: an address or nothing, never a panic.
        #[test]
        fn any_forwarded_entry_is_judged(entry in any::<String>()) {
            let _ = parse_forwarded_address(&entry);
        }

        /// Every way a proxy writes an address (bare, with a port, IPv6 in brackets) reads back.
        #[test]
        fn addresses_read_back(v4 in any::<u32>(), v6 in any::<u128>(), port in any::<u16>()) {
            let v4 = Ipv4Addr::from(v4);
            let v6 = Ipv6Addr::from(v6);
            for (text, ip) in [
                (v4.to_string(), IpAddr::V4(v4)),
                (format!("{v4}:{port}"), IpAddr::V4(v4)),
                (v6.to_string(), IpAddr::V6(v6)),
                (format!("[{v6}]"), IpAddr::V6(v6)),
                (format!("[{v6}]:{port}"), IpAddr::V6(v6)),
            ] {
                prop_assert_eq!(parse_forwarded_address(&text), Some(ip), "{}", text);
            }
        }
    }
}
